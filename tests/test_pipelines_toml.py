"""Ready-made pipeline definitions run through `vidlight run`."""

from __future__ import annotations

from pathlib import Path

import av
from click.testing import CliRunner

from media import simple_clip
from vidlight.cli import main

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def test_file_to_file_pipeline(tmp_path):
    clip = simple_clip(tmp_path / "in.mp4", n=6, audio=True)
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(main, ["run", str(PIPELINES / "file-to-file.toml"), "--no-progress",
                                       "--set", f"source={clip.path}", "--set", f"sink={out}", "--set", "crf=23"])
    assert result.exit_code == 0, result.output
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6
        assert c.streams.audio


def test_pipeline_errors_are_one_line(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["run", str(PIPELINES / "file-to-file.toml")])
    assert missing.exit_code == 1 and "source is not set" in missing.output
    unknown = runner.invoke(main, ["run", str(PIPELINES / "file-to-file.toml"), "--set", "colour=red",
                                   "--set", "source=a.mp4", "--set", "sink=b.mp4"])
    assert unknown.exit_code == 1 and "unknown key 'colour'" in unknown.output
    assert len(unknown.output.strip().splitlines()) == 1 and "Traceback" not in unknown.output
    nofile = runner.invoke(main, ["run", str(tmp_path / "nope.toml")])
    assert nofile.exit_code == 1 and "does not exist" in nofile.output
