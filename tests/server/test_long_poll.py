"""Fetch long polls: a caught-up Fetch waits without an answer built up front, and is
answered from the partition as it is when the wait ends, by an append or by its
``max_wait_ms``.  The server runs in-process on a free loopback port."""

from __future__ import annotations

import contextlib

from pylog.protocol import messages as m
from pylog.records import RecordBatchBuilder, iter_batches
from tests.wire import WireClient
from server.util import unique, wait_for

F = m.FetchRequest


def batch(values):
    b = RecordBatchBuilder()
    for v in values:
        b.append(None, None, v)
    return b.build()


def send_fetch(conn, topic, offset, max_wait_ms):
    body = F(replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=1, max_bytes=1 << 20, isolation_level=0,
             session_id=0, session_epoch=-1, topics=[F.FetchTopic(topic=topic, partitions=[
                 F.FetchPartition(partition=0, fetch_offset=offset, partition_max_bytes=1 << 20)])])
    return conn.send_request(1, body)


def waiting(inproc, topic):
    return bool(inproc.server.state.fetch_waiters.by_partition.get((topic, 0)))


@contextlib.contextmanager
def caught_up_poll(inproc, max_wait_ms):
    """A topic of three records and a Fetch at offset 3 waiting on it: yields (topic,
    client, connection, pending request)."""
    topic = unique("poll")
    broker = inproc.server.broker
    broker.create_topic(topic, 1)
    broker.append(topic, 0, batch([b"a", b"b", b"c"]))
    host, port = inproc.address
    with WireClient(f"{host}:{port}") as c:
        conn = c.leader(topic, 0)
        pending = send_fetch(conn, topic, 3, max_wait_ms)
        wait_for(lambda: waiting(inproc, topic), "the fetch to wait")
        yield topic, c, conn, pending


def test_caught_up_fetch_is_answered_by_the_next_append(inproc):
    broker = inproc.server.broker
    with caught_up_poll(inproc, 30_000) as (topic, _c, conn, pending):
        broker.append(topic, 0, batch([b"d", b"e"]))
        p = conn.receive(pending).responses[0].partitions[0]
        assert p.error_code == 0 and p.high_watermark == 5 and p.log_start_offset == 0
        assert [r.value for b in iter_batches(memoryview(p.records)) for r in b] == [b"d", b"e"]
    assert not waiting(inproc, topic)


def test_expired_caught_up_fetch_reports_the_partition_as_it_is_then(inproc):
    broker = inproc.server.broker
    with caught_up_poll(inproc, 1500) as (topic, c, conn, pending):
        # Not an append: no waiter is woken, but the answer must show the new start.
        assert broker.delete_records(topic, 0, 2) == 2
        p = conn.receive(pending).responses[0].partitions[0]
        assert (p.error_code, p.high_watermark, p.log_start_offset, len(p.records or b"")) == (0, 3, 2, 0)
        # A fetch behind the high watermark is answered at once, with the records.
        p = c.fetch(topic, 0, 2, max_wait_ms=30_000)
        assert [r.value for b in iter_batches(memoryview(p.records)) for r in b] == [b"a", b"b", b"c"]


def test_unknown_partition_at_offset_minus_one_is_an_error_not_caught_up(inproc):
    topic = unique("poll")
    inproc.server.broker.create_topic(topic, 1)
    host, port = inproc.address
    with WireClient(f"{host}:{port}") as c:
        conn = c.leader(topic, 0)
        body = F(replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, isolation_level=0,
                 session_id=0, session_epoch=-1, topics=[F.FetchTopic(topic=topic, partitions=[
                     F.FetchPartition(partition=5, fetch_offset=-1, partition_max_bytes=1 << 20)])])
        p = conn.request(1, body).responses[0].partitions[0]
        assert p.error_code == 3 and p.partition_index == 5


def test_append_in_another_thread_while_a_fetch_decides_to_wait_wakes_it(inproc, monkeypatch):
    """The server appends off the loop when an append may fsync.  One that lands after a
    caught-up fetch looked at its partition but before its waiter is registered finds
    no waiter to wake; the fetch must still be answered by it, not by ``max_wait_ms``
    (a lost wake-up that held records for a whole long poll)."""
    import threading

    from pylog.server import handlers

    broker = inproc.server.broker
    topic = unique("poll")
    broker.create_topic(topic, 1)
    broker.append(topic, 0, batch([b"a", b"b", b"c"]))
    real = handlers.caught_up
    raced = []

    def caught_up_then_append(st, wanted, isolation_level=0):
        seen = real(st, wanted, isolation_level)
        if wanted and wanted[0][0] == topic and not raced:
            t = threading.Thread(target=lambda: raced.append(broker.append(topic, 0, batch([b"d"]))))
            t.start()
            t.join()
            assert not st.fetch_waiters.by_partition.get((topic, 0)), "the append found no waiter"
        return seen

    monkeypatch.setattr(handlers, "caught_up", caught_up_then_append)
    host, port = inproc.address
    with WireClient(f"{host}:{port}") as c:
        conn = c.leader(topic, 0)
        pending = send_fetch(conn, topic, 3, 60_000)
        p = conn.receive(pending, timeout=10).responses[0].partitions[0]
    assert raced and raced[0].error is None
    assert [r.value for b in iter_batches(memoryview(p.records)) for r in b] == [b"d"]
