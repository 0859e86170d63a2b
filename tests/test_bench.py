"""`vidlight bench` runs and reports every figure (speed targets live in its output, not here)."""

from __future__ import annotations

from pathlib import Path

import av
from click.testing import CliRunner

from vidlight.cli import main
from vidlight.pipeline import runner

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "dark_street.mp4"


def test_bench_reports_all_figures():
    result = CliRunner().invoke(main, ["bench", str(SAMPLE), "--height", "72", "--frames", "8", "--repeat", "2"])
    assert result.exit_code == 0, result.output
    for name in ("I/O floor", "naive per-frame loop", "vidlight end to end", "model alone", "model forward"):
        assert name in result.output
    assert "vidlight / naive loop" in result.output and "128x72, 8 frames" in result.output
    # Every figure of the rounds, the naive loop's included, is a median with its range.
    for name in ("I/O floor", "naive per-frame loop", "vidlight end to end", "model alone"):
        line = next(line for line in result.output.splitlines() if name in line)
        assert ", range " in line, line


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
