"""The CUDA path: pinned staging, fp16, quantisation on the device. Runs on a GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vidlight
from vidlight.pipeline.enhancer import FrameEnhancer
from vidlight.train.data import read_rgb

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
pytestmark = [pytest.mark.needs_cuda, needs_cuda]

MODELS = [("sci", "sci-medium", {}), ("zero-dce", "zero-dce", {}), ("zero-dce++", "zero-dce++", {"scale_factor": 12})]


@pytest.fixture
def frames(shared_dir):
    img = read_rgb(shared_dir / "data" / "lol_eval15" / "low" / "1.png")[:396]
    return [img, np.ascontiguousarray(img[::-1])]


@pytest.mark.parametrize("name,weights,options", MODELS)
def test_cuda_fp32_matches_cpu(official_weights_dir, frames, name, weights, options):
    model = vidlight.load_model(name, weights=weights, **options)
    cpu = FrameEnhancer(model, device=torch.device("cpu"))(frames)
    gpu_enhancer = FrameEnhancer(vidlight.load_model(name, weights=weights, **options), device=torch.device("cuda"))
    gpu = gpu_enhancer(frames)
    assert gpu.dtype == np.uint8 and gpu.shape == cpu.shape
    assert np.abs(gpu.astype(int) - cpu.astype(int)).max() <= 1
    assert all(buf.is_pinned() for buf in gpu_enhancer._pinned.values())


@pytest.mark.parametrize("name,weights,options", MODELS)
def test_cuda_fp16_close_to_fp32(official_weights_dir, frames, name, weights, options):
    fp32 = FrameEnhancer(vidlight.load_model(name, weights=weights, **options), device=torch.device("cuda"))(frames)
    fp16 = FrameEnhancer(vidlight.load_model(name, weights=weights, **options), device=torch.device("cuda"), fp16=True)(frames)
    diff = np.abs(fp16.astype(int) - fp32.astype(int))
    print(f"{name}: fp16 vs fp32 max {diff.max()} levels, mean {diff.mean():.4f}")
    assert diff.mean() < 0.5 and diff.max() <= 8


def test_process_on_cuda(official_weights_dir, tmp_path):
    import av
    from pathlib import Path

    sample = Path(__file__).parents[1] / "samples" / "dark_street.mp4"
    stats = vidlight.enhance_video(sample, tmp_path / "out.mp4", model="sci", weights="sci-medium", device="cuda", progress=False)
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == stats.frames == 90
