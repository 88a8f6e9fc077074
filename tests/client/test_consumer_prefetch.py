"""Read-ahead (``Transport.prefetch``, sent at the end of every poll that returns records)
as the consumer's user sees it, on both transports (embedded: prefetch is a no-op, so
these pin the behaviour both must share): every record once, in order, across many small
fetches and poll/poll_batches switches, and never a prefetched answer after a seek, a
pause, a reset or a rebalance moved the position."""

from __future__ import annotations

from pylog.broker.core import TopicPartition
from tests.client.conftest import drain
from tests.client.test_consumer_batches import drain_batches, produce
from tests.client.test_groups import settle

TP0 = TopicPartition("t", 0)
TP1 = TopicPartition("t", 1)


def _values(n, tag=b"v"):
    return [tag + b"%04d" % i for i in range(n)]


def _read_switching(c, n, every, batch_records, poll_records):
    """partition -> values of ``n`` records, read by ``poll`` with every ``every``-th
    round a ``poll_batches`` instead."""
    got: dict[int, list[bytes]] = {}
    for i in range(3000):
        if sum(map(len, got.values())) >= n:
            break
        if i % every == every - 1:
            for item in c.poll_batches(timeout_ms=2000, max_records=batch_records):
                got.setdefault(item.partition, []).extend(item.columns().values())
        else:
            for r in c.poll(timeout_ms=2000, max_records=poll_records):
                got.setdefault(r.partition, []).append(r.value)
    return got


def test_every_record_once_in_order_over_many_prefetches(client):
    client.create_topic("t", 2)
    vals = {0: _values(300, b"a"), 1: _values(300, b"b")}
    for p, vs in vals.items():
        produce(client, vs, partition=p)
    # Small fetches: each poll empties a buffer and leaves a prefetch behind.
    c = client.consumer(auto_offset_reset="earliest", max_partition_fetch_bytes=600)
    c.assign([TP0, TP1])
    # Switching kinds drops the buffer and reads from the position.
    got = _read_switching(c, 600, every=3, batch_records=7, poll_records=11)
    assert got == vals
    assert c.position(TP0) == c.position(TP1) == 300
    assert c.poll(timeout_ms=0) == []
    c.close()


def test_no_prefetched_record_after_a_seek(client):
    client.create_topic("t", 1)
    vals = _values(200)
    produce(client, vals)
    c = client.consumer(auto_offset_reset="earliest", max_partition_fetch_bytes=500)
    c.assign([TP0])
    first = c.poll(timeout_ms=5000, max_records=1000)      # the whole buffer: a prefetch follows
    assert first and [r.value for r in first] == vals[:len(first)]
    at = c.position(TP0)
    # Back, then forward past the prefetched range: each read starts at the new position.
    c.seek(TP0, 3)
    assert [r.value for r in drain(c, 5)][:5] == vals[3:8]
    c.seek(TP0, at + 50)
    got = drain(c, 200 - at - 50)
    assert [r.offset for r in got] == list(range(at + 50, 200))
    # And the batch view after a seek back into what was read ahead.
    c.seek(TP0, at)
    items = drain_batches(c, 200 - at)
    assert [v for it in items for v in it.columns().values()] == vals[at:]
    c.close()


def test_no_prefetched_record_after_pause_seek_resume(client):
    client.create_topic("t", 2)
    produce(client, _values(100, b"a"), partition=0)
    produce(client, _values(100, b"b"), partition=1)
    c = client.consumer(auto_offset_reset="earliest", max_partition_fetch_bytes=400)
    c.assign([TP0, TP1])
    got = drain(c, 1)
    c.pause(TP0)
    while c.position(TP1) < 100:            # TP0 paused: nothing of it comes, read ahead or not
        got += c.poll(timeout_ms=2000)
    assert [r.offset for r in got if r.partition == 1] == list(range(100))
    paused_at = c.position(TP0)
    assert [r.offset for r in got if r.partition == 0] == list(range(paused_at))
    c.seek(TP0, 10)
    c.resume(TP0)
    assert [r.offset for r in drain(c, 90)] == list(range(10, 100))
    c.close()


def test_reset_after_records_deleted_under_a_prefetch(client):
    client.create_topic("t", 1)
    produce(client, _values(50))
    c = client.consumer(auto_offset_reset="earliest", max_partition_fetch_bytes=300)
    c.assign([TP0])
    head = c.poll(timeout_ms=5000, max_records=1000)
    assert head
    c.seek(TP0, 0)
    client.delete_records("t", 0, 40)      # below the log start now: reset to earliest (40)
    got = drain(c, 10)
    assert [r.offset for r in got] == list(range(40, 50))
    c.close()


def test_no_prefetched_record_after_a_rebalance(client):
    client.create_topic("t", 2)
    vals = {0: _values(60, b"a"), 1: _values(60, b"b")}
    for p, vs in vals.items():
        produce(client, vs, partition=p)
    # (a learns of b's join from its next heartbeat: 100 ms, not the default 3 s)
    conf = dict(group_id="g", auto_offset_reset="earliest", max_partition_fetch_bytes=300,
                partition_assignment_strategy=["range"], heartbeat_interval_ms=100)
    a = client.consumer("t", **conf)
    seen = {a: drain(a, 1, max_rounds=50)}
    assert seen[a]
    seen[a] = [r.value for r in seen[a]]
    b = client.consumer("t", **conf)       # eager: a commits and gives up everything, takes half back
    seen[b] = []
    settle(client, [a, b], n=2, sink=seen)
    for _ in range(2000):
        if sum(map(len, seen.values())) >= 120:
            break
        for c in (a, b):
            seen[c] += [r.value for r in c.poll(timeout_ms=50)]
    # Every record once (commits at revocation), in order per member: nothing read ahead
    # for a position the rebalance moved came back.
    assert sorted(seen[a] + seen[b]) == sorted(vals[0] + vals[1])
    for c in (a, b):
        for tag in (b"a", b"b"):
            mine = [v for v in seen[c] if v.startswith(tag)]
            assert mine == sorted(mine)
    a.close()
    b.close()


def test_read_committed_over_many_read_ahead_answers(client):
    client.create_topic("t", 1)
    p = client.producer(transactional_id="tx", linger_ms=0)
    committed: list[bytes] = []
    try:
        p.init_transactions()
        # Aborted and committed transactions interleaved, each a few batches, so that
        # small fetches cut them across many answers (and their aborted_transactions).
        for n in range(24):
            outcome = "abort" if n % 3 == 1 else "commit"
            p.begin_transaction()
            for i in range(6):
                value = b"%s-%02d-%d" % (outcome.encode(), n, i)
                p.send("t", value, partition=0)
                if outcome == "commit":
                    committed.append(value)
                if i % 2:
                    p.flush()               # a batch every two records
            if outcome == "commit":
                p.commit_transaction()
            else:
                p.flush()
                p.abort_transaction()
    finally:
        p.close()
    c = client.consumer(isolation_level="read_committed", auto_offset_reset="earliest",
                        max_partition_fetch_bytes=250)
    c.assign([TP0])
    got = _read_switching(c, len(committed), every=4, batch_records=5, poll_records=4)
    assert got == {0: committed}
    assert c.poll(timeout_ms=0) == []
    c.close()


def test_asyncio_consumer_reads_ahead_in_order_and_after_a_seek(client):
    import asyncio

    client.create_topic("t", 1)
    vals = _values(400)
    produce(client, vals)

    async def main():
        c = client.aio_consumer(auto_offset_reset="earliest", max_partition_fetch_bytes=500)
        c.assign([TP0])
        got: list = []
        while len(got) < 150:
            got += await c.getmany(timeout_ms=5000, max_records=13)
        assert [r.value for r in got] == vals[:len(got)]
        c.seek(TP0, 40)                     # back into what was read and read ahead
        again: list = []
        while len(again) < 400 - 40:
            if len(again) % 2:
                for item in await c.getmany_batches(timeout_ms=5000, max_records=17):
                    again += [(o, v) for o, v in zip(item.columns().offsets, item.columns().values())]
            else:
                again += [(r.offset, r.value) for r in await c.getmany(timeout_ms=5000, max_records=17)]
        assert [int(o) for o, _ in again] == list(range(40, 400))
        assert [v for _, v in again] == vals[40:]
        assert await c.getmany(timeout_ms=0) == []
        await c.close()

    asyncio.run(main())
