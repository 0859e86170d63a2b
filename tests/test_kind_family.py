"""What KinD and KinD++ share: TF1 checkpoints read without TensorFlow, the official
``checkpoint/`` folder layout, the Drive-only default weights, errors that name the tensor,
and per-frame normalisation. Each test runs for both methods."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from vidlight import WeightsError, load_model
from vidlight.models.registry import get_model_spec
from vidlight.train.data import read_rgb, to_tensor
from vidlight.weights import read_checkpoint

from formula import fixture_weights, formula_state, official_tf1_state

ATOL = 1e-4


@dataclass(frozen=True)
class Method:
    model: str
    folder: str  # in ../shared/weights and ../shared/reference
    checkpoints: tuple[str, ...]  # the repository's TF1 checkpoint directories
    restoration: str  # the Drive-only restoration net's checkpoint directory
    first_missing: str  # the restoration net's first tensor
    bad_shape: str  # a restoration tensor to cut
    options: dict
    default_weights: str


METHODS = {
    "kind": Method(
        "kind",
        "kind",
        ("decom_net_train", "illumination_adjust_net_train"),
        "Restoration_net_train",
        "Restoration_net/de_conv1_1/weights",
        "Restoration_net/up_6/weights",
        {"ratio": 5.0},
        "kind-lol",
    ),
    "kind++": Method(
        "kind++",
        "kind_plus",
        ("decom_model", "illu_model"),
        "restoration_model",
        "Denoise_Net/de_conv1_1/weights",
        "Denoise_Net/de_conv2pu4/conv_up/weights",
        {"ratio": 5.0, "adjustment": False},
        "kind++-lol",
    ),
}
pytestmark = pytest.mark.parametrize("method", list(METHODS.values()), ids=list(METHODS))


def _official(shared_dir: Path, method: Method, source: str) -> dict[str, np.ndarray]:
    """The repository's tensors, from the .npz dumps or the TF1 checkpoint directories."""
    return official_tf1_state(shared_dir / "weights" / method.folder, method.checkpoints, source)


def test_registered_with_drive_default_weights(method: Method, offline_isolated_cache: Path) -> None:
    spec = get_model_spec(method.model)
    assert spec.option_defaults() == method.options
    assert spec.default_weights == method.default_weights
    with pytest.raises(WeightsError) as info:
        load_model(method.model)
    message = str(info.value)
    assert method.restoration in message and "drive.google.com" in message and "pan.baidu.com" in message
    assert f"{method.folder}/checkpoint" in message and "\n" not in message


def test_tf1_checkpoint_dirs_give_the_same_weights(method: Method, shared_dir: Path, tmp_path: Path) -> None:
    """The TF1 directories, read without TensorFlow, equal the .npz dumps bit for bit and, with
    the formula restoration weights, reproduce the official crop output."""
    from_dirs = _official(shared_dir, method, "ckpt")
    from_npz = _official(shared_dir, method, "npz")
    assert from_dirs.keys() == from_npz.keys()
    for key in from_dirs:
        assert np.array_equal(from_dirs[key], from_npz[key]), key
    path = tmp_path / "from_ckpt.npz"
    np.savez(path, **from_dirs, **formula_state(shared_dir / "reference" / method.folder / "keys.txt", layout="tf"))
    ref = shared_dir / "reference" / method.folder
    with torch.no_grad():
        out = load_model(method.model, weights=str(path))(to_tensor(read_rgb(ref / "in_lol1_crop.png")))
    official = np.load(ref / "out_lol1_crop.npy")
    assert float(np.abs(out[0].permute(1, 2, 0).numpy() - official).max()) <= ATOL


def test_official_checkpoint_directory_is_merged(method: Method, shared_dir: Path, tmp_path: Path) -> None:
    """The official ``checkpoint/`` layout: its per-network subdirectories are merged. Without
    the restoration net's checkpoint, loading names its first missing tensor."""
    root = tmp_path / "checkpoint"
    root.mkdir()
    for name in method.checkpoints:
        (root / name).symlink_to(shared_dir / "weights" / method.folder / name, target_is_directory=True)
    assert set(read_checkpoint(root)) == set(_official(shared_dir, method, "npz"))
    with pytest.raises(WeightsError, match=method.first_missing):
        load_model(method.model, weights=str(root))


def test_default_weights_folder_is_found_and_read(
    method: Method, shared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repository's checkpoints put where the error says: the folder is found and read, and
    the error names the first tensor of the restoration net that only the Drive set has."""
    folder = tmp_path / method.folder / "checkpoint"
    for name in method.checkpoints:
        shutil.copytree(shared_dir / "weights" / method.folder / name, folder / name)
    monkeypatch.setenv("VIDLIGHT_WEIGHTS_DIR", str(tmp_path))
    expected = rf"{re.escape(repr(method.default_weights))} \(.*checkpoint\) has no tensor '{method.first_missing}'"
    with pytest.raises(WeightsError, match=expected):
        load_model(method.model)


def test_wrong_shape_is_named(method: Method, shared_dir: Path, tmp_path: Path) -> None:
    with np.load(fixture_weights(method.model, shared_dir, tmp_path)) as data:
        state = {k: data[k] for k in data.files}
    state[method.bad_shape] = state[method.bad_shape][:, :, :128]
    path = tmp_path / "bad.npz"
    np.savez(path, **state)
    with pytest.raises(WeightsError, match=method.bad_shape):
        load_model(method.model, weights=str(path))


def test_batch_is_per_frame(method: Method, shared_dir: Path, tmp_path: Path) -> None:
    """The min-max normalisation is per frame, so a batch equals its frames one by one."""
    model = load_model(method.model, weights=fixture_weights(method.model, shared_dir, tmp_path))
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.rand(1, 3, 12, 16, generator=g) * 0.2, torch.rand(1, 3, 12, 16, generator=g)])
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[:1]), model(x[1:])])
    assert torch.allclose(batch, single, atol=1e-6)
