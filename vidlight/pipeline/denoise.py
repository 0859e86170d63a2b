"""Temporal denoising of the enhanced frames: a motion-adaptive recursive filter.

Enhancement amplifies sensor noise along with the picture; from frame to frame that noise
boils, and it is most of what the warping error of an enhanced dark clip measures. Where the
picture does not change, averaging a pixel with its own past takes the noise out; where it
does change (motion, a light switched on), averaging would leave a trail behind moving edges.
:class:`TemporalDenoiser` tells the two apart per pixel, without motion estimation:

* the difference ``d = x_t - y_{t-1}`` between the new frame and the previous *output* is
  averaged over a ``window`` x ``window`` neighbourhood: noise averages out there, a moving
  edge or a change of light does not;
* the noise of that local mean is measured on the frame itself: the median absolute value of
  ``d`` minus its local mean gives the per-pixel noise (a change of light, which moves the
  local mean, does not count as noise, nor do moving edges, a minority), and a box mean of
  ``window``² samples has ``1 / window`` of it (for noise uncorrelated between pixels;
  enhanced noise is somewhat correlated, which ``threshold`` absorbs). The noise is at least
  ``floor``: compressed video repeats static blocks exactly, and its noise would read 0;
* the weight of the past is ``strength * max(0, 1 - |mean d| / (threshold * noise / window))``:
  full where the neighbourhood did not change, none where its mean changed by more than
  ``threshold`` times the local mean's noise, so a pixel that moves is the new frame's own;
* ``y_t = x_t - weight * d``: a running average with memory ``1 / (1 - strength)`` frames in
  static areas.

The filter works on the exact (not yet rounded) samples, in any unit; it keeps one frame of
state. :meth:`reset` starts it afresh (scene cut, reconnect, new size).
"""

from __future__ import annotations

import cv2
import numpy as np

DEFAULT_STRENGTH = 0.6  # weight of the past in static areas: an average over ~2.5 frames
DEFAULT_THRESHOLD = 8.0  # local change, in noise units of the local mean, at which averaging stops
DEFAULT_WINDOW = 5
DEFAULT_FLOOR = 2.0  # 8-bit steps: the real clips' H.264/HEVC repeats static blocks, their noise reads ~0


class TemporalDenoiser:
    """Motion-adaptive recursive averaging of consecutive frames (see the module docstring).

    Args:
        strength: weight (0..1, below 1) of the previous output where nothing moved.
        threshold: how many noise units of the local mean difference stop the averaging.
        window: side of the neighbourhood the difference is averaged over (odd, pixels).
        floor: the least per-pixel noise assumed, in 8-bit steps.
    """

    def __init__(
        self,
        *,
        strength: float = DEFAULT_STRENGTH,
        threshold: float = DEFAULT_THRESHOLD,
        window: int = DEFAULT_WINDOW,
        floor: float = DEFAULT_FLOOR,
    ) -> None:
        if not 0 <= strength < 1:
            raise ValueError(f"Invalid denoising strength ({strength}); it must be at least 0 and below 1.")
        if threshold <= 0:
            raise ValueError(f"Invalid denoising threshold ({threshold}); it must be above 0.")
        if floor < 0:
            raise ValueError(f"Invalid noise floor ({floor}); it must be at least 0.")
        if window < 1 or window % 2 == 0:
            raise ValueError(f"Invalid denoising window ({window}); it must be an odd number of pixels.")
        self.strength = strength
        self.threshold = threshold
        self.window = window
        self.floor = floor
        self.last_noise: float | None = None  # the per-pixel noise measured on the last frame
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame: the next one passes as it is."""
        self._previous: np.ndarray | None = None

    def __call__(self, frame: np.ndarray, step: float = 1.0) -> np.ndarray:
        """The denoised ``frame`` (float32 H x W x C, exact samples); becomes the filter's state.
        ``step``: an 8-bit step in the frame's units (257 for 16-bit samples), for the floor."""
        frame = np.asarray(frame, dtype=np.float32)
        previous = self._previous
        if previous is None or previous.shape != frame.shape or self.strength == 0:
            self._previous = frame
            return frame
        d = frame - previous
        local = cv2.blur(d, (self.window, self.window), borderType=cv2.BORDER_REFLECT)
        noise = max(self.noise(d - local), self.floor * step)
        self.last_noise = noise
        if noise <= 0:  # an exact repeat of a picture without noise: nothing to average
            self._previous = frame
            return frame
        if local.ndim == 3:  # one decision per pixel, from the channels' mean change
            local = local.mean(axis=2)
        limit = self.threshold * noise / self.window
        weight = self.strength * np.clip(1.0 - np.abs(local) / limit, 0.0, 1.0)
        out = frame - (weight[..., None] if frame.ndim == 3 else weight) * d
        self._previous = out
        return out

    @staticmethod
    def noise(residual: np.ndarray) -> float:
        """Per-pixel noise of a frame difference, from its ``residual`` after the local mean is
        taken away (a change of light or a slow pan is gone from it): 1.4826 x the median
        absolute value (robust: moving edges, a minority, do not raise it), on every 4th row
        and column."""
        return float(1.4826 * np.median(np.abs(residual[::4, ::4])))
