"""`vidlight bench` runs and reports every figure (speed targets live in its output, not here)."""

from __future__ import annotations

from pathlib import Path

import av
import torch
from click.testing import CliRunner

from vidlight.cli import main
from vidlight.pipeline import runner

from media import gradient, write_video

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "dark_street.mp4"


def test_bench_reports_all_figures():
    result = CliRunner().invoke(main, ["bench", str(SAMPLE), "--height", "72", "--frames", "8", "--repeat", "2"])
    assert result.exit_code == 0, result.output
    figures = ("I/O floor", "naive per-frame loop", "naive loop on vidlight's I/O", "vidlight end to end")
    figures += ("model alone",)
    for name in (*figures, "model forward"):
        assert name in result.output
    assert "vidlight / naive loop = " in result.output and "vidlight / naive loop on vidlight's I/O = " in result.output
    assert "128x72, 8 frames" in result.output
    # Every figure of the rounds, the naive loops' included, is a median with its range.
    for name in figures:
        line = next(line for line in result.output.splitlines() if name in line)
        assert ", range " in line, line


def test_naive_loop_is_pyav_alone(monkeypatch, tmp_path):
    """The naive loop is the one a user writes with PyAV: it neither reads nor writes through
    vidlight's FileSource and FileSink, and it runs the model on every frame."""
    from vidlight import bench
    from vidlight.models import load_model

    clip = bench.make_clip(SAMPLE, tmp_path / "clip.mp4", 72, 6)

    def refuse(*args, **kwargs):
        raise AssertionError("the naive loop went through vidlight's I/O")

    monkeypatch.setattr(bench, "FileSource", refuse)
    monkeypatch.setattr(bench, "FileSink", refuse)
    model = load_model("sci", device="cpu")
    figure = bench._naive(clip, tmp_path / "naive.mp4", model, torch.device("cpu"), "libx264", 18, "veryfast")
    assert figure.frames == 6
    with av.open(str(clip)) as c:
        before = [f.to_ndarray(format="rgb24").mean() for f in c.decode(video=0)]
    with av.open(str(tmp_path / "naive.mp4")) as c:
        after = [f.to_ndarray(format="rgb24").mean() for f in c.decode(video=0)]
    assert len(after) == 6 and all(b > a + 10 for a, b in zip(before, after)), (before, after)


def test_naive_loop_keeps_uneven_timestamps_and_takes_other_encoders(tmp_path):
    """A clip of uneven frame times comes out with the same times; an encoder of RGB samples
    gets a format it takes."""
    from vidlight import bench
    from vidlight.models import load_model

    pts = [0, 3000, 4000, 9000, 9500]
    clip = write_video(tmp_path / "vfr.mp4", [gradient(64, 48, i) // 4 for i in range(5)], pts=pts)
    clip = clip.path
    model = load_model("sci", device="cpu")
    for codec in ("libx264", "libx264rgb"):
        out = tmp_path / f"{codec}.mp4"
        assert bench._naive(clip, out, model, torch.device("cpu"), codec, 18, "veryfast").frames == 5
        with av.open(str(clip)) as a, av.open(str(out)) as b:
            assert [f.pts * f.time_base for f in a.decode(video=0)] == [f.pts * f.time_base for f in b.decode(video=0)]


def test_bench_times_the_pipeline_as_process_runs_it(monkeypatch):
    """Its end-to-end figure is enhance_video with process's defaults (smoothing, auto strength),
    on the clip at its own size unless --height is given."""
    calls = []
    real = runner.enhance_video

    def spy(input, output, settings, **kwargs):
        calls.append(settings.replace(**kwargs).temporal)
        return real(input, output, settings, **kwargs)

    monkeypatch.setattr(runner, "enhance_video", spy)
    result = CliRunner().invoke(main, ["bench", str(SAMPLE), "--frames", "4", "--repeat", "1"])
    assert result.exit_code == 0, result.output
    with av.open(str(SAMPLE)) as c:
        size = f"{c.streams.video[0].width}x{c.streams.video[0].height}"
    assert f"at {size}, 4 frames" in result.output and "strength auto, smoothing on" in result.output
    assert len(calls) == 1 and calls[0].smooth is True and calls[0].strength == "auto"

    calls.clear()
    result = CliRunner().invoke(
        main,
        ["bench", str(SAMPLE), "--frames", "4", "--repeat", "1", "--height", "72", "--no-smooth", "--strength", "1"],
    )
    assert result.exit_code == 0, result.output
    assert calls[0].smooth is False and calls[0].strength == 1.0


def test_bench_shows_where_the_time_goes():
    result = CliRunner().invoke(main, ["bench", str(SAMPLE), "--height", "72", "--frames", "8", "--repeat", "1"])
    assert result.exit_code == 0, result.output
    lines = {line.strip().split("  ")[0]: line for line in result.output.splitlines() if "CPU-ms/frame" in line}
    for stage in ("decode", "colour conversion", "model", "temporal stage", "encode"):
        assert stage in lines and "% of wall" in lines[stage], result.output
    assert any(line.strip().startswith("FFmpeg codec threads") for line in result.output.splitlines())
