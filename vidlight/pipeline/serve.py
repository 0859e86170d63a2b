"""Many cameras in one process: one model on one device, its batches filled across streams.

As DeepStream's stream muxer does, the frames waiting on every stream are gathered into one
batch for the model (frames of one size per model call), and each enhanced frame goes back to
its own stream. Everything that carries state stays per stream: the reader and its
latest-frame buffer, scene-cut detection, the temporal smoothing, the model's averaged
statistics (MBLLEN, KinD), the sink and its writer. A clip model (mbllen-video) needs
consecutive frames of one stream in a call, so it runs each stream's frames in their own call.

A stream that cannot be opened, fails, or ends does not stop the others. A live camera that is
down at start-up is retried (with its ``reconnect`` settings) until it answers.

    streams = [Stream("gate", "rtsp://cam1/stream", "gate.mp4"),
               Stream("yard", "rtsp://cam2/stream", "rtsp://127.0.0.1:8554/yard")]
    report = serve(streams, model="sci", stop_event=stop)
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidlight.errors import VidlightError
from vidlight.io import Sink, Source
from vidlight.io.live import Reconnected, classify, redact, source_with
from vidlight.io.sinks import classify_sink, picture_stems, sink_with
from vidlight.pipeline.batching import SmoothingThread, StreamIntake, run_model
from vidlight.pipeline.enhancer import FrameEnhancer, load_engine_model, prepare_engine, single_threaded_ops
from vidlight.pipeline.exposure import ExposureControl
from vidlight.pipeline.queues import FrameQueue, LatestFrameQueue
from vidlight.pipeline.report import Latencies, LiveReport, RunStats
from vidlight.pipeline.temporal import StatisticsSmoother, TemporalSmoother
from vidlight.pipeline.workers import read_source, write_sink
from vidlight.settings import Settings, field_name, fields

log = logging.getLogger("vidlight")

# A batch is run once it is full or once its oldest frame has waited this long (a camera at
# 25 fps sends a frame every 40 ms), as DeepStream's muxer does with its batched-push-timeout.
BATCH_WAIT_SECONDS = 0.04
# Between attempts to open a live source that was down at start-up.
START_RETRY_SECONDS = (1.0, 10.0)


# The settings each stream has for itself; the engine and temporal ones are shared by all.
STREAM_GROUPS = ("source", "encoder", "run")
SHARED_GROUPS = ("engine", "temporal")


class Stream:
    """One source -> sink pair of :func:`serve`, with its own reading, encoding and run settings.

    Args:
        name: unique among the streams (logs, reports).
        source: as for :func:`vidlight.enhance_video`.
        sink: as for :func:`vidlight.enhance_video`.
        settings: the stream's settings (only its source, encoder and run groups are used).
        **options: settings of those groups by field name (``crf=20``, ``max_frames=100``).

    ``resume`` (False): an image-folder sink keeps the pictures it holds and goes on after
    them (set on the streams of a camera worker started again after it died).
    """

    resume = False

    def __init__(self, name: str, source: str, sink: str, settings: Settings | None = None, **options: Any) -> None:
        shared = {f.name for f in fields(*SHARED_GROUPS)} | {"executor", "workers"}
        for option in options:
            if field_name(option) in shared:
                raise VidlightError(
                    f"stream {name!r} sets {option!r}, which every stream shares (one model on "
                    f"one device); set it for serve as a whole"
                )
        self.name, self.source, self.sink = name, source, sink
        self.settings = (settings or Settings()).replace(**options)

    def __repr__(self) -> str:
        return f"Stream({self.name!r}, {redact(str(self.source))!r}, {redact(str(self.sink))!r})"


@dataclass
class CameraStatus:
    """One stream of a running :func:`serve`, as :meth:`ServeReport.status` sees it now."""

    name: str
    state: str  # "running", "ended" or "failed"
    frames: int  # written so far
    fps: float  # written per second since the previous status (since its start, the first time)
    dropped: int
    reconnects: int
    latency_ms: float | None  # median, receipt to write, of the recent frames
    error: str | None = None
    restarts: int = 0  # times the process serving it was restarted (camera pools on Ray)

    def line(self) -> str:
        latency = f", latency {self.latency_ms:.0f} ms" if self.latency_ms is not None else ""
        restarts = f", {self.restarts} restart(s)" if self.restarts else ""
        error = f": {self.error}" if self.error else ""
        return (
            f"{self.name}: {self.state}{error}, {self.frames} frames, {self.fps:.1f} fps, {self.dropped} dropped, "
            f"{self.reconnects} reconnect(s){latency}{restarts}"
        )


@dataclass
class ServeReport:
    """What a :func:`serve` run did: per stream, and how full the model's batches were.

    While the run goes on, :meth:`status` (from any thread) gives each stream's state now.
    """

    streams: dict[str, RunStats] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # stream name -> the error, one line
    model_calls: int = 0
    frames: int = 0  # frames through the model
    mixed_calls: int = 0  # model calls with frames of two or more streams
    interrupted: bool = False
    not_started: list[str] = field(default_factory=list)  # streams still opening when the run was stopped
    _running: dict = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _seen: dict = field(default_factory=dict, repr=False, compare=False)  # name -> (time, frames) of the last status

    @property
    def mean_batch(self) -> float:
        return self.frames / self.model_calls if self.model_calls else 0.0

    def summary(self) -> str:
        waiting = f", {len(self.not_started)} stopped before they opened" if self.not_started else ""
        return (
            f"{len(self.streams)} stream(s) ended, {len(self.failures)} failed{waiting}; {self.model_calls} model "
            f"calls, {self.mean_batch:.1f} frames per call, {self.mixed_calls} with frames of several streams"
        )

    def status(self) -> list[CameraStatus]:
        """Every stream started so far: frames, fps, drops, reconnects and latency now."""
        now = time.monotonic()
        with self._lock:
            running = dict(self._running)
            ended = dict(self.streams)
            failures = dict(self.failures)
        out = []
        for name in sorted(set(running) | set(ended) | set(failures)):
            live = running.get(name)
            if live is not None:
                frames, dropped, reconnects = live.sink.frames_written, live.decoded.dropped, live.source.reconnects
                median = live.latencies.median_recent()
                state = "running"
            else:
                stats = ended.get(name)
                frames = stats.frames if stats else 0
                dropped, reconnects = (stats.dropped, stats.reconnects) if stats else (0, 0)
                median = stats.latency(0.5) if stats else None
                state = "failed" if name in failures else "ended"
            then, before = self._seen.get(name, (live.started if live is not None else now, 0))
            fps = (frames - before) / (now - then) if now > then else 0.0
            if state == "running":
                self._seen[name] = (now, frames)
            out.append(
                CameraStatus(
                    name,
                    state,
                    frames,
                    fps,
                    dropped,
                    reconnects,
                    None if median is None else 1000 * median,
                    failures.get(name),
                )
            )
        return out

    def __getstate__(self) -> dict:  # sent between processes (Ray): the finished figures only
        state = dict(self.__dict__)
        state.update(_running={}, _lock=None, _seen={})
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())


class _Live(StreamIntake):
    """A running stream: its source, buffers, threads, temporal state and sink; its pending
    frames and boundary items as :class:`~vidlight.pipeline.runner.StreamIntake` keeps them."""

    def __init__(
        self,
        spec: Stream,
        source: Source,
        sink: Sink,
        *,
        stop: threading.Event,
        arrived: threading.Event,
        share: int,
        smooth: bool,
        smooth_time: float,
        denoise: bool,
        statistics: bool,
        exposure: bool,
        enhancer: FrameEnhancer | None,
    ) -> None:
        run = spec.settings.run
        super().__init__(run.duration_seconds, self._reconnected)
        self.spec, self.source, self.sink, self.name = spec, source, sink, spec.name
        self.live = source.live
        latest = self.live if spec.settings.source.latest_frame is None else spec.settings.source.latest_frame
        if latest and not self.live:
            log.warning(
                "%s: its source is a file, read as fast as it is enhanced: latest_frame drops every frame "
                "the model cannot keep up with; leave it unset to enhance them all",
                spec.name,
            )
        self.decoded: FrameQueue | LatestFrameQueue = (
            LatestFrameQueue(2 * share) if latest else FrameQueue(maxsize=2 * share)
        )
        self.encoded: queue.Queue = queue.Queue(maxsize=2)
        self.errors: list[BaseException] = []
        self.latencies = Latencies()
        rate = source.info.average_rate
        self.smoother = TemporalSmoother(
            time_constant=smooth_time,
            enabled=smooth,
            denoise=denoise,
            default_dt=float(1 / rate) if rate else 1 / 30,
            stills=getattr(source, "stills", False),
        )
        self.statistics = StatisticsSmoother(time_constant=smooth_time) if statistics and smooth else None
        self.exposure = ExposureControl() if exposure else None  # strength "auto": this stream's own
        self.enhancer = enhancer  # its own, for clip models only (their context is per stream)
        self.smoothing = SmoothingThread(self.smoother, self.encoded, self.errors, f"vidlight-smooth-{spec.name}")
        self.start = time.perf_counter()
        self.started = time.monotonic()
        self.reporter = LiveReport(source, self.decoded, self.latencies)
        self.reader = threading.Thread(
            target=read_source,
            args=(source, self.decoded, stop, run.max_frames, arrived.set),
            daemon=True,
            name=f"vidlight-read-{spec.name}",
        )
        self.writer = threading.Thread(
            target=write_sink,
            args=(sink, self.encoded, self.errors, None, self.latencies),
            daemon=True,
            name=f"vidlight-write-{spec.name}",
        )
        self.writer.start()
        self.reader.start()

    def collect(self, share: int) -> None:
        """Take items off the buffer until ``share`` frames are pending, the buffer is empty, or a
        boundary: a reconnect, or a frame of another size, is held back (:attr:`held`) until
        the frames before it have been through the model."""
        while len(self.frames) < share and not self.ending and self.failure is None and self.held is None:
            if self.errors:
                self.failure = self.errors[0]
                return
            try:
                item = self.decoded.get(timeout=0)  # either queue kind: Empty at once when empty
            except queue.Empty:
                return
            self.take_item(item)

    def _reconnected(self, item: Reconnected) -> None:
        self.hand_over(end=True)
        self.smoothing.reset()
        if self.statistics is not None:
            self.statistics.reset()
        if self.exposure is not None:
            self.exposure.reset()
        if self.enhancer is not None:
            self.enhancer.reset()
        log.info(
            "%s: reconnected (#%d) after %.1f s, %dx%d",
            self.name,
            item.count,
            item.downtime_seconds,
            item.width,
            item.height,
        )

    def hand_over(self, frames=(), out=(), seconds=(), tags=(), *, end: bool) -> None:
        """The model's ``out`` for ``frames`` to the smoothing (on its thread), then to the writer
        with the packets waiting; ``end``: the frames the smoother holds are finished too."""
        self.smoothing.put(list(frames), list(out), list(seconds), list(tags), self.take_packets(), end=end)

    def enhance_alone(self) -> int:
        """A clip model's call: this stream's pending frames on its own enhancer; returns how many."""
        frames, seconds, tags = self.take()
        assert self.enhancer is not None, "a clip model's stream has its own enhancer"
        self.hand_over(frames, run_model(self.enhancer, self.smoother, frames, seconds), seconds, tags, end=False)
        return len(frames)

    def finish(self, *, interrupted: bool = False) -> RunStats:
        """Stop the threads, finalise the sink; the stream's stats."""
        self.source.close()
        if interrupted:
            self.hand_over(end=True)  # frames the smoother holds are finished, not lost
        self.smoothing.close()  # hands END on to the writer
        self.writer.join()
        self.reader.join(timeout=5)
        self.source.close()
        failure = self.failure or (self.errors[0] if self.errors else None)
        # A live recording that broke off is still a complete, playable file up to there.
        try:
            self.sink.close(complete=failure is None or self.live)
        except VidlightError as exc:
            failure = failure or exc
        self.failure = failure
        return RunStats(
            self.sink.frames_written,
            time.perf_counter() - self.start,
            self.source.corrupt_packets,
            interrupted,
            dropped=self.decoded.dropped,
            reconnects=self.source.reconnects,
            latencies=self.latencies if self.live else None,
        )


class _Routes:
    """Routes what the model asks about each frame of a mixed batch to the frame's own stream:
    its averaged statistics (``statistics(key, index, value)``) and its automatic strength
    (``exposure(index, preview_stats)``)."""

    def __init__(self) -> None:
        self._frames: list[tuple[_Live, int]] = []

    def add(self, stream: _Live, seconds: list, cuts: list[int]) -> None:
        for state in (stream.statistics, stream.exposure):
            if state is not None:
                state.begin(seconds, restart=cuts)
        self._frames += [(stream, n) for n in range(len(seconds))]

    def statistics(self, key: str, index: int, value: float) -> float:
        stream, n = self._frames[index]
        return value if stream.statistics is None else stream.statistics(key, n, value)

    def exposure(self, index: int, stats) -> float:
        stream, n = self._frames[index]
        assert stream.exposure is not None, "routed only when the strength is auto"
        return stream.exposure(n, stats)


def serve(
    streams: list[Stream],
    settings: Settings | None = None,
    *,
    stop_event: threading.Event | None = None,
    report: ServeReport | None = None,
    **options: Any,
) -> ServeReport:
    """Enhance several sources into their sinks in one process, batching frames across streams.

    Args:
        streams: the source -> sink pairs (names unique), each with its own stream settings.
        settings: the engine and temporal settings every stream shares (one model on one
            device); ``batch_size`` counts frames of all streams together. With ``strength``
            ``"auto"`` each stream's strength is chosen for its own scene.
        stop_event: set it to end every stream cleanly (as Ctrl-C does).
        report: a :class:`ServeReport` to fill (read its :meth:`~ServeReport.status` from another
            thread while the run goes on); default: a new one.
        **options: engine and temporal settings by field name (``model="sci"``, ``device="cpu"``).

    Returns:
        a :class:`ServeReport`; streams that failed are in its ``failures`` (the others ran on).
        It returns when every stream has ended or failed, or when stopped.

    Raises:
        VidlightError: a bad setting (before anything is opened), or no stream could be started.
    """
    if not streams:
        raise VidlightError("no streams to serve; add [[streams]] with a source and a sink")
    names = [s.name for s in streams]
    for name in names:
        if names.count(name) > 1:
            raise VidlightError(f"two streams are named {name!r}; give each its own name")
    sinks = [str(s.sink) for s in streams if classify_sink(s.sink) != "null"]
    for sink in sinks:
        if sinks.count(sink) > 1:
            raise VidlightError(f"two streams write to {redact(sink)}; give each its own sink")
    for s in streams:
        if not s.source or not s.sink:
            raise VidlightError(f"stream {s.name!r} needs a source and a sink")
        if s.settings.run.split_seconds is not None:
            raise VidlightError(f"stream {s.name!r} sets split, which cuts video files into parts; drop it")
        if classify_sink(s.sink) == "file" and Path(s.sink).exists() and not s.settings.run.overwrite:
            raise VidlightError(f"{s.sink} (stream {s.name!r}) already exists; set overwrite = true to replace it")
    unshared = sorted(o for o in options if field_name(o) not in {f.name for f in fields(*SHARED_GROUPS)})
    if unshared:
        raise VidlightError(
            f"serve takes the settings every stream shares; {unshared[0]!r} is a stream's own: set it on each Stream"
        )
    settings = (settings or Settings()).replace(**options)
    engine, temporal = settings.engine, settings.temporal
    smooth, smooth_time, strength = temporal.smooth, temporal.smooth_time, temporal.strength
    dev, batch_size = prepare_engine(engine)
    tile, tile_overlap = engine.tile, engine.tile_overlap
    stop = stop_event or threading.Event()
    arrived = threading.Event()
    started: queue.Queue = queue.Queue()
    report = report if report is not None else ServeReport()
    share = max(1, math.ceil(batch_size / len(streams)))
    starters = [
        threading.Thread(target=_start, args=(s, stop, started), daemon=True, name=f"vidlight-open-{s.name}")
        for s in streams
    ]
    for t in starters:
        t.start()
    running: list[_Live] = []
    pending_starts = len(streams)
    threads = contextlib.ExitStack()
    enhancer: FrameEnhancer | None = None
    try:
        # Loaded while the sources open; a bad model or weights still closes what they opened.
        model, fp16 = load_engine_model(engine, dev)
        enhancer = FrameEnhancer(
            model, device=dev, fp16=fp16, tile=tile, tile_overlap=tile_overlap, keep_precision=smooth, strength=strength
        )
        clip_model = bool(enhancer.clip_context)
        if enhancer.workers > 1:
            # The CPU pool does the parallelism; torch's and OpenCV's own threads would only contend
            # with it.
            threads.enter_context(single_threaded_ops())
        while pending_starts or running:
            if stop.is_set():
                report.interrupted = True
                break
            while True:  # streams that have opened (or given up)
                try:
                    spec, opened = started.get_nowait()
                except queue.Empty:
                    break
                pending_starts -= 1
                if isinstance(opened, BaseException):
                    report.failures[spec.name] = _one_line(opened)
                    log.error("%s: %s", spec.name, report.failures[spec.name])
                    continue
                source, sink = opened
                own = None
                if clip_model:
                    own = FrameEnhancer(
                        model,
                        device=dev,
                        fp16=fp16,
                        tile=tile,
                        tile_overlap=tile_overlap,
                        keep_precision=smooth,
                        strength=strength,
                    )
                running.append(
                    _Live(
                        spec,
                        source,
                        sink,
                        stop=stop,
                        arrived=arrived,
                        share=share,
                        smooth=smooth,
                        smooth_time=smooth_time,
                        denoise=temporal.denoise,
                        statistics=enhancer.averages_statistics,
                        exposure=strength == "auto" and own is None,
                        enhancer=own,
                    )
                )
                with report._lock:
                    report._running[spec.name] = running[-1]
                log.info(
                    "%s: %s -> %s, %dx%d",
                    spec.name,
                    source.name,
                    redact(str(sink.output)),
                    source.info.width,
                    source.info.height,
                )
            for live in running:
                if live.held is not None and not live.frames:
                    live.resume()
                live.collect(max(1, math.ceil(batch_size / len(running))))
                live.reporter.tick()
            # Streams that are done: their last frames, then their sink.
            for live in [live for live in running if live.ending or live.failure is not None]:
                if live.frames and live.failure is None:
                    _run_model(enhancer, [live], clip_model, report)
                if live.failure is None:
                    live.hand_over(end=True)
                _close(live, report)
                running.remove(live)
            waiting = [live for live in running if live.frames]
            total = sum(len(live.frames) for live in waiting)
            if not waiting:
                arrived.wait(0.1)
                arrived.clear()
                continue
            oldest = min(live.waiting_since or time.monotonic() for live in waiting)  # set: they have frames
            waited = time.monotonic() - oldest
            blocked = any(live.held is not None for live in waiting)
            if total < batch_size and waited < BATCH_WAIT_SECONDS and not blocked:
                arrived.wait(BATCH_WAIT_SECONDS - waited)
                arrived.clear()
                continue
            _run_model(enhancer, waiting, clip_model, report)
    except KeyboardInterrupt:
        report.interrupted = True
    except BaseException as exc:  # a bug: no stream'live output may pass for complete
        for live in running:
            live.failure = live.failure or exc
        raise
    finally:
        if enhancer is not None:
            enhancer.close()
        stop.set()
        for live in running:
            _close(live, report, interrupted=report.interrupted)
        for t in starters:
            t.join(timeout=5)  # an opening live source gives up at once when stopped
        while True:  # a source that opened just as we stopped
            try:
                _, opened = started.get_nowait()
            except queue.Empty:
                break
            if not isinstance(opened, BaseException):
                opened[0].close()
                opened[1].close(complete=False)
        threads.close()  # after the streams' threads: the thread settings are the process's
    if len(report.failures) == len(streams):
        raise VidlightError(f"no stream could run: {'; '.join(f'{n}: {e}' for n, e in report.failures.items())}")
    report.not_started = [n for n in names if n not in report.streams and n not in report.failures]
    return report


def _one_line(exc: BaseException) -> str:
    return redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _close(s: _Live, report: ServeReport, *, interrupted: bool = False) -> None:
    stats = s.finish(interrupted=interrupted)
    with report._lock:
        report.streams[s.name] = stats
        report._running.pop(s.name, None)
        if s.failure is not None:
            report.failures[s.name] = _one_line(s.failure)
    if s.failure is not None:
        log.error("%s: %s (%d frames written)", s.name, report.failures[s.name], stats.frames)
    else:
        log.info("%s: %s", s.name, stats.summary())


def _start(spec: Stream, stop: threading.Event, started: queue.Queue) -> None:
    """Open a stream's source and sink (retrying a live source that is down, as its reconnect
    settings allow); hands ``(spec, (source, sink))`` or ``(spec, error)`` to ``started``."""
    live = classify(str(spec.source)) in ("url", "webcam")
    src = spec.settings.source
    attempts = 0
    delay, cap = START_RETRY_SECONDS
    while True:
        try:
            source = source_with(spec.source, src, stop_event=stop)
            break
        except VidlightError as exc:
            retry = live and src.reconnect and (src.max_reconnects is None or attempts < src.max_reconnects)
            if not retry or stop.is_set():
                started.put((spec, exc))
                return
            attempts += 1
            log.warning("%s: %s; trying again in %.0f s", spec.name, _one_line(exc), delay)
            if stop.wait(delay):
                started.put((spec, exc))
                return
            delay = min(cap, delay * 2)
        except BaseException as exc:
            started.put((spec, exc))
            return
    try:
        sink = sink_with(
            spec.sink,
            source.info,
            spec.settings,
            copy_streams=source.copy_streams,
            live_source=source.live,
            resume=spec.resume,
            # A folder of pictures into a folder: each keeps its name (as PNG), as in process.
            names=picture_stems(source),
        )
    except BaseException as exc:
        source.close()
        started.put((spec, exc))
        return
    started.put((spec, (source, sink)))


def _run_model(enhancer: FrameEnhancer, waiting: list[_Live], clip_model: bool, report: ServeReport) -> None:
    """One round: the pending frames of ``waiting`` streams through the model, back to each stream."""
    if clip_model:  # a clip is consecutive frames of one stream
        for s in waiting:
            report.frames += s.enhance_alone()
            report.model_calls += 1
        return
    # Frames of one size go through the model together.
    groups: dict[tuple, list[tuple[_Live, list, list, list, list[int], list | None]]] = {}
    for s in waiting:
        frames, seconds, tags = s.take()
        reduced = s.smoother.reduce(frames)
        cuts = s.smoother.scan(frames, reduced)
        groups.setdefault((frames[0].shape, frames[0].dtype), []).append((s, frames, seconds, tags, cuts, reduced))
    for parts in groups.values():
        routes = _Routes()
        batch: list = []
        small: list | None = []
        for s, frames, seconds, _, cuts, reduced in parts:
            routes.add(s, seconds, cuts)
            batch += frames
            small = small + reduced if small is not None and reduced is not None else None
        out = enhancer(
            batch,
            statistics=routes.statistics if enhancer.averages_statistics else None,
            exposure=routes.exposure if enhancer.exposure is not None else None,
            reduced=small,
        )
        report.model_calls += 1
        report.frames += len(batch)
        report.mixed_calls += len(parts) > 1
        start = 0
        for s, frames, seconds, tags, *_ in parts:
            part = slice(start, start + len(frames))
            mine = list(out[part])
            s.smoother.note_strengths(enhancer.last_strengths[part], enhancer.last_previews[part])
            start += len(frames)
            s.hand_over(frames, mine, seconds, tags, end=False)
