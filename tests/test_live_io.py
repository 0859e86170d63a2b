"""Live sources, image folders, open_source and the latest-frame queue.

A live camera is stood in for by an MPEG-TS clip served over HTTP from 127.0.0.1 at its
real-time pace (PyAV reads http://). Stopping and restarting that server on the same port
is a disconnection and a return; a server that accepts and never answers, or answers and
then goes silent, is a stall.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidlight.errors import MediaError, VidlightError
from vidlight.io.files import FileSource, Frame
from vidlight.io.live import ImageDirSource, LiveSource, Reconnected, classify, open_source, redact
from vidlight.pipeline.queues import LatestFrameQueue

from media import gradient, mean_abs_diff, read_video, simple_clip, write_video
from rtsp import closed_port

FPS = 25


class PacedHttpServer:
    """Serves ``payload`` over HTTP at a pace that makes it last ``seconds``, like a camera.

    ``stall_after_bytes``: send that much, then go silent with the connection open.
    ``respond=False``: accept connections and never answer.
    """

    def __init__(
        self, payload: bytes, *, seconds: float, stall_after_bytes: int | None = None, respond: bool = True
    ) -> None:
        self.payload, self.seconds = payload, seconds
        self.stall_after_bytes, self.respond = stall_after_bytes, respond
        self.port = 0
        self.stalled_at: float | None = None
        self.start()

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}/live.ts"

    def start(self) -> None:
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(8)
        self.port = sock.getsockname()[1]
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock, self._stop, self._conns), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self._listener.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, sock: socket.socket, stop: threading.Event, conns: list) -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, stop), daemon=True).start()

    def _serve(self, conn: socket.socket, stop: threading.Event) -> None:
        try:
            if not self.respond:
                stop.wait()
                return
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(4096)
                if not data:
                    return
                request += data
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n")
            end = len(self.payload) if self.stall_after_bytes is None else self.stall_after_bytes
            rate = len(self.payload) / self.seconds
            chunk = 188 * 4
            t0 = time.monotonic()
            for start in range(0, end, chunk):
                if stop.is_set():
                    return
                conn.sendall(self.payload[start : min(start + chunk, end)])
                ahead = t0 + (start + chunk) / rate - time.monotonic()
                if ahead > 0:
                    stop.wait(ahead)
            if self.stall_after_bytes is not None:
                self.stalled_at = time.monotonic()
            stop.wait()  # stay connected and silent until stopped
        except OSError:
            pass


@pytest.fixture(scope="module")
def live_clip(tmp_path_factory) -> tuple[Path, bytes]:
    """10 s of 64x48 at 25 fps in MPEG-TS, a keyframe every second."""
    path = tmp_path_factory.mktemp("live") / "clip.ts"
    write_video(
        path,
        [gradient(64, 48, i) for i in range(10 * FPS)],
        rate=FPS,
        time_base=Fraction(1, FPS),
        options={"g": str(FPS)},
    )
    return path, path.read_bytes()


@pytest.fixture
def server(live_clip):
    servers = []

    def make(**kwargs) -> PacedHttpServer:
        srv = PacedHttpServer(live_clip[1], seconds=10, **kwargs)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


def collect(source, until: threading.Event | None = None) -> tuple[list, threading.Thread]:
    """Iterate ``source`` in a thread, recording (wall time, event)."""
    events: list = []

    def run() -> None:
        for event in source:
            events.append((time.monotonic(), event))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return events, thread


# --- redaction and classification ---------------------------------------------------------------


def test_redact_hides_userinfo_and_credential_parameters() -> None:
    assert redact("rtsp://admin:s3cret@10.0.0.5:554/stream1") == "rtsp://***@10.0.0.5:554/stream1"
    assert redact("rtsp://admin:p@ss@cam/x") == "rtsp://***@cam/x"  # unescaped '@' in the password
    assert redact("rtsp://cam.local/live") == "rtsp://cam.local/live"
    text = "error opening 'http://u:pw@host/a?user=bob&password=hunter2&ch=1': refused"
    out = redact(text)
    assert "pw" not in out and "hunter2" not in out and "bob" not in out
    assert out == "error opening 'http://***@host/a?user=***&password=***&ch=1': refused"


def test_classify(tmp_path: Path) -> None:
    for url in (
        "rtsp://h/x",
        "RTSPS://h/x",
        "rtmp://h/app/key",
        "http://h/a.ts",
        "https://h/a.m3u8",
        "udp://@239.0.0.1:1234",
        "srt://h:9000",
    ):
        assert classify(url) == "url", url
    assert classify("/dev/video0") == "webcam"
    assert classify("/dev/video12") == "webcam"
    assert classify(str(tmp_path)) == "images"
    assert classify(str(tmp_path / "clip.mp4")) == "file"
    assert classify("file:///tmp/a.mp4") == "file"
    with pytest.raises(VidlightError, match="unsupported URL scheme 'ftp'.*rtsp"):
        classify("ftp://user:pw@h/a.mp4")
    try:
        classify("ftp://user:topsecret@h/a.mp4")
    except VidlightError as exc:
        assert "topsecret" not in str(exc)


# --- first open: errors ---------------------------------------------------------------------------


def test_refused_first_open_is_one_redacted_actionable_line() -> None:
    port = closed_port()
    start = time.monotonic()
    with pytest.raises(MediaError) as info:
        LiveSource(f"http://user:secret@127.0.0.1:{port}/x", open_timeout_seconds=2)
    message = str(info.value)
    assert time.monotonic() - start < 1.0
    assert "secret" not in message and "user" not in message
    assert f"http://***@127.0.0.1:{port}/x" in message
    assert "connection refused" in message and "\n" not in message


def test_missing_webcam_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """No camera at /dev/videoN (this container has none, nor v4l2loopback): exit 1, one line
    that says what to check, no output left behind."""
    from click.testing import CliRunner

    from vidlight.cli import main

    device = next(f"/dev/video{n}" for n in range(40, 100) if not Path(f"/dev/video{n}").exists())
    result = CliRunner().invoke(main, ["process", device, str(tmp_path / "out.mp4"), "--no-progress"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and device in result.output and "webcam" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out.mp4").exists()


def test_webcams_open_through_ffmpegs_v4l2_demuxer() -> None:
    """The webcam path really asks FFmpeg's video4linux2 demuxer (in PyAV's wheel): given a
    device that is no camera, the demuxer's own ioctl refusal comes back as one MediaError line.
    (A real capture cannot be tested here: no /dev/video device in this container.)"""
    source = None
    with pytest.raises(MediaError, match="ioctl") as info:
        source = LiveSource("/dev/null", input_format="v4l2", open_timeout_seconds=3, reconnect=False)
    assert source is None and "\n" not in str(info.value)


def test_open_timeout_fires_on_a_server_that_never_answers(server) -> None:
    srv = server(respond=False)
    start = time.monotonic()
    with pytest.raises(MediaError) as info:
        LiveSource(srv.url("cam:verysecret@"), open_timeout_seconds=1.0, read_timeout_seconds=1.0)
    elapsed = time.monotonic() - start
    message = str(info.value)
    print(f"open timeout fired after {elapsed:.2f} s")
    assert 0.9 <= elapsed <= 3.0
    assert "no answer within 1 s" in message
    assert "verysecret" not in message and "cam:" not in message


def test_read_timeout_ends_a_silent_stream_when_not_reconnecting(server, live_clip) -> None:
    srv = server(stall_after_bytes=len(live_clip[1]) // 10)  # about 1 s of video, then silence
    source = LiveSource(srv.url(), open_timeout_seconds=2, read_timeout_seconds=1.0, reconnect=False)
    events, thread = collect(source)
    thread.join(8)
    assert not thread.is_alive(), "the stall was never detected"
    frames = [e for _, e in events if isinstance(e, Frame)]
    ended = time.monotonic()
    assert len(frames) >= 10
    silent_for = ended - srv.stalled_at
    print(f"read timeout: iteration ended {silent_for:.2f} s after the server went silent")
    assert 0.5 <= silent_for <= 1.0 + 2.0


def test_stop_event_interrupts_a_pending_open(server) -> None:
    srv = server(respond=False)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    start = time.monotonic()
    with pytest.raises(MediaError, match="stopped while opening"):
        LiveSource(srv.url(), open_timeout_seconds=10, stop_event=stop)
    assert time.monotonic() - start < 1.0


# --- running: frames, timestamps, reconnection ------------------------------------------------------


def test_frames_info_and_timestamps(server, live_clip) -> None:
    srv = server()
    source = LiveSource(srv.url(), open_timeout_seconds=3)
    assert source.live and source.copy_streams == [] and source.name == srv.url()
    info = source.info
    assert (info.width, info.height, info.time_base, info.average_rate) == (64, 48, Fraction(1, 90000), FPS)
    frames = []
    for event in source:
        frames.append(event)
        if len(frames) == 30:
            break
    source.close()
    assert source.frames_read >= 30
    assert frames[0].pts == 0 and frames[0].time_seconds == 0
    steps = np.diff([f.pts for f in frames])
    assert (steps == 90000 // FPS).all()  # re-based stream timestamps, not wall-clock jitter
    for f in frames:
        assert f.rgb.dtype == np.uint8 and f.rgb.shape == (48, 64, 3)
        assert f.time_seconds == pytest.approx(f.pts / 90000)
    # Converted with the stream's own matrix and range: the same pictures as a file decode.
    reference = read_video(live_clip[0]).frames
    for f, ref in zip(frames, reference):
        assert mean_abs_diff(f.rgb, ref) < 0.5


def test_reconnects_within_2s_of_the_server_return_with_continuous_timestamps(server) -> None:
    srv = server()
    source = LiveSource(srv.url(), open_timeout_seconds=2, read_timeout_seconds=1)
    events, thread = collect(source)
    time.sleep(1.2)
    srv.stop()
    lost = time.monotonic()
    time.sleep(1.6)  # several refused attempts: the backoff reaches its 1 s cap
    srv.start()
    back = time.monotonic()
    deadline = back + 4
    while time.monotonic() < deadline and not any(t > back and isinstance(e, Frame) for t, e in events):
        time.sleep(0.02)
    time.sleep(0.5)
    source.close()
    thread.join(2)
    reconnects = [(t, e) for t, e in events if isinstance(e, Reconnected)]
    assert len(reconnects) == 1 and source.reconnects == 1
    notice = reconnects[0][1]
    assert (notice.count, notice.width, notice.height) == (1, 64, 48)
    first_after = next(t for t, e in events if t > back and isinstance(e, Frame))
    print(
        f"reading resumed {first_after - back:.2f} s after the server returned "
        f"(down {back - lost:.2f} s, reported downtime {notice.downtime_seconds:.2f} s)"
    )
    assert first_after - back <= 2.0
    assert notice.downtime_seconds >= back - lost
    frames = [e for _, e in events if isinstance(e, Frame)]
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    # Continuous: no step longer than one frame interval, not even across the outage.
    assert max(np.diff(pts)) <= 90000 // FPS + 1
    index = next(i for i, (_, e) in enumerate(events) if isinstance(e, Reconnected))
    before, after = events[index - 1][1], events[index + 1][1]
    assert after.pts - before.pts == 90000 // FPS


def test_gives_up_after_max_reconnects(server) -> None:
    srv = server()
    source = LiveSource(
        srv.url(),
        open_timeout_seconds=2,
        read_timeout_seconds=1,
        max_reconnects=2,
        backoff_start_seconds=0.05,
        backoff_max_seconds=0.1,
    )
    events, thread = collect(source)
    time.sleep(0.5)
    srv.stop()
    thread.join(4)
    assert not thread.is_alive(), "still reconnecting after max_reconnects attempts"
    assert source.reconnects == 0 and events


def test_close_and_stop_event_end_iteration_promptly(server, live_clip) -> None:
    # A pending read on a silent stream (read timeout 10 s).
    srv = server(stall_after_bytes=len(live_clip[1]) // 20)
    source = LiveSource(srv.url(), open_timeout_seconds=3, read_timeout_seconds=10)
    events, thread = collect(source)
    time.sleep(1.0)
    start = time.monotonic()
    source.close()
    thread.join(2)
    assert not thread.is_alive() and time.monotonic() - start < 0.5
    # A pending backoff while the server is away.
    srv2 = server()
    stop = threading.Event()
    source = LiveSource(
        srv2.url(),
        open_timeout_seconds=3,
        read_timeout_seconds=10,
        stop_event=stop,
        backoff_start_seconds=5,
        backoff_max_seconds=5,
    )
    events, thread = collect(source)
    time.sleep(0.3)
    srv2.stop()
    time.sleep(0.3)
    start = time.monotonic()
    stop.set()
    thread.join(2)
    assert not thread.is_alive() and time.monotonic() - start < 0.5


def test_options_are_validated() -> None:
    with pytest.raises(VidlightError, match="invalid transport 'quic'; valid: tcp, udp"):
        LiveSource("rtsp://127.0.0.1:1/x", transport="quic")
    with pytest.raises(VidlightError, match="open timeout must be above 0 seconds, got 0"):
        LiveSource("rtsp://127.0.0.1:1/x", open_timeout_seconds=0)


# --- image folders ---------------------------------------------------------------------------------


def _save(path: Path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def test_image_folder_natural_order_pts_and_bad_images(tmp_path: Path) -> None:
    pictures = {i: gradient(32, 24, i) for i in (1, 2, 10)}
    for i, rgb in pictures.items():
        _save(tmp_path / f"frame{i}.png", rgb)
    (tmp_path / "frame5.png").write_bytes(b"not a png")
    odd = gradient(40, 30, 7)
    _save(tmp_path / "frame20.jpg", odd)
    (tmp_path / "notes.txt").write_text("ignored")
    source = ImageDirSource(tmp_path, fps=10)
    assert (source.info.width, source.info.height, source.info.time_base) == (32, 24, Fraction(1, 10))
    assert source.info.bit_depth == 8 and not source.live and source.copy_streams == []
    frames = list(source)
    assert source.corrupt_packets == 1
    # frame1, frame2, frame10 (frame5 skipped), then the odd-sized jpg, as it is.
    assert [f.pts for f in frames] == [0, 1, 3, 4]
    assert [f.time_seconds for f in frames] == [0.0, 0.1, 0.3, 0.4]
    for f, i in zip(frames, (1, 2, 10)):
        np.testing.assert_array_equal(f.rgb, pictures[i])
    assert frames[3].rgb.shape == (30, 40, 3) and mean_abs_diff(frames[3].rgb, odd) < 3


def test_image_folder_keeps_16_bit_and_expands_grey(tmp_path: Path) -> None:
    deep = gradient(16, 12, 0, depth=16)
    assert cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    grey = np.arange(16 * 12, dtype=np.uint16).reshape(12, 16) * 300
    assert cv2.imwrite(str(tmp_path / "b.png"), grey)
    source = ImageDirSource(tmp_path)
    frames = list(source)
    assert source.info.bit_depth == 16 and source.info.average_rate == 25
    assert frames[0].rgb.dtype == np.uint16
    np.testing.assert_array_equal(frames[0].rgb, deep)
    np.testing.assert_array_equal(frames[1].rgb, np.repeat(grey[..., None], 3, axis=2))


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no images"):
        ImageDirSource(tmp_path)
    (tmp_path / "x.png").write_bytes(b"junk")
    with pytest.raises(MediaError, match="none of the 1 images"):
        ImageDirSource(tmp_path)


# --- open_source --------------------------------------------------------------------------------------


def test_open_source_picks_the_kind(tmp_path: Path, server) -> None:
    clip = simple_clip(tmp_path / "a.mp4", n=3)
    source = open_source(clip.path, fps=12, transport="udp")  # options of other kinds are ignored
    assert isinstance(source, FileSource) and source.name == "a.mp4" and source.live is False
    source.close()
    folder = tmp_path / "images"
    folder.mkdir()
    _save(folder / "0.png", gradient(8, 8))
    source = open_source(folder, fps=12)
    assert isinstance(source, ImageDirSource) and source.info.average_rate == 12
    srv = server()
    source = open_source(srv.url("a:bcdef@"), open_timeout_seconds=3, fps=12)
    assert isinstance(source, LiveSource) and source.live and "bcdef" not in source.name
    source.close()
    with pytest.raises(VidlightError, match="unknown source option.*timeout_s"):
        open_source(clip.path, timeout_s=3)


# --- the latest-frame queue ----------------------------------------------------------------------------


def _frame(i: int) -> Frame:
    return Frame(np.zeros((1, 1, 3), np.uint8), i, i / 25)


def test_latest_frame_queue_drops_oldest_frames_never_control_items() -> None:
    q = LatestFrameQueue(3)
    for i in range(3):
        q.put(_frame(i))
    q.put(Reconnected(1, 0.5, 8, 8))
    q.put(_frame(3))  # full: frame 0 goes
    q.put(_frame(4))  # frame 1 goes
    assert q.dropped == 2
    items = [q.get(timeout=0) for _ in range(len(q))]
    assert [getattr(x, "pts", "R") for x in items] == [2, "R", 3, 4]
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)


def test_latest_frame_queue_with_threads() -> None:
    q = LatestFrameQueue(4)
    produced, controls = 2000, 20
    received: list = []

    def producer() -> None:
        for i in range(produced):
            q.put(_frame(i))  # never blocks, however slow the consumer
            if i % (produced // controls) == 0:
                q.put(("control", i))
        q.put(None)

    def consumer() -> None:
        while True:
            item = q.get()
            if item is None:
                return
            received.append(item)
            time.sleep(0.0005)  # slower than the producer

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert time.monotonic() - start < 20
    frames = [x.pts for x in received if isinstance(x, Frame)]
    control = [x for x in received if isinstance(x, tuple)]
    assert len(control) == controls  # none lost
    assert q.dropped > 0 and len(frames) + q.dropped == produced
    assert frames == sorted(frames) and frames[-1] == produced - 1  # the newest always arrives
    order = [x.pts if isinstance(x, Frame) else x[1] for x in received]
    assert order == sorted(order)  # control items stay in place relative to the frames


def test_latest_frame_queue_get_blocks_until_put() -> None:
    q = LatestFrameQueue(1)
    threading.Timer(0.2, q.put, args=(_frame(7),)).start()
    start = time.monotonic()
    assert q.get().pts == 7
    assert 0.15 < time.monotonic() - start < 2
    with pytest.raises(ValueError):
        LatestFrameQueue(0)


# --- RTSP, against GStreamer's server (tests/rtsp.py) -----------------------------------------------


@pytest.fixture
def rtsp_camera(tmp_path: Path):
    rtsp = pytest.importorskip("rtsp", reason="tests/rtsp.py (the RTSP server harness) is not there")
    rtsp.require_gstreamer()
    clip = write_video(
        tmp_path / "cam.mp4", [gradient(64, 48, i) for i in range(2 * FPS)], rate=FPS, time_base=Fraction(1, FPS)
    )
    with rtsp.RtspServer(cameras={"/cam": clip.path}) as srv:
        yield srv


def test_rtsp_camera_power_loss_and_return(rtsp_camera) -> None:
    url = rtsp_camera.url("/cam").replace("rtsp://", "rtsp://viewer:camsecret@")
    source = LiveSource(url, open_timeout_seconds=5, read_timeout_seconds=2)
    assert (source.info.width, source.info.height) == (64, 48) and "camsecret" not in source.name
    events, thread = collect(source)
    time.sleep(1.0)
    rtsp_camera.kill()
    lost = time.monotonic()
    time.sleep(1.0)
    rtsp_camera.start()  # same port
    back = time.monotonic()
    deadline = back + 6
    while time.monotonic() < deadline and not any(t > back and isinstance(e, Frame) for t, e in events):
        time.sleep(0.02)
    source.close()
    thread.join(2)
    first_after = next(t for t, e in events if t > back and isinstance(e, Frame))
    notice = next(e for _, e in events if isinstance(e, Reconnected))
    print(
        f"RTSP: reading resumed {first_after - back:.2f} s after the server listened again "
        f"(server down {back - lost:.2f} s, reported downtime {notice.downtime_seconds:.2f} s)"
    )
    assert first_after - back <= 2.0
    pts = [e.pts for _, e in events if isinstance(e, Frame)]
    assert pts[0] == 0 and all(b > a for a, b in zip(pts, pts[1:]))
    assert max(np.diff(pts)) <= 2 * 90000 // FPS  # continuous across the outage


def test_rtsp_stalled_camera_is_detected_and_reconnected(rtsp_camera) -> None:
    source = LiveSource(rtsp_camera.url("/cam"), open_timeout_seconds=5, read_timeout_seconds=1)
    events, thread = collect(source)
    time.sleep(0.8)
    rtsp_camera.pause()
    paused = time.monotonic()
    time.sleep(4.0)  # well past the read timeout (and what the socket still holds): the stream counts as lost
    rtsp_camera.resume()
    resumed = time.monotonic()
    deadline = resumed + 6
    while time.monotonic() < deadline and not any(isinstance(e, Reconnected) for _, e in events):
        time.sleep(0.02)
    time.sleep(0.3)
    source.close()
    thread.join(2)
    assert source.reconnects >= 1, "the stall was not detected"
    last_before = max(t for t, e in events if isinstance(e, Frame) and t < resumed)
    first_after = next(t for t, e in events if isinstance(e, Frame) and t > resumed)
    print(
        f"RTSP stall: last frame {last_before - paused:+.2f} s after pause, "
        f"resumed {first_after - resumed:.2f} s after SIGCONT"
    )
    assert first_after - resumed <= 2.5
