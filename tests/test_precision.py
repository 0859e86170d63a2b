"""What a CPU can check of the device path: half-precision input scaling, TF32, the device
string, Zero-DCE's chunking, the tile and the host buffers per frame size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from vidlight.errors import VidlightError
from vidlight.models.zero_dce import CURVE_ITERATIONS, apply_curve_sequence
from vidlight.pipeline import tiling
from vidlight.pipeline.enhancer import FrameEnhancer, exact_fp32, resolve_device, to_model_input


def test_16_bit_frames_stay_finite_in_half_precision():
    # Every 16-bit level, 10-bit video's top levels (65472..65535) included.
    levels = np.arange(0, 65536, dtype=np.int64)
    frames = torch.from_numpy(levels.astype(np.uint16).reshape(1, 256, 256, 1).repeat(3, axis=3))
    x = to_model_input(frames, torch.float16)
    assert x.dtype == torch.float16 and x.shape == (1, 3, 256, 256)
    assert torch.isfinite(x).all()
    expected = torch.from_numpy((levels / 65535.0).astype(np.float32)).reshape(256, 256).half()
    assert torch.equal(x[0, 0], expected)
    assert x.max().item() == 1.0


def test_8_bit_frames_scale_as_in_fp32():
    frames = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16, 1).repeat(1, 1, 1, 3)
    x = to_model_input(frames, torch.float32)
    expected = torch.arange(256, dtype=torch.float32).reshape(16, 16) * np.float32(1 / 255)
    assert torch.equal(x[0, 1], expected)


@pytest.mark.parametrize("name", ["mps", "gpu", "cuda:x", "cpu:1", "", "xla"])
def test_a_device_other_than_cpu_or_cuda_is_refused(name):
    with pytest.raises(VidlightError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_cpu_and_auto_resolve():
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_fp32_on_cuda_is_not_tf32():
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        exact_fp32()
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul


class _CountMul(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += func is torch.mul
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "device, shape, launches",
    [
        ("cpu", (2, 3, 64, 1024), 8 * 4),  # 32,768-pixel chunks: 16 rows of 2 x 1024, 4 chunks
        ("meta", (8, 3, 1080, 1920), 8),  # a 1080p batch of 8: once per curve step
    ],
)
def test_zero_dce_chunks_its_curves_on_the_cpu_only(device, shape, launches):
    """On the CPU the 8 curve steps run per cache-sized row chunk; on any other device each
    step runs once over the whole batch."""
    x = torch.full(shape, 0.5, device=device)
    alphas = [torch.full_like(x, 0.1) for _ in range(CURVE_ITERATIONS)]
    with torch.inference_mode(), _CountMul() as counted:
        apply_curve_sequence(x, alphas)
    assert counted.calls == launches


class _Heavy(torch.nn.Module):
    """A stand-in that declares a peak memory per pixel, so --tile auto considers tiling it."""

    peak_bytes_per_pixel = 1000
    receptive_halo = None

    def forward(self, x):
        return x


def test_the_tile_is_chosen_once_per_frame_size(monkeypatch):
    """Batches of 4, then 2, then 4 frames of one size get one tile, whatever the free memory
    does in between; a larger batch or another frame size is chosen again."""
    free = iter([64 * 64 * 1000 * 4, 10**12, 10**12, 32 * 32 * 1000 * 8, 10**12])
    monkeypatch.setattr(tiling, "available_memory", lambda device: next(free))
    enhancer = FrameEnhancer(_Heavy(), device=torch.device("cpu"))
    tiles = [enhancer._tile_for((n, 3, 96, 128)) for n in (4, 2, 4)]
    assert tiles[0] is not None and tiles == [tiles[0]] * 3
    assert enhancer._tile_for((8, 3, 96, 128)) != tiles[0]
    assert enhancer._tile_for((4, 3, 48, 64)) is None


def test_one_host_buffer_per_frame_size_holds_every_batch_size():
    enhancer = FrameEnhancer(_Heavy(), device=torch.device("cpu"), tile=0)
    full = enhancer._buffer("in", (8, 4, 6, 3), torch.uint8)
    short = enhancer._buffer("in", (3, 4, 6, 3), torch.uint8)
    assert short.shape == (3, 4, 6, 3) and short.data_ptr() == full.data_ptr()
    other = enhancer._buffer("in", (2, 8, 6, 3), torch.uint8)
    assert other.shape == (2, 8, 6, 3) and len(enhancer._pinned) == 1
