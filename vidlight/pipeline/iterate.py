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
            need not start at 0); live sources are re-timed from 0; an image folder's
            pictures are ``index / fps``.
        index: 0, 1, 2, ... in the order delivered (an image folder's pictures in natural
            order of their names: 1, 2, 10).
        rotation: the degrees by which to turn ``image`` counterclockwise to show it upright
            (a phone video's display rotation, as PyAV's ``VideoFrame.rotation`` gives it; 0
            for most sources): ``np.rot90(frame.image, frame.rotation // 90)``.
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
        self._put(EnhancedFrame(rgb, seconds, self.frames_written, self.rotation, name))
        self.frames_written += 1

    def _put(self, item: object) -> None:
        while not self.cancelled.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def mux_packet(self, packet) -> None:
        pass  # audio has nowhere to go

    def close(self, *, complete: bool = True) -> None:
        pass

    def finish(self) -> None:
        self._put(_END)


class EnhancedFrames(Iterator[EnhancedFrame]):
    """The iterator :func:`enhanced_frames` returns; ``close()`` (or leaving its ``with`` block)
    stops the pipeline and releases the source.

    Attributes:
        stats: the run's :class:`~vidlight.pipeline.report.RunStats` once the source has
            ended (frames delivered, corrupt packets skipped, drops, reconnects, latencies);
            None until then, and when the run failed or was closed before the end.
    """

    def __init__(self, frames: Iterator[EnhancedFrame], outcome: dict[str, Any]) -> None:
        self._frames = frames
        self._outcome = outcome

    @property
    def stats(self) -> RunStats | None:
        return self._outcome.get("stats")

    def __next__(self) -> EnhancedFrame:
        return next(self._frames)

    def close(self) -> None:
        """Stop the pipeline and release the source (waits for its threads to end)."""
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> EnhancedFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        **options: any other :func:`vidlight.enhance_video` argument (``settings``, ``model``,
            ``device``, ``strength``, ``smooth``, ``duration_seconds``, ``reconnect``, ...).

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
    settings = (options.pop("settings", None) or Settings()).replace(**options)  # a bad option fails here
    outcome: dict[str, Any] = {}
    return EnhancedFrames(_frames(source, settings, format, queue_frames, outcome), outcome)


def _frames(source: str, settings, format: str, queue_frames: int, outcome: dict[str, Any]) -> Iterator[EnhancedFrame]:
    from vidlight.pipeline.runner import Interrupted, enhance_video

    sink = FrameQueueSink(maxsize=queue_frames)
    stop = threading.Event()

    def work() -> None:
        try:
            outcome["stats"] = enhance_video(source, sink, settings, progress=False, stop_event=stop)
        except Interrupted:
            pass  # the consumer left the loop
        except BaseException as exc:  # handed to the consumer
            outcome["error"] = exc
        finally:
            sink.finish()

    thread = threading.Thread(target=work, daemon=True, name="vidlight-frames")
    thread.start()
    try:
        while True:
            item = sink.queue.get()
            if item is _END:
                break
            if format == "torch":
                import torch

                item.image = torch.from_numpy(item.image)
            yield item
    finally:
        stop.set()
        sink.cancelled.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
