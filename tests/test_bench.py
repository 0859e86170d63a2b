"""`vidlight bench` runs and reports every figure (speed targets live in its output, not here)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from vidlight.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "dark_street.mp4"


def test_bench_reports_all_figures():
    result = CliRunner().invoke(main, ["bench", str(SAMPLE), "--height", "72", "--frames", "8", "--repeat", "2"])
    assert result.exit_code == 0, result.output
    for name in ("I/O floor", "naive per-frame loop", "vidlight end to end", "model alone", "model forward"):
        assert name in result.output
    assert "vidlight / naive loop" in result.output and "128x72, 8 frames" in result.output
