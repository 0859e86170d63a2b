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
    red, green, blue = LUMA  # three passes; an einsum over the channels is ten times slower here
    luma = (y[:, :, 0] * red).add_(y[:, :, 1], alpha=green).add_(y[:, :, 2], alpha=blue)
    luma = luma.transpose(0, 1).flatten(2)  # N x G x P
    median, highlight = _quantiles(luma, (0.5, HIGHLIGHT_PERCENTILE))
    clipped = (luma >= CLIP_LEVEL).float().mean(dim=2)
    mean = luma.mean(dim=2)
    q = [v.cpu().numpy() for v in (median, highlight, clipped, mean)]
    g = np.asarray(grid, dtype=np.float64)
    return [PreviewStats(g, *(v[n] for v in q)) for n in range(x.shape[0])]


def _quantiles(values: torch.Tensor, qs: Sequence[float], bins: int = QUANTILE_BINS) -> list[torch.Tensor]:
    """The ``qs`` quantiles of ``values`` (... x P, in [0, 1]) along the last axis, each to
    within 1 / (bins - 1): read off a histogram (one counting pass; a sort per row, as
    ``torch.quantile`` does, costs several times the model's run on the preview)."""
    rows, p = values[..., 0].numel(), values.shape[-1]
    index = values.reshape(rows, p).mul(bins - 1).round_().long()
    index += torch.arange(rows, device=values.device).view(-1, 1) * bins
    counts = torch.bincount(index.flatten(), minlength=rows * bins).view(rows, bins)
    cumulative = counts.cumsum(dim=1)
    out = []
    for q in qs:
        rank = max(1, math.ceil(q * p))  # the rank-th smallest value (1-based)
        position = (cumulative < rank).sum(dim=1)
        out.append((position.float() / (bins - 1)).view(values.shape[:-1]))
    return out


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
