"""Flicker index, warping error and ``vidlight eval``, against values worked out independently.

Expected figures come from hand arithmetic or from numpy on the synthetic clips' known motion
(integer shifts, a square moving over a static background), never from the code under test.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner, Result

from vidlight.cli import main
from vidlight.video_metrics import (
    InputFlow,
    VideoStats,
    WarpingError,
    auto_downscale,
    flicker_index,
    mean_luma,
    visibility_mask,
    warping_error,
)

from media import read_video, write_video

BT601 = np.array([0.299, 0.587, 0.114])


def invoke(*args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def texture(height: int, width: int, seed: int = 0, sigma: float = 1.5) -> np.ndarray:
    """Smooth random texture in [0, 1] (float64), detailed enough for optical flow."""
    noise = np.random.default_rng(seed).standard_normal((height, width))
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)
    return (smooth - smooth.min()) / (smooth.max() - smooth.min())


def panning(
    n: int, *, shift: tuple[int, int] = (2, 1), height: int = 96, width: int = 128, seed: int = 0
) -> list[np.ndarray]:
    """Frames of a texture whose content moves by ``shift`` = (dx, dy) pixels per frame (float [0, 1])."""
    dx, dy = shift
    big = texture(height + n * abs(dy) + 1, width + n * abs(dx) + 1, seed)
    frames = []
    for t in range(n):
        y, x = (n - t) * dy if dy >= 0 else t * -dy, (n - t) * dx if dx >= 0 else t * -dx
        frames.append(big[y : y + height, x : x + width])
    return frames


def dark(gray: np.ndarray, low: float = 0.04, span: float = 0.12) -> np.ndarray:
    """A dark uint8 RGB frame (10..41 of 255) from a [0, 1] picture, slightly tinted."""
    level = low + span * gray
    rgb = np.stack([level * 0.9, level, level * 1.1], axis=-1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def bright(gray: np.ndarray) -> np.ndarray:
    """The 'enhanced' float RGB frame in [0.2, 0.8]."""
    level = 0.2 + 0.6 * gray
    return np.stack([level, level * 0.95, level * 1.05], axis=-1).astype(np.float32)


# --- mean luma and flicker index: hand arithmetic -------------------------------------------------


def test_mean_luma_of_flat_frames() -> None:
    frame = np.empty((6, 5, 3), np.uint8)
    frame[:] = (10, 20, 30)
    assert mean_luma(frame) == pytest.approx(0.299 * 10 + 0.587 * 20 + 0.114 * 30, abs=1e-9)  # 18.15
    frame[:] = (255, 0, 0)
    assert mean_luma(frame) == pytest.approx(76.245, abs=1e-9)
    frame[:] = 255
    assert mean_luma(frame) == pytest.approx(255.0, abs=1e-9)
    # 10-bit material arrives as uint16 (x257 of the 8-bit value) and float in [0, 1]: same scale.
    assert mean_luma(np.full((4, 4, 3), 100 * 257, np.uint16)) == pytest.approx(100.0, abs=1e-9)
    assert mean_luma(np.full((4, 4, 3), 0.5)) == pytest.approx(127.5, abs=1e-9)


def test_mean_luma_is_the_mean_over_pixels() -> None:
    frame = np.zeros((2, 2, 3), np.uint8)
    frame[0, 0] = (255, 255, 255)  # one white pixel of four
    assert mean_luma(frame) == pytest.approx(255 / 4, abs=1e-9)


def test_mean_luma_rejects_non_rgb() -> None:
    with pytest.raises(ValueError, match="H x W x 3"):
        mean_luma(np.zeros((4, 4), np.uint8))


def test_flicker_index_hand_computed() -> None:
    # |diffs| 2, 1, 0, 3 -> mean 1.5; mean level 58 / 5 = 11.6
    assert flicker_index([10, 12, 11, 11, 14]) == pytest.approx(1.5 / 11.6, abs=1e-12)
    assert flicker_index([50, 50, 50]) == 0.0
    assert flicker_index([80.0]) == 0.0
    assert flicker_index([]) == 0.0
    assert flicker_index([0, 0, 0]) == 0.0  # black: no change, no level
    # Scale-free: the same relative flicker at another level or bit depth.
    assert flicker_index([100, 120, 110, 110, 140]) == pytest.approx(1.5 / 11.6, abs=1e-12)


def test_flicker_index_of_a_clip_with_known_brightness() -> None:
    """Flat grey frames at levels 40, 44, 40, 44, 40, 42: |diffs| 4, 4, 4, 4, 2."""
    levels = [40, 44, 40, 44, 40, 42]
    stats = VideoStats()
    for level in levels:
        stats.update(np.full((8, 10, 3), level, np.uint8))
    assert stats.frames == 6
    assert stats.lumas == pytest.approx(levels, abs=1e-9)
    assert stats.mean_luma == pytest.approx(250 / 6, abs=1e-9)
    assert stats.flicker_index == pytest.approx((18 / 5) / (250 / 6), abs=1e-12)
    assert stats.warping_error is None  # no input warps given


def test_constant_brightness_clip_has_zero_flicker() -> None:
    stats = VideoStats()
    frame = dark(texture(16, 16))
    for k in range(5):  # the same picture mirrored or rotated: the mean level does not move
        stats.update(np.rot90(frame, k) if k % 2 == 0 else frame[::-1, ::-1])
    assert stats.flicker_index == 0.0


def test_auto_downscale() -> None:
    assert [auto_downscale(h) for h in (48, 540, 541, 720, 822, 1080, 1088, 2160)] == [1, 1, 2, 2, 2, 2, 3, 4]


# --- visibility mask: hand-made flows ---------------------------------------------------------------


def _flows(h: int, w: int, fw: tuple[float, float], bw: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    return np.full((h, w, 2), fw, np.float32), np.full((h, w, 2), bw, np.float32)


def test_consistent_flow_is_visible_except_over_the_edge() -> None:
    mask = visibility_mask(*_flows(10, 12, (2, 0), (-2, 0)))
    # x + 2 must stay within 0..11: columns 10 and 11 point outside frame t-1.
    assert mask[:, :10].all() and not mask[:, 10:].any()
    mask = visibility_mask(*_flows(10, 12, (0, -1), (0, 1)))
    assert not mask[0].any() and mask[1:].all()


@pytest.mark.parametrize(
    ("back", "visible"),
    [
        ((0.0, 0.0), False),  # |w+b|^2 = 4 > 0.01 * 4 + 0.5
        ((-1.5, 0.0), True),  # 0.25 < 0.01 * (4 + 2.25) + 0.5 = 0.5625
        ((-1.2, 0.0), False),  # 0.64 > 0.01 * (4 + 1.44) + 0.5 = 0.5544
        ((-2.0, 0.7), True),  # 0.49 < 0.01 * (4 + 4.49) + 0.5 = 0.5849
    ],
)
def test_forward_backward_threshold(back: tuple[float, float], visible: bool) -> None:
    mask = visibility_mask(*_flows(6, 12, (2, 0), back))
    assert mask[:, :8].all() == visible and mask[:, :8].any() == visible


def test_motion_boundary_is_masked() -> None:
    flow = np.zeros((8, 20, 2), np.float32)
    flow[:, 10:, 0] = 0.3  # a step of 0.3 px between columns 9 and 10; |w+b|^2 = 0.09 passes
    mask = visibility_mask(flow, np.zeros_like(flow))
    # Forward difference at column 9: 0.09 > 0.01 * 0 + 0.002; elsewhere the gradient is 0.
    # Column 19 + 0.3 lies outside the frame.
    expected = np.ones((8, 20), bool)
    expected[:, 9] = False
    expected[:, 19] = False
    np.testing.assert_array_equal(mask, expected)


# --- warping error on synthetic motion ---------------------------------------------------------------


def _shifted_reference(outputs: list[np.ndarray], shift: tuple[int, int]) -> float:
    """Lai's E averaged over pairs, with the true integer motion and every pixel whose source
    lies inside the previous frame (numpy only)."""
    dx, dy = shift
    errors = []
    for prev, cur in zip(outputs, outputs[1:]):
        h, w = cur.shape[:2]
        # cur(y, x) shows what prev showed at (y - dy, x - dx)
        c = cur[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)].astype(np.float64)
        p = prev[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)].astype(np.float64)
        errors.append(((c - p) ** 2).sum(axis=-1).mean())
    return float(np.mean(errors))


def test_translation_without_change_has_no_warping_error() -> None:
    clean = panning(6, shift=(2, 1))
    inputs = [dark(f) for f in clean]
    outputs = [bright(f) for f in clean]
    assert _shifted_reference(outputs, (2, 1)) == 0.0  # the clip really is a pure shift
    # For scale: the same frames compared without motion compensation.
    still = float(np.mean([((b - a) ** 2).sum(-1).mean() for a, b in zip(outputs, outputs[1:])]))
    assert still > 0.01
    # Measured ~1.5e-6 (the flow is a few hundredths of a pixel off); output noise of std 0.02
    # would give 2.4e-3.
    value = warping_error(inputs, outputs, downscale=1)
    assert 0 <= value < 2e-5, value
    assert warping_error(inputs, inputs, downscale=1) < 1e-6


def test_independent_noise_gives_twice_its_variance_per_channel() -> None:
    """Output noise of std s, independent per frame, pixel and channel: E = 3 * 2 * s^2."""
    s = 0.02
    rng = np.random.default_rng(7)
    clean = panning(6, shift=(2, 1))
    inputs = [dark(f) for f in clean]
    outputs = [bright(f) + rng.normal(0, s, (*f.shape, 3)).astype(np.float32) for f in clean]
    reference = _shifted_reference(outputs, (2, 1))
    assert reference == pytest.approx(6 * s**2, rel=0.03)  # the sample matches the theory
    meter = WarpingError(downscale=1)
    for source, output in zip(inputs, outputs):
        meter.update(source, output)
    assert len(meter.errors) == 5
    # Bilinear resampling at a flow a few hundredths of a pixel off averages a little noise
    # away (measured: 2 % below the reference over four seeds).
    assert meter.value == pytest.approx(reference, rel=0.05)
    assert meter.value == pytest.approx(6 * s**2, rel=0.05)


def test_shared_input_flow_gives_the_same_figure() -> None:
    clean = panning(5, shift=(-1, 2), seed=3)
    rng = np.random.default_rng(1)
    inputs = [dark(f) for f in clean]
    outputs = [bright(f) + rng.normal(0, 0.01, (*f.shape, 3)).astype(np.float32) for f in clean]
    flow, stats = InputFlow(downscale=1), VideoStats()
    for source, output in zip(inputs, outputs):
        stats.update(output, flow.update(source))
    assert stats.warping_error == pytest.approx(warping_error(inputs, outputs, downscale=1), rel=1e-6)
    assert stats.warping_error == pytest.approx(_shifted_reference(outputs, (-1, 2)), rel=0.05)


def _square_scene(n: int, step: int, size: int) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Static background with a ``size``-pixel textured square moving right by ``step`` px per
    frame; returns the frames ([0, 1]) and the square's top-left corners."""
    h, w = 80, 128
    background, patch = texture(h, w, seed=11), texture(size, size, seed=12, sigma=1.0)
    frames, corners = [], []
    for t in range(n):
        y, x = 24, 20 + step * t
        frame = background.copy()
        frame[y : y + size, x : x + size] = patch
        frames.append(frame)
        corners.append((y, x))
    return frames, corners


def test_occlusion_mask_excludes_uncovered_background() -> None:
    step, size = 4, 32
    clean, corners = _square_scene(6, step, size)
    inputs, outputs = [dark(f) for f in clean], [bright(f) for f in clean]

    # Numpy, with the true motion (background still, square +step) and no mask: the strip of
    # background uncovered behind the square compares with the square itself.
    unmasked = []
    for t in range(1, len(outputs)):
        warped = outputs[t - 1].copy()  # background: flow 0
        y, x = corners[t]
        warped[y : y + size, x : x + size] = outputs[t - 1][y : y + size, x - step : x - step + size]
        unmasked.append(((outputs[t] - warped) ** 2).sum(-1).mean())
    assert np.mean(unmasked) > 3e-4

    flow = InputFlow(downscale=1)
    meter = WarpingError(downscale=1)
    uncovered_visible, background_visible = [], []
    for t, (source, output) in enumerate(zip(inputs, outputs)):
        warp = flow.update(source)
        meter.add(warp, output)
        if warp is None:
            continue
        y, x = corners[t]
        strip = warp.mask[y + 2 : y + size - 2, x - step : x]  # was under the square in frame t-1
        uncovered_visible.append(strip.mean())
        far = warp.mask[2:18, 4:-4]  # rows above the square, away from it and the edges
        background_visible.append(far.mean())
    assert max(uncovered_visible) < 0.25, uncovered_visible
    assert min(background_visible) > 0.95, background_visible
    # What is left comes from the flow's soft edges around the square (~1e-4 of ~6e-4).
    assert meter.value < 0.25 * np.mean(unmasked), (meter.value, np.mean(unmasked))


# --- vidlight eval ------------------------------------------------------------------------------------


def _assert_one_line_error(result: Result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = result.output.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidlight: "), result.output
    return lines[0]


def _rows(output: str) -> dict[str, list[str]]:
    lines = output.strip().splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == ["video", "frames", "mean luma", "flicker index", "warping error"]
    return {line.split()[0]: line.split()[1:] for line in lines[1:] if not line.startswith("wrote ")}


@pytest.fixture
def clips(tmp_path: Path):
    """A dark panning clip whose brightness pulses (gains 1, 1.15, 1, 1.15, ...) and a bright
    version with steady brightness (8 frames, 128x96)."""
    clean = panning(8, shift=(2, 1))
    gains = [1.0, 1.15] * 4
    dark_frames = [dark(f * 0.9 + 0.05, span=0.12 * g, low=0.04 * g) for f, g in zip(clean, gains)]
    bright_frames = [(bright(f) * 255 + 0.5).astype(np.uint8) for f in clean]
    return (write_video(tmp_path / "dark.mp4", dark_frames), write_video(tmp_path / "bright.mp4", bright_frames))


def _luma(frames: list[np.ndarray]) -> list[float]:
    return [float((f.astype(np.float64) @ BT601).mean()) for f in frames]


def test_eval_prints_figures_and_plots(tmp_path: Path, clips) -> None:
    dark_clip, bright_clip = clips
    png = tmp_path / "luma.png"
    result = invoke(
        "eval", dark_clip.path, bright_clip.path, "-l", "dark", "-l", "bright", "--plot", png, "--no-progress"
    )
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert set(rows) == {"dark", "bright"}
    for name, clip in (("dark", dark_clip), ("bright", bright_clip)):
        frames, luma, flicker, warp = rows[name]
        assert int(frames) == 8
        # Against the frames as tests/media.py decodes them (its own colour conversion) ...
        decoded = _luma(read_video(clip.path).frames)
        assert float(luma) == pytest.approx(np.mean(decoded), abs=0.02)
        assert float(flicker) == pytest.approx(np.abs(np.diff(decoded)).mean() / np.mean(decoded), abs=2e-5)
        # ... and against the frames that were encoded, within codec loss (x264 darkens these
        # dark frames by ~1.4 levels).
        encoded = _luma(clip.frames)
        assert float(luma) == pytest.approx(np.mean(encoded), abs=2.0)
        assert float(flicker) == pytest.approx(np.abs(np.diff(encoded)).mean() / np.mean(encoded), abs=0.01), name
        assert math.isfinite(float(warp)) and float(warp) >= 0
    assert float(rows["dark"][2]) > 0.1  # the pulse: ~14 % per frame
    assert float(rows["bright"][2]) < 0.01
    assert f"wrote {png}" in result.output

    image = cv2.imread(str(png))
    assert image is not None and image.shape == (540, 960, 3)
    assert (image < 200).any(axis=-1).mean() > 0.01  # lines, text and axes, not a blank page
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20


def test_the_plot_legend_sits_where_the_lines_are_not(tmp_path: Path) -> None:
    """Bright outputs run along the top of the chart, where the legend used to sit: the legend
    goes to the corner the lines cross least, and covers none of them here."""
    from vidlight.evaluate import plot_luma

    rising = [20.0 + 8 * i for i in range(20)]  # from the bottom left to the top right
    series = {"input": rising, "enhanced": [v + 10 for v in rising]}
    png = tmp_path / "luma.png"
    plot_luma(series, png)
    image = cv2.imread(str(png))
    ys, xs = _legend_box(image)
    assert len(xs) and xs.max() < image.shape[1] / 2 and ys.max() < image.shape[0] / 2  # top left
    # Drawn without the legend's corner, the lines leave that box white.
    inside = image[ys.min() + 1 : ys.max(), xs.min() + 1 : xs.max()]
    lines = cv2.inRange(inside, (0, 0, 0), (200, 200, 200))  # darker than the grid
    text = cv2.inRange(inside, (0, 0, 0), (60, 60, 60))  # the labels' ink
    assert np.count_nonzero(lines) - np.count_nonzero(text) < 0.1 * inside.shape[0] * inside.shape[1]
    # A legend taller than the plot stays on the image, from the plot's top.
    plot_luma({f"run {k}": [float(k)] * 5 for k in range(30)}, tmp_path / "many.png")
    ys, _ = _legend_box(cv2.imread(str(tmp_path / "many.png")))
    assert ys.min() >= 50  # below the title, not over it


def _legend_box(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows and columns of the legend box's grey border (long runs of it, not the grey
    edge pixels of anti-aliased text)."""
    grey = cv2.inRange(image, (160, 160, 160), (160, 160, 160)) > 0
    rows, cols = np.nonzero(grey.sum(axis=1) > 40)[0], np.nonzero(grey.sum(axis=0) > 20)[0]
    return rows, cols


def test_eval_input_alone_without_warp(clips) -> None:
    dark_clip, _ = clips
    result = invoke("eval", dark_clip.path, "--no-warp", "--max-frames", "5", "--no-progress")
    assert result.exit_code == 0, result.output
    frames, luma, flicker, warp = _rows(result.output)["dark.mp4"]
    assert int(frames) == 5 and warp == "-"
    lumas = _luma(read_video(dark_clip.path).frames[:5])
    assert float(flicker) == pytest.approx(np.abs(np.diff(lumas)).mean() / np.mean(lumas), abs=2e-5)


def test_eval_reads_folders_of_images(tmp_path: Path, clips) -> None:
    """An image folder (as ``vidlight process`` writes one) is a video to ``eval``: its figures
    are those of the frames in the files, and it is measured beside a video file."""
    dark_clip, bright_clip = clips
    folder = tmp_path / "bright_frames"
    folder.mkdir()
    frames = read_video(bright_clip.path).frames
    for i, frame in enumerate(frames):  # natural order: 2 before 10
        cv2.imwrite(str(folder / f"f{5 * i}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    result = invoke("eval", dark_clip.path, folder, "--no-progress")
    assert result.exit_code == 0, result.output
    count, luma, flicker, warp = _rows(result.output)["bright_frames"]
    lumas = _luma(frames)
    assert int(count) == len(frames) == 8
    assert float(luma) == pytest.approx(np.mean(lumas), abs=0.01)
    assert float(flicker) == pytest.approx(np.abs(np.diff(lumas)).mean() / np.mean(lumas), abs=2e-5)
    assert math.isfinite(float(warp))
    line = _assert_one_line_error(invoke("eval", dark_clip.path, tmp_path, "--no-progress"))  # no images there
    assert "no images" in line
    # A picture that cannot be read would shift every later frame against the other videos.
    (folder / "f12.png").write_bytes(b"not a picture")
    line = _assert_one_line_error(invoke("eval", dark_clip.path, folder, "--no-progress"))
    assert "f12.png" in line and "could not be read" in line
    (folder / "f12.png").unlink()
    (folder / "f99.png").write_bytes(b"not a picture")  # the last one
    assert "f99.png" in _assert_one_line_error(invoke("eval", dark_clip.path, folder, "--no-progress"))


def test_eval_compares_the_common_prefix(tmp_path: Path, clips, caplog: pytest.LogCaptureFixture) -> None:
    dark_clip, bright_clip = clips
    short = write_video(tmp_path / "short.mp4", bright_clip.frames[:5])
    with caplog.at_level(logging.WARNING, logger="vidlight"):
        result = invoke("eval", dark_clip.path, short.path, "--no-progress")
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert rows["dark.mp4"][0] == rows["short.mp4"][0] == "5"
    assert any("short.mp4 ended after 5 frames while dark.mp4 goes on" in r.getMessage() for r in caplog.records), (
        caplog.text
    )


def test_eval_errors(tmp_path: Path, clips) -> None:
    dark_clip, _ = clips
    line = _assert_one_line_error(invoke("eval", tmp_path / "nope.mp4", "--no-progress"))
    assert "nope.mp4" in line and "does not exist" in line
    bad = tmp_path / "x.mp4"
    bad.write_text("this is not a video\n" * 20)
    assert "x.mp4" in _assert_one_line_error(invoke("eval", dark_clip.path, bad, "--no-progress"))
    line = _assert_one_line_error(invoke("eval", dark_clip.path, "-l", "a", "-l", "b", "--no-progress"))
    assert "2 labels for 1 videos" in line
    line = _assert_one_line_error(invoke("eval", dark_clip.path, "--plot", tmp_path / "no" / "p.png"))
    assert "does not exist" in line
    assert ".png" in _assert_one_line_error(invoke("eval", dark_clip.path, "--plot", tmp_path / "p.jpg"))
    assert invoke("eval").exit_code == 2  # click usage error: INPUT missing


def test_eval_help_documents_every_option() -> None:
    result = invoke("eval", "--help")
    assert result.exit_code == 0
    for option in ("--label", "--plot", "--max-frames", "--no-warp", "--downscale", "--no-progress"):
        assert option in result.output


# --- a real clip ------------------------------------------------------------------------------------


def test_eval_real_night_clip(shared_dir: Path, tmp_path: Path) -> None:
    """20 frames of a real night clip, and a copy made to flicker (gain 1.0, 1.2, 1.0, ...),
    written to the test's temporary folder."""
    clip = shared_dir / "data" / "videos" / "nahianfariha_night_street_phone.mp4"
    frames = read_video(clip).frames[:20]
    gains = [1.0, 1.2] * 10
    flickering = [np.clip(f * g + 0.5, 0, 255).astype(np.uint8) for f, g in zip(frames, gains)]
    pulsed = write_video(tmp_path / "pulsed.mp4", flickering, codec="libx264", options={"crf": "12"})
    png = tmp_path / "night.png"
    result = invoke(
        "eval", clip, pulsed.path, "-l", "night", "-l", "pulsed", "--max-frames", "20", "--plot", png, "--no-progress"
    )
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    count, luma, flicker, warp = rows["night"]
    assert int(count) == 20
    assert 30 < float(luma) < 45  # PROVENANCE.md: mean luma 36.8 (35.7-37.4)
    assert math.isfinite(float(flicker)) and float(flicker) < 0.05
    assert math.isfinite(float(warp)) and 0 <= float(warp) < 0.01
    # Alternating gains 1 and 1.2: |change| 0.2 L per frame over a mean level of 1.1 L.
    assert float(rows["pulsed"][2]) == pytest.approx(0.2 / 1.1, abs=0.015)
    assert float(rows["pulsed"][3]) > 2 * float(warp)
    assert cv2.imread(str(png)).shape == (540, 960, 3)
