"""The documentation: the site builds strictly, and the README keeps its promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """A broken link, anchor or API reference (mkdocstrings) fails the build."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "enhance_video" in api and "EngineSettings" in api  # the reference was generated


def test_readme_is_short_and_speaks_of_the_product() -> None:
    assert len(README.splitlines()) <= 200
    for word in ("issue", "session", "GPU machine", "not lent"):
        assert word not in README, word
    for target in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (ROOT / target).exists(), target


@pytest.mark.slow
def test_the_readme_python_example_runs_as_pasted(tmp_path: Path) -> None:
    example = README.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    result = subprocess.run(
        [sys.executable, "-c", example],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "90 frames" in result.stdout and "torch.Size([1, 3, 64, 64])" in result.stdout
    assert (tmp_path / "bright.mp4").exists()
