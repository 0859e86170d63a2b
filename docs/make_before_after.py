#!/usr/bin/env python3
"""The README's before/after picture, from the project's own sample clip.

Runs ``samples/dark_street.mp4`` through ``vidlight.enhance_video`` with the defaults (SCI,
``--strength auto``, smoothing on) and puts frame 45 of the input and of the output side by
side, each labelled with its mean luma.

    python docs/make_before_after.py            # writes docs/before-after.jpg
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import av
import cv2
import numpy as np

import vidlight

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "dark_street.mp4"
FRAME = 45


def frame_of(path: Path, index: int) -> np.ndarray:
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")
    raise ValueError(f"{path} has no frame {index}")


def labelled(rgb: np.ndarray, text: str) -> np.ndarray:
    luma = float((rgb.astype(np.float64) @ [0.299, 0.587, 0.114]).mean())
    bar = np.zeros((28, rgb.shape[1], 3), np.uint8)
    cv2.putText(
        bar, f"{text}: mean luma {luma:.0f}", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA
    )
    return np.vstack([bar, rgb])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.mp4"
        vidlight.enhance_video(SAMPLE, out, progress=False)
        before, after = frame_of(SAMPLE, FRAME), frame_of(out, FRAME)
    picture = np.hstack([labelled(before, "input"), labelled(after, "vidlight process (defaults)")])
    dest = ROOT / "docs" / "before-after.jpg"
    cv2.imwrite(str(dest), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
