"""The embedded producer: partitioning, batching, callbacks, bad input, retries and
idempotence (fault injection through a client proxy), bulk sends, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from pylog import _core
from pylog.broker.partitioner import Partitioner, partition_for_key
from pylog.errors import (IllegalStateError, InvalidConfigError, InvalidRecordError, InvalidTimestampError,
                          RecordTooLargeError, RecordTypeError, RequestTimedOutError, UnknownTopicOrPartitionError)
from tests.client.helpers import FlakyTransport, fetch_partition, records_of


def test_send_returns_metadata_and_keyed_records_follow_murmur2(client):
    client.create_topic("t", 4)
    p = client.producer()
    handles = [p.send("t", value=b"v%d" % i, key=b"key-%d" % (i % 10), headers=[("n", b"%d" % i)])
               for i in range(200)]
    p.flush()
    metas = [h.result() for h in handles]
    for i, m in enumerate(metas):
        assert m.topic == "t" and m.partition == partition_for_key(b"key-%d" % (i % 10), 4)
        assert m.serialized_value_size == len(b"v%d" % i)
    by_part = records_of(client, "t")
    for part, recs in by_part.items():
        assert [r.offset for r in recs] == list(range(len(recs)))
        # Append order within a partition is send order.
        assert [int(r.value[1:]) for r in recs] == sorted(int(r.value[1:]) for r in recs)
    assert sum(map(len, by_part.values())) == 200
    assert {(m.partition, m.offset) for m in metas} == {(p_, r.offset) for p_, rs in by_part.items() for r in rs}
    first = by_part[metas[0].partition][0]
    assert first.headers == (("n", b"0"),)


def test_keyless_records_stick_to_a_partition_per_batch(client):
    client.create_topic("t", 6)
    p = client.producer(batch_size=1024, linger_ms=1000)
    handles = [p.send("t", b"x" * 100) for _ in range(40)]
    p.flush()
    parts = [h.result().partition for h in handles]
    # Runs of one partition, each about batch_size of records, changing when a batch fills.
    runs = [parts[0]]
    for a, b in zip(parts, parts[1:]):
        if a != b:
            runs.append(b)
    assert 3 <= len(runs) <= 8
    assert all(a != b for a, b in zip(runs, runs[1:]))


def test_explicit_round_robin_and_custom_partitioners(client):
    client.create_topic("t", 3)
    p = client.producer(partitioner="round_robin")
    hs = [p.send("t", b"x", key=b"same") for _ in range(6)]
    assert [h.result().partition for h in hs] == [0, 1, 2, 0, 1, 2]
    assert p.send("t", b"x", key=b"same", partition=2).result().partition == 2

    class Last(Partitioner):
        def __init__(self):
            self.calls = 0

        def partition(self, topic, key, key_bytes, num_partitions, available_partitions=None):
            self.calls += 1
            return num_partitions - 1

    custom = Last()
    p2 = client.producer(partitioner=custom)
    assert p2.send("t", b"x", key=b"k").result().partition == 2
    assert custom.calls == 1


def test_callbacks_and_compression(client):
    client.create_topic("t", 1)
    for codec in ("gzip", "lz4", "snappy", "zstd"):
        p = client.producer(compression_type=codec)
        got, errors, done = [], [], []
        h = p.send("t", b"payload" * 20)
        h.add_callback(got.append).add_errback(errors.append)
        h.add_done_callback(done.append)
        h.add_callback(lambda m: 1 / 0)            # a failing callback is logged, not fatal
        p.flush()
        assert got == [h.result()] and errors == [] and done == [h]
        p.send("t", b"z").add_callback(got.append)  # after completion: runs at once
        p.flush()
        assert len(got) == 2
        res = fetch_partition(client, "t", 0, h.result().offset)
        assert next(_core.iter_batches(res.records.records)).compression == codec
        p.close()


def test_acks_zero_reports_offset_minus_one(client):
    client.create_topic("t", 1)
    p = client.producer(acks=0)
    assert not p.enable_idempotence
    assert p.send("t", b"a").result().offset == -1
    assert client.high_watermark("t", 0) == 1


@pytest.mark.parametrize("call, error, code", [
    (lambda p: p.send("nope", b"x"), UnknownTopicOrPartitionError, 3),
    (lambda p: p.send("t", b"x", partition=7), UnknownTopicOrPartitionError, 3),
    (lambda p: p.send("t", b"x", partition=True), UnknownTopicOrPartitionError, 3),
    (lambda p: p.send("t", "text"), RecordTypeError, 87),
    (lambda p: p.send("t", b"x", key=12), RecordTypeError, 87),
    (lambda p: p.send("t", b"x", headers=[("h", "text")]), RecordTypeError, 87),
    (lambda p: p.send("t", b"x", headers=[(1, b"v")]), RecordTypeError, 87),
    (lambda p: p.send("t", b"x", headers=5), RecordTypeError, 87),
    (lambda p: p.send("t", b"x", timestamp_ms=-1), InvalidTimestampError, 32),
    (lambda p: p.send("t", b"x" * 3000), RecordTooLargeError, 10),
    (lambda p: p.send_batch("t", [b"ok", "text"]), RecordTypeError, 87),
    (lambda p: p.send_batch("t", [b"ok", b"x" * 3000]), RecordTooLargeError, 10),
    (lambda p: p.send_batch("t", np.zeros((2, 2), dtype=np.float32)), RecordTypeError, 87),
])
def test_bad_sends_raise_with_codes_and_queue_nothing(client, call, error, code):
    client.create_topic("t", 2, config={"max.message.bytes": 2000})
    p = client.producer(max_block_ms=200)      # (remote: how long a missing topic is waited for)
    with pytest.raises(error) as ei:
        call(p)
    assert ei.value.error_code == code
    p.flush()
    assert [client.high_watermark("t", i) for i in range(2)] == [0, 0]
    assert p.buffered_bytes == 0


def test_bad_producer_configs(client):
    for kwargs in ({"acks": 2}, {"linger_ms": -1}, {"compression_type": "brotli"},
                   {"enable_idempotence": True, "acks": 1}, {"enable_idempotence": True, "max_in_flight": 6},
                   {"partitioner": "nope"}, {"batch_size": "big"}, {"value_serializer": 3}):
        with pytest.raises(InvalidConfigError):
            client.producer(**kwargs)


def test_send_batch_offsets_partitions_and_numpy_inputs(client):
    client.create_topic("t", 4)
    p = client.producer(batch_size=4096)
    values = [b"v%05d" % i for i in range(5000)]
    keys = [b"k%d" % (i % 37) for i in range(5000)]
    fut = p.send_batch("t", values, keys=keys)
    offsets = fut.result()
    assert offsets.dtype == np.int64 and len(offsets) == 5000
    expected_parts = [partition_for_key(k, 4) for k in keys]
    assert fut.partitions.tolist() == expected_parts
    by_part = records_of(client, "t")
    for i in (0, 1, 2, 2500, 4999):
        rec = by_part[expected_parts[i]][offsets[i]]
        assert (rec.key, rec.value) == (keys[i], values[i])
    # 2-D uint8 rows, and fixed-width bytes, to one partition.
    rows = np.arange(30, dtype=np.uint8).reshape(10, 3)
    off2 = p.send_batch("t", rows, partition=1).result()
    assert [by for by in (r.value for r in records_of(client, "t")[1][off2[0]:off2[0] + 10])] == \
        [bytes(r) for r in rows]
    fixed = np.array([b"abcd", b"efgh"], dtype="S4")
    off3 = p.send_batch("t", fixed, partition=0).result()
    assert [r.value for r in records_of(client, "t")[0][off3[0]:off3[0] + 2]] == [b"abcd", b"efgh"]
    assert len(p.send_batch("t", []).result()) == 0


def test_close_flushes_and_later_sends_fail(client):
    client.create_topic("t", 1)
    p = client.producer(linger_ms=60_000)
    h = p.send("t", b"x")
    p.close()
    assert h.done() and h.result().offset == 0
    with pytest.raises(IllegalStateError):
        p.send("t", b"y")
    p.close()   # idempotent


def test_small_buffer_memory_blocks_until_room(client):
    client.create_topic("t", 2)
    p = client.producer(buffer_memory=4096, batch_size=1024)
    hs = [p.send("t", b"x" * 200, key=b"%d" % (i % 5)) for i in range(300)]
    p.flush()
    assert all(h.succeeded() for h in hs)
    assert sum(client.high_watermark("t", i) for i in range(2)) == 300


def test_concurrent_senders_lose_nothing_and_keep_per_thread_order(client):
    client.create_topic("t", 3)
    p = client.producer(batch_size=2048)

    def work(tid):
        for i in range(2000):
            p.send("t", b"%d:%d" % (tid, i), key=b"thread-%d" % tid)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.flush()
    seen = {}
    for recs in records_of(client, "t").values():
        for r in recs:
            tid, i = map(int, r.value.split(b":"))
            seen.setdefault(tid, []).append(i)
    assert {t: s for t, s in seen.items()} == {t: list(range(2000)) for t in range(4)}


def test_idempotent_retries_after_lost_acks_make_no_duplicates(client):
    client.create_topic("t", 1)
    flaky = FlakyTransport(client.transport, ["lost_ack", "lost_ack", "ok", "lost_ack"])
    from pylog.client.producer import Producer
    p = Producer(flaky, retry_backoff_ms=1, linger_ms=0, batch_size=256)
    hs = [p.send("t", b"%04d" % i) for i in range(200)]
    p.flush()
    assert flaky.calls > 4
    values = [r.value for r in records_of(client, "t")[0]]
    assert values == [b"%04d" % i for i in range(200)]          # once each, in order
    assert [h.result().offset for h in hs] == list(range(200))
    p.close()


def test_retriable_errors_keep_order_and_fatal_errors_fail_only_their_batch(client):
    client.create_topic("t", 1)
    from pylog.client.producer import Producer
    flaky = FlakyTransport(client.transport, ["retriable", "retriable"])
    p = Producer(flaky, retry_backoff_ms=1, linger_ms=0)
    hs = [p.send("t", b"%d" % i) for i in range(50)]
    p.flush()
    assert [h.result().offset for h in hs] == list(range(50))
    p.close()

    flaky = FlakyTransport(client.transport, ["fatal"])
    p = Producer(flaky, retry_backoff_ms=1, linger_ms=10_000, batch_size=64)
    hs = [p.send("t", b"x" * 30) for _ in range(8)]
    p.flush()
    failed = [h for h in hs if h.failed()]
    assert failed and all(isinstance(h.exception(), InvalidRecordError) for h in failed)
    assert all(h.succeeded() for h in hs[len(failed):])      # the later batches were renumbered
    later = p.send("t", b"after").result()
    assert later.offset == client.high_watermark("t", 0) - 1
    p.close()


def test_without_idempotence_a_retry_resends_only_what_was_not_appended(client):
    """A batch refused retriably is retried; the later batches of the same append that
    were appended are done, not sent (and appended) again."""
    client.create_topic("t", 1)
    from pylog.client.producer import Producer
    flaky = FlakyTransport(client.transport, ["first_retriable"])
    p = Producer(flaky, acks=1, enable_idempotence=False, retry_backoff_ms=1, linger_ms=10_000, batch_size=64)
    hs = [p.send("t", b"%02d" % i + b"x" * 30) for i in range(8)]
    p.flush()
    assert all(h.succeeded() for h in hs)
    values = sorted(r.value[:2] for r in records_of(client, "t")[0])
    assert values == [b"%02d" % i for i in range(8)]               # each once
    p.close()


def test_unknown_producer_id_bumps_the_epoch(client):
    client.create_topic("t", 1)
    from pylog.client.producer import Producer
    flaky = FlakyTransport(client.transport, ["unknown_pid"])
    p = Producer(flaky, retry_backoff_ms=1, linger_ms=0)
    epoch = 0       # a new producer id's (the sender gets it before the first batch)
    assert p.send("t", b"a").result().offset == 0
    assert p.producer_epoch == epoch + 1
    assert p.send("t", b"b").result().offset == 1
    p.close()


def test_delivery_timeout_fails_sends_that_never_land(client):
    client.create_topic("t", 1)
    from pylog.client.producer import Producer
    flaky = FlakyTransport(client.transport, ["retriable"] * 10_000)
    p = Producer(flaky, retry_backoff_ms=1, retry_backoff_max_ms=5, delivery_timeout_ms=100, linger_ms=0)
    h = p.send("t", b"x")
    with pytest.raises(RequestTimedOutError):
        h.result(timeout=30)
    assert client.high_watermark("t", 0) == 0
    p.close(timeout=5)


def test_result_times_out_without_losing_the_send(client):
    client.create_topic("t", 1)
    from pylog.client.producer import Producer
    gate = threading.Event()

    class Slow(FlakyTransport):
        def produce(self, *a, **k):
            gate.wait(30)
            return super().produce(*a, **k)

    p = Producer(Slow(client.transport, []), linger_ms=0)
    h = p.send("t", b"x")
    with pytest.raises(RequestTimedOutError):
        h.result(timeout=0.01)
    gate.set()
    assert h.result(timeout=30).offset == 0
    p.close()
