"""Exposure control: how much enhancement each frame needs (``--strength auto``).

A camera runs day and night. The published methods were made for near-black photographs and
brighten whatever they get: a well-lit frame comes out washed out, a lamp blooms. The exposure
control picks, per frame, the strength (:mod:`vidlight.models.strength`: 0 is the input, 1 the
method's official output) that brings the picture to a natural exposure:

* **Preview.** The model runs on a small copy of the frame (:data:`PREVIEW_WIDTH` pixels wide),
  and its output is rendered at every strength of a grid (:data:`STRENGTH_GRID`) from that one
  run: the strength acts on what the model estimated (illumination, curves, its output), so the
  renders cost a few pointwise operations each. The control sees, for every grid strength,
  the preview's luma statistics (:class:`PreviewStats`).
* **Exposure.** A well-exposed picture puts its brightest parts of some size near the top of the
  range; a darkened one does not. The strength is the least that lifts the preview's 99th
  percentile of luma to :data:`HIGHLIGHT_TARGET` (on the small preview a lamp of a few pixels
  is averaged with its surroundings, so small light sources do not count as the scene's
  highlights). A frame whose highlights are there already gets strength 0 from this rule; a
  near-black frame cannot reach the target and gets the full method.
* **Shadows.** A night street lit in one corner has its highlights and is still mostly black:
  the strength is also at least what lifts the preview's median luma to :data:`SHADOW_TARGET`.
* **Near-black.** A frame whose mean luma is at most :data:`NEAR_BLACK` gets the full method;
  from there to :data:`DARK` the least strength falls to 0 (linearly in log luma). This is what
  the methods were made for, and their full strength is right there (on LOL's near-black
  images a lower one loses PSNR).
* **Highlights protected.** The strength is at most what keeps the share of (nearly) clipped
  preview pixels within :data:`CLIP_ALLOWANCE` of the input's: lamps, headlights and lit
  windows do not bloom into their surroundings.
* **Never darker.** The strength is at most what keeps the preview's mean luma at or above
  the input's: enhancement that would darken a frame is not applied.
* **Time.** The chosen strength is averaged over time with an exponential moving average
  weighted by the real time between frames (``alpha = exp(-dt / tau)``, tau
  :data:`DEFAULT_TIME_CONSTANT`): it changes smoothly, follows a day-to-night fade without
  pumping with the input's flicker, and starts afresh at scene cuts and stream reconnects
  (:meth:`ExposureControl.reset`, and ``restart`` positions in :meth:`ExposureControl.begin`).

The rule never asks for more than the method gives (strength 1): a night street stays a night
street, only visible, rather than being pushed to a mid-grey day.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidlight.models.strength import LUMA, renders, terms_of
from vidlight.pipeline.temporal import StatisticsSmoother

PREVIEW_WIDTH = 128  # pixels: the small copy the model runs on to choose the strength
STRENGTH_GRID = tuple(i / 16 for i in range(17))  # the strengths rendered from the preview
HIGHLIGHT_PERCENTILE = 0.99
HIGHLIGHT_TARGET = 0.675  # the preview's 99th percentile of luma, 0..1 (gamma-encoded)
SHADOW_TARGET = 0.12  # the preview's median luma, 0..1
NEAR_BLACK = 0.10  # mean luma, 0..1: the full method at or below
DARK = 0.12  # mean luma: above it the near-black rule asks for nothing
QUANTILE_BINS = 1024  # resolution of the preview's luma quantiles
CLIP_LEVEL = 0.98  # a preview pixel this bright (luma, 0..1) counts as clipped
CLIP_ALLOWANCE = 0.005  # share of preview pixels that may clip beyond the input's
DEFAULT_TIME_CONSTANT = 0.5  # seconds


@dataclass(frozen=True)
class PreviewStats:
    """Luma statistics of one frame's preview at each strength of ``grid`` (arrays of len(grid))."""

    grid: np.ndarray
    median: np.ndarray
    highlight: np.ndarray  # the HIGHLIGHT_PERCENTILE of luma
    clipped: np.ndarray  # share of pixels at or above CLIP_LEVEL
    mean: np.ndarray

    def mean_at(self, strength: float) -> float:
        """The preview's mean luma at ``strength`` (linear between the grid's)."""
        return float(np.interp(strength, self.grid, self.mean))


def preview_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) of the preview of a ``height`` x ``width`` frame (the frame's own when it is small)."""
    if width <= PREVIEW_WIDTH:
        return height, width
    return max(1, round(height * PREVIEW_WIDTH / width)), PREVIEW_WIDTH


@torch.inference_mode()
def preview_stats(model: nn.Module, x: torch.Tensor, grid: Sequence[float] = STRENGTH_GRID) -> list[PreviewStats]:
    """The model's output for a batch ``x`` (N x 3 x H x W in [0, 1]) at every strength of
    ``grid``, measured on a small copy: one :class:`PreviewStats` per frame."""
    h, w = preview_size(*x.shape[-2:])
    small = F.interpolate(x, size=(h, w), mode="area") if (h, w) != tuple(x.shape[-2:]) else x
    terms = terms_of(model, small)
    y = renders(model, small, terms, grid).float().clamp_(0.0, 1.0)  # G x N x 3 x h x w
    g, n = y.shape[:2]
    counts, clipped_share, mean_luma = _luma_statistics(y.reshape(g * n, 3, h, w))
    cumulative = counts.cumsum(dim=1)
    stats = []
    for q in (0.5, HIGHLIGHT_PERCENTILE):
        rank = max(1, math.ceil(q * h * w))  # the rank-th smallest value (1-based)
        stats.append((cumulative < rank).sum(dim=1).float() / (QUANTILE_BINS - 1))
    # Rows are grid-major: frame k's statistics are every n-th row from row k.
    median, highlight, clipped, mean = (v.view(g, n).T.cpu().numpy() for v in (*stats, clipped_share, mean_luma))
    grid_values = np.asarray(grid, dtype=np.float64)
    return [PreviewStats(grid_values, median[k], highlight[k], clipped[k], mean[k]) for k in range(n)]


def _luma_statistics(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each render of ``y`` (R x 3 x h x w in [0, 1]): the histogram of its luma over
    :data:`QUANTILE_BINS` levels (R x bins; its quantiles are read off it to within
    1 / (bins - 1): one counting pass, where a sort per row, as ``torch.quantile`` does, costs
    several times the model's run on the preview), its share of clipped pixels and its mean.
    On a CPU one compiled pass (:mod:`vidlight.pipeline.preview_cpu`); elsewhere torch ops."""
    if y.device.type == "cpu":
        from vidlight.pipeline.preview_cpu import luma_statistics  # Numba compiles on first use

        counts, clipped, mean = luma_statistics(y.numpy(), LUMA, QUANTILE_BINS, CLIP_LEVEL)
        return torch.from_numpy(counts), torch.from_numpy(clipped).float(), torch.from_numpy(mean).float()
    return _luma_statistics_torch(y)


def _luma_statistics_torch(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_luma_statistics` as torch operations, on any device."""
    rows = y.shape[0]
    red, green, blue = LUMA  # three passes; an einsum over the channels is ten times slower here
    luma = (y[:, 0] * red).add_(y[:, 1], alpha=green).add_(y[:, 2], alpha=blue).reshape(rows, -1)
    index = luma.mul(QUANTILE_BINS - 1).round_().long()
    index += torch.arange(rows, device=y.device).view(-1, 1) * QUANTILE_BINS
    counts = torch.bincount(index.flatten(), minlength=rows * QUANTILE_BINS).view(rows, QUANTILE_BINS)
    return counts, (luma >= CLIP_LEVEL).float().mean(dim=1), luma.mean(dim=1)


def _least_reaching(grid: np.ndarray, values: np.ndarray, target: float) -> float:
    """The least strength at which ``values`` (rising with strength, sampled on ``grid``) reach
    ``target``, interpolated between grid points; the last grid point when they never do."""
    if values[0] >= target:
        return float(grid[0])
    above = np.nonzero(values >= target)[0]
    if not len(above):
        return float(grid[-1])
    i = above[0]
    v0, v1 = values[i - 1], values[i]
    t = (target - v0) / (v1 - v0) if v1 > v0 else 1.0
    return float(grid[i - 1] + t * (grid[i] - grid[i - 1]))


def _most_within(grid: np.ndarray, values: np.ndarray, limit: float) -> float:
    """The greatest strength up to which ``values`` stay at or below ``limit`` (interpolated)."""
    over = np.nonzero(values > limit)[0]
    if not len(over):
        return float(grid[-1])
    i = over[0]
    if i == 0:
        return float(grid[0])
    v0, v1 = values[i - 1], values[i]
    t = (limit - v0) / (v1 - v0) if v1 > v0 else 0.0
    return float(grid[i - 1] + t * (grid[i] - grid[i - 1]))


def choose_strength(stats: PreviewStats) -> float:
    """The strength one frame needs, from its preview (the rules of the module docstring)."""
    grid = stats.grid
    expose = _least_reaching(grid, stats.highlight, max(HIGHLIGHT_TARGET, float(stats.highlight[0])))
    shadows = _least_reaching(grid, stats.median, max(SHADOW_TARGET, float(stats.median[0])))
    mean = max(float(stats.mean[0]), 1e-6)
    near_black = float(np.clip(math.log(DARK / mean) / math.log(DARK / NEAR_BLACK), 0.0, 1.0))
    protect = _most_within(grid, stats.clipped, float(stats.clipped[0]) + CLIP_ALLOWANCE)
    # Never darker than the input: a method that darkens this frame (a bright frame through a
    # normalising network, or weights that do not fit the footage) is held back to where its
    # mean luma is still the input's.
    darker = np.nonzero(stats.mean < stats.mean[0] - 1e-6)[0]
    brighter = _most_within(grid, -stats.mean, -float(stats.mean[0])) if len(darker) else float(grid[-1])
    return min(max(expose, shadows, near_black), protect, brighter)


class ExposureControl:
    """One stream's automatic strength: :func:`choose_strength` per frame, averaged over time.

    The pipeline calls :meth:`begin` with a batch's timestamps (and the positions where a new
    scene starts) before the model runs, then ``control(index, stats)`` for each frame of the
    batch in order, and :meth:`reset` at reconnects.

    Args:
        time_constant: tau of the average, seconds.
        default_dt: seconds between frames when a pts is missing or not increasing.
    """

    def __init__(self, *, time_constant: float = DEFAULT_TIME_CONSTANT, default_dt: float = 1 / 30) -> None:
        self._average = StatisticsSmoother(time_constant=time_constant, default_dt=default_dt)
        self.last: float | None = None  # the strength of the last frame

    def reset(self) -> None:
        """Forget the past: the next frame's strength is its own."""
        self._average.reset()

    def begin(self, seconds: Sequence[float | None], restart: Sequence[int] = ()) -> None:
        self._average.begin(seconds, restart)

    def __call__(self, index: int, stats: PreviewStats) -> float:
        self.last = self._average("strength", index, choose_strength(stats))
        return self.last


def parse_strength(value: str | float | None) -> float | str:
    """``--strength``: ``"auto"`` or a number in 0..1."""
    from vidlight.errors import VidlightError

    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return "auto"
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise VidlightError(f"strength must be auto or a number from 0 to 1, got {value!r}")
    return number
