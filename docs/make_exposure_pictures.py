#!/usr/bin/env python3
"""Before/after pictures at several exposures, from the project's own sample scene.

The night street of ``samples/make_sample.py`` is rendered normally exposed (frame 45 of the
sample clip, before its darkening), then darkened in linear light by each factor of
``EXPOSURES`` with a camera's shot and read noise (as ``benchmarks/exposure.py`` darkens its
ladder). Each darkened picture goes through ``vidlight.enhance_video`` as a one-image folder,
with SCI at strength 1 (the official method) and at the default ``auto``. The rows of
``docs/exposure.jpg`` are the exposures; the columns: input, strength 1, auto; each tile is
labelled with its mean luma.

    python docs/make_exposure_pictures.py            # writes docs/exposure.jpg
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "samples"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from exposure import darken  # noqa: E402  (the benchmark's camera model)
from make_sample import render_frames  # noqa: E402

import vidlight  # noqa: E402

EXPOSURES = (1.0, 0.3, 0.1, 0.03, 0.01)
FRAME = 45
LUMA = np.array([0.299, 0.587, 0.114])


def enhance(image: np.ndarray, work: Path, strength: float | str) -> np.ndarray:
    src, dst = work / "in", work / f"out-{strength}"
    src.mkdir(exist_ok=True)
    cv2.imwrite(str(src / "frame.png"), image[..., ::-1])
    vidlight.enhance_video(src, str(dst) + "/", model="sci", strength=strength, progress=False, overwrite=True)
    return cv2.imread(str(next(dst.glob("*.png"))))[..., ::-1]


def label(tile: np.ndarray, text: str) -> np.ndarray:
    tile = tile.copy()
    cv2.rectangle(tile, (0, 0), (tile.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(tile, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "exposure.jpg")
    p.add_argument("--width", type=int, default=320, help="width of each tile")
    args = p.parse_args()
    frames = render_frames(640, 360, FRAME + 1, seed=0)
    clean = [f for i, f in enumerate(frames) if i == FRAME][0]
    clean = np.round(clean * 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in EXPOSURES:
            dark = darken(clean, k, rng)
            work = Path(tmp) / f"k{k}"
            work.mkdir()
            tiles = []
            for name, image in (
                ("input", dark),
                ("SCI strength 1", enhance(dark, work, 1.0)),
                ("SCI auto (default)", enhance(dark, work, "auto")),
            ):
                small = cv2.resize(image, (args.width, args.width * 9 // 16), interpolation=cv2.INTER_AREA)
                luma = float((image @ LUMA).mean())
                tiles.append(label(small, f"{name}, k={k:g}: luma {luma:.0f}"))
            rows.append(np.hstack(tiles))
    cv2.imwrite(str(args.out), np.vstack(rows)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
