"""Test harness for live RTSP: a real server (``rtsp_server.py``) and a silent one.

``RtspServer`` runs ``tests/rtsp_server.py`` (GStreamer's gst-rtsp-server) under the system
python, the one that can import ``gi``, and lets a test treat it like a camera: kill it
(power loss), restart it on the same port, pause it (a stalled camera: the TCP connection
stays open but nothing arrives) and resume it.

    with RtspServer(cameras={"/cam": clip_path}, records=["/in"]) as server:
        av.open(server.url("/cam"), options={"rtsp_transport": "tcp"})
        # push to server.url("/in"), read the pushed pictures back from server.play_url("/in")

A push to a record mount is re-served, re-encoded at 30 fps, at ``<mount>-play``; a reader
should join once the publisher has been sending for ~0.5 s, or its first frames are black
at 320x240 before the stream switches to the pushed size.
"""

from __future__ import annotations

import contextlib
import functools
import os
import selectors
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from needs import unavailable

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
APT_PACKAGES = (
    "gir1.2-gst-rtsp-server-1.0",
    "python3-gi",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad",
    "gstreamer1.0-plugins-ugly",
    "gstreamer1.0-libav",
)
# The elements the server's pipelines use, with the package that brings each.
_PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("decodebin", "avdec_h264", "x264enc", "rtph264pay", "rtph264depay", "h264parse",
                       "intervideosink", "intervideosrc", "videoconvert") if Gst.ElementFactory.find(e) is None]
if missing:
    raise SystemExit("missing GStreamer elements: " + ", ".join(missing))
"""


@functools.lru_cache(maxsize=1)
def gstreamer_problem() -> str | None:
    """Why the RTSP server cannot run here, or None when it can."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} not found"
    try:
        result = subprocess.run([SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON} failed: {exc}"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit status {result.returncode}"
    return None


def require_gstreamer() -> None:
    """Skip the calling test when gst-rtsp-server is unusable; fail instead under ``CI=true``."""
    problem = gstreamer_problem()
    if problem is None:
        return
    message = (
        f"the RTSP test server needs GStreamer's gst-rtsp-server for {SYSTEM_PYTHON} ({problem}); "
        f"install: apt-get install {' '.join(APT_PACKAGES)}"
    )
    unavailable(message)


class RtspServerError(RuntimeError):
    """The server did not start; the message ends with its stderr."""


class RtspServer:
    """``tests/rtsp_server.py`` as a subprocess, with the failures of a real camera on demand.

    Args:
        cameras: mount ("/cam") -> video file served as a live camera, looping forever.
        records: mounts that accept an H.264 push; each is re-served at ``<mount>-play``.
        port: TCP port on 127.0.0.1; None lets the server pick a free one (kept across restarts).
        start_timeout_seconds: how long ``start`` waits for the server to listen.
    """

    def __init__(
        self,
        *,
        cameras: Mapping[str, str | os.PathLike] | None = None,
        records: Sequence[str] = (),
        port: int | None = None,
        start_timeout_seconds: float = 20.0,
    ) -> None:
        self.cameras = {mount: Path(path) for mount, path in (cameras or {}).items()}
        self.records = list(records)
        for mount in [*self.cameras, *self.records]:
            if not mount.startswith("/"):
                raise ValueError(f"mount {mount!r} must start with '/'")
        self.port = port
        self.start_timeout_seconds = start_timeout_seconds
        self.start_seconds: float | None = None  # how long the last start took
        self._process: subprocess.Popen | None = None
        self._stderr = None
        self._paused = False

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> RtspServer:
        """Launch the server and wait until it listens. Raises RtspServerError with its stderr."""
        if self.running:
            raise RuntimeError("the RTSP server is already running")
        command = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port or 0)]
        for mount, path in self.cameras.items():
            command += ["--camera", f"{mount}={path}"]
        for mount in self.records:
            command += ["--record", mount]
        if self._stderr is not None:
            self._stderr.close()
        # A file, not a pipe: nobody drains stderr while the server runs, and a full pipe would stall it.
        self._stderr = tempfile.TemporaryFile()
        began = time.monotonic()
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr)
        self._paused = False
        line = self._read_ready_line(began + self.start_timeout_seconds)
        parts = line.split()
        if len(parts) != 2 or parts[0] != "READY" or not parts[1].isdigit():
            self._abort(f"expected 'READY <port>', got {line!r}")
        self.port = int(parts[1])
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self, *, timeout_seconds: float = 5.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout_seconds``)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            if self._paused:
                process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            process.terminate()
            try:
                process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._release()

    def kill(self) -> None:
        """SIGKILL, like a camera losing power: connections drop without an RTSP goodbye."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._release()

    def restart(self) -> RtspServer:
        """Kill the server if it runs, then start it again on the same port."""
        self.kill()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: a stalled camera. Connections stay open, nothing is sent or answered."""
        self._require_running().send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        self._require_running().send_signal(signal.SIGCONT)
        self._paused = False

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    # --- queries -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def url(self, mount: str) -> str:
        """``rtsp://127.0.0.1:<port><mount>``."""
        if self.port is None:
            raise RuntimeError("the RTSP server has no port yet: start it first")
        if not mount.startswith("/"):
            raise ValueError(f"mount {mount!r} must start with '/'")
        return f"rtsp://127.0.0.1:{self.port}{mount}"

    def play_url(self, record_mount: str) -> str:
        """Where the stream pushed to ``record_mount`` can be read."""
        if record_mount not in self.records:
            raise ValueError(f"{record_mount!r} is not a record mount; record mounts: {self.records}")
        return self.url(f"{record_mount}-play")

    def stderr_text(self) -> str:
        """What the server (its latest run) has written to stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    # --- internals ---------------------------------------------------------------------------

    def _read_ready_line(self, deadline: float) -> str:
        process = self._process
        fd = process.stdout.fileno()
        data = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in data:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._abort(f"not listening after {self.start_timeout_seconds:g} s")
                if selector.select(remaining):
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        process.wait(5)
                        self._abort(f"exited with status {process.returncode} before listening")
                    data += chunk
        return data.split(b"\n", 1)[0].decode(errors="replace").strip()

    def _abort(self, reason: str) -> None:
        self.kill()
        raise RtspServerError(f"RTSP test server {reason}; stderr:\n{self.stderr_text()}")

    def _release(self) -> None:
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None
        self._paused = False

    def _require_running(self) -> subprocess.Popen:
        if not self.running:
            raise RuntimeError("the RTSP server is not running")
        return self._process


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released): connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def silent_tcp_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte; yields its port.

    For open-timeout tests: the client's connect succeeds, its RTSP request is never answered.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    done = threading.Event()
    accepted: list[socket.socket] = []

    def accept_forever() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(connection)  # held open, never read from or written to

    thread = threading.Thread(target=accept_forever, name="silent-tcp-server", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(2)
        listener.close()
        for connection in accepted:
            connection.close()
