"""Buffers between pipeline stages.

:class:`LatestFrameQueue` implements the latest-frame policy for live input: a slow model
must never make the picture fall further and further behind the camera, so when the buffer
is full the oldest waiting frame is dropped instead of blocking the reader. Control items
(reconnect notices, end-of-stream markers) carry state changes and are never dropped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from vidlight.io.files import Frame


def _is_frame(item: Any) -> bool:
    return isinstance(item, Frame)


class LatestFrameQueue:
    """A bounded, thread-safe buffer whose :meth:`put` never blocks.

    Args:
        maxsize: how many items it holds before a new frame pushes out the oldest one (≥ 1).
        droppable: tells frame items (which may be dropped) from control items (which may
            not); by default, instances of :class:`vidlight.io.files.Frame`.

    Attributes:
        dropped: how many frame items were dropped so far.
    """

    def __init__(self, maxsize: int, *, droppable: Callable[[Any], bool] = _is_frame) -> None:
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be an integer >= 1, got {maxsize!r}")
        self.maxsize = maxsize
        self.dropped = 0
        self._droppable = droppable
        self._items: deque = deque()
        self._cond = threading.Condition()

    def put(self, item: Any) -> None:
        """Add ``item``; when full, drop the oldest frame item first (control items are kept).

        The buffer can exceed ``maxsize`` only by control items, which are few.
        """
        with self._cond:
            if len(self._items) >= self.maxsize and self._droppable(item):
                for i, old in enumerate(self._items):
                    if self._droppable(old):
                        del self._items[i]
                        self.dropped += 1
                        break
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Any:
        """Remove and return the oldest item, waiting up to ``timeout`` seconds (None: forever).

        Raises:
            queue.Empty: nothing arrived within ``timeout``.
        """
        with self._cond:
            if timeout is None:
                while not self._items:
                    self._cond.wait()
            else:
                deadline = time.monotonic() + timeout
                while not self._items:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise queue.Empty
                    self._cond.wait(left)
            return self._items.popleft()

    def qsize(self) -> int:
        with self._cond:
            return len(self._items)

    __len__ = qsize


class FrameQueue(queue.Queue):
    """A bounded FIFO that blocks the reader when full and never drops (files, folders)."""

    dropped = 0
