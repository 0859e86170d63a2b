"""Frames into model calls: one stream's pending frames and boundaries, and one batch through
the model and the temporal stage.

A batch holds frames of one size and one stream state: a frame of another size, or a
reconnect, is a boundary that waits until the frames before it have been through the model.
Scene cuts inside a batch split the model call, so a clip model (mbllen-video) never mixes
two scenes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import cast

import av
import numpy as np

from vidlight.io.files import Frame
from vidlight.io.live import Reconnected
from vidlight.pipeline.enhancer import FrameEnhancer
from vidlight.pipeline.stages import MODEL, TEMPORAL, timed
from vidlight.pipeline.temporal import TemporalSmoother
from vidlight.pipeline.workers import END, Failure, FrameTiming


def enhance_batch(
    enhancer: FrameEnhancer,
    smoother: TemporalSmoother | None,
    frames: list[np.ndarray],
    seconds: list[float | None],
    tags: list[FrameTiming],
    *,
    end: bool = False,
) -> tuple[list[np.ndarray], list[FrameTiming]]:
    """Enhance a batch and smooth it; returns the frames now final and their tags, in order:
    :func:`run_model`, then :func:`smooth`.

    The smoother holds back its look-ahead, so what comes out may be frames of earlier batches;
    ``end`` returns everything still held.
    """
    return smooth(smoother, frames, run_model(enhancer, smoother, frames, seconds), seconds, tags, end=end)


def run_model(
    enhancer: FrameEnhancer, smoother: TemporalSmoother | None, frames: list[np.ndarray], seconds: list[float | None]
) -> list[np.ndarray]:
    """A batch through the model: the temporal stage's look at the inputs first (their block
    means and scene cuts), then the enhancer, one call per scene, and the strengths it gave
    back to the temporal stage. A cut also restarts a clip model's context (mbllen-video) and
    the per-stream averages, so no call mixes two scenes."""
    out: list[np.ndarray] = []
    if not frames:
        return out
    reduced, cuts = None, []
    if smoother is not None:
        with timed(TEMPORAL):
            reduced = smoother.reduce(frames)
            cuts = smoother.scan(frames, reduced)
    start = 0
    for cut in [*cuts, len(frames)]:
        if cut > start:
            with timed(MODEL):
                out += list(
                    enhancer(
                        frames[start:cut],
                        seconds[start:cut],
                        reduced=reduced[start:cut] if reduced is not None else None,
                    )
                )
            if smoother is not None:
                smoother.note_strengths(enhancer.last_strengths, enhancer.last_previews)
        if cut < len(frames):
            enhancer.reset()
        start = cut
    return out


def smooth(
    smoother: TemporalSmoother | None,
    frames: list[np.ndarray],
    out: list[np.ndarray],
    seconds: list[float | None],
    tags: list[FrameTiming],
    *,
    end: bool = False,
) -> tuple[list[np.ndarray], list[FrameTiming]]:
    """The model's ``out`` for ``frames`` through the smoother (after :func:`run_model` scanned
    them); the frames now final and their tags, in order (``end``: all that are held too)."""
    if smoother is None:
        return out, list(tags)
    with timed(TEMPORAL):
        done = smoother.push(frames, out, seconds, tags) if frames else []
        if end:
            done += smoother.flush()
    return [f for f, _ in done], [cast(FrameTiming, t) for _, t in done]


class SmoothingThread:
    """The smoothing on a thread of its own, between the model's thread and the writer's, so the
    model goes on with the next batch meanwhile (on a CPU its strip workers would otherwise
    wait; on a GPU, the device).

    Work is done in the order it is given: a batch (:meth:`put`) or the smoother's held frames
    finished (:meth:`flush`); each hands ``(frames, tags, packets)`` to ``out``, the writer's
    queue. :meth:`reset` waits for the work before it. The first error is kept in
    ``errors`` and later work is skipped; :meth:`close` hands :data:`END` to ``out`` once all
    that came before is done.
    """

    def __init__(
        self,
        smoother: TemporalSmoother | None,
        out: queue.Queue,
        errors: list[BaseException],
        name: str = "vidlight-smooth",
    ) -> None:
        self.smoother, self.out, self.errors = smoother, out, errors
        self._queue: queue.Queue = queue.Queue(maxsize=1)  # the model runs at most one batch ahead
        self._thread = threading.Thread(target=self._work, daemon=True, name=name)
        self._thread.start()

    def put(self, frames, outputs, seconds, tags, packets, *, end: bool = False) -> None:
        self._queue.put(lambda: (*smooth(self.smoother, frames, outputs, seconds, tags, end=end), packets))

    def reset(self) -> None:
        """Restart the smoother once the work given before is done. It returns when it is, so
        the caller's scan of the next stream's frames comes after it (the scan's state is the
        smoother's too)."""
        self.wait()
        if self.smoother is not None and not self.errors:
            done = self.smoother.reset()
            if done:
                self.out.put(([f for f, _ in done], [t for _, t in done], []))

    def wait(self) -> None:
        """Return once the work given before is done."""
        barrier = threading.Event()
        self._queue.put(barrier)
        barrier.wait()

    def flush(self) -> None:
        self.put([], [], [], [], [], end=True)

    def close(self) -> None:
        self._queue.put(END)
        self._thread.join()

    def _work(self) -> None:
        try:
            while (job := self._queue.get()) is not END:
                if isinstance(job, threading.Event):
                    job.set()
                    continue
                if self.errors:
                    continue  # drain after a failure so the model's thread never blocks
                try:
                    self.out.put(job())
                except BaseException as exc:
                    self.errors.append(exc)
        finally:
            self.out.put(END)


class StreamIntake:
    """One stream's items on their way to the model: pending frames, their timestamps and tags,
    and the packets (audio, subtitles) that go out with them.

    :meth:`take_item` sorts what the reader delivers. A frame joins the pending batch unless
    the duration limit is reached (:attr:`ending`) or it has another size than the pending
    frames; that frame, or a reconnect, is a boundary, held back in :attr:`held` until the
    frames before it have been through the model (one size per model call; a new stream's
    state starts after the old one's frames). :meth:`resume` then takes it. A reconnect, once no
    frame is pending, calls ``on_reconnect(item)``: a new stream starts, and what was smoothed
    or kept as clip context belongs to the old one.
    """

    def __init__(self, duration_seconds: float | None, on_reconnect: Callable[[Reconnected], None]) -> None:
        self.duration_seconds = duration_seconds
        self.on_reconnect = on_reconnect
        self.frames: list[np.ndarray] = []
        self.tags: list[FrameTiming] = []
        self.seconds: list[float | None] = []
        self.packets: list = []
        self.waiting_since: float | None = None  # when the oldest pending frame arrived
        self.first_time: float | None = None
        self.ending = False  # the source ended (or the duration was reached): finish after the pending frames
        self.held: object = None
        self.failure: BaseException | None = None

    def take_item(self, item: object, *, boundary_ok: bool = False) -> None:
        if item is END:
            self.ending = True
        elif isinstance(item, Failure):
            self.failure = item.exc
        elif isinstance(item, Frame):
            if self.duration_seconds is not None and item.time_seconds is not None:
                self.first_time = item.time_seconds if self.first_time is None else self.first_time
                if item.time_seconds - self.first_time >= self.duration_seconds:
                    self.ending = True
                    return
            if self.frames and item.rgb.shape != self.frames[0].shape and not boundary_ok:
                self.held = item
                return
            self.frames.append(item.rgb)
            self.tags.append(FrameTiming(item.pts, item.received))
            self.seconds.append(item.time_seconds)
            if self.waiting_since is None:
                self.waiting_since = time.monotonic()
        elif isinstance(item, Reconnected):
            if self.frames and not boundary_ok:
                self.held = item
                return
            self.on_reconnect(item)
        elif isinstance(item, av.Packet):
            self.packets.append(item)

    def resume(self) -> None:
        """Take the held boundary item (the frames before it are through the model)."""
        item, self.held = self.held, None
        if item is not None:
            self.take_item(item, boundary_ok=True)

    def take(self) -> tuple[list[np.ndarray], list[float | None], list[FrameTiming]]:
        """The pending frames, their times in seconds and their timings; pending is empty afterwards."""
        frames, seconds, tags = self.frames, self.seconds, self.tags
        self.frames, self.seconds, self.tags, self.waiting_since = [], [], [], None
        return frames, seconds, tags

    def take_packets(self) -> list:
        packets, self.packets = self.packets, []
        return packets
