"""read_committed over the wire: Fetch v4+ and ListOffsets v2+ against an in-process
``pylog serve``, read by kafka-python's and librdkafka's (confluent-kafka) consumers.

The transactional batches and markers are written through the broker core in the same
process (``write_txn_markers``, as the transaction coordinator does): these tests are
about the data path, not the coordinator.
"""

from __future__ import annotations

import pytest

from pylog.broker.core import READ_COMMITTED
from tests.broker.test_txn_data_path import plain_batch, txn_batch
from tests.server.util import unique, wait_for


def _write_transactions(broker, topic: str) -> tuple[int, list[bytes]]:
    """Committed, aborted and plain records interleaved on partition 0, and one
    transaction left open at the end; returns the open one's producer id and the values
    a read_committed consumer must see, in order."""
    broker.txn_verifier = lambda *a: 0
    p1, p2, p3 = (broker.init_producer_id().producer_id for _ in range(3))
    broker.append(topic, 0, plain_batch([b"plain-0"]))
    broker.append(topic, 0, txn_batch(p1, 0, 0, [b"c1-a", b"c1-b"]))
    broker.append(topic, 0, txn_batch(p2, 0, 0, [b"ab-a"]))
    broker.append(topic, 0, plain_batch([b"plain-1"]))
    broker.append(topic, 0, txn_batch(p2, 0, 1, [b"ab-b", b"ab-c"]))
    broker.append(topic, 0, txn_batch(p1, 0, 2, [b"c1-c"]))
    res = broker.write_txn_markers([(p2, 0, 0, False, [(topic, 0)]), (p1, 0, 0, True, [(topic, 0)])])
    assert all(r.error_code == 0 for r in res.values()), res
    broker.append(topic, 0, txn_batch(p3, 0, 0, [b"open-a"]))
    broker.append(topic, 0, plain_batch([b"plain-2"]))
    return p3, [b"plain-0", b"c1-a", b"c1-b", b"plain-1", b"c1-c"]


@pytest.fixture
def txn_topic(inproc):
    broker = inproc.server.broker
    topic = unique("rc")
    broker.create_topic(topic, 1)
    open_pid, visible = _write_transactions(broker, topic)
    return inproc, broker, topic, open_pid, visible


def _commit_open(broker, topic: str, pid: int) -> None:
    res = broker.write_txn_markers([(pid, 0, 0, True, [(topic, 0)])])
    assert res[(topic, 0, pid)].error_code == 0


def test_kafka_python_read_committed_consumer(txn_topic):
    kafka = pytest.importorskip("kafka")
    inproc, broker, topic, open_pid, visible = txn_topic
    tp = kafka.TopicPartition(topic, 0)
    consumer = kafka.KafkaConsumer(bootstrap_servers=inproc.bootstrap, isolation_level="read_committed",
                                   auto_offset_reset="earliest", enable_auto_commit=False,
                                   fetch_max_wait_ms=100)
    unc = kafka.KafkaConsumer(bootstrap_servers=inproc.bootstrap, auto_offset_reset="earliest",
                              enable_auto_commit=False, fetch_max_wait_ms=100)
    try:
        consumer.assign([tp])
        unc.assign([tp])
        # ListOffsets latest: the LSO for read_committed, the high watermark otherwise.
        assert consumer.end_offsets([tp])[tp] == broker.last_stable_offset(topic, 0) == 10
        assert unc.end_offsets([tp])[tp] == broker.high_watermark(topic, 0) == 12
        got: list[bytes] = []

        def poll_into(c, out):
            for records in c.poll(timeout_ms=200).values():
                out.extend(r.value for r in records)
            return out

        wait_for(lambda: len(poll_into(consumer, got)) >= len(visible), "the committed records")
        for _ in range(3):   # nothing past the LSO comes, however long we poll
            poll_into(consumer, got)
        assert got == visible
        assert consumer.position(tp) == 10
        _commit_open(broker, topic, open_pid)
        wait_for(lambda: len(poll_into(consumer, got)) >= len(visible) + 2, "the newly committed records")
        assert got == visible + [b"open-a", b"plain-2"]
        everything: list[bytes] = []
        wait_for(lambda: len(poll_into(unc, everything)) >= 10, "every record, read_uncommitted")
        assert b"ab-a" in everything and b"ab-c" in everything
    finally:
        consumer.close()
        unc.close()


def test_confluent_read_committed_consumer(txn_topic):
    ck = pytest.importorskip("confluent_kafka")
    inproc, broker, topic, open_pid, visible = txn_topic
    consumer = ck.Consumer({"bootstrap.servers": inproc.bootstrap, "group.id": unique("g"),
                            "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                            "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    try:
        consumer.assign([ck.TopicPartition(topic, 0, ck.OFFSET_BEGINNING)])
        low, high = consumer.get_watermark_offsets(ck.TopicPartition(topic, 0), timeout=10)
        assert (low, high) == (0, 10)   # librdkafka asks ListOffsets with its isolation level: the LSO
        got: list[bytes] = []

        def poll() -> list[bytes]:
            m = consumer.poll(0.2)
            if m is not None:
                assert m.error() is None, m.error()
                got.append(m.value())
            return got

        wait_for(lambda: len(poll()) >= len(visible), "the committed records")
        for _ in range(5):
            poll()
        assert got == visible
        _commit_open(broker, topic, open_pid)
        wait_for(lambda: len(poll()) >= len(visible) + 2, "the newly committed records")
        assert got == visible + [b"open-a", b"plain-2"]
    finally:
        consumer.close()


def test_aiokafka_read_committed_consumer(txn_topic):
    aiokafka = pytest.importorskip("aiokafka")
    import asyncio

    inproc, broker, topic, open_pid, visible = txn_topic

    async def main():
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=inproc.bootstrap, isolation_level="read_committed",
                                             auto_offset_reset="earliest", enable_auto_commit=False,
                                             fetch_max_wait_ms=100, request_timeout_ms=15000)
        await consumer.start()
        tp = aiokafka.TopicPartition(topic, 0)
        got: list[bytes] = []

        async def poll_until(n: int) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while len(got) < n and loop.time() < deadline:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    got.extend(r.value for r in records)

        try:
            consumer.assign([tp])
            assert (await consumer.end_offsets([tp]))[tp] == 10     # the LSO
            await poll_until(len(visible))
            for _ in range(3):                      # nothing more comes while the txn is open
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    got.extend(r.value for r in records)
            assert got == visible
            await asyncio.to_thread(_commit_open, broker, topic, open_pid)
            await poll_until(len(visible) + 2)
            assert got == visible + [b"open-a", b"plain-2"]
        finally:
            await consumer.stop()

    asyncio.run(main())


def test_fetch_v4_answers_lso_and_aborted_transactions(txn_topic):
    """The raw answer: what the core says (LSO, aborted list) is what the wire carries."""
    from pylog.protocol import messages as m
    from tests.wire import WireClient

    inproc, broker, topic, open_pid, visible = txn_topic
    with WireClient(inproc.bootstrap) as wc:
        req = m.FetchRequest(replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=1 << 20,
                             isolation_level=READ_COMMITTED, topics=[
                                 m.FetchRequest.FetchTopic(topic=topic, partitions=[
                                     m.FetchRequest.FetchPartition(partition=0, fetch_offset=0,
                                                                   partition_max_bytes=1 << 20)])])
        resp = wc.leader(topic, 0).request(1, req, version=4)
    pd = resp.responses[0].partitions[0]
    assert pd.error_code == 0
    assert (pd.high_watermark, pd.last_stable_offset) == (12, 10)
    assert [(a.producer_id, a.first_offset) for a in pd.aborted_transactions] == \
        broker.fetch(topic, 0, 0, isolation_level=READ_COMMITTED).aborted_transactions
    assert len(pd.aborted_transactions) == 1 and pd.aborted_transactions[0].first_offset == 3


def test_dump_log_shows_markers_and_the_txnindex(tmp_path):
    import os
    import subprocess
    import sys

    from pylog.broker.core import Broker

    b = Broker(str(tmp_path / "d"), background=False, offsets_topic_num_partitions=1)
    try:
        b.create_topic("t", 1)
        b.txn_verifier = lambda *a: 0
        p = b.init_producer_id().producer_id
        b.append("t", 0, txn_batch(p, 0, 0, [b"a"]))
        b.write_txn_markers([(p, 0, 5, False, [("t", 0)])])
        b.append("t", 0, txn_batch(p, 0, 1, [b"b"]))
        b.write_txn_markers([(p, 0, 5, True, [("t", 0)])])
    finally:
        b.close()
    seg = os.path.join(tmp_path, "d", "t-0", "00000000000000000000")

    def dump(*files):
        return subprocess.run([sys.executable, "-m", "pylog.cli", "dump-log", *files],
                              capture_output=True, text=True, timeout=60)

    out = dump(seg + ".log", seg + ".txnindex")
    assert out.returncode == 0, out.stderr
    markers = [line for line in out.stdout.splitlines() if line.startswith("| offset:")]
    assert len(markers) == 2
    assert markers[0].startswith("| offset: 1 ") and markers[0].endswith("endTxnMarker: ABORT coordinatorEpoch: 5")
    assert markers[1].startswith("| offset: 3 ") and markers[1].endswith("endTxnMarker: COMMIT coordinatorEpoch: 5")
    assert f"version: 0 producerId: {p} firstOffset: 0 lastOffset: 1 lastStableOffset: 2" in out.stdout
    with open(seg + ".txnindex", "ab") as f:
        f.write(b"\x00\x00")
    damaged = dump(seg + ".txnindex")
    assert damaged.returncode == 1 and "not a multiple of the 34-byte entry" in damaged.stderr
    assert "producerId: %d firstOffset: 0" % p in damaged.stdout
