"""Every registered model through ``vidlight process`` on a video: each output frame is the
model's own output for its input frame (within the codec's loss), and differs from the input."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import vidlight
from vidlight.cli import main

from formula import fixture_weights
from media import mean_abs_diff, read_video, simple_clip

FRAMES = 3
# Models whose output for a frame depends on its neighbours (the batch is one clip).
TEMPORAL = {"mbllen-video"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory):
    return simple_clip(tmp_path_factory.mktemp("clip") / "in.mp4", width=64, height=48, n=FRAMES)


@pytest.fixture(scope="module")
def weights_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.mark.parametrize("name", sorted(set(vidlight.list_models()) - TEMPORAL))
def test_every_model_runs_through_process(
    name: str, clip, shared_dir: Path, weights_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIDLIGHT_WEIGHTS_DIR", str(shared_dir / "weights"))
    weights = fixture_weights(name, shared_dir, weights_folder)
    out = tmp_path / "out.mp4"
    args = [
        "process",
        str(clip.path),
        str(out),
        "-m",
        name,
        "--crf",
        "0",
        "--preset",
        "ultrafast",
        "--no-smooth",
        "--strength",
        "1",
        "--no-progress",
    ]
    result = CliRunner().invoke(main, args + (["-w", weights] if weights else []))
    assert result.exit_code == 0, result.output

    decoded_in = np.stack(read_video(clip.path).frames)
    decoded_out = np.stack(read_video(out).frames)
    assert decoded_out.shape == decoded_in.shape
    model = vidlight.load_model(name, weights=weights)
    with torch.inference_mode():
        x = torch.from_numpy(decoded_in).permute(0, 3, 1, 2).float() / 255
        expected = (model(x).clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    luma_out = _luma_plane(out)
    luma_expected = _luma(expected, read_video(out))
    for i in range(FRAMES):
        codec_loss = mean_abs_diff(luma_out[i], luma_expected[i])
        assert codec_loss < 1.0, f"{name} frame {i}: luma differs by {codec_loss:.2f} from the model's output"
        assert mean_abs_diff(expected[i], decoded_in[i]) > 4, f"{name} frame {i} is the input"


def _luma_plane(path: Path) -> np.ndarray:
    """The Y plane as stored (lossless x264 keeps it exactly; 4:2:0 chroma would not be)."""
    with av.open(str(path)) as container:
        planes = []
        for frame in container.decode(video=0):
            plane = frame.planes[0]
            rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            planes.append(rows[:, : plane.width].astype(np.float64))
    return np.stack(planes)


def _luma(rgb: np.ndarray, tags) -> np.ndarray:
    """Y of RGB frames by the output's own matrix and range, computed here from the tags."""
    kr, kb = {1: (0.2126, 0.0722)}.get(tags.colorspace, (0.299, 0.114))  # 1: BT.709, else BT.601
    y = kr * rgb[..., 0] + (1 - kr - kb) * rgb[..., 1] + kb * rgb[..., 2]
    return y if tags.color_range == 2 else 16 + y * 219 / 255


def test_clip_model_slides_behind_the_previous_frames(tmp_path: Path) -> None:
    """mbllen-video, batches of 3: each batch runs as one clip behind the previous batch's
    last two frames, computed here window by window from the decoded input."""
    clip = simple_clip(tmp_path / "in.mp4", width=64, height=48, n=7)
    out = tmp_path / "out.mp4"
    args = [
        "process",
        str(clip.path),
        str(out),
        "-m",
        "mbllen-video",
        "-b",
        "3",
        "--crf",
        "0",
        "--preset",
        "ultrafast",
        "--no-smooth",
        "--strength",
        "1",
        "--no-progress",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    decoded_in = np.stack(read_video(clip.path).frames)
    model = vidlight.load_model("mbllen-video")
    assert model.clip_context == 2
    x = torch.from_numpy(decoded_in).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        windows = [model(x[0:3]), model(x[1:6])[2:], model(x[4:7])[2:]]
    expected = (torch.cat(windows).clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    with torch.inference_mode():
        alone = (model(x[3:6]).clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    luma_out = _luma_plane(out)
    tags = read_video(out)
    for i in range(7):
        assert mean_abs_diff(luma_out[i], _luma(expected[i : i + 1], tags)[0]) < 1.0, f"frame {i}"
    # the context matters: the second batch run on its own differs
    assert mean_abs_diff(expected[3], alone[0]) > 0.05
