"""The runtime's record collector (a stream thread's ``RecordCollector.send_many``) over a real
producer: a polled batch's sink records (keyed, default partitioner) and a store's
changelog records (one partition) go out in one ``send_batch`` each, every record with
its own timestamp, each partition's records in input order; keyless records go one by
one; and the delivery watch hands each record of a ``send_batch``'s failed batches
(only those) to the production handler with its timestamp (and its partition for a
changelog)."""

from __future__ import annotations

import random

import pylog
from pylog.broker.partitioner import partition_for_key
from pylog.errors import RecordTooLargeError
from pylog.streams import Serdes, StreamsBuilder
from pylog.streams.errors import DeliveryWatch, Response
from pylog.streams.runtime import StreamsApp
from pylog.streams.stream_thread import RecordCollector
from pylog.streams.task import StreamTask

B = Serdes.bytes()
T0 = 1_700_000_000_000


def _thread(producer):
    """Thread 1 of an app, sending through ``producer``."""
    b = StreamsBuilder()
    b.stream("in", key_serde=B, value_serde=B).to("out")
    thread = StreamsApp(b.build(), "app").stream_threads()[0]
    thread.producer = producer
    return thread


def _read(client, topic, partitions, count):
    """partition -> [(key, value, timestamp)] of the topic's ``count`` records."""
    c = client.consumer(auto_offset_reset="earliest", enable_auto_commit=False)
    c.assign([(topic, p) for p in range(partitions)])
    out = {p: [] for p in range(partitions)}
    got = 0
    for _ in range(500):
        if got >= count:
            break
        for m in c.poll(timeout_ms=200):
            out[m.partition].append((m.key, m.value, m.timestamp))
            got += 1
    c.close(autocommit=False)
    return out


def test_sink_and_changelog_runs_go_in_one_send_batch_with_their_timestamps(tmp_path):
    r = random.Random(3)
    n = 500
    keys = [b"k%d" % r.randrange(40) for _ in range(n)]
    values = [b"v%d" % i for i in range(n)]
    stamps = [T0 + r.randrange(-10_000, 10_000) for _ in range(n)]
    with pylog.open(str(tmp_path / "data")) as client:
        client.create_topic("out", 3)
        client.create_topic("app-s-changelog", 3)
        producer = client.producer(linger_ms=5)
        collector = RecordCollector(_thread(producer))
        (out_span,) = collector.send_many("out", keys, values, stamps, None)
        (cl_span,) = collector.send_many("app-s-changelog", keys, values, stamps, None, 1)
        keyless = collector.send_many("out", [None] * 20, values[:20], stamps[:20], None)
        for fut, start, stop in (out_span, cl_span):
            assert (start, stop) == (0, n)
            assert len(fut.result(timeout=30)) == n        # one BatchSendFuture for all
        ((futures, start, stop),) = keyless
        assert (type(futures), start, stop) == (list, 0, 20)
        keyless_at = {f.result(timeout=30).partition: [] for f in futures}
        for f, v, t in zip(futures, values, stamps):
            md = f.result(timeout=30)
            keyless_at[md.partition].append((None, v, t))
        producer.close()
        out = _read(client, "out", 3, n + 20)
        changelog = _read(client, "app-s-changelog", 3, n)
    rows = list(zip(keys, values, stamps))
    for p in range(3):
        want = [row for row in rows if partition_for_key(row[0], 3) == p] + keyless_at.get(p, [])
        assert out[p] == want
    assert changelog == {0: [], 1: rows, 2: []}


def test_a_failed_changelog_batch_reports_each_record_with_its_timestamp_and_partition(tmp_path):
    big = b"x" * 3000
    with pylog.open(str(tmp_path / "data")) as client:
        client.create_topic("app-s-changelog", 2)
        producer = client.producer(linger_ms=0)
        producer.send("app-s-changelog", value=b"x").result()     # the producer learns the topic's limits
        client.alter_configs("app-s-changelog", {"max.message.bytes": "1000"})
        thread = _thread(producer)
        calls = []

        def handler(context, record, exc):
            calls.append((record.topic, record.partition, record.timestamp, record.key, type(exc)))
            return Response.resume()

        watch = DeliveryWatch(RecordCollector(thread))
        t = thread.app.topology
        task = StreamTask(t, t.nodes, application_id="app", task_id="0_1", collector=watch, partition=1,
                          config={"production.exception.handler": handler})
        watch.task = task
        keys = [b"k%02d" % i for i in range(20)]
        stamps = [T0 + 7 * i - (i % 3) * 1000 for i in range(20)]
        watch.send_many("app-s-changelog", keys, [big] * 20, stamps, None, 1)
        producer.flush()
        watch.check()
        assert calls == [("app-s-changelog", 1, ts, k, RecordTooLargeError) for k, ts in zip(keys, stamps)]
        assert task.metrics.get("dropped-records") == 20
        producer.close()


def test_only_the_records_of_a_failed_batch_go_to_the_handler(tmp_path):
    # The broker refuses the batch holding one record too large for the topic's lowered
    # max.message.bytes; the producer splits it and only that record fails.
    with pylog.open(str(tmp_path / "data")) as client:
        client.create_topic("out", 2)
        producer = client.producer(linger_ms=5)
        producer.send("out", value=b"x", partition=0).result()     # the producer learns the topic's limits
        client.alter_configs("out", {"max.message.bytes": "1000"})
        thread = _thread(producer)
        calls = []

        def handler(context, record, exc):
            calls.append((record.key, record.timestamp, type(exc)))
            return Response.resume()

        watch = DeliveryWatch(RecordCollector(thread))
        t = thread.app.topology
        task = StreamTask(t, t.nodes, application_id="app", task_id="0_0", collector=watch,
                          config={"production.exception.handler": handler})
        watch.task = task
        keys = [b"k%02d" % i for i in range(40)]
        values = [b"v" * 3000 if i == 17 else b"v%d" % i for i in range(40)]
        stamps = [T0 + 11 * i for i in range(40)]
        watch.send_many("out", keys, values, stamps, None)
        producer.flush()
        watch.check()
        assert calls == [(b"k17", T0 + 11 * 17, RecordTooLargeError)]
        assert task.metrics.get("dropped-records") == 1
        producer.close()
        got = _read(client, "out", 2, 40)
    assert sorted((k, v, ts) for recs in got.values() for k, v, ts in recs if k is not None) == sorted(
        (k, v, ts) for i, (k, v, ts) in enumerate(zip(keys, values, stamps)) if i != 17)
