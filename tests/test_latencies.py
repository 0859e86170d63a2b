"""A live run's latency record: quantiles within the histogram's resolution, memory bounded."""

from __future__ import annotations

import numpy as np
import pytest

from vidlight.pipeline.report import Latencies, RunStats


def test_quantiles_match_numpy_to_within_the_bin_resolution():
    values = np.random.default_rng(3).lognormal(mean=np.log(0.12), sigma=0.6, size=20_000)
    record = Latencies()
    for v in values:
        record.add(float(v))
    for q in (0.05, 0.5, 0.95, 0.999):
        exact = float(np.quantile(values, q, method="inverted_cdf"))
        assert record.quantile(q) == pytest.approx(exact, rel=0.006)
    assert record.max == values.max() and record.count == len(values) == len(record)


def test_memory_stays_bounded_over_a_day_of_frames():
    record = Latencies()
    before = record._counts.nbytes
    for i in range(200_000):
        record.add(0.05 + (i % 97) * 1e-3)
    assert record._counts.nbytes == before
    assert len(record.recent) == Latencies.RECENT
    assert list(record.recent)[-1] == pytest.approx(0.05 + (199_999 % 97) * 1e-3)


def test_out_of_range_values_count_in_the_end_bins():
    record = Latencies()
    for v in (0.0, 1e-9, 5e5):
        record.add(v)
    assert record.quantile(0.0) == pytest.approx(Latencies.LOWEST)
    assert record.quantile(1.0) >= Latencies.HIGHEST / Latencies.RESOLUTION
    assert record.max == 5e5


def test_the_summary_reads_the_record():
    record = Latencies()
    for v in (0.1, 0.2, 0.3):
        record.add(v)
    line = RunStats(3, 1.0, 0, latencies=record).summary()
    assert "latency median 200 ms" in line and "max 300 ms" in line
    assert "latency" not in RunStats(3, 1.0, 0).summary()
    assert Latencies().quantile(0.5) is None
