"""The group coordinator of a clustered broker acts on its writes to ``__consumer_offsets``
only once the ISR has them (pylog.cluster.coordinators.ReplicatedOffsetStore), whatever
made the write, a request or a timer.

A real broker core leads ``__consumer_offsets-0`` with the ISR {1, 2} through a real
ReplicaManager and replication.Partition; broker 2 is played by hand: it fetches (the
high watermark moves), falls out of the ISR (the controller's answer applied), or takes
the leadership (a LeaderAndIsr making broker 1 a follower).  The server's loop runs in a
thread; :func:`drain` lets it run what was handed to it, so no test waits on a clock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from pylog.broker.core import Broker
from pylog.broker.group import GroupCoordinator, GroupCoordinatorConfig, GroupState
from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC
from pylog.cluster import replication
from pylog.cluster.channel import MetadataCache
from pylog.cluster.coordinators import CoordinatorPartitions, Replication
from pylog.cluster.node import CoreReplicaLog, Replica, ReplicaManager
from pylog.errors import NotCoordinatorError, NotLeaderError

RETENTION_MS = 1000
TP = (CONSUMER_OFFSETS_TOPIC, 0)


class Node:
    """What ReplicaManager and CoordinatorPartitions use of a ClusterNode: broker 1, its
    loop in a thread, its replica thread."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.broker_id = 1
        self.metadata = MetadataCache()
        self.coordination = None
        self.stopping = False
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.replica_thread = concurrent.futures.ThreadPoolExecutor(1)
        self.replica_manager = ReplicaManager(self)

    def call_in_loop(self, fn, *args) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def drain(self) -> None:
        """Let the loop run everything handed to it (and what that schedules in turn),
        then let the replica thread finish its work."""
        async def turns() -> None:
            for _ in range(20):
                await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(turns(), self.loop).result(10)
        self.replica_thread.submit(lambda: None).result(10)

    def close(self) -> None:
        self.replica_thread.shutdown(wait=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Cluster:
    def __init__(self, tmp_path) -> None:
        self.now = 1_000_000
        self.broker = Broker(tmp_path / "b1", background=False, clock=lambda: self.now, offsets_topic_num_partitions=1,
                             group=GroupCoordinatorConfig(offsets_retention_ms=RETENTION_MS,
                                                          offsets_retention_check_interval_ms=RETENTION_MS))
        self.broker.create_topic("t", 2)
        self.node = Node(self.broker)
        self.manager = self.node.replica_manager
        self.broker.replication = self.manager
        self.coordinators = CoordinatorPartitions(self.node)
        self.coordinators.start()
        # LeaderAndIsr: broker 1 leads __consumer_offsets-0 in epoch 1, ISR {1, 2}.
        self.broker.create_topic(CONSUMER_OFFSETS_TOPIC, 1, config={"cleanup.policy": "compact"})
        log = CoreReplicaLog(self.broker, *TP)
        state = replication.Partition(1, log, min_insync_replicas=2)
        self.replica = Replica(*TP, state, log)
        with self.replica.lock:
            state.become_leader(replication.LeaderAndIsr(1, 1, (1, 2), 0), (1, 2), self.now)
        self.manager.replicas[TP] = self.replica
        self.coordinators.leadership_changed(*TP, True, 1)
        self.coordinators._loader.submit(lambda: None).result(10)

    @property
    def groups(self):
        return self.broker.groups

    def follower_fetches(self) -> None:
        """Broker 2 fetches up to the leader's log end: the high watermark follows."""
        r = self.replica
        with r.lock:
            end = r.log.log_end_offset
            response = r.state.fetch_for_follower(replication.FetchRequest(2, 1, end), self.now)
            assert response.error is None
        self.manager.high_watermark_moved(r)
        self.node.drain()

    def follower_drops_out(self) -> None:
        """Broker 2 leaves the ISR (the controller took the leader's AlterPartition): the
        high watermark moves to the leader's log end with an ISR below min.insync.replicas."""
        r = self.replica
        with r.lock:
            alter = r.state.maybe_shrink_isr(self.now + replication.REPLICA_LAG_TIME_MAX_MS + 1)
            assert alter is not None and alter.new_isr == (1,)
            r.state.alter_partition_response(alter, replication.LeaderAndIsr(1, 1, (1,), 1))
        self.manager.high_watermark_moved(r)
        self.node.drain()

    def leadership_moves(self) -> None:
        """A LeaderAndIsr makes broker 2 leader in epoch 2 (before the coordinator hears of it)."""
        r = self.replica
        with r.lock:
            r.state.become_follower(replication.LeaderAndIsr(2, 2, (1, 2), 1), (1, 2))
        self.node.call_in_loop(self.manager.check_waiters)
        self.node.drain()
        self.coordinators._loader.submit(lambda: None).result(10)

    def hw(self) -> int:
        return self.replica.state.high_watermark

    def end(self) -> int:
        return self.replica.log.log_end_offset

    def close(self) -> None:
        self.coordinators.close()
        self.node.close()
        self.broker.replication = None
        self.broker.close()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def committed(c: Cluster, group: str, partition: int = 0) -> int | None:
    res = c.groups.fetch_offsets(group)
    assert res.error_code == 0
    p = res.topics.get("t", {}).get(partition)
    return None if p is None else p.offset


def join(c: Cluster, instance: str | None = None):
    return c.groups.join_group("g", "", "consumer", [("range", b"")], session_timeout_ms=10_000,
                               require_known_member_id=False, group_instance_id=instance)


def one_member(c: Cluster, instance: str | None = None) -> tuple[int, str]:
    """A member joins group g and, as its leader, syncs its assignment: (generation, member id)."""
    joined = join(c, instance).wait(5)
    assert joined.error_code == 0
    member = joined.member_id
    assert c.groups.sync_group("g", joined.generation_id, member, assignments={member: b"a"}).wait(5).error_code == 0
    return joined.generation_id, member


def test_offsets_expire_only_once_their_tombstones_are_replicated(cluster):
    c = cluster
    assert c.groups.commit_offsets("g", {"t": {0: 7}}) == {"t": {0: 0}}
    c.follower_fetches()
    assert c.hw() == c.end() == 1
    c.now += RETENTION_MS + 1
    c.groups.tick(c.now)                         # the expiry timer writes the tombstones
    assert c.end() == 3 and c.hw() == 1         # the offset's and the group's tombstones
    c.node.drain()
    assert committed(c, "g") == 7                # not acted on: a failover would bring it back
    assert c.groups.group_state("g") is GroupState.EMPTY
    c.follower_fetches()
    assert c.hw() == 3
    assert committed(c, "g") is None
    assert c.groups.group_state("g") is None     # the group went with its last offset


def test_expired_offsets_whose_tombstones_fail_stay_and_are_expired_again(cluster):
    c = cluster
    assert c.groups.commit_offsets("g", {"t": {0: 7, 1: 8}}) == {"t": {0: 0, 1: 0}}
    c.follower_fetches()
    c.now += RETENTION_MS + 1
    c.groups.tick(c.now)
    c.follower_drops_out()                        # the HW passes them, but below min.insync.replicas
    assert committed(c, "g") == 7                 # NOT_ENOUGH_REPLICAS_AFTER_APPEND: not acted on
    # The next check writes them again; the ISR of one refuses the write before the
    # append (NOT_ENOUGH_REPLICAS), so they stay until the ISR is whole.
    c.now += RETENTION_MS + 1
    c.groups.tick(c.now)
    c.node.drain()
    assert committed(c, "g", 1) == 8


def test_an_assignment_the_isr_did_not_take_sends_the_group_back_to_rebalancing(cluster):
    c = cluster
    generation, member = one_member(c)
    assert c.groups.group_state("g") is GroupState.STABLE       # in memory, not yet replicated
    c.follower_drops_out()
    assert c.groups.group_state("g") is GroupState.PREPARING_REBALANCE
    assert c.groups.heartbeat("g", generation, member) == 27        # REBALANCE_IN_PROGRESS


def test_a_replicated_assignment_keeps_the_group_stable(cluster):
    c = cluster
    generation, member = one_member(c)
    c.follower_fetches()
    assert c.groups.group_state("g") is GroupState.STABLE
    assert c.groups.heartbeat("g", generation, member) == 0


def test_a_commit_the_isr_did_not_take_is_undone(cluster):
    c = cluster
    assert c.groups.commit_offsets("g", {"t": {0: 5}}) == {"t": {0: 0}}
    c.follower_fetches()
    assert c.groups.commit_offsets("g", {"t": {0: 9}}) == {"t": {0: 0}}
    c.follower_drops_out()
    assert committed(c, "g") == 5


def test_a_session_expiry_write_that_fails_because_leadership_moved_resigns_the_partition(cluster):
    c = cluster
    one_member(c)
    c.follower_fetches()
    end = c.end()
    c.now += 10_001
    c.groups.tick(c.now)         # the session expires; the rebalance timer completes it: an empty generation
    assert c.groups.group_state("g") is GroupState.EMPTY
    assert c.end() == end + 1
    c.leadership_moves()
    assert c.groups.fetch_offsets("g").error_code == NotCoordinatorError.error_code
    assert TP not in c.coordinators._led


def test_a_static_member_rejoining_is_answered_once_replicated_and_reverted_if_not(cluster):
    c = cluster
    generation, first = one_member(c, "i1")
    c.follower_fetches()
    rejoin = join(c, "i1")              # a restarted static member: same metadata, no rebalance
    c.node.drain()
    assert not rejoin.done()            # its new member id is not answered before the ISR has it
    c.follower_fetches()
    second = rejoin.wait(5)
    assert second.error_code == 0 and second.member_id != first and second.generation_id == generation
    again = join(c, "i1")
    c.follower_drops_out()              # the ISR does not take this one
    assert again.wait(5).error_code == 15           # COORDINATOR_NOT_AVAILABLE: the client retries
    # The member is the one the log holds: the second id, not the third.
    assert c.groups.group_members("g") == [second.member_id]



class ManualStore:
    """An in-memory store that answers like a replicated one: each append and
    ``replicated(partition)`` returns a handle the test completes."""

    def __init__(self) -> None:
        from pylog.broker.group_offsets import InMemoryOffsetStore
        self.inner = InMemoryOffsetStore(1)
        self.num_partitions = 1
        self.handles: list[Replication] = []

    def _handle(self) -> Replication:
        h = Replication(lambda fn, *args: fn(*args))
        self.handles.append(h)
        return h

    def append(self, partition, records, *, producer_id=-1, producer_epoch=-1):
        self.inner.append(partition, records, producer_id=producer_id, producer_epoch=producer_epoch)
        return self._handle()

    def replicated(self, partition):
        return self._handle()


def test_transactional_offsets_are_settled_once_the_marker_is_replicated():
    store = ManualStore()
    groups = GroupCoordinator(store)
    pid = 4000
    assert groups.txn_commit_offsets("g", pid, 0, {"t": {0: 11}}) == {"t": {0: 0}}
    groups.complete_txn(pid, [0], True)          # the broker core appended the COMMIT marker
    marker = store.handles[-1]
    assert groups.fetch_offsets("g", {"t": [0]}).topics["t"][0].offset == -1       # pending until the ISR has it
    assert groups.fetch_offsets("g", {"t": [0]}, require_stable=True).topics["t"][0].error_code == 88  # UNSTABLE_OFFSET_COMMIT
    marker.set_result(None)
    assert groups.fetch_offsets("g", {"t": [0]}).topics["t"][0].offset == 11
    # A marker the ISR did not take leaves them pending, for the coordinator to write again.
    assert groups.txn_commit_offsets("g", pid + 1, 0, {"t": {0: 12}}) == {"t": {0: 0}}
    groups.complete_txn(pid + 1, [0], True)
    store.handles[-1].set_result(NotLeaderError("moved"))
    assert groups.fetch_offsets("g", {"t": [0]}, require_stable=True).topics["t"][0].error_code == 88
    groups.complete_txn(pid + 1, [0], True)
    store.handles[-1].set_result(None)
    assert groups.fetch_offsets("g", {"t": [0]}).topics["t"][0].offset == 12
