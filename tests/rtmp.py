"""Test harness for live RTMP: a real server (nginx with nginx-rtmp) and a camera that publishes to it.

``RtmpServer`` runs the system's ``nginx`` in the foreground as the current user, one process
(``master_process off``), with a config generated in a temporary directory that loads
``ngx_rtmp_module.so`` and serves one live application. ``RtmpPublisher`` is the camera: it
pushes a clip, looping, to ``rtmp://.../live/<name>`` as FLV/H.264 paced at real time from a
background thread, and can be stopped and started again (a camera reboot: a new connection
whose timestamps start again from 0).

    with RtmpServer() as server, RtmpPublisher(server.url("cam"), clip) as camera:
        camera.wait_started()
        av.open(server.url("cam"), options={"analyzeduration": "1000000"})  # a player

A player other than vidlight should limit ``analyzeduration`` as above (vidlight does): the
server's metadata names no codec, and FFmpeg then analyses for its default 5 s before the
first picture.
The clip is re-encoded once (x264, a keyframe every ``keyframe_frames`` pictures, no B-frames)
and its packets are re-sent on every loop: nginx-rtmp keeps no picture cache, so a player
that joins waits for the next keyframe, and the server is told (``wait_key``) to start every
player on one. The published stream has no audio, like many IP cameras.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from needs import unavailable
from rtsp import closed_port

APT_PACKAGES = ("nginx-light", "libnginx-mod-rtmp")
MODULE_CANDIDATES = (
    "/usr/lib/nginx/modules/ngx_rtmp_module.so",  # Debian, Ubuntu
    "/usr/lib64/nginx/modules/ngx_rtmp_module.so",
    "/usr/share/nginx/modules/ngx_rtmp_module.so",
)
APPLICATION = "live"

_CONFIG = """\
load_module "{module}";
daemon off;
master_process off;
pid "{prefix}/nginx.pid";
error_log "{prefix}/error.log" info;
events {{
    worker_connections 128;
}}
rtmp {{
    access_log "{prefix}/access.log";
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application {application} {{
            live on;
            record off;
            wait_key on;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    # /usr/sbin is often not on a normal user's PATH.
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def rtmp_module() -> str | None:
    return next((p for p in MODULE_CANDIDATES if os.path.isfile(p)), None)


@functools.lru_cache(maxsize=1)
def problem() -> str | None:
    """Why the RTMP server (or the publisher) cannot run here, or None when it can."""
    nginx, module = nginx_binary(), rtmp_module()
    if nginx is None:
        return "nginx not found"
    if module is None:
        return f"ngx_rtmp_module.so not found (looked in {', '.join(MODULE_CANDIDATES)})"
    if "flv" not in av.formats_available:
        return "PyAV's FFmpeg has no FLV muxer"
    if "libx264" not in av.codecs_available:
        return "PyAV's FFmpeg has no libx264 encoder"
    with tempfile.TemporaryDirectory(prefix="vidlight-rtmp-probe-") as prefix:
        conf = write_config(prefix, port=closed_port(), module=module)
        try:
            result = subprocess.run(
                [nginx, "-t", "-q", "-p", prefix + "/", "-c", str(conf), "-e", "stderr"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{nginx} -t failed: {exc}"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return f"{nginx} rejects the RTMP config: {lines[-1] if lines else f'exit status {result.returncode}'}"
    return None


def require_rtmp() -> None:
    """Skip the calling test when the RTMP server cannot run; fail instead under ``CI=true``."""
    reason = problem()
    if reason is None:
        return
    message = (
        f"the RTMP test server needs nginx with the RTMP module ({reason}); "
        f"install: apt-get install {' '.join(APT_PACKAGES)}"
    )
    unavailable(message)


def write_config(prefix: str | os.PathLike, *, port: int, module: str) -> Path:
    path = Path(prefix) / "nginx.conf"
    path.write_text(_CONFIG.format(module=module, prefix=Path(prefix), port=port, application=APPLICATION))
    return path


class RtmpServerError(RuntimeError):
    """nginx did not start; the message ends with its error log."""


class RtmpServer:
    """nginx-rtmp as a subprocess in its own process group, listening on 127.0.0.1.

    Args:
        port: TCP port; None picks a free one (kept across restarts).
        start_timeout_seconds: how long ``start`` waits for the port to accept connections.
    """

    def __init__(self, *, port: int | None = None, start_timeout_seconds: float = 10.0) -> None:
        self.port = port
        self.start_timeout_seconds = start_timeout_seconds
        self.start_seconds: float | None = None  # how long the last start took
        self._dir: tempfile.TemporaryDirectory | None = None
        self._process: subprocess.Popen | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> RtmpServer:
        """Launch nginx and wait until it accepts connections. Raises RtmpServerError."""
        if self.running:
            raise RuntimeError("the RTMP server is already running")
        nginx, module = nginx_binary(), rtmp_module()
        if nginx is None or module is None:
            raise RtmpServerError(f"cannot start nginx-rtmp: {problem()}")
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="vidlight-rtmp-")
        prefix = self._dir.name
        chosen = self.port is None
        # A port picked free may be taken before nginx binds it: then pick another (a few times).
        for attempt in range(3):
            port = closed_port() if chosen else self.port
            conf = write_config(prefix, port=port, module=module)
            log = Path(prefix) / "error.log"
            log.write_bytes(b"")
            began = time.monotonic()
            self._process = subprocess.Popen(
                [nginx, "-p", prefix + "/", "-c", str(conf), "-e", str(log)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # its own process group, signalled as a whole
            if self._wait_listening(port, began + self.start_timeout_seconds):
                self.port = port
                self.start_seconds = time.monotonic() - began
                return self
            text = self.error_log()
            self.kill()
            if not (chosen and "Address already in use" in text and attempt < 2):
                raise RtmpServerError(f"nginx-rtmp did not listen on 127.0.0.1:{port}; error log:\n{text}")
        raise AssertionError("unreachable")

    def stop(self, *, timeout_seconds: float = 5.0) -> None:
        """SIGTERM (nginx's fast shutdown), then SIGKILL after ``timeout_seconds``."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL, like a server losing power: connections drop without an RTMP goodbye."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self._signal(signal.SIGKILL)
            process.wait()
        self._process = None

    def restart(self) -> RtmpServer:
        """Kill the server if it runs, then start it again on the same port."""
        self.kill()
        return self.start()

    def __enter__(self) -> RtmpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    # --- queries -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def url(self, stream: str, *, userinfo: str = "") -> str:
        """``rtmp://[userinfo@]127.0.0.1:<port>/live/<stream>``."""
        if self.port is None:
            raise RuntimeError("the RTMP server has no port yet: start it first")
        if not stream or "/" in stream:
            raise ValueError(f"invalid stream name {stream!r}")
        at = f"{userinfo}@" if userinfo else ""
        return f"rtmp://{at}127.0.0.1:{self.port}/{APPLICATION}/{stream}"

    def error_log(self) -> str:
        """nginx's error log (its latest run)."""
        if self._dir is None:
            return ""
        try:
            return (Path(self._dir.name) / "error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # --- internals ---------------------------------------------------------------------------

    def _wait_listening(self, port: int, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def _signal(self, signum: int) -> None:
        # To the whole group (nginx runs as one process, but whatever it might fork goes too).
        # Only while nginx is not reaped: until then its pid, the group's id, cannot be reused.
        try:
            os.killpg(self._process.pid, signum)
        except ProcessLookupError:
            pass


# --- the camera ----------------------------------------------------------------------------------


def encode_clip(frames: Sequence[np.ndarray], path: Path, *, rate: int = 30, keyframe_frames: int = 15) -> Path:
    """Encode RGB ``frames`` as H.264 (no B-frames, an IDR every ``keyframe_frames``) into ``path``."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, rate)
        stream.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "crf": "12",
            "bf": "0",
            "g": str(keyframe_frames),
            "keyint_min": str(keyframe_frames),
            "sc_threshold": "0",
        }
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def reencode(source: Path, path: Path, *, keyframe_frames: int = 15) -> Path:
    """``source``'s video as :func:`encode_clip` writes it (its pictures at 30 fps)."""
    with av.open(str(source)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return encode_clip(frames, path, keyframe_frames=keyframe_frames)


class RtmpPublisher:
    """A camera: pushes ``clip`` (H.264 in any container), looping, to ``url`` at real time.

    The packets are sent as they are (no re-encoding while publishing), so the clip should
    have keyframes every so often (see :func:`encode_clip`). ``start`` opens a new connection
    whose timestamps start at 0; ``stop`` unpublishes and closes it. A failure in the thread
    is kept in :attr:`error` and raised by ``stop``/``check``.
    """

    def __init__(self, url: str, clip: str | os.PathLike, *, connect_timeout_seconds: float = 5.0) -> None:
        self.url = url
        self.clip = Path(clip)
        self.connect_timeout_seconds = connect_timeout_seconds
        self.sent = 0  # packets sent by the current (or last) connection
        self.error: BaseException | None = None
        self.started_at: float | None = None  # monotonic time of the first packet sent
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread: threading.Thread | None = None
        # The clip stays open: its stream is the template of the published one.
        self._container = av.open(str(self.clip))
        try:
            self._template = self._container.streams.video[0]
            self._packets = [
                (bytes(p), p.pts, p.dts, p.is_keyframe)
                for p in self._container.demux(self._template)
                if p.size and p.pts is not None
            ]
            if not self._packets or not self._packets[0][3]:
                raise ValueError(f"{self.clip}: no video, or it does not start with a keyframe")
        except BaseException:
            self._container.close()
            raise
        self._time_base = self._template.time_base
        step = round(1 / ((self._template.average_rate or 30) * self._time_base))
        # One loop of the clip, in its time base.
        self._loop = max(pts for _, pts, _, _ in self._packets) - self._packets[0][1] + step

    def start(self) -> RtmpPublisher:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the publisher is already running")
        self._stop.clear()
        self._first.clear()
        self.sent, self.error, self.started_at = 0, None, None
        self._thread = threading.Thread(target=self._run, name="rtmp-publisher", daemon=True)
        self._thread.start()
        return self

    def wait_started(self, timeout: float = 10.0) -> None:
        """Block until the first packet went out (raises the thread's error, or on timeout)."""
        if not self._first.wait(timeout):
            self.check()
            raise RuntimeError(f"the publisher sent nothing within {timeout:g} s")
        self.check()

    def stop(self, timeout: float = 10.0) -> None:
        """Unpublish and close the connection; raises what went wrong in the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("the publisher thread did not stop")
            self._thread = None
        self.check()

    def restart(self, downtime_seconds: float = 0.0) -> RtmpPublisher:
        """A camera reboot: stop, wait ``downtime_seconds``, start again from 0."""
        self.stop()
        time.sleep(downtime_seconds)
        return self.start()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._container.close()

    def __enter__(self) -> RtmpPublisher:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        out = None
        try:
            out = av.open(self.url, mode="w", format="flv", timeout=self.connect_timeout_seconds)
            stream = out.add_stream_from_template(self._template)
            first = self._packets[0][1]
            began = None
            loop = 0
            while not self._stop.is_set():
                for data, pts, dts, keyframe in self._packets:
                    offset = loop * self._loop - first
                    due = float((pts + offset) * self._time_base)
                    if began is not None:
                        delay = began + due - time.monotonic()
                        if delay > 0 and self._stop.wait(delay):
                            break
                    if self._stop.is_set():
                        break
                    packet = av.Packet(data)
                    packet.stream = stream
                    packet.time_base = self._time_base
                    packet.pts = pts + offset
                    packet.dts = (dts if dts is not None else pts) + offset
                    packet.is_keyframe = keyframe
                    out.mux(packet)
                    self.sent += 1
                    if began is None:
                        began = self.started_at = time.monotonic()
                        self._first.set()
                loop += 1
        except BaseException as exc:  # noqa: BLE001  (raised by stop/check in the test's thread)
            self.error = exc
            self._first.set()
        finally:
            if out is not None:
                try:
                    out.close()
                except av.error.FFmpegError as exc:
                    if self.error is None and not self._stop.is_set():
                        self.error = exc
