"""Our ports against the official implementations' outputs (../shared/reference/<method>/).

Every reference file was produced by the official code with the official weights (see each
folder's README.md); with the same weights we must agree within 1e-5 max-abs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import vidlight
from vidlight import load_model

from reference import assert_close, hwc, input_image

ATOL = 1e-5

SCI_LEVELS = ("easy", "medium", "difficult")
SCI_CASES = [(level, case) for level in SCI_LEVELS for case in ("lol1", "lol1_crop")]
ZERO_DCE_CASES = ["lol1", "lol1_crop"]
# (file tag, scale_factor, input case): the official test crops to multiples of the scale.
ZERO_DCE_PP_CASES = [("s12_lol1_396", 12, "lol1_396"), ("s1_lol1_crop", 1, "lol1_crop")]


def test_every_reference_file_is_covered(shared_dir: Path) -> None:
    """A reference file added later must not sit there untested."""
    ref = shared_dir / "reference"
    covered = (
        {f"sci/out_{w}_{c}.npy" for w, c in SCI_CASES}
        | {f"sci/illum_{w}_lol1_crop.npy" for w in SCI_LEVELS}
        | {f"zero_dce/out_{c}.npy" for c in ZERO_DCE_CASES}
        | {"zero_dce/r_lol1_crop.npy", "zero_dce/enhance1_lol1_crop.npy"}
        | {f"zero_dce_pp/{kind}_{tag}.npy" for tag, _, _ in ZERO_DCE_PP_CASES for kind in ("out", "xr")}
        | {"zero_dce_pp/xdown_s12_lol1_396.npy", "zero_dce_pp/xrlow_s12_lol1_396.npy"}
    )
    present = {
        f"{method}/{p.name}" for method in ("sci", "zero_dce", "zero_dce_pp") for p in (ref / method).glob("*.npy")
    }
    assert present == covered


def test_list_models_has_the_ported_methods() -> None:
    assert {"sci", "zero-dce", "zero-dce++"} <= set(vidlight.list_models())


# --- SCI ---------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "case"), SCI_CASES)
def test_sci_output(level: str, case: str, shared_dir: Path, official_weights_dir: Path) -> None:
    ref = shared_dir / "reference" / "sci"
    model = load_model("sci", weights=f"sci-{level}")
    with torch.no_grad():
        out = model(input_image(ref, case))
    assert_close(hwc(out), np.load(ref / f"out_{level}_{case}.npy"), ATOL, f"sci-{level} {case}")


@pytest.mark.parametrize("level", SCI_LEVELS)
def test_sci_illumination(level: str, shared_dir: Path, official_weights_dir: Path) -> None:
    ref = shared_dir / "reference" / "sci"
    model = load_model("sci", weights=f"sci-{level}")
    with torch.no_grad():
        illum = model.estimate_illumination(input_image(ref, "lol1_crop"))
    assert_close(hwc(illum), np.load(ref / f"illum_{level}_lol1_crop.npy"), ATOL, f"sci-{level} illumination")


def test_sci_from_explicit_path_and_npz(shared_dir: Path, tmp_path: Path) -> None:
    """A checkpoint path and an .npz keyed by the official tensor names load the same weights."""
    ref = shared_dir / "reference" / "sci"
    pt = shared_dir / "weights" / "sci" / "medium.pt"
    official = torch.load(pt, map_location="cpu", weights_only=True)
    npz = tmp_path / "medium.npz"
    np.savez(npz, **{name: tensor.numpy() for name, tensor in official.items()})

    x = input_image(ref, "lol1_crop")
    expected = np.load(ref / "out_medium_lol1_crop.npy")
    outputs = {}
    for label, weights in (("path", str(pt)), ("npz", str(npz))):
        with torch.no_grad():
            outputs[label] = hwc(load_model("sci", weights=weights)(x))
        assert_close(outputs[label], expected, ATOL, f"sci medium from {label}")
    np.testing.assert_array_equal(outputs["path"], outputs["npz"])


def test_sci_cpu_compiled_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    """SCI's inference on a CPU runs as compiled bands of rows: within 1e-6 of the same network
    in torch (the path autograd takes), for either memory layout, and the same bit for bit
    however the frame is cut into bands."""
    import vidlight.models.sci as sci

    model = load_model("sci")
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 61, 97, generator=g) * 0.5
    with torch.enable_grad():
        expected = model.estimate_illumination(x).detach()
    with torch.inference_mode():
        for layout in (torch.contiguous_format, torch.channels_last):
            got = model.estimate_illumination(x.contiguous(memory_format=layout))
            assert (got - expected).abs().max() < 1e-6, layout
        monkeypatch.setattr(sci, "_BAND_PIXELS", 97 * 7)  # 9 bands of 7 rows, on a pool of threads
        banded = model.estimate_illumination(x)
        monkeypatch.setattr(sci, "_BAND_PIXELS", 1)  # one row each
        assert torch.equal(model.estimate_illumination(x), banded)
        assert torch.equal(banded, got)


def test_sci_cpu_kernel_reads_padded_rows_and_empty_bands() -> None:
    """SCI's strip kernel gives the same levels for a frame whose rows are padded (a view into a
    wider buffer, as decoders hand them out) as for a compact copy, returns nothing for an empty
    band, and the band's illumination refuses an output it could not write in place."""
    from vidlight.models.sci_cpu import illumination

    model = load_model("sci")
    kernel = model.strip_kernel()
    wide = (np.random.default_rng(5).random((20, 40, 3)) * 90).astype(np.uint8)
    padded, compact = wide[:, :33], np.ascontiguousarray(wide[:, :33])
    assert not padded.flags.c_contiguous
    for strength in (1.0, 0.4):
        got, expected = np.empty((20, 33, 3), np.uint16), np.empty((20, 33, 3), np.uint16)
        kernel(padded, 0, 20, strength, got)
        kernel(compact, 0, 20, strength, expected)
        np.testing.assert_array_equal(got, expected)
    kernel(compact, 5, 5, 0.4, np.empty((0, 33, 3), np.uint16))
    with torch.no_grad():
        params = model.illumination.kernel_params()
    with pytest.raises(ValueError, match="fp32"):
        illumination(compact, np.empty((20, 33, 3), np.float64), 0, 20, model.illumination.layers, params, 1 / 255)


@pytest.mark.parametrize("layers", [2, 3])
def test_sci_cpu_compiled_bands_deeper(layers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled bands repeat the shared residual block ``layers`` times and read one row of
    context per convolution: with seeded random weights and BatchNorm statistics (negative
    pre-activations included), within 1e-6 of torch's network, in bands of 5 rows too."""
    import vidlight.models.sci as sci

    torch.manual_seed(layers)
    net = sci.IlluminationEstimator(layers=layers)
    bn = net.block[1]
    assert isinstance(bn, torch.nn.BatchNorm2d)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape) * 0.4)
        bn.running_mean.copy_(torch.randn(3) * 0.1)
        bn.running_var.copy_(torch.rand(3) + 0.5)
    net.eval()
    x = torch.rand(1, 3, 33, 41, generator=torch.Generator().manual_seed(layers))
    with torch.enable_grad():
        expected = net(x).detach()
    assert 0.01 < (expected < 1.0).float().mean() < 0.99  # neither clamp takes the whole frame
    with torch.inference_mode():
        got = net(x.contiguous(memory_format=torch.channels_last))
        monkeypatch.setattr(sci, "_BAND_PIXELS", 41 * 5)
        banded = net(x)
    assert (got - expected).abs().max() < 1e-6
    assert torch.equal(banded, got)


@pytest.mark.parametrize("channels", [2, 4])
def test_sci_other_feature_widths_take_torch(channels: int) -> None:
    """The compiled bands are written for SCI's 3 features; an estimator of another width (a
    constructor argument) runs torch's convolutions instead, within 1e-6 of the training-mode
    path, and an empty batch gives an empty result."""
    import vidlight.models.sci as sci

    torch.manual_seed(channels)
    net = sci.IlluminationEstimator(channels=channels).eval()
    x = torch.rand(2, 3, 19, 23, generator=torch.Generator().manual_seed(channels))
    with torch.enable_grad():
        expected = net(x).detach()
    with torch.inference_mode():
        assert (net(x) - expected).abs().max() < 1e-6
        assert net(x[:0]).shape == (0, 3, 19, 23)


# --- Zero-DCE ----------------------------------------------------------------------


@pytest.mark.parametrize("case", ZERO_DCE_CASES)
def test_zero_dce_output(case: str, shared_dir: Path, official_weights_dir: Path) -> None:
    ref = shared_dir / "reference" / "zero_dce"
    model = load_model("zero-dce", weights="zero-dce")
    with torch.no_grad():
        out = model(input_image(ref, case))
    assert_close(hwc(out), np.load(ref / f"out_{case}.npy"), ATOL, f"zero-dce {case}")


def test_zero_dce_curves(shared_dir: Path, official_weights_dir: Path) -> None:
    ref = shared_dir / "reference" / "zero_dce"
    model = load_model("zero-dce", weights="zero-dce")
    x = input_image(ref, "lol1_crop")
    with torch.no_grad():
        curves = model.estimate_curves(x)
        after_four = model.apply_curves(x, curves[:, :12])  # the official enhance_image_1
    assert_close(hwc(curves), np.load(ref / "r_lol1_crop.npy"), ATOL, "zero-dce curve maps")
    assert_close(hwc(after_four), np.load(ref / "enhance1_lol1_crop.npy"), ATOL, "zero-dce after 4 iterations")


def test_zero_dce_from_npz(shared_dir: Path, tmp_path: Path) -> None:
    ref = shared_dir / "reference" / "zero_dce"
    official = torch.load(shared_dir / "weights" / "zero_dce" / "Epoch99.pth", map_location="cpu", weights_only=True)
    npz = tmp_path / "zero_dce.npz"
    np.savez(npz, **{name: tensor.numpy() for name, tensor in official.items()})
    with torch.no_grad():
        out = load_model("zero-dce", weights=str(npz))(input_image(ref, "lol1_crop"))
    assert_close(hwc(out), np.load(ref / "out_lol1_crop.npy"), ATOL, "zero-dce from npz")


# --- Zero-DCE++ --------------------------------------------------------------------


@pytest.mark.parametrize(("tag", "scale", "case"), ZERO_DCE_PP_CASES)
def test_zero_dce_pp_output_and_curves(
    tag: str, scale: int, case: str, shared_dir: Path, official_weights_dir: Path
) -> None:
    ref = shared_dir / "reference" / "zero_dce_pp"
    model = load_model("zero-dce++", weights="zero-dce++", scale_factor=scale)
    x = input_image(ref, case)
    with torch.no_grad():
        out = model(x)
        curves = model.estimate_curves(x)
    assert_close(hwc(out), np.load(ref / f"out_{tag}.npy"), ATOL, f"zero-dce++ {tag}")
    assert_close(hwc(curves), np.load(ref / f"xr_{tag}.npy"), ATOL, f"zero-dce++ {tag} curve map")


def test_zero_dce_pp_low_resolution_estimator(shared_dir: Path, official_weights_dir: Path) -> None:
    """The CNN alone, on the official downsampled input (isolates resampling from the network)."""
    ref = shared_dir / "reference" / "zero_dce_pp"
    model = load_model("zero-dce++", weights="zero-dce++")
    x_down = torch.from_numpy(np.load(ref / "xdown_s12_lol1_396.npy")).permute(2, 0, 1)[None]
    with torch.no_grad():
        low = model.curves(x_down)
    assert_close(hwc(low), np.load(ref / "xrlow_s12_lol1_396.npy"), ATOL, "zero-dce++ estimator at 33x50")


def test_zero_dce_pp_default_scale_on_multiple_of_12(shared_dir: Path, official_weights_dir: Path) -> None:
    """396x600 needs no padding: the default model gives exactly the official s=12 result."""
    ref = shared_dir / "reference" / "zero_dce_pp"
    model = load_model("zero-dce++", weights="zero-dce++")
    assert model.scale_factor == 12
    with torch.no_grad():
        out = model(input_image(ref, "lol1_396"))
    assert_close(hwc(out), np.load(ref / "out_s12_lol1_396.npy"), ATOL, "zero-dce++ default scale, 396x600")


@pytest.mark.parametrize(("height", "width"), [(1, 1), (13, 7), (37, 53), (400, 600)])
def test_zero_dce_pp_any_frame_size(height: int, width: int, official_weights_dir: Path) -> None:
    model = load_model("zero-dce++", weights="zero-dce++")
    rng = np.random.default_rng(height * 1000 + width)
    x = torch.from_numpy(rng.uniform(0, 0.3, (1, 3, height, width)).astype(np.float32))
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_zero_dce_pp_from_explicit_path(shared_dir: Path) -> None:
    ref = shared_dir / "reference" / "zero_dce_pp"
    path = shared_dir / "weights" / "zero_dce_pp" / "Epoch99.pth"
    model = load_model("zero-dce++", weights=str(path), scale_factor=1)
    with torch.no_grad():
        out = model(input_image(ref, "lol1_crop"))
    assert_close(hwc(out), np.load(ref / "out_s1_lol1_crop.npy"), ATOL, "zero-dce++ from path")


def test_subnormal_official_weights_are_flushed(official_weights_dir: Path) -> None:
    """Zero-DCE's official checkpoint holds weights near 1e-44; a CPU multiplies by such numbers
    on a slow path (17 s instead of 0.4 s per 600 x 400 frame). They load as 0."""
    state = torch.load(official_weights_dir / "zero_dce" / "Epoch99.pth", map_location="cpu", weights_only=True)
    tiny = torch.finfo(torch.float32).tiny
    assert sum(int(((v != 0) & (v.abs() < tiny)).sum()) for v in state.values()) > 1000
    model = load_model("zero-dce")
    for name, value in model.state_dict().items():
        assert not ((value != 0) & (value.abs() < tiny)).any(), name
