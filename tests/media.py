"""Helpers that synthesise small test videos with PyAV and read them back.

Content is smooth (gradients and flat patches) so that codec loss stays a few levels.
Every writer sets explicit timestamps; decoding helpers convert with the matrix of the
file's own tags, using a mapping written here (independent of vidlight's).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import ColorRange, Interpolation
from torch import nn

# AVCOL_SPC tag -> swscale matrix (SWS_CS_*): BT.709 is 1, BT.470BG/SMPTE 170M (BT.601) are 5.
SWS_MATRIX = {1: 1, 5: 5, 6: 5}


def gradient(width: int, height: int, index: int = 0, *, depth: int = 8) -> np.ndarray:
    """A smooth RGB picture that differs from frame to frame (uint8, or uint16 for depth > 8)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    t = index * 0.15
    r = 0.15 + 0.6 * x / max(width - 1, 1)
    g = 0.15 + 0.6 * y / max(height - 1, 1)
    b = 0.45 + 0.3 * np.sin(2 * np.pi * (x / (2 * width) + y / (2 * height) + t))
    rgb = np.stack([r, g, b], axis=-1).clip(0, 1)
    if depth > 8:
        return (rgb * 65535 + 0.5).astype(np.uint16)
    return (rgb * 255 + 0.5).astype(np.uint8)


def can_encode(codec: str, pix_fmt: str) -> bool:
    try:
        c = av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001  (unknown codec in this build)
        return False
    return pix_fmt in [f.name for f in (c.video_formats or [])]


@dataclass
class Clip:
    path: Path
    frames: list[np.ndarray]  # the RGB pictures that were encoded
    pts_seconds: list[float]
    audio: bool = False


def write_video(
    path: Path,
    frames: Sequence[np.ndarray],
    *,
    pts: Sequence[int] | None = None,
    time_base: Fraction = Fraction(1, 30),
    rate: int = 30,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    colorspace: int | None = None,
    color_range: int | None = None,
    color_primaries: int | None = None,
    color_trc: int | None = None,
    rotation: int = 0,
    audio: bool = False,
    audio_rate: int = 48000,
    subtitles: Sequence[tuple[float, float, str]] = (),
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> Clip:
    """Encode RGB ``frames`` (uint8 or uint16) into ``path`` and return what was written.

    ``pts`` are in ``time_base`` (default 0, 1, 2, ...). The colour tags are written to the
    stream and the RGB -> YUV conversion uses the matching matrix and range. ``subtitles``
    (start s, end s, text) need a container that holds SubRip (mkv).
    """
    path = Path(path)
    pts = list(range(len(frames))) if pts is None else list(pts)
    assert len(pts) == len(frames)
    height, width = frames[0].shape[:2]
    matrix = SWS_MATRIX.get(colorspace, 5) if colorspace is not None else None
    rng = color_range if color_range is not None else int(ColorRange.MPEG)
    sub_src = None
    if subtitles:
        srt = path.with_suffix(".srt")
        srt.write_text(
            "".join(
                f"{i + 1}\n{_srt_time(a)} --> {_srt_time(b)}\n{text}\n\n" for i, (a, b, text) in enumerate(subtitles)
            )
        )
        sub_src = av.open(str(srt))
    with av.open(str(path), mode="w", options=container_options or {}) as out:
        vs = out.add_stream(codec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
        vs.time_base = time_base
        vs.codec_context.time_base = time_base
        cc = vs.codec_context
        if colorspace is not None:
            cc.colorspace = colorspace
        if color_range is not None:
            cc.color_range = color_range
        if color_primaries is not None:
            cc.color_primaries = color_primaries
        if color_trc is not None:
            cc.color_trc = color_trc
        opts = {"crf": "8", "preset": "ultrafast"} if codec in ("libx264", "libx265") else {}
        opts.update(options or {})
        if codec == "libx265":
            opts.setdefault("x265-params", "log-level=error")
        vs.options = opts
        if rotation:
            vs.set_display_rotation(rotation)
        as_ = out.add_stream("aac", rate=audio_rate, layout="mono") if audio else None
        ss = out.add_stream_from_template(sub_src.streams.subtitles[0]) if sub_src is not None else None

        for rgb, p in zip(frames, pts):
            fmt = "rgb48le" if rgb.dtype == np.uint16 else "rgb24"
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=fmt)
            kwargs = {"dst_color_range": rng, "src_color_range": ColorRange.JPEG}
            if matrix is not None:
                kwargs["dst_colorspace"] = matrix
            frame = frame.reformat(format=pix_fmt, **kwargs)
            frame.pts, frame.time_base = p, time_base
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))

        if as_ is not None:
            duration = float((pts[-1] + 1) * time_base)
            n = int(duration * audio_rate)
            t = np.arange(n) / audio_rate
            samples = (0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 1.3 * t)).astype(np.float32)
            for start in range(0, n, 1024):
                block = samples[start : start + 1024]
                af = av.AudioFrame.from_ndarray(block[None], format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = audio_rate, start, Fraction(1, audio_rate)
                out.mux(as_.encode(af))
            out.mux(as_.encode(None))

        if ss is not None:
            for packet in sub_src.demux(sub_src.streams.subtitles[0]):
                if packet.dts is None:
                    continue
                packet.stream = ss
                out.mux(packet)
    if sub_src is not None:
        sub_src.close()
    return Clip(path, [np.asarray(f) for f in frames], [float(p * time_base) for p in pts], audio)


def _srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def simple_clip(path: Path, *, width: int = 64, height: int = 48, n: int = 12, **kwargs) -> Clip:
    return write_video(path, [gradient(width, height, i) for i in range(n)], **kwargs)


@dataclass
class Decoded:
    frames: list[np.ndarray]  # RGB, uint8 (or uint16 with ``depth16``), converted with the file's tags
    pts_seconds: list[float]
    rotations: list[int]
    time_base: Fraction
    width: int
    height: int
    pix_fmt: str
    colorspace: int
    color_range: int
    color_primaries: int
    color_trc: int
    codec: str


# swscale with rounding and full-resolution chroma: its fast default reads 4:2:0 about one level
# dark (tests/test_pipeline.py::test_decoded_colours_are_unbiased).
ROUNDED = Interpolation.POINT | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


def read_video(path: Path, *, depth16: bool = False) -> Decoded:
    """Decode every frame of the first video stream, to RGB with the stream's own tags (rounded)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames, pts, rot = [], [], []
        tags = None
        for f in c.decode(s):
            if tags is None:
                tags = (f.colorspace, f.color_range, f.color_primaries, f.color_trc, f.format.name)
            cs = SWS_MATRIX.get(f.colorspace, 5)
            rng = f.color_range if f.color_range in (1, 2) else 1
            frames.append(
                f.to_ndarray(
                    format="rgb48le" if depth16 else "rgb24",
                    src_colorspace=cs,
                    src_color_range=rng,
                    dst_color_range=ColorRange.JPEG,
                    interpolation=ROUNDED,
                )
            )
            pts.append(float(f.pts * s.time_base))
            rot.append(int(f.rotation))
        cc = s.codec_context
        tags = tags or (cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc, "")
        return Decoded(
            frames, pts, rot, s.time_base, cc.width, cc.height, tags[4], tags[0], tags[1], tags[2], tags[3], cc.name
        )


def packet_payloads(path: Path, kind: str) -> list[bytes]:
    """The bytes of every packet of the first stream of ``kind`` ('audio', 'subtitle')."""
    with av.open(str(path)) as c:
        streams = getattr(c.streams, {"audio": "audio", "subtitle": "subtitles"}[kind])
        if not streams:
            return []
        return [bytes(p) for p in c.demux(streams[0]) if p.size]


def stream_types(path: Path) -> list[str]:
    with av.open(str(path)) as c:
        return [s.type for s in c.streams]


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# --- test models ---------------------------------------------------------------------------------


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class InterruptOn(nn.Module):
    """Identity that raises KeyboardInterrupt (as Ctrl-C would) on the call that would take it
    past ``frames`` frames (the pipeline may split a batch over several calls)."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames, self.seen = frames, 0
        self.lock = threading.Lock()

    def failure(self) -> BaseException:
        return KeyboardInterrupt()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.seen += x.shape[0]
            if self.seen > self.frames:
                raise self.failure()
        return x
