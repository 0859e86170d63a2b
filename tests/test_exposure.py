"""The automatic strength (--strength auto): its rules on known previews, its average over time,
and what it does to real pictures at several exposures."""

from __future__ import annotations

import math
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

import vidlight
from vidlight.errors import VidlightError
from vidlight.pipeline.batching import enhance_batch
from vidlight.pipeline.enhancer import FrameEnhancer
from vidlight.pipeline.exposure import (
    CLIP_ALLOWANCE,
    HIGHLIGHT_TARGET,
    ExposureControl,
    PreviewStats,
    choose_strength,
    parse_strength,
    preview_stats,
)
from vidlight.pipeline.temporal import TemporalSmoother

CPU = torch.device("cpu")
GRID = np.linspace(0, 1, 17)
LUMA = np.array([0.299, 0.587, 0.114])


def _stats(*, highlight, median=None, clipped=None, mean=0.3) -> PreviewStats:
    """A preview whose statistics rise linearly with strength between the given end values."""
    line = lambda a, b: a + (b - a) * GRID  # noqa: E731
    return PreviewStats(
        GRID, line(*(median or (0.3, 0.5))), line(*highlight), line(*(clipped or (0.0, 0.0))), line(mean, mean + 0.2)
    )


def test_a_well_exposed_frame_gets_strength_zero():
    assert choose_strength(_stats(highlight=(0.8, 0.95), mean=0.4)) == 0.0


def test_the_strength_lifts_the_highlights_to_the_target():
    # The 99th percentile rises from 0.3 (strength 0) to 0.9 (strength 1): it reaches the target at
    # (target - 0.3) / 0.6.
    got = choose_strength(_stats(highlight=(0.3, 0.9), median=(0.2, 0.4), mean=0.25))
    assert got == pytest.approx((HIGHLIGHT_TARGET - 0.3) / 0.6, abs=1e-9)


def test_a_mostly_black_frame_is_lifted_by_its_median():
    # Bright corner (highlights there already) but a black median: lifted until the median is 0.12.
    got = choose_strength(_stats(highlight=(0.9, 1.0), median=(0.04, 0.20), mean=0.15))
    assert got == pytest.approx((0.12 - 0.04) / 0.16, abs=1e-9)


def test_a_near_black_frame_gets_the_full_method():
    assert choose_strength(_stats(highlight=(0.1, 0.5), median=(0.02, 0.1), mean=0.05)) == 1.0


def test_highlights_are_protected():
    # Clipping grows from 0 to 5 % of the preview: only CLIP_ALLOWANCE of it is allowed.
    got = choose_strength(_stats(highlight=(0.1, 0.5), clipped=(0.0, 0.05), mean=0.05))
    assert got == pytest.approx(CLIP_ALLOWANCE / 0.05, abs=1e-9)


def test_a_method_that_darkens_the_frame_is_held_back():
    """A near-black frame asks for the full method, but not where the method makes it darker."""
    darkening = _stats(highlight=(0.1, 0.5), median=(0.02, 0.1), mean=0.05)
    darkening = PreviewStats(GRID, darkening.median, darkening.highlight, darkening.clipped, 0.05 - 0.02 * GRID)
    assert choose_strength(darkening) == 0.0
    # Brighter up to strength 0.5, then darker again: back at the input's mean at strength 0.75.
    arch = PreviewStats(
        GRID, darkening.median, darkening.highlight, darkening.clipped, 0.05 + 0.04 * GRID * (0.75 - GRID)
    )
    assert choose_strength(arch) == pytest.approx(0.75, abs=1e-6)


def test_the_strength_is_averaged_over_real_time_and_restarts():
    control = ExposureControl(time_constant=1.0)
    dark, bright = _stats(highlight=(0.1, 0.5), mean=0.05), _stats(highlight=(0.8, 0.95), mean=0.4)
    control.begin([0.0, 0.1, 0.3])
    got = [control(0, dark), control(1, bright), control(2, bright)]
    a1, a2 = math.exp(-0.1), math.exp(-0.2)
    assert got == pytest.approx([1.0, a1, a1 * a2], abs=1e-9)
    control.reset()  # a reconnect
    control.begin([5.0])
    assert control(0, bright) == 0.0
    control.begin([5.1, 5.2], restart=[1])  # a cut at the second frame
    assert control(0, dark) == pytest.approx(1 - math.exp(-0.1), abs=1e-9)
    assert control(1, bright) == 0.0


@pytest.mark.parametrize("text,value", [("auto", "auto"), ("AUTO", "auto"), ("0", 0.0), ("0.35", 0.35), ("1", 1.0)])
def test_parse_strength(text, value):
    assert parse_strength(text) == value


@pytest.mark.parametrize("text", ["-0.1", "1.5", "strong", "nan"])
def test_parse_strength_rejects(text):
    with pytest.raises(VidlightError, match="strength must be auto or a number from 0 to 1"):
        parse_strength(text)


@pytest.mark.parametrize("compiled", [True, False])
def test_preview_statistics_match_numpy(compiled, monkeypatch):
    """The preview's luma statistics at every grid strength, against numpy on the same renders
    (an end-to-end stand-in that halves the frame, so strength s gives x * (1 - s / 2)): the
    compiled pass a CPU takes, and the torch operations other devices take."""
    import vidlight.pipeline.exposure as exposure

    class Half(torch.nn.Module):
        def forward(self, x):
            return x * 0.5

    if not compiled:
        monkeypatch.setattr(exposure, "_luma_statistics", exposure._luma_statistics_torch)
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.random((2, 3, 40, 60), dtype=np.float32))
    got = preview_stats(Half(), x)
    for n in range(2):
        for g, s in enumerate(GRID):
            luma = np.einsum("chw,c->hw", x[n].numpy().astype(np.float64) * (1 - s / 2), LUMA).ravel()
            assert got[n].median[g] == pytest.approx(np.quantile(luma, 0.5, method="inverted_cdf"), abs=1 / 1023)
            assert got[n].highlight[g] == pytest.approx(np.quantile(luma, 0.99, method="inverted_cdf"), abs=1 / 1023)
            assert got[n].mean[g] == pytest.approx(luma.mean(), abs=1e-5)
            assert got[n].clipped[g] == pytest.approx((luma >= 0.98).mean(), abs=1e-6)


def test_compiled_preview_statistics_are_torchs_for_any_layout():
    """The CPU's compiled pass counts every render's luma into the same histogram bins as the
    torch operations (it rounds the luma as they do), for contiguous and channels-last renders
    alike; its clipped share is theirs and its mean within float rounding. A NaN counts as 0
    and a sample above 1 in the top bin, rather than outside the histogram."""
    import vidlight.pipeline.exposure as exposure

    y = torch.rand(34, 3, 90, 160, generator=torch.Generator().manual_seed(1))
    counts, clipped, mean = exposure._luma_statistics_torch(y)
    for layout in (torch.contiguous_format, torch.channels_last):
        got = exposure._luma_statistics(y.contiguous(memory_format=layout))
        assert torch.equal(got[0], counts) and torch.equal(got[1], clipped), layout
        assert (got[2] - mean).abs().max() < 1e-6
    y[0, :, 0, 0] = float("nan")
    y[0, :, 0, 1] = 2.0
    got = exposure._luma_statistics(y)[0]
    assert got[0].sum() == 90 * 160 and got[0, 0] == counts[0, 0] + 1 and got[0, -1] == counts[0, -1] + 1


# --- real pictures ---------------------------------------------------------------------------


def _read(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1].copy()


def _darken(image: np.ndarray, k: float) -> np.ndarray:
    """``k`` times the light, in linear light (sRGB decoded and encoded here), no noise."""
    v = image / 255.0
    lin = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4) * k
    out = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.clip(lin, 0, 1) ** (1 / 2.4) - 0.055)
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


class _Recording:
    """A FrameEnhancer that keeps the strength it chose for every frame."""

    def __init__(self, enhancer: FrameEnhancer) -> None:
        self.enhancer, self.strengths = enhancer, []

    def __call__(self, frames, seconds, **options):
        out = self.enhancer(frames, seconds, **options)
        self.strengths += self.enhancer.last_strengths
        return out

    def reset(self) -> None:
        self.enhancer.reset()

    def __getattr__(self, name: str):
        return getattr(self.enhancer, name)  # last_strengths, last_previews, ...


def _strengths(frames: list[np.ndarray], seconds: list[float], batch: int = 4) -> tuple[list[float], list[np.ndarray]]:
    """The pipeline's strength for each frame (auto, SCI, smoothing on, the runner's batch loop)
    and the output frames."""
    enhancer = _Recording(
        FrameEnhancer(vidlight.load_model("sci"), device=CPU, strength="auto", keep_precision=True, statistics_time=0.5)
    )
    smoother, out = TemporalSmoother(), []
    for i in range(0, len(frames), batch):
        part = frames[i : i + batch]
        done, _ = enhance_batch(
            enhancer, smoother, part, seconds[i : i + batch], [None] * len(part), end=i + batch >= len(frames)
        )
        out += done
    return enhancer.strengths, out


def test_a_well_lit_picture_passes_nearly_unchanged_and_a_near_black_one_gets_the_full_method(shared_dir, tmp_path):
    lol = shared_dir / "data" / "lol_eval15"
    folder = tmp_path / "in"
    folder.mkdir()
    well_lit = _read(lol / "high" / "1.png")
    cv2.imwrite(str(folder / "a.png"), well_lit[..., ::-1])
    vidlight.enhance_video(folder, str(tmp_path / "out") + "/", progress=False)
    assert _psnr(_read(next((tmp_path / "out").glob("*.png"))), well_lit) > 40

    dark = tmp_path / "dark"
    dark.mkdir()
    cv2.imwrite(str(dark / "a.png"), _read(lol / "low" / "1.png")[..., ::-1])
    vidlight.enhance_video(dark, str(tmp_path / "auto") + "/", progress=False)
    vidlight.enhance_video(dark, str(tmp_path / "full") + "/", progress=False, strength=1)
    auto, full = (_read(next((tmp_path / d).glob("*.png"))) for d in ("auto", "full"))
    assert np.array_equal(auto, full)


def _each_alone_and_together(pictures: dict[str, np.ndarray], tmp_path: Path, **options) -> tuple[list, list]:
    """``pictures`` enhanced as one image folder, and each in a folder of its own."""
    together = tmp_path / "together"
    together.mkdir()
    for name, picture in pictures.items():
        cv2.imwrite(str(together / name), picture[..., ::-1])
        alone = tmp_path / f"alone_{Path(name).stem}"
        alone.mkdir()
        cv2.imwrite(str(alone / name), picture[..., ::-1])
    vidlight.enhance_video(together, str(tmp_path / "out_together") + "/", progress=False, **options)
    joint = [_read(p) for p in sorted((tmp_path / "out_together").glob("*.png"))]
    single = []
    for name in pictures:
        out = tmp_path / f"out_{Path(name).stem}"
        vidlight.enhance_video(tmp_path / f"alone_{Path(name).stem}", str(out) + "/", progress=False, **options)
        single.append(_read(next(out.glob("*.png"))))
    return joint, single


def test_the_pictures_of_a_folder_are_each_enhanced_on_their_own(shared_dir, tmp_path):
    """A folder of photos is not a video: each picture gets what it would get alone. A dark
    photo before a well-lit one of the same size had the well-lit one lifted to a washed-out
    sky (mean 67 -> 156), since the exposure control's average carried over between them."""
    dicm = shared_dir / "data" / "dicm"
    pictures = {name: _read(dicm / name) for name in ("08.jpg", "09.jpg")}
    joint, single = _each_alone_and_together(pictures, tmp_path)
    for got, alone in zip(joint, single):
        assert np.array_equal(got, alone)
    well_lit = pictures["09.jpg"]
    assert abs(float(joint[1].mean()) - float(well_lit.mean())) < 1.0  # it passes nearly unchanged
    assert joint[0].mean() > 2 * pictures["08.jpg"].mean()  # and the dark one is lifted


@pytest.mark.parametrize("smooth", [True, False])
def test_pictures_of_any_size_carry_nothing_to_the_next(tmp_path, smooth):
    """Synthetic pictures, with and without smoothing: a near-black one, a well-lit one of
    another size and a near-black one again come out each as it does alone."""
    rng = np.random.default_rng(11)
    dark = (rng.random((48, 64, 3)) * 14).astype(np.uint8)
    lit = (np.linspace(60, 220, 80)[None, :, None] * np.ones((40, 1, 3)) + rng.random((40, 80, 3)) * 8).astype(np.uint8)
    pictures = {"a.png": dark, "b.png": lit, "c.png": dark[::-1].copy()}
    joint, single = _each_alone_and_together(pictures, tmp_path, smooth=smooth)
    for name, got, alone in zip(pictures, joint, single):
        assert got.shape == alone.shape and np.array_equal(got, alone), name
    assert abs(float(joint[1].mean()) - float(lit.mean())) < 1.0


def test_a_folder_read_as_a_sequence_is_smoothed_over_time(tmp_path):
    """With ``sequence`` a folder is the frames of one video: a picture whose brightness jitters
    (seeded gains of 0.9 to 1.1) comes out with less flicker than as unrelated pictures (at
    strength 1: the automatic strength, chosen per picture, would level the jitter itself)."""
    rng = np.random.default_rng(3)
    base = np.linspace(0.04, 0.16, 96)[None, :, None] * np.ones((64, 1, 3)) + rng.random((64, 96, 3)) * 0.01
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, gain in enumerate(rng.uniform(0.9, 1.1, 32)):
        frame = (np.clip(base * gain, 0, 1) * 255 + 0.5).astype(np.uint8)
        cv2.imwrite(str(folder / f"f{i}.png"), frame[..., ::-1])
    flicker = {}
    for sequence in (False, True):
        out = tmp_path / f"out_{sequence}"
        vidlight.enhance_video(folder, str(out) + "/", progress=False, sequence=sequence, strength=1)
        frames = [_read(out / f"f{i}.png") for i in range(16, 32)]  # once the smoothing has settled
        lumas = np.array([(f.astype(np.float64) @ LUMA).mean() for f in frames])
        flicker[sequence] = np.abs(np.diff(lumas)).mean() / lumas.mean()
    assert flicker[True] < 0.5 * flicker[False], flicker


def test_a_day_to_night_fade_is_followed_without_pumping(shared_dir):
    """A well-lit picture whose exposure falls from 1 to 1/30 over 4 s, then holds for 1 s: the
    strength rises from 0 to about 1 without turning back; the output's brightness moves less,
    and in smaller steps, than the input's, and the night end is enhanced."""
    image = cv2.resize(
        _read(shared_dir / "data" / "lol_eval15" / "high" / "1.png"), (150, 100), interpolation=cv2.INTER_AREA
    )
    ks = np.exp(np.linspace(0, math.log(1 / 30), 120))
    frames = [_darken(image, k) for k in [*ks, *[ks[-1]] * 30]]
    strengths, out = _strengths(frames, [i / 30 for i in range(len(frames))])
    assert strengths[0] == 0.0 and strengths[-1] > 0.95
    assert all(b >= a - 1e-6 for a, b in zip(strengths, strengths[1:]))
    lumas = np.array([(f.astype(np.float64) @ LUMA).mean() for f in out])
    inputs = np.array([(f.astype(np.float64) @ LUMA).mean() for f in frames])
    flicker = lambda v: np.mean(np.abs(np.diff(v))) / np.mean(v)  # noqa: E731
    assert flicker(lumas) <= flicker(inputs)
    assert np.abs(np.diff(lumas)).max() <= np.abs(np.diff(inputs)).max()
    assert lumas[-1] > 3 * inputs[-1]


def test_the_strength_restarts_at_a_scene_cut(shared_dir):
    lol = shared_dir / "data" / "lol_eval15"
    size = (150, 100)
    dark = cv2.resize(_read(lol / "low" / "55.png"), size, interpolation=cv2.INTER_AREA)
    bright = cv2.resize(_read(lol / "high" / "1.png"), size, interpolation=cv2.INTER_AREA)
    frames = [dark] * 6 + [bright] * 2
    strengths, _ = _strengths(frames, [i / 30 for i in range(len(frames))])
    assert strengths[5] == 1.0
    assert strengths[6] < 0.05  # its own strength, not the average with the dark scene's


def test_the_real_night_city_is_made_visible_without_blooming(shared_dir, tmp_path):
    frames = []
    with av.open(str(shared_dir / "data" / "videos" / "guoqi_dark_city_night.mp4")) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) == 4:
                break
    strengths, out = _strengths(frames, [i / 30 for i in range(4)])
    luma_in = np.mean([(f.astype(np.float64) @ LUMA).mean() for f in frames])
    luma_out = np.mean([(f.astype(np.float64) @ LUMA).mean() for f in out])
    clipped = lambda fs: 100 * np.mean([(f.max(axis=2) >= 250).mean() for f in fs])  # noqa: E731
    assert 70 <= luma_out <= 150 and luma_out > luma_in + 10
    assert clipped(out) <= clipped(frames) + 2.0
    assert 0.1 < min(strengths) and max(strengths) < 0.9
