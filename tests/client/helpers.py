"""Helpers shared by the producer tests: reading a topic back, and a broker proxy that
injects produce failures."""

from __future__ import annotations

from pylog import _core
from pylog.broker.core import ProduceResult
from pylog.errors import InvalidRecordError, NotEnoughReplicasError, RequestTimedOutError, UnknownProducerIdError


def records_of(broker, topic):
    """partition -> [Record] of everything in the topic (each batch's CRC checked)."""
    out = {}
    for p in range(broker.num_partitions(topic)):
        recs, offset = [], 0
        while True:
            res = broker.fetch(topic, p, offset)
            res.raise_for_error()
            if res.records.size == 0:
                break
            for b in _core.iter_batches(res.records.records):
                b.validate()
                recs.extend(r for r in b if r.offset >= offset)
            offset = res.records.next_offset
        out[p] = recs
    return out


def batch_sizes(broker, topic, partition):
    """Sizes of the partition's batches, in log order."""
    res = broker.fetch(topic, partition, 0, 1 << 30)
    return [b.size for b in _core.iter_batches(res.records.records)]


class FlakyBroker:
    """Delegates to a broker; ``plan`` decides per produce_batches call what happens:
    "ok", "lost_ack" (append, then report a retriable timeout), "retriable" (refuse with
    NOT_ENOUGH_REPLICAS), "fatal" (refuse the first batch with INVALID_RECORD, append
    nothing), "unknown_pid" (refuse with UNKNOWN_PRODUCER_ID: the producer must bump its
    epoch and renumber, rewriting the header and CRC of batches already built)."""

    def __init__(self, broker, plan):
        self._b = broker
        self.plan = list(plan)
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._b, name)

    def produce_batches(self, topic, partition, batches, *, acks=-1):
        self.calls += 1
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "ok":
            return self._b.produce_batches(topic, partition, batches, acks=acks)
        if step == "lost_ack":
            self._b.produce_batches(topic, partition, batches, acks=acks)
            return [ProduceResult.failed(RequestTimedOutError("ack lost")) for _ in batches]
        if step == "retriable":
            return [ProduceResult.failed(NotEnoughReplicasError("not now")) for _ in batches]
        if step == "unknown_pid":
            return [ProduceResult.failed(UnknownProducerIdError("who?")) for _ in batches]
        if step != "fatal":
            raise ValueError(f"unknown plan step {step!r}")
        # The first batch is refused; an idempotent producer's later ones then have a gap.
        rest = self._b.produce_batches(topic, partition, batches[1:], acks=acks) if batches[1:] else []
        return [ProduceResult.failed(InvalidRecordError("refused"))] + rest
