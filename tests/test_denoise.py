"""Temporal denoising (vidlight.pipeline.denoise): noise goes down where nothing moves, and a
moving object leaves no trail.

Scenes are synthesised here with known noise-free frames, so every error is measured against
the truth; the expected noise reduction comes from the filter's definition (a recursive
average with weight a keeps sqrt((1 - a) / (1 + a)) of white noise), not from the code.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from vidlight.cli import main
from vidlight.pipeline.denoise import TemporalDenoiser
from vidlight.video_metrics import mean_luma, warping_error

from media import read_video, write_video

H, W = 96, 160
NOISE = 3.0  # levels (8-bit steps), per pixel and frame


def background(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.random((14, 22, 3)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC) * 40 + 40


def moving_object(t: int, *, contrast: float, speed: int, textured: bool) -> np.ndarray:
    """The background with a 30 x 24 px object (flat, or striped so its inside changes as it
    moves) at x = 10 + speed * t."""
    frame = background()
    x = 10 + speed * t
    patch = np.full((30, 24, 3), contrast, np.float32)
    if textured:
        patch *= (np.arange(24) % 6 < 3)[None, :, None]
    frame[30:60, x : x + 24] += patch
    return frame


def noisy(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return truth + rng.normal(0, NOISE, truth.shape).astype(np.float32)


def test_static_scene_noise_falls_as_a_recursive_average_predicts() -> None:
    rng = np.random.default_rng(1)
    truth = background()
    denoiser = TemporalDenoiser()
    errors, raw = [], []
    for t in range(40):
        frame = noisy(truth, rng)
        out = denoiser(frame)
        if t >= 10:
            errors.append(np.sqrt(np.mean((out - truth) ** 2)))
            raw.append(np.sqrt(np.mean((frame - truth) ** 2)))
    a = denoiser.strength
    best = np.sqrt((1 - a) / (1 + a))  # every pixel at the full weight: 0.5 for a = 0.6
    ratio = np.mean(errors) / np.mean(raw)
    assert best - 0.02 <= ratio < best + 0.15
    assert abs(denoiser.last_noise - NOISE * np.sqrt(1 + (1 - a) / (1 + a))) < 0.6  # of x_t - y_{t-1}


@pytest.mark.parametrize("contrast", [30.0, 6.0])
@pytest.mark.parametrize("speed", [1, 4])
@pytest.mark.parametrize("textured", [False, True])
def test_a_moving_object_leaves_no_trail(contrast: float, speed: int, textured: bool) -> None:
    """Around and inside a moving object (the strip it just left, the strip it enters, and the
    object itself) the denoised frame is no further from the truth than the noisy frame is:
    a ghost would add the object's old picture there."""
    rng = np.random.default_rng(2)
    denoiser = TemporalDenoiser()
    errors, raw = [], []
    for t in range(24):
        truth = moving_object(t, contrast=contrast, speed=speed, textured=textured)
        frame = noisy(truth, rng)
        out = denoiser(frame)
        if t < 4:
            continue
        x = 10 + speed * t
        region = (slice(30, 60), slice(x - 3 * speed, x + 24 + 3 * speed))
        errors.append(np.abs(out[region] - truth[region]).mean())
        raw.append(np.abs(frame[region] - truth[region]).mean())
    assert np.mean(errors) <= np.mean(raw)


def test_the_trail_check_has_teeth() -> None:
    """The same check with averaging that ignores motion (a threshold no change reaches) fails:
    the object's old picture stays behind it."""
    rng = np.random.default_rng(2)
    denoiser = TemporalDenoiser(threshold=1e6)
    errors, raw = [], []
    for t in range(24):
        truth = moving_object(t, contrast=30.0, speed=4, textured=True)
        frame = noisy(truth, rng)
        out = denoiser(frame)
        if t >= 4:
            region = (slice(30, 60), slice(10 + 4 * t - 12, 10 + 4 * t + 36))
            errors.append(np.abs(out[region] - truth[region]).mean())
            raw.append(np.abs(frame[region] - truth[region]).mean())
    assert np.mean(errors) > 1.5 * np.mean(raw)


def test_a_light_switched_on_passes_at_once() -> None:
    rng = np.random.default_rng(3)
    truth = background()
    denoiser = TemporalDenoiser()
    for _ in range(10):
        denoiser(noisy(truth, rng))
    brighter = truth + 20
    out = denoiser(noisy(brighter, rng))
    assert abs(float((out - brighter).mean())) < 0.5  # not pulled toward the darker past


def test_exact_repeats_and_new_sizes_pass_unchanged() -> None:
    rng = np.random.default_rng(4)
    frame = noisy(background(), rng)
    denoiser = TemporalDenoiser()
    assert np.array_equal(denoiser(frame), frame)  # the first frame
    assert np.array_equal(denoiser(frame), frame)  # a repeat: nothing to average
    small = cv2.resize(frame, (80, 48))
    assert np.array_equal(denoiser(small), small)  # a new size starts afresh
    denoiser.reset()
    other = noisy(background(1), rng)
    assert np.array_equal(denoiser(other), other)


def test_invalid_settings() -> None:
    for kwargs in ({"strength": 1.0}, {"strength": -0.1}, {"threshold": 0}, {"window": 4}, {"floor": -1}):
        with pytest.raises(ValueError):
            TemporalDenoiser(**kwargs)


# --- in the pipeline ---------------------------------------------------------------------------


def static_noisy_clip(path: Path) -> Path:
    """16 frames of a dark static scene with fresh sensor noise in each (a parked camera at night)."""
    rng = np.random.default_rng(5)
    scene = background(2)[:64, :96] * 0.5  # 20..60 levels
    frames = [np.clip(scene + rng.normal(0, 4, scene.shape), 0, 255).round().astype(np.uint8) for _ in range(16)]
    return write_video(path, frames).path


def test_pipeline_denoise_lowers_the_warping_error_of_a_static_noisy_clip(tmp_path: Path) -> None:
    """SCI (the bundled weights) on a noisy static clip, with the defaults and with --denoise:
    the enhanced noise boils less from frame to frame (warping error with the input's flow),
    the brightness stays (mean luma within 1 %), and --denoise --no-smooth is a usage error."""
    clip = static_noisy_clip(tmp_path / "in.mkv")
    runner = CliRunner()
    for flags, name in (([], "plain.mkv"), (["--denoise"], "denoised.mkv")):
        result = runner.invoke(
            main, ["-q", "process", str(clip), str(tmp_path / name), "--no-progress", "--crf", "0", *flags]
        )
        assert result.exit_code == 0, result.output
    source = read_video(clip).frames
    plain = read_video(tmp_path / "plain.mkv").frames
    denoised = read_video(tmp_path / "denoised.mkv").frames
    assert len(plain) == len(denoised) == 16
    assert warping_error(source, denoised) < 0.5 * warping_error(source, plain)  # 0.22 when written
    assert abs(np.mean([mean_luma(f) for f in denoised]) / np.mean([mean_luma(f) for f in plain]) - 1) < 0.01
    result = runner.invoke(main, ["process", str(clip), str(tmp_path / "x.mkv"), "--denoise", "--no-smooth"])
    assert result.exit_code == 2 and "--no-smooth" in result.output
    assert not (tmp_path / "x.mkv").exists()
