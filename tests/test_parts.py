"""A long file in parts: cut at keyframes, warmed up across each join, resumable."""

from __future__ import annotations

import threading
from pathlib import Path

import av
import numpy as np
import pytest

from vidlight import enhance_video
from vidlight.pipeline import parts as parts_module
from vidlight.pipeline.parts import Part, keyframes, plan_parts
from vidlight.pipeline.runner import Interrupted

from media import read_video, write_video
from test_temporal import dark_scene

RATE = 30
FRAMES = 240  # 8 s
SETTINGS = dict(model="sci", device="cpu", preset="ultrafast", progress=False)


def make_long_clip(path: Path) -> Path:
    """8 s of a dark scene whose exposure drifts slowly and flickers +-8 % from frame to frame,
    a keyframe every second, with audio."""
    t = np.arange(FRAMES)
    exposure = (1 + 0.25 * np.sin(t / 50)) * (1 + 0.08 * np.random.default_rng(3).uniform(-1, 1, FRAMES))
    frames = dark_scene(FRAMES, size=(160, 96), level=0.12, noise=0.01, exposure=exposure)
    return write_video(
        path, frames, audio=True, options={"g": str(RATE), "keyint_min": str(RATE), "sc_threshold": "0"}
    ).path


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    return make_long_clip(tmp_path_factory.mktemp("parts") / "long.mp4")


@pytest.fixture(scope="module")
def whole(long_clip, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "whole.mp4"
    enhance_video(long_clip, out, **SETTINGS)
    return out


def lumas(path: Path) -> np.ndarray:
    return np.array([f.astype(np.float64) @ [0.299, 0.587, 0.114] for f in read_video(path).frames]).mean(axis=(1, 2))


def join_frames(clip: Path) -> list[int]:
    """The index of the first frame of every part but the first (2 s parts)."""
    time_base = keyframes(clip)[1]
    return [round(float(p.start_pts * time_base) * RATE) for p in plan_parts(clip, 2.0)[1:]]


def join_steps(clip: Path, unsplit: np.ndarray, split: np.ndarray) -> list[tuple[int, float, float]]:
    """For each join: its frame, the step it adds (``|d split - d unsplit|`` into its first
    frame) and the mean frame-to-frame change of brightness of ``split`` elsewhere."""
    joins = join_frames(clip)
    steps = np.abs(np.diff(split))
    elsewhere = float(np.delete(steps, [j - 1 for j in joins]).mean())
    added = np.abs(np.diff(split) - np.diff(unsplit))
    return [(j, float(added[j - 1]), elsewhere) for j in joins]


def test_parts_start_at_keyframes_and_warm_up_from_one(long_clip):
    keys, time_base = keyframes(long_clip)
    assert len(keys) == FRAMES // RATE and keys[0] == 0
    plan = plan_parts(long_clip, split_seconds=2.0, warmup_seconds=1.0)
    assert [p.start_pts for p in plan] == keys[::2]
    assert plan[0].warm_pts == 0 and all(p.start_pts - p.warm_pts >= 1.0 / time_base for p in plan[1:])
    assert [p.end_pts for p in plan[:-1]] == [p.start_pts for p in plan[1:]] and plan[-1].end_pts is None


def test_split_run_equals_the_unsplit_one_and_shows_no_step_at_a_join(long_clip, whole, tmp_path):
    out = tmp_path / "split.mp4"
    stats = enhance_video(long_clip, out, split_seconds=2, **SETTINGS)
    a, b = read_video(whole), read_video(out)
    assert stats.frames == len(b.frames) == len(a.frames) == FRAMES
    assert b.pts_seconds == a.pts_seconds
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
    la, lb = lumas(whole), lumas(out)
    assert np.max(np.abs(lb - la) / la) < 0.01  # within the temporal tolerance of the unsplit run
    # The step a join adds: the change of brightness into a part's first frame, less the
    # unsplit run's change there (the scene's own), against the frame-to-frame flicker elsewhere.
    for j, added, elsewhere in join_steps(long_clip, la, lb):
        assert added <= elsewhere, (
            f"the join at frame {j} adds a step of {added:.2f} (flicker elsewhere {elsewhere:.2f})"
        )
    assert not list(tmp_path.glob(".*")), "the work folder is removed after the join"


def test_without_warm_up_a_join_would_show(long_clip, whole, tmp_path, monkeypatch):
    """The check above can fail: with no warm-up the smoothing restarts at each join."""
    monkeypatch.setattr(parts_module, "WARMUP_SECONDS", 0.0)
    out = tmp_path / "cold.mp4"
    enhance_video(long_clip, out, split_seconds=2, **SETTINGS)
    assert max(added / elsewhere for _, added, elsewhere in join_steps(long_clip, lumas(whole), lumas(out))) > 1


def test_an_interrupted_run_resumes_from_its_last_finished_part(long_clip, tmp_path):
    reference = tmp_path / "reference.mp4"
    enhance_video(long_clip, reference, split_seconds=2, **SETTINGS)
    out = tmp_path / "resumed.mp4"
    stop = threading.Event()
    written = []

    def stop_midway(n: int) -> None:
        written.append(n)
        if sum(written) >= 150:  # in the third of four parts
            stop.set()

    with pytest.raises(Interrupted, match="2 of 4 parts .* run the same command again to resume"):
        enhance_video(long_clip, out, split_seconds=2, stop_event=stop, on_frames=stop_midway, **SETTINGS)
    work = tmp_path / ".resumed.mp4.parts"
    assert sorted(p.name for p in work.glob("part*")) == ["part00000.mp4", "part00001.mp4"]
    assert not out.exists()
    again = []
    enhance_video(long_clip, out, split_seconds=2, on_frames=again.append, **SETTINGS)
    assert sum(again) == FRAMES - 120  # only the parts left were enhanced
    a, b = read_video(reference), read_video(out)
    assert b.pts_seconds == a.pts_seconds and all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    assert not work.exists()


def test_other_settings_start_the_parts_afresh(long_clip, tmp_path):
    work = tmp_path / ".out.mp4.parts"
    stop = threading.Event()
    with pytest.raises(Interrupted):
        enhance_video(
            long_clip,
            tmp_path / "out.mp4",
            split_seconds=2,
            stop_event=stop,
            on_frames=lambda n: stop.set(),
            **SETTINGS,
        )
    manifest = (work / "manifest.json").read_text()
    done = []
    enhance_video(long_clip, tmp_path / "out.mp4", split_seconds=2, strength=1.0, on_frames=done.append, **SETTINGS)
    assert sum(done) == FRAMES and manifest  # nothing of the strength-auto run was reused


def test_split_refuses_what_it_cannot_cut(long_clip, tmp_path):
    from vidlight.errors import VidlightError

    with pytest.raises(VidlightError, match="take a video file"):
        enhance_video(long_clip, str(tmp_path / "frames") + "/", split_seconds=2, **SETTINGS)
    with pytest.raises(VidlightError, match="drop --max-frames"):
        enhance_video(long_clip, tmp_path / "x.mp4", split_seconds=2, max_frames=10, **SETTINGS)
    assert Part(0, 0, None, 0).name == "part00000"


def test_a_run_killed_outright_resumes_from_its_last_finished_part(long_clip, tmp_path):
    """SIGKILL, not a polite stop: the parts written so far are whole, the next run uses them."""
    import os
    import signal
    import subprocess
    import sys
    import time

    reference = tmp_path / "reference.mp4"
    enhance_video(long_clip, reference, split_seconds=2, **SETTINGS)
    out = tmp_path / "out.mp4"
    work = tmp_path / ".out.mp4.parts"
    command = [
        sys.executable,
        "-m",
        "vidlight",
        "-q",
        "process",
        str(long_clip),
        str(out),
        "--split",
        "2",
        "--device",
        "cpu",
        "--preset",
        "ultrafast",
        "--no-progress",
    ]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    deadline = time.monotonic() + 120
    while len(list(work.glob("part*.mp4"))) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    kept = sorted(p.name for p in work.glob("part*.mp4"))
    assert 2 <= len(kept) < 4 and not out.exists(), kept
    resumed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert resumed.returncode == 0, resumed.stderr
    a, b = read_video(reference), read_video(out)
    assert b.pts_seconds == a.pts_seconds and all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    assert not work.exists()
