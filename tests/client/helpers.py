"""Helpers shared by the producer tests: reading a topic back (through the client's
transport, so they work over any transport), and a transport proxy that injects produce
failures."""

from __future__ import annotations

import time

from pylog import _core
from pylog.broker.core import ProduceResult
from pylog.errors import InvalidRecordError, NotEnoughReplicasError, RequestTimedOutError, UnknownProducerIdError


def topic_with(client, n: int, prefix: str = "t") -> str:
    """A new one-partition topic (a name no other test uses) holding records b"0" .. n-1."""
    from tests.server.util import unique

    topic = unique(prefix)
    client.create_topic(topic, partitions=1)
    with client.producer() as p:
        for i in range(n):
            p.send(topic, b"%d" % i)
    return topic


def fetch_partition(client, topic, partition, offset, max_bytes=1 << 20, timeout=30.0):
    """One partition's fetch result through the client's transport (errors raised).

    A remote transport answers None for a partition it could not ask this time (its
    leader unknown, its broker in reconnect backoff, as after a server restart); like a
    consumer's next poll, this asks again until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        res = client.transport.fetch([(topic, partition, offset, max_bytes)])[0]
        if res is not None:
            break
        if time.monotonic() >= deadline:
            raise AssertionError(f"{topic}/{partition}: no fetch answer within {timeout} s")
        time.sleep(0.05)
    res.raise_for_error()
    return res


def records_of(client, topic):
    """partition -> [Record] of everything in the topic (each batch's CRC checked)."""
    out = {}
    for p in range(client.num_partitions(topic)):
        recs, offset = [], 0
        while True:
            res = fetch_partition(client, topic, p, offset)
            if res.records.size == 0:
                break
            for b in _core.iter_batches(res.records.records):
                b.validate()
                recs.extend(r for r in b if r.offset >= offset)
                offset = max(offset, b.last_offset + 1)
        out[p] = recs
    return out


def batch_sizes(client, topic, partition):
    """Sizes of the partition's batches, in log order."""
    res = fetch_partition(client, topic, partition, 0, 1 << 30)
    return [b.size for b in _core.iter_batches(res.records.records)]


class FlakyTransport:
    """Delegates to a transport; ``plan`` decides per partition of a produce call what happens:
    "ok", "lost_ack" (append, then report a retriable timeout), "retriable" (refuse with
    NOT_ENOUGH_REPLICAS), "first_retriable" (refuse only the first batch so, append the rest), "fatal" (refuse the first batch with INVALID_RECORD, append
    nothing), "unknown_pid" (refuse with UNKNOWN_PRODUCER_ID: the producer must bump its
    epoch and renumber, rewriting the header and CRC of batches already built)."""

    def __init__(self, transport, plan):
        self._t = transport
        self.plan = list(plan)
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._t, name)

    def produce(self, work, *, acks):
        return [self._produce_partition(topic, partition, batches, acks) for topic, partition, batches in work]

    def _append(self, topic, partition, batches, acks):
        return self._t.produce([(topic, partition, batches)], acks=acks)[0]

    def _produce_partition(self, topic, partition, batches, acks):
        self.calls += 1
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "ok":
            return self._append(topic, partition, batches, acks)
        if step == "lost_ack":
            self._append(topic, partition, batches, acks)
            return [ProduceResult.failed(RequestTimedOutError("ack lost")) for _ in batches]
        if step == "retriable":
            return [ProduceResult.failed(NotEnoughReplicasError("not now")) for _ in batches]
        if step == "first_retriable":
            # The first batch refused retriably, the later ones appended (each stood on its
            # own: a producer without idempotence).
            rest = self._append(topic, partition, batches[1:], acks) if batches[1:] else []
            return [ProduceResult.failed(NotEnoughReplicasError("not now"))] + rest
        if step == "unknown_pid":
            return [ProduceResult.failed(UnknownProducerIdError("who?")) for _ in batches]
        if step != "fatal":
            raise ValueError(f"unknown plan step {step!r}")
        # The first batch is refused; an idempotent producer's later ones then have a gap.
        rest = self._append(topic, partition, batches[1:], acks) if batches[1:] else []
        return [ProduceResult.failed(InvalidRecordError("refused"))] + rest


def read_to_end(client, topic, partitions, isolation_level, wait_s=30):
    """partition -> values a consumer at ``isolation_level`` gets from offset 0 up to the
    end offsets it sees (the last stable offsets for read_committed)."""
    import time

    from pylog.broker.core import TopicPartition

    tps = [TopicPartition(topic, p) for p in range(partitions)]
    c = client.consumer(isolation_level=isolation_level, auto_offset_reset="earliest")
    try:
        c.assign(tps)
        ends = c.end_offsets(tps)
        out = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + wait_s
        while any(c.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"positions {[c.position(tp) for tp in tps]}, ends {ends}"
            for r in c.poll(0.5):
                out[r.partition].append(r.value)
        return out
    finally:
        c.close()


def offsets_follow_the_transaction(client, source, sink, group, transactional_id, wait_s=30):
    """Consume-transform-produce with the offsets in the transaction: 8 records of
    ``source`` read by a read_committed member of ``group``; the first 5 transformed
    into ``sink`` with their offsets in a committed transaction (the group's offset
    moves to 5), the rest in an aborted one (it stays; its output is never seen)."""
    import time

    from pylog.broker.core import OffsetAndMetadata, TopicPartition

    client.create_topic(source, 1)
    client.create_topic(sink, 1)
    with client.producer() as feeder:
        for i in range(8):
            feeder.send(source, b"%d" % i, partition=0)
    consumer = client.consumer(source, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
                               isolation_level="read_committed")
    p = client.producer(transactional_id=transactional_id, linger_ms=0)
    tp = TopicPartition(source, 0)
    try:
        p.init_transactions()
        records = []
        deadline = time.monotonic() + wait_s
        while len(records) < 8:
            assert time.monotonic() < deadline
            records += consumer.poll(0.5)
        p.begin_transaction()
        for r in records[:5]:
            p.send(sink, r.value * 2, partition=0)
        p.send_offsets_to_transaction({tp: OffsetAndMetadata(records[4].offset + 1)}, consumer.group_metadata())
        p.commit_transaction()
        assert consumer.committed(tp).offset == 5
        p.begin_transaction()
        for r in records[5:]:
            p.send(sink, r.value * 2, partition=0)
        p.send_offsets_to_transaction({tp: records[-1].offset + 1}, group)      # by group id
        p.abort_transaction()
        assert consumer.committed(tp).offset == 5
    finally:
        p.close()
        consumer.close()
    assert read_to_end(client, sink, 1, "read_committed") == {0: [b"%d" % i * 2 for i in range(5)]}
