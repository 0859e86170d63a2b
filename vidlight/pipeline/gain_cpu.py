"""The temporal stage's gain onto 8 bits as one compiled pass (Numba).

Rounding ``gain x frame`` with hysteresis against the previous output, where the scene is
still, is a few per-sample tests; as OpenCV calls it is seven passes over the frame (three
scalings, a range test, a comparison, a combination, a masked copy), here one branch-free loop
that reads each sample once and vectorises.
"""

from __future__ import annotations

import numpy as np

from vidlight.jit import compiled


@compiled
def _gain_to_8_bits(src, gain, last, hysteresis, still, out):  # pragma: no cover - compiled
    """``out`` = ``src x gain`` rounded to 8 bits (half to even, saturated), except that a sample
    whose exact value lies within ``hysteresis`` of ``last`` keeps ``last`` where ``still`` is
    nonzero (flat arrays; an empty ``last``: no previous frame; an empty ``still``: still
    everywhere). Branch-free inside each loop, so it vectorises."""
    top = np.float32(255.0)
    if last.size == 0:
        for j in range(src.size):
            out[j] = np.uint8(min(np.rint(np.float32(src[j]) * gain), top))
    elif still.size == 0:
        for j in range(src.size):
            exact = np.float32(src[j]) * gain
            previous = np.float32(last[j])
            keep = abs(exact - previous) <= hysteresis
            out[j] = np.uint8(previous if keep else min(np.rint(exact), top))
    else:
        for j in range(src.size):
            exact = np.float32(src[j]) * gain
            previous = np.float32(last[j])
            keep = (abs(exact - previous) <= hysteresis) & (still[j] != 0)
            out[j] = np.uint8(previous if keep else min(np.rint(exact), top))


_NOTHING = np.zeros(0, np.uint8)


def gain_to_8_bits(
    output: np.ndarray, gain: float, last: np.ndarray | None, hysteresis: float, still: np.ndarray | None
) -> np.ndarray:
    """``output`` (integers) times ``gain`` onto 8 bits in one pass, keeping ``last``'s value
    (the previous 8-bit output, same shape) for samples within ``hysteresis`` of the exact value
    where ``still`` (one value per sample; None: everywhere) is nonzero."""
    previous, mask = _NOTHING, _NOTHING  # none: no previous frame; still everywhere
    if last is not None and hysteresis > 0:
        for name, other in (("last", last), ("still", still)):
            if other is not None and other.shape != output.shape:
                raise ValueError(f"{name} has shape {other.shape}, the frame {output.shape}")
        previous = last.reshape(-1)
        mask = _NOTHING if still is None else still.reshape(-1)
    out = np.empty(output.shape, np.uint8)
    _gain_to_8_bits(output.reshape(-1), np.float32(gain), previous, np.float32(hysteresis), mask, out.reshape(-1))
    return out
