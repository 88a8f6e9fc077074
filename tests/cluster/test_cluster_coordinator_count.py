"""Two ``pylog serve --zookeeper`` brokers configured with different
``offsets.topic.num.partitions`` (3 and 5) agree on every group's coordinator: the one
FindCoordinator names (from the cluster's ``__consumer_offsets``, created by broker 1
with 3 partitions) serves the group, commits and reads back its offsets, wherever the
group's partition is led.  Before, broker 2 hashed groups over its own 5 partitions and
answered NOT_COORDINATOR for most of the groups it was named coordinator of.
"""

from __future__ import annotations

import pytest

from cluster.test_cluster_replication import admin, create_topic
from cluster.util import killed_at_exit
from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC, partition_for_group
from pylog.cluster.local import LocalCluster
from server.util import wait_for

confluent_kafka = pytest.importorskip("confluent_kafka")

GROUPS = [f"group-{i}" for i in range(8)]


def find_coordinator(bootstrap: str, group: str) -> int:
    from pylog.client.kafka.network import NetworkClient
    from pylog.protocol import messages as m
    from pylog.protocol.apis import ApiKey
    with NetworkClient(bootstrap, client_id="coordinator-count") as client:
        def answer():
            resp = client.send(-1, ApiKey.FIND_COORDINATOR, m.FindCoordinatorRequest(key=group, key_type=0),
                               version=3).result(10)
            return resp.node_id if resp.error_code == 0 else None
        return wait_for(answer, f"a coordinator for {group} from {bootstrap}", timeout=60)


def test_brokers_configured_differently_agree_on_group_coordinators(tmp_path, zk_connect):
    from confluent_kafka import TopicPartition
    cluster = LocalCluster(tmp_path, 2, zookeeper=zk_connect, overrides=["group.initial.rebalance.delay.ms=0"])
    cluster.broker_args = {1: ["--override", "offsets.topic.num.partitions=3"],
                           2: ["--override", "offsets.topic.num.partitions=5"]}
    with killed_at_exit(cluster):
        a = admin(cluster.bootstrap)
        wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 2, "2 registered brokers in the metadata")
        first, second = (f"127.0.0.1:{cluster.ports[i]}" for i in (1, 2))
        # Broker 1 creates __consumer_offsets, with its count.
        coordinators = {g: find_coordinator(first, g) for g in GROUPS}
        # The bootstrap broker's metadata may not list the new topic's partitions yet.
        offsets = wait_for(lambda: a.list_topics(CONSUMER_OFFSETS_TOPIC, timeout=10)
                           .topics[CONSUMER_OFFSETS_TOPIC].partitions or None,
                           f"{CONSUMER_OFFSETS_TOPIC}'s partitions in the metadata")
        assert len(offsets) == 3
        for g in GROUPS:
            leader = offsets[partition_for_group(g, 3)].leader
            assert coordinators[g] == leader == find_coordinator(second, g)
        assert {coordinators[g] for g in GROUPS} == {1, 2}      # both brokers coordinate some
        # ... and broker 2 some whose partition its own count would have put elsewhere.
        assert any(coordinators[g] == 2 and partition_for_group(g, 5) != partition_for_group(g, 3) for g in GROUPS)
        create_topic(cluster.bootstrap, "t", partitions=1, rf=2)
        for i, g in enumerate(GROUPS):
            c = confluent_kafka.Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": g,
                                          "enable.auto.commit": False})
            try:
                c.commit(offsets=[TopicPartition("t", 0, 100 + i)], asynchronous=False)
                assert c.committed([TopicPartition("t", 0)], timeout=30)[0].offset == 100 + i
            finally:
                c.close()
        # DeleteGroups, answered once the tombstones are replicated, by each coordinator.
        for g, fut in a.delete_consumer_groups(GROUPS, request_timeout=30).items():
            fut.result(30)
        assert not {g.group_id for g in a.list_consumer_groups().result(30).valid} & set(GROUPS)
