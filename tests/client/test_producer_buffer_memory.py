"""buffer_memory at the producer's door (#12 audit, findings 2 and 12): a send_batch call
is all or nothing, and a record larger than buffer_memory is refused as Kafka's producer
refuses it (KafkaProducer.ensureValidRecordSize)."""

from __future__ import annotations

import pytest

from pylog.client.producer import Producer
from pylog.errors import RecordTooLargeError, RequestTimedOutError
from tests.client.helpers import records_of
from tests.client.test_aio import GatedTransport

pytestmark = pytest.mark.embedded_only("holds the embedded transport's produce to keep buffer_memory full")

VALUE = b"." * 1000


def _stuck_producer(client, **kw):
    """A producer whose sender is held in its first produce until ``gated.gate`` is set,
    with 100 KB of records buffered."""
    client.create_topic("t", 1)
    gated = GatedTransport(client.transport)
    p = Producer(gated, buffer_memory=200_000, linger_ms=0, **kw)
    handles = [p.send("t", b"%04d" % i + VALUE, partition=0) for i in range(100)]
    assert p.buffered_bytes > 100_000
    return gated, p, handles


def test_send_batch_that_finds_no_room_raises_with_nothing_queued(client):
    gated, p, handles = _stuck_producer(client, max_block_ms=50)
    try:
        before = p.buffered_bytes
        # 120 KB: fits buffer_memory alone, not beside the 100 KB held.  The call used to
        # queue the part that fitted, then raise: retried, that part was written twice.
        with pytest.raises(RequestTimedOutError, match="buffer_memory"):
            p.send_batch("t", [b"b%04d" % i + VALUE for i in range(120)], partition=0)
        assert p.buffered_bytes == before
    finally:
        gated.gate.set()
    p.flush()
    assert all(h.succeeded() for h in handles)
    values = [r.value for r in records_of(client, "t")[0]]
    assert values == [b"%04d" % i + VALUE for i in range(100)]    # none of the failed call's
    # Once there is room the same call goes whole, and it never waits again meanwhile.
    fut = p.send_batch("t", [b"b%04d" % i + VALUE for i in range(120)], partition=0)
    assert list(fut.result(timeout=30)) == list(range(100, 220))
    assert p.buffered_bytes == 0
    p.close()


def test_send_batch_larger_than_buffer_memory_never_raises_part_way(client):
    # max_block_ms bounds the wait before anything is queued.  A call larger than
    # buffer_memory then streams; when the sender frees nothing in time (here: held),
    # the rest is queued beyond buffer_memory instead of raising with part of the call
    # queued, and the future reports every record.
    client.create_topic("t", 1)
    gated = GatedTransport(client.transport)
    p = Producer(gated, buffer_memory=50_000, batch_size=8192, linger_ms=0, max_block_ms=1)
    values = [b"%05d" % i + b"x" * 200 for i in range(2000)]   # about 8 x buffer_memory
    try:
        fut = p.send_batch("t", values, partition=0)
        assert not fut.done() and p.buffered_bytes > 50_000
    finally:
        gated.gate.set()
    assert list(fut.result(timeout=30)) == list(range(2000))
    assert [r.value for r in records_of(client, "t")[0]] == values
    assert p.buffered_bytes == 0
    p.close()


def test_a_record_larger_than_buffer_memory_is_refused(client):
    client.create_topic("t", 1, config={"max.message.bytes": 1 << 21})
    p = client.producer(buffer_memory=200_000, max_request_size=1 << 21)
    with pytest.raises(RecordTooLargeError, match="buffer_memory=200000"):
        p.send("t", b"x" * 1_000_000)
    with pytest.raises(RecordTooLargeError, match="buffer_memory=200000"):
        p.send_batch("t", [b"small", b"x" * 1_000_000])
    assert p.buffered_bytes == 0
    p.send("t", b"x" * 150_000).result(timeout=30)    # within buffer_memory: accepted
    p.close()
    assert len(records_of(client, "t")[0]) == 1
