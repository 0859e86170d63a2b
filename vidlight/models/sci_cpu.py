"""SCI's illumination network on a CPU, compiled by Numba: the three convolutions of a band of
rows in one call, on buffers that stay in the cache.

With three channels a 3x3 convolution is 81 multiply-adds per pixel; oneDNN is made for many
channels and OpenCV's 2-D filters take one pass over memory per input and output plane. Here
each output row of all three channels is summed in place from the nine input rows it reads,
so a band makes one pass per layer over buffers that stay in the cache. The sums are fp32,
without fast-math reassociation: within 1e-6 of torch's convolutions.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from vidlight.jit import compiled

# Each band keeps three buffers of (3, rows + 2 * halo, width + 2) floats; the two extra
# columns are the zero padding and are never written.
_scratch = threading.local()


@compiled
def _conv3x3(src, rows, weight, bias, dst, first, last, mode):  # pragma: no cover - compiled
    """Rows ``first..last`` of ``dst`` = the 3x3 convolution (zero padding) of the first ``rows``
    rows of ``src`` (3 x R x (W + 2), zero columns at both ends). ``mode`` 0: as is; 1: ReLU;
    2: ``src + ReLU(...)`` (the residual block)."""
    width = src.shape[2] - 2
    for y in range(first, last):
        d0, d1, d2 = dst[0, y], dst[1, y], dst[2, y]
        for x in range(1, width + 1):
            d0[x] = bias[0]
            d1[x] = bias[1]
            d2[x] = bias[2]
        for i in range(3):
            for ky in range(3):
                yy = y + ky - 1
                if yy < 0 or yy >= rows:
                    continue
                s = src[i, yy]
                a0, a1, a2 = weight[0, i, ky, 0], weight[0, i, ky, 1], weight[0, i, ky, 2]
                b0, b1, b2 = weight[1, i, ky, 0], weight[1, i, ky, 1], weight[1, i, ky, 2]
                c0, c1, c2 = weight[2, i, ky, 0], weight[2, i, ky, 1], weight[2, i, ky, 2]
                for x in range(1, width + 1):
                    left, mid, right = s[x - 1], s[x], s[x + 1]
                    d0[x] += a0 * left + a1 * mid + a2 * right
                    d1[x] += b0 * left + b1 * mid + b2 * right
                    d2[x] += c0 * left + c1 * mid + c2 * right
        if mode != 0:
            for c in range(3):
                d = dst[c, y]
                for x in range(1, width + 1):
                    v = max(d[x], np.float32(0.0))
                    d[x] = v + src[c, y, x] if mode == 2 else v


@compiled
def _band(frame, out, y0, y1, layers, w_in, b_in, w_mid, b_mid, w_out, b_out, p, q, r):  # pragma: no cover
    height, width = frame.shape[0], frame.shape[1]
    halo = 2 + layers
    a, b = max(0, y0 - halo), min(height, y1 + halo)
    rows = b - a
    for yy in range(rows):  # the band's rows, as planes, between the zero columns
        for x in range(width):
            for c in range(3):
                p[c, yy, x + 1] = frame[a + yy, x, c]
    _conv3x3(p, rows, w_in, b_in, q, 0, rows, 1)
    for _ in range(layers):
        _conv3x3(q, rows, w_mid, b_mid, r, 0, rows, 2)
        q, r = r, q
    _conv3x3(q, rows, w_out, b_out, p, y0 - a, y1 - a, 0)
    for y in range(y0, y1):
        for x in range(width):
            for c in range(3):
                out[y, x, c] = -p[c, y - a, x + 1]


@compiled
def _finish(frame, out):  # pragma: no cover - compiled
    """``out = clamp(1 / (1 + out) + frame, 1e-4, 1)``, ``out`` holding exp(-logit) (flat arrays;
    numpy's error model lets the division vectorise)."""
    lo, hi = np.float32(1e-4), np.float32(1.0)
    for j in range(out.size):
        out[j] = min(max(hi / (hi + out[j]) + frame[j], lo), hi)


def illumination(frame: np.ndarray, out: np.ndarray, y0: int, y1: int, layers: int, params: list[np.ndarray]) -> None:
    """Rows ``y0..y1`` of ``out`` (H x W x 3 fp32, C-contiguous) = SCI's illumination,
    ``clamp(sigmoid(conv(...)) + frame, 1e-4, 1)``, for ``frame`` (H x W x 3 fp32, any strides).
    ``params``: the input conv's weight and bias, the residual block's (BatchNorm folded in),
    the output conv's. Reads ``2 + layers`` rows of context above and below; releases the GIL.
    The sigmoid's exp is OpenCV's (vectorised; Numba's would be a scalar call per value)."""
    halo = 2 + layers
    shape = (3, y1 - y0 + 2 * halo, frame.shape[1] + 2)
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None or buffers[0].shape[1] < shape[1] or buffers[0].shape[2] != shape[2]:
        buffers = [np.zeros(shape, np.float32) for _ in range(3)]
        _scratch.buffers = buffers
    _band(frame, out, y0, y1, layers, *params, *buffers)
    rows = out[y0:y1]
    cv2.exp(rows, dst=rows)
    _finish(np.ascontiguousarray(frame[y0:y1]).reshape(-1), rows.reshape(-1))
