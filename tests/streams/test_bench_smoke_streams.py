"""Smoke run of benches/bench_streams.py at a small size, so the asv suite does not rot
and its topologies produce what they should."""

from __future__ import annotations

import importlib

import pytest

pytestmark = pytest.mark.bench


def test_streams_benchmarks_run(monkeypatch):
    monkeypatch.setenv("PYLOG_BENCH_SMALL", "1")
    from benches import bench_streams

    mod = importlib.reload(bench_streams)
    s = mod.Stateless()
    s.setup()
    kept = sum(1 for v in s.vals if v[0] != 0)
    assert s._run_task() == kept
    assert s._run_task_batches() == kept
    s.time_test_driver()
    assert s.track_task_records_per_s() > 0
    w = mod.WindowedCount()
    w.setup()
    assert w._run() == 2 * mod.N   # one update and one changelog record per record
    e = mod.EmbeddedRuntime()
    e.setup()
    try:
        e.time_run()
        assert sum(e.client.consumer().end_offsets([("out", p) for p in range(4)]).values()) == kept
    finally:
        e.teardown()
