"""vidlight.enhanced_frames: the pipeline as a Python iterator (surveillance preprocessing).

Expected frames are computed independently: the model applied to each decoded input frame
with the enhancer's documented quantisation (smoothing off), compared with what the iterator
yields; timestamps come from the clip as written.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import vidlight

from media import gradient, read_video, write_video


class Half(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5


def clip(tmp_path: Path, n: int = 12) -> Path:
    return write_video(tmp_path / "in.mp4", [gradient(64, 48, i) for i in range(n)]).path


def test_frames_and_timestamps(tmp_path: Path) -> None:
    path = clip(tmp_path)
    src = read_video(path)
    got = list(vidlight.enhanced_frames(str(path), model=Half(), smooth=False, strength=1))
    assert [f.index for f in got] == list(range(len(src.frames)))
    np.testing.assert_allclose([f.pts_seconds for f in got], src.pts_seconds, atol=1e-6)
    for f, s in zip(got, src.frames):
        expect = (s.astype(np.float32) / 255 * 0.5).clip(0, 1) * 255 + 0.5
        assert f.image.dtype == np.uint8 and f.image.shape == s.shape
        assert np.abs(f.image.astype(int) - expect.astype(np.uint8).astype(int)).max() <= 1


def test_torch_format(tmp_path: Path) -> None:
    frames = list(vidlight.enhanced_frames(str(clip(tmp_path, 3)), model=Half(), smooth=False, format="torch"))
    assert len(frames) == 3 and all(isinstance(f.image, torch.Tensor) for f in frames)


def test_leaving_the_loop_early_stops_the_pipeline(tmp_path: Path) -> None:
    path = write_video(tmp_path / "long.mp4", [gradient(64, 48, i) for i in range(200)]).path
    before = threading.active_count()
    start = time.monotonic()
    for frame in vidlight.enhanced_frames(str(path), model=Half()):
        if frame.index == 5:
            break
    assert time.monotonic() - start < 20
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before  # reader, writer and pipeline threads are gone


def test_errors_reach_the_consumer(tmp_path: Path) -> None:
    with pytest.raises(vidlight.MediaError, match="does not exist"):
        list(vidlight.enhanced_frames(str(tmp_path / "missing.mp4"), model=Half()))
    with pytest.raises(vidlight.VidlightError, match="format"):
        list(vidlight.enhanced_frames(str(tmp_path / "x.mp4"), format="pil"))
