"""Smoke run of benches/bench_remote_client.py at small sizes, so the benchmarks keep working:
every client of the one-server comparison runs once, and the asv classes run their
pylog parameter against a server of their own."""

import importlib
import io
import os
import sys

import pytest

pytestmark = pytest.mark.bench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.setenv("PYLOG_BENCH_SMALL", "1")
    monkeypatch.syspath_prepend(ROOT)
    sys.modules.pop("benches.bench_remote_client", None)
    mod = importlib.import_module("benches.bench_remote_client")
    yield mod
    sys.modules.pop("benches.bench_remote_client", None)


def test_compare_runs_every_client_once(bench):
    out = io.StringIO()
    result = bench.compare(rounds=1, out=out)
    assert set(result["produce"]) == set(bench.PRODUCERS)
    assert set(result["consume"]) == set(bench.CONSUMERS)
    for section in ("produce", "consume"):
        for kind, rates in result[section].items():
            assert len(rates) == 1 and rates[0] > 0, (section, kind)
    for q in ("p50", "p99", "p99.9"):
        for kind, values in result[f"latency_{q}_ms"].items():
            assert len(values) == 1 and values[0] > 0, (q, kind)
    assert result["latency_p50_ms"]["pylog"][0] <= result["latency_p99.9_ms"]["pylog"][0]
    assert len(result["load_average"]) == len(bench.LATENCY_PAIRS)
    assert "end-to-end p99.9 ms" in out.getvalue()
    assert "ratios (pylog / peer)" in out.getvalue()


def test_asv_classes_run_for_pylog(bench):
    import pylog

    b = bench.Produce()
    b.setup("pylog")
    try:
        b.time_produce("pylog")
        with pylog.connect(b.server.bootstrap) as c:
            assert c.high_watermark("produce", 0) == 100 + bench.N_PRODUCE   # warm-up + timed
    finally:
        b.teardown("pylog")

    b = bench.Consume()
    b.setup("pylog")
    try:
        b.time_consume("pylog")
        assert b.client.consumer.position(("consume", 0)) == bench.N_CONSUME
    finally:
        b.teardown("pylog")

    b = bench.EndToEndLatency()
    b.setup("pylog")
    try:
        assert b.track_p99_ms("pylog") > 0
    finally:
        b.teardown("pylog")
