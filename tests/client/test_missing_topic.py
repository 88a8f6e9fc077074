"""A missing topic on a cluster that creates topics on first use, through ``pylog.open``
and ``pylog.connect`` alike (#12 audit, finding 4): a consumer naming it is told it does
not exist and creates nothing (over the network, assign() and partitions_for_topic() used
to send Metadata with allow_auto_topic_creation and create it); a producer's first send
creates it, as Kafka's producer does."""

from __future__ import annotations

import pytest

import pylog
from pylog.errors import UnknownTopicOrPartitionError


@pytest.fixture(params=["embedded", "remote"])
def auto_creating_client(request, tmp_path, monkeypatch):
    if request.param == "embedded":
        c = pylog.open(tmp_path / "data", auto_create_topics_enable=True)
        yield c
        c.close()
        return
    from pylog.server.config import ServerConfig
    from pylog.server.server import EVENT_LOOP_ENV, ServerThread

    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    cfg = ServerConfig.from_kafka({"log.dirs": str(tmp_path / "serve"), "listeners": "PLAINTEXT://127.0.0.1:0",
                                   "auto.create.topics.enable": "true", "offsets.topic.num.partitions": "1"})
    server = ServerThread(cfg).start()
    try:
        with pylog.connect(server.bootstrap, client_id="test") as c:
            yield c
    finally:
        server.stop()


def test_a_consumer_never_creates_a_topic_a_producer_does(auto_creating_client):
    c = auto_creating_client
    consumer = c.consumer(group_id=None, auto_offset_reset="earliest")
    with pytest.raises(UnknownTopicOrPartitionError, match="nope"):
        consumer.assign([("nope", 0)])
    with pytest.raises(UnknownTopicOrPartitionError, match="nope"):
        consumer.partitions_for_topic("nope")
    assert consumer.assignment() == set()
    assert not c.has_topic("nope")
    p = c.producer()
    assert p.send("nope", b"first").result(timeout=30).offset == 0
    p.close()
    assert c.has_topic("nope")
    consumer.assign([("nope", 0)])
    assert consumer.position(("nope", 0)) == 0
    consumer.close()


def test_a_first_send_waits_for_a_topic_another_client_is_creating(client):
    """Kafka's producer waits up to max.block.ms for a topic missing from the metadata (it
    may have just been created through another broker); the remote producer does too.
    The embedded broker's answer is final: a missing topic raises at once there."""
    import threading

    p = client.producer(max_block_ms=30_000)
    from pylog.client.kafka.transport import KafkaTransport

    if not isinstance(client._transport, KafkaTransport):
        with pytest.raises(UnknownTopicOrPartitionError):
            p.send("later", b"x")
        p.close()
        return
    creator = threading.Timer(0.3, client.create_topic, ("later", 1))
    creator.start()
    try:
        assert p.send("later", b"x").result(timeout=30).offset == 0
    finally:
        creator.join()
    p.close()


def test_a_first_send_to_a_topic_that_never_appears_raises_after_max_block_ms(client):
    p = client.producer(max_block_ms=300)
    with pytest.raises(UnknownTopicOrPartitionError, match="never"):
        p.send("never", b"x")
    assert p.buffered_bytes == 0
    p.close()
    assert not client.has_topic("never")
