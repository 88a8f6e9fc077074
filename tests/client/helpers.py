"""Helpers shared by the producer tests: reading a topic back (through the client's
transport, so they work over any transport), and a transport proxy that injects produce
failures."""

from __future__ import annotations

from pylog import _core
from pylog.broker.core import ProduceResult
from pylog.errors import InvalidRecordError, NotEnoughReplicasError, RequestTimedOutError, UnknownProducerIdError


def fetch_partition(client, topic, partition, offset, max_bytes=1 << 20):
    """One partition's fetch result through the client's transport (errors raised)."""
    res = client.transport.fetch([(topic, partition, offset, max_bytes)])[0]
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
