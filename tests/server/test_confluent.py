"""librdkafka (confluent-kafka) against ``pylog serve``: idempotent producers with every
codec, consumer groups with members joining and leaving, manual commits,
offsets_for_times, and the AdminClient."""

from __future__ import annotations

import threading

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaError, Producer, TopicCollection, TopicPartition  # noqa: E402
from confluent_kafka.admin import (  # noqa: E402
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from server.util import drain, unique, wait_for  # noqa: E402

COMMON = {"socket.timeout.ms": 10000, "topic.metadata.refresh.interval.ms": 2000,
          "reconnect.backoff.max.ms": 500}


def consumer_config(bootstrap, group, **extra):
    cfg = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
           "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 100,
           "max.poll.interval.ms": 30000, **COMMON}
    cfg.update(extra)
    return cfg


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, **COMMON})


def create_topic(bootstrap, name, partitions=1, config=None):
    a = admin(bootstrap)   # kept alive until the result is in: destroying it cancels the call
    fs = a.create_topics([NewTopic(name, partitions, 1, config=config or {})])
    fs[name].result(10)


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_idempotent_producer_every_codec_keyed_and_keyless(module_server, codec):
    bootstrap = module_server.bootstrap
    topic = unique(f"codec-{codec}")
    create_topic(bootstrap, topic, 3)
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                  "compression.type": codec, "linger.ms": 2, "batch.num.messages": 50, **COMMON})
    errors = []
    reports = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            reports.append((msg.partition(), msg.offset(), msg.key(), msg.value()))

    sent = []
    for i in range(300):
        key = None if i % 2 else f"key-{i % 7}".encode()
        value = f"{codec}-value-{i}-".encode() * (1 + i % 5)
        p.produce(topic, key=key, value=value, on_delivery=on_delivery,
                  headers=[("h", str(i).encode())] if i % 3 == 0 else None)
        sent.append((key, value))
    assert p.flush(30) == 0
    assert errors == []
    assert len(reports) == 300
    # Offsets are dense per partition: the idempotent producer's batches all landed once.
    by_part: dict[int, list[int]] = {}
    for part, off, _k, _v in reports:
        by_part.setdefault(part, []).append(off)
    for offs in by_part.values():
        assert sorted(offs) == list(range(len(offs)))
    # Same key, same partition.
    key_parts: dict[bytes, set[int]] = {}
    for part, _o, k, _v in reports:
        if k is not None:
            key_parts.setdefault(k, set()).add(part)
    assert all(len(s) == 1 for s in key_parts.values())

    c = Consumer(consumer_config(bootstrap, unique("g"), **{"enable.auto.commit": False}))
    c.subscribe([topic])
    got = drain(c, 300)
    c.close()
    def order(kv):
        return (kv[0] or b"", kv[1])

    assert sorted(((m.key(), m.value()) for m in got), key=order) == sorted(sent, key=order)
    headers = [m.headers() for m in got if m.headers()]
    assert len(headers) == 100 and all(h[0][0] == "h" for h in headers)


def test_producer_survives_acks_1_and_acks_0(module_server):
    bootstrap = module_server.bootstrap
    topic = unique("acks")
    create_topic(bootstrap, topic, 1)
    for acks in ("1", "0"):
        p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 1, **COMMON})
        for i in range(100):
            p.produce(topic, value=f"{acks}-{i}".encode())
        assert p.flush(20) == 0
    c = Consumer(consumer_config(bootstrap, unique("g")))
    c.subscribe([topic])
    got = drain(c, 200)
    c.close()
    assert sorted(m.value() for m in got) == sorted(f"{a}-{i}".encode() for a in "10" for i in range(100))


@pytest.mark.parametrize("assignor", ["range", "cooperative-sticky"])
def test_consumer_group_of_three_with_join_and_leave_mid_stream(module_server, assignor):
    bootstrap = module_server.bootstrap
    topic = unique(f"grp-{assignor}")
    create_topic(bootstrap, topic, 6)
    group = unique("group")
    total = 600
    produced = [f"m-{i}".encode() for i in range(total)]
    seen: dict[str, list[bytes]] = {}
    assigned: dict[str, set[int]] = {}
    closed: set[str] = set()
    stop = threading.Event()
    lock = threading.Lock()
    errors: list = []

    def run_consumer(name: str, leave_when: threading.Event | None) -> None:
        def on_assign(_c, partitions):
            with lock:
                assigned.setdefault(name, set()).update(tp.partition for tp in partitions)

        def on_revoke(_c, partitions):
            with lock:
                assigned.setdefault(name, set()).difference_update(tp.partition for tp in partitions)

        c = Consumer(consumer_config(bootstrap, group, **{
            "partition.assignment.strategy": assignor, "enable.auto.commit": False,
            "client.id": name}))
        c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        try:
            while not stop.is_set() and not (leave_when is not None and leave_when.is_set()):
                msg = c.poll(0.1)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        errors.append(msg.error())
                    continue
                with lock:
                    seen.setdefault(name, []).append(msg.value())
                c.commit(message=msg, asynchronous=True)
        finally:
            c.close()
            with lock:
                closed.add(name)

    def consumed() -> set[bytes]:
        with lock:
            return {v for vs in seen.values() for v in vs}

    def produce(p, values):
        for i, value in values:
            p.produce(topic, key=str(i).encode(), value=value)
            p.poll(0)
        assert p.flush(20) == 0

    leave_b = threading.Event()
    threads = [threading.Thread(target=run_consumer, args=("a", None)),
               threading.Thread(target=run_consumer, args=("b", leave_b))]
    for t in threads:
        t.start()
    try:
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 1, **COMMON})
        third = total // 3
        produce(p, list(enumerate(produced))[:third])
        wait_for(lambda: assigned.get("a") and assigned.get("b"), "a and b assigned")
        # A third member joins mid-stream...
        c_thread = threading.Thread(target=run_consumer, args=("c", None))
        c_thread.start()
        threads.append(c_thread)
        wait_for(lambda: assigned.get("c"), "the joining member's assignment")
        produce(p, list(enumerate(produced))[third:2 * third])
        # ...and another leaves.
        leave_b.set()
        wait_for(lambda: "b" in closed, "b to leave")
        produce(p, list(enumerate(produced))[2 * third:])
        wait_for(lambda: len(consumed()) == total, f"all {total} records consumed", timeout=60)
        # After b left, a and c between them hold all six partitions.
        wait_for(lambda: assigned.get("a", set()) | assigned.get("c", set()) == set(range(6)),
                 "a and c to own every partition")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert consumed() == set(produced)
    assert "c" in seen and "a" in seen
    # The group's commits are in place: a new member resumes from them and, with what was
    # consumed before, nothing is missing.  (Async commits in flight when the members
    # left may have been refused by the rebalance their leaving started, so the resumed
    # range may repeat a few records: at-least-once, never a gap.)
    c = Consumer(consumer_config(bootstrap, group))
    committed = c.committed([TopicPartition(topic, p) for p in range(6)], timeout=10)
    assert all(tp.offset > 0 for tp in committed), committed
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(6)}
    backlog = sum(ends[tp.partition] - tp.offset for tp in committed)
    assert 0 <= backlog < total
    c.subscribe([topic])
    resumed = drain(c, backlog) if backlog else []
    c.close()
    assert {m.value() for m in resumed} <= set(produced)
    a = admin(bootstrap)
    groups = a.list_consumer_groups().result(10)
    assert group in {g.group_id for g in groups.valid}


def test_manual_commit_and_resume(module_server):
    bootstrap = module_server.bootstrap
    topic = unique("manual")
    create_topic(bootstrap, topic, 2)
    p = Producer({"bootstrap.servers": bootstrap, **COMMON})
    for i in range(100):
        p.produce(topic, key=str(i % 2).encode(), value=f"v{i}".encode())
    assert p.flush(10) == 0
    group = unique("g")
    c = Consumer(consumer_config(bootstrap, group, **{"enable.auto.commit": False}))
    c.subscribe([topic])
    first = drain(c, 40, exact=False)
    assert len(first) >= 40
    c.commit(asynchronous=False)
    positions = {tp.partition: tp.offset for tp in c.position(c.assignment())}
    c.close()
    c = Consumer(consumer_config(bootstrap, group, **{"enable.auto.commit": False}))
    committed = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
    assert {tp.partition: tp.offset for tp in committed} == positions
    c.subscribe([topic])
    rest = drain(c, 100 - len(first))
    c.close()
    assert sorted(m.value() for m in first + rest) == sorted(f"v{i}".encode() for i in range(100))


def test_offsets_for_times(module_server):
    bootstrap = module_server.bootstrap
    topic = unique("times")
    create_topic(bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, **COMMON})
    base = 1_700_000_000_000
    for i in range(50):
        p.produce(topic, value=f"t{i}".encode(), timestamp=base + i * 1000)
        p.flush(10)
    c = Consumer(consumer_config(bootstrap, unique("g")))
    found = c.offsets_for_times([TopicPartition(topic, 0, base + 20_500)], timeout=10)
    assert found[0].offset == 21
    found = c.offsets_for_times([TopicPartition(topic, 0, base + 10**9)], timeout=10)
    assert found[0].offset == -1
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert (low, high) == (0, 50)
    c.close()


def test_admin_client(module_server):
    bootstrap = module_server.bootstrap
    a = admin(bootstrap)
    topic = unique("admin")
    fs = a.create_topics([NewTopic(topic, 2, 1, config={"retention.ms": "3600000",
                                                         "cleanup.policy": "delete"})])
    fs[topic].result(10)
    # Creating it again fails with TOPIC_ALREADY_EXISTS.
    with pytest.raises(ck.KafkaException) as exc:
        a.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
    md = a.list_topics(timeout=10)
    assert len(md.topics[topic].partitions) == 2
    described = a.describe_topics(TopicCollection([topic]))[topic].result(10)
    assert described.name == topic and len(described.partitions) == 2
    assert described.partitions[0].leader.id == 0 and not described.is_internal
    cluster = a.describe_cluster().result(10)
    assert [n.id for n in cluster.nodes] == [0] and cluster.controller.id == 0 and cluster.cluster_id

    a.create_partitions([NewPartitions(topic, 5)])[topic].result(10)
    wait_for(lambda: len(a.list_topics(topic, timeout=10).topics[topic].partitions) == 5, "5 partitions")

    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = a.describe_configs([res])[res].result(10)
    assert configs["retention.ms"].value == "3600000"
    assert not configs["retention.ms"].is_default
    assert configs["segment.bytes"].is_default
    assert len(configs) >= 25          # every topic config, defaults included
    # Incremental alter: set one, delete another.
    inc = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", "2000000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    a.incremental_alter_configs([inc])[inc].result(10)
    configs = a.describe_configs([res])[res].result(10)
    assert configs["max.message.bytes"].value == "2000000"
    assert configs["retention.ms"].is_default
    # Non-incremental alter replaces the overrides.
    alt = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"retention.bytes": "1048576"})
    with pytest.warns(DeprecationWarning):
        fut = a.alter_configs([alt])[alt]
    fut.result(10)
    configs = a.describe_configs([res])[res].result(10)
    assert configs["retention.bytes"].value == "1048576"
    assert configs["max.message.bytes"].is_default
    broker = ConfigResource(ConfigResource.Type.BROKER, "0")
    bconf = a.describe_configs([broker])[broker].result(10)
    assert bconf["auto.create.topics.enable"].value == "true"

    # Delete records.
    p = Producer({"bootstrap.servers": bootstrap, **COMMON})
    for i in range(20):
        p.produce(topic, value=b"x", partition=0)
    assert p.flush(10) == 0
    deleted = a.delete_records([TopicPartition(topic, 0, 15)])
    for tp, f in deleted.items():
        assert f.result(10).low_watermark == 15
    c = Consumer(consumer_config(bootstrap, unique("g")))
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.close()
    assert (low, high) == (15, 20)

    # Groups: list and describe.
    group = unique("admin-group")
    c = Consumer(consumer_config(bootstrap, group))
    c.subscribe([topic])
    wait_for(lambda: c.poll(0.2) is not None or bool(c.assignment()), "assignment")
    desc = a.describe_consumer_groups([group])[group].result(10)
    assert desc.group_id == group
    assert len(desc.members) == 1
    assert {tp.partition for tp in desc.members[0].assignment.topic_partitions} == set(range(5))
    listed = a.list_consumer_groups().result(10)
    assert group in {g.group_id for g in listed.valid}
    c.close()

    # Delete the topic.
    a.delete_topics([topic])[topic].result(10)
    wait_for(lambda: topic not in a.list_topics(timeout=10).topics, "topic gone")
