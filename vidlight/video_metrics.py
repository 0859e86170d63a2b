"""Temporal metrics for video: mean luma, flicker index and warping error, one frame at a time.

Kept apart from :mod:`vidlight.metrics` (torch, whole images from LOL) because these stream:
a video is never held in memory, only the previous frame.

* Mean luma: BT.601 luma ``Y = 0.299 R + 0.587 G + 0.114 B`` of the decoded RGB, on the 8-bit
  scale 0..255 (the weights OpenCV's RGB -> gray conversion uses).
* Flicker index: ``mean_t |L_t - L_{t-1}| / mean_t L_t``, ``L_t`` the mean luma of frame t.
* Warping error (Lai et al., "Learning Blind Video Temporal Consistency", ECCV 2018):
  ``E_t = sum_x M_t(x) ||O_t(x) - O_{t-1}(x + F_t(x))||^2 / sum_x M_t(x)``, RGB in [0, 1], the
  squared norm summed over the three channels, averaged over the pairs. ``F_t`` is the optical
  flow from input frame t to input frame t-1, ``M_t`` its visibility mask (see
  :func:`visibility_mask`). The flow always comes from the *input*, so an enhanced video is
  judged by how it follows the motion of its source.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # BT.601
MAX_LINES = 540  # frames taller than this are measured at an integer downscale (see auto_downscale)


def _unit_scale(frame: np.ndarray) -> float:
    """The factor that takes ``frame``'s samples to [0, 1]."""
    if frame.dtype == np.uint8:
        return 1 / 255
    if frame.dtype == np.uint16:
        return 1 / 65535
    if np.issubdtype(frame.dtype, np.floating):
        return 1.0
    raise ValueError(f"Invalid frame dtype ({frame.dtype}). Supported values are uint8, uint16, float in [0, 1].")


def _check_rgb(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"Invalid frame shape {frame.shape}: expected H x W x 3 RGB.")
    return frame


def mean_luma(frame: np.ndarray) -> float:
    """Mean BT.601 luma of an H x W x 3 RGB frame, on the 0..255 scale.

    uint8 frames are taken as they are; uint16 frames (PyAV's >8-bit output) and float frames
    in [0, 1] are rescaled to 0..255 first. Luma is linear in R, G, B, so this is the weighted
    sum of the three channel means.
    """
    frame = _check_rgb(frame)
    scale = _unit_scale(frame) * 255
    channel_means = cv2.mean(np.ascontiguousarray(frame))[:3]  # float64 sums, SIMD
    return float(np.dot(LUMA_WEIGHTS, channel_means) * scale)


def flicker_index(lumas: Sequence[float]) -> float:
    """``mean_t |L_t - L_{t-1}| / mean_t L_t`` over the per-frame mean lumas ``L``.

    0 means no frame-to-frame change of brightness; 0.01 means the mean luma moves by 1 % of
    its average level per frame. Scale-free, so 8-bit and 10-bit figures compare. Returns 0.0
    for fewer than two frames, and for an all-black clip (no change, no level).
    """
    values = np.asarray(lumas, dtype=np.float64)
    if values.size < 2:
        return 0.0
    level = values.mean()
    if level <= 0:
        return 0.0
    return float(np.abs(np.diff(values)).mean() / level)


def auto_downscale(height: int) -> int:
    """The smallest integer factor that brings ``height`` to at most 540 lines (1080p -> 2)."""
    return max(1, math.ceil(height / MAX_LINES))


def _grid_size(height: int, width: int, downscale: int) -> tuple[int, int]:
    return max(1, width // downscale), max(1, height // downscale)


def flow_luma(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The picture the optical flow sees: luma, area-downscaled to ``size`` (w, h), and stretched
    so its 1st..99th percentiles span 0..255 (uint8).

    Dark video has its detail in a few dozen levels near black, where flow methods tuned on
    well-exposed images see almost nothing. Luma is computed in float from the three channels
    (more distinct levels than any one channel) before the stretch; stretching every frame on
    its own also cancels the global brightness changes the metric is meant to catch in the
    output, so they cannot mislead the flow.
    """
    frame = _check_rgb(frame)
    luma = cv2.cvtColor(frame.astype(np.float32), cv2.COLOR_RGB2GRAY)
    if (luma.shape[1], luma.shape[0]) != size:
        luma = cv2.resize(luma, size, interpolation=cv2.INTER_AREA)
    step = max(1, int(math.sqrt(luma.size / 65536)))  # percentiles from ~64k samples are plenty
    lo, hi = np.percentile(luma[::step, ::step], (1, 99))
    gain = 255.0 / (hi - lo) if hi - lo > 1e-6 else 1.0
    return np.clip((luma - lo) * gain + 0.5, 0, 255).astype(np.uint8)


def visibility_mask(flow: np.ndarray, flow_back: np.ndarray) -> np.ndarray:
    """Where a pixel of frame t is seen in frame t-1 (bool, H x W), after Lai et al. / Ruder et al.

    ``flow`` (H x W x 2, pixels) maps frame t to frame t-1 and ``flow_back`` frame t-1 to frame t.
    A pixel x is visible when all three hold:

    * forward-backward consistency: ``|w + b|^2 < 0.01 (|w|^2 + |b|^2) + 0.5``, with
      ``w = flow(x)`` and ``b = flow_back(x + w)`` (bilinear);
    * not on a motion boundary: ``|grad u|^2 + |grad v|^2 <= 0.01 |w|^2 + 0.002`` (forward
      differences, as Lai et al.'s ``compute_flow_gradients``);
    * ``x + w`` inside frame t-1 (added here: a pixel that came in over the edge has no
      counterpart; Lai's warping layer would compare it with a clamped edge pixel).
    """
    height, width = flow.shape[:2]
    map_x, map_y = _sample_maps(flow)
    back = cv2.remap(flow_back.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    flow = flow.astype(np.float32)

    def sq(f: np.ndarray) -> np.ndarray:
        return f[..., 0] ** 2 + f[..., 1] ** 2

    consistent = sq(flow + back) < 0.01 * (sq(flow) + sq(back)) + 0.5
    grad = np.zeros((height, width), np.float32)
    for c in range(2):
        du = np.zeros((height, width), np.float32)
        dv = np.zeros((height, width), np.float32)
        du[:, :-1] = flow[:, :-1, c] - flow[:, 1:, c]
        dv[:-1, :] = flow[:-1, :, c] - flow[1:, :, c]
        grad += du**2 + dv**2
    smooth = grad <= 0.01 * sq(flow) + 0.002
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return consistent & smooth & inside


def _sample_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    height, width = flow.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs + flow[..., 0].astype(np.float32), ys + flow[..., 1].astype(np.float32)


@dataclass
class FrameWarp:
    """How frame t of the input maps onto frame t-1, on the measuring grid.

    ``map_x``/``map_y`` (H x W float32) give, for every pixel of frame t, where it lies in frame
    t-1; ``mask`` (H x W bool) is :func:`visibility_mask`.
    """

    map_x: np.ndarray
    map_y: np.ndarray
    mask: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the measuring grid."""
        return self.map_x.shape[1], self.map_x.shape[0]

    def warp(self, previous: np.ndarray) -> np.ndarray:
        """Frame t-1 (on this grid) resampled onto frame t's pixels (bilinear)."""
        return cv2.remap(previous, self.map_x, self.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class InputFlow:
    """Optical flow between consecutive input frames, fed one frame at a time.

    OpenCV's DIS flow (``preset``: ultrafast, fast or medium) in both directions on
    :func:`flow_luma` pictures, at ``1/downscale`` of the frame size (``None``:
    :func:`auto_downscale`, so 1080p is measured at 540 lines).
    """

    PRESETS = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }

    def __init__(self, *, downscale: int | None = None, preset: str = "medium") -> None:
        if preset not in self.PRESETS:
            raise ValueError(f"Invalid preset ({preset!r}). Supported values are {', '.join(self.PRESETS)}.")
        if downscale is not None and downscale < 1:
            raise ValueError(f"Invalid downscale ({downscale}). Supported values are integers >= 1, or None.")
        self.downscale = downscale
        self.size: tuple[int, int] | None = None  # (w, h) of the measuring grid, set by the first frame
        self._dis = cv2.DISOpticalFlow.create(self.PRESETS[preset])
        self._previous: np.ndarray | None = None

    def update(self, frame: np.ndarray) -> FrameWarp | None:
        """Take the next input frame; return its :class:`FrameWarp` onto the previous one
        (``None`` for the first frame)."""
        frame = _check_rgb(frame)
        if self.size is None:
            height, width = frame.shape[:2]
            self.size = _grid_size(height, width, self.downscale or auto_downscale(height))
        luma = flow_luma(frame, self.size)
        previous, self._previous = self._previous, luma
        if previous is None:
            return None
        flow = self._flow(luma, previous)  # frame t -> t-1: luma(x) ~ previous(x + flow(x))
        flow_back = self._flow(previous, luma)
        map_x, map_y = _sample_maps(flow)
        return FrameWarp(map_x, map_y, visibility_mask(flow, flow_back))

    def _flow(self, frame: np.ndarray, onto: np.ndarray) -> np.ndarray:
        # No initial flow (None): OpenCV's stubs declare an array, but DIS would start from one.
        return self._dis.calc(frame, onto, None)  # type: ignore[call-overload]


def _to_grid(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB float32 in [0, 1], area-resized to ``size`` (w, h) when it differs."""
    frame = _check_rgb(frame)
    out: np.ndarray = frame.astype(np.float32) * np.float32(_unit_scale(frame))
    if (out.shape[1], out.shape[0]) != size:
        out = cv2.resize(out, size, interpolation=cv2.INTER_AREA)
    return out


def pair_warping_error(previous: np.ndarray, current: np.ndarray, warp: FrameWarp) -> float | None:
    """``E_t`` for one pair: float RGB frames on ``warp``'s grid. ``None`` when no pixel is visible."""
    visible = int(warp.mask.sum())
    if visible == 0:
        return None
    diff = current - warp.warp(previous)
    squared = np.einsum("hwc,hwc->hw", diff, diff)  # ||.||^2 summed over R, G, B
    return float(squared[warp.mask].sum(dtype=np.float64) / visible)


class WarpingError:
    """Lai et al.'s warping error of an output video, streamed one frame at a time.

    Either :meth:`update` with (input frame, output frame) pairs — the flow is computed here —
    or :meth:`add` with a :class:`FrameWarp` from a shared :class:`InputFlow`, to measure several
    outputs of one input with one flow. Output frames of another size than the input are
    area-resized onto the measuring grid. Pairs where nothing is visible are left out.
    """

    def __init__(self, *, downscale: int | None = None, preset: str = "medium") -> None:
        self._flow: InputFlow | None = None
        self._downscale, self._preset = downscale, preset
        self._previous_raw: np.ndarray | None = None
        self._previous: np.ndarray | None = None
        self.errors: list[float] = []  # E_t per measured pair

    def update(self, input_frame: np.ndarray, output_frame: np.ndarray) -> None:
        """Take the next frame of the input and the matching frame of the output."""
        if self._flow is None:
            self._flow = InputFlow(downscale=self._downscale, preset=self._preset)
        self.add(self._flow.update(input_frame), output_frame)

    def add(self, warp: FrameWarp | None, output_frame: np.ndarray) -> None:
        """Take the next output frame with the input's warp onto the previous frame (``None`` for
        the first frame)."""
        if warp is None:
            self._previous_raw, self._previous = np.asarray(output_frame), None
            return
        if self._previous is None:
            if self._previous_raw is None:
                raise ValueError("the first frame must come with warp=None (there is no previous frame)")
            self._previous = _to_grid(self._previous_raw, warp.size)
            self._previous_raw = None
        current = _to_grid(output_frame, warp.size)
        error = pair_warping_error(self._previous, current, warp)
        if error is not None:
            self.errors.append(error)
        self._previous = current

    @property
    def value(self) -> float:
        """Mean ``E_t`` over the pairs so far (0.0 before the second frame)."""
        return float(np.mean(self.errors)) if self.errors else 0.0


def warping_error(
    input_frames: Iterable[np.ndarray],
    output_frames: Iterable[np.ndarray],
    *,
    downscale: int | None = None,
    preset: str = "medium",
) -> float:
    """Warping error of ``output_frames`` with the flow of ``input_frames`` (iterables, consumed
    in step; the shorter one ends it). See :class:`WarpingError`."""
    meter = WarpingError(downscale=downscale, preset=preset)
    for source, output in zip(input_frames, output_frames):
        meter.update(source, output)
    return meter.value


class VideoStats:
    """Per-frame mean luma, flicker index and (given the input's warps) warping error of one video.

    Feed frames in order with :meth:`update`; pass the :class:`FrameWarp` that an
    :class:`InputFlow` returned for the matching input frame to measure the warping error.
    """

    def __init__(self) -> None:
        self.lumas: list[float] = []
        self._warping = WarpingError()

    def update(self, frame: np.ndarray, warp: FrameWarp | None = None) -> None:
        """Take the next frame, with the input's warp of this frame onto the previous one."""
        frame = _check_rgb(frame)
        self.lumas.append(mean_luma(frame))
        self._warping.add(warp, frame)  # warp None: no pair ends here, the next one starts here

    @property
    def frames(self) -> int:
        return len(self.lumas)

    @property
    def mean_luma(self) -> float:
        """Mean luma over all frames (0..255)."""
        return float(np.mean(self.lumas)) if self.lumas else 0.0

    @property
    def flicker_index(self) -> float:
        return flicker_index(self.lumas)

    @property
    def warping_error(self) -> float | None:
        """Mean ``E_t``; ``None`` when no pair was measured (no warps given, or one frame)."""
        return self._warping.value if self._warping.errors else None
