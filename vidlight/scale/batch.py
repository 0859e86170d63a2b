"""A folder of videos on a Ray cluster: whole files on a pool of workers that each load the
model once.

The cluster is the one ``RAY_ADDRESS`` names (Ray's own convention), else one started here.
Every output is written as :func:`vidlight.enhance_video` writes it: to a hidden partial file
in the output folder, renamed when complete, so the folder (shared storage on a real cluster)
only ever holds finished videos, and a batch run again skips them. A worker that dies
mid-file is replaced and the file is done again from the start by the next free worker.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidlight.errors import VidlightError
from vidlight.io.files import open_input, partial_path
from vidlight.pipeline.folder import plan_folder, videos_in
from vidlight.pipeline.report import RunStats, logs_above_bar
from vidlight.settings import Settings

log = logging.getLogger("vidlight")

ATTEMPTS = 3  # a video whose worker dies this many times is reported as failed
POLL_SECONDS = 0.5


def import_ray():
    """The ``ray`` module, or a :class:`VidlightError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise VidlightError("--executor ray needs Ray: pip install 'vidlight[ray]'") from None
    return ray


class EnhanceWorker:
    """One Ray worker: loads the model once, then enhances whole files with it."""

    def __init__(self, settings: Settings) -> None:
        import ray

        from vidlight.allocator import keep_freed_memory
        from vidlight.pipeline.enhancer import load_engine_model, prepare_engine

        keep_freed_memory()  # a process of vidlight's own, as the command line's is
        dev, _ = prepare_engine(settings.engine)
        model, fp16 = load_engine_model(settings.engine, dev)
        self.settings = settings.replace(model=model, fp16=fp16, progress=False, executor="local")
        context = ray.get_runtime_context()
        gpus = context.get_accelerator_ids().get("GPU", [])
        # Where it runs, for the summary: the node, and the GPU Ray gave it.
        self.where = context.get_node_id()[:8] + (f" gpu {','.join(map(str, gpus))}" if gpus else "")
        self.frames = 0

    def enhance(self, video: str, target: str) -> dict[str, Any]:
        """``video`` into ``target``; its figures, or the one-line error of a bad input."""
        from vidlight.pipeline.runner import enhance_video

        return self._timed(lambda: enhance_video(video, target, self.settings, on_frames=self._count))

    def enhance_part(self, input: str, part: tuple, target: str) -> dict[str, Any]:
        """One part of a long file (:mod:`vidlight.pipeline.parts`) into ``target``."""
        from vidlight.pipeline.parts import Part, enhance_part

        return self._timed(
            lambda: enhance_part(Path(input), Part(*part), Path(target), self.settings, on_frames=self._count)
        )

    def _timed(self, run) -> dict[str, Any]:
        self.frames = 0
        start = time.perf_counter()
        try:
            stats = run()
        except VidlightError as exc:
            return {"error": str(exc), "where": self.where}
        return {
            "frames": stats.frames,
            "seconds": time.perf_counter() - start,
            "corrupt_packets": stats.corrupt_packets,
            "where": self.where,
        }

    def frames_done(self) -> int:
        """Frames of the current file written so far (answered while :meth:`enhance` runs)."""
        return self.frames

    def _count(self, n: int) -> None:
        self.frames += n


@dataclass
class FileResult:
    """One video of a Ray batch, for the summary table."""

    name: str
    frames: int = 0
    seconds: float = 0.0
    where: str = ""  # the node (and GPU) of the worker that did it
    attempts: int = 0
    corrupt_packets: int = 0
    error: str | None = None


@dataclass
class Job:
    """A task for a worker: its method, arguments, and the output it writes."""

    name: str
    method: str
    args: tuple
    target: Path


def run_jobs(jobs: list[Job], settings: Settings, bar, *, what: str) -> list[FileResult]:
    """``jobs`` on a pool of Ray workers; a job whose worker dies is given to another.

    ``bar`` (a tqdm bar) counts frames as the workers write them; ``what`` names the jobs in
    logs ("video", "part"). Connects to the cluster (``RAY_ADDRESS``, else a new local one)
    unless Ray is already initialised, and leaves it as it found it.
    """
    ray = import_ray()
    if not isinstance(settings.engine.model, str):
        raise VidlightError("Ray workers load the model themselves: give it by name, not as a loaded model")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(logging_level=logging.WARNING, log_to_driver=False)
    actors: list = []
    pending: dict = {}  # ObjectRef -> (actor, job)
    results = {job.name: FileResult(job.name) for job in jobs}
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if settings.engine.device != "cpu" else 0
        count = min(settings.run.workers or (gpus or max(1, int(resources.get("CPU", 1)))), len(jobs))
        # A worker without a GPU runs on the CPU even when the driver's setting says auto.
        worker_settings = (settings if gpus else settings.replace(device="cpu")).replace(executor="local")
        worker = ray.remote(EnhanceWorker).options(num_cpus=1, num_gpus=1 if gpus else 0, max_concurrency=2)
        actors = [worker.remote(worker_settings) for _ in range(count)]
        idle = deque(actors)
        queue = deque(jobs)
        log.info("%d %s(s) on %d Ray worker(s)%s", len(jobs), what, count, f" with {gpus} GPU(s)" if gpus else "")
        finished_frames = bar.n
        done = 0
        while queue or pending:
            while idle and queue:
                actor, job = idle.popleft(), queue.popleft()
                results[job.name].attempts += 1
                pending[getattr(actor, job.method).remote(*job.args)] = (actor, job)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in ready:
                actor, job = pending.pop(ref)
                result = results[job.name]
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    partial_path(job.target).unlink(missing_ok=True)  # the dead worker's unfinished file
                    actors.remove(actor)
                    replacement = worker.remote(worker_settings)
                    actors.append(replacement)
                    idle.append(replacement)
                    if result.attempts >= ATTEMPTS:
                        result.error = f"its worker died {result.attempts} times ({type(exc).__name__})"
                        log.error("%s: %s", job.name, result.error)
                    else:
                        log.warning("%s: its worker died; doing it again on another", job.name)
                        queue.appendleft(job)
                    continue
                idle.append(actor)
                result.where = outcome["where"]
                if "error" in outcome:
                    result.error = outcome["error"]
                    log.error("%s: %s", job.name, result.error)
                    continue
                result.frames, result.seconds = outcome["frames"], outcome["seconds"]
                result.corrupt_packets = outcome["corrupt_packets"]
                finished_frames += result.frames
                done += 1
            in_flight = 0
            for actor, _ in pending.values():
                try:
                    in_flight += ray.get(actor.frames_done.remote(), timeout=POLL_SECONDS)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    pass
            bar.n = finished_frames + in_flight
            bar.set_postfix_str(f"{done}/{len(jobs)} {what}s", refresh=False)
            bar.refresh()
    except KeyboardInterrupt:
        for _, job in pending.values():
            partial_path(job.target).unlink(missing_ok=True)
        raise
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()
    return list(results.values())


def enhance_folder_on_ray(
    input: str | Path, output: str | Path, settings: Settings | None = None, **options: Any
) -> RunStats:
    """Enhance every video in the folder ``input`` into the folder ``output`` on a Ray cluster.

    As :func:`vidlight.pipeline.folder.enhance_folder` does, with the videos spread over
    ``settings.run.workers`` Ray workers (default: one per GPU of the cluster, else one per
    CPU). Progress covers the whole batch (files and frames done, fps, ETA); a table of every
    video (frames, seconds, fps, node and GPU, attempts) is logged at the end.

    Returns:
        the batch's :class:`RunStats` (frames summed; seconds: the batch's wall time).

    Raises:
        VidlightError: Ray is not installed, a setting is bad, or some videos failed (the rest
            are in ``output``); :class:`~vidlight.pipeline.runner.Interrupted` on Ctrl-C.
    """
    from tqdm.auto import tqdm

    from vidlight.pipeline.runner import Interrupted

    settings = (settings or Settings()).replace(**options)
    import_ray()
    todo = plan_folder(input, output, settings.run.overwrite)
    if not todo:
        log.info("every video of %s is already in %s", input, output)
        return RunStats(0, 0.0, 0)
    totals = [_frame_count(video) for video, _ in todo]
    bar = tqdm(
        total=sum(totals) if all(totals) else None,
        unit="frame",
        desc=f"{Path(input).name} on Ray",
        disable=not settings.run.progress,
        dynamic_ncols=True,
    )
    jobs = [Job(video.name, "enhance", (str(video), str(target)), target) for video, target in todo]
    start = time.perf_counter()
    try:
        with logs_above_bar(settings.run.progress):
            results = run_jobs(jobs, settings, bar, what="video")
    except KeyboardInterrupt:
        done = sum(1 for _, target in todo if target.exists())
        raise Interrupted(
            bar.n, f"{done} of {len(todo)} videos are complete in {output}; run the same command again to do the rest"
        ) from None
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    _log_table(results)
    failed = [r.name for r in results if r.error]
    if failed:
        raise VidlightError(
            f"{len(failed)} of {len(videos_in(input))} videos failed ({', '.join(failed)}); the rest are in {output}"
        )
    return RunStats(sum(r.frames for r in results), seconds, sum(r.corrupt_packets for r in results))


def run_parts_on_ray(input: Path, parts: list, settings: Settings, bar) -> None:
    """The ``(part, target)`` pairs of a long file (:mod:`vidlight.pipeline.parts`) on Ray workers."""
    jobs = [
        Job(
            part.name,
            "enhance_part",
            (str(input), (part.index, part.start_pts, part.end_pts, part.warm_pts), str(target)),
            target,
        )
        for part, target in parts
    ]
    if not jobs:
        return
    results = run_jobs(jobs, settings, bar, what="part")
    failed = [r for r in results if r.error]
    if failed:
        raise VidlightError(
            f"{input.name}: {len(failed)} of {len(jobs)} parts failed ({failed[0].name}: "
            f"{failed[0].error}); the finished ones are kept: run again to retry"
        )


def _frame_count(video: Path) -> int:
    """The frame count the container declares (0 when it declares none): for the ETA only,
    read from the header without decoding."""
    with open_input(video) as container:
        return container.streams.video[0].frames or 0


def _log_table(results: list[FileResult]) -> None:
    width = max(len(r.name) for r in results)
    where = max(8, *(len(r.where) for r in results))
    log.info("%-*s %7s %8s %7s %-*s %s", width, "video", "frames", "seconds", "fps", where, "node", "attempts")
    for r in results:
        fps = f"{r.frames / r.seconds:7.1f}" if r.seconds else "      -"
        status = f"  failed: {r.error}" if r.error else ""
        log.info(
            "%-*s %7d %8.1f %s %-*s %d%s", width, r.name, r.frames, r.seconds, fps, where, r.where, r.attempts, status
        )
