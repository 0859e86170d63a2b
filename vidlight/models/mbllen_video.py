"""MBLLEN's video variant (Lv et al., BMVC 2018, section on low-light video): MBLLEN with its 2D
convolutions replaced by 3D ones. No official code or weights exist; this network and its
weights (``mbllen-video-vidlight``) are vidlight's own, trained by ``vidlight train mbllen-video``.

Architecture (a clip is N x 3 x T x H x W, RGB in [0, 1]):

* Feature extraction module (FEM): ``STAGES`` chained 3 x 3 x 3 convolutions, ``FEATURES``
  channels, ReLU.
* One enhancement module (EM) per FEM stage, MBLLEN's conv/deconv encoder-decoder in 3D: a
  3 x 3 x 3 'same' convolution, three 3 x 5 x 5 convolutions that are 'valid' in space (each
  shrinks H and W by 4) and three 3 x 5 x 5 stride-1 transposed convolutions that grow them
  back, all ReLU. Output: 3 channels, the input's size.
* Fusion: a 1 x 1 x 1 convolution of the concatenated EM outputs, ReLU (as MBLLEN: the raw
  output is >= 0 and not capped at 1; quantisation clips it).

Every temporal kernel is 3 with replicate ('edge') padding of one frame on each side, so the
output has the input's T and clip borders see copies of the end frames rather than black ones.
Spatially the EM keeps MBLLEN's valid conv / transposed conv pairs (the map shrinks by 12 and
grows back by 12, so any H, W >= 13 gives the input's size); smaller frames are edge-padded to
13 and cropped, as :mod:`vidlight.models.mbllen` does.

What is reduced from the image MBLLEN, and why: MBLLEN has 10 stages, FEM width 32 and EM widths
8 / 16 / 32. With every kernel three frames deep a 3D network costs about 3x the 2D one per
frame, and it had to train on a 2-core CPU in ~45 minutes; vidlight uses ``STAGES = 3``,
``FEATURES = 16`` and EM widths ``EM_WIDTHS = (8, 16, 16)`` (the same three down / three up
layers; the innermost width halved). Measured on this 2-core CPU, one thread, 2 clips of
6 x 64 x 64 per step: 1.08 s per training step, against 1.74 s with MBLLEN's EM widths
(8, 16, 32) and 1.64 s with four stages; (8, 8, 16) was no faster than (8, 16, 16) (8-channel
3D convolutions use the CPU's vector units poorly). That is 218,391 learnable parameters (an
889 kB fp32 state dict; the image MBLLEN has 450,171).

Contract: ``forward(x)`` takes an N x 3 x H x W batch of *consecutive* frames and treats it as
one clip (T = N), as the pipeline hands over batches of consecutive frames; the result for a
frame therefore depends on its neighbours in the batch. :meth:`MBLLENVideo.forward_clip` takes
N x 3 x T x H x W clips. For streaming with bounded latency and overlapping windows, feed frames
one at a time to :class:`ClipWindow`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vidlight.models.mbllen import MIN_SIDE, fuse_branches
from vidlight.models.registry import register_model
from vidlight.weights import Weights, register_weights

STAGES = 3  # FEM stages = EM branches (MBLLEN: 10)
FEATURES = 16  # FEM width (MBLLEN: 32)
EM_WIDTHS = (8, 16, 16)  # EM encoder widths (MBLLEN: 8, 16, 32)
EM_KERNEL = 5  # spatial kernel of the EM's valid convs / transposed convs, as MBLLEN
TEMPORAL_KERNEL = 3


def _pad_time(x: torch.Tensor) -> torch.Tensor:
    """Replicate the first and last frame of an N x C x T x H x W tensor once each."""
    return torch.cat((x[:, :, :1], x, x[:, :, -1:]), 2)


class _TimeSameConv3d(nn.Conv3d):
    """3D convolution, temporal kernel 3 with edge padding (output T = input T); spatially
    'same' (``spatial_padding = k // 2``) or 'valid' (0)."""

    def __init__(self, cin: int, cout: int, spatial: int, *, same: bool) -> None:
        pad = spatial // 2 if same else 0
        super().__init__(cin, cout, (TEMPORAL_KERNEL, spatial, spatial), padding=(0, pad, pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_pad_time(x))


class _TimeSameConvTranspose3d(nn.ConvTranspose3d):
    """Stride-1 3D transposed convolution, spatially 'valid' (grows H, W by k - 1), temporal
    kernel 3 with edge padding: the edge-padded input (T + 2) is transposed-convolved and the
    two outermost output frames at each end are cropped (``padding=(2, 0, 0)``), so every
    output frame gets all three temporal taps and T is kept."""

    def __init__(self, cin: int, cout: int, spatial: int) -> None:
        super().__init__(cin, cout, (TEMPORAL_KERNEL, spatial, spatial), padding=(2, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(_pad_time(x))


class EnhancementModule3d(nn.Module):
    """One EM branch in 3D: 3x3x3 'same' conv, three 3x5x5 spatially-valid convs, three 3x5x5
    spatially-valid transposed convs (all ReLU). Output: 3 channels, the input's size."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int] = EM_WIDTHS, kernel: int = EM_KERNEL) -> None:
        super().__init__()
        a, b, c = widths
        self.conv1 = _TimeSameConv3d(in_channels, a, 3, same=True)
        self.conv2 = _TimeSameConv3d(a, a, kernel, same=False)
        self.conv3 = _TimeSameConv3d(a, b, kernel, same=False)
        self.conv4 = _TimeSameConv3d(b, c, kernel, same=False)
        self.deconv1 = _TimeSameConvTranspose3d(c, b, kernel)
        self.deconv2 = _TimeSameConvTranspose3d(b, a, kernel)
        self.deconv3 = _TimeSameConvTranspose3d(a, 3, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4, self.deconv1, self.deconv2, self.deconv3):
            x = torch.relu(layer(x))
        return x


class MBLLENVideo(nn.Module):
    """MBLLEN with 3D convolutions (see the module docstring for the layout and the contract).

    Args:
        stages: FEM stages / EM branches.
        features: FEM width.
        em_widths: the EM's three encoder widths.

    The defaults are the shipped network's; other values are for experiments and tests.

    In vidlight's pipeline a batch of ``clip_length - clip_context`` new frames runs as one
    clip behind the last ``clip_context`` frames of the previous batch (FrameEnhancer), so the
    clip window slides with no seam and no look-ahead; :class:`ClipWindow` is the offline
    alternative that also blends across window overlaps, at up to ``clip_length - 1``
    frames of latency.
    """

    clip_length = 8
    clip_context = 2
    # fp32 activations at the peak per input pixel of each frame (measured 2430 by
    # tests/test_tiling.py): --tile auto tiles a clip where memory is short.
    peak_bytes_per_pixel = 3600

    def __init__(
        self, stages: int = STAGES, features: int = FEATURES, em_widths: tuple[int, int, int] = EM_WIDTHS
    ) -> None:
        super().__init__()
        self.features = nn.ModuleList(
            _TimeSameConv3d(3 if k == 0 else features, features, 3, same=True) for k in range(stages)
        )
        narrow, middle, wide = em_widths  # options from a TOML file arrive as lists
        self.enhance = nn.ModuleList(EnhancementModule3d(features, (narrow, middle, wide)) for _ in range(stages))
        self.fusion = nn.Conv3d(3 * stages, 3, 1)

    def forward_clip(self, x: torch.Tensor) -> torch.Tensor:
        """Enhance N x 3 x T x H x W clips (any T >= 1, any H, W >= 1); raw output, >= 0."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"forward_clip expects N x 3 x T x H x W clips, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        pad_h, pad_w = max(0, MIN_SIDE - h), max(0, MIN_SIDE - w)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h, 0, 0), mode="replicate")
        out = fuse_branches(x, self.features, self.enhance, self.fusion)
        return out[..., :h, :w] if (pad_h or pad_w) else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Enhance an N x 3 x H x W batch of consecutive frames as one clip (T = N)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"forward expects N x 3 x H x W consecutive frames, got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            return x.clone()
        clip = x.permute(1, 0, 2, 3).unsqueeze(0)
        return self.forward_clip(clip)[0].permute(1, 0, 2, 3).contiguous()


# --- streaming -----------------------------------------------------------------------------


def blend_weights(overlap: int) -> torch.Tensor:
    """Weights of the *newer* window on the ``overlap`` frames two windows share: linear,
    ``(k + 1) / (overlap + 1)`` for k = 0 .. overlap - 1 (the older window gets 1 minus it)."""
    return torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)


class ClipWindow:
    """Runs a clip model over a frame stream in overlapping windows, one frame in at a time.

    Windows hold ``clip_length`` frames and consecutive windows share ``overlap`` frames, so a
    new window starts every ``clip_length - overlap`` frames. A shared frame's result is the
    linear blend of its two windows' results (:func:`blend_weights`: the newer window's weight
    grows across the overlap, the older one's falls). Frames come out in input order, each with
    its pts, once no later window can change them.

    Latency: :meth:`push` runs the model when a window is full and then returns that window's
    frames except the last ``overlap`` (they wait for the next window), so a frame is returned
    at most ``clip_length - 1`` pushes after its own, and at most ``clip_length`` frames are
    held. :meth:`flush` (end of stream) and :meth:`reset` (scene cut, size change) run the
    pending frames as a last window, shorter than ``clip_length`` if that is all there is.

    Args:
        model: called as ``model(frames)`` with a T x 3 x H x W tensor of consecutive frames
            (an :class:`MBLLENVideo`, or any model with that contract); returns T x 3 x H x W.
        clip_length: frames per window (>= 1).
        overlap: frames shared by consecutive windows, 0 .. ``clip_length // 2`` (so that no
            frame is in more than two windows).

    Frames must all have one size between resets; call :meth:`reset` at a scene cut or a
    size change (it returns what was pending). Runs under ``torch.no_grad``.
    """

    def __init__(
        self, model: Callable[[torch.Tensor], torch.Tensor], *, clip_length: int = 8, overlap: int = 2
    ) -> None:
        if not isinstance(clip_length, int) or clip_length < 1:
            raise ValueError(f"clip_length must be an integer >= 1, got {clip_length!r}")
        if not isinstance(overlap, int) or not 0 <= overlap <= clip_length // 2:
            raise ValueError(
                f"overlap must be an integer in [0, clip_length // 2] = [0, {clip_length // 2}], got {overlap!r}"
            )
        self.model = model
        self.clip_length = clip_length
        self.overlap = overlap
        self._weights = blend_weights(overlap)
        self._frames: list[torch.Tensor] = []  # inputs of the window being filled
        self._pts: list[object] = []
        self._carry: torch.Tensor | None = None  # previous window's outputs on the shared frames

    @property
    def pending(self) -> int:
        """Frames pushed but not yet returned."""
        return len(self._frames)

    def push(self, frame: torch.Tensor, pts: object) -> list[tuple[object, torch.Tensor]]:
        """Add one 3 x H x W frame; returns the (pts, enhanced 3 x H x W) pairs now final."""
        if frame.ndim != 3 or frame.shape[0] != 3:
            raise ValueError(f"push expects a 3 x H x W frame, got shape {tuple(frame.shape)}")
        if self._frames and frame.shape != self._frames[0].shape:
            raise ValueError(
                f"frame size changed from {tuple(self._frames[0].shape)} to {tuple(frame.shape)}: call reset() first"
            )
        self._frames.append(frame)
        self._pts.append(pts)
        if len(self._frames) < self.clip_length:
            return []
        return self._run_window(final=False)

    def flush(self) -> list[tuple[object, torch.Tensor]]:
        """Run the pending frames as a last (possibly short) window and return all of them.

        When the only pending frames are the previous window's overlap (nothing was pushed
        since it ran), they are returned as that window computed them: a window of nothing
        but already-enhanced frames would add no information."""
        if not self._frames:
            return []
        if self._carry is not None and len(self._frames) == self._carry.shape[0]:
            out = list(zip(self._pts, self._carry))
            self._carry, self._frames, self._pts = None, [], []
            return out
        return self._run_window(final=True)

    def reset(self) -> list[tuple[object, torch.Tensor]]:
        """End the current run (flush it) and start afresh: the next frame opens a new window
        with nothing blended into it. Returns the flushed frames."""
        out = self.flush()
        self._frames, self._pts, self._carry = [], [], None
        return out

    @torch.no_grad()
    def _run_window(self, *, final: bool) -> list[tuple[object, torch.Tensor]]:
        result = self.model(torch.stack(self._frames))
        if self._carry is not None:
            shared = self._carry.shape[0]  # == overlap unless a window was short (final only)
            w = self._weights[:shared].to(result).view(-1, 1, 1, 1)
            result = result.clone()
            result[:shared] = (1 - w) * self._carry + w * result[:shared]
        keep = 0 if final else self.overlap
        ready = len(self._frames) - keep
        out = list(zip(self._pts[:ready], result[:ready]))
        if keep:
            self._carry = result[ready:]
            self._frames, self._pts = self._frames[ready:], self._pts[ready:]
        else:
            self._carry, self._frames, self._pts = None, [], []
        return out


@register_model(
    "mbllen-video",
    default_weights="mbllen-video-vidlight",
    summary="MBLLEN video variant (3D convolutions), vidlight's own weights; a batch is one clip",
)
def mbllen_video() -> MBLLENVideo:
    return MBLLENVideo()


register_weights(
    Weights(
        name="mbllen-video-vidlight",
        model="mbllen-video",
        relpath="mbllen_video/mbllen_video.pt",
        sha256="1357b986da2efba29cca2a656489c8c2f4f38d4378a5a646a19f1f0b3ce34edc",
        size_bytes=888997,
        license="MIT (trained by vidlight)",
        source="OMP_NUM_THREADS=1 vidlight train mbllen-video --data ../shared/data/lol_train485 "
        "--out vidlight/assets/mbllen_video.pt --iterations 1800 --seed 0 --threads 1",
        num_params=218391,
        # heldout_synthetic_clips: 20 clips (128 x 128, 8 frames; video_data.heldout_clips, seed 2018),
        # one from each of the first 20 of the 49 held-out LOL training images; 8-bit, mean over frames.
        # The dark input scores 8.58 dB / 0.211 there. lol_eval15: each image as a one-frame clip, rounded.
        metrics={
            "heldout_synthetic_clips": {"psnr": 20.627, "ssim": 0.8254},
            "lol_eval15": {"psnr": 15.436, "ssim": 0.6813},
        },
        note="trained by this project on synthetic dark clips (camera motion over the LOL training split's "
        "normal-light images, gamma darkening, Poisson noise); no official video weights exist",
        bundled=True,
    )
)
