"""The streaming pipeline: decode -> batch -> enhance -> encode, in concurrent stages.

Three threads joined by bounded queues, so memory does not grow with the video's length:
the reader decodes (FFmpeg releases the GIL), the caller's thread batches and runs the
model, the writer encodes and muxes. Packets of copied streams travel with the batch that
follows them, which keeps the output interleaved.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import av
import numpy as np
import torch

from vidlight.errors import MediaError, VidlightError
from vidlight.io.files import Frame
from vidlight.io.live import Reconnected, classify, open_source, redact
from vidlight.io.sinks import classify_sink, open_sink, parse_duration
from vidlight.models import load_model
from vidlight.pipeline.queues import LatestFrameQueue
from vidlight.pipeline.stages import MODEL, SINK, SOURCE, TEMPORAL, timed
from vidlight.pipeline.enhancer import FrameEnhancer, resolve_device, single_threaded_torch
from vidlight.pipeline.exposure import parse_strength
from vidlight.pipeline.temporal import DEFAULT_TIME_CONSTANT, TemporalSmoother
from vidlight.pipeline.tiling import DEFAULT_OVERLAP, parse_tile

log = logging.getLogger("vidlight")

_END = object()


class Interrupted(VidlightError):
    """The run was stopped by the user; the output holds what was done."""


class Latencies:
    """A live run's frame latencies (receipt to write) in bounded memory, whatever the run's length.

    Quantiles come from a histogram with logarithmic bins (:attr:`RESOLUTION` apart, from
    :attr:`LOWEST` to :attr:`HIGHEST` seconds; values outside count in the end bins), read to
    within half a bin, 0.5 %. The last :attr:`RECENT` values are also kept in write order
    (:attr:`recent`). One thread adds; others may read.
    """

    LOWEST, HIGHEST, RESOLUTION, RECENT = 1e-4, 1e4, 1.01, 4096

    def __init__(self) -> None:
        self._bins = math.ceil(math.log(self.HIGHEST / self.LOWEST) / math.log(self.RESOLUTION)) + 1
        self._counts = np.zeros(self._bins, dtype=np.int64)
        self._lock = threading.Lock()
        self.recent: deque[float] = deque(maxlen=self.RECENT)
        self.count = 0
        self.max: float | None = None

    def add(self, seconds: float) -> None:
        position = math.log(max(seconds, self.LOWEST) / self.LOWEST) / math.log(self.RESOLUTION)
        with self._lock:
            self._counts[min(self._bins - 1, round(position))] += 1
            self.count += 1
            self.max = seconds if self.max is None else max(self.max, seconds)
            self.recent.append(seconds)

    def __len__(self) -> int:
        return self.count

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of all latencies so far (None before the first)."""
        with self._lock:
            if not self.count:
                return None
            rank = max(1, math.ceil(q * self.count))
            index = int(np.searchsorted(np.cumsum(self._counts), rank))
        return self.LOWEST * self.RESOLUTION ** index


@dataclass
class RunStats:
    """What a run did."""

    frames: int
    seconds: float
    corrupt_packets: int
    interrupted: bool = False
    dropped: int = 0  # live sources: frames skipped to keep latency bounded (latest-frame policy)
    reconnects: int = 0
    latencies: Latencies | None = field(default=None, repr=False)  # live runs: receipt -> written

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def latency(self, quantile: float) -> float | None:
        """A quantile (0..1) of the per-frame latency, from receipt of the frame to its write."""
        return self.latencies.quantile(quantile) if self.latencies else None

    def summary(self) -> str:
        """One line: frames, time, fps, and for live runs drops, reconnects and latency."""
        text = f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps)"
        if self.dropped or self.reconnects or self.latencies:
            text += f", {self.dropped} dropped, {self.reconnects} reconnect(s)"
        if self.latencies:
            text += (f", latency median {1000 * self.latency(0.5):.0f} ms, p95 {1000 * self.latency(0.95):.0f} ms,"
                     f" max {1000 * self.latencies.max:.0f} ms")
        return text


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _put(q: queue.Queue | LatestFrameQueue, item: object, stop: threading.Event) -> bool:
    """Blocking put that gives up once ``stop`` is set (so no thread waits forever)."""
    if isinstance(q, LatestFrameQueue):
        q.put(item)  # never blocks: when the model falls behind, the oldest frame goes
        return True
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _read(source, q, stop: threading.Event, max_frames: int | None, notify=None,
          duration_seconds: float | None = None) -> None:
    """Feeds ``source``'s items into ``q`` until it ends, fails (handed on), ``stop``, or gives
    ``max_frames`` frames or ``duration_seconds`` of its time (the frames after the end are not
    read, so a latest-frame queue does not count them as dropped); ``notify()`` is called
    after each item (a consumer watching several queues)."""
    frames = 0
    first: float | None = None
    items = iter(source)
    try:
        while True:
            with timed(SOURCE):
                item = next(items, _END)
            if item is _END:
                break
            if stop.is_set():
                return
            if isinstance(item, Frame):
                if max_frames is not None and frames >= max_frames:
                    return
                if duration_seconds is not None and item.time_seconds is not None:
                    first = item.time_seconds if first is None else first
                    if item.time_seconds - first >= duration_seconds:
                        return
                frames += 1
                item.received = time.monotonic()
            if not _put(q, item, stop):
                return
            if notify is not None:
                notify()
    except BaseException as exc:  # handed to the main thread
        _put(q, _Failure(exc), stop)
    finally:
        _put(q, _END, stop)
        if notify is not None:
            notify()


def _write(sink, q: queue.Queue, errors: list, bar, latencies: Latencies) -> None:
    while True:
        item = q.get()
        if item is _END:
            return
        if errors:
            continue  # drain after a failure so the producer never blocks
        frames, tags, packets = item
        try:
            for rgb, (p, received) in zip(frames, tags):
                with timed(SINK):
                    sink.write(rgb, p)
                if received is not None:
                    latencies.add(time.monotonic() - received)
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
    duration_seconds: float | None = None,
    tile: int | str = "auto",
    tile_overlap: int = DEFAULT_OVERLAP,
    smooth: bool = True,
    smooth_time: float = DEFAULT_TIME_CONSTANT,
    denoise: bool = False,
    strength: float | str = "auto",
    transport: str = "tcp",
    open_timeout_seconds: float = 10.0,
    read_timeout_seconds: float = 5.0,
    reconnect: bool = True,
    max_reconnects: int | None = None,
    latest_frame: bool | None = None,
    fps: float = 25.0,
    segment_seconds: float | str | None = None,
    stop_event: threading.Event | None = None,
) -> RunStats:
    """Enhance a video, stream, webcam or image folder into a file, stream or folder.

    Files keep their timestamps, audio, colour tags and rotation. Live sources (``rtsp://``,
    ``rtmp://``, ``http(s)://``, ``/dev/videoN``) are read with timeouts, reconnected with
    capped exponential backoff, re-timed from 0, and processed under a latest-frame policy.

    Args:
        input: a video file, a stream URL, a webcam (``/dev/videoN``) or a folder of images.
        output: a video file (the container follows its suffix), an ``rtsp://`` URL to publish
            to, a folder (``out/`` or ``out/{index:06d}.png``) for images, or ``null``.
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
        duration_seconds: stop after this much of the source's time (live: since the first frame).
        tile: ``"auto"`` (tile big frames when they would not fit in memory), ``"off"`` / 0,
            or a tile side in pixels; ``tile_overlap``: pixels shared by neighbouring tiles.
        smooth: smooth the output's brightness over time, restarting at scene cuts and
            reconnects (removes flicker; see :mod:`vidlight.pipeline.temporal`).
        smooth_time: the smoothing's time constant in seconds.
        denoise: in the smoothing stage, also average each pixel with its past where the picture
            did not change (the noise enhancement amplifies; see :mod:`vidlight.pipeline.denoise`).
        strength: how much of the method each frame gets: ``"auto"`` (default) chooses from the
            scene, so a well-lit frame passes nearly unchanged and a near-black one gets the full
            method (see :mod:`vidlight.pipeline.exposure`); a number from 0 (the input) to 1
            (the official output, exactly).
        transport: RTSP over ``"tcp"`` or ``"udp"``.
        open_timeout_seconds, read_timeout_seconds: give up on a stream that does not answer.
        reconnect: reconnect a live source that ends or stalls (forever, or ``max_reconnects``
            attempts per outage).
        latest_frame: when the model falls behind, skip to the newest frame and count the drops
            (default: on for live sources, off for files and folders, which are never dropped).
        fps: frame rate given to a folder of images.
        segment_seconds: write the output as consecutive files of this length (``"10m"``).
        stop_event: set it to end the run cleanly from another thread (as Ctrl-C does).

    Returns:
        :class:`RunStats`. If interrupted (Ctrl-C, SIGTERM through the CLI, ``stop_event``),
        the output is finalised with the frames done so far; a file source then raises
        :class:`Interrupted`, a live one returns (stopping is how a live run ends).
    """
    dev, tile, batch_size = engine_settings(device, tile, tile_overlap, batch_size, fp16)
    check_smoothing(smooth, smooth_time, denoise)
    strength = parse_strength(strength)
    if duration_seconds is not None and not duration_seconds > 0:
        raise VidlightError(f"duration must be above 0 seconds, got {duration_seconds}")
    if transport not in ("tcp", "udp"):
        raise VidlightError(f"invalid transport {transport!r}; valid: tcp, udp")
    if segment_seconds is not None:
        segment_seconds = parse_duration(segment_seconds)
    kind = classify(str(input))
    if kind == "file" and not hasattr(output, "write") and classify_sink(output) == "file":
        if Path(output).exists() and not overwrite:
            raise VidlightError(f"{output} already exists; pass -y/--overwrite to replace it")
        if Path(input).resolve() == Path(output).resolve():
            raise VidlightError("the output must be a different file from the input")
    stop_event = stop_event or threading.Event()
    # A bad input is reported before any model is loaded.
    source = open_source(input, transport=transport, open_timeout_seconds=open_timeout_seconds,
                         read_timeout_seconds=read_timeout_seconds, reconnect=reconnect,
                         max_reconnects=max_reconnects, fps=fps, stop_event=stop_event)
    try:
        model, fp16 = load_engine_model(model, weights, model_options, dev, fp16)
        enhancer = FrameEnhancer(model, device=dev, fp16=fp16, tile=tile, tile_overlap=tile_overlap,
                                 statistics_time=smooth_time if smooth else None, keep_precision=smooth,
                                 strength=strength)
        if hasattr(output, "write"):  # a sink object (e.g. vidlight.pipeline.iterate.FrameQueueSink)
            sink = output
            sink.open(source.info)
        else:
            sink = open_sink(output, source.info, copy_streams=source.copy_streams, segment_seconds=segment_seconds,
                             codec=codec, crf=crf, preset=preset, overwrite=overwrite, transport=transport)
    except BaseException:
        source.close()
        raise
    rate = source.info.average_rate
    smoother = TemporalSmoother(time_constant=smooth_time, enabled=smooth, denoise=denoise,
                                default_dt=float(1 / rate) if rate else 1 / 30)
    live = getattr(source, "live", False)
    try:
        return _run(source, sink, enhancer, batch_size, progress, max_frames, smoother,
                    latest_frame=live if latest_frame is None else latest_frame,
                    duration_seconds=duration_seconds, stop_event=stop_event)
    finally:
        enhancer.close()


def engine_settings(device: str | torch.device, tile: int | str, tile_overlap: int, batch_size: int | None,
                    fp16: bool | None) -> tuple[torch.device, int | str, int]:
    """The device, tile setting and batch size a run uses; :class:`VidlightError` for bad ones."""
    dev = resolve_device(device)
    tile = parse_tile(tile)
    if tile_overlap < 0:
        raise VidlightError(f"tile overlap must be at least 0 pixels, got {tile_overlap}")
    if batch_size is not None and batch_size < 1:
        raise VidlightError(f"batch size must be at least 1, got {batch_size}")
    if fp16 and dev.type != "cuda":
        log.warning("fp16 needs a CUDA device; running in fp32 on %s", dev.type)
    return dev, tile, batch_size or default_batch_size(dev)


def load_engine_model(model: str | torch.nn.Module, weights: str | None, model_options: dict | None,
                      dev: torch.device, fp16: bool | None) -> tuple[torch.nn.Module, bool]:
    """``model`` loaded by name (or as given), and whether it runs in fp16 (default: on CUDA,
    unless the model's ``fp16_default`` is False)."""
    if isinstance(model, str):
        model = load_model(model, weights=weights, **(model_options or {}))
    if fp16 is None:
        fp16 = dev.type == "cuda" and getattr(model, "fp16_default", True)
    return model, fp16


def check_smoothing(smooth: bool, smooth_time: float, denoise: bool) -> None:
    """Raise :class:`VidlightError` for settings of the temporal stage that cannot work together."""
    if not smooth_time > 0:
        raise VidlightError(f"smoothing time constant must be above 0 seconds, got {smooth_time}")
    if denoise and not smooth:
        raise VidlightError("denoising runs in the smoothing stage: turn smoothing on (drop --no-smooth) "
                            "or denoising off")


VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mts", ".flv", ".wmv")


def videos_in(folder: str | Path) -> list[Path]:
    """The video files directly in ``folder`` (by suffix), sorted; [] when it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                  and not p.name.startswith("."))


def enhance_folder(input: str | Path, output: str | Path, *, overwrite: bool = False, **options) -> RunStats:
    """Enhance every video in the folder ``input`` into the folder ``output`` (same names).

    Videos whose output exists are skipped unless ``overwrite``, so an interrupted batch can be
    run again to finish it. ``options`` are those of :func:`enhance_video`. A video that fails
    is reported and the batch goes on; the run then ends with a :class:`VidlightError`
    naming how many failed.

    Returns:
        the :class:`RunStats` of the whole batch (frames and seconds summed).
    """
    videos = videos_in(input)
    if not videos:
        raise VidlightError(f"{input} holds no video files ({', '.join(VIDEO_SUFFIXES)})")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise VidlightError(f"{output} is a file; the output of a folder of videos is a folder")
    output.mkdir(parents=True, exist_ok=True)
    total = RunStats(0, 0.0, 0)
    failed = []
    for video in videos:
        target = output / video.name
        if target.exists() and not overwrite:
            log.info("%s exists: skipped (pass -y/--overwrite to redo it)", target)
            continue
        try:
            stats = enhance_video(video, target, overwrite=overwrite, **options)
        except Interrupted:
            raise
        except VidlightError as exc:
            log.error("%s: %s", video.name, exc)
            failed.append(video.name)
            continue
        total.frames += stats.frames
        total.seconds += stats.seconds
        total.corrupt_packets += stats.corrupt_packets
        log.info("%s -> %s: %s", video.name, target, stats.summary())
    if failed:
        raise VidlightError(f"{len(failed)} of {len(videos)} videos failed ({', '.join(failed)}); the rest are in {output}")
    return total


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
        reduced, cuts = None, []
        if smoother is not None:
            with timed(TEMPORAL):
                reduced = smoother.reduce(frames)
                cuts = smoother.scan(frames, reduced)
        start = 0
        for cut in [*cuts, len(frames)]:
            if cut > start:
                with timed(MODEL):
                    out += list(enhancer(frames[start:cut], seconds[start:cut],
                                         reduced=reduced[start:cut] if reduced is not None else None))
            if cut < len(frames):
                enhancer.reset()
            start = cut
    if smoother is None:
        return out, list(tags)
    with timed(TEMPORAL):
        done = smoother.push(frames, out, seconds, tags) if frames else []
        if end:
            done += smoother.flush()
    return [f for f, _ in done], [t for _, t in done]


class StreamIntake:
    """One stream's items on their way to the model: pending frames, their timestamps and tags,
    and the packets (audio, subtitles) that go out with them.

    :meth:`take_item` sorts what the reader delivers. A frame joins the pending batch unless
    the duration limit is reached (:attr:`ending`) or it has another size than the pending
    frames; that frame, or a reconnect, is a boundary, held back in :attr:`held` until the
    frames before it have been through the model (one size per model call; a new stream's
    state starts after the old one's frames). :meth:`resume` then takes it. A reconnect, once no
    frame is pending, calls ``on_reconnect(item)``: a new stream starts, and what was smoothed
    or kept as clip context belongs to the old one.
    """

    def __init__(self, duration_seconds: float | None, on_reconnect: Callable[[Reconnected], None]) -> None:
        self.duration_seconds = duration_seconds
        self.on_reconnect = on_reconnect
        self.frames: list[np.ndarray] = []
        self.tags: list = []
        self.seconds: list = []
        self.packets: list = []
        self.waiting_since: float | None = None  # when the oldest pending frame arrived
        self.first_time: float | None = None
        self.ending = False  # the source ended (or the duration was reached): finish after the pending frames
        self.held: object = None
        self.failure: BaseException | None = None

    def take_item(self, item: object, *, boundary_ok: bool = False) -> None:
        if item is _END:
            self.ending = True
        elif isinstance(item, _Failure):
            self.failure = item.exc
        elif isinstance(item, Frame):
            if self.duration_seconds is not None and item.time_seconds is not None:
                self.first_time = item.time_seconds if self.first_time is None else self.first_time
                if item.time_seconds - self.first_time >= self.duration_seconds:
                    self.ending = True
                    return
            if self.frames and item.rgb.shape != self.frames[0].shape and not boundary_ok:
                self.held = item
                return
            self.frames.append(item.rgb)
            self.tags.append((item.pts, getattr(item, "received", None)))
            self.seconds.append(item.time_seconds)
            if self.waiting_since is None:
                self.waiting_since = time.monotonic()
        elif isinstance(item, Reconnected):
            if self.frames and not boundary_ok:
                self.held = item
                return
            self.on_reconnect(item)
        elif isinstance(item, av.Packet):
            self.packets.append(item)

    def resume(self) -> None:
        """Take the held boundary item (the frames before it are through the model)."""
        item, self.held = self.held, None
        if item is not None:
            self.take_item(item, boundary_ok=True)

    def take(self) -> tuple[list, list, list]:
        """The pending frames, their timestamps and tags; pending is empty afterwards."""
        frames, seconds, tags = self.frames, self.seconds, self.tags
        self.frames, self.seconds, self.tags, self.waiting_since = [], [], [], None
        return frames, seconds, tags

    def take_packets(self) -> list:
        packets, self.packets = self.packets, []
        return packets


def _run(
    source,
    sink,
    enhancer: FrameEnhancer,
    batch_size: int,
    progress: bool,
    max_frames: int | None = None,
    smoother: TemporalSmoother | None = None,
    *,
    latest_frame: bool = False,
    duration_seconds: float | None = None,
    stop_event: threading.Event | None = None,
) -> RunStats:
    from tqdm.auto import tqdm

    stop = stop_event or threading.Event()
    live = getattr(source, "live", False)
    # A live camera's queue holds one batch: when the model falls behind, the oldest frames are
    # dropped rather than delayed (two batches at 30 fps held frames for 267 ms).
    decoded = LatestFrameQueue(batch_size) if latest_frame else queue.Queue(maxsize=2 * batch_size)
    encoded: queue.Queue = queue.Queue(maxsize=2)
    errors: list[BaseException] = []
    latencies = Latencies()
    total = min(filter(None, (source.info.frames, max_frames)), default=None)
    name = source.name
    bar = tqdm(total=total, unit="frame", desc=name, disable=not progress, dynamic_ncols=True)
    reader = threading.Thread(target=_read, args=(source, decoded, stop, max_frames, None, duration_seconds),
                              daemon=True, name="vidlight-read")
    writer = threading.Thread(target=_write, args=(sink, encoded, errors, bar, latencies), daemon=True,
                              name="vidlight-write")
    # The strip pool does the CPU parallelism; torch's own threads would only contend with it.
    threads = single_threaded_torch() if getattr(enhancer, "workers", 0) > 1 else contextlib.nullcontext()
    start = time.perf_counter()
    reader.start()
    writer.start()
    interrupted = False
    failure: BaseException | None = None
    reporter = _LiveReport(source, decoded, latencies) if live else None

    def flush(*, end: bool = False) -> None:
        frames, seconds, tags = intake.take()
        packets = intake.take_packets()
        if frames or packets or end:
            out, done = enhance_batch(enhancer, smoother, frames, seconds, tags, end=end)
            encoded.put((out, done, packets))

    def reconnected(item: Reconnected) -> None:
        flush(end=True)
        if smoother is not None:
            smoother.reset()
        enhancer.reset()
        log.info("%s: reconnected (#%d) after %.1f s, %dx%d", name, item.count,
                 item.downtime_seconds, item.width, item.height)

    intake = StreamIntake(duration_seconds, reconnected)

    try:
        with threads:
            while True:
                try:
                    item = decoded.get(timeout=0.2)
                except queue.Empty:
                    item = None
                if stop.is_set():
                    interrupted = True
                    break
                if reporter is not None:
                    reporter.tick()
                if item is None:
                    if live and intake.frames:
                        flush()  # a silent source: do not hold its last frames back
                    continue
                intake.take_item(item)
                if intake.held is not None:  # a size change or a reconnect: the frames before it first
                    flush()
                    intake.resume()
                if intake.failure is not None:
                    failure = intake.failure
                    break
                if intake.ending:
                    break
                # A file fills whole batches. A live source batches only as far as the model is
                # behind: what has arrived goes now, so a frame never waits for later ones.
                if len(intake.frames) == batch_size or (live and decoded.qsize() == 0):
                    flush()
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
        if live:
            source.close()  # interrupts a pending read (LiveSource.close is thread-safe)
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
    stats = RunStats(sink.frames_written, time.perf_counter() - start, source.corrupt_packets, interrupted,
                     dropped=getattr(decoded, "dropped", 0), reconnects=getattr(source, "reconnects", 0),
                     latencies=latencies if live else None)
    output = getattr(sink, "output", "the output")
    if failure is not None:
        if isinstance(failure, VidlightError):
            raise failure
        if isinstance(failure, av.error.FFmpegError):
            raise MediaError(redact(f"failed on {name} -> {output}: {failure}")) from failure
        raise failure
    if source.corrupt_packets:
        log.warning("%s: skipped %d corrupt packet(s)", name, source.corrupt_packets)
    if live:
        log.info("%s: %s", name, stats.summary())
    if interrupted and not live:
        if stats.frames == 0:
            raise Interrupted("interrupted before the first frame was done; nothing was written")
        raise Interrupted(f"interrupted: {output} holds the first {stats.frames} frames")
    if stats.frames == 0:
        raise MediaError(f"no frame of {name} could be decoded")
    return stats


class _LiveReport:
    """Logs fps, drops, reconnects and latency of a live run every ``every_seconds``."""

    def __init__(self, source, queue_, latencies: Latencies, every_seconds: float = 10.0) -> None:
        self.source, self.queue, self.latencies = source, queue_, latencies
        self.every = every_seconds
        self.next = time.monotonic() + every_seconds
        self.frames_then = 0

    def tick(self) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        count = len(self.latencies)
        recent = list(self.latencies.recent)[-(count - self.frames_then):] if count > self.frames_then else []
        fps = (count - self.frames_then) / (now - self.next + self.every)
        lat = f", latency {1000 * float(np.median(recent)):.0f} ms" if recent else ""
        log.info("%s: %.1f fps, %d dropped, %d reconnect(s)%s", self.source.name, fps,
                 getattr(self.queue, "dropped", 0), getattr(self.source, "reconnects", 0), lat)
        self.frames_then = count
        self.next = now + self.every
