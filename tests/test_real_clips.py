"""End to end on the real dark clips of ../shared/data/videos."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

import vidlight
from vidlight.io.files import partial_path

from media import ROUNDED, SWS_MATRIX

CLIPS = {
    # name: (file, frames to process, has audio)
    "phone-portrait": ("nahianfariha_night_street_phone.mp4", None, True),
    "city-1080p": ("guoqi_dark_city_night.mp4", 16, True),
    "cctv-hevc-vfr": ("rfmanz_night_ir_cctv_hevc.mp4", 24, False),
}


def _video(path: Path, limit: int | None = None) -> tuple[list[np.ndarray], list[float], dict]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        cc = s.codec_context
        tags = {"colorspace": cc.colorspace, "color_range": cc.color_range, "size": (cc.width, cc.height)}
        frames, times = [], []
        # The stream's own matrix and range (untagged: BT.709 from 720 lines, as players assume),
        # converted with rounding.
        matrix = SWS_MATRIX.get(cc.colorspace, 1 if cc.height >= 720 else 5)
        full = cc.color_range == 2
        for f in c.decode(s):
            frames.append(
                f.to_ndarray(
                    format="rgb24",
                    src_colorspace=matrix,
                    src_color_range=2 if full else 1,
                    dst_color_range=2,
                    interpolation=ROUNDED,
                )
            )
            times.append(float(f.pts * s.time_base))
            if limit and len(frames) == limit:
                break
    return frames, times, tags


def _audio_payloads(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


@pytest.mark.parametrize("case", sorted(CLIPS))
def test_real_clip_end_to_end(case, shared_dir, official_weights_dir, tmp_path):
    name, limit, has_audio = CLIPS[case]
    src = shared_dir / "data" / "videos" / name
    out = tmp_path / "out.mp4"
    stats = vidlight.enhance_video(
        src, out, model="sci", weights="sci-medium", progress=False, max_frames=limit, strength=1
    )
    assert not partial_path(out).exists()

    frames_in, times_in, tags_in = _video(src, limit)
    frames_out, times_out, tags_out = _video(out)
    assert stats.frames == len(frames_out) == len(frames_in)
    assert np.allclose(times_out, times_in, atol=1e-3)  # same timestamps, VFR included
    if tags_in["colorspace"] == 2:  # untagged: converted as BT.709 (HD) / BT.601 (SD) and tagged so
        tags_in["colorspace"] = 1 if tags_in["size"][1] >= 720 else 5
    assert tags_out == tags_in  # size, matrix and range kept

    if has_audio:
        audio_in, audio_out = _audio_payloads(src), _audio_payloads(out)
        assert audio_out and audio_out == audio_in[: len(audio_out)]  # copied, not re-encoded
        if limit is None:
            assert len(audio_out) == len(audio_in)
    else:
        assert not _audio_payloads(out)

    # Independent check of the picture: the official-style whole-frame forward on the decoded
    # input frame, compared with the decoded output (codec loss only).
    model = vidlight.load_model("sci", weights="sci-medium")
    for k in (0, len(frames_in) // 2, len(frames_in) - 1):
        x = torch.from_numpy(frames_in[k]).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            expected = (model(x)[0].permute(1, 2, 0).numpy() * 255).round()
        got = frames_out[k].astype(np.float64)
        assert np.abs(got - expected).mean() < 3.0, f"frame {k}"
        assert got.mean() > 1.5 * frames_in[k].mean()  # visibly brighter
