"""Smoke run of benches/bench_server.py: every measurement runs once on small inputs
against a real ``pylog serve``, so the asv suite does not rot, and the figures it reports
are sane (positive rates, a sendfile ratio and CPU figures that can be computed)."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benches import bench_server  # noqa: E402

pytestmark = pytest.mark.bench


def test_every_server_measurement_runs():
    server = bench_server.ServeProcess()
    try:
        bench_server._create_topic(server.bootstrap, "smoke")
        assert bench_server.confluent_produce(server.bootstrap, "smoke", 20_000) > 0
        assert bench_server.confluent_consume(server.bootstrap, "smoke", 20_000) > 0
        cpu = bench_server.server_cpu_ratio(server, "smoke-cpu", megabytes=5)
        assert cpu["cpu_ms_per_mb_produce"] > 0 and cpu["cpu_ms_per_mb_fetch"] > 0 and cpu["ratio"] > 0
        assert cpu["produce_records_per_s"] > 0 and cpu["consume_records_per_s"] > 0
        cpu = bench_server.server_cpu_ratio_large_batches(server, "smoke-cpu-large", megabytes=5)
        assert cpu["cpu_ms_per_mb_produce"] > 0 and cpu["cpu_ms_per_mb_fetch"] > 0
        sf = bench_server.fetch_vs_raw_sendfile(server, "smoke-sendfile", megabytes=5)
        assert sf["fetch_mb_per_s"] > 0 and sf["raw_sendfile_mb_per_s"] > 0
        bench_server._create_topic(server.bootstrap, "smoke-latency")
        lat = bench_server.end_to_end_latency(server.bootstrap, "smoke-latency", rate=2000, seconds=1.0)
        assert lat["records"] > 0 and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    finally:
        server.stop()


def test_kernel_floor_measures_every_path():
    fl = bench_server.kernel_floor_ratio(megabytes=8, rounds=1)
    for key in ("recv_pwrite_ms_per_mb", "splice_ms_per_mb", "sendfile_ms_per_mb"):
        assert fl[key] > 0, key
    assert fl["recv_pwrite_to_sendfile"] == fl["recv_pwrite_ms_per_mb"] / fl["sendfile_ms_per_mb"]
    assert fl["splice_to_sendfile"] == fl["splice_ms_per_mb"] / fl["sendfile_ms_per_mb"]
