"""PSNR/SSIM/quantisation against independent figures.

The LOL eval15 table in ../shared/reference/lol_eval15_scores.md was computed by the
fixture authors with scikit-image on the official implementations' outputs; the 8-bit
PNGs in the reference folders were written by the official test scripts.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vidlight import load_model
from vidlight.metrics import psnr, quantize, ssim
from vidlight.train.data import read_rgb, to_tensor

# --- unit checks (hand-computed values) ---------------------------------------------------


def test_psnr_of_identical_images_is_inf() -> None:
    img = np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    assert psnr(img, img) == math.inf


def test_psnr_known_value() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 255, np.uint8)
    assert psnr(a, b) == pytest.approx(0.0, abs=1e-12)  # MSE = 255^2
    b = np.full((4, 4, 3), 1, np.uint8)
    assert psnr(a, b) == pytest.approx(20 * math.log10(255), abs=1e-9)  # MSE = 1


def test_ssim_of_identical_images_is_one() -> None:
    img = np.random.default_rng(1).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert ssim(img[..., 0], img[..., 0]) == pytest.approx(1.0, abs=1e-12)


def test_ssim_is_symmetric_and_below_one() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-12)
    assert 0 < ssim(a, b) < 1


def test_quantize_round_and_trunc() -> None:
    # Exact in float32: x*255 lands on .5, .75, .875, .25 and .498... offsets.
    x = torch.tensor([0.0, 1 / 512, 3 / 512, 0.125, 0.25, 0.5, 0.75, 1.0, -0.2, 1.5])
    scaled = [0.0, 0.498046875, 1.494140625, 31.875, 63.75, 127.5, 191.25, 255.0, 0.0, 255.0]
    assert (x.clamp(0, 1) * 255).tolist() == scaled
    assert quantize(x, rounding="round").tolist() == [0, 0, 1, 32, 64, 128, 191, 255, 0, 255]
    assert quantize(x, rounding="trunc").tolist() == [0, 0, 1, 31, 63, 127, 191, 255, 0, 255]
    assert quantize(x).dtype == torch.uint8
    assert quantize(x).tolist() == quantize(x, rounding="round").tolist()


def test_quantize_rejects_unknown_rounding() -> None:
    with pytest.raises(ValueError, match="round, trunc"):
        quantize(torch.zeros(3), rounding="floor")


@pytest.mark.parametrize(
    ("method", "stem", "rounding"),
    [
        ("sci", "out_easy_lol1_crop", "trunc"),
        ("sci", "out_medium_lol1_crop", "trunc"),
        ("sci", "out_difficult_lol1_crop", "trunc"),
        ("zero_dce", "out_lol1_crop", "round"),
        ("zero_dce_pp", "out_s1_lol1_crop", "round"),
    ],
)
def test_quantize_matches_official_pngs(method: str, stem: str, rounding: str, shared_dir: Path) -> None:
    """The official scripts' own 8-bit files, from the official float outputs."""
    ref = shared_dir / "reference" / method
    official = torch.from_numpy(np.load(ref / f"{stem}.npy"))
    np.testing.assert_array_equal(quantize(official, rounding=rounding).numpy(), read_rgb(ref / f"{stem}.png"))


# --- LOL eval15: the official table --------------------------------------------------------


def _table(shared_dir: Path) -> dict[str, dict[str, tuple[float, float]]]:
    """Per-image rows of the official table: {image: {column: (psnr, ssim)}}."""
    text = (shared_dir / "reference" / "lol_eval15_scores.md").read_text()
    section = text.split("## Per image", 1)[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    columns = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not re.fullmatch(r"\d+\.png", cells[0]):
            continue
        rows[cells[0]] = {col: tuple(float(v) for v in cell.split("/")) for col, cell in zip(columns[1:], cells[1:])}
    return rows


def _pairs(shared_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    data = shared_dir / "data" / "lol_eval15"
    names = sorted(p.name for p in (data / "low").glob("*.png"))
    assert len(names) == 15
    return [(name, read_rgb(data / "low" / name), read_rgb(data / "high" / name)) for name in names]


def _check(scores: dict[str, tuple[float, float]], table: dict, column: str, mean: tuple[float, float]) -> None:
    assert set(scores) == set(table)
    for name, (p, s) in scores.items():
        tp, ts = table[name][column]
        assert p == pytest.approx(tp, abs=0.0051), f"{column} {name}: PSNR {p:.4f}, table {tp}"
        assert s == pytest.approx(ts, abs=0.00051), f"{column} {name}: SSIM {s:.5f}, table {ts}"
    mean_psnr = float(np.mean([p for p, _ in scores.values()]))
    mean_ssim = float(np.mean([s for _, s in scores.values()]))
    assert mean_psnr == pytest.approx(mean[0], abs=0.002), f"{column}: mean PSNR {mean_psnr:.4f}"
    assert mean_ssim == pytest.approx(mean[1], abs=0.0002), f"{column}: mean SSIM {mean_ssim:.5f}"


def test_identity_baseline(shared_dir: Path) -> None:
    """Metrics alone (no model): low vs high."""
    scores = {name: (psnr(high, low), ssim(high, low)) for name, low, high in _pairs(shared_dir)}
    _check(scores, _table(shared_dir), "identity", (7.773, 0.1914))


@pytest.mark.parametrize(
    ("model_name", "weights", "options", "rows", "rounding", "column", "mean"),
    [
        ("sci", "sci-medium", {}, None, "trunc", "SCI medium", (14.784, 0.5254)),
        ("sci", "sci-easy", {}, None, "trunc", "SCI easy", (9.580, 0.3668)),
        ("sci", "sci-difficult", {}, None, "trunc", "SCI difficult", (13.806, 0.5283)),
        ("zero-dce++", "zero-dce++", {"scale_factor": 12}, 396, "round", "Zero-DCE++ s12", (15.345, 0.5731)),
        pytest.param("zero-dce", "zero-dce", {}, None, "round", "Zero-DCE", (14.861, 0.5624), marks=pytest.mark.slow),
    ],
    ids=["sci-medium", "sci-easy", "sci-difficult", "zero-dce++", "zero-dce"],
)
def test_lol_eval15_official_table(
    model_name: str,
    weights: str,
    options: dict,
    rows: int | None,
    rounding: str,
    column: str,
    mean: tuple[float, float],
    shared_dir: Path,
    official_weights_dir: Path,
) -> None:
    model = load_model(model_name, weights=weights, **options)
    scores = {}
    for name, low, high in _pairs(shared_dir):
        # Zero-DCE++'s official test crops to multiples of its scale factor (400 -> 396 rows).
        low, high = low[:rows], high[:rows]
        with torch.no_grad():
            out = model(to_tensor(low))
        enhanced = quantize(out, rounding=rounding)[0].permute(1, 2, 0).numpy()
        scores[name] = (psnr(high, enhanced), ssim(high, enhanced))
    _check(scores, _table(shared_dir), column, mean)
