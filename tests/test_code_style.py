"""The habits of a maintained project: ruff's lint and format checks and mypy's type check
pass (pyproject.toml's [tool.ruff] and [tool.mypy]); the same checks run for contributors
from .pre-commit-config.yaml."""

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


def test_mypy_finds_no_type_errors() -> None:
    # The package ships py.typed: its annotations are a promise to users' type checkers.
    command = [shutil.which("mypy")] if shutil.which("mypy") else [sys.executable, "-m", "mypy"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
    assert "Success: no issues found" in result.stdout


@pytest.mark.parametrize("hook", ["ruff-check", "ruff-format", "mypy"])
def test_pre_commit_runs_the_same_checks(hook: str) -> None:
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    assert f"id: {hook}" in config
