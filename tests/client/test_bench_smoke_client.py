"""Smoke run of benches/bench_client.py at small sizes, so the benchmarks keep working."""

import importlib
import os
import sys

import pytest

pytestmark = pytest.mark.bench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def bench(monkeypatch, tmp_path):
    monkeypatch.setenv("PYLOG_BENCH_SMALL", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(ROOT)
    sys.modules.pop("benches.bench_client", None)
    mod = importlib.import_module("benches.bench_client")
    yield mod
    sys.modules.pop("benches.bench_client", None)


def test_bench_client_smoke(bench):
    assert bench.SMALL and bench.N == 2_000
    ran = []
    for cls in (bench.Send, bench.SendBatch, bench.Poll, bench.Rebalance):
        b = cls()
        b.setup()
        try:
            for name in sorted(dir(cls)):
                if name.startswith("time_"):
                    getattr(b, name)()
                    ran.append(name)
            if cls is bench.Send:
                total = sum(b.client.high_watermark("bench", p) for p in range(bench.PARTITIONS))
                assert total == 2 * bench.N          # both pylog sends landed
            if cls is bench.Poll:
                assert b.consumer.position(("bench", 0)) == bench.N
        finally:
            b.teardown()
    assert len(ran) == 11
