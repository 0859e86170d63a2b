"""Camera pools on a Ray cluster: a config's streams spread over workers, each running the
many-stream server (:func:`vidlight.pipeline.serve.serve`, cross-stream batching as on one
machine) for its share.

A worker that dies is started again with the same cameras (a live camera reconnects, a
recording starts a new file: the dead worker's unfinished one cannot be finished). Every
camera's status (state, frames, fps, drops, reconnects, latency, restarts) is gathered in
one place: logged every :data:`REPORT_SECONDS` and readable with :meth:`CameraPool.status`.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from typing import Any

from vidlight.errors import VidlightError
from vidlight.pipeline.serve import CameraStatus, ServeReport, Stream, serve
from vidlight.scale.batch import import_ray
from vidlight.settings import Settings

log = logging.getLogger("vidlight")

REPORT_SECONDS = 10.0
POLL_SECONDS = 1.0
MAX_RESTARTS = 100  # a worker that keeps dying is given up after this many restarts


class CameraServer:
    """One Ray worker: :func:`~vidlight.pipeline.serve.serve` for its share of the streams."""

    def __init__(self, streams: list[Stream], shared: Settings) -> None:
        from vidlight.allocator import keep_freed_memory

        keep_freed_memory()  # a process of vidlight's own, as the command line's is
        self.streams, self.shared = streams, shared
        self.stop = threading.Event()
        self.report = ServeReport()

    def run(self) -> ServeReport:
        try:
            serve(self.streams, self.shared, stop_event=self.stop, report=self.report)
        except VidlightError as exc:  # no stream of this share could start
            for s in self.streams:
                self.report.failures.setdefault(s.name, str(exc))
        return self.report

    def status(self) -> list[CameraStatus]:
        return self.report.status()

    def stop_serving(self) -> None:
        self.stop.set()


class CameraPool:
    """A config's streams on Ray workers (see the module docstring).

    Args:
        streams: the streams, as for :func:`~vidlight.pipeline.serve.serve`.
        settings: the shared settings; ``settings.run.workers`` workers (default: one per GPU of
            the cluster, else one per CPU, at most one per stream).
    """

    def __init__(self, streams: list[Stream], settings: Settings | None = None, **options: Any) -> None:
        self.streams = streams
        self.settings = (settings or Settings()).replace(**options)
        if not isinstance(self.settings.engine.model, str):
            raise VidlightError("Ray workers load the model themselves: give it by name, not as a loaded model")
        self._lock = threading.Lock()
        self._status: dict[str, CameraStatus] = {}
        self._restarts: dict[str, int] = {s.name: 0 for s in streams}

    def status(self) -> list[CameraStatus]:
        """Every camera's last reported status (refreshed every second while :meth:`run` runs)."""
        with self._lock:
            return [self._status[name] for name in sorted(self._status)]

    def run(self, stop_event: threading.Event | None = None) -> ServeReport:
        """Serve until every stream ends, or ``stop_event`` / Ctrl-C; the merged report."""
        ray = import_ray()
        stop = stop_event or threading.Event()
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(logging_level=logging.WARNING, log_to_driver=False)
        servers: list[dict] = []
        report = ServeReport()
        try:
            resources = ray.cluster_resources()
            gpus = int(resources.get("GPU", 0)) if self.settings.engine.device != "cpu" else 0
            count = min(self.settings.run.workers or (gpus or max(1, int(resources.get("CPU", 1)))), len(self.streams))
            shared = self.settings if gpus else self.settings.replace(device="cpu")
            worker = ray.remote(CameraServer).options(num_cpus=1, num_gpus=1 if gpus else 0, max_concurrency=3)
            shares = [self.streams[i::count] for i in range(count)]

            def start(share: list[Stream]) -> dict:
                actor = worker.remote(share, shared)
                return {"share": share, "actor": actor, "ref": actor.run.remote(), "restarts": 0}

            servers = [start(share) for share in shares]
            log.info(
                "%d camera(s) on %d Ray worker(s)%s", len(self.streams), count, f" with {gpus} GPU(s)" if gpus else ""
            )
            next_report = time.monotonic() + REPORT_SECONDS
            interrupted = False
            try:
                while any(s["ref"] is not None for s in servers):
                    if stop.is_set():
                        interrupted = True
                        break
                    refs = [s["ref"] for s in servers if s["ref"] is not None]
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_SECONDS)
                    for server in [s for s in servers if s["ref"] in ready]:
                        self._finished(ray, server, report, start)
                    self._poll(ray, servers)
                    if time.monotonic() >= next_report:
                        for line in self.status():
                            log.info("%s", line.line())
                        next_report = time.monotonic() + REPORT_SECONDS
            except KeyboardInterrupt:
                interrupted = True
            if interrupted:
                report.interrupted = True
                live = [s for s in servers if s["ref"] is not None]
                for server in live:
                    server["actor"].stop_serving.remote()
                ray.wait([s["ref"] for s in live], num_returns=len(live), timeout=30)
                for server in live:
                    self._finished(ray, server, report, None)
        finally:
            for server in servers:
                ray.kill(server["actor"])
            if started_here:
                ray.shutdown()
        for name in sorted(report.streams):
            restarts = self._restarts.get(name, 0)
            log.info(
                "%s: %s%s",
                name,
                report.streams[name].summary(),
                f"; its worker was restarted {restarts} time(s)" if restarts else "",
            )
        return report

    def _finished(self, ray, server: dict, report: ServeReport, start) -> None:
        """A worker's run came back: merge its report, or start it again if it died."""
        names = [s.name for s in server["share"]]
        try:
            result = ray.get(server["ref"], timeout=0 if start is not None else 5)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
            server["ref"] = None
            if start is None or server["restarts"] >= MAX_RESTARTS:
                for name in names:
                    report.failures.setdefault(name, f"its worker died ({type(exc).__name__})")
                return
            log.warning("the worker serving %s died; starting it again", ", ".join(names))
            # Ray may call an actor unavailable that still runs: end it, so that two workers
            # never write one camera's output.
            ray.kill(server["actor"], no_restart=True)
            restarted = start([_resumed(s) for s in server["share"]])
            restarted["restarts"] = server["restarts"] + 1
            server.update(restarted)
            for name in names:
                self._restarts[name] += 1
            return
        server["ref"] = None
        report.streams.update(result.streams)
        report.failures.update(result.failures)
        report.not_started += result.not_started
        report.model_calls += result.model_calls
        report.frames += result.frames
        report.mixed_calls += result.mixed_calls
        with self._lock:
            for status in result.status():
                status.restarts = self._restarts[status.name]
                self._status[status.name] = status

    def _poll(self, ray, servers: list[dict]) -> None:
        """Each running worker's camera status, gathered here."""
        calls = {id(s): s["actor"].status.remote() for s in servers if s["ref"] is not None}
        for server in servers:
            ref = calls.get(id(server))
            if ref is None:
                continue
            try:
                statuses = ray.get(ref, timeout=POLL_SECONDS)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                continue
            with self._lock:
                for status in statuses:
                    status.restarts = self._restarts[status.name]
                    self._status[status.name] = status


def serve_on_ray(
    streams: list[Stream],
    settings: Settings | None = None,
    *,
    stop_event: threading.Event | None = None,
    **options: Any,
) -> ServeReport:
    """:func:`vidlight.pipeline.serve.serve` with the streams spread over Ray workers
    (:class:`CameraPool`); the merged :class:`~vidlight.pipeline.serve.ServeReport`."""
    return CameraPool(streams, settings, **options).run(stop_event)


def _resumed(stream: Stream) -> Stream:
    """``stream`` for a worker started again: an image folder goes on after the pictures the
    dead worker wrote rather than being refused (or, with overwrite, emptied)."""
    again = copy.copy(stream)
    again.resume = True
    return again
