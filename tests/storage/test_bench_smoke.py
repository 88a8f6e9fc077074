"""Smoke run of the storage benchmarks at small sizes, so they keep working."""

import importlib
import os
import sys

import pytest

pytestmark = pytest.mark.bench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def benches(monkeypatch, tmp_path):
    monkeypatch.setenv("PYLOG_BENCH_SMALL", "1")
    monkeypatch.chdir(tmp_path)  # asv runs setup_cache in a temporary directory too
    monkeypatch.syspath_prepend(ROOT)
    for name in ("benches.bench_index", "benches.bench_log"):
        sys.modules.pop(name, None)
    bench_log = importlib.import_module("benches.bench_log")
    bench_index = importlib.import_module("benches.bench_index")
    yield bench_log, bench_index
    for name in ("benches.bench_index", "benches.bench_log"):
        sys.modules.pop(name, None)


def test_bench_log_smoke(benches):
    bench_log, _ = benches
    assert bench_log.SMALL
    for cls in (bench_log.Append, bench_log.Read):
        bench = cls()
        bench.setup()
        try:
            for name in dir(cls):
                if name.startswith("time_"):
                    getattr(bench, name)()
        finally:
            bench.teardown()
    bench = bench_log.Read()
    bench.setup()
    try:
        assert bench.time_log_read() > 0 and bench.time_raw_file_read() == bench.size
    finally:
        bench.teardown()
    bench = bench_log.AppendRatio()
    bench.setup()
    try:
        assert bench.track_log_append_vs_os_write() > 0   # a ratio; its value is asv's business
        assert bench.log.log_end_offset == bench.ROUNDS * bench.PER_ROUND * bench_log.RECORDS_PER_BATCH
    finally:
        bench.teardown()


def test_bench_index_smoke(benches):
    _, bench_index = benches
    assert bench_index.SEGMENT_BYTES <= 4 << 20
    lookup = bench_index.IndexLookup()
    path = lookup.setup_cache()
    lookup.setup(path)
    try:
        lookup.time_offset_index_lookup(path)
        lookup.time_translate_offset(path)
        assert lookup.track_index_entries(path) > 100
    finally:
        lookup.teardown(path)
    rec = bench_index.Recovery()
    path = rec.setup_cache()
    rec.time_recover_unflushed_segment(path)
    rec.time_read_and_crc32c_peer(path)
