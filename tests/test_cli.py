"""The ``vidlight`` command line: help, model listing, the happy path and user errors.

Errors the user can fix must print one line starting with ``vidlight:`` (no traceback),
exit 1 (2 for click usage errors), and never leave a half-written output behind.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from vidlight.cli import main
from vidlight.errors import WeightsError
from vidlight.io.files import partial_path
from vidlight.models import load_model
from vidlight.weights import list_weights

from media import Identity, InterruptOn, packet_payloads, read_video, simple_clip, stream_types

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "dark_street.mp4"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.output.strip("\n").splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("vidlight: "), lines[0]
    return lines[0]


def no_partial(path: Path) -> bool:
    return not partial_path(path).exists() and not list(path.parent.glob(".*partial*"))


@pytest.fixture
def identity_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--model sci`` loads an identity module: file handling is tested without any weights."""
    monkeypatch.setattr("vidlight.pipeline.enhancer.load_model", lambda *a, **k: Identity())


@pytest.fixture
def clip(tmp_path: Path):
    return simple_clip(tmp_path / "in.mp4", n=8, audio=True)


# --- 12. help and listing ------------------------------------------------------------------------


def test_help() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("process", "models", "train", "bench"):
        assert command in result.output


def test_process_help() -> None:
    result = invoke("process", "--help")
    assert result.exit_code == 0
    for option in ("--model", "--weights", "--device", "--batch-size", "--overwrite", "--codec", "--crf"):
        assert option in result.output


def test_models_lists_methods_and_catalogue() -> None:
    result = invoke("models")
    assert result.exit_code == 0, result.output
    heads = [line.split(":")[0] for line in result.output.splitlines() if not line.startswith(" ")]
    assert {"sci", "zero-dce", "zero-dce++"} <= set(heads)
    names = {w.name for w in list_weights()}
    assert {"sci-easy", "sci-medium", "sci-difficult", "zero-dce", "zero-dce++"} <= names
    for name in names:
        assert f"  - {name}" in result.output
    assert "option scale_factor" in result.output


# --- 11. happy path on the sample clip -------------------------------------------------------------


def _mean_luma(path: Path) -> float:
    with av.open(str(path)) as c:
        return float(np.mean([f.to_ndarray(format="gray").mean() for f in c.decode(video=0)]))


def test_process_sample_clip(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if not SAMPLE.exists():
        pytest.skip(f"{SAMPLE} is missing")
    args = []
    try:
        load_model("sci")
    except WeightsError:
        # The bundled default is not there yet: use the official SCI weights from shared/.
        request.getfixturevalue("official_weights_dir")
        args = ["--weights", "sci-medium"]
    out = tmp_path / "bright.mp4"
    result = invoke("process", SAMPLE, out, *args, "--preset", "veryfast")
    assert result.exit_code == 0, result.output
    assert out.exists() and no_partial(out)
    src, dst = read_video(SAMPLE), read_video(out)
    assert len(dst.frames) == len(src.frames) == 90
    np.testing.assert_allclose(dst.pts_seconds, src.pts_seconds, atol=0.5 / 30)
    assert "audio" in stream_types(out)
    assert b"".join(packet_payloads(out, "audio")) == b"".join(packet_payloads(SAMPLE, "audio"))
    before, after = _mean_luma(SAMPLE), _mean_luma(out)
    assert before < 30
    assert after > 2 * before, (before, after)


def test_process_writes_output(tmp_path: Path, clip, identity_model) -> None:
    out = tmp_path / "out.mkv"
    result = invoke("process", clip.path, out, "--no-progress", "-b", "3", "--preset", "ultrafast")
    assert result.exit_code == 0, result.output
    assert len(read_video(out).frames) == 8
    assert no_partial(out)


# --- 9. errors -------------------------------------------------------------------------------------


def test_missing_input(tmp_path: Path, identity_model) -> None:
    out = tmp_path / "out.mp4"
    line = assert_one_line_error(invoke("process", tmp_path / "nope.mp4", out))
    assert "nope.mp4" in line and "does not exist" in line
    assert not out.exists() and no_partial(out)


def test_text_file_named_mp4(tmp_path: Path, identity_model) -> None:
    bad = tmp_path / "x.mp4"
    bad.write_text("this is not a video\n" * 20)
    out = tmp_path / "out.mp4"
    line = assert_one_line_error(invoke("process", bad, out))
    assert "x.mp4" in line
    assert not out.exists() and no_partial(out)


def test_directory_as_input(tmp_path: Path, identity_model) -> None:
    out = tmp_path / "out.mp4"
    assert_one_line_error(invoke("process", tmp_path, out))
    assert not out.exists() and no_partial(out)


@pytest.mark.parametrize("faststart", [False, True], ids=["moov-at-end", "faststart"])
def test_truncated_mp4(tmp_path: Path, identity_model, faststart: bool) -> None:
    full = simple_clip(
        tmp_path / "full.mp4",
        width=128,
        height=96,
        n=60,
        audio=True,
        container_options={"movflags": "+faststart"} if faststart else None,
    )
    data = full.path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    out = tmp_path / "out.mp4"
    result = invoke("process", cut, out, "--no-progress", "--preset", "ultrafast")
    if result.exit_code == 0:
        frames = read_video(out).frames  # playable to the end
        assert 0 < len(frames) < 60
    else:
        assert_one_line_error(result)
        assert not out.exists()
    assert no_partial(out)


def test_existing_output_without_overwrite(tmp_path: Path, clip, identity_model) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    line = assert_one_line_error(invoke("process", clip.path, out))
    assert "-y" in line
    assert out.read_bytes() == b"precious"
    assert no_partial(out)


def test_existing_output_with_overwrite(tmp_path: Path, clip, identity_model) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    result = invoke("process", clip.path, out, "-y", "--no-progress", "--preset", "ultrafast")
    assert result.exit_code == 0, result.output
    assert len(read_video(out).frames) == 8
    assert no_partial(out)


def test_output_same_as_input(tmp_path: Path, clip, identity_model) -> None:
    before = clip.path.read_bytes()
    assert_one_line_error(invoke("process", clip.path, clip.path, "-y"))
    assert clip.path.read_bytes() == before


def test_output_in_missing_directory(tmp_path: Path, clip, identity_model) -> None:
    out = tmp_path / "no" / "such" / "dir" / "out.mp4"
    line = assert_one_line_error(invoke("process", clip.path, out))  # no progress bar before it
    assert "out.mp4" in line or "dir" in line.split(":")[-1], line
    assert not out.exists()


def test_output_in_missing_directory_fails_cleanly(tmp_path: Path, clip, identity_model) -> None:
    """Whatever the message, the command fails with status 1, no traceback, nothing written."""
    out = tmp_path / "no" / "such" / "dir" / "out.mp4"
    result = invoke("process", clip.path, out, "--no-progress")
    assert_one_line_error(result)
    assert not out.exists() and not (tmp_path / "no").exists()


def test_unknown_output_format(tmp_path: Path, clip, identity_model) -> None:
    out = tmp_path / "out.notaformat"
    line = assert_one_line_error(invoke("process", clip.path, out))
    assert "'.notaformat'; use .mp4, .mkv" in line, line
    assert not out.exists() and no_partial(out)


def test_an_unknown_encoder_or_preset_is_a_usage_error(tmp_path: Path, clip, identity_model) -> None:
    """Told before anything runs (x264 itself would print its own error line when it opens),
    with the names that would work."""
    out = tmp_path / "out.mp4"
    preset = invoke("process", clip.path, out, "--preset", "ultraturbo", "--no-progress")
    assert preset.exit_code == 2 and "Traceback" not in preset.output
    assert "libx264 has no preset 'ultraturbo' (did you mean 'ultrafast'?)" in preset.output
    assert "x264 [error]" not in preset.output
    codec = invoke("process", clip.path, out, "--codec", "libx26", "--no-progress")
    assert codec.exit_code == 2 and "did you mean 'libx265'" in codec.output
    audio = invoke("process", clip.path, out, "--codec", "aac", "--no-progress")
    assert audio.exit_code == 2 and "not a video encoder" in audio.output
    assert not out.exists() and no_partial(out)
    # x265 shares x264's names; other encoders' presets are theirs to check (SVT-AV1 takes numbers)
    from vidlight.settings import Settings

    assert Settings.from_options(codec="libx265", preset="fast").encoder.preset == "fast"
    assert Settings.from_options(codec="libsvtav1", preset="8").encoder.preset == "8"
    # as x264 reads them: any case, or a number 0-9
    assert Settings.from_options(preset="VeryFast").encoder.preset == "VeryFast"
    assert Settings.from_options(preset="5").encoder.preset == "5"
    assert invoke("process", clip.path, out, "--preset", "12").exit_code == 2


def test_unknown_model_is_a_usage_error(tmp_path: Path, clip) -> None:
    out = tmp_path / "out.mp4"
    result = invoke("process", clip.path, out, "--model", "no-such-model")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "no-such-model" in result.output
    assert not out.exists()


def test_garbage_weights_file(tmp_path: Path, clip) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    out = tmp_path / "out.mp4"
    line = assert_one_line_error(invoke("process", clip.path, out, "--model", "sci", "--weights", garbage))
    assert "garbage.pt" in line
    assert not out.exists() and no_partial(out)


def test_weights_of_another_model(tmp_path: Path, clip) -> None:
    out = tmp_path / "out.mp4"
    line = assert_one_line_error(invoke("process", clip.path, out, "--model", "sci", "--weights", "zero-dce"))
    assert "zero-dce" in line
    assert not out.exists() and no_partial(out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_gpu(tmp_path: Path, clip, identity_model) -> None:
    out = tmp_path / "out.mp4"
    line = assert_one_line_error(invoke("process", clip.path, out, "--device", "cuda"))
    assert "cuda" in line.lower()
    assert not out.exists() and no_partial(out)


def test_bad_model_option(tmp_path: Path, clip) -> None:
    out = tmp_path / "out.mp4"
    result = invoke("process", clip.path, out, "--model", "zero-dce++", "-o", "bogus")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("value", ["2", "-0.1", "bright", "nan"])
def test_bad_strength_is_a_usage_error(tmp_path: Path, clip, value: str) -> None:
    out = tmp_path / "out.mp4"
    result = invoke("process", clip.path, out, "--strength", value)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--strength" in result.output and "auto" in result.output
    assert not out.exists()


def test_strength_zero_passes_the_input_and_one_gives_the_method(tmp_path: Path, clip) -> None:
    """SCI at --strength 0 is the input: losslessly coded, its Y, U and V planes come back
    within the YUV -> RGB -> YUV round trip's rounding (0.39 levels; 0.77 with swscale's
    truncating fast path); at 1 it is much brighter."""

    def planes(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as c:
            return [f.to_ndarray().astype(np.float64) for f in c.decode(video=0)]

    means = {}
    for value in ("0", "1"):
        out = tmp_path / f"out{value}.mp4"
        result = invoke(
            "process",
            clip.path,
            out,
            "--strength",
            value,
            "--no-smooth",
            "--no-progress",
            "--preset",
            "ultrafast",
            "--crf",
            "0",
        )
        assert result.exit_code == 0, result.output
        means[value] = np.mean([f.mean() for f in read_video(out).frames])
        if value == "0":
            assert max(np.abs(a - b).mean() for a, b in zip(planes(out), planes(clip.path))) < 0.5
    assert means["1"] > means["0"] + 20


# --- 10. Ctrl-C through the command ---------------------------------------------------------------


def test_ctrl_c_exits_130_and_keeps_finished_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=20, audio=True)
    monkeypatch.setattr("vidlight.pipeline.enhancer.load_model", lambda *a, **k: InterruptOn(4))
    out = tmp_path / "out.mp4"
    result = invoke("process", clip.path, out, "-b", "2", "--no-progress", "--preset", "ultrafast", "--strength", "1")
    line = assert_one_line_error(result, code=130)
    assert "interrupted" in line and "4 frames" in line
    assert len(read_video(out).frames) == 4
    assert no_partial(out)


def test_python_dash_m_runs_the_command_line():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "vidlight", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("Usage: vidlight ")


def test_an_x265_run_prints_no_encoder_banner(tmp_path: Path) -> None:
    """x265 logs to the terminal itself (a banner and a page of statistics per run) unless told
    to keep to errors; a run with ``--codec libx265`` prints vidlight's own lines only."""
    import subprocess
    import sys

    clip = simple_clip(tmp_path / "in.mp4", n=6)
    out = tmp_path / "out.mp4"
    cmd = [sys.executable, "-m", "vidlight", "process", str(clip.path), str(out), "--codec", "libx265", "--no-progress"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "x265 [" not in result.stderr + result.stdout
    assert len(read_video(out).frames) == 6


def test_a_warning_during_a_run_is_not_written_onto_the_progress_bar(tmp_path: Path) -> None:
    """A log line in the middle of a run (here: a picture of another shape) starts a line of
    its own; the bar is cleared and drawn again below it."""
    import subprocess
    import sys

    import cv2

    folder = tmp_path / "mixed"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((48, 64, 3), 40, np.uint8))
    cv2.imwrite(str(folder / "b.png"), np.full((64, 48, 3), 40, np.uint8))
    cmd = [sys.executable, "-m", "vidlight", "process", str(folder), str(tmp_path / "out.mp4")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    at = result.stderr.index("vidlight: frame size changed")
    assert "frame" in result.stderr[:at]  # the bar was drawn before it
    assert at == 0 or result.stderr[at - 1] in "\r\n", repr(result.stderr[max(0, at - 40) : at + 10])
    # The same for the other commands' bars: eval's, when one video ends before the others.
    long, short = simple_clip(tmp_path / "long.mp4", n=12).path, simple_clip(tmp_path / "short.mp4", n=5).path
    cmd = [sys.executable, "-m", "vidlight", "eval", str(long), str(long), str(short)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    at = result.stderr.index("vidlight: short.mp4 ended after 5 frames")
    assert "frame" in result.stderr[:at] and result.stderr[at - 1] in "\r\n", repr(result.stderr[: at + 10])


# --- slips a newcomer makes ------------------------------------------------------------------------


def test_model_names_in_any_case_and_a_typo_gets_a_suggestion(tmp_path: Path, identity_model) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=3)
    result = invoke("process", clip.path, tmp_path / "out.mp4", "--model", "SCI", "--no-progress")
    assert result.exit_code == 0, result.output
    typo = invoke("process", clip.path, tmp_path / "out2.mp4", "--model", "zero-dec")
    assert typo.exit_code == 2 and "did you mean zero-dce" in typo.output


def test_an_output_given_as_dash_o_is_a_usage_error_that_says_where_it_goes(tmp_path: Path) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=3)
    result = invoke("process", clip.path, "-o", "out.mp4")
    assert result.exit_code == 2
    assert "the output is the second argument: vidlight process IN OUT" in result.output
    assert "Missing argument" not in result.output


def test_pictures_into_a_name_without_a_suffix_make_a_folder(tmp_path: Path, identity_model) -> None:
    import cv2

    from media import gradient

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i in range(3):
        cv2.imwrite(str(pictures / f"{i}.png"), gradient(32, 24, i)[..., ::-1])
    result = invoke("process", pictures, tmp_path / "enhanced", "--no-progress", "--strength", "1")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "enhanced").glob("*.png"))) == 3


def test_quiet_hides_the_progress_bar_too(tmp_path: Path) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=4)
    shown = CliRunner().invoke(main, ["process", str(clip.path), str(tmp_path / "a.mp4"), "-m", "sci"])
    assert shown.exit_code == 0 and "4/4" in shown.output  # the bar, on the runner's stderr
    quiet = CliRunner().invoke(main, ["-q", "process", str(clip.path), str(tmp_path / "b.mp4"), "-m", "sci"])
    assert quiet.exit_code == 0 and quiet.output == ""
    # after the command too, as newcomers type it
    after = CliRunner().invoke(main, ["process", str(clip.path), str(tmp_path / "c.mp4"), "-m", "sci", "-q"])
    assert after.exit_code == 0 and after.output == "", after.output
    assert len(read_video(tmp_path / "c.mp4").frames) == 4
    for command in ("run", "serve", "compare", "eval", "bench"):
        assert "-q, --quiet" in CliRunner().invoke(main, [command, "--help"]).output, command


def test_the_summary_names_what_was_written(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Segments by their names' pattern; a folder batch with nothing left to do says so rather
    than "wrote 0 frames"."""
    (tmp_path / "in").mkdir()
    clip = simple_clip(tmp_path / "in" / "a.mp4", n=4)
    caplog.set_level("INFO", logger="vidlight")
    seg = tmp_path / "seg" / "part.mp4"
    seg.parent.mkdir()
    done = CliRunner().invoke(main, ["process", str(clip.path), str(seg), "--segment", "10s", "-m", "sci"])
    assert done.exit_code == 0, done.output
    assert any(r.getMessage().startswith(f"wrote {seg.parent / 'part_*.mp4'}: 4 frames") for r in caplog.records)
    assert (seg.parent / "part_00000.mp4").exists()
    pipeline = Path(__file__).resolve().parents[1] / "pipelines" / "file-to-file.toml"
    sets = ["--set", f"source={clip.path}", "--set", f"sink={seg}", "--set", 'segment="10s"', "--no-progress"]
    ran = CliRunner().invoke(main, ["run", str(pipeline), *sets])
    assert ran.exit_code == 0, ran.output
    assert any(r.getMessage().startswith(f"wrote {seg.parent / 'part_*.mp4'}: 4 frames") for r in caplog.records[-3:])
    assert (seg.parent / "part_00001.mp4").exists()  # the second run goes on after the first's
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["process", str(tmp_path / "in"), str(out), "-m", "sci"]).exit_code == 0
    caplog.clear()
    again = CliRunner().invoke(main, ["process", str(tmp_path / "in"), str(out), "-m", "sci"])
    assert again.exit_code == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("has its output in" in m and "pass -y/--overwrite" in m for m in messages), messages
    assert not any(m.startswith("wrote") for m in messages), messages


def test_set_takes_key_value_pairs_and_serve_refuses_a_streams_own_keys() -> None:
    """Both are usage errors (exit 2), said before anything is read or opened."""
    pipelines = REPO / "pipelines"
    bare = invoke("run", pipelines / "file-to-file.toml", "--set", "source")
    assert bare.exit_code == 2 and "'source' is not KEY=VALUE" in bare.output
    own = invoke("serve", pipelines / "multi-camera.toml", "--set", "source=/x.mp4")
    assert own.exit_code == 2 and "source is each stream's own" in own.output
