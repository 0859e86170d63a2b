"""Losses from the papers, for zero-reference training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# BT.601 "studio swing" RGB -> YCbCr used by SCI's smoothness weights (inputs in [0, 1]).
_YCBCR = torch.tensor([[0.257, 0.504, 0.098], [-0.148, -0.291, 0.439], [0.439, -0.368, -0.071]])
_YCBCR_OFFSET = torch.tensor([16.0, 128.0, 128.0]) / 255.0

# Half of a 5x5 neighbourhood: every unordered pixel pair within it appears once.
_HALF_5x5 = [(dy, dx) for dy in range(0, 3) for dx in range(-2, 3) if (dy, dx) > (0, 0)]


def _shift_pair(t: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Views ``(t[p], t[p + (dy, dx)])`` over every pixel p where both exist."""
    h, w = t.shape[-2:]
    x0, x1 = max(0, -dx), w - max(0, dx)
    return t[..., : h - dy, x0:x1], t[..., dy:, x0 + dx : x1 + dx]


def sci_smoothness(image: torch.Tensor, illumination: torch.Tensor, sigma: float = 10.0) -> torch.Tensor:
    """SCI's spatially-varying smoothness term.

    For every pixel pair within a 5x5 window, the L1 (over channels) difference of
    the illumination is weighted by ``w^2`` with ``w = exp(-|dYCbCr(image)|^2 / (2 sigma^2))``.
    The official code writes the 12 neighbour offsets out twice (each pair in both
    directions, which gives identical terms); we sum 12 offsets and double. The official
    colour conversion reshapes NCHW memory as if it were N x H x W x 3; we convert each
    pixel's RGB, which is what the paper describes.
    """
    ycbcr = torch.einsum("nchw,dc->ndhw", image, _YCBCR.to(image)) + _YCBCR_OFFSET.to(image).view(1, 3, 1, 1)
    total = image.new_zeros(())
    for dy, dx in _HALF_5x5:
        a, b = _shift_pair(ycbcr, dy, dx)
        weight = torch.exp(-((a - b) ** 2).sum(1, keepdim=True) / (2 * sigma**2))
        ia, ib = _shift_pair(illumination, dy, dx)
        total = total + torch.mean(weight * weight * (ia - ib).abs().sum(1, keepdim=True))
    return 2 * total


def sci_stage_loss(stage_input: torch.Tensor, illumination: torch.Tensor) -> torch.Tensor:
    """SCI's unsupervised loss for one stage: 1.5 x fidelity (MSE) + smoothness."""
    return 1.5 * F.mse_loss(illumination, stage_input) + sci_smoothness(stage_input, illumination)
