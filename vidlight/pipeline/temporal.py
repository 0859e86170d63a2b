"""Temporal smoothing of brightness: the stage between the model and the encoder.

Frame-by-frame enhancement flickers: a model's per-frame statistics (SCI's illumination,
MBLLEN's normalisation, Zero-DCE's curves) make the brightness pump from frame to frame.
Smoothing a full-resolution quantity over time drags the edges of moving objects (ghosting),
so this stage smooths a *low-resolution* brightness only, and applies it back as a gain:

* :class:`SceneCutDetector` compares low-res luma histograms of consecutive *input* frames,
  after dividing luma by the frame's mean, so exposure changes and flicker do not look like
  cuts; a cut restarts the smoothing, so a new scene is not dimmed or brightened by the old one.
* :class:`GainSmoother` measures a coarse brightness of each enhanced frame (the mean of a
  16-cell-wide grid, or each cell), smooths its logarithm with an exponential moving average
  whose weight comes from the real time between frames (``alpha = exp(-dt / tau)``, so VFR
  input and dropped live frames behave), letting through without lag most of the change the
  model's own response to the input explains, and multiplies the frame by
  ``smoothed / measured``.
* :class:`TemporalSmoother` runs both on batches, in order, carrying state across batches;
  :meth:`TemporalSmoother.reset` is for stream reconnects.

A bounded look-ahead (2 frames by default) tells exposure flicker from real changes: the
input's brightness trend is a running median, which keeps steps and ramps but not a frame
that jumps away from its neighbours. The stage is model-independent: it sees only
(input frame, enhanced frame, time in seconds) triples.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .denoise import TemporalDenoiser

if TYPE_CHECKING:
    from .exposure import PreviewStats

DEFAULT_TIME_CONSTANT = 0.5  # seconds
DEFAULT_FOLLOW = 1.0
DEFAULT_LOOKAHEAD = 2  # frames
DEFAULT_HYSTERESIS = 0.9  # steps of the output's bit depth: a pixel keeps last frame's value this close
STILL_BLOCK = 2  # pixels: the input's blocks compared for stillness
STILL_LEVEL = 2.0  # 8-bit levels: an input block whose mean moved less than this is still
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601, as vidlight.video_metrics


def _max_value(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    raise ValueError(f"Invalid frame dtype ({dtype}). Supported values are uint8, uint16.")


def _lowres_luma(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Luma in [0, 1], area-resized to ``size`` (w, h) first (cheap: the resize does the averaging)."""
    small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return (small.astype(np.float32) @ LUMA) / _max_value(frame.dtype)


class SceneCutDetector:
    """Hard cuts, from histograms of brightness-normalised luma of the input at low resolution.

    Each frame is area-resized to ``width`` pixels wide (noise averages out), its luma divided
    by its mean (an exposure change or flicker scales luma, which this undoes), and binned into
    ``bins`` bins over 0..3x the mean. The distance between consecutive histograms is the
    chi-square distance ``0.5 * sum (a - b)^2 / (a + b)`` (0 same, 1 disjoint). A cut is
    declared when the distance exceeds ``threshold`` *and* ``ratio`` times the median of the
    recent distances (a panning or busy scene raises its own baseline), and not within
    ``min_gap`` frames of the previous cut unless it exceeds ``certain`` (a folder of unrelated
    pictures cuts at every frame; a flash right after a cut stays well below that).

    Args:
        threshold: the least distance that can be a cut.
        ratio: how far above the recent median the distance must be.
        min_gap: frames after a cut during which only a distance above ``certain`` is a cut.
        certain: a distance that is a cut whatever came before.
        width, bins, history: the analysis resolution, histogram bins, and frames in the median.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.04,
        ratio: float = 3.0,
        min_gap: int = 5,
        certain: float = 0.15,
        width: int = 64,
        bins: int = 32,
        history: int = 15,
    ) -> None:
        self.threshold = threshold
        self.ratio = ratio
        self.min_gap = min_gap
        self.certain = certain
        self.width = width
        self.bins = bins
        self._distances: deque[float] = deque(maxlen=history)
        self.last_distance: float | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame (the next one starts afresh; it is not a cut)."""
        self._previous: np.ndarray | None = None
        self._shape: tuple | None = None
        self._since_cut = self.min_gap
        self._distances.clear()

    def histogram(self, frame: np.ndarray) -> np.ndarray:
        """The normalised histogram of luma / mean luma of ``frame`` (sums to 1)."""
        h, w = frame.shape[:2]
        size = (min(self.width, w), max(1, round(h * min(self.width, w) / w)))
        luma = _lowres_luma(frame, size)
        level = float(luma.mean())
        relative = luma / level if level > 1e-6 else np.zeros_like(luma)
        hist, _ = np.histogram(np.minimum(relative, 2.999), bins=self.bins, range=(0.0, 3.0))
        return hist.astype(np.float64) / hist.sum()

    def __call__(self, frame: np.ndarray) -> bool:
        """Whether ``frame`` (the input, RGB) starts a new scene after the previous one."""
        hist = self.histogram(frame)
        previous, self._previous = self._previous, hist
        shape, self._shape = self._shape, frame.shape
        self._since_cut += 1
        if previous is None or shape != frame.shape:
            self.last_distance = None
            return False
        total = hist + previous
        nz = total > 0
        distance = float(0.5 * np.sum((hist[nz] - previous[nz]) ** 2 / total[nz]))
        self.last_distance = distance
        baseline = float(np.median(self._distances)) if self._distances else 0.0
        self._distances.append(distance)
        if distance > self.certain or (
            distance > self.threshold and distance > self.ratio * baseline and self._since_cut > self.min_gap
        ):
            self._since_cut = 0
            # The new scene's own distances are the baseline from here on.
            self._distances.clear()
            return True
        return False


class _Pending:
    """A frame waiting for its look-ahead: its levels, the frame itself, its alpha and tag."""

    __slots__ = ("source", "level", "frame", "alpha", "tag", "dtype", "blocks", "step")

    def __init__(
        self,
        source: np.ndarray,
        level: np.ndarray,
        frame: np.ndarray,
        alpha: float,
        tag: object,
        dtype: np.dtype,
        blocks: np.ndarray | None,
        step: float,
    ) -> None:
        self.source, self.level, self.frame, self.alpha, self.tag = source, level, frame, alpha, tag
        self.dtype = dtype  # the input's: what the corrected frame is rounded to
        self.blocks = blocks  # the input's block means (where the scene is still)
        self.step = step  # the change of log level the strength's change made


class GainSmoother:
    """Smooths a low-resolution brightness of the enhanced frames over time and applies it as a gain.

    Per frame, the log luma of the input (``i_t``) and of the enhanced frame (``o_t``) are
    measured on a coarse grid (``grid_width`` cells wide, rows in proportion), or as one global
    value (the log of the mean) when ``field`` is False. Two things move ``o``: the input's
    brightness, passed on by the model with a response ``k`` (1 for a fixed gain, about 0 for a
    model that normalises every frame), and the model's own frame-to-frame pumping. The input's
    brightness in turn is a real change of the scene (a light switched on, a pan to a brighter
    area) plus exposure flicker. The filter keeps real changes and removes the rest:

    * the input's *trend* ``r_t`` is the median of ``i`` over ``t - lookahead .. t + lookahead``:
      a median keeps steps and ramps exactly, while a frame that flickers away from its
      neighbours does not move it. This is the only look-ahead, a bounded delay of
      ``lookahead`` frames;
    * ``o_t - k (i_t - r_t)`` is what the model would have output without the input's flicker;
    * the smoothed level follows the trend's changes through ``k`` without lag and averages the
      rest with an exponential moving average whose weight comes from the real time between
      frames (``alpha = exp(-dt / time_constant)``, so VFR input and dropped live frames behave):

        ``s_t = alpha (s_{t-1} + follow (k (r_t - r_{t-1}) + e_t)) + (1 - alpha) (o_t - k (i_t - r_t))``;

      ``e_t`` follows the changes of ``o`` the method's strength makes on purpose (``--strength
      auto``'s own average over time, see :mod:`vidlight.pipeline.exposure`). Each frame's
      step is the log of its preview mean at its strength over that at the previous frame's;
      ``e_t`` is the median of the steps between the frames of the trend's window (without a
      look-ahead, the frame's own step; for the last frame before a drain, the median of its
      own step and the one before it). The
      strength's drift is followed without lag, since averaging it again would only make it
      late (when the strength eases off as lamps come into view, a lagging level stays too
      bright for as long), while the median keeps out the frame-to-frame jitter the strength
      picks up from flickering exposure, which the average is there to remove;

    * the enhanced frame is multiplied by ``exp(s_t - o_t)`` (bilinear upsampling of the grid;
      the same factor for R, G, B), clipped to the sample range, and rounded to the input's
      bit depth, with hysteresis where the scene is still: a sample whose exact value is within
      ``hysteresis`` steps of its value in the previous output frame keeps that value, if the
      input's 2 x 2 block around it changed by less than 2 levels.

    ``k`` is estimated online as the least-squares slope of ``o`` on ``i`` changes between
    consecutive frames over the last few time constants (clipped to 0..1, starting from 1).
    ``follow`` below 1 also lags real changes of the scene and of the strength (``0``: the
    output's brightness is smoothed whatever moved it).

    Frames go in with :meth:`push` and come out, corrected and in order, ``lookahead`` frames
    later; :meth:`drain` finishes the frames still waiting (at the end, or before a reset).

    Args:
        time_constant: tau in seconds (0 turns smoothing off).
        follow: share (0..1) of the model's expected response to the trend's change, and of the
            strength's drift, let through.
        lookahead: frames after each frame that its trend may see (0: no delay, no median).
        estimate_response: estimate ``k`` (else ``k = 1``).
        field: smooth each cell of the grid rather than the global level (corrects local flicker,
            but a moving bright object can then leave a coarse trail).
        grid_width: cells across the frame.
        default_dt: seconds between frames when a frame has no time or it does not increase (1 / fps).
        eps: added to luma (in [0, 1]) before the log, so black areas give finite values.
        hysteresis: how far (in steps of the output's bit depth, below 1) a sample's exact
            value may be from its previous output value and still keep it (0: plain
            rounding). The corrections are a fraction of a step on real footage, and a gain
            moving by a fraction of a step every frame re-rounds pixels of a static picture
            to and fro; rounding with hysteresis keeps a static pixel still instead, and its
            value stays within ``hysteresis`` steps of the exact one. It applies only where the
            input is still (its 2 x 2 block means moved less than 2 levels): elsewhere a held
            pixel would lag the motion by a fraction of a step (on the moving city clip that
            raised mbllen-video's smooth output's warping error by 3 %).
        denoise: also average each frame with the previous output where the picture did not
            change (:class:`vidlight.pipeline.denoise.TemporalDenoiser`), before the rounding.
    """

    # The slope estimate: its memory (in time constants) and a prior of slope 1 worth one
    # frame pair with a 0.1 % change of the input's level. Real dark clips change by ~0.2 %
    # per frame; a prior worth a 1 % change held the slope near 1 on them and put back input
    # flicker that SCI compresses.
    SLOPE_MEMORY = 4.0
    SLOPE_PRIOR = 1e-6

    def __init__(
        self,
        *,
        time_constant: float = DEFAULT_TIME_CONSTANT,
        follow: float = DEFAULT_FOLLOW,
        lookahead: int = DEFAULT_LOOKAHEAD,
        estimate_response: bool = True,
        field: bool = False,
        grid_width: int = 16,
        default_dt: float = 1 / 30,
        eps: float = 1e-3,
        hysteresis: float = DEFAULT_HYSTERESIS,
        denoise: bool = False,
    ) -> None:
        if time_constant < 0:
            raise ValueError(f"Invalid time constant ({time_constant}); it must be at least 0 seconds.")
        if not 0 <= follow <= 1:
            raise ValueError(f"Invalid follow ({follow}); it must be between 0 and 1.")
        if lookahead < 0:
            raise ValueError(f"Invalid lookahead ({lookahead}); it must be at least 0 frames.")
        if default_dt <= 0:
            raise ValueError(f"Invalid default dt ({default_dt}); it must be above 0 seconds.")
        if not 0 <= hysteresis < 1:
            raise ValueError(f"Invalid hysteresis ({hysteresis}); it must be at least 0 and below 1 step.")
        self.time_constant = time_constant
        self.follow = follow
        self.lookahead = lookahead
        self.estimate_response = estimate_response
        self.field = field
        self.grid_width = grid_width
        self.default_dt = default_dt
        self.eps = eps
        self.hysteresis = hysteresis
        self.denoiser = TemporalDenoiser() if denoise else None
        self.last_alpha: float | None = None
        self._pending: deque[_Pending] = deque()
        self.reset()

    def reset(self) -> None:
        """Start afresh; frames still waiting are dropped (call :meth:`drain` first to keep them)."""
        self._pending.clear()
        # The last frames finished: their input levels and strength steps, for the trend's window.
        self._past: deque[tuple[np.ndarray, float]] = deque(maxlen=max(1, self.lookahead))
        self._state: np.ndarray | None = None
        self._last: np.ndarray | None = None  # the previous output frame, for the hysteresis
        self._last_blocks: np.ndarray | None = None  # and its input's block means
        if self.denoiser is not None:
            self.denoiser.reset()
        self._trend: np.ndarray | None = None
        self._input: np.ndarray | None = None
        self._output: float | None = None
        self._last_seconds: float | None = None
        self._shape: tuple | None = None
        self._slope_sums = [self.SLOPE_PRIOR, self.SLOPE_PRIOR]  # sum di*do, sum di*di
        self._strength: float | None = None  # the previous frame's

    @property
    def slope(self) -> float:
        """The current ``k``: the estimated response of the model's level to the input's (0..1)."""
        if not self.estimate_response:
            return 1.0
        return float(np.clip(self._slope_sums[0] / self._slope_sums[1], 0.0, 1.0))

    def alpha(self, time_seconds: float | None) -> float:
        """The EMA weight of the past for a frame at ``time_seconds`` (after the previous frame's)."""
        dt = None
        if time_seconds is not None and self._last_seconds is not None and time_seconds > self._last_seconds:
            dt = time_seconds - self._last_seconds
        if dt is None:
            dt = self.default_dt
        if self.time_constant == 0:
            return 0.0
        return math.exp(-dt / self.time_constant)

    def _grid(self, frame: np.ndarray) -> tuple[int, int]:
        h, w = frame.shape[:2]
        gw = min(self.grid_width, w)
        return gw, max(1, min(h, round(gw * h / w)))

    def _cells(self, frame: np.ndarray, small: np.ndarray | None = None) -> np.ndarray:
        """The log luma of ``frame``'s mean, or on the grid with ``field``, measured on ``small``
        (the frame's block means: the same averages from a quarter of the samples) when given."""
        if not self.field:
            # The log of the mean (not the mean of the logs): what the flicker index measures.
            # cv2.mean is one exact SIMD pass (a tenth of a millisecond at 720p).
            level = float(np.dot(LUMA, cv2.mean(frame)[:3])) / _max_value(frame.dtype)
            return np.array(np.log(level + self.eps), dtype=np.float32)
        grid = self._grid(frame)
        return np.log(
            _lowres_luma(small if small is not None and small.shape[1] >= 2 * grid[0] else frame, grid) + self.eps
        )

    def push(
        self,
        source: np.ndarray,
        output: np.ndarray,
        time_seconds: float | None,
        tag: object = None,
        blocks: np.ndarray | None = None,
        strength: tuple[float, PreviewStats | None] | None = None,
    ) -> list[tuple[np.ndarray, object]]:
        """Queue an (input, enhanced) pair; returns the (corrected frame, tag) pairs now final, in
        order. ``blocks``: the input's :func:`block_means`, if already made; ``strength``: the
        strength the frame was enhanced at and the preview it was chosen from, if known."""
        ready = []
        if self._shape is not None and output.shape != self._shape:
            # A resolution change is a new stream as far as brightness goes.
            ready = self.drain()
            self.reset()
        if blocks is None:
            blocks = block_means(source)
        i, o = self._cells(source, blocks), self._cells(output)
        step = self._strength_step(strength)
        a = self.alpha(time_seconds) if self._input is not None else 0.0
        if self._input is not None and self._output is not None and self.estimate_response:
            decay = a ** (1 / self.SLOPE_MEMORY)
            di = float((i - self._input).mean())
            do = float(np.mean(o)) - self._output - step
            self._slope_sums[0] = decay * self._slope_sums[0] + di * do
            self._slope_sums[1] = decay * self._slope_sums[1] + di * di
        self._input, self._output, self._shape = i, float(np.mean(o)), output.shape
        if time_seconds is not None:
            self._last_seconds = time_seconds
        elif self._last_seconds is not None:
            self._last_seconds += self.default_dt
        self._pending.append(
            _Pending(i, o, output, a, tag, source.dtype, blocks if self.hysteresis > 0 else None, step)
        )
        while len(self._pending) > self.lookahead:
            ready.append(self._finish())
        return ready

    def _strength_step(self, strength: tuple[float, PreviewStats | None] | None) -> float:
        """The frame's strength step: the log of its preview mean at its strength over that at
        the previous frame's strength (0 for the first frame, or without a preview); ``e_t`` is
        the median of these steps (see :meth:`_finish`)."""
        if strength is None:
            self._strength = None
            return 0.0
        s, preview = strength
        previous, self._strength = self._strength, s
        if preview is None or previous is None or previous == s:
            return 0.0
        return math.log(preview.mean_at(s) + self.eps) - math.log(preview.mean_at(previous) + self.eps)

    def drain(self) -> list[tuple[np.ndarray, object]]:
        """Finish every frame still waiting for its look-ahead (their trend sees what there is)."""
        return [self._finish() for _ in range(len(self._pending))]

    def _finish(self) -> tuple[np.ndarray, object]:
        frame = self._pending[0]
        # A symmetric window (as wide as both sides allow, at a stream's start and end too),
        # so a ramp's median is the ramp itself.
        m = min(self.lookahead, len(self._past), len(self._pending) - 1)
        ahead = list(self._pending)[: m + 1]
        behind = list(self._past)[len(self._past) - m :]
        window = [source for source, _ in behind] + [p.source for p in ahead]
        trend = np.median(np.stack(window), axis=0)
        # The strength's changes between the window's frames: 2m of them, centred on this frame
        # (an even count, so a strength that alternates frame to frame has a median change of 0).
        changes = ([step for _, step in behind] + [p.step for p in ahead])[1:]
        if self.lookahead == 0:
            changes = [frame.step]  # no window: the frame's own change is all there is to follow
        elif m == 0:
            # The last frame before a drain (nothing ahead): its own change and the one before
            # it, an even count again, so a drift is followed to the end and a jitter is not.
            changes = [step for _, step in self._past][-1:] + [frame.step]
        step = float(np.median(changes)) if changes else 0.0
        k = self.slope
        observed = frame.level - k * (frame.source - trend)
        if self._state is None:
            self._state = observed
            self.last_alpha = 0.0
        else:
            a = frame.alpha
            self._state = a * (self._state + self.follow * (k * (trend - self._trend) + step)) + (1 - a) * observed
            self.last_alpha = a
        self._trend = trend
        self._past.append((frame.source, frame.step))
        self._pending.popleft()
        last, still = None, None
        blocks, last_blocks = frame.blocks, self._last_blocks
        if (
            self.hysteresis > 0
            and self._last is not None
            and self._last.shape == frame.frame.shape
            and blocks is not None
            and last_blocks is not None
            and last_blocks.shape == blocks.shape
        ):
            last = self._last
            still = _calm_blocks(blocks, last_blocks)
        self._last = apply_gain(
            frame.frame, np.exp(self._state - frame.level), frame.dtype, last, self.hysteresis, self.denoiser, still
        )
        self._last_blocks = frame.blocks
        return self._last, frame.tag


def block_means(frame: np.ndarray) -> np.ndarray:
    """``frame``'s means over STILL_BLOCK x STILL_BLOCK blocks, in its own dtype: the one
    full-resolution pass the stage makes over an input frame. The stillness test reads them,
    and the cut detector and the brightness grid measure them instead of the frame."""
    h, w = frame.shape[:2]
    return cv2.resize(frame, (max(1, w // STILL_BLOCK), max(1, h // STILL_BLOCK)), interpolation=cv2.INTER_AREA)


def _compare(samples: np.ndarray, value: float, op: int) -> np.ndarray:
    """``cv2.compare`` against a number: 255 where ``op`` holds, else 0 (OpenCV's type stubs
    declare arrays only, though the binding takes a scalar)."""
    return cv2.compare(samples, value, op)  # type: ignore[call-overload]


def _calm_blocks(blocks: np.ndarray, last_blocks: np.ndarray) -> np.ndarray:
    """255 for each block of the input whose mean moved by less than STILL_LEVEL in every
    channel since the previous frame, else 0 (a 2-D grid, one value per block)."""
    level = STILL_LEVEL * _max_value(blocks.dtype) / 255
    moved = _compare(cv2.absdiff(blocks, last_blocks).reshape(blocks.shape[0], -1), level, cv2.CMP_GE)
    if blocks.ndim == 3 and blocks.shape[2] > 1:
        # Any channel moved: a weighted sum of 0/255 samples is 0 only where all of them are.
        moved = moved.reshape(blocks.shape)
        moved = cv2.cvtColor(moved, cv2.COLOR_RGB2GRAY) if blocks.shape[2] == 3 else moved.max(axis=2)
    return _compare(moved.reshape(blocks.shape[:2]), 0, cv2.CMP_EQ)


def _per_sample(still: np.ndarray, shape: tuple) -> np.ndarray:
    """A still mask (a 2-D grid of any size, upsampled by nearest neighbour, or one value per
    sample already) as one value per sample of a frame of ``shape``."""
    if still.shape == tuple(shape):
        return still
    if still.shape[:2] != tuple(shape[:2]):
        still = cv2.resize(still, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    if len(shape) == 3 and still.ndim == 2:
        still = cv2.merge([still] * shape[2]) if shape[2] > 1 else still[..., None]
    return still.reshape(shape)


def apply_gain(
    output: np.ndarray,
    factor: np.ndarray,
    dtype: np.dtype,
    last: np.ndarray | None = None,
    hysteresis: float = 0.0,
    denoiser: TemporalDenoiser | None = None,
    still: np.ndarray | None = None,
) -> np.ndarray:
    """``output`` times ``factor`` (a scalar, or the grid upsampled), through ``denoiser`` if
    given, rounded once to ``dtype``; a sample within ``hysteresis`` steps of ``last`` (the
    previous output frame) keeps its value there, where ``still`` allows it (nonzero: the scene
    did not move there; None: everywhere): a 2-D grid over the frame (H x W, or coarser, e.g.
    one value per block of the input, upsampled by nearest neighbour), or one value per sample.

    The enhancer hands over 8-bit sources' frames at 16 bits (``keep_precision``): the
    corrections smoothing makes on real footage are 0.1 .. 1 % per frame, less than half an
    8-bit step for most pixels, so applying them to a rounded frame would change nothing.
    """
    top = _max_value(dtype)
    scale = top / _max_value(output.dtype)
    if factor.ndim == 0:
        f = float(factor) * scale
        if f == 1.0 and output.dtype == dtype and denoiser is None:
            return output  # integers already: nothing to round, nothing the hysteresis could keep
        if dtype == np.uint8 and denoiser is None:
            from vidlight.pipeline.gain_cpu import gain_to_8_bits  # compiled: one pass, no float frame

            mask = None  # upsampled only where it is read
            if last is not None and hysteresis > 0 and still is not None:
                mask = _per_sample(still, output.shape)
            return gain_to_8_bits(output, f, last, hysteresis, mask)
        exact = np.multiply(output, np.float32(f), dtype=np.float32)
    else:
        h, w = output.shape[:2]
        # Cell centres map to pixel centres under cv2's bilinear resize, so the field is smooth.
        full = cv2.resize(factor.astype(np.float32) * scale, (w, h), interpolation=cv2.INTER_LINEAR)
        exact = np.multiply(output, full[..., None] if output.ndim == 3 else full, dtype=np.float32)
    if denoiser is not None:
        exact = denoiser(exact, step=top / 255)
    rounded = cv2.convertScaleAbs(exact) if dtype == np.uint8 else np.clip(exact + 0.5, 0, top).astype(dtype)
    if last is not None and hysteresis > 0:
        rows = (exact.shape[0], -1)  # 2-D views: one channel for OpenCV's range test
        step = cv2.subtract(exact.reshape(rows), last.reshape(rows), dtype=cv2.CV_32F)  # exact - last
        near = cv2.inRange(step, -hysteresis, hysteresis)
        if still is not None:
            per_sample = _per_sample(still, exact.shape).reshape(rows)
            near = cv2.bitwise_and(near, _compare(per_sample, 0, cv2.CMP_GT))
        cv2.copyTo(last.reshape(rows), near, rounded.reshape(rows))  # in place
    return rounded


class StatisticsSmoother:
    """Exponential moving averages of a model's own per-frame statistics.

    Some models normalise every frame by statistics of that frame alone: MBLLEN's
    post-processing stretches the 95th percentile of gray to 0.8 and subtracts the 5th as the
    black point; KinD and KinD++ min-max normalise their input. Noise moves these statistics
    from frame to frame, and the output pumps. Such a model asks this object for the value to
    use (``smoother(key, index, value)``, frames of a batch in order) and gets the running
    average instead, weighted by the real time between frames (``alpha = exp(-dt / tau)``).
    The pipeline calls :meth:`begin` with the batch's timestamps before the model runs, and
    :meth:`reset` at scene cuts and new streams.

    Args:
        time_constant: tau in seconds.
        default_dt: seconds between frames when a frame has no time or it does not increase.
    """

    def __init__(self, *, time_constant: float = DEFAULT_TIME_CONSTANT, default_dt: float = 1 / 30) -> None:
        if time_constant <= 0:
            raise ValueError(f"Invalid time constant ({time_constant}); it must be above 0 seconds.")
        self.time_constant = time_constant
        self.default_dt = default_dt
        self._alphas: list[float] = []
        self.reset()

    def reset(self) -> None:
        """Forget the averages: the next frame's statistics are used as they are."""
        self._state: dict[str, float] = {}
        self._last_seconds: float | None = None
        self._fresh = True

    def begin(self, seconds: Sequence[float | None], restart: Sequence[int] = ()) -> None:
        """The timestamps of the batch the model is about to run; ``restart``: positions in it
        where a new scene starts (the averages start again there, as after :meth:`reset`)."""
        alphas = []
        for n, p in enumerate(seconds):
            if n in restart:
                self._fresh = True
            if self._fresh:
                alphas.append(0.0)
                self._fresh = False
            else:
                dt = (
                    p - self._last_seconds
                    if p is not None and self._last_seconds is not None and p > self._last_seconds
                    else self.default_dt
                )
                alphas.append(math.exp(-dt / self.time_constant))
            self._last_seconds = (
                p if p is not None else (None if self._last_seconds is None else self._last_seconds + self.default_dt)
            )
        self._alphas = alphas

    def __call__(self, key: str, index: int, value: float) -> float:
        """The smoothed ``value`` of statistic ``key`` for frame ``index`` of the current batch."""
        a = self._alphas[index] if index < len(self._alphas) else 0.0
        previous = self._state.get(key)
        smoothed = value if previous is None or a == 0.0 else a * previous + (1 - a) * value
        self._state[key] = smoothed
        return smoothed


class TemporalSmoother:
    """The pipeline's smoothing stage: scene-cut detection plus :class:`GainSmoother`, batch by batch.

    Frames go in with :meth:`push` and come back ``lookahead`` frames later; :meth:`flush`
    returns the rest at the end of a stream. :meth:`scan` runs the cut detector ahead of the
    model, so the pipeline can restart a clip model's context at a cut too.

    Args:
        time_constant: tau of the smoothing in seconds.
        enabled: False passes frames through untouched, at once.
        detect_cuts: restart the smoothing at scene cuts (see :class:`SceneCutDetector`).
        lookahead: frames of delay the smoothing may use to tell flicker from real changes.
        default_dt: seconds between frames when a frame has no time (1 / the stream's frame rate).
        stills: every frame is a scene of its own (the unrelated pictures of an image folder):
            nothing is carried from one to the next, neither by the smoothing nor, through the
            cuts :meth:`scan` reports, by the model's exposure control and averages.
        **options: further :class:`GainSmoother` options (``follow``, ``estimate_response``, ``field``).
    """

    def __init__(
        self,
        *,
        time_constant: float = DEFAULT_TIME_CONSTANT,
        enabled: bool = True,
        detect_cuts: bool = True,
        lookahead: int = DEFAULT_LOOKAHEAD,
        default_dt: float = 1 / 30,
        stills: bool = False,
        **options,
    ) -> None:
        self.enabled = enabled and time_constant > 0
        self.stills = stills
        self.detector = SceneCutDetector() if detect_cuts else None
        self.smoother = GainSmoother(time_constant=time_constant, lookahead=lookahead, default_dt=default_dt, **options)
        # Frame indices where a cut reset the smoothing: the last 1024, so a camera that runs for
        # months does not keep one for every cut it ever saw.
        self.cuts: deque[int] = deque(maxlen=1024)
        self._index = 0
        self._scanned: deque[tuple[bool, np.ndarray | None]] = deque()  # (cut, block means) per scanned frame
        self._strengths: deque[tuple[float, PreviewStats | None]] = deque()  # per enhanced frame, from note_strengths

    @property
    def delay_frames(self) -> int:
        """Frames a pushed frame waits before it comes back."""
        return self.smoother.lookahead if self.enabled else 0

    def reset(self) -> list[tuple[np.ndarray, object]]:
        """Forget the past (e.g. after a stream reconnect); returns the frames still waiting, finished."""
        done = self.flush()
        self.smoother.reset()
        self._scanned.clear()
        self._strengths.clear()
        if self.detector is not None:
            self.detector.reset()
        return done

    def reduce(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray] | None:
        """The block means of ``inputs`` (:func:`block_means`), the one full-resolution pass the
        stage makes over each input frame; None when smoothing is off. Pass them to
        :meth:`scan`, and to whatever else wants a small copy of the frames (the automatic
        strength's preview)."""
        return [block_means(f) for f in inputs] if self.enabled else None

    def scan(self, inputs: Sequence[np.ndarray], reduced: Sequence[np.ndarray | None] | None = None) -> list[int]:
        """Run the cut detector on the next input frames (before the model sees them).

        Returns the positions in ``inputs`` where a new scene starts; :meth:`push` uses the
        same decisions (and ``reduced``, the frames' :meth:`reduce`, made here if not given)
        when these frames arrive.
        """
        if reduced is None:
            reduced = self.reduce(inputs)
        none: list[np.ndarray | None] = [None] * len(inputs)
        scanned = [self._observe(frame, blocks) for frame, blocks in zip(inputs, reduced or none)]
        self._scanned.extend(scanned)
        return [n for n, (cut, _) in enumerate(scanned) if cut]

    def note_strengths(self, strengths: Sequence[float], previews: Sequence[PreviewStats | None]) -> None:
        """The strength the model gave each of the next frames (in order) and the exposure
        preview it was chosen from (None for a fixed strength): :meth:`push` lets the output's
        level follow the strength's changes (see :class:`GainSmoother`)."""
        self._strengths.extend(zip(strengths, previews))

    def _observe(self, frame: np.ndarray, blocks: np.ndarray | None) -> tuple[bool, np.ndarray | None]:
        """Whether ``frame`` starts a new scene, and its block means (None when smoothing is
        off) for the smoother: the detector measures those rather than the frame when they
        are wide enough, so the frame is read once."""
        if self.stills:
            return True, blocks
        if self.detector is None:
            return False, blocks
        measured = blocks if blocks is not None and blocks.shape[1] >= self.detector.width else frame
        return self.detector(measured), blocks

    def push(
        self,
        inputs: Sequence[np.ndarray],
        outputs: Sequence[np.ndarray],
        seconds: Sequence[float | None],
        tags: Sequence[object] | None = None,
    ) -> list[tuple[np.ndarray, object]]:
        """Queue a batch of (input, enhanced, time in seconds, tag); returns the finished
        (corrected frame, tag) pairs, in order."""
        tags = [None] * len(inputs) if tags is None else tags
        if not (len(inputs) == len(outputs) == len(seconds) == len(tags)):
            raise ValueError(
                f"inputs, outputs, seconds and tags differ in length "
                f"({len(inputs)}, {len(outputs)}, {len(seconds)}, {len(tags)})"
            )
        if not self.enabled:
            for _ in range(min(len(inputs), len(self._scanned))):
                self._scanned.popleft()  # the cuts were for the model (clip context, strength)
            for _ in range(min(len(inputs), len(self._strengths))):
                self._strengths.popleft()
            one = np.array(1.0, dtype=np.float32)  # 16-bit outputs of 8-bit inputs still come back 8-bit
            return [(apply_gain(o, one, i.dtype), t) for i, o, t in zip(inputs, outputs, tags)]
        ready = []
        for source, output, p, tag in zip(inputs, outputs, seconds, tags):
            if self._scanned:
                cut, blocks = self._scanned.popleft()
            else:
                cut, blocks = self._observe(source, block_means(source))
            strength = self._strengths.popleft() if self._strengths else None
            if cut:
                ready += self.smoother.drain()
                self.smoother.reset()
                self.cuts.append(self._index)
            ready += self.smoother.push(source, output, p, tag, blocks, strength)
            self._index += 1
        return ready

    def flush(self) -> list[tuple[np.ndarray, object]]:
        """The frames still waiting for their look-ahead, finished (end of stream)."""
        return self.smoother.drain() if self.enabled else []

    def __call__(self, inputs, outputs, seconds) -> list[np.ndarray]:
        """Corrected ``outputs`` for a whole clip, at once (push, then flush)."""
        done = self.push(inputs, outputs, seconds) + self.flush()
        return [frame for frame, _ in done]
