"""Where a run's time goes: an optional clock per pipeline stage (``vidlight bench`` turns it on).

The pipeline's stages run in several threads (reader, model, smoothing, writer, the model's
strip workers), so each is timed in the thread that does the work: its CPU time
(``time.thread_time``) and its busy wall time. With no clock on (the default) the stages
pay one global lookup each.

Stages, as :meth:`StageClock.breakdown` reports them:

* ``decode``: demuxing and decoding, the reader's time less the colour conversion;
* ``colour conversion``: YUV -> RGB after decoding and RGB -> YUV before encoding (swscale);
* ``model``: the enhancement stage (upload, model, exposure control, quantisation), with the
  CPU time of its strip workers;
* ``temporal stage``: scene-cut detection, brightness smoothing and rounding;
* ``encode``: the encoder and muxer, the writer's time less the colour conversion.

FFmpeg decodes and encodes on threads of its own (frame threading, x264's threads): their
CPU time is in no stage's; the busy wall time of ``decode`` and ``encode`` includes the
waits for them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

# What the pipeline times (see the module docstring for how they combine).
SOURCE, CONVERT_IN, MODEL, MODEL_WORKERS, TEMPORAL, SINK, CONVERT_OUT = (
    "source",
    "convert in",
    "model",
    "model workers",
    "temporal",
    "sink",
    "convert out",
)


@dataclass(frozen=True)
class StageTime:
    name: str
    cpu_seconds: float
    busy_seconds: float  # wall time the stage's thread spent in it


class StageClock:
    """CPU and busy wall seconds per timed part, summed over threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cpu: dict[str, float] = {}
        self.busy: dict[str, float] = {}

    @contextlib.contextmanager
    def timing(self, part: str) -> Iterator[None]:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            yield
        finally:
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            with self._lock:
                self.cpu[part] = self.cpu.get(part, 0.0) + cpu
                self.busy[part] = self.busy.get(part, 0.0) + wall

    def breakdown(self) -> list[StageTime]:
        """The five stages (module docstring), from the timed parts."""
        cpu, busy = self.cpu.get, self.busy.get
        return [
            StageTime("decode", cpu(SOURCE, 0.0) - cpu(CONVERT_IN, 0.0), busy(SOURCE, 0.0) - busy(CONVERT_IN, 0.0)),
            StageTime(
                "colour conversion",
                cpu(CONVERT_IN, 0.0) + cpu(CONVERT_OUT, 0.0),
                busy(CONVERT_IN, 0.0) + busy(CONVERT_OUT, 0.0),
            ),
            StageTime("model", cpu(MODEL, 0.0) + cpu(MODEL_WORKERS, 0.0), busy(MODEL, 0.0)),
            StageTime("temporal stage", cpu(TEMPORAL, 0.0), busy(TEMPORAL, 0.0)),
            StageTime("encode", cpu(SINK, 0.0) - cpu(CONVERT_OUT, 0.0), busy(SINK, 0.0) - busy(CONVERT_OUT, 0.0)),
        ]


_clock: StageClock | None = None


def timed(part: str) -> contextlib.AbstractContextManager:
    """Time ``part`` on the clock that is on, if any."""
    return _clock.timing(part) if _clock is not None else contextlib.nullcontext()


@contextlib.contextmanager
def measuring() -> Iterator[StageClock]:
    """Turn a clock on for the pipeline runs inside the block (one at a time, process-wide)."""
    global _clock
    if _clock is not None:
        raise RuntimeError("a stage clock is already on")
    _clock = StageClock()
    try:
        yield _clock
    finally:
        _clock = None
