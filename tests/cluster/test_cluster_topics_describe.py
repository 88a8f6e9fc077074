"""``pylog topics describe`` on a real 3-broker cluster with one broker stopped, as
Kafka's ``kafka-topics.sh --describe``: a partition with no leader shows ``Leader:
none``; ``--under-replicated-partitions`` lists only the partitions whose ISR is smaller
than their replicas, ``--unavailable-partitions`` only those with no live leader (both:
either), without the topic lines.

Topic ``solo`` has a single replica, on the broker that is stopped: its topic line
(DescribeConfigs) comes from a running broker that holds no replica of it, which
answers from ZooKeeper's /config/topics as Kafka's broker does."""

from __future__ import annotations

import re

import pytest

from cluster.test_cluster_replication import admin
from cluster.test_faults import partition_or_none
from cluster.util import killed_at_exit
from pylog import cli
from pylog.cluster.local import LocalCluster
from server.util import wait_for

pytest.importorskip("confluent_kafka")

OVERRIDES = ["zookeeper.session.timeout.ms=3000", "replica.lag.time.max.ms=2000", "default.replication.factor=3"]
PARTITION_LINE = re.compile(r"^\tTopic: (\S+)\tPartition: (\d+)\tLeader: (\S+)\tReplicas: (\S*)\tIsr: (\S*)\t")


def describe(capsys, bootstrap: str, *args: str) -> tuple[list[str], list[tuple[str, int, str]]]:
    """The topic lines and the (topic, partition, leader) of the partition lines of
    ``pylog topics describe`` (run in this process, for speed)."""
    capsys.readouterr()
    code = cli.main(["topics", "describe", "--bootstrap-server", bootstrap, *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    topics = [line for line in out.splitlines() if line.startswith("Topic: ")]
    parts = []
    for line in out.splitlines():
        if line.startswith("\t"):
            match = PARTITION_LINE.match(line)
            assert match, line
            parts.append((match[1], int(match[2]), match[3]))
    assert len(topics) + len(parts) == len(out.splitlines()), out
    return topics, sorted(parts)


def in_every_metadata(cluster: LocalCluster, topic: str, pred, what: str) -> None:
    """Wait until partition 0 of ``topic`` satisfies ``pred`` in the metadata of every
    running broker, each asked alone (a broker learns from the controller
    asynchronously, and the tool may ask any of them)."""
    def everywhere() -> bool:
        for b in cluster.procs:
            p = partition_or_none(cluster.ports[b], topic)
            if p is None or not pred(p):
                return False
        return True
    wait_for(everywhere, f"{what} in every broker's metadata")


def test_describe_marks_under_replicated_and_unavailable_partitions(tmp_path, zk_connect, capsys):
    from confluent_kafka.admin import NewTopic

    with killed_at_exit(LocalCluster(tmp_path, 3, zookeeper=zk_connect, overrides=OVERRIDES)) as cluster:
        a = admin(cluster.bootstrap)
        wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 3, "3 registered brokers in the metadata")
        controller = wait_for(lambda: max(a.list_topics(timeout=5).controller_id, 0), "a controller")
        victim = min(b for b in (1, 2, 3) if b != controller)
        created = a.create_topics([NewTopic("replicated", num_partitions=1, replication_factor=3),
                                   NewTopic("solo", num_partitions=1, replica_assignment=[[victim]])],
                                  operation_timeout=30)
        for fut in created.values():
            fut.result(60)
        in_every_metadata(cluster, "replicated", lambda p: p.leader_id > 0 and len(p.isr_nodes) == 3,
                          "replicated-0 led with a full ISR")
        in_every_metadata(cluster, "solo", lambda p: p.partition_index == 0 and p.leader_id == victim, "solo-0 led")
        assert describe(capsys, cluster.bootstrap, "--under-replicated-partitions", "--unavailable-partitions") == ([], [])
        topics, parts = describe(capsys, cluster.bootstrap, "replicated", "solo")
        assert [line.split("\t")[0] for line in topics] == ["Topic: replicated", "Topic: solo"]
        assert parts == [("replicated", 0, parts[0][2]), ("solo", 0, str(victim))] and parts[0][2] != "none"

        cluster.stop_broker(victim)  # SIGTERM: a controlled shutdown, then its session closes
        alive = ",".join(f"127.0.0.1:{cluster.ports[b]}" for b in sorted(cluster.procs))
        in_every_metadata(cluster, "replicated", lambda p: p.leader_id in cluster.procs and victim not in p.isr_nodes,
                          "replicated-0 led without the stopped broker in its ISR")
        in_every_metadata(cluster, "solo", lambda p: p.partition_index == 0 and p.leader_id == -1, "solo-0 offline")

        topics, parts = describe(capsys, alive, "replicated", "solo")
        assert [line.split("\t")[0] for line in topics] == ["Topic: replicated", "Topic: solo"]
        assert parts[1:] == [("solo", 0, "none")]
        assert parts[0][2] not in ("none", str(victim))
        # solo-0 keeps its last ISR (the stopped broker), as Kafka does: not under-replicated.
        assert describe(capsys, alive, "--under-replicated-partitions") == ([], [parts[0]])
        assert describe(capsys, alive, "--unavailable-partitions") == ([], [("solo", 0, "none")])
        assert describe(capsys, alive, "--under-replicated-partitions", "--unavailable-partitions") == ([], parts[:2])
