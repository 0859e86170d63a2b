"""Shared fixtures: where the test material lives, an environment that never downloads, and
seeded random number generators.

The test material (official weights, official outputs, LOL pairs) lives in ``../shared``
next to the repository, or wherever ``$VIDLIGHT_SHARED`` points. It is read in place and
never copied into the repository.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from needs import unavailable

DEFAULT_SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The test-material directory. Missing: skip locally, fail on CI (``CI=true``)."""
    path = Path(os.environ.get("VIDLIGHT_SHARED") or DEFAULT_SHARED_DIR)
    if not path.is_dir():
        message = f"test material not found at {path}; set VIDLIGHT_SHARED to the shared directory"
        unavailable(message)
    return path


@pytest.fixture(autouse=True)
def seeded_random() -> None:
    """Every test starts from the same state of torch's, numpy's and Python's global generators,
    so a test that draws random inputs without a generator of its own draws the same ones on
    every run and in any order: no test passes or fails by chance."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


@pytest.fixture(autouse=True)
def offline_isolated_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test runs offline, with an empty private cache and no user weights directory."""
    cache = tmp_path / "vidlight-cache"
    monkeypatch.setenv("VIDLIGHT_OFFLINE", "1")
    monkeypatch.setenv("VIDLIGHT_CACHE_DIR", str(cache))
    monkeypatch.delenv("VIDLIGHT_WEIGHTS_DIR", raising=False)
    return cache


@pytest.fixture
def official_weights_dir(shared_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``shared/weights``, set as ``$VIDLIGHT_WEIGHTS_DIR`` so catalogue names resolve to it."""
    path = shared_dir / "weights"
    monkeypatch.setenv("VIDLIGHT_WEIGHTS_DIR", str(path))
    return path


# The quick subset (``pytest -m "not slow"``) leaves these out: whole modules that start real
# servers or clusters, and the tests that take seconds each (full-size official comparisons,
# LOL tables, every model through the pipeline, real clips). Measured with --durations.
SLOW_MODULES = {"test_ray.py", "test_parts.py", "test_rtmp.py", "test_rtsp_harness.py", "test_live_pipeline.py"}
SLOW_TESTS = {
    "test_lol_eval15_scores_match_the_official_table",
    "test_matches_official_full_size",
    "test_lol_eval15_official_table",
    "test_tiled_output_is_close_to_whole_frame_output",
    "test_every_model_runs_through_process",
    "test_declared_peak_memory_per_pixel_matches_a_measurement",
    "test_mbllen_flicker_lower_with_its_statistics_smoothed",
    "test_real_clip_end_to_end",
    "test_mypy_finds_no_type_errors",
    "test_bundled_sci_lol_scores",
    "test_raw_and_postprocessed_outputs",
    "test_two_rtsp_cameras_in_one_process",
    "test_cli_serve_two_cameras_until_sigterm",
    "test_rtsp_stalled_camera_is_detected_and_reconnected",
    "test_rtsp_camera_power_loss_and_return",
    "test_reconnects_within_2s_of_the_server_return_with_continuous_timestamps",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_MODULES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
