"""KinD: Kindling the Darkness (Zhang, Zhang and Guo, ACM MM 2019).

Three TF-Slim networks and a fixed composition, as the official ``evaluate.py`` runs them:

1. the frame is min-max normalised over all its pixels and channels:
   ``x = (x - min) / max(max - min, 0.001)``;
2. ``DecomNet`` (the official ``DecomNet_simple``, a 2-level U-Net) splits ``x`` into a
   reflectance R (3 channels, sigmoid) and an illumination I (1 channel, sigmoid);
3. ``Restoration_net`` (a 4-level U-Net on concat(R, I)) restores the reflectance: R';
4. ``Illumination_adjust_net`` (four 3x3 convolutions on concat(I, ratio map)) brightens
   the illumination to I' for a constant ratio map (official ``ratio = 5.0``);
5. a gray-guided weight ``w = min(sqrt(2 * gaussian_3(gray(R))), 1)`` (skimage ``rgb2gray``
   weights, a 25-tap sigma-3 Gaussian with edge replication) darkens R' where R is dark;
6. output ``= I * x + (1 - I) * (R' * w * I')``: a blend with the normalised input,
   weighted by the decomposition illumination.

Every layer follows TensorFlow's semantics exactly, so any frame size runs without padding:
SAME 3x3 convolutions pad 1 on each side, SAME 2x2/2 max-pools round up (torch's
``ceil_mode``), and each 2x2/2 transposed convolution is given its skip tensor's size, which
for an odd size drops the last row/column of the doubled map (TF pads SAME at the end).
All activations are leaky ReLUs with slope 0.2 (``max(0.2 x, x)``), as in the official code;
the illumination-adjust net applies one to its last convolution before the sigmoid too.

Exactness (tests/test_kind.py): every intermediate and the output are within 1e-5 of the
official TensorFlow graph's arrays.

The official checkpoints are TensorFlow 1 ``tf.train.Saver`` directories, one per network
(``checkpoint/decom_net_train/``, ``illumination_adjust_net_train/``,
``Restoration_net_train/``), with variables named ``<scope>/<layer>/weights|biases``
(scopes ``DecomNet``, ``Restoration_net``, ``Illumination_adjust_net``). ``load_model``
takes either that ``checkpoint/`` directory (the subdirectories are merged) or one ``.npz``
holding all three networks' variables by their official names. The repository ships the
first two; the restoration checkpoint is only in the authors' Google Drive / BaiduNetdisk
archive, so there is no catalogue default.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vidlight.models.registry import KeyMap, register_model
from vidlight.weights import Weights, register_weights

LEAK = 0.2  # official lrelu: tf.maximum(0.2 * x, x)
GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)  # skimage.color.rgb2gray
GAUSS_SIGMA = 3.0  # skimage.filters.gaussian(gray, 3): mode 'nearest', truncate 4.0
GAUSS_TRUNCATE = 4.0
NORM_EPS = 0.001  # evaluate.py: np.maximum(max - min, 0.001)
PEAK_BYTES_PER_PIXEL = 2600  # fp32 inference, measured by tests/test_tiling.py


def normalise(x: torch.Tensor, smooth=None) -> torch.Tensor:
    """Official min-max normalisation over all pixels and channels of each frame.

    ``smooth(key, index, value)`` (a :class:`vidlight.pipeline.temporal.StatisticsSmoother`)
    replaces frame ``index``'s minimum and maximum by averages over time of their ratios to the
    frame's mean (``"min"``, ``"max"``), times the frame's own mean. Noise moves the extremes
    from frame to frame (one hot pixel is the maximum); the mean over all pixels hardly moves
    with noise, and an exposure change scales all three alike. So the normalisation still
    follows exposure changes and exposure flicker frame by frame, as the official per-frame
    one does, and only the extremes' own noise is averaged (smoothing the extremes themselves
    put injected exposure flicker back into the output: 0.025 frame-wise -> 0.037).
    """
    lo, hi = extremes(x, smooth)
    return (x - lo) / torch.clamp(hi - lo, min=NORM_EPS)


def normalise_with_stretch(x: torch.Tensor, smooth=None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`normalise`'s result and the factor it multiplied ``x`` by
    (``1 / max(max - min, 0.001)``, N x 1 x 1 x 1), from one reading of the statistics."""
    lo, hi = extremes(x, smooth)
    span = torch.clamp(hi - lo, min=NORM_EPS)
    return (x - lo) / span, 1 / span


def extremes(x: torch.Tensor, smooth=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The minimum and maximum :func:`normalise` uses for each frame, N x 1 x 1 x 1 each."""
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    if smooth is not None:
        mean = x.mean(dim=(1, 2, 3), keepdim=True).clamp(min=NORM_EPS)
        # One device-to-host copy per batch, not one per frame.
        stats = torch.cat([lo, hi, mean], dim=1).flatten(1).tolist()
        lo = torch.tensor(
            [smooth("min", j, a / m) * m for j, (a, _, m) in enumerate(stats)], dtype=x.dtype, device=x.device
        ).view_as(lo)
        hi = torch.tensor(
            [smooth("max", j, b / m) * m for j, (_, b, m) in enumerate(stats)], dtype=x.dtype, device=x.device
        ).view_as(hi)
    return lo, hi


# Strength (vidlight.models.strength) of KinD and KinD++, on the estimated illumination. The
# decomposition splits the normalised frame into reflectance R and illumination I; the output
# ``I * innorm + (1 - I) * R' * w * I'`` is about ``R * (I ** 2 + (1 - I) * I')``: its
# illumination is ``I ** 2 + (1 - I) * I'`` (KinD++ without --adjustment: I' = 1). In the
# frame's own units the input's illumination is about ``I / stretch`` (the normalisation
# divides by max - min), so the method's illumination gain is ``gain = (I ** 2 + (1 - I) * I')
# * stretch / I``. At strength s the frame is brightened by ``gain ** s`` and the method's
# restored output (denoised reflectance, its colour) is faded in by s:
# ``(1 - s) * clamp(x * gain ** s) + s * out``.
GAIN_LIMIT = 1e4  # keeps x * gain finite where I is ~0 (0 * inf would be NaN)


def illumination_gain(illumination: torch.Tensor, adjusted: torch.Tensor | float) -> torch.Tensor:
    """The output's illumination over the decomposition's, ``(I ** 2 + (1 - I) * I') / I``, in
    the normalised frame's units (times the stretch, it is in the frame's)."""
    out_illumination = illumination * illumination + (1 - illumination) * adjusted
    return (out_illumination / illumination).clamp_(0.0, GAIN_LIMIT)


def apply_illumination_strength(x: torch.Tensor, terms: torch.Tensor, strength) -> torch.Tensor:
    """KinD's or KinD++'s output at ``strength`` from ``terms`` = cat(official output, gain)."""
    from vidlight.models.strength import per_frame

    s = per_frame(strength, x)
    out, gain = terms[:, :3], terms[:, 3:4]
    brightened = (x * gain.pow(s)).clamp_(0.0, 1.0)
    return (1 - s) * brightened + s * out


class IlluminationStrength:
    """Strength for KinD and KinD++ (see above): terms are cat(official output, gain), computed
    as a global normalisation (prepare), the networks (``strength_tile_body``, per model, run
    on tiles) and the stretch put back (finish)."""

    # Set by the video pipeline (vidlight.pipeline.temporal.StatisticsSmoother): the min-max
    # normalisation's statistics are then averaged over time rather than taken per frame.
    statistics_smoother = None

    def strength_tile_body(self, innorm: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # each model's networks

    def strength_terms(self, x: torch.Tensor) -> torch.Tensor:
        innorm, factor = self.strength_tile_prepare(x)
        return self.strength_tile_finish(self.strength_tile_body(innorm), factor)

    def apply_strength(self, x: torch.Tensor, terms: torch.Tensor, strength) -> torch.Tensor:
        return apply_illumination_strength(x, terms, strength)

    def strength_tile_prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return normalise_with_stretch(x, self.statistics_smoother)

    def strength_tile_finish(self, terms: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        return torch.cat([terms[:, :3], (terms[:, 3:] * factor).clamp_(0.0, GAIN_LIMIT)], dim=1)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return torch.maximum(x * LEAK, x)


def _pool(x: torch.Tensor) -> torch.Tensor:
    """TF ``max_pool2d([2, 2], stride 2, padding='SAME')``: odd sides round up."""
    return F.max_pool2d(x, 2, 2, ceil_mode=True)


class _Conv(nn.Conv2d):
    """TF-Slim ``conv2d`` with SAME padding (stride 1, odd kernel: symmetric padding)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__(cin, cout, kernel, padding=kernel // 2)


class _UpConcat(nn.Module):
    """Official ``upsample_and_concat``: a 2x2/2 transposed convolution (no bias) to the skip
    tensor's size, then ``concat([up, skip])``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cin, cout, 2, 2))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.conv_transpose2d(x, self.weight, stride=2)
        # TF SAME for k=2, s=2 pads only at the end: an odd size keeps the first 2n-1 rows.
        up = up[:, :, : skip.shape[2], : skip.shape[3]]
        return torch.cat([up, skip], dim=1)


class DecomNet(nn.Module):
    """Official ``DecomNet_simple``: x -> (R, I)."""

    def __init__(self) -> None:
        super().__init__()
        self.g_conv1_1 = _Conv(3, 32)
        self.g_conv2_1 = _Conv(32, 64)
        self.g_conv3_1 = _Conv(64, 128)
        self.g_up_1 = _UpConcat(128, 64)
        self.g_conv8_1 = _Conv(128, 64)
        self.g_up_2 = _UpConcat(64, 32)
        self.g_conv9_1 = _Conv(64, 32)
        self.g_conv10 = _Conv(32, 3, 1)
        self.l_conv1_2 = _Conv(32, 32)
        self.l_conv1_4 = _Conv(64, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conv1 = _lrelu(self.g_conv1_1(x))
        conv2 = _lrelu(self.g_conv2_1(_pool(conv1)))
        conv3 = _lrelu(self.g_conv3_1(_pool(conv2)))
        conv8 = _lrelu(self.g_conv8_1(self.g_up_1(conv3, conv2)))
        conv9 = _lrelu(self.g_conv9_1(self.g_up_2(conv8, conv1)))
        reflectance = torch.sigmoid(self.g_conv10(conv9))
        l_conv2 = _lrelu(self.l_conv1_2(conv1))
        illumination = torch.sigmoid(self.l_conv1_4(torch.cat([l_conv2, conv9], dim=1)))
        return reflectance, illumination


class RestorationNet(nn.Module):
    """Official ``Restoration_net``: (R, I) -> restored R (sigmoid)."""

    WIDTHS = (32, 64, 128, 256, 512)

    def __init__(self) -> None:
        super().__init__()
        cin = 4
        for level, width in enumerate(self.WIDTHS, start=1):
            setattr(self, f"de_conv{level}_1", _Conv(cin, width))
            setattr(self, f"de_conv{level}_2", _Conv(width, width))
            cin = width
        for level, width in zip(range(6, 10), reversed(self.WIDTHS[:-1])):
            setattr(self, f"up_{level}", _UpConcat(2 * width, width))
            setattr(self, f"de_conv{level}_1", _Conv(2 * width, width))
            setattr(self, f"de_conv{level}_2", _Conv(width, width))
        self.de_conv10 = _Conv(self.WIDTHS[0], 3)

    def _block(self, level: int, x: torch.Tensor) -> torch.Tensor:
        x = _lrelu(getattr(self, f"de_conv{level}_1")(x))
        return _lrelu(getattr(self, f"de_conv{level}_2")(x))

    def forward(self, reflectance: torch.Tensor, illumination: torch.Tensor) -> torch.Tensor:
        x = torch.cat([reflectance, illumination], dim=1)
        skips = []
        for level in range(1, 6):
            x = self._block(level, x if level == 1 else _pool(x))
            skips.append(x)
        skips.pop()
        for level in range(6, 10):
            x = self._block(level, getattr(self, f"up_{level}")(x, skips.pop()))
        return torch.sigmoid(self.de_conv10(x))


class IlluminationAdjustNet(nn.Module):
    """Official ``Illumination_adjust_net``: (I, ratio map) -> adjusted I (sigmoid)."""

    def __init__(self) -> None:
        super().__init__()
        self.en_conv_1 = _Conv(2, 32)
        self.en_conv_2 = _Conv(32, 32)
        self.en_conv_3 = _Conv(32, 32)
        self.en_conv_4 = _Conv(32, 1)

    def forward(self, illumination: torch.Tensor, ratio: float) -> torch.Tensor:
        x = torch.cat([illumination, torch.full_like(illumination, ratio)], dim=1)
        for conv in (self.en_conv_1, self.en_conv_2, self.en_conv_3, self.en_conv_4):
            x = _lrelu(conv(x))  # the official code keeps the lrelu on the last layer too
        return torch.sigmoid(x)


def _gaussian_kernel(sigma: float, truncate: float) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian: radius ``int(truncate * sigma + 0.5)``, normalised."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    phi = torch.exp(-0.5 * x * x / (sigma * sigma))
    return phi / phi.sum()


@functools.lru_cache(maxsize=8)
def _gray_weights(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """GRAY_WEIGHTS as 1 x 3 x 1 x 1, made once per device and dtype (not copied at every call)."""
    return torch.tensor(GRAY_WEIGHTS, dtype=dtype, device=device).view(1, 3, 1, 1)


@functools.lru_cache(maxsize=8)
def _official_blur_kernel(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The official blur's 1-D kernel, made once per device and dtype."""
    return _gaussian_kernel(GAUSS_SIGMA, GAUSS_TRUNCATE).to(dtype).to(device)


def gray_of(rgb: torch.Tensor) -> torch.Tensor:
    """``skimage.color.rgb2gray`` of N x 3 x H x W: N x 1 x H x W."""
    return (rgb * _gray_weights(rgb.device, rgb.dtype)).sum(dim=1, keepdim=True)


def gaussian_blur(gray: torch.Tensor, sigma: float = GAUSS_SIGMA, truncate: float = GAUSS_TRUNCATE) -> torch.Tensor:
    """``skimage.filters.gaussian(gray, sigma)`` on N x 1 x H x W: separable, edge-replicated."""
    if (sigma, truncate) == (GAUSS_SIGMA, GAUSS_TRUNCATE):
        kernel = _official_blur_kernel(gray.device, gray.dtype)
    else:
        kernel = _gaussian_kernel(sigma, truncate).to(gray.dtype).to(gray.device)
    radius = kernel.numel() // 2
    out = F.pad(gray, (0, 0, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, -1, 1))  # axis 0 (rows) first, as scipy
    out = F.pad(out, (radius, radius, 0, 0), mode="replicate")
    return F.conv2d(out, kernel.view(1, 1, 1, -1))


class KinD(IlluminationStrength, nn.Module):
    """KinD as the official ``evaluate.py`` composes it; RGB in [0, 1] -> RGB.

    Args:
        ratio: the constant of the illumination-adjust net's ratio map, the exposure level
            (official ``ratio = 5.0``; the official comment gives 0-5 as its range).
    """

    def __init__(self, ratio: float = 5.0) -> None:
        super().__init__()
        try:
            value = float(ratio)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"ratio must be a finite number >= 0, got {ratio!r}")
        self.ratio = value
        self.decom = DecomNet()
        self.restore = RestorationNet()
        self.adjust = IlluminationAdjustNet()

    def stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate of the official evaluation, N x C x H x W each:
        ``innorm``, ``decomR``, ``decomI``, ``restoredR``, ``adjI``, ``grayw``, ``denoised``,
        ``fusion4`` and ``out`` (named as the reference fixtures)."""
        return self.compose(normalise(x, self.statistics_smoother))

    def compose(self, innorm: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`stages` from the normalised frame on (all local: tiles may run it)."""
        reflectance, illumination = self.decom(innorm)
        restored = self.restore(reflectance, illumination)
        adjusted = self.adjust(illumination, self.ratio)
        gray = gray_of(reflectance)
        grayw = torch.clamp(torch.sqrt(gaussian_blur(gray) * 2), max=1.0)
        denoised = restored * grayw
        fusion4 = denoised * adjusted
        out = illumination * innorm + (1 - illumination) * fusion4
        return {
            "innorm": innorm,
            "decomR": reflectance,
            "decomI": illumination,
            "restoredR": restored,
            "adjI": adjusted,
            "grayw": grayw,
            "denoised": denoised,
            "fusion4": fusion4,
            "out": out,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)["out"]

    # Tiled inference (vidlight.pipeline.tiling): the min-max normalisation is global.
    tile_multiple = 4  # the U-Nets pool twice
    peak_bytes_per_pixel = PEAK_BYTES_PER_PIXEL

    def tile_prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return normalise(x, self.statistics_smoother), None

    def tile_body(self, innorm: torch.Tensor) -> torch.Tensor:
        return self.compose(innorm)["out"]

    def strength_tile_body(self, innorm: torch.Tensor) -> torch.Tensor:
        stages = self.compose(innorm)
        return torch.cat([stages["out"], illumination_gain(stages["decomI"], stages["adjI"])], dim=1)


# --- official weights -------------------------------------------------------------------------

_SCOPES = {"DecomNet": "decom", "Restoration_net": "restore", "Illumination_adjust_net": "adjust"}


def _official_keymap() -> KeyMap:
    """``<scope>/<layer>/weights|biases`` -> ``<module>.<layer>.weight|bias``."""
    nets = {
        "DecomNet": DecomNet(),
        "Restoration_net": RestorationNet(),
        "Illumination_adjust_net": IlluminationAdjustNet(),
    }
    prefixes = {}
    for scope, net in nets.items():
        for key in net.state_dict():
            layer, _, tensor = key.rpartition(".")
            tf_name = {"weight": "weights", "bias": "biases"}[tensor]
            prefixes[f"{scope}/{layer}/{tf_name}"] = f"{_SCOPES[scope]}.{key}"
    return KeyMap(prefixes)


OFFICIAL_KEYMAP = _official_keymap()


def tf_to_torch_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Transpose TF kernels to torch's layout; other tensors pass through.

    Conv kernels (TF-Slim ``weights``, ``tf.layers`` ``kernel``) are (kh, kw, in, out) and the
    ``conv2d_transpose`` filters (kh, kw, out, in); torch wants (out, in, kh, kw) and
    (in, out, kh, kw), so both take the same permutation. Used by KinD and KinD++.
    """
    return {
        key: value.permute(3, 2, 0, 1).contiguous()
        if (key.endswith("/weights") or key.endswith("/kernel")) and value.ndim == 4
        else value
        for key, value in state.items()
    }


@register_model(
    "kind",
    default_weights="kind-lol",
    keymap=OFFICIAL_KEYMAP,
    transform=tf_to_torch_layout,
    summary="KinD (ACM MM 2019): decomposition, restoration and illumination-adjust U-Nets, official composition",
    options={"ratio": "exposure ratio fed to the illumination-adjust net (official evaluate.py: 5.0)"},
)
def kind(ratio: float = 5.0) -> KinD:
    return KinD(ratio)


# The repository carries the decomposition and illumination-adjust checkpoints but not the
# restoration net's; the whole set is on the authors' Google Drive / BaiduNetdisk only.
register_weights(
    Weights(
        name="kind-lol",
        model="kind",
        relpath="kind/checkpoint",
        directory=True,
        sha256=None,
        size_bytes=None,
        license="none stated (the repository has no license)",
        source="https://github.com/zhangyhuaee/KinD",
        num_params=8016008,
        manual=(
            "https://drive.google.com/open?id=1-ljWntl7FExf6BSQtl5Mz3rMGWgnXDz4",
            "https://pan.baidu.com/s/1c4ZLYEIoR-8skNMiAVbl_A",
        ),
        note=(
            "the authors' checkpoint/ folder with decom_net_train/, illumination_adjust_net_train/ and "
            "Restoration_net_train/ (TF1; the repository lacks the last one)"
        ),
    )
)
