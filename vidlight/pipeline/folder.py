"""A folder of videos into a folder: each video enhanced under its own name, a batch that
resumes where it stopped."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vidlight.errors import OVERWRITE, VidlightError
from vidlight.pipeline.report import RunStats
from vidlight.settings import Settings

log = logging.getLogger("vidlight")

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mts", ".flv", ".wmv")


def videos_in(folder: str | Path) -> list[Path]:
    """The video files directly in ``folder`` (by suffix), sorted; [] when it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
    )


def plan_folder(input: str | Path, output: str | Path, overwrite: bool) -> list[tuple[Path, Path]]:
    """The ``(video, output)`` pairs of a folder batch still to do (finished outputs are skipped
    unless ``overwrite``); creates the output folder."""
    videos = videos_in(input)
    if not videos:
        raise VidlightError(f"{input} holds no video files ({', '.join(VIDEO_SUFFIXES)})")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise VidlightError(f"{output} is a file; the output of a folder of videos is a folder")
    if not output.exists() and output.suffix.lower() in VIDEO_SUFFIXES:
        raise VidlightError(
            f"{output} is named like a video, but a folder of videos goes into a folder (one output per "
            f"video, same names); give a folder, e.g. {output.with_suffix('')}/"
        )
    output.mkdir(parents=True, exist_ok=True)
    todo = []
    for video in videos:
        target = output / video.name
        if target.exists() and not overwrite:
            log.info("%s exists: skipped (%s to redo it)", target, OVERWRITE)
            continue
        todo.append((video, target))
    return todo


def enhance_folder(input: str | Path, output: str | Path, settings: Settings | None = None, **options: Any) -> RunStats:
    """Enhance every video in the folder ``input`` into the folder ``output`` (same names).

    Videos whose output exists are skipped unless ``overwrite``, so an interrupted batch can be
    run again to finish it. ``settings`` and ``options`` are those of
    :func:`vidlight.enhance_video`; with ``executor="ray"`` the videos run on a Ray cluster
    (:func:`vidlight.scale.batch.enhance_folder_on_ray`). A video that fails is reported and the batch goes on; the
    run then ends with a :class:`VidlightError` naming how many failed.

    Returns:
        the :class:`RunStats` of the whole batch (frames and seconds summed).
    """
    from vidlight.pipeline.runner import Interrupted, enhance_video

    settings = (settings or Settings()).replace(**options)
    if settings.run.executor == "ray":
        from vidlight.scale.batch import enhance_folder_on_ray

        return enhance_folder_on_ray(input, output, settings)
    todo = plan_folder(input, output, settings.run.overwrite)
    total = RunStats(0, 0.0, 0)
    if not todo:
        log.info("every video in %s has its output in %s already; %s to redo them", input, output, OVERWRITE)
    failed = []
    for done, (video, target) in enumerate(todo):
        try:
            stats = enhance_video(video, target, settings)
        except Interrupted as exc:
            # A video cut short would pass for finished when the batch is run again.
            target.unlink(missing_ok=True)
            raise Interrupted(
                total.frames + exc.frames,
                f"{done} of {len(todo)} videos are complete in {output} ({video.name}, cut short, "
                f"was removed); run the same command again to do the rest",
            ) from None
        except VidlightError as exc:
            log.error("%s: %s", video.name, exc)
            failed.append(video.name)
            continue
        total.frames += stats.frames
        total.seconds += stats.seconds
        total.corrupt_packets += stats.corrupt_packets
        log.info("%s -> %s: %s", video.name, target, stats.summary())
    if failed:
        raise VidlightError(
            f"{len(failed)} of {len(videos_in(input))} videos failed ({', '.join(failed)}); the rest are in {output}"
        )
    return total
