"""EnlightenGAN (Jiang et al., IEEE TIP 2021): the generator as the official predict path runs it.

The official ``scripts/script.py --predict`` builds ``Unet_resize_conv`` with ``--self_attention
--times_residual --skip 1 --use_norm 1`` (no tanh, max-pooling, BatchNorm in eval mode):

1. the frame ``x`` in [0, 1] is mapped to [-1, 1] (``Normalize(0.5, 0.5)``), and the attention
   map is one minus its luminance: ``A = 1 - (0.299 (r+1) + 0.587 (g+1) + 0.114 (b+1)) / 2``;
2. frames wider than 2200 px are average-pooled by 2 (and the output upsampled back);
3. both are reflection-padded to multiples of 16 (``pad_left = (16 - W % 16) // 2``, the rest
   on the right; the same for top/bottom);
4. a 5-level U-Net on concat(x, A): every 3x3 convolution is followed by a leaky ReLU (0.2)
   and then BatchNorm (in that order), 2x2 max-pools; the attention map, max-pooled to each
   level, multiplies the bottleneck and every skip tensor; the decoder upsamples bilinearly
   by 2 (with ``align_corners=True``, what ``F.upsample`` meant under the pinned torch
   0.3.1), then a 3x3 "deconv" convolution, concatenation with the skip, two convolutions;
5. ``latent = conv10(...) * A`` and ``output = latent + x`` (in [-1, 1], not clamped),
   cropped back to the frame.

``forward`` returns ``(output + 1) / 2`` clamped to [0, 1], the official ``tensor2im``
conversion before its 8-bit truncation; :meth:`EnlightenGAN.stages` gives the official tensors.

Exactness (tests/test_enlightengan.py): the output, latent, attention map and network input
agree with the official code's arrays (formula weights; the official ``200_net_G_A.pth`` is
only on Google Drive) within 1e-4.

Weights: the official ``200_net_G_A.pth`` (a state dict of the ``DataParallel``-wrapped
generator, keys ``module.conv1_1.weight`` ...) or an ``.npz`` with the same keys, with or
without ``module.``. Files saved by torch < 0.4.1 lack ``num_batches_tracked``; it is unused
at inference and filled with zeros.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vidlight.models.registry import register_model
from vidlight.weights import Weights, register_weights

LEAK = 0.2
LUMA = (0.299, 0.587, 0.114)
MULTIPLE = 16
MAX_WIDTH = 2200  # official: wider inputs are average-pooled by 2
WIDTHS = (32, 64, 128, 256, 512)
PEAK_BYTES_PER_PIXEL = 2500  # fp32 inference, measured by tests/test_tiling.py


def _pad_amounts(size: int) -> tuple[int, int]:
    rest = size % MULTIPLE
    if rest == 0:
        return 0, 0
    total = MULTIPLE - rest
    return total // 2, total - total // 2


def _reflect_pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """``nn.ReflectionPad2d``; a side too small for one reflection is reflected repeatedly
    (the official code cannot run such tiny frames at all)."""
    while left or right or top or bottom:
        h, w = x.shape[2], x.shape[3]
        step = (min(left, w - 1), min(right, w - 1), min(top, h - 1), min(bottom, h - 1))
        if not any(step):  # a 1-pixel side: reflection is replication
            return F.pad(x, (left, right, top, bottom), mode="replicate")
        x = F.pad(x, step, mode="reflect")
        left, right, top, bottom = (a - b for a, b in zip((left, right, top, bottom), step))
    return x


class EnlightenGAN(nn.Module):
    """The official ``Unet_resize_conv`` generator (self-attention, times_residual, skip 1).

    Module names follow the official state dict (``conv1_1``, ``bn1_1``, ... ``conv10``).

    Args:
        align_corners: bilinear upsampling convention of the decoder. True (default) is what
            the authors ran (torch 0.3.1); False is what the unedited code gives on torch >= 0.4.
    """

    tile_multiple = MULTIPLE
    peak_bytes_per_pixel = PEAK_BYTES_PER_PIXEL

    def __init__(self, align_corners: bool = True) -> None:
        super().__init__()
        if not isinstance(align_corners, bool):
            raise ValueError(f"align_corners must be True or False, got {align_corners!r}")
        self.align_corners = align_corners
        cin = 4  # RGB + attention map
        for level, width in enumerate(WIDTHS, start=1):
            self._add(level, 1, cin, width)
            self._add(level, 2, width, width)
            cin = width
        for level, width in zip(range(6, 10), reversed(WIDTHS[:-1])):
            setattr(self, f"deconv{level - 1}", nn.Conv2d(2 * width, width, 3, padding=1))
            self._add(level, 1, 2 * width, width)
            if level < 9:
                self._add(level, 2, width, width)
        self.conv9_2 = nn.Conv2d(WIDTHS[0], WIDTHS[0], 3, padding=1)  # no BatchNorm here
        self.conv10 = nn.Conv2d(WIDTHS[0], 3, 1)

    def _add(self, level: int, index: int, cin: int, cout: int) -> None:
        setattr(self, f"conv{level}_{index}", nn.Conv2d(cin, cout, 3, padding=1))
        setattr(self, f"bn{level}_{index}", nn.BatchNorm2d(cout))

    def _block(self, level: int, index: int, x: torch.Tensor) -> torch.Tensor:
        conv = getattr(self, f"conv{level}_{index}")
        bn = getattr(self, f"bn{level}_{index}")
        return bn(F.leaky_relu(conv(x), LEAK))

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=self.align_corners)

    @staticmethod
    def attention(netin: torch.Tensor) -> torch.Tensor:
        """Official ``A_gray`` from the [-1, 1] input: one minus the luminance."""
        r, g, b = netin[:, 0:1] + 1, netin[:, 1:2] + 1, netin[:, 2:3] + 1
        return 1.0 - (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b) / 2.0

    def generator(self, x: torch.Tensor, gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Official ``Unet_resize_conv.forward(input, gray)`` -> ``(output, latent)``."""
        size = x.shape[2], x.shape[3]
        halved = size[1] > MAX_WIDTH
        if halved:
            x = F.avg_pool2d(x, 2)
            gray = F.avg_pool2d(gray, 2)
        output, latent = self._unet(x, gray)
        if halved:
            output = self._full_size(output, size)
        return output, latent

    def _full_size(self, output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The output of a halved frame upsampled back to ``size``."""
        output = self._up(output)
        # an odd size lost a row/column to the pooling: repeat the last (official: smaller)
        dh, dw = size[0] - output.shape[2], size[1] - output.shape[3]
        if dh or dw:
            output = F.pad(output, (0, dw, 0, dh), mode="replicate")
        return output

    def _unet(self, x: torch.Tensor, gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padding, U-Net, attention-weighted residual and crop, at the size given."""
        h, w = x.shape[2], x.shape[3]
        left, right = _pad_amounts(w)
        top, bottom = _pad_amounts(h)
        x = _reflect_pad(x, left, right, top, bottom)
        gray = _reflect_pad(gray, left, right, top, bottom)
        grays = [gray]
        for _ in range(4):
            grays.append(F.max_pool2d(grays[-1], 2))

        feat = torch.cat([x, gray], dim=1)
        skips = []
        for level in range(1, 5):
            feat = self._block(level, 2, self._block(level, 1, feat))
            skips.append(feat)
            feat = F.max_pool2d(feat, 2)
        feat = self._block(5, 1, feat) * grays[4]
        feat = self._block(5, 2, feat)
        for level in range(6, 10):
            skip = skips.pop() * grays[9 - level]
            up = getattr(self, f"deconv{level - 1}")(self._up(feat))
            feat = self._block(level, 1, torch.cat([up, skip], dim=1))
            if level < 9:
                feat = self._block(level, 2, feat)
        feat = F.leaky_relu(self.conv9_2(feat), LEAK)
        latent = self.conv10(feat) * gray
        output = latent + x
        hp, wp = output.shape[2], output.shape[3]
        output = output[:, :, top : hp - bottom, left : wp - right]
        latent = latent[:, :, top : hp - bottom, left : wp - right]
        return output, latent

    def stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The official tensors for an RGB batch in [0, 1], N x C x H x W each: ``netin``
        (``real_A`` in [-1, 1]), ``attn`` (``A_gray``), ``latent`` and ``out`` (``fake_B`` in
        [-1, 1], not clamped)."""
        netin = (x - 0.5) / 0.5
        attn = self.attention(netin)
        out, latent = self.generator(netin, attn)
        return {"netin": netin, "attn": attn, "latent": latent, "out": out}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.stages(x)["out"] + 1) / 2).clamp(0.0, 1.0)

    # Tiled inference (vidlight.pipeline.tiling): the halving of wide frames is global, the
    # U-Net local.
    def tile_prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        netin = (x - 0.5) / 0.5
        size = netin.shape[2], netin.shape[3]
        return (F.avg_pool2d(netin, 2) if size[1] > MAX_WIDTH else netin), size

    def tile_body(self, netin: torch.Tensor) -> torch.Tensor:
        gray = self.attention(netin)
        return self._unet(netin, gray)[0]

    def tile_finish(self, out: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if out.shape[3] != size[1]:
            out = self._full_size(out, size)
        return ((out + 1) / 2).clamp(0.0, 1.0)


def official_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` (the official ``DataParallel`` wrapper) and add the
    ``num_batches_tracked`` counters that checkpoints saved by torch < 0.4.1 lack."""
    out = {k.removeprefix("module."): v for k, v in state.items()}
    for key in list(out):
        if key.endswith(".running_mean"):
            counter = key[: -len("running_mean")] + "num_batches_tracked"
            out.setdefault(counter, torch.zeros((), dtype=torch.long))
    return out


@register_model(
    "enlightengan",
    default_weights="enlightengan",
    transform=official_state,
    summary="EnlightenGAN (TIP 2021): self-attention U-Net generator with attention-weighted residual",
    options={
        "align_corners": "bilinear upsampling convention (True: the authors' torch 0.3.1; "
        "False: the unedited code on torch >= 0.4)"
    },
)
def enlightengan(align_corners: bool = True) -> EnlightenGAN:
    return EnlightenGAN(align_corners)


# The official generator is published only on Google Drive (and a BaiduYun copy posted in the
# repository's issue #28): vidlight cannot fetch or verify it, and says where to get it.
register_weights(
    Weights(
        name="enlightengan",
        model="enlightengan",
        relpath="enlightengan/200_net_G_A.pth",
        sha256=None,
        size_bytes=None,
        license="BSD-style (the repository's License file)",
        source="https://github.com/VITA-Group/EnlightenGAN",
        num_params=8636675,
        manual=(
            "https://drive.google.com/file/d/1AkV-n2MdyfuZTFvcon8Z4leyVb0i7x63/view",
            "the BaiduYun copy linked from https://github.com/VITA-Group/EnlightenGAN/issues/28",
        ),
        note="the official generator 200_net_G_A.pth, on Google Drive only",
    )
)
