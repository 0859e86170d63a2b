"""Ready-made pipeline definitions run through `vidlight run`."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import pytest
from click.testing import CliRunner

from vidlight.cli import main
from vidlight.errors import VidlightError

from media import simple_clip

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def test_file_to_file_pipeline(tmp_path):
    clip = simple_clip(tmp_path / "in.mp4", n=6, audio=True)
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(PIPELINES / "file-to-file.toml"),
            "--no-progress",
            "--set",
            f"source={clip.path}",
            "--set",
            f"sink={out}",
            "--set",
            "crf=23",
        ],
    )
    assert result.exit_code == 0, result.output
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6
        assert c.streams.audio
    # Again into the same file: refused with the flag to pass, and that flag replaces it.
    args = ["run", str(PIPELINES / "file-to-file.toml"), "--no-progress", "--set", f"source={clip.path}"]
    again = CliRunner().invoke(main, [*args, "--set", f"sink={out}"])
    assert again.exit_code == 1 and "pass -y/--overwrite" in again.output
    replaced = CliRunner().invoke(main, [*args, "--set", f"sink={out}", "-y"])
    assert replaced.exit_code == 0, replaced.output


def test_pipeline_errors_are_one_line(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["run", str(PIPELINES / "file-to-file.toml")])
    assert missing.exit_code == 1 and "source is not set" in missing.output
    unknown = runner.invoke(
        main,
        [
            "run",
            str(PIPELINES / "file-to-file.toml"),
            "--set",
            "colour=red",
            "--set",
            "source=a.mp4",
            "--set",
            "sink=b.mp4",
        ],
    )
    # given with --set: a usage error (exit 2), as the same flag to `process` is
    assert unknown.exit_code == 2 and "--set" in unknown.output and "unknown key 'colour'" in unknown.output
    assert "Traceback" not in unknown.output
    args = ["run", str(PIPELINES / "file-to-file.toml"), "--set", "source=a.mp4", "--set", "sink=b.mp4"]
    value = runner.invoke(main, [*args, "--set", "strength=7"])
    assert value.exit_code == 2 and "strength must be auto or a number from 0 to 1" in value.output
    option = runner.invoke(main, [*args, "--set", "options.foo=1"])
    assert option.exit_code == 2 and "sci has no option 'foo'" in option.output
    # in the file itself: the file's error, exit 1, in one line
    bad = tmp_path / "bad.toml"
    bad.write_text('source = "a.mp4"\nsink = "b.mp4"\ncolour = "red"\n')
    in_file = runner.invoke(main, ["run", str(bad)])
    assert in_file.exit_code == 1 and "unknown key 'colour'" in in_file.output
    assert len(in_file.output.strip().splitlines()) == 1 and "Traceback" not in in_file.output
    nofile = runner.invoke(main, ["run", str(tmp_path / "nope.toml")])
    assert nofile.exit_code == 1 and "does not exist" in nofile.output


def test_settings_fields_toml_keys_and_flags_are_one_set():
    """One vocabulary: the settings' fields, the TOML keys and `vidlight process`'s options are
    the same set, and each TOML key is its flag's name (with '_' for '-')."""
    import dataclasses

    from vidlight.cli import process
    from vidlight.pipeline.config import KEYS
    from vidlight.settings import GROUPS, fields

    names = {f.name for cls in GROUPS.values() for f in dataclasses.fields(cls)}
    # SOURCE and SINK are arguments, -q only quiets the terminal: neither is a setting
    params = {p.name: p for p in process.params if p.name not in ("source", "sink", "quiet")}
    assert set(params) == names
    assert set(KEYS.values()) - {"source", "sink"} == names
    renamed = {"options": "option"}  # -o/--option KEY=VALUE, repeated, is the TOML table `options`
    for f in fields():
        longs = [o[2:] for o in params[f.name].opts if o.startswith("--")]
        assert renamed.get(f.key, f.key).replace("_", "-") in longs, (f.key, longs)
        assert KEYS[f.key] == f.name


def test_every_ready_pipeline_loads_with_its_required_keys(tmp_path):
    from vidlight.pipeline.config import load_pipeline, load_serve_config

    files = sorted(PIPELINES.glob("*.toml"))
    assert {p.stem for p in files} >= {
        "file-to-file",
        "folder-to-folder",
        "rtsp-relay",
        "camera-recording",
        "multi-camera",
    }
    for path in files:
        if path.stem == "multi-camera":  # for `vidlight serve`
            shared, streams = load_serve_config(path, ["device=cpu"])
            assert shared.engine.device == "cpu" and len(streams) == 2 and all(s.source and s.sink for s in streams)
            continue
        definition = load_pipeline(path, ["source=in.mp4", "sink=out.mp4"])
        assert definition.source == "in.mp4" and definition.sink == "out.mp4"
        # Tried on a recording first, a camera pipeline enhances every frame of it.
        assert definition.settings.source.latest_frame is None, path.name


def test_latest_frame_on_a_file_warns_that_it_drops_frames(tmp_path, caplog):
    clip = simple_clip(tmp_path / "in.mp4", n=4)
    args = ["process", str(clip.path), str(tmp_path / "out.mp4"), "--no-progress", "-m", "sci"]
    with caplog.at_level(logging.WARNING, logger="vidlight"):
        assert CliRunner().invoke(main, args).exit_code == 0
        assert "drops every frame" not in caplog.text
        assert CliRunner().invoke(main, [*args, "-y", "--latest-frame"]).exit_code == 0
    assert "is a file, read as fast as it is enhanced" in caplog.text


def test_folder_of_videos_to_folder(tmp_path, caplog):
    src = tmp_path / "night"
    src.mkdir()
    for name, n in (("a.mp4", 4), ("b.mkv", 5)):
        simple_clip(src / name, n=n)
    (src / "notes.txt").write_text("not a video")
    out = tmp_path / "enhanced"
    args = [
        "run",
        str(PIPELINES / "folder-to-folder.toml"),
        "--no-progress",
        "--set",
        f"source={src}",
        "--set",
        f"sink={out}",
        "--set",
        'preset="ultrafast"',
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mkv"]
    for name, n in (("a.mp4", 4), ("b.mkv", 5)):
        with av.open(str(out / name)) as c:
            assert sum(1 for _ in c.decode(video=0)) == n
    # Run again: both exist, both are skipped (nothing rewritten).
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with caplog.at_level(logging.INFO, logger="vidlight"):
        again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    assert "already" in caplog.text and "0 frames" not in caplog.text  # it says so, not "wrote 0 frames"
    # A name like a video's for the whole folder is refused, and nothing is made.
    wrong = CliRunner().invoke(main, ["process", str(src), str(tmp_path / "all.mp4"), "--no-progress"])
    assert wrong.exit_code == 1 and "goes into a folder" in wrong.output and len(wrong.output.splitlines()) == 1
    assert not (tmp_path / "all.mp4").exists()


def test_a_mistyped_key_gets_a_suggestion_among_all_valid_keys(tmp_path):
    """source and sink included, at the top level, with --set and in a stream's table."""
    from vidlight.pipeline.config import load_serve_config

    result = CliRunner().invoke(
        main, ["run", str(PIPELINES / "file-to-file.toml"), "--set", "sourc=a.mp4", "--set", "sink=b.mp4"]
    )
    assert result.exit_code == 2 and "(did you mean 'source'?); valid keys: source, sink, " in result.output
    definition = tmp_path / "serve.toml"
    definition.write_text('model = "sci"\n[[streams]]\nname = "a"\nsource = "a.mp4"\nsinc = "b.mp4"\n')
    with pytest.raises(VidlightError, match="unknown key 'sinc' \\(did you mean 'sink'\\?\\)"):
        load_serve_config(definition)
    definition.write_text('modle = "sci"\n[[streams]]\nsource = "a.mp4"\nsink = "b.mp4"\n')
    with pytest.raises(VidlightError, match="unknown key 'modle' \\(did you mean 'model'\\?\\)"):
        load_serve_config(definition)
