"""Scaling of a folder batch on Ray: 1 worker against 2, and the one-process run, in one run.

Makes a folder of clips from the project's sample (samples/dark_street.mp4, repeated to
``--frames`` each), then times, with the defaults of ``vidlight process`` and SCI:

* ``local``: ``vidlight process IN_DIR OUT_DIR`` (one process, one video after another; torch
  uses every core for each video);
* ``ray, 1 worker`` and ``ray, 2 workers``: ``--executor ray --workers N`` on a local Ray
  cluster with one CPU per worker (each worker runs torch single-threaded).

Run: python benchmarks/ray_scaling.py [--videos 4] [--frames 240] [--height 360]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import av

from vidlight import keep_freed_memory
from vidlight.pipeline.folder import enhance_folder

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "dark_street.mp4"


def make_clip(dest: Path, frames: int, height: int) -> None:
    """The sample looped to ``frames`` frames, scaled to ``height`` lines."""
    with av.open(str(SAMPLE)) as src:
        pictures = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
        rate = src.streams.video[0].average_rate
    h, w = pictures[0].shape[:2]
    width = round(w * height / h / 2) * 2
    with av.open(str(dest), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pictures[i % len(pictures)], format="rgb24")
            out.mux(stream.encode(frame.reformat(width=width, height=height, format="yuv420p")))
        out.mux(stream.encode(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--height", type=int, default=360)
    args = parser.parse_args()
    keep_freed_memory()  # as the command line does
    logging.basicConfig(level=logging.WARNING)
    import os

    import ray

    with tempfile.TemporaryDirectory(prefix="vidlight-ray-") as tmp:
        root = Path(tmp)
        folder = root / "in"
        folder.mkdir()
        for i in range(args.videos):
            make_clip(folder / f"clip{i}.mp4", args.frames, args.height)
        total = args.videos * args.frames
        print(
            f"{args.videos} clips x {args.frames} frames at {args.height} lines; SCI, defaults; {os.cpu_count()} CPUs"
        )
        figures = {}
        start = time.perf_counter()
        enhance_folder(folder, root / "local", progress=False)
        figures["local (one process)"] = time.perf_counter() - start
        ray.init(num_cpus=2, logging_level="WARNING", log_to_driver=False)
        try:
            for workers in (1, 2):
                start = time.perf_counter()
                enhance_folder(folder, root / f"ray{workers}", executor="ray", workers=workers, progress=False)
                figures[f"ray, {workers} worker{'s' if workers > 1 else ''}"] = time.perf_counter() - start
        finally:
            ray.shutdown()
        one = figures["ray, 1 worker"]
        for name, seconds in figures.items():
            print(f"  {name:<22} {seconds:6.1f} s  {total / seconds:6.1f} fps  ({one / seconds:.2f}x one Ray worker)")


if __name__ == "__main__":
    main()
