"""``broker.rack`` on real brokers: three ``pylog serve --zookeeper`` subprocesses started
with ``--override broker.rack=...`` (racks a, a, b) register their racks in ZooKeeper
(``/brokers/ids/<id>``), and the controller places a new topic's replicas rack-aware
(Kafka's assignReplicasToBrokers): with replication factor 2, every partition has a
replica on each rack, as both ZooKeeper's assignment and the Metadata clients see show.
Rack-unaware placement over the same three brokers would put some partitions on brokers
1 and 2 alone (both on rack a), so the check tells the two modes apart.
"""

from __future__ import annotations

import pytest

from cluster.test_cluster_replication import admin, create_topic, wait_metadata
from cluster.util import killed_at_exit
from pylog.cluster.local import LocalCluster
from server.util import wait_for

confluent_kafka = pytest.importorskip("confluent_kafka")

RACKS = {1: "a", 2: "a", 3: "b"}
PARTITIONS = 6


def test_replicas_span_both_racks(tmp_path, zk_connect):
    from pylog.cluster.zookeeper import connect

    cluster = LocalCluster(tmp_path, 3, zookeeper=zk_connect)
    for broker, rack in RACKS.items():
        cluster.broker_args[broker] = ["--override", f"broker.rack={rack}"]
    coordination = connect(zk_connect)
    try:
        with killed_at_exit(cluster):
            a = admin(cluster.bootstrap)
            wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 3, "3 registered brokers in the metadata")
            live = coordination.get_live_brokers()
            assert {b: reg.rack for b, reg in live.items()} == RACKS
            create_topic(cluster.bootstrap, "racked", partitions=PARTITIONS, rf=2)
            _, t = wait_metadata(cluster.bootstrap, "racked",
                                 lambda md, t: len(t.partitions) == PARTITIONS
                                 and all(len(p.isrs) == 2 for p in t.partitions.values()),
                                 "every partition with a full ISR")
            assignment = coordination.get_topic_assignment("racked")
            assert sorted(assignment.partitions) == list(range(PARTITIONS))
            for p, replicas in assignment.partitions.items():
                assert len(replicas.replicas) == 2
                assert {RACKS[b] for b in replicas.replicas} == {"a", "b"}, (p, replicas.replicas)
                assert list(t.partitions[p].replicas) == list(replicas.replicas)
            # The preferred leaders (first replicas) walk the rack-alternating broker
            # list, so each broker leads as many partitions as the others.
            firsts = [r.replicas[0] for r in assignment.partitions.values()]
            assert {b: firsts.count(b) for b in RACKS} == {b: PARTITIONS // 3 for b in RACKS}
    finally:
        coordination.close()
