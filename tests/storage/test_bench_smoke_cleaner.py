"""Smoke run of benches/bench_cleaner.py at small sizes: every benchmark method runs once,
and pylog's compacted log holds exactly the latest records the peer computes."""

import importlib
import inspect
import os
import sys

import pytest

pytestmark = pytest.mark.bench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def bench_cleaner(monkeypatch, tmp_path):
    monkeypatch.setenv("PYLOG_BENCH_SMALL", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(ROOT)
    sys.modules.pop("benches.bench_cleaner", None)
    module = importlib.import_module("benches.bench_cleaner")
    yield module
    import shutil

    shutil.rmtree(os.path.dirname(module._CACHE.get("dir", str(tmp_path / "x" / "y"))), ignore_errors=True)
    sys.modules.pop("benches.bench_cleaner", None)


def test_every_benchmark_runs_and_agrees_with_the_peer(bench_cleaner):
    from pylog.records import iter_batches

    assert bench_cleaner.SMALL
    ran = {}
    for name, _fn in inspect.getmembers(bench_cleaner.Compaction, inspect.isfunction):
        if not name.startswith("time_"):
            continue
        bench = bench_cleaner.Compaction()
        bench.setup()
        try:
            getattr(bench, name)()
            if name == "time_pylog_clean":
                assert bench.stats.cleaned
                ours = {}
                offset = bench.log.log_start_offset
                while offset < bench.log.log_end_offset:
                    r = bench.log.read(offset, 1 << 20)
                    for batch in iter_batches(bytes(r.records)):
                        for rec in batch:
                            ours[rec.key] = (rec.offset, rec.value)
                    offset = r.next_offset
                ran[name] = ours
            else:
                ran[name] = bench.latest
        finally:
            bench.teardown()
    assert set(ran) == {"time_pylog_clean", "time_peer_aiokafka_dict"}
    assert len(ran["time_pylog_clean"]) == bench_cleaner.DISTINCT_KEYS
    assert ran["time_pylog_clean"] == ran["time_peer_aiokafka_dict"]
    assert bench_cleaner.log_bytes() > 0
