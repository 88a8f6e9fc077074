"""KafkaTransport.prefetch against a real ``pylog serve``: a kept answer is taken by the
next fetch at its offset without a round trip, dropped at another offset and never handed
to another owner; a fetch rides on a prefetch in flight instead of asking again; kept and
reserved bytes stay within ``max_bytes`` over many partitions; a consumer's close and
commit do not wait for a prefetch that long-polls."""

from __future__ import annotations

import threading

import pytest

import pylog
from pylog import TopicPartition
from pylog.client.kafka import transport as transport_module
from pylog.protocol.apis import ApiKey
# The same in-process ``pylog serve`` (module scope) and client fixtures as the data tests.
from tests.client.kafka.test_transport_data import batch, client, server  # noqa: F401
from tests.server.util import unique


def _fill(client, topic, partitions, batches=3, values=4, size=100):
    client.create_topic(topic, partitions)
    for _ in range(batches):
        res = client.transport.produce(
            [(topic, p, [batch(*[b"%d" % p * size] * values)]) for p in range(partitions)], acks=-1)
        assert all(r.error_code == 0 for rs in res for r in rs)


def _numbered(client, topic, batches, per):
    """Create ``topic`` (one partition) holding ``batches`` batches of ``per`` records
    b"i-j"; returns their values in order."""
    client.create_topic(topic, 1)
    for i in range(batches):
        res = client.transport.produce([(topic, 0, [batch(*[b"%d-%d" % (i, j) for j in range(per)])])], acks=-1)
        assert res[0][0].error_code == 0
    return [b"%d-%d" % (i, j) for i in range(batches) for j in range(per)]


def _settled(tr, timeout=10.0):
    """Wait (on the transport's condition, notified by every Fetch answer) until no
    prefetch is in flight."""
    with tr._cond:
        assert tr._cond.wait_for(lambda: not tr._prefetching, timeout)


def _fetches(tr):
    return tr.requests_sent.get(ApiKey.FETCH, 0)


def test_kept_answer_is_taken_without_a_round_trip(client):
    topic = unique("pf-hit")
    _fill(client, topic, 1)
    tr = client.transport
    owner = object()
    direct = tr.fetch([(topic, 0, 4, 1 << 20)])[0]
    tr.prefetch([(topic, 0, 4, 1 << 20)], owner=owner)
    _settled(tr)
    before = _fetches(tr)
    got = tr.fetch([(topic, 0, 4, 1 << 20)], owner=owner)[0]
    assert _fetches(tr) == before                       # no request: the kept answer
    assert bytes(got.records.records) == bytes(direct.records.records)
    assert got.high_watermark == 12
    assert not tr._completed and tr._completed_bytes == 0


def test_kept_answer_at_another_offset_is_dropped(client):
    topic = unique("pf-seek")
    _fill(client, topic, 1)
    tr = client.transport
    owner = object()
    tr.prefetch([(topic, 0, 0, 1 << 20)], owner=owner)
    _settled(tr)
    assert tr._completed_bytes > 0
    before = _fetches(tr)
    got = tr.fetch([(topic, 0, 8, 1 << 20)], owner=owner)[0]    # a seek moved the position
    assert _fetches(tr) == before + 1
    first = next(iter(pylog._core.iter_batches(got.records.records)))
    assert first.base_offset == 8
    assert not tr._completed and tr._completed_bytes == 0
    # Re-asking the owner's set at a new offset drops its kept answer too.
    tr.prefetch([(topic, 0, 0, 1 << 20)], owner=owner)
    _settled(tr)
    tr.prefetch([(topic, 0, 4, 1 << 20)], owner=owner)
    _settled(tr)
    assert [k[0] for k in tr._completed[(topic, 0)]] == [4]   # the batch at 8: past the log end
    tr.prefetch([], owner=owner)                        # forget everything of the owner
    assert not tr._completed and tr._completed_bytes == 0


def test_another_owners_prefetch_is_left_alone(client):
    topic = unique("pf-owner")
    _fill(client, topic, 1)
    tr = client.transport
    mine, other = object(), object()
    tr.prefetch([(topic, 0, 0, 1 << 20)], owner=mine)
    _settled(tr)
    before = _fetches(tr)
    got = tr.fetch([(topic, 0, 0, 1 << 20)], owner=other)[0]
    assert _fetches(tr) == before + 1                   # read for itself
    assert got.records.size
    assert tr._completed[(topic, 0)][0][3] is mine      # still there for its owner
    assert tr.fetch([(topic, 0, 0, 1 << 20)], owner=mine)[0].records.size
    assert _fetches(tr) == before + 1


@pytest.fixture
def long_polls(monkeypatch):
    """Long polls of 60 s (instead of FETCH_SLICE_MS): a prefetch on an empty partition
    stays in flight until data comes, whatever the machine's load."""
    monkeypatch.setattr(transport_module, "FETCH_SLICE_MS", 60_000)
    return 60_000


def test_a_waiting_fetch_rides_on_the_prefetch_in_flight(client, long_polls):
    topic = unique("pf-ride")
    client.create_topic(topic, 1)
    tr = client.transport
    owner = object()
    # An empty partition: the prefetch long-polls on the broker.
    tr.prefetch([(topic, 0, 0, 1 << 20)], max_wait_ms=long_polls, owner=owner)
    assert (topic, 0) in tr._prefetching
    before = _fetches(tr)
    # Without waiting: not read this time, and not asked again.
    assert tr.fetch([(topic, 0, 0, 1 << 20)], owner=owner) == [None]
    assert _fetches(tr) == before
    # A short wait ends at its own deadline, not the prefetch's: nothing came yet.
    assert tr.fetch([(topic, 0, 0, 1 << 20)], max_wait_ms=50, owner=owner) == [None]
    assert _fetches(tr) == before and (topic, 0) in tr._prefetching
    got: list = []
    waiting = threading.Thread(
        target=lambda: got.extend(tr.fetch([(topic, 0, 0, 1 << 20)], max_wait_ms=10_000, owner=owner)))
    waiting.start()
    res = tr.produce([(topic, 0, [batch(b"late")])], acks=-1)
    assert res[0][0].error_code == 0
    waiting.join()
    assert got and got[0] is not None and got[0].records.size
    rec = next(iter(pylog._core.iter_batches(got[0].records.records)))
    assert [r.value for r in rec] == [b"late"]
    # The prefetch brought it; the one request since is the chain's next read-ahead,
    # sent as that answer came (before the rider was woken).
    assert _fetches(tr) == before + 1
    assert tr._prefetching[(topic, 0)].offset == 1
    tr.prefetch([], owner=owner)


def test_memory_bound_over_many_partitions(client):
    topic = unique("pf-many")
    parts = 24
    _fill(client, topic, parts, batches=2, values=4, size=100)      # ~900 bytes a partition
    tr = client.transport
    owner = object()
    bound = 4000
    wanted = [(topic, p, 0, 1000) for p in range(parts)]
    tr.prefetch(wanted, max_bytes=bound, owner=owner)
    assert tr._completed_bytes + tr._prefetch_reserved <= bound
    _settled(tr)
    kept = dict(tr._completed)
    assert len(kept) == 4                               # 1000 reserved each
    assert tr._completed_bytes == sum(k[2].records.size for c in kept.values() for k in c) <= bound
    # Asked again and again: only the room left goes out, until none is left.
    for _ in range(30):
        tr.prefetch(wanted, max_bytes=bound, owner=owner)
        assert tr._completed_bytes + tr._prefetch_reserved <= bound
        _settled(tr)
    kept = dict(tr._completed)
    assert len(kept) < parts and tr._completed_bytes <= bound
    tr.prefetch(wanted, max_bytes=bound, owner=owner)
    assert not tr._prefetching
    # One answer per partition at most, and taking them frees the room.
    got = tr.fetch(wanted, owner=owner)
    assert sum(1 for r in got if r is not None) == len(kept)
    assert tr._completed_bytes == 0
    tr.prefetch(wanted, max_bytes=bound, owner=owner)
    _settled(tr)
    assert len(tr._completed) == 4
    tr.prefetch([], owner=owner)
    assert tr._completed_bytes == 0 and not tr._completed


def test_close_and_commit_do_not_wait_for_a_long_polling_prefetch(client, long_polls):
    topic = unique("pf-close")
    client.create_topic(topic, 1)
    tr = client.transport
    tr.produce([(topic, 0, [batch(b"x")])], acks=-1)
    c = client.consumer(group_id=unique("g"), auto_offset_reset="earliest", fetch_max_wait_ms=long_polls)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    assert [r.value for r in c.poll(timeout_ms=5000)] == [b"x"]
    # poll left a prefetch at offset 1: nothing there, so the broker holds it.
    pf = tr._prefetching.get((topic, 0))
    assert pf is not None and pf.offset == 1
    c.commit()                                          # the coordinator's connection: not behind it
    assert c.committed([tp])[tp].offset == 1
    c.close()                                           # does not wait for the long poll ...
    assert (topic, 0) not in tr._prefetching            # ... its answer will be thrown away
    assert tr._prefetch_reserved > 0                    # still out on the broker
    tr.produce([(topic, 0, [batch(b"y")])], acks=-1)    # the broker answers it now
    with tr._cond:
        assert tr._cond.wait_for(lambda: tr._prefetch_reserved == 0, 30)
    assert not tr._completed                            # nobody's any more: thrown away


def _consumer_reading(client, topic, batches):
    """A consumer of ``topic`` (``batches`` batches of 5 records, one a fetch) after a
    poll of its first two records: ``(values, transport, consumer, partition, got)``."""
    values = _numbered(client, topic, batches, 5)
    c = client.consumer(auto_offset_reset="earliest", max_partition_fetch_bytes=100)   # a batch a fetch
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    got = c.poll(timeout_ms=5000, max_records=2)
    return values, client.transport, c, tp, got


def test_a_consumer_reads_ahead_of_its_buffer(client):
    topic = unique("pf-ahead")
    values, tr, c, tp, got = _consumer_reading(client, topic, 6)
    st = c._assignment[tp]
    assert [r.offset for r in got] == [0, 1] and st.buffered() and st.next_fetch == 5
    _settled(tr)
    assert _chain(tr, topic) == ([5, 10], None)         # the next two batches, read ahead
    before = _fetches(tr)
    while c.position(tp) <= 5:
        got += c.poll(timeout_ms=5000, max_records=2)
    # Crossing into it asked nothing synchronously: the one request tops the chain up.
    assert _fetches(tr) - before == 1
    assert _chain(tr, topic) in (([10, 15], None), ([10], 15))
    while len(got) < 30:
        got += c.poll(timeout_ms=5000, max_records=3)
    assert [r.offset for r in got] == list(range(30))
    assert [r.value for r in got] == values
    c.close()
    assert not any(k[3] is c._member_key for chain in tr._completed.values() for k in chain)


def test_what_was_read_ahead_goes_with_the_partition(client):
    topic = unique("pf-gone")
    _fill(client, topic, 2, batches=3, values=4, size=10)
    tr = client.transport
    # Batches of 129 bytes: one a fetch (a broker hands an oversized first batch to the
    # first partition of a response only, KIP-74).
    c = client.consumer(auto_offset_reset="earliest", max_partition_fetch_bytes=150)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    c.assign([tp0, tp1])
    got = c.poll(timeout_ms=5000, max_records=1)
    assert got
    _settled(tr)
    mine = {key for key, chain in tr._completed.items() if chain[0][3] is c._member_key}
    assert (topic, 0) in mine and (topic, 1) in mine
    c.assign([tp1])                                     # tp0 given up: its read-ahead too
    mine = {key for key, chain in tr._completed.items() if chain[0][3] is c._member_key}
    assert (topic, 0) not in mine and (topic, 1) in mine
    c.unsubscribe()
    assert not any(chain[0][3] is c._member_key for chain in tr._completed.values())
    c.close()


def test_a_poll_with_records_in_hand_asks_for_no_more(client):
    topic = unique("pf-hand")
    values = _numbered(client, topic, 3, 4)
    tr = client.transport
    c = client.consumer(auto_offset_reset="earliest", max_partition_fetch_bytes=100)   # a batch a fetch
    c.assign([TopicPartition(topic, 0)])
    got: list = []
    while len(got) < 12:
        before = _fetches(tr)
        records = c.poll(timeout_ms=5000)
        assert records and len(records) % 4 == 0
        # Each Fetch this poll sent brought a batch it returned, but for the one read
        # ahead that it leaves in flight: records in hand are not held for another
        # round trip (nor for the empty answer that used to end that loop).
        assert _fetches(tr) - before <= len(records) // 4 + 1
        got += records
    assert [r.value for r in got] == values
    c.close()


# ---------------------------------------------------------------- read-ahead chains


def _chain(tr, topic, partition=0):
    """``(offsets of the kept answers, offset in flight or None)`` of a partition."""
    with tr._lock:
        kept = [k[0] for k in tr._completed.get((topic, partition), [])]
        pf = tr._prefetching.get((topic, partition))
        return kept, None if pf is None else pf.offset


def _offsets(res):
    return [r.offset for b in pylog._core.iter_batches(res.records.records) for r in b]


def test_a_chain_reads_a_partition_in_order_across_many_answers(client):
    topic = unique("pf-chain")
    values = _numbered(client, topic, 40, 5)            # 40 batches of ~120 bytes
    tr = client.transport
    owner = object()
    tr.prefetch([(topic, 0, 0, 100)], owner=owner)      # 100 bytes: one batch an answer
    _settled(tr)
    # Depth 2: the second answer was asked for as the first came, then the chain stopped.
    assert _chain(tr, topic) == ([0, 5], None)
    got: list = []
    offset = 0
    deepest = 0
    while offset < 200:
        kept, flying = _chain(tr, topic)
        # What the consumer wants next is always read ahead already: kept first, or in flight.
        assert (kept and kept[0] == offset) or (not kept and flying == offset), (offset, kept, flying)
        assert len(kept) + (flying is not None) <= transport_module.PREFETCH_DEPTH
        deepest = max(deepest, len(kept) + (flying is not None))
        res = tr.fetch([(topic, 0, offset, 100)], max_wait_ms=10_000, owner=owner)[0]
        got += [r.value for b in pylog._core.iter_batches(res.records.records) for r in b]
        assert _offsets(res)[0] == offset
        offset = _offsets(res)[-1] + 1
        tr.prefetch([(topic, 0, offset, 100)], owner=owner)     # as the consumer does after a poll
    assert got == values
    assert deepest == 2
    tr.prefetch([], owner=owner)
    with tr._cond:
        assert tr._cond.wait_for(lambda: tr._prefetch_reserved == 0, 30)
    assert not tr._completed and not tr._prefetching and tr._completed_bytes == 0


def test_a_fetch_elsewhere_drops_the_whole_chain(client):
    topic = unique("pf-chain-seek")
    _numbered(client, topic, 40, 5)
    tr = client.transport
    owner = object()
    tr.prefetch([(topic, 0, 0, 100)], owner=owner)
    _settled(tr)
    assert _chain(tr, topic) == ([0, 5], None)
    assert _offsets(tr.fetch([(topic, 0, 0, 100)], owner=owner)[0])[0] == 0
    tr.prefetch([(topic, 0, 5, 100)], owner=owner)      # tops the chain up: 10 goes out
    assert _chain(tr, topic)[1] == 10 or _chain(tr, topic)[0] == [5, 10]
    # A seek: the fetch at 100 reads for itself and drops everything read ahead.
    res = tr.fetch([(topic, 0, 100, 100)], max_wait_ms=10_000, owner=owner)[0]
    assert _offsets(res)[0] == 100
    assert _chain(tr, topic) == ([], None)
    with tr._cond:                                      # the answer in flight is thrown away ...
        assert tr._cond.wait_for(lambda: tr._prefetch_reserved == 0, 30)
    assert _chain(tr, topic) == ([], None)              # ... and no fetch follows it
    assert tr._completed_bytes == 0
    # Read ahead again from the new position.
    tr.prefetch([(topic, 0, 105, 100)], owner=owner)
    _settled(tr)
    assert _chain(tr, topic) == ([105, 110], None)
    # A prefetch set at another offset drops the chain too.
    tr.prefetch([(topic, 0, 50, 100)], owner=owner)
    _settled(tr)
    assert _chain(tr, topic) == ([50, 55], None)
    tr.prefetch([], owner=owner)
    assert _chain(tr, topic) == ([], None) and tr._completed_bytes == 0


def test_an_error_or_the_log_end_ends_the_chain(client):
    topic = unique("pf-chain-end")
    _numbered(client, topic, 3, 5)
    tr = client.transport
    owner = object()
    tr.prefetch([(topic, 0, 10, 100)], owner=owner)     # the last batch: the one after is empty
    _settled(tr)
    assert _chain(tr, topic) == ([10], None)
    assert _fetches(tr) and tr._completed_bytes > 0
    tr.prefetch([(topic, 0, 99, 100)], owner=owner)     # out of range: an error, not kept
    _settled(tr)
    assert _chain(tr, topic) == ([], None)


def test_a_leader_error_in_the_middle_ends_the_chain(client, monkeypatch):
    topic = unique("pf-chain-error")
    _numbered(client, topic, 10, 5)
    tr = client.transport
    owner = object()
    real = tr._parse_fetch

    def not_leader_at_5(parts, resp, exc):
        out = real(parts, resp, exc)
        for t, p, offset, _ in parts:
            if t == topic and offset == 5:
                out[(t, p)] = None          # what NOT_LEADER_OR_FOLLOWER parses to: try later
        return out

    monkeypatch.setattr(tr, "_parse_fetch", not_leader_at_5)
    tr.prefetch([(topic, 0, 0, 100)], owner=owner)
    _settled(tr)
    assert _chain(tr, topic) == ([0], None)             # the answer at 5 ended it: no fetch at 10
    monkeypatch.setattr(tr, "_parse_fetch", real)
    assert _offsets(tr.fetch([(topic, 0, 0, 100)], owner=owner)[0])[0] == 0
    before = _fetches(tr)
    assert _offsets(tr.fetch([(topic, 0, 5, 100)], max_wait_ms=10_000, owner=owner)[0])[0] == 5
    assert _fetches(tr) == before + 1                   # read for itself
    tr.prefetch([], owner=owner)


def test_chains_stay_within_max_bytes(client):
    topic = unique("pf-chain-many")
    parts = 12
    client.create_topic(topic, parts)
    for i in range(6):
        res = client.transport.produce([(topic, p, [batch(*[b"%d-%d" % (p, i)] * 4)]) for p in range(parts)],
                                       acks=-1)
        assert all(r.error_code == 0 for rs in res for r in rs)
    tr = client.transport
    owner = object()
    bound = 2000
    positions = {p: 0 for p in range(parts)}
    taken = {p: [] for p in range(parts)}

    def check():
        with tr._lock:
            assert tr._completed_bytes + tr._prefetch_reserved <= bound
            assert tr._completed_bytes == sum(k[2].records.size for c in tr._completed.values() for k in c)
            for p in range(parts):
                depth = len(tr._completed.get((topic, p), ())) + ((topic, p) in tr._prefetching)
                assert depth <= transport_module.PREFETCH_DEPTH

    deepest = 0
    for _ in range(60):
        wanted = [(topic, p, positions[p], 200) for p in range(parts) if positions[p] < 24]
        if not wanted:
            break
        tr.prefetch(wanted, max_bytes=bound, owner=owner)
        check()
        _settled(tr)
        check()
        with tr._lock:
            deepest = max([deepest] + [len(c) for c in tr._completed.values()])
        got = tr.fetch(wanted[:3], owner=owner)          # the consumer takes a few
        for (_, p, _, _), res in zip(wanted, got):
            if res is not None and res.records.size:
                offs = _offsets(res)
                assert offs[0] == positions[p]
                taken[p] += offs
                positions[p] = offs[-1] + 1
        check()
    assert all(offs == list(range(24)) for offs in taken.values())
    assert deepest == 2
    tr.prefetch([], owner=owner)


def test_a_consumer_keeps_a_chain_that_seek_and_pause_drop(client):
    topic = unique("pf-chain-consumer")
    values, tr, c, tp, got = _consumer_reading(client, topic, 30)
    assert [r.offset for r in got] == [0, 1]
    _settled(tr)
    assert _chain(tr, topic) == ([5, 10], None)         # two answers read ahead of the buffer
    assert tr._completed[(topic, 0)][0][3] is c._member_key
    # A seek into the middle of the chain: read from there, nothing read ahead comes back.
    c.seek(tp, 7)
    got = []
    while len(got) < 40:
        got += c.poll(timeout_ms=5000, max_records=3)
    assert [r.offset for r in got] == list(range(7, 7 + len(got)))
    assert [r.value for r in got] == values[7:7 + len(got)]
    # Pause drops the chain at once (kept and in flight); resume reads on from the position.
    c.pause(tp)
    assert _chain(tr, topic) == ([], None)
    with tr._cond:
        assert tr._cond.wait_for(lambda: tr._prefetch_reserved == 0, 30)
    assert _chain(tr, topic) == ([], None) and tr._completed_bytes == 0
    assert c.poll(timeout_ms=50) == []
    c.resume(tp)
    at = c.position(tp)
    rest = []
    while len(rest) < 150 - at:
        rest += c.poll(timeout_ms=5000)
    assert [r.offset for r in rest] == list(range(at, 150))
    c.close()
    assert not any(k[3] is c._member_key for chain in tr._completed.values() for k in chain)


def _built(base_offset, n, **kw):
    b = pylog._core.RecordBatchBuilder(base_offset=base_offset, **kw)
    for i in range(n):
        b.append(0, None, b"v%d" % i)
    return b.build()


def test_the_next_offset_of_an_answer_is_where_the_consumer_reads_next():
    from pylog.records import build_control_batch

    nxt = transport_module._next_fetch_offset
    data = _built(10, 3) + _built(13, 2, producer_id=7, producer_epoch=0, base_sequence=0, is_transactional=True)
    marker = build_control_batch("commit", producer_id=7, producer_epoch=0, base_offset=15)
    assert nxt(memoryview(data), 10) == 15
    assert nxt(memoryview(data + marker), 10) == 16             # a control batch counts
    tail = _built(16, 4)
    assert nxt(memoryview(data + marker + tail[:-1]), 10) == 16  # a truncated last batch does not
    assert nxt(memoryview(data + marker + tail[:30]), 10) == 16  # nor a torn header
    broken = bytearray(tail)
    broken[16] = 1                                               # magic 1: not a v2 batch
    assert nxt(memoryview(data + bytes(broken)), 10) == 15       # the walk ends before it
    assert nxt(memoryview(data), 15) == -1                       # nothing past the offset
    assert nxt(memoryview(tail[:-1]), 16) == -1                  # no whole batch
    assert nxt(b"", 0) == -1
