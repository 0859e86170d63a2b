"""End to end: live streams through the real pipeline (``enhance_video`` and the CLI), against
a real RTSP server (``tests/rtsp.py``) that is killed, restarted, stalled and published to.

Model "sci" (bundled weights), x264 "ultrafast", no progress bar throughout. Frame times in
the pipeline are watched by wrapping the sink's ``write`` (``FileSink.write``/``RtspSink.write``):
the wrapper calls vidlight's own method and notes the wall clock, so a time measured here is
when an enhanced frame reached the encoder, model and queues included.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import vidlight.io.files as vl_files
import vidlight.io.sinks as vl_sinks
from vidlight.io.files import partial_path
from vidlight.pipeline.enhancer import FrameEnhancer
from vidlight.pipeline.runner import enhance_video

from live_checks import WriteClock, assert_finalised, assert_three_live_seconds
from media import gradient, write_video
from rtsp import RtspServer, require_gstreamer

REPO = Path(__file__).resolve().parents[1]
TCP = {"rtsp_transport": "tcp"}
RUN = dict(model="sci", progress=False, preset="ultrafast")
NIGHT_CLIP = Path("data") / "videos" / "nahianfariha_night_street_phone.mp4"  # 568x822, 30 fps, 2.8 s
SMALL = (160, 120)  # width, height of the synthetic dark camera


@pytest.fixture(autouse=True)
def _gstreamer() -> None:
    require_gstreamer()


@pytest.fixture(scope="module")
def dark_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 s of a dark moving gradient (RGB levels ~10..50) at 30 fps, 160x120; a camera loops it."""
    width, height = SMALL
    path = tmp_path_factory.mktemp("live") / "dark.mp4"
    write_video(path, [(gradient(width, height, i) * 0.25).astype(np.uint8) for i in range(30)])
    return path


# --- helpers -------------------------------------------------------------------------------------


def y_means(path: Path) -> list[float]:
    """Mean of the Y plane of every frame, as decoded (no conversion in the way)."""
    with av.open(str(path)) as container:
        return [float(y_plane(f).mean()) for f in container.decode(video=0)]


def y_plane(frame: av.VideoFrame) -> np.ndarray:
    assert frame.format.name == "yuv420p", frame.format.name
    return frame.to_ndarray()[: frame.height]


def probe(path: Path) -> tuple[list[float], tuple[int, int], list[float]]:
    """Decode the whole file: (pts in seconds, (width, height), mean luma per frame)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        size = (stream.width, stream.height)
        pts, means = [], []
        for frame in container.decode(stream):
            assert frame.pts is not None
            pts.append(float(frame.pts * stream.time_base))
            means.append(float(y_plane(frame).mean()))
    return pts, size, means


class Controller(threading.Thread):
    """Runs ``script`` beside the pipeline; whatever happens, sets ``stop`` at the end so that
    the run under test cannot outlive the test. Exceptions are kept for the main thread."""

    def __init__(self, script, stop: threading.Event) -> None:
        super().__init__(daemon=True, name="test-controller")
        self.script, self.stop, self.error = script, stop, None
        self.marks: dict[str, float] = {}

    def run(self) -> None:
        try:
            self.script(self.marks)
        except BaseException as exc:  # noqa: BLE001  (reported by the main thread)
            self.error = exc
        finally:
            self.stop.set()

    def check(self) -> None:
        self.join(10)
        assert not self.is_alive(), "the controller thread did not finish"
        if self.error is not None:
            raise self.error


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, **popen) -> subprocess.Popen:
    # No vidlight/__main__.py: run the click group from vidlight.cli (it has a __main__ guard).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [sys.executable, "-m", "vidlight.cli", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


# --- 1. a real dark clip as camera, enhanced to a file -----------------------------------------------


def test_real_dark_camera_to_file(shared_dir: Path, tmp_path: Path) -> None:
    """3 s of the night-street clip served as a camera come out as one playable, brighter mp4.

    The camera is the clip re-encoded by the server (the harness checks it is within 3 levels
    of the file), so the file's own luma stands for the camera's frames.
    """
    clip = shared_dir / NIGHT_CLIP
    camera_means = y_means(clip)
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        clip_size = (stream.width, stream.height)
    output = tmp_path / "night.mp4"
    with RtspServer(cameras={"/cam": clip}) as server:
        stats = enhance_video(server.url("/cam"), output, duration_seconds=3, **RUN)
    print(f"\n[case 1] {stats.summary()}")

    assert_finalised(output)
    pts, size, means = probe(output)
    assert size == clip_size
    assert_three_live_seconds(stats, pts, min_frames=20)
    assert stats.latencies.count == stats.frames
    assert stats.latency(0.5) < 2.0, stats.summary()
    # Brighter than the camera: every output frame above the brightest input frame.
    assert min(means) > max(camera_means) + 10, (min(means), max(camera_means))


def test_first_two_live_frames_are_a_frame_interval_apart(dark_clip: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.mp4"
    with RtspServer(cameras={"/cam": dark_clip}) as server:
        enhance_video(server.url("/cam"), output, max_frames=10, latest_frame=False, **RUN)
    pts, _, _ = probe(output)
    gaps = np.diff(pts)
    assert gaps.min() > 0.5 / 30, f"frame gaps (s): {np.round(gaps, 5).tolist()}"


class SlowIdentity(torch.nn.Module):
    """Identity taking ``seconds`` per frame."""

    receptive_halo = 0  # pointwise

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds * x.shape[0])
        return x


def test_live_frames_are_batched_only_as_far_as_the_model_is_behind(
    dark_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 30 fps camera: a model that keeps up gets each frame as it arrives (no frame waits for
    the ones after it to fill a batch); one that takes 0.15 s a frame gets the frames that
    arrived meanwhile, up to the batch size."""
    sizes: list[int] = []  # frames per call of the enhancement stage
    enhance = FrameEnhancer.__call__

    def recording(self, frames, *args, **kwargs):
        sizes.append(len(frames))
        return enhance(self, frames, *args, **kwargs)

    monkeypatch.setattr(FrameEnhancer, "__call__", recording)
    runs = {}
    with RtspServer(cameras={"/cam": dark_clip}) as server:
        for name, seconds in (("fast", 0.0), ("slow", 0.15)):
            sizes.clear()
            enhance_video(
                server.url("/cam"),
                tmp_path / "out.mp4",
                max_frames=30,
                overwrite=True,
                batch_size=4,
                strength=1,
                **{**RUN, "model": SlowIdentity(seconds)},
            )
            runs[name] = list(sizes)
    fast, slow = runs["fast"], runs["slow"]

    def median(sizes: list[int]) -> int:
        return sorted(sizes)[len(sizes) // 2]

    # (The server sends its first frames in a burst; those fill batches either way.)
    assert len(fast) >= 10 and median(fast) == 1, fast
    assert max(slow) == 4 and median(slow[2:]) == 4, slow


def outage_script(writes: WriteClock, *, frames_before: int, down, up, seconds: float, marks_as: tuple[str, str]):
    """A :class:`Controller` script for an outage: once ``frames_before`` frames are written,
    ``down()``, wait ``seconds``, ``up()`` (marking both moments under ``marks_as``), then wait
    for the first write after the return and 15 more."""
    went, came = marks_as

    def script(marks: dict[str, float]) -> None:
        assert writes.wait_for(frames_before, timeout=20), f"no {frames_before} frames written before the outage"
        down()
        marks[went] = time.monotonic()
        time.sleep(seconds)
        up()
        marks[came] = time.monotonic()
        first = writes.first_after(marks[came], timeout=10)
        assert first is not None, "no frame within 10 s of the source's return"
        marks["first"] = first
        writes.wait_for(writes.count() + 15, timeout=5)

    return script


# --- 2. power loss and return ------------------------------------------------------------------------


def test_rtsp_camera_over_udp(dark_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--transport udp: RTP over UDP from the real server (FFmpeg does not fall back to TCP when
    told udp, so frames arriving means UDP carried them)."""
    import vidlight.io.live as vl_live

    asked = []
    original = vl_live.av.open

    def open_(url, *args, **kwargs):
        if str(url).startswith("rtsp://"):
            asked.append((kwargs.get("options") or {}).get("rtsp_transport"))
        return original(url, *args, **kwargs)

    monkeypatch.setattr(vl_live.av, "open", open_)
    output = tmp_path / "udp.mp4"
    with RtspServer(cameras={"/cam": dark_clip}) as server:
        stats = enhance_video(server.url("/cam"), output, transport="udp", duration_seconds=2, **RUN)
    assert asked and set(asked) == {"udp"}
    assert_finalised(output)
    pts, _, _ = probe(output)
    assert len(pts) == stats.frames >= 40, stats.summary()


def test_camera_killed_and_restarted(dark_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL the server after ~1.5 s of output, restart it on the same port 1.5 s later.

    Measured: ``resume`` is from ``restart()`` returning (the server prints READY, i.e. it
    listens again) to the write of the first frame *received* after that moment (see
    ``WriteClock.first_received_after``). Not simply the first write after the return: the
    frames received just before the kill wait in the unfinished batch (and the smoother's
    look-ahead) until the reconnection flushes them, so they are written after the return.
    The controller waits for any write after the return (that flush happens when the new
    connection's first picture is decoded) and then for 15 more frames.
    """
    writes = WriteClock(monkeypatch, vl_files.FileSink)
    stop = threading.Event()
    output = tmp_path / "out.mp4"
    downtime = 1.5
    with RtspServer(cameras={"/cam": dark_clip}) as server:
        port = server.port

        script = outage_script(
            writes, frames_before=45, down=server.kill, up=server.restart, seconds=downtime, marks_as=("killed", "back")
        )
        controller = Controller(script, stop)
        controller.start()
        stats = enhance_video(server.url("/cam"), output, read_timeout_seconds=2, stop_event=stop, **RUN)
        controller.check()
        assert server.port == port
    marks = controller.marks
    outage = marks["back"] - marks["killed"]
    first_new = writes.first_received_after(marks["back"], list(stats.latencies.recent))
    assert first_new is not None, "no frame received after the server's return was written"
    resume = writes.times[first_new] - marks["back"]
    received = resume - list(stats.latencies.recent)[first_new]
    held = first_new - len([t for t in writes.times if t < marks["back"]])
    print(
        f"\n[case 2] {stats.summary()}; server down {outage:.2f} s; first new frame received "
        f"{received:.2f} s and written {resume:.2f} s after the server's return; {held} frame(s) from "
        f"before the kill written only after the return"
    )

    assert stats.reconnects >= 1
    assert resume < 2.0, f"frames resumed {resume:.2f} s after the server's return"
    before = [t for t in writes.times if t < marks["back"]]
    after = [t for t in writes.times if t > marks["back"]]
    assert min(after) - max(before) >= downtime, "the writes never paused: was the server really killed?"
    assert len(after) >= 15

    assert_finalised(output)
    pts, size, means = probe(output)
    assert size == SMALL
    assert len(pts) == stats.frames == len(writes.times)
    assert np.all(np.diff(pts) > 0), "timestamps not strictly increasing"
    assert np.diff(pts).max() <= outage + 2, f"a gap of {np.diff(pts).max():.2f} s in the output"


# --- 3. a stalled camera -------------------------------------------------------------------------------


def test_stalled_camera_without_reconnect_ends_the_run(
    dark_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGSTOP the server with ``reconnect=False`` and a 1 s read timeout: the run ends by
    itself (FFmpeg gives up after ~2 read timeouts, see test_rtsp_harness) and the file is
    finalised. A watchdog sets ``stop_event`` after 8 s so a hang fails instead of blocking."""
    writes = WriteClock(monkeypatch, vl_files.FileSink)
    stop = threading.Event()
    output = tmp_path / "out.mp4"
    read_timeout = 1.0
    with RtspServer(cameras={"/cam": dark_clip}) as server:

        def script(marks: dict[str, float]) -> None:
            assert writes.wait_for(30, timeout=20), "no 1 s of output before the stall"
            server.pause()
            marks["paused"] = time.monotonic()
            marks["paused_wall"] = time.time()  # for log records' ``created``
            if not stop.wait(8):  # set by the test once the run has ended; 8 s: a hang
                marks["watchdog"] = time.monotonic()

        controller = Controller(script, stop)
        controller.start()
        stats = enhance_video(
            server.url("/cam"), output, read_timeout_seconds=read_timeout, reconnect=False, stop_event=stop, **RUN
        )
        ended = time.monotonic()
        stop.set()  # releases the controller's wait
        controller.check()
    marks = controller.marks
    detected = ended - marks["paused"]
    # When LiveSource gave up on the stream (its "stream lost" warning), whatever the run did next.
    lost = [r.created - marks["paused_wall"] for r in caplog.records if "stream lost" in r.getMessage()]
    print(
        f"\n[case 3a] {stats.summary()}; source gave up {lost[0] if lost else float('nan'):.2f} s and the run "
        f"ended {detected:.2f} s after the stall (read timeout {read_timeout:g} s)"
    )

    assert "watchdog" not in marks
    assert not stats.interrupted, "the run ended by the stop event, not by itself"
    assert detected < 2 * read_timeout + 3, f"the run ended {detected:.2f} s after the stall"
    assert stats.reconnects == 0
    assert_finalised(output)
    pts, size, _ = probe(output)
    assert size == SMALL
    assert len(pts) == stats.frames == len(writes.times) >= 30
    assert np.all(np.diff(pts) > 0)


def test_live_run_ends_after_max_frames(dark_clip: Path, tmp_path: Path) -> None:
    """``max_frames`` on a live source (latest-frame policy, the default) ends the run by itself;
    a watchdog sets ``stop_event`` after 8 s so a hang fails instead of blocking."""
    stop = threading.Event()
    output = tmp_path / "out.mp4"
    with RtspServer(cameras={"/cam": dark_clip}) as server:
        watchdog = threading.Timer(8, stop.set)
        watchdog.start()
        try:
            stats = enhance_video(server.url("/cam"), output, max_frames=10, stop_event=stop, **RUN)
        finally:
            watchdog.cancel()
    assert not stats.interrupted, "the run went on until the watchdog stopped it"
    assert stats.frames + stats.dropped == 10
    assert_finalised(output)


def test_stalled_camera_is_reconnected_after_resume(
    dark_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP for 3 s (longer than the ~2 s FFmpeg takes to give up on a 1 s read timeout),
    then SIGCONT: with the default ``reconnect=True`` frames come again. ``resume`` is from
    SIGCONT to the write of the first frame received after it (as in the kill test)."""
    writes = WriteClock(monkeypatch, vl_files.FileSink)
    stop = threading.Event()
    output = tmp_path / "out.mp4"
    with RtspServer(cameras={"/cam": dark_clip}) as server:
        script = outage_script(
            writes, frames_before=30, down=server.pause, up=server.resume, seconds=3, marks_as=("paused", "resumed")
        )
        controller = Controller(script, stop)
        controller.start()
        stats = enhance_video(
            server.url("/cam"), output, read_timeout_seconds=1, open_timeout_seconds=2, stop_event=stop, **RUN
        )
        controller.check()
    marks = controller.marks
    first_new = writes.first_received_after(marks["resumed"], list(stats.latencies.recent))
    assert first_new is not None, "no frame received after SIGCONT was written"
    resume = writes.times[first_new] - marks["resumed"]
    print(f"\n[case 3b] {stats.summary()}; first new frame written {resume:.2f} s after SIGCONT")

    assert stats.reconnects >= 1
    assert resume < 5, f"frames resumed {resume:.2f} s after SIGCONT"
    assert len(writes.times) - first_new >= 15
    assert_finalised(output)
    pts, _, _ = probe(output)
    assert len(pts) == stats.frames
    assert np.all(np.diff(pts) > 0)


# --- 4. publishing -------------------------------------------------------------------------------------


def test_publish_to_rtsp_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vidlight enhances a 6 s dark file into ``rtsp://.../in``; an independent PyAV reader of
    ``/in-play`` sees pictures of the clip's size, brighter than the input.

    A file source is read as fast as the model goes (a 160x120 clip: far faster than real
    time), so the sink's ``write`` is wrapped to pace publishing at 30 fps, as a live
    publisher would; the reader joins after 0.5 s of pushing (the harness's advice)."""
    width, height, rate = 160, 120, 30
    source = tmp_path / "dark.mp4"
    write_video(source, [(gradient(width, height, i) * 0.25).astype(np.uint8) for i in range(6 * rate)])
    input_max = max(y_means(source))
    writes = WriteClock(monkeypatch, vl_sinks.RtspSink, pace_fps=rate)
    seen: list[tuple[tuple[int, int], float]] = []
    errors: list[BaseException] = []
    result: dict = {}

    def publish(url: str) -> None:
        try:
            result["stats"] = enhance_video(source, url, **RUN)
        except BaseException as exc:  # noqa: BLE001  (reported by the main thread)
            errors.append(exc)

    with RtspServer(records=["/in"]) as server:
        publisher = threading.Thread(target=publish, args=(server.url("/in"),), daemon=True)
        publisher.start()
        assert writes.wait_for(rate // 2, timeout=30), f"publishing did not start: {errors}"
        with av.open(server.play_url("/in"), options=TCP, timeout=(5, 5)) as container:
            for frame in container.decode(video=0):
                seen.append(((frame.width, frame.height), float(y_plane(frame).mean())))
                if len(seen) == 30:
                    break
        publisher.join(30)
        assert not publisher.is_alive(), "the publisher did not finish"
    assert not errors, errors
    stats = result["stats"]
    print(
        f"\n[case 4] published {stats.summary()}; reader saw {len(seen)} frames, luma "
        f"{min(m for _, m in seen):.1f}..{max(m for _, m in seen):.1f} (input max {input_max:.1f})"
    )

    assert stats.frames == 6 * rate
    assert len(seen) == 30
    assert {size for size, _ in seen} == {(width, height)}
    assert min(m for _, m in seen) > input_max + 10


# --- 5, 6. the command line ----------------------------------------------------------------------------


def test_cli_sigterm_finalises_the_recording(dark_clip: Path, tmp_path: Path) -> None:
    """``vidlight process rtsp://user:secret@.../cam out.mp4``, SIGTERM once ~1 s of frames is
    in the file: exit 0, a playable file, no traceback, and the password never on stderr
    (the server ignores credentials, so the run really uses that URL)."""
    output = tmp_path / "out.mp4"
    with RtspServer(cameras={"/cam": dark_clip}) as server:
        url = f"rtsp://user:secret@127.0.0.1:{server.port}/cam"
        process = cli("process", url, str(output), "--no-progress", "--preset", "ultrafast")
        try:
            # Frames are flowing once the encoder has written into the partial file.
            partial = partial_path(output)
            deadline = time.monotonic() + 40
            while not (partial.exists() and partial.stat().st_size > 0):
                assert process.poll() is None, f"vidlight exited early: {process.communicate()}"
                assert time.monotonic() < deadline, "no output after 40 s"
                time.sleep(0.05)
            time.sleep(1.0)
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    print(f"\n[case 5] stderr:\n{stderr}")

    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert "secret" not in stderr and "secret" not in stdout
    assert f"127.0.0.1:{server.port}/cam" in stderr, "the run did not report on its source"
    assert_finalised(output)
    pts, size, _ = probe(output)
    assert size == SMALL
    assert len(pts) >= 15
    assert np.all(np.diff(pts) > 0)


def test_cli_unreachable_camera(tmp_path: Path) -> None:
    output = tmp_path / "out.mp4"
    port = free_port()  # nothing listens there now
    process = cli("process", f"rtsp://127.0.0.1:{port}/x", str(output), "--no-progress", "--open-timeout", "5")
    stdout, stderr = process.communicate(timeout=60)
    print(f"\n[case 6] stderr: {stderr!r}")

    assert process.returncode == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("vidlight: ") and f"127.0.0.1:{port}/x" in lines[0]
    assert "Traceback" not in stderr
    assert not output.exists() and not partial_path(output).exists()
