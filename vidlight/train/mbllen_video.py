"""Supervised training of MBLLEN's video variant on synthetic dark clips.

Data: :mod:`vidlight.train.video_data` (camera motion over normal-light stills, MBLLEN-style
gamma darkening, Poisson noise). Loss: MBLLEN's structure loss (1 - SSIM; MBLLEN's MS-SSIM term
is left out, the crops are too small for its scales) + its region loss (darkest 40 % of the
target's pixels weighted 4, the rest 1, L1). MBLLEN's third term, the VGG-19 context loss, is
left out: no pretrained feature network is available offline. Adam (betas 0.9 / 0.999) with a
cosine learning-rate decay; Glorot-uniform initialisation with zero biases, as Keras (MBLLEN's
framework) does. Every ``eval_every`` steps the model is scored (PSNR, 8-bit) on fixed held-out
clips synthesised from held-out images, and the best is saved as a plain state dict.

Deterministic for a given seed and thread count (``torch.use_deterministic_algorithms``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from vidlight.metrics import psnr, quantize, ssim
from vidlight.models.mbllen_video import MBLLENVideo
from vidlight.train.data import read_rgb, reproducible, split_images
from vidlight.train.losses import mbllen_loss
from vidlight.train.video_data import ClipSynthesizer, clips_to_tensor, heldout_clips

M = TypeVar("M", bound=nn.Module)


@dataclass
class MBLLENVideoTrainConfig:
    """Settings of :func:`train_mbllen_video`.

    Attributes:
        data: folder of normal-light images, or a folder with a ``high/`` subfolder (LOL layout).
        out: weights file to write (a state dict of the best held-out step).
        report: where to write a JSON report (config, evaluation history, best step); None: none.
        iterations: optimiser steps.
        crop: side of the training clips, pixels.
        frames: frames per training clip.
        batch_size: clips per step.
        lr, min_lr: the cosine schedule's start and end learning rate.
        eval_every: steps between held-out evaluations (and at the end).
        eval_clips, eval_crop, eval_frames: the held-out clips scored for checkpoint selection.
        holdout_every: every this-th image file (sorted) is held out of training.
        seed: initialisation and training-clip seed.
        threads: torch threads.
    """

    data: str
    out: str
    iterations: int = 2000
    crop: int = 64
    frames: int = 6
    batch_size: int = 2
    lr: float = 1e-3
    min_lr: float = 1e-5
    eval_every: int = 200
    eval_clips: int = 8
    eval_crop: int = 96
    eval_frames: int = 8
    holdout_every: int = 10
    seed: int = 0
    threads: int = 1
    report: str | None = None


def image_folder(data: str | Path) -> Path:
    """The folder holding the normal-light images: ``data/high`` if it exists, else ``data``."""
    data = Path(data)
    return data / "high" if (data / "high").is_dir() else data


def init_like_keras(model: M) -> M:
    """Glorot-uniform weights and zero biases (Keras defaults, as MBLLEN was trained)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def to_uint8_frames(clip: torch.Tensor) -> np.ndarray:
    """3 x T x H x W float clip -> T x H x W x 3 uint8 (rounded)."""
    return quantize(clip.permute(1, 2, 3, 0)).numpy()


@torch.no_grad()
def score_clips(enhance, clips: list[tuple[np.ndarray, np.ndarray]], *, with_ssim: bool = False) -> dict[str, float]:
    """Mean per-frame PSNR (and SSIM) of ``enhance(dark)`` against the bright clips, both 8-bit.

    ``enhance`` maps a 1 x 3 x T x H x W dark clip to the enhanced clip of that shape."""
    psnrs, ssims = [], []
    for dark, bright in clips:
        out = to_uint8_frames(enhance(clips_to_tensor([dark]))[0])
        ref = to_uint8_frames(clips_to_tensor([bright])[0])
        for o, r in zip(out, ref):
            psnrs.append(psnr(o, r))
            if with_ssim:
                ssims.append(ssim(o, r))
    scores = {"psnr": float(np.mean(psnrs))}
    if with_ssim:
        scores["ssim"] = float(np.mean(ssims))
    return scores


def train_mbllen_video(cfg: MBLLENVideoTrainConfig, log=print) -> dict:
    """Train :class:`MBLLENVideo` and save the best held-out weights to ``cfg.out``."""
    with reproducible(cfg.seed, cfg.threads):
        return _train_mbllen_video(cfg, log)


def _train_mbllen_video(cfg: MBLLENVideoTrainConfig, log) -> dict:
    train_paths, held_paths = split_images(image_folder(cfg.data), cfg.holdout_every)
    clips = ClipSynthesizer([read_rgb(p) for p in train_paths], crop=cfg.crop, frames=cfg.frames, seed=cfg.seed)
    held = heldout_clips(
        [read_rgb(p) for p in held_paths], count=cfg.eval_clips, crop=cfg.eval_crop, frames=cfg.eval_frames
    )
    log(f"training on {len(train_paths)} images, selecting on {len(held)} clips from {len(held_paths)} held-out images")

    net = init_like_keras(MBLLENVideo())
    optim = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, cfg.iterations, eta_min=cfg.min_lr)
    best = {"psnr": -1.0, "iteration": 0}
    history = []
    start = time.perf_counter()
    running = 0.0
    for it in range(1, cfg.iterations + 1):
        net.train()
        dark, bright = clips.batch(cfg.batch_size)
        optim.zero_grad(set_to_none=True)
        loss = mbllen_loss(net.forward_clip(dark), bright)
        loss.backward()
        optim.step()
        sched.step()
        running += loss.item()
        if it % cfg.eval_every == 0 or it == cfg.iterations:
            net.eval()
            score = score_clips(net.forward_clip, held)["psnr"]
            mean_loss = running / (cfg.eval_every if it % cfg.eval_every == 0 else it % cfg.eval_every)
            running = 0.0
            history.append({"iteration": it, "loss": mean_loss, "heldout_psnr": score})
            log(f"iter {it}: loss {mean_loss:.4f} held-out PSNR {score:.3f} dB ({time.perf_counter() - start:.0f} s)")
            if score > best["psnr"]:
                best = {"psnr": score, "iteration": it}
                Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
                torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, cfg.out)
    report = {"config": asdict(cfg), "best": best, "history": history, "seconds": time.perf_counter() - start}
    if cfg.report:
        Path(cfg.report).write_text(json.dumps(report, indent=1))
    return report
