"""Three ``pylog serve --zookeeper`` brokers as subprocesses on a real ZooKeeper: a topic
with replication factor 3 is placed and led, its metadata shows replicas and ISR, an
idempotent librdkafka producer with acks=all is answered once the ISR has the records,
and every acknowledged record is read back exactly once after the leader is SIGKILLed or
SIGTERMed; min.insync.replicas=2 refuses acks=all with two brokers down."""

from __future__ import annotations

import signal

import pytest

from cluster.util import killed_at_exit
from pylog.cluster.local import LocalCluster
from server.util import wait_for

confluent_kafka = pytest.importorskip("confluent_kafka")

#: What a SIGKILLed broker costs: ZooKeeper expires its session (then the controller
#: elects new leaders), and a broker restarted before that cannot register again.
SESSION_TIMEOUT_MS = 3000


@pytest.fixture
def brokers(tmp_path, zk_connect):
    """Three brokers as subprocesses (pylog.cluster.local, as ``pylog cluster up``) on the
    test's ZooKeeper chroot, once all three are in the cluster's metadata."""
    cluster = LocalCluster(tmp_path, 3, zookeeper=zk_connect, overrides=[
        f"zookeeper.session.timeout.ms={SESSION_TIMEOUT_MS}", "replica.lag.time.max.ms=3000",
        "default.replication.factor=3"])
    with killed_at_exit(cluster):
        a = admin(cluster.bootstrap)
        wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 3, "3 registered brokers in the metadata")
        yield cluster


def admin(bootstrap: str):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": bootstrap})


def wait_metadata(bootstrap: str, topic: str, pred, what: str, timeout: float = 40.0):
    import time
    deadline = time.monotonic() + timeout
    a = admin(bootstrap)
    last = None
    while time.monotonic() < deadline:
        md = a.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        if t is not None and t.error is None and t.partitions:
            last = t
            if pred(md, t):
                return md, t
        # Metadata is polled: a broker learns the state from the controller asynchronously.
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last {last}")


def create_topic(bootstrap: str, name: str, partitions: int = 1, rf: int = 3, **config: str) -> None:
    from confluent_kafka.admin import NewTopic
    a = admin(bootstrap)
    fut = a.create_topics([NewTopic(name, partitions, rf, config=config)], operation_timeout=30)[name]
    fut.result(60)


def produce(bootstrap: str, topic: str, values: list[bytes]) -> tuple[list, list]:
    acked, failed = [], []

    def cb(err, msg):
        (failed if err is not None else acked).append((msg.value(), err))

    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 5, "message.timeout.ms": 60000})
    for v in values:
        p.produce(topic, v, partition=0, on_delivery=cb)
        p.poll(0)
    p.flush(90)
    return acked, failed


def acks_all_error(bootstrap: str, topic: str):
    """The error code of one acks=all produce to partition 0, sent once (None: acknowledged)."""
    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": 5000,
                                  "retries": 0})
    errors = []
    p.produce(topic, b"x", partition=0, on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    assert len(errors) == 1
    return None if errors[0] is None else errors[0].code()


def read_all(bootstrap: str, topic: str, count: int) -> list[bytes]:
    from confluent_kafka import TopicPartition
    c = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False,
                                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    import time
    deadline = time.monotonic() + 60
    while len(out) < count and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and msg.error() is None:
            out.append(msg.value())
    c.close()
    return out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_replicated_topic_survives_a_leader_kill(brokers, sig):
    """SIGKILL: ZooKeeper expires the leader's session and the controller elects from the
    ISR; SIGTERM: a controlled shutdown moves leadership before the broker exits."""
    b = brokers
    create_topic(b.bootstrap, "rep", rf=3)
    md, t = wait_metadata(b.bootstrap, "rep", lambda md, t: len(t.partitions[0].isrs) == 3 and len(md.brokers) == 3,
                          "3 brokers and a full ISR")
    p0 = t.partitions[0]
    assert sorted(p0.replicas) == [1, 2, 3] and p0.leader in (1, 2, 3)
    first = [f"a{i}".encode() for i in range(200)]
    acked, failed = produce(b.bootstrap, "rep", first)
    assert not failed and len(acked) == 200
    leader = p0.leader
    b.stop_broker(leader, sig)
    if sig == signal.SIGTERM:
        # A broker that stops writes its replicas' high watermarks (all 200 were committed).
        from pylog.storage.checkpoint import CheckpointFile
        hws = CheckpointFile(str(b.base_dir / f"broker-{leader}" / "replication-offset-checkpoint")).read()
        assert hws[("rep", 0)] == 200
    wait_metadata(b.bootstrap, "rep", lambda md, t: t.partitions[0].leader not in (leader, -1),
                  "a new leader from the ISR")
    second = [f"b{i}".encode() for i in range(200)]
    acked2, failed2 = produce(b.bootstrap, "rep", second)
    assert not failed2 and len(acked2) == 200, (failed2[:3], len(acked2))
    got = read_all(b.bootstrap, "rep", 400)
    assert sorted(got) == sorted(first + second)
    assert len(set(got)) == len(got)


def test_min_insync_replicas_refuses_when_two_brokers_are_down(brokers):
    b = brokers
    create_topic(b.bootstrap, "mir", rf=3, **{"min.insync.replicas": "2"})
    _, t = wait_metadata(b.bootstrap, "mir", lambda md, t: len(t.partitions[0].isrs) == 3, "a full ISR")
    others = [i for i in (1, 2, 3) if i != t.partitions[0].leader]
    for i in others:
        b.stop_broker(i, signal.SIGKILL)
    wait_metadata(b.bootstrap, "mir", lambda md, t: len(t.partitions[0].isrs) == 1, "an ISR of the leader alone")
    assert acks_all_error(b.bootstrap, "mir") == confluent_kafka.KafkaError.NOT_ENOUGH_REPLICAS
    # They come back, catch up, and the leader's AlterPartition grows the ISR again.
    for i in others:
        b.start_broker(i)
    wait_metadata(b.bootstrap, "mir", lambda md, t: len(t.partitions[0].isrs) == 3, "the ISR to grow back")
    acked, failed = produce(b.bootstrap, "mir", [b"y"])
    assert acked and not failed


@pytest.mark.long
def test_topic_configs_altered_on_any_broker_reach_every_broker(brokers, zk_connect):
    """IncrementalAlterConfigs of a topic (and of a broker's replication throttle rate,
    as kafka-reassign-partitions --throttle sets it) is written to ZooKeeper, and every
    broker takes the topic's configs, as Kafka's config handlers do: here
    min.insync.replicas=3, which the leader then enforces."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
    from pylog.cluster.zookeeper import connect
    b = brokers
    create_topic(b.bootstrap, "cfg", rf=3)
    _, t = wait_metadata(b.bootstrap, "cfg", lambda md, t: len(t.partitions[0].isrs) == 3, "a full ISR")
    a = admin(b.bootstrap)
    topic = ConfigResource(ConfigResource.Type.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("min.insync.replicas", "3", incremental_operation=AlterConfigOpType.SET)])
    rate = ConfigResource(ConfigResource.Type.BROKER, "1", incremental_configs=[
        ConfigEntry("leader.replication.throttled.rate", "1000000", incremental_operation=AlterConfigOpType.SET)])
    for fut in a.incremental_alter_configs([topic, rate]).values():
        fut.result(30)
    coordination = connect(zk_connect)
    try:
        assert coordination.get_entity_config("topics", "cfg")["min.insync.replicas"] == "3"
        assert coordination.get_entity_config("brokers", 1) == {"leader.replication.throttled.rate": "1000000"}
    finally:
        coordination.close()

    # One request, two paths: a bad topic value is refused (ZooKeeper untouched), a
    # dynamic broker config goes to the broker's own store.
    bad = ConfigResource(ConfigResource.Type.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("min.insync.replicas", "many", incremental_operation=AlterConfigOpType.SET)])
    local = ConfigResource(ConfigResource.Type.BROKER, str(t.partitions[0].leader), incremental_configs=[
        ConfigEntry("log.retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)])
    futures = a.incremental_alter_configs([bad, local])
    with pytest.raises(confluent_kafka.KafkaException) as refused:
        futures[bad].result(30)
    assert refused.value.args[0].code() == confluent_kafka.KafkaError.INVALID_CONFIG
    futures[local].result(30)

    def described() -> bool:
        got = a.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "cfg")])
        (fut,) = got.values()
        return fut.result(10)["min.insync.replicas"].value == "3"
    wait_for(described, "min.insync.replicas=3 described")
    leader = t.partitions[0].leader
    b.stop_broker(next(i for i in (1, 2, 3) if i != leader), signal.SIGKILL)
    wait_metadata(b.bootstrap, "cfg", lambda md, t: len(t.partitions[0].isrs) == 2, "an ISR of two")
    assert acks_all_error(b.bootstrap, "cfg") == confluent_kafka.KafkaError.NOT_ENOUGH_REPLICAS
