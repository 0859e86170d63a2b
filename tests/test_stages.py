"""The per-stage clock: what each thread spends in each stage, and nothing when it is off."""

from __future__ import annotations

import threading
import time

import pytest

from vidlight.pipeline import stages
from vidlight.pipeline.stages import CONVERT_IN, CONVERT_OUT, MODEL, MODEL_WORKERS, SINK, SOURCE, TEMPORAL


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_stages_add_up_per_thread_and_nested_parts_are_subtracted():
    with stages.measuring() as clock:
        with stages.timed(SOURCE):
            _spin(0.03)
            with stages.timed(CONVERT_IN):
                _spin(0.02)
        with stages.timed(MODEL):
            _spin(0.01)

        def pooled():
            with stages.timed(MODEL_WORKERS):
                _spin(0.04)

        worker = threading.Thread(target=pooled)
        worker.start()
        worker.join()
        with stages.timed(TEMPORAL):
            _spin(0.01)
        with stages.timed(SINK):
            _spin(0.01)
            with stages.timed(CONVERT_OUT):
                _spin(0.02)
    got = {s.name: s.cpu_seconds for s in clock.breakdown()}
    expected = {"decode": 0.03, "colour conversion": 0.04, "model": 0.05, "temporal stage": 0.01, "encode": 0.01}
    for name, seconds in expected.items():
        assert got[name] == pytest.approx(seconds, abs=0.006), (name, got)
    assert stages._clock is None


def test_no_clock_means_no_record():
    with stages.timed(MODEL):
        pass
    assert stages._clock is None
    with stages.measuring():
        with pytest.raises(RuntimeError):
            with stages.measuring():
                pass
