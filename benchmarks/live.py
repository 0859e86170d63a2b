"""Live figures: latency per frame and memory over a long live run.

A dark synthetic camera (made here: a moving gradient at ~10 % brightness with sensor noise,
``--size``, 30 fps, looped) is served by the tests' GStreamer RTSP server (tests/rtsp.py, on
this machine, so it shares the CPU), and :func:`vidlight.enhance_video` reads it live into the
null sink with the latest-frame policy. Figures:

* **latency**: per frame, from the moment the frame was decoded to the moment it was written;
  median and p95 for the model, and for an identity stand-in over the same pipeline (decode,
  queues, smoothing, sink) measured in the same run: the difference is the latency the model
  adds;
* **memory**: the resident memory of this process (VmRSS) every ``--sample-every`` seconds
  (10); after the first minute, the growth in MB per minute (least squares) and max - min. A
  soak (an hour or more) shows that nothing is kept per frame for the run's life.

    python benchmarks/live.py --size 1280x720 --seconds 60
    python benchmarks/live.py --size 1280x720 --seconds 600 --no-baseline     # memory over 10 min
    python benchmarks/live.py --size 640x360 --seconds 3600 --no-baseline --sample-every 60   # soak
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np

from vidlight import enhance_video, keep_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media import Identity  # noqa: E402  (the tests' helpers)
from rtsp import RtspServer, require_gstreamer  # noqa: E402


def camera_clip(path: Path, width: int, height: int, seconds: float = 2.0) -> Path:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "18"}
        for t in range(int(seconds * 30)):
            base = 12 + 14 * (0.5 + 0.5 * np.sin(x / width * 6.28 + y / height * 3.14 + t * 0.1))
            rgb = np.clip(base[..., None] * np.array([1.0, 0.9, 1.2]) + rng.normal(0, 3, (height, width, 3)), 0, 255)
            c.mux(s.encode(av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")))
        c.mux(s.encode(None))
    return path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class MemoryLog(threading.Thread):
    def __init__(self, every: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self.done = every, [], threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        while not self.done.wait(self.every if self.samples else 0):
            self.samples.append((time.monotonic() - self.start_time, rss_mb()))


def run(url: str, model, seconds: float, batch_size: int | None):
    return enhance_video(url, "null", model=model, duration_seconds=seconds, progress=False, batch_size=batch_size)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="1280x720")
    p.add_argument("--seconds", type=float, default=60.0, help="length of each live run")
    p.add_argument("-m", "--model", default="sci")
    p.add_argument("-b", "--batch-size", type=int, help="frames per model call (default: the pipeline's)")
    p.add_argument("--no-baseline", action="store_true", help="skip the identity run")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds between memory samples")
    args = p.parse_args()
    keep_freed_memory()  # as the command line does
    require_gstreamer()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        clip = camera_clip(Path(tmp) / "camera.mp4", width, height)
        with RtspServer(cameras={"/cam": clip}) as server:
            url = server.url("/cam")
            results = {}
            if not args.no_baseline:
                results["identity"] = run(url, Identity(), min(args.seconds, 30), args.batch_size)
            memory = MemoryLog(args.sample_every)
            memory.start()
            results[args.model] = run(url, args.model, args.seconds, args.batch_size)
            memory.done.set()
            memory.join()
    print(
        f"camera {width}x{height} at 30 fps over RTSP (server on this machine), batch size "
        f"{args.batch_size or 'default'}"
    )
    for name, stats in results.items():
        print(f"{name:10} {stats.summary()}")
    if "identity" in results:
        m, i = results[args.model], results["identity"]
        print(
            f"added by {args.model}: median {1000 * (m.latency(0.5) - i.latency(0.5)):.0f} ms, "
            f"p95 {1000 * (m.latency(0.95) - i.latency(0.95)):.0f} ms per frame"
        )
    t = np.array([s[0] for s in memory.samples])
    mb = np.array([s[1] for s in memory.samples])
    late = t >= 60 if (t >= 60).sum() >= 2 else np.ones_like(t, dtype=bool)
    slope = np.polyfit(t[late] / 60, mb[late], 1)[0] if late.sum() >= 2 else float("nan")
    print(f"memory (RSS, MB) every {args.sample_every:g} s: {' '.join(f'{v:.0f}' for v in mb)}")
    print(f"memory after the first minute: {mb[late].min():.0f}..{mb[late].max():.0f} MB, growth {slope:+.2f} MB/min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
