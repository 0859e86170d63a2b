"""MBLLEN against the official Keras implementation's outputs (../shared/reference/mbllen/).

The fixtures were produced by the official ``main/test.py`` (TensorFlow 2.15 / Keras 2,
oneDNN on, CPU fp32) with the official .h5 weights; see that folder's README.md. Raw network
outputs must agree within 1e-5 and post-processed ones within 1e-4 max-abs (the official
post-processing amplifies last-bit differences at near-gray pixels: the README measured
6.3e-5 between two TensorFlow CPU backends).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import vidlight
from vidlight import WeightsError, load_model
from vidlight.models.mbllen import (
    MIN_SIDE,
    RECEPTIVE_HALO,
    _hsv_to_rgb,
    _percentile,
    _rgb_to_hsv,
    official_postprocess,
)
from vidlight.models.registry import get_model_spec
from vidlight.train.data import read_rgb, to_tensor
from vidlight.weights import read_checkpoint

from reference import assert_close, hwc, input_image, reference_dir

RAW_ATOL = 1e-5
POST_ATOL = 1e-4

# fixture file prefix -> catalogue weights
WEIGHTS = {"": "mbllen-lol", "synnoise_": "mbllen-syn-noise"}
CASES = ("lol1_crop", "lol1")
H5_FILES = ("LOL_img_lowlight", "Syn_img_lowlight", "Syn_img_lowlight_withnoise")


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)[None]


def _png_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _assert_png_close(ours: np.ndarray, path: Path) -> None:
    """8-bit as the official ``utls.imwrite`` writes it (round to nearest): at most 1 level off."""
    quantised = np.clip(np.rint(np.clip(ours, 0.0, 1.0) * 255.0), 0, 255).astype(np.int16)
    levels = np.abs(quantised - _png_rgb(path).astype(np.int16))
    assert levels.max() <= 1, f"{path.name}: {int(levels.max())} levels off"


def test_every_reference_file_is_covered(shared_dir: Path) -> None:
    """A reference file added later must not sit there untested."""
    covered = {"README.md"} | {f"in_{c}.png" for c in CASES}
    for prefix in WEIGHTS:
        covered |= {f"{prefix}{kind}_{c}.npy" for kind in ("raw", "out") for c in CASES}
        covered |= {f"{prefix}postnoclip_lol1_crop.npy"}
        covered |= {f"{prefix}{kind}_lol1_crop.png" for kind in ("raw", "out")}
    assert {p.name for p in reference_dir(shared_dir, "mbllen").iterdir()} == covered


def test_registered_with_default_weights_and_options() -> None:
    assert "mbllen" in vidlight.list_models()
    spec = get_model_spec("mbllen")
    assert spec.default_weights == "mbllen-lol"
    assert spec.option_defaults() == {
        "postprocess": False,
        "high_percentile": 95.0,
        "low_percentile": 5.0,
        "gamma": 0.8,
        "max_range": 0.8,
    }
    assert set(spec.options) == set(spec.option_defaults())


# --- exactness --------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("prefix", list(WEIGHTS), ids=list(WEIGHTS.values()))
def test_raw_and_postprocessed_outputs(prefix: str, case: str, shared_dir: Path, official_weights_dir: Path) -> None:
    ref = reference_dir(shared_dir, "mbllen")
    model = load_model("mbllen", weights=WEIGHTS[prefix], postprocess=True)
    with torch.no_grad():
        raw = model.network_output(input_image(ref, case))
        out = model.postprocess_frames(raw)
        before_clip = model.postprocess_frames(raw, clip=False)
    what = f"{WEIGHTS[prefix]} {case}"
    assert_close(hwc(raw), np.load(ref / f"{prefix}raw_{case}.npy"), RAW_ATOL, f"{what} raw")
    assert_close(hwc(out), np.load(ref / f"{prefix}out_{case}.npy"), POST_ATOL, f"{what} post-processed")
    if (ref / f"{prefix}postnoclip_{case}.npy").exists():
        assert_close(
            hwc(before_clip), np.load(ref / f"{prefix}postnoclip_{case}.npy"), POST_ATOL, f"{what} before the clip"
        )
    for kind, ours in (("raw", raw), ("out", out)):
        if (ref / f"{prefix}{kind}_{case}.png").exists():
            _assert_png_close(hwc(ours), ref / f"{prefix}{kind}_{case}.png")


@pytest.mark.parametrize("prefix", list(WEIGHTS), ids=list(WEIGHTS.values()))
def test_forward_with_and_without_postprocessing(prefix: str, shared_dir: Path, official_weights_dir: Path) -> None:
    ref = reference_dir(shared_dir, "mbllen")
    x = input_image(ref, "lol1_crop")
    with torch.no_grad():
        raw = load_model("mbllen", weights=WEIGHTS[prefix])(x)
        out = load_model("mbllen", weights=WEIGHTS[prefix], postprocess=True)(x)
    assert raw.shape == out.shape == x.shape
    assert_close(hwc(raw), np.load(ref / f"{prefix}raw_lol1_crop.npy"), RAW_ATOL, "forward, raw")
    assert_close(hwc(out), np.load(ref / f"{prefix}out_lol1_crop.npy"), POST_ATOL, "forward, post-processed")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("prefix", list(WEIGHTS), ids=list(WEIGHTS.values()))
def test_postprocessing_alone_on_the_official_raw_output(prefix: str, case: str, shared_dir: Path) -> None:
    """Isolates the post-processing from the network: given the official raw output, ours
    reproduces the official result to the last bit or two (bitwise on the machine that made
    the fixtures' kind: OpenCV's FMA arithmetic and numpy's float32 power are emulated)."""
    ref = reference_dir(shared_dir, "mbllen")
    raw = _chw(np.load(ref / f"{prefix}raw_{case}.npy"))
    assert_close(hwc(official_postprocess(raw)), np.load(ref / f"{prefix}out_{case}.npy"), 1e-6, "out")
    if (ref / f"{prefix}postnoclip_{case}.npy").exists():
        before_clip = hwc(official_postprocess(raw, clip=False))
        assert_close(before_clip, np.load(ref / f"{prefix}postnoclip_{case}.npy"), 1e-6, "before the clip")


def test_postprocessing_options_reach_the_computation(shared_dir: Path) -> None:
    raw = _chw(np.load(reference_dir(shared_dir, "mbllen") / "raw_lol1_crop.npy"))
    default = official_postprocess(raw)
    explicit = official_postprocess(raw, high_percentile=95, low_percentile=5, gamma=0.8, max_range=0.8)
    assert torch.equal(default, explicit)
    for change in ({"high_percentile": 99.0}, {"low_percentile": 1.0}, {"gamma": 1.0}, {"max_range": 0.6}):
        assert not torch.equal(default, official_postprocess(raw, **change)), change
    y = official_postprocess(raw, gamma=1.0, clip=False)
    assert y.shape == raw.shape and torch.isfinite(y).all()


# --- weights ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", H5_FILES)
def test_h5_and_npz_hold_identical_tensors(name: str, shared_dir: Path) -> None:
    folder = shared_dir / "weights" / "mbllen"
    h5 = read_checkpoint(folder / f"{name}.h5")
    npz = read_checkpoint(folder / f"{name}.npz")
    assert len(h5) == 162
    assert h5.keys() == npz.keys()
    for key in h5:
        assert h5[key].dtype == npz[key].dtype == torch.float32
        assert torch.equal(h5[key], npz[key]), key
    assert sum(t.numel() for t in h5.values()) == 450171


def test_h5_and_npz_give_identical_outputs(shared_dir: Path) -> None:
    ref = reference_dir(shared_dir, "mbllen")
    folder = shared_dir / "weights" / "mbllen"
    x = input_image(ref, "lol1_crop")
    with torch.no_grad():
        from_h5 = load_model("mbllen", weights=str(folder / "LOL_img_lowlight.h5"), postprocess=True)(x)
        from_npz = load_model("mbllen", weights=str(folder / "LOL_img_lowlight.npz"), postprocess=True)(x)
    torch.testing.assert_close(from_h5, from_npz, rtol=0, atol=0)
    assert_close(hwc(from_h5), np.load(ref / "out_lol1_crop.npy"), POST_ATOL, "from the .h5 path")


def test_state_in_our_own_naming_loads(shared_dir: Path, official_weights_dir: Path, tmp_path: Path) -> None:
    model = load_model("mbllen")
    path = tmp_path / "ours.pt"
    torch.save(model.state_dict(), path)
    x = input_image(reference_dir(shared_dir, "mbllen"), "lol1_crop")
    with torch.no_grad():
        torch.testing.assert_close(load_model("mbllen", weights=str(path))(x), model(x), rtol=0, atol=0)


def test_another_models_checkpoint_names_the_first_official_tensor(shared_dir: Path) -> None:
    with pytest.raises(WeightsError, match=r"'conv2d_1/conv2d_1/kernel:0'") as info:
        load_model("mbllen", weights=str(shared_dir / "weights" / "sci" / "medium.pt"))
    assert "\n" not in str(info.value)
    with pytest.raises(WeightsError, match=r"'enhance\.in_conv\.0\.weight'"):
        load_model("sci", weights=str(shared_dir / "weights" / "mbllen" / "LOL_img_lowlight.h5"))


def test_missing_and_misshaped_tensors_are_named(shared_dir: Path, tmp_path: Path) -> None:
    official = read_checkpoint(shared_dir / "weights" / "mbllen" / "LOL_img_lowlight.npz")
    arrays = {name: tensor.numpy() for name, tensor in official.items()}

    missing = dict(arrays)
    del missing["conv2d_transpose_30/conv2d_transpose_30/bias:0"]
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(WeightsError, match=r"no tensor 'conv2d_transpose_30/conv2d_transpose_30/bias:0'"):
        load_model("mbllen", weights=str(tmp_path / "missing.npz"))

    misshaped = dict(arrays)
    misshaped["conv2d_1/conv2d_1/kernel:0"] = np.zeros((3, 3, 4, 32), np.float32)
    np.savez(tmp_path / "misshaped.npz", **misshaped)
    with pytest.raises(WeightsError) as info:
        load_model("mbllen", weights=str(tmp_path / "misshaped.npz"))
    message = str(info.value)
    assert "'conv2d_1/conv2d_1/kernel:0'" in message
    assert "(3, 3, 4, 32)" in message  # as stored (Keras layout)
    assert "(32, 3, 3, 3)" in message  # what our layer holds
    assert "\n" not in message


def test_bad_h5_files(tmp_path: Path) -> None:
    import h5py

    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(WeightsError) as info:
        load_model("mbllen", weights=str(garbage))
    assert str(garbage) in str(info.value) and "\n" not in str(info.value)

    not_keras = tmp_path / "plain.h5"
    with h5py.File(not_keras, "w") as f:
        f["x"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError, match="not a Keras weights file"):
        load_model("mbllen", weights=str(not_keras))


# --- frame sizes, options ----------------------------------------------------------------


@pytest.mark.parametrize("postprocess", [False, True])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (13, 7), (12, 13), (37, 53)])
def test_any_frame_size(height: int, width: int, postprocess: bool, official_weights_dir: Path) -> None:
    model = load_model("mbllen", postprocess=postprocess)
    rng = np.random.default_rng(height * 1000 + width)
    x = torch.from_numpy(rng.uniform(0, 0.3, (2, 3, height, width)).astype(np.float32))
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert (out >= 0).all()
    if postprocess:
        assert (out <= 1).all()


def test_frames_are_independent_and_sides_from_13_need_no_padding(official_weights_dir: Path) -> None:
    """Batched frames are post-processed one by one; at MIN_SIDE the network runs unpadded."""
    model = load_model("mbllen", postprocess=True)
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.uniform(0, 0.4, (2, 3, MIN_SIDE, 21)).astype(np.float32))
    with torch.no_grad():
        both = model(x)
        first = model(x[:1])
        assert model.network_output(x).shape == x.shape
    torch.testing.assert_close(both[:1], first, rtol=0, atol=1e-6)


def test_receptive_halo(official_weights_dir: Path) -> None:
    """A strip with RECEPTIVE_HALO rows of context on each side gives the whole-frame rows."""
    model = load_model("mbllen")
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.uniform(0, 0.4, (1, 3, 100, 40)).astype(np.float32))
    h = RECEPTIVE_HALO
    with torch.no_grad():
        whole = model(x)[:, :, 40:60]
        strip = model(x[:, :, 40 - h : 60 + h])[:, :, h : h + 20]
    torch.testing.assert_close(strip, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {"postprocess": "maybe"},
        {"postprocess": "true"},
        {"high_percentile": 101},
        {"low_percentile": -1},
        {"gamma": 0},
        {"max_range": 0},
    ],
)
def test_bad_options(options: dict, official_weights_dir: Path) -> None:
    with pytest.raises(vidlight.VidlightError, match="mbllen"):
        load_model("mbllen", **options)


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("false", False), ("1", True), ("0", False)])
def test_postprocess_option_from_text(text: str, expected: bool, official_weights_dir: Path) -> None:
    """``-o postprocess=VALUE`` is read as TOML reads a value, then checked by the model."""
    from vidlight.settings import parse_pairs

    assert load_model("mbllen", **parse_pairs([f"postprocess={text}"])).postprocess is expected


# --- the post-processing's building blocks -----------------------------------------------


@pytest.mark.parametrize("q", [0.0, 5.0, 37.3, 95.0, 100.0])
def test_percentile_matches_numpy(q: float) -> None:
    rng = np.random.default_rng(int(q * 10))
    for n in (1, 2, 7, 1001):
        values = rng.uniform(-0.2, 1.3, n).astype(np.float32)
        expected = np.percentile(values.astype(np.float64), q)
        assert _percentile(torch.from_numpy(values), q) == pytest.approx(expected, abs=1e-7)


def test_hsv_conversions_match_opencv() -> None:
    """Our float32 RGB<->HSV against the installed OpenCV, on values outside [0, 1] too and on
    ties between channels (OpenCV builds may differ from ours in the last bit: FMA or not)."""
    rng = np.random.default_rng(0)
    y = rng.uniform(-0.3, 1.2, (64, 97, 3)).astype(np.float32)
    y[::7, :, 1] = y[::7, :, 0]
    y[::5, :, 2] = y[::5, :, 0]
    y[::11, :, 2] = y[::11, :, 1]
    y[::13] = y[::13, :, :1]  # gray pixels: S = 0
    hsv = cv2.cvtColor(y, cv2.COLOR_RGB2HSV)
    h, s, v = _rgb_to_hsv(torch.from_numpy(y).permute(2, 0, 1))
    np.testing.assert_allclose(h.numpy(), hsv[..., 0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(s.numpy(), hsv[..., 1], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(v.numpy(), hsv[..., 2])

    hsv[..., 1] = np.power(hsv[..., 1], np.float32(0.8))
    t = torch.from_numpy(hsv).permute(2, 0, 1)
    back = _hsv_to_rgb(t[0], t[1], t[2]).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(back, cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), rtol=0, atol=1e-6)


# --- LOL eval15 scores (the catalogue's figures) -------------------------------------------


def _mbllen_table(shared_dir: Path) -> tuple[dict[str, dict[str, float]], dict[str, tuple[float, float]]]:
    """Per-image rows ({image: {column: value}}) and the means of lol_eval15_scores_mbllen.md."""
    text = (shared_dir / "reference" / "lol_eval15_scores_mbllen.md").read_text()
    means = {}
    for label, key in (("MBLLEN raw network output", "raw"), ("MBLLEN + official post-processing", "post")):
        line = next(line for line in text.splitlines() if line.startswith(f"| {label}"))
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        means[key] = (float(cells[1]), float(cells[2]))
    lines = [line for line in text.split("## Per image", 1)[1].splitlines() if line.startswith("|")]
    columns = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[f"{cells[0]}.png"] = {col: float(cell) for col, cell in zip(columns[1:], cells[1:])}
    return rows, means


@pytest.mark.slow
def test_lol_eval15_scores_match_the_official_table(shared_dir: Path, official_weights_dir: Path) -> None:
    """Raw and post-processed scores per image and on average, as the official run measured
    them (8-bit, rounded to nearest); the catalogue quotes the raw means."""
    from vidlight.metrics import psnr, quantize, ssim
    from vidlight.weights import get_weights

    rows, means = _mbllen_table(shared_dir)
    data = shared_dir / "data" / "lol_eval15"
    model = load_model("mbllen", weights="mbllen-lol")
    scores: dict[str, list[tuple[float, float]]] = {"raw": [], "post": []}
    assert sorted(p.name for p in (data / "low").glob("*.png")) == sorted(rows)
    for name, row in rows.items():
        high = read_rgb(data / "high" / name)
        with torch.no_grad():
            raw = model.network_output(to_tensor(read_rgb(data / "low" / name)))
            post = model.postprocess_frames(raw)
        for key, out in (("raw", raw), ("post", post)):
            enhanced = quantize(out, rounding="round")[0].permute(1, 2, 0).numpy()
            p, s = psnr(high, enhanced), ssim(high, enhanced)
            assert p == pytest.approx(row[f"{key} PSNR"], abs=0.0051), f"{name} {key}: PSNR {p:.4f}"
            assert s == pytest.approx(row[f"{key} SSIM"], abs=0.00051), f"{name} {key}: SSIM {s:.5f}"
            scores[key].append((p, s))
    for key, (mean_psnr, mean_ssim) in means.items():
        assert float(np.mean([p for p, _ in scores[key]])) == pytest.approx(mean_psnr, abs=0.001), key
        assert float(np.mean([s for _, s in scores[key]])) == pytest.approx(mean_ssim, abs=0.0001), key
    assert dict(get_weights("mbllen-lol").metrics["lol_eval15"]) == {"psnr": means["raw"][0], "ssim": means["raw"][1]}
