#!/usr/bin/python3
"""A real RTSP server for the tests, built on GStreamer's gst-rtsp-server.

Runs under the *system* python (``/usr/bin/python3``), the one that can import ``gi``;
the test harness in ``tests/rtsp.py`` starts it as a subprocess.

    /usr/bin/python3 tests/rtsp_server.py --port 0 --camera /cam=clip.mp4 --record /in

``--camera MOUNT=FILE`` serves FILE as a live camera: a pipeline of our own decodes the
file in real time, looping forever, into an ``intervideosink``; the RTSP mount reads the
current picture from the matching ``intervideosrc`` and encodes it with x264 (zero
latency, a key frame every second), so a client that joins at any time sees the picture
of that moment, like a real camera. The media is shared between clients.

``--record MOUNT`` accepts an H.264 push (ANNOUNCE/RECORD) at MOUNT; the pushed pictures
are decoded into an ``intervideosink`` and re-served, re-encoded, at ``MOUNT-play`` to any
number of independent readers.

Prints ``READY <port>`` on stdout once listening (``--port 0`` picks a free port) and
exits cleanly on SIGTERM or SIGINT. Errors go to stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
from fractions import Fraction

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def log(message: str) -> None:
    print(f"rtsp_server: {message}", file=sys.stderr, flush=True)


def _encode_tail(fps: Fraction, width: int, height: int) -> str:
    """x264 tuned for two-core test machines, then RTP packetisation.

    The fastest preset, no look-ahead (tune=zerolatency also disables B-frames), and a key
    frame every second so that a client joining at any time starts within a second.
    ``threads=1`` keeps one slice per frame: with zerolatency's sliced threads, FFmpeg's RTSP
    reader (PyAV 18) returned each slice as its own frame, the rest of the picture green.
    """
    gop = max(1, round(fps))
    # ~0.1 bit per pixel per frame: sharp enough for brightness checks, cheap to encode.
    kbps = max(256, min(8000, int(width * height * float(fps) * 0.1 / 1000)))
    return (
        f"x264enc tune=zerolatency speed-preset=ultrafast threads=1 key-int-max={gop} bitrate={kbps} "
        "! rtph264pay name=pay0 pt=96 config-interval=-1"
    )


class Camera:
    """A video file decoded in real time in a loop, published on an inter-video channel."""

    def __init__(self, mount: str, path: str, channel: str) -> None:
        self.mount, self.path, self.channel = mount, path, channel
        desc = (
            "filesrc name=file "
            # parse_launch links only decodebin's video pad; an audio pad stays unlinked,
            # which the demuxer tolerates while the video pad is linked.
            "! decodebin "
            "! videoconvert ! video/x-raw,format=I420 "
            f"! intervideosink name=sink channel={channel} sync=true"
        )
        self.pipeline = Gst.parse_launch(desc)
        # Set as a property, not in the description: any path works, quotes and spaces included.
        self.pipeline.get_by_name("file").set_property("location", path)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_message)

    def preroll(self) -> Gst.Caps:
        """Bring the pipeline to PAUSED and return the decoded caps (size, frame rate)."""
        self.pipeline.set_state(Gst.State.PAUSED)
        result, _, _ = self.pipeline.get_state(10 * Gst.SECOND)
        if result == Gst.StateChangeReturn.FAILURE:
            error = self.pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
            reason = error.parse_error()[0].message if error is not None else "preroll failed"
            raise RuntimeError(f"camera {self.mount}: cannot decode {self.path}: {reason}")
        caps = self.pipeline.get_by_name("sink").get_static_pad("sink").get_current_caps()
        if caps is None:
            raise RuntimeError(f"no video in {self.path} for camera {self.mount}")
        return caps

    def play(self) -> None:
        self.pipeline.set_state(Gst.State.PLAYING)

    def stop(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)

    def _on_message(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        if message.type == Gst.MessageType.EOS:
            # Loop: a flushing seek back to the start; the pipeline re-bases its clock, so
            # playback continues in real time.
            self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        elif message.type == Gst.MessageType.ERROR:
            err, debug = message.parse_error()
            log(f"camera {self.mount}: {err.message} ({debug})")


def camera_factory(caps: Gst.Caps, channel: str) -> GstRtspServer.RTSPMediaFactory:
    s = caps.get_structure(0)
    width, height = s.get_int("width")[1], s.get_int("height")[1]
    ok, num, den = s.get_fraction("framerate")
    fps = Fraction(num, den) if ok and num > 0 else Fraction(30)
    # The source's size and rate from the first frame. Only these fields: with the decoded
    # caps' chroma-site, intervideosrc fails to negotiate.
    fixed = f"video/x-raw,format=I420,width={width},height={height},framerate={fps.numerator}/{fps.denominator}"
    launch = f"( intervideosrc channel={channel} ! {fixed} ! {_encode_tail(fps, width, height)} )"
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    return factory


def record_factories(channel: str) -> tuple[GstRtspServer.RTSPMediaFactory, GstRtspServer.RTSPMediaFactory]:
    """The push side (RECORD) and the read side of one relay, joined by an inter-video channel."""
    push = GstRtspServer.RTSPMediaFactory()
    push.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
    push.set_launch(
        f"( rtph264depay name=depay0 ! h264parse ! avdec_h264 ! videoconvert "
        f"! video/x-raw,format=I420 ! intervideosink channel={channel} sync=false )"
    )
    # The RTP jitter buffer's default 200 ms would only add delay on a loopback link.
    push.set_latency(50)

    play = GstRtspServer.RTSPMediaFactory()
    # The size is whatever the publisher sends; the rate is intervideosrc's own (30 fps):
    # it repeats the latest pushed picture, and shows black 1 s after the pushes stop.
    play.set_launch(
        f"( intervideosrc channel={channel} ! videoconvert ! video/x-raw,format=I420,framerate=30/1 "
        f"! {_encode_tail(Fraction(30), 1280, 720)} )"
    )
    play.set_shared(True)
    return push, play


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8554, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="MOUNT=FILE",
        help="serve FILE as a looping live camera at MOUNT (repeatable)",
    )
    parser.add_argument(
        "--record",
        action="append",
        default=[],
        metavar="MOUNT",
        help="accept a push at MOUNT and re-serve it at MOUNT-play (repeatable)",
    )
    args = parser.parse_args(argv)
    cameras = []
    for spec in args.camera:
        mount, sep, path = spec.partition("=")
        if not sep or not mount.startswith("/") or not path:
            parser.error(f"--camera wants MOUNT=FILE with MOUNT starting with '/', got {spec!r}")
        cameras.append((mount, path))
    for mount in args.record:
        if not mount.startswith("/") or "=" in mount:
            parser.error(f"--record wants a MOUNT starting with '/', got {mount!r}")
    args.cameras = cameras
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    Gst.init(None)
    loop = GLib.MainLoop()

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()

    cameras = []
    for index, (mount, path) in enumerate(args.cameras):
        camera = Camera(mount, path, channel=f"camera{index}")
        try:
            caps = camera.preroll()
        except RuntimeError as exc:
            log(str(exc))
            camera.stop()
            return 2
        mounts.add_factory(mount, camera_factory(caps, camera.channel))
        cameras.append(camera)
    for index, mount in enumerate(args.record):
        push, play = record_factories(channel=f"record{index}")
        mounts.add_factory(mount, push)
        mounts.add_factory(f"{mount}-play", play)

    if server.attach(None) == 0:
        log(f"cannot listen on 127.0.0.1:{args.port}")
        return 3
    for camera in cameras:
        camera.play()

    def quit_loop() -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, quit_loop)

    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()

    for camera in cameras:
        camera.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
