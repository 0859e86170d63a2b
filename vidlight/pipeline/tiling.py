"""Tiled inference for heavy models on big frames: overlapping tiles, blended with linear ramps.

A model runs in three phases (:func:`phases`): ``tile_prepare`` on the whole frame (the cheap
global part: KinD's min-max normalisation, LLFlow's histogram equalisation and padding,
EnlightenGAN's halving of very wide frames), ``tile_body`` on tiles of the prepared tensor (the
network: local, so a tile needs only some context around it), and ``tile_finish`` on the whole
frame again (MBLLEN's percentile stretch, LLFlow's crop). A model without these methods is run
as one body. ``finish(body(prepare(x)))`` is the model's ``forward``, bit for bit.

Tiles overlap by ``overlap`` pixels; in the overlap, each output pixel is a weighted mean of the
tiles covering it, with weights falling linearly towards each tile's inner edges, so seams are
blended rather than cut. How far tiled output is from untiled output depends on the receptive
field of the network and the overlap: tests/test_tiling.py states it per model.

The automatic choice (:func:`choose_tile`) compares the model's declared peak activation memory
(``peak_bytes_per_pixel``, fp32, measured on the CPU by tests/test_tiling.py) with the memory
free on the device, and tiles only when a whole frame batch would not fit in half of it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from vidlight.models.hooks import hooks_of

MIN_TILE = 64
DEFAULT_OVERLAP = 64
# Fraction of the free memory a batch's activations may take (the rest: the encoder, the
# decoder's frames, the allocator's slack).
MEMORY_BUDGET = 0.5


def phases(model: nn.Module):
    """``(prepare, body, finish)`` of ``model``; a model without tile hooks is one body."""
    prepare = getattr(model, "tile_prepare", None) or (lambda x: (x, None))
    body = getattr(model, "tile_body", None) or model
    finish = getattr(model, "tile_finish", None) or (lambda y, ctx: y)
    return prepare, body, finish


def _starts(length: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Tile origins along one axis: a step of ``tile - overlap`` (rounded down to
    ``multiple``), the last tile flush with the end."""
    if tile >= length:
        return [0]
    step = max(multiple, (tile - overlap) // multiple * multiple)
    starts = list(range(0, length - tile, step))
    last = length - tile
    if starts[-1] != last:
        starts.append(last)
    return starts


def _rise(n: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Weights of the later tile across an overlap of ``n`` pixels (the earlier tile gets one
    minus them): 0 over the first quarter, where the later tile lacks context, a linear ramp
    over the middle half, 1 over the last quarter, where the earlier tile lacks it."""
    margin = n // 4
    ramp = n - 2 * margin
    w = torch.zeros(n, dtype=dtype, device=device)
    w[margin : margin + ramp] = torch.arange(1, ramp + 1, dtype=dtype, device=device) / (ramp + 1)
    w[margin + ramp :] = 1
    return w


def _ramp(length: int, before: int, after: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Weights along one axis of a tile: rising across the ``before`` pixels shared with the
    previous tile, falling across the ``after`` pixels shared with the next, 1 elsewhere."""
    w = torch.ones(length, dtype=dtype, device=device)
    if before > 0:
        w[:before] = _rise(before, dtype=dtype, device=device)
    if after > 0:
        w[length - after :] *= 1 - _rise(after, dtype=dtype, device=device)
    return w


def _axis(length: int, tile: int, overlap: int, multiple: int) -> list[tuple[int, int, int, int]]:
    """``(start, end, overlap with previous, overlap with next)`` of each tile along an axis."""
    starts = _starts(length, tile, overlap, multiple)
    ends = [min(length, s + tile) for s in starts]
    out = []
    for i, (s, e) in enumerate(zip(starts, ends)):
        before = ends[i - 1] - s if i > 0 else 0
        after = e - starts[i + 1] if i + 1 < len(starts) else 0
        out.append((s, e, before, after))
    return out


def run_tiled(body, inner: torch.Tensor, tile: int, overlap: int = DEFAULT_OVERLAP, multiple: int = 1) -> torch.Tensor:
    """``body`` applied to overlapping ``tile`` x ``tile`` crops of ``inner`` (N x C x H x W),
    blended into one N x C' x H x W output. The overlap is at most half a tile."""
    h, w = inner.shape[-2:]
    overlap = min(overlap, tile // 2)
    if tile >= h and tile >= w:
        return body(inner)
    rows, cols = _axis(h, tile, overlap, multiple), _axis(w, tile, overlap, multiple)
    out: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    for y0, y1, top, bottom in rows:
        for x0, x1, left, right in cols:
            piece = body(inner[..., y0:y1, x0:x1])
            if out is None:
                out = torch.zeros((*piece.shape[:-2], h, w), dtype=piece.dtype, device=piece.device)
                weight = torch.zeros((h, w), dtype=piece.dtype, device=piece.device)
            wy = _ramp(y1 - y0, top, bottom, dtype=piece.dtype, device=piece.device)
            wx = _ramp(x1 - x0, left, right, dtype=piece.dtype, device=piece.device)
            mask = wy[:, None] * wx[None, :]
            assert out is not None and weight is not None
            out[..., y0:y1, x0:x1] += piece * mask
            weight[y0:y1, x0:x1] += mask
    assert out is not None and weight is not None
    return out / weight


def tiled_forward(
    model: nn.Module, x: torch.Tensor, tile: int, overlap: int = DEFAULT_OVERLAP, *, split: tuple | None = None
) -> torch.Tensor:
    """The model's output for ``x``, its network run on tiles of at most ``tile`` pixels a side
    (or what ``split``, another ``(prepare, body, finish)`` of the model, computes)."""
    prepare, body, finish = split or phases(model)
    inner, ctx = prepare(x)
    multiple = hooks_of(model).tile_multiple
    tile = max(multiple, tile // multiple * multiple)
    return finish(run_tiled(body, inner, tile, overlap, multiple), ctx)


def available_memory(device: torch.device) -> int:
    """Bytes free for this process on ``device``: CUDA's free memory plus what PyTorch's caching
    allocator holds reserved but unused (free to this process, not to the driver), or on the CPU
    the kernel's MemAvailable, capped by a cgroup (container) limit when there is one."""
    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + cached
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        pass
    if free is None:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(0, free)


def choose_tile(
    model: nn.Module,
    height: int,
    width: int,
    batch: int,
    *,
    device: torch.device,
    fp16: bool = False,
    free_bytes: int | None = None,
) -> int | None:
    """Tile side for ``batch`` frames of ``height`` x ``width``, or None when whole frames fit.

    Needs the model's ``peak_bytes_per_pixel`` (fp32 activations at the peak, per input pixel);
    models without it are light enough never to need tiles.
    """
    per_pixel = hooks_of(model).peak_bytes_per_pixel
    if per_pixel is None:
        return None
    need = per_pixel * (0.5 if fp16 else 1.0) * batch
    budget = (available_memory(device) if free_bytes is None else free_bytes) * MEMORY_BUDGET
    if need * height * width <= budget:
        return None
    multiple = hooks_of(model).tile_multiple
    side = int(math.sqrt(budget / need))
    # a tile's activations grow with (side + overlap)^2 at most; leave room for that
    side = max(MIN_TILE, side - DEFAULT_OVERLAP)
    return max(multiple, side // multiple * multiple)


def parse_tile(value: str | int | None) -> int | None | str:
    """``--tile`` value: "auto" (None here means auto), "off"/0 -> 0, or a side in pixels."""
    if value is None or value == "auto":
        return "auto"
    if value in ("off", "none", 0, "0"):
        return 0
    try:
        side = int(value)
    except (TypeError, ValueError):
        side = -1
    if side < MIN_TILE:
        from vidlight.errors import VidlightError

        raise VidlightError(f"tile must be auto, off or a side of at least {MIN_TILE} pixels, got {value!r}")
    return side
