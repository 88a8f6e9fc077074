"""Smoke run of benches/bench_streams_peers.py at a small size: pylog.streams (remote and
embedded), Quix Streams and Kafka Streams each run both jobs once against one fresh
``pylog serve``, and what each wrote is checked against the input, so the peer comparison
of issue #15 does not rot and compares equal work.

Quix Streams is skipped (with pip's reason) only when it cannot be installed; Kafka
Streams needs Java and Maven, which the project's machines have: their absence fails.
"""

from __future__ import annotations

import importlib
import math
import shutil
import struct
from collections import Counter

import pytest

import pylog

pytestmark = [pytest.mark.bench, pytest.mark.timeout(900)]


def _read_values(bootstrap: str, topic: str, partitions: int) -> list[bytes]:
    with pylog.connect(bootstrap) as client:
        c = client.consumer(enable_auto_commit=False, auto_offset_reset="earliest")
        parts = [(topic, p) for p in range(partitions)]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        ends = c.end_offsets(parts)
        values: list[bytes] = []
        while any(c.position(tp) < ends[tp] for tp in ends):
            values += [bytes(r.value) for r in c.poll(timeout_ms=200)]
        c.close(autocommit=False)
        return values


def test_streams_peer_benchmarks_run(monkeypatch):
    monkeypatch.setenv("PYLOG_BENCH_SMALL", "1")
    monkeypatch.delenv("PYLOG_BENCH_PEERS_N", raising=False)
    from benches import bench_streams_peers

    mod = importlib.reload(bench_streams_peers)
    assert shutil.which("java") and shutil.which("mvn"), "Kafka Streams' side needs Java and Maven"
    keys, values, stamps = mod._data(mod.N)
    # Every (key, window) counts 1, 2, ... up to its size: the multiset of emitted counts.
    windows = Counter((k, t // mod.WINDOW_MS) for k, t in zip(keys, stamps))
    counts = Counter(c for size in windows.values() for c in range(1, size + 1))
    stateless = Counter(v[:50] for v in values if mod.keep(v))
    checked: list[tuple[str, str]] = []

    def check(bootstrap: str, impl: str, job: str, topic: str) -> None:
        got = _read_values(bootstrap, topic, mod.PARTITIONS)
        if job == "stateless":
            assert Counter(got) == stateless, impl
        else:
            assert Counter(struct.unpack(">q", v)[0] for v in got) == counts, impl
        checked.append((impl, job))

    results = mod.measure(check=check)
    if "quix_unavailable" in results:
        pytest.skip(f"Quix Streams could not be installed: {results['quix_unavailable']}")
    assert sorted(checked) == sorted((i, j) for i in mod.REMOTE for j in mod.JOBS)
    for job in mod.JOBS:
        for impl in (*mod.REMOTE, "embedded"):
            assert math.isfinite(results[f"{impl}_{job}"]) and results[f"{impl}_{job}"] > 0, (impl, job)
        for peer in ("quix", "kafka_streams"):
            assert results[f"pylog_over_{peer}_{job}"] == pytest.approx(
                results[f"pylog_{job}"] / results[f"{peer}_{job}"])
    assert math.isfinite(results["embedded_windowed_in_memory"]) and results["embedded_windowed_in_memory"] > 0
    # asv's figures read the same run
    bench = mod.StreamsPeers()
    assert bench.track_pylog_over_quix_windowed(results) == results["pylog_over_quix_windowed"]
    assert "records/s" in mod.report(results)


def test_the_embedded_rounds_run():
    from benches import bench_streams_peers

    rounds = bench_streams_peers.embedded_rounds(n=200, rounds=1)
    assert sorted(rounds) == ["embedded_stateless", "embedded_windowed", "embedded_windowed_in_memory"]
    assert all(len(rates) == 1 and rates[0] > 0 for rates in rounds.values())
