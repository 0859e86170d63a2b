"""The exposure preview's renders of a curve method (Zero-DCE, Zero-DCE++) at every grid
strength, as one compiled pass on a CPU (Numba).

The preview renders a small copy of each frame at 17 strengths; as torch operations that is
the batch repeated 17 times and its curve steps applied in chunks of a few rows, hundreds of
small operations per batch. Here each row of each render is made in a buffer that stays in the
cache, with the torch path's operations in the same order and precision, so the values are
the same bit for bit.
"""

from __future__ import annotations

import numpy as np

from vidlight.jit import compiled


@compiled
def _curve_renders(x, curves, grid, iterations, out):  # pragma: no cover - compiled
    """``out[g]`` = ``x`` (N x 3 x h x w, any strides) through ``iterations`` curve steps
    ``v + (v * v - v) * (a * grid[g])``, ``a`` from ``curves`` (N x 3 x h x w: the same map every
    step; N x 3 * iterations x h x w: map k drives step k + 1). ``out``: G x N x 3 x h x w,
    C-contiguous."""
    n_frames, height, width = x.shape[0], x.shape[2], x.shape[3]
    per_step = curves.shape[1] > 3
    alpha = np.empty(width, np.float32)
    for g in range(grid.size):
        s = grid[g]
        for n in range(n_frames):
            for c in range(3):
                for i in range(height):
                    v = out[g, n, c, i]
                    for j in range(width):
                        v[j] = x[n, c, i, j]
                    for k in range(iterations):
                        if k == 0 or per_step:
                            a = curves[n, 3 * k + c if per_step else c, i]
                            for j in range(width):
                                alpha[j] = a[j] * s
                        for j in range(width):
                            t = v[j] * v[j]
                            t = t - v[j]
                            t = t * alpha[j]
                            v[j] = v[j] + t


def curve_renders(x: np.ndarray, curves: np.ndarray, grid: np.ndarray, iterations: int) -> np.ndarray:
    """``x`` (N x 3 x h x w fp32) at every strength of ``grid`` (fp32) through the curves (see
    :func:`_curve_renders`): G x N x 3 x h x w fp32."""
    out = np.empty((grid.size, *x.shape), np.float32)
    _curve_renders(x, curves, grid, iterations, out)
    return out
