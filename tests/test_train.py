"""SCI training: the loss against a term-by-term computation, determinism, the CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from click.testing import CliRunner

import vidlight
from vidlight.cli import main
from vidlight.train.losses import sci_smoothness
from vidlight.train.sci import SCITrainConfig, SCITrainingNet, train_sci


def _smoothness_24_terms(image: torch.Tensor, illum: torch.Tensor, sigma: float = 10.0) -> torch.Tensor:
    """The official loss's 24 neighbour terms, each written out as an explicit pair of slices."""
    m = torch.tensor([[0.257, 0.504, 0.098], [-0.148, -0.291, 0.439], [0.439, -0.368, -0.071]], dtype=image.dtype)
    y = torch.einsum("dc,nchw->ndhw", m, image) + torch.tensor([16.0, 128.0, 128.0]).view(1, 3, 1, 1) / 255
    h, w = image.shape[-2:]
    total = 0.0
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            if (dy, dx) == (0, 0):
                continue
            ys, yd = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
            xs, xd = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
            wgt = torch.exp(-((y[..., ys, xs] - y[..., yd, xd]) ** 2).sum(1, keepdim=True) / (2 * sigma**2))
            grad = (illum[..., ys, xs] - illum[..., yd, xd]).abs().sum(1, keepdim=True)
            total = total + torch.mean(wgt * wgt * grad)
    return total


def test_smoothness_equals_the_24_official_terms():
    g = torch.Generator().manual_seed(1)
    image, illum = torch.rand(2, 3, 17, 23, generator=g), torch.rand(2, 3, 17, 23, generator=g)
    ours = sci_smoothness(image, illum)
    assert torch.allclose(ours, _smoothness_24_terms(image, illum), rtol=1e-5)
    assert float(sci_smoothness(image, torch.full_like(illum, 0.3))) == 0.0  # flat illumination costs nothing


def _tiny_dataset(root: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("low", "high"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        high = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
        low = (high.astype(np.float32) * 0.15).astype(np.uint8)
        cv2.imwrite(str(root / "high" / f"{i}.png"), high)
        cv2.imwrite(str(root / "low" / f"{i}.png"), low)
    return root


def test_training_is_deterministic_and_loadable(tmp_path):
    data = _tiny_dataset(tmp_path / "data")
    reports = []
    for run in ("a", "b"):
        cfg = SCITrainConfig(
            str(data),
            str(tmp_path / run / "w.pt"),
            iterations=6,
            crop=32,
            batch_size=2,
            eval_every=3,
            holdout_every=4,
            seed=3,
        )
        threads = torch.get_num_threads()
        reports.append(train_sci(cfg, log=lambda _: None))
        # the process's settings are put back (training sets its own thread count and determinism)
        assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    a = torch.load(tmp_path / "a" / "w.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "w.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert reports[0]["history"] == reports[1]["history"]
    model = vidlight.load_model("sci", weights=str(tmp_path / "a" / "w.pt"))
    out = model(torch.rand(1, 3, 20, 30))
    assert out.shape == (1, 3, 20, 30) and torch.isfinite(out).all()


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    net = SCITrainingNet()
    x = torch.rand(2, 3, 32, 32) * 0.2
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = net.loss(x).item()
    for _ in range(30):
        opt.zero_grad()
        net.loss(x).backward()
        opt.step()
    assert net.loss(x).item() < 0.8 * first


def test_train_cli(tmp_path):
    data = _tiny_dataset(tmp_path / "data")
    out = tmp_path / "cli.pt"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "sci",
            "--data",
            str(data),
            "--out",
            str(out),
            "--iterations",
            "2",
            "--crop",
            "32",
            "--eval-every",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.is_file() and "best held-out PSNR" in result.output
