"""Enhanced frames as a Python iterator: the pipeline feeding a detector in the same process.

    >>> for frame in vidlight.enhanced_frames("rtsp://camera/stream", model="sci"):
    ...     boxes = detector(frame.image)          # H x W x 3 uint8 RGB (or a torch tensor)
    ...     print(frame.pts_seconds, len(boxes))

The pipeline (decode, batch, enhance, smooth) runs in a background thread and hands frames
over through a small bounded queue: a slow consumer slows the pipeline down (a file) or makes
it skip to the newest frame (a live source), so memory stays bounded either way. Leaving the
loop early stops the pipeline and releases the source.
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

_END = object()


@dataclass
class EnhancedFrame:
    """One enhanced picture and when it was taken."""

    image: np.ndarray | torch.Tensor  # H x W x 3 RGB, uint8 (uint16 for >8-bit input)
    pts_seconds: float | None  # from the source's start (live sources: re-based to 0)
    index: int  # 0, 1, 2, ... in the order delivered


class FrameQueueSink:
    """A sink that hands frames to :func:`enhanced_frames` through a bounded queue."""

    output = "the frame iterator"

    def __init__(self, *, maxsize: int = 4) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.cancelled = threading.Event()
        self.frames_written = 0
        self.time_base: Fraction | None = None

    def open(self, info: VideoInfo) -> None:
        self.time_base = info.time_base

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        seconds = None if pts is None or self.time_base is None else float(pts * self.time_base)
        self._put(EnhancedFrame(rgb, seconds, self.frames_written))
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


def enhanced_frames(
    source: str,
    *,
    format: Literal["numpy", "torch"] = "numpy",
    queue_frames: int = 4,
    **options: Any,
) -> Iterator[EnhancedFrame]:
    """Enhance ``source`` (file, stream URL, webcam, image folder) and yield its frames.

    Args:
        source: as for :func:`vidlight.enhance_video`.
        format: ``"numpy"`` (H x W x 3 arrays) or ``"torch"`` (the same as tensors, no copy).
        queue_frames: frames handed over ahead of the consumer.
        **options: any other :func:`vidlight.enhance_video` argument (``model``, ``device``,
            ``strength``, ``smooth``, ``duration_seconds``, ``reconnect``, ...).

    Raises:
        VidlightError: as :func:`vidlight.enhance_video` does, when the pipeline fails.
    """
    from vidlight.pipeline.runner import Interrupted, enhance_video

    if format not in ("numpy", "torch"):
        raise VidlightError(f"invalid format {format!r}; valid: numpy, torch")
    for reserved in ("output", "progress", "stop_event"):
        if reserved in options:
            raise VidlightError(f"enhanced_frames does not take {reserved!r}")
    sink = FrameQueueSink(maxsize=queue_frames)
    stop = threading.Event()
    outcome: dict[str, BaseException] = {}

    def work() -> None:
        try:
            enhance_video(source, sink, progress=False, stop_event=stop, **options)
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
