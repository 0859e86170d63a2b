"""The streaming pipeline: decode -> batch -> enhance -> encode, in concurrent stages.

Four threads joined by bounded queues, so memory does not grow with the video's length:
the reader decodes (FFmpeg releases the GIL), the caller's thread batches and runs the
model, the smoothing thread runs the temporal stage's smoothing, the writer encodes and
muxes. Packets of copied streams travel with the batch that follows them, which keeps the
output interleaved.

The stages live beside this module: :mod:`~vidlight.pipeline.workers` (reader and writer
threads), :mod:`~vidlight.pipeline.batching` (frames into model calls, the smoothing thread),
:mod:`~vidlight.pipeline.enhancer` (the model on its device),
:mod:`~vidlight.pipeline.temporal` (the temporal stage), :mod:`~vidlight.pipeline.report`
(what a run reports); :mod:`~vidlight.pipeline.folder` runs a folder of videos and
:mod:`~vidlight.pipeline.serve` many streams at once.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from vidlight.errors import OVERWRITE, MediaError, VidlightError
from vidlight.io import Sink, Source
from vidlight.io.files import VideoInfo
from vidlight.io.live import IMAGE_SUFFIXES, ImageDirSource, Reconnected, classify, redact, source_with
from vidlight.io.sinks import classify_sink, picture_stems, sink_with, written
from vidlight.pipeline.batching import SmoothingThread, StreamIntake, run_model
from vidlight.pipeline.enhancer import FrameEnhancer, load_engine_model, prepare_engine, single_threaded_ops
from vidlight.pipeline.queues import FrameQueue, LatestFrameQueue
from vidlight.pipeline.report import Latencies, LiveReport, RunStats, logs_above_bar
from vidlight.pipeline.temporal import TemporalSmoother
from vidlight.pipeline.workers import read_source, write_sink
from vidlight.settings import Settings

log = logging.getLogger("vidlight")

__all__ = ["Interrupted", "RunStats", "enhance_video"]


class Interrupted(VidlightError):
    """The run was stopped by the user (Ctrl-C, SIGTERM, a stop event).

    Its message is always ``interrupted after N frames: `` and what became of the output.
    """

    def __init__(self, frames: int, fate: str) -> None:
        super().__init__(f"interrupted after {frames} frame{'' if frames == 1 else 's'}: {fate}")
        self.frames = frames


def enhance_video(
    input: str | Path,
    output: str | Path | Sink,
    settings: Settings | None = None,
    *,
    stop_event: threading.Event | None = None,
    on_frames: Callable[[int], None] | None = None,
    **options: Any,
) -> RunStats:
    """Enhance a video, stream, webcam or image folder into a file, stream or folder.

    Files keep their timestamps, audio, colour tags and rotation. Live sources (``rtsp://``,
    ``rtmp://``, ``http(s)://``, ``/dev/videoN``) are read with timeouts, reconnected with
    capped exponential backoff, re-timed from 0, and processed under a latest-frame policy.

        enhance_video("dark.mp4", "bright.mp4", model="zero-dce++", crf=20)

    Args:
        input: a video file, a stream URL, a webcam (``/dev/videoN``) or a folder of images.
        output: a video file (the container follows its suffix), an ``rtsp://`` URL to publish
            to, a folder (``out/`` or ``out/{index:06d}.png``) for images, ``null``, or a
            :class:`~vidlight.io.Sink` object (its ``open(info)`` is called first).
        settings: the run's :class:`~vidlight.settings.Settings` (default: the defaults).
        stop_event: set it to end the run cleanly from another thread (as Ctrl-C does).
        on_frames: called with the number of frames just written, from the writer thread (a
            progress display of one's own; the Ray workers report through it).
        **options: settings by field name (or the flag's name with ``_``: ``duration`` for
            ``duration_seconds``), over ``settings``: ``model``, ``weights``, ``device``,
            ``batch_size``, ``fp16``, ``tile``, ``strength``, ``smooth``, ``crf``,
            ``max_frames``, ``overwrite``, ``progress``, ... (every field of
            :mod:`vidlight.settings`, where each is explained).

    Returns:
        :class:`RunStats`. If interrupted (Ctrl-C, SIGTERM through the CLI, ``stop_event``),
        the output is finalised with the frames done so far; a file source then raises
        :class:`Interrupted`, a live one returns (stopping is how a live run ends).

    Raises:
        VidlightError: a bad setting, input, output, model or weights (one line that says what
            to do); :class:`~vidlight.errors.MediaError` for media that cannot be read or written.
    """
    settings = (settings or Settings()).replace(**options)
    source_kind = classify(str(input))
    if (
        source_kind == "images"
        and isinstance(output, (str, Path))
        and classify_sink(output) == "file"
        and not Path(output).suffix
    ):
        output = f"{output}/"  # pictures in, a name without a container's suffix out: pictures
    sink_kind = None if isinstance(output, Sink) else classify_sink(output)
    file_to_file = source_kind == "file" and sink_kind == "file"
    if file_to_file:
        if Path(str(output)).exists() and not settings.run.overwrite:
            raise VidlightError(f"{output} already exists; {OVERWRITE} to replace it")
        if Path(input).resolve() == Path(str(output)).resolve():
            raise VidlightError("the output must be a different file from the input")
    if sink_kind == "picture" and (source_kind != "file" or Path(str(input)).suffix.lower() not in IMAGE_SUFFIXES):
        raise VidlightError(
            f"{output} is one picture, the output of a photo; write a video's frames to a folder "
            "(out/) or a pattern (out/{index:06d}.png), or give the output a video suffix (.mp4)"
        )
    if source_kind == "images" and sink_kind in ("images", "pattern"):
        folder = Path(str(output)) if sink_kind == "images" else Path(str(output)).parent
        if folder.resolve() == Path(input).resolve():
            raise VidlightError("write the pictures to another folder than the one they are read from")
    if settings.run.split_seconds is not None or settings.run.executor != "local":
        if not file_to_file or settings.encoder.segment_seconds is not None:
            raise VidlightError(
                "--split and --executor ray take a video file (or a folder of them) into a "
                "video file; run live sources and image folders without them"
            )
        from vidlight.pipeline.parts import enhance_in_parts

        return enhance_in_parts(Path(input), Path(str(output)), settings, stop_event=stop_event, on_frames=on_frames)
    prepare_engine(settings.engine)  # a bad device is reported before anything is opened
    stop_event = stop_event or threading.Event()
    # A bad input is reported before any model is loaded.
    source = source_with(input, settings.source, stop_event=stop_event)

    def make_sink(info: VideoInfo) -> Sink:
        if isinstance(output, Sink):  # a sink object (e.g. vidlight.pipeline.iterate.FrameQueueSink)
            output.open(info)  # type: ignore[attr-defined]
            if isinstance(source, ImageDirSource) and hasattr(output, "picture_names"):
                output.picture_names = [f.name for f in source.files]  # the frame iterator's
            return output
        # A folder of pictures into a folder: each keeps its name (as PNG).
        return sink_with(
            output,
            info,
            settings,
            copy_streams=source.copy_streams,
            live_source=source.live,
            names=picture_stems(source),
        )

    stats = run_source(source, make_sink, settings, stop_event=stop_event, on_frames=on_frames)
    declared = source.info.frames
    if (
        source_kind == "file"
        and settings.source.latest_frame is not True  # frames skipped on purpose
        and settings.run.max_frames is None
        and settings.run.duration_seconds is None
        and declared
        and stats.frames < 0.95 * declared
    ):
        # A recording cut off (a full disk, a camera losing power) still opens and decodes up
        # to where it ends: what it had is written, and the user is told it was not all.
        log.warning(
            "%s ended after %d of the %d frames its header declares (truncated or damaged?); %s holds the %d it had",
            source.name,
            stats.frames,
            declared,
            redact(str(getattr(output, "output", output))),
            stats.frames,
        )
    return stats


def run_source(
    source: Source,
    make_sink: Callable[[VideoInfo], Sink],
    settings: Settings,
    *,
    stop_event: threading.Event | None = None,
    on_frames: Callable[[int], None] | None = None,
    model: Any = None,
) -> RunStats:
    """Run an opened ``source`` through the pipeline into ``make_sink(source.info)``; the source
    is closed in every case. ``model``: an already loaded ``(model, fp16)`` pair to use instead
    of loading ``settings.engine``'s."""
    dev, batch_size = prepare_engine(settings.engine)
    temporal = settings.temporal
    rate = source.info.average_rate
    smoother = TemporalSmoother(
        time_constant=temporal.smooth_time,
        enabled=temporal.smooth,
        denoise=temporal.denoise,
        default_dt=float(1 / rate) if rate else 1 / 30,
        stills=getattr(source, "stills", False),
    )
    latest = source.live if settings.source.latest_frame is None else settings.source.latest_frame
    if latest and not source.live:
        log.warning(
            "%s is a file, read as fast as it is enhanced: --latest-frame drops every frame the model "
            "cannot keep up with; leave it out to enhance them all",
            source.name,
        )
    try:
        model, fp16 = model or load_engine_model(settings.engine, dev)
        enhancer = FrameEnhancer(
            model,
            device=dev,
            fp16=fp16,
            tile=settings.engine.tile,
            tile_overlap=settings.engine.tile_overlap,
            statistics_time=temporal.smooth_time if temporal.smooth else None,
            keep_precision=temporal.smooth,
            strength=temporal.strength,
        )
        sink = make_sink(source.info)
    except BaseException:
        source.close()
        raise
    try:
        return _run(
            source,
            sink,
            enhancer,
            batch_size,
            settings.run.progress,
            settings.run.max_frames,
            smoother,
            latest_frame=latest,
            duration_seconds=settings.run.duration_seconds,
            stop_event=stop_event,
            on_frames=on_frames,
        )
    finally:
        enhancer.close()


def _run(
    source: Source,
    sink: Sink,
    enhancer: FrameEnhancer,
    batch_size: int,
    progress: bool,
    max_frames: int | None = None,
    smoother: TemporalSmoother | None = None,
    *,
    latest_frame: bool = False,
    duration_seconds: float | None = None,
    stop_event: threading.Event | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> RunStats:
    from tqdm.auto import tqdm

    # The reader stops on the run's own event; the caller's (if any) stops the run. A file's
    # run leaves the caller's event as it was, so one event can span several runs (parts).
    stop, external = threading.Event(), stop_event
    live = source.live
    # A live camera's queue holds one batch: when the model falls behind, the oldest frames are
    # dropped rather than delayed (two batches at 30 fps held frames for 267 ms).
    decoded: FrameQueue | LatestFrameQueue = (
        LatestFrameQueue(batch_size) if latest_frame else FrameQueue(maxsize=2 * batch_size)
    )
    encoded: queue.Queue = queue.Queue(maxsize=2)
    errors: list[BaseException] = []
    latencies = Latencies()
    total = min(filter(None, (source.info.frames, max_frames)), default=None)
    name = source.name
    try:  # until the stages run, an interrupt or error here leaves no partial output behind
        bar = tqdm(total=total, unit="frame", desc=name, disable=not progress, dynamic_ncols=True)
        if on_frames is not None:
            bar = _Reporting(bar, on_frames)
        reader = threading.Thread(
            target=read_source,
            args=(source, decoded, stop, max_frames, None, duration_seconds),
            daemon=True,
            name="vidlight-read",
        )
        writer = threading.Thread(
            target=write_sink, args=(sink, encoded, errors, bar, latencies), daemon=True, name="vidlight-write"
        )
        reporter = LiveReport(source, decoded, latencies) if live else None
        deferred = _DeferredInterrupts(sink.output)
        smoothing = SmoothingThread(smoother, encoded, errors)
    except BaseException:
        sink.close(complete=False)
        source.close()
        raise
    interrupted = False
    failure: BaseException | None = None

    def flush(*, end: bool = False) -> None:
        frames, seconds, tags = intake.take()
        packets = intake.take_packets()
        if frames or packets or end:
            smoothing.put(frames, run_model(enhancer, smoother, frames, seconds), seconds, tags, packets, end=end)

    def reconnected(item: Reconnected) -> None:
        flush(end=True)
        smoothing.reset()
        enhancer.reset()
        log.info(
            "%s: reconnected (#%d) after %.1f s, %dx%d",
            name,
            item.count,
            item.downtime_seconds,
            item.width,
            item.height,
        )

    intake = StreamIntake(duration_seconds, reconnected)

    # The strip pool does the CPU parallelism; torch's and OpenCV's own threads would only contend
    # with it. Set before the stages' threads start and restored after they end (both settings
    # are the process's).
    threads = contextlib.ExitStack()
    if enhancer.workers > 1:
        threads.enter_context(single_threaded_ops())
    threads.enter_context(logs_above_bar(progress))
    start = time.perf_counter()
    reader.start()
    writer.start()
    try:
        while True:
            try:
                item = decoded.get(timeout=0.2)
            except queue.Empty:
                item = None
            if stop.is_set() or (external is not None and external.is_set()):
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
        deferred.start(received=1)  # from here the output is being finished: Ctrl-C waits for it
        try:
            smoothing.flush()  # frames the smoother still holds for its look-ahead are finished, not lost
        except BaseException as exc:
            failure = exc
    except BaseException as exc:
        failure = exc
    deferred.start()
    try:
        try:
            stop.set()
            if live:
                if external is not None:
                    external.set()  # a live source's reconnect loop waits on it
                source.close()  # interrupts a pending read (LiveSource.close is thread-safe)
            smoothing.close()  # hands END on to the writer
            writer.join()
            reader.join(timeout=5)
        finally:
            bar.close()
            source.close()
            threads.close()
        failure = failure or (errors[0] if errors else None)
        # A run that failed part-way leaves nothing behind; an interrupted one keeps a playable
        # file, unless a second Ctrl-C abandoned it.
        try:
            sink.close(complete=failure is None and not deferred.abandoned)
        except VidlightError as exc:
            failure = failure or exc
    finally:
        deferred.stop()
    interrupted = interrupted or deferred.received > 0
    stats = RunStats(
        sink.frames_written,
        time.perf_counter() - start,
        source.corrupt_packets,
        interrupted,
        dropped=decoded.dropped,
        reconnects=source.reconnects,
        latencies=latencies if live else None,
    )
    output = sink.output
    if failure is not None:
        if isinstance(failure, VidlightError):
            raise failure
        if isinstance(failure, av.error.FFmpegError):
            raise MediaError(redact(f"failed on {name} -> {output}: {failure}")) from failure
        raise failure
    if source.corrupt_packets and not getattr(source, "stills", False):  # a folder names each picture it skips
        log.warning("%s: skipped %d corrupt packet(s)", name, source.corrupt_packets)
    if live:
        log.info("%s: %s", name, stats.summary())
    if deferred.abandoned:
        raise Interrupted(stats.frames, f"a second Ctrl-C abandoned {output}; what was unfinished was removed")
    if interrupted and not live:
        if stats.frames == 0:
            raise Interrupted(0, "nothing was written")
        many = len(getattr(sink, "segments", ())) > 1
        raise Interrupted(stats.frames, f"{written(sink)} {'hold' if many else 'holds'} them, complete and playable")
    if stats.frames == 0:
        raise MediaError(f"no frame of {name} could be decoded")
    return stats


class _DeferredInterrupts:
    """Ctrl-C and SIGTERM while a run finishes its output. The first is noted (the run then
    counts as interrupted) and the output is finished; the second abandons it (it is closed
    unfinished, so its partial file is removed); from then on the signals act as they did
    before (a third Ctrl-C stops at once). Only in the main thread, where signals arrive."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, output: object) -> None:
        self.output = output
        self.received = 0
        self._previous: dict[int, Any] | None = None

    @property
    def abandoned(self) -> bool:
        return self.received > 1

    def start(self, received: int = 0) -> None:
        """From now on signals are noted; ``received=1``: the run was just interrupted (the
        first Ctrl-C, raised as KeyboardInterrupt), so the next one abandons the output."""
        if self._previous is not None or self.abandoned or threading.current_thread() is not threading.main_thread():
            return
        numbers = [getattr(signal, name) for name in self.SIGNALS if hasattr(signal, name)]
        self._previous = {n: signal.signal(n, self._note) for n in numbers}
        if received:
            self._note(0, None)

    def _note(self, signum: int, frame: object) -> None:
        self.received += 1
        where = redact(str(self.output))
        if self.received == 1:
            log.warning("finishing %s; press Ctrl-C again to abandon it", where)
        else:
            log.warning("abandoning %s once the stages have stopped", where)
            self.stop()

    def stop(self) -> None:
        if self._previous is None:
            return
        for n, handler in self._previous.items():
            # None: a handler installed from C, which Python cannot put back; the default then
            signal.signal(n, signal.SIG_DFL if handler is None else handler)
        self._previous = None


class _Reporting:
    """A progress bar that also tells ``on_frames`` how many frames were written."""

    def __init__(self, bar, on_frames: Callable[[int], None]) -> None:
        self.bar, self.on_frames = bar, on_frames

    def update(self, n: int) -> None:
        self.bar.update(n)
        self.on_frames(n)

    def close(self) -> None:
        self.bar.close()
