"""MBLLEN: Multi-Branch Low-Light Enhancement Network (Lv et al., BMVC 2018).

A chain of ten 3x3 feature-extraction convolutions (FEM) feeds ten enhancement modules
(EM), one per FEM stage. Each EM is a small conv/deconv encoder-decoder: a 3x3 'same'
convolution to 8 channels, three 5x5 'valid' convolutions (8 -> 8 -> 16 -> 32 channels,
each shrinking the map by 4) and three 5x5 stride-1 'valid' transposed convolutions
(32 -> 16 -> 8 -> 3 channels, each growing it by 4 back to the input size). A 1x1
convolution fuses the ten 3-channel EM outputs. Every layer, the last included, is
followed by a ReLU, so the raw output is >= 0 but is not capped at 1.

The official test script (``main/test.py``) then post-processes each image: a linear
stretch of the gray level's high percentile to ``max_range``, a black-point subtraction at
its low percentile and a gamma on the HSV saturation. That step is optional here
(``postprocess=True``); it lowers LOL scores (see the catalogue notes).

Exactness (tests/test_mbllen.py): the raw output is within 3e-7 of the official Keras output;
the post-processing, given the official raw output, reproduces the official arrays bit for
bit (it emulates numpy 1.x's float32 scalar casting and OpenCV's FMA arithmetic).

The official weights are Keras 2 HDF5 files. Their layers are named in creation order
(``conv2d_1`` .. ``conv2d_51``, ``conv2d_transpose_1`` .. ``conv2d_transpose_30``); the
keymap below follows that order, and :func:`keras_to_torch_layout` transposes the kernels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidlight.models.registry import KeyMap, boolean_option, register_model
from vidlight.weights import Weights, register_weights

STAGES = 10  # FEM stages = EM branches
FEATURES = 32  # FEM width
EM_WIDTH = 8  # first EM width (then 2x and 4x)
EM_KERNEL = 5  # kernel of the EM's 'valid' convolutions and transposed convolutions
PEAK_BYTES_PER_PIXEL = 1400  # fp32 inference, measured by tests/test_tiling.py
# The three 'valid' convolutions shrink a side by 3 * (EM_KERNEL - 1) = 12: a side must be at
# least 13 for the official network to run. Smaller frames are edge-padded to this and cropped.
MIN_SIDE = 3 * (EM_KERNEL - 1) + 1
# Rows of context one raw-output row needs: 10 FEM 3x3 convs (the last branch), the EM's 3x3
# conv, three 5x5 convs and three 5x5 transposed convs. Deliberately not exposed as the model's
# ``receptive_halo``: with the pipeline's strip height (tuned for SCI's halo of 3) a halo of 23
# would recompute most rows of a wide batch several times; and the post-processing needs whole
# frames (its percentiles are per frame).
RECEPTIVE_HALO = STAGES + 1 + 6 * (EM_KERNEL // 2)

_FLT_EPSILON = float(np.finfo(np.float32).eps)


class EnhancementModule(nn.Module):
    """One EM branch: 3x3 'same' conv, three 5x5 'valid' convs, three 5x5 'valid'
    stride-1 transposed convs (all ReLU). Output: 3 channels, same size as the input."""

    def __init__(self, in_channels: int = FEATURES, width: int = EM_WIDTH, kernel: int = EM_KERNEL) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)  # Keras 'same', stride 1
        self.conv2 = nn.Conv2d(width, width, kernel)  # Keras 'valid'
        self.conv3 = nn.Conv2d(width, width * 2, kernel)
        self.conv4 = nn.Conv2d(width * 2, width * 4, kernel)
        # Keras Conv2DTranspose, 'valid', stride 1: output side = input side + kernel - 1,
        # no cropping; torch's padding=0 transposed conv is the same operator.
        self.deconv1 = nn.ConvTranspose2d(width * 4, width * 2, kernel)
        self.deconv2 = nn.ConvTranspose2d(width * 2, width, kernel)
        self.deconv3 = nn.ConvTranspose2d(width, 3, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4, self.deconv1, self.deconv2, self.deconv3):
            x = torch.relu(layer(x))
        return x


class MBLLEN(nn.Module):
    """MBLLEN (the official ``build_mbllen``), RGB in, RGB out.

    The official script feeds RGB (``utls.imread_color`` converts OpenCV's BGR), so no
    channel swap is needed.

    Args:
        postprocess: False (default): return the raw network output, as the official
            ``model.predict`` returns it (>= 0, may exceed 1). True: apply the official
            test-script post-processing to each frame and return its result clipped to
            [0, 1] (the image the official script writes, before 8-bit quantisation).
        high_percentile: gray-level percentile stretched to ``max_range`` (official ``-hp``, 95).
        low_percentile: gray-level percentile subtracted as the black point (official ``-lp``, 5).
        gamma: exponent applied to the HSV saturation (official ``-g 8``, i.e. 8 / 10 = 0.8).
        max_range: target level of the high percentile; the stretch is skipped when at least
            ``(100 - high_percentile)`` % of the pixels are already at or above it
            (official ``-mr 8``, i.e. 8 / 10 = 0.8).
    """

    def __init__(
        self,
        postprocess: bool = False,
        high_percentile: float = 95.0,
        low_percentile: float = 5.0,
        gamma: float = 0.8,
        max_range: float = 0.8,
    ) -> None:
        super().__init__()
        postprocess = boolean_option(postprocess, "postprocess")
        if not 0.0 <= low_percentile <= 100.0 or not 0.0 <= high_percentile <= 100.0:
            raise ValueError(f"percentiles must lie in [0, 100], got low {low_percentile!r}, high {high_percentile!r}")
        if not gamma > 0:
            raise ValueError(f"gamma must be positive, got {gamma!r}")
        if not max_range > 0:
            raise ValueError(f"max_range must be positive, got {max_range!r}")
        self.postprocess = postprocess
        self.high_percentile = float(high_percentile)
        self.low_percentile = float(low_percentile)
        self.gamma = float(gamma)
        self.max_range = float(max_range)
        self.features = nn.ModuleList(
            nn.Conv2d(3 if k == 0 else FEATURES, FEATURES, 3, padding=1) for k in range(STAGES)
        )
        self.enhance = nn.ModuleList(EnhancementModule() for _ in range(STAGES))
        self.fusion = nn.Conv2d(3 * STAGES, 3, 1)

    def network_output(self, x: torch.Tensor) -> torch.Tensor:
        """The raw network output for an N x 3 x H x W RGB batch (official ``model.predict``)."""
        h, w = x.shape[-2:]
        pad_h, pad_w = max(0, MIN_SIDE - h), max(0, MIN_SIDE - w)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        out = fuse_branches(x, self.features, self.enhance, self.fusion)
        return out[..., :h, :w] if (pad_h or pad_w) else out

    # Set by the video pipeline (vidlight.pipeline.temporal.StatisticsSmoother): the
    # post-processing's percentiles are then averaged over time rather than taken per frame.
    statistics_smoother = None

    def postprocess_frames(self, raw: torch.Tensor, *, clip: bool = True) -> torch.Tensor:
        """The official post-processing with this model's settings, frame by frame."""
        return official_postprocess(
            raw,
            high_percentile=self.high_percentile,
            low_percentile=self.low_percentile,
            gamma=self.gamma,
            max_range=self.max_range,
            clip=clip,
            smooth=self.statistics_smoother,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.network_output(x)
        return self.postprocess_frames(raw) if self.postprocess else raw

    # Tiled inference (vidlight.pipeline.tiling): the network is local, the post-processing's
    # percentiles are per frame.
    peak_bytes_per_pixel = PEAK_BYTES_PER_PIXEL

    def tile_body(self, x: torch.Tensor) -> torch.Tensor:
        return self.network_output(x)

    def tile_finish(self, raw: torch.Tensor, ctx: None) -> torch.Tensor:
        return self.postprocess_frames(raw) if self.postprocess else raw


def fuse_branches(x: torch.Tensor, features: nn.ModuleList, enhance: nn.ModuleList, fusion: nn.Module) -> torch.Tensor:
    """MBLLEN's body: the feature chain, an enhancement module on every stage's features, and
    the fusion of all their outputs (2D or 3D alike)."""
    branches = []
    feat = x
    for conv, em in zip(features, enhance):
        feat = torch.relu(conv(feat))
        branches.append(em(feat))
    return torch.relu(fusion(torch.cat(branches, 1)))


# --- official post-processing (main/test.py), numerically as numpy 1.x + OpenCV do it -------


def _f32(value: float) -> float:
    """``value`` rounded to float32 (numpy 1.x casts a Python/float64 scalar to the array's
    float32 before an array-scalar operation)."""
    return float(np.float32(value))


def _gray(y: torch.Tensor) -> torch.Tensor:
    """The official gray level of ... x 3 x H x W RGB frames: 0.299 R + 0.587 G + 0.114 G. The
    green channel is used twice and blue not at all: an upstream bug, kept for exactness."""
    r, g = y.select(-3, 0), y.select(-3, 1)
    return (r * _f32(0.299) + g * _f32(0.587)) + g * _f32(0.114)


def _percentile(values: torch.Tensor, q: float) -> float:
    """``np.percentile(values, q)`` (method 'linear') of float32 values, as a float64 number."""
    return _percentile_terms(values.reshape(1, -1), q)[0][0].finish()


class _Percentile:
    """The two neighbouring order statistics of numpy 1.x's linear percentile and their
    float32 difference, read back from the device; :meth:`finish` interpolates in float64
    (from the top neighbour when the fraction is >= 0.5), as numpy does."""

    def __init__(self, a: float, b: float, diff: float, t: float) -> None:
        self.a, self.b, self.diff, self.t = a, b, diff, t

    def finish(self) -> float:
        return self.a + self.diff * self.t if self.t < 0.5 else self.b - self.diff * (1.0 - self.t)


def _percentile_terms(rows: torch.Tensor, q: float, *extra: torch.Tensor) -> list:
    """Per row of ``rows`` (N x P float32): its :class:`_Percentile` at ``q``, followed by the
    row's values of each of ``extra`` (N each), all read back in one transfer."""
    n = rows.shape[1]
    virtual = (n - 1) * (q / 100.0)
    lo = min(max(math.floor(virtual), 0), n - 1)
    hi = min(lo + 1, n - 1)
    t = virtual - lo if lo < n - 1 else 0.0
    a_t = rows.kthvalue(lo + 1, dim=1).values
    b_t = a_t if hi == lo else rows.kthvalue(hi + 1, dim=1).values
    read = torch.stack([a_t, b_t, b_t - a_t, *(e.to(a_t.dtype) for e in extra)], dim=1).tolist()  # b - a in float32
    return [[_Percentile(a, b, d, t), *more] for a, b, d, *more in read]


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | float) -> torch.Tensor:
    """float32 fused multiply-add ``a * b + c`` (one rounding). OpenCV's x86 builds compute the
    colour conversions with FMA. On the CPU via float64, where the product of two float32
    values is exact; on a GPU in one float32 ``addcmul`` kernel (compiled to FMA there), as
    float64 runs at a small fraction of float32's speed on most GPUs."""
    if a.device.type != "cpu":
        c = c.to(a.dtype) if isinstance(c, torch.Tensor) else torch.tensor(c, dtype=a.dtype, device=a.device)
        return torch.addcmul(c, a, b)
    return (a.double() * b.double() + c).float()


def _rgb_to_hsv(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV ``COLOR_RGB2HSV`` on float32 (H in degrees [0, 360), S, V), unclipped input.

    V = max, m = min, S = (V - m) / (|V| + FLT_EPSILON), d = 60 / (V - m + FLT_EPSILON),
    H = (G - B) d if V == R, else (B - R) d + 120 if V == G, else (R - G) d + 240, plus 360
    when negative; each H is one fused multiply-add, as OpenCV's AVX2 code computes it."""
    r, g, b = y.unbind(-3)
    v = torch.maximum(torch.maximum(r, g), b)
    vmin = torch.minimum(torch.minimum(r, g), b)
    diff = v - vmin
    s = diff / (v.abs() + _FLT_EPSILON)
    d = torch.full_like(diff, 60.0) / (diff + _FLT_EPSILON)  # a true division (60 / t is 60 * (1/t) in torch)
    is_r, is_g = v == r, v == g
    slope = torch.where(is_r, g - b, torch.where(is_g, b - r, r - g))
    offset = torch.where(is_r, 0.0, torch.where(is_g, 120.0, 240.0))
    offset = offset.to(torch.float64) if y.device.type == "cpu" else offset
    h = _fma(slope, d, offset)
    h = torch.where(h < 0, _fma(slope, d, 360.0), h)  # only the V == R branch can be negative
    return h, s, v


# For sectors 0..5 of the hue circle, which of tab = [v, v(1-s), v(1-sf), v(1-s(1-f))]
# becomes R, G and B (OpenCV's sector table, listed there as (B, G, R)).
_SECTOR_R = (0, 2, 1, 1, 3, 0)
_SECTOR_G = (3, 0, 0, 2, 1, 1)
_SECTOR_B = (1, 1, 3, 0, 0, 2)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """OpenCV ``COLOR_HSV2RGB`` on float32 (H in degrees); returns ... x 3 x H x W RGB.

    h = H * (6/360), sector = floor(h) mod 6, f = h - floor(h); the ``1 - s f`` and
    ``1 - s (1 - f)`` terms are fused multiply-adds, as in OpenCV's AVX2 code."""
    h6 = h * _f32(6.0 / 360.0)
    whole = torch.floor(h6)
    f = h6 - whole
    sector = torch.remainder(whole, 6.0).long()  # h6 can round up to 6.0: sector 0
    tab = torch.stack((v, v * (1.0 - s), v * _fma(-s, f, 1.0), v * _fma(-s, 1.0 - f, 1.0)))
    channels = []
    for table in _sector_tables(h.device):
        channels.append(tab.gather(0, table[sector][None])[0])
    return torch.stack(channels, dim=-3)


@functools.lru_cache(maxsize=8)
def _sector_tables(device: torch.device) -> torch.Tensor:
    """_SECTOR_R, _SECTOR_G, _SECTOR_B as one 3 x 6 tensor, made once per device."""
    return torch.tensor((_SECTOR_R, _SECTOR_G, _SECTOR_B), device=device)


def _powf(x: torch.Tensor, exponent: float) -> torch.Tensor:
    """float32 ``x ** exponent`` as the official ``np.power(S, 0.8)`` computes it.

    On the CPU this is numpy's own float32 power (its SIMD or libm ``powf``, whichever numpy
    picks on this machine, as the official script would); torch's float32 pow can differ by
    an ulp. Elsewhere: torch's float32 pow (within an ulp of numpy's; no float64 on a GPU)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.power(x.detach().numpy(), np.float32(exponent)))
    return torch.pow(x, _f32(exponent))


def _postprocess(
    y: torch.Tensor,
    high_percentile: float,
    low_percentile: float,
    gamma: float,
    max_range: float,
    clip: bool,
    smooth=None,
) -> torch.Tensor:
    """The post-processing of an N x 3 x H x W float32 batch, frame by frame in its arithmetic
    but batched on the device: each frame's statistics come back to the host in two transfers
    per batch, not several per frame."""
    gray = _gray(y).flatten(1)
    stats = _percentile_terms(gray, high_percentile, (gray >= _f32(max_range)).sum(1), (gray <= 1.0).sum(1))
    factors = []
    for j, (high, bright, in_range) in enumerate(stats):
        high = high.finish()
        if smooth is not None:
            high = smooth("high", j, high)
        # Official: stretch when bright / in_range < (100 - hp) / 100. Where it would divide by
        # zero (no pixel <= 1; or high == 0, an all-dark frame) it yields inf/NaN: skipped here.
        stretch = in_range > 0 and bright / in_range < (100.0 - high_percentile) / 100.0 and high > 0
        factors.append(_f32(max_range / high) if stretch else None)
    stretched = [j for j, f in enumerate(factors) if f is not None]
    if stretched:
        y = y.clone()
        scale = torch.tensor([factors[j] for j in stretched], dtype=y.dtype, device=y.device).view(-1, 1, 1, 1)
        y[stretched] = (y[stretched] * scale).clamp_max_(1.0)
    offsets, scales = [], []
    for j, (low,) in enumerate(_percentile_terms(_gray(y).flatten(1), low_percentile)):
        low = low.finish()
        if smooth is not None:
            low = smooth("low", j, low)
        # Official: division by zero (NaN image) when the black point is 1; left as it is here.
        offsets.append(_f32(low) if low != 1.0 else 0.0)
        scales.append(_f32(1.0 / (1.0 - low)) if low != 1.0 else 1.0)
    as_tensor = lambda v: torch.tensor(v, dtype=y.dtype, device=y.device).view(-1, 1, 1, 1)  # noqa: E731
    y = (y - as_tensor(offsets)) * as_tensor(scales)  # x - 0 and x * 1 are exact
    h, s, v = _rgb_to_hsv(y)
    s = _powf(s, gamma)
    y = _hsv_to_rgb(h, s, v).clamp_max_(1.0)
    return y.clamp_min_(0.0) if clip else y


def official_postprocess(
    raw: torch.Tensor,
    *,
    high_percentile: float = 95.0,
    low_percentile: float = 5.0,
    gamma: float = 0.8,
    max_range: float = 0.8,
    clip: bool = True,
    smooth=None,
) -> torch.Tensor:
    """The official MBLLEN test-script post-processing, applied to each frame of ``raw``
    (N x 3 x H x W RGB, the raw network output). Computed in float32 whatever the input
    dtype, returned in the input dtype.

    Per frame: gray = 0.299 R + 0.587 G + 0.114 G; if fewer than (100 - high_percentile) %
    of the pixels have gray >= max_range (counted among those with gray <= 1), scale so the
    high percentile of gray becomes max_range and cap at 1; subtract the low percentile of
    gray and rescale so 1 stays 1; raise the HSV saturation to ``gamma``; cap at 1.

    Args:
        clip: also clip below at 0 (the official final step). False returns the values
            before it, which can be negative.
        smooth: ``smooth(key, index, value)`` replaces the high (``"high"``) and low
            (``"low"``) percentile of frame ``index`` (a
            :class:`vidlight.pipeline.temporal.StatisticsSmoother`); None: the official per-frame values.
    """
    if len(raw) == 0:
        return raw.clone()
    return _postprocess(raw.float(), high_percentile, low_percentile, gamma, max_range, clip, smooth).to(raw.dtype)


# --- official weights -------------------------------------------------------------------------


def _official_layers() -> list[tuple[str, str]]:
    """(Keras layer name, our module name), in the official creation order."""
    layers = []
    for k in range(STAGES):
        layers.append((f"conv2d_{1 + 5 * k}", f"features.{k}"))
        layers += [(f"conv2d_{2 + 5 * k + j}", f"enhance.{k}.conv{j + 1}") for j in range(4)]
        layers += [(f"conv2d_transpose_{1 + 3 * k + j}", f"enhance.{k}.deconv{j + 1}") for j in range(3)]
    layers.append((f"conv2d_{5 * STAGES + 1}", "fusion"))
    return layers


# Full official tensor names (``<layer>/<layer>/kernel:0`` as read from the .h5 or .npz) -> ours.
OFFICIAL_KEYMAP = KeyMap(
    {
        f"{layer}/{layer}/{keras}": f"{ours}.{torch_name}"
        for layer, ours in _official_layers()
        for keras, torch_name in (("kernel:0", "weight"), ("bias:0", "bias"))
    }
)


def keras_to_torch_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Transpose Keras kernels to torch's layout; other tensors pass through.

    Conv2D kernels are (kh, kw, in, out) and Conv2DTranspose kernels (kh, kw, out, in);
    torch wants (out, in, kh, kw) for Conv2d and (in, out, kh, kw) for ConvTranspose2d, so
    both take the same permutation. No spatial flip: both frameworks' transposed
    convolution is the adjoint of their (cross-correlation) convolution.
    """
    return {
        key: value.permute(3, 2, 0, 1).contiguous() if key.endswith("kernel:0") and value.ndim == 4 else value
        for key, value in state.items()
    }


@register_model(
    "mbllen",
    default_weights="mbllen-lol",
    keymap=OFFICIAL_KEYMAP,
    transform=keras_to_torch_layout,
    summary="MBLLEN (BMVC 2018): 10-branch conv/deconv CNN, raw output or official post-processing",
    options={
        "postprocess": "apply the official test-script post-processing per frame (default False: raw output)",
        "high_percentile": "post-processing: gray percentile stretched to max_range (official -hp, default 95)",
        "low_percentile": "post-processing: gray percentile subtracted as black point (official -lp, default 5)",
        "gamma": "post-processing: exponent on the HSV saturation (official -g 8 = 0.8, default 0.8)",
        "max_range": "post-processing: level the high percentile is stretched to (official -mr 8 = 0.8, default 0.8)",
    },
)
def mbllen(
    postprocess: bool = False,
    high_percentile: float = 95.0,
    low_percentile: float = 5.0,
    gamma: float = 0.8,
    max_range: float = 0.8,
) -> MBLLEN:
    return MBLLEN(postprocess, high_percentile, low_percentile, gamma, max_range)


_MBLLEN_COMMIT = "69f6dc7ac35e4e1e5d79e74d2738cca033f5d563"
for _name, _file, _sha, _metrics, _note in (
    (
        "mbllen-lol",
        "LOL_img_lowlight.h5",
        "3b7ee0e9970c6dd44cdb54d3533f1a2339e9b5e5ebdd88cd309b8d729e13afe1",
        {"lol_eval15": {"psnr": 18.7551, "ssim": 0.8103}},
        "official Keras checkpoint fine-tuned on LOL; LOL scores are of the raw output "
        "(with the official post-processing, postprocess=True: 17.5626 dB / 0.7293)",
    ),
    (
        "mbllen-syn",
        "Syn_img_lowlight.h5",
        "8fa59562a92899d678c423ec91e550752e1b588d9ac1eeda75bbab3772283bd0",
        {},
        "official Keras checkpoint trained on synthetic low-light images (no noise)",
    ),
    (
        "mbllen-syn-noise",
        "Syn_img_lowlight_withnoise.h5",
        "40fa63cc1bfa1a072f3aa962b35710498de7d7d7f4a533cdea228ac573f70411",
        {},
        "official Keras checkpoint trained on synthetic low-light images with Poisson noise "
        "(enhances and denoises; the official test.py default)",
    ),
):
    register_weights(
        Weights(
            name=_name,
            model="mbllen",
            relpath=f"mbllen/{_file}",
            url=f"https://raw.githubusercontent.com/Lvfeifan/MBLLEN/{_MBLLEN_COMMIT}/models/{_file}",
            sha256=_sha,
            size_bytes=2049408,
            license="Apache-2.0",
            source="https://github.com/Lvfeifan/MBLLEN",
            num_params=450171,
            metrics=_metrics,
            note=_note,
        )
    )
