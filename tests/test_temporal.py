"""Temporal smoothing of brightness (vidlight.pipeline.temporal) and its place in the pipeline.

Clips are synthesised here (numpy, or PyAV through tests/media.py). The flicker index and the
warping error come from vidlight.video_metrics; expected values are stated from how the clips
are made (e.g. a model that divides by a noisy 6 x 6 patch mean pumps by a few per cent),
never taken from the code under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from vidlight.cli import main
from vidlight.errors import VidlightError
from vidlight.pipeline.exposure import PreviewStats
from vidlight.pipeline.runner import enhance_video
from vidlight.pipeline.temporal import GainSmoother, SceneCutDetector, TemporalSmoother, apply_gain
from vidlight.video_metrics import flicker_index, mean_luma, warping_error

from media import gradient, read_video, write_video

FPS = 30.0


# --- synthetic scenes ----------------------------------------------------------------------------


def texture(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth random texture in [0, 1] (blurred noise, three channels)."""
    rng = np.random.default_rng(seed)
    base = rng.random((height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    return cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def dark_scene(
    n: int, *, seed: int = 0, level: float = 0.15, noise: float = 0.01, exposure=None, size=(96, 64), pan: int = 0
) -> list[np.ndarray]:
    """``n`` frames of a dark textured scene with independent Gaussian noise per frame.

    ``exposure``: per-frame multipliers (injected exposure flicker); ``pan``: pixels the camera
    moves right per frame (the frames are windows on a wider texture).
    """
    w, h = size
    scene = texture(w + pan * n, h, seed) * level * 2
    rng = np.random.default_rng(seed + 1)
    frames = []
    for t in range(n):
        x = scene[:, pan * t : pan * t + w]
        gain = 1.0 if exposure is None else exposure[t]
        frames.append(to_uint8(x * gain + rng.normal(0, noise, x.shape)))
    return frames


def flicker_exposure(n: int, amount: float = 0.2, seed: int = 5) -> np.ndarray:
    """Random exposure multipliers in 1 +- ``amount`` (every frame a new draw)."""
    return 1 + amount * np.random.default_rng(seed).uniform(-1, 1, n)


def patch_normaliser(frame: np.ndarray) -> np.ndarray:
    """A per-frame normalising 'model': scale so a 6 x 6 patch's mean is 0.45 (a noisy statistic,
    as MBLLEN's percentile stretch is: it pumps the output's brightness from frame to frame)."""
    x = frame.astype(np.float64) / 255
    level = x[:6, :6].mean() + 1e-3
    return to_uint8(x * 0.45 / level)


def smoothed(
    inputs, outputs, pts=None, strengths=None, previews=None, **options
) -> tuple[list[np.ndarray], TemporalSmoother]:
    """``inputs`` and ``outputs`` through a smoother in batches of 4, state carried across; with
    ``strengths`` and ``previews``, told each batch's as the model's thread tells them."""
    smoother = TemporalSmoother(**options)
    pts = [t / FPS for t in range(len(inputs))] if pts is None else pts
    out = []
    for i in range(0, len(inputs), 4):
        if strengths is not None:
            smoother.note_strengths(strengths[i : i + 4], previews[i : i + 4])
        out += smoother.push(inputs[i : i + 4], outputs[i : i + 4], pts[i : i + 4])
    out += smoother.flush()
    return [frame for frame, _ in out], smoother


def fi(frames) -> float:
    return flicker_index([mean_luma(f) for f in frames])


# --- scene cuts ------------------------------------------------------------------------------


def cuts(frames) -> list[int]:
    detector = SceneCutDetector()
    return [t for t, f in enumerate(frames) if detector(f)]


def test_detector_fires_once_on_a_hard_cut() -> None:
    a = dark_scene(12, seed=0)
    b = [
        to_uint8(
            gradient(96, 64, 0).astype(np.float32) / 255 * 0.5 + np.random.default_rng(t).normal(0, 0.01, (64, 96, 3))
        )
        for t in range(12)
    ]
    assert cuts(a + b) == [12]


def test_detector_takes_unrelated_pictures_as_cuts_even_back_to_back() -> None:
    """A folder of unrelated pictures: every picture is a new scene, also within the minimum
    gap after a cut; a flash one frame after a cut is not."""
    half = np.zeros((64, 96, 3), np.uint8)
    half[:, 48:] = 200
    dots = np.full((64, 96, 3), 10, np.uint8)
    dots[::8, ::8] = 255
    pictures = [dark_scene(1, seed=0)[0], gradient(96, 64, 0), half, dots]
    assert cuts([p for p in pictures for _ in range(2)]) == [2, 4, 6]
    scene = dark_scene(12, seed=5, level=0.2)
    flash = to_uint8(scene[7].astype(np.float64) / 255 * 1.6)
    assert cuts(dark_scene(6, seed=4, level=0.6) + scene[:7] + [flash] + scene[8:]) == [6]


def test_detector_quiet_on_sensor_noise() -> None:
    rng = np.random.default_rng(3)
    scene = texture(96, 64, 2) * 0.1
    # Poisson shot noise at ~25 photons for the mean level, drawn afresh every frame, plus read noise.
    frames = [to_uint8(rng.poisson(scene * 250) / 250 + rng.normal(0, 0.01, scene.shape)) for _ in range(40)]
    assert cuts(frames) == []


def test_detector_quiet_on_a_slow_ramp_and_on_exposure_flicker() -> None:
    assert cuts(dark_scene(40, exposure=np.linspace(0.5, 2.0, 40))) == []
    assert cuts(dark_scene(40, exposure=flicker_exposure(40, 0.2))) == []
    assert cuts(dark_scene(40, exposure=[1.2 if t % 2 else 0.8 for t in range(40)])) == []


def test_detector_quiet_on_a_camera_pan() -> None:
    assert cuts(dark_scene(40, pan=3, level=0.3)) == []


def test_detector_histogram_ignores_exposure() -> None:
    d = SceneCutDetector()
    frame = dark_scene(1, level=0.2, noise=0)[0]
    brighter = to_uint8(frame.astype(np.float64) / 255 * 1.5)
    assert np.abs(d.histogram(frame) - d.histogram(brighter)).sum() < 0.15


# --- the smoother ----------------------------------------------------------------------------


def test_model_pumping_is_smoothed_without_putting_exposure_flicker_back() -> None:
    n = 60
    inputs = dark_scene(n, exposure=flicker_exposure(n, 0.2), noise=0.02)
    outputs = [patch_normaliser(f) for f in inputs]
    out, _ = smoothed(inputs, outputs)
    raw, smooth, source = fi(outputs), fi(out), fi(inputs)
    assert raw > 0.01  # the normaliser pumps (the mean of 36 pixels of noise sigma 0.02 at ~0.15: ~2 %)
    assert smooth <= 0.5 * raw
    assert smooth <= source


def fixed_gain(frames, gain: float = 3.0) -> list[np.ndarray]:
    """A 'model' that passes its input's brightness on: a fixed gain (k = 1)."""
    return [to_uint8(f.astype(np.float64) / 255 * gain) for f in frames]


def partial_normaliser(frames) -> list[np.ndarray]:
    """A 'model' that passes on half of its input's brightness changes in log (k = 0.5), like SCI."""
    return [to_uint8(f.astype(np.float64) / 255 * 0.2 / math.sqrt(f.mean() / 255 + 1e-3)) for f in frames]


@pytest.mark.parametrize("model", [fixed_gain, partial_normaliser])
def test_injected_exposure_flicker_halved_with_the_defaults(model) -> None:
    """+-20 % exposure flicker, every frame a new draw: the median-of-5 trend keeps about a quarter
    of it (a numpy simulation of the median of i.i.d. draws gives 0.24 of the input's flicker)."""
    n = 90
    inputs = dark_scene(n, exposure=flicker_exposure(n, 0.2), noise=0.005)
    outputs = model(inputs)
    out, smoother = smoothed(inputs, outputs)
    assert list(smoother.cuts) == []
    assert fi(outputs) > 0.05 * (1 if model is fixed_gain else 0.5)
    assert fi(out) <= 0.5 * fi(outputs)
    assert fi(out) <= fi(inputs)


def test_exposure_flicker_removed_with_follow_zero_and_no_lookahead() -> None:
    """Without look-ahead nothing tells flicker from a real change; follow=0 then smooths the
    output's brightness whatever moved it."""
    n = 60
    inputs = dark_scene(n, exposure=flicker_exposure(n, 0.2), noise=0.005)
    outputs = fixed_gain(inputs)
    out, _ = smoothed(inputs, outputs, follow=0, lookahead=0)
    assert fi(out) <= 0.5 * fi(outputs)
    out, _ = smoothed(inputs, outputs, lookahead=0)  # follow=1: the flicker passes
    assert fi(out) > 0.8 * fi(outputs)


@pytest.mark.parametrize("model", [fixed_gain, partial_normaliser])
def test_real_changes_followed_without_lag(model) -> None:
    """An exposure ramp (2x in 4 s) and then a step (a light switched on, 1.5x): a median keeps
    both, so the defaults leave a stable model's output as it is."""
    n = 150
    exposure = np.concatenate([np.geomspace(0.5, 1.0, 120), np.full(30, 1.5)])
    inputs = dark_scene(n, exposure=exposure, noise=0)
    outputs = model(inputs)
    out, _ = smoothed(inputs, outputs)
    for t, (a, b) in enumerate(zip(out, outputs)):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 0.6, t


def test_follow_below_one_lags_a_ramp() -> None:
    """follow=0.8 lags a ramp by about (1 - follow) r alpha / (1 - alpha) in log level (r the
    ramp's log step per frame), the steady state of s_t - o_t = alpha (s_{t-1} - o_{t-1} - (1 - follow) r)."""
    n = 120
    inputs = dark_scene(n, exposure=np.geomspace(0.7, 1.4, n), noise=0)  # 2x in 4 s
    outputs = fixed_gain(inputs, 2.0)
    out, _ = smoothed(inputs, outputs, follow=0.8)
    alpha = math.exp(-1 / (FPS * 0.5))
    lag = 0.2 * math.log(2) / (n - 1) * alpha / (1 - alpha)  # 0.017
    ratios = [mean_luma(a) / mean_luma(b) for a, b in zip(out, outputs)]
    assert min(ratios) > math.exp(-lag) - 0.005
    assert ratios[-1] < 0.995


def strength_drift(n: int = 48) -> tuple[list[np.ndarray], list[np.ndarray], list[float], list[PreviewStats]]:
    """A still scene whose enhancement eases off: the strength falls from 0.44 to 0.40 (as
    ``--strength auto``'s average does when lamps come into view), and the output's level, 1 + 2s
    times the input's, falls 3 % with it while the input stays flat. Each frame's preview knows
    that rule, as the exposure preview measures it."""
    inputs = dark_scene(n, noise=0)
    strengths = list(np.linspace(0.44, 0.40, n))
    grid = np.linspace(0, 1, 17)
    level = mean_luma(inputs[0]) / 255
    previews = [PreviewStats(grid, grid, grid, grid * 0, level * (1 + 2 * grid)) for _ in range(n)]
    outputs = [to_uint8(f.astype(np.float64) / 255 * (1 + 2 * s)) for f, s in zip(inputs, strengths)]
    return inputs, outputs, strengths, previews


def test_the_strengths_changes_are_followed_without_lag() -> None:
    """Told each frame's strength and preview, the level follows the strength's own (already
    averaged) changes instead of averaging them again; without them it lags the 3 % fall by
    about 1.5 % (alpha / (1 - alpha) frames of its slope)."""
    inputs, outputs, strengths, previews = strength_drift()
    told, _ = smoothed(inputs, outputs, strengths=strengths, previews=previews)
    untold, _ = smoothed(inputs, outputs)
    told_ratio = [mean_luma(a) / mean_luma(b) for a, b in zip(told, outputs)]
    untold_ratio = [mean_luma(a) / mean_luma(b) for a, b in zip(untold, outputs)]
    assert max(abs(r - 1) for r in told_ratio) < 0.003
    assert max(untold_ratio[24:]) > 1.01  # what it mends
    # Without a look-ahead (no window to take a median over) each frame's own step is followed.
    for lookahead in (0, 1):
        direct, _ = smoothed(inputs, outputs, strengths=strengths, previews=previews, lookahead=lookahead)
        ratio = [mean_luma(a) / mean_luma(b) for a, b in zip(direct, outputs)]
        assert max(abs(r - 1) for r in ratio) < 0.003, lookahead
    # follow=0 smooths whatever moved the level, the strength's drift too: it lags as untold.
    held, _ = smoothed(inputs, outputs, strengths=strengths, previews=previews, follow=0.0)
    held_ratio = [mean_luma(a) / mean_luma(b) for a, b in zip(held, outputs)]
    assert max(held_ratio[24:]) > 1.01


def test_the_last_frame_follows_its_own_strength_step() -> None:
    """At the end of a stream (and before a cut) the last frame has no window left: it follows
    its own step, as every frame does without a look-ahead, rather than none. A steep drift
    (0.44 -> 0.20 over 24 frames, each step about 1.2 % of the level) shows it."""
    inputs, _, _, previews = strength_drift(24)
    strengths = list(np.linspace(0.44, 0.20, 24))
    outputs = [to_uint8(f.astype(np.float64) / 255 * (1 + 2 * s)) for f, s in zip(inputs, strengths)]
    told, _ = smoothed(inputs, outputs, strengths=strengths, previews=previews)
    ratios = [mean_luma(a) / mean_luma(b) for a, b in zip(told, outputs)]
    step = math.log((1 + 2 * strengths[-2]) / (1 + 2 * strengths[-1]))  # 0.0126
    assert step > 0.01
    assert max(abs(r - 1) for r in ratios) < 0.003, ratios


def test_the_strengths_jitter_is_not_passed_through() -> None:
    """Flickering exposure makes the automatic strength jitter from frame to frame (0.44, 0.40,
    0.44, ...) on a still scene; the output's level jitters 3 % with it. Each step is a change the
    strength made, but following each one would hand the jitter straight to the output: the
    level follows the median step of the trend's window, and the smoothing removes the jitter
    as well as it does when not told the strengths."""
    inputs, _, _, previews = strength_drift()
    strengths = [0.44 if t % 2 == 0 else 0.40 for t in range(len(inputs))]
    outputs = [to_uint8(f.astype(np.float64) / 255 * (1 + 2 * s)) for f, s in zip(inputs, strengths)]
    told, _ = smoothed(inputs, outputs, strengths=strengths, previews=previews)
    untold, _ = smoothed(inputs, outputs)
    assert fi(outputs[8:]) > 0.02  # what there is to remove
    assert fi(told[8:]) < 1.1 * fi(untold[8:]) + 1e-4


def test_a_cut_or_a_fixed_strength_gives_no_strength_step() -> None:
    """The first frame after a reset, and frames at a fixed strength (no preview), have no
    previous strength to follow from."""
    _, _, strengths, previews = strength_drift(4)
    smoother = GainSmoother()
    assert smoother._strength_step((strengths[0], previews[0])) == 0.0
    step = smoother._strength_step((strengths[1], previews[1]))
    level, eps = previews[1].mean[0], smoother.eps  # the preview's mean at strength 0; the log's offset
    expected = math.log(level * (1 + 2 * strengths[1]) + eps) - math.log(level * (1 + 2 * strengths[0]) + eps)
    assert step == pytest.approx(expected, rel=1e-9)
    assert smoother._strength_step((1.0, None)) == 0.0
    smoother.reset()
    assert smoother._strength_step((strengths[2], previews[2])) == 0.0


def test_the_pipeline_hands_each_frames_strength_to_the_smoothing() -> None:
    """With ``--strength auto`` the model's thread tells the smoothing every frame's strength and
    preview, in order, and the smoothing uses each once."""
    import torch

    import vidlight
    from vidlight.pipeline.batching import enhance_batch
    from vidlight.pipeline.enhancer import FrameEnhancer

    class Listening(TemporalSmoother):
        def __init__(self) -> None:
            super().__init__()
            self.heard: list[tuple[float, PreviewStats | None]] = []

        def note_strengths(self, strengths, previews) -> None:
            self.heard += zip(strengths, previews)
            super().note_strengths(strengths, previews)

    frames = dark_scene(12, exposure=np.geomspace(3.0, 0.5, 12), noise=0)  # a darkening scene
    enhancer = FrameEnhancer(vidlight.load_model("sci"), device=torch.device("cpu"), strength="auto")
    smoother, chosen, out = Listening(), [], []
    for i in range(0, 12, 4):
        done, _ = enhance_batch(enhancer, smoother, frames[i : i + 4], [t / FPS for t in range(i, i + 4)], [None] * 4)
        chosen += enhancer.last_strengths
        out += done
    out += enhance_batch(enhancer, smoother, [], [], [], end=True)[0]
    assert len(out) == 12
    assert [s for s, _ in smoother.heard] == chosen and chosen[-1] > chosen[0]
    assert all(isinstance(p, PreviewStats) for _, p in smoother.heard)
    assert not smoother._strengths  # each used by its frame


def to_uint16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 65535 + 0.5).astype(np.uint16)


def test_gains_below_half_a_step_are_applied_before_the_8_bit_rounding() -> None:
    """The enhancer hands 8-bit sources' frames over at 16 bits, and the gain is applied before
    the one rounding to 8 bits: 1.002 x a picture of 40..80 levels moves its mean by 0.2 %,
    where multiplying the rounded 8-bit picture would leave it unchanged."""
    picture = texture(96, 64, 1) * 40 / 255 + 40 / 255  # 40 .. 80 levels, continuous
    dark = np.zeros((64, 96, 3), np.uint8)  # the source's dtype is what comes back
    for factor in (1.002, 0.998, 1.0005):
        out = apply_gain(to_uint16(picture), np.array(factor, dtype=np.float32), dark.dtype)
        assert out.dtype == np.uint8
        expected = np.rint(picture * 255 * factor)  # one rounding, computed independently
        assert np.abs(out - expected).max() <= 1 and (out != expected).mean() < 0.001
        assert abs(out.mean() / (picture * 255).mean() - factor) < 0.0002
        rounded_first = apply_gain(to_uint8(picture), np.array(factor, dtype=np.float32), dark.dtype)
        assert np.array_equal(rounded_first, to_uint8(picture))  # what a second rounding loses
    field = apply_gain(to_uint16(picture), np.full((4, 6), 1.002, dtype=np.float32), dark.dtype)
    assert abs(field.mean() / (picture * 255).mean() - 1.002) < 0.0002


def test_the_enhancers_16_bit_frames_round_to_its_8_bit_ones() -> None:
    """keep_precision only postpones the rounding: without a gain, the 16-bit frames round to
    the frames the enhancer gives by default (a tie may fall the other way: at most 1 level)."""
    import torch

    from vidlight.pipeline.enhancer import FrameEnhancer

    class Curve(torch.nn.Module):
        def forward(self, x):
            return x * (2.3 - 1.3 * x)

    frames = dark_scene(3, noise=0.02)
    eight = FrameEnhancer(Curve(), device=torch.device("cpu"))(frames)
    sixteen = FrameEnhancer(Curve(), device=torch.device("cpu"), keep_precision=True)(frames)
    assert eight.dtype == np.uint8 and sixteen.dtype == np.uint16
    assert abs(sixteen.astype(np.float64) / 257 - eight).max() <= 0.5 + 1e-6
    smoother = TemporalSmoother(enabled=False)
    back = np.stack([f for f, _ in smoother.push(frames, list(sixteen), [0, 1 / FPS, 2 / FPS])])
    assert back.dtype == np.uint8 and np.abs(back.astype(int) - eight).max() <= 1
    assert (back != eight).mean() < 0.001


def test_small_flicker_a_model_amplifies_ends_below_the_inputs() -> None:
    """Real dark clips move by ~0.1..0.3 % per frame. A model whose brightness moves more than
    its input's (here 1.2x in log, as EnlightenGAN's network with the fixture weights does on
    the real clips) pumps more than its input, and the corrections that bring it below the
    input's are below half an 8-bit step."""
    n = 40
    exposure = 1 + 0.002 * np.random.default_rng(2).choice([-1, 1], n)  # +-0.2 % frame to frame
    scene = texture(96, 64, 0) * 0.5
    inputs = [to_uint8(scene * e) for e in exposure]
    # At most 77 of 255, as dark as EnlightenGAN's; at 16 bits, as the enhancer hands them over.
    outputs = [to_uint16(scene * 0.6 * e**1.2) for e in exposure]
    out, _ = smoothed(inputs, outputs)
    assert all(f.dtype == np.uint8 for f in out)
    assert fi(outputs) > fi(inputs) > 0.0015
    assert fi(out) <= fi(inputs)


def test_a_static_scene_stays_still_through_small_gain_changes() -> None:
    """A static camera whose model output wobbles by +-0.03 %: the frame-wise output flips the
    rounding of pixels near a half step from frame to frame, and a gain that corrects the wobble
    re-rounds others. With the hysteresis every smoothed frame equals the first; without it,
    frames change. (On the real static CCTV clip the re-rounding raised the warping error by
    6 to 19 %, benchmarks/flicker.py.)"""
    n = 20
    scene = texture(96, 64, 3) * 0.6
    inputs = [to_uint8(scene * 0.3)] * n
    outputs = [to_uint16(scene * (1 + 0.0003 * (-1) ** t)) for t in range(n)]
    framewise = [np.rint(o / 257).astype(np.uint8) for o in outputs]
    assert sum(not np.array_equal(a, b) for a, b in zip(framewise, framewise[1:])) == n - 1
    out, _ = smoothed(inputs, outputs)
    assert all(np.array_equal(f, out[0]) for f in out)
    assert np.abs(out[0].astype(int) - framewise[0]).max() <= 1
    plain, _ = smoothed(inputs, outputs, hysteresis=0)
    assert sum(not np.array_equal(a, b) for a, b in zip(plain, plain[1:])) >= n // 2


def test_hysteresis_keeps_samples_within_a_step_of_the_exact_values() -> None:
    """Rounding with hysteresis, frame after frame: every sample stays within 0.9 step of its
    exact value (so a real change lags by less than a step), and fewer samples change between
    frames than with plain rounding when the picture only wobbles."""
    picture = to_uint16(texture(96, 64, 4) * 0.8)
    gains = 1 + 0.004 * np.random.default_rng(6).uniform(-1, 1, 30)
    last, changed, changed_plain, previous_plain = None, 0, 0, None
    for g in gains:
        exact = picture.astype(np.float64) / 257 * g
        out = apply_gain(picture, np.array(g, dtype=np.float32), np.dtype(np.uint8), last, 0.9)
        assert np.abs(out - exact).max() <= 0.9 + 1e-3
        plain = np.rint(exact).astype(np.uint8)
        if last is not None:
            changed += int((out != last).sum())
            changed_plain += int((plain != previous_plain).sum())
        last, previous_plain = out, plain
    assert changed < 0.5 * changed_plain
    with pytest.raises(ValueError, match="hysteresis"):
        GainSmoother(hysteresis=1.0)


def test_gain_onto_8_bits_equals_the_textbook_rule() -> None:
    """apply_gain's integer path (one scalar gain, 8-bit output) against the rule written out in
    float64: keep the previous value where the exact one is within the hysteresis of it and the
    scene is still, else round; with saturated samples, and a still mask of one value per pixel,
    per sample or per 2x2 block."""
    rng = np.random.default_rng(11)
    out16 = rng.integers(0, 65536, (40, 56, 3), dtype=np.uint16)
    out16[:4] = 65535  # saturated rows
    gain = 1.0017
    exact = np.clip(out16.astype(np.float64) / 257 * gain, 0, 255)
    last = np.clip(np.rint(exact) + rng.integers(-2, 3, out16.shape), 0, 255).astype(np.uint8)
    still = np.where(rng.uniform(size=(40, 56)) < 0.7, 255, 0).astype(np.uint8)
    blocks = np.where(rng.uniform(size=(20, 28)) < 0.7, 255, 0).astype(np.uint8)  # one per 2x2 block
    per_block = np.repeat(np.repeat(blocks, 2, axis=0), 2, axis=1)
    cases = [(0.9, None, None), (0.9, still, still), (0.6, np.repeat(still[..., None], 3, 2), None)]
    cases += [(0.9, blocks, per_block), (0.0, None, None)]
    for h, mask, per_pixel in cases:
        got = apply_gain(out16, np.array(gain, dtype=np.float32), np.dtype(np.uint8), last, h, None, mask)
        keep = np.abs(exact - last) < h
        if mask is not None:
            keep &= (mask if mask.ndim == 3 else per_pixel[..., None]) > 0
        want = np.where(keep, last, np.rint(exact)).astype(np.uint8)
        # Only an exact value within float32 rounding of a boundary may go either way.
        edge = (h > 0) & np.isclose(np.abs(exact - last), h, atol=1e-4) | np.isclose(exact % 1, 0.5, atol=1e-4)
        assert np.array_equal(got[~edge], want[~edge]), h
        assert edge.mean() < 0.01


def test_gain_onto_8_bits_refuses_a_previous_frame_of_another_shape() -> None:
    """The one-pass gain reads the previous output and the still mask sample by sample: one of
    another shape than the frame is an error, not a read past its end."""
    out16 = np.zeros((20, 30, 3), np.uint16)
    gain = np.array(1.0, dtype=np.float32)
    with pytest.raises(ValueError, match="last has shape"):
        apply_gain(out16, gain, np.dtype(np.uint8), np.zeros((10, 30, 3), np.uint8), 0.9)
    from vidlight.pipeline.gain_cpu import gain_to_8_bits

    with pytest.raises(ValueError, match="still has shape"):
        gain_to_8_bits(out16, 1.0, np.zeros((20, 30, 3), np.uint8), 0.9, np.zeros((20, 30), np.uint8))


def test_a_brightening_scene_is_followed_through_the_hysteresis() -> None:
    """A scene brightening by 0.2 % per frame, a fixed-gain model: the smoothed output's mean
    rises every frame after the first and ends less than the hysteresis (0.9 step) short of where the ramp
    does: a pixel lags a steady ramp by less than a step, never more."""
    n = 40
    scene = texture(96, 64, 4) * 0.8
    ramp = 1.002 ** np.arange(n)
    inputs = [to_uint8(scene * 0.3 * r) for r in ramp]
    outputs = [to_uint16(np.clip(scene * r, 0, 1)) for r in ramp]
    out, smoother = smoothed(inputs, outputs)
    assert smoother.smoother.hysteresis == 0.9
    means = np.array([o.mean() for o in out])
    # The first 0.2 % step (at most 0.4 of a step) may be held everywhere; from then on the
    # mean rises every frame.
    assert means[1] >= means[0] and np.all(np.diff(means)[1:] > 0)
    assert abs(means[-1] - means[0] * ramp[-1]) < 0.9


def test_frames_come_back_after_the_lookahead_in_order() -> None:
    n = 11
    inputs = dark_scene(n, noise=0.02)
    outputs = [patch_normaliser(f) for f in inputs]
    smoother = TemporalSmoother(lookahead=3)
    assert smoother.delay_frames == 3
    tags = []
    for t in range(n):
        done = smoother.push([inputs[t]], [outputs[t]], [t / FPS], [t])
        assert len(done) == (1 if t >= 3 else 0)
        tags += [tag for _, tag in done]
    tags += [tag for _, tag in smoother.flush()]
    assert tags == list(range(n))
    assert smoother.flush() == []


def test_warping_error_not_worse_on_a_pan() -> None:
    n = 30
    inputs = dark_scene(n, pan=2, level=0.2, noise=0.02, exposure=flicker_exposure(n, 0.1), size=(128, 96))
    outputs = [patch_normaliser(f) for f in inputs]
    out, _ = smoothed(inputs, outputs)
    raw = warping_error(inputs, outputs)
    smooth = warping_error(inputs, out)
    assert smooth <= raw * 1.02


def cut_clip(detect_cuts: bool, **options) -> tuple[list[float], list[float]]:
    """Output mean lumas (smoothed, unsmoothed) for 20 frames of a dark scene, then 10 of a bright one."""
    a = dark_scene(20, seed=0, level=0.08)
    b = [
        to_uint8(
            gradient(96, 64, 0).astype(np.float64) / 255 * 0.6 + np.random.default_rng(t).normal(0, 0.01, (64, 96, 3))
        )
        for t in range(10)
    ]
    inputs = a + b
    # A partial normaliser (output level ~ sqrt of the input's), like SCI's compression.
    outputs = [to_uint8(f.astype(np.float64) / 255 * 0.2 / math.sqrt(f.mean() / 255 + 1e-3)) for f in inputs]
    out, smoother = smoothed(inputs, outputs, detect_cuts=detect_cuts, **options)
    assert list(smoother.cuts) == ([20] if detect_cuts else [])
    return [mean_luma(f) for f in out], [mean_luma(f) for f in outputs]


@pytest.mark.parametrize("follow", [0.0, 0.8])
def test_brightness_settles_within_five_frames_of_a_cut(follow: float) -> None:
    smooth, raw = cut_clip(detect_cuts=True, follow=follow)
    for t in range(25, 30):  # from the 5th frame of the new scene on
        assert abs(smooth[t] - raw[t]) <= 0.03 * raw[t], t


def test_without_the_reset_brightness_lags_after_a_cut() -> None:
    # follow=0: nothing of the input's change passes without lag, so only the reset helps.
    # (With the default follow the response estimate learns from the cut itself and hides this.)
    smooth, raw = cut_clip(detect_cuts=False, follow=0.0)
    assert abs(smooth[24] - raw[24]) > 0.1 * raw[24]


def test_alpha_comes_from_the_real_time_between_frames() -> None:
    frame = dark_scene(1)[0]
    s = GainSmoother(time_constant=0.5, lookahead=0)
    pts = [0.0, 1 / 30, 0.2, 0.2 + 1 / 60, 1.2]
    alphas = []
    for p in pts:
        s.push(frame, frame, p)
        alphas.append(s.last_alpha)
    expected = [0.0] + [math.exp(-(b - a) / 0.5) for a, b in zip(pts, pts[1:])]
    np.testing.assert_allclose(alphas, expected, rtol=1e-9)
    s.push(frame, frame, None)  # unknown pts: one frame period (default_dt)
    assert s.last_alpha == pytest.approx(math.exp(-(1 / 30) / 0.5))


def test_reset_on_resolution_change_and_on_request() -> None:
    n = 10
    inputs = dark_scene(n, noise=0.02)
    outputs = [patch_normaliser(f) for f in inputs]
    smoother = TemporalSmoother()
    smoother(inputs, outputs, [t / FPS for t in range(n)])
    small_in, small_out = inputs[0][:32, :48].copy(), outputs[3][:32, :48].copy()
    (first,) = smoother([small_in], [small_out], [n / FPS])
    np.testing.assert_array_equal(first, small_out)  # a new size starts afresh: passed unchanged
    smoother.reset()
    (again,) = smoother([inputs[0]], [outputs[5]], [(n + 1) / FPS])
    np.testing.assert_array_equal(again, outputs[5])


def test_sixteen_bit_frames() -> None:
    n = 12
    inputs = [(f.astype(np.uint16) * 257) for f in dark_scene(n, noise=0.02)]
    outputs = [(patch_normaliser((f // 257).astype(np.uint8)).astype(np.uint16) * 257) for f in inputs]
    out, _ = smoothed(inputs, outputs)
    assert all(f.dtype == np.uint16 and f.shape == inputs[0].shape for f in out)
    assert fi(out) < fi(outputs)


def test_disabled_passes_frames_through() -> None:
    inputs = dark_scene(5)
    outputs = [patch_normaliser(f) for f in inputs]
    out, _ = smoothed(inputs, outputs, enabled=False)
    assert all(a is b for a, b in zip(out, outputs))


# --- pipeline and command line ---------------------------------------------------------------


class PatchNormaliser:
    """The torch version of :func:`patch_normaliser`, for the pipeline."""

    @staticmethod
    def make():
        import torch
        from torch import nn

        class Net(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                level = x[:, :, :6, :6].mean(dim=(1, 2, 3), keepdim=True) + 1e-3
                return (x * 0.45 / level).clamp(0, 1)

        return Net()


def test_a_cut_restarts_a_clip_models_context() -> None:
    """A clip model (mbllen-video) sees the previous frames as context; at a scene cut the
    pipeline splits the batch and restarts the context, so no clip mixes two scenes."""
    import torch
    from torch import nn

    from vidlight.pipeline.batching import enhance_batch
    from vidlight.pipeline.enhancer import FrameEnhancer

    class ClipMean(nn.Module):
        clip_context = 2

        def __init__(self) -> None:
            super().__init__()
            self.clips: list[list[float]] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.clips.append([round(float(f.mean()), 3) for f in x])
            return x

    a = dark_scene(6, seed=0, level=0.08)
    b = [to_uint8(gradient(96, 64, 0).astype(np.float64) / 255 * 0.6) for _ in range(6)]
    frames = a + b
    levels = [round(float(f.mean()) / 255, 3) for f in frames]
    model = ClipMean()
    enhancer = FrameEnhancer(model, device=torch.device("cpu"), tile=0)
    smoother = TemporalSmoother()
    out = []
    for i in range(0, 12, 4):  # the cut (frame 6) falls inside the second batch
        done, _ = enhance_batch(
            enhancer, smoother, frames[i : i + 4], [t / FPS for t in range(i, i + 4)], list(range(i, i + 4))
        )
        out += done
    out += enhance_batch(enhancer, smoother, [], [], [], end=True)[0]
    assert list(smoother.cuts) == [6] and len(out) == 12
    scene_a, scene_b = set(levels[:6]), set(levels[6:])
    for clip in model.clips:
        assert set(clip) <= scene_a or set(clip) <= scene_b, clip
    assert model.clips[2] == levels[6:8]  # the new scene starts without context
    assert model.clips[3] == levels[6:12]  # then carries its own 2 frames of context


def test_hysteresis_holds_only_where_the_input_is_still() -> None:
    """The left half of the picture is a still scene, the right half pans 4 px a frame; a smooth
    model (1.6 x a 7 x 7 local mean) whose output wobbles by +-0.05 % (fractions of a step).
    Where the input moved, the output is rounded plainly: equal to the run without
    hysteresis. Where it is still, pixels are held: fewer change from frame to frame than
    without hysteresis."""
    n, w, h = 16, 96, 64
    wide = texture(w + 4 * n, h, 8) * 0.8 + 0.1
    inputs, outputs = [], []
    for t in range(n):
        scene = np.concatenate([wide[:, : w // 2], wide[:, w // 2 + 4 * t : w + 4 * t]], axis=1)
        inputs.append(to_uint8(scene))
        outputs.append(to_uint16(np.clip(cv2.blur(scene, (7, 7)) * 1.6 * (1 + 0.0005 * (-1) ** t), 0, 1)))
    held, _ = smoothed(inputs, outputs)
    plain, _ = smoothed(inputs, outputs, hysteresis=0)
    right = slice(w // 2 + 4, None)  # the moving half, away from the blocks at the seam
    for a, b in zip(held[1:], plain[1:]):
        assert np.array_equal(a[:, right], b[:, right])
    left = slice(0, w // 2 - 4)

    def changes(frames):
        return sum(int((a[:, left] != b[:, left]).sum()) for a, b in zip(frames, frames[1:]))

    assert changes(held) < 0.5 * changes(plain)


def test_pipeline_smoothing_on_by_default(tmp_path: Path) -> None:
    n = 40
    clip = write_video(tmp_path / "in.mp4", dark_scene(n, exposure=flicker_exposure(n, 0.2), noise=0.02))
    enhance_video(clip.path, tmp_path / "smooth.mp4", model=PatchNormaliser.make(), progress=False)
    enhance_video(clip.path, tmp_path / "raw.mp4", model=PatchNormaliser.make(), progress=False, smooth=False)
    smooth, raw = read_video(tmp_path / "smooth.mp4"), read_video(tmp_path / "raw.mp4")
    src = read_video(clip.path)
    assert len(smooth.frames) == len(raw.frames) == n
    assert smooth.pts_seconds == raw.pts_seconds == src.pts_seconds
    assert fi(smooth.frames) <= 0.5 * fi(raw.frames)
    assert fi(smooth.frames) <= fi(src.frames)


def test_cli_smooth_and_no_smooth(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "in.mp4", dark_scene(8))
    runner = CliRunner()
    for flags, name in (([], "a.mp4"), (["--no-smooth"], "b.mp4"), (["--smooth-time", "0.2"], "c.mp4")):
        result = runner.invoke(main, ["-q", "process", str(clip.path), str(tmp_path / name), "--no-progress", *flags])
        assert result.exit_code == 0, result.output
        assert len(read_video(tmp_path / name).frames) == 8
    result = runner.invoke(main, ["process", str(clip.path), str(tmp_path / "d.mp4"), "--smooth-time", "0"])
    assert result.exit_code != 0


# --- a real clip -------------------------------------------------------------------------------

PHONE = Path("data") / "videos" / "nahianfariha_night_street_phone.mp4"


def test_real_phone_clip_with_sci(shared_dir: Path) -> None:
    import torch

    from vidlight.io.files import FileSource, Frame
    from vidlight.models import load_model
    from vidlight.pipeline.enhancer import FrameEnhancer

    source = FileSource(shared_dir / PHONE)
    inputs, pts = [], []
    for item in source:
        if isinstance(item, Frame):
            inputs.append(item.rgb)
            pts.append(item.time_seconds)
            if len(inputs) == 24:
                break
    source.close()
    enhancer = FrameEnhancer(load_model("sci"), device=torch.device("cpu"))
    outputs = []
    for i in range(0, len(inputs), 4):
        outputs += list(enhancer(inputs[i : i + 4]))
    out, _ = smoothed(inputs, outputs, pts)
    assert fi(out) <= fi(inputs)
    assert warping_error(inputs, out) <= 1.05 * warping_error(inputs, outputs)


def test_toml_keys(tmp_path: Path) -> None:
    from vidlight.pipeline.config import load_pipeline, run_pipeline

    clip = write_video(tmp_path / "in.mp4", dark_scene(6))
    definition = tmp_path / "p.toml"
    definition.write_text(f'source = "{clip.path}"\nsink = "{tmp_path / "out.mp4"}"\nsmooth = false\n')
    loaded = load_pipeline(definition, ["smooth_time=0.25"])
    assert loaded.settings.temporal.smooth is False and loaded.settings.temporal.smooth_time == 0.25
    assert run_pipeline(loaded, progress=False).frames == 6
    with pytest.raises(VidlightError, match="smooth time must be above 0 seconds"):
        load_pipeline(definition, ["smooth_time=0", f"sink={tmp_path / 'out2.mp4'}"])


# --- per-method statistics ---------------------------------------------------------------------


def test_statistics_smoother_is_an_ema_over_real_time() -> None:
    from vidlight.pipeline.temporal import StatisticsSmoother

    s = StatisticsSmoother(time_constant=0.5)
    pts = [0.0, 0.1, 0.15, 0.9]
    values = [1.0, 3.0, 2.0, 5.0]
    s.begin(pts[:2])
    got = [s("x", 0, values[0]), s("x", 1, values[1])]
    s.begin(pts[2:])  # state carries across batches
    got += [s("x", 0, values[2]), s("x", 1, values[3])]
    expect, state = [], None
    for t, (p, v) in enumerate(zip(pts, values)):
        state = (
            v
            if state is None
            else math.exp(-(p - pts[t - 1]) / 0.5) * state + (1 - math.exp(-(p - pts[t - 1]) / 0.5)) * v
        )
        expect.append(state)
    np.testing.assert_allclose(got, expect, rtol=1e-12)
    s.reset()
    s.begin([1.0])
    assert s("x", 0, 7.0) == 7.0


def test_kind_normalisation_uses_the_smoothed_min_and_max() -> None:
    import torch

    from vidlight.models.kind import normalise
    from vidlight.pipeline.temporal import StatisticsSmoother

    x = torch.rand(3, 3, 8, 10, dtype=torch.float64) * torch.tensor([0.5, 0.8, 0.6], dtype=torch.float64).view(
        3, 1, 1, 1
    )
    s = StatisticsSmoother(time_constant=0.5)
    s.begin([0.0, 1 / 30, 2 / 30])
    out = normalise(x, s)
    a = math.exp(-(1 / 30) / 0.5)
    lo = hi = None  # EMAs of the extremes' ratios to the frame's mean
    for j in range(3):
        m = float(x[j].mean())
        fmin, fmax = float(x[j].min()) / m, float(x[j].max()) / m
        lo = fmin if lo is None else a * lo + (1 - a) * fmin
        hi = fmax if hi is None else a * hi + (1 - a) * fmax
        torch.testing.assert_close(out[j], (x[j] - lo * m) / (hi * m - lo * m))
    # An exposure change scales the frame: the smoothed normalisation gives the same picture,
    # as the per-frame one does (it does not put the exposure change back).
    s.begin([0.0, 1 / 30, 2 / 30], restart=[0])
    scaled = x * torch.tensor([1.0, 1.3, 0.8], dtype=torch.float64).view(3, 1, 1, 1)
    torch.testing.assert_close(normalise(scaled, s), out)
    torch.testing.assert_close(normalise(x)[2], (x[2] - x[2].min()) / (x[2].max() - x[2].min()))


def test_mbllen_postprocess_asks_for_its_percentiles_frame_by_frame() -> None:
    import torch

    from vidlight.models.mbllen import official_postprocess

    raw = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(12)) * 0.5
    seen = []

    def constant(key: str, index: int, value: float) -> float:
        seen.append((key, index, value))
        return {"high": 0.4, "low": 0.05}[key]

    out = official_postprocess(raw, smooth=constant)
    # Each statistic frame after frame (the high ones of the batch first: the low ones need them).
    assert [(k, j) for k, j, _ in seen] == [("high", 0), ("high", 1), ("low", 0), ("low", 1)]
    for j in range(2):
        r, g = raw[j, 0].numpy(), raw[j, 1].numpy()
        gray = r * np.float32(0.299) + g * np.float32(0.587) + g * np.float32(0.114)
        assert seen[j][2] == pytest.approx(float(np.percentile(gray, 95)), rel=1e-6)
    # The stretch with the given statistics: high 0.4 -> 0.8 (x2), black point 0.05.
    unsmoothed = official_postprocess(raw)
    assert not torch.allclose(out, unsmoothed)
    y = (raw[0] * 2).clamp_max(1.0)
    v = ((y - 0.05) / 0.95).amax(dim=0).clamp(0, 1)  # HSV value survives the saturation gamma
    torch.testing.assert_close(out[0].amax(dim=0), v, atol=1e-5, rtol=0)


def test_mbllen_flicker_lower_with_its_statistics_smoothed(tmp_path: Path, official_weights_dir: Path) -> None:
    """MBLLEN with its post-processing on a noisy dark clip: the percentile stretch pumps; the
    pipeline's smoothing (statistics plus gain) halves the flicker of the frame-wise output."""
    n = 24
    inputs = dark_scene(n, noise=0.03, level=0.1, size=(96, 64))
    clip = write_video(tmp_path / "in.mp4", inputs)
    for smooth in (False, True):
        enhance_video(
            clip.path,
            tmp_path / f"{smooth}.mp4",
            model="mbllen",
            model_options={"postprocess": True},
            smooth=smooth,
            progress=False,
            crf=0,
            preset="ultrafast",
        )
    raw = fi(read_video(tmp_path / "False.mp4").frames)
    smooth = fi(read_video(tmp_path / "True.mp4").frames)
    assert smooth <= 0.5 * raw
