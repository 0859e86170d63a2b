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


# --- MBLLEN (Lv et al., BMVC 2018) ----------------------------------------------------------


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_index(
    x: torch.Tensor, y: torch.Tensor, *, window: int = 11, sigma: float = 1.5, data_range: float = 1.0
) -> torch.Tensor:
    """Mean SSIM of N x C x H x W images (Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5,
    K1 0.01, K2 0.03, 'valid' windows, per channel, averaged), differentiable."""
    channels = x.shape[1]
    kernel = _gaussian_window(window, sigma, channels, x)

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ux, uy = mean(x), mean(y)
    vx, vy, vxy = mean(x * x) - ux * ux, mean(y * y) - uy * uy, mean(x * y) - ux * uy
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean()


def mbllen_structure_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MBLLEN's structure loss, SSIM term only: ``1 - SSIM(output, target)``.

    MBLLEN adds an MS-SSIM term; its five scales need images of at least ~160 pixels, more than
    the crops a CPU can train on, so it is left out. Accepts N x C x H x W images or
    N x C x T x H x W clips (scored frame by frame)."""
    if output.ndim == 5:
        output = output.transpose(1, 2).flatten(0, 1)
        target = target.transpose(1, 2).flatten(0, 1)
    return 1.0 - ssim_index(output, target)


def mbllen_region_loss(
    output: torch.Tensor,
    target: torch.Tensor,
    *,
    dark_fraction: float = 0.4,
    dark_weight: float = 4.0,
    bright_weight: float = 1.0,
) -> torch.Tensor:
    """MBLLEN's region loss: L1 over the darkest ``dark_fraction`` of the pixels, weighted
    ``dark_weight``, plus L1 over the rest, weighted ``bright_weight``.

    The dark region is the ``dark_fraction`` of pixels with the lowest gray level (mean of
    R, G, B) of the *target*, chosen per image (per frame for N x C x T x H x W clips); each
    region's L1 is the mean over its pixels and channels across the batch.
    """
    if output.ndim == 5:
        output = output.transpose(1, 2).flatten(0, 1)
        target = target.transpose(1, 2).flatten(0, 1)
    gray = target.mean(1).flatten(1)  # N x HW
    k = max(1, int(round(dark_fraction * gray.shape[1])))
    threshold = gray.kthvalue(k, dim=1, keepdim=True).values
    dark = (gray <= threshold).view(target.shape[0], 1, *target.shape[2:]).to(output.dtype)
    error = (output - target).abs()
    channels = output.shape[1]
    dark_count = dark.sum() * channels
    bright_count = (1 - dark).sum() * channels
    dark_l1 = (error * dark).sum() / dark_count.clamp_min(1)
    bright_l1 = (error * (1 - dark)).sum() / bright_count.clamp_min(1)
    return dark_weight * dark_l1 + bright_weight * bright_l1


def mbllen_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MBLLEN's loss without its VGG context term (no feature network is available offline):
    structure (1 - SSIM) + region loss."""
    return mbllen_structure_loss(output, target) + mbllen_region_loss(output, target)
