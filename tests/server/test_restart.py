"""A server restart in the middle of a stream: stop ``pylog serve`` cleanly while an
idempotent producer and a consumer group are running, start it again on the same data
directory and port; topics, committed offsets and producer state survive, the consumer
resumes where it committed, and nothing is lost or written twice."""

from __future__ import annotations

import threading

import pytest

from server.util import drain, unique, wait_for

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

COMMON = {"socket.timeout.ms": 10000, "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 300,
          "topic.metadata.refresh.interval.ms": 1000}


def test_restart_mid_stream_keeps_topics_offsets_and_producer_state(serve):
    server = serve()
    bootstrap = server.bootstrap
    topic = unique("restart")
    group = unique("restart-g")
    a = AdminClient({"bootstrap.servers": bootstrap, **COMMON})
    a.create_topics([NewTopic(topic, 3, 1, config={"retention.ms": "86400000"})])[topic].result(10)
    del a

    delivered: list[tuple[int, int, bytes]] = []
    errors: list = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset(), msg.value()))

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, "message.timeout.ms": 60000, **COMMON})
    consumed: list[bytes] = []
    stop = threading.Event()
    consumer_errors: list = []
    lock = threading.Lock()

    def consume() -> None:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                      "enable.auto.commit": False, "session.timeout.ms": 6000,
                      "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 100, **COMMON})
        c.subscribe([topic])
        try:
            while not stop.is_set():
                msg = c.poll(0.1)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() not in (KafkaError._PARTITION_EOF, KafkaError._TRANSPORT,
                                                  KafkaError._ALL_BROKERS_DOWN):
                        consumer_errors.append(msg.error())
                    continue
                with lock:
                    consumed.append(msg.value())
                try:
                    c.commit(message=msg, asynchronous=False)
                except ck.KafkaException:
                    pass  # commits while the server is down fail; the next one covers it
        finally:
            c.close()

    t = threading.Thread(target=consume)
    t.start()
    try:
        for i in range(300):
            producer.produce(topic, key=str(i).encode(), value=f"before-{i}".encode(), on_delivery=on_delivery)
        assert producer.flush(30) == 0
        wait_for(lambda: len(consumed) >= 300, "the first 300 records consumed")

        # Restart while both clients are connected; produce during the outage.
        server.restart()
        for i in range(300):
            producer.produce(topic, key=str(i).encode(), value=f"after-{i}".encode(), on_delivery=on_delivery)
            producer.poll(0)
        assert producer.flush(60) == 0
        wait_for(lambda: len(set(consumed)) >= 600, "all 600 records consumed after the restart", timeout=60)
    finally:
        stop.set()
        t.join(30)
    assert errors == []
    assert consumer_errors == []
    expected = {f"before-{i}".encode() for i in range(300)} | {f"after-{i}".encode() for i in range(300)}
    assert set(consumed) == expected
    # The consumer resumed from its commits: each record at most twice (the one in flight
    # when the server went away), not the whole topic again.
    assert len(consumed) - len(expected) <= 3

    # Producer state survived: every delivered record is in the log exactly once, at the
    # offset it was acknowledged with, offsets dense in every partition.
    assert len(delivered) == 600
    check = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("check"),
                      "auto.offset.reset": "earliest", "enable.auto.commit": False, **COMMON})
    check.assign([TopicPartition(topic, p, 0) for p in range(3)])
    log = drain(check, 600)
    committed = check.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    check.close()
    assert sorted((m.partition(), m.offset(), m.value()) for m in log) == sorted(delivered)

    # The group's commits are at the end of every partition.
    c2 = Consumer({"bootstrap.servers": bootstrap, "group.id": group, **COMMON})
    committed = c2.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    ends = {p: c2.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(3)}
    c2.close()
    assert {tp.partition: tp.offset for tp in committed} == ends

    text = server.log_text()
    assert "broker closed cleanly" in text
    assert text.count("listening on") == 2


def test_topic_configs_and_groups_survive_restart(serve):
    from tests.wire import WireClient

    server = serve()
    topic = unique("persist")
    with WireClient(server.bootstrap) as c:
        c.create_topic(topic, 4, configs={"cleanup.policy": "compact", "retention.ms": "1000000"})
        c.commit("persist-group", {(topic, 2): 17})
    server.restart()
    with WireClient(server.bootstrap) as c:
        assert sorted(c.partitions(topic)) == [0, 1, 2, 3]
        configs = {e.name: e.value for e in c.describe_configs(2, topic)}
        assert configs["cleanup.policy"] == "compact" and configs["retention.ms"] == "1000000"
        assert c.committed("persist-group", {topic: [2]}) == {(topic, 2): 17}
