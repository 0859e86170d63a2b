"""The streaming pipeline end to end, on small clips synthesised with PyAV.

The models here are tiny test modules (identity, x2 gain, box blur), so what is checked is
the pipeline (timestamps, streams, sizes, bit depth, colour, rotation, interruption,
memory), not a method's numbers. Expected values are computed independently of vidlight.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from av.video.reformatter import ColorRange
from torch import nn

import vidlight.pipeline.enhancer as enhancer_module
from vidlight.errors import VidlightError
from vidlight.io.files import FileSink, FileSource, VideoInfo, frame_to_rgb, partial_path, plane_samples
from vidlight.pipeline.enhancer import FrameEnhancer, single_threaded_ops
from vidlight.pipeline.runner import Interrupted, RunStats, enhance_video
from vidlight.pipeline.temporal import TemporalSmoother

from media import (
    ROUNDED,
    Identity,
    InterruptOn,
    can_encode,
    gradient,
    mean_abs_diff,
    packet_payloads,
    read_video,
    simple_clip,
    stream_types,
    write_video,
)

# --- test models -------------------------------------------------------------------------


class Gain(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 2).clamp(0, 1)


class BoxBlur(nn.Module):
    """3x3 box blur (zero padding) times 1.5: needs one row of context above and below."""

    receptive_halo = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / 9.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * 1.5


class FailOn(InterruptOn):
    """Identity that raises RuntimeError on the call that would take it past ``frames`` frames."""

    def failure(self) -> BaseException:
        return RuntimeError("model exploded")


def run(src: Path, dst: Path, model: nn.Module | None = None, **kwargs) -> RunStats:
    """The pipeline around ``model`` (the identity by default), at strength 1 unless told: these
    tests check that every frame gets the model's own output (tests/test_exposure.py checks
    the automatic strength)."""
    kwargs.setdefault("preset", "ultrafast")
    kwargs.setdefault("strength", 1.0)
    return enhance_video(src, dst, model=model or Identity(), progress=False, **kwargs)


def no_partial(path: Path) -> bool:
    return not partial_path(path).exists() and not list(path.parent.glob(".*partial*"))


def gain_matched(a: np.ndarray, ref: np.ndarray, *, check: bool = True) -> np.ndarray:
    """``a`` scaled by one factor so its mean equals ``ref``'s. Temporal smoothing (on by default)
    multiplies each frame by one factor near 1; with ``check`` the factor must stay within 10 %."""
    factor = ref.astype(np.float64).mean() / max(a.astype(np.float64).mean(), 1e-9)
    assert not check or 0.9 < factor < 1.1, f"brightness moved by a factor {factor:.3f}"
    return a.astype(np.float64) * factor


def assert_same_pictures(out: list[np.ndarray], src: list[np.ndarray], tol: float = 3.0) -> None:
    """Each output frame is its own input frame (within codec loss and the smoothing's gain),
    not a neighbour."""
    assert len(out) <= len(src)
    for i, a in enumerate(out):
        diffs = [mean_abs_diff(gain_matched(a, b, check=j == i), b) for j, b in enumerate(src)]
        assert diffs[i] < tol, f"frame {i}: mean abs diff {diffs[i]:.2f}"
        assert int(np.argmin(diffs)) == i, f"frame {i} looks like input frame {int(np.argmin(diffs))}"


def quantise(x: torch.Tensor) -> np.ndarray:
    """The enhancer's documented float -> uint8 rule: clamp, * 255, + 0.5, truncate."""
    return (x.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


# --- 1. frames and timestamps ---------------------------------------------------------------


def _cumulative(gaps: list[int], start: int = 0) -> list[int]:
    out = [start]
    for g in gaps:
        out.append(out[-1] + g)
    return out


TIMING_CASES = {
    # VFR in a millisecond time base (mkv's own), irregular gaps.
    "vfr-mkv-ms": ("mkv", Fraction(1, 1000), _cumulative([40, 33, 100, 17, 50, 60, 33, 120, 33, 34, 67])),
    # VFR in 1/30 ticks with gaps 1,1,3,1,2,... (mp4 rescales to its own timescale).
    "vfr-mp4-30ths": ("mp4", Fraction(1, 30), _cumulative([1, 1, 3, 1, 2, 1, 4, 1, 1, 2, 5])),
    # VFR, mp4, 1/1000 time base.
    "vfr-mp4-ms": ("mp4", Fraction(1, 1000), _cumulative([40, 33, 100, 17, 50, 60, 33, 120, 33, 34, 67])),
    # A clip that does not start at 0.
    "offset-mp4": ("mp4", Fraction(1, 30), _cumulative([1, 1, 2, 1, 3, 1], start=15)),
    "offset-mkv": ("mkv", Fraction(1, 1000), _cumulative([40, 33, 100, 17, 50], start=500)),
    # CFR.
    "cfr-mp4": ("mp4", Fraction(1, 30), list(range(15))),
    "cfr-mkv": ("mkv", Fraction(1, 25), list(range(15))),
}


@pytest.mark.parametrize("case", list(TIMING_CASES))
def test_frames_and_timestamps_are_kept(tmp_path: Path, case: str) -> None:
    ext, tb, pts = TIMING_CASES[case]
    clip = simple_clip(tmp_path / f"in.{ext}", n=len(pts), pts=pts, time_base=tb)
    src = read_video(clip.path)
    assert src.pts_seconds == pytest.approx(clip.pts_seconds, abs=float(src.time_base) / 2 + 1e-9)

    stats = run(clip.path, tmp_path / f"out.{ext}")
    out = read_video(tmp_path / f"out.{ext}")

    assert stats.frames == len(pts)
    assert len(out.frames) == len(src.frames) == len(pts)
    tick = max(float(src.time_base), float(out.time_base))
    np.testing.assert_allclose(out.pts_seconds, src.pts_seconds, rtol=0, atol=tick / 2 + 1e-9)
    # The pictures are the same pictures, in the same order (no drop, duplicate or shuffle).
    assert_same_pictures(out.frames, src.frames)
    assert no_partial(tmp_path / f"out.{ext}")


def test_b_frames_keep_order_and_timestamps(tmp_path: Path) -> None:
    """x264 'medium' uses B-frames (decode order != display order, negative dts in mp4)."""
    clip = simple_clip(tmp_path / "in.mp4", n=20, options={"preset": "medium", "bf": "3"})
    src = read_video(clip.path)
    run(clip.path, tmp_path / "out.mp4", preset="medium")
    out = read_video(tmp_path / "out.mp4")
    assert len(out.frames) == 20
    np.testing.assert_allclose(out.pts_seconds, src.pts_seconds, rtol=0, atol=0.5 / 30)
    assert_same_pictures(out.frames, src.frames)


def run_in_child(script: str, *args: object) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter (for vidlight bugs that can crash the process)."""
    import sys

    import vidlight

    root = Path(vidlight.__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-c", script, str(root), *map(str, args)], capture_output=True, text=True, timeout=120
    )


_ENHANCE_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import torch
from vidlight.pipeline.runner import enhance_video

class Identity(torch.nn.Module):
    def forward(self, x):
        return x

stats = enhance_video(sys.argv[2], sys.argv[3], model=Identity(), progress=False, preset="ultrafast")
print("frames", stats.frames)
"""


def test_raw_elementary_stream_gets_a_frame_rate(tmp_path: Path) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=10)
    raw = tmp_path / "in.h264"
    with av.open(str(clip.path)) as i, av.open(str(raw), "w") as o:
        s = o.add_stream_from_template(i.streams.video[0])
        for packet in i.demux(i.streams.video[0]):
            if packet.dts is not None:
                packet.stream = s
                o.mux(packet)
    with av.open(str(raw)) as c:
        rate = c.streams.video[0].average_rate or c.streams.video[0].guessed_rate  # FFmpeg's guess: 25
        assert all(f.pts is None for f in c.decode(video=0))
    out = tmp_path / "out.mp4"
    proc = run_in_child(_ENHANCE_SCRIPT, raw, out)  # in a child: bug (1) can kill the interpreter
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-1500:])
    assert out.exists(), proc.stdout
    decoded = read_video(out)
    assert len(decoded.frames) == 10
    np.testing.assert_allclose(np.diff(decoded.pts_seconds), 1 / float(rate), rtol=0.01)


# --- 2. audio and subtitles ------------------------------------------------------------------


def _audio_props(path: Path) -> tuple:
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        return a.codec_context.name, a.sample_rate, a.codec_context.channels


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_audio_is_copied_not_reencoded(tmp_path: Path, ext: str) -> None:
    clip = simple_clip(tmp_path / f"in.{ext}", n=15, audio=True)
    run(clip.path, tmp_path / f"out.{ext}")
    out = tmp_path / f"out.{ext}"
    assert stream_types(out).count("audio") == 1
    assert _audio_props(out) == _audio_props(clip.path) == ("aac", 48000, 1)

    def payloads(path: Path) -> list[bytes]:
        # Packets at or after t=0.
        with av.open(str(path)) as c:
            return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size and p.pts is not None and p.pts >= 0]

    src_payload, out_payload = payloads(clip.path), payloads(out)
    assert len(src_payload) > 10
    assert b"".join(out_payload) == b"".join(src_payload)  # bit-exact: a copy, not a re-encode


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_audio_copy_keeps_every_packet(tmp_path: Path, ext: str) -> None:
    clip = simple_clip(tmp_path / f"in.{ext}", n=15, audio=True)
    run(clip.path, tmp_path / f"out.{ext}")
    src, out = packet_payloads(clip.path, "audio"), packet_payloads(tmp_path / f"out.{ext}", "audio")
    assert len(out) == len(src)
    assert b"".join(out) == b"".join(src)


_NO_SEEK_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import av
import vidlight.io.files as files

opened = []
real_open = files.open_input

class NoSeek:  # an input whose seek fails (a pipe, a format that cannot seek)
    def __init__(self, container):
        self._c = container
    def __getattr__(self, name):
        return getattr(self._c, name)
    def seek(self, *args, **kwargs):
        raise av.error.FFmpegError(29, "Illegal seek")

def open_no_seek(path):
    opened.append(real_open(path))
    return NoSeek(opened[-1])

files.open_input = open_no_seek
source = files.FileSource(sys.argv[2])
assert len(opened) == 2, "the fallback did not reopen the file"
# Count, never repr: a stale stream's repr reads the closed container's freed memory.
stale = sum(1 for s in [source.stream, *source.copy_streams] if s.container is not opened[-1])
print("copied", len(source.copy_streams), "stale", stale, "frames", sum(1 for _ in source))
sys.exit(0 if stale == 0 else 3)
"""


def test_source_that_cannot_seek_back_is_reopened_cleanly(tmp_path: Path) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=6, audio=True)
    # In a child process: the bug is a use-after-free that may kill the interpreter.
    proc = run_in_child(_NO_SEEK_SCRIPT, clip.path)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-500:], proc.stderr[-1500:])
    assert "copied 1 stale 0 frames" in proc.stdout


def test_no_audio_in_no_audio_out(tmp_path: Path) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=6)
    run(clip.path, tmp_path / "out.mp4")
    assert stream_types(tmp_path / "out.mp4") == ["video"]


def test_subtitles_are_copied(tmp_path: Path) -> None:
    clip = simple_clip(tmp_path / "in.mkv", n=12, audio=True, subtitles=[(0.0, 0.1, "hello"), (0.2, 0.35, "world")])
    assert packet_payloads(clip.path, "subtitle") == [b"hello", b"world"]
    run(clip.path, tmp_path / "out.mkv")
    assert sorted(stream_types(tmp_path / "out.mkv")) == ["audio", "subtitle", "video"]
    assert packet_payloads(tmp_path / "out.mkv", "subtitle") == [b"hello", b"world"]


def test_stream_the_output_container_cannot_hold_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clip = simple_clip(tmp_path / "in.mkv", n=6, audio=True, subtitles=[(0.0, 0.1, "hi")])
    with caplog.at_level(logging.WARNING, logger="vidlight"):
        run(clip.path, tmp_path / "out.mp4")  # mp4 cannot hold SubRip
    assert sorted(stream_types(tmp_path / "out.mp4")) == ["audio", "video"]
    assert any("subtitle" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


# --- 3. sizes -----------------------------------------------------------------------------------


def test_odd_size_is_padded_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # yuv444p lets x264 take the odd input size; vidlight writes yuv420p, which needs even sides.
    clip = simple_clip(tmp_path / "in.mp4", width=65, height=47, n=5, pix_fmt="yuv444p")
    src = read_video(clip.path)
    assert (src.width, src.height) == (65, 47)
    with caplog.at_level(logging.WARNING, logger="vidlight"):
        run(clip.path, tmp_path / "out.mp4")
    out = read_video(tmp_path / "out.mp4")
    assert (out.width, out.height) == (66, 48)
    assert out.frames[0].shape == (48, 66, 3)
    assert any(
        r.name == "vidlight" and r.levelno == logging.WARNING and "66x48" in r.getMessage() for r in caplog.records
    )
    assert_same_pictures([f[:47, :65] for f in out.frames], src.frames)
    # The pad repeats the edge: the extra column/row look like their neighbours.
    f = out.frames[0].astype(int)
    assert np.abs(f[:, 65] - f[:, 64]).mean() < 4 and np.abs(f[47] - f[46]).mean() < 4


def test_portrait_size_is_kept(tmp_path: Path) -> None:
    clip = simple_clip(tmp_path / "in.mp4", width=48, height=96, n=4)
    src = read_video(clip.path)
    run(clip.path, tmp_path / "out.mp4")
    out = read_video(tmp_path / "out.mp4")
    assert (out.width, out.height) == (48, 96)
    assert_same_pictures(out.frames, src.frames)


# --- 4. high bit depth -------------------------------------------------------------------------


def _ten_bit_codec() -> tuple[str, str, dict]:
    if can_encode("libx264", "yuv420p10le"):
        return "libx264", "mp4", {"qp": "0"}
    if can_encode("libx265", "yuv420p10le"):
        return "libx265", "mp4", {"x265-params": "lossless=1:log-level=error"}
    if can_encode("ffv1", "yuv420p10le"):
        return "ffv1", "mkv", {}
    pytest.skip("no 10-bit encoder in this PyAV build")


def _luma_levels(path: Path, row: int, width: int) -> int:
    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
        plane = f.planes[0]
        y = np.frombuffer(plane, np.uint16).reshape(plane.height, plane.line_size // 2)
        return len(np.unique(y[row, :width]))


def test_ten_bit_input_stays_ten_bit(tmp_path: Path) -> None:
    codec, ext, options = _ten_bit_codec()
    # A shallow grey ramp: ~30 distinct 10-bit levels but only ~8 distinct 8-bit levels.
    w, h = 128, 32
    ramp = (np.linspace(0.40, 0.43, w) * 65535).astype(np.uint16)
    frame = np.repeat(np.repeat(ramp[None, :, None], h, 0), 3, 2)
    frames = [frame, np.roll(frame, 3, axis=1), frame]
    clip = write_video(tmp_path / f"in.{ext}", frames, codec=codec, pix_fmt="yuv420p10le", options=options)
    src = read_video(clip.path, depth16=True)
    assert src.pix_fmt == "yuv420p10le"

    stats = run(clip.path, tmp_path / "out.mp4")  # vidlight's default encoder, libx264
    out = read_video(tmp_path / "out.mp4", depth16=True)
    assert stats.frames == len(out.frames) == 3
    expect = "yuv420p10le" if can_encode("libx264", "yuv420p10le") else "yuv420p"
    assert out.pix_fmt == expect
    for a, b in zip(out.frames, src.frames):
        assert a.dtype == np.uint16
        assert mean_abs_diff(a, b) / 257 < 1.0  # within a level on the 8-bit scale
    if expect == "yuv420p10le":
        # The pipeline carried more than 8 bits: the ramp keeps its fine steps.
        assert _luma_levels(clip.path, h // 2, w) >= 20
        assert _luma_levels(tmp_path / "out.mp4", h // 2, w) >= 16


def test_enhancer_keeps_dtype_and_computes_gain_exactly() -> None:
    rng = np.random.default_rng(1)
    enh = FrameEnhancer(Gain(), device=torch.device("cpu"))
    for dtype, peak in ((np.uint8, 255), (np.uint16, 65535)):
        frames = rng.integers(0, peak + 1, (3, 20, 24, 3)).astype(dtype)
        out = enh(list(frames))
        assert out.dtype == dtype and out.shape == frames.shape
        np.testing.assert_array_equal(out, np.minimum(frames.astype(np.int64) * 2, peak).astype(dtype))


# --- 5. colour ----------------------------------------------------------------------------------

PATCHES = np.array(
    [
        [[220, 20, 20], [20, 200, 30], [30, 30, 210], [220, 210, 30]],
        [[30, 200, 210], [210, 40, 200], [128, 128, 128], [60, 40, 20]],
    ],
    dtype=np.uint8,
)  # 2 x 4 patches of 32 x 32 pixels
RED = (0, 0)

KR_KB = {"601": (0.299, 0.114), "709": (0.2126, 0.0722)}


def _patch_frame() -> np.ndarray:
    return np.repeat(np.repeat(PATCHES, 32, axis=0), 32, axis=1)


def _yuv_to_rgb(path: Path, matrix: str, full_range: bool) -> np.ndarray:
    """First frame's YUV planes -> RGB with textbook formulas (no swscale)."""
    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
        planes = []
        for p in f.planes:
            a = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width].astype(np.float64)
            planes.append(a)
    y, u, v = planes
    u = np.repeat(np.repeat(u, 2, 0), 2, 1)[: y.shape[0], : y.shape[1]]
    v = np.repeat(np.repeat(v, 2, 0), 2, 1)[: y.shape[0], : y.shape[1]]
    if full_range:
        yy, cb, cr = y / 255, (u - 128) / 255, (v - 128) / 255
    else:
        yy, cb, cr = (y - 16) / 219, (u - 128) / 224, (v - 128) / 224
    kr, kb = KR_KB[matrix]
    r = yy + 2 * (1 - kr) * cr
    b = yy + 2 * (1 - kb) * cb
    g = (yy - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.stack([r, g, b], -1) * 255, 0, 255)


def _patch_centres(rgb: np.ndarray) -> np.ndarray:
    """Mean colour of the central 16 x 16 pixels of each patch: 2 x 4 x 3."""
    out = np.zeros((2, 4, 3))
    for i in range(2):
        for j in range(4):
            out[i, j] = rgb[i * 32 + 8 : i * 32 + 24, j * 32 + 8 : j * 32 + 24].reshape(-1, 3).mean(0)
    return out


COLOUR_CASES = {
    # name: (colorspace, color_range, primaries, trc, matrix of the colorspace)
    "bt601-smpte170m": (6, 1, 6, 6, "601"),
    "bt601-bt470bg": (5, 1, 5, 6, "601"),
    "bt709": (1, 1, 1, 1, "709"),
    "bt709-full-range": (1, 2, 1, 1, "709"),
}


@pytest.mark.parametrize("case", list(COLOUR_CASES))
def test_colour_matrix_range_and_tags_are_kept(tmp_path: Path, case: str) -> None:
    cs, rng, prim, trc, matrix = COLOUR_CASES[case]
    rgb = _patch_frame()
    clip = write_video(
        tmp_path / "in.mp4", [rgb] * 3, colorspace=cs, color_range=rng, color_primaries=prim, color_trc=trc
    )
    src = read_video(clip.path)
    assert (src.colorspace, src.color_range, src.color_primaries, src.color_trc) == (cs, rng, prim, trc)
    # The input itself is right (independent decode with its own tags).
    assert np.abs(_patch_centres(_yuv_to_rgb(clip.path, matrix, rng == 2)) - PATCHES).max() < 3

    run(clip.path, tmp_path / "out.mp4")
    out = read_video(tmp_path / "out.mp4")
    assert (out.colorspace, out.color_range, out.color_primaries, out.color_trc) == (cs, rng, prim, trc)
    with av.open(str(tmp_path / "out.mp4")) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc) == (cs, rng, prim, trc)
    # Decoded with the output's own tags.
    out_matrix = {1: "709", 5: "601", 6: "601"}[out.colorspace]
    decoded = _patch_centres(_yuv_to_rgb(tmp_path / "out.mp4", out_matrix, out.color_range == 2))
    # Two swscale round trips (vidlight's decode and encode) cost a few levels; a wrong matrix
    # or range costs far more (see the next test).
    assert np.abs(decoded - PATCHES).max() < 5, np.abs(decoded - PATCHES).max()


def _planes(path: Path) -> list[np.ndarray]:
    """The first frame's Y, U, V planes as float64 (any bit depth)."""
    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
        dtype = np.uint16 if f.format.components[0].bits > 8 else np.uint8
        return [
            np.frombuffer(p, dtype).reshape(p.height, p.line_size // dtype().itemsize)[:, : p.width].astype(np.float64)
            for p in f.planes
        ]


@pytest.mark.parametrize("bits", [8, 10])
def test_decoded_colours_are_unbiased(tmp_path: Path, bits: int) -> None:
    """A dark natural-looking frame reads back at its true level in every channel: swscale's fast
    path reads about 1 level low (G 1.3), which a 5x brightening turns into a magenta cast."""
    rng = np.random.default_rng(3)
    smooth = cv2.resize(rng.uniform(0, 1, (6, 8, 3)), (128, 96), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    scale = 65535 if bits > 8 else 255
    rgb = (smooth**2.2 * 0.25 * scale).round().astype(np.uint16 if bits > 8 else np.uint8)  # mean ~15 of 255
    codec, ext, options = _ten_bit_codec() if bits > 8 else ("libx264", "mp4", {"qp": "0"})
    clip = write_video(
        tmp_path / f"in.{ext}",
        [rgb],
        codec=codec,
        options=options,
        colorspace=1,
        color_range=1,
        color_primaries=1,
        color_trc=1,
        pix_fmt="yuv420p10le" if bits > 8 else "yuv420p",
    )
    y, u, v = _planes(clip.path)
    top = 2**bits / 256  # 8-bit levels to this depth's
    u = np.repeat(np.repeat(u, 2, 0), 2, 1)[: y.shape[0], : y.shape[1]]
    v = np.repeat(np.repeat(v, 2, 0), 2, 1)[: y.shape[0], : y.shape[1]]
    yy, cb, cr = (y / top - 16) / 219, (u / top - 128) / 224, (v / top - 128) / 224
    kr, kb = KR_KB["709"]
    r, b = yy + 2 * (1 - kr) * cr, yy + 2 * (1 - kb) * cb
    g = (yy - kr * r - kb * b) / (1 - kr - kb)
    truth = np.clip(np.stack([r, g, b], -1), 0, 1).mean(axis=(0, 1)) * 255
    src = FileSource(clip.path)
    frame = next(item for item in src if hasattr(item, "rgb"))
    src.close()
    got = frame.rgb.astype(np.float64).mean(axis=(0, 1)) / (257 if bits > 8 else 1)
    assert truth.min() > 5
    assert np.abs(got - truth).max() < 0.1, (got, truth)


def test_colour_check_is_sensitive_to_the_matrix(tmp_path: Path) -> None:
    """Sanity: reading BT.601 samples with the BT.709 matrix is clearly wrong on a saturated patch."""
    clip = write_video(
        tmp_path / "in.mp4", [_patch_frame()], colorspace=6, color_range=1, color_primaries=6, color_trc=6
    )
    right = _patch_centres(_yuv_to_rgb(clip.path, "601", False))
    wrong = _patch_centres(_yuv_to_rgb(clip.path, "709", False))
    assert np.abs(right[RED] - PATCHES[RED]).max() < 3
    assert np.abs(wrong[RED] - PATCHES[RED]).max() > 15


def test_untagged_input_gets_the_sd_guess_consistently(tmp_path: Path) -> None:
    """Untagged SD video is read as BT.601 limited range and the output says so."""
    rgb = _patch_frame()
    clip = write_video(tmp_path / "in.mkv", [rgb] * 2, colorspace=None)  # encoded with swscale's default, BT.601
    assert read_video(clip.path).colorspace == 2  # unspecified
    run(clip.path, tmp_path / "out.mkv")
    out = read_video(tmp_path / "out.mkv")
    assert out.colorspace in (5, 6) and out.color_range == 1
    assert np.abs(_patch_centres(_yuv_to_rgb(tmp_path / "out.mkv", "601", False)) - PATCHES).max() < 4


# The pipeline's conversions go through swscale's planar RGB (OpenCV interleaves the planes);
# swscale's packed RGB readers and writers are another code path of its own, the reference here.
CONVERSION_FORMATS = [
    *("yuv420p", "yuvj420p", "yuv422p", "yuv444p", "nv12", "yuv420p10le", "p010le", "gray"),
    *("bgr24", "gbrp", "gbrp10le", "gbrp12le", "gbrp16le", "x2rgb10le"),
]


@pytest.mark.parametrize("fmt", CONVERSION_FORMATS)
@pytest.mark.parametrize("size", [(64, 48), (33, 17)])
def test_decoding_to_rgb_equals_swscales_packed_rgb(fmt: str, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(5)
    w, h = size
    picture = av.VideoFrame.from_ndarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), format="rgb24")
    for matrix, colour_range in [(1, 1), (5, 2), (9, 1), (7, 2)]:
        frame = picture.reformat(format=fmt, dst_colorspace=matrix, dst_color_range=colour_range)
        bits = max(c.bits for c in frame.format.components)
        info = VideoInfo(w, h, Fraction(1, 25), None, 0, None, matrix, matrix, colour_range, 1, 1, bits, 0, "h264")
        packed = frame.to_ndarray(
            format="rgb48le" if bits > 8 else "rgb24",
            src_colorspace=matrix,
            src_color_range=colour_range,
            dst_color_range=ColorRange.JPEG,
            interpolation=ROUNDED,
        )
        got = frame_to_rgb(frame, info)
        assert got.dtype == packed.dtype and got.shape == packed.shape
        np.testing.assert_array_equal(got, packed, err_msg=f"{fmt} matrix {matrix} range {colour_range}")


# (8-bit RGB into 10-bit 4:2:0, which the sink never does, is left out: swscale itself gives
# one of two results for it, from packed as from planar input.)
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p", "nv12", "gbrp"])
@pytest.mark.parametrize("size", [(64, 48), (34, 18)])
def test_encoding_from_rgb_equals_swscales_packed_reader(tmp_path: Path, pix_fmt: str, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(6)
    w, h = size
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    sink = FileSink(
        tmp_path / "out.mkv", FileSource(simple_clip(tmp_path / "in.mp4", width=w, height=h, n=1).path).info
    )
    try:
        for matrix, colour_range in [(1, 1), (5, 2), (9, 2)]:
            sink.pix_fmt = pix_fmt
            sink.info = VideoInfo(**{**sink.info.__dict__, "matrix": matrix, "color_range": colour_range})
            got = sink._to_frame(rgb).reformat(
                format=pix_fmt, src_color_range=ColorRange.JPEG, dst_colorspace=matrix, dst_color_range=colour_range
            )
            want = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format=pix_fmt, src_color_range=ColorRange.JPEG, dst_colorspace=matrix, dst_color_range=colour_range
            )
            components = {"nv12": (1, 2)}.get(pix_fmt, (1, 1, 1))
            assert len(got.planes) == len(want.planes) == len(components)
            for a, b, n in zip(got.planes, want.planes, components):
                np.testing.assert_array_equal(plane_samples(a, np.uint8, n), plane_samples(b, np.uint8, n))
    finally:
        sink.close(complete=False)


# --- 6. rotation --------------------------------------------------------------------------------


@pytest.mark.parametrize("rotation", [90, 180, -90])
def test_display_rotation_is_kept(tmp_path: Path, rotation: int) -> None:
    clip = simple_clip(tmp_path / "in.mp4", width=64, height=32, n=4, rotation=rotation)
    src = read_video(clip.path)
    assert src.rotations[0] != 0
    run(clip.path, tmp_path / "out.mp4")
    out = read_video(tmp_path / "out.mp4")
    assert out.rotations == src.rotations
    # Pixels are stored as they were (not rotated as well as tagged).
    assert (out.width, out.height) == (64, 32)
    assert mean_abs_diff(out.frames[0], src.frames[0]) < 2.0


# --- 7. the model is applied to every frame ------------------------------------------------------


def test_gain_model_is_applied_to_every_frame(tmp_path: Path) -> None:
    # Darker gradients, so that x2 mostly stays in range but some of it clips.
    frames = [(gradient(96, 64, i).astype(np.float64) * 0.7).astype(np.uint8) for i in range(9)]
    clip = write_video(tmp_path / "in.mp4", frames)
    src = read_video(clip.path)
    stats = run(clip.path, tmp_path / "out.mp4", model=Gain(), batch_size=4)  # batches of 4, 4, 1
    out = read_video(tmp_path / "out.mp4")
    assert stats.frames == len(out.frames) == 9
    for i in range(9):
        expect = np.minimum(src.frames[i].astype(np.int64) * 2, 255)
        assert mean_abs_diff(gain_matched(out.frames[i], expect), expect) < 3.0, f"frame {i}"
        assert mean_abs_diff(out.frames[i], src.frames[i]) > 30, f"frame {i} was not enhanced"


# --- strips (receptive_halo) ---------------------------------------------------------------------


def test_strips_equal_whole_frame_result() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (4, 200, 1000, 3), dtype=np.uint8)
    model = BoxBlur()
    with torch.no_grad():
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() * (1.0 / 255)
        whole = quantise(model(x))
    enh = FrameEnhancer(model, device=torch.device("cpu"))
    assert 160_000 // 1000 < 200  # two strips per frame: a seam at row 160
    np.testing.assert_array_equal(enh(list(frames)), whole)

    # Sanity: the comparison sees strip seams when the halo is too small.
    class NoHalo(BoxBlur):
        receptive_halo = 0

    seams = np.nonzero((FrameEnhancer(NoHalo(), device=torch.device("cpu"))(frames) != whole).any(axis=(0, 2, 3)))[0]
    assert len(seams) > 0 and set(seams) <= {159, 160}


class ThreadRecorder(nn.Module):
    """Doubles its input (a global model: no receptive_halo) and records each call's thread
    and frame count; with ``together``, each call waits until that many calls are running."""

    def __init__(self, together: int = 1) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []
        self.barrier = threading.Barrier(together, timeout=30) if together > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((threading.current_thread().name, x.shape[0]))
        if self.barrier is not None:
            self.barrier.wait()  # a share that ran alone would time out here
        return x * 2 - x.mean(dim=(1, 2, 3), keepdim=True)  # each frame on its own


def test_global_models_run_a_share_of_the_batch_per_worker() -> None:
    """Without strips, a model whose frames are independent runs whole frames on the CPU pool, a
    share of the batch per worker, with the result of one call on the whole batch; a model that
    averages statistics frame after frame (KinD, MBLLEN) is not split."""
    frames = np.random.default_rng(5).integers(0, 200, (4, 24, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() * (1.0 / 255)
        whole = quantise(torch.cat([ThreadRecorder()(x[i : i + 1]) for i in range(4)]))

    class Ordered(ThreadRecorder):
        statistics_smoother = None

    model, ordered = ThreadRecorder(together=2), Ordered()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(2)  # the pool takes torch's thread count
    try:
        enhancer = FrameEnhancer(model, device=torch.device("cpu"))
        in_order = FrameEnhancer(ordered, device=torch.device("cpu"))
    finally:
        torch.set_num_threads(threads_before)
    np.testing.assert_array_equal(enhancer(list(frames)), whole)
    threads = {name for name, _ in model.calls}
    assert len(threads) == enhancer.workers == 2 and all(name.startswith("vidlight-strip") for name in threads)
    assert sorted(n for _, n in model.calls) == [2, 2]
    in_order(list(frames))
    assert ordered.calls == [(threading.current_thread().name, 4)]


def test_a_single_frame_of_a_global_model_gets_torchs_threads() -> None:
    """With the pool idle (one frame: nothing to share), torch's own threads run the frame, as
    many as the pool has, even inside the runner's single-threaded block."""

    class Threads(nn.Module):
        seen: list[int] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.seen.append(torch.get_num_threads())
            return x

    model = Threads()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        enhancer = FrameEnhancer(model, device=torch.device("cpu"))
        with single_threaded_ops():  # as the runner runs it
            enhancer([np.zeros((8, 8, 3), np.uint8)])
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads_before)
    assert model.seen == [2]


def test_the_runners_block_runs_opencv_on_the_calling_thread_and_restores_it() -> None:
    """Inside the runner's block OpenCV runs each call on its caller's thread (the stages and the
    strip pool are the parallelism); afterwards the process's setting is back."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        with single_threaded_ops():
            assert cv2.getNumThreads() == 1 and torch.get_num_threads() == 1
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)


def test_a_run_holds_opencv_and_torch_to_one_thread_and_restores_them(tmp_path: Path) -> None:
    """During a run with the strip pool, the model (on the pool's workers) and the smoothing see
    OpenCV and torch on one thread each; after the run both settings are what they were."""
    import cv2

    seen: list[tuple[int, int]] = []

    class Recording(BoxBlur):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((cv2.getNumThreads(), torch.get_num_threads()))
            return super().forward(x)

    clip = simple_clip(tmp_path / "in.mp4", width=64, height=48, n=8)
    threads_before, cv2_before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    try:
        run(clip.path, tmp_path / "out.mp4", model=Recording(), batch_size=4)
        assert seen and set(seen) == {(1, 1)}
        assert cv2.getNumThreads() == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads_before)
        cv2.setNumThreads(cv2_before)


def test_an_output_batch_is_handed_out_again_only_once_nothing_holds_it() -> None:
    from vidlight.pipeline.enhancer import OutputBatches

    batches = OutputBatches(keep=2)
    first = batches.take((2, 4, 6, 3), np.uint16)
    frame = list(first)[1]  # a frame of it, still with the smoothing or the encoder
    del first
    second = batches.take((2, 4, 6, 3), np.uint16)
    assert not np.shares_memory(second, frame)
    del frame
    again = batches.take((2, 4, 6, 3), np.uint16)  # the first batch: nothing holds it now
    assert again is not second and again.shape == (2, 4, 6, 3) and again.dtype == np.uint16
    held = [again, second]
    third = batches.take((2, 4, 6, 3), np.uint16)  # both held: a new one, not kept (keep=2)
    assert not any(np.shares_memory(third, h) for h in held)
    del third, held, again, second
    other = batches.take((1, 4, 6, 3), np.uint8)  # another size: the free ones of the old go
    assert other.shape == (1, 4, 6, 3) and other.dtype == np.uint8
    assert [a.shape for a in batches._arrays] == [(1, 4, 6, 3)]


def test_reused_output_batches_give_the_same_frames(tmp_path: Path) -> None:
    """Every pixel of a reused batch is written again, and a frame a user keeps is never
    written over: SCI's strips, with smoothing (the file) and without it (the iterator, whose
    frames are then the batches' own), against runs whose batches are all new memory."""
    from vidlight.pipeline.iterate import enhanced_frames

    clip = simple_clip(tmp_path / "in.mp4", width=96, height=64, n=16)
    files, kept, reused = [], [], []
    threads_before = torch.get_num_threads()
    torch.set_num_threads(2)  # a pool of two workers: the strips, which take the batches, run on it
    try:
        for keep in (0, 6):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(enhancer_module.OutputBatches, "__init__", _keeping(keep))
                take = enhancer_module.OutputBatches.take
                handed: list[bool] = []  # whether each batch handed out was a kept one

                def counting(self, shape, dtype, take=take, handed=handed):
                    kept_before = [id(a) for a in self._arrays]  # alive, so their ids are theirs
                    array = take(self, shape, dtype)
                    handed.append(id(array) in kept_before)
                    return array

                patch.setattr(enhancer_module.OutputBatches, "take", counting)
                out_path = tmp_path / f"out{keep}.mp4"
                enhance_video(clip.path, out_path, model="sci", batch_size=2, preset="ultrafast", progress=False)
                files.append(read_video(out_path).frames)
                frames = [f.image for f in enhanced_frames(str(clip.path), model="sci", batch_size=2, smooth=False)]
                kept.append([f.copy() for f in frames] if keep == 0 else frames)  # kept as yielded
                reused.append(sum(handed))
    finally:
        torch.set_num_threads(threads_before)
    assert reused[0] == 0 and reused[1] > 0  # the second runs did reuse batches
    for runs in (files, kept):
        assert len(runs[0]) == len(runs[1]) == 16
        for a, b in zip(*runs):
            np.testing.assert_array_equal(a, b)


def _keeping(keep: int):
    original = enhancer_module.OutputBatches.__init__

    def init(self, keep_: int = keep) -> None:
        original(self, keep)

    return init


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
@pytest.mark.parametrize("setting", [None, "3", "0"])
def test_strip_workers_run_below_the_callers_priority(monkeypatch: pytest.MonkeyPatch, setting: str | None) -> None:
    """The model runs on the pool's workers at a nice value STRIP_NICENESS above the caller's
    (capped at 19), or VIDLIGHT_STRIP_NICENESS above it where that is set; the caller's own
    stays as it was."""
    seen: list[int] = []

    class Recording(BoxBlur):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return super().forward(x)

    if setting is None:
        monkeypatch.delenv("VIDLIGHT_STRIP_NICENESS", raising=False)
    else:
        monkeypatch.setenv("VIDLIGHT_STRIP_NICENESS", setting)
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    threads_before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        enhancer = FrameEnhancer(Recording(), device=torch.device("cpu"))
        assert enhancer.workers == 2
        enhancer([np.zeros((48, 64, 3), np.uint8)] * 4)
    finally:
        torch.set_num_threads(threads_before)
    step = enhancer_module.STRIP_NICENESS if setting is None else int(setting)
    assert seen and set(seen) == {min(19, caller + step)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller


def test_strip_model_through_the_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A halo model on a clip big enough for strips gives the whole-frame result, seams included."""
    # 320 x 240 frames in strips of 32000 // 320 = 100 rows: seams at rows 100 and 200.
    monkeypatch.setattr(enhancer_module, "_STRIP_PIXELS", 32_000)
    clip = simple_clip(tmp_path / "in.mp4", width=320, height=240, n=4)
    src = read_video(clip.path)
    run(clip.path, tmp_path / "out.mp4", model=BoxBlur(), batch_size=4, crf=0)
    out = read_video(tmp_path / "out.mp4")
    with torch.no_grad():
        x = torch.from_numpy(np.stack(src.frames)).permute(0, 3, 1, 2).float() * (1.0 / 255)
        expect = quantise(BoxBlur()(x))
    assert len(out.frames) == 4
    for a, b in zip(out.frames, expect):
        # Rows 0-1 and 238-239 are skipped: the blur's dark zero-padded edge shares chroma with
        # its neighbour row in 4:2:0, which costs levels there whatever the pipeline does.
        per_row = np.abs(a.astype(int) - b.astype(int))[2:-2].mean(axis=(1, 2))
        assert per_row.max() < 3.0, int(per_row.argmax()) + 2


# --- 8. bounded memory -----------------------------------------------------------------------------


def test_memory_is_bounded_with_a_slow_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long clip and a slow encoder: the reader must not run ahead by more than the queues hold."""
    n, batch = 300, 4
    clip = simple_clip(tmp_path / "in.mkv", n=n, options={"preset": "ultrafast", "crf": "30"})
    lock = threading.Lock()
    counts = {"decoded": 0, "written": 0, "lead": 0}

    original_iter, original_write = FileSource.__iter__, FileSink.write

    def counting_iter(self):
        for item in original_iter(self):
            if not isinstance(item, av.Packet):
                with lock:
                    counts["decoded"] += 1
                    counts["lead"] = max(counts["lead"], counts["decoded"] - counts["written"])
            yield item

    def slow_write(self, rgb, pts):
        time.sleep(0.002)
        original_write(self, rgb, pts)
        with lock:
            counts["written"] += 1

    monkeypatch.setattr(FileSource, "__iter__", counting_iter)
    monkeypatch.setattr(FileSink, "write", slow_write)
    stats = run(clip.path, tmp_path / "out.mkv", batch_size=batch)
    assert stats.frames == n == counts["written"]
    # decoded queue (2 batches) + batch being built + the model's batch + smoothing queue (1) +
    # batch being smoothed + encoded queue (2) + batch being written + the smoother's look-ahead:
    # about 9 batches. Unbounded, the lead would approach n.
    assert batch <= counts["lead"] <= 10 * batch, counts
    assert len(read_video(tmp_path / "out.mkv").frames) == n


def test_the_smoothing_runs_beside_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temporal stage smooths a batch on its own thread while the model takes the next: the
    first batch's smoothing waits until the model has started the second, which a pipeline
    running them one after the other would never do (it would wait out the timeout)."""
    clip = simple_clip(tmp_path / "in.mp4", n=12)
    second_batch = threading.Event()
    calls: list[int] = []
    waited: list[bool] = []
    threads: set[str] = set()
    enhance, push = FrameEnhancer.__call__, TemporalSmoother.push

    def model_call(self, frames, *args, **kwargs):
        calls.append(len(frames))
        if len(calls) == 2:
            second_batch.set()
        return enhance(self, frames, *args, **kwargs)

    def smoothing(self, *args, **kwargs):
        threads.add(threading.current_thread().name)
        if not waited:
            waited.append(second_batch.wait(timeout=10))
        return push(self, *args, **kwargs)

    monkeypatch.setattr(FrameEnhancer, "__call__", model_call)
    monkeypatch.setattr(TemporalSmoother, "push", smoothing)
    stats = run(clip.path, tmp_path / "out.mp4", batch_size=4)
    assert stats.frames == 12 and calls == [4, 4, 4]
    assert waited == [True] and threads == {"vidlight-smooth"}


def test_a_smoothing_reset_waits_for_the_batches_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reconnect restarts the smoother only after the old stream's frames are smoothed, and
    the caller goes on (to scan the new stream's frames) only after that restart."""
    import queue

    from vidlight.pipeline.batching import SmoothingThread
    from vidlight.pipeline.workers import END, FrameTiming

    release, pushing = threading.Event(), threading.Event()
    push = TemporalSmoother.push

    def held_push(self, *args, **kwargs):
        pushing.set()
        assert release.wait(timeout=10)
        return push(self, *args, **kwargs)

    monkeypatch.setattr(TemporalSmoother, "push", held_push)
    smoother, out, errors = TemporalSmoother(), queue.Queue(), []
    smoothing = SmoothingThread(smoother, out, errors)
    frames = [np.full((16, 16, 3), 40 + i, np.uint8) for i in range(4)]
    smoother.scan(frames)
    tags = [FrameTiming(i, None) for i in range(4)]
    smoothing.put(frames, [f.astype(np.uint16) * 257 for f in frames], [i / 30 for i in range(4)], tags, [], end=True)
    resetting = threading.Thread(target=smoothing.reset)
    resetting.start()
    assert pushing.wait(timeout=10)
    resetting.join(timeout=0.3)
    assert resetting.is_alive()  # the old stream's batch is still being smoothed
    release.set()
    resetting.join(timeout=10)
    assert not resetting.is_alive() and not errors
    smoothing.close()
    written = [out.get() for _ in range(2)]
    assert [len(written[0][0]), written[1]] == [4, END]


def test_a_failure_in_the_smoothing_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=12)

    def broken(self, *args, **kwargs):
        raise VidlightError("smoothing failed")

    monkeypatch.setattr(TemporalSmoother, "push", broken)
    out = tmp_path / "out.mp4"
    with pytest.raises(VidlightError, match="smoothing failed"):
        run(clip.path, out, batch_size=4)
    assert not out.exists() and no_partial(out)


# --- 10. interruption and failure ------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_ctrl_c_keeps_a_playable_file_with_the_finished_frames(tmp_path: Path, ext: str) -> None:
    clip = simple_clip(tmp_path / f"in.{ext}", n=20, audio=True)
    src = read_video(clip.path)
    out_path = tmp_path / f"out.{ext}"
    batch, n = 2, 3
    with pytest.raises(Interrupted, match=f"^interrupted after {batch * (n - 1)} frames: .*out.{ext} holds them"):
        run(clip.path, out_path, model=InterruptOn(batch * (n - 1)), batch_size=batch)
    assert out_path.exists() and no_partial(out_path)
    out = read_video(out_path)  # decodes to the end
    assert len(out.frames) == batch * (n - 1)
    np.testing.assert_allclose(out.pts_seconds, src.pts_seconds[: batch * (n - 1)], atol=0.5 / 30)
    assert_same_pictures(out.frames, src.frames)
    with av.open(str(out_path)) as c:  # every stream demuxes and decodes without error
        for _ in c.decode(*c.streams.video, *c.streams.audio):
            pass


def test_ctrl_c_before_any_frame_leaves_nothing(tmp_path: Path) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=6)
    out_path = tmp_path / "out.mp4"
    with pytest.raises(Interrupted, match="^interrupted after 0 frames: nothing was written$"):
        run(clip.path, out_path, model=InterruptOn(0), batch_size=2)
    assert not out_path.exists() and no_partial(out_path)


def _signalling_close(monkeypatch: pytest.MonkeyPatch, times: int) -> None:
    """FileSink.close sends the process SIGINT ``times`` times first: Ctrl-C while the output is
    being finished (the run's last moments)."""
    import signal

    original = FileSink.close
    sent = []

    def close(self, *, complete: bool = True) -> None:
        if hasattr(self, "container") and not sent:
            sent.append(times)
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        original(self, complete=complete)

    monkeypatch.setattr(FileSink, "close", close)


def test_ctrl_c_while_the_output_is_finished_waits_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    clip = simple_clip(tmp_path / "in.mp4", n=12)
    out_path = tmp_path / "out.mp4"
    handler = signal.getsignal(signal.SIGINT)
    _signalling_close(monkeypatch, 1)
    with pytest.raises(Interrupted, match="^interrupted after 12 frames: .*out.mp4 holds them, complete and playable"):
        run(clip.path, out_path, batch_size=4)
    assert signal.getsignal(signal.SIGINT) is handler
    assert out_path.exists() and no_partial(out_path)
    assert len(read_video(out_path).frames) == 12


@pytest.mark.parametrize("first", ["while finishing", "in the run"])
def test_a_second_ctrl_c_while_the_output_is_finished_abandons_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    """A second Ctrl-C as the stages wind down (the smoothing handing its end to the
    encoder), the first one then too or earlier in the run: the output is closed unfinished
    and its partial file removed, and the handlers are put back."""
    import signal

    from vidlight.pipeline.batching import SmoothingThread

    clip = simple_clip(tmp_path / "in.mp4", n=12)
    out_path = tmp_path / "out.mp4"
    handler = signal.getsignal(signal.SIGINT)
    original = SmoothingThread.close

    def close(self) -> None:
        for _ in range(2 if first == "while finishing" else 1):
            os.kill(os.getpid(), signal.SIGINT)
        original(self)

    monkeypatch.setattr(SmoothingThread, "close", close)
    model = InterruptOn(4) if first == "in the run" else None
    with pytest.raises(Interrupted, match=r"^interrupted after \d+ frames: a second Ctrl-C abandoned .*out.mp4"):
        run(clip.path, out_path, model=model, batch_size=4)
    assert signal.getsignal(signal.SIGINT) is handler
    assert not out_path.exists() and no_partial(out_path)


def test_ctrl_c_as_the_run_starts_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the output's opening and the run's own handling (its threads starting)."""
    import vidlight.pipeline.runner as runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    clip = simple_clip(tmp_path / "in.mp4", n=6)
    out_path = tmp_path / "out.mp4"
    monkeypatch.setattr(runner, "SmoothingThread", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(clip.path, out_path, batch_size=2)
    assert not out_path.exists() and no_partial(out_path)


def test_ctrl_c_in_a_folder_batch_removes_the_video_it_cut_short(tmp_path: Path) -> None:
    from vidlight.pipeline.folder import enhance_folder

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        simple_clip(folder / name, n=6)
    out = tmp_path / "out"
    with pytest.raises(
        Interrupted,
        match=r"^interrupted after 8 frames: 1 of 3 videos are complete .*b\.mp4, cut "
        r"short, was removed\); run the same command again",
    ):
        enhance_folder(
            folder, out, model=InterruptOn(8), batch_size=2, preset="ultrafast", strength=1.0, progress=False
        )
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4"]  # b would otherwise be skipped as finished


def test_a_truncated_recording_is_written_as_far_as_it_goes_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file cut off mid-write (its index at the front, as cameras and faststart files have
    it) decodes up to the cut: those frames are written, playable, and the user is told."""
    clip = write_video(
        tmp_path / "full.mp4",
        [gradient(64, 48, i) for i in range(60)],
        container_options={"movflags": "faststart"},
    )
    data = clip.path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    out_path = tmp_path / "out.mp4"
    caplog.set_level("WARNING", logger="vidlight")
    stats = run(cut, out_path)
    assert 0 < stats.frames < 57
    assert len(read_video(out_path).frames) == stats.frames and no_partial(out_path)
    assert any(f"ended after {stats.frames} of the 60 frames" in r.getMessage() for r in caplog.records)
    caplog.clear()
    run(clip.path, tmp_path / "whole.mp4")  # a whole file: no such warning
    assert not any("ended after" in r.getMessage() for r in caplog.records)


def test_failure_part_way_leaves_nothing(tmp_path: Path) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=12)
    out_path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="model exploded"):
        run(clip.path, out_path, model=FailOn(4), batch_size=2)
    assert not out_path.exists() and no_partial(out_path)


def test_writer_failure_is_reported_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=40)
    original_write = FileSink.write

    def failing_write(self, rgb, pts):
        if self.frames_written == 5:
            raise av.error.FFmpegError(5, "disk on fire")
        original_write(self, rgb, pts)

    monkeypatch.setattr(FileSink, "write", failing_write)
    out_path = tmp_path / "out.mp4"
    with pytest.raises(VidlightError):
        run(clip.path, out_path, batch_size=2)
    assert not out_path.exists() and no_partial(out_path)


def test_failure_to_finalise_the_output_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=6)
    real_open = av.open

    class TrailerFails:  # e.g. the disk fills up while the index is written
        def __init__(self, container) -> None:
            self._c, self._failed = container, False

        def __getattr__(self, name: str):
            return getattr(self._c, name)

        def close(self) -> None:
            if not self._failed:
                self._failed = True
                raise av.error.FFmpegError(28, "No space left on device")
            self._c.close()

    def open_(file, mode="r", *args, **kwargs):
        container = real_open(file, mode, *args, **kwargs)
        return TrailerFails(container) if mode == "w" else container

    monkeypatch.setattr(av, "open", open_)
    out_path = tmp_path / "out.mp4"
    try:
        with pytest.raises(VidlightError):
            run(clip.path, out_path)
    finally:
        monkeypatch.undo()
    assert not out_path.exists() and no_partial(out_path)


# --- guards --------------------------------------------------------------------------------------------


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=4)
    out_path = tmp_path / "out.mp4"
    out_path.write_bytes(b"keep me")
    with pytest.raises(VidlightError, match=r"already exists; .*\(overwrite=True from Python\)"):
        run(clip.path, out_path)  # the message says how, for the command line and for Python
    assert out_path.read_bytes() == b"keep me"
    run(clip.path, out_path, overwrite=True)
    assert len(read_video(out_path).frames) == 4


def test_output_must_differ_from_input(tmp_path: Path) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=4)
    before = clip.path.read_bytes()
    with pytest.raises(VidlightError, match="different file"):
        run(clip.path, clip.path, overwrite=True)
    assert clip.path.read_bytes() == before


def test_sink_scales_frames_whose_size_changed_mid_stream(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clip = simple_clip(tmp_path / "in.mp4", width=64, height=48, n=2)
    info = FileSource(clip.path).info
    sink = FileSink(tmp_path / "out.mp4", info)
    grey = np.full((96, 128, 3), 128, np.uint8)  # twice the size, e.g. after a camera reconfigures
    with caplog.at_level(logging.WARNING, logger="vidlight"):
        sink.write(np.full((48, 64, 3), 128, np.uint8), 0)
        sink.write(grey, 1)
    sink.close()
    out = read_video(tmp_path / "out.mp4")
    assert [f.shape for f in out.frames] == [(48, 64, 3)] * 2
    assert abs(float(out.frames[1].mean()) - 128) < 3
    assert "size changed" in caplog.text


def test_a_frame_of_another_shape_keeps_its_shape(tmp_path: Path) -> None:
    """A portrait picture after a landscape one (a folder of mixed photos into a video) is
    fitted into the frame with black borders, not stretched: its bright square stays square."""
    clip = simple_clip(tmp_path / "in.mp4", width=64, height=48, n=2)
    sink = FileSink(tmp_path / "out.mp4", FileSource(clip.path).info)
    portrait = np.zeros((96, 48, 3), np.uint8)
    portrait[24:48, 12:36] = 200  # a 24 x 24 square
    sink.write(np.full((48, 64, 3), 60, np.uint8), 0)
    sink.write(portrait, 1)
    sink.close()
    frame = read_video(tmp_path / "out.mp4").frames[1].mean(axis=2)
    rows, cols = np.flatnonzero(frame.max(axis=1) > 100), np.flatnonzero(frame.max(axis=0) > 100)
    # Scaled by a half into the middle 24 columns (20..43): a 12 x 12 square at rows 12..23.
    assert abs(len(rows) - 12) <= 2 and abs(len(cols) - 12) <= 2, (rows, cols)
    assert abs(cols.mean() - (20 + 6 + 12 / 2 - 0.5)) <= 1.5 and abs(rows.mean() - 17.5) <= 1.5
    assert frame[:, :18].max() < 30 and frame[:, 46:].max() < 30  # the borders are black


def test_fp16_on_cpu_warns_and_runs_fp32(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=2)
    with caplog.at_level(logging.WARNING, logger="vidlight"):
        enhance_video(clip.path, tmp_path / "out.mp4", model=Identity(), device="cpu", fp16=True, progress=False)
    assert "fp16 needs a CUDA device" in caplog.text
    assert len(read_video(tmp_path / "out.mp4").frames) == 2
