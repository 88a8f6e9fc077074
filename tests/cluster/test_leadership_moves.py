"""What a leadership move must not wait for (issue 13's controlled-shutdown failover).

- A follower's fetcher handed a partition while its Fetch is parked at the leader
  without it (a long poll of up to ``replica.fetch.wait.max.ms``) asks again at once
  with it: the leader here is a fake broker that parks every Fetch forever, so the
  second Fetch can only come from the fetcher dropping the first.
- A broker giving a leadership up answers the fetches parked on it at once: the append
  listeners a parked Fetch waits on are called for the partition.
- A stopping broker (its controlled shutdown moved its leaderships away) follows nobody.
- The LeaderAndIsr's leaders go into the metadata cache as it arrives, so the broker
  that answers NOT_LEADER_OR_FOLLOWER already names the new leader in its Metadata.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from cluster.test_hw_checkpoint import Node, open_broker
from cluster.test_replication_model import MemoryLog
from pylog.cluster.channel import LeaderAndIsrRequest, MetadataCache, PartitionState, UpdateMetadataRequest
from pylog.cluster.node import Replica
from pylog.cluster.quota import ReplicationQuota
from pylog.cluster.replica_fetcher import ReplicaFetcher
from pylog.cluster.replication import LeaderAndIsr, Partition
from pylog.protocol.apis import ApiKey
from server.util import wait_for
from tests.client.kafka.fakes import FakeBroker

LEADER = 7
A, B = ("moved", 0), ("idle", 0)


class ParkingLeader(FakeBroker):
    """Answers ApiVersions, parks every Fetch forever and records its partitions."""

    def __init__(self) -> None:
        super().__init__(mode="hang")
        self.fetches: list[set[tuple[str, int]]] = []

    def _answer(self, header, body, mode):
        if header.api_key == ApiKey.FETCH:
            with self._lock:
                self.fetches.append({(t.topic, p.partition) for t in body.topics for p in t.partitions})
            return None
        return super()._answer(header, body, mode)


def _follower_replica(tp: tuple[str, int]) -> Replica:
    log = MemoryLog()
    state = Partition(1, log)
    state.become_follower(LeaderAndIsr(LEADER, 3, (LEADER, 1), 0), (LEADER, 1))
    return Replica(*tp, state, log)


def test_a_partition_added_during_a_parked_fetch_is_fetched_at_once():
    node = SimpleNamespace(broker_id=1, follower_quota=ReplicationQuota("follower"),
                           replica_manager=SimpleNamespace(replicas={tp: _follower_replica(tp) for tp in (A, B)}))
    with ParkingLeader() as leader:
        fetcher = ReplicaFetcher(node, LEADER, "127.0.0.1", leader.port)
        try:
            fetcher.add([B])
            wait_for(lambda: leader.fetches, "the first Fetch, parked at the leader")
            assert leader.fetches == [{B}]
            fetcher.add([A])
            # (Without the drop it would come after the parked one's 30 s request timeout.)
            wait_for(lambda: len(leader.fetches) >= 2, "a Fetch with the partition added", timeout=15)
            assert leader.fetches[1] == {A, B}
            wait_for(lambda: leader.closed_connections >= 1, "the parked Fetch's connection closed")
        finally:
            fetcher.close()


@pytest.fixture
def node(tmp_path):
    b = open_broker(tmp_path / "b1")
    n = Node(b)
    b.replication = n.replica_manager
    yield n
    b.replication = None
    b.close()


def _states(leader: int, epoch: int) -> tuple[PartitionState, ...]:
    return tuple(PartitionState("t", p, 1, leader, epoch, (1, 2), 0, (1, 2)) for p in (0, 1))


def _become(node: Node, leader: int, epoch: int) -> None:
    out = node.replica_manager.become(LeaderAndIsrRequest(0, 1, 5, _states(leader, epoch), {}, ()))
    assert all(e is None for e in out.values()), out


def test_giving_a_leadership_up_wakes_the_fetches_parked_on_it(node):
    _become(node, 1, 1)
    woken: list = []
    lock = threading.Lock()

    def listener(topic, partition, hw):     # what a parked Fetch waits on
        with lock:
            woken.append((topic, partition))

    node.broker.add_append_listener(listener)
    _become(node, 2, 2)
    assert sorted(woken) == [("t", 0), ("t", 1)]
    assert node.followed == [(("t", 0), 2), (("t", 1), 2)]


def test_a_stopping_broker_follows_nobody(node):
    _become(node, 1, 1)
    node.stopping = True
    _become(node, 2, 2)
    assert node.followed == []
    assert not node.replica_manager.replicas[("t", 0)].state.is_leader


def test_leader_and_isr_names_the_new_leader_in_the_metadata_at_once():
    cache = MetadataCache()
    old = PartitionState("t", 0, 1, 1, 2, (1, 2, 3), 4, (1, 2, 3), offline_replicas=(3,))
    cache.update(UpdateMetadataRequest(0, 1, 5, (old,), (), {"t": None}))
    moved = PartitionState("t", 0, 1, 2, 3, (2, 3), 5, (1, 2, 3))
    unknown = PartitionState("u", 0, 1, 2, 0, (2,), 0, (2,), is_new=True)
    assert cache.apply_leader_and_isr(LeaderAndIsrRequest(0, 1, 5, (moved, unknown), {}, ()))
    got = cache.partitions[("t", 0)]
    assert (got.leader, got.leader_epoch, got.isr, got.offline_replicas) == (2, 3, (2, 3), (3,))
    assert ("u", 0) not in cache.partitions          # new partitions wait for UpdateMetadata
    # An older state (a LeaderAndIsr overtaken by what the cache holds) changes nothing.
    assert not cache.apply_leader_and_isr(LeaderAndIsrRequest(0, 1, 5, (old,), {}, ()))
    assert cache.partitions[("t", 0)].leader == 2
    # Nor does one from a controller older than the cache's.
    newer = PartitionState("t", 0, 0, 3, 4, (3,), 6, (1, 2, 3))
    assert not cache.apply_leader_and_isr(LeaderAndIsrRequest(0, 0, 5, (newer,), {}, ()))
