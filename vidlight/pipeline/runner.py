"""The streaming pipeline: decode -> batch -> enhance -> encode, in concurrent stages.

Three threads joined by bounded queues, so memory does not grow with the video's length:
the reader decodes (FFmpeg releases the GIL), the caller's thread batches and runs the
model, the writer encodes and muxes. Packets of copied streams travel with the batch that
follows them, which keeps the output interleaved.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from vidlight.errors import MediaError, VidlightError
from vidlight.io.files import FileSink, FileSource, Frame
from vidlight.models import load_model
from vidlight.pipeline.enhancer import FrameEnhancer, resolve_device, single_threaded_torch
from vidlight.pipeline.temporal import DEFAULT_TIME_CONSTANT, TemporalSmoother
from vidlight.pipeline.tiling import DEFAULT_OVERLAP, parse_tile

log = logging.getLogger("vidlight")

_END = object()


class Interrupted(VidlightError):
    """The run was stopped by the user; the output holds what was done."""


@dataclass
class RunStats:
    """What a run did."""

    frames: int
    seconds: float
    corrupt_packets: int
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Blocking put that gives up once ``stop`` is set (so no thread waits forever)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _read(source: FileSource, q: queue.Queue, stop: threading.Event, max_frames: int | None) -> None:
    frames = 0
    try:
        for item in source:
            if isinstance(item, Frame):
                if max_frames is not None and frames >= max_frames:
                    return
                frames += 1
            if not _put(q, item, stop):
                return
    except BaseException as exc:  # handed to the main thread
        _put(q, _Failure(exc), stop)
    finally:
        _put(q, _END, stop)


def _write(sink: FileSink, q: queue.Queue, errors: list, bar) -> None:
    while True:
        item = q.get()
        if item is _END:
            return
        if errors:
            continue  # drain after a failure so the producer never blocks
        frames, pts, packets = item
        try:
            for rgb, p in zip(frames, pts):
                sink.write(rgb, p)
            for packet in packets:
                sink.mux_packet(packet)
        except BaseException as exc:
            errors.append(exc)
        if bar is not None:
            bar.update(len(frames))


def default_batch_size(device: torch.device) -> int:
    return 8 if device.type == "cuda" else 4


def enhance_video(
    input: str | Path,
    output: str | Path,
    *,
    model: str | torch.nn.Module = "sci",
    weights: str | None = None,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    fp16: bool | None = None,
    codec: str = "libx264",
    crf: int | None = 18,
    preset: str | None = "medium",
    overwrite: bool = False,
    progress: bool = True,
    model_options: dict | None = None,
    max_frames: int | None = None,
    tile: int | str = "auto",
    tile_overlap: int = DEFAULT_OVERLAP,
    smooth: bool = True,
    smooth_time: float = DEFAULT_TIME_CONSTANT,
) -> RunStats:
    """Enhance a video file into a new file, keeping timestamps, audio, colour tags and rotation.

    Args:
        input: the video to enhance.
        output: where to write; the container format follows its suffix.
        model: a model name (see :func:`vidlight.list_models`) or a loaded model.
        weights: weights for a model given by name (catalogue name or file path).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        batch_size: frames per model call (default 4 on CPU, 8 on CUDA).
        fp16: half precision on CUDA (default: on for CUDA, except for models whose
            ``fp16_default`` is False, e.g. LLFlow).
        codec, crf, preset: encoder settings.
        overwrite: replace an existing output.
        progress: show a progress bar.
        model_options: options for :func:`vidlight.load_model`.
        max_frames: stop after this many frames (the output is then complete and shorter).
        tile: ``"auto"`` (tile big frames when they would not fit in memory), ``"off"`` / 0,
            or a tile side in pixels; ``tile_overlap``: pixels shared by neighbouring tiles.
        smooth: smooth the output's low-resolution brightness over time, restarting at scene
            cuts (removes flicker; see :mod:`vidlight.pipeline.temporal`).
        smooth_time: the smoothing's time constant in seconds.

    Returns:
        :class:`RunStats`. If interrupted (Ctrl-C), the output is finalised with the frames
        done so far and :class:`Interrupted` is raised.
    """
    input, output = Path(input), Path(output)
    if output.exists() and not overwrite:
        raise VidlightError(f"{output} already exists; pass -y/--overwrite to replace it")
    if input.resolve() == output.resolve():
        raise VidlightError("the output must be a different file from the input")
    dev = resolve_device(device)
    tile = parse_tile(tile)
    if tile_overlap < 0:
        raise VidlightError(f"tile overlap must be at least 0 pixels, got {tile_overlap}")
    if batch_size is not None and batch_size < 1:
        raise VidlightError(f"batch size must be at least 1, got {batch_size}")
    if not smooth_time > 0:
        raise VidlightError(f"smoothing time constant must be above 0 seconds, got {smooth_time}")
    batch_size = batch_size or default_batch_size(dev)
    if fp16 and dev.type != "cuda":
        log.warning("fp16 needs a CUDA device; running in fp32 on %s", dev.type)
    source = FileSource(input)  # a bad input is reported before any model is loaded
    try:
        if isinstance(model, str):
            model = load_model(model, weights=weights, **(model_options or {}))
        if fp16 is None:
            fp16 = dev.type == "cuda" and getattr(model, "fp16_default", True)
        enhancer = FrameEnhancer(model, device=dev, fp16=fp16, tile=tile, tile_overlap=tile_overlap,
                                 statistics_time=smooth_time if smooth else None)
        sink = FileSink(output, source.info, copy_streams=source.copy_streams, codec=codec, crf=crf, preset=preset)
    except BaseException:
        source.close()
        raise
    rate = source.info.average_rate
    smoother = TemporalSmoother(time_constant=smooth_time, enabled=smooth,
                                default_dt=float(1 / rate) if rate else 1 / 30)
    return _run(source, sink, enhancer, batch_size, progress, max_frames, smoother)


def enhance_batch(
    enhancer: FrameEnhancer,
    smoother: TemporalSmoother | None,
    frames: list[np.ndarray],
    seconds: list[float | None],
    tags: list,
    *,
    end: bool = False,
) -> tuple[list[np.ndarray], list]:
    """Enhance a batch and smooth it; returns the frames now final and their tags, in order.

    The smoother holds back its look-ahead, so what comes out may be frames of earlier batches;
    ``end`` returns everything still held. A scene cut also restarts a clip model's context
    (mbllen-video), so a clip never mixes two scenes.
    """
    out: list[np.ndarray] = []
    if frames:
        cuts = smoother.scan(frames) if smoother is not None else []
        start = 0
        for cut in [*cuts, len(frames)]:
            if cut > start:
                out += list(enhancer(frames[start:cut], seconds[start:cut]))
            if cut < len(frames):
                enhancer.reset()
            start = cut
    if smoother is None:
        return out, list(tags)
    done = smoother.push(frames, out, seconds, tags) if frames else []
    if end:
        done += smoother.flush()
    return [f for f, _ in done], [t for _, t in done]


def _run(
    source: FileSource,
    sink: FileSink,
    enhancer: FrameEnhancer,
    batch_size: int,
    progress: bool,
    max_frames: int | None = None,
    smoother: TemporalSmoother | None = None,
) -> RunStats:
    from tqdm.auto import tqdm

    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(maxsize=2 * batch_size)
    encoded: queue.Queue = queue.Queue(maxsize=2)
    errors: list[BaseException] = []
    total = min(filter(None, (source.info.frames, max_frames)), default=None)
    bar = tqdm(total=total, unit="frame", desc=source.path.name, disable=not progress,
               dynamic_ncols=True)
    reader = threading.Thread(target=_read, args=(source, decoded, stop, max_frames), daemon=True, name="vidlight-read")
    writer = threading.Thread(target=_write, args=(sink, encoded, errors, bar), daemon=True, name="vidlight-write")
    # The strip pool does the CPU parallelism; torch's own threads would only contend with it.
    threads = single_threaded_torch() if getattr(enhancer, "workers", 0) > 1 else contextlib.nullcontext()
    start = time.perf_counter()
    reader.start()
    writer.start()
    interrupted = False
    failure: BaseException | None = None
    frames: list = []
    pts: list = []
    seconds: list = []
    packets: list = []

    def flush(*, end: bool = False) -> None:
        if frames or packets or end:
            out, tags = enhance_batch(enhancer, smoother, frames, seconds, pts, end=end)
            encoded.put((out, tags, list(packets)))
            frames.clear(), pts.clear(), seconds.clear(), packets.clear()

    try:
        with threads:
            while True:
                item = decoded.get()
                if item is _END:
                    break
                if isinstance(item, _Failure):
                    failure = item.exc
                    break
                if isinstance(item, Frame):
                    if frames and item.rgb.shape != frames[0].shape:
                        flush()  # a size change mid-stream starts a new batch
                    frames.append(item.rgb)
                    pts.append(item.pts)
                    seconds.append(item.time_seconds)
                    if len(frames) == batch_size:
                        flush()
                elif isinstance(item, av.Packet):
                    packets.append(item)
                if errors:
                    break
            if failure is None and not errors:
                flush(end=True)
    except KeyboardInterrupt:
        interrupted = True
        if smoother is not None:
            # Frames the smoother still holds for its look-ahead are finished, not lost.
            done = smoother.flush()
            encoded.put(([f for f, _ in done], [t for _, t in done], []))
    except BaseException as exc:
        failure = exc
    finally:
        stop.set()
        encoded.put(_END)
        writer.join()
        reader.join(timeout=5)
        bar.close()
        source.close()
    failure = failure or (errors[0] if errors else None)
    # A run that failed part-way leaves nothing behind; an interrupted one keeps a playable file.
    try:
        sink.close(complete=failure is None)
    except VidlightError as exc:
        failure = failure or exc
    stats = RunStats(sink.frames_written, time.perf_counter() - start, source.corrupt_packets, interrupted)
    if failure is not None:
        if isinstance(failure, VidlightError):
            raise failure
        if isinstance(failure, av.error.FFmpegError):
            raise MediaError(f"failed on {source.path} -> {sink.output}: {failure}") from failure
        raise failure
    if source.corrupt_packets:
        log.warning("%s: skipped %d corrupt packet(s)", source.path, source.corrupt_packets)
    if interrupted:
        if stats.frames == 0:
            raise Interrupted("interrupted before the first frame was done; nothing was written")
        raise Interrupted(f"interrupted: {sink.output} holds the first {stats.frames} frames")
    if stats.frames == 0:
        raise MediaError(f"no frame of {source.path} could be decoded")
    return stats
