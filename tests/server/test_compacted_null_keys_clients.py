"""Real clients producing keyless records to a compacted topic of ``pylog serve``: the
delivery fails with INVALID_RECORD (87), as against Kafka, and nothing of the rejected
batch is in the log; keyed records go through."""

from __future__ import annotations

import warnings

import pytest

from tests.wire import WireClient
from server.util import unique

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition  # noqa: E402

COMMON = {"socket.timeout.ms": 10000, "topic.metadata.refresh.interval.ms": 2000,
          "reconnect.backoff.max.ms": 500}


def compacted_topic(bootstrap, prefix):
    name = unique(prefix)
    with WireClient(bootstrap) as c:
        c.create_topic(name, 1, configs={"cleanup.policy": "compact"})
    return name


def high_watermark(bootstrap, topic):
    with WireClient(bootstrap) as c:
        return c.list_offset(topic, 0, -1)[0]


def read_all(bootstrap, topic, count):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"), "enable.auto.commit": False,
                  **COMMON})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        while len(got) < count:
            msgs = c.consume(count - len(got), timeout=10)
            assert msgs, f"got only {len(got)} of {count} records"
            for msg in msgs:
                assert msg.error() is None, msg.error()
                got.append((msg.offset(), msg.key(), msg.value()))
        return got
    finally:
        c.close()


@pytest.mark.parametrize("idempotent", [False, True])
def test_confluent_delivery_of_a_keyless_record_fails_with_invalid_record(module_server, idempotent):
    bootstrap = module_server.bootstrap
    topic = compacted_topic(bootstrap, "nk-ck")
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": idempotent, "acks": "all",
                  "linger.ms": 50, "compression.type": "gzip", "retries": 0 if not idempotent else 5,
                  **COMMON})
    reports = []
    p.produce(topic, key=b"a", value=b"keyed, maybe in the keyless record's batch",
              on_delivery=lambda err, msg: reports.append((err, msg.key())))
    p.produce(topic, value=b"no key", on_delivery=lambda err, msg: reports.append((err, msg.key())))
    assert p.flush(30) == 0
    by_key = dict((k, err) for err, k in reports)
    err = by_key[None]
    assert err is not None and err.code() == KafkaError.INVALID_RECORD, err
    delivered = [k for e, k in reports if e is None]
    assert all(e.code() == KafkaError.INVALID_RECORD for e, _ in reports if e is not None)
    # Nothing of a rejected batch reached the log: it holds exactly what was acknowledged.
    assert high_watermark(bootstrap, topic) == len(delivered)
    # The producer goes on: a keyed record is delivered and is next in the log.
    reports.clear()
    p.produce(topic, key=b"b", value=b"after", on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    assert p.flush(30) == 0
    assert reports[0][0] is None and reports[0][1] == len(delivered)
    assert [(k, v) for _o, k, v in read_all(bootstrap, topic, len(delivered) + 1)][-1] == (b"b", b"after")


def test_kafka_python_send_of_a_keyless_record_raises_invalid_record(module_server):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka import KafkaProducer
        from kafka.errors import InvalidRecordError

    bootstrap = module_server.bootstrap
    topic = compacted_topic(bootstrap, "nk-kp")
    p = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10000, retries=0)
    try:
        with pytest.raises(InvalidRecordError):
            p.send(topic, value=b"no key").get(timeout=30)
        assert high_watermark(bootstrap, topic) == 0
        assert p.send(topic, key=b"k", value=b"v").get(timeout=30).offset == 0
    finally:
        p.close()
    assert high_watermark(bootstrap, topic) == 1


@pytest.mark.parametrize("version", [7, 8, 9])
def test_produce_answers_record_errors_on_the_wire(module_server, version):
    from pylog.protocol import messages as m
    from pylog.protocol.codec import decode_response
    from pylog.records import RecordBatchBuilder
    from tests.server.test_versions import raw_roundtrip

    topic = compacted_topic(module_server.bootstrap, "nk-wire")
    b = RecordBatchBuilder()
    for k in (b"a", None, b"c", None):
        b.append(None, k, b"v")
    T = m.ProduceRequest
    body = T(acks=-1, timeout_ms=5000, topic_data=[T.TopicProduceData(name=topic, partition_data=[
        T.PartitionProduceData(index=0, records=bytes(b.build()))])])
    frame = raw_roundtrip((module_server.host, module_server.port), 0, version, body)
    p = decode_response(0, version, frame)[1].responses[0].partition_responses[0]
    assert p.error_code == 87 and p.base_offset == -1
    if version >= 8:
        assert [e.batch_index for e in p.record_errors] == [1, 3]
        assert all("without a key" in e.batch_index_error_message for e in p.record_errors)
        assert "2 record(s)" in p.error_message
    assert high_watermark(module_server.bootstrap, topic) == 0
