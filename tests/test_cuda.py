"""The CUDA path: pinned staging, fp16, quantisation on the device. Runs on a GPU machine.

``VIDLIGHT_TEST_DEVICE=cpu`` runs these tests with the CPU standing in for the GPU, to check
the tests' own logic on a machine without one (they then compare the CPU with itself).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import vidlight
from vidlight.pipeline.enhancer import FrameEnhancer
from vidlight.train.data import read_rgb

from formula import fixture_weights
from media import write_video

DEVICE = torch.device(os.environ.get("VIDLIGHT_TEST_DEVICE", "cuda"))
ON_GPU = DEVICE.type == "cuda"
needs_cuda = pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
pytestmark = [pytest.mark.needs_cuda, needs_cuda]
CPU = torch.device("cpu")
SAMPLE = Path(__file__).parents[1] / "samples" / "dark_street.mp4"

MODELS = [("sci", "sci-medium", {}), ("zero-dce", "zero-dce", {}), ("zero-dce++", "zero-dce++", {"scale_factor": 12})]


@pytest.fixture
def frames(shared_dir):
    img = read_rgb(shared_dir / "data" / "lol_eval15" / "low" / "1.png")[:396]
    return [img, np.ascontiguousarray(img[::-1])]


def levels_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int64) - b.astype(np.int64))


@pytest.mark.parametrize("name,weights,options", MODELS)
def test_cuda_fp32_matches_cpu(official_weights_dir, frames, name, weights, options):
    model = vidlight.load_model(name, weights=weights, **options)
    cpu = FrameEnhancer(model, device=CPU)(frames)
    gpu_enhancer = FrameEnhancer(vidlight.load_model(name, weights=weights, **options), device=DEVICE)
    gpu = gpu_enhancer(frames)
    assert gpu.dtype == np.uint8 and gpu.shape == cpu.shape
    assert levels_apart(gpu, cpu).max() <= 1
    assert all(buf.is_pinned() for buf in gpu_enhancer._pinned.values()) or not ON_GPU


@pytest.mark.parametrize("name,weights,options", MODELS)
def test_cuda_fp16_close_to_fp32(official_weights_dir, frames, name, weights, options):
    fp32 = FrameEnhancer(vidlight.load_model(name, weights=weights, **options), device=DEVICE)(frames)
    fp16 = FrameEnhancer(vidlight.load_model(name, weights=weights, **options), device=DEVICE, fp16=True)(frames)
    diff = levels_apart(fp16, fp32)
    print(f"{name}: fp16 vs fp32 max {diff.max()} levels, mean {diff.mean():.4f}")
    assert diff.mean() < 0.5 and diff.max() <= 8


def test_sixteen_bit_frames_in_fp16_stay_finite(official_weights_dir, frames):
    """10-bit video and 16-bit PNGs: samples of 65520 and up must not become inf in half."""
    deep = np.concatenate([f.astype(np.uint16) * 257 for f in frames])[None]
    deep[0, :40] = 65535  # a saturated band
    fp16 = FrameEnhancer(vidlight.load_model("sci", weights="sci-medium"), device=DEVICE, fp16=True)(deep)
    cpu = FrameEnhancer(vidlight.load_model("sci", weights="sci-medium"), device=CPU)(deep)
    assert fp16.dtype == np.uint16
    assert levels_apart(fp16, cpu).max() / 257 <= 8 and levels_apart(fp16, cpu).mean() / 257 < 0.5


def test_sixteen_bit_output_of_eight_bit_frames(official_weights_dir, frames):
    """keep_precision: the temporal stage gets 16-bit frames from the device as from the CPU."""
    gpu = FrameEnhancer(vidlight.load_model("sci", weights="sci-medium"), device=DEVICE, keep_precision=True)(frames)
    cpu = FrameEnhancer(vidlight.load_model("sci", weights="sci-medium"), device=CPU, keep_precision=True)(frames)
    assert gpu.dtype == np.uint16 and levels_apart(gpu, cpu).max() <= 257


def test_clip_context_carries_across_batches(frames):
    """mbllen-video runs each batch behind the previous batch's last frames, on the device too."""
    clip = [np.ascontiguousarray(np.roll(frames[0], 3 * t, axis=1)) for t in range(6)]
    gpu = FrameEnhancer(vidlight.load_model("mbllen-video"), device=DEVICE)
    cpu = FrameEnhancer(vidlight.load_model("mbllen-video"), device=CPU)
    for batch in (clip[:3], clip[3:]):
        assert levels_apart(gpu(batch), cpu(batch)).max() <= 1
    assert gpu._context is not None and gpu._context.device.type == DEVICE.type


@pytest.mark.parametrize("name", ["kind", "mbllen"])
def test_statistics_averaged_on_the_device(shared_dir, tmp_path, monkeypatch, frames, name):
    """KinD's min-max and MBLLEN's percentiles, averaged over time, read back from the device."""
    monkeypatch.setenv("VIDLIGHT_WEIGHTS_DIR", str(shared_dir / "weights"))
    weights = fixture_weights(name, shared_dir, tmp_path)
    options = {"postprocess": True} if name == "mbllen" else {}
    small = [f[:128, :160] for f in frames]
    seconds = [0.0, 1 / 30]
    outs = []
    for device in (DEVICE, CPU):
        enhancer = FrameEnhancer(
            vidlight.load_model(name, weights=weights, **options), device=device, statistics_time=0.5
        )
        outs.append(enhancer(small, seconds))
        assert enhancer.statistics is not None and enhancer.statistics._state
    assert levels_apart(*outs).max() <= 2


def test_tiles_on_the_device(shared_dir, tmp_path, monkeypatch, frames):
    """A fixed tile on the device against whole frames there (KinD++: local, 1e-5 on the CPU)."""
    monkeypatch.setenv("VIDLIGHT_WEIGHTS_DIR", str(shared_dir / "weights"))
    weights = fixture_weights("kind++", shared_dir, tmp_path)
    small = [f[:192, :256] for f in frames]
    whole = FrameEnhancer(vidlight.load_model("kind++", weights=weights), device=DEVICE, tile=0)(small)
    tiled = FrameEnhancer(vidlight.load_model("kind++", weights=weights), device=DEVICE, tile=128)(small)
    assert levels_apart(whole, tiled).max() <= 1


def test_llflow_on_the_device(shared_dir, tmp_path, monkeypatch, frames):
    """LLFlow's preprocessing (padding, histogram equalisation) and flow run on the device."""
    monkeypatch.setenv("VIDLIGHT_WEIGHTS_DIR", str(shared_dir / "weights"))
    weights = fixture_weights("llflow-small", shared_dir, tmp_path)
    small = [f[:96, :128] for f in frames]
    gpu = FrameEnhancer(vidlight.load_model("llflow-small", weights=weights), device=DEVICE)(small)
    cpu = FrameEnhancer(vidlight.load_model("llflow-small", weights=weights), device=CPU)(small)
    assert levels_apart(gpu, cpu).mean() < 0.5 and levels_apart(gpu, cpu).max() <= 4


def test_process_on_cuda(official_weights_dir, tmp_path):
    import av

    stats = vidlight.enhance_video(
        SAMPLE, tmp_path / "out.mp4", model="sci", weights="sci-medium", device=str(DEVICE), progress=False
    )
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == stats.frames == 90


def test_serve_on_cuda(official_weights_dir, tmp_path, frames):
    from vidlight.pipeline.serve import Stream, serve

    streams = []
    for name, frame in zip("ab", frames):
        clip = write_video(tmp_path / f"{name}.mp4", [frame[:128, :160]] * 12)
        streams.append(Stream(name, str(clip.path), str(tmp_path / f"{name}-out.mp4")))
    report = serve(streams, model="sci", weights="sci-medium", device=str(DEVICE), batch_size=4)
    assert not report.failures and all(s.frames == 12 for s in report.streams.values())


def test_bench_on_cuda(official_weights_dir):
    """bench's three runs share the device: the naive loop's fp32 model next to the pipeline's."""
    from vidlight.bench import run_bench

    figures = run_bench(SAMPLE, weights="sci-medium", device=str(DEVICE), max_frames=20, repeat=1, log=lambda *a: None)
    assert figures and all(f.frames == 20 for f in figures.values())


@pytest.mark.skipif(not ON_GPU, reason="NVENC needs the GPU itself")
def test_process_with_nvenc(official_weights_dir, tmp_path):
    """h264_nvenc at --crf 18 writes every frame, within a few levels of libx264's picture."""
    from media import read_video

    outputs = {}
    for codec in ("libx264", "h264_nvenc"):
        out = tmp_path / f"{codec}.mp4"
        vidlight.enhance_video(SAMPLE, out, model="sci", weights="sci-medium", device=str(DEVICE), codec=codec)
        outputs[codec] = read_video(out).frames
    assert len(outputs["h264_nvenc"]) == len(outputs["libx264"]) == 90
    diff = levels_apart(np.stack(outputs["h264_nvenc"]), np.stack(outputs["libx264"]))
    assert diff.mean() < 2.0
