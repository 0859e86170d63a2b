"""A long video file in parts: cut at keyframes, enhanced part by part (in parallel on Ray),
joined into one output.

Each part is enhanced from a little before its start: the frames of the *warm-up* (at
least :data:`WARMUP_SECONDS`, from the keyframe before) go through the model and the
temporal stage but are not written, so the smoothing, the exposure control and the
models' averaged statistics enter the part as they would in one unbroken run, and no
brightness step shows at a join. Each part also reads a few frames past its end, for the
smoothing's look-ahead. Parts are written, complete or not at all, into a work folder beside
the output (``.NAME.parts/``) with a manifest of the input and settings; a run that stops
leaves them there, and the same command resumes from the last finished part. The join
copies the parts' video packets and the source's audio and subtitles into the output
(nothing is encoded twice) and removes the work folder.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from vidlight.errors import MediaError, VidlightError
from vidlight.io.files import FileSink, FileSource, Frame, VideoInfo, hidden_path, open_input, partial_path
from vidlight.pipeline.report import RunStats, logs_above_bar
from vidlight.pipeline.temporal import DEFAULT_LOOKAHEAD
from vidlight.settings import Settings

log = logging.getLogger("vidlight")

WARMUP_SECONDS = 3.0  # six of the smoothing's default time constants: its state has converged to 0.25 %
RAY_SPLIT_SECONDS = 60.0  # the part length of --executor ray when --split is not given


@dataclass(frozen=True)
class Part:
    """Frames with ``start_pts <= pts < end_pts`` (None: to the end), read from ``warm_pts``."""

    index: int
    start_pts: int
    end_pts: int | None
    warm_pts: int

    @property
    def name(self) -> str:
        return f"part{self.index:05d}"


def keyframes(path: Path) -> tuple[list[int], Fraction]:
    """The pts of every keyframe of the first video stream (packets only: nothing is decoded)
    and the stream's time base."""
    with open_input(path) as container:
        stream = container.streams.video[0]
        found = [p.pts for p in container.demux(stream) if p.is_keyframe and p.pts is not None]
        return sorted(set(found)), stream.time_base or Fraction(1, 90000)


def plan_parts(path: Path, split_seconds: float, warmup_seconds: float | None = None) -> list[Part]:
    """Parts of about ``split_seconds``, each starting at a keyframe, with their warm-up starts
    (``warmup_seconds`` before, default :data:`WARMUP_SECONDS`)."""
    warmup_seconds = WARMUP_SECONDS if warmup_seconds is None else warmup_seconds
    keys, time_base = keyframes(path)
    if not keys:
        raise MediaError(f"{path} has no keyframe with a timestamp; it cannot be cut into parts")
    split, warmup = round(split_seconds / time_base), round(warmup_seconds / time_base)
    starts = [keys[0]]
    for key in keys[1:]:
        if key - starts[-1] >= split:
            starts.append(key)
    parts = []
    for index, start in enumerate(starts):
        earlier = [k for k in keys if k <= start - warmup]
        warm = earlier[-1] if earlier and index else keys[0] if index else start
        end = starts[index + 1] if index + 1 < len(starts) else None
        parts.append(Part(index, start, end, warm))
    return parts


class PartSource(FileSource):
    """The frames of one part with its warm-up before and its look-ahead after; no other streams."""

    def __init__(self, path: Path, part: Part, lookahead: int = DEFAULT_LOOKAHEAD) -> None:
        super().__init__(path)
        self.part, self.lookahead = part, lookahead
        self.copy_streams = []
        self.finished = False  # read to its end (not stopped): its part can be complete
        if part.index:
            self.container.seek(part.warm_pts, stream=self.stream, backward=True)

    @property
    def name(self) -> str:
        return f"{self.path.name} {self.part.name}"

    def __iter__(self) -> Iterator[Frame | av.Packet]:
        after_end = 0
        for item in super().__iter__():
            if not isinstance(item, Frame):
                continue
            if self.part.end_pts is not None and item.pts is not None and item.pts >= self.part.end_pts:
                if after_end >= self.lookahead:
                    break
                after_end += 1
            yield item
        self.finished = True


class PartSink(FileSink):
    """A part file that keeps only the part's own frames (the warm-up and look-ahead are dropped)."""

    def __init__(self, output: Path, info: VideoInfo, source: PartSource, **encoder: Any) -> None:
        super().__init__(output, info, **encoder)
        self.part, self.source = source.part, source

    def write(self, rgb, pts: int | None) -> None:
        if pts is None or pts < self.part.start_pts or (self.part.end_pts is not None and pts >= self.part.end_pts):
            return
        super().write(rgb, pts)

    def close(self, *, complete: bool = True) -> None:
        # A part cut short (interrupted) is not kept: the next run does it again.
        super().close(complete=complete and self.source.finished)


def enhance_part(
    input: Path,
    part: Part,
    target: Path,
    settings: Settings,
    *,
    model: Any = None,
    stop_event: threading.Event | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> RunStats:
    """One part of ``input`` into the file ``target`` (written complete or not at all)."""
    from vidlight.pipeline.runner import run_source

    encoder = settings.encoder
    source = PartSource(input, part)
    return run_source(
        source,
        lambda info: PartSink(target, info, source, codec=encoder.codec, crf=encoder.crf, preset=encoder.preset),
        settings.replace(progress=False, max_frames=None, duration_seconds=None),
        stop_event=stop_event,
        on_frames=on_frames,
        model=model,
    )


def join_parts(input: Path, parts: list[Path], output: Path) -> int:
    """The parts' video and ``input``'s audio and subtitles into ``output`` (written to a
    partial file, renamed when complete); returns the video packets written."""
    tmp = partial_path(output)
    sources = [av.open(str(p)) for p in parts]
    original = open_input(input)
    out = av.open(str(tmp), "w")
    try:
        video = out.add_stream_from_template(sources[0].streams.video[0])
        probe = FileSource(input)
        rotation = probe.info.rotation
        probe.close()
        if rotation:
            video.set_display_rotation(rotation)
        copied = {}
        for s in original.streams:
            if s.type in ("audio", "subtitle"):
                try:
                    copied[s.index] = out.add_stream_from_template(s)
                except (av.error.FFmpegError, ValueError) as exc:
                    log.warning("dropping %s stream #%d: %s cannot hold it (%s)", s.type, s.index, output.suffix, exc)

        def video_packets() -> Iterator[tuple[float, int, av.Packet]]:
            for container in sources:
                for packet in container.demux(container.streams.video[0]):
                    if packet.dts is not None and packet.size:
                        yield float(packet.dts * packet.time_base), 0, packet

        def other_packets() -> Iterator[tuple[float, int, av.Packet]]:
            streams = [s for s in original.streams if s.index in copied]
            if streams:
                for packet in original.demux(*streams):
                    if packet.dts is not None and packet.size:
                        yield float(packet.dts * packet.time_base), 1, packet

        written = 0
        for _, kind, packet in heapq.merge(video_packets(), other_packets(), key=lambda t: (t[0], t[1])):
            if kind == 0:
                packet.stream = video
                written += 1
            else:
                packet.stream = copied[packet.stream.index]
            out.mux(packet)
        out.close()
    except BaseException:
        out.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        for container in (*sources, original):
            container.close()
    os.replace(tmp, output)
    return written


class Workspace:
    """The work folder of a run in parts: the plan and settings it was made for, and the
    finished parts. A folder made for another input or other settings is started afresh."""

    def __init__(self, input: Path, output: Path, settings: Settings, split_seconds: float) -> None:
        self.folder = hidden_path(output, "parts", keep_suffix=False)
        stat = input.stat()
        options = {
            k: v for k, v in settings.options().items() if k not in ("progress", "overwrite", "executor", "workers")
        }
        self.manifest = {
            "input": str(input.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "settings": hashlib.sha256(repr(sorted(options.items())).encode()).hexdigest(),
            "split_seconds": split_seconds,
            "warmup_seconds": WARMUP_SECONDS,
        }
        self.suffix = output.suffix

    def open(self, plan: Callable[[], list[Part]]) -> list[Part]:
        """The parts (from the manifest when it matches, else ``plan()``, recorded)."""
        path = self.folder / "manifest.json"
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = None
        if saved and {k: saved.get(k) for k in self.manifest} == self.manifest:
            return [Part(*p) for p in saved["parts"]]
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        parts = plan()
        path.write_text(
            json.dumps({**self.manifest, "parts": [[p.index, p.start_pts, p.end_pts, p.warm_pts] for p in parts]})
        )
        return parts

    def path(self, part: Part) -> Path:
        return self.folder / f"{part.name}{self.suffix}"

    def done(self, part: Part) -> bool:
        return self.path(part).exists()

    def frames(self, part: Part) -> int:
        with av.open(str(self.path(part))) as container:
            return sum(1 for p in container.demux(container.streams.video[0]) if p.size)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def enhance_in_parts(
    input: Path,
    output: Path,
    settings: Settings,
    *,
    stop_event: threading.Event | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> RunStats:
    """:func:`vidlight.enhance_video` of a file into a file, in parts (see the module
    docstring): here one after another, or on Ray workers with ``executor="ray"``."""
    import time

    from tqdm.auto import tqdm

    from vidlight.pipeline.runner import Interrupted

    if settings.run.max_frames is not None or settings.run.duration_seconds is not None:
        raise VidlightError("--split and --executor ray run whole files; drop --max-frames/--duration")
    split = settings.run.split_seconds or RAY_SPLIT_SECONDS
    source = FileSource(input)  # a bad input is reported before anything is written
    total, source_name = source.info.frames or None, source.name
    source.close()
    workspace = Workspace(input, output, settings, split)
    parts = workspace.open(lambda: plan_parts(input, split))
    todo = [p for p in parts if not workspace.done(p)]
    if len(todo) < len(parts):
        log.info("%s: resuming; %d of %d parts are done", input.name, len(parts) - len(todo), len(parts))
    start = time.perf_counter()
    done_frames = sum(workspace.frames(p) for p in parts if workspace.done(p))
    bar = tqdm(
        total=total,
        initial=done_frames,
        unit="frame",
        desc=source_name,
        disable=not settings.run.progress,
        dynamic_ncols=True,
    )

    frames_now = [0]

    def count(n: int) -> None:
        frames_now[0] += n
        bar.update(n)
        if on_frames is not None:
            on_frames(n)

    try:
        with logs_above_bar(settings.run.progress):
            if settings.run.executor == "ray":
                from vidlight.scale.batch import run_parts_on_ray

                run_parts_on_ray(input, [(p, workspace.path(p)) for p in todo], settings, bar)
            else:
                stop = stop_event or threading.Event()
                from vidlight.pipeline.enhancer import load_engine_model, prepare_engine

                model = load_engine_model(settings.engine, prepare_engine(settings.engine)[0]) if todo else None
                for part in todo:
                    enhance_part(
                        input, part, workspace.path(part), settings, model=model, stop_event=stop, on_frames=count
                    )
    except (KeyboardInterrupt, Interrupted):
        bar.close()
        finished = sum(1 for p in parts if workspace.done(p))
        raise Interrupted(
            frames_now[0] if settings.run.executor != "ray" else bar.n - done_frames,
            f"{finished} of {len(parts)} parts of {output} are done (in {workspace.folder}); "
            f"run the same command again to resume",
        ) from None
    bar.close()
    frames = join_parts(input, [workspace.path(p) for p in parts], output)
    workspace.remove()
    return RunStats(frames, time.perf_counter() - start, 0)
