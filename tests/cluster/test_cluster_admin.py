"""Topic administration over the wire on three real brokers (ZooKeeper mode, as Kafka's
ZkAdminManager does it): DeleteTopics and CreatePartitions to any broker go through
ZooKeeper and the controller, so every broker's metadata and every replica's data
directory follow; ElectLeaders (KIP-460) is answered by the controller.  The clients
are confluent-kafka's AdminClient and ``pylog topics``.  One cluster for the module
(automatic preferred election off, so only the requests here move leaders); the
automatic preferred election has its own two-broker cluster."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cluster.util import killed_at_exit
from pylog.cluster.local import LocalCluster
from server.util import wait_for

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import ElectionType, KafkaError, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic  # noqa: E402

_chroots = itertools.count()
BROKERS = (1, 2, 3)


def _chroot(zookeeper_server) -> str:
    return f"{zookeeper_server.hosts}/pylog-admin-{os.getpid()}-{next(_chroots)}"


@pytest.fixture(scope="module")
def cluster(zookeeper_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("admin-cluster")
    with killed_at_exit(LocalCluster(base, 3, zookeeper=_chroot(zookeeper_server), overrides=[
            "zookeeper.session.timeout.ms=6000", "auto.leader.rebalance.enable=false"])) as c:
        a = AdminClient({"bootstrap.servers": c.bootstrap})
        wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 3, "3 registered brokers in the metadata")
        yield c


def broker_metadata(c: LocalCluster, topic: str) -> dict[int, Any]:
    """broker id -> that broker's own Metadata answer for ``topic`` (asked of each broker)."""
    from pylog.client.kafka.network import NetworkClient
    from pylog.protocol import messages as m
    from pylog.protocol.apis import ApiKey
    out = {}
    with NetworkClient(c.bootstrap, client_id="admin-test") as client:
        client.refresh_metadata(None, timeout_ms=10_000).result(10)
        for b in BROKERS:
            resp = client.send(b, ApiKey.METADATA, m.MetadataRequest(
                topics=[m.MetadataRequest.MetadataRequestTopic(name=topic)], allow_auto_topic_creation=False)
            ).result(10)
            out[b] = resp.topics[0]
    return out


def wire(c: LocalCluster, api_key: int, body: Any) -> Any:
    """One request to any broker, its decoded answer."""
    from pylog.client.kafka.network import NetworkClient
    with NetworkClient(c.bootstrap, client_id="admin-test") as client:
        return client.send_to_any(api_key, body).result(30)


def partitions_everywhere(c: LocalCluster, topic: str) -> dict[int, dict[int, tuple[int, list[int]]]]:
    """broker id -> partition -> (leader, replicas), as each broker's metadata has them."""
    return {b: {p.partition_index: (p.leader_id, list(p.replica_nodes)) for p in t.partitions}
            for b, t in broker_metadata(c, topic).items()}


def everywhere(c: LocalCluster, topic: str, pred, what: str) -> dict[int, dict[int, tuple[int, list[int]]]]:
    """Wait until every broker's metadata of ``topic`` satisfies ``pred(partitions)``
    (the controller's UpdateMetadata reaches the brokers one after another; the broker
    that answered the request had it first); returns what they show."""
    return wait_for(lambda: (lambda seen: seen if all(pred(ps) for ps in seen.values()) else None)(
        partitions_everywhere(c, topic)), what)


def replica_dirs(c: LocalCluster, topic: str) -> dict[int, list[str]]:
    """broker id -> the partition directories of ``topic`` in its data directory."""
    return {b: sorted(p.name for p in Path(c.base_dir, f"broker-{b}").glob(f"{topic}-*") if p.is_dir())
            for b in BROKERS}


def create(a: AdminClient, topic: str, partitions: int = 1, rf: int = 3,
           assignment: list[list[int]] | None = None) -> None:
    new = NewTopic(topic, num_partitions=len(assignment), replica_assignment=assignment) if assignment \
        else NewTopic(topic, partitions, rf)
    a.create_topics([new], operation_timeout=30)[topic].result(30)


def part0(a: AdminClient, topic: str) -> Any:
    """Partition 0 of ``topic`` as the broker librdkafka asks sees it, or None while that
    broker does not know it yet: CreateTopics answers once the broker that handled it
    has the new leaders (as Kafka's does), and the others learn them a moment later."""
    t = a.list_topics(topic, timeout=5).topics.get(topic)
    return None if t is None or t.error is not None else t.partitions.get(0)


def error_of(future) -> KafkaError:
    with pytest.raises(confluent_kafka.KafkaException) as got:
        future.result(30)
    return got.value.args[0]


def cli(c: LocalCluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pylog.cli", *args, "--bootstrap-server", c.bootstrap],
                          capture_output=True, text=True, timeout=60)


def test_delete_topics_removes_the_topic_from_every_broker(cluster):
    c = cluster
    a = AdminClient({"bootstrap.servers": c.bootstrap})
    create(a, "d", partitions=2)
    p = confluent_kafka.Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    for i in range(20):
        p.produce("d", b"%d" % i, partition=i % 2)
    assert p.flush(30) == 0
    wait_for(lambda: all(dirs == ["d-0", "d-1"] for dirs in replica_dirs(c, "d").values()),
             "every broker to hold both replicas of d")

    a.delete_topics(["d"], operation_timeout=30)["d"].result(30)
    # Answered once the topic is gone: from every broker's metadata and every data dir.
    wait_for(lambda: all(t.error_code == 3 and not t.partitions for t in broker_metadata(c, "d").values()),
             "d gone from every broker's metadata")
    wait_for(lambda: replica_dirs(c, "d") == {b: [] for b in BROKERS}, "every replica of d deleted")
    assert "d" not in a.list_topics(timeout=10).topics

    # The controller removes the topic's znode after its replicas: until then a delete is
    # accepted again (as Kafka's is); then the topic is unknown.
    def unknown() -> bool:
        try:
            a.delete_topics(["d"], operation_timeout=30)["d"].result(30)
        except confluent_kafka.KafkaException as exc:
            assert exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, exc
            return True
        return False
    wait_for(unknown, "a delete of the deleted topic answered UNKNOWN_TOPIC_OR_PARTITION")

    # timeout_ms 0 (for CreateTopics too): no waiting, REQUEST_TIMED_OUT on the wire (Kafka's
    # answer; librdkafka takes it as success for operation_timeout 0), done all the same.
    from pylog.protocol import messages as m
    from pylog.protocol.apis import ApiKey
    CT: Any = m.CreateTopicsRequest
    created = wire(c, ApiKey.CREATE_TOPICS, CT(topics=[CT.CreatableTopic(
        name="d0", num_partitions=1, replication_factor=3, assignments=[], configs=[])], timeout_ms=0))
    assert [(t.name, t.error_code) for t in created.topics] == [("d0", 7)]
    wait_for(lambda: all(t.error_code == 0 and t.partitions for t in broker_metadata(c, "d0").values()),
             "d0 on every broker")
    deleted = wire(c, ApiKey.DELETE_TOPICS, m.DeleteTopicsRequest(topic_names=["d0"], timeout_ms=0))
    assert [(t.name, t.error_code) for t in deleted.responses] == [("d0", 7)]
    wait_for(lambda: all(t.error_code == 3 for t in broker_metadata(c, "d0").values()),
             "d0 gone from every broker's metadata")

    # `pylog topics delete` takes the same path.
    create(a, "d2")
    done = cli(c, "topics", "delete", "d2")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: all(t.error_code == 3 for t in broker_metadata(c, "d2").values()),
             "d2 gone from every broker's metadata")
    wait_for(lambda: replica_dirs(c, "d2") == {b: [] for b in BROKERS}, "every replica of d2 deleted")


def test_create_partitions_grows_the_topic_on_every_broker(cluster):
    c = cluster
    a = AdminClient({"bootstrap.servers": c.bootstrap})
    create(a, "p", partitions=1, rf=2)

    a.create_partitions([NewPartitions("p", 3)], operation_timeout=30)["p"].result(30)
    seen = everywhere(c, "p", lambda parts: sorted(parts) == [0, 1, 2], "3 partitions of p on every broker")
    assert len({repr(parts) for parts in seen.values()}) == 1, "every broker agrees"
    parts = seen[1]
    assert all(len(replicas) == 2 and leader == replicas[0] for leader, replicas in parts.values()), parts
    # Every replica has its log (a broker's core holds the topic's other partitions too,
    # empty, so the check is that each replica's directory is there).
    expected = {b: {f"p-{i}" for i, (_, replicas) in parts.items() if b in replicas} for b in BROKERS}
    wait_for(lambda: all(expected[b] <= set(dirs) for b, dirs in replica_dirs(c, "p").items()),
             f"replica directories {expected}")

    # validate_only writes nothing.
    a.create_partitions([NewPartitions("p", 5)], validate_only=True, operation_timeout=30)["p"].result(30)
    assert all(sorted(parts) == [0, 1, 2] for parts in partitions_everywhere(c, "p").values())

    # An explicit assignment is taken as given.
    a.create_partitions([NewPartitions("p", 4, [[3, 1]])], operation_timeout=30)["p"].result(30)
    everywhere(c, "p", lambda parts: parts.get(3) == (3, [3, 1]), "p-3 on [3, 1] led by 3 on every broker")

    # Kafka's errors, per topic.
    got = a.create_partitions([NewPartitions("p", 2), NewPartitions("nope", 2)], operation_timeout=30)
    create(a, "p2", rf=2)
    assert error_of(got["p"]).code() == KafkaError.INVALID_PARTITIONS
    assert error_of(got["nope"]).code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    wrong = a.create_partitions([NewPartitions("p2", 3, [[1, 9], [2, 3]]), NewPartitions("p", 6, [[1, 2]])],
                                operation_timeout=30)
    assert error_of(wrong["p2"]).code() == KafkaError.INVALID_REPLICA_ASSIGNMENT
    assert error_of(wrong["p"]).code() == KafkaError.INVALID_REPLICA_ASSIGNMENT
    assert all(sorted(parts) == [0, 1, 2, 3] for parts in partitions_everywhere(c, "p").values())

    # timeout_ms 0: no waiting, REQUEST_TIMED_OUT (Kafka's answer), the partitions still come.
    from pylog.protocol import messages as m
    from pylog.protocol.apis import ApiKey
    CP: Any = m.CreatePartitionsRequest
    late = wire(c, ApiKey.CREATE_PARTITIONS, CP(topics=[CP.CreatePartitionsTopic(name="p", count=5, assignments=None)],
                                                timeout_ms=0, validate_only=False))
    assert [(t.name, t.error_code) for t in late.results] == [("p", 7)]
    everywhere(c, "p", lambda parts: sorted(parts) == list(range(5)), "5 partitions of p on every broker")

    # `pylog topics alter --partitions` takes the same path.
    done = cli(c, "topics", "alter", "p", "--partitions", "6")
    assert done.returncode == 0, done.stderr
    everywhere(c, "p", lambda parts: sorted(parts) == list(range(6)), "6 partitions of p on every broker")


def reorder_replicas(c: LocalCluster, a: AdminClient, topic: str, replicas: list[int]) -> None:
    """Make ``replicas`` partition 0's replica order (a reassignment to the same brokers,
    KIP-455), so its preferred replica changes but its leader does not."""
    from cluster.test_cluster_reassignment import send_to_controller
    from pylog.protocol import messages as m
    from pylog.protocol.apis import ApiKey
    A: Any = m.AlterPartitionReassignmentsRequest
    resp = send_to_controller(c.bootstrap, a.list_topics(timeout=5).controller_id,
                              ApiKey.ALTER_PARTITION_REASSIGNMENTS, A(topics=[A.ReassignableTopic(
                                  name=topic, partitions=[A.ReassignablePartition(partition_index=0,
                                                                                  replicas=replicas)])]))
    assert resp.error_code == 0 and resp.responses[0].partitions[0].error_code == 0
    wait_for(lambda: (p := part0(a, topic)) is not None and list(p.replicas) == replicas,
             f"{topic}-0's replicas to become {replicas}")


def test_elect_leaders_preferred_and_unclean(cluster):
    c = cluster
    a = AdminClient({"bootstrap.servers": c.bootstrap})
    create(a, "e", assignment=[[1, 2, 3]])
    wait_for(lambda: (p := part0(a, "e")) is not None and p.leader == 1, "e-0 led by broker 1")
    reorder_replicas(c, a, "e", [2, 1, 3])
    assert a.list_topics("e", timeout=5).topics["e"].partitions[0].leader == 1

    e0 = TopicPartition("e", 0)
    got = a.elect_leaders(ElectionType.PREFERRED, [e0]).result(30)
    assert got[e0] is None, got
    everywhere(c, "e", lambda parts: parts.get(0, (None,))[0] == 2, "e-0 led by broker 2 on every broker")

    again = a.elect_leaders(ElectionType.PREFERRED, [e0]).result(30)
    assert again[e0].code() == KafkaError.ELECTION_NOT_NEEDED
    unclean = a.elect_leaders(ElectionType.UNCLEAN, [e0]).result(30)
    assert unclean[e0].code() == KafkaError.ELECTION_NOT_NEEDED
    missing = TopicPartition("e", 7)
    assert a.elect_leaders(ElectionType.PREFERRED, [missing]).result(30)[missing].code() == \
        KafkaError.UNKNOWN_TOPIC_OR_PART
    # Null partitions: every partition, each already led by its preferred replica.
    everything = a.elect_leaders(ElectionType.PREFERRED, None).result(30)
    assert everything[e0].code() == KafkaError.ELECTION_NOT_NEEDED
    assert all(err is not None and err.code() == KafkaError.ELECTION_NOT_NEEDED for err in everything.values())

    # A broker that is not the controller answers NOT_CONTROLLER per partition, as Kafka's.
    from pylog.client.kafka.network import NetworkClient
    from pylog.protocol import messages as m
    from pylog.protocol.apis import ApiKey
    E: Any = m.ElectLeadersRequest
    other = next(b for b in BROKERS if b != a.list_topics(timeout=5).controller_id)
    with NetworkClient(c.bootstrap, client_id="admin-test") as client:
        client.refresh_metadata(None, timeout_ms=10_000).result(10)
        resp = client.send(other, ApiKey.ELECT_LEADERS, E(election_type=0, topic_partitions=[
            E.TopicPartitions(topic="e", partitions=[0])], timeout_ms=10_000)).result(10)
    assert resp.error_code == 0
    assert [(r.topic, [(p.partition_id, p.error_code) for p in r.partition_result])
            for r in resp.replica_election_results] == [("e", [(0, 41)])]


def test_create_topics_validate_only_checks_and_writes_nothing(cluster):
    a = AdminClient({"bootstrap.servers": cluster.bootstrap})
    create(a, "v-exists")
    got = a.create_topics([NewTopic("v-new", 2, 3), NewTopic("v-exists", 1, 1), NewTopic("v-rf", 1, 5)],
                          validate_only=True, operation_timeout=30)
    got["v-new"].result(30)
    assert error_of(got["v-exists"]).code() == KafkaError.TOPIC_ALREADY_EXISTS
    assert error_of(got["v-rf"]).code() == KafkaError.INVALID_REPLICATION_FACTOR
    assert all(t.error_code == 3 for t in broker_metadata(cluster, "v-new").values())


def test_automatic_preferred_election_with_a_short_interval(zookeeper_server, tmp_path):
    """(The same cluster has delete.topic.enable=false: DeleteTopics is refused.)"""
    overrides = ["zookeeper.session.timeout.ms=6000", "auto.leader.rebalance.enable=true",
                 "leader.imbalance.check.interval.seconds=1", "leader.imbalance.per.broker.percentage=0",
                 "delete.topic.enable=false"]
    with killed_at_exit(LocalCluster(tmp_path, 2, zookeeper=_chroot(zookeeper_server), overrides=overrides)) as c:
        a = AdminClient({"bootstrap.servers": c.bootstrap})
        wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 2, "2 registered brokers in the metadata")
        create(a, "auto", assignment=[[1, 2]])
        wait_for(lambda: (p := part0(a, "auto")) is not None and p.leader == 1,
                 "auto-0 led by broker 1")
        reorder_replicas(c, a, "auto", [2, 1])
        # No request: the controller's imbalance check makes the preferred replica lead.
        wait_for(lambda: (p := part0(a, "auto")) is not None and p.leader == 2,
                 "the automatic preferred election to make broker 2 lead auto-0")

        assert error_of(a.delete_topics(["auto"], operation_timeout=30)["auto"]).code() == \
            KafkaError.TOPIC_DELETION_DISABLED
        assert "auto" in a.list_topics(timeout=10).topics
        assert all((tmp_path / f"broker-{b}" / "auto-0").is_dir() for b in (1, 2))


def test_a_deletion_waits_for_a_stopped_replica_and_finishes_when_it_returns(cluster):
    """Kafka's ZooKeeper-mode deletion: the topic leaves the metadata when its deletion
    starts (the answer comes then), but a replica on a broker that is down cannot be
    deleted, so the topic stays marked in ZooKeeper (and cannot be created again) until
    that broker returns; then the controller deletes its replica and the topic.  (Last in
    the module: it stops and restarts broker 3.)"""
    from pylog.cluster.zookeeper import connect
    c = cluster
    a = AdminClient({"bootstrap.servers": c.bootstrap})
    create(a, "w", partitions=1, rf=3)
    wait_for(lambda: all("w-0" in dirs for dirs in replica_dirs(c, "w").values()), "w-0 on every broker")
    c.stop_broker(3)
    wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 2, "broker 3 gone from the metadata")

    a.delete_topics(["w"], operation_timeout=30)["w"].result(30)
    coordination = connect(c.zookeeper_connect)
    try:
        wait_for(lambda: replica_dirs(c, "w") == {1: [], 2: [], 3: ["w-0"]}, "w-0 deleted on brokers 1 and 2")
        assert coordination.get_topic_deletions() == ["w"]
        again = a.create_topics([NewTopic("w", 1, 2)], operation_timeout=30)["w"]
        assert error_of(again).code() == KafkaError.TOPIC_ALREADY_EXISTS

        c.start_broker(3)
        wait_for(lambda: replica_dirs(c, "w") == {b: [] for b in BROKERS}, "broker 3's replica of w deleted",
                 timeout=60)
        wait_for(lambda: coordination.get_topic_deletions() == [] and
                 coordination.get_topic_assignment("w") is None, "w gone from ZooKeeper")
    finally:
        coordination.close()
    wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 3, "broker 3 back in the metadata")
    assert all(t.error_code == 3 for t in broker_metadata(c, "w").values())


@pytest.mark.long
def test_an_unclean_election_on_request_brings_an_offline_partition_back(zookeeper_server, tmp_path):
    """ElectLeaders UNCLEAN over the wire: a partition whose only in-sync replica's broker
    died stays offline (unclean.leader.election.enable is false) until asked; then the
    live out-of-sync replica leads.  ``long``: a SIGKILL waits out a 6 s ZooKeeper session."""
    import signal
    with LocalCluster(tmp_path, 2, zookeeper=_chroot(zookeeper_server),
                      overrides=["zookeeper.session.timeout.ms=6000", "auto.leader.rebalance.enable=false"]) as c:
        a = AdminClient({"bootstrap.servers": c.bootstrap})
        wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 2, "2 registered brokers in the metadata")
        create(a, "u", assignment=[[1, 2]])
        wait_for(lambda: (p := part0(a, "u")) is not None and sorted(p.isrs) == [1, 2],
                 "u-0 in sync on both brokers")
        c.stop_broker(2)            # controlled shutdown: out of the ISR
        wait_for(lambda: (p := part0(a, "u")) is not None and list(p.isrs) == [1],
                 "u-0's ISR to shrink to [1]")
        c.stop_broker(1, signal.SIGKILL)
        c.start_broker(2)
        b = AdminClient({"bootstrap.servers": f"127.0.0.1:{c.ports[2]}"})
        def offline() -> bool:
            md = b.list_topics(timeout=5)
            t = md.topics.get("u")
            return list(md.brokers) == [2] and t is not None and 0 in t.partitions and t.partitions[0].leader == -1
        wait_for(offline, "u-0 offline once broker 1's session expired", timeout=60)
        u0 = TopicPartition("u", 0)
        assert b.elect_leaders(ElectionType.PREFERRED, [u0]).result(30)[u0].code() == \
            KafkaError.PREFERRED_LEADER_NOT_AVAILABLE
        assert b.elect_leaders(ElectionType.UNCLEAN, [u0]).result(30)[u0] is None
        part = b.list_topics("u", timeout=5).topics["u"].partitions[0]
        assert (part.leader, list(part.isrs)) == (2, [2])
