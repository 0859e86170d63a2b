"""Sinks: null, image folders, segmented recordings, RTSP publishing, and open_sink.

Outputs are read back with PyAV or OpenCV. RtspSink publishes to FFmpeg's own RTSP
receiver (the rtsp demuxer in listen mode, which accepts ANNOUNCE/RECORD) in a thread.
"""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from vidlight.cli import main
from vidlight.errors import MediaError, VidlightError
from vidlight.io.files import (
    FileSink,
    FileSource,
    VideoInfo,
    encoder_options,
    hidden_path,
    partial_path,
    pixel_format,
)
from vidlight.io.sinks import (
    ImageDirSink,
    NullSink,
    RtspSink,
    SegmentedFileSink,
    classify_sink,
    open_sink,
    parse_duration,
)

from media import gradient, mean_abs_diff, read_video, simple_clip
from rtsp import closed_port

FPS = 25


def make_info(
    width: int = 64, height: int = 48, *, time_base: Fraction = Fraction(1, 90000), depth: int = 8
) -> VideoInfo:
    return VideoInfo(
        width=width,
        height=height,
        time_base=time_base,
        average_rate=Fraction(FPS),
        frames=0,
        duration_seconds=None,
        colorspace=1,
        matrix=1,
        color_range=1,
        color_primaries=1,
        color_trc=1,
        bit_depth=depth,
        rotation=0,
        codec="h264",
    )


def pts_of(i: int) -> int:
    return i * 90000 // FPS


def test_null_sink_counts() -> None:
    sink = NullSink(make_info())
    for i in range(5):
        sink.write(gradient(64, 48, i), pts_of(i))
    sink.close()
    assert sink.frames_written == 5 and sink.output == "null"


# --- image folders ---------------------------------------------------------------------------------


def test_image_dir_sink_png_is_exact_8_and_16_bit(tmp_path: Path) -> None:
    folder = tmp_path / "out"  # created: its parent exists
    sink = ImageDirSink(folder, make_info())
    written = [gradient(64, 48, i) for i in range(3)] + [gradient(64, 48, 3, depth=16)]
    for i, rgb in enumerate(written):
        sink.write(rgb, pts_of(i))
    sink.close()
    assert sink.frames_written == 4
    files = sorted(p.name for p in folder.iterdir())
    assert files == [f"frame_{i:06d}.png" for i in range(4)]  # no temporary names left
    for name, rgb in zip(files, written):
        back = cv2.cvtColor(cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
        assert back.dtype == rgb.dtype
        np.testing.assert_array_equal(back, rgb)


def test_image_dir_sink_jpg_pattern_and_errors(tmp_path: Path) -> None:
    sink = ImageDirSink(tmp_path, make_info(), pattern="img-{index}.jpg")
    rgb = gradient(64, 48, 1)
    sink.write(rgb, 0)
    sink.write(gradient(64, 48, 2, depth=16), 1)  # jpg holds 8 bits: converted
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "img-0.jpg")), cv2.COLOR_BGR2RGB)
    assert mean_abs_diff(back, rgb) < 3
    assert cv2.imread(str(tmp_path / "img-1.jpg")).dtype == np.uint8
    with pytest.raises(MediaError, match="does not exist"):
        ImageDirSink(tmp_path / "missing" / "out", make_info())
    with pytest.raises(VidlightError, match="must contain"):
        ImageDirSink(tmp_path, make_info(), pattern="same.png")
    with pytest.raises(VidlightError, match="must end with one of"):
        ImageDirSink(tmp_path, make_info(), pattern="f{index}.gif")


def test_image_dir_sink_refuses_an_earlier_runs_pictures_unless_told(tmp_path: Path) -> None:
    """Writing 2 frames over a folder of 4 would leave frames 2 and 3 of the earlier run beside
    the new ones: refused, or (overwrite) the earlier pictures go first. Other files stay."""
    folder = tmp_path / "out"
    first = ImageDirSink(folder, make_info())
    for i in range(4):
        first.write(gradient(64, 48, i), pts_of(i))
    (folder / "notes.txt").write_text("mine")
    (folder / "frame_x.png").write_bytes(b"")  # not a name the pattern makes
    with pytest.raises(VidlightError, match=r"already holds 4 picture\(s\) named like frame_000000.png; pass -y"):
        ImageDirSink(folder, make_info())
    assert len(list(folder.glob("frame_0*.png"))) == 4  # refused before anything changed
    again = ImageDirSink(folder, make_info(), overwrite=True)
    for i in range(2):
        again.write(gradient(64, 48, 9), pts_of(i))
    kept = ["frame_000000.png", "frame_000001.png", "frame_x.png", "notes.txt"]
    assert sorted(p.name for p in folder.iterdir()) == kept
    # another pattern in the same folder does not collide with these
    ImageDirSink(folder, make_info(), pattern="img-{index}.jpg")


def test_image_dir_sink_resumes_after_the_pictures_a_folder_holds(tmp_path: Path) -> None:
    """``resume`` (a camera worker started again after it died) keeps what the folder holds and
    numbers the new pictures after the highest index there; the temporary file of a picture
    being written when the writer died is removed, the folder's other files stay."""
    folder = tmp_path / "cam"
    first = ImageDirSink(folder, make_info(), pattern="cam_{index:03d}_x.png")
    for i in range(3):
        first.write(gradient(64, 48, i), pts_of(i))
    (folder / "cam_009_x.png").write_bytes(cv2.imencode(".png", gradient(64, 48, 9))[1].tobytes())  # a gap
    (folder / ".cam_010_x.tmp.png").write_bytes(b"half a picture")
    (folder / "notes.txt").write_text("mine")
    again = ImageDirSink(folder, make_info(), pattern="cam_{index:03d}_x.png", resume=True)
    for i in range(2):
        again.write(gradient(64, 48, 20 + i), pts_of(i))
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"cam_{i:03d}_x.png" for i in (0, 1, 2, 9, 10, 11)] + ["notes.txt"]
    for index, seed in ((0, 0), (2, 2), (10, 20), (11, 21)):
        saved = cv2.cvtColor(cv2.imread(str(folder / f"cam_{index:03d}_x.png")), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(saved, gradient(64, 48, seed))
    empty = ImageDirSink(tmp_path / "fresh", make_info(), resume=True)
    empty.write(gradient(64, 48, 0), pts_of(0))
    assert [p.name for p in (tmp_path / "fresh").iterdir()] == ["frame_000000.png"]


def test_image_dir_sink_patterns_are_read_back_exactly(tmp_path: Path) -> None:
    """The earlier pictures of a folder are the names the pattern makes, read back through the
    pattern (literal braces, a plain {index}, zero padding); a pattern whose index is not
    written in decimal is refused, since an earlier run's pictures could not be found by it.
    The temporary file of a picture left by a dead writer stays where the folder is refused."""
    folder = tmp_path / "braces"
    first = ImageDirSink(folder, make_info(), pattern="{{cam}}_{index}.png")
    for i in range(12):
        first.write(gradient(16, 8, i), pts_of(i))
    assert (folder / "{cam}_11.png").is_file()
    again = ImageDirSink(folder, make_info(), pattern="{{cam}}_{index}.png", resume=True)
    assert again.first_index == 12
    padded = tmp_path / "padded"
    padded.mkdir()
    (padded / "frame_7.png").write_bytes(b"")  # frame_{index:06d}.png never makes this name
    (padded / "frame_0000007.png").write_bytes(b"")  # nor this one
    assert ImageDirSink(padded, make_info(), resume=True).first_index == 0
    for pattern in ("{index:x}.png", "{index:>4}.png", "{index:+d}.jpg", "{index!r}.png", "{index:6d}.png"):
        with pytest.raises(VidlightError, match="number the pictures with"):
            ImageDirSink(tmp_path / "other", make_info(), pattern=pattern)
    (folder / ".{cam}_12.tmp.png").write_bytes(b"half a picture")
    with pytest.raises(VidlightError, match="already holds 12 picture"):
        ImageDirSink(folder, make_info(), pattern="{{cam}}_{index}.png")
    assert (folder / ".{cam}_12.tmp.png").exists()  # refused: nothing touched
    ImageDirSink(folder, make_info(), pattern="{{cam}}_{index}.png", resume=True)
    assert not (folder / ".{cam}_12.tmp.png").exists()


def test_process_into_a_used_image_folder_needs_overwrite(tmp_path: Path) -> None:
    clip = simple_clip(tmp_path / "in.mp4", n=4)
    out = tmp_path / "frames"
    assert CliRunner().invoke(main, ["process", str(clip.path), f"{out}/", "-m", "sci", "--no-progress"]).exit_code == 0
    again = CliRunner().invoke(main, ["process", str(clip.path), f"{out}/", "-m", "sci", "--max-frames", "2"])
    assert again.exit_code == 1 and "pass -y/--overwrite" in again.output
    assert len(list(out.iterdir())) == 4
    replaced = CliRunner().invoke(main, ["process", str(clip.path), f"{out}/", "-m", "sci", "--max-frames", "2", "-y"])
    assert replaced.exit_code == 0, replaced.output
    assert len(list(out.iterdir())) == 2
    # a folder of pictures into itself would remove what it reads, even with -y
    for target in (f"{out}/", f"{out}/frame_{{index:06d}}.png"):
        itself = CliRunner().invoke(main, ["process", f"{out}/", target, "-m", "sci", "-y"])
        assert itself.exit_code == 1 and "another folder" in itself.output, itself.output
    assert len(list(out.iterdir())) == 2


def test_a_folder_of_pictures_into_a_folder_keeps_their_names(tmp_path: Path) -> None:
    """Photos keep their names (as PNG), whatever the order and an unreadable one among them;
    each output is its own input enhanced. Names already there need -y; a pattern numbers the
    frames instead, and so do inputs whose names would collide (a.jpg and a.png)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shots = {"b.jpg": 2, "a10.png": 9, "a2.png": 5}
    for name, seed in shots.items():
        cv2.imwrite(str(photos / name), cv2.cvtColor(gradient(64, 48, seed) // 3, cv2.COLOR_RGB2BGR))
    (photos / "a5.png").write_bytes(b"not a picture")  # skipped, with a warning
    out = tmp_path / "out"
    args = ["process", str(photos), f"{out}/", "-m", "sci", "--strength", "1", "--no-progress"]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["a10.png", "a2.png", "b.png"]
    for name in shots:
        alone = tmp_path / f"alone_{name}"
        alone.mkdir()
        (alone / name).write_bytes((photos / name).read_bytes())
        single = tmp_path / f"single_{name}"
        assert (
            CliRunner().invoke(main, ["process", str(alone), f"{single}/", "-m", "sci", "--strength", "1"]).exit_code
            == 0
        )
        stem = Path(name).stem
        np.testing.assert_array_equal(cv2.imread(str(out / f"{stem}.png")), cv2.imread(str(single / f"{stem}.png")))
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "already holds 3 of these pictures" in again.output
    assert CliRunner().invoke(main, [*args, "-y", "--max-frames", "1"]).exit_code == 0
    assert [p.name for p in out.iterdir()] == ["a2.png"]  # not beside the earlier run's others
    assert CliRunner().invoke(main, [*args, "-y"]).exit_code == 0
    numbered = CliRunner().invoke(main, ["process", str(photos), f"{tmp_path}/n/{{index:03d}}.png", "-m", "sci"])
    assert numbered.exit_code == 0 and sorted(p.name for p in (tmp_path / "n").iterdir()) == [
        "000.png",
        "001.png",
        "002.png",
    ]
    cv2.imwrite(str(photos / "b.png"), gradient(64, 48, 1))
    clash = CliRunner().invoke(main, ["process", str(photos), f"{tmp_path}/c/", "-m", "sci"])
    assert clash.exit_code == 0 and len(list((tmp_path / "c").glob("frame_*.png"))) == 4


def test_names_near_the_file_systems_limit(tmp_path: Path) -> None:
    """A picture or a video whose name is a few bytes short of 255 is written, though its
    temporary name would be too long; nothing temporary is left behind."""
    long = "n" * 250  # 254 bytes with its suffix
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / f"{long}.png"), gradient(64, 48, 3) // 3)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["process", str(photos), f"{out}/", "-m", "sci", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.iterdir()] == [f"{long}.png"]
    assert cv2.imread(str(out / f"{long}.png")).mean() > cv2.imread(str(photos / f"{long}.png")).mean()
    clip = simple_clip(tmp_path / "clip.mp4", n=5).path
    video = tmp_path / f"{long}.mp4"
    assert len(partial_path(video).name.encode()) <= 255
    result = CliRunner().invoke(main, ["process", str(clip), str(video), "-m", "sci", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", f"{long}.mp4", "out", "photos"]
    assert len(read_video(video).frames) == 5


def test_hidden_names_fit_the_file_system(tmp_path: Path) -> None:
    """Short names keep their readable hidden names; long ones get a digest, distinct per name,
    and a writer that died while writing a long-named picture leaves nothing on the next open."""
    assert hidden_path(tmp_path / "a.mp4", "partial").name == ".a.partial.mp4"
    assert hidden_path(tmp_path / "out.mp4", "parts", keep_suffix=False).name == ".out.mp4.parts"
    names = [hidden_path(tmp_path / f"{c * 250}.png", "tmp").name for c in "ab"]
    assert names[0] != names[1] and all(len(n.encode()) <= 255 and n.endswith(".tmp.png") for n in names)
    pattern = "x" * 245 + "{index:03d}.png"  # 251-byte names
    first = ImageDirSink(tmp_path / "cam", make_info(), pattern=pattern)
    first.write(gradient(64, 48, 0), pts_of(0))
    stale = hidden_path(tmp_path / "cam" / ("x" * 245 + "005.png"), "tmp")  # not written again
    stale.write_bytes(b"half a picture")
    (tmp_path / "cam" / "notes.txt").write_text("mine")
    again = ImageDirSink(tmp_path / "cam", make_info(), pattern=pattern, resume=True)
    again.write(gradient(64, 48, 1), pts_of(0))
    assert sorted(p.name for p in (tmp_path / "cam").iterdir()) == [
        "notes.txt",
        *(pattern.format(index=i) for i in (0, 1)),
    ]


def test_a_photo_into_a_picture_file(tmp_path: Path) -> None:
    """One picture in, one picture out (the suffix picks the format); a video into a picture
    name is refused before anything runs, and an existing picture needs -y."""
    photo = tmp_path / "photo.png"
    dark = gradient(64, 48, 3) // 4
    cv2.imwrite(str(photo), cv2.cvtColor(dark, cv2.COLOR_RGB2BGR))
    out = tmp_path / "bright.png"
    done = CliRunner().invoke(main, ["process", str(photo), str(out), "-m", "sci", "--no-progress"])
    assert done.exit_code == 0, done.output
    bright = cv2.imread(str(out))
    assert bright.shape == (48, 64, 3) and bright.mean() > dark.mean() + 10
    again = CliRunner().invoke(main, ["process", str(photo), str(out), "-m", "sci"])
    assert again.exit_code == 1 and "pass -y/--overwrite" in again.output
    clip = simple_clip(tmp_path / "in.mp4", n=3)
    video = CliRunner().invoke(main, ["process", str(clip.path), str(tmp_path / "v.jpg"), "-m", "sci"])
    assert video.exit_code == 1 and "is one picture" in video.output
    assert not (tmp_path / "v.jpg").exists()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not the rest of a picture" * 4)
    bad = CliRunner().invoke(main, ["process", str(broken), str(tmp_path / "b.png"), "-m", "sci"])
    assert bad.exit_code == 1 and "as a picture" in bad.output and not (tmp_path / "b.png").exists()


def test_ctrl_c_inside_the_files_close_removes_it(tmp_path: Path) -> None:
    """An interrupt while FileSink.close finishes the container (a third Ctrl-C, say) leaves
    no partial file."""

    class Interrupting:  # the container, interrupted in its close the first time
        def __init__(self, real) -> None:
            self.real, self.closed_once = real, False

        def mux(self, packets) -> None:
            self.real.mux(packets)

        def close(self) -> None:
            if not self.closed_once:
                self.closed_once = True
                raise KeyboardInterrupt
            self.real.close()

    out_path = tmp_path / "out.mp4"
    sink = FileSink(out_path, make_info(), preset="ultrafast")
    for i in range(3):
        sink.write(gradient(64, 48, i), pts_of(i))
    sink.container = Interrupting(sink.container)
    with pytest.raises(KeyboardInterrupt):
        sink.close()
    assert not out_path.exists() and not partial_path(out_path).exists()


# --- encoders ----------------------------------------------------------------------------------------


def test_encoder_options_carry_crf_and_preset() -> None:
    assert encoder_options("libx264", 18, "veryfast") == {"crf": "18", "preset": "veryfast"}
    assert encoder_options("libvpx-vp9", 30, "slow") == {"crf": "30"}  # vp9 has no x264 presets
    assert encoder_options("mpeg4", 18, "medium") == {}
    assert encoder_options("libx265", 20, "fast") == {"crf": "20", "preset": "fast", "x265-params": "log-level=error"}
    assert encoder_options("libx264", None, None) == {}
    # NVENC: constant quality without a bitrate cap, x264's preset names as p1..p7.
    assert encoder_options("h264_nvenc", 18, "medium") == {"rc": "vbr", "cq": "18", "b": "0", "preset": "p4"}
    assert encoder_options("hevc_nvenc", 0, "veryfast")["cq"] == "1"  # NVENC's 0 would mean "automatic"
    assert encoder_options("av1_nvenc", 63, "p7") == {"rc": "vbr", "cq": "51", "b": "0", "preset": "p7"}
    assert encoder_options("h264_nvenc", None, "ultrafast") == {"preset": "p1"}


def test_pixel_format_keeps_the_depth_where_the_encoder_can() -> None:
    assert pixel_format(["yuv420p", "yuv420p10le"], 10) == "yuv420p10le"
    assert pixel_format(["yuv420p", "nv12", "p010le"], 10) == "p010le"  # NVENC's 10-bit 4:2:0
    assert pixel_format(["yuv420p", "nv12"], 10) == "yuv420p"
    assert pixel_format(["yuv420p", "yuv420p10le"], 8) == "yuv420p"
    assert pixel_format(["rgb24"], 8) == "rgb24"
    assert pixel_format([], 10) == "yuv420p10le"


def test_nvenc_opens_at_once_or_says_what_it_needs(tmp_path: Path) -> None:
    """h264_nvenc is opened when the sink is made: without an NVIDIA GPU that is a one-line
    error naming what it needs, with nothing left behind; with one, it writes a playable file."""
    out = tmp_path / "out.mp4"
    try:
        sink = FileSink(out, make_info(), codec="h264_nvenc")
    except MediaError as exc:
        assert str(exc).startswith("encoder h264_nvenc could not start") and "NVIDIA GPU" in str(exc), exc
        assert "--codec libx264" in str(exc)
        assert not out.exists() and not partial_path(out).exists()
        return
    frames = _record(sink, 10)
    sink.close()
    got = read_video(out).frames
    assert len(got) == 10 and mean_abs_diff(got[5], frames[5]) < 3


def test_an_encoder_opened_at_the_first_frame_fails_there_in_one_line(tmp_path: Path) -> None:
    """For a live source the encoder opens at the first frame; one that cannot start says so then."""
    out = tmp_path / "out.mp4"
    sink = FileSink(out, make_info(), preset="no-such-preset", open_encoder=False)
    with pytest.raises(MediaError, match=r"^encoder libx264 could not start .*check --codec"):
        sink.write(gradient(64, 48, 0), 0)
    sink.close(complete=False)
    assert not out.exists() and not partial_path(out).exists()


# --- segmented recording ----------------------------------------------------------------------------


def test_parse_duration() -> None:
    assert parse_duration("10m") == 600
    assert parse_duration("90s") == 90
    assert parse_duration("1h") == 3600
    assert parse_duration("30") == 30
    assert parse_duration("1.5h") == 5400
    assert parse_duration(12) == 12
    for bad in ("ten minutes", "10x", "", "-5", "0"):
        with pytest.raises(VidlightError, match=r"invalid duration"):
            parse_duration(bad)
    with pytest.raises(VidlightError, match=r"10m"):
        parse_duration("abc")


def _record(sink, n: int, start: int = 0) -> list[np.ndarray]:
    pictures = [gradient(64, 48, i) for i in range(start, start + n)]
    for i, rgb in enumerate(pictures, start):
        sink.write(rgb, pts_of(i) + 123456)  # a live source's timestamps need not start at 0
    return pictures


def test_segments_are_complete_playable_and_start_at_zero(tmp_path: Path) -> None:
    sink = SegmentedFileSink(tmp_path / "cam.mp4", make_info(), segment_seconds="1s", preset="ultrafast")
    pictures = _record(sink, 88)  # 3.52 s
    sink.close()
    assert sink.frames_written == 88
    assert sink.segments == [tmp_path / f"cam_{n:05d}.mp4" for n in range(4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in sink.segments]  # no partial files
    counts, offset = [], 0
    for path in sink.segments:
        decoded = read_video(path)
        counts.append(len(decoded.frames))
        assert decoded.pts_seconds[0] == 0
        assert decoded.pts_seconds == pytest.approx([i / FPS for i in range(len(decoded.frames))], abs=1e-3)
        for got, want in zip(decoded.frames, pictures[offset:]):
            assert mean_abs_diff(got, want) < 3
        offset += len(decoded.frames)
        with av.open(str(path)) as c:
            first = next(c.demux(c.streams.video[0]))
            assert first.is_keyframe
    assert counts == [25, 25, 25, 13]


def test_segment_close_incomplete_removes_only_the_current_one(tmp_path: Path) -> None:
    sink = SegmentedFileSink(tmp_path / "cam.mkv", make_info(), segment_seconds=1, preset="ultrafast")
    _record(sink, 60)  # two full segments and half of a third
    sink.close(complete=False)
    assert [p.name for p in sink.segments] == ["cam_00000.mkv", "cam_00001.mkv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam_00000.mkv", "cam_00001.mkv"]
    assert [len(read_video(p).frames) for p in sink.segments] == [25, 25]


def test_a_recorder_started_again_goes_on_after_its_segments(tmp_path: Path) -> None:
    """After a reboot or a crash the same recording goes on at the next number, the earlier
    segments untouched; -y numbers from 0 again, replacing them."""
    first = SegmentedFileSink(tmp_path / "cam.mkv", make_info(), segment_seconds=1, preset="ultrafast")
    _record(first, 30)
    first.close()
    before = {p.name: p.read_bytes() for p in first.segments}
    (tmp_path / "cam_notes.mkv").write_text("not a segment")
    again = SegmentedFileSink(tmp_path / "cam.mkv", make_info(), segment_seconds=1, preset="ultrafast")
    _record(again, 30)
    again.close()
    assert [p.name for p in again.segments] == ["cam_00002.mkv", "cam_00003.mkv"]
    assert all((tmp_path / name).read_bytes() == data for name, data in before.items())
    assert [len(read_video(p).frames) for p in again.segments] == [25, 5]
    fresh = SegmentedFileSink(tmp_path / "cam.mkv", make_info(), segment_seconds=1, preset="ultrafast", overwrite=True)
    _record(fresh, 10)
    fresh.close()
    assert [p.name for p in fresh.segments] == ["cam_00000.mkv"] and len(read_video(fresh.segments[0]).frames) == 10


def test_segment_names_from_wall_clock(tmp_path: Path) -> None:
    sink = SegmentedFileSink(tmp_path / "cam_%Y%m%d-%H%M%S.mp4", make_info(), segment_seconds=0.4, preset="ultrafast")
    before = time.strftime("%Y%m%d")
    _record(sink, 25)
    sink.close()
    assert len(sink.segments) == 3  # 10 + 10 + 5 frames, named within one second or two
    assert len(set(sink.segments)) == 3 and all(p.exists() for p in sink.segments)
    assert all(p.name.startswith(f"cam_{before}") or p.name.startswith("cam_2") for p in sink.segments)


def test_segments_carry_copied_audio_rebased(tmp_path: Path) -> None:
    clip = simple_clip(tmp_path / "a.mp4", n=60, audio=True)  # 2 s at 30 fps
    source = FileSource(clip.path)
    sink = SegmentedFileSink(
        tmp_path / "rec.mp4", source.info, segment_seconds=1, preset="ultrafast", copy_streams=source.copy_streams
    )
    for item in source:
        if isinstance(item, av.Packet):
            sink.mux_packet(item)
        else:
            sink.write(item.rgb, item.pts)
    sink.close()
    source.close()
    assert len(sink.segments) == 2
    for path in sink.segments:
        with av.open(str(path)) as c:
            audio = c.streams.audio[0]
            starts = [float(p.pts * audio.time_base) for p in c.demux(audio) if p.pts is not None]
            assert starts and min(starts) < 0.1 and max(starts) < 1.2  # re-based to the segment


# --- RTSP publishing ----------------------------------------------------------------------------------


def _receive(url: str, got: list, ready: threading.Event) -> None:
    """FFmpeg's RTSP receiver in listen mode: accepts one publisher and decodes its stream."""
    ready.set()
    try:
        with av.open(url, options={"rtsp_flags": "listen", "rtsp_transport": "tcp", "listen_timeout": "10"}) as c:
            stream = c.streams.video[0]
            for packet in c.demux(stream):
                for frame in packet.decode():
                    got.append((frame.pts, frame.to_ndarray(format="rgb24"), packet.is_keyframe))
    except av.error.FFmpegError as exc:
        got.append(exc)


def test_rtsp_sink_publishes_low_latency_h264() -> None:
    url = f"rtsp://127.0.0.1:{closed_port()}/live"
    got: list = []
    ready = threading.Event()
    receiver = threading.Thread(target=_receive, args=(url, got, ready), daemon=True)
    receiver.start()
    ready.wait()
    deadline = time.monotonic() + 5
    while True:  # until the receiver listens
        try:
            sink = RtspSink(url, make_info(), open_timeout_seconds=2)
            break
        except MediaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    assert sink.output == url
    options = sink.encoder_options
    assert options["tune"] == "zerolatency" and options["bf"] == "0" and options["g"] == str(FPS)
    assert options["preset"] in ("veryfast", "ultrafast")
    pictures = [gradient(64, 48, i) for i in range(50)]
    for i, rgb in enumerate(pictures):
        sink.write(rgb, pts_of(i) + 777)
    sink.close()
    receiver.join(10)
    assert not receiver.is_alive()
    assert not any(isinstance(x, Exception) for x in got), got
    assert len(got) == 50 and sink.frames_written == 50
    for (_, rgb, _), want in zip(got, pictures):
        assert mean_abs_diff(rgb, want) < 4
    stamps = [p for p, _, _ in got if p is not None]
    assert all(b - a == 90000 // FPS for a, b in zip(stamps, stamps[1:]))  # no B-frames: in order, evenly
    keyframes = [i for i, (_, _, key) in enumerate(got) if key]
    assert keyframes[:2] == [0, FPS]  # a keyframe every second


def test_rtsp_sink_refused_is_one_redacted_line() -> None:
    port = closed_port()
    start = time.monotonic()
    with pytest.raises(MediaError) as info:
        RtspSink(f"rtsp://admin:hunter22@127.0.0.1:{port}/live", make_info(), open_timeout_seconds=2)
    message = str(info.value)
    assert time.monotonic() - start < 1.5
    assert "hunter22" not in message and "admin" not in message and "\n" not in message
    assert f"rtsp://***@127.0.0.1:{port}/live" in message and "connection refused" in message


# --- open_sink ------------------------------------------------------------------------------------------


def test_a_picture_pattern_without_index_is_refused_with_the_right_field(tmp_path: Path) -> None:
    with pytest.raises(VidlightError, match=r"numbers the frames with \{index\}, e\.g\. .*\{index:06d\}\.png"):
        classify_sink(tmp_path / "frames" / "{idx}.png")
    assert classify_sink(tmp_path / "frames" / "{index:04d}.png") == "pattern"


def test_open_sink_picks_the_sink(tmp_path: Path) -> None:
    info = make_info()
    assert isinstance(open_sink("null", info), NullSink)
    assert isinstance(open_sink(str(tmp_path), info), ImageDirSink)
    sink = open_sink(f"{tmp_path}/frames/", info)
    assert isinstance(sink, ImageDirSink) and (tmp_path / "frames").is_dir()
    sink = open_sink(str(tmp_path / "shots" / "s{index:03d}.jpg"), info)
    assert isinstance(sink, ImageDirSink) and sink.pattern == "s{index:03d}.jpg"
    sink = open_sink(tmp_path / "rec.mp4", info, segment_seconds="10m")
    assert isinstance(sink, SegmentedFileSink) and sink.segment_seconds == 600
    sink.close(complete=False)
    sink = open_sink(tmp_path / "out.mp4", info, crf=20, preset="ultrafast")
    assert isinstance(sink, FileSink)
    sink.close(complete=False)
    (tmp_path / "exists.mp4").write_bytes(b"x")
    with pytest.raises(VidlightError, match="already exists"):
        open_sink(tmp_path / "exists.mp4", info)
    with pytest.raises(MediaError, match=r"rtsp://\*\*\*@127\.0\.0\.1"):
        open_sink(f"rtsp://u:pw12345@127.0.0.1:{closed_port()}/x", info)
    with pytest.raises(VidlightError, match="outputs are files"):
        open_sink("http://127.0.0.1/x", info)


def test_an_interrupted_segmented_run_names_its_segments(tmp_path: Path) -> None:
    """Not the name pattern, which no file has."""
    from vidlight.pipeline.runner import Interrupted, enhance_video

    clip = simple_clip(tmp_path / "in.mp4", n=90)  # 3 s at 30 fps
    stop = threading.Event()
    seen = []

    def count(n: int) -> None:
        seen.append(n)
        if sum(seen) >= 45:
            stop.set()

    with pytest.raises(Interrupted) as caught:
        out = tmp_path / "rec.mp4"
        enhance_video(clip.path, out, model="sci", segment=1, stop_event=stop, on_frames=count, progress=False)
    names = sorted(p.name for p in tmp_path.glob("rec_*.mp4"))
    assert len(names) >= 2 and not (tmp_path / "rec.mp4").exists()
    assert f"rec_00000.mp4 .. {names[-1]} hold them" in str(caught.value), str(caught.value)
