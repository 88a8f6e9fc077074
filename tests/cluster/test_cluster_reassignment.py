"""A partition reassignment on three real brokers, over the wire (AlterPartitionReassignments
and ListPartitionReassignments to the controller, KIP-455), throttled as
``kafka-reassign-partitions --throttle`` throttles one (ZkAdmin.set_reassignment_throttle):
the new replica's fetcher and the leader apply the quotas (pylog.cluster.quota), the
reassignment still completes, and the new replica holds the partition byte for byte.
How fast the throttle lets data through is checked by accounting, without a clock, in
test_replication_throttle.py.  ``long``: about 20 s.
"""

from __future__ import annotations

from typing import Any

import pytest

from cluster.jepsen import replica_log
from cluster.test_cluster_replication import admin
from pylog.cluster.local import LocalCluster
from server.util import wait_for

confluent_kafka = pytest.importorskip("confluent_kafka")

RECORDS = 2000       # 2 MB
RATE = 100_000       # bytes/s: 1 MB at once (Kafka's rate counts ten windows), then ~10 s


def send_to_controller(bootstrap: str, controller: int, api_key, body):
    from pylog.client.kafka.network import NetworkClient
    with NetworkClient(bootstrap, client_id="reassign") as client:
        client.refresh_metadata(None, timeout_ms=10_000).result(10)
        return client.send(controller, api_key, body).result(30)


def leader_of(a, topic: str) -> int | None:
    t = a.list_topics(topic, timeout=5).topics.get(topic)
    p = None if t is None or t.error is not None else t.partitions.get(0)
    return None if p is None else p.leader


@pytest.mark.long
def test_a_throttled_reassignment_completes_over_the_wire(tmp_path, zk_connect):
    from pylog.cluster.controller import ZkAdmin
    from pylog.cluster.zookeeper import connect
    from pylog.protocol import messages as m
    from pylog.protocol.apis import ApiKey

    with LocalCluster(tmp_path, 3, zookeeper=zk_connect, overrides=["zookeeper.session.timeout.ms=6000"]) as c:
        a = admin(c.bootstrap)
        wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 3, "3 registered brokers in the metadata")
        coordination = connect(zk_connect)
        try:
            zk_admin = ZkAdmin(coordination)
            zk_admin.create_topic("r", 1, 2, {}, {0: [1, 2]})
            wait_for(lambda: leader_of(a, "r") in (1, 2), "r-0 led by broker 1 or 2")
            p = confluent_kafka.Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 5})
            for i in range(RECORDS):
                p.produce("r", b"%06d" % i + b"x" * 1000, partition=0)
            assert p.flush(60) == 0
            zk_admin.set_reassignment_throttle({("r", 0): [2, 3]}, RATE)
            A: Any = m.AlterPartitionReassignmentsRequest
            controller = a.list_topics(timeout=5).controller_id
            resp = send_to_controller(c.bootstrap, controller, ApiKey.ALTER_PARTITION_REASSIGNMENTS, A(topics=[
                A.ReassignableTopic(name="r", partitions=[A.ReassignablePartition(partition_index=0,
                                                                                  replicas=[2, 3])])]))
            assert resp.error_code == 0 and resp.responses[0].partitions[0].error_code == 0

            def done() -> bool:
                listed = send_to_controller(c.bootstrap, controller, ApiKey.LIST_PARTITION_REASSIGNMENTS,
                                            m.ListPartitionReassignmentsRequest(topics=None))
                part = a.list_topics("r", timeout=5).topics["r"].partitions[0]
                return listed.error_code == 0 and not listed.topics and sorted(part.replicas) == [2, 3] \
                    and sorted(part.isrs) == [2, 3]
            wait_for(done, "the reassignment to [2, 3] to complete", timeout=120)
            zk_admin.clear_reassignment_throttle(["r"], [1, 2, 3])
        finally:
            coordination.close()
        # The new replica's fetcher throttled itself (the leader, measuring the same bytes
        # with the same quota, then never has to: its side is checked in
        # test_replication_throttle.py).
        log = (tmp_path / "broker-3.log").read_text(errors="replace")
        assert "follower replication throttle on (r-0" in log, log[-3000:]
        moved = replica_log(tmp_path / "broker-3", "r", 0)
        assert len(moved) == RECORDS
        assert moved == replica_log(tmp_path / "broker-2", "r", 0)
        assert sorted(moved) == list(range(RECORDS))
