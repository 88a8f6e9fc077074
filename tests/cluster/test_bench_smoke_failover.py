"""Smoke run of benches/bench_cluster_failover.py: one SIGKILL round and one SIGTERM
round against three real brokers on the session's ZooKeeper (a short session timeout),
so the asv benchmark does not rot and its figures are what they claim: every round
recorded with its load average and the SIGTERM round timed past the old leader's exit (a
failed delivery report fails a round)."""

from benches import bench_cluster_failover as bench

import pytest

pytestmark = pytest.mark.bench


def test_cluster_failover_measurement_runs(tmp_path, zk_connect):
    lines: list[str] = []
    f = bench.measure(kills=1, terms=1, session_timeout_ms=3000, base_dir=tmp_path, zookeeper=zk_connect,
                      log=lines.append)
    assert [line.split(":")[0] for line in lines] == ["kill 0", "term 0"]
    assert len(f["kill_load"]) == len(f["term_load"]) == 1
    assert f["kill_s"][0] > 0 and f["kill_p99_ms"] == f["kill_s"][0] * 1000
    # The longest gap lies inside the window that ends after the old leader's exit.
    (gap,), (exited,) = f["term_gap_s"], f["term_exit_s"]
    assert 0 < gap and 0 < exited
    assert f["term_p99_ms"] == gap * 1000 and f["term_exit_p50_ms"] == exited * 1000
