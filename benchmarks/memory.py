"""Memory in video length: peak resident memory of ``vidlight process`` after N frames.

Each run is a fresh process (``vidlight process SOURCE OUT --max-frames N`` with the defaults),
and its peak RSS is the kernel's ``ru_maxrss`` for that child. A streaming pipeline keeps
nothing per frame, so the peak after 600 frames should be within 10 % of the peak after 150.

    python benchmarks/memory.py                           # the HEVC CCTV clip from ../shared
    python benchmarks/memory.py VIDEO --frames 150 600 1200 -- --model zero-dce++
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
CLIP = SHARED / "data" / "videos" / "rfmanz_night_ir_cctv_hevc.mp4"


def peak_rss_mib(command: list[str]) -> tuple[float, float]:
    """Run ``command`` in a child; its peak RSS in MiB and its wall seconds."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: becomes the command, or ends here
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("video", nargs="?", type=Path, default=CLIP)
    p.add_argument("--frames", type=int, nargs="+", default=[150, 600, 1200])
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = p.parse_args(argv[: len(argv) - len(extra) - (1 if "--" in argv else 0)])
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.frames:
            out = Path(tmp) / f"out-{n}.mp4"
            command = [
                sys.executable,
                "-m",
                "vidlight",
                "process",
                str(args.video),
                str(out),
                "--max-frames",
                str(n),
                "--no-progress",
                "-y",
                *extra,
            ]
            peaks[n], seconds = peak_rss_mib(command)
            print(f"{n:6d} frames: peak RSS {peaks[n]:7.0f} MiB ({seconds:.0f} s)", flush=True)
    first = args.frames[0]
    for n in args.frames[1:]:
        print(f"peak after {n} / after {first} = {peaks[n] / peaks[first]:.3f} (target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
