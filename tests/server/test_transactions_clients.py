"""Transactional producers of librdkafka (confluent-kafka), kafka-python and aiokafka
against ``pylog serve``, read back by read_committed consumers: committed records exactly
once, aborted and still-open ones never; a zombie producer fenced; a transaction left open
aborted by the coordinator's timeout; and SIGKILLed servers whose transactions end whole
after the restart."""

from __future__ import annotations

import asyncio

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from server.conftest import ServeProcess, _check_stopped  # noqa: E402
from server.util import unique, wait_for  # noqa: E402

COMMON = {"socket.timeout.ms": 10000, "topic.metadata.refresh.interval.ms": 2000,
          "reconnect.backoff.max.ms": 500}
#: Small layouts and a fast timeout scan, so the tests start and settle quickly.
TXN_OVERRIDES = {"transaction.state.log.num.partitions": "4",
                 "transaction.abort.timed.out.transaction.cleanup.interval.ms": "200"}


@pytest.fixture(scope="module")
def txn_server(tmp_path_factory):
    sp = ServeProcess(str(tmp_path_factory.mktemp("txn")), TXN_OVERRIDES)
    sp.start()
    try:
        yield sp
    finally:
        _check_stopped(sp)


def create_topic(bootstrap, name, partitions=1):
    a = AdminClient({"bootstrap.servers": bootstrap, **COMMON})   # alive until the result is in
    a.create_topics([NewTopic(name, partitions, 1)])[name].result(10)


def txn_producer(bootstrap, tid, **extra):
    return Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 5, **COMMON,
                     **extra})


def open_transaction(bootstrap, tid, records, **extra):
    """A transactional producer with a transaction open holding ``records`` ((topic,
    partition, value) triples), all acknowledged."""
    p = txn_producer(bootstrap, tid, **extra)
    p.init_transactions(10)
    p.begin_transaction()
    for topic, partition, value in records:
        p.produce(topic, value, partition=partition)
    p.flush(10)
    return p


def read_committed(bootstrap, partitions, group=None):
    """Everything a read_committed consumer gets from ``partitions`` up to their ends
    (partition EOF, which for read_committed is the last stable offset): values by
    (topic, partition)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group or unique("rc"),
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                  "enable.partition.eof": True, "enable.auto.commit": False, "fetch.wait.max.ms": 100,
                  **COMMON})
    try:
        c.assign([TopicPartition(t, p, 0) for t, p in partitions])
        got: dict[tuple[str, int], list[bytes]] = {tp: [] for tp in partitions}
        at_end: set[tuple[str, int]] = set()

        def step():
            msg = c.poll(0.2)
            if msg is None:
                return False
            tp = (msg.topic(), msg.partition())
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"consumer error: {msg.error()}")
                at_end.add(tp)
            else:
                at_end.discard(tp)
                got[tp].append(msg.value())
            return at_end == set(partitions)

        wait_for(step, "read_committed consumer at the end of every partition")
        return got
    finally:
        c.close()


def lso_passes(bootstrap, partitions, sentinel: bytes):
    """Wait until a read_committed consumer sees ``sentinel`` (committed after whatever
    the test waits to be settled) on every partition; returns what it read."""
    def seen():
        got = read_committed(bootstrap, partitions)
        return got if all(got[tp] and got[tp][-1] == sentinel for tp in partitions) else None
    return wait_for(seen, f"{sentinel!r} readable with read_committed", timeout=30)


def commit_sentinel(bootstrap, partitions, sentinel: bytes):
    p = txn_producer(bootstrap, unique("sentinel"))
    p.init_transactions(10)
    p.begin_transaction()
    for t, part in partitions:
        p.produce(t, sentinel, partition=part)
    p.commit_transaction(10)


# ---------------------------------------------------------------------- librdkafka

def test_confluent_commit_abort_and_offsets_read_committed_exactly_once(txn_server):
    bs = txn_server.bootstrap
    a, b = unique("ta"), unique("tb")
    create_topic(bs, a, 2)
    create_topic(bs, b, 1)
    tps = [(a, 0), (a, 1), (b, 0)]
    p = txn_producer(bs, unique("tx"))
    p.init_transactions(10)

    p.begin_transaction()
    for i in range(30):
        t, part = tps[i % 3]
        p.produce(t, b"c%d" % i, partition=part)
    p.commit_transaction(10)

    p.begin_transaction()
    for i in range(9):
        t, part = tps[i % 3]
        p.produce(t, b"aborted%d" % i, partition=part)
    p.flush(10)
    p.abort_transaction(10)

    group = unique("eos")
    consumer = Consumer({"bootstrap.servers": bs, "group.id": group, **COMMON})
    p.begin_transaction()
    p.produce(b, b"with-offsets", partition=0)
    p.send_offsets_to_transaction([TopicPartition(a, 0, 7), TopicPartition(a, 1, 3)],
                                  consumer.consumer_group_metadata(), 10)
    # Open transaction: neither its records nor its offsets are visible yet (librdkafka
    # asks with require_stable and retries UNSTABLE_OFFSET_COMMIT until its timeout).
    p.flush(10)
    with pytest.raises(KafkaException) as info:
        consumer.committed([TopicPartition(a, 0)], 1)
    assert info.value.args[0].code() == KafkaError._TIMED_OUT
    open_view = read_committed(bs, tps)
    assert b"with-offsets" not in open_view[(b, 0)]
    p.commit_transaction(10)

    got = read_committed(bs, tps)
    for idx, tp in enumerate(tps):
        expected = [b"c%d" % i for i in range(30) if i % 3 == idx]
        if tp == (b, 0):
            expected.append(b"with-offsets")
        assert got[tp] == expected
    assert [tp.offset for tp in consumer.committed([TopicPartition(a, 0), TopicPartition(a, 1)], 10)] == [7, 3]
    consumer.close()


def test_confluent_zombie_is_fenced_and_its_writes_never_visible(txn_server):
    bs = txn_server.bootstrap
    topic = unique("zombie")
    create_topic(bs, topic, 1)
    tid = unique("ztx")
    zombie = open_transaction(bs, tid, [(topic, 0, b"zombie-before")])

    fresh = txn_producer(bs, tid)
    fresh.init_transactions(10)            # fences the zombie, aborts its transaction
    with pytest.raises(KafkaException) as info:
        zombie.produce(topic, b"zombie-after")
        zombie.commit_transaction(10)
    assert info.value.args[0].fatal() or info.value.args[0].txn_requires_abort()
    fresh.begin_transaction()
    fresh.produce(topic, b"fresh")
    fresh.commit_transaction(10)
    got = read_committed(bs, [(topic, 0)])
    assert got[(topic, 0)] == [b"fresh"]


def test_an_open_transaction_is_aborted_by_the_coordinator_timeout(txn_server):
    bs = txn_server.bootstrap
    topic = unique("timeout")
    create_topic(bs, topic, 1)
    # Kept alive (a producer closing could end its transaction itself) but left alone.
    abandoned = open_transaction(bs, unique("ttx"), [(topic, 0, b"abandoned")],
                                 **{"transaction.timeout.ms": 1500, "socket.timeout.ms": 1500})
    # Committed by another producer after the abandoned records: readable only once the
    # coordinator has aborted the abandoned transaction and the LSO moved past it.
    commit_sentinel(bs, [(topic, 0)], b"after")
    got = lso_passes(bs, [(topic, 0)], b"after")
    assert got[(topic, 0)] == [b"after"]
    del abandoned


# ---------------------------------------------------------------------- kafka-python, aiokafka

def test_kafka_python_transactional_producer(txn_server):
    kafka = pytest.importorskip("kafka")
    bs = txn_server.bootstrap
    topic = unique("kp")
    create_topic(bs, topic, 2)
    p = kafka.KafkaProducer(bootstrap_servers=bs, transactional_id=unique("kptx"))
    try:
        p.init_transactions()
        p.begin_transaction()
        for i in range(10):
            p.send(topic, b"k%d" % i, partition=i % 2)
        p.commit_transaction()
        p.begin_transaction()
        p.send(topic, b"no", partition=0)
        p.flush()
        p.abort_transaction()
        p.begin_transaction()
        p.send(topic, b"yes", partition=0)
        p.send(topic, b"yes", partition=1)
        p.commit_transaction()
    finally:
        p.close()
    expected = {(topic, 0): [b"k%d" % i for i in range(0, 10, 2)] + [b"yes"],
                (topic, 1): [b"k%d" % i for i in range(1, 10, 2)] + [b"yes"]}
    assert read_committed(bs, [(topic, 0), (topic, 1)]) == expected
    # kafka-python's own read_committed consumer reads the same.
    c = kafka.KafkaConsumer(bootstrap_servers=bs, isolation_level="read_committed",
                            auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        c.assign([kafka.TopicPartition(topic, 0), kafka.TopicPartition(topic, 1)])
        got: dict = {(topic, 0): [], (topic, 1): []}

        def step():
            for tp, recs in c.poll(timeout_ms=200).items():
                got[(tp.topic, tp.partition)].extend(r.value for r in recs)
            return all(v and v[-1] == b"yes" for v in got.values())

        wait_for(step, "kafka-python read_committed consumer")
        assert got == expected
    finally:
        c.close()


def test_aiokafka_transactional_producer_with_offsets(txn_server):
    aiokafka = pytest.importorskip("aiokafka")
    bs = txn_server.bootstrap
    topic = unique("aio")
    create_topic(bs, topic, 1)
    group = unique("aiog")

    async def run():
        p = aiokafka.AIOKafkaProducer(bootstrap_servers=bs, transactional_id=unique("aiotx"))
        await p.start()
        try:
            async with p.transaction():
                for i in range(5):
                    await p.send(topic, b"a%d" % i)
                await p.send_offsets_to_transaction({aiokafka.TopicPartition(topic, 0): 42}, group)
            await p.begin_transaction()
            await p.send(topic, b"aborted")
            await p.abort_transaction()
            async with p.transaction():
                await p.send(topic, b"last")
        finally:
            await p.stop()
        # aiokafka's own read_committed consumer.
        c = aiokafka.AIOKafkaConsumer(bootstrap_servers=bs, isolation_level="read_committed",
                                      auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        try:
            c.assign([aiokafka.TopicPartition(topic, 0)])
            seen: list = []
            while not seen or seen[-1] != b"last":
                for recs in (await c.getmany(timeout_ms=200)).values():
                    seen.extend(r.value for r in recs)
            return seen
        finally:
            await c.stop()

    expected = [b"a%d" % i for i in range(5)] + [b"last"]
    assert asyncio.run(asyncio.wait_for(run(), 60)) == expected
    assert read_committed(bs, [(topic, 0)])[(topic, 0)] == expected
    c = Consumer({"bootstrap.servers": bs, "group.id": group, **COMMON})
    assert c.committed([TopicPartition(topic, 0)], 10)[0].offset == 42
    c.close()


# ---------------------------------------------------------------------- crashes

def test_sigkill_between_add_partitions_and_end_txn(serve):
    """The server dies with a transaction open (partitions added, records written, no
    EndTxn): after the restart the coordinator aborts it at its timeout, whole, and the
    partitions' LSO moves on."""
    sp = serve(TXN_OVERRIDES)
    bs = sp.bootstrap
    topic = unique("crash1")
    create_topic(bs, topic, 2)
    open_transaction(bs, unique("c1tx"), [(topic, 0, b"open0"), (topic, 1, b"open1")],
                     **{"transaction.timeout.ms": 2000, "socket.timeout.ms": 2000})
    sp.kill()
    sp.start()
    tps = [(topic, 0), (topic, 1)]
    commit_sentinel(sp.bootstrap, tps, b"after-restart")
    got = lso_passes(sp.bootstrap, tps, b"after-restart")
    assert got == {(topic, 0): [b"after-restart"], (topic, 1): [b"after-restart"]}


@pytest.mark.parametrize("point", ["after-prepare", "mid-markers", "after-markers"])
def test_sigkill_while_ending_a_transaction(serve, monkeypatch, point):
    """The server kills itself after PrepareCommit is durable (no marker written), in the
    middle of the markers (the offsets partition's written, the data partitions' not), or
    after the markers (Complete not written): on restart it completes the commit, and
    every record of the transaction becomes visible, with its offsets."""
    monkeypatch.setenv("PYLOG_TEST_TXN_CRASH", point)
    sp = serve(TXN_OVERRIDES)
    monkeypatch.delenv("PYLOG_TEST_TXN_CRASH")
    bs = sp.bootstrap
    topic = unique("crash2")
    create_topic(bs, topic, 2)
    group = unique("crashg")
    p = txn_producer(bs, unique("c2tx"), **{"message.timeout.ms": 5000})
    p.init_transactions(10)
    consumer = Consumer({"bootstrap.servers": bs, "group.id": group, **COMMON})
    p.begin_transaction()
    p.produce(topic, b"r0", partition=0)
    p.produce(topic, b"r1", partition=1)
    p.send_offsets_to_transaction([TopicPartition(topic, 0, 1)], consumer.consumer_group_metadata(), 10)
    with pytest.raises(KafkaException):
        p.commit_transaction(1)            # the server dies while ending it
    wait_for(lambda: sp.proc is None or sp.proc.poll() is not None, "the server to die")
    sp.kill()
    sp.start()
    got = read_committed(sp.bootstrap, [(topic, 0), (topic, 1)])
    assert got == {(topic, 0): [b"r0"], (topic, 1): [b"r1"]}
    assert consumer.committed([TopicPartition(topic, 0)], 10)[0].offset == 1
    consumer.close()


# ---------------------------------------------------------------------- the CLI

def test_cli_transactions_list_and_describe(txn_server):
    import subprocess
    import sys

    bs = txn_server.bootstrap
    topic = unique("cli")
    create_topic(bs, topic, 2)
    tid = unique("clitx")
    p = open_transaction(bs, tid, [(topic, 1, b"x")])

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "pylog.cli", "transactions", *args, "--bootstrap-server", bs],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return [line.split("\t") for line in out.stdout.splitlines()]

    rows = cli("list", "--state", "Ongoing")
    assert rows[0] == ["TransactionalId", "ProducerId", "TransactionState"]
    assert [tid, "Ongoing"] in [[r[0], r[2]] for r in rows[1:]]
    header, row = cli("describe", "--transactional-id", tid)
    described = dict(zip(header, row))
    assert (described["TransactionState"], described["TopicPartitions"]) == ("Ongoing", f"{topic}-1")
    assert described["TransactionTimeoutMs"] == "60000"
    p.commit_transaction(10)
    header, row = cli("describe", "--transactional-id", tid)
    assert dict(zip(header, row))["TransactionState"] == "CompleteCommit"
    bad = subprocess.run([sys.executable, "-m", "pylog.cli", "transactions", "describe", "--transactional-id",
                          "nobody", "--bootstrap-server", bs], capture_output=True, text=True, timeout=60)
    assert (bad.returncode, bad.stderr) == (1, "pylog: describe transaction nobody: TRANSACTIONAL_ID_NOT_FOUND\n")
