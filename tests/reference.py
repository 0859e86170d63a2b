"""Comparing our tensors with the official code's arrays in ../shared/reference/<method>/."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vidlight.train.data import read_rgb, to_tensor

from needs import unavailable


def reference_dir(shared_dir: Path, method: str) -> Path:
    """The official outputs of ``method`` (../shared/reference/<method>)."""
    return shared_dir / "reference" / method


def require(path: Path) -> Path:
    """``path`` of the test material; missing, the test is skipped here and fails on CI
    (``CI=true``), where missing material must not pass unnoticed."""
    if not path.exists():
        message = f"{path} is not in the test material"
        unavailable(message)
    return path


def input_image(ref: Path, case: str) -> torch.Tensor:
    """The fixture's input ``in_<case>.png`` as a 1 x 3 x H x W float tensor in [0, 1]."""
    return to_tensor(read_rgb(ref / f"in_{case}.png"))


def hwc(t: torch.Tensor) -> np.ndarray:
    """The first image of an N x C x H x W tensor as H x W x C numpy."""
    return t[0].permute(1, 2, 0).numpy()


def array_diff(ours: np.ndarray, official: np.ndarray, what: str) -> float:
    """Max-abs difference of two arrays of one shape, in float64 (a shape mismatch fails naming ``what``)."""
    assert ours.shape == official.shape, f"{what}: shape {ours.shape}, official {official.shape}"
    return float(np.abs(ours.astype(np.float64) - official).max())


def assert_close(ours: np.ndarray, official: np.ndarray, atol: float, what: str) -> None:
    diff = array_diff(ours, official, what)
    assert diff <= atol, f"{what}: max abs diff {diff:.3g} > {atol}"


def max_diff(ours: torch.Tensor, official: np.ndarray, what: str) -> float:
    """Max-abs difference of our first 1 x C x H x W image and an official H x W x C (or
    H x W, one channel) array, in float64; a shape mismatch fails naming ``what``."""
    ours_np = ours[0].permute(1, 2, 0).numpy()
    if official.ndim == 2:
        ours_np = ours_np[..., 0]
    assert ours_np.shape == official.shape, f"{what}: shape {ours_np.shape}, official {official.shape}"
    return float(np.abs(ours_np.astype(np.float64) - official).max())


def stages_of(model: nn.Module, ref: Path, case: str, **kwargs: object) -> dict[str, torch.Tensor]:
    """``model.stages`` of the fixture's input image ``in_<case>.png``."""
    with torch.no_grad():
        return model.stages(to_tensor(read_rgb(ref / f"in_{case}.png")), **kwargs)


def check_stages(ours: Mapping[str, torch.Tensor], ref: Path, case: str, stages: Mapping[str, str], atol: float) -> int:
    """Assert every fixture ``<name>_<case>.npy`` present is within ``atol`` of ``ours[stage]``
    (``stages``: fixture name -> our stage); returns how many were checked."""
    checked = 0
    for name, stage in stages.items():
        path = ref / f"{name}_{case}.npy"
        if path.is_file():
            diff = max_diff(ours[stage], np.load(path), f"{name}_{case}")
            assert diff <= atol, f"{name}_{case}: max abs diff {diff:.3g} > {atol}"
            checked += 1
    return checked
