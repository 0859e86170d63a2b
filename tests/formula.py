"""The fixtures' deterministic "formula weights" (../shared/reference/FORMAT.md), regenerated
from a key list in the official naming, so tests can load them through the same converters
that users' official checkpoints go through."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vidlight.weights import read_checkpoint


def formula_tensor(key: str, shape: tuple[int, ...], layout: str = "torch") -> np.ndarray:
    """FORMAT.md's base rule; ``layout="tf"`` takes fan-in over all axes but the last."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, np.int64)
    if key.endswith("running_var") or key.endswith("moving_variance"):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if key.endswith("running_mean") or key.endswith("moving_mean"):
        return rng.normal(0, 0.1, shape).astype(np.float32)
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:])) if layout == "torch" else int(np.prod(shape[:-1]))
        return (rng.normal(0, 1, shape) / np.sqrt(fan_in)).astype(np.float32)
    if key.endswith("bias") or key.endswith("beta"):  # TF-Slim's 'biases' do not match: uniform below
        return rng.normal(0, 0.01, shape).astype(np.float32)
    return rng.uniform(0.5, 1.5, shape).astype(np.float32)


def formula_state(
    keys_txt: Path, tensor: Callable[..., np.ndarray] = formula_tensor, **kwargs: object
) -> dict[str, np.ndarray]:
    """Every tensor of a ``keys.txt`` (``name<TAB>d0,d1,...``) filled by ``tensor``."""
    state = {}
    for line in keys_txt.read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            state[key] = tensor(key, tuple(int(s) for s in shape.split(",")) if shape else (), **kwargs)
    return state


def llflow_formula_tensor(key: str, shape: tuple[int, ...], **_: object) -> np.ndarray:
    """The LLFlow README's variant of the rule (official key, no ``module.``)."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    if key.endswith("invconv.weight"):
        q, r = np.linalg.qr(rng.normal(0, 1, shape))
        return (q * np.sign(np.diag(r))).astype(np.float32)
    if key.endswith(".logs") or key.endswith("actnorm.bias"):
        return rng.normal(0, 0.05, shape).astype(np.float32)
    zero_conv = ".affine." in key and ".4." in key
    if zero_conv or "RRDB.trunk_conv." in key:
        gain = 0.05
    elif "RRDB.fine_tune_color_map." in key:
        gain = 0.3
    else:
        gain = 1.0
    if len(shape) >= 2:
        return (rng.normal(0, 1, shape) / np.sqrt(int(np.prod(shape[1:]))) * gain).astype(np.float32)
    if key.endswith("bias"):
        b = rng.normal(0, 0.01, shape)
        if zero_conv:
            b[1::2] += 3.0
        return b.astype(np.float32)
    return rng.uniform(0.5, 1.5, shape).astype(np.float32)


def official_tf1_state(weights_dir: Path, names: tuple[str, ...], source: str) -> dict[str, np.ndarray]:
    """Official TF1 tensors of ``names`` in ``weights_dir``, from the ``.npz`` dumps or the
    checkpoint directories themselves (``source`` "npz" or "tf1")."""
    state: dict[str, np.ndarray] = {}
    for name in names:
        path = weights_dir / (f"{name}.npz" if source == "npz" else name)
        state.update({k: v.numpy() for k, v in read_checkpoint(path).items()})
    return state


# Weights for every model in the fixtures' terms: official where ../shared has them, formula
# weights (with the official tensors that exist) where it does not.
_CATALOGUE_NAMES = {"sci": "sci-vidlight", "zero-dce": "zero-dce", "zero-dce++": "zero-dce++", "mbllen": "mbllen-lol"}
_TF1_DIRS = {
    "kind": ("kind", ("decom_net_train", "illumination_adjust_net_train")),
    "kind++": ("kind_plus", ("decom_model", "illu_model")),
}
_LLFLOW_KEYS = {"llflow": "keys_standard.txt", "llflow-small": "keys_small.txt"}


def fixture_weights(model: str, shared_dir: Path, folder: Path) -> str | None:
    """A ``weights=`` argument for ``model``: a catalogue name (resolved from ``shared/weights``
    when ``$VIDLIGHT_WEIGHTS_DIR`` points there) or an ``.npz`` written to ``folder``; None for
    models with bundled default weights only."""
    if model in _CATALOGUE_NAMES:
        return _CATALOGUE_NAMES[model]
    path = folder / f"{model}.npz"
    if path.exists():
        return str(path)
    reference = shared_dir / "reference"
    if model in _TF1_DIRS:
        method, dirs = _TF1_DIRS[model]
        state = official_tf1_state(shared_dir / "weights" / method, tuple(f"{d}" for d in dirs), "npz")
        state.update(formula_state(reference / method / "keys.txt", layout="tf"))
    elif model == "enlightengan":
        state = formula_state(reference / "enlightengan" / "keys.txt")
    elif model in _LLFLOW_KEYS:
        state = formula_state(reference / "llflow" / _LLFLOW_KEYS[model], llflow_formula_tensor)
    else:
        return None
    np.savez(path, **state)
    return str(path)
