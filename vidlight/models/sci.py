"""SCI: Self-Calibrated Illumination (Ma et al., CVPR 2022).

At inference SCI is a single tiny illumination estimator: three 3x3 convolutions
(the self-calibration module and the extra stages exist only during training).
The enhanced image is the input divided by the estimated illumination.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidlight.models.registry import KeyMap, register_model
from vidlight.models.strength import per_frame
from vidlight.weights import Weights, register_weights

_BAND_PIXELS = 250_000  # at most this many pixels per band of the CPU convolutions: they stay in the cache


class _ResidualConvBN(nn.Sequential):
    """conv3x3 -> BatchNorm -> ReLU, used as ``x + block(x)``."""

    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The conv's weight and bias with the BatchNorm's running statistics folded in."""
        conv, bn = self[0], self[1]
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        assert conv.bias is not None and bn.running_mean is not None and bn.running_var is not None
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return conv.weight * scale.view(-1, 1, 1, 1), (conv.bias - bn.running_mean) * scale + bn.bias


class IlluminationEstimator(nn.Module):
    """SCI's weight-shared illumination learning block (the official ``EnhanceNetwork``).

    Args:
        layers: number of residual conv-BN-ReLU applications. The official code
            appends the *same* block ``layers`` times, so the weights are shared.
        channels: feature width (3 in every released checkpoint).
    """

    def __init__(self, layers: int = 1, channels: int = 3) -> None:
        super().__init__()
        self.layers = layers
        self.in_conv = nn.Conv2d(3, channels, 3, padding=1)
        self.block = _ResidualConvBN(channels)
        self.out_conv = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and not torch.is_grad_enabled():
            return self._forward_inference(x)
        feat = torch.relu(self.in_conv(x))
        for _ in range(self.layers):
            feat = feat + self.block(feat)
        return torch.clamp(torch.sigmoid(self.out_conv(feat)) + x, 1e-4, 1.0)

    def _forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        """The same computation with BatchNorm folded into its conv and in-place activations:
        about 1.5x faster on a CPU, within 1e-6 of :meth:`forward`'s training-mode path."""
        weight, bias = self.block.folded()
        compiled = x.device.type == "cpu" and x.dtype == torch.float32 and x.numel() > 0
        if compiled and self.in_conv.out_channels == 3:  # the kernel is written for 3 features
            return self._forward_bands(x, weight, bias)
        feat = F.conv2d(x, self.in_conv.weight, self.in_conv.bias, padding=1).relu_()
        for _ in range(self.layers):
            feat = feat.add_(F.conv2d(feat, weight, bias, padding=1).relu_())
        return F.conv2d(feat, self.out_conv.weight, self.out_conv.bias, padding=1).sigmoid_().add_(x).clamp_(1e-4, 1.0)

    def _forward_bands(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """:meth:`_forward_inference` on a CPU, in bands of rows: the whole network of a band runs
        in one compiled call (:mod:`vidlight.models.sci_cpu`) on buffers that stay in the cache
        (on one core, 16 ms per 720p frame against 25 for OpenCV's 2-D filters on planes and 28
        for oneDNN's convolutions). Each band carries the rows of context its output needs, so
        the result does not depend on the banding; the bands run on torch's number of threads.
        Within 1e-6 of the network in torch."""
        from vidlight.models.sci_cpu import illumination  # Numba compiles on first use

        params = self.kernel_params(weight, bias)
        n, _, h, w = x.shape
        out = torch.empty(x.shape, dtype=x.dtype, memory_format=torch.channels_last)
        bands = -(-h * w // _BAND_PIXELS)
        rows = -(-h // bands)

        def band(job: tuple[int, int]) -> None:
            i, y0 = job
            frame = x[i].permute(1, 2, 0).numpy()
            y1 = min(h, y0 + rows)
            illumination(frame, out[i].permute(1, 2, 0).numpy()[y0:y1], y0, y1, self.layers, params)

        jobs = [(i, y0) for i in range(n) for y0 in range(0, h, rows)]
        threads = min(torch.get_num_threads(), len(jobs))
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(band, jobs))
        else:
            for job in jobs:
                band(job)
        return out

    def kernel_params(self, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> list[np.ndarray]:
        """The compiled kernel's parameters (:func:`vidlight.models.sci_cpu.illumination`); the
        residual block's with its BatchNorm folded in, unless given."""
        if weight is None or bias is None:
            weight, bias = self.block.folded()
        convs = (self.in_conv.weight, self.in_conv.bias, weight, bias, self.out_conv.weight, self.out_conv.bias)
        return [_numpy(t) for t in convs]


def _power(illumination: torch.Tensor, s: float, out: torch.Tensor) -> None:
    """``out = illumination ** s`` for one 3 x H x W frame, as ``exp(s log L)`` in fp32: a third
    of torch.pow's time for a float exponent (SIMD exp and log; pow takes a scalar path), within
    a few ulps of it (in fp16 the log's rounding would cost about a level). A channels-last fp32
    frame on a CPU takes OpenCV's exp and log, a quarter of torch's time (within 3e-7 of it)."""
    src, dst = illumination.permute(1, 2, 0), out.permute(1, 2, 0)
    if src.device.type == "cpu" and src.dtype == torch.float32 and src.is_contiguous() and dst.is_contiguous():
        d = dst.numpy()
        cv2.log(src.numpy(), dst=d)
        np.multiply(d, np.float32(s), out=d)
        cv2.exp(d, dst=d)
    elif illumination.dtype == torch.float32:
        torch.log(illumination, out=out).mul_(s).exp_()
    else:
        out.copy_(illumination.float().log_().mul_(s).exp_())


def _numpy(t: torch.Tensor | None) -> np.ndarray:
    assert t is not None, "the convolutions have a bias"
    return np.ascontiguousarray(t.detach().numpy(), dtype=np.float32)


class CalibrationNet(nn.Module):
    """SCI's self-calibration module (training only; the official ``CalibrateNetwork``)."""

    def __init__(self, layers: int = 3, channels: int = 16) -> None:
        super().__init__()
        self.layers = layers
        self.in_conv = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.out_conv = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, reflectance: torch.Tensor) -> torch.Tensor:
        feat = self.in_conv(reflectance)
        for _ in range(self.layers):
            feat = feat + self.block(feat)
        return reflectance - torch.sigmoid(self.out_conv(feat))


class SCI(nn.Module):
    """SCI inference network (the official ``Finetunemodel``).

    ``forward(x)`` returns ``clamp(x / illumination, 0, 1)``; the illumination is
    available through :meth:`estimate_illumination` and can be applied separately
    with :meth:`apply_illumination` (used by temporal smoothing).
    """

    def __init__(self) -> None:
        super().__init__()
        self.illumination = IlluminationEstimator()

    @property
    def receptive_halo(self) -> int:
        """Rows of context each output row needs: one per 3x3 convolution (3 in every released
        checkpoint: the block is applied once)."""
        return 2 + self.illumination.layers

    def estimate_illumination(self, x: torch.Tensor) -> torch.Tensor:
        return self.illumination(x)

    @staticmethod
    def apply_illumination(x: torch.Tensor, illumination: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return torch.clamp(x / illumination, 0.0, 1.0)
        return torch.div(x, illumination).clamp_(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_illumination(x, self.estimate_illumination(x))

    # Strength (vidlight.models.strength): on the illumination. ``x / L ** s``; L lies in
    # [1e-4, 1], so a lower strength never brightens more, and s = 0 divides by 1.
    def strength_terms(self, x: torch.Tensor) -> torch.Tensor:
        return self.estimate_illumination(x)

    def apply_strength(self, x: torch.Tensor, illumination: torch.Tensor, strength) -> torch.Tensor:
        s = per_frame(strength, x).flatten().tolist()
        if all(v == 1.0 for v in s):
            return self.apply_illumination(x, illumination)
        # One scalar exponent per frame; frames at 1 take L itself, so they keep the official
        # division bit for bit.
        powered = torch.empty_like(illumination)
        for i, v in enumerate(s):
            if v == 1.0:
                powered[i].copy_(illumination[i])
            else:
                _power(illumination[i], v, powered[i])
        return self.apply_illumination(x, powered)

    def strip_kernel(self) -> Callable[[np.ndarray, int, int, float, np.ndarray], None] | None:
        """The pipeline's CPU strips in one compiled pass, for the weights as they are now:
        ``kernel(frame, y0, y1, strength, out)`` writes rows ``y0..y1`` of the output at
        ``strength`` for one H x W x 3 uint8/uint16 frame, rounded into ``out`` ((y1 - y0) x W x
        3, uint8 or uint16, C-contiguous), with the levels of :meth:`apply_strength` on the
        forward's float frames, quantised (:func:`vidlight.models.sci_cpu.enhance_rows`). None
        where that kernel does not apply: an estimator of another feature width than 3, or
        one being trained."""
        estimator = self.illumination
        if estimator.training or estimator.in_conv.out_channels != 3 or estimator.in_conv.weight.dtype != torch.float32:
            return None
        from vidlight.models.sci_cpu import enhance_rows  # Numba compiles on first use

        with torch.no_grad():
            params = estimator.kernel_params()
        layers = estimator.layers

        def kernel(frame: np.ndarray, y0: int, y1: int, strength: float, out: np.ndarray) -> None:
            enhance_rows(frame, out, y0, y1, layers, params, float(strength))

        return kernel

    def strength_renders(self, x: torch.Tensor, illumination: torch.Tensor, grid) -> torch.Tensor:
        """The output at every strength of ``grid`` (G x N x 3 x H x W, fp32), with the
        illumination's log taken once for all of them."""
        detached = not torch.is_grad_enabled() or not (x.requires_grad or illumination.requires_grad)
        if detached and x.device.type == "cpu" and x.dtype == illumination.dtype == torch.float32 and x.numel():
            return _renders_cpu(x, illumination, grid)
        s = torch.tensor(list(grid), dtype=torch.float32, device=x.device).view(-1, 1, 1, 1, 1)
        powered = torch.log(illumination.float()).unsqueeze(0).mul(s).exp_()
        at_one = (s.flatten() == 1.0).nonzero().flatten()
        powered[at_one] = illumination.float()  # as apply_strength: L itself at 1
        return torch.div(x.float().unsqueeze(0), powered).clamp_(0.0, 1.0)


def _renders_cpu(x: torch.Tensor, illumination: torch.Tensor, grid) -> torch.Tensor:
    """:meth:`SCI.strength_renders` for fp32 on a CPU, as :func:`_power` computes the power:
    OpenCV's log and exp, here on channels-last arrays (a preview's tensors are; torch's
    broadcasting over mixed layouts and its exp take five times as long)."""
    s = np.asarray(list(grid), np.float32).reshape(-1, 1, 1, 1, 1)
    frames = x.permute(0, 2, 3, 1).contiguous().numpy()  # N x h x w x 3: views when channels-last
    lit = illumination.permute(0, 2, 3, 1).contiguous().numpy()
    powered = np.multiply(cv2.log(lit.reshape(len(lit), -1)).reshape(lit.shape)[None], s)  # G x N x h x w x 3
    rows = powered.reshape(-1, powered.shape[-2] * 3)
    cv2.exp(rows, dst=rows)
    powered[s.flatten() == 1.0] = lit  # as apply_strength: L itself at 1
    np.divide(frames[None], powered, out=powered)
    np.clip(powered, 0.0, 1.0, out=powered)
    return torch.from_numpy(powered).permute(0, 1, 4, 2, 3)


# Official `enhance.*` names -> ours. The official state dict stores the shared block
# twice (`conv.*` and `blocks.0.*`, identical tensors); we read `conv.*`.
OFFICIAL_KEYMAP = KeyMap(
    {
        "enhance.in_conv.0.": "illumination.in_conv.",
        "enhance.conv.0.": "illumination.block.0.",
        "enhance.conv.1.": "illumination.block.1.",
        "enhance.out_conv.0.": "illumination.out_conv.",
    }
)


@register_model(
    "sci",
    default_weights="sci-vidlight",
    keymap=OFFICIAL_KEYMAP,
    summary="SCI (CVPR 2022): 3-conv illumination estimator, fastest method",
)
def sci() -> SCI:
    return SCI()


_SCI_COMMIT = "9d28a3f1237df248bb765e7fee16f7c4ac7dbeee"
for _level, _sha, _psnr, _ssim, _trained_on in (
    ("easy", "b17326a26a93bf187ecbab217f9d3c57467a8b56020d4d9ff600ba257bbffb36", 9.580, 0.3668, "MIT-Adobe FiveK"),
    ("medium", "4ff1e7e66e8f18114f790e5085ca4c936f0858e329e7ad1cb65b8aa09a9c6916", 14.784, 0.5254, "LOL + LSRW"),
    ("difficult", "657fa1f280cae1035df0d5cbe628e91f2d0f28660df608a3fa3f7e9a71da5a13", 13.806, 0.5283, "DARK FACE"),
):
    register_weights(
        Weights(
            name=f"sci-{_level}",
            model="sci",
            relpath=f"sci/{_level}.pt",
            url=f"https://raw.githubusercontent.com/vis-opt-group/SCI/{_SCI_COMMIT}/weights/{_level}.pt",
            sha256=_sha,
            size_bytes=43967,
            license="MIT",
            source="https://github.com/vis-opt-group/SCI",
            num_params=258,
            metrics={"lol_eval15": {"psnr": _psnr, "ssim": _ssim}},
            note=f"official checkpoint, trained mainly on {_trained_on}",
        )
    )

register_weights(
    Weights(
        name="sci-vidlight",
        model="sci",
        relpath="sci/sci_vidlight.pt",
        sha256="35eae93332774caf4047b956343c243811a3b38a5f8eb2ed4f69ff8a8995e841",
        size_bytes=5719,
        license="MIT (trained by vidlight)",
        source="vidlight train sci (command in the README)",
        num_params=258,
        metrics={"lol_eval15": {"psnr": 15.122, "ssim": 0.5447}},
        note="trained by this project on the LOL training split; scores quantised by rounding",
        bundled=True,
    )
)
