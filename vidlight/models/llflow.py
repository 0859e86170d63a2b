"""LLFlow (Wang et al., AAAI 2022): the conditional normalising flow as ``test_unpaired.py`` runs it.

Two official configurations: ``llflow`` (``confs/LOL-pc.yml``: nf=64, 24 RRDBs, K=12) and
``llflow-small`` (``confs/LOL_smallNet.yml``: nf=32, 4 RRDBs, K=4). Both have L=3 levels, two
extra actnorm + invertible-1x1 steps per level and ``CondAffineSeparatedAndCond`` couplings.

Inference path (``test_unpaired.py`` + ``LLFlowModel.get_sr(heat=None)``):

1. the 8-bit RGB frame is padded by ``16 - size % 16`` pixels per side (always at least 1,
   a side already a multiple of 16 gets 16), half on top/left, with ``cv2.BORDER_REFLECT``
   (edge pixel repeated);
2. ``cv2.equalizeHist`` on each channel of the padded frame;
3. network input: ``log(clamp(x + 1e-3, min=1e-3))`` of the padded frame ``x`` in [0, 1], then
   the equalised frame / 255 (6 channels, RGB order);
4. encoder ``ConEncoder1``: the colour ratio and its gradient magnitude are concatenated to the
   input, two convolutions, 2x max-pool, RRDB trunk, ``trunk_conv`` residual (``fea_down2``),
   bilinear halvings with ``downconv1`` / ``downconv2`` (``fea_down4``, after the official
   in-place leaky ReLU, and ``fea_down8``); the
   colour map is ``sigmoid(conv1x1(nearest-x2(fea_down2)))``;
5. the conditions of the three flow levels are the level's feature concatenated with the saved
   RRDB block outputs, nearest-resized to the level;
6. the latent is ``squeeze2d(colour_map, 8)`` (``heat`` changes nothing), and the flow runs in
   reverse (H/8 -> H/4 -> H/2 -> H);
7. the output is clamped to [0, 1] and the padding removed.

``forward`` returns that output; :meth:`LLFlow.stages` gives the official intermediates.

Exactness (tests/test_llflow.py): network input, conditions, colour map, latent, raw and final
outputs agree with the official code's arrays (formula weights: no official weights are public
outside Google Drive) within 1e-4.

Weights: the official ``.pth`` state dict (keys ``RRDB.conv_first.weight`` ...,
``flowUpsamplerNet.layers.3.affine.fAffine.0.weight`` ...), with or without ``module.``, or an
``.npz`` with the same keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from vidlight.models.registry import register_model
from vidlight.weights import Weights, register_weights

LEAK = 0.2
MULTIPLE = 16
LEVELS = 3
EXTRA_STEPS = 2
HIDDEN = 64
AFFINE_EPS = 1e-4
LOGSCALE_FACTOR = 3.0

PEAK_BYTES_PER_PIXEL = {"standard": 3900, "small": 2300}  # fp32 inference, measured by tests/test_tiling.py


@dataclass(frozen=True)
class Config:
    """A variant's widths: encoder features ``nf``, RRDB blocks ``nb``, the blocks whose
    features condition the flow, and flow steps ``k`` per level."""

    nf: int
    nb: int
    blocks: tuple[int, ...]
    k: int


CONFIGS = {
    "standard": Config(nf=64, nb=24, blocks=(1, 3, 5, 7), k=12),
    "small": Config(nf=32, nb=4, blocks=(1,), k=4),
}


# --------------------------------------------------------------------------- encoder


class _DenseBlock(nn.Module):
    """ResidualDenseBlock_5C: five 3x3 convolutions with dense connections."""

    conv5: nn.Conv2d  # conv1 .. conv5, named as in the official checkpoints

    def __init__(self, nf: int, gc: int = 32) -> None:
        super().__init__()
        for i in range(1, 6):
            cout = nf if i == 5 else gc
            setattr(self, f"conv{i}", nn.Conv2d(nf + (i - 1) * gc, cout, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i in range(1, 5):
            feats.append(F.leaky_relu(getattr(self, f"conv{i}")(torch.cat(feats, 1)), LEAK))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class _RRDB(nn.Module):
    def __init__(self, nf: int) -> None:
        super().__init__()
        self.RDB1 = _DenseBlock(nf)
        self.RDB2 = _DenseBlock(nf)
        self.RDB3 = _DenseBlock(nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.RDB3(self.RDB2(self.RDB1(x))) * 0.2 + x


def _gradient(x: torch.Tensor) -> torch.Tensor:
    """Official ``gradient``: central differences with zero outside, max of |dx|, |dy|."""
    dx = torch.zeros_like(x)
    dx[:, :, :, 1:-1] = 0.5 * (x[:, :, :, 2:] - x[:, :, :, :-2])
    dx[:, :, :, 0] = 0.5 * x[:, :, :, 1]
    dx[:, :, :, -1] = -0.5 * x[:, :, :, -2]
    # the official code shifts along dim 2 of the tensor and of its transpose
    dy = torch.zeros_like(x)
    dy[:, :, 1:-1] = 0.5 * (x[:, :, 2:] - x[:, :, :-2])
    dy[:, :, 0] = 0.5 * x[:, :, 1]
    dy[:, :, -1] = -0.5 * x[:, :, -2]
    return torch.maximum(dx.abs(), dy.abs())


class ConEncoder(nn.Module):
    """Official ``ConEncoder1`` (names as in the state dict under ``RRDB.``)."""

    def __init__(self, nf: int, nb: int, blocks: tuple[int, ...]) -> None:
        super().__init__()
        self.blocks = blocks
        self.conv_first = nn.Conv2d(12, nf, 3, padding=1)
        self.conv_second = nn.Conv2d(nf, nf, 3, padding=1)
        self.RRDB_trunk = nn.Sequential(*[_RRDB(nf) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.downconv1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.downconv2 = nn.Conv2d(nf, nf, 3, padding=1)
        self.downconv3 = nn.Conv2d(nf, nf, 3, padding=1)  # unused at inference
        self.HRconv = nn.Conv2d(nf, nf, 3, padding=1)  # unused at inference
        self.conv_last = nn.Conv2d(nf, 3, 3, padding=1)  # unused at inference
        self.awb_para = nn.Linear(nf, 3)  # unused at inference
        self.fine_tune_color_map = nn.Sequential(nn.Conv2d(nf, 3, 1), nn.Sigmoid())

    @staticmethod
    def _half(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False, recompute_scale_factor=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raw = x[:, 0:3].exp()
        ratio = raw / (raw.sum(dim=1, keepdim=True) + 1e-4)
        fea = self.conv_first(torch.cat([x, ratio, _gradient(ratio)], dim=1))
        fea = self.conv_second(F.leaky_relu(fea, LEAK))
        head = F.max_pool2d(fea, 2)
        saved = []
        fea = head
        for idx, block in enumerate(self.RRDB_trunk):
            fea = block(fea)
            if idx in self.blocks:
                saved.append(fea)
        down2 = head + self.trunk_conv(fea)
        # the official in-place leaky ReLU also changes fea_down4, the level-2 condition
        down4 = F.leaky_relu(self.downconv1(self._half(down2)), LEAK)
        down8 = self.downconv2(self._half(down4))
        color_map = self.fine_tune_color_map(F.interpolate(down2, scale_factor=2))
        concat = torch.cat(saved, dim=1)
        conds = {}
        for name, feat in (("fea_up2", down2), ("fea_up1", down4), ("fea_up0", down8)):
            conds[name] = torch.cat([feat, F.interpolate(concat, feat.shape[2:])], dim=1)
        return {**conds, "colormap": color_map}


# --------------------------------------------------------------------------- flow


class ActNorm(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.bias) * torch.exp(self.logs)

    def reverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.exp(-self.logs) - self.bias


class _NormConv(nn.Module):
    """Official ``flow.Conv2d``: bias-free 'same' convolution followed by an ActNorm."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cout, cin, kernel, kernel))
        self.actnorm = ActNorm(cout)
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.actnorm(F.conv2d(x, self.weight, padding=self.padding))


class _ZeroConv(nn.Module):
    """Official ``Conv2dZeros``: 3x3 convolution scaled by ``exp(3 * logs)``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.logs = nn.Parameter(torch.zeros(cout, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, padding=1) * torch.exp(self.logs * LOGSCALE_FACTOR)


def _subnet(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        _NormConv(cin, HIDDEN, 3), nn.ReLU(), _NormConv(HIDDEN, HIDDEN, 1), nn.ReLU(), _ZeroConv(HIDDEN, cout)
    )


class CondAffine(nn.Module):
    """Official ``CondAffineSeparatedAndCond`` (reverse direction only)."""

    def __init__(self, channels: int, cond_channels: int) -> None:
        super().__init__()
        self.split = channels // 2
        self.fAffine = _subnet(self.split + cond_channels, 2 * (channels - self.split))
        self.fFeatures = _subnet(cond_channels, 2 * channels)

    @staticmethod
    def _scale_shift(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sigmoid(h[:, 1::2] + 2.0) + AFFINE_EPS, h[:, 0::2]

    def reverse(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        z1, z2 = z[:, : self.split], z[:, self.split :]
        scale, shift = self._scale_shift(self.fAffine(torch.cat([z1, cond], dim=1)))
        z = torch.cat([z1, z2 / scale - shift], dim=1)
        scale, shift = self._scale_shift(self.fFeatures(cond))
        return z / scale - shift


class _InvConv(nn.Module):
    """Holds the invertible 1x1 convolution's matrix (``invconv.weight``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(channels))


class FlowStep(nn.Module):
    """ActNorm, invertible 1x1 convolution and (optionally) the conditional coupling."""

    def __init__(self, channels: int, cond_channels: int | None) -> None:
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = _InvConv(channels)
        if cond_channels is not None:
            self.affine = CondAffine(channels, cond_channels)

    def _inverse(self, z: torch.Tensor) -> torch.Tensor:
        """The 1x1 convolution's inverse as a kernel for ``z``, computed once per weight
        version, dtype and device (not at every call: a matrix inverse and a host sync)."""
        w = self.invconv.weight
        key = (w.data_ptr(), w._version, w.device, z.dtype)
        if getattr(self, "_inverse_key", None) != key:
            inv = torch.inverse(w.detach().double()).float().to(z.dtype)
            self._inverse_kernel, self._inverse_key = inv.view(w.shape[0], w.shape[1], 1, 1), key
        return self._inverse_kernel

    def reverse(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "affine"):
            z = self.affine.reverse(z, cond)
        z = F.conv2d(z, self._inverse(z))
        return self.actnorm.reverse(z)


class _Squeeze(nn.Module):
    def reverse(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return unsqueeze2d(z, 2)


def squeeze2d(x: torch.Tensor, factor: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c, h // factor, factor, w // factor, factor).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * factor * factor, h // factor, w // factor)


def unsqueeze2d(x: torch.Tensor, factor: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c // factor**2, factor, factor, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // factor**2, h * factor, w * factor)


class FlowUpsampler(nn.Module):
    """Official ``FlowUpsamplerNet`` layers (names ``layers.<i>``), reverse pass only."""

    def __init__(self, k: int, cond_channels: int, f_channels: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.level_of: list[int] = []
        channels = 3
        for level in range(1, LEVELS + 1):
            channels *= 4
            self.layers.append(_Squeeze())
            for _ in range(EXTRA_STEPS):
                self.layers.append(FlowStep(channels, None))
            for _ in range(k):
                self.layers.append(FlowStep(channels, cond_channels))
            self.level_of += [level] * (1 + EXTRA_STEPS + k)
        # unused at inference; the official width is (len(blocks) + 1) * 64 whatever nf is
        self.f = nn.Sequential(nn.Conv2d(f_channels, 2 * 3 * 64, 3, padding=1))

    def reverse(self, z: torch.Tensor, conds: Mapping[int, torch.Tensor]) -> torch.Tensor:
        for layer, level in zip(reversed(self.layers), reversed(self.level_of)):
            z = cast(FlowStep | _Squeeze, layer).reverse(z, conds[level])
        return z


# --------------------------------------------------------------------------- model


def _pad_amounts(size: int) -> tuple[int, int]:
    total = MULTIPLE - size % MULTIPLE  # official auto_padding: 16 on an exact multiple
    return total // 2, total - total // 2


def _mirrored(size: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Source indices of ``cv2.copyMakeBorder(BORDER_REFLECT)`` along one axis (edge sample
    repeated: ``cba|abc|cba``), applied again while a pad exceeds the side, as the official
    padding does: the mirror image repeats with a period of twice the side."""
    q = torch.arange(-before, size + after, device=device) % (2 * size)
    return torch.where(q < size, q, 2 * size - 1 - q)


def equalize_hist(images: torch.Tensor) -> torch.Tensor:
    """``cv2.equalizeHist`` of each plane of a uint8 ... x H x W tensor, on its device.

    OpenCV's rule: with ``h`` the histogram and ``i0`` the lowest level present, level ``i``
    maps to ``round(sum(h[i0 + 1 .. i]) * (255 / (H W - h[i0])))`` (float32 product, rounded
    half to even), ``i0`` to 0; a plane of one level keeps it."""
    planes = images.reshape(-1, images.shape[-2] * images.shape[-1])
    rows, total = planes.shape
    offsets = torch.arange(rows, device=images.device).view(-1, 1) * 256
    hist = torch.bincount((planes.long() + offsets).flatten(), minlength=rows * 256).view(rows, 256)
    first = (hist > 0).to(torch.uint8).argmax(dim=1, keepdim=True)  # i0
    at_first = hist.gather(1, first)
    cumulative = hist.cumsum(dim=1)
    above = cumulative - cumulative.gather(1, first)  # sum over i0 + 1 .. i
    scale = torch.tensor(255.0, device=images.device) / (total - at_first).clamp(min=1).float()
    lut = torch.round(above.float() * scale).clamp_(0, 255).to(torch.uint8)
    lut = torch.where(at_first == total, first.to(torch.uint8).expand(-1, 256), lut)
    return lut.gather(1, planes.long()).view(images.shape)


class LLFlow(nn.Module):
    """The official ``LLFlow`` net: ``RRDB`` (conditional encoder) and ``flowUpsamplerNet``."""

    def __init__(self, variant: str = "standard") -> None:
        super().__init__()
        if variant not in CONFIGS:
            raise ValueError(f"variant must be one of {sorted(CONFIGS)}, got {variant!r}")
        cfg = CONFIGS[variant]
        self.variant = variant
        cond_channels = cfg.nf * (len(cfg.blocks) + 1)
        self.RRDB = ConEncoder(cfg.nf, cfg.nb, cfg.blocks)
        self.flowUpsamplerNet = FlowUpsampler(cfg.k, cond_channels, 64 * (len(cfg.blocks) + 1))

    @staticmethod
    def preprocess(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """RGB batch in [0, 1] -> official 6-channel network input on the padded frame, and the
        padding (top, bottom, left, right)."""
        h, w = x.shape[2], x.shape[3]
        top, bottom = _pad_amounts(h)
        left, right = _pad_amounts(w)
        # On the frames' own device: no download and upload of the batch.
        frames = (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
        padded = frames.index_select(2, _mirrored(h, top, bottom, x.device))
        padded = padded.index_select(3, _mirrored(w, left, right, x.device))
        lin = padded.float() / 255.0
        log = torch.log(torch.clamp(lin + 1e-3, min=1e-3))
        netin = torch.cat([log, equalize_hist(padded).float() / 255.0], dim=1)
        return netin.to(x.dtype), (top, bottom, left, right)

    def network(self, netin: torch.Tensor) -> dict[str, torch.Tensor]:
        """Official ``reverse_flow`` on the padded 6-channel input."""
        enc = self.RRDB(netin)
        z = squeeze2d(enc["colormap"], 8)
        conds = {1: enc["fea_up2"], 2: enc["fea_up1"], 3: enc["fea_up0"]}
        netout = self.flowUpsamplerNet.reverse(z, conds)
        return {**enc, "z": z, "netout": netout}

    def stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The official tensors for an RGB batch in [0, 1], N x C x H x W each: ``netin``,
        ``fea_up2`` / ``fea_up1`` / ``fea_up0`` (flow conditions), ``colormap``, ``z``,
        ``netout`` (padded, unclamped) and ``out`` (clamped, padding removed)."""
        netin, (top, bottom, left, right) = self.preprocess(x)
        result = {"netin": netin, **self.network(netin)}
        hp, wp = netin.shape[2], netin.shape[3]
        result["out"] = result["netout"].clamp(0, 1)[:, :, top : hp - bottom, left : wp - right]
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)["out"]

    # Tiled inference (vidlight.pipeline.tiling): padding and histogram equalisation are global,
    # the encoder and the flow local (tiles of the padded input, multiples of 16 as the flow's
    # squeezes need).
    tile_multiple = MULTIPLE
    # fp16 moves 8-bit outputs by up to 6 levels (README "fp16"): fp32 unless asked for.
    fp16_default = False

    @property
    def peak_bytes_per_pixel(self) -> int:
        return PEAK_BYTES_PER_PIXEL[self.variant]

    def tile_prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        return self.preprocess(x)

    def tile_body(self, netin: torch.Tensor) -> torch.Tensor:
        return self.network(netin)["netout"]

    def tile_finish(self, netout: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
        top, bottom, left, right = pads
        hp, wp = netout.shape[2], netout.shape[3]
        return netout.clamp(0, 1)[:, :, top : hp - bottom, left : wp - right]


def official_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the ``module.`` of a ``DataParallel``-wrapped checkpoint."""
    return {k.removeprefix("module."): v for k, v in state.items()}


@register_model(
    "llflow",
    default_weights="llflow-lol",
    transform=official_state,
    summary="LLFlow (AAAI 2022): conditional normalising flow, standard net (LOL-pc)",
)
def llflow() -> LLFlow:
    return LLFlow("standard")


@register_model(
    "llflow-small",
    default_weights="llflow-small-lol",
    transform=official_state,
    summary="LLFlow (AAAI 2022): conditional normalising flow, small net (LOL_smallNet)",
)
def llflow_small() -> LLFlow:
    return LLFlow("small")


# The authors publish their checkpoints only as Google Drive files (README of the repository):
# no file name, size or hash is known, so vidlight cannot fetch or verify them; the error for a
# missing file says which Drive file to fetch and where to put it. Parameter counts are the
# checkpoints' (the official modules unused at inference included: 1,182,086 and 462,214).
for _name, _model, _conf, _drive, _params in (
    ("llflow-lol", "llflow", "LOL-pc", "1t3kASTRXbnEnCZ0EcIvGhMHYkoJ8E2C4", 38859481),
    ("llflow-lolv2", "llflow", "LOLv2-pc", "1n7XwIlNr1lUxgZ9qlmFXCwzMTWSStQIW", 38859481),
    ("llflow-small-lol", "llflow-small", "LOL_smallNet", "1tukKu2KBZ_ohlQiLG4EKnrn1CAt_2F6G", 5429849),
):
    register_weights(
        Weights(
            name=_name,
            model=_model,
            relpath=f"llflow/{_conf}.pth",
            sha256=None,
            size_bytes=None,
            license="CC-BY-NC-SA-4.0 (academic research only)",
            source="https://github.com/wyf0912/LLFlow",
            num_params=_params,
            manual=(f"https://drive.google.com/file/d/{_drive}/view",),
            note=f"official checkpoint of confs/{_conf}.yml, on Google Drive only; save it as {_conf}.pth",
        )
    )
