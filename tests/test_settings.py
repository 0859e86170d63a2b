"""The one settings object: its defaults, its checks, and how the CLI and TOML reach it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from vidlight.cli import main
from vidlight.settings import SettingError, Settings, fields, parse_pairs, parse_value


def test_defaults_are_the_documented_ones():
    s = Settings()
    assert (s.engine.model, s.engine.device, s.engine.batch_size, s.engine.tile, s.engine.tile_overlap) == (
        "sci",
        "auto",
        None,
        "auto",
        64,
    )
    assert (s.temporal.smooth, s.temporal.smooth_time, s.temporal.denoise, s.temporal.strength) == (
        True,
        0.5,
        False,
        "auto",
    )
    assert (s.encoder.codec, s.encoder.crf, s.encoder.preset, s.encoder.segment_seconds) == (
        "libx264",
        18,
        "veryfast",
        None,
    )
    assert (s.source.transport, s.source.open_timeout_seconds, s.source.read_timeout_seconds) == ("tcp", 10.0, 5.0)
    assert (s.run.executor, s.run.overwrite, s.run.progress) == ("local", False, True)


def test_the_cli_passes_exactly_the_defaults_when_no_flag_is_given(monkeypatch):
    seen = []
    monkeypatch.setattr("vidlight.pipeline.runner.enhance_video", lambda src, sink, settings: seen.append(settings))
    result = CliRunner().invoke(main, ["process", "in.mp4", "out.mp4"])
    assert len(seen) == 1, result.output
    assert seen[0] == Settings()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"crf": 64}, "crf must be at least 0 and at most 63, got 64"),
        ({"batch_size": 0}, "batch size must be at least 1, got 0"),
        ({"batch_size": 2.5}, "batch size must be a whole number, got 2.5"),
        ({"smooth_time": 0}, "smooth time must be above 0 seconds"),
        ({"open_timeout_seconds": -1}, "open timeout must be above 0 seconds"),
        ({"transport": "http"}, "invalid transport 'http'; valid: tcp, udp"),
        ({"smooth": "yes"}, "smooth must be true or false, got 'yes'"),
        ({"smooth": False, "denoise": True}, "denoising runs in the smoothing stage"),
        ({"tile": 10}, "tile must be auto, off or a side of at least 64 pixels"),
        ({"strength": 1.5}, "strength must be auto or a number from 0 to 1"),
        ({"segment_seconds": "ten minutes"}, "invalid duration"),
        ({"device": "mps"}, "unknown device 'mps'"),
        ({"model": "zero-dec"}, "did you mean zero-dce"),
        ({"modle": "sci"}, "unknown setting 'modle' \\(did you mean 'model'\\?\\)"),
        ({"executor": "dask"}, "invalid executor 'dask'; valid: local, ray"),
    ],
)
def test_bad_values_are_refused_with_what_is_valid(options, message):
    with pytest.raises(SettingError, match=message):
        Settings.from_options(**options)


def test_values_are_normalised():
    s = Settings.from_options(
        model="Zero-DCE++",
        tile="off",
        strength="0.5",
        segment_seconds="10m",
        model_options=["scale_factor=12"],
    )
    assert s.engine.model == "zero-dce++" and s.engine.tile == 0 and s.temporal.strength == 0.5
    assert s.encoder.segment_seconds == 600.0
    assert s.engine.model_options == {"scale_factor": 12}
    options = Settings.from_options(model="mbllen", model_options=["postprocess=true", "gamma=0.7"])
    assert options.engine.model_options == {"postprocess": True, "gamma": 0.7}
    assert Settings.from_options(fps=30).source.fps == 30.0 and isinstance(
        Settings.from_options(fps=30).source.fps, float
    )
    # Frozen: a run's settings cannot change under it.
    with pytest.raises(AttributeError):
        s.engine.model = "sci"


def test_a_model_option_the_model_does_not_have_is_a_setting_error():
    with pytest.raises(
        SettingError, match=r"zero-dce\+\+ has no option 'scale_facto' \(did you mean 'scale_factor'\?\)"
    ):
        Settings.from_options(model="zero-dce++", model_options=["scale_facto=12"])
    with pytest.raises(SettingError, match="sci has no option 'flag'; its options: none"):
        Settings.from_options(model_options=["flag=true"])


def test_key_value_pairs_are_read_as_toml_values():
    assert [parse_value(t) for t in ("20", "1.5", "true", '"x"', "x", "10m")] == [20, 1.5, True, "x", "x", "10m"]
    with pytest.raises(Exception, match="KEY=VALUE"):
        parse_pairs(["scale_factor"])


def test_toml_keys_reach_their_fields_and_unknown_ones_are_named():
    s = Settings.from_keys({"model": "zero-dce++", "duration": 5, "options": {"scale_factor": 4}, "open_timeout": 2.5})
    assert s.run.duration_seconds == 5.0 and s.engine.model_options == {"scale_factor": 4}
    assert s.source.open_timeout_seconds == 2.5
    with pytest.raises(SettingError, match="p.toml: unknown key 'smoth' \\(did you mean 'smooth'\\?\\)"):
        Settings.from_keys({"smoth": False}, where="p.toml: ")
    with pytest.raises(SettingError, match="p.toml: crf must be"):
        Settings.from_keys({"crf": -1}, where="p.toml: ")


def test_field_names_are_unique_and_every_field_is_explained():
    names = [f.name for f in fields()]
    assert len(names) == len(set(names))
    assert all(f.meta["help"].endswith((".", ")")) for f in fields())


def test_a_bad_flag_value_is_a_usage_error_naming_the_flag():
    result = CliRunner().invoke(main, ["process", "in.mp4", "out.mp4", "--tile", "5"])
    assert result.exit_code == 2 and "--tile" in result.output and "at least 64 pixels" in result.output
    result = CliRunner().invoke(main, ["process", "in.mp4", "out.mp4", "-m", "sic"])
    assert result.exit_code == 2 and "--model" in result.output and "did you mean sci" in result.output
    result = CliRunner().invoke(main, ["process", "in.mp4", "out.mp4", "--no-smooth", "--denoise"])
    assert result.exit_code == 2 and "--denoise" in result.output


def test_a_field_by_its_cli_and_toml_key() -> None:
    """`duration=` as `--duration` and the TOML key say it, for `duration_seconds`."""
    settings = Settings().replace(duration=5, read_timeout=2.5, segment="10")
    assert settings.run.duration_seconds == 5.0 and settings.source.read_timeout_seconds == 2.5
    assert settings.encoder.segment_seconds == 10.0
    with pytest.raises(SettingError, match="the same setting"):
        Settings().replace(duration=5, duration_seconds=6)
    with pytest.raises(SettingError, match="did you mean 'duration'"):
        Settings().replace(duratoin=5)
