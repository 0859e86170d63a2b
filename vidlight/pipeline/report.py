"""What a run reports: its statistics, its live latencies in bounded memory, and the periodic
log line of a live run."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("vidlight")


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

    def median_recent(self) -> float | None:
        """The median of the last :attr:`RECENT` latencies (None before the first)."""
        with self._lock:
            recent = list(self.recent)
        return float(np.median(recent)) if recent else None

    def __getstate__(self) -> dict:  # picklable (sent between processes): the lock stays behind
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of all latencies so far (None before the first)."""
        with self._lock:
            if not self.count:
                return None
            rank = max(1, math.ceil(q * self.count))
            index = int(np.searchsorted(np.cumsum(self._counts), rank))
        return self.LOWEST * self.RESOLUTION**index


def logs_above_bar(shown: bool) -> contextlib.AbstractContextManager:
    """While a progress bar is ``shown``, console log lines go above it (tqdm clears the bar,
    writes the line and draws the bar again) rather than onto its line."""
    if not shown:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm(loggers=[logging.getLogger()])


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
        text = f"{self.frames} frame{'' if self.frames == 1 else 's'} in {self.seconds:.1f} s ({self.fps:.1f} fps)"
        if self.dropped or self.reconnects or self.latencies:
            text += f", {self.dropped} dropped, {self.reconnects} reconnect(s)"
        median, p95 = self.latency(0.5), self.latency(0.95)
        if self.latencies and median is not None and p95 is not None:
            text += (
                f", latency median {1000 * median:.0f} ms, p95 {1000 * p95:.0f} ms,"
                f" max {1000 * (self.latencies.max or 0):.0f} ms"
            )
        return text


class LiveReport:
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
        recent = list(self.latencies.recent)[-(count - self.frames_then) :] if count > self.frames_then else []
        fps = (count - self.frames_then) / (now - self.next + self.every)
        lat = f", latency {1000 * float(np.median(recent)):.0f} ms" if recent else ""
        log.info(
            "%s: %.1f fps, %d dropped, %d reconnect(s)%s",
            self.source.name,
            fps,
            self.queue.dropped,
            self.source.reconnects,
            lat,
        )
        self.frames_then = count
        self.next = now + self.every
