"""Smoke run of benches/bench_scale.py: every scale measurement runs once on small inputs
against real ``pylog serve`` processes, so the asv suite does not rot and its figures can
be computed (positive rates, ratios relative to the first partition count, percentiles
in order)."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benches import bench_scale  # noqa: E402

pytestmark = pytest.mark.bench


def test_partition_sweep_reports_ratios_to_one_partition():
    sweep = bench_scale.partition_sweep(records=10_000, counts=(1, 20))
    assert sweep[1]["throughput_ratio"] == 1.0 and sweep[1]["cpu_ratio"] == 1.0
    assert sweep[20]["records_per_s"] > 0 and sweep[20]["cpu_ms_per_mb"] > 0
    assert sweep[20]["cpu_ratio"] == sweep[20]["cpu_ms_per_mb"] / sweep[1]["cpu_ms_per_mb"]


def test_latency_with_and_without_a_busy_neighbour():
    lat = bench_scale.latency_busy_neighbour(seconds=1.0, rate=2000)   # the first 0.5 s warm up
    for run in ("quiet", "busy"):
        fig = lat[run]
        assert fig["records"] > 0 and 0 < fig["p50"] <= fig["p99"] <= fig["p999"] <= fig["max"]
        assert fig["server_cpu_s"] > 0 and fig["load1"] >= 0 and fig["load1_end"] >= 0
        assert fig["outliers"] == 0 or 0 <= fig["busy_machine_outliers"] <= 1
        assert 0 <= fig["busy_machine_records"] <= 1 and fig["steal_cpu"] >= 0
    assert lat["policy"] == "SCHED_OTHER" and lat["cgroup"] is None


def test_latency_runs_under_the_ordinary_scheduler(monkeypatch):
    """Called under a real-time policy, the measured processes run under SCHED_OTHER
    (so the spinner can delay them) and the caller gets its policy back."""
    import os

    if not hasattr(os, "SCHED_FIFO"):
        pytest.skip("no POSIX scheduling policies here")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except PermissionError:
        pytest.skip("a real-time policy needs privileges here")
    seen = []
    real = bench_scale.end_to_end_latency

    def measured(*args, **kwargs):
        seen.append(os.sched_getscheduler(0))
        return real(*args, **kwargs)

    monkeypatch.setattr(bench_scale, "end_to_end_latency", measured)
    try:
        lat = bench_scale.latency_busy_neighbour(seconds=0.6, rate=1000)
        assert os.sched_getscheduler(0) == os.SCHED_FIFO
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    assert seen == [os.SCHED_OTHER, os.SCHED_OTHER] and lat["policy"] == "SCHED_FIFO"


def test_outliers_by_machine_load_counts_each_record_in_its_interval():
    # Two intervals, ending at 100 and 200 ns: other processes used 0.1 then 1.5 cores.
    rows = [(100, 0.1, 0.0, 3), (200, 1.5, 0.01, 5)]
    fig = bench_scale._outliers_by_machine_load([0.3, 5.0, 0.4, 3.0, 4.0], [10, 20, 150, 160, 170], rows)
    assert fig["outliers"] == 3 and fig["running_max"] == 5
    assert fig["busy_machine_records"] == 3 / 5 and fig["busy_machine_outliers"] == 2 / 3
    assert fig["other_cpu"] == 0.8 and fig["steal_cpu"] == 0.005


@pytest.mark.parametrize("kind", ["confluent", "pylog"])
def test_multi_consumer_group_reads_everything(kind):
    fig = bench_scale.multi_consumer(records=20_000, consumers=2, partitions=4, kind=kind, timeout=120)
    assert fig["records"] >= 20_000 and fig["records_per_s"] > 0 and fig["server_cpu_s"] > 0
    assert fig["consumers_cpu_s"] is None or fig["consumers_cpu_s"] > 0


def test_open_time_of_a_wide_data_dir():
    fig = bench_scale.open_time(partitions=50, rounds=1)
    assert fig["listen_ms"] > 0 and fig["empty_listen_ms"] > 0
    assert fig["extra_ms"] == fig["listen_ms"] - fig["empty_listen_ms"]
    assert fig["floor_listen_ms"] > 0
    assert fig["over_floor_ms"] == fig["listen_ms"] - fig["floor_listen_ms"]


def test_unclean_open_with_and_without_recovery_threads():
    fig = bench_scale.unclean_open(partitions=20, rounds=1)
    assert fig["ms"] > 0 and fig["ms_one_thread"] > 0 and fig["threads"] > 1
    assert fig["speedup"] == fig["ms_one_thread"] / fig["ms"]


def test_produce_replay_reports_server_cpu_per_mb():
    fig = bench_scale.replay_ratio(megabytes=0.5)
    for run in ("one", "wide"):
        assert fig[run]["cpu_ms_per_mb"] > 0 and fig[run]["mb_per_s"] > 0
    assert fig["wide"]["request_bytes"] < 10_000 < fig["one"]["request_bytes"]
    assert fig["cpu_ratio"] == fig["wide"]["cpu_ms_per_mb"] / fig["one"]["cpu_ms_per_mb"]
