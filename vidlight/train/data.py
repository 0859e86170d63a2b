"""Training images held in memory as uint8, served as random crops."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from vidlight.errors import VidlightError
from vidlight.io.files import IMAGE_SUFFIXES


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as H x W x 3 uint8 RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise VidlightError(f"cannot read image {path}")
    return np.ascontiguousarray(bgr[..., ::-1])


def image_paths(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise VidlightError(f"image directory {directory} does not exist")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise VidlightError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {directory}")
    return paths


def split_images(directory: str | Path, holdout_every: int = 10) -> tuple[list[Path], list[Path]]:
    """(training, held-out) image files of ``directory``: every ``holdout_every``-th file by
    sorted name is held out."""
    if holdout_every < 2:
        raise VidlightError(f"holdout_every must be >= 2, got {holdout_every}")
    paths = image_paths(directory)
    held = [p for i, p in enumerate(paths) if i % holdout_every == 0]
    train = [p for i, p in enumerate(paths) if i % holdout_every != 0]
    if not train:
        raise VidlightError(f"{directory} has too few images to hold every {holdout_every}th out and still train")
    return train, held


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """N x H x W x 3 (or H x W x 3) uint8 -> N x 3 x H x W float32 in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    if t.ndim == 3:
        t = t[None]
    return t.permute(0, 3, 1, 2).float().div_(255.0)


class RandomCrops:
    """Random ``crop`` x ``crop`` patches (with random horizontal flips) from in-memory images."""

    def __init__(self, images: list[np.ndarray], crop: int, seed: int) -> None:
        self.images = images
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> torch.Tensor:
        out = np.empty((size, self.crop, self.crop, 3), np.uint8)
        for k in range(size):
            img = self.images[self.rng.integers(len(self.images))]
            h, w = img.shape[:2]
            y = self.rng.integers(h - self.crop + 1)
            x = self.rng.integers(w - self.crop + 1)
            patch = img[y : y + self.crop, x : x + self.crop]
            out[k] = patch[:, ::-1] if self.rng.integers(2) else patch
        return to_tensor(out)


@contextlib.contextmanager
def reproducible(seed: int, threads: int) -> Iterator[None]:
    """Seeded, deterministic torch on ``threads`` threads inside the block; the process's
    thread count and determinism setting are put back after it (a program that trains and
    then enhances keeps its own)."""
    previous = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])
