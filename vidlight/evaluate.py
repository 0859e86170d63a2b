"""``vidlight eval``: flicker figures of a dark video and its enhanced versions, and a luma plot.

A video is a file or a folder of images (in natural order, as ``vidlight process`` reads and
writes them). Every video is decoded in step with the input (one frame of each in memory at a
time); the optical flow is computed once per frame on the input and used for the warping error
of every video, as Lai et al. do (see :mod:`vidlight.video_metrics`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vidlight.errors import MediaError, VidlightError
from vidlight.io.files import FileSource, Frame
from vidlight.io.live import ImageDirSource
from vidlight.pipeline.report import logs_above_bar
from vidlight.video_metrics import InputFlow, VideoStats

log = logging.getLogger("vidlight")


@dataclass
class VideoEvaluation:
    """The figures of one video (the input or one of its enhanced versions)."""

    label: str
    path: Path
    frames: int
    lumas: list[float] = field(repr=False)  # per-frame mean luma, 0..255
    mean_luma: float
    flicker_index: float
    warping_error: float | None  # None with warping=False


def _open(path: Path) -> FileSource | ImageDirSource:
    """A video file, or a folder of images read as one."""
    return ImageDirSource(path) if path.is_dir() else FileSource(path)


def _pictures(source: FileSource | ImageDirSource) -> Iterator[np.ndarray]:
    for item in source:
        _check_pictures(source)
        if isinstance(item, Frame):
            yield item.rgb
    _check_pictures(source)


def _check_pictures(source: FileSource | ImageDirSource) -> None:
    """A folder's frames are its pictures: one skipped would pair every later frame with the
    wrong frame of the other videos, so an unreadable one is an error here."""
    if isinstance(source, ImageDirSource) and source.unreadable:
        bad = ", ".join(p.name for p in source.unreadable)
        raise MediaError(f"{bad} in {source.path} could not be read; eval compares frame for frame: fix or remove it")


def evaluate_videos(
    input: str | os.PathLike,
    outputs: Sequence[str | os.PathLike] = (),
    *,
    labels: Sequence[str] | None = None,
    max_frames: int | None = None,
    warping: bool = True,
    downscale: int | None = None,
    progress: bool = False,
) -> list[VideoEvaluation]:
    """Measure ``input`` and each of ``outputs`` (enhanced versions of it), frame by frame.

    Args:
        input: the original video (a file or a folder of images); its frames give the optical
            flow.
        outputs: videos made from ``input`` (files or folders), compared frame for frame with it.
        labels: one name per video (input first); default: the file names.
        max_frames: stop after this many frames.
        warping: also compute the warping error (optical flow: the slow part).
        downscale: integer factor for the warping error's grid (``None``: 1080p -> 540 lines).
        progress: show a progress bar.

    Videos of different lengths are compared over the frames they have in common (with a
    warning). Returns one :class:`VideoEvaluation` per video, input first.
    """
    from tqdm.auto import tqdm

    paths = [Path(input), *(Path(p) for p in outputs)]
    if labels is None or len(labels) == 0:
        labels = [p.name for p in paths]
    elif len(labels) != len(paths):
        raise VidlightError(f"{len(labels)} labels for {len(paths)} videos: give one per video, input first")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"Invalid max_frames ({max_frames}). Supported values are integers >= 1, or None.")
    sources: list[FileSource | ImageDirSource] = []
    try:
        for path in paths:
            sources.append(_open(path))
        size = (sources[0].info.width, sources[0].info.height)
        for path, source in zip(paths[1:], sources[1:]):
            if (source.info.width, source.info.height) != size:
                log.warning(
                    "%s is %dx%d, %s is %dx%d: its frames are resized onto the input's for the warping error",
                    path.name,
                    source.info.width,
                    source.info.height,
                    paths[0].name,
                    *size,
                )
        stats = [VideoStats() for _ in paths]
        flow = InputFlow(downscale=downscale) if warping else None
        streams = [_pictures(s) for s in sources]
        total = min(filter(None, (sources[0].info.frames, max_frames)), default=None)
        bar = tqdm(total=total, unit="frame", desc=paths[0].name, disable=not progress, dynamic_ncols=True)
        with bar, logs_above_bar(progress):
            while max_frames is None or stats[0].frames < max_frames:
                pictures = [next(stream, None) for stream in streams]
                frames = [f for f in pictures if f is not None]
                if len(frames) < len(pictures):
                    _warn_unequal(paths, pictures, stats[0].frames)
                    break
                warp = flow.update(frames[0]) if flow is not None else None
                for meter, frame in zip(stats, frames):
                    meter.update(frame, warp)
                bar.update()
        if stats[0].frames == 0:
            raise MediaError(f"no frame could be decoded from {paths[0]}")
    finally:
        for source in sources:
            source.close()
    return [
        VideoEvaluation(
            label, path, s.frames, s.lumas, s.mean_luma, s.flicker_index, (s.warping_error or 0.0) if warping else None
        )
        for label, path, s in zip(labels, paths, stats)
    ]


def _warn_unequal(paths: list[Path], frames: list, common: int) -> None:
    if all(f is None for f in frames):
        return
    ended = [p.name for p, f in zip(paths, frames) if f is None]
    longer = [p.name for p, f in zip(paths, frames) if f is not None]
    log.warning(
        "%s ended after %d frames while %s %s on: compared the first %d frames",
        ", ".join(ended),
        common,
        ", ".join(longer),
        "goes" if len(longer) == 1 else "go",
        common,
    )


def format_table(evaluations: Sequence[VideoEvaluation]) -> str:
    """The figures as a text table, one row per video."""
    heads = ("video", "frames", "mean luma", "flicker index", "warping error")
    rows = [
        (
            e.label,
            str(e.frames),
            f"{e.mean_luma:.2f}",
            f"{e.flicker_index:.5f}",
            "-" if e.warping_error is None else f"{e.warping_error:.6f}",
        )
        for e in evaluations
    ]
    widths = [max(len(r[i]) for r in (heads, *rows)) for i in range(len(heads))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in (heads, *rows)
    ]
    return "\n".join(lines)


# --- the luma plot (OpenCV only: no plotting library for one chart) ----------------------------

# Distinct, print-safe colours (BGR), after the Tableau 10 palette.
_COLOURS = [
    (180, 119, 31),
    (14, 127, 255),
    (44, 160, 44),
    (40, 39, 214),
    (189, 103, 148),
    (75, 86, 140),
    (194, 119, 227),
    (127, 127, 127),
    (34, 189, 188),
    (207, 190, 23),
]
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def nice_ticks(lo: float, hi: float, *, target: int = 6) -> list[float]:
    """About ``target`` round values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(target, 1)
    power = 10 ** np.floor(np.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = np.ceil(lo / step - 1e-9) * step
    ticks = np.arange(first, hi + step * 1e-6, step)
    return [float(round(t, 10)) for t in ticks]


def _tick_text(value: float, step: float) -> str:
    decimals = max(0, -int(np.floor(np.log10(step)))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def check_plot_path(path: str | os.PathLike) -> None:
    """Fail early, before any decoding, when the plot could not be written."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise MediaError(f"cannot write the plot {path}: give a file name ending in .png")
    if not path.parent.is_dir():
        raise MediaError(f"cannot write {path}: folder {path.parent} does not exist")


def _quietest_corner(curves: np.ndarray, area: tuple[int, int, int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The top-left point of a ``box`` (w, h) in the corner of ``area`` (x0, y0, x1, y1) that
    covers the fewest marked pixels of ``curves``; top right first on a tie."""
    x0, y0, x1, y1 = area
    w, h = box
    corners = [(x1 - 10 - w, y0 + 10), (x0 + 10, y0 + 10), (x1 - 10 - w, y1 - 10 - h), (x0 + 10, y1 - 10 - h)]
    # A box larger than the area stays inside the image, from the area's top left.
    corners = [(max(x0 + 10, x), max(y0 + 10, y)) for x, y in corners]
    return min(corners, key=lambda c: int(np.count_nonzero(curves[c[1] : c[1] + h, c[0] : c[0] + w])))


def plot_luma(
    series: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    title: str = "Per-frame mean luma",
    width: int = 960,
    height: int = 540,
) -> None:
    """Write a PNG line chart of per-frame mean luma, one line per entry of ``series``
    (label -> values), with axes, ticks, axis labels, a legend and ``title``."""
    path = Path(path)
    if not series or not any(len(v) for v in series.values()):
        raise ValueError("nothing to plot: every series is empty")
    if width < 320 or height < 240:
        raise ValueError(f"Invalid plot size {width}x{height}: at least 320x240.")
    image = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 70, 20, 50, 55
    x0, x1, y0, y1 = left, width - right, top, height - bottom  # plot area (y0 top)

    every = np.concatenate([np.asarray(v, np.float64) for v in series.values() if len(v)])
    lo, hi = float(every.min()), float(every.max())
    pad = max((hi - lo) * 0.08, 0.5)
    lo, hi = max(0.0, lo - pad), hi + pad
    frames = max(len(v) for v in series.values())
    xmax = max(frames - 1, 1)

    def px(i: float) -> int:
        return int(round(x0 + (x1 - x0) * i / xmax))

    def py(v: float) -> int:
        return int(round(y1 - (y1 - y0) * (v - lo) / (hi - lo)))

    grid, ink = (225, 225, 225), (40, 40, 40)
    yticks = [t for t in nice_ticks(lo, hi) if lo <= t <= hi]
    ystep = yticks[1] - yticks[0] if len(yticks) > 1 else 1.0
    for t in yticks:
        y = py(t)
        cv2.line(image, (x0, y), (x1, y), grid, 1)
        cv2.line(image, (x0 - 5, y), (x0, y), ink, 1)
        text = _tick_text(t, ystep)
        (tw, th), _ = cv2.getTextSize(text, _FONT, 0.4, 1)
        cv2.putText(image, text, (x0 - 8 - tw, y + th // 2), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    xticks = [t for t in nice_ticks(0, xmax, target=8) if 0 <= t <= xmax and float(t).is_integer()]
    for t in xticks:
        x = px(t)
        cv2.line(image, (x, y0), (x, y1), grid, 1)
        cv2.line(image, (x, y1), (x, y1 + 5), ink, 1)
        text = str(int(t))
        (tw, th), _ = cv2.getTextSize(text, _FONT, 0.4, 1)
        cv2.putText(image, text, (x - tw // 2, y1 + 10 + th), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    cv2.rectangle(image, (x0, y0), (x1, y1), ink, 1)

    (tw, th), _ = cv2.getTextSize("frame", _FONT, 0.5, 1)
    cv2.putText(image, "frame", ((x0 + x1 - tw) // 2, height - 12), _FONT, 0.5, ink, 1, cv2.LINE_AA)
    cv2.putText(image, "mean luma (BT.601, 0-255)", (8, y0 - 10), _FONT, 0.45, ink, 1, cv2.LINE_AA)
    (tw, th), _ = cv2.getTextSize(title, _FONT, 0.65, 2)
    cv2.putText(image, title, ((width - tw) // 2, 24), _FONT, 0.65, ink, 2, cv2.LINE_AA)

    curves = np.zeros((height, width), np.uint8)  # where the lines run, to keep the legend off them
    for k, values in enumerate(series.values()):
        colour = _COLOURS[k % len(_COLOURS)]
        points = np.array([(px(i), py(v)) for i, v in enumerate(values)], np.int32)
        for canvas, ink_of in ((image, colour), (curves, 255)):
            if len(points) == 1:
                cv2.circle(canvas, tuple(int(c) for c in points[0]), 3, ink_of, -1, cv2.LINE_AA)
            elif len(points):
                cv2.polylines(canvas, [points.reshape(-1, 1, 2)], False, ink_of, 2, cv2.LINE_AA)

    # Legend, in the corner of the plot area that the lines cross least, on a white box.
    labels = list(series)
    sizes = [cv2.getTextSize(label, _FONT, 0.45, 1)[0] for label in labels]
    row = max(s[1] for s in sizes) + 10
    box_w, box_h = max(s[0] for s in sizes) + 45, row * len(labels) + 8
    bx0, by0 = _quietest_corner(curves, (x0, y0, x1, y1), (box_w, box_h))
    bx1, by1 = bx0 + box_w, by0 + box_h
    cv2.rectangle(image, (bx0, by0), (bx1, by1), (255, 255, 255), -1)
    cv2.rectangle(image, (bx0, by0), (bx1, by1), (160, 160, 160), 1)
    for k, label in enumerate(labels):
        y = by0 + 4 + row * k + row // 2
        cv2.line(image, (bx0 + 8, y), (bx0 + 30, y), _COLOURS[k % len(_COLOURS)], 2, cv2.LINE_AA)
        cv2.putText(image, label, (bx0 + 36, y + sizes[k][1] // 2), _FONT, 0.45, ink, 1, cv2.LINE_AA)

    check_plot_path(path)
    try:
        ok = cv2.imwrite(str(path), image)
    except cv2.error:
        ok = False
    if not ok:
        raise MediaError(f"cannot write the plot {path} (is it a .png in a writable folder?)")
