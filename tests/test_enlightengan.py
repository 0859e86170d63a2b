"""EnlightenGAN against the official PyTorch implementation's outputs (../shared/reference/enlightengan/).

The fixtures were produced by the official predict path (``SingleModel.predict``, the flags of
``scripts/script.py --predict``, CPU fp32) with formula weights, since the official
``200_net_G_A.pth`` is only on Google Drive; see that folder's README.md. The weights are
regenerated here from the official key list (with its ``module.`` prefix), saved as an ``.npz``
and as a ``DataParallel``-style ``.pth`` state dict, and loaded through ``load_model``. The
output, latent, attention map and network input must agree within 1e-4 max-abs (the README
measured up to 2.4e-7 between thread counts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import vidlight
from vidlight import VidlightError, WeightsError, load_model
from vidlight.models.enlightengan import EnlightenGAN
from vidlight.models.registry import get_model_spec
from vidlight.train.data import read_rgb, to_tensor

from formula import formula_state
from reference import check_stages, max_diff, reference_dir, stages_of

ATOL = 1e-4
CASES = ("lol1_crop", "lol1")
STAGES = ("out", "latent", "attn", "netin")
N_PARAMS = 8_636_675


def _formula_state(shared_dir: Path) -> dict[str, np.ndarray]:
    return formula_state(reference_dir(shared_dir, "enlightengan") / "keys.txt")


@pytest.fixture(scope="module")
def egan_npz(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("enlightengan") / "200_net_G_A.npz"
    np.savez(path, **_formula_state(shared_dir))
    return path


@pytest.fixture(scope="module")
def model(egan_npz: Path) -> EnlightenGAN:
    return load_model("enlightengan", weights=str(egan_npz))


def test_every_reference_file_is_covered(shared_dir: Path) -> None:
    """A reference file added later must not sit there untested."""
    present = {p.name for p in reference_dir(shared_dir, "enlightengan").glob("*.npy")}
    covered = {f"{name}_{case}.npy" for name in STAGES for case in CASES}
    covered |= {f"out_{case}_acfalse.npy" for case in CASES}
    assert present <= covered
    assert {f"out_{case}.npy" for case in CASES} <= present


def test_registered_with_options_and_drive_default_weights() -> None:
    assert "enlightengan" in vidlight.list_models()
    spec = get_model_spec("enlightengan")
    assert spec.option_defaults() == {"align_corners": True}
    assert spec.default_weights == "enlightengan"
    with pytest.raises(WeightsError) as info:
        load_model("enlightengan")
    message = str(info.value)
    assert "enlightengan/200_net_G_A.pth" in message and "drive.google.com" in message
    assert "\n" not in message
    with pytest.raises(VidlightError, match="align_corners"):
        load_model("enlightengan", align_corners="yes")


def test_weights_layout(shared_dir: Path, model: EnlightenGAN) -> None:
    assert sum(p.numel() for p in model.parameters()) == N_PARAMS
    lines = (reference_dir(shared_dir, "enlightengan") / "keys.txt").read_text().splitlines()
    expected = [line.split("\t")[0].removeprefix("module.") for line in lines]
    assert list(model.state_dict()) == expected
    state = _formula_state(shared_dir)
    assert torch.equal(model.conv6_1.weight, torch.from_numpy(state["module.conv6_1.weight"]))
    assert torch.equal(model.bn3_2.running_var, torch.from_numpy(state["module.bn3_2.running_var"]))


@pytest.mark.parametrize("case", CASES)
def test_matches_official(shared_dir: Path, model: EnlightenGAN, case: str) -> None:
    ref = reference_dir(shared_dir, "enlightengan")
    ours = stages_of(model, ref, case)
    assert check_stages(ours, ref, case, {name: name for name in STAGES}, ATOL) >= 1
    # forward() is the official tensor2im conversion (before 8-bit truncation)
    with torch.no_grad():
        out = model(to_tensor(read_rgb(ref / f"in_{case}.png")))
    assert torch.equal(out, ((ours["out"] + 1) / 2).clamp(0, 1))


@pytest.mark.parametrize("case", CASES)
def test_align_corners_false_matches_unedited_code(shared_dir: Path, egan_npz: Path, case: str) -> None:
    ref = reference_dir(shared_dir, "enlightengan")
    model = load_model("enlightengan", weights=str(egan_npz), align_corners=False)
    ours = stages_of(model, ref, case)
    diff = max_diff(ours["out"], np.load(ref / f"out_{case}_acfalse.npy"), f"out_{case}_acfalse")
    assert diff <= ATOL


def test_dataparallel_pth_without_counters(shared_dir: Path, tmp_path: Path) -> None:
    """A ``DataParallel`` state dict (``module.`` keys) as the official code saves it, also
    without the ``num_batches_tracked`` entries torch 0.3.1 did not write."""
    ref = reference_dir(shared_dir, "enlightengan")
    full = {k: torch.from_numpy(v) for k, v in _formula_state(shared_dir).items()}
    old = {k: v for k, v in full.items() if not k.endswith("num_batches_tracked")}
    expected = np.load(ref / "out_lol1_crop.npy")
    for label, state in (("full", full), ("torch031", old)):
        path = tmp_path / f"{label}_200_net_G_A.pth"
        torch.save(state, path)
        ours = stages_of(load_model("enlightengan", weights=str(path)), ref, "lol1_crop")
        assert max_diff(ours["out"], expected, label) <= ATOL


def test_wrong_shape_is_named(egan_npz: Path, tmp_path: Path) -> None:
    with np.load(egan_npz) as data:
        state = {k: data[k] for k in data.files}
    state["module.conv6_1.weight"] = state["module.conv6_1.weight"][:, :256]
    path = tmp_path / "bad.npz"
    np.savez(path, **state)
    with pytest.raises(WeightsError, match="conv6_1.weight"):
        load_model("enlightengan", weights=str(path))


@pytest.mark.parametrize("size", [(37, 53), (64, 96), (5, 7), (1, 1), (17, 31)])
def test_any_frame_size(model: EnlightenGAN, size: tuple[int, int]) -> None:
    """Reflection padding to multiples of 16 and cropping back: the same shape out."""
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stages = model.stages(x)
        out = model(x)
    assert out.shape == x.shape
    assert stages["latent"].shape == (1, 3, *size)
    assert torch.isfinite(out).all()
    assert 0 <= float(out.min()) and float(out.max()) <= 1


def test_padding_is_reflection(model: EnlightenGAN) -> None:
    """A frame that needs padding equals the network run on the reflection-padded frame, cropped."""
    x = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(2)) * 2 - 1
    gray = EnlightenGAN.attention(x)
    with torch.no_grad():
        out, _ = model.generator(x, gray)
        padded = torch.nn.functional.pad(x, (5, 6, 5, 6), mode="reflect")
        ref, _ = model.generator(padded, EnlightenGAN.attention(padded))
    assert torch.allclose(out, ref[:, :, 5:42, 5:58], atol=1e-6)


def test_batch_is_per_frame(model: EnlightenGAN) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 48, generator=g)
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[:1]), model(x[1:])])
    assert torch.allclose(batch, single, atol=1e-5)
