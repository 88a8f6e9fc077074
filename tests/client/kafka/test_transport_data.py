"""KafkaTransport's data paths against a real ``pylog serve`` (in-process, a free port):
one Produce request per leader, topics that appear later, acks 0/1/all, a consumer's long
poll ended by new data and by ``Consumer.wakeup()``."""

from __future__ import annotations

import threading

import pytest

import pylog
from pylog import TopicPartition
from pylog.client.kafka.cluster import extra_connection_id
from pylog.errors import UnknownTopicOrPartitionError
from pylog.protocol.apis import ApiKey
from pylog.records import RecordBatchBuilder
from tests.client.helpers import records_of
from tests.server.util import unique, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from pylog.server.config import ServerConfig
    from pylog.server.server import ServerThread

    cfg = ServerConfig.from_kafka({"log.dirs": str(tmp_path_factory.mktemp("serve")),
                                   "listeners": "PLAINTEXT://127.0.0.1:0",
                                   "auto.create.topics.enable": "false"})
    st = ServerThread(cfg).start()
    yield st
    st.stop()


@pytest.fixture
def client(server):
    c = pylog.connect(server.bootstrap, client_id="transport-test")
    yield c
    c.close()


def batch(*values: bytes) -> bytes:
    b = RecordBatchBuilder()
    for v in values:
        b.append(None, None, v)
    return b.build()


def test_several_partitions_of_one_leader_go_in_one_produce_request(client):
    topic = unique("one-req")
    client.create_topic(topic, 4)
    tr = client.transport
    before = tr.requests_sent.get(ApiKey.PRODUCE, 0)
    results = tr.produce([(topic, p, [batch(b"a%d" % p, b"b%d" % p)]) for p in range(4)], acks=-1)
    assert tr.requests_sent[ApiKey.PRODUCE] - before == 1
    assert [[(r.error_code, r.base_offset) for r in rs] for rs in results] == [[(0, 0)]] * 4
    # Two batches per partition: a Kafka broker takes one batch per partition per
    # request, so they go in two requests (pipelined), and map back in order.
    before = tr.requests_sent[ApiKey.PRODUCE]
    results = tr.produce([(topic, p, [batch(b"c"), batch(b"d", b"e")]) for p in range(4)], acks=-1)
    assert tr.requests_sent[ApiKey.PRODUCE] - before == 2
    assert [[(r.error_code, r.base_offset) for r in rs] for rs in results] == [[(0, 2), (0, 3)]] * 4
    got = records_of(client, topic)
    assert [r.value for r in got[3]] == [b"a3", b"b3", b"c", b"d", b"e"]


def test_a_topic_that_appears_later_is_unknown_then_written(server, client):
    topic = unique("later")
    tr = client.transport
    res = tr.produce([(topic, 0, [batch(b"x")])], acks=-1)[0][0]
    assert res.error_code == UnknownTopicOrPartitionError.error_code and res.error.retriable
    with pytest.raises(UnknownTopicOrPartitionError):
        tr.topic_metadata(topic)
    # Created by another client: this one's metadata does not know it yet.
    with pylog.connect(server.bootstrap) as other:
        other.create_topic(topic, 2)
    res = tr.produce([(topic, 1, [batch(b"x")])], acks=-1)[0][0]
    assert (res.error_code, res.base_offset) == (0, 0)
    assert tr.topic_metadata(topic)[0] == 2


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_producer_acks(client, acks):
    topic = unique("acks")
    client.create_topic(topic, 3)
    p = client.producer(acks=acks, linger_ms=2, batch_size=512)
    handles = [p.send(topic, b"%04d" % i, key=b"k%d" % (i % 7)) for i in range(300)]
    p.flush()
    offsets = [h.result(timeout=30).offset for h in handles]
    if acks == 0:
        assert set(offsets) == {-1}
    else:
        by_part: dict[int, list[int]] = {}
        for h in handles:
            md = h.result()
            by_part.setdefault(md.partition, []).append(md.offset)
        assert all(v == list(range(len(v))) for v in by_part.values())
    got = records_of(client, topic)
    assert sorted(r.value for rs in got.values() for r in rs) == [b"%04d" % i for i in range(300)]
    p.close()


def _long_poll_in_flight(tr) -> bool:
    conns = [tr.net.connection(extra_connection_id(0, slot)) for slot in range(1, tr._slot_count + 1)]
    return any(c is not None and c.in_flight_count for c in conns)


def test_a_waiting_poll_is_answered_when_data_arrives(client):
    topic = unique("wake-data")
    client.create_topic(topic, 1)
    c = client.consumer(auto_offset_reset="earliest")
    c.assign([TopicPartition(topic, 0)])
    assert c.poll(timeout_ms=0) == []
    got: list = []
    t = threading.Thread(target=lambda: got.extend(c.poll(timeout_ms=60_000)))
    t.start()
    wait_for(lambda: _long_poll_in_flight(client.transport), "the consumer's long poll")
    p = client.producer(linger_ms=0)
    p.send(topic, b"new").result(timeout=30)
    t.join(60)
    assert not t.is_alive()
    assert [r.value for r in got] == [b"new"]
    p.close()
    c.close()


def test_consumer_wakeup_ends_a_waiting_poll(client):
    topic = unique("wakeup")
    client.create_topic(topic, 2)
    c = client.consumer(auto_offset_reset="earliest")
    c.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    out: list = []
    t = threading.Thread(target=lambda: out.append(c.poll(timeout_ms=120_000)))
    t.start()
    wait_for(lambda: _long_poll_in_flight(client.transport), "the consumer's long poll")
    c.wakeup()
    t.join(60)
    assert not t.is_alive() and out == [[]]
    # The consumer goes on normally afterwards.
    p = client.producer(linger_ms=0)
    p.send(topic, b"after", partition=1).result(timeout=30)
    assert [r.value for r in c.poll(timeout_ms=30_000)] == [b"after"]
    p.close()
    c.close()


def test_connect_refuses_unknown_settings():
    from pylog.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError, match="linger_ms"):
        pylog.connect("127.0.0.1:9", linger_ms=5)
    with pytest.raises(InvalidConfigError):
        pylog.connect("127.0.0.1:99999")
