"""Zero-reference training of SCI, as the SCI paper and its official ``train.py`` do it.

Three weight-shared stages of the illumination estimator, linked by the
self-calibration module; each stage's loss is 1.5 x fidelity + smoothness. Adam
(lr 3e-4, betas 0.9/0.999, weight decay 3e-4), gradient-norm clipping at 5, the
official initialisation (conv N(0, 0.02), BN gamma N(1, 0.02)). What differs, for a
CPU: random crops instead of whole images, a cosine learning-rate decay, and the
checkpoint is chosen by PSNR on a held-out split of the training pairs.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vidlight.errors import VidlightError
from vidlight.metrics import psnr, quantize
from vidlight.models.sci import SCI, CalibrationNet, IlluminationEstimator
from vidlight.train.data import RandomCrops, read_rgb, reproducible, split_images, to_tensor
from vidlight.train.losses import sci_stage_loss


class SCITrainingNet(nn.Module):
    """The official 3-stage training network (``Network``)."""

    def __init__(self, stages: int = 3) -> None:
        super().__init__()
        self.stages = stages
        self.illumination = IlluminationEstimator()
        self.calibration = CalibrationNet()
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        stage_input = x
        for stage in range(self.stages):
            illumination = self.illumination(stage_input)
            total = total + sci_stage_loss(stage_input, illumination)
            if stage + 1 < self.stages:  # the last calibration feeds no loss term
                reflectance = torch.clamp(x / illumination, 0, 1)
                stage_input = x + self.calibration(reflectance)
        return total

    def inference_model(self) -> SCI:
        model = SCI()
        model.illumination.load_state_dict(self.illumination.state_dict())
        return model.eval()


@dataclass
class SCITrainConfig:
    data: str
    out: str
    iterations: int = 20000
    crop: int = 128
    batch_size: int = 4
    lr: float = 3e-4
    min_lr: float = 1e-5
    weight_decay: float = 3e-4
    eval_every: int = 500
    holdout_every: int = 10
    seed: int = 0
    threads: int = 1


def _split(data: Path, holdout_every: int) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """Training low images, and held-out (low, high) pairs: every ``holdout_every``-th file."""
    train, held_low = split_images(data / "low", holdout_every)
    high_dir = data / "high"
    held = [(p, high_dir / p.name) for p in held_low]
    if not all(h.is_file() for _, h in held):
        raise VidlightError(f"{high_dir} must hold a normal-light image for each held-out low image")
    return train, held


@torch.no_grad()
def heldout_psnr(model: SCI, pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    scores = [
        psnr(quantize(model(to_tensor(lo)), rounding="trunc")[0].permute(1, 2, 0).numpy(), hi) for lo, hi in pairs
    ]
    return float(np.mean(scores))


def train_sci(cfg: SCITrainConfig, log=print) -> dict:
    """Train SCI and save the best held-out inference weights to ``cfg.out``."""
    with reproducible(cfg.seed, cfg.threads):
        return _train_sci(cfg, log)


def _train_sci(cfg: SCITrainConfig, log) -> dict:
    train_paths, held_paths = _split(Path(cfg.data), cfg.holdout_every)
    crops = RandomCrops([read_rgb(p) for p in train_paths], cfg.crop, cfg.seed)
    held = [(read_rgb(lo), read_rgb(hi)) for lo, hi in held_paths]
    log(f"training on {len(train_paths)} images, selecting on {len(held)} held-out pairs")

    net = SCITrainingNet()
    optim = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, cfg.iterations, eta_min=cfg.min_lr)
    best = {"psnr": -1.0, "iteration": 0}
    history = []
    start = time.perf_counter()
    for it in range(1, cfg.iterations + 1):
        net.train()
        optim.zero_grad(set_to_none=True)
        loss = net.loss(crops.batch(cfg.batch_size))
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        optim.step()
        sched.step()
        if it % cfg.eval_every == 0 or it == cfg.iterations:
            score = heldout_psnr(net.inference_model(), held)
            history.append({"iteration": it, "loss": loss.item(), "heldout_psnr": score})
            log(f"iter {it}: loss {loss.item():.4f} held-out PSNR {score:.3f} dB ({time.perf_counter() - start:.0f} s)")
            if score > best["psnr"]:
                best = {"psnr": score, "iteration": it}
                Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
                torch.save(net.inference_model().state_dict(), cfg.out)
    report = {"config": asdict(cfg), "best": best, "history": history}
    Path(cfg.out).with_suffix(".json").write_text(json.dumps(report, indent=1))
    return report
