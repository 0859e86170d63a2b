"""Enhanced frames as a Python iterator: the pipeline feeding a detector in the same process.

    >>> for frame in vidlight.enhanced_frames("rtsp://camera/stream", model="sci"):
    ...     boxes = detector(frame.image)          # H x W x 3 uint8 RGB (or a torch tensor)
    ...     print(frame.pts_seconds, len(boxes))

The pipeline (decode, batch, enhance, smooth) runs in a background thread and hands frames
over through a small bounded queue: a slow consumer slows the pipeline down (a file) or makes
it skip to the newest frame (a live source), so memory stays bounded either way. ``close()``,
or the end of a ``with`` block, stops the pipeline and releases the source at once; a loop
left early stops it when the iterator is dropped (until then the pipeline waits, its bounded
queues full).

    >>> with vidlight.enhanced_frames("dark.mp4") as frames:
    ...     for frame in frames:
    ...         if found(frame.image):
    ...             break                          # the pipeline stops here
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from vidlight.errors import VidlightError
from vidlight.io.files import VideoInfo

if TYPE_CHECKING:
    import torch

    from vidlight.pipeline.report import RunStats

_END = object()


@dataclass
class EnhancedFrame:
    """One enhanced picture and when it was taken.

    Attributes:
        image: H x W x 3 RGB, uint8; uint16 (full 16-bit scale) for a source of more than 8
            bits, such as 10-bit HEVC. As stored: a file's display rotation is not applied
            (see ``rotation``).
        pts_seconds: the frame's presentation time in seconds, as the file gives it (which
            need not start at 0); live sources are re-timed from 0; an image folder's picture
            is its place among the folder's files over ``fps`` (which counts a skipped,
            unreadable picture, as ``index`` does not).
        index: 0, 1, 2, ... in the order delivered (an image folder's pictures in natural
            order of their names: 1, 2, 10).
        rotation: the degrees by which to turn ``image`` counterclockwise to show it upright
            (a phone video's display rotation, as PyAV's ``VideoFrame.rotation`` gives it,
            -180..180: a phone held upright usually says -90; 0 for most sources):
            ``np.rot90(frame.image, frame.rotation // 90)``.
        name: the picture's file name, for a folder of pictures (None for other sources).
    """

    image: np.ndarray | torch.Tensor
    pts_seconds: float | None
    index: int
    rotation: int = 0
    name: str | None = None


class FrameQueueSink:
    """A sink that hands frames to :func:`enhanced_frames` through a bounded queue."""

    output = "the frame iterator"

    def __init__(self, *, maxsize: int = 4) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.cancelled = threading.Event()
        self.frames_written = 0
        self.time_base: Fraction | None = None
        self.rotation = 0
        self.picture_names: list[str] | None = None  # a folder's, by pts (set by the runner)

    def open(self, info: VideoInfo) -> None:
        self.time_base = info.time_base
        self.rotation = info.rotation

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        seconds = None if pts is None or self.time_base is None else float(pts * self.time_base)
        names = self.picture_names
        name = names[pts] if names is not None and pts is not None and 0 <= pts < len(names) else None
        if self._put(EnhancedFrame(rgb, seconds, self.frames_written, self.rotation, name)):
            self.frames_written += 1  # handed over: what the run's figures count

    def _put(self, item: object) -> bool:
        """Queue ``item`` once there is room; False if the consumer left first."""
        while not self.cancelled.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def mux_packet(self, packet) -> None:
        pass  # audio has nowhere to go

    def close(self, *, complete: bool = True) -> None:
        pass

    def finish(self) -> None:
        self._put(_END)


class EnhancedFrames(Iterator[EnhancedFrame]):
    """The iterator :func:`enhanced_frames` returns. The pipeline starts at the first frame
    asked for; ``close()`` (from any thread) or leaving its ``with`` block stops it and
    releases the source, and so does dropping the iterator.

    Attributes:
        stats: the run's :class:`~vidlight.pipeline.report.RunStats` once it has ended
            (frames handed over, corrupt packets skipped, drops, reconnects, latencies):
            for a file at its end, for a live source also when closed (which is how a live
            run ends); None before, and when the run failed or a file's was closed early.
    """

    def __init__(self, source: str, settings, format: str, queue_frames: int, on_frames=None) -> None:
        self._source, self._settings, self._format, self._on_frames = source, settings, format, on_frames
        self._sink = FrameQueueSink(maxsize=queue_frames)
        self._stop = threading.Event()
        self._outcome: dict[str, Any] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ended = False

    @property
    def stats(self) -> RunStats | None:
        return self._outcome.get("stats")

    def __next__(self) -> EnhancedFrame:
        with self._lock:
            if self._thread is None and not self._ended:
                # The thread holds the run's parts, not this object, so that dropping the
                # iterator reaches __del__.
                self._thread = threading.Thread(
                    target=_run,
                    args=(self._source, self._settings, self._sink, self._stop, self._outcome, self._on_frames),
                    daemon=True,
                    name="vidlight-frames",
                )
                self._thread.start()
        while not self._ended:
            try:
                item = self._sink.queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():  # closed from another thread
                    self._end()
                    break
                continue
            if item is _END:
                self._end()
                error = self._outcome.pop("error", None)
                if error is not None:
                    raise error
                break
            if self._format == "torch":
                import torch

                item.image = torch.from_numpy(item.image)
            return item
        raise StopIteration

    def _end(self) -> None:
        self._stop.set()
        self._sink.cancelled.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._ended = True

    def close(self) -> None:
        """Stop the pipeline and release the source; waits for its threads to end."""
        self._end()

    def __enter__(self) -> EnhancedFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Dropped (a loop left with break): stop the pipeline; its threads end on their own.
        self._stop.set()
        self._sink.cancelled.set()


def _run(source: str, settings, sink: FrameQueueSink, stop: threading.Event, outcome: dict, on_frames) -> None:
    """The pipeline into ``sink``, its RunStats or its error into ``outcome``."""
    from vidlight.pipeline.runner import Interrupted, enhance_video

    try:
        outcome["stats"] = enhance_video(source, sink, settings, progress=False, stop_event=stop, on_frames=on_frames)
    except Interrupted:
        pass  # the consumer left the loop
    except BaseException as exc:  # handed to the consumer
        outcome["error"] = exc
    finally:
        sink.finish()


def enhanced_frames(
    source: str,
    *,
    format: Literal["numpy", "torch"] = "numpy",
    queue_frames: int = 4,
    **options: Any,
) -> EnhancedFrames:
    """Enhance ``source`` (file, stream URL, webcam, image folder) and yield its frames.

    The arguments are checked here, at the call; the pipeline starts at the first frame asked
    for.

    Args:
        source: as for :func:`vidlight.enhance_video`.
        format: ``"numpy"`` (H x W x 3 arrays) or ``"torch"`` (the same as tensors, no copy).
        queue_frames: frames handed over ahead of the consumer (at least 1).
        **options: any other :func:`vidlight.enhance_video` argument (``settings``,
            ``on_frames``, ``model``, ``device``, ``strength``, ``smooth``, ``duration``,
            ``reconnect``, ...).

    Returns:
        An iterator of :class:`EnhancedFrame`, in the source's order, that can be closed
        (:class:`EnhancedFrames`).

    Raises:
        VidlightError: a bad argument (at the call); as :func:`vidlight.enhance_video` does,
            when the pipeline fails (from the iteration).
    """
    from vidlight.settings import Settings

    if format not in ("numpy", "torch"):
        raise VidlightError(f"invalid format {format!r}; valid: numpy, torch")
    if not isinstance(queue_frames, int) or isinstance(queue_frames, bool) or queue_frames < 1:
        raise VidlightError(f"invalid queue_frames {queue_frames!r}; it must be a whole number of at least 1")
    for reserved in ("output", "progress", "stop_event"):
        if reserved in options:
            raise VidlightError(f"enhanced_frames does not take {reserved!r}")
    on_frames = options.pop("on_frames", None)
    settings = (options.pop("settings", None) or Settings()).replace(**options)  # a bad option fails here
    return EnhancedFrames(source, settings, format, queue_frames, on_frames)
