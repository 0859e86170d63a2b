"""Checks shared by the live-camera tests (RTSP and RTMP): a run's output file and its timeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vidlight.io.files import partial_path


def assert_finalised(output: Path) -> None:
    assert output.is_file(), f"{output} was not written"
    assert not partial_path(output).exists(), "the partial file was left behind"


def assert_three_live_seconds(stats, pts: list[float], *, min_frames: int) -> None:
    """A ``duration_seconds=3`` run of a 30 fps camera without outages: every frame delivered
    is written or counted as dropped, at least ``min_frames`` written (how many the
    latest-frame policy drops depends on the machine's load), and the output's timestamps
    run strictly increasing from 0 to about 3 s."""
    assert len(pts) == stats.frames
    assert 85 <= stats.frames + stats.dropped <= 95, (stats.frames, stats.dropped)
    assert stats.frames >= min_frames, f"too many frames dropped: {stats.summary()}"
    assert stats.reconnects == 0
    assert pts[0] < 0.05, f"the output starts at {pts[0]:.3f} s"
    assert np.all(np.diff(pts) > 0), "timestamps not strictly increasing"
    assert 2.8 <= pts[-1] < 3.05, f"the output ends at {pts[-1]:.3f} s"
