"""mbllen-video: the 3D network, the streaming window, the clip synthesis, the losses, the
trainer and its CLI, and the bundled weights' quality on held-out synthetic clips."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import vidlight
from vidlight.cli import main
from vidlight.models.mbllen_video import ClipWindow, MBLLENVideo
from vidlight.train.data import read_rgb, split_images
from vidlight.train.losses import mbllen_region_loss, mbllen_structure_loss
from vidlight.train.mbllen_video import MBLLENVideoTrainConfig, score_clips, train_mbllen_video
from vidlight.train.video_data import ClipSynthesis, camera_path, heldout_clips
from vidlight.weights import ASSETS_DIR, get_weights, sha256_of


def _small_net(seed: int = 0) -> MBLLENVideo:
    torch.manual_seed(seed)
    return MBLLENVideo(stages=2, features=4, em_widths=(4, 4, 4)).eval()


# --- the network -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (1, 3, 5, 7), (3, 3, 13, 13), (4, 3, 20, 31), (2, 3, 14, 40)])
def test_forward_keeps_any_size_and_treats_the_batch_as_one_clip(shape):
    net = _small_net()
    x = torch.rand(shape)
    with torch.no_grad():
        out = net(x)
        clip = net.forward_clip(x.permute(1, 0, 2, 3)[None])
    assert out.shape == x.shape and torch.isfinite(out).all() and (out >= 0).all()
    assert torch.equal(out, clip[0].permute(1, 0, 2, 3))
    assert net(x[:0]).shape == (0, 3, *shape[2:])


def test_forward_clip_shapes_and_errors():
    net = _small_net()
    for shape in [(2, 3, 1, 9, 11), (1, 3, 7, 16, 17)]:
        with torch.no_grad():
            assert net.forward_clip(torch.rand(shape)).shape == shape
    with pytest.raises(ValueError, match="N x 3 x T x H x W"):
        net.forward_clip(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        net(torch.rand(1, 4, 16, 16))


def test_frames_mix_in_time_and_clip_ends_are_edge_padded():
    net = _small_net(1)
    with torch.no_grad():
        still = torch.rand(1, 3, 16, 16).expand(5, 3, 16, 16)
        out = net(still)
        # Edge padding in time: a still clip gives the same output on every frame, ends included
        # (zero padding would darken or otherwise change the first and last frames).
        assert torch.allclose(out, out[:1].expand_as(out), atol=1e-6)
        moving = still.clone()
        moving[2] = torch.rand(3, 16, 16)
        changed = (net(moving) - out).abs().flatten(1).amax(1)
    assert (changed > 0).all()  # the receptive field spans the whole 5-frame clip


def test_default_model_is_the_shipped_size():
    record = get_weights("mbllen-video-vidlight")
    assert sum(p.numel() for p in MBLLENVideo().parameters()) == record.num_params


# --- streaming ---------------------------------------------------------------------------------


def _toy_clip_model(frames: torch.Tensor) -> torch.Tensor:
    """A stand-in clip model whose result for a frame depends on the whole window and on the
    frame's position in it, so any error in windowing or blending shows."""
    position = torch.arange(1, frames.shape[0] + 1, dtype=frames.dtype).view(-1, 1, 1, 1)
    return frames * position + frames.mean(0, keepdim=True) + 0.1 * frames.shape[0]


def _offline(model, frames: torch.Tensor, clip_length: int, overlap: int) -> torch.Tensor:
    """The same windows and blend computed independently: windows start every
    clip_length - overlap frames; one is run while it has frames beyond the previous overlap;
    on the ``overlap`` shared frames the newer window's weight is (k + 1) / (overlap + 1)."""
    n = frames.shape[0]
    step = clip_length - overlap
    out = torch.zeros_like(frames)
    start = 0
    while n > 0:
        end = min(start + clip_length, n)
        result = model(frames[start:end])
        for j in range(end - start):
            if start > 0 and j < overlap:
                w = (j + 1) / (overlap + 1)
                out[start + j] = (1 - w) * out[start + j] + w * result[j]
            else:
                out[start + j] = result[j]
        if end == n:
            break
        start += step
        if start + overlap >= n:  # only already-enhanced shared frames would remain
            break
    return out


def _stream(window: ClipWindow, frames: torch.Tensor) -> tuple[list, list]:
    """Push every frame and flush; returns (pts, tensor) pairs and, per output, the push index
    at which it came out (len(frames) for the flush)."""
    outputs, when = [], []
    for i, frame in enumerate(frames):
        got = window.push(frame, pts=100 + 3 * i)
        assert window.pending <= window.clip_length
        outputs += got
        when += [i] * len(got)
    got = window.flush()
    outputs += got
    when += [len(frames)] * len(got)
    return outputs, when


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 8, 9, 13, 14, 20])
@pytest.mark.parametrize("clip_length,overlap", [(8, 2), (4, 0), (4, 2), (1, 0), (3, 1)])
def test_clip_window_equals_offline_windows_and_blend(n, clip_length, overlap):
    frames = torch.rand(n, 3, 4, 5, generator=torch.Generator().manual_seed(n))
    window = ClipWindow(_toy_clip_model, clip_length=clip_length, overlap=overlap)
    outputs, when = _stream(window, frames)
    assert [pts for pts, _ in outputs] == [100 + 3 * i for i in range(n)]  # input order, pts kept
    if n:
        got = torch.stack([t for _, t in outputs])
        assert torch.allclose(got, _offline(_toy_clip_model, frames, clip_length, overlap), atol=1e-6)
    for i, pushed_at in enumerate(when):  # latency bound: at most clip_length - 1 later pushes
        assert pushed_at == n or pushed_at - i <= clip_length - 1
    assert window.pending == 0 and window.flush() == []


def test_clip_window_with_the_network():
    net = _small_net(2)
    frames = torch.rand(11, 3, 14, 15)
    outputs, _ = _stream(ClipWindow(net, clip_length=4, overlap=1), frames)
    with torch.no_grad():
        expected = _offline(net, frames, 4, 1)
    assert torch.allclose(torch.stack([t for _, t in outputs]), expected, atol=1e-6)


def test_clip_window_reset_starts_afresh():
    frames = torch.rand(12, 3, 4, 4)
    window = ClipWindow(_toy_clip_model, clip_length=4, overlap=2)
    first = []
    for i in range(5):
        first += window.push(frames[i], i)
    first += window.reset()
    assert [p for p, _ in first] == list(range(5)) and window.pending == 0
    second, _ = _stream(window, frames[5:])
    got = torch.stack([t for _, t in first + second])
    expected = torch.cat([_offline(_toy_clip_model, frames[:5], 4, 2), _offline(_toy_clip_model, frames[5:], 4, 2)])
    assert torch.allclose(got, expected, atol=1e-6)
    # A new size needs a reset first; after it, the new size is fine.
    window.push(frames[0], 0)
    with pytest.raises(ValueError, match="reset"):
        window.push(torch.rand(3, 6, 6), 1)
    assert len(window.reset()) == 1
    assert window.push(torch.rand(3, 6, 6), 2) == [] and len(window.flush()) == 1


def test_clip_window_validates_its_settings():
    with pytest.raises(ValueError, match="overlap"):
        ClipWindow(_toy_clip_model, clip_length=4, overlap=3)
    with pytest.raises(ValueError, match="clip_length"):
        ClipWindow(_toy_clip_model, clip_length=0, overlap=0)
    with pytest.raises(ValueError, match="3 x H x W"):
        ClipWindow(_toy_clip_model).push(torch.rand(1, 3, 4, 4), 0)


# --- clip synthesis -------------------------------------------------------------------------------


def _tiny_images(root: Path, n: int = 12, size: tuple[int, int] = (100, 120)) -> Path:
    """Synthetic smooth colour images (gradients plus blobs), written as PNG."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32)
    for i in range(n):
        image = np.empty((*size, 3), np.float32)
        for c in range(3):
            fx, fy, phase = rng.uniform(0.02, 0.1), rng.uniform(0.02, 0.1), rng.uniform(0, 6)
            image[..., c] = 0.5 + 0.45 * np.sin(fx * xx + fy * yy + phase)
        cv2.imwrite(str(root / f"{i:03d}.png"), (image * 255).astype(np.uint8))
    return root


def test_split_holds_out_every_tenth_file(tmp_path):
    folder = _tiny_images(tmp_path / "imgs", n=25)
    train, held = split_images(folder)
    assert [p.name for p in held] == ["000.png", "010.png", "020.png"]
    assert len(train) == 22 and not set(train) & set(held)


def test_synthetic_clips_are_deterministic_dark_and_move_smoothly(tmp_path):
    images = [read_rgb(p) for p in sorted(_tiny_images(tmp_path / "imgs", n=3).iterdir())]
    a = heldout_clips(images, count=4, crop=32, frames=5, seed=7)
    b = heldout_clips(images, count=4, crop=32, frames=5, seed=7)
    for (dark, bright), (dark2, bright2) in zip(a, b):
        assert np.array_equal(dark, dark2) and np.array_equal(bright, bright2)
        assert dark.shape == bright.shape == (5, 32, 32, 3)
        assert dark.mean() < 0.6 * bright.mean()
        assert np.array_equal(np.round(dark * 255) / 255, dark)  # 8-bit levels
    maps = camera_path(np.random.default_rng(1), (100, 120), 32, 8, ClipSynthesis(pan_pixels_per_frame=(3.0, 3.0)))
    offsets = maps[:, :, 2]
    assert np.allclose(np.diff(offsets, 2, axis=0), 0, atol=1e-2)  # straight line at constant speed (+ zoom)
    steps = np.linalg.norm(np.diff(offsets, axis=0), axis=1)
    assert 2.0 < steps.mean() < 5.0
    for m in maps:  # every window inside the image
        corners = m[:, :2] @ np.array([[-0.5, 31.5], [-0.5, 31.5]]) + m[:, 2:]
        assert corners.min() >= -0.51 and corners[0].max() <= 119.51 and corners[1].max() <= 99.51


# --- losses -----------------------------------------------------------------------------------------


def test_region_loss_weights_the_darkest_40_percent_by_4():
    target = torch.arange(10, dtype=torch.float32).view(1, 1, 1, 10).expand(1, 3, 1, 10).contiguous() / 10
    output = target.clone()
    output[..., :4] += 0.5  # errors only in the 4 darkest pixels
    assert torch.allclose(mbllen_region_loss(output, target), torch.tensor(4 * 0.5))
    output = target.clone()
    output[..., 4:] -= 0.3  # errors only in the 6 brighter ones
    assert torch.allclose(mbllen_region_loss(output, target), torch.tensor(0.3))
    clip = torch.rand(2, 3, 4, 16, 16)
    assert torch.allclose(  # clips are scored frame by frame
        mbllen_region_loss(clip * 0.5, clip),
        mbllen_region_loss((clip * 0.5).transpose(1, 2).flatten(0, 1), clip.transpose(1, 2).flatten(0, 1)),
    )


def test_structure_loss_is_one_minus_ssim():
    x = torch.rand(2, 3, 4, 24, 24, generator=torch.Generator().manual_seed(0))
    assert float(mbllen_structure_loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    assert 0.05 < float(mbllen_structure_loss(noisy, x)) < float(mbllen_structure_loss(torch.rand_like(x), x))


# --- the trainer and its command ----------------------------------------------------------------


def test_training_is_deterministic_and_loadable(tmp_path):
    data = _tiny_images(tmp_path / "data")
    reports = []
    for run in ("a", "b"):
        cfg = MBLLENVideoTrainConfig(
            str(data),
            str(tmp_path / run / "w.pt"),
            iterations=3,
            crop=24,
            frames=3,
            batch_size=1,
            eval_every=2,
            eval_clips=1,
            eval_crop=24,
            eval_frames=3,
            seed=5,
        )
        reports.append(train_mbllen_video(cfg, log=lambda _: None))
    a = torch.load(tmp_path / "a" / "w.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "w.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert reports[0]["history"] == reports[1]["history"] and len(reports[0]["history"]) == 2
    model = vidlight.load_model("mbllen-video", weights=str(tmp_path / "a" / "w.pt"))
    out = model(torch.rand(3, 3, 20, 30))
    assert out.shape == (3, 3, 20, 30) and torch.isfinite(out).all()


def test_train_cli(tmp_path):
    data = _tiny_images(tmp_path / "data")
    out, report = tmp_path / "cli.pt", tmp_path / "report.json"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "mbllen-video",
            "--data",
            str(data),
            "--out",
            str(out),
            "--iterations",
            "2",
            "--crop",
            "24",
            "--frames",
            "3",
            "--batch-size",
            "1",
            "--eval-every",
            "1",
            "--eval-clips",
            "1",
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.is_file() and report.is_file() and "best held-out PSNR" in result.output


# --- the bundled weights ------------------------------------------------------------------------


def test_bundled_weights_load_by_default():
    record = get_weights("mbllen-video-vidlight")
    path = ASSETS_DIR / record.file_name
    assert record.bundled and path.is_file() and path.stat().st_size == record.size_bytes < 5_000_000
    assert sha256_of(path) == record.sha256
    model = vidlight.load_model("mbllen-video")  # offline (the autouse fixture)
    assert model.weights_name == "mbllen-video-vidlight"
    assert sum(p.numel() for p in model.parameters()) == record.num_params
    frames = torch.rand(4, 3, 17, 23) * 0.1
    assert model(frames).shape == frames.shape


def test_bundled_weights_enhance_heldout_synthetic_clips(shared_dir):
    """A small version of the catalogue's figures: 4 fixed clips from held-out LOL images."""
    _, held = split_images(shared_dir / "data" / "lol_train485" / "high")
    clips = heldout_clips([read_rgb(p) for p in held[:4]], count=4, crop=64, frames=6)
    model = vidlight.load_model("mbllen-video")
    dark = score_clips(lambda clip: clip, clips)["psnr"]
    ours = score_clips(model.forward_clip, clips)["psnr"]
    assert ours > dark + 8.0, (dark, ours)
