"""The reader and writer threads: a source's items into a queue, a queue's frames into a sink.

Each gives up once the run's ``stop`` event is set, so no thread waits forever on a queue
that nobody reads. The batching thread between them is :mod:`vidlight.pipeline.runner`'s
(one stream) or :mod:`vidlight.pipeline.serve`'s (many).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from vidlight.io import Sink, Source
from vidlight.io.files import Frame
from vidlight.pipeline.queues import LatestFrameQueue
from vidlight.pipeline.report import Latencies
from vidlight.pipeline.stages import SINK, SOURCE, timed


class FrameTiming(NamedTuple):
    """When a frame is shown and when it arrived, carried beside it through the pipeline."""

    pts: int | None  # presentation timestamp in the stream's time base (ticks)
    received: float | None  # time.monotonic() when the reader got it (live latency), else None


END = object()  # the last item of a queue


class Failure:
    """An exception on its way from the reader to the batching thread."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def put_until_stopped(q: queue.Queue | LatestFrameQueue, item: object, stop: threading.Event) -> bool:
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


def read_source(
    source: Source,
    q: queue.Queue | LatestFrameQueue,
    stop: threading.Event,
    max_frames: int | None,
    notify: Callable[[], None] | None = None,
    duration_seconds: float | None = None,
) -> None:
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
                item = next(items, END)
            if item is END:
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
            if not put_until_stopped(q, item, stop):
                return
            if notify is not None:
                notify()
    except BaseException as exc:  # handed to the main thread
        put_until_stopped(q, Failure(exc), stop)
    finally:
        put_until_stopped(q, END, stop)
        if notify is not None:
            notify()


def write_sink(sink: Sink, q: queue.Queue, errors: list[BaseException], bar, latencies: Latencies) -> None:
    """Writes ``(frames, timings, packets)`` items of ``q`` into ``sink`` until :data:`END`; the
    first error is kept in ``errors`` and the rest of the queue is drained unwritten."""
    while True:
        item = q.get()
        if item is END:
            return
        if errors:
            continue  # drain after a failure so the producer never blocks
        frames, tags, packets = item
        before = sink.frames_written
        try:
            for rgb, timing in zip(frames, tags):
                with timed(SINK):
                    sink.write(rgb, timing.pts)
                if timing.received is not None:
                    latencies.add(time.monotonic() - timing.received)
            for packet in packets:
                sink.mux_packet(packet)
        except BaseException as exc:
            errors.append(exc)
        if bar is not None:
            bar.update(sink.frames_written - before)  # a sink may keep only some (a part's own frames)
