"""The group coordinator of a 3-broker cluster lives on the leader of its group's
``__consumer_offsets`` partition, a replicated cluster topic (pylog.cluster.coordinators).

A consumer group (pylog's remote client, and librdkafka) consumes and commits; the
coordinator's broker is SIGKILLed; ZooKeeper expires its session, the controller elects
another ISR member leader of the offsets partition, which loads the group from its
replica of the log; FindCoordinator names it; the same consumer goes on and commits
there, and a new member of the group starts exactly where the last commit left off: every
record is read once by the group, none twice, none lost.
"""

from __future__ import annotations

import signal
import time

import pytest

from cluster.test_cluster_replication import admin, create_topic, wait_metadata
from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC, partition_for_group
from pylog.cluster.local import LocalCluster
from server.util import wait_for

confluent_kafka = pytest.importorskip("confluent_kafka")

SESSION_TIMEOUT_MS = 6000
OFFSETS_PARTITIONS = 3
RECORDS = 200


@pytest.fixture
def cluster(tmp_path, zk_connect):
    c = LocalCluster(tmp_path, 3, zookeeper=zk_connect, overrides=[
        f"zookeeper.session.timeout.ms={SESSION_TIMEOUT_MS}", "replica.lag.time.max.ms=3000",
        "default.replication.factor=3", f"offsets.topic.num.partitions={OFFSETS_PARTITIONS}",
        "group.initial.rebalance.delay.ms=0"])
    with c:
        a = admin(c.bootstrap)
        wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 3, "3 registered brokers in the metadata")
        create_topic(c.bootstrap, "t", partitions=2, rf=3)
        wait_metadata(c.bootstrap, "t", lambda md, t: all(len(p.isrs) == 3 for p in t.partitions.values()),
                      "a full ISR")
        p = confluent_kafka.Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 5,
                                      "enable.idempotence": True})
        for i in range(RECORDS):
            p.produce("t", b"%d" % i, partition=i % 2)
        assert p.flush(60) == 0
        yield c


def coordinator_of(bootstrap: str, group: str) -> int:
    """The coordinator FindCoordinator names (librdkafka's admin asks it)."""
    a = admin(bootstrap)
    return a.describe_consumer_groups([group])[group].result(30).coordinator.id


def offsets_leader(bootstrap: str, group: str) -> int:
    md = admin(bootstrap).list_topics(CONSUMER_OFFSETS_TOPIC, timeout=5)
    t = md.topics[CONSUMER_OFFSETS_TOPIC]
    return t.partitions[partition_for_group(group, len(t.partitions))].leader


def kill_coordinator(c: LocalCluster, group: str) -> int:
    """SIGKILL the group's coordinator; return (its id) once FindCoordinator names the
    new leader of the group's offsets partition."""
    old = coordinator_of(c.bootstrap, group)
    assert old == offsets_leader(c.bootstrap, group)
    c.stop_broker(old, signal.SIGKILL)
    wait_metadata(c.bootstrap, CONSUMER_OFFSETS_TOPIC,
                  lambda md, t: t.partitions[partition_for_group(group, len(t.partitions))].leader not in (old, -1),
                  "a new leader of the group's offsets partition")
    new = coordinator_of(c.bootstrap, group)
    assert new not in (old, -1) and new == offsets_leader(c.bootstrap, group)
    return old


def test_offsets_topic_is_a_replicated_cluster_topic(cluster):
    """The first FindCoordinator creates __consumer_offsets through the controller, with
    replication factor 3, and names the leader of the group's partition."""
    deadline = time.monotonic() + 30
    while True:
        try:
            coordinator = coordinator_of(cluster.bootstrap, "probe")
            break
        except confluent_kafka.KafkaException:
            assert time.monotonic() < deadline, "no coordinator in time"
    md, t = wait_metadata(cluster.bootstrap, CONSUMER_OFFSETS_TOPIC,
                          lambda md, t: all(len(p.isrs) == 3 for p in t.partitions.values()), "a full ISR")
    assert len(t.partitions) == OFFSETS_PARTITIONS
    assert all(sorted(p.replicas) == [1, 2, 3] for p in t.partitions.values())
    assert coordinator == offsets_leader(cluster.bootstrap, "probe")


def _values(records) -> list[bytes]:
    return [r.value for r in records]


def test_pylog_consumer_group_survives_a_coordinator_kill(cluster):
    import pylog
    c = cluster
    group = "g-pylog"
    client = pylog.connect(c.bootstrap)
    try:
        first = client.consumer("t", group_id=group, auto_offset_reset="earliest", enable_auto_commit=False)
        seen: list[bytes] = []
        wait_for(lambda: seen.extend(_values(first.poll(timeout_ms=200, max_records=30))) or len(seen) >= 60,
                 "60 records", timeout=60)
        first.commit()
        kill_coordinator(c, group)
        # The same member goes on: its next records, and a commit on the new coordinator.
        before = len(seen)
        wait_for(lambda: seen.extend(_values(first.poll(timeout_ms=200, max_records=20))) or
                 len(seen) >= before + 40, "40 more records", timeout=60)
        first.commit()
        first.close(autocommit=False)
        second = client.consumer("t", group_id=group, auto_offset_reset="earliest", enable_auto_commit=False)
        rest: list[bytes] = []
        wait_for(lambda: rest.extend(_values(second.poll(timeout_ms=200))) or len(seen) + len(rest) >= RECORDS,
                 "the rest of the records", timeout=60)
        second.close(autocommit=False)
    finally:
        client.close()
    got = seen + rest
    assert len(got) == len(set(got)) == RECORDS, (len(got), len(set(got)))


def test_librdkafka_group_survives_a_coordinator_kill(cluster):
    c = cluster
    group = "g-rdkafka"

    def consumer():
        k = confluent_kafka.Consumer({"bootstrap.servers": c.bootstrap, "group.id": group,
                                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                      "session.timeout.ms": 30000})
        k.subscribe(["t"])
        return k

    def take(k, count: int, into: list) -> None:
        want = len(into) + count
        deadline = time.monotonic() + 60
        while len(into) < want:
            assert time.monotonic() < deadline, f"only {len(into)} of {want} records"
            msg = k.poll(0.2)
            if msg is not None and msg.error() is None:
                into.append(msg.value())

    def commit(k) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                k.commit(asynchronous=False)
                return
            except confluent_kafka.KafkaException as exc:
                # librdkafka hands a commit that met the coordinator's move back to the app.
                assert exc.args[0].retriable() and time.monotonic() < deadline, exc

    first = consumer()
    seen: list[bytes] = []
    take(first, 60, seen)
    commit(first)
    kill_coordinator(c, group)
    take(first, 40, seen)
    commit(first)
    first.close()
    second = consumer()
    rest: list[bytes] = []
    take(second, RECORDS - len(seen), rest)
    assert second.poll(1.0) is None
    second.close()
    got = seen + rest
    assert len(got) == len(set(got)) == RECORDS
