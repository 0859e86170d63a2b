"""Video files in and out, with PyAV (FFmpeg's container -> stream -> packet -> frame).

:class:`FileSource` demuxes and decodes the video stream to RGB arrays, converting with the
stream's real YUV matrix and range, and hands every other stream's packets along untouched.
:class:`FileSink` encodes RGB arrays back with the same colour tags, timestamps and rotation,
remuxes those packets, writes to a temporary file and renames it only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import cv2
import numpy as np
from av.video.frame import VideoFrame
from av.video.reformatter import ColorRange, Colorspace, Interpolation
from av.video.stream import VideoStream

from vidlight.errors import MediaError
from vidlight.pipeline.stages import CONVERT_IN, CONVERT_OUT, timed
from vidlight.settings import EncoderSettings

log = logging.getLogger("vidlight")

# FFmpeg AVCOL_SPC tag -> the swscale matrix that implements it (SMPTE 170M is BT.601's
# matrix, BT.2020 constant luminance is approximated by its non-constant matrix).
_MATRIX_OF_TAG = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}


@dataclass
class VideoInfo:
    """What a sink needs to reproduce the input's video stream."""

    width: int
    height: int
    time_base: Fraction
    average_rate: Fraction | None
    frames: int  # container's count, for progress only (0 when unknown)
    duration_seconds: float | None
    colorspace: int  # AVCOL_SPC_* tag for the output (the input's, or the guess for untagged input)
    matrix: int  # the swscale matrix that implements it
    color_range: int  # AVCOL_RANGE_* (1 limited, 2 full)
    color_primaries: int
    color_trc: int
    bit_depth: int
    rotation: int
    codec: str


@dataclass
class Frame:
    """One decoded picture: RGB samples (uint8, or uint16 for >8-bit input) and its timestamp."""

    rgb: np.ndarray
    pts: int | None
    time_seconds: float | None
    received: float | None = None  # time.monotonic() when the pipeline got it (for latency)


def output_colorspace(tag: int, height: int) -> int:
    """The AVCOL_SPC tag to convert with and to write: ``tag`` when vidlight knows its matrix;
    for untagged (or unknown) video what players assume, BT.709 for HD and BT.601 for SD."""
    if tag in _MATRIX_OF_TAG:
        return tag
    return int(Colorspace.ITU709) if height >= 720 else int(Colorspace.ITU601)


def output_color_range(tag: int) -> int:
    """``tag`` when it is limited (MPEG) or full (JPEG) range; an unknown range is limited."""
    return tag if tag in (int(ColorRange.MPEG), int(ColorRange.JPEG)) else int(ColorRange.MPEG)


# swscale's default YUV 4:2:0 -> RGB path truncates: it reads natural pictures about 1 level
# dark (R -0.9, G -1.3, B -0.9 on 8 bits; -2 on 16), a green deficit that a method brightening
# a near-black frame 5x turns into a visible magenta cast. Rounded arithmetic with nearest
# chroma is unbiased (within 0.02). (swscale's bilinear variant corrupts rgb48 output.) For
# planar RGB output swscale takes the chroma at full horizontal resolution by itself; packed
# output needs FULL_CHR_H_INT added for that.
TO_RGB = Interpolation.POINT | Interpolation.ACCURATE_RND


# The picture files vidlight reads and writes (image folders, photos).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Software encoders that take x264's --crf and --preset as they are.
CRF_ENCODERS = ("libx264", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1")
PRESET_ENCODERS = ("libx264", "libx265", "libsvtav1")
# NVIDIA's hardware encoders, in PyAV's bundled FFmpeg: --crf becomes their constant-quality
# level and --preset one of their seven speed presets (p1 fastest .. p7 best).
NVENC = ("h264_nvenc", "hevc_nvenc", "av1_nvenc")
_NVENC_PRESETS = {
    "ultrafast": "p1",
    "superfast": "p1",
    "veryfast": "p2",
    "faster": "p3",
    "fast": "p3",
    "medium": "p4",
    "slow": "p5",
    "slower": "p6",
    "veryslow": "p7",
    "placebo": "p7",
}


def encoder_options(codec: str, crf: int | None, preset: str | None) -> dict[str, str]:
    """The FFmpeg options that carry ``--crf`` and ``--preset`` to ``codec`` (none for an
    encoder that has no such settings).

    NVENC: constant quality in VBR mode with no bitrate cap (``rc=vbr``, ``cq``, ``b=0``), its
    level the crf clamped to 1..51 (NVENC's 0 means "choose for me", not lossless); x264's
    preset names map to p1..p7, and p1..p7 pass through. libx265 is told to log errors only:
    by default it prints a banner and a page of statistics on every run (an ``x265-params``
    option of the caller's replaces this one).
    """
    opts: dict[str, str] = {}
    if codec in NVENC:
        if crf is not None:
            opts.update(rc="vbr", cq=str(min(max(crf, 1), 51)), b="0")
        if preset is not None:
            opts["preset"] = _NVENC_PRESETS.get(preset, preset)
        return opts
    if crf is not None and codec in CRF_ENCODERS:
        opts["crf"] = str(crf)
    if preset is not None and codec in PRESET_ENCODERS:
        opts["preset"] = str(preset)
    if codec == "libx265":
        opts["x265-params"] = "log-level=error"
    return opts


def full_depth_formats(bit_depth: int) -> tuple[str, ...]:
    """4:2:0 at a source's depth: ``yuv420p10le``, or ``p010le`` for the hardware encoders that
    take 10 bits that way; ``yuv420p`` for 8 bits."""
    return ("yuv420p10le", "p010le") if bit_depth > 8 else ("yuv420p",)


def pixel_format(formats: list[str], bit_depth: int) -> str:
    """The pixel format to encode in, from an encoder's ``formats`` (empty: any): one of
    :func:`full_depth_formats`, else 8-bit 4:2:0, else the encoder's first format."""
    wanted = (*full_depth_formats(bit_depth), "yuv420p")
    if not formats:
        return wanted[0]
    return next((f for f in wanted if f in formats), formats[0])


def plane_samples(plane, dtype: type[np.generic], components: int = 1) -> np.ndarray:
    """A picture plane's samples as an array over its memory: rows x (width x ``components``,
    the samples interleaved in the plane), without the rows' padding."""
    itemsize = np.dtype(dtype).itemsize
    rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // itemsize)
    return rows[:, : plane.width * components]


def frame_to_rgb(frame: av.VideoFrame, info: VideoInfo) -> np.ndarray:
    """RGB samples of ``frame`` (uint8, or uint16 above 8 bits) with ``info``'s matrix and range:
    the one YUV -> RGB conversion of every source.

    swscale converts to planar RGB and OpenCV interleaves the planes: the samples of swscale's
    own packed output with full-resolution chroma, in half its time (its packed writer is the
    slow part: 4.8 -> 2.4 ms per 720p frame). RGB sources of 9-12 bits take the packed output."""
    deep = info.bit_depth > 8
    fmt = frame.format
    with timed(CONVERT_IN):
        if fmt.is_rgb and max(c.bits for c in fmt.components) not in (8, 16):
            # 9-12-bit RGB (gbrp10le, ...): swscale's planar-to-planar path does not stretch it
            # to 16 bits' full scale (white reads 65473); its packed output does.
            return frame.to_ndarray(format="rgb48le" if deep else "rgb24", interpolation=TO_RGB, threads=1)
        planar = frame.reformat(
            format="gbrp16le" if deep else "gbrp",
            src_colorspace=info.matrix,
            src_color_range=info.color_range,
            dst_color_range=ColorRange.JPEG,
            interpolation=TO_RGB,
            threads=1,  # the pipeline runs stages in parallel; swscale's own threads only contend
        )
        g, b, r = (plane_samples(p, np.uint16 if deep else np.uint8) for p in planar.planes)
        return cv2.merge([r, g, b])


def _bit_depth(stream: av.video.stream.VideoStream) -> int:
    fmt = stream.codec_context.format
    return max((c.bits for c in fmt.components), default=8) if fmt is not None else 8


def open_input(path: str | os.PathLike) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"input {path} does not exist")
    if path.is_dir():
        raise MediaError(f"input {path} is a directory, not a video file")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise MediaError(f"cannot read {path}: not a video file, or it is corrupt ({exc.strerror})") from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path} has no video stream")
    return container


class FileSource:
    """Decodes a video file's first video stream; iterate to get :class:`Frame` and packet events.

    Iteration yields ``Frame`` objects for pictures and ``av.Packet`` objects for streams that
    are copied (audio, subtitles), in demux order.
    """

    def __init__(self, path: str | os.PathLike, *, threads: str = "AUTO") -> None:
        self.path = Path(path)
        # Learn the real tags from the first decoded picture, then start again from a fresh
        # open: seeking back can fail (raw streams) or skip packets before the first picture.
        probe = open_input(path)
        try:
            self.info = self._probe(probe)
        finally:
            probe.close()
        self.container = open_input(path)
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = threads  # frame threading for files
        self.copy_streams = [s for s in self.container.streams if s.type in ("audio", "subtitle")]
        self.corrupt_packets = 0
        rate = self.info.average_rate
        # Frames that arrive without a pts (raw elementary streams) are spaced by the frame rate.
        self._pts_step = max(1, round(1 / (rate * self.info.time_base))) if rate else 1
        self._last_pts: int | None = None

    def _probe(self, container: av.container.InputContainer) -> VideoInfo:
        s = container.streams.video[0]
        cc = s.codec_context
        if not cc.width or not cc.height:
            if self.path.suffix.lower() in IMAGE_SUFFIXES:
                raise MediaError(f"cannot read {self.path} as a picture (corrupt or not an image?)")
            raise MediaError(f"cannot read {self.path}: the video stream has no frame size (corrupt header?)")
        first = None
        try:
            first = next(container.decode(s), None)
        except av.error.FFmpegError:
            pass
        colorspace = output_colorspace(first.colorspace if first is not None else cc.colorspace, cc.height)
        color_range = output_color_range(first.color_range if first is not None else cc.color_range)
        duration = (
            float(s.duration * s.time_base)
            if s.duration and s.time_base
            else (container.duration / 1e6 if container.duration else None)
        )
        return VideoInfo(
            width=cc.width,
            height=cc.height,
            time_base=s.time_base or Fraction(1, 90000),
            average_rate=s.average_rate or s.guessed_rate,
            frames=s.frames or 0,
            duration_seconds=duration,
            colorspace=colorspace,
            matrix=_MATRIX_OF_TAG[colorspace],
            color_range=color_range,
            color_primaries=first.color_primaries if first is not None else cc.color_primaries,
            color_trc=first.color_trc if first is not None else cc.color_trc,
            bit_depth=_bit_depth(s) if first is None else max(c.bits for c in first.format.components),
            rotation=int(first.rotation) if first is not None else 0,
            codec=cc.name,
        )

    live = False  # a file is read at its own pace, never dropped or reconnected
    reconnects = 0

    @property
    def name(self) -> str:
        """For progress bars and logs."""
        return self.path.name

    def to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        return frame_to_rgb(frame, self.info)

    def __iter__(self) -> Iterator[Frame | av.Packet]:
        for packet in self.container.demux(self.stream, *self.copy_streams):
            if packet.stream is not self.stream:
                if packet.dts is not None and packet.size:
                    yield packet
                continue
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                self.corrupt_packets += 1  # skip it and go on, as players do
                continue
            for frame in cast(list[VideoFrame], frames):  # packets of the video stream decode to pictures
                pts = frame.pts
                if pts is None:
                    pts = 0 if self._last_pts is None else self._last_pts + self._pts_step
                self._last_pts = pts
                yield Frame(self.to_rgb(frame), pts, float(pts * self.info.time_base))

    def close(self) -> None:
        self.container.close()


# The longest file name most file systems take, in bytes.
NAME_MAX = 255


DIGEST_CHARS = 20  # hex digits of a shortened hidden name


def hidden_path(path: Path, tag: str, *, keep_suffix: bool = True) -> Path:
    """A hidden name beside ``path`` for what is made before it is complete: ``.stem.tag.suffix``
    (``.name.tag`` without ``keep_suffix``). A name that would be too long for the file system
    is shortened to a digest of ``path``'s name (``.digest.tag.suffix``)."""
    suffix = path.suffix if keep_suffix else ""
    hidden = f".{path.stem if keep_suffix else path.name}.{tag}{suffix}"
    if len(os.fsencode(hidden)) > NAME_MAX:
        hidden = f".{hashlib.sha1(os.fsencode(path.name)).hexdigest()[:DIGEST_CHARS]}.{tag}{suffix}"
    return path.with_name(hidden)


def fit_into(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """``rgb`` scaled to fit ``width`` x ``height`` with its shape kept, centred on black."""
    h, w = rgb.shape[:2]
    scale = min(width / w, height / h)
    fw, fh = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
    scaled = cv2.resize(rgb, (fw, fh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((height, width, *rgb.shape[2:]), rgb.dtype)
    y, x = (height - fh) // 2, (width - fw) // 2
    out[y : y + fh, x : x + fw] = scaled.reshape(fh, fw, *rgb.shape[2:])
    return out


def partial_path(output: Path) -> Path:
    """Where an output is written until it is complete (same folder, same suffix)."""
    return hidden_path(output, "partial")


class FileSink:
    """Encodes RGB frames into a new file, copying the source's other streams.

    Args:
        output: final path; the file is written to :func:`partial_path` and renamed by
            :meth:`close` (``complete=True``) or removed (``complete=False``).
        info: the source's :class:`VideoInfo` (size, time base, colour tags, rotation).
        copy_streams: input streams whose packets will be passed to :meth:`mux_packet`.
        codec, crf, preset, options: encoder settings.
        open_encoder: open the encoder now, so one that cannot run fails before any frame is
            made; False opens it at the first frame (a live source's frames are arriving
            already, and opening it meanwhile lengthens the backlog its first frames are
            dropped from).
    """

    def __init__(
        self,
        output: str | os.PathLike,
        info: VideoInfo,
        *,
        copy_streams: list | tuple = (),
        codec: str = EncoderSettings.codec,
        crf: int | None = EncoderSettings.crf,
        preset: str | None = EncoderSettings.preset,
        options: dict[str, str] | None = None,
        open_encoder: bool = True,
    ) -> None:
        path = Path(output)
        self.output: str | Path = path  # a subclass may name its output by a URL
        self.tmp = partial_path(path)
        self.info = info
        folder = path.parent
        if not folder.is_dir():
            raise MediaError(f"cannot write {self.output}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise MediaError(f"cannot write {self.output}: folder {folder} is not writable")
        self.frames_written = 0
        self._last_pts: int | None = None
        self._warned_resize = False
        try:
            self.container = av.open(str(self.tmp), mode="w")
        except ValueError:  # FFmpeg knows no container by this name's suffix
            named = f"no video container is named {path.suffix!r}" if path.suffix else "the name has no suffix"
            raise MediaError(
                f"cannot write {self.output}: {named}; use .mp4, .mkv, .mov, .webm or .avi "
                "(a folder, or a .png/.jpg name, for pictures)"
            ) from None
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(f"cannot write {self.output}: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            self._add_video_stream(codec, crf, preset, options or {}, open_encoder)
            self.stream_map = {}
            for s in copy_streams:
                try:
                    self.stream_map[s.index] = self.container.add_stream_from_template(s)
                except (av.error.FFmpegError, ValueError) as exc:
                    log.warning(
                        "dropping %s stream #%d (%s): %s cannot hold it (%s)",
                        s.type,
                        s.index,
                        s.codec_context.name,
                        path.suffix,
                        exc,
                    )
        except BaseException:
            self.close(complete=False)
            raise

    def _add_video_stream(
        self, codec: str, crf: int | None, preset: str | None, options: dict[str, str], open_encoder: bool = True
    ) -> None:
        info = self.info
        try:
            stream = cast(VideoStream, self.container.add_stream(codec, rate=info.average_rate))
        except (av.error.FFmpegError, ValueError) as exc:
            raise MediaError(f"unknown or unavailable encoder {codec!r} ({exc})") from None
        formats = [f.name for f in (stream.codec_context.codec.video_formats or [])]
        want = pixel_format(formats, info.bit_depth)
        if want not in full_depth_formats(info.bit_depth):
            log.warning("%s cannot encode %s; writing %s", codec, full_depth_formats(info.bit_depth)[0], want)
        self.pix_fmt = want
        self.subsampled = want.startswith(("yuv420", "nv12", "p010", "yuv422"))
        # 4:2:0 encoders need even sides: pad by one edge row/column rather than lose pixels.
        self.width = info.width + (info.width % 2 if self.subsampled else 0)
        self.height = info.height + (info.height % 2 if self.subsampled else 0)
        if (self.width, self.height) != (info.width, info.height):
            log.warning(
                "%s with %s needs even frame sides: padding %dx%d to %dx%d by repeating the last row/column",
                codec,
                want,
                info.width,
                info.height,
                self.width,
                self.height,
            )
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, want
        stream.time_base = info.time_base
        stream.codec_context.time_base = info.time_base
        cc = stream.codec_context
        cc.colorspace, cc.color_range = info.colorspace, info.color_range
        cc.color_primaries, cc.color_trc = info.color_primaries, info.color_trc
        self.encoder_options = {**encoder_options(codec, crf, preset), **options}  # what the encoder is given
        stream.options = dict(self.encoder_options)
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        self.stream = stream
        if open_encoder:  # now, not at the first frame: an encoder that cannot run fails before the model does
            self._open_encoder()

    def _open_encoder(self) -> None:
        codec = self.stream.codec_context.name
        try:
            self.stream.codec_context.open()
        except av.error.FFmpegError as exc:
            hint = "check --codec and its options"
            if codec in NVENC:
                hint = f"{codec} needs an NVIDIA GPU with NVENC and its driver; without one use --codec libx264"
            raise MediaError(f"encoder {codec} could not start ({exc.strerror}): {hint}") from None

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        """Encode one RGB frame (uint8, or uint16 for >8-bit) at ``pts`` (input time base)."""
        h, w = rgb.shape[:2]
        if (h, w) == (self.info.height, self.info.width) and (h, w) != (self.height, self.width):
            rgb = np.pad(rgb, ((0, self.height - h), (0, self.width - w), (0, 0)), mode="edge")
        elif (h, w) != (self.height, self.width):
            if not self._warned_resize:
                log.warning(
                    "frame size changed mid-stream to %dx%d: fitting it into %dx%d (its shape kept, black borders)",
                    w,
                    h,
                    self.width,
                    self.height,
                )
                self._warned_resize = True
            rgb = fit_into(rgb, self.width, self.height)
        with timed(CONVERT_OUT):
            frame = self._to_frame(rgb)
            frame = frame.reformat(
                format=self.pix_fmt,
                src_color_range=ColorRange.JPEG,
                dst_colorspace=self.info.matrix,
                dst_color_range=self.info.color_range,
                threads=1,
            )
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            pts = 0 if self._last_pts is None else self._last_pts + 1  # encoders need increasing pts
        frame.pts, frame.time_base = pts, self.info.time_base
        self._last_pts = pts
        if not self.stream.codec_context.is_open:
            self._open_encoder()
        self.container.mux(self.stream.encode(frame))
        self.frames_written += 1

    def _to_frame(self, rgb: np.ndarray) -> av.VideoFrame:
        """``rgb`` as a frame for swscale. 8-bit samples go in as planes, split by OpenCV: swscale
        reads planar RGB faster than packed (4.7 -> 3.2 ms per 720p frame to 4:2:0) and gives
        the same samples; 16-bit ones stay packed, where its two readers differ in chroma."""
        if rgb.dtype != np.uint8 or self.pix_fmt == "rgb24":
            return av.VideoFrame.from_ndarray(rgb, format="rgb48le" if rgb.dtype == np.uint16 else "rgb24")
        h, w = rgb.shape[:2]
        frame = av.VideoFrame(w, h, "gbrp")
        planes = [plane_samples(frame.planes[i], np.uint8) for i in (2, 0, 1)]  # R, G, B
        for plane, part in zip(planes, cv2.split(rgb, planes)):
            if part is not plane:  # OpenCV wrote elsewhere (rows with padding)
                np.copyto(plane, part)
        return frame

    def mux_packet(self, packet: av.Packet) -> None:
        """Copy a packet of an audio/subtitle stream, untouched."""
        out = self.stream_map.get(packet.stream.index)
        if out is not None:
            packet.stream = out
            self.container.mux(packet)

    def close(self, *, complete: bool = True) -> None:
        """Flush and finalise; rename into place if ``complete`` and anything was written."""
        container = self.__dict__.pop("container", None)  # closed once: a second close does nothing
        if container is None:
            return
        try:
            if complete and hasattr(self, "stream"):
                container.mux(self.stream.encode(None))
            container.close()
        except (av.error.FFmpegError, OSError) as exc:
            try:
                container.close()
            except (av.error.FFmpegError, OSError):
                pass
            self.tmp.unlink(missing_ok=True)
            if complete:
                raise MediaError(
                    f"could not finish writing {self.output}: {getattr(exc, 'strerror', None) or exc}"
                ) from None
            return
        except BaseException:  # Ctrl-C while finishing it: no half-written file is left
            with contextlib.suppress(Exception):
                container.close()
            self.tmp.unlink(missing_ok=True)
            raise
        if complete and self.frames_written:
            os.replace(self.tmp, self.output)
        else:
            self.tmp.unlink(missing_ok=True)
