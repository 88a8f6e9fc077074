"""A produce request's batches for one partition are appended all or none.

Kafka appends a request's records for a partition as one unit.  pylog used to try the
batches together and, when that failed, again one by one, so a request rejected for
its third batch left the first two in the log (answered as failed, so a client retried
them as new data) and the producer state advanced past them.  Now the log and the
producer state after a rejected request are the ones before it.
"""

from __future__ import annotations

import time

import pytest

from pylog import _core
from pylog.broker.core import Broker


class Clock:
    """A hand-driven clock that starts at the wall clock's now, so batches stamped with the
    real time are within the topic's message.timestamp.after.max.ms (one hour)."""

    def __init__(self, t: int | None = None) -> None:
        self.t = int(time.time() * 1000) if t is None else t

    def __call__(self) -> int:
        return self.t


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "data", clock=Clock(), background=False, offsets_topic_num_partitions=1)
    b.create_topic("t")
    yield b
    b.close()


def batch(values, *, pid=-1, epoch=-1, seq=-1, ts=1_700_000_000_000):
    b = _core.RecordBatchBuilder(producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    for v in values:
        b.append(ts, None, v)
    return bytes(b.build())


def state(broker):
    """Everything a rejected request must leave as it was."""
    res = broker.fetch("t", 0, 0, 1 << 20)
    res.raise_for_error()
    return (broker.high_watermark("t", 0), bytes(res.records.records),
            sorted((p.producer_id, p.producer_epoch, p.last_sequence) for p in broker.describe_producers("t", 0)))


def test_an_out_of_order_batch_in_the_middle_rejects_the_whole_request(broker):
    pid = broker.init_producer_id().producer_id
    broker.append("t", 0, batch([b"x"]))                   # something already in the log
    before = state(broker)
    request = (batch([b"a"], pid=pid, epoch=0, seq=0) + batch([b"b"], pid=pid, epoch=0, seq=1)
               + batch([b"c"], pid=pid, epoch=0, seq=5) + batch([b"d"], pid=pid, epoch=0, seq=6))
    res = broker.produce("t", 0, request)
    assert res.error_code == 45, res                       # OUT_OF_ORDER_SEQUENCE_NUMBER
    assert state(broker) == before
    # The producer state did not move: sequence 0 is new (not a duplicate), as it must be.
    again = broker.produce("t", 0, batch([b"a"], pid=pid, epoch=0, seq=0))
    assert again.error_code == 0 and not again.duplicate and again.base_offset == 1


def test_a_fenced_producer_in_the_middle_rejects_the_whole_request(broker):
    a = broker.init_producer_id().producer_id
    b = broker.init_producer_id().producer_id
    bumped = broker.init_producer_id(producer_id=b, producer_epoch=0)
    assert bumped.producer_epoch == 1
    broker.append("t", 0, batch([b"b1"], pid=b, epoch=1, seq=0))
    before = state(broker)
    request = batch([b"a0"], pid=a, epoch=0, seq=0) + batch([b"stale"], pid=b, epoch=0, seq=1) + batch([b"n"])
    assert broker.produce("t", 0, request).error_code == 47  # INVALID_PRODUCER_EPOCH
    assert state(broker) == before
    assert not broker.produce("t", 0, batch([b"a0"], pid=a, epoch=0, seq=0)).duplicate


@pytest.mark.parametrize("damage", ["crc", "timestamp", "empty"])
def test_a_bad_batch_in_the_middle_rejects_the_whole_request(broker, damage):
    broker.alter_configs("t", {"message.timestamp.after.max.ms": 60_000})
    good = batch([b"ok"])
    if damage == "crc":
        bad = bytearray(batch([b"damaged"]))
        bad[-2] ^= 0xFF
        bad, code = bytes(bad), 2
    elif damage == "timestamp":
        bad, code = batch([b"future"], ts=int(time.time() * 1000) + 3_600_000), 32
    else:
        bad, code = bytes(_core.RecordBatchBuilder().build()), 87
    before = state(broker)
    assert broker.produce("t", 0, good + bad + good).error_code == code
    assert state(broker) == before


def test_a_request_too_large_for_a_segment_appends_nothing(tmp_path):
    with Broker(tmp_path / "d", clock=Clock(), background=False, offsets_topic_num_partitions=1) as b:
        b.create_topic("t", config={"segment.bytes": 4096})
        big = batch([b"x" * 2500])
        assert b.produce("t", 0, big).error_code == 0
        assert b.produce("t", 0, big + big).error_code == 18  # RECORD_LIST_TOO_LARGE, as Kafka
        assert b.high_watermark("t", 0) == 1


def test_several_producers_in_one_request_all_appended_with_their_state(broker):
    a = broker.init_producer_id().producer_id
    b = broker.init_producer_id().producer_id
    request = (batch([b"a0", b"a1"], pid=a, epoch=0, seq=0) + batch([b"b0"], pid=b, epoch=0, seq=0)
               + batch([b"plain"]) + batch([b"a2"], pid=a, epoch=0, seq=2))
    res = broker.produce("t", 0, request)
    assert res.error_code == 0 and res.base_offset == 0 and not res.duplicate
    assert broker.high_watermark("t", 0) == 5
    assert sorted((p.producer_id, p.last_sequence) for p in broker.describe_producers("t", 0)) == [(a, 2), (b, 0)]
    # The same request again is a retry: nothing appended, the original offsets back.
    again = broker.produce("t", 0, request)
    assert again.duplicate and again.base_offset == 0 and broker.high_watermark("t", 0) == 5


def test_a_retry_holding_new_batches_too_is_answered_as_the_duplicate(broker):
    """As in Kafka: a request with a duplicate batch is a retry, whatever follows it."""
    pid = broker.init_producer_id().producer_id
    first = batch([b"0"], pid=pid, epoch=0, seq=0)
    assert broker.produce("t", 0, first).base_offset == 0
    before = state(broker)
    res = broker.produce("t", 0, first + batch([b"1"], pid=pid, epoch=0, seq=1))
    assert res.duplicate and res.base_offset == 0
    assert state(broker) == before
