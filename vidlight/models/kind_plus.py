"""KinD++: Beyond Brightening Low-light Images (Zhang, Guo, Ma, Liu and Zhang, IJCV 2021).

The official ``evaluate.py`` runs three TF-Slim networks and composes their outputs:

1. the frame is min-max normalised over all its pixels and channels:
   ``x = (x - min) / max(max - min, 0.001)``;
2. ``DecomNet`` (the same 2-level U-Net as KinD's, with its own weights) splits ``x`` into a
   reflectance R (3 channels, sigmoid) and an illumination I (1 channel, sigmoid);
3. ``Restoration_net`` (scope ``Denoise_Net``) restores the reflectance at full resolution
   with four multi-scale illumination attention (MSIA) modules: R';
4. ``Illumination_adjust_net`` (scope ``I_enhance_Net``) brightens the illumination to I' for a
   constant ratio map (official ``--ratio 5.0``);
5. a gray-guided weight ``w = min(sqrt(2 * gaussian_3(gray(R))), 1)`` (as KinD) darkens R'
   where R is dark: ``denoised = R' * w``;
6. by default (official ``--adjustment`` off) ``out = I * x + (1 - I) * denoised``: the
   illumination-adjust net does not reach the output. With ``adjustment=True``
   ``out = I * x + (1 - I) * (denoised * I')``.

An MSIA module multiplies its features by ``sigmoid(conv3x3(I))`` (no bias), then concatenates
them with three branches and fuses with a 1x1 conv (ReLU): branch 1 is a 3x3 conv (ReLU) ->
BatchNorm -> ReLU; branch 2 a 2x2/2 max-pool -> 3x3 conv (ReLU) -> BN -> ReLU -> 2x2/2
transposed conv (ReLU); branch 4 a 4x4/4 max-pool -> 1x1 conv (ReLU) -> BN -> ReLU -> two
2x2/2 transposed convs (ReLU each). TF-Slim convs default to ReLU, which the official code keeps;
BatchNorm runs on its moving statistics with epsilon 1e-3. The main-path convs use leaky ReLU
``max(0.2 x, x)``; the last conv is followed by a sigmoid.

Frame size: the official script crops H and W down to multiples of 4 (the pooled branches must
come back to the input size). Here any size runs without cropping: pools follow TF's SAME rule
(output ``ceil(n / k)``; padding ``(ceil(n / k) - 1) * k + k - n``, its half rounded down before),
and each branch's transposed-conv output is cut to the feature size (its first ``n`` rows and
columns). For multiples of 4 nothing is padded or cut, so the result is the official one.

Exactness (tests/test_kind_plus.py): every intermediate and both outputs are within 1e-4 (in
practice ~1e-6) of the official TensorFlow graph's arrays.

The official checkpoints are TensorFlow 1 ``tf.train.Saver`` directories, one per network
(``checkpoint/decom_model/``, ``illu_model/``, ``restoration_model/``), variables named by
their TF names (``DecomNet/...``, ``Denoise_Net/...``, ``I_enhance_Net/...``). ``load_model``
takes either that ``checkpoint/`` directory (subdirectories merged) or one ``.npz`` of all three
networks' variables by their official names. The repository ships the first two; the
restoration checkpoint is only in the authors' Google Drive / BaiduNetDisk archive, so there is
no catalogue default.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidlight.models.kind import (
    DecomNet,
    IlluminationAdjustNet,
    IlluminationStrength,
    gaussian_blur,
    gray_of,
    illumination_gain,
    normalise,
    tf_to_torch_layout,
)
from vidlight.models.registry import KeyMap, boolean_option, register_model
from vidlight.weights import Weights, register_weights

LEAK = 0.2  # official lrelu: tf.maximum(0.2 * x, x)
BN_EPS = 1e-3  # tf.layers.batch_normalization default
PEAK_BYTES_PER_PIXEL = 17000  # fp32 inference, measured by tests/test_tiling.py
WIDTHS = (64, 256, 256, 64)  # channels entering each MSIA module (official Restoration_net)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return torch.maximum(x * LEAK, x)


def _tf_same_max_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """TF ``max_pool2d([k, k], k, padding='SAME')``: ``ceil(n / k)`` outputs, padding split with
    the smaller half before (padded cells never win)."""
    pads = []
    for n in (x.shape[3], x.shape[2]):  # F.pad order: last dim first
        total = max((-(-n // k) - 1) * k + k - n, 0)
        pads += [total // 2, total - total // 2]
    if any(pads):
        x = F.pad(x, pads, value=-math.inf)
    return F.max_pool2d(x, k, k)


class _Conv(nn.Conv2d):
    """A stride-1 SAME convolution with an odd kernel (symmetric padding)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, bias: bool = True) -> None:
        super().__init__(cin, cout, kernel, padding=kernel // 2, bias=bias)


class _UpConv(nn.Module):
    """TF-Slim ``conv2d_transpose(k=2, stride=2, SAME)`` with bias and its default ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, channels, 2, 2))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.conv_transpose2d(x, self.weight, self.bias, stride=2))


class _BatchNorm(nn.Module):
    """``tf.layers.batch_normalization`` at inference: moving statistics, epsilon 1e-3."""

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))  # gamma
        self.bias = nn.Parameter(torch.zeros(channels))  # beta
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight / torch.sqrt(self.running_var + BN_EPS)
        return (x - self.running_mean.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class _PoolUpsample(nn.Module):
    """Official ``pool_upsamping_3_M`` at ``level`` 1, 2 or 4."""

    def __init__(self, channels: int, level: int) -> None:
        super().__init__()
        self.level = level
        self.pu_conv = _Conv(channels, channels, 1 if level == 4 else 3)
        self.bn = _BatchNorm(channels)
        if level == 4:
            self.conv_up_1 = _UpConv(channels)
        if level >= 2:
            self.conv_up = _UpConv(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        y = _tf_same_max_pool(x, self.level) if self.level > 1 else x
        y = F.relu(self.bn(F.relu(self.pu_conv(y))))
        if self.level == 4:
            y = self.conv_up_1(y)
        if self.level >= 2:
            y = self.conv_up(y)[:, :, :h, :w]
        return y


class MSIA(nn.Module):
    """Official ``msia_3_M``: illumination attention, then the multi-scale module."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention = _Conv(1, 1, 3, bias=False)
        self.pu1 = _PoolUpsample(channels, 1)
        self.pu2 = _PoolUpsample(channels, 2)
        self.pu4 = _PoolUpsample(channels, 4)
        self.fuse = _Conv(4 * channels, channels, 1)

    def forward(self, x: torch.Tensor, illumination: torch.Tensor) -> torch.Tensor:
        f = x * torch.sigmoid(self.attention(illumination))
        return F.relu(self.fuse(torch.cat([f, self.pu1(f), self.pu2(f), self.pu4(f)], dim=1)))


class RestorationNet(nn.Module):
    """Official ``Restoration_net`` (scope ``Denoise_Net``): (R, I) -> restored R (sigmoid)."""

    def __init__(self) -> None:
        super().__init__()
        self.de_conv1_1, self.de_conv1_2 = _Conv(3, 32), _Conv(32, 64)
        self.de_conv2_1, self.de_conv2_2 = _Conv(64, 128), _Conv(128, 256)
        self.de_conv3_1, self.de_conv3_2 = _Conv(256, 512), _Conv(512, 256)
        self.de_conv4_1, self.de_conv4_2 = _Conv(256, 128), _Conv(128, 64)
        self.de_conv5_1 = _Conv(64, 32)
        self.de_conv10 = _Conv(32, 3)
        self.msia = nn.ModuleList(MSIA(c) for c in WIDTHS)

    def forward(self, reflectance: torch.Tensor, illumination: torch.Tensor) -> torch.Tensor:
        x = reflectance
        for level, msia in enumerate(self.msia, start=1):
            x = _lrelu(getattr(self, f"de_conv{level}_1")(x))
            x = _lrelu(getattr(self, f"de_conv{level}_2")(x))
            x = msia(x, illumination)
        x = _lrelu(self.de_conv5_1(x))
        return torch.sigmoid(self.de_conv10(x))


class KinDPlus(IlluminationStrength, nn.Module):
    """KinD++ as the official ``evaluate.py`` composes it; RGB in [0, 1] -> RGB.

    Args:
        ratio: the constant of the illumination-adjust net's ratio map (official ``--ratio 5.0``).
        adjustment: blend the adjusted illumination into the output (official ``--adjustment``,
            off by default).
    """

    def __init__(self, ratio: float = 5.0, adjustment: bool = False) -> None:
        super().__init__()
        try:
            value = float(ratio)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"ratio must be a finite number >= 0, got {ratio!r}")
        self.ratio = value
        self.adjustment = boolean_option(adjustment, "adjustment")
        self.decom = DecomNet()
        self.restore = RestorationNet()
        self.adjust = IlluminationAdjustNet()

    def stages(self, x: torch.Tensor, *, adjusted: bool = True) -> dict[str, torch.Tensor]:
        """Every intermediate of the official evaluation, N x C x H x W each: ``innorm``,
        ``decomR``, ``decomI``, ``restoredR``, ``grayw``, ``denoised``, ``out`` (default flags)
        and, unless ``adjusted=False``, ``adjI``, ``fusion4`` and ``out_adj`` (``--adjustment``)."""
        return self.compose(normalise(x, self.statistics_smoother), adjusted=adjusted)

    def compose(self, innorm: torch.Tensor, *, adjusted: bool = True) -> dict[str, torch.Tensor]:
        """:meth:`stages` from the normalised frame on (all local: tiles may run it)."""
        reflectance, illumination = self.decom(innorm)
        restored = self.restore(reflectance, illumination)
        gray = gray_of(reflectance)
        grayw = torch.clamp(torch.sqrt(gaussian_blur(gray) * 2), max=1.0)
        denoised = restored * grayw
        out = {
            "innorm": innorm,
            "decomR": reflectance,
            "decomI": illumination,
            "restoredR": restored,
            "grayw": grayw,
            "denoised": denoised,
            "out": illumination * innorm + (1 - illumination) * denoised,
        }
        if adjusted:
            adj = self.adjust(illumination, self.ratio)
            fusion4 = denoised * adj
            out.update(adjI=adj, fusion4=fusion4, out_adj=illumination * innorm + (1 - illumination) * fusion4)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tile_body(normalise(x, self.statistics_smoother))

    # Tiled inference (vidlight.pipeline.tiling): the min-max normalisation is global.
    tile_multiple = 4  # the decomposition net pools twice, the MSIA branches by 2 and 4
    peak_bytes_per_pixel = PEAK_BYTES_PER_PIXEL

    def tile_prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return normalise(x, self.statistics_smoother), None

    def tile_body(self, innorm: torch.Tensor) -> torch.Tensor:
        stages = self.compose(innorm, adjusted=self.adjustment)
        return stages["out_adj" if self.adjustment else "out"]

    # Strength (vidlight.models.strength): on the estimated illumination, as KinD's
    # (vidlight.models.kind); without --adjustment the output's illumination is I ** 2 + 1 - I.
    def strength_tile_body(self, innorm: torch.Tensor) -> torch.Tensor:
        stages = self.compose(innorm, adjusted=self.adjustment)
        out = stages["out_adj" if self.adjustment else "out"]
        adjusted = stages["adjI"] if self.adjustment else 1.0
        return torch.cat([out, illumination_gain(stages["decomI"], adjusted)], dim=1)


# --- official weights -------------------------------------------------------------------------

_TF_NAMES = {
    "weight": "weights",
    "bias": "biases",
}
_BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def _restoration_names() -> dict[str, str]:
    """``restore.<ours>`` -> ``Denoise_Net/<official>`` for every tensor."""
    names = {}
    for key in RestorationNet().state_dict():
        parts = key.split(".")
        if parts[0] != "msia":
            official = f"{parts[0]}/{_TF_NAMES[parts[1]]}"
        else:
            scope = f"de_conv{int(parts[1]) + 1}"
            module, rest = parts[2], parts[3:]
            if module == "attention":
                official = f"{scope}/conv/kernel"
            elif module == "fuse":
                official = f"{scope}multi_scale_feature/{_TF_NAMES[rest[0]]}"
            elif rest[0] == "bn":
                official = f"{scope}{module}/batch_normalization/{_BN_NAMES[rest[1]]}"
            else:
                official = f"{scope}{module}/{rest[0]}/{_TF_NAMES[rest[1]]}"
        names[f"restore.{key}"] = f"Denoise_Net/{official}"
    return names


def _official_keymap() -> KeyMap:
    prefixes = {}
    for key in DecomNet().state_dict():
        layer, _, tensor = key.rpartition(".")
        prefixes[f"DecomNet/{layer}/{_TF_NAMES[tensor]}"] = f"decom.{key}"
    for key in IlluminationAdjustNet().state_dict():
        layer, _, tensor = key.rpartition(".")  # ours en_conv_N, official conv_N
        prefixes[f"I_enhance_Net/{layer.removeprefix('en_')}/{_TF_NAMES[tensor]}"] = f"adjust.{key}"
    prefixes.update({official: ours for ours, official in _restoration_names().items()})
    return KeyMap(prefixes)


OFFICIAL_KEYMAP = _official_keymap()


@register_model(
    "kind++",
    default_weights="kind++-lol",
    keymap=OFFICIAL_KEYMAP,
    transform=tf_to_torch_layout,
    summary="KinD++ (IJCV 2021): decomposition, MSIA restoration and illumination-adjust nets, official composition",
    options={
        "ratio": "exposure ratio fed to the illumination-adjust net (official evaluate.py: 5.0)",
        "adjustment": "blend the adjusted illumination into the output (official --adjustment; off by default)",
    },
)
def kind_plus(ratio: float = 5.0, adjustment: bool = False) -> KinDPlus:
    return KinDPlus(ratio, adjustment)


# As for KinD: the restoration checkpoint was never committed; the set is on Drive / Baidu only.
register_weights(
    Weights(
        name="kind++-lol",
        model="kind++",
        relpath="kind_plus/checkpoint",
        directory=True,
        sha256=None,
        size_bytes=None,
        license="none stated (the repository has no license)",
        source="https://github.com/zhangyhuaee/KinD_plus",
        num_params=8274508,
        manual=(
            "https://drive.google.com/open?id=1RuW6fgkDEQ6v9GMlcWgtWiGglew6jplO",
            "https://pan.baidu.com/s/1DY49dJSlue1PNWy05nZb5A",
        ),
        note=(
            "the authors' checkpoint/ folder with decom_model/, illu_model/ and restoration_model/ "
            "(TF1; the repository lacks the last one)"
        ),
    )
)
