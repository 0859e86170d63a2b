"""SCI's illumination network on a CPU, compiled by Numba: the whole network of a band of rows
in one call, streamed row by row through buffers that stay in the cache.

With three channels a 3x3 convolution is 81 multiply-adds per pixel; oneDNN is made for many
channels and OpenCV's 2-D filters take one pass over memory per input and output plane. Here
each output row of all three channels is summed in place from the nine input rows it reads,
and each layer keeps only its last three rows: the input is read once (as planes: OpenCV
splits the band's samples in one SIMD pass) and the output written once, as planes that
OpenCV then interleaves. The sums are fp32, without fast-math reassociation: within 1e-6 of torch's
convolutions.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from vidlight.jit import compiled

# Each thread keeps its ring of rows, three rows of each layer but the last (a few hundred kB
# at 1080p, so they stay in the cache), and the band's output as planes.
_scratch = threading.local()


@compiled
def _conv_row(above, row, below, has_above, has_below, weight, bias, dst, mode):  # pragma: no cover - compiled
    """One output row (3 x (W + 2), zero columns at both ends) of a 3x3 convolution with zero
    padding, from the three input rows around it (``has_above``/``has_below`` False: that row
    is outside the frame, i.e. zero). ``mode`` 0: as is; 1: ReLU; 2: ``row + ReLU(...)`` (the
    residual block)."""
    width = dst.shape[1] - 2
    d0, d1, d2 = dst[0], dst[1], dst[2]
    for x in range(1, width + 1):
        d0[x] = bias[0]
        d1[x] = bias[1]
        d2[x] = bias[2]
    for i in range(3):
        for ky in range(3):
            if ky == 0:
                if not has_above:
                    continue
                s = above[i]
            elif ky == 1:
                s = row[i]
            else:
                if not has_below:
                    continue
                s = below[i]
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
            d, skip = dst[c], row[c]
            for x in range(1, width + 1):
                v = max(d[x], np.float32(0.0))
                d[x] = v + skip[x] if mode == 2 else v


@compiled
def _band(planes, scale, out, y0, y1, layers, w_in, b_in, w_mid, b_mid, w_out, b_out, ring):  # pragma: no cover
    """``out`` (rows ``y0..y1`` as planes: (y1 - y0) x 3 x (W + 2), zero columns at both ends)
    = the output convolution (``w_out``, ``b_out``) of the network for the input ``planes x
    scale``: the frame's three channels as C-contiguous planes of any dtype (8/16-bit samples
    are scaled as they are read), holding its rows ``max(0, y0 - 2 - layers)`` to ``y1 + 2 +
    layers`` (at most the frame's last). Streamed row by row: ``ring[k]`` holds the last three
    rows of layer k (layer 0: the input), so each input row is read once and every layer's
    rows stay in the cache. A row of layer k is made as soon as the row below it in layer k - 1
    exists, and only where the output rows need it; rows beyond the band's context are zero,
    so the result does not depend on the banding."""
    red, green, blue = planes
    width = red.shape[1]
    depth = 2 + layers  # convolutions
    a = max(0, y0 - depth)
    rows = red.shape[0]
    for t in range(rows + depth):
        if t < rows:  # the next input row, between the zero columns
            slot = ring[0, t % 3]
            s0, s1, s2 = slot[0], slot[1], slot[2]
            r0, r1, r2 = red[t], green[t], blue[t]
            for x in range(width):
                s0[x + 1] = np.float32(r0[x]) * scale
                s1[x + 1] = np.float32(r1[x]) * scale
                s2[x + 1] = np.float32(r2[x]) * scale
        for k in range(1, depth + 1):
            r = t - k  # the row of layer k whose rows below now exist in layer k - 1
            if r < max(0, y0 - a - (depth - k)) or r >= min(rows, y1 - a + (depth - k)):
                continue
            src = ring[k - 1]
            has_above, has_below = r >= 1, r + 1 < rows
            above = src[(r - 1) % 3] if has_above else src[r % 3]
            below = src[(r + 1) % 3] if has_below else src[r % 3]
            if k == 1:
                _conv_row(above, src[r % 3], below, has_above, has_below, w_in, b_in, ring[1, r % 3], 1)
            elif k < depth:
                _conv_row(above, src[r % 3], below, has_above, has_below, w_mid, b_mid, ring[k, r % 3], 2)
            else:
                _conv_row(above, src[r % 3], below, has_above, has_below, w_out, b_out, out[a + r - y0], 0)


@compiled
def _finish(frame, scale, out):  # pragma: no cover - compiled
    """``out = clamp(1 / (1 + out) + frame * scale, 1e-4, 1)``, ``out`` holding exp(-logit) (flat
    arrays; numpy's error model lets the division vectorise)."""
    lo, hi = np.float32(1e-4), np.float32(1.0)
    for j in range(out.size):
        out[j] = min(max(hi / (hi + out[j]) + np.float32(frame[j]) * scale, lo), hi)


@compiled
def _quantise(frame, scale, divisor, out):  # pragma: no cover - compiled
    """``out = clamp(frame * scale / divisor, 0, 1)`` in ``out``'s integer levels, rounded (flat
    arrays): the pipeline's division and quantisation in one pass, in the order and precision
    of the torch operations they replace (fp32 ``div``, ``clamp``, ``mul``, ``add`` 0.5, a
    truncating cast), so the levels are theirs."""
    peak = np.float32(np.iinfo(out.dtype).max)
    zero, one, half = np.float32(0.0), np.float32(1.0), np.float32(0.5)
    for j in range(out.size):
        v = min(max((np.float32(frame[j]) * scale) / divisor[j], zero), one)
        out[j] = v * peak + half


def _buffers(depth: int, width: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's ring of rows for a network of ``depth`` convolutions on rows ``width``
    wide, and its planes for ``rows`` output rows."""
    ring = getattr(_scratch, "ring", None)
    if ring is None or ring.shape[0] != depth or ring.shape[-1] != width + 2:
        # Zeros: the columns at both ends are the padding and are never written.
        ring = _scratch.ring = np.zeros((depth, 3, 3, width + 2), np.float32)
    planes = getattr(_scratch, "planes", None)
    if planes is None or planes.shape[0] < rows or planes.shape[-1] != width + 2:
        planes = _scratch.planes = np.zeros((rows, 3, width + 2), np.float32)
    return ring, planes[:rows]


def _as_planes(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rows`` (n x W x 3) as three C-contiguous n x W planes: OpenCV's split (one SIMD pass)
    where the samples of each row are interleaved (rows may be padded), else copies of the
    channels."""
    size = rows.itemsize
    interleaved = rows.strides[1:] == (3 * size, size) and rows.strides[0] >= rows.shape[1] * 3 * size
    if interleaved and rows.dtype in (np.uint8, np.uint16, np.float32):
        red, green, blue = cv2.split(rows)
    else:
        red, green, blue = (np.ascontiguousarray(rows[..., c]) for c in range(3))
    return red, green, blue


def _rows_of(frame: np.ndarray, y0: int, y1: int) -> np.ndarray:
    return np.ascontiguousarray(frame[y0:y1]).reshape(-1)


def illumination(
    frame: np.ndarray, out: np.ndarray, y0: int, y1: int, layers: int, params: list[np.ndarray], scale: float = 1.0
) -> None:
    """``out`` (rows ``y0..y1``: (y1 - y0) x W x 3 fp32, C-contiguous) = SCI's illumination,
    ``clamp(sigmoid(conv(...)) + x, 1e-4, 1)``, for the input ``x = frame * scale`` (``frame``
    H x W x 3, fp32 or 8/16-bit samples, any strides). ``params``: the input conv's weight and
    bias, the residual block's (BatchNorm folded in), the output conv's. Reads ``2 + layers``
    rows of context above and below; releases the GIL. The sigmoid's exp is OpenCV's
    (vectorised; Numba's would be a scalar call per value)."""
    if out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"the illumination is written to C-contiguous fp32 rows, not {out.dtype} with {out.strides}")
    if y1 <= y0:
        return
    factor = np.float32(scale)
    depth = 2 + layers
    w_in, b_in, w_mid, b_mid, w_out, b_out = params
    ring, result = _buffers(depth, frame.shape[1], y1 - y0)
    planes = _as_planes(frame[max(0, y0 - depth) : min(frame.shape[0], y1 + depth)])
    # The output convolution with its weights negated gives minus its value exactly (a sign
    # flip is exact, and rounding is symmetric), ready for the sigmoid's exp(-z).
    _band(planes, factor, result, y0, y1, layers, w_in, b_in, w_mid, b_mid, -w_out, -b_out, ring)
    cv2.merge([result[:, c, 1:-1] for c in range(3)], dst=out)
    cv2.exp(out, dst=out)
    _finish(_rows_of(frame, y0, y1), factor, out.reshape(-1))


def enhance_rows(
    frame: np.ndarray, out: np.ndarray, y0: int, y1: int, layers: int, params: list[np.ndarray], strength: float
) -> None:
    """Rows ``y0..y1`` of SCI's output at ``strength`` for one 8/16-bit H x W x 3 frame, rounded
    into ``out`` ((y1 - y0) x W x 3, uint8 or uint16, C-contiguous): ``x / L ** s`` clamped to
    [0, 1], with ``L ** s`` as ``exp(s log L)`` in fp32 (OpenCV's log and exp). The levels of the
    model's forward in torch followed by the pipeline's quantisation, without the float frames
    between them."""
    if frame.dtype not in (np.uint8, np.uint16) or out.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"frames and output are 8/16-bit samples, not {frame.dtype} and {out.dtype}")
    shape = (y1 - y0, frame.shape[1], 3)
    if not 0 <= y0 <= y1 <= frame.shape[0] or frame.shape[2:] != (3,) or out.shape != shape:
        raise ValueError(f"rows {y0}..{y1} of a {frame.shape} frame do not fit an output of {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError("the output rows must be C-contiguous")
    if y1 == y0:
        return
    scale = 1.0 / np.iinfo(frame.dtype).max
    held = getattr(_scratch, "rows", None)
    if held is None or held.size < np.prod(shape):
        held = _scratch.rows = np.empty(shape, np.float32)
    rows = held.reshape(-1)[: np.prod(shape)].reshape(shape)
    illumination(frame, rows, y0, y1, layers, params, scale)
    if strength != 1.0:
        cv2.log(rows, dst=rows)
        np.multiply(rows, np.float32(strength), out=rows)
        cv2.exp(rows, dst=rows)
    _quantise(_rows_of(frame, y0, y1), np.float32(scale), rows.reshape(-1), out.reshape(-1))
