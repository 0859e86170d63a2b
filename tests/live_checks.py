"""Checks shared by the live-camera tests (RTSP and RTMP): a run's output file, its timeline, and
when frames reach the sink."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vidlight.io.files import partial_path


def assert_finalised(output: Path) -> None:
    assert output.is_file(), f"{output} was not written"
    assert not partial_path(output).exists(), "the partial file was left behind"


def assert_three_live_seconds(stats, pts: list[float], *, min_frames: int) -> None:
    """A ``duration_seconds=3`` run of a 30 fps camera without outages: every frame delivered
    is written or counted as dropped, at least ``min_frames`` written (how many the
    latest-frame policy drops depends on the machine's load), and the output's timestamps
    run strictly increasing from 0 to about 3 s. Frames the policy drops before the first one
    kept (a burst of frames at the connection, or a slow first model call) move the start
    later by a frame interval each, and by no more."""
    assert len(pts) == stats.frames
    assert 85 <= stats.frames + stats.dropped <= 95, (stats.frames, stats.dropped)
    assert stats.frames >= min_frames, f"too many frames dropped: {stats.summary()}"
    assert stats.reconnects == 0
    assert pts[0] < 0.05 + stats.dropped / 30, f"the output starts at {pts[0]:.3f} s ({stats.dropped} dropped)"
    assert np.all(np.diff(pts) > 0), "timestamps not strictly increasing"
    assert 2.8 <= pts[-1] < 3.05, f"the output ends at {pts[-1]:.3f} s"


class WriteClock:
    """Wraps ``cls.write`` to note (wall clock, pts) of every frame reaching the sink."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: type, pace_fps: float | None = None) -> None:
        self.times: list[float] = []
        self.first = threading.Event()
        original = cls.write
        clock = self
        began: list[float] = []

        def write(sink, rgb, pts):
            original(sink, rgb, pts)
            now = time.monotonic()
            clock.times.append(now)
            clock.first.set()
            if pace_fps is not None:  # real-time publishing: one frame per 1/fps
                began[:] = began or [now]
                delay = began[0] + len(clock.times) / pace_fps - now
                if delay > 0:
                    time.sleep(delay)

        monkeypatch.setattr(cls, "write", write)

    def count(self) -> int:
        return len(self.times)

    def wait_for(self, frames: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.times) < frames:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def first_received_after(self, moment: float, latencies: list[float]) -> int | None:
        """Index of the first write of a frame *received* after ``moment``.

        ``RunStats.latencies.recent`` holds, per written frame (the last 4096) and in write order, the time from
        the frame's receipt (``LiveSource`` handing it over) to its write; the writer thread
        notes it right after ``write`` returns, as this wrapper does, so write time minus
        latency is the receipt time to well under a millisecond.
        """
        assert len(latencies) == len(self.times)
        for index, (wrote, latency) in enumerate(zip(self.times, latencies)):
            if wrote - latency > moment:
                return index
        return None

    def first_after(self, moment: float, timeout: float) -> float | None:
        """Wall clock of the first write after ``moment`` (waits up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [t for t in list(self.times) if t > moment]
            if later:
                return later[0]
            time.sleep(0.02)
        return None
