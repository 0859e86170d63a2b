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
from vidlight.io.files import FileSource, partial_path
from vidlight.pipeline.folder import plan_folder, videos_in
from vidlight.pipeline.report import RunStats
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

        from vidlight.pipeline.enhancer import load_engine_model, prepare_engine

        dev, _ = prepare_engine(settings.engine)
        model, fp16 = load_engine_model(settings.engine, dev)
        self.settings = settings.replace(model=model, fp16=fp16, progress=False, executor="local")
        self.node = ray.get_runtime_context().get_node_id()
        self.frames = 0

    def enhance(self, video: str, target: str) -> dict[str, Any]:
        """``video`` into ``target``; its figures, or the one-line error of a bad input."""
        from vidlight.pipeline.runner import enhance_video

        self.frames = 0
        start = time.perf_counter()
        try:
            stats = enhance_video(video, target, self.settings, on_frames=self._count)
        except VidlightError as exc:
            return {"error": str(exc), "node": self.node}
        return {"frames": stats.frames, "seconds": time.perf_counter() - start,
                "corrupt_packets": stats.corrupt_packets, "node": self.node}

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
    node: str = ""
    attempts: int = 0
    corrupt_packets: int = 0
    error: str | None = None


def enhance_folder_on_ray(input: str | Path, output: str | Path, settings: Settings | None = None,
                          **options: Any) -> RunStats:
    """Enhance every video in the folder ``input`` into the folder ``output`` on a Ray cluster.

    As :func:`vidlight.pipeline.folder.enhance_folder` does, with the videos spread over
    ``settings.run.workers`` Ray workers (default: one per GPU of the cluster, else one per
    CPU). Progress covers the whole batch (files and frames done, fps, ETA); a table of every
    video (frames, seconds, fps, node, attempts) is logged at the end.

    Returns:
        the batch's :class:`RunStats` (frames summed; seconds: the batch's wall time).

    Raises:
        VidlightError: Ray is not installed, a setting is bad, or some videos failed (the rest
            are in ``output``); :class:`~vidlight.pipeline.runner.Interrupted` on Ctrl-C.
    """
    from tqdm.auto import tqdm

    from vidlight.pipeline.runner import Interrupted

    settings = (settings or Settings()).replace(**options)
    if not isinstance(settings.engine.model, str):
        raise VidlightError("Ray workers load the model themselves: give it by name, not as a loaded model")
    ray = import_ray()
    todo = plan_folder(input, output, settings.run.overwrite)
    if not todo:
        log.info("every video of %s is already in %s", input, output)
        return RunStats(0, 0.0, 0)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(logging_level=logging.WARNING, log_to_driver=False)
    actors: list = []
    pending: dict = {}  # ObjectRef -> (actor, video, target, result)
    results = {video: FileResult(video.name) for video, _ in todo}
    start = time.perf_counter()
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if settings.engine.device != "cpu" else 0
        count = settings.run.workers or (gpus or max(1, int(resources.get("CPU", 1))))
        count = min(count, len(todo))
        # A worker without a GPU runs on the CPU even when the driver's setting says auto.
        worker_settings = settings if gpus else settings.replace(device="cpu")
        worker = ray.remote(EnhanceWorker).options(num_cpus=1, num_gpus=1 if gpus else 0, max_concurrency=2)

        def new_actor():
            return worker.remote(worker_settings)

        actors = [new_actor() for _ in range(count)]
        idle = deque(actors)
        queue = deque(todo)
        totals = [FileSource(video).info.frames for video, _ in todo]
        total = sum(totals) if all(totals) else None
        log.info("%d video(s) on %d Ray worker(s)%s", len(todo), count, f" with {gpus} GPU(s)" if gpus else "")
        bar = tqdm(total=total, unit="frame", desc=f"{Path(input).name} on Ray", disable=not settings.run.progress,
                   dynamic_ncols=True)
        finished_frames = 0
        done_files = 0
        while queue or pending:
            while idle and queue:
                actor = idle.popleft()
                video, target = queue.popleft()
                results[video].attempts += 1
                pending[actor.enhance.remote(str(video), str(target))] = (actor, video, target)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in ready:
                actor, video, target = pending.pop(ref)
                result = results[video]
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    partial_path(Path(target)).unlink(missing_ok=True)  # the dead worker's unfinished file
                    actors.remove(actor)
                    replacement = new_actor()
                    actors.append(replacement)
                    idle.append(replacement)
                    if result.attempts >= ATTEMPTS:
                        result.error = f"its worker died {result.attempts} times ({type(exc).__name__})"
                        log.error("%s: %s", video.name, result.error)
                    else:
                        log.warning("%s: its worker died; doing it again on another", video.name)
                        queue.appendleft((video, target))
                    continue
                idle.append(actor)
                result.node = outcome["node"][:8]
                if "error" in outcome:
                    result.error = outcome["error"]
                    log.error("%s: %s", video.name, result.error)
                    continue
                result.frames, result.seconds = outcome["frames"], outcome["seconds"]
                result.corrupt_packets = outcome["corrupt_packets"]
                finished_frames += result.frames
                done_files += 1
            in_flight = 0
            for actor, _, _ in pending.values():
                try:
                    in_flight += ray.get(actor.frames_done.remote(), timeout=POLL_SECONDS)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    pass
            bar.n = finished_frames + in_flight
            bar.set_postfix_str(f"{done_files}/{len(todo)} files", refresh=False)
            bar.refresh()
        bar.close()
    except KeyboardInterrupt:
        for _, _, target in pending.values():
            partial_path(Path(target)).unlink(missing_ok=True)
        done = sum(1 for r in results.values() if r.frames and not r.error)
        raise Interrupted(f"interrupted: {done} of {len(todo)} videos are complete in {output}; run the same "
                          f"command again to do the rest") from None
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()
    seconds = time.perf_counter() - start
    _log_table(list(results.values()))
    failed = [r.name for r in results.values() if r.error]
    if failed:
        raise VidlightError(f"{len(failed)} of {len(videos_in(input))} videos failed ({', '.join(failed)}); "
                            f"the rest are in {output}")
    return RunStats(sum(r.frames for r in results.values()), seconds,
                    sum(r.corrupt_packets for r in results.values()))


def _log_table(results: list[FileResult]) -> None:
    width = max(len(r.name) for r in results)
    log.info("%-*s %7s %8s %7s %-8s %s", width, "video", "frames", "seconds", "fps", "node", "attempts")
    for r in results:
        fps = f"{r.frames / r.seconds:7.1f}" if r.seconds else "      -"
        status = f"  failed: {r.error}" if r.error else ""
        log.info("%-*s %7d %8.1f %s %-8s %d%s", width, r.name, r.frames, r.seconds, fps, r.node, r.attempts, status)
