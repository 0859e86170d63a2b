"""Live sources (RTSP/RTMP/HTTP/UDP/SRT streams, webcams) and image folders, with PyAV.

:class:`LiveSource` yields the same :class:`~vidlight.io.files.Frame` events as
:class:`~vidlight.io.files.FileSource`, plus a :class:`Reconnected` event after each
reconnection, with timestamps re-based to start at 0 and kept strictly increasing and
continuous across reconnections. A reader thread does the blocking FFmpeg work so that
:meth:`LiveSource.close` (or a ``stop_event``) ends iteration at once, even while FFmpeg
waits on a silent camera.

Credentials never reach a log line or an error message: everything shown goes through
:func:`redact`.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

from vidlight.errors import MediaError, VidlightError
from vidlight.io.files import (
    _MATRIX_OF_TAG,
    IMAGE_SUFFIXES,
    FileSource,
    Frame,
    VideoInfo,
    frame_to_rgb,
    output_color_range,
    output_colorspace,
)
from vidlight.settings import SourceSettings, check

log = logging.getLogger("vidlight")

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "srt")
LIVE_TIME_BASE = Fraction(1, 90000)

# scheme://userinfo@ : userinfo runs to the last '@' before the path, so an unescaped '@'
# in a password is still covered.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#\s]*@")
# Query parameters that cameras use for credentials (…?user=admin&password=…).
_SECRET_PARAM = re.compile(r"(?i)([?&;](?:user|username|login|password|passwd|pass|pwd|token|auth|key)=)[^&#\s'\"]*")
_WEBCAM = re.compile(r"^/dev/video\d+$")


def redact(url: str) -> str:
    """``url`` (or any text that contains URLs) with credentials replaced by ``***``.

    ``rtsp://user:pass@host/cam`` becomes ``rtsp://***@host/cam``; credential query
    parameters (``password=``, ``token=``, …) are masked too.
    """
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", url))


def classify(spec: str) -> str:
    """What kind of source ``spec`` names: ``"file"``, ``"url"``, ``"webcam"`` or ``"images"``.

    Raises:
        VidlightError: a URL whose scheme vidlight cannot read.
    """
    spec = str(spec)
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*)://", spec)
    if match:
        scheme = match.group(1).lower()
        if scheme in URL_SCHEMES:
            return "url"
        if scheme == "file":
            return "file"
        raise VidlightError(
            f"unsupported URL scheme {scheme!r} in {redact(spec)}; supported: {', '.join(URL_SCHEMES)}, "
            "a webcam (/dev/videoN), a video file or a folder of images"
        )
    if _WEBCAM.match(spec):
        return "webcam"
    if Path(spec).is_dir():
        return "images"
    return "file"


@dataclass
class Reconnected:
    """The stream came back after a disconnection (temporal state should start afresh).

    Attributes:
        count: reconnections so far (1 for the first).
        downtime_seconds: wall-clock time from the last frame before the loss to the first after.
        width, height: the frame size of the new connection (it may differ from before).
    """

    count: int
    downtime_seconds: float
    width: int
    height: int


def info_from_frame(
    frame: av.VideoFrame, stream: av.video.stream.VideoStream, *, time_base: Fraction = LIVE_TIME_BASE
) -> VideoInfo:
    """A :class:`VideoInfo` from the first decoded picture of a live stream.

    The tags follow FileSource's rules: untagged colour is BT.709 from 720 lines up, BT.601
    below; an unknown range is limited.
    """
    colorspace = output_colorspace(frame.colorspace, frame.height)
    color_range = output_color_range(frame.color_range)
    rate = stream.average_rate or stream.guessed_rate
    if rate is not None and not (1 <= rate <= 240):
        rate = None  # RTP streams often report their 90 kHz clock here
    return VideoInfo(
        width=frame.width,
        height=frame.height,
        time_base=time_base,
        average_rate=rate,
        frames=0,
        duration_seconds=None,
        colorspace=colorspace,
        matrix=_MATRIX_OF_TAG[colorspace],
        color_range=color_range,
        color_primaries=frame.color_primaries,
        color_trc=frame.color_trc,
        bit_depth=max(c.bits for c in frame.format.components),
        rotation=int(frame.rotation),
        codec=stream.codec_context.name,
    )


@dataclass
class _End:
    error: BaseException | None = None


class _OpenFailed(Exception):
    """Opening failed; the message is already redacted and says what to check."""


class LiveSource:
    """Decodes a network stream or a webcam; iterate to get :class:`Frame` and :class:`Reconnected`.

    Opening blocks until the first picture arrives, so that :attr:`info` describes what is
    really sent; a source that cannot be reached raises :class:`MediaError` then. Once
    running, a lost stream (error, silence longer than ``read_timeout_seconds``, or end of
    stream) is reopened with capped exponential backoff; iteration ends when ``reconnect`` is
    False, the attempts are exhausted, or :meth:`close` is called.

    Args:
        url: ``rtsp://``, ``rtsps://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``srt://`` or
            a webcam device (``/dev/videoN``).
        transport: RTSP lower transport, ``"tcp"`` (default: survives NAT and loss) or ``"udp"``.
        open_timeout_seconds: limit for connecting and receiving the stream's header.
        read_timeout_seconds: silence after which the stream counts as lost.
        reconnect: reopen a lost stream (False: a loss ends the stream).
        max_reconnects: attempts per outage before giving up (None: forever).
        backoff_start_seconds, backoff_factor, backoff_max_seconds: wait between attempts,
            growing from start by factor up to max (so a returning server is reached within
            ``backoff_max_seconds`` plus the time to open).
        stop_event: set it (e.g. from a SIGTERM handler) to end iteration promptly.
        input_format: FFmpeg demuxer to force (``"v4l2"`` for webcams is chosen for you).
        options: extra FFmpeg options (e.g. ``{"video_size": "1280x720"}`` for a webcam).
        buffer_frames: decoded frames held between the reader thread and the consumer.
    """

    live = True

    def __init__(
        self,
        url: str,
        *,
        transport: str = "tcp",
        open_timeout_seconds: float = SourceSettings.open_timeout_seconds,
        read_timeout_seconds: float = SourceSettings.read_timeout_seconds,
        reconnect: bool = True,
        max_reconnects: int | None = None,
        backoff_start_seconds: float = 0.25,
        backoff_factor: float = 2.0,
        backoff_max_seconds: float = 1.0,
        stop_event: threading.Event | None = None,
        input_format: str | None = None,
        options: dict[str, str] | None = None,
        buffer_frames: int = 4,
    ) -> None:
        self.url = str(url)
        # The settings a run shares with the CLI and TOML are checked where they are defined.
        for name, value in (
            ("transport", transport),
            ("open_timeout_seconds", open_timeout_seconds),
            ("read_timeout_seconds", read_timeout_seconds),
            ("max_reconnects", max_reconnects),
        ):
            check(name, value)
        for label, value in (
            ("backoff_start_seconds", backoff_start_seconds),
            ("backoff_max_seconds", backoff_max_seconds),
        ):
            if not value > 0:
                raise VidlightError(f"{label} must be > 0, got {value!r}")
        if backoff_factor < 1:
            raise VidlightError(f"backoff_factor must be >= 1, got {backoff_factor!r}")
        if buffer_frames < 1:
            raise VidlightError(f"buffer_frames must be >= 1, got {buffer_frames!r}")
        self.transport = transport
        self.open_timeout_seconds = float(open_timeout_seconds)
        self.read_timeout_seconds = float(read_timeout_seconds)
        self.reconnect = reconnect
        self.max_reconnects = max_reconnects
        self.backoff = (float(backoff_start_seconds), float(backoff_factor), float(backoff_max_seconds))
        self.stop_event = stop_event or threading.Event()
        self.webcam = bool(_WEBCAM.match(self.url))
        self.input_format = input_format or ("v4l2" if self.webcam else None)
        self.extra_options = dict(options or {})
        self.copy_streams: list = []
        self.corrupt_packets = 0
        self.reconnects = 0
        self.frames_read = 0
        self._secrets = _secrets_of(self.url)
        self._events: queue.Queue = queue.Queue(maxsize=buffer_frames)
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.info: VideoInfo | None = None
        # Timeline state (reader thread only).
        self._last_time: float | None = None
        self._intervals: deque[float] = deque(maxlen=32)
        self._nominal_interval: float | None = None
        self._last_pts: int | None = None
        self._attempts = 0  # reconnection attempts since the last decoded picture
        self._thread = threading.Thread(target=self._run, name="vidlight-live-read", daemon=True)
        self._thread.start()
        # The first picture, a failure, or a close/stop: whichever comes first.
        while not self._ready.wait(0.05):
            if self.stop_event.is_set() or self._closed.is_set():
                self._closed.set()
                raise MediaError(f"stopped while opening {self.name}")
        if self._startup_error is not None:
            raise self._startup_error

    # --- public ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The URL without credentials, for logs and progress bars."""
        return self._scrub(self.url)

    def __iter__(self) -> Iterator[Frame | Reconnected]:
        while True:
            if self._closed.is_set() or self.stop_event.is_set():
                return
            try:
                item = self._events.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, _End):
                self._closed.set()
                if item.error is not None:
                    raise item.error
                return
            yield item

    def close(self) -> None:
        """End iteration now. The reader thread lets go of the stream when FFmpeg returns
        (at most one read or open timeout later) and closes it itself."""
        self._closed.set()

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reader thread ----------------------------------------------------------------------------

    def _stopping(self) -> bool:
        return self._closed.is_set() or self.stop_event.is_set()

    def _scrub(self, text: str) -> str:
        text = redact(str(text))
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _options(self) -> dict[str, str]:
        # FFmpeg otherwise decodes 20 frames to guess the frame rate before the first one is
        # handed out: most of a second on every (re)connection. Two are enough for a guess.
        opts: dict[str, str] = {"fpsprobesize": "2"}
        scheme = self.url.split("://", 1)[0].lower() if "://" in self.url else ""
        read_us = str(int(self.read_timeout_seconds * 1e6))
        if scheme in ("rtsp", "rtsps"):
            opts["rtsp_transport"] = self.transport
            opts["timeout"] = read_us  # socket I/O timeout, also while connecting
        elif scheme in ("http", "https", "rtmp", "udp", "srt"):
            opts["rw_timeout"] = read_us
        if scheme == "rtmp":
            # FFmpeg's RTMP reader learns which streams to expect only from codec ids in the
            # stream's metadata. nginx-rtmp's metadata names none, so opening waited out the
            # whole analyzeduration (5 s by default): every (re)connection stalled 5 s and then
            # handed over 5 s of backlog at once. 1 s still finds streams that are sending.
            opts["analyzeduration"] = "1000000"
        opts.update(self.extra_options)
        return opts

    def _emit(self, item: Any) -> bool:
        """Hand an item to the consumer; False when the source was closed meanwhile."""
        while not self._stopping():
            try:
                self._events.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _open(self) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
        start = time.monotonic()
        try:
            container = av.open(
                self.url,
                format=self.input_format,
                options=self._options(),
                timeout=(self.open_timeout_seconds, self.read_timeout_seconds),
                metadata_errors="ignore",
            )
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise _OpenFailed(self._explain(exc, time.monotonic() - start)) from None
        if not container.streams.video:
            container.close()
            raise _OpenFailed(f"cannot open {self.name}: it has no video stream (is it the right URL or channel?)")
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"  # frame threading would add a frame of delay per thread
        stream.codec_context.flags |= av.codec.context.Flags.low_delay
        return container, stream

    def _explain(self, exc: BaseException, elapsed: float) -> str:
        what = self.name
        err = getattr(exc, "errno", None)
        strerror = self._scrub(str(getattr(exc, "strerror", None) or exc))
        if isinstance(exc, av.error.ExitError) or elapsed >= 0.95 * self.open_timeout_seconds or err == 110:
            hint = (
                f"no answer within {self.open_timeout_seconds:g} s "
                "(is the host reachable, the port right and the stream running?)"
            )
        elif err == 111 or isinstance(exc, ConnectionRefusedError):
            hint = "connection refused (is the camera or server on and the URL right?)"
        elif isinstance(exc, av.error.HTTPUnauthorizedError) or "401" in strerror:
            hint = "authentication failed (check the user name and password)"
        elif isinstance(exc, av.error.HTTPForbiddenError):
            hint = "access forbidden (check the account's rights)"
        elif isinstance(exc, av.error.HTTPNotFoundError) or "404" in strerror:
            hint = "not found (check the path after the host)"
        elif err in (101, 113):
            hint = f"{strerror.lower()} (check the address and the network)"
        elif isinstance(exc, av.error.FileNotFoundError) and self.webcam:
            hint = "no such device (is the webcam plugged in?)"
        elif isinstance(exc, av.error.PermissionError) and self.webcam:
            hint = "permission denied (is your user in the 'video' group?)"
        elif isinstance(exc, av.error.InvalidDataError):
            hint = "no playable stream there (check the URL, the path and the transport)"
        else:
            hint = f"{strerror} (check the URL and that the stream is running)"
        return f"cannot open {what}: {hint}"

    def _frame_time(self, frame: av.VideoFrame, stream: av.video.stream.VideoStream, session: dict) -> float:
        """Seconds on the output timeline: re-based, continuous across reconnections."""
        now = time.monotonic()
        if session["wall0"] is None:
            session["wall0"] = now
        pts = frame.pts
        if pts is not None and stream.time_base:
            if session["pts0"] is None:
                session["pts0"] = pts
                if session.get("clock_timed") and self._last_time is not None:
                    # Frames before this one had no pts (FFmpeg's RTSP reader leaves the first
                    # one without): this one follows them by a frame interval.
                    session["offset"] = self._last_time + self._interval()
            t = session["offset"] + float((pts - session["pts0"]) * stream.time_base)
            last = self._last_time
            if last is not None and (t < last - self._interval() or t > last + self.read_timeout_seconds + 1):
                # A jump the stream cannot really have made (camera clock reset, wrap): go on
                # from where we are, as after a reconnection.
                log.info("%s: timestamp discontinuity of %.2f s; re-basing", self.name, t - last)
                session["offset"], session["pts0"] = last + self._interval(), pts
                t = session["offset"]
            return t
        # No timestamp: the wall clock is the best we know.
        session["clock_timed"] = True
        return session["offset"] + now - session["wall0"]

    def _interval(self) -> float:
        if self._intervals:
            return statistics.median(self._intervals)
        return self._nominal_interval or 1 / 25

    def _stamp(self, t: float) -> tuple[int, float]:
        pts = round(t / LIVE_TIME_BASE)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # strictly increasing, whatever the camera sends
        t = float(pts * LIVE_TIME_BASE)
        if self._last_time is not None and t - self._last_time > 0:
            self._intervals.append(t - self._last_time)
        self._last_pts, self._last_time = pts, t
        return pts, t

    def _session(self, container, stream, first: bool, lost_at: float | None) -> tuple[bool, float]:
        """Decode one connection until it ends. Returns (any frame decoded, wall time of the last)."""
        offset = 0.0 if self._last_time is None else self._last_time + self._interval()
        session = {"pts0": None, "wall0": None, "offset": offset}
        rate = stream.average_rate or stream.guessed_rate
        if rate and 1 <= rate <= 240:
            self._nominal_interval = float(1 / rate)
        self._intervals.clear()  # the new connection may run at another rate
        info = None
        last_wall = lost_at or time.monotonic()
        got = False
        # Packets that never make a picture (waiting for a keyframe that does not come) must
        # not hold the opening forever.
        deadline = time.monotonic() + self.open_timeout_seconds + self.read_timeout_seconds
        try:
            for packet in container.demux(stream):
                if self._stopping():
                    break
                if info is None and time.monotonic() > deadline:
                    log.warning(
                        "%s: connected, but no picture decoded in %.0f s",
                        self.name,
                        self.open_timeout_seconds + self.read_timeout_seconds,
                    )
                    break
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    self.corrupt_packets += 1
                    continue
                for frame in frames:
                    if info is None:
                        info = info_from_frame(frame, stream)
                        if first:
                            self.info = info
                            self._ready.set()
                        else:
                            self.reconnects += 1
                            downtime = time.monotonic() - (lost_at or time.monotonic())
                            log.info(
                                "%s: reconnected after %.2f s (%dx%d)", self.name, downtime, frame.width, frame.height
                            )
                            if not self._emit(Reconnected(self.reconnects, downtime, frame.width, frame.height)):
                                return True, last_wall
                    pts, t = self._stamp(self._frame_time(frame, stream, session))
                    rgb = frame_to_rgb(frame, info)
                    got = True
                    self._attempts = 0
                    last_wall = time.monotonic()
                    self.frames_read += 1
                    if not self._emit(Frame(rgb, pts, t)):
                        return got, last_wall
        except av.error.FFmpegError as exc:
            if not self._stopping():
                log.warning("%s: stream lost (%s)", self.name, self._scrub(str(getattr(exc, "strerror", None) or exc)))
        finally:
            container.close()
        return got, last_wall

    def _run(self) -> None:
        try:
            try:
                container, stream = self._open()
            except _OpenFailed as exc:
                self._startup_error = MediaError(str(exc))
                self._ready.set()
                return
            got, lost_at = self._session(container, stream, True, None)
            if not got and not self._stopping():
                self._startup_error = MediaError(
                    f"cannot open {self.name}: connected, but no picture could be decoded within "
                    f"{self.open_timeout_seconds + self.read_timeout_seconds:g} s (is the stream sending video?)"
                )
                self._ready.set()
                return
            while not self._stopping() and self.reconnect:
                log.warning("%s: disconnected; reconnecting", self.name)
                reopened = self._reconnect()
                if reopened is None:
                    break
                got, lost_at = self._session(*reopened, False, lost_at)
        except BaseException as exc:  # a bug: hand it to the consumer rather than lose it
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()
                return
            self._emit(_End(exc))
            return
        self._emit(_End())

    def _reconnect(self) -> tuple[Any, Any] | None:
        start, factor, cap = self.backoff
        delay = min(start * factor**self._attempts, cap)
        while not self._stopping():
            if self.max_reconnects is not None and self._attempts >= self.max_reconnects:
                log.warning("%s: giving up after %d reconnection attempt(s)", self.name, self._attempts)
                return None
            if self.stop_event.wait(delay) or self._closed.is_set():
                return None
            self._attempts += 1
            try:
                return self._open()
            except _OpenFailed as exc:
                log.info("%s: attempt %d failed: %s", self.name, self._attempts, exc)
            delay = min(delay * factor, cap)
        return None


def _secrets_of(url: str) -> list[str]:
    """The credential strings in ``url``, raw and percent-decoded, longest first."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    except ValueError:
        userinfo = ""
    if userinfo:
        found.add(userinfo)
        for piece in userinfo.split(":", 1):
            if len(piece) >= 3:  # too short a string would mask innocent text
                found.update({piece, unquote(piece)})
    for match in _SECRET_PARAM.finditer(url):
        value = url[match.end(1) : match.end()]
        if len(value) >= 3:
            found.update({value, unquote(value)})
    return sorted(found, key=len, reverse=True)


# --- image folders -------------------------------------------------------------------------------


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class ImageDirSource:
    """Reads a folder of images (png, jpg, bmp, tif) in natural order as a video.

    Frame ``i`` has ``pts = i`` in a time base of ``1/fps``. 16-bit images stay 16-bit.
    Unreadable images are skipped with a warning and counted in :attr:`corrupt_packets`.

    Args:
        path: the folder.
        fps: the frame rate to give the sequence.
        sequence: the pictures are the frames of one video. By default they are unrelated
            (:attr:`stills`): the pipeline treats each as a scene of its own.
    """

    live = False
    reconnects = 0

    def __init__(self, path: str | os.PathLike, *, fps: float = 25.0, sequence: bool = False) -> None:
        self.stills = not sequence  # each picture its own scene: nothing carried over from the one before
        import cv2  # only image folders need OpenCV

        self._cv2 = cv2
        self.path = Path(path)
        if not self.path.is_dir():
            raise MediaError(f"image folder {self.path} does not exist")
        check("fps", fps)
        self.rate = Fraction(fps).limit_denominator(1001)
        self.files = sorted(
            (
                p
                for p in self.path.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            ),
            key=_natural_key,
        )
        if not self.files:
            raise MediaError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.path}")
        self.copy_streams: list = []
        self.corrupt_packets = 0
        self._bad: set[Path] = set()
        first = None
        for p in self.files:
            first = self._read(p)
            if first is not None:
                break
        if first is None:
            raise MediaError(f"none of the {len(self.files)} images in {self.path} could be read")
        height, width = first.shape[:2]
        depth = 16 if first.dtype == np.uint16 else 8
        self.info = VideoInfo(
            width=width,
            height=height,
            time_base=1 / self.rate,
            average_rate=self.rate,
            frames=len(self.files),
            duration_seconds=float(len(self.files) / self.rate),
            # Images are RGB; the output is tagged BT.709 with limited range, as video tools do.
            colorspace=int(Colorspace.ITU709),
            matrix=_MATRIX_OF_TAG[int(Colorspace.ITU709)],
            color_range=int(ColorRange.MPEG),
            color_primaries=1,
            color_trc=1,
            bit_depth=depth,
            rotation=0,
            codec="image",
        )

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    @property
    def unreadable(self) -> list[Path]:
        """The images skipped so far because they could not be read, in order."""
        return sorted(self._bad, key=_natural_key)

    def _read(self, path: Path) -> np.ndarray | None:
        if path in self._bad:
            return None
        cv2 = self._cv2
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None or image.dtype not in (np.uint8, np.uint16) or image.ndim not in (2, 3):
            self._bad.add(path)
            self.corrupt_packets += 1
            log.warning("skipping unreadable image %s", path)
            return None
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        elif image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        else:
            self._bad.add(path)
            self.corrupt_packets += 1
            log.warning("skipping image %s: %d channels", path, image.shape[2])
            return None
        return np.ascontiguousarray(image)

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.files):
            rgb = self._read(path)
            if rgb is not None:
                yield Frame(rgb, index, float(index / self.rate))

    def close(self) -> None:
        pass


# --- one entry point -----------------------------------------------------------------------------

_LIVE_OPTIONS = {
    "transport",
    "open_timeout_seconds",
    "read_timeout_seconds",
    "reconnect",
    "max_reconnects",
    "backoff_start_seconds",
    "backoff_factor",
    "backoff_max_seconds",
    "stop_event",
    "input_format",
    "options",
    "buffer_frames",
}
_IMAGE_OPTIONS = {"fps", "sequence"}
_FILE_OPTIONS = {"threads"}


def open_source(spec: str | os.PathLike, **options: Any):
    """Open a video file, a stream URL, a webcam or an image folder, as :func:`classify` decides.

    ``options`` are those of :class:`LiveSource`, :class:`ImageDirSource` (``fps``, ``sequence``) and
    :class:`~vidlight.io.files.FileSource` (``threads``); the ones that do not apply to the
    kind of source are ignored, so that a caller can pass all its settings.

    Returns:
        a FileSource, LiveSource or ImageDirSource; each has ``info``, ``copy_streams``,
        ``corrupt_packets``, ``name``, ``live``, ``close()`` and iteration.
    """
    unknown = set(options) - _LIVE_OPTIONS - _IMAGE_OPTIONS - _FILE_OPTIONS
    if unknown:
        valid = ", ".join(sorted(_LIVE_OPTIONS | _IMAGE_OPTIONS | _FILE_OPTIONS))
        raise VidlightError(f"unknown source option(s) {', '.join(sorted(unknown))}; valid: {valid}")
    spec = str(spec)
    kind = classify(spec)
    if kind in ("url", "webcam"):
        return LiveSource(spec, **{k: v for k, v in options.items() if k in _LIVE_OPTIONS})
    if kind == "images":
        return ImageDirSource(spec, **{k: v for k, v in options.items() if k in _IMAGE_OPTIONS})
    path = spec[len("file://") :] if spec.startswith("file://") else spec
    return FileSource(path, **{k: v for k, v in options.items() if k in _FILE_OPTIONS})


def source_with(spec: str | os.PathLike, settings: SourceSettings, *, stop_event: threading.Event | None = None):
    """:func:`open_source` with a run's source settings (transport, timeouts, reconnects, fps)."""
    return open_source(
        spec,
        transport=settings.transport,
        open_timeout_seconds=settings.open_timeout_seconds,
        read_timeout_seconds=settings.read_timeout_seconds,
        reconnect=settings.reconnect,
        max_reconnects=settings.max_reconnects,
        fps=settings.fps,
        sequence=settings.sequence,
        stop_event=stop_event,
    )
