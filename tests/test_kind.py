"""KinD against the official TensorFlow implementation's outputs (../shared/reference/kind/).

The fixtures were produced by the official ``evaluate.py`` (TensorFlow 2.15 ``compat.v1``,
oneDNN on, CPU fp32) with the official decomposition and illumination-adjust checkpoints and
formula weights for the restoration net, whose official checkpoint is not public in the
repository; see that folder's README.md. The formula weights are regenerated here from the
key list, merged with the official tensors (read from the ``.npz`` dumps, and separately from
the TF1 checkpoint directories) into one ``.npz``, and loaded through ``load_model``. Every
intermediate and the output must agree within 1e-5 max-abs (the README measured up to 2.2e-6
between two TensorFlow CPU backends).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidlight import VidlightError, WeightsError, load_model
from vidlight.models.kind import KinD
from vidlight.train.data import read_rgb, to_tensor
from vidlight.weights import read_checkpoint

from formula import fixture_weights
from reference import check_stages, reference_dir, stages_of

ATOL = 1e-5
CASES = ("lol1_crop", "lol1")
# fixture name -> key of KinD.stages(); full-size intermediates were dropped from the fixtures
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
}


@pytest.fixture(scope="module")
def kind_npz(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's tensors and the formula restoration weights, official naming, one .npz."""
    return Path(fixture_weights("kind", shared_dir, tmp_path_factory.mktemp("kind")))


@pytest.fixture(scope="module")
def model(kind_npz: Path) -> KinD:
    return load_model("kind", weights=str(kind_npz))


def test_every_reference_file_is_covered(shared_dir: Path) -> None:
    """A reference file added later must not sit there untested."""
    present = {p.name for p in reference_dir(shared_dir, "kind").glob("*.npy")}
    covered = {f"{name}_{case}.npy" for name in STAGES for case in CASES}
    assert present <= covered
    assert {f"out_{case}.npy" for case in CASES} <= present


def test_weights_layout(shared_dir: Path, model: KinD) -> None:
    assert sum(p.numel() for p in model.decom.parameters()) == 235876
    assert sum(p.numel() for p in model.adjust.parameters()) == 19393
    assert sum(p.numel() for p in model.restore.parameters()) == 7760739
    official = read_checkpoint(shared_dir / "weights" / "kind" / "decom_net_train.npz")
    # conv (kh, kw, in, out) and transposed conv (kh, kw, out, in) -> torch layouts
    conv = official["DecomNet/g_conv2_1/weights"].permute(3, 2, 0, 1)
    assert torch.equal(model.decom.g_conv2_1.weight, conv)
    up = official["DecomNet/g_up_1/weights"].permute(3, 2, 0, 1)
    assert torch.equal(model.decom.g_up_1.weight, up)
    assert model.decom.g_up_1.weight.shape == (128, 64, 2, 2)


@pytest.mark.parametrize("case", CASES)
def test_matches_official(shared_dir: Path, model: KinD, case: str) -> None:
    ref = reference_dir(shared_dir, "kind")
    ours = stages_of(model, ref, case)
    assert check_stages(ours, ref, case, STAGES, ATOL) >= 1
    # forward() is the official output
    with torch.no_grad():
        assert torch.equal(model(to_tensor(read_rgb(ref / f"in_{case}.png"))), ours["out"])


def test_not_a_checkpoint_directory(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="holds none"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (17, 31), (37, 50)])
def test_any_frame_size(model: KinD, size: tuple[int, int]) -> None:
    """TF's SAME pooling (round up) and skip-sized transposed convolutions: no multiple needed."""
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_ratio_option(kind_npz: Path, shared_dir: Path) -> None:
    ref = reference_dir(shared_dir, "kind")
    dim = load_model("kind", weights=str(kind_npz), ratio=1.0)
    bright = load_model("kind", weights=str(kind_npz))
    assert dim.ratio == 1.0 and bright.ratio == 5.0
    a, b = stages_of(dim, ref, "lol1_crop"), stages_of(bright, ref, "lol1_crop")
    assert torch.equal(a["restoredR"], b["restoredR"])
    assert not torch.equal(a["adjI"], b["adjI"])
    for bad in (-1.0, float("nan"), "x"):
        with pytest.raises(VidlightError, match="ratio"):
            load_model("kind", weights=str(kind_npz), ratio=bad)
