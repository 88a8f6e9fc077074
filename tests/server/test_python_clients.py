"""kafka-python and aiokafka against ``pylog serve``: producers, consumer groups, the
kafka-python admin client, aiokafka's ``getmany``."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.util import unique, wait_for

kafka = pytest.importorskip("kafka")
aiokafka = pytest.importorskip("aiokafka")


def kp_consume(consumer, count, timeout=30.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            got.extend(records)
    return got


# ---------------------------------------------------------------------------------------
# kafka-python
# ---------------------------------------------------------------------------------------


def test_kafka_python_admin_producer_and_group(module_server):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic

    bootstrap = module_server.bootstrap
    topic = unique("kp")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        admin.create_topics([NewTopic(topic, 3, 1, topic_configs={"retention.ms": "7200000"})])
        assert topic in admin.list_topics()
        described = admin.describe_topics([topic])
        assert described[0]["error_code"] == 0 and len(described[0]["partitions"]) == 3
        admin.create_partitions({topic: NewPartitions(4)})
        wait_for(lambda: len(admin.describe_topics([topic])[0]["partitions"]) == 4, "4 partitions")
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        assert configs["topic"][topic]["retention.ms"]["value"] == "7200000"
        assert configs["topic"][topic]["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"

        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type="gzip",
                                 linger_ms=2, request_timeout_ms=10000)
        futures = [producer.send(topic, key=str(i % 5).encode(), value=f"kp-{i}".encode(),
                                 headers=[("n", str(i).encode())]) for i in range(200)]
        producer.flush(20)
        metas = [f.get(timeout=10) for f in futures]
        producer.close()
        assert {m.partition for m in metas} <= set(range(4))

        group = unique("kp-group")
        consumers = [KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id=f"kp-{i}",
                                   auto_offset_reset="earliest", enable_auto_commit=False,
                                   session_timeout_ms=6000, heartbeat_interval_ms=500,
                                   request_timeout_ms=15000, fetch_max_wait_ms=100) for i in range(2)]
        try:
            # Load the topic's metadata before subscribing.  kafka-python 3.0.12 otherwise
            # joins before it knows the partitions, assigns nothing, and rejoins at once; a
            # member doing that while another joins sometimes stops sending anything
            # (client side: the server answered every request, see the DEBUG request log).
            for c in consumers:
                assert topic in c.topics()
                c.subscribe([topic])
            got = []
            deadline = time.monotonic() + 60

            def balanced():
                owners = [c.assignment() for c in consumers]
                return all(owners) and not (owners[0] & owners[1]) and \
                    len(owners[0] | owners[1]) == 4

            # Poll both members until every record arrived and the group settled on an
            # assignment giving each member partitions.
            while (len({r.value for r in got}) < 200 or not balanced()) and time.monotonic() < deadline:
                for c in consumers:
                    for records in c.poll(timeout_ms=100).values():
                        got.extend(records)
            assert {r.value for r in got} == {f"kp-{i}".encode() for i in range(200)}
            assert all(dict(r.headers)["n"] == r.value.split(b"-")[1] for r in got)
            assert balanced()
            for c in consumers:
                c.commit()
        finally:
            for c in consumers:
                c.close()
        listed = admin.list_groups()
        assert group in {g["group_id"] if isinstance(g, dict) else g[0] for g in listed}, listed
        offsets = admin.list_group_offsets(group)[group]
        assert sum(o["offset"] if isinstance(o, dict) else o.offset for o in offsets.values()) == 200, offsets
        admin.delete_topics([topic])
        wait_for(lambda: topic not in admin.list_topics(), "topic deleted")
    finally:
        admin.close()


def test_kafka_python_seek_and_offsets_for_times(module_server):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    bootstrap = module_server.bootstrap
    topic = unique("kp-seek")
    producer = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    base = 1_600_000_000_000
    for i in range(30):
        producer.send(topic, value=f"s{i}".encode(), partition=0, timestamp_ms=base + i)
    producer.flush(20)
    producer.close()
    c = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=15000, fetch_max_wait_ms=100)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    found = c.offsets_for_times({tp: base + 10})
    assert found[tp].offset == 10
    assert c.beginning_offsets([tp])[tp] == 0 and c.end_offsets([tp])[tp] == 30
    c.seek(tp, 25)
    got = kp_consume(c, 5)
    c.close()
    assert [r.value for r in got] == [f"s{i}".encode() for i in range(25, 30)]


# ---------------------------------------------------------------------------------------
# aiokafka
# ---------------------------------------------------------------------------------------


def test_aiokafka_producer_group_and_getmany(module_server):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    bootstrap = module_server.bootstrap
    topic = unique("aio")
    group = unique("aio-group")

    async def main():
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 4, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                    compression_type="lz4", linger_ms=2, request_timeout_ms=10000)
        await producer.start()
        try:
            sends = [await producer.send(topic, key=str(i).encode(), value=f"aio-{i}".encode())
                     for i in range(300)]
            metas = await asyncio.gather(*sends)
        finally:
            await producer.stop()
        assert len({(m.partition, m.offset) for m in metas}) == 300

        consumers = [AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                      auto_offset_reset="earliest", enable_auto_commit=False,
                                      session_timeout_ms=6000, heartbeat_interval_ms=500,
                                      fetch_max_wait_ms=100, request_timeout_ms=15000)
                     for _ in range(2)]
        for c in consumers:
            await c.start()
        got = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while len({r.value for r in got}) < 300 and loop.time() < deadline:
                for c in consumers:
                    batches = await c.getmany(timeout_ms=100, max_records=50)
                    for records in batches.values():
                        assert len(records) <= 50
                        got.extend(records)
            for c in consumers:
                if c.assignment():
                    await c.commit()
            assignments = [c.assignment() for c in consumers]
        finally:
            for c in consumers:
                await c.stop()
        assert {r.value for r in got} == {f"aio-{i}".encode() for i in range(300)}
        assert all(assignments) and not (assignments[0] & assignments[1])

        # A new member of the group starts where the group committed: nothing left.
        late = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                auto_offset_reset="earliest", session_timeout_ms=6000,
                                heartbeat_interval_ms=500, fetch_max_wait_ms=100,
                                request_timeout_ms=15000)
        await late.start()
        try:
            wait_deadline = loop.time() + 30
            while not late.assignment() and loop.time() < wait_deadline:
                await late.getmany(timeout_ms=100)
            positions = {tp.partition: await late.position(tp) for tp in late.assignment()}
        finally:
            await late.stop()
        by_partition: dict[int, int] = {}
        for m in metas:
            by_partition[m.partition] = by_partition.get(m.partition, 0) + 1
        assert positions == {p: by_partition.get(p, 0) for p in range(4)}

    asyncio.run(main())
