"""Smoke run of benches/bench_cluster_throughput.py: the whole measurement, on a few
thousand records, against three real brokers on the session's ZooKeeper, so the asv
benchmark does not rot and its figures are what they claim (every record acknowledged,
the RF=3 topic's ISR full afterwards, both topics led by the same broker)."""

from benches import bench_cluster_throughput as bench

import pytest

pytestmark = pytest.mark.bench


def test_cluster_throughput_measurement_runs(tmp_path, zk_connect):
    with bench.ThroughputRig(tmp_path, zookeeper=zk_connect) as rig:
        f = bench.measure_rig(rig, records=3_000, rounds=1)
        # rig.produce checked each round's records moved the high watermark by as many;
        # with the warm-up round, both topics hold exactly these records.
        assert rig.high_watermark(bench.RF1) == rig.high_watermark(bench.RF3) == 3_000 + 600
        md = rig.admin.list_topics(timeout=10)
        assert md.topics[bench.RF1].partitions[0].leader == md.topics[bench.RF3].partitions[0].leader
        assert sorted(md.topics[bench.RF3].partitions[0].replicas) == [1, 2, 3]
    assert f["rf3_isr_after"] == [1, 2, 3]
    assert f["rf1_acks1_records_per_s"] > 0 and f["rf3_acksall_records_per_s"] > 0
    assert f["ratio"] == f["rf3_acksall_records_per_s"] / f["rf1_acks1_records_per_s"]
    assert f["rf1_brokers_cpu_us_per_record"] > 0 and f["rf3_brokers_cpu_us_per_record"] > 0
