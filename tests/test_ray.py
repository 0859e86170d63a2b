"""A folder of videos on a real Ray cluster: two nodes started on this machine.

Each test compares what Ray wrote with what the same settings write in one process, here;
the kill test kills a worker's process while it is enhancing.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from vidlight.cli import main
from vidlight.errors import VidlightError
from vidlight.pipeline.folder import enhance_folder
from vidlight.pipeline.runner import enhance_video

from media import gradient, read_video, write_video

try:
    import ray
except ImportError:  # the extra is not installed: CI installs it and must not skip
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("Ray is not installed (pip install 'vidlight[ray]')", allow_module_level=True)

SETTINGS = dict(model="sci", device="cpu", preset="ultrafast", crf=18, progress=False)


@pytest.fixture(scope="module")
def cluster():
    """A head node and a worker node, one CPU each, with the test environment's variables. The
    worker node declares a GPU: Ray schedules by declared resources, so GPU workers go there
    (torch finds no CUDA in them and runs on the CPU)."""
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VIDLIGHT_OFFLINE", "1")  # the nodes' workers inherit it: nothing is downloaded
        node = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
        c = Cluster(initialize_head=True, head_node_args=node)
        c.add_node(**node, num_gpus=1)
        ray.init(address=c.address, logging_level="WARNING", log_to_driver=False)
        yield c
        ray.shutdown()
        c.shutdown()


def dark_clip(path: Path, n: int, seed: int, size=(160, 96)) -> Path:
    """A dark moving gradient with seeded noise (each clip its own)."""
    rng = np.random.default_rng(seed)
    frames = [
        np.clip(gradient(*size, i) * 0.18 + rng.normal(0, 2, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
        for i in range(n)
    ]
    return write_video(path, frames).path


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> tuple[Path, Path]:
    """Three dark videos and what one process here makes of them."""
    root = tmp_path_factory.mktemp("ray-batch")
    folder = root / "in"
    folder.mkdir()
    for i, n in enumerate((60, 45, 75)):
        dark_clip(folder / f"cam{i}.mp4", n, seed=i)
    enhance_folder(folder, root / "local", **SETTINGS)
    return folder, root / "local"


def assert_same_outputs(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()), "different files"
    for name in names:
        x, y = read_video(a / name), read_video(b / name)
        assert len(x.frames) == len(y.frames) > 0, name
        for i, (f, g) in enumerate(zip(x.frames, y.frames)):
            assert np.array_equal(f, g), f"{name} frame {i} differs by up to {np.abs(f.astype(int) - g).max()}"


def test_a_batch_on_two_nodes_equals_the_local_run(cluster, batch, tmp_path):
    folder, local = batch
    stats = enhance_folder(folder, tmp_path / "ray", executor="ray", **SETTINGS)
    assert stats.frames == 60 + 45 + 75
    assert_same_outputs(tmp_path / "ray", local)
    # Run again: every output is there, nothing is redone.
    again = enhance_folder(folder, tmp_path / "ray", executor="ray", **SETTINGS)
    assert again.frames == 0


def _processes_running(task: bytes) -> list[int]:
    """PIDs of the processes whose title holds ``task`` (Ray titles a worker process
    ``ray::Class.method`` while it runs a method)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if task in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_workers_take_the_clusters_gpus(cluster, batch, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="vidlight")
    folder, local = batch
    enhance_folder(folder, tmp_path / "gpu", executor="ray", **{**SETTINGS, "device": "auto"})
    assert "3 video(s) on 1 Ray worker(s) with 1 GPU(s)" in caplog.text
    rows = [line for line in caplog.text.splitlines() if ".mp4" in line and "frames" not in line]
    assert len(rows) == 3 and all(" gpu 0 " in row for row in rows), rows
    assert_same_outputs(tmp_path / "gpu", local)


def test_a_worker_killed_mid_file_has_the_file_redone_elsewhere(cluster, batch, tmp_path, caplog):
    folder, local = batch
    out = tmp_path / "ray"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["stats"] = enhance_folder(folder, out, executor="ray", **SETTINGS)
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        pids = _processes_running(b"EnhanceWorker.enhance")
        # Mid-file: a partial output exists, so the worker has written frames.
        if pids and any(out.glob(".*.partial.mp4")):
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    thread.join(timeout=180)
    assert killed is not None, "no worker was seen mid-file"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["stats"].frames == 60 + 45 + 75
    assert "its worker died; doing it again on another" in caplog.text
    assert_same_outputs(out, local)  # nothing duplicated, nothing half-written
    assert not list(out.glob(".*"))


def test_cli_executor_ray(cluster, batch, tmp_path, monkeypatch):
    folder, local = batch
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    result = CliRunner().invoke(
        main,
        [
            "process",
            str(folder),
            str(tmp_path / "out"),
            "--executor",
            "ray",
            "--device",
            "cpu",
            "--preset",
            "ultrafast",
            "--workers",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert_same_outputs(tmp_path / "out", local)
    # A live source cannot be cut into parts.
    live = CliRunner().invoke(
        main, ["process", "rtsp://127.0.0.1:9/none", str(tmp_path / "one.mp4"), "--executor", "ray"]
    )
    assert live.exit_code == 1 and "take a video file" in live.output


def test_a_long_file_in_parts_on_ray_equals_the_split_run_here(cluster, tmp_path):
    """Parts spread over the two nodes, joined: the same file as the parts made here, one by one."""
    from test_parts import FRAMES, make_long_clip

    clip = make_long_clip(tmp_path / "long.mp4")
    here, there = tmp_path / "here" / "out.mp4", tmp_path / "there" / "out.mp4"
    here.parent.mkdir()
    there.parent.mkdir()
    enhance_video(clip, here, split_seconds=2, **SETTINGS)
    stats = enhance_video(clip, there, split_seconds=2, executor="ray", **SETTINGS)
    assert stats.frames == FRAMES
    assert_same_outputs(here.parent, there.parent)
    with av.open(str(there)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]


def test_without_ray_the_message_says_how_to_install_it(monkeypatch, batch, tmp_path):
    import sys

    folder, _ = batch
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(VidlightError, match=r"pip install 'vidlight\[ray\]'"):
        enhance_folder(folder, tmp_path / "out", executor="ray", **SETTINGS)


def test_a_camera_worker_that_dies_is_started_again_with_its_cameras(cluster, tmp_path):
    """Two cameras on two workers, each into a folder of pictures; one worker is killed. It is
    started again with its camera, which goes on after the pictures the dead worker wrote."""
    from vidlight.pipeline.serve import Stream
    from vidlight.scale.cameras import CameraPool

    from rtsp import RtspServer, require_gstreamer

    require_gstreamer()
    clip = [(gradient(160, 120, i) * 0.25).astype(np.uint8) for i in range(30)]
    write_video(tmp_path / "left.mp4", clip)
    write_video(tmp_path / "right.mp4", [f[:, ::-1].copy() for f in clip])
    with RtspServer(cameras={"/left": tmp_path / "left.mp4", "/right": tmp_path / "right.mp4"}) as server:
        streams = [Stream(name, server.url(f"/{name}"), f"{tmp_path / name}/") for name in ("left", "right")]
        pool = CameraPool(streams, model="sci", device="cpu", workers=2)
        stop = threading.Event()
        outcome: dict = {}
        thread = threading.Thread(target=lambda: outcome.update(report=pool.run(stop)))
        thread.start()

        def wait_for(condition, what: str) -> None:
            deadline = time.monotonic() + 90
            while not condition():
                assert time.monotonic() < deadline and thread.is_alive(), f"{what}: {pool.status()}"
                time.sleep(0.2)

        def serving(status) -> bool:
            return status.state == "running" and status.frames >= 10

        try:
            wait_for(lambda: len(pool.status()) == 2 and all(serving(s) for s in pool.status()), "both cameras running")
            pids = _processes_running(b"ray::CameraServer")  # Ray titles a worker by its actor's class
            assert len(pids) == 2
            os.kill(pids[0], signal.SIGKILL)
            wait_for(lambda: any(s.restarts == 1 and serving(s) for s in pool.status()), "the killed one back")
            back = [s for s in pool.status() if s.restarts == 1]
            assert len(back) == 1 and all(serving(s) for s in pool.status())
        finally:
            stop.set()
            thread.join(timeout=60)
    report = outcome["report"]
    assert report.failures == {} and set(report.streams) == {"left", "right"}
    assert all(stats.frames > 0 for stats in report.streams.values())
    # The restarted camera's folder: the dead worker's pictures (at least 10) and then the new
    # worker's, numbered on from them; the report counts the new worker's only.
    (killed,) = back
    pictures = sorted(p.name for p in (tmp_path / killed.name).iterdir())
    assert pictures == [f"frame_{i:06d}.png" for i in range(len(pictures))]
    assert len(pictures) >= report.streams[killed.name].frames + 10
