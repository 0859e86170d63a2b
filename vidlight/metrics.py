"""Image quality metrics, computed as the LOL evaluations in ../shared/reference do.

PSNR and SSIM follow scikit-image's defaults on 8-bit RGB (``data_range=255``; SSIM
with a 7x7 uniform window, sample covariance, per-channel mean, borders cropped).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def quantize(x: torch.Tensor, *, rounding: str = "round") -> torch.Tensor:
    """Float image(s) in [0, 1] -> uint8, rounding (``"round"``) or truncating (``"trunc"``,
    as SCI's official ``test.py`` does)."""
    scaled = x.clamp(0, 1) * 255.0
    if rounding == "round":
        scaled = scaled + 0.5
    elif rounding != "trunc":
        raise ValueError(f"Invalid rounding ({rounding!r}). Supported values are round, trunc.")
    return scaled.to(torch.uint8)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB over all pixels and channels."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, win_size: int = 7) -> float:
    """Mean SSIM of two H x W x C (or H x W) images, as ``skimage.metrics.structural_similarity``."""
    x = torch.from_numpy(np.asarray(a, np.float64))
    y = torch.from_numpy(np.asarray(b, np.float64))
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    x, y = x.permute(2, 0, 1)[:, None], y.permute(2, 0, 1)[:, None]  # C x 1 x H x W

    def mean(t: torch.Tensor) -> torch.Tensor:  # valid window means == skimage's cropped filter
        return F.avg_pool2d(t, win_size, stride=1)

    n = win_size * win_size
    cov_norm = n / (n - 1)
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s.mean(dim=(1, 2, 3)).mean())


def score_pairs(model: torch.nn.Module, low_dir, high_dir, *, rounding: str = "round") -> dict[str, float]:
    """Mean PSNR / SSIM of ``model`` on paired low/normal-light images (matched by file name),
    quantised to 8 bits with ``rounding`` as the method's official test script does."""
    from vidlight.train.data import image_paths, read_rgb, to_tensor

    psnrs, ssims = [], []
    for low in image_paths(low_dir):
        high = read_rgb(f"{high_dir}/{low.name}")
        with torch.no_grad():
            out = quantize(model(to_tensor(read_rgb(low))), rounding=rounding)[0].permute(1, 2, 0).numpy()
        psnrs.append(psnr(out, high))
        ssims.append(ssim(out, high))
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "images": len(psnrs)}
