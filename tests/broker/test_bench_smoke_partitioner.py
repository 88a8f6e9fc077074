"""Smoke run of benches/bench_partitioner.py: every benchmark method runs once on small
inputs, so the asv suite does not rot; the peers it compares against agree with pylog."""

import inspect
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benches import bench_partitioner  # noqa: E402

pytestmark = pytest.mark.bench

SMALL = 2000


@pytest.mark.parametrize("cls", [bench_partitioner.KeyedPartition, bench_partitioner.KeylessPartition,
                                 bench_partitioner.BulkPartitionKeys])
def test_every_benchmark_runs(cls):
    bench = cls()
    bench.setup(SMALL)
    ran = []
    for name, fn in inspect.getmembers(bench, inspect.ismethod):
        if name.startswith("time_"):
            fn(SMALL)
            ran.append(name)
    assert any(n.startswith("time_pylog") for n in ran)
    assert any("kafka_python" in n for n in ran)


def test_bench_peers_compute_the_same_partitions():
    bench = bench_partitioner.BulkPartitionKeys()
    bench.setup(SMALL)
    ours = bench_partitioner.partition_keys(bench.buffer, bench_partitioner.NUM_PARTITIONS, bench.offsets)
    theirs = [(bench_partitioner.kafka_python_murmur2(k) & 0x7FFFFFFF) % bench_partitioner.NUM_PARTITIONS
              for k in bench.keys]
    assert ours.tolist() == theirs
    assert bench_partitioner.partition_keys(bench.keys, bench_partitioner.NUM_PARTITIONS).tolist() == theirs
    keyed = bench_partitioner.KeyedPartition()
    keyed.setup(50)
    cluster = keyed.cluster
    for k in keyed.keys:
        assert keyed.pylog.partition("events", None, k, 12) == \
            keyed.kafka_python.partition("events", None, k, None, None, cluster)
