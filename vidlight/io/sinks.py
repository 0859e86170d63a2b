"""Sinks besides a single file: nothing (benchmarks), image folders, segmented recordings
and RTSP publishing.

Every sink has :class:`~vidlight.io.files.FileSink`'s interface: ``write(rgb, pts)``,
``mux_packet(packet)``, ``close(complete=True)``, ``frames_written`` and ``output`` (a name
to show, without credentials). :func:`open_sink` picks one from what the user typed.
"""

from __future__ import annotations

import logging
import os
import re
import string
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidlight.errors import OVERWRITE, MediaError, VidlightError
from vidlight.io.files import DIGEST_CHARS, NVENC, FileSink, VideoInfo, hidden_path
from vidlight.io.live import IMAGE_SUFFIXES, ImageDirSource, redact
from vidlight.settings import EncoderSettings, Settings

log = logging.getLogger("vidlight")


class NullSink:
    """Discards frames, counting them (for measuring speed without the encoder)."""

    output = "null"

    def __init__(self, info: VideoInfo | None = None) -> None:
        self.info = info
        self.frames_written = 0

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        self.frames_written += 1

    def mux_packet(self, packet: av.Packet) -> None:
        pass

    def close(self, *, complete: bool = True) -> None:
        pass


def _pattern_names(pattern: str) -> re.Pattern:
    """A regular expression for the names ``pattern`` makes, the index as its first group. The
    index must be written in decimal (``{index}``, ``{index:d}``, ``{index:06d}``): the names of
    an earlier run are found by it, and read back to number on after them."""
    parts = []
    for literal, field, spec, conversion in string.Formatter().parse(pattern):
        parts.append(re.escape(literal))
        if field is None:
            continue
        if field != "index" or conversion or not re.fullmatch(r"(0\d+)?d?", spec or ""):
            raise VidlightError(
                f"image pattern {pattern!r}: number the pictures with {{index}}, or zero-padded as {{index:06d}}"
            )
        parts.append(r"(\d+)")
    return re.compile("".join(parts))


def _make_folder(folder: Path) -> None:
    """``folder``, created if missing (its parent must exist), and writable."""
    if not folder.is_dir():
        if not folder.parent.is_dir():
            raise MediaError(f"cannot write images to {folder}: folder {folder.parent} does not exist")
        try:
            folder.mkdir()
        except OSError as exc:
            raise MediaError(f"cannot create {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise MediaError(f"cannot write images to {folder}: it is not writable")


class ImageDirSink:
    """Writes each frame as an image file in a folder.

    Args:
        folder: created if missing (its parent must exist).
        info: the source's :class:`VideoInfo` (unused; for the common constructor shape).
        pattern: file name, formatted with ``index`` (0 for the first frame written) in
            decimal, as ``{index}`` or zero-padded as ``{index:06d}``; its suffix picks the
            format (``.png`` keeps 16-bit frames 16-bit; ``.jpg`` is 8-bit).
        overwrite: replace the pictures of an earlier run (files the pattern names) that the
            folder holds; without it such a folder is refused, so two runs never mix.
        resume: go on after the pictures the folder holds instead (the first frame written gets
            the index after the highest there): a camera's worker started again after it died
            adds to what the dead one wrote.

    Each image is written under a temporary name and renamed, so a reader watching the folder
    never sees half an image. Audio and subtitle packets are dropped.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        info: VideoInfo | None = None,
        *,
        pattern: str = "frame_{index:06d}.png",
        overwrite: bool = False,
        resume: bool = False,
    ) -> None:
        import cv2  # only image output needs OpenCV

        self._cv2 = cv2
        self.folder = Path(folder)
        self.output = str(self.folder / pattern)
        self.pattern = pattern
        self.frames_written = 0
        self.first_index = 0
        try:
            sample = pattern.format(index=0)
        except (KeyError, IndexError, ValueError) as exc:
            raise VidlightError(
                f"invalid image pattern {pattern!r} ({exc}); use e.g. frame_{{index:06d}}.png"
            ) from None
        if sample == pattern.format(index=1):
            raise VidlightError(f"image pattern {pattern!r} must contain {{index}}, e.g. frame_{{index:06d}}.png")
        self.suffix = Path(sample).suffix.lower()
        if self.suffix not in IMAGE_SUFFIXES:
            raise VidlightError(f"image pattern {pattern!r} must end with one of {', '.join(IMAGE_SUFFIXES)}")
        if "/" in sample or os.sep in sample:
            raise VidlightError(f"image pattern {pattern!r} must be a file name, not a path")
        self._named = _pattern_names(pattern)
        _make_folder(self.folder)
        earlier = self._earlier_pictures()
        if earlier and not (overwrite or resume):
            raise VidlightError(
                f"{self.folder} already holds {len(earlier)} picture(s) named like {sample}; "
                f"{OVERWRITE} to replace them, or choose another folder"
            )
        for stale in self._unfinished():  # a writer that died while writing a picture leaves its temporary file
            stale.unlink(missing_ok=True)
        if resume:
            self.first_index = 1 + max(index for index, _ in earlier) if earlier else 0
            return
        for _, path in earlier:
            path.unlink(missing_ok=True)

    def _index_of(self, name: str) -> int | None:
        """The index that the pattern gives ``name``, or None where the pattern does not make it."""
        match = self._named.fullmatch(name)
        if match is None:
            return None
        index = int(match.group(1))
        return index if self.pattern.format(index=index) == name else None

    def _earlier_pictures(self) -> list[tuple[int, Path]]:
        """The folder's files that the pattern names (any index), with their indices."""
        found = []
        for path in self.folder.iterdir():
            index = self._index_of(path.name)
            if index is not None and path.is_file():
                found.append((index, path))
        return sorted(found)

    def _unfinished(self) -> list[Path]:
        """The temporary files :meth:`write` makes (``.name.tmp.suffix``, or for a name too long
        for that ``.digest.tmp.suffix``) that the folder holds."""
        stale = []
        digest = re.compile(rf"\.[0-9a-f]{{{DIGEST_CHARS}}}\.tmp{re.escape(self.suffix)}", re.IGNORECASE)
        for path in self.folder.iterdir():
            name = path.name
            stem, suffix = os.path.splitext(name[1:])
            if name.startswith(".") and stem.endswith(".tmp"):
                if self._index_of(stem[: -len(".tmp")] + suffix) is not None or digest.fullmatch(name):
                    stale.append(path)
        return stale

    def _target(self, pts: int | None) -> Path:
        """Where the next frame (at ``pts``) goes."""
        return self.folder / self.pattern.format(index=self.first_index + self.frames_written)

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        cv2 = self._cv2
        if rgb.dtype == np.uint16 and self.suffix in (".jpg", ".jpeg", ".bmp"):
            rgb = (rgb >> 8).astype(np.uint8)  # these formats hold 8 bits
        path = self._target(pts)
        tmp = hidden_path(path, "tmp")  # the same suffix: cv2 picks the format by it
        ok = cv2.imwrite(str(tmp), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        if not ok:
            tmp.unlink(missing_ok=True)
            raise MediaError(f"could not write {path}")
        os.replace(tmp, path)
        self.frames_written += 1

    def mux_packet(self, packet: av.Packet) -> None:
        pass

    def close(self, *, complete: bool = True) -> None:
        pass  # every image is complete once renamed


class PictureSink(ImageDirSink):
    """Writes the one frame of a picture source (a photo) as a picture file.

    Args:
        path: the picture to write; its suffix picks the format, as for :class:`ImageDirSink`.
        info: the source's :class:`VideoInfo` (unused).
        overwrite: replace ``path`` if it exists.
    """

    def __init__(self, path: str | os.PathLike, info: VideoInfo | None = None, *, overwrite: bool = False) -> None:
        import cv2

        self._cv2 = cv2
        self.target = Path(path)
        self.output = str(self.target)
        self.folder = self.target.parent
        self.frames_written = 0
        self.suffix = self.target.suffix.lower()
        if not self.folder.is_dir():
            raise MediaError(f"cannot write {self.target}: folder {self.folder} does not exist")
        if self.target.exists() and not overwrite:
            raise VidlightError(f"{self.target} already exists; {OVERWRITE} to replace it")

    def _target(self, pts: int | None) -> Path:
        if self.frames_written:
            raise VidlightError(
                f"{self.target} holds one picture; write a video's frames to a folder (out/) or a "
                "pattern (out/{index:06d}.png)"
            )
        return self.target


class SameNamesSink(ImageDirSink):
    """Writes the pictures of an image folder under their own names, as PNG (``night.jpg`` ->
    ``night.png``; the folder's picture ``i`` is the frame at pts ``i``). Pictures whose names
    are already in the folder are refused without ``overwrite``; the folder's other files stay.

    Args:
        folder: created if missing (its parent must exist).
        names: the input pictures' names without their suffix, in the folder's order.
        info: the source's :class:`VideoInfo` (unused).
        overwrite: replace pictures of these names.
    """

    def __init__(
        self, folder: str | os.PathLike, names: list[str], info: VideoInfo | None = None, *, overwrite: bool = False
    ) -> None:
        import cv2

        self._cv2 = cv2
        self.folder = Path(folder)
        self.output = f"{self.folder}{os.sep}"
        self.names = list(names)
        self.suffix = ".png"
        self.frames_written = 0
        _make_folder(self.folder)
        taken = [path for path in map(self._named_path, self.names) if path.exists()]
        if taken and not overwrite:
            raise VidlightError(
                f"{self.folder} already holds {len(taken)} of these pictures (e.g. {taken[0].name}); "
                f"{OVERWRITE} to replace them, or choose another folder"
            )
        for path in taken:  # all of them, so that a shorter run does not leave an earlier one's beside it
            path.unlink(missing_ok=True)
        for name in self.names:  # a writer that died while writing a picture leaves its temporary file
            hidden_path(self._named_path(name), "tmp").unlink(missing_ok=True)

    def _named_path(self, name: str) -> Path:
        return self.folder / f"{name}{self.suffix}"

    def _target(self, pts: int | None) -> Path:
        if pts is None or not 0 <= pts < len(self.names):
            raise MediaError(f"no picture name for frame {pts} of {len(self.names)}")
        return self._named_path(self.names[pts])


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(h|m|s)?\s*$", re.IGNORECASE)


def picture_stems(source) -> list[str] | None:
    """An image folder's picture names without their suffixes, in its order (what a folder
    output names its pictures after: ``names`` of :func:`open_sink`); None for other sources."""
    return [f.stem for f in source.files] if isinstance(source, ImageDirSource) else None


def written(sink) -> str:
    """What ``sink`` wrote, for a message: its output, or a segmented one's segment names."""
    segments = getattr(sink, "segments", None)
    if segments:
        return str(segments[0]) if len(segments) == 1 else f"{segments[0]} .. {segments[-1].name}"
    return str(sink.output)


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``"10m"``, ``"90s"``, ``"1h"``, ``"1.5h"`` or a plain number of seconds (``"30"``).

    Raises:
        VidlightError: anything else, or a duration that is not positive.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise VidlightError(f"invalid duration {text!r}; use seconds (30, 90s), minutes (10m) or hours (1h)")
        seconds = float(match.group(1)) * {"h": 3600, "m": 60, "s": 1, None: 1}[(match.group(2) or "").lower() or None]
    if not seconds > 0:
        raise VidlightError(f"invalid duration {text!r}: it must be more than 0 seconds")
    return seconds


class SegmentedFileSink:
    """Records into consecutive complete files of about ``segment_seconds`` each.

    Segments are named ``{stem}_{n:05d}{suffix}`` (n from 0), or, when ``output`` contains
    ``%``, by ``time.strftime`` of the segment's wall-clock start (``cam_%Y%m%d-%H%M%S.mp4``).
    A segment is cut at the first frame whose time is ``segment_seconds`` past the segment's
    first frame, so every segment starts with a keyframe and its own timestamps start at 0.
    Each segment is a :class:`FileSink`: written to a partial file and renamed once closed.

    Args:
        output: the name pattern described above.
        info: the source's :class:`VideoInfo`.
        segment_seconds: length of a segment (a number, or text for :func:`parse_duration`).
        copy_streams, codec, crf, preset, options: as for :class:`FileSink`; copied packets
            are shifted by each segment's start.
        overwrite: number the segments from 0 again, replacing those of the same names
            (otherwise numbered segments go on after the highest number already in the
            folder, and a clash between wall-clock names gets a ``-1``, ``-2`` suffix).

    Attributes:
        segments: paths of the finished segments, in order.
    """

    def __init__(
        self,
        output: str | os.PathLike,
        info: VideoInfo,
        *,
        segment_seconds: float | str,
        copy_streams: list | tuple = (),
        codec: str = EncoderSettings.codec,
        crf: int | None = EncoderSettings.crf,
        preset: str | None = EncoderSettings.preset,
        options: dict[str, str] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.output = str(output)
        self.info = info
        self.segment_seconds = parse_duration(segment_seconds)
        self.copy_streams = list(copy_streams)
        self._codec, self._crf, self._preset, self._options = codec, crf, preset, options
        self.overwrite = overwrite
        self.timestamped = "%" in self.output
        path = Path(self.output)
        if not path.parent.is_dir():
            raise MediaError(f"cannot write {self.output}: folder {path.parent} does not exist")
        if not path.suffix:
            raise VidlightError(f"segment output {self.output!r} needs a file suffix, e.g. .mp4 or .mkv")
        self.segments: list[Path] = []
        self.frames_written = 0
        self._current: FileSink | None = None
        self._current_path: Path | None = None
        self._start_pts: int | None = None  # first pts of the current segment (source time base)
        self._index = 0
        if not self.timestamped and not overwrite:
            # A recorder started again (after a reboot or a crash) goes on after the segments
            # of the same name it finds; -y starts again at 0, replacing them.
            pattern = re.compile(rf"{re.escape(path.stem)}_(\d{{5,}}){re.escape(path.suffix)}")
            found = [int(m.group(1)) for p in path.parent.iterdir() if (m := pattern.fullmatch(p.name))]
            if found:
                self._index = max(found) + 1
                log.info(
                    "%s already holds segments up to %s: going on after them",
                    path.parent,
                    self._numbered(max(found)).name,
                )

    def _numbered(self, n: int) -> Path:
        path = Path(self.output)
        return path.with_name(f"{path.stem}_{n:05d}{path.suffix}")

    def _next_path(self) -> Path:
        if not self.timestamped:
            return self._numbered(self._index)
        path = Path(time.strftime(self.output, time.localtime()))
        if self.overwrite and path not in self.segments:
            return path
        candidate, k = path, 0
        while candidate.exists() or candidate in self.segments:
            k += 1
            candidate = path.with_name(f"{path.stem}-{k}{path.suffix}")
        return candidate

    def _start_segment(self, pts: int) -> FileSink:
        path = self._next_path()
        self._current = sink = FileSink(
            path,
            self.info,
            copy_streams=self.copy_streams,
            codec=self._codec,
            crf=self._crf,
            preset=self._preset,
            options=self._options,
        )
        self._current_path = path
        self._start_pts = pts
        self._index += 1
        log.info("recording segment %s", path)
        return sink

    def _finish_segment(self) -> None:
        sink, self._current = self._current, None
        if sink is not None:
            sink.close(complete=True)
            if sink.frames_written and self._current_path is not None:
                self.segments.append(self._current_path)

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        start = self._start_pts or 0
        if pts is None:
            # No timestamp: count frames at the nominal rate so segments still get cut.
            rate = self.info.average_rate or 25
            pts = (
                start + round(self._current.frames_written / (rate * self.info.time_base))
                if self._current is not None
                else 0
            )
        if self._current is not None and (pts - start) * self.info.time_base >= self.segment_seconds:
            self._finish_segment()
        current = self._current
        if current is None:
            current, start = self._start_segment(pts), pts
        current.write(rgb, pts - start)
        self.frames_written += 1

    def mux_packet(self, packet: av.Packet) -> None:
        if self._current is None or packet.pts is None or packet.time_base is None:
            return
        shift = round((self._start_pts or 0) * self.info.time_base / packet.time_base)
        if packet.dts is not None and packet.dts - shift < 0:
            return  # belongs before this segment's first picture
        packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        self._current.mux_packet(packet)

    def close(self, *, complete: bool = True) -> None:
        """Finish the current segment, or with ``complete=False`` remove only that one."""
        if complete:
            self._finish_segment()
        elif self._current is not None:
            sink, self._current = self._current, None
            sink.close(complete=False)


class RtspSink(FileSink):
    """Publishes the frames to an RTSP server (ANNOUNCE/RECORD), encoded for low latency.

    x264 runs with ``tune=zerolatency``, no B-frames and a keyframe about every second, so
    that a viewer who joins late waits at most a second. Frames are converted and
    timestamped exactly as :class:`FileSink` does (its ``write`` is reused).

    Args:
        url: ``rtsp://`` or ``rtsps://`` address of the stream on the server.
        info: the source's :class:`VideoInfo`.
        transport: ``"tcp"`` (default) or ``"udp"``.
        codec, preset, crf: encoder settings.
        open_timeout_seconds: limit for connecting and announcing the stream.

    Raises:
        MediaError: the server cannot be reached or refuses the stream (one line, no credentials).
    """

    DEFAULT_CRF = 23

    def __init__(
        self,
        url: str,
        info: VideoInfo,
        *,
        transport: str = "tcp",
        codec: str = "libx264",
        preset: str = "veryfast",
        crf: int | None = DEFAULT_CRF,
        open_timeout_seconds: float = 10.0,
    ) -> None:
        if transport not in ("tcp", "udp"):
            raise VidlightError(f"invalid transport {transport!r}; valid values are tcp, udp")
        self.url = str(url)
        self.output = redact(self.url)
        self.info = info
        self.frames_written = 0
        self._last_pts = None
        self._warned_resize = False
        self.stream_map = {}
        rate = info.average_rate or Fraction(25)
        # Low latency: no B-frames (no reordering delay), a keyframe every second for viewers joining.
        options: dict[str, str] = {}
        if codec == "libx264":
            options = {"tune": "zerolatency", "bf": "0", "g": str(max(1, round(rate))), "sc_threshold": "0"}
        elif codec in NVENC:
            options = {"tune": "ull", "zerolatency": "1", "bf": "0", "g": str(max(1, round(rate)))}
        try:
            self.container = av.open(
                self.url,
                mode="w",
                format="rtsp",
                options={
                    "rtsp_transport": transport,
                    "timeout": str(int(open_timeout_seconds * 1e6)),  # socket I/O, connecting included
                },
            )
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            raise MediaError(
                f"cannot publish to {self.output}: {redact(str(getattr(exc, 'strerror', None) or exc))}"
            ) from None
        try:
            self._add_video_stream(codec, crf, preset, options)
            start = time.monotonic()
            self.container.start_encoding()  # connects, ANNOUNCEs and starts RECORD now, not at the first frame
        except (av.error.FFmpegError, OSError) as exc:
            elapsed = time.monotonic() - start if "start" in locals() else 0.0
            reason = redact(str(getattr(exc, "strerror", None) or exc))
            if getattr(exc, "errno", None) == 111:
                reason = "connection refused (is the RTSP server running and the URL right?)"
            elif elapsed >= 0.95 * open_timeout_seconds:
                reason = f"no answer within {open_timeout_seconds:g} s (is the server reachable?)"
            del self.container  # dropping it frees FFmpeg's context; close() would try to finish
            raise MediaError(f"cannot publish to {self.output}: {reason}") from None
        except BaseException:
            del self.container
            raise

    def _add_video_stream(
        self, codec: str, crf: int | None, preset: str | None, options: dict[str, str], open_encoder: bool = True
    ) -> None:
        # RTSP clients expect 8-bit 4:2:0, whatever the source depth.
        info = self.info
        self.info = VideoInfo(**{**info.__dict__, "bit_depth": 8})
        try:
            super()._add_video_stream(codec, crf, preset, options, open_encoder)
        finally:
            self.info = info

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        if rgb.dtype == np.uint16:
            rgb = (rgb >> 8).astype(np.uint8)
        super().write(rgb, pts)

    def mux_packet(self, packet: av.Packet) -> None:
        pass  # only the picture is published

    def close(self, *, complete: bool = True) -> None:
        """Flush the encoder and end the session (TEARDOWN)."""
        container = self.__dict__.pop("container", None)  # closed once: a second close does nothing
        if container is None:
            return
        try:
            if complete:
                container.mux(self.stream.encode(None))
        except (av.error.FFmpegError, OSError) as exc:
            log.warning("%s: could not flush the last frames (%s)", self.output, redact(str(exc)))
        finally:
            try:
                container.close()
            except (av.error.FFmpegError, OSError):
                pass


def classify_sink(spec: str | os.PathLike) -> str:
    """What kind of output ``spec`` names: ``"null"``, ``"rtsp"``, ``"pattern"`` (an image
    name pattern with ``{index``), ``"images"`` (a folder), ``"picture"`` (one picture file:
    a photo's output) or ``"file"``.

    Raises:
        VidlightError: a URL vidlight cannot write to.
    """
    text = str(spec)
    if text == "null":
        return "null"
    if re.match(r"(?i)^rtsps?://", text):
        return "rtsp"
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", text):
        raise VidlightError(f"cannot write to {redact(text)}: outputs are files, folders, rtsp:// URLs or null")
    if "{index" in text:
        return "pattern"
    name = Path(text).name
    if re.search(r"\{[^{}]*\}", name) and Path(name).suffix.lower() in IMAGE_SUFFIXES and not Path(text).exists():
        raise VidlightError(
            f"{text}: an image name pattern numbers the frames with {{index}}, e.g. "
            f"{Path(text).with_name('{index:06d}' + Path(name).suffix)}"
        )
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return "images"
    if Path(text).suffix.lower() in IMAGE_SUFFIXES:
        return "picture"
    return "file"


def open_sink(
    spec: str | os.PathLike,
    info: VideoInfo,
    *,
    copy_streams: list | tuple = (),
    segment_seconds: float | str | None = None,
    codec: str = EncoderSettings.codec,
    crf: int | None = EncoderSettings.crf,
    preset: str | None = EncoderSettings.preset,
    overwrite: bool = False,
    transport: str = "tcp",
    live_source: bool = False,
    resume: bool = False,
    names: list[str] | None = None,
):
    """The sink for what the user typed.

    ``"null"`` → :class:`NullSink`; ``rtsp://``/``rtsps://`` → :class:`RtspSink`; an existing
    folder, a path ending with ``/`` or a pattern containing ``{index`` → :class:`ImageDirSink`;
    with ``segment_seconds`` → :class:`SegmentedFileSink`; anything else → :class:`FileSink`
    (whose encoder opens at the first frame for a ``live_source``: see its ``open_encoder``).
    ``resume``: an image folder keeps the pictures it holds and goes on after them. ``names``:
    the input pictures' names (an image folder's), which a folder output (not a pattern) gives
    its pictures (:class:`SameNamesSink`) where they are all different.
    """
    text = str(spec)
    kind = classify_sink(text)
    if kind == "null":
        return NullSink(info)
    if kind == "rtsp":
        return RtspSink(text, info, transport=transport, codec=codec, crf=RtspSink.DEFAULT_CRF if crf is None else crf)
    if kind == "pattern":
        path = Path(text)
        return ImageDirSink(path.parent, info, pattern=path.name, overwrite=overwrite, resume=resume)
    if kind == "images":
        if names and not resume:
            if len({n.lower() for n in names}) == len(names):
                return SameNamesSink(text, names, info, overwrite=overwrite)
            log.info("two input pictures share a name (as a.jpg and a.png): numbering the output pictures instead")
        return ImageDirSink(text, info, overwrite=overwrite, resume=resume)
    if kind == "picture":
        return PictureSink(text, info, overwrite=overwrite)
    if segment_seconds is not None:
        return SegmentedFileSink(
            text,
            info,
            segment_seconds=segment_seconds,
            copy_streams=copy_streams,
            codec=codec,
            crf=crf,
            preset=preset,
            overwrite=overwrite,
        )
    if Path(text).exists() and not overwrite:
        raise VidlightError(f"{text} already exists; {OVERWRITE} to replace it")
    return FileSink(
        text, info, copy_streams=copy_streams, codec=codec, crf=crf, preset=preset, open_encoder=not live_source
    )


def sink_with(
    spec: str | os.PathLike,
    info: VideoInfo,
    settings: Settings,
    *,
    copy_streams: list | tuple = (),
    live_source: bool = False,
    resume: bool = False,
    names: list[str] | None = None,
):
    """:func:`open_sink` with a run's settings (encoder, segments, transport, overwrite)."""
    encoder = settings.encoder
    return open_sink(
        spec,
        info,
        copy_streams=copy_streams,
        segment_seconds=encoder.segment_seconds,
        codec=encoder.codec,
        crf=encoder.crf,
        preset=encoder.preset,
        overwrite=settings.run.overwrite,
        transport=settings.source.transport,
        live_source=live_source,
        resume=resume,
        names=names,
    )
