"""send_batch's bulk path: batches of its own per partition (written in one pass over the
input for keyed records), what joins open batches and what lingers, the CRC joined from
the records section's, list snapshots, retries of bulk batches."""

from __future__ import annotations

import gc
import random
import sys
import threading

import numpy as np
import pytest

from pylog import _core
from pylog.broker.partitioner import partition_for_key
from pylog.client.producer import Producer
from pylog.errors import IllegalStateError, RecordTooLargeError, RecordTypeError
from tests.client.helpers import FlakyTransport, batch_sizes, fetch_partition, records_of


def test_crc32c_combine_matches_the_crc_of_the_concatenation():
    rnd = random.Random(7)
    for _ in range(200):
        a = rnd.randbytes(rnd.randrange(0, 300))
        b = rnd.randbytes(rnd.choice([0, 1, 7, 8, 63, 64, 1000, 5000, rnd.randrange(0, 70000)]))
        assert _core._crc32c_combine(_core.crc32c(a), _core.crc32c(b), len(b)) == _core.crc32c(a + b)


@pytest.mark.parametrize("form", ["list", "tuple", "numpy"])
def test_keyed_bulk_sends_keep_per_key_order_and_offsets(client, form):
    # Small batches (the topic's max.message.bytes caps send_batch's own) so that every
    # partition gets several bulk batches, written in one interleaved pass.
    client.create_topic("t", 5, config={"max.message.bytes": 6000})
    p = client.producer(batch_size=1500, linger_ms=60_000)
    # Records already waiting in open batches go first.
    early = [p.send("t", b"early-%d" % i, key=b"k%d" % i) for i in range(40)]
    n = 4000
    keys = [b"k%d" % (i % 53) for i in range(n)]
    values = [b"v%05d" % i + b"." * (i % 17) for i in range(n)]
    if form == "tuple":
        keys, values = tuple(keys), tuple(values)
    elif form == "numpy":
        values = np.array([b"v%05d" % i for i in range(n)], dtype="S6")
        keys = np.array([b"k%02d" % (i % 53) for i in range(n)], dtype="S3")
    fut = p.send_batch("t", values, keys=keys)
    offsets = fut.result(timeout=30)
    key_list = [bytes(k) for k in keys]
    value_list = [bytes(v) for v in values]
    assert fut.partitions.tolist() == [partition_for_key(k, 5) for k in key_list]
    by_part = records_of(client, "t")
    for i in range(n):
        rec = by_part[fut.partitions[i]][offsets[i]]
        assert (rec.key, rec.value) == (key_list[i], value_list[i])
    for part, recs in by_part.items():
        assert [r.offset for r in recs] == list(range(len(recs)))
        # The earlier sends come first, then the batch in input order.
        vals = [r.value for r in recs]
        n_early = sum(1 for h in early if h.result().partition == part)
        assert all(v.startswith(b"early-") for v in vals[:n_early])
        idx = [value_list.index(v) if form == "numpy" else int(v[1:6]) for v in vals[n_early:]]
        assert idx == sorted(idx)
        assert all(s <= 6000 for s in batch_sizes(client, "t", part))
    assert sum(map(len, by_part.values())) == n + 40
    assert p.buffered_bytes == 0
    p.close()


def test_unkeyed_bulk_send_sticks_per_batch_and_a_small_remainder_lingers(client):
    client.create_topic("t", 4, config={"max.message.bytes": 8000})
    p = client.producer(batch_size=2000, linger_ms=60_000)
    values = [b"%06d" % i + b"x" * 90 for i in range(1000)]
    fut = p.send_batch("t", values)
    parts = fut.partitions.tolist()
    runs = [parts[0]]
    for a, b in zip(parts, parts[1:]):
        if a != b:
            runs.append(b)
    assert len(runs) >= 1000 * 100 // 8000          # about one run per bulk batch
    assert all(a != b for a, b in zip(runs, runs[1:]))
    # The remainder (under batch_size) waits in an open batch; send() joins it and the
    # batch's CRC covers both (checked by the append and by records_of).
    tail_part = parts[-1]
    h = p.send("t", b"after", partition=tail_part)
    offsets = fut.result(timeout=30)
    assert h.result(timeout=30).offset == offsets[-1] + 1
    by_part = records_of(client, "t")
    for i in range(0, 1000, 37):
        assert by_part[parts[i]][offsets[i]].value == values[i]
    p.close()


def test_keyless_and_keyed_records_in_one_call(client):
    client.create_topic("t", 3, config={"max.message.bytes": 4000})
    p = client.producer(batch_size=1000)
    n = 3000
    keys = [None if i % 3 == 0 else b"key-%d" % (i % 11) for i in range(n)]
    values = [b"%05d" % i for i in range(n)]
    fut = p.send_batch("t", values, keys=keys)
    offsets = fut.result(timeout=30)
    by_part = records_of(client, "t")
    for i in range(n):
        if keys[i] is not None:
            assert fut.partitions[i] == partition_for_key(keys[i], 3)
        rec = by_part[fut.partitions[i]][offsets[i]]
        assert (rec.key, rec.value) == (keys[i], values[i])
    # Per key: input order.
    for k in {k for k in keys if k is not None}:
        offs = [offsets[i] for i in range(n) if keys[i] == k]
        assert offs == sorted(offs)
    p.close()


def test_bulk_batches_survive_retries_and_an_epoch_bump(client):
    client.create_topic("t", 2, config={"max.message.bytes": 3000})
    proxy = FlakyTransport(client.transport, ["retriable", "unknown_pid", "retriable"])
    p = Producer(proxy, batch_size=800, retry_backoff_ms=1, linger_ms=0)
    epoch = 0       # a new producer id's (the sender gets it before the first batch)
    n = 2000
    keys = [b"%d" % (i % 7) for i in range(n)]
    values = [b"value-%05d" % i for i in range(n)]
    offsets = p.send_batch("t", values, keys=keys).result(timeout=30)
    assert p.producer_epoch == epoch + 1          # renumbered: header and CRC rewritten
    by_part = records_of(client, "t")
    assert sum(map(len, by_part.values())) == n   # no duplicates, nothing lost
    parts = [partition_for_key(k, 2) for k in keys]
    for i in range(n):
        assert by_part[parts[i]][offsets[i]].value == values[i]
    p.close()


def test_list_items_are_held_while_written_and_released_after(client):
    client.create_topic("t", 3)
    p = client.producer(batch_size=1024, buffer_memory=1 << 22)
    values = [b"%08d" % i * 20 for i in range(5000)]
    keys = [b"k%d" % (i % 9) for i in range(5000)]
    probe_v, probe_k = values[1234], keys[4321]
    before_v, before_k = sys.getrefcount(probe_v), sys.getrefcount(probe_k)
    fut = p.send_batch("t", values, keys=keys)
    values[:] = [b"changed"] * len(values)      # the caller's list may change after the call
    offsets = fut.result(timeout=30)
    by_part = records_of(client, "t")
    assert by_part[fut.partitions[1234]][offsets[1234]].value == b"%08d" % 1234 * 20
    del fut
    gc.collect()
    after_v, after_k = sys.getrefcount(probe_v), sys.getrefcount(probe_k)
    # probe_v is no longer in the (changed) list; nothing of the producer holds either.
    assert (after_v, after_k) == (before_v - 1, before_k)
    # A bad item: nothing queued, no reference kept.
    first = b"first-%d" % len(values)
    bad = [first, b"b", 3, b"d"]
    first_refs = sys.getrefcount(first)
    with pytest.raises(RecordTypeError):
        p.send_batch("t", bad)
    with pytest.raises(RecordTypeError):
        p.send_batch("t", bad[:2] * 2, keys=[b"k", "text", b"k", b"k"])
    refs_after = sys.getrefcount(first)
    assert refs_after == first_refs
    p.flush()
    assert p.buffered_bytes == 0
    p.close()


def test_bulk_errors_name_the_record_and_queue_nothing(client):
    client.create_topic("t", 2, config={"max.message.bytes": 2000})
    p = client.producer()
    with pytest.raises(RecordTooLargeError, match="record 5 "):
        p.send_batch("t", [b"x"] * 5 + [b"y" * 3000], keys=[b"k"] * 6)
    with pytest.raises(ValueError):
        p.send_batch("t", [b"x"] * 3, keys=[b"k"] * 2)
    p.flush()
    assert [client.high_watermark("t", i) for i in range(2)] == [0, 0]
    assert p.buffered_bytes == 0
    p.close()
    with pytest.raises(IllegalStateError):
        p.send_batch("t", [b"x"])


def test_bulk_sends_respect_buffer_memory(client):
    client.create_topic("t", 4)
    p = client.producer(batch_size=512, buffer_memory=8192)
    values = [b"%05d" % i * 10 for i in range(3000)]
    keys = [b"%d" % (i % 13) for i in range(3000)]
    peak = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak.append(p.buffered_bytes)

    t = threading.Thread(target=watch)
    t.start()
    try:
        offsets = p.send_batch("t", values, keys=keys).result(timeout=60)
    finally:
        stop.set()
        t.join()
    assert len(offsets) == 3000 and (offsets >= 0).all()
    # One bulk batch may go over while the buffer is empty (as one large record would).
    assert max(peak) <= 8192 + 8192 // 4 + 200
    p.close()


def test_concurrent_bulk_and_single_sends(client):
    client.create_topic("t", 3, config={"max.message.bytes": 5000})
    p = client.producer(batch_size=1200)
    errors = []

    def bulk(tid):
        try:
            for r in range(5):
                vals = [b"%d:%d:%d" % (tid, r, i) for i in range(800)]
                p.send_batch("t", vals, keys=[b"b%d" % tid] * 800).result(timeout=30)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    def single(tid):
        for i in range(2000):
            p.send("t", b"%d:s:%d" % (tid, i), key=b"s%d" % tid)

    threads = [threading.Thread(target=bulk, args=(t,)) for t in range(2)]
    threads += [threading.Thread(target=single, args=(t,)) for t in range(2, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.flush()
    assert not errors
    seen = {}
    for recs in records_of(client, "t").values():
        for r in recs:
            seen.setdefault(r.key, []).append(r.value)
    for tid in range(2):
        assert seen[b"b%d" % tid] == [b"%d:%d:%d" % (tid, r, i) for r in range(5) for i in range(800)]
    for tid in range(2, 4):
        assert seen[b"s%d" % tid] == [b"%d:s:%d" % (tid, i) for i in range(2000)]
    p.close()


def test_keyed_partitions_match_murmur2_for_any_partition_count(client):
    # send() and send_batch() compute toPositive(murmur2(key)) % n with a multiply for
    # the modulo: check it against partition_for_key over many keys and counts,
    # including after the topic grows.
    keys = [b"key-%d" % i for i in range(3000)] + [b"", b"\xff" * 33, b"a"]
    for n in (1, 2, 3, 7, 64, 257):
        topic = f"t{n}"
        client.create_topic(topic, n)
        p = client.producer()
        expected = [partition_for_key(k, n) for k in keys]
        fut = p.send_batch(topic, [b"v"] * len(keys), keys=keys)
        assert fut.partitions.tolist() == expected
        handles = [p.send(topic, b"v", key=k) for k in keys[::97]]
        assert [h.result(timeout=30).partition for h in handles] == expected[::97]
        fut.result(timeout=30)
        if n == 3:
            client.create_partitions(topic, 11)
            p._refresh_metadata()
            handles = [p.send(topic, b"v", key=k) for k in keys[::13]]
            assert [h.result(timeout=30).partition for h in handles] == \
                [partition_for_key(k, 11) for k in keys[::13]]
            fut = p.send_batch(topic, [b"v"] * len(keys), keys=keys)
            assert fut.partitions.tolist() == [partition_for_key(k, 11) for k in keys]
            fut.result(timeout=30)
        p.close()


def test_batch_buffers_are_pooled_for_reuse_and_given_back_when_idle(client):
    import time

    client.create_topic("t", 2)
    # 4 MiB of buffer_memory: about 4 of send_batch's 1 MiB batches in flight at once,
    # however fast the sender is, while each call writes 10 MiB.
    p = client.producer(buffer_memory=4 << 20)
    values = [b"x" * 100] * 100_000
    p.send_batch("t", values).result(timeout=30)
    # The bulk batches' buffers came back to the pool (as many as were in flight) ...
    assert p._pooled_bytes() > 1 << 20
    for _ in range(3):
        p.send_batch("t", values).result(timeout=30)
        # ... and were reused by the next calls, not allocated again (which would
        # grow the pool by up to 10 MiB a call).
        assert p._pooled_bytes() <= (4 << 20) + (2 << 20)
    deadline = time.monotonic() + 10
    while p._pooled_bytes() > 1 << 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p._pooled_bytes() <= 1 << 20   # idle for a second: given back
    p.close()


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd"])
def test_compressed_bulk_batches(client, codec):
    client.create_topic("t", 3, config={"max.message.bytes": 20000})
    p = client.producer(compression_type=codec, batch_size=2000)
    n = 3000
    keys = [b"k%d" % (i % 5) for i in range(n)]
    values = [b"value %06d " % i * 3 for i in range(n)]
    fut = p.send_batch("t", values, keys=keys)
    offsets = fut.result(timeout=30)
    by_part = records_of(client, "t")
    for i in range(0, n, 7):
        assert by_part[fut.partitions[i]][offsets[i]].value == values[i]
    res = fetch_partition(client, "t", int(fut.partitions[0]), 0)
    assert next(_core.iter_batches(res.records.records)).compression == codec
    p.close()


def test_acks_zero_and_explicit_timestamps(client):
    client.create_topic("t", 2, config={"max.message.bytes": 5000})
    p = client.producer(acks=0, batch_size=1000, linger_ms=60_000)
    p.send("t", b"first", partition=0, timestamp_ms=1_700_000_000_500)
    # Joins the open batch (an earlier timestamp than its first record: a negative
    # delta), then batches of its own.
    fut = p.send_batch("t", [b"x%d" % i for i in range(500)], partition=0, timestamp_ms=1_700_000_000_000)
    offsets = fut.result(timeout=30)
    assert (offsets == -1).all()
    recs = records_of(client, "t")[0]
    assert len(recs) == 501
    assert recs[0].timestamp == 1_700_000_000_500
    assert {r.timestamp for r in recs[1:]} == {1_700_000_000_000}
    p.close()


@pytest.mark.parametrize("partitions, buffer_memory, size", [
    (40, 32 << 20, 100),     # many partitions at once: smaller batches of their own
    (4, 8192, 1500),         # too little buffer_memory for one batch per partition at once
])
def test_keyed_bulk_sends_with_many_partitions_or_little_memory(client, partitions, buffer_memory, size):
    client.create_topic("t", partitions)
    p = client.producer(batch_size=512, buffer_memory=buffer_memory)
    n = 3000 if size > 1000 else 40_000
    keys = [b"key-%d" % (i % 97) for i in range(n)]
    values = [(b"%06d:" % i).ljust(size, b".") for i in range(n)]
    fut = p.send_batch("t", values, keys=keys)
    offsets = fut.result(timeout=60)
    assert fut.partitions.tolist() == [partition_for_key(k, partitions) for k in keys]
    by_part = records_of(client, "t")
    assert sum(map(len, by_part.values())) == n
    for part, recs in by_part.items():
        idx = [int(r.value[:6]) for r in recs]
        assert idx == sorted(idx)                      # input order within a partition
        for r in recs:
            i = int(r.value[:6])
            assert r.key == keys[i] and offsets[i] == r.offset
    assert p.buffered_bytes == 0
    p.close()


def test_small_keyed_sends_join_open_batches_and_linger(client):
    # Small calls batch like send(): records join the partitions' open batches, and what
    # a call opens lingers for the next records, so many calls make few batches.
    client.create_topic("t", 3)
    p = client.producer(linger_ms=60_000)
    keys = [b"a", b"b", b"c", b"d", b"e", b"f"]
    parts = {k: partition_for_key(k, 3) for k in keys}
    first = p.send("t", b"single", key=b"a")
    futs = [p.send_batch("t", [b"%d-%d" % (call, i) for i in range(60)], keys=[keys[i % 6] for i in range(60)])
            for call in range(20)]
    p.flush()
    assert first.result().offset == 0
    by_part = records_of(client, "t")
    for fut in futs:
        offsets = fut.result(timeout=30)
        for i in (0, 17, 59):
            assert by_part[fut.partitions[i]][offsets[i]].key == keys[i % 6]
    for part in set(parts.values()):
        vals = [r.value for r in by_part[part]]
        expected = [b"%d-%d" % (c, i) for c in range(20) for i in range(60) if parts[keys[i % 6]] == part]
        if part == parts[b"a"]:
            expected = [b"single"] + expected
        assert vals == expected
        assert len(batch_sizes(client, "t", part)) == 1     # one batch per partition in all
    p.close()


def test_long_list_runs_release_their_items_as_they_go(client):
    # One bulk batch of many more records than send_batch writes between releases of the
    # list snapshot's references (RELEASE_STEP), keyless and keyed: every record intact,
    # the batch's CRC (summed step by step) valid, and no reference kept afterwards.
    client.create_topic("t", 3)
    p = client.producer(batch_size=1 << 20, buffer_memory=64 << 20)
    n = 20_000
    values = [b"%06d" % i + b"v" * (i % 29) for i in range(n)]
    keys = [b"key-%d" % (i % 101) for i in range(n)]
    probe = values[n - 3]
    before = sys.getrefcount(probe)
    unkeyed = p.send_batch("t", values, partition=1)
    keyed = p.send_batch("t", values, keys=keys)
    off_u, off_k = unkeyed.result(timeout=60), keyed.result(timeout=60)
    assert (unkeyed.partitions == 1).all() and (off_u == np.arange(n)).all()
    first = next(iter(_core.iter_batches(fetch_partition(client, "t", 1, 0).records.records)))
    assert first.records_count >= n              # several release steps in one batch (keyed ones joined it)
    by_part = records_of(client, "t")            # CRCs checked
    for i in range(n):
        assert by_part[1][off_u[i]].value == values[i]
        rec = by_part[keyed.partitions[i]][off_k[i]]
        assert (rec.key, rec.value) == (keys[i], values[i])
    del unkeyed, keyed
    gc.collect()
    assert sys.getrefcount(probe) == before
    p.close()


@pytest.mark.parametrize("keyed", [False, True])
def test_numpy_columns_with_a_partition_a_custom_partitioner_or_too_large(client, keyed):
    from pylog.broker.partitioner import RoundRobinPartitioner

    client.create_topic("t", 4, config={"max.message.bytes": 300})
    n = 1000
    values = np.arange(n * 12, dtype=np.uint8).reshape(n, 12)
    keys = np.array([b"k%03d" % (i % 7) for i in range(n)], dtype="S4") if keyed else None
    p = client.producer(batch_size=200)
    fixed = p.send_batch("t", values, keys=keys, partition=2)
    assert (fixed.result(timeout=30) == np.arange(n)).all() and (fixed.partitions == 2).all()
    rr = client.producer(batch_size=200, partitioner=RoundRobinPartitioner())
    spread = rr.send_batch("t", values, keys=keys)
    offsets = spread.result(timeout=30)
    assert sorted(set(spread.partitions.tolist())) == [0, 1, 2, 3]
    by_part = records_of(client, "t")
    for i in range(0, n, 13):
        rec = by_part[spread.partitions[i]][offsets[i]]
        assert rec.value == values[i].tobytes() and rec.key == (keys[i] if keyed else None)
    with pytest.raises(RecordTooLargeError, match="record 0 "):
        p.send_batch("t", np.zeros((3, 400), dtype=np.uint8), keys=keys[:3] if keyed else None)
    p.flush()
    assert sum(client.high_watermark("t", i) for i in range(4)) == 2 * n
    assert p.buffered_bytes == 0
    p.close()
    rr.close()


def test_mixed_column_forms(client):
    # Array values with listed keys (some None) and tuple values with array keys: the
    # generic scan reads each column its own way.
    client.create_topic("t", 5)
    p = client.producer(batch_size=4096)
    n = 3000
    arr_values = np.array([b"a%05d" % i for i in range(n)], dtype="S6")
    list_keys = [None if i % 4 == 0 else b"key-%d" % (i % 17) for i in range(n)]
    tuple_values = tuple(b"t%05d" % i + b"-" * (i % 5) for i in range(n))
    arr_keys = np.array([b"k%02d" % (i % 23) for i in range(n)], dtype="S3")
    one = p.send_batch("t", arr_values, keys=list_keys)
    two = p.send_batch("t", tuple_values, keys=arr_keys)
    off_one, off_two = one.result(timeout=30), two.result(timeout=30)
    by_part = records_of(client, "t")
    for i in range(n):
        rec = by_part[one.partitions[i]][off_one[i]]
        assert (rec.key, rec.value) == (list_keys[i], arr_values[i].tobytes())
        if list_keys[i] is not None:
            assert one.partitions[i] == partition_for_key(list_keys[i], 5)
        rec = by_part[two.partitions[i]][off_two[i]]
        assert (rec.key, rec.value) == (arr_keys[i].tobytes(), tuple_values[i])
        assert two.partitions[i] == partition_for_key(arr_keys[i].tobytes(), 5)
    with pytest.raises(RecordTypeError, match=r"keys\[7\] must be bytes or None, not int"):
        p.send_batch("t", arr_values[:10], keys=list_keys[:7] + [7, b"x", b"y"])
    p.close()


def test_record_offsets_tell_which_records_of_a_failed_send_were_appended(client):
    client.create_topic("t", 2)
    p = client.producer(linger_ms=5)
    p.send("t", b"x", partition=0).result(timeout=30)     # the producer learns the topic's limits
    client.alter_configs("t", {"max.message.bytes": "1000"})
    values = [b"v" * 3000 if i == 5 else b"v%d" % i for i in range(30)]
    fut = p.send_batch("t", values, keys=[b"k%d" % i for i in range(30)])
    with pytest.raises(RecordTooLargeError):
        fut.result(timeout=30)
    offsets = fut.record_offsets()
    assert [i for i in range(30) if offsets[i] < 0] == [5]
    by_part = records_of(client, "t")
    for i in range(30):
        if i != 5:
            assert by_part[fut.partitions[i]][offsets[i]].value == values[i]
    p.close()
