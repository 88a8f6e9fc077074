"""The embedded client's hot paths against their peers, in one suite.

Targets from the issue (ratios are pylog over peer, higher is better):

- ``producer.send`` of 100-byte values, keyed and unkeyed, the returned handles kept alive
  the way a caller holding them would drop them, flushed (appended to the log) at the end:
  at least 1.0x confluent-kafka's ``Producer.produce()`` enqueue rate for the same records
  with no broker reachable (it never sends; pylog's timing includes the appends).
- ``producer.send_batch``: at least 10M records/s.
- consumer ``poll`` iteration over 100-byte records: at least 3M records/s; the peer is
  kafka-python's decoder iterating the same batches (decode only, no fetch, no consumer).
- a group rebalance of 3 in-process members: under 50 ms.

Data comes from benches/_data.py.  ``PYLOG_BENCH_SMALL=1`` shrinks every size for the smoke
test.  Each producer sample uses ``number = 1`` with a fresh confluent producer, whose queue
would otherwise fill across calls.
"""

import os
import shutil
import tempfile
import warnings

from benches._data import keys, values

SMALL = os.environ.get("PYLOG_BENCH_SMALL", "") not in ("", "0")
N = 2_000 if SMALL else 200_000
PARTITIONS = 8


def _client(tmp):
    import pylog

    c = pylog.open(os.path.join(tmp, "data"), offsets_topic_num_partitions=1)
    if not c.has_topic("bench"):
        c.create_topic("bench", PARTITIONS, config={"segment.bytes": 1 << 30})
    return c


class _OnBroker:
    """Setup shared by every benchmark here: an embedded client (``pylog.open``) with the
    bench topic in a fresh directory, closed and removed at teardown."""

    number = 1
    repeat = 5
    timeout = 600

    def setup(self):
        self.tmp = tempfile.mkdtemp(prefix="pylog-bench-client-")
        self.client = _client(self.tmp)

    def teardown(self):
        self.client.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _confluent():
    try:
        import confluent_kafka
    except ImportError:  # pragma: no cover - the peer is a test dependency
        return None
    return confluent_kafka.Producer({"bootstrap.servers": "127.0.0.1:1",
                                     "queue.buffering.max.messages": 2_000_000,
                                     "queue.buffering.max.kbytes": 2_097_151,
                                     "linger.ms": 5, "log_level": 0})


class Send(_OnBroker):
    """``producer.send`` of N 100-byte records (pylog: flushed at the end) vs confluent's
    ``produce`` enqueue of the same records."""

    def setup(self):
        super().setup()
        self.producer = self.client.producer(linger_ms=5, buffer_memory=256 << 20)
        self.values = values(N)
        self.keys = keys(N)
        self.peer = _confluent()

    def teardown(self):
        super().teardown()
        if self.peer is not None:
            self.peer.purge()

    def time_send_unkeyed_pylog(self):
        send = self.producer.send
        for v in self.values:
            send("bench", v)
        self.producer.flush()

    def time_send_keyed_pylog(self):
        send = self.producer.send
        for v, k in zip(self.values, self.keys):
            send("bench", v, k)
        self.producer.flush()

    def time_send_unkeyed_confluent(self):
        if self.peer is None:
            return
        produce = self.peer.produce
        for v in self.values:
            produce("bench", v)

    def time_send_keyed_confluent(self):
        if self.peer is None:
            return
        produce = self.peer.produce
        for v, k in zip(self.values, self.keys):
            produce("bench", v, k)


class SendBatch(_OnBroker):
    """``producer.send_batch`` of N 100-byte records, waited for (appended): lists of
    bytes, and the same values as one 2-D uint8 array (keys as fixed-width bytes).

    Steady state: the first calls on a fresh producer run slower (keyed lists 5M, then
    ~10M records/s on this machine, against 11-12.6M from the fourth call on) while its
    batch-buffer pool fills, so setup makes WARMUP_CALLS calls of each input kind on the
    producer first (asv's warmup_time does not apply with a fixed ``number``)."""

    WARMUP_CALLS = 1 if SMALL else 4

    def setup(self):
        import numpy as np

        super().setup()
        self.producer = self.client.producer(linger_ms=5, batch_size=1 << 20, buffer_memory=512 << 20)
        self.values = values(N)
        self.keys = keys(N)
        self.values_array = np.frombuffer(b"".join(self.values), dtype=np.uint8).reshape(N, 100)
        self.keys_array = np.array(self.keys, dtype="S8")
        for _ in range(self.WARMUP_CALLS):
            self.producer.send_batch("bench", self.values, keys=self.keys).result()
            self.producer.send_batch("bench", self.values_array).result()

    def time_send_batch_unkeyed(self):
        self.producer.send_batch("bench", self.values).result()

    def time_send_batch_keyed(self):
        self.producer.send_batch("bench", self.values, keys=self.keys).result()

    def time_send_batch_unkeyed_numpy(self):
        self.producer.send_batch("bench", self.values_array).result()

    def time_send_batch_keyed_numpy(self):
        self.producer.send_batch("bench", self.values_array, keys=self.keys_array).result()


class Poll(_OnBroker):
    """Iterating ``consumer.poll(max_records=500)`` over N 100-byte records (fetch from
    the log, CRC check, decode), vs kafka-python decoding the same batches."""

    def setup(self):
        super().setup()
        p = self.client.producer(linger_ms=5)
        p.send_batch("bench", values(N), partition=0).result()
        p.close()
        self.consumer = self.client.consumer(auto_offset_reset="earliest", enable_auto_commit=False)
        self.consumer.assign([("bench", 0)])
        chunks, offset = [], 0
        while True:
            res = self.client.broker.fetch("bench", 0, offset, 8 << 20)
            if res.records.size == 0:
                break
            chunks.append(bytes(res.records.records))
            offset = res.records.next_offset
        self.raw = b"".join(chunks)

    def time_poll_pylog(self):
        c = self.consumer
        c.seek(("bench", 0), 0)
        n = 0
        while n < N:
            for record in c.poll(timeout_ms=1000, max_records=500):
                record.value
                n += 1

    def time_decode_kafka_python(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from kafka.record.memory_records import MemoryRecords
        records = MemoryRecords(self.raw)
        n = 0
        while records.has_next():
            for record in records.next_batch():
                record.value
                n += 1
        assert n == N


class Rebalance(_OnBroker):
    """Three in-process members join a new group until each holds its share."""

    repeat = 10
    timeout = 120

    def setup(self):
        super().setup()
        self.round = 0

    def time_rebalance_three_members(self):
        from pylog.broker.group import GroupState

        self.round += 1
        group = f"bench-{self.round}"
        members = [self.client.consumer("bench", group_id=group, enable_auto_commit=False,
                                        heartbeat_thread=False) for _ in range(3)]
        groups = self.client.broker.groups
        for _ in range(10_000):
            for m in members:
                m.poll(timeout_ms=0)
            gen = groups.group_generation(group)
            if (groups.group_state(group) is GroupState.STABLE and all(m.generation() == gen for m in members)
                    and sum(len(m.assignment()) for m in members) == PARTITIONS):
                break
        else:
            raise AssertionError("the group did not settle")
        for m in members:
            m._abandon()     # not part of the rebalance; leaving would start another one
