"""The fixtures' deterministic "formula weights" (../shared/reference/FORMAT.md), regenerated
from a key list in the official naming, so tests can load them through the same converters
that users' official checkpoints go through."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable

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


def official_tf1_state(weights_dir: Path, names: tuple[str, ...], source: str) -> dict[str, np.ndarray]:
    """Official TF1 tensors of ``names`` in ``weights_dir``, from the ``.npz`` dumps or the
    checkpoint directories themselves (``source`` "npz" or "tf1")."""
    state: dict[str, np.ndarray] = {}
    for name in names:
        path = weights_dir / (f"{name}.npz" if source == "npz" else name)
        state.update({k: v.numpy() for k, v in read_checkpoint(path).items()})
    return state
