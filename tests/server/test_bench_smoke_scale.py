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
        assert fig["server_cpu_s"] > 0 and fig["load1"] >= 0


@pytest.mark.parametrize("kind", ["confluent", "pylog"])
def test_multi_consumer_group_reads_everything(kind):
    fig = bench_scale.multi_consumer(records=20_000, consumers=2, partitions=4, kind=kind, timeout=120)
    assert fig["records"] >= 20_000 and fig["records_per_s"] > 0 and fig["server_cpu_s"] > 0
    assert fig["consumers_cpu_s"] is None or fig["consumers_cpu_s"] > 0


def test_open_time_of_a_wide_data_dir():
    fig = bench_scale.open_time(partitions=50, rounds=1)
    assert fig["listen_ms"] > 0 and fig["empty_listen_ms"] > 0
    assert fig["extra_ms"] == fig["listen_ms"] - fig["empty_listen_ms"]


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
