"""Producer partitioning: pylog's Cython partitioners vs kafka-python's murmur2 partitioner.

Per-record ``partition()`` calls (keyed, 100-byte keys; keyless, sticky) sit on
``producer.send``; ``partition_keys`` does a whole batch of keys in one C loop.
kafka-python is the peer: its ``murmur2`` (pure Python, same function as Kafka's) and its
``DefaultPartitioner`` class.  ``python -m benches.bench_partitioner`` prints records/s and
the ratios without asv.

Each ``time_*`` call partitions ``n`` records, so records/s = n / time.
"""

from __future__ import annotations

import warnings

import numpy as np

from benches import _data
from pylog.broker.partitioner import DefaultPartitioner, partition_keys

with warnings.catch_warnings():
    # kafka-python warns about its own use of importlib.resources on import.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.partitioner.default import DefaultPartitioner as KafkaPythonPartitioner
    from kafka.partitioner.default import murmur2 as kafka_python_murmur2

TOPIC = "events"
NUM_PARTITIONS = 12
AVAILABLE = list(range(NUM_PARTITIONS))


class _Cluster:
    """The little of kafka-python's ClusterMetadata its partitioner reads."""

    _topics = {TOPIC}
    _partitions = set(AVAILABLE)

    def topics(self):
        return self._topics

    def partitions_for_topic(self, topic):
        return self._partitions

    def available_partitions_for_topic(self, topic):
        return self._partitions


class KeyedPartition:
    """One ``partition()`` call per record, 100-byte keys."""

    params = [100_000]
    param_names = ["n"]

    def setup(self, n):
        self.keys = _data.values(n, size=100)
        self.pylog = DefaultPartitioner()
        self.kafka_python = KafkaPythonPartitioner()
        self.cluster = _Cluster()

    def time_pylog(self, n):
        partition = self.pylog.partition
        for k in self.keys:
            partition(TOPIC, None, k, NUM_PARTITIONS, AVAILABLE)

    def time_kafka_python_partitioner(self, n):
        partition, cluster = self.kafka_python.partition, self.cluster
        for k in self.keys:
            partition(TOPIC, None, k, None, None, cluster)

    def time_kafka_python_murmur2(self, n):
        # Just the hash and modulo, without kafka-python's per-call metadata lookups.
        for k in self.keys:
            (kafka_python_murmur2(k) & 0x7FFFFFFF) % NUM_PARTITIONS


class KeylessPartition:
    """One ``partition()`` call per keyless record; a new batch every 1000 records."""

    params = [100_000]
    param_names = ["n"]

    def setup(self, n):
        self.pylog = DefaultPartitioner()
        self.pylog.seed(_data.SEED)
        self.kafka_python = KafkaPythonPartitioner()
        self.cluster = _Cluster()

    def time_pylog(self, n):
        p = self.pylog
        partition = p.partition
        for i in range(n // 1000):
            for _ in range(1000):
                last = partition(TOPIC, None, None, NUM_PARTITIONS, AVAILABLE)
            p.on_new_batch(TOPIC, last)

    def time_kafka_python_partitioner(self, n):
        # kafka-python has no sticky partitioner: a random available partition per record.
        partition, cluster = self.kafka_python.partition, self.cluster
        for _ in range(n):
            partition(TOPIC, None, None, None, None, cluster)


class BulkPartitionKeys:
    """Every key of a batch at once (``partition_keys``), 100-byte keys."""

    params = [1_000_000]
    param_names = ["n"]

    def setup(self, n):
        self.keys = _data.values(n, size=100)
        self.buffer = b"".join(self.keys)
        self.offsets = np.arange(0, 100 * (n + 1), 100, dtype=np.int64)
        # kafka-python runs at ~1e5 keys/s: time it on a slice and scale (see _report).
        self.kafka_python_keys = self.keys[: max(1, n // 50)]

    def time_pylog_list(self, n):
        partition_keys(self.keys, NUM_PARTITIONS)

    def time_pylog_buffer(self, n):
        partition_keys(self.buffer, NUM_PARTITIONS, self.offsets)

    def time_kafka_python_murmur2_slice(self, n):
        # n / 50 keys: multiply the time by 50 for the same work as the pylog runs.
        [(kafka_python_murmur2(k) & 0x7FFFFFFF) % NUM_PARTITIONS for k in self.kafka_python_keys]


def _report() -> None:  # pragma: no cover - a manual report
    import timeit

    def best(fn, repeat=5):
        return min(timeit.repeat(fn, number=1, repeat=repeat))

    k = KeyedPartition()
    k.setup(100_000)
    ours = best(lambda: k.time_pylog(100_000))
    theirs = best(lambda: k.time_kafka_python_partitioner(100_000), 3)
    hash_only = best(lambda: k.time_kafka_python_murmur2(100_000), 3)
    print(f"keyed partition()   pylog {1e5 / ours / 1e6:6.2f} M rec/s   kafka-python partitioner "
          f"{1e5 / theirs / 1e6:6.3f} M rec/s ({theirs / ours:5.1f}x)   murmur2 only "
          f"{1e5 / hash_only / 1e6:6.3f} M rec/s ({hash_only / ours:5.1f}x)")

    kl = KeylessPartition()
    kl.setup(100_000)
    ours = best(lambda: kl.time_pylog(100_000))
    theirs = best(lambda: kl.time_kafka_python_partitioner(100_000), 3)
    print(f"keyless partition() pylog {1e5 / ours / 1e6:6.2f} M rec/s   kafka-python partitioner "
          f"{1e5 / theirs / 1e6:6.3f} M rec/s ({theirs / ours:5.1f}x)")

    b = BulkPartitionKeys()
    n = 1_000_000
    b.setup(n)
    as_list = best(lambda: b.time_pylog_list(n))
    as_buffer = best(lambda: b.time_pylog_buffer(n))
    theirs = best(lambda: b.time_kafka_python_murmur2_slice(n), 3) * 50
    print(f"partition_keys 1M   list {n / as_list / 1e6:6.1f} M keys/s   buffer {n / as_buffer / 1e6:6.1f} "
          f"M keys/s   kafka-python {n / theirs / 1e6:6.3f} M keys/s "
          f"({theirs / as_list:6.0f}x / {theirs / as_buffer:6.0f}x)")


if __name__ == "__main__":  # pragma: no cover
    _report()
