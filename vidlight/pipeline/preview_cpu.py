"""The exposure preview's luma statistics as one compiled pass (Numba).

For every render of the preview (one frame at one grid strength) the control needs the luma's
median and 99th percentile, its share of clipped pixels and its mean. As torch operations that
is a luma image, a histogram of it, a comparison and two means, each a pass over every render;
here each render's samples are read once, on a CPU.
"""

from __future__ import annotations

import numpy as np

from vidlight.jit import compiled


@compiled
def _luma_statistics(y, weights, bins, clip_level, counts, clipped, sums):  # pragma: no cover - compiled
    """For each render ``r`` of ``y`` (R x 3 x h x w fp32 in [0, 1], any strides): ``counts[r]`` =
    the histogram of its luma over ``bins`` levels (rounded half to even, as torch rounds; a NaN
    counts as 0), ``clipped[r]`` = how many samples reach ``clip_level``, ``sums[r]`` = the
    luma's sum (fp64). The luma is rounded as torch's ``mul`` then two ``add_(alpha=)`` round
    it: red's product, then green's and blue's each added as a fused multiply-add (exact in
    fp64, then rounded once to fp32)."""
    red, green, blue = weights[0], weights[1], weights[2]
    top = np.float32(bins - 1)
    for r in range(y.shape[0]):
        hist = counts[r]
        over = 0
        total = 0.0
        for i in range(y.shape[2]):
            for j in range(y.shape[3]):
                v = y[r, 0, i, j] * red
                v = np.float32(np.float64(v) + np.float64(y[r, 1, i, j]) * np.float64(green))
                v = np.float32(np.float64(v) + np.float64(y[r, 2, i, j]) * np.float64(blue))
                level = int(np.rint(v * top))
                hist[min(max(level, 0), bins - 1)] += 1
                over += v >= clip_level
                total += v
        clipped[r] = over
        sums[r] = total


def luma_statistics(
    y: np.ndarray, luma: tuple[float, float, float], bins: int, clip_level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``y``'s renders (R x 3 x h x w fp32, clamped to [0, 1], any strides) -> per render: the
    luma's histogram (R x ``bins``), its share of samples at or above ``clip_level`` and its mean
    (R each, fp64)."""
    rows, p = y.shape[0], y.shape[2] * y.shape[3]
    counts = np.zeros((rows, bins), np.int64)
    clipped = np.zeros(rows, np.int64)
    sums = np.zeros(rows, np.float64)
    weights = np.asarray(luma, np.float32)
    _luma_statistics(y, weights, bins, np.float32(clip_level), counts, clipped, sums)
    return counts, clipped / p, sums / p
