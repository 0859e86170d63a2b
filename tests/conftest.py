"""Shared fixtures: where the test material lives, and an environment that never downloads.

The test material (official weights, official outputs, LOL pairs) lives in ``../shared``
next to the repository, or wherever ``$VIDLIGHT_SHARED`` points. It is read in place and
never copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The test-material directory. Missing: skip locally, fail on CI (``CI=true``)."""
    path = Path(os.environ.get("VIDLIGHT_SHARED") or DEFAULT_SHARED_DIR)
    if not path.is_dir():
        message = f"test material not found at {path}; set VIDLIGHT_SHARED to the shared directory"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: tests that need it must not be skipped)", pytrace=False)
        pytest.skip(message)
    return path


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
