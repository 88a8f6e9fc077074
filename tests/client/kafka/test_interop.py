"""Interop of ``pylog.connect`` with the other Kafka clients, through one ``pylog serve``.

- pylog's producer (``send``, keyed and keyless, headers, every codec, idempotent by
  default; and the columnar ``send_batch``) writes; confluent-kafka's ``Consumer``,
  kafka-python's ``KafkaConsumer`` and aiokafka's ``AIOKafkaConsumer`` read every record
  back with the partition, offset, key, value, headers and timestamp the producer
  reported.
- pylog's partitioner puts a key where librdkafka's ``murmur2_random`` (Java's default
  partitioner for keyed records) puts it.
- confluent-kafka, kafka-python and aiokafka producers (every codec each supports) write;
  pylog's consumer reads every record back as their delivery reports say.

The consumer has no batch or column view of fetched records yet (``poll`` returns
:class:`ConsumerRecord` objects), so there is no zero-copy read to test here.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

import pylog
from tests.server.util import unique

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")
aiokafka = pytest.importorskip("aiokafka")

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
PARTITIONS = 4
BASE_TS = 1_700_000_000_000


def _value(i: int) -> bytes | None:
    if i % 17 == 5:
        return None                      # a tombstone
    if i % 17 == 6:
        return b""
    if i % 29 == 3:
        return bytes(range(256)) * 20    # 5 KiB: a segment of its own in the produce frame
    return f"value-{i}-".encode() * (1 + i % 7)


def _headers(i: int) -> list[tuple[str, bytes | None]]:
    if i % 3 == 0:
        return []
    if i % 3 == 1:
        return [("n", str(i).encode())]
    return [("n", str(i).encode()), ("empty", b""), ("null", None), ("n", b"dup")]


# ---------------------------------------------------------------------------------------
# what was written: (topic, partition, offset) -> (key, value, headers, timestamp)
# ---------------------------------------------------------------------------------------

Expected = dict[tuple[str, int, int], tuple[bytes | None, bytes | None, tuple, int]]


@pytest.fixture(scope="module")
def pylog_written(kafka_server):
    """Records written by pylog's producer: a topic per codec through ``send`` (keyed
    records, then keyless ones), and a topic through ``send_batch``."""
    expected: Expected = {}
    topics = {}
    with pylog.connect(kafka_server.bootstrap, client_id="interop-writer") as client:
        for codec in CODECS:
            topic = unique(f"from-pylog-{codec}")
            topics[codec] = topic
            client.create_topic(topic, PARTITIONS)
            producer = client.producer(compression_type=codec, linger_ms=20)
            assert producer.enable_idempotence
            sent = []
            for i in range(120):
                key = None if i >= 80 else f"key-{i % 23}".encode()
                ts = BASE_TS + i * 1000
                fut = producer.send(topic, _value(i), key=key, headers=_headers(i), timestamp_ms=ts)
                sent.append((fut, key, _value(i), tuple(_headers(i)), ts))
            producer.flush(30)
            for fut, key, value, headers, ts in sent:
                md = fut.get(10)
                assert md.timestamp == ts
                expected[(topic, md.partition, md.offset)] = (key, value, headers, ts)
            producer.close()
            _check_on_disk(kafka_server.data_dir, topic, codec, idempotent=True)

        topic = unique("from-pylog-send-batch")
        topics["send_batch"] = topic
        client.create_topic(topic, PARTITIONS)
        producer = client.producer(compression_type="lz4")
        keys = np.array([f"bk-{i % 31:04d}".encode() for i in range(3000)], dtype="S7")
        values = np.frombuffer(np.arange(3000 * 25, dtype=np.uint32).tobytes(), dtype=np.uint8).reshape(3000, 100)
        keyed = producer.send_batch(topic, values, keys=keys, timestamp_ms=BASE_TS + 1)
        keyless = producer.send_batch(topic, [f"v{i}".encode() for i in range(500)], timestamp_ms=BASE_TS + 2)
        producer.flush(30)
        for fut, ks, vs, ts in ((keyed, keys, values, BASE_TS + 1), (keyless, None, None, BASE_TS + 2)):
            offsets = fut.result(10)
            for i, (p, off) in enumerate(zip(fut.partitions.tolist(), offsets.tolist())):
                key = None if ks is None else bytes(ks[i])
                value = bytes(vs[i]) if vs is not None else f"v{i}".encode()
                expected[(topic, p, off)] = (key, value, (), ts)
        producer.close()
        _check_on_disk(kafka_server.data_dir, topic, "lz4", idempotent=True)
    return topics, expected


_CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def _batches_on_disk(data_dir: str, topic: str) -> list[tuple[int, int]]:
    """(codec id, producer id) of every batch in the topic's segment files, read with
    the v2 header layout (this is the check that the codec and idempotence were used)."""
    import glob
    import struct

    out = []
    for path in glob.glob(f"{data_dir}/{topic}-*/*.log"):
        with open(path, "rb") as f:
            while len(header := f.read(61)) == 61:
                (length,) = struct.unpack_from(">i", header, 8)
                if length < 49:
                    break   # the zero-filled tail of a preallocated segment
                (attributes,) = struct.unpack_from(">h", header, 21)
                (producer_id,) = struct.unpack_from(">q", header, 43)
                out.append((attributes & 7, producer_id))
                f.seek(12 + length - 61, 1)
    return out


def _check_on_disk(data_dir: str, topic: str, codec: str, idempotent: bool) -> None:
    batches = _batches_on_disk(data_dir, topic)
    assert batches, f"no batch of {topic} on disk"
    assert {c for c, _ in batches} == {_CODEC_IDS[codec]}, f"{topic}: codecs {batches}"
    if idempotent:
        assert all(pid >= 0 for _, pid in batches), f"{topic}: a batch without a producer id"


def _check(got: Expected, expected: Expected, who: str) -> None:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not missing, f"{who} did not read {len(missing)} records, e.g. {missing[:5]}"
    assert not extra, f"{who} read records nobody wrote: {extra[:5]}"
    for where, want in expected.items():
        assert got[where] == want, f"{who} at {where}: read {got[where]!r}, written {want!r}"


def _wanted_offsets(expected: Expected) -> dict[tuple[str, int], int]:
    """Per partition, the offset after the last record written."""
    ends: dict[tuple[str, int], int] = {}
    for topic, p, off in expected:
        ends[(topic, p)] = max(ends.get((topic, p), 0), off + 1)
    return ends


def _complete(got: Expected, ends: dict[tuple[str, int], int]) -> bool:
    have: dict[tuple[str, int], int] = {}
    for topic, p, off in got:
        have[(topic, p)] = max(have.get((topic, p), 0), off + 1)
    return all(have.get(tp, 0) >= end for tp, end in ends.items())


# ---------------------------------------------------------------------------------------
# pylog producer -> other consumers
# ---------------------------------------------------------------------------------------


def test_confluent_consumer_reads_pylog_records(kafka_server, pylog_written):
    from confluent_kafka import Consumer, TopicPartition

    topics, expected = pylog_written
    ends = _wanted_offsets(expected)
    c = Consumer({"bootstrap.servers": kafka_server.bootstrap, "group.id": unique("ck"),
                  "enable.auto.commit": False, "enable.partition.eof": False, "check.crcs": True})
    try:
        c.assign([TopicPartition(t, p, 0) for t in topics.values() for p in range(PARTITIONS)])
        got: Expected = {}
        deadline = time.monotonic() + 30
        while not _complete(got, ends):
            assert time.monotonic() < deadline, f"confluent-kafka read {len(got)} of {len(expected)} records"
            for m in c.consume(num_messages=1000, timeout=0.2):
                assert m.error() is None, m.error()
                ts_type, ts = m.timestamp()
                assert ts_type == confluent_kafka.TIMESTAMP_CREATE_TIME
                got[(m.topic(), m.partition(), m.offset())] = (m.key(), m.value(), tuple(m.headers() or ()), ts)
    finally:
        c.close()
    _check(got, expected, "confluent-kafka")


def test_kafka_python_consumer_reads_pylog_records(kafka_server, pylog_written):
    from kafka import KafkaConsumer, TopicPartition

    topics, expected = pylog_written
    ends = _wanted_offsets(expected)
    c = KafkaConsumer(bootstrap_servers=kafka_server.bootstrap, enable_auto_commit=False,
                      request_timeout_ms=15000, fetch_max_wait_ms=100, check_crcs=True)
    try:
        tps = [TopicPartition(t, p) for t in topics.values() for p in range(PARTITIONS)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        got: Expected = {}
        deadline = time.monotonic() + 30
        while not _complete(got, ends):
            assert time.monotonic() < deadline, f"kafka-python read {len(got)} of {len(expected)} records"
            for records in c.poll(timeout_ms=200, max_records=2000).values():
                for r in records:
                    assert r.timestamp_type == 0
                    got[(r.topic, r.partition, r.offset)] = (r.key, r.value, tuple(r.headers), r.timestamp)
    finally:
        c.close()
    _check(got, expected, "kafka-python")


def test_aiokafka_consumer_reads_pylog_records(kafka_server, pylog_written):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topics, expected = pylog_written
    ends = _wanted_offsets(expected)

    async def read() -> Expected:
        c = AIOKafkaConsumer(bootstrap_servers=kafka_server.bootstrap, enable_auto_commit=False,
                             request_timeout_ms=15000, fetch_max_wait_ms=100, check_crcs=True)
        await c.start()
        try:
            tps = [TopicPartition(t, p) for t in topics.values() for p in range(PARTITIONS)]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            got: Expected = {}
            deadline = time.monotonic() + 30
            while not _complete(got, ends):
                assert time.monotonic() < deadline, f"aiokafka read {len(got)} of {len(expected)} records"
                for records in (await c.getmany(timeout_ms=200, max_records=2000)).values():
                    for r in records:
                        assert r.timestamp_type == 0
                        got[(r.topic, r.partition, r.offset)] = (r.key, r.value, tuple(r.headers), r.timestamp)
            return got
        finally:
            await c.stop()

    _check(asyncio.run(read()), expected, "aiokafka")


@pytest.mark.parametrize("partitions", [1, 4, 7, 64])
def test_keyed_partition_matches_librdkafka_murmur2(kafka_server, partitions):
    """pylog's default partitioner (``send`` and ``send_batch``) places each key where
    librdkafka's ``murmur2_random`` (Java's default for keyed records) places it."""
    from confluent_kafka import Producer

    topic = unique(f"murmur-{partitions}")
    keys = [f"key-{i}".encode() for i in range(200)] + [b"", b"\x00", bytes(range(256)), "ключ".encode()]
    with pylog.connect(kafka_server.bootstrap) as client:
        client.create_topic(topic, partitions)
        producer = client.producer()
        futs = [producer.send(topic, b"v", key=k) for k in keys]
        batch = producer.send_batch(topic, [b"v"] * len(keys), keys=keys)
        producer.flush(30)
        ours = [f.get(10).partition for f in futs]
        batch.result(10)
        assert batch.partitions.tolist() == ours
        producer.close()

    theirs: list[int | None] = [None] * len(keys)

    def report(i: int):
        def cb(err, msg):
            assert err is None, err
            theirs[i] = msg.partition()
        return cb

    p = Producer({"bootstrap.servers": kafka_server.bootstrap, "partitioner": "murmur2_random",
                  "linger.ms": 5})
    for i, k in enumerate(keys):
        p.produce(topic, b"v", key=k, on_delivery=report(i))
    assert p.flush(30) == 0
    assert theirs == ours


# ---------------------------------------------------------------------------------------
# other producers -> pylog consumer
# ---------------------------------------------------------------------------------------


def _pylog_read(bootstrap: str, expected: Expected) -> Expected:
    ends = _wanted_offsets(expected)
    got: Expected = {}
    with pylog.connect(bootstrap, client_id="interop-reader") as client:
        consumer = client.consumer(auto_offset_reset="earliest", fetch_max_wait_ms=100)
        consumer.assign(sorted(ends))
        deadline = time.monotonic() + 30
        while not _complete(got, ends):
            assert time.monotonic() < deadline, f"pylog read {len(got)} of {len(expected)} records"
            for r in consumer.poll(timeout_ms=200, max_records=2000):
                assert r.timestamp_type == 0
                got[(r.topic, r.partition, r.offset)] = (r.key, r.value, tuple(r.headers), r.timestamp)
        consumer.close()
    return got


def _peer_records(n: int, null_headers: bool = True):
    """(key, value, headers, timestamp) of the records a peer producer sends (a record
    without a value has a key: kafka-python and aiokafka refuse neither)."""
    for i in range(n):
        value = _value(i)
        key = None if i % 4 == 3 and value is not None else f"pk-{i % 11}".encode()
        headers = [(k, v) for k, v in _headers(i) if null_headers or v is not None]
        yield key, value, headers, BASE_TS + 7 * i


def _create(bootstrap: str, topics: list[str]) -> None:
    with pylog.connect(bootstrap) as client:
        for t in topics:
            client.create_topic(t, PARTITIONS)


@pytest.mark.parametrize("codec", CODECS)
def test_pylog_reads_confluent_producer(kafka_server, codec):
    from confluent_kafka import Producer

    topic = unique(f"from-ck-{codec}")
    _create(kafka_server.bootstrap, [topic])
    expected: Expected = {}

    def report(key, value, headers, ts):
        def cb(err, msg):
            assert err is None, err
            expected[(topic, msg.partition(), msg.offset())] = (key, value, tuple(headers), ts)
        return cb

    p = Producer({"bootstrap.servers": kafka_server.bootstrap, "compression.type": codec,
                  "enable.idempotence": True, "linger.ms": 10})
    for key, value, headers, ts in _peer_records(150):
        p.produce(topic, value, key=key, headers=headers or None, timestamp=ts,
                  on_delivery=report(key, value, headers, ts))
    assert p.flush(30) == 0
    assert len(expected) == 150
    _check_on_disk(kafka_server.data_dir, topic, codec, idempotent=True)
    _check(_pylog_read(kafka_server.bootstrap, expected), expected, f"pylog (confluent-kafka {codec})")


def test_pylog_reads_kafka_python_producer(kafka_server):
    from kafka import KafkaProducer

    expected: Expected = {}
    topics = {codec: unique(f"from-kp-{codec}") for codec in CODECS}
    _create(kafka_server.bootstrap, list(topics.values()))
    for codec, topic in topics.items():
        p = KafkaProducer(bootstrap_servers=kafka_server.bootstrap, linger_ms=10, request_timeout_ms=15000,
                          compression_type=None if codec == "none" else codec)
        sent = [(p.send(topic, value=value, key=key, headers=headers, timestamp_ms=ts), key, value, headers, ts)
                for key, value, headers, ts in _peer_records(100, null_headers=False)]
        p.flush(30)
        for fut, key, value, headers, ts in sent:
            md = fut.get(10)
            expected[(topic, md.partition, md.offset)] = (key, value, tuple(headers), ts)
        p.close()
        _check_on_disk(kafka_server.data_dir, topic, codec, idempotent=False)
    _check(_pylog_read(kafka_server.bootstrap, expected), expected, "pylog (kafka-python)")


def test_pylog_reads_aiokafka_producer(kafka_server):
    from aiokafka import AIOKafkaProducer

    expected: Expected = {}
    topics = {codec: unique(f"from-aio-{codec}") for codec in CODECS}
    _create(kafka_server.bootstrap, list(topics.values()))

    async def write() -> None:
        for codec, topic in topics.items():
            p = AIOKafkaProducer(bootstrap_servers=kafka_server.bootstrap, linger_ms=10,
                                 compression_type=None if codec == "none" else codec,
                                 enable_idempotence=True)
            await p.start()
            try:
                sent = [(await p.send(topic, value=value, key=key, headers=headers, timestamp_ms=ts),
                         key, value, headers, ts)
                        for key, value, headers, ts in _peer_records(100)]
                for fut, key, value, headers, ts in sent:
                    md = await fut
                    expected[(topic, md.partition, md.offset)] = (key, value, tuple(headers), ts)
            finally:
                await p.stop()

    asyncio.run(write())
    for codec, topic in topics.items():
        _check_on_disk(kafka_server.data_dir, topic, codec, idempotent=True)
    _check(_pylog_read(kafka_server.bootstrap, expected), expected, "pylog (aiokafka)")
