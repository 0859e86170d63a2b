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


def pipeline_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("vidlight-")}


def test_closing_a_held_iterator_stops_the_pipeline(tmp_path: Path) -> None:
    """A loop left with break while the iterator is still held: close() (or the end of a with
    block) stops the pipeline at once, before the iterator is dropped; a file's run closed
    early has no figures."""
    path = write_video(tmp_path / "long.mp4", [gradient(64, 48, i) for i in range(200)]).path
    before = pipeline_threads()
    with vidlight.enhanced_frames(str(path), model=Half()) as frames:
        for frame in frames:
            if frame.index == 5:
                break
        assert pipeline_threads() > before  # held: the pipeline waits, its queues full
    assert pipeline_threads() <= before  # closed: reader, writer and pipeline threads are gone
    assert frames.stats is None
    held = vidlight.enhanced_frames(str(path), model=Half())
    assert next(held).index == 0
    held.close()
    assert pipeline_threads() <= before
    with pytest.raises(StopIteration):
        next(held)
    vidlight.enhanced_frames(str(path), model=Half()).close()  # never started: nothing to stop


def test_close_from_another_thread_ends_a_waiting_loop(tmp_path: Path) -> None:
    """A watchdog stops a consumer that waits for a frame (here: a pipeline held up by a slow
    model): the loop ends, the threads are gone, nothing is raised."""

    class Slow(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.5)
            return x

    path = write_video(tmp_path / "long.mp4", [gradient(64, 48, i) for i in range(50)]).path
    before = pipeline_threads()
    frames = vidlight.enhanced_frames(str(path), model=Slow(), batch_size=1, smooth=False)
    threading.Timer(0.3, frames.close).start()  # while the first frame is still being made
    start = time.monotonic()
    assert list(frames) == [] and time.monotonic() - start < 5
    assert pipeline_threads() <= before


def test_on_frames_reaches_the_run(tmp_path: Path) -> None:
    counts: list[int] = []
    frames = list(vidlight.enhanced_frames(str(clip(tmp_path, 5)), model=Half(), on_frames=counts.append))
    assert len(frames) == 5 and sum(counts) == 5


def test_bad_arguments_fail_at_the_call(tmp_path: Path) -> None:
    """Before anything runs, and with no frame asked for."""
    path = str(clip(tmp_path, 3))
    for options, message in (
        ({"model": "scii"}, "scii"),
        ({"maxframes": 2}, "maxframes"),
        ({"format": "bgr"}, "format"),
        ({"queue_frames": 0}, "queue_frames"),
        ({"queue_frames": -1}, "queue_frames"),
    ):
        with pytest.raises(vidlight.VidlightError, match=message):
            vidlight.enhanced_frames(path, **options)


def test_frames_carry_the_display_rotation(tmp_path: Path) -> None:
    path = write_video(tmp_path / "phone.mp4", [gradient(64, 48, i) for i in range(3)], rotation=90).path
    frames = list(vidlight.enhanced_frames(str(path), model=Half(), smooth=False))
    assert [f.rotation for f in frames] == [90, 90, 90] and frames[0].image.shape == (48, 64, 3)
    assert all(f.rotation == 0 for f in vidlight.enhanced_frames(str(clip(tmp_path, 2)), model=Half()))


def test_the_runs_figures_once_the_source_has_ended(tmp_path: Path) -> None:
    frames = vidlight.enhanced_frames(str(clip(tmp_path, 5)), model=Half())
    assert frames.stats is None
    assert len(list(frames)) == 5
    assert frames.stats is not None and frames.stats.frames == 5 and frames.stats.corrupt_packets == 0


def test_a_folders_frames_name_their_pictures(tmp_path: Path) -> None:
    """In the folder's natural order, an unreadable picture skipped; other sources have no name."""
    import cv2

    for name, seed in (("b.png", 1), ("a10.jpg", 2), ("a2.png", 3)):
        cv2.imwrite(str(tmp_path / name), gradient(64, 48, seed))
    (tmp_path / "a5.png").write_bytes(b"not a picture")
    frames = list(vidlight.enhanced_frames(str(tmp_path), model=Half()))
    assert [f.name for f in frames] == ["a2.png", "a10.jpg", "b.png"]
    assert [f.index for f in frames] == [0, 1, 2]
    (tmp_path / "v").mkdir()
    assert all(f.name is None for f in vidlight.enhanced_frames(str(clip(tmp_path / "v", 2)), model=Half()))
