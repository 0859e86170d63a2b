"""KinD++ against the official TensorFlow implementation's outputs (../shared/reference/kind_plus/).

The fixtures were produced by the official ``evaluate.py`` (TensorFlow 2.15 ``compat.v1``, CPU
fp32), default flags and ``--adjustment``, with the official decomposition and illumination
checkpoints and formula weights for the restoration net (``Denoise_Net``), whose official
checkpoint is not public in the repository; see that folder's README.md. The formula weights are
regenerated here from the key list, merged with the official tensors (from the ``.npz`` dumps,
and separately from the TF1 checkpoint directories) into one ``.npz`` and loaded through
``load_model``. Every intermediate and both outputs must agree within 1e-4 max-abs (the README
measured up to 1.8e-6 between two TensorFlow CPU backends).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vidlight import VidlightError, WeightsError, load_model
from vidlight.models.kind_plus import KinDPlus
from vidlight.models.registry import get_model_spec
from vidlight.train.data import read_rgb, to_tensor
from vidlight.weights import read_checkpoint

from formula import fixture_weights, formula_state
from reference import check_stages, reference_dir, stages_of

ATOL = 1e-4
CROP, FULL = "lol1_crop", "lol1"
# fixture name -> key of KinDPlus.stages(); full-size intermediates were dropped from the fixtures
STAGES = {
    "innorm": "innorm",
    "decomR": "decomR",
    "decomI": "decomI",
    "restoredR": "restoredR",
    "adjI_r5": "adjI",
    "grayw": "grayw",
    "denoised": "denoised",
    "fusion4": "fusion4",
    "out": "out",
    "out_adj": "out_adj",
}


@pytest.fixture(scope="module")
def kind_plus_npz(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's tensors and the formula restoration weights, official naming, one .npz."""
    return Path(fixture_weights("kind++", shared_dir, tmp_path_factory.mktemp("kind++")))


@pytest.fixture(scope="module")
def model(kind_plus_npz: Path) -> KinDPlus:
    return load_model("kind++", weights=str(kind_plus_npz))


@pytest.fixture(scope="module")
def crop_stages(shared_dir: Path, model: KinDPlus) -> dict[str, torch.Tensor]:
    return stages_of(model, reference_dir(shared_dir, "kind_plus"), CROP)


def test_every_reference_file_is_covered(shared_dir: Path) -> None:
    """A reference file added later must not sit there untested."""
    present = {p.name for p in reference_dir(shared_dir, "kind_plus").glob("*.npy")}
    covered = {f"{name}_{case}.npy" for name in STAGES for case in (CROP, FULL)}
    assert present <= covered
    assert {f"{name}_{case}.npy" for name in STAGES for case in (CROP,)} <= present
    assert {"out_lol1.npy", "out_adj_lol1.npy"} <= present


def test_weights_layout(shared_dir: Path, model: KinDPlus) -> None:
    assert sum(p.numel() for p in model.decom.parameters()) == 235876
    assert sum(p.numel() for p in model.adjust.parameters()) == 19393
    assert sum(p.numel() for p in model.restore.parameters()) == 8019239
    assert sum(b.numel() for b in model.restore.buffers()) == 3840
    keys = {
        line.split("\t")[0]
        for line in (reference_dir(shared_dir, "kind_plus") / "keys.txt").read_text().splitlines()
        if line
    }
    spec = get_model_spec("kind++")
    ours = {spec.keymap.official_name(k) for k in model.state_dict()}
    assert {k for k in ours if k.startswith("Denoise_Net/")} == keys
    formula = formula_state(reference_dir(shared_dir, "kind_plus") / "keys.txt", layout="tf")
    # conv (kh, kw, in, out), transposed conv (kh, kw, out, in), tf.layers kernel -> torch layouts
    conv = torch.from_numpy(formula["Denoise_Net/de_conv2_1/weights"]).permute(3, 2, 0, 1)
    assert torch.equal(model.restore.de_conv2_1.weight, conv)
    up = torch.from_numpy(formula["Denoise_Net/de_conv3pu4/conv_up_1/weights"]).permute(3, 2, 0, 1)
    assert torch.equal(model.restore.msia[2].pu4.conv_up_1.weight, up)
    att = torch.from_numpy(formula["Denoise_Net/de_conv4/conv/kernel"]).permute(3, 2, 0, 1)
    assert torch.equal(model.restore.msia[3].attention.weight, att)
    var = torch.from_numpy(formula["Denoise_Net/de_conv1pu2/batch_normalization/moving_variance"])
    assert torch.equal(model.restore.msia[0].pu2.bn.running_var, var)
    official = read_checkpoint(shared_dir / "weights" / "kind_plus" / "illu_model.npz")
    assert torch.equal(model.adjust.en_conv_3.weight, official["I_enhance_Net/conv_3/weights"].permute(3, 2, 0, 1))


def test_matches_official_crop(shared_dir: Path, model: KinDPlus, crop_stages: dict[str, torch.Tensor]) -> None:
    """Every intermediate and both outputs (default flags and --adjustment) of the 64x96 crop."""
    ref = reference_dir(shared_dir, "kind_plus")
    assert check_stages(crop_stages, ref, CROP, STAGES, ATOL) == len(STAGES)
    x = to_tensor(read_rgb(ref / f"in_{CROP}.png"))
    with torch.no_grad():
        assert torch.equal(model(x), crop_stages["out"])  # forward() is the official default output
        adjusted = load_model("kind++", weights=model.weights_name, adjustment=True)
        assert torch.equal(adjusted(x), crop_stages["out_adj"])


def test_matches_official_full_size(shared_dir: Path, model: KinDPlus) -> None:
    """The 400x600 frame (only the outputs were kept): ~25 CPU-s."""
    ref = reference_dir(shared_dir, "kind_plus")
    assert check_stages(stages_of(model, ref, FULL), ref, FULL, STAGES, ATOL) == 2


def test_kind_weights_are_not_kind_plus_weights(shared_dir: Path, tmp_path: Path) -> None:
    """KinD's checkpoints share the decomposition shapes but not the scopes of the other nets."""
    state = {k: v.numpy() for k, v in read_checkpoint(shared_dir / "weights" / "kind" / "decom_net_train.npz").items()}
    state.update(formula_state(reference_dir(shared_dir, "kind_plus") / "keys.txt", layout="tf"))
    path = tmp_path / "mixed.npz"
    np.savez(path, **state)
    with pytest.raises(WeightsError, match="I_enhance_Net/conv_1/weights"):
        load_model("kind++", weights=str(path))


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (13, 18), (17, 31)])
def test_any_frame_size(model: KinDPlus, size: tuple[int, int]) -> None:
    """TF's SAME pooling and branch outputs cut to the feature size: no multiple of 4 needed."""
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stages = model.stages(x)
    for name in ("out", "out_adj"):
        assert stages[name].shape == x.shape
        assert torch.isfinite(stages[name]).all()


def test_branches_keep_the_feature_size(model: KinDPlus) -> None:
    """The pooled MSIA branches come back to their input size, a multiple of 4 or not."""
    for size in ((16, 20), (7, 10)):
        x = torch.rand(1, 64, *size, generator=torch.Generator().manual_seed(2))
        for branch in (model.restore.msia[0].pu2, model.restore.msia[0].pu4):
            with torch.no_grad():
                assert branch(x).shape == x.shape


def test_options(kind_plus_npz: Path, shared_dir: Path, crop_stages: dict[str, torch.Tensor]) -> None:
    ref = reference_dir(shared_dir, "kind_plus")
    dim = load_model("kind++", weights=str(kind_plus_npz), ratio=1.0, adjustment=True)
    assert dim.ratio == 1.0 and dim.adjustment is True
    a = stages_of(dim, ref, CROP)
    assert torch.equal(a["restoredR"], crop_stages["restoredR"])
    assert torch.equal(a["out"], crop_stages["out"])  # the default output ignores the ratio
    assert not torch.equal(a["adjI"], crop_stages["adjI"])
    for bad in (-1.0, float("nan"), "x"):
        with pytest.raises(VidlightError, match="ratio"):
            load_model("kind++", weights=str(kind_plus_npz), ratio=bad)
    for bad in ("maybe", "true", 2, None):  # text is read as TOML before it gets here
        with pytest.raises(VidlightError, match="adjustment"):
            load_model("kind++", weights=str(kind_plus_npz), adjustment=bad)
