"""The habits of a maintained project: ruff's lint and format checks pass (pyproject.toml's
[tool.ruff]); the same checks run for contributors from .pre-commit-config.yaml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ruff(*args: str) -> subprocess.CompletedProcess:
    command = [shutil.which("ruff")] if shutil.which("ruff") else [sys.executable, "-m", "ruff"]
    return subprocess.run([*command, *args, "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_lint_is_clean() -> None:
    result = ruff("check")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def test_ruff_format_leaves_every_file_as_it_is() -> None:
    result = ruff("format", "--check")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


@pytest.mark.parametrize("check", ["check", "format"])
def test_pre_commit_runs_the_same_checks(check: str) -> None:
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    assert f"id: ruff-{check}" in config
