"""Zero-DCE (Guo et al., CVPR 2020) and Zero-DCE++ (Li et al., TPAMI 2021).

Both estimate pixel-wise quadratic light-enhancement curves ``LE(x) = x + a * (x^2 - x)``
and apply them 8 times. Zero-DCE predicts a separate curve map per iteration at full
resolution; Zero-DCE++ predicts one map, optionally at 1/scale_factor resolution, with
depthwise-separable convolutions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vidlight.models.registry import KeyMap, register_model
from vidlight.models.strength import per_frame
from vidlight.weights import Weights, register_weights

# Official tensors are top-level (`e_conv1.weight`); ours live under `curves.`.
OFFICIAL_KEYMAP = KeyMap({"": "curves."})

CURVE_ITERATIONS = 8


# Rows per chunk when curves are applied on the CPU without autograd: the 8 iterations then run
# on a cache-resident block instead of streaming a whole batch through memory 32 times. A GPU
# runs them on the whole batch: there each chunk would cost kernel launches (about 18,000 for a
# 1080p batch of 8), not save memory traffic.
_CHUNK_PIXELS = 32_768


def apply_curve(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """One light-enhancement curve step, ``x + alpha * (x^2 - x)``."""
    return x + alpha * (x * x - x)


def apply_curve_sequence(x: torch.Tensor, alphas: list[torch.Tensor]) -> torch.Tensor:
    """Apply the curve steps ``alphas`` (each N x 3 x H x W) in order.

    Without autograd this works in place (on the CPU, on row chunks), with the same operations
    in the same order as the official code, so the result is bit-identical and much faster.
    """
    if torch.is_grad_enabled():
        for alpha in alphas:
            x = apply_curve(x, alpha)
        return x
    n, _, h, w = x.shape
    rows = max(1, _CHUNK_PIXELS // (n * w)) if x.device.type == "cpu" else h
    out = torch.empty_like(x)
    for r0 in range(0, h, rows):
        block = x[..., r0 : r0 + rows, :].clone()
        t = torch.empty_like(block)
        for alpha in alphas:
            torch.mul(block, block, out=t)
            t.sub_(block).mul_(alpha[..., r0 : r0 + rows, :])
            block.add_(t)
        out[..., r0 : r0 + rows, :] = block
    return out


def curve_renders(x: torch.Tensor, curves: torch.Tensor, grid) -> torch.Tensor | None:
    """The output for ``x`` at every strength of ``grid`` (G x N x 3 x H x W) through ``curves``
    (one map for every step, or one per step), as :func:`apply_curve_sequence` on the scaled
    curves computes it, bit for bit: one compiled pass on a CPU
    (:mod:`vidlight.models.curves_cpu`); None where that does not apply (another device or
    dtype, autograd recording, an empty batch, curves that do not fit the frames), for the
    caller's general path."""
    recording = torch.is_grad_enabled() and (x.requires_grad or curves.requires_grad)
    if recording or x.device.type != "cpu" or x.dtype != torch.float32 or curves.dtype != torch.float32:
        return None
    matching = x.ndim == curves.ndim == 4 and x.shape[1] == 3 and curves.shape[1] in (3, 3 * CURVE_ITERATIONS)
    if not matching or curves.shape[0] != x.shape[0] or curves.shape[2:] != x.shape[2:] or not x.numel():
        return None  # the general path, which says what does not fit
    from vidlight.models.curves_cpu import curve_renders as compiled_renders  # Numba compiles on first use

    grid_values = torch.tensor(list(grid), dtype=torch.float32).numpy()
    return torch.from_numpy(compiled_renders(x.numpy(), curves.numpy(), grid_values, CURVE_ITERATIONS))


def scale_curves(curves: torch.Tensor, strength) -> torch.Tensor:
    """Curve maps at ``strength``: every curve parameter times ``s`` (one per frame), so 0 is
    the identity curve and 1 the estimated one (times 1.0 exactly)."""
    return curves * per_frame(strength, curves)


class _CurveEstimator(nn.Module):
    """The 7-layer symmetric skip CNN shared by both methods (``DCE-Net``)."""

    def __init__(self, conv: Callable[[int, int], nn.Module], out_channels: int, width: int = 32) -> None:
        super().__init__()
        self.e_conv1 = conv(3, width)
        self.e_conv2 = conv(width, width)
        self.e_conv3 = conv(width, width)
        self.e_conv4 = conv(width, width)
        self.e_conv5 = conv(width * 2, width)
        self.e_conv6 = conv(width * 2, width)
        self.e_conv7 = conv(width * 2, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = torch.relu(self.e_conv1(x))
        x2 = torch.relu(self.e_conv2(x1))
        x3 = torch.relu(self.e_conv3(x2))
        x4 = torch.relu(self.e_conv4(x3))
        x5 = torch.relu(self.e_conv5(torch.cat([x3, x4], 1)))
        x6 = torch.relu(self.e_conv6(torch.cat([x2, x5], 1)))
        return torch.tanh(self.e_conv7(torch.cat([x1, x6], 1)))


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class _SeparableConv(nn.Module):
    """Depthwise 3x3 then pointwise 1x1 (the official ``CSDN_Tem``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depth_conv = nn.Conv2d(cin, cin, 3, padding=1, groups=cin)
        self.point_conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(x))


class ZeroDCE(nn.Module):
    """Zero-DCE: 8 per-iteration RGB curve maps (24 channels) at full resolution."""

    receptive_halo = 7  # rows of context each output row needs: seven 3x3 convolutions
    # fp32 activations at the peak per input pixel (measured 1730 by tests/test_tiling.py): the
    # 32-channel features and the 24 curve maps at full resolution; a 1080p batch of 8 needs
    # about 28 GB unchunked, so --tile auto tiles it where memory is short.
    peak_bytes_per_pixel = 2600

    def __init__(self) -> None:
        super().__init__()
        self.curves = _CurveEstimator(_conv3x3, 3 * CURVE_ITERATIONS)

    def estimate_curves(self, x: torch.Tensor) -> torch.Tensor:
        """Curve maps, N x 24 x H x W in [-1, 1]; channels 3k..3k+2 drive iteration k+1."""
        return self.curves(x)

    @staticmethod
    def apply_curves(x: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
        return apply_curve_sequence(x, list(torch.split(curves, 3, dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_curves(x, self.estimate_curves(x))

    # Strength (vidlight.models.strength): on the curve parameters.
    def strength_terms(self, x: torch.Tensor) -> torch.Tensor:
        return self.estimate_curves(x)

    def apply_strength(self, x: torch.Tensor, curves: torch.Tensor, strength) -> torch.Tensor:
        return self.apply_curves(x, scale_curves(curves, strength))

    def strength_renders(self, x: torch.Tensor, curves: torch.Tensor, grid) -> torch.Tensor | None:
        return curve_renders(x, curves, grid)


class ZeroDCEPlusPlus(nn.Module):
    """Zero-DCE++: one RGB curve map, estimated on a 1/scale_factor downsampled input.

    Args:
        scale_factor: downsampling of the curve estimator's input (official test: 12;
            training: 1). Frames whose sides are not multiples of it are padded by edge
            replication and cropped back; sides that are multiples give exactly the
            official result.
    """

    def __init__(self, scale_factor: int = 12) -> None:
        super().__init__()
        if int(scale_factor) != scale_factor or scale_factor < 1:
            raise ValueError(f"scale_factor must be a positive integer, got {scale_factor!r}")
        self.scale_factor = int(scale_factor)
        self.curves = _CurveEstimator(_SeparableConv, 3)

    def estimate_curves(self, x: torch.Tensor) -> torch.Tensor:
        """The curve map at full resolution, N x 3 x H x W in [-1, 1]."""
        s = self.scale_factor
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % s, -w % s
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        if s == 1:
            return self.curves(x)
        low = self.curves(F.interpolate(x, scale_factor=1 / s, mode="bilinear"))
        # nn.UpsamplingBilinear2d in the official code: align_corners=True.
        up = F.interpolate(low, scale_factor=s, mode="bilinear", align_corners=True)
        return up[..., :h, :w]

    @staticmethod
    def apply_curves(x: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
        return apply_curve_sequence(x, [curves] * CURVE_ITERATIONS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_curves(x, self.estimate_curves(x))

    # Strength (vidlight.models.strength): on the curve parameters.
    def strength_terms(self, x: torch.Tensor) -> torch.Tensor:
        return self.estimate_curves(x)

    def apply_strength(self, x: torch.Tensor, curves: torch.Tensor, strength) -> torch.Tensor:
        return self.apply_curves(x, scale_curves(curves, strength))

    def strength_renders(self, x: torch.Tensor, curves: torch.Tensor, grid) -> torch.Tensor | None:
        return curve_renders(x, curves, grid)


@register_model(
    "zero-dce",
    default_weights="zero-dce",
    keymap=OFFICIAL_KEYMAP,
    summary="Zero-DCE (CVPR 2020): 8 full-resolution pixel-wise curves",
)
def zero_dce() -> ZeroDCE:
    return ZeroDCE()


@register_model(
    "zero-dce++",
    default_weights="zero-dce++",
    keymap=OFFICIAL_KEYMAP,
    summary="Zero-DCE++ (TPAMI 2021): one curve map estimated at 1/scale_factor resolution",
    options={"scale_factor": "downsampling of the curve estimator's input (default 12, as the official test)"},
)
def zero_dce_plus_plus(scale_factor: int = 12) -> ZeroDCEPlusPlus:
    return ZeroDCEPlusPlus(scale_factor)


register_weights(
    Weights(
        name="zero-dce",
        model="zero-dce",
        relpath="zero_dce/Epoch99.pth",
        url="https://raw.githubusercontent.com/Li-Chongyi/Zero-DCE/"
        "e0f4adc54d0f23348c4a9b84acc08fe8778d5bfd/Zero-DCE_code/snapshots/Epoch99.pth",
        sha256="a4395acb874f320375d9704997cef874eaaaaa26a1777ceb29a92b70f74c3612",
        size_bytes=320017,
        license="CC BY-NC 4.0 (research only)",
        source="https://github.com/Li-Chongyi/Zero-DCE",
        num_params=79416,
        metrics={"lol_eval15": {"psnr": 14.861, "ssim": 0.5624}},
        note="official checkpoint (legacy torch format)",
    )
)
register_weights(
    Weights(
        name="zero-dce++",
        model="zero-dce++",
        relpath="zero_dce_pp/Epoch99.pth",
        url="https://raw.githubusercontent.com/Li-Chongyi/Zero-DCE_extension/"
        "09f202b690f82da939b8e6ec8535960ae97ad8bd/Zero-DCE%2B%2B/snapshots_Zero_DCE%2B%2B/Epoch99.pth",
        sha256="ca8855b90df9a80fa4195a831f33d3476b1964f787eb70602797c773067f3b84",
        size_bytes=52395,
        license="CC BY-NC 4.0 (research only)",
        source="https://github.com/Li-Chongyi/Zero-DCE_extension",
        num_params=10561,
        metrics={"lol_eval15": {"psnr": 15.345, "ssim": 0.5731}},
        note="official checkpoint; LOL scored at scale_factor 12 on the 396x600 crop",
    )
)
