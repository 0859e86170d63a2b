"""Runs a model on batches of 8/16-bit RGB frames and returns quantised frames.

On CUDA the batch is staged in pinned host memory, copied asynchronously, optionally run
in fp16, quantised on the device and copied back once per batch. On the CPU, models with a
bounded receptive field run in horizontal strips (with enough overlap that the result is
the whole-frame result): a strip's intermediates stay in cache, which on a 2-core machine is
worth about 2x for SCI.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
from torch import nn

from vidlight.errors import VidlightError
from vidlight.models import load_model
from vidlight.models.hooks import hooks_of
from vidlight.models.strength import apply_strength, strength_phases, terms_of
from vidlight.pipeline.exposure import ExposureControl, PreviewStats, preview_size, preview_stats
from vidlight.pipeline.stages import MODEL_WORKERS, timed
from vidlight.pipeline.temporal import StatisticsSmoother
from vidlight.pipeline.tiling import DEFAULT_OVERLAP, MIN_TILE, choose_tile, tiled_forward
from vidlight.settings import EngineSettings

log = logging.getLogger("vidlight")

# Strip height is chosen so that one strip (of one frame) holds about this many pixels.
_STRIP_PIXELS = 160_000

# How much lower the strip workers' scheduling priority is than the thread that starts them (a
# nice value; Linux, where each thread has its own). The encoder's threads can use the cores
# only part of the time (a frame waits for rows of the one before it); with the workers at
# the same priority, they take turns, and the model then blocks on a full queue while the
# encoder runs alone. Below it, the workers take what the codecs leave: 720p SCI 30.3 -> 33.2
# fps on 2 cores, 1080p 14.3 -> 15.3. Busy threads of other programs come first too (within
# the same scheduling group). The environment variable VIDLIGHT_STRIP_NICENESS overrides it
# (0: the caller's priority).
STRIP_NICENESS = 10


def strip_niceness() -> int:
    """:data:`STRIP_NICENESS`, or VIDLIGHT_STRIP_NICENESS where that is set (0..19)."""
    value = os.environ.get("VIDLIGHT_STRIP_NICENESS")
    if value is None:
        return STRIP_NICENESS
    try:
        return min(19, max(0, int(value)))
    except ValueError:
        log.warning("VIDLIGHT_STRIP_NICENESS=%r is not a whole number; using %d", value, STRIP_NICENESS)
        return STRIP_NICENESS


class OutputBatches:
    """Output batches handed out again once nothing else holds them.

    A fresh batch larger than glibc's 32 MiB mapping threshold (a 1080p batch of four is 50
    MB at 16 bits) is new memory each time, which the kernel zeroes on first touch: 4-5 ms
    of system time per 1080p frame. The pipeline's frames are views of their batch, so the
    batch's reference count says when the last of them has gone (the smoothing's look-ahead,
    the queues, the encoder); only then is it handed out again. At most ``keep`` are kept.
    """

    def __init__(self, keep: int = 6) -> None:
        self.keep = keep
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype``: a free kept one, or a new one."""
        dtype = np.dtype(dtype)
        with self._lock:
            arrays = self._arrays
            for i in range(len(arrays) - 1, -1, -1):
                # Held only by this list (and getrefcount's argument): nobody else has it.
                # (CPython's reference counts; every view, tensor and frame of a batch holds
                # a reference to it.)
                if sys.getrefcount(arrays[i]) == 2:
                    if arrays[i].shape == shape and arrays[i].dtype == dtype:
                        return arrays[i]
                    del arrays[i]  # another size (a stream that changed size): let it go
            array = np.empty(shape, dtype)
            if len(arrays) < self.keep:
                arrays.append(array)
            return array


def default_batch_size(device: torch.device) -> int:
    return 8 if device.type == "cuda" else 4


def prepare_engine(engine: EngineSettings) -> tuple[torch.device, int]:
    """The device a run uses (:class:`VidlightError` when it is not there) and its batch size."""
    dev = resolve_device(engine.device)
    if engine.fp16 and dev.type != "cuda":
        log.warning("fp16 needs a CUDA device; running in fp32 on %s", dev.type)
    return dev, engine.batch_size or default_batch_size(dev)


def load_engine_model(engine: EngineSettings, dev: torch.device) -> tuple[nn.Module, bool]:
    """The engine's model, loaded by name (or as given), and whether it runs in fp16 (default:
    on CUDA, unless the model's ``fp16_default`` is False)."""
    model = engine.model
    if isinstance(model, str):
        model = load_model(model, weights=engine.weights, **(engine.model_options or {}))
    fp16 = engine.fp16
    if fp16 is None:
        fp16 = dev.type == "cuda" and hooks_of(model).fp16_default
    return model, fp16


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as a device; :class:`VidlightError` for anything
    else (the pipeline has a CPU path and a CUDA path, nothing for other backends)."""
    if str(device).strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(str(device).strip().lower())
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda") or (parsed.type == "cpu" and parsed.index not in (None, 0)):
        raise VidlightError(f"unknown device {str(device)!r}: use auto, cpu, cuda or cuda:N")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise VidlightError(f"device {str(device)!r} was asked for, but PyTorch sees no CUDA GPU; use cpu or auto")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise VidlightError(
                f"device {str(device)!r}: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s), numbered from 0"
            )
        exact_fp32()
    return parsed


def exact_fp32() -> None:
    """Make fp32 on CUDA mean fp32: PyTorch lets cuDNN convolutions use TF32 (10-bit mantissa)
    on Ampere and later by default, so ``--fp32`` and the models whose default is fp32 (LLFlow)
    would not compute what the CPU and the official code compute."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def to_model_input(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8/uint16 N x H x W x 3 frames -> N x 3 x H x W in [0, 1] of ``dtype`` (channels last).

    16-bit frames are scaled in fp32 before a cast to half: half's largest finite value is
    65504, so casting first would turn every sample from 65520 up into inf.
    """
    peak = 255.0 if frames.dtype == torch.uint8 else 65535.0
    x = frames.permute(0, 3, 1, 2)
    if frames.dtype != torch.uint8 and dtype != torch.float32:
        return x.to(torch.float32, memory_format=torch.channels_last).mul_(1.0 / peak).to(dtype)
    return x.to(dtype, memory_format=torch.channels_last).mul_(1.0 / peak)


class FrameEnhancer:
    """Callable mapping N x H x W x 3 uint8 (or uint16) RGB frames to enhanced frames of the same
    dtype (16 bits for 8-bit input with ``keep_precision``).

    Args:
        model: a vidlight model (``forward`` maps N x 3 x H x W float in [0, 1] to the same);
            it is moved to ``device`` (and to half precision for fp16) in place.
        device: where the model runs.
        fp16: run the model in half precision (CUDA only).
        tile: ``"auto"`` (tile when a batch would not fit in the free memory), 0 (never) or
            the side of the tiles in pixels (see :mod:`vidlight.pipeline.tiling`).
        tile_overlap: pixels shared by neighbouring tiles.
        statistics_time: average the per-frame statistics of the models that have them (MBLLEN,
            KinD) over this many seconds (None: frame by frame).
        keep_precision: return 8-bit input's frames as 16-bit (0..65535), so that the temporal
            stage, which multiplies them by a gain, rounds to 8 bits once, after its gain: a
            gain of 1.002 is lost to a second rounding (60 x 1.002 rounds to 60), while the
            model's own sub-step detail keeps the rounding of the result bound to the picture.
        strength: how much of the method each frame gets (:mod:`vidlight.models.strength`):
            1 (default) runs the official computation as it is, 0 returns the input, ``"auto"``
            chooses per frame from the scene (:mod:`vidlight.pipeline.exposure`).
        exposure_time: the time constant of ``"auto"``'s average over time, seconds.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: torch.device,
        fp16: bool = False,
        tile: int | str = "auto",
        tile_overlap: int = DEFAULT_OVERLAP,
        statistics_time: float | None = None,
        keep_precision: bool = False,
        strength: float | str = 1.0,
        exposure_time: float | None = None,
    ) -> None:
        self.device = device
        self.keep_precision = keep_precision
        self.tile = tile
        self.tile_overlap = tile_overlap
        self._auto_tiles: dict[tuple[int, int], tuple[int, int | None]] = {}  # (h, w) -> (batch, tile)
        self._tile_caps: dict[tuple[int, int], int] = {}  # (h, w) -> the tile that fitted after running out of memory
        self.fp16 = fp16 and device.type == "cuda"
        self.dtype = torch.float16 if self.fp16 else torch.float32
        self.model = model.to(device=device, dtype=self.dtype).eval()
        self.hooks = hooks_of(model)
        self.halo = self.hooks.receptive_halo
        # Clip models (mbllen-video) treat a batch as consecutive frames of one clip.
        self.clip_context = self.hooks.clip_context
        self._context: torch.Tensor | None = None
        # Models that normalise each frame by its own statistics (MBLLEN, KinD) get them
        # averaged over time instead.
        self.statistics: StatisticsSmoother | None = None
        self.averages_statistics = self.hooks.averages_statistics
        if statistics_time and self.averages_statistics:
            self.statistics = StatisticsSmoother(time_constant=statistics_time)
        self._pinned: dict[str, torch.Tensor] = {}
        self.strength = strength if strength == "auto" else float(strength)
        self.exposure: ExposureControl | None = None
        if strength == "auto":
            self.exposure = ExposureControl(**({} if exposure_time is None else {"time_constant": exposure_time}))
        self.last_strengths: list[float] = []  # the strength each frame of the last call got
        self.last_previews: list[PreviewStats | None] = []  # and what "auto" measured to choose it
        # CPU strips run on a pool of single-threaded workers (as many as torch's thread setting,
        # which OMP_NUM_THREADS controls) rather than on torch's OpenMP threads: an OpenMP
        # barrier stalls whenever the encoder holds a core, a pool does not. Models without a
        # bounded receptive field run whole frames on it instead, a share of the batch per
        # worker, when their frames are independent (no clip, no statistics averaged in order).
        self.frame_parallel = self.halo is None and not self.clip_context and not self.averages_statistics
        uses_pool = self.halo is not None or self.frame_parallel
        self.workers = torch.get_num_threads() if device.type == "cpu" and uses_pool else 0
        self._outputs = OutputBatches()
        self._pool = (
            ThreadPoolExecutor(
                self.workers,
                thread_name_prefix="vidlight-strip",
                initializer=_lower_priority,
                initargs=(strip_niceness(),),
            )
            if self.workers > 1
            else None
        )

    def _buffer(self, key: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        """A page-locked host buffer (on CUDA) for a batch of ``shape`` (N x frame shape): one
        per ``key``, as large as the largest batch of the current frame size and dtype, so that
        page-locked memory does not grow with every batch size seen (a short batch at a cut or
        at the end is a view of it). A new frame size or dtype replaces it."""
        n, frame = shape[0], tuple(shape[1:])
        held = self._pinned.get(key)
        if held is None or tuple(held.shape[1:]) != frame or held.dtype != dtype or len(held) < n:
            held = self._pinned[key] = torch.empty((n, *frame), dtype=dtype, pin_memory=self.device.type == "cuda")
        return held[:n]

    def _run_clip(self, frames: torch.Tensor, strength: torch.Tensor | None = None) -> torch.Tensor:
        """A clip model's batch, run behind the last ``clip_context`` frames of the previous
        batch (same size), so windows join without a seam and without waiting for later frames."""
        context = self._context
        if context is not None and (context.shape[1:] != frames.shape[1:] or context.dtype != frames.dtype):
            context = None
        clip = frames if context is None else torch.cat([context, frames])
        self._context = clip[-self.clip_context :].clone()
        if strength is not None and context is not None:
            # The context frames' outputs are dropped; their strength only has to be one.
            strength = torch.cat([strength[:1].expand(len(context)), strength])
        out = self._run(clip, strength)
        return out if context is None else out[len(context) :]

    def close(self) -> None:
        """End the CPU worker pool's threads; the enhancer runs on the calling thread afterwards."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def reset(self) -> None:
        """Forget the previous frames (a scene cut, a new stream)."""
        self._context = None
        if self.statistics is not None:
            self.statistics.reset()
        if self.exposure is not None:
            self.exposure.reset()

    def _run(
        self,
        frames: torch.Tensor,
        strength: torch.Tensor | None = None,
        batch_shape: torch.Size | None = None,
        *,
        rows: tuple[int, int] | None = None,
        into: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """uint8/uint16 N x H x W x 3 on the device -> enhanced, in :meth:`output_dtype`, at
        ``strength`` (one per frame; None: the official computation). ``batch_shape``: the
        model-input shape the tile is chosen for, when these frames are a share of a batch
        whose shares run at the same time. ``rows``: only these rows of the result (a strip
        without its halo); ``into``: written there (N x rows x W x 3) rather than to a new
        tensor."""
        x = to_model_input(frames, self.dtype)
        while True:
            tile = self._tile_for(batch_shape or x.shape)
            try:
                y = self._forward(x, tile, strength)
                break
            except torch.cuda.OutOfMemoryError:
                self._smaller_tiles(batch_shape or x.shape, tile)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()  # out of the handler: the failed forward's tensors are gone
        if rows is not None:
            y = y[:, :, rows[0] : rows[1]]
        dtype = self.output_dtype(frames.dtype)
        y = y.float().clamp_(0.0, 1.0).mul_(255.0 if dtype == torch.uint8 else 65535.0).add_(0.5)
        if into is None:
            return y.to(dtype).permute(0, 2, 3, 1)  # truncates: the 0.5 makes it round
        return into.copy_(y.permute(0, 2, 3, 1))  # the same conversion, without a tensor between

    def _forward(self, x: torch.Tensor, tile: int | None, strength: torch.Tensor | None) -> torch.Tensor:
        if strength is None:
            return tiled_forward(self.model, x, tile, self.tile_overlap) if tile else self.model(x)
        if tile:
            terms = tiled_forward(self.model, x, tile, self.tile_overlap, split=strength_phases(self.model))
        else:
            terms = terms_of(self.model, x)
        return apply_strength(self.model, x, terms, strength.to(self.device, self.dtype))

    def _smaller_tiles(self, shape: torch.Size, tile: int | None) -> None:
        """After running out of device memory with ``tile`` (None: whole frames): with ``--tile
        auto``, halve the tiles for this frame size (the declared peak is an estimate, and other
        processes take memory too); else, or below the smallest tile, a one-line error."""
        n, _, h, w = tuple(shape)
        what = f"{tile} px tiles" if tile else "whole frames"
        if self.tile != "auto":
            raise VidlightError(
                f"out of {self.device} memory running {n} frame(s) of {w}x{h} on {what}: "
                "use a smaller --tile (or --tile auto) or a smaller --batch-size"
            )
        multiple = self.hooks.tile_multiple
        side = (tile or max(h, w)) // 2 // multiple * multiple
        if side < MIN_TILE:
            raise VidlightError(
                f"out of {self.device} memory even on {what} ({n} frame(s) of {w}x{h}): "
                "use --batch-size 1, or --device cpu"
            )
        log.warning(
            "out of %s memory on %d frame(s) of %dx%d with %s: running the model on %d px tiles",
            self.device,
            n,
            w,
            h,
            what,
            side,
        )
        self._auto_tiles[(h, w)] = (n, side)
        self._tile_caps[(h, w)] = side  # a later, larger batch of this size starts no larger

    def output_dtype(self, input_dtype: torch.dtype) -> torch.dtype:
        """The dtype of enhanced frames for input of ``input_dtype`` (16 bits when keeping precision)."""
        return torch.uint16 if self.keep_precision or input_dtype != torch.uint8 else torch.uint8

    def _tile_for(self, shape: torch.Size) -> int | None:
        if self.tile != "auto":
            return int(self.tile) or None
        # Chosen once per frame size (for the largest batch seen), so tiles and their seams do
        # not change from batch to batch with the free memory of the moment.
        n, _, h, w = tuple(shape)
        chosen = self._auto_tiles.get((h, w))
        if chosen is None or chosen[0] < n:
            tile = choose_tile(self.model, h, w, n, device=self.device, fp16=self.fp16)
            cap = self._tile_caps.get((h, w))
            if cap is not None:
                tile = min(tile or cap, cap)
            if tile:
                log.info("%dx%d frames do not fit in memory whole: running the model on %d px tiles", w, h, tile)
            chosen = self._auto_tiles[(h, w)] = (n, tile)
        return chosen[1]

    def _run_strips(self, frames: torch.Tensor, strength: torch.Tensor | None = None) -> torch.Tensor:
        n, h, w, _ = frames.shape
        if self.clip_context:
            return self._run_clip(frames, strength)
        if self.halo is None and self._pool is not None:
            if n > 1:
                return self._run_frame_shares(frames, strength)
            with torch_threads(self.workers):  # one frame: torch's own threads, as many as the pool's
                return self._run(frames, strength)
        rows = max(8, _STRIP_PIXELS // w)
        if self.halo is None or (rows >= h and self._pool is None):
            return self._run(frames, strength)
        halo = self.halo
        # numpy's memory, reused once the frames of an earlier batch are done with: torch's
        # allocator takes 4 kB pages, faulted in and zeroed one by one (a 1080p batch of four
        # is 50 MB at 16 bits: 12,000 faults per batch), and even numpy's huge pages are
        # zeroed by the kernel each time a batch is new memory.
        wide = self.output_dtype(frames.dtype) == torch.uint16
        out = torch.from_numpy(self._outputs.take(tuple(frames.shape), np.uint16 if wide else np.uint8))
        # A model may run a strip from the frame's samples to the output's levels in one
        # compiled pass (SCI), where its strips would not be tiled.
        strip_kernel = getattr(self.model, "strip_kernel", None)
        kernel = None
        if strip_kernel is not None and self._tile_for(torch.Size((1, 3, min(h, rows + 2 * halo), w))) is None:
            kernel = strip_kernel()

        # Strips of one frame each: a strip across the batch would recompute its halo rows
        # for every frame of it, at the same cost in memory per strip.
        def strip(i: int, y0: int) -> None:
            y1 = min(h, y0 + rows)
            if kernel is not None:
                s = 1.0 if strength is None else float(strength[i])
                kernel(frames[i].numpy(), y0, y1, s, out[i, y0:y1].numpy())
                return
            a, b = max(0, y0 - halo), min(h, y1 + halo)
            share = None if strength is None else strength[i : i + 1]
            with torch.inference_mode():
                self._run(frames[i : i + 1, a:b], share, rows=(y0 - a, y1 - a), into=out[i : i + 1, y0:y1])

        def pooled_strip(job: tuple[int, int]) -> None:
            with timed(MODEL_WORKERS):  # the caller's thread waits meanwhile: its time is not this
                strip(*job)

        jobs = [(i, y0) for i in range(n) for y0 in range(0, h, rows)]
        if self._pool is None:
            for job in jobs:
                strip(*job)
        else:
            list(self._pool.map(pooled_strip, jobs))
        return out

    def _run_frame_shares(self, frames: torch.Tensor, strength: torch.Tensor | None = None) -> torch.Tensor:
        """A batch of independent frames split over the pool's workers, whole frames each."""
        bounds = np.linspace(0, len(frames), min(len(frames), self.workers) + 1).round().astype(int)
        n, h, w, c = frames.shape
        whole = torch.Size((n, c, h, w))
        self._tile_for(whole)  # chosen once, here, for the whole batch: the shares run at the same time

        def share(i: int, j: int) -> torch.Tensor:
            with timed(MODEL_WORKERS), torch.inference_mode():
                return self._run(frames[i:j], None if strength is None else strength[i:j], whole)

        assert self._pool is not None, "frame shares run only with a pool"
        return torch.cat(list(self._pool.map(share, bounds[:-1], bounds[1:])))

    @torch.inference_mode()
    def __call__(
        self,
        frames: list[np.ndarray] | np.ndarray,
        seconds: Sequence[float | None] | None = None,
        *,
        statistics=None,
        exposure=None,
        reduced: Sequence[np.ndarray] | None = None,
    ) -> np.ndarray:
        """Enhance consecutive frames (uint8/uint16 H x W x 3); ``seconds``: their timestamps,
        for the models whose per-frame statistics are averaged over time and for the automatic
        strength's average.

        ``statistics``: what the model asks for its averaged statistics instead of this
        enhancer's own (called as ``statistics(key, index_in_batch, value)``; the many-stream
        server routes each frame of a mixed batch to its stream's averages). ``exposure``:
        likewise, what chooses each frame's strength with ``strength="auto"``
        (``exposure(index_in_batch, preview_stats)``). ``reduced``: smaller copies of the
        frames already made (the temporal stage's block means), which that strength's preview
        is made from instead of the frames where they are at least the preview's size.
        """
        if seconds is None:
            seconds = [None] * len(frames)
        if self.exposure is not None and exposure is None:
            self.exposure.begin(seconds)
            exposure = self.exposure
        strength = self._strengths(frames, exposure, reduced)
        if statistics is None:
            if self.statistics is None:
                return self._enhance(frames, strength)
            self.statistics.begin(seconds)
            statistics = self.statistics
        # Attached only while this enhancer runs the model, so the model object stays as loaded.
        self.model.statistics_smoother = statistics
        try:
            return self._enhance(frames, strength)
        finally:
            setattr(self.model, "statistics_smoother", None)  # noqa: B010  (a model attribute, not a submodule)

    def _strengths(
        self, frames: list[np.ndarray] | np.ndarray, exposure, reduced: Sequence[np.ndarray] | None = None
    ) -> torch.Tensor | None:
        """Each frame's strength (None: all 1, the official computation as it is)."""
        previews: list[PreviewStats | None] = [None] * len(frames)
        if self.strength == "auto":
            previews = list(self._preview(frames, reduced))
            chosen = [exposure(n, stats) for n, stats in enumerate(previews)]
        else:
            chosen = [self.strength] * len(frames)
        self.last_strengths, self.last_previews = chosen, previews
        if all(s == 1.0 for s in chosen):
            return None
        return torch.tensor(chosen, dtype=torch.float32)

    def _preview(self, frames: list[np.ndarray] | np.ndarray, reduced: Sequence[np.ndarray] | None = None):
        """The frames' small copies through the model, measured at every grid strength."""
        h, w = frames[0].shape[:2]
        ph, pw = preview_size(h, w)
        peak = 255.0 if frames[0].dtype == np.uint8 else 65535.0
        sources: Sequence[np.ndarray] | np.ndarray = frames
        if reduced is not None and len(reduced) == len(frames) and reduced[0].shape[1] >= pw:
            sources = reduced  # the same area averages from a quarter of the samples
        small = np.stack(
            [cv2.resize(f, (pw, ph), interpolation=cv2.INTER_AREA) if f.shape[:2] != (ph, pw) else f for f in sources]
        )
        x = torch.from_numpy(small.astype(np.float32) * np.float32(1 / peak)).permute(0, 3, 1, 2)
        return preview_stats(self.model, x.to(self.device, self.dtype))

    def _enhance(self, frames: list[np.ndarray] | np.ndarray, strength: torch.Tensor | None = None) -> np.ndarray:
        if self.device.type == "cpu":
            batch = torch.from_numpy(np.stack(frames) if isinstance(frames, list) else frames)
            return self._run_strips(batch, strength).numpy()
        first = frames[0]
        shape = (len(frames), *first.shape)
        dtype = torch.uint8 if first.dtype == np.uint8 else torch.uint16
        host_in = self._buffer("in", shape, dtype)
        for i, f in enumerate(frames):
            host_in[i].copy_(torch.from_numpy(f))
        run = self._run_clip if self.clip_context else self._run
        result = run(host_in.to(self.device, non_blocking=True), strength)
        host_out = self._buffer("out", shape, self.output_dtype(dtype))
        host_out.copy_(result, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()  # once per batch, not per frame
        return host_out.numpy().copy()


def _lower_priority(niceness: int) -> None:
    """The calling thread's nice value raised by ``niceness`` (to at most 19), on Linux only:
    elsewhere ``setpriority`` sets the whole process's."""
    if not niceness or not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + niceness))
    except OSError:  # not allowed here (a sandbox): the workers keep the caller's priority
        pass


@contextlib.contextmanager
def torch_threads(count: int):
    """Torch ops run on ``count`` threads each inside this block."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def single_threaded_ops():
    """Torch and OpenCV ops run on one thread each inside this block: the strip pool and the
    pipeline's stages do the parallelism, and the libraries' own threads would only contend
    with them (OpenCV's keep spinning after each call: a third more CPU time for the same wall
    time on SCI's strips). Both settings are the process's, so they hold for every thread
    while the block runs; enter it before a run's threads start and leave it after they end."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with torch_threads(1):
            yield
    finally:
        cv2.setNumThreads(previous)
