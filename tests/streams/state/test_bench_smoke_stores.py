"""Smoke run of benches/bench_streams_stores.py at a small size: every benchmark of every
installed candidate runs once, so the asv suite that chose the persistent store does
not rot."""

from __future__ import annotations

import inspect
import os

import pytest

pytestmark = pytest.mark.bench


@pytest.fixture
def bench(monkeypatch, tmp_path):
    monkeypatch.setenv("PYLOG_BENCH_SMALL", "1")
    monkeypatch.chdir(tmp_path)
    import importlib

    from benches import bench_streams_stores

    mod = importlib.reload(bench_streams_stores)  # read PYLOG_BENCH_SMALL
    mod.N, mod.PUTS, mod.GETS, mod.RANGES = 2_000, 1_000, 500, 100
    return mod


def test_every_candidate_benchmark_runs(bench):
    root = bench.Reads().setup_cache()
    ran = set()
    for name in bench.CANDIDATES:
        try:
            w = bench.Writes()
            w.setup(name)
        except NotImplementedError:
            continue
        w.teardown(name)
        for cls, args in ((bench.Writes, (name,)), (bench.Reads, (root, name)), (bench.Open, (root, name))):
            for method, fn in inspect.getmembers(cls, inspect.isfunction):
                if method.startswith(("time_", "track_")):
                    obj = cls()
                    obj.setup(*args)
                    try:
                        got = getattr(obj, method)(*args)
                        if method.startswith("track_"):
                            assert got > 0
                    finally:
                        obj.teardown(*args)
        ran.add(name)
    assert {"rocksdict", "sqlite3"} <= ran  # the chosen store and the stdlib peer at least
    assert os.path.isdir(root)


def test_pylog_window_stores_benchmark_runs(bench):
    for kind in bench.WindowStores.params:
        for method in ("time_fetch_put", "time_restore"):
            b = bench.WindowStores()
            b.setup(kind)
            try:
                getattr(b, method)(kind)
            finally:
                b.teardown(kind)


def test_candidates_agree_on_reads(bench, tmp_path):
    stores = {}
    for name in bench.CANDIDATES:
        try:
            stores[name] = bench.open_store(name, str(tmp_path / name))
        except NotImplementedError:
            continue
    try:
        for s in stores.values():
            s.write(bench.changelog(600))
        answers = {name: (s.get(bench.key(5)), s.range(bench.key(100), 20)) for name, s in stores.items()}
        assert len({repr(a) for a in answers.values()}) == 1, answers
    finally:
        for s in stores.values():
            s.close()
