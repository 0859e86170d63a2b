"""What a test needs from outside the repository (test material, servers, a browser)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    """Skip the test here; fail it under ``CI=true``, where a missing need must not pass unnoticed."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: tests that need it must not be skipped)", pytrace=False)
    pytest.skip(message)
