"""Synthetic (dark, bright) video clips from still images, for training video enhancers.

A clip is a camera moving over a normal-light still: a square window pans along a straight line
at constant speed and zooms slightly (its side changes linearly), and each frame is that window
resampled (bilinear) to ``crop`` x ``crop``. The bright clip is those frames; the dark clip is
the same frames darkened as MBLLEN's synthetic data is (gamma and a linear scale) with Poisson
(shot) noise drawn independently per frame, then quantised to 8 bits like decoded video.

Per clip, drawn from one ``numpy.random.Generator`` (so a seed fixes every clip):

* start zoom ``z0 ~ U[1.0, 1.4]`` (window side = ``z0 * crop`` source pixels), end zoom
  ``z0 * U[0.9, 1.1]`` (clamped so the window fits the image);
* pan speed ``~ U[0, 3]`` source pixels per frame, direction uniform on the circle; the start
  position uniform over the positions where the whole path stays inside the image;
* horizontal flip with probability 1/2;
* darkening ``dark = scale * bright ** gamma`` with ``gamma ~ U[2, 3.5]``, ``scale ~ U[0.5, 1]``;
* noise ``Poisson(dark * peak) / peak`` with ``peak ~ U[50, 200]`` (photons at full scale), then
  ``round(255 x) / 255`` clipped to [0, 1].

Held-out split (:func:`vidlight.train.data.split_images`): every ``holdout_every``-th image file by sorted name
(10 %: files 0, 10, 20, ...) is held out and never used for training.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from vidlight.errors import VidlightError

# Seed of the held-out evaluation clips: fixed, independent of the training seed, so every run
# (and the report's figures) scores the same clips.
HELDOUT_SEED = 2018


@dataclass(frozen=True)
class ClipSynthesis:
    """Ranges of the random clip parameters (see the module docstring)."""

    zoom: tuple[float, float] = (1.0, 1.4)
    zoom_change: tuple[float, float] = (0.9, 1.1)
    pan_pixels_per_frame: tuple[float, float] = (0.0, 3.0)
    gamma: tuple[float, float] = (2.0, 3.5)
    scale: tuple[float, float] = (0.5, 1.0)
    peak: tuple[float, float] = (50.0, 200.0)


def camera_path(
    rng: np.random.Generator, image_hw: tuple[int, int], crop: int, frames: int, params: ClipSynthesis
) -> np.ndarray:
    """``frames`` 2 x 3 affine maps (output pixel -> source pixel) of a window panning along a
    line and zooming linearly over an image of size ``image_hw``."""
    h, w = image_hw
    fit = min(h, w) / crop  # the largest zoom whose window still fits
    if fit < 1:
        raise VidlightError(f"image of {w}x{h} is smaller than the {crop}x{crop} crop")
    z0 = min(rng.uniform(*params.zoom), fit)
    z1 = min(z0 * rng.uniform(*params.zoom_change), fit)
    speed = rng.uniform(*params.pan_pixels_per_frame)
    angle = rng.uniform(0, 2 * np.pi)
    side = crop * np.linspace(z0, z1, frames)
    travel = speed * (frames - 1) * np.array([np.cos(angle), np.sin(angle)])
    # Window centres: start + travel * t. Keep every window inside: start bounds from both ends.
    lo = np.maximum(side[0] / 2, side[-1] / 2 - travel)
    hi = np.minimum(np.array([w, h]) - side[0] / 2, np.array([w, h]) - side[-1] / 2 - travel)
    travel = np.where(lo <= hi, travel, 0.0)  # a path too long for the image: stand still
    lo = np.maximum(side[0] / 2, side[-1] / 2 - travel)
    hi = np.minimum(np.array([w, h]) - side[0] / 2, np.array([w, h]) - side[-1] / 2 - travel)
    start = rng.uniform(lo, np.maximum(lo, hi))
    t = np.linspace(0.0, 1.0, frames)
    maps = np.zeros((frames, 2, 3), np.float64)
    for k in range(frames):
        centre = start + travel * t[k]
        step = side[k] / crop  # source pixels per output pixel
        maps[k, 0, 0] = maps[k, 1, 1] = step
        # Output pixel centre u + 0.5 lands at window_left + (u + 0.5) * step (pixel centres at +0.5).
        maps[k, :, 2] = centre - side[k] / 2 + 0.5 * step - 0.5
    return maps


def render_clip(image: np.ndarray, maps: np.ndarray, crop: int) -> np.ndarray:
    """T x crop x crop x 3 float32 in [0, 1]: ``image`` (uint8 RGB) resampled through each map."""
    frames = [
        cv2.warpAffine(
            image, m, (crop, crop), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101
        )
        for m in maps
    ]
    return np.stack(frames).astype(np.float32) / np.float32(255.0)


def darken(bright: np.ndarray, rng: np.random.Generator, params: ClipSynthesis) -> np.ndarray:
    """MBLLEN-style darkening of a T x H x W x 3 clip in [0, 1], with per-frame Poisson noise,
    quantised to 8 bits; one gamma, scale and peak per clip."""
    gamma = rng.uniform(*params.gamma)
    scale = rng.uniform(*params.scale)
    peak = rng.uniform(*params.peak)
    dark = scale * np.power(bright.astype(np.float64), gamma)
    noisy = rng.poisson(dark * peak) / peak
    return (np.round(np.clip(noisy, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def synthesize_clip(
    image: np.ndarray, rng: np.random.Generator, *, crop: int, frames: int, params: ClipSynthesis = ClipSynthesis()
) -> tuple[np.ndarray, np.ndarray]:
    """One (dark, bright) pair of T x crop x crop x 3 float32 clips from an RGB uint8 image."""
    maps = camera_path(rng, image.shape[:2], crop, frames, params)
    bright = render_clip(image, maps, crop)
    if rng.integers(2):
        bright = np.ascontiguousarray(bright[:, :, ::-1])
    return darken(bright, rng, params), bright


def clips_to_tensor(clips: list[np.ndarray]) -> torch.Tensor:
    """List of T x H x W x 3 float32 clips -> N x 3 x T x H x W tensor."""
    return torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).contiguous()


class ClipSynthesizer:
    """Endless random (dark, bright) training clips from in-memory uint8 RGB images."""

    def __init__(
        self, images: list[np.ndarray], *, crop: int, frames: int, seed: int, params: ClipSynthesis = ClipSynthesis()
    ) -> None:
        if not images:
            raise VidlightError("no training images")
        self.images = images
        self.crop = crop
        self.frames = frames
        self.params = params
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(dark, bright), each ``size`` x 3 x T x crop x crop."""
        pairs = [
            synthesize_clip(
                self.images[self.rng.integers(len(self.images))],
                self.rng,
                crop=self.crop,
                frames=self.frames,
                params=self.params,
            )
            for _ in range(size)
        ]
        return clips_to_tensor([d for d, _ in pairs]), clips_to_tensor([b for _, b in pairs])


def heldout_clips(
    images: list[np.ndarray],
    *,
    count: int,
    crop: int,
    frames: int,
    seed: int = HELDOUT_SEED,
    params: ClipSynthesis = ClipSynthesis(),
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` fixed (dark, bright) clips, clip k from image ``k mod len(images)``."""
    rng = np.random.default_rng(seed)
    return [
        synthesize_clip(images[k % len(images)], rng, crop=crop, frames=frames, params=params) for k in range(count)
    ]
