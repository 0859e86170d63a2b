"""The RTSP test harness itself works: cameras are readable, die, stall and come back, and a push
can be read back by an independent client. PyAV is the client throughout."""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from media import gradient, mean_abs_diff, read_video, write_video
from rtsp import RtspServer, RtspServerError, require_gstreamer, silent_tcp_server

TCP = {"rtsp_transport": "tcp"}
CLIP_SIZE = (96, 64)  # width, height


@pytest.fixture(autouse=True)
def _gstreamer() -> None:
    require_gstreamer()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """0.5 s of moving gradient at 30 fps: a camera read for longer than that must loop."""
    width, height = CLIP_SIZE
    path = tmp_path_factory.mktemp("rtsp") / "gradient.mp4"
    write_video(path, [gradient(width, height, i) for i in range(15)])
    return path


def read_frames(url: str, count: int, *, timeout: tuple[float, float] = (5, 5)) -> list[av.VideoFrame]:
    with av.open(url, options=TCP, timeout=timeout) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame)
            if len(frames) == count:
                return frames
    raise AssertionError(f"{url} ended after {len(frames)} frames")


def luma(frame: av.VideoFrame) -> np.ndarray:
    """The Y plane as decoded: no range or matrix conversion in the way."""
    assert frame.format.name == "yuv420p"
    return frame.to_ndarray()[: frame.height]


def first_frame_within(url: str, deadline_seconds: float) -> float:
    """Seconds until a new client decodes a frame from ``url``, retrying until the deadline."""
    began = time.monotonic()
    while True:
        try:
            read_frames(url, 1, timeout=(2, 2))
            return time.monotonic() - began
        except (av.error.FFmpegError, AssertionError):
            if time.monotonic() - began > deadline_seconds:
                raise


def test_camera_serves_the_clip_to_several_clients(clip: Path) -> None:
    reference = read_video(clip).frames
    with RtspServer(cameras={"/cam": clip}) as server:
        assert server.start_seconds < 10
        with (
            av.open(server.url("/cam"), options=TCP, timeout=(5, 5)) as first,
            av.open(server.url("/cam"), options=TCP, timeout=(5, 5)) as second,
        ):
            for container in (first, second):
                stream = container.streams.video[0]
                assert (stream.width, stream.height) == CLIP_SIZE
                frames = []
                for frame in container.decode(stream):
                    frames.append(frame)
                    if len(frames) == 45:
                        break
                assert all((f.width, f.height) == CLIP_SIZE for f in frames)
                # Each picture is one of the clip's (x264 at the server costs ~1 level): a torn or
                # half-decoded frame would be far from all of them.
                nearest = []
                for frame in frames:
                    distances = [mean_abs_diff(frame.to_ndarray(format="rgb24"), ref) for ref in reference]
                    assert min(distances) < 4
                    nearest.append(int(np.argmin(distances)))
                assert np.any(np.diff(nearest) < 0), f"the camera did not loop: {nearest}"


def test_real_dark_clip_as_camera(shared_dir: Path) -> None:
    path = shared_dir / "data" / "videos" / "nahianfariha_night_street_phone.mp4"  # 568x822, with audio
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        size = (stream.width, stream.height)
        file_means = [float(luma(f).mean()) for f in container.decode(stream)]
    with RtspServer(cameras={"/night": path}) as server:
        frames = read_frames(server.url("/night"), 30)
    assert all((f.width, f.height) == size for f in frames)
    for frame in frames:
        assert min(file_means) - 3 < luma(frame).mean() < max(file_means) + 3


def test_kill_then_restart_serves_again(clip: Path) -> None:
    with RtspServer(cameras={"/cam": clip}) as server:
        port = server.port
        container = av.open(server.url("/cam"), options=TCP, timeout=(5, 2))
        try:
            frames = container.decode(video=0)
            next(frames)
            server.kill()
            # The client sees the loss: the stream ends or raises, soon and without hanging.
            began = time.monotonic()
            with pytest.raises((av.error.FFmpegError, StopIteration)):
                while True:
                    next(frames)
            assert time.monotonic() - began < 2 + 3
        finally:
            container.close()
        with pytest.raises(av.error.FFmpegError):
            av.open(server.url("/cam"), options=TCP, timeout=(2, 2))

        server.restart()
        assert server.port == port
        assert first_frame_within(server.url("/cam"), 8) < 8


def test_pause_stalls_the_stream_until_the_read_timeout(clip: Path) -> None:
    read_timeout = 1.5
    with RtspServer(cameras={"/cam": clip}) as server:
        with av.open(server.url("/cam"), options=TCP, timeout=(5, read_timeout)) as container:
            frames = container.decode(video=0)
            for _ in range(3):
                next(frames)
            server.pause()
            began = time.monotonic()
            with pytest.raises(av.error.FFmpegError):
                for _ in frames:  # frames already in the socket buffer come first
                    pass
            stalled = time.monotonic() - began
        # Measured: FFmpeg's RTSP-over-TCP reader gives up after two read timeouts, not one
        # (PyAV 18 raises ExitError at 2.0 s for 1 s, 4.0 s for 2 s, 6.0 s for 3 s; FFmpeg's own
        # ``timeout`` option behaves the same), so the bound is 2 x timeout plus slack.
        assert read_timeout - 0.5 < stalled < 2 * read_timeout + 2
        server.resume()
        assert first_frame_within(server.url("/cam"), 8) < 8


def test_pushed_stream_is_readable_from_the_play_mount() -> None:
    """A PyAV publisher pushes a brightness ramp; an independent reader sees it, in order."""
    width, height, rate = 128, 96, 30
    lead_in, tail = 20, 235

    def picture(index: int, level: float) -> np.ndarray:
        # A moving sine over a whole period: its mean is ``level`` (no clipping for 30..225).
        x = np.arange(width)
        row = level + 25 * np.sin(2 * np.pi * (x / width + index / rate))
        y = np.repeat(row[None].clip(0, 255).round().astype(np.uint8), height, axis=0)
        return np.concatenate([y, np.full((height // 2, width), 128, np.uint8)])  # yuv420p, grey chroma

    ramp = [picture(60 + i, 40 + 3 * i) for i in range(60)]
    ramp_means = np.array([r[:height].mean() for r in ramp])
    seen: list[tuple[tuple[int, int], float]] = []
    reader_ready = threading.Event()
    reader_error: list[BaseException] = []

    def read(url: str) -> None:
        try:
            with av.open(url, options=TCP, timeout=(5, 5)) as container:
                for frame in container.decode(video=0):
                    mean = float(luma(frame).mean())
                    seen.append(((frame.width, frame.height), mean))
                    if abs(mean - lead_in) < 3:
                        reader_ready.set()
                    if mean > tail - 5 or len(seen) > 400:
                        return
        except BaseException as exc:  # noqa: BLE001  (reported by the main thread)
            reader_error.append(exc)
        finally:
            reader_ready.set()

    with RtspServer(records=["/in"]) as server:
        with av.open(server.url("/in"), "w", format="rtsp", options=TCP, timeout=(5, 5)) as out:
            stream = out.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"tune": "zerolatency", "preset": "ultrafast", "bf": "0", "g": str(rate)}
            reader = threading.Thread(target=read, args=(server.play_url("/in"),), daemon=True)
            began = time.monotonic()
            index = 0

            def push(picture_yuv: np.ndarray) -> None:
                nonlocal index
                frame = av.VideoFrame.from_ndarray(picture_yuv, format="yuv420p")
                frame.pts, frame.time_base = index, Fraction(1, rate)
                out.mux(stream.encode(frame))
                index += 1
                # Real-time pacing: the relay shows the latest picture at its own 30 fps.
                delay = began + index / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

            # Lead-in until the reader decodes it (it joins after 0.5 s of pushing), then the ramp.
            while not reader_ready.is_set() and time.monotonic() - began < 15:
                push(picture(index, lead_in))
                if index == rate // 2:
                    reader.start()
            for yuv in ramp:
                push(yuv)
            for _ in range(rate):
                push(picture(index, tail))
            out.mux(stream.encode(None))
        reader.join(10)

    assert not reader_error, reader_error
    assert seen, "the reader decoded nothing"
    assert {size for size, _ in seen} == {(width, height)}
    means = np.array([mean for _, mean in seen])
    distance = np.abs(means[:, None] - ramp_means[None, :])
    matched = np.flatnonzero(distance.min(axis=1) < 1.2)
    indices = distance[matched].argmin(axis=1)
    assert len(set(indices.tolist())) >= 45, f"saw {len(set(indices.tolist()))} of 60 ramp pictures"
    assert np.all(np.diff(indices) >= 0), f"ramp seen out of order: {indices.tolist()}"
    assert means.max() > tail - 5, "the tail after the ramp never arrived"


def test_start_failure_reports_the_servers_stderr(tmp_path: Path) -> None:
    server = RtspServer(cameras={"/cam": tmp_path / "missing.mp4"})
    with pytest.raises(RtspServerError, match="missing.mp4"):
        server.start()
    assert not server.running


def test_silent_tcp_server_times_out_an_open() -> None:
    with silent_tcp_server() as port:
        began = time.monotonic()
        with pytest.raises(av.error.FFmpegError):
            av.open(f"rtsp://127.0.0.1:{port}/cam", options=TCP, timeout=(1, 1))
        assert time.monotonic() - began < 1 + 3
