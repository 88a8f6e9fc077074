"""Consumer.poll_batches, the columnar zero-copy view, on both transports: what it delivers
equals what poll delivers (every codec), positions and commits, seeks into a batch, cuts
at max_records, mixing with poll, groups, corrupt and control batches, views held across
polls and segment deletion, and the asyncio twin."""

from __future__ import annotations

import asyncio
import json
import random

import numpy as np
import pytest

from pylog import _core
from pylog.broker.core import FetchResult, TopicPartition
from pylog.client.consumer import ConsumerBatch, ConsumerColumns
from pylog.errors import CorruptRecordError, IllegalStateError, InvalidRequestError
from pylog.records import build_control_batch
from tests.client.conftest import drain
from tests.client.test_groups import settle

TP0 = TopicPartition("t", 0)
TP1 = TopicPartition("t", 1)
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def produce(client, values, partition=0, keys=None, headers=None, topic="t", **kw):
    """Send ``values`` (small batches unless ``batch_size`` is given) and wait for them."""
    kw.setdefault("batch_size", 400)
    kw.setdefault("linger_ms", 60_000)
    p = client.producer(**kw)
    hs = [p.send(topic, v, key=None if keys is None else keys[i],
                 headers=None if headers is None else headers[i], partition=partition)
          for i, v in enumerate(values)]
    p.flush()
    p.close()
    return [h.result().offset for h in hs]


def drain_batches(consumer, n, max_records=None, timeout_ms=5000, rounds=500):
    """poll_batches until ``n`` records came; returns the items."""
    out, got = [], 0
    for _ in range(rounds):
        if got >= n:
            break
        items = consumer.poll_batches(timeout_ms=timeout_ms if not out else 200, max_records=max_records)
        out += items
        got += sum(len(i) for i in items)
    return out


def rows(items):
    """(partition, offset, timestamp, key, value, headers) of every delivered record, read
    through the columns (the test's own loop: the consumer has none)."""
    out = []
    for item in items:
        cols = item.columns()
        assert isinstance(cols, ConsumerColumns) and len(cols) == len(item) > 0
        buf = cols.buffer
        for i in range(len(cols)):
            vl = int(cols.value_lengths[i])
            vo = int(cols.value_offsets[i])
            value = None if vl < 0 else bytes(buf[vo:vo + vl])
            assert value == cols.value(i)
            out.append((item.partition, int(cols.offsets[i]), int(cols.timestamps[i]), cols.key(i), value,
                        cols.headers(i)))
    return out


def offsets_of(items):
    return [int(o) for item in items for o in item.columns().offsets]


def test_batches_deliver_what_poll_delivers(client):
    client.create_topic("t", 2)
    n = 120
    keys = [None if i % 7 == 0 else b"k%d" % i for i in range(n)]
    values = [None if i % 11 == 5 else b"v%d-" % i + b"x" * (i % 13) for i in range(n)]
    headers = [[("h", b"%d" % i), ("n", None)] if i % 3 == 0 else None for i in range(n)]
    produce(client, values, 0, keys, headers)
    produce(client, values[:30], 1)
    by_poll = client.consumer(auto_offset_reset="earliest")
    by_poll.assign([TP0, TP1])
    records = drain(by_poll, n + 30)
    by_batches = client.consumer(auto_offset_reset="earliest")
    by_batches.assign([TP0, TP1])
    items = drain_batches(by_batches, n + 30)
    assert all(isinstance(i, ConsumerBatch) and i.topic == "t" for i in items)
    assert len({id(i.batch) for i in items}) > 4               # one item per batch, several batches
    want = sorted((r.partition, r.offset, r.timestamp, r.key, r.value, r.headers) for r in records)
    assert sorted(rows(items)) == want
    for p in (0, 1):
        assert [o for item in items if item.partition == p for o in item.columns().offsets] == \
            [r.offset for r in records if r.partition == p]    # append order within a partition
    assert by_batches.position(TP0) == by_poll.position(TP0) == n
    assert by_batches.position(TP1) == 30
    assert by_batches.poll_batches(timeout_ms=0) == []
    # The raw view: header fields and whole-batch bytes, the CRC as stored.
    item = items[0]
    assert item.batch.crc_matches() and item.batch.records_count >= len(item)
    assert item.next_offset == item.batch.next_offset and item.start == 0
    by_poll.close()
    by_batches.close()


@pytest.mark.parametrize("codec", CODECS)
def test_compressed_batches(client, codec):
    client.create_topic("t", 1)
    values = [b"%d:" % i + bytes([65 + i % 26]) * 90 for i in range(200)]
    produce(client, values, keys=[b"k%d" % i for i in range(200)], compression_type=codec, batch_size=4000)
    c = client.consumer(auto_offset_reset="earliest")
    c.assign([TP0])
    items = drain_batches(c, 200)
    assert {i.batch.compression for i in items} == {codec}
    got = rows(items)
    assert [r[1] for r in got] == list(range(200))
    assert [r[4] for r in got] == values and [r[3] for r in got] == [b"k%d" % i for i in range(200)]
    assert [v for i in items for v in i.columns().values()] == values
    # A seek into a compressed batch: cut columns over the decompressed records.
    c.seek(TP0, 101)
    first = c.poll_batches(timeout_ms=1000, max_records=3)
    assert offsets_of(first) == [101, 102, 103] and first[0].columns().values() == values[101:104]
    c.close()


def test_seek_into_a_batch_and_max_records_cuts(client):
    client.create_topic("t", 1)
    values = [b"r%02d" % i for i in range(40)]
    produce(client, values, batch_size=1 << 20)                # one batch of 40
    c = client.consumer(auto_offset_reset="earliest", group_id="g", enable_auto_commit=False)
    c.assign([TP0])
    c.seek(TP0, 7)
    [item] = c.poll_batches(timeout_ms=1000, max_records=5)
    assert (item.batch.base_offset, item.batch.records_count) == (0, 40)   # the whole batch, as fetched
    assert (item.start, item.stop, len(item), item.next_offset) == (7, 12, 5, 12)
    cols = item.columns()
    assert list(cols.offsets) == [7, 8, 9, 10, 11]
    assert cols.values() == values[7:12] and cols.keys() == [None] * 5
    assert [cols.value(-1), cols.key(0)] == [b"r11", None]
    with pytest.raises(IndexError):
        cols.value(5)
    assert c.position(TP0) == 12
    c.commit()
    assert c.committed(TP0).offset == 12
    # The rest of the batch comes next, from 12; max_records=1 takes one record.
    assert offsets_of(c.poll_batches(timeout_ms=1000, max_records=1)) == [12]
    rest = c.poll_batches(timeout_ms=1000, max_records=1000)
    assert offsets_of(rest) == list(range(13, 40)) and c.position(TP0) == 40
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InvalidRequestError):
            c.poll_batches(max_records=bad)
    with pytest.raises(InvalidRequestError):
        c.poll_batches(timeout_ms=-1)
    c.close()
    with pytest.raises(IllegalStateError):
        c.poll_batches()


def test_max_records_bounds_every_call(client):
    client.create_topic("t", 2)
    produce(client, [b"a%d" % i for i in range(150)], 0)
    produce(client, [b"b%d" % i for i in range(150)], 1)
    c = client.consumer(auto_offset_reset="earliest", max_poll_records=37)
    c.assign([TP0, TP1])
    seen = {0: [], 1: []}
    for _ in range(200):
        items = c.poll_batches(timeout_ms=200)
        assert sum(len(i) for i in items) <= 37              # the consumer's max_poll_records
        for i in items:
            seen[i.partition] += [int(o) for o in i.columns().offsets]
        if len(seen[0]) + len(seen[1]) == 300:
            break
    assert seen == {0: list(range(150)), 1: list(range(150))}
    c.close()


def test_mixing_poll_and_poll_batches_loses_and_repeats_nothing(client):
    client.create_topic("t", 2)
    n = 400
    produce(client, [b"%d" % i for i in range(n)], 0, batch_size=700)
    produce(client, [b"%d" % i for i in range(n)], 1, batch_size=1 << 20)
    c = client.consumer(auto_offset_reset="earliest")
    c.assign([TP0, TP1])
    rnd = random.Random(12)
    got = {0: [], 1: []}
    it = iter(c)
    for _ in range(2000):
        if len(got[0]) + len(got[1]) >= 2 * n:
            break
        k = rnd.randrange(1, 60)
        how = rnd.random()
        if how < 0.45:
            for r in c.poll(timeout_ms=200, max_records=k):
                got[r.partition].append(r.offset)
        elif how < 0.9:
            for item in c.poll_batches(timeout_ms=200, max_records=k):
                got[item.partition] += [int(o) for o in item.columns().offsets]
        else:
            # The iterator takes a poll's worth and hands out one: poll_batches must
            # neither skip nor repeat the ones it still holds.
            r = next(it)
            got[r.partition].append(r.offset)
            for item in c.poll_batches(timeout_ms=200, max_records=k):
                got[item.partition] += [int(o) for o in item.columns().offsets]
    assert got == {0: list(range(n)), 1: list(range(n))}
    assert c.position(TP0) == c.position(TP1) == n
    c.close()


def test_pause_resume_and_deserializers_do_not_apply(client):
    client.create_topic("t", 2)
    produce(client, [b"%d" % i for i in range(10)], 0)
    produce(client, [b"not json"], 1)
    c = client.consumer(auto_offset_reset="earliest", value_deserializer=json.loads)
    c.assign([TP0, TP1])
    c.pause(TP1)
    items = drain_batches(c, 10)
    assert {i.partition for i in items} == {0}
    assert [v for i in items for v in i.columns().values()] == [b"%d" % i for i in range(10)]   # raw bytes
    c.resume(TP1)
    [item] = drain_batches(c, 1)
    assert (item.partition, item.columns().values()) == (1, [b"not json"])
    c.close()


def test_control_batches_are_skipped(client):
    client.create_topic("t", 1)
    produce(client, [b"a", b"b"])
    client.broker._append_internal("t", 0, build_control_batch("commit", 1, 0)).raise_for_error()
    produce(client, [b"c"], compression_type="lz4")
    client.broker._append_internal("t", 0, build_control_batch("abort", 2, 0)).raise_for_error()
    c = client.consumer(auto_offset_reset="earliest")
    c.assign([TP0])
    items = drain_batches(c, 3)
    assert [(int(o), v) for i in items for o, v in zip(i.columns().offsets, i.columns().values())] == \
        [(0, b"a"), (1, b"b"), (3, b"c")]
    assert not any(i.batch.is_control for i in items)
    assert c.poll_batches(timeout_ms=100) == []
    assert c.position(TP0) == 5                            # past the trailing marker
    c.close()


class _Fetched:
    def __init__(self, data):
        self.records = data
        self.size = len(data)


class CorruptingTransport:
    """Delegates to a transport; flips a value byte (the last one: only a header count
    follows it) of every fetched batch whose (partition, base offset) is in ``targets``,
    as a bad disk or network would."""

    def __init__(self, transport, targets):
        self._t = transport
        self.targets = set(targets)

    def __getattr__(self, name):
        return getattr(self._t, name)

    def fetch(self, wanted, **kw):
        out = []
        for (_, partition, _, _), res in zip(wanted, self._t.fetch(wanted, **kw)):
            if res is not None and res.records is not None and res.records.size:
                data = bytearray(res.records.records)
                it = _core.iter_batches(data, check_crc=False)
                start = 0
                for b in it:
                    if (partition, b.base_offset) in self.targets:
                        data[start + b.size - 2] ^= 0xFF     # the last value's last byte
                    start = it.position
                res = FetchResult(error_code=res.error_code, high_watermark=res.high_watermark,
                                  last_stable_offset=res.last_stable_offset, log_start_offset=res.log_start_offset,
                                  records=_Fetched(bytes(data)))
            out.append(res)
        return out


@pytest.mark.parametrize("check_crcs", [True, False])
def test_a_corrupt_batch_raises_after_the_good_ones(client, check_crcs):
    from pylog.client.consumer import Consumer

    client.create_topic("t", 1)
    for chunk in ([b"a0", b"a1"], [b"b0", b"b1"], [b"c0"]):     # three batches: 0-1, 2-3, 4
        produce(client, chunk)
    c = Consumer(CorruptingTransport(client.transport, {(0, 2)}), auto_offset_reset="earliest",
                 check_crcs=check_crcs)
    c.assign([TP0])
    if not check_crcs:
        items = drain_batches(c, 5)
        values = [v for i in items for v in i.columns().values()]
        assert values[:2] == [b"a0", b"a1"] and values[2:4] != [b"b0", b"b1"] and values[4] == b"c0"
        c.close()
        return
    first = c.poll_batches(timeout_ms=1000)
    assert offsets_of(first) == [0, 1]                      # what came before it, first
    for _ in range(2):                                      # then the error, again and again
        with pytest.raises(CorruptRecordError, match="t-0"):
            c.poll_batches(timeout_ms=100)
        assert c.position(TP0) == 2
    with pytest.raises(CorruptRecordError):                 # poll finds it too
        c.poll(timeout_ms=100)
    c.seek(TP0, 4)
    assert offsets_of(c.poll_batches(timeout_ms=1000)) == [4]
    c.close()


@pytest.mark.parametrize("kind", ["poll", "poll_batches"])
def test_a_corrupt_partition_costs_no_record_of_another(client, kind):
    from pylog.client.consumer import Consumer

    client.create_topic("t", 2)
    for chunk in ([b"a0", b"a1"], [b"a2"], [b"a3", b"a4"]):
        produce(client, chunk, 0)
    produce(client, [b"x"], 1)
    c = Consumer(CorruptingTransport(client.transport, {(1, 0)}), auto_offset_reset="earliest",
                 max_partition_fetch_bytes=100)               # one batch per fetch: several rounds
    c.assign([TP0, TP1])
    got, errors = [], 0
    for _ in range(50):
        try:
            if kind == "poll":
                got += [(r.partition, r.value) for r in c.poll(timeout_ms=50)]
            else:
                got += [(i.partition, v) for i in c.poll_batches(timeout_ms=50) for v in i.columns().values()]
        except CorruptRecordError:
            errors += 1
        if errors >= 3 and len(got) >= 5:
            break
    assert got == [(0, b"a%d" % i) for i in range(5)]         # each once, in order, none lost
    assert errors >= 3 and c.position(TP1) == 0 and c.position(TP0) == 5
    c.close()


def test_views_stay_valid_across_polls_and_segment_deletion(client):
    client.create_topic("t", 1, config={"segment.bytes": 600})
    produce(client, [b"first-%d" % i + b"." * 40 for i in range(6)])
    c = client.consumer(auto_offset_reset="earliest")
    c.assign([TP0])
    held = c.poll_batches(timeout_ms=1000, max_records=3)
    cols = held[0].columns()
    raw = bytes(held[0].batch)
    values = cols.values()
    assert values and all(v.startswith(b"first-") for v in values)
    rest = drain_batches(c, 3)                               # the next polls read on
    produce(client, [b"later-%d" % i + b"-" * 60 for i in range(30)])      # several segments roll
    more = drain_batches(c, 30)
    assert [v for i in more for v in i.columns().values()] == [b"later-%d" % i + b"-" * 60 for i in range(30)]
    client.delete_records("t", 0, client.high_watermark("t", 0) - 1)      # the first segments go
    assert client.log_start_offset("t", 0) > held[0].next_offset
    # The views taken first still read the same bytes.
    assert bytes(held[0].batch) == raw and held[0].batch.crc_matches()
    assert cols.values() == values and held[0].columns().values() == values
    assert [v for i in rest for v in i.columns().values()] == [b"first-%d" % i + b"." * 40 for i in range(3, 6)]
    c.close()


def test_groups_commit_and_restart_from_committed(client):
    parts = 4
    client.create_topic("t", parts)
    kw = dict(group_id="g", auto_offset_reset="earliest", enable_auto_commit=False)
    a, b = client.consumer("t", **kw), client.consumer("t", **kw)
    settle(client, [a, b], n=parts)                          # (its polls find nothing yet)
    assert a.assignment() and b.assignment() and not (a.assignment() & b.assignment())
    for p in range(parts):
        produce(client, [b"%d-%d" % (p, i) for i in range(25)], p)
    got = {}
    for _ in range(100):
        for m in (a, b):
            for item in m.poll_batches(timeout_ms=50, max_records=30):
                assert TopicPartition(item.topic, item.partition) in m.assignment()
                got.setdefault(item.partition, []).extend(int(o) for o in item.columns().offsets)
        if sum(map(len, got.values())) == parts * 25:
            break
    assert got == {p: list(range(25)) for p in range(parts)}
    a.commit()
    b.commit()
    a.close()
    b.close()
    for p in range(parts):
        produce(client, [b"new-%d" % p], p)
    c = client.consumer("t", **kw)
    items = drain_batches(c, parts)
    assert sorted((i.partition, int(o)) for i in items for o in i.columns().offsets) == [(p, 25) for p in range(parts)]
    c.close()


def test_auto_commit_counts_what_poll_batches_returned(client):
    client.create_topic("t", 1)
    produce(client, [b"%d" % i for i in range(20)])
    c = client.consumer("t", group_id="g", auto_offset_reset="earliest", auto_commit_interval_ms=1)
    assert offsets_of(drain_batches(c, 20)) == list(range(20))
    c.close()                                                # commits on close
    other = client.consumer(group_id="g")
    assert other.committed(TP0).offset == 20
    other.close()


def test_async_getmany_batches_waits_for_data(client):
    client.create_topic("t", 1)

    async def main():
        c = client.aio_consumer(auto_offset_reset="earliest")
        c.assign([TP0])
        assert await c.getmany_batches(timeout_ms=10) == []
        p = client.aio_producer(linger_ms=0)
        task = asyncio.create_task(c.getmany_batches(timeout_ms=10_000))
        await asyncio.sleep(0)
        await p.send_and_wait("t", b"late")
        items = await asyncio.wait_for(task, 10)
        assert [v for i in items for v in i.columns().values()] == [b"late"]
        await p.send_and_wait("t", b"two")
        items = await c.getmany_batches(timeout_ms=5000, max_records=1)
        assert offsets_of(items) == [1] and await c.position(TP0) == 2
        await p.close()
        await c.close()

    asyncio.run(main())


def test_columns_are_numpy_and_read_only(client):
    client.create_topic("t", 1)
    produce(client, [b"x" * i for i in range(1, 30)], batch_size=1 << 20)
    c = client.consumer(auto_offset_reset="earliest")
    c.assign([TP0])
    c.seek(TP0, 4)
    [item] = drain_batches(c, 25)
    cols = item.columns()
    assert item.columns() is cols                           # decoded once
    assert cols.value_lengths.dtype == np.int32 and cols.offsets.dtype == np.int64
    assert int(cols.value_lengths.sum()) == sum(range(5, 30))
    assert not cols.offsets.flags.writeable and not cols.value_lengths.flags.writeable
    assert len(cols.columns) == 29 and cols.start == 4      # the whole batch's columns, for who needs them
    c.close()
