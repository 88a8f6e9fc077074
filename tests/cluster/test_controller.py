"""The cluster controller on the in-memory ZooKeeper, with an in-process channel that
records what every broker was told: topic create/delete/create-partitions, leader
election on broker loss (clean, offline, unclean), controller failover and fencing,
controlled shutdown, preferred elections, reassignment, AlterPartition.

Everything is deterministic: the in-memory store delivers watches on the thread that
made the change and each controller handles its events there and then.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random

import pytest

from pylog.cluster import replication
from pylog.cluster.channel import (InProcessChannel, LeaderAndIsrRequest, MetadataCache, StopReplicaRequest,
                                   UpdateMetadataRequest, answer_all_ok)
from pylog.cluster.controller import Controller, ControllerConfig, ElectionType, ZkAdmin
from pylog.cluster.coordination import (BrokerRegistration, Coordination, EndPoint, ReplicaAssignment,
                                        TopicAssignment)
from pylog.cluster.coordination_memory import MemoryZooKeeper
from pylog.errors import (BrokerNotAvailableError, ElectionNotNeededError, FencedLeaderEpochError,
                          IneligibleReplicaError, InvalidPartitionsError, InvalidReplicaAssignmentError,
                          InvalidReplicationFactorError, InvalidTopicError, InvalidUpdateVersionError,
                          NoReassignmentInProgressError, NotControllerError, NotLeaderError,
                          PreferredLeaderNotAvailableError, StaleBrokerEpochError, TopicAlreadyExistsError,
                          UnknownTopicOrPartitionError)


class Cluster:
    """Brokers on one in-memory ZooKeeper, each with its session, registration and controller."""

    def __init__(self, brokers=(1, 2, 3), config=ControllerConfig(), racks=None, seed=0):
        self.zk = MemoryZooKeeper()
        self.config = config
        self.racks = racks or {}
        self.sessions: dict[int, Coordination] = {}
        self.controllers: dict[int, Controller] = {}
        self.channels: dict[int, InProcessChannel] = {}
        self.rng = random.Random(seed)
        self.admin_session = Coordination(self.zk.connect())
        self.admin = ZkAdmin(self.admin_session, rng=self.rng)
        for b in brokers:
            self.start(b)

    def registration(self, b: int) -> BrokerRegistration:
        return BrokerRegistration(b, (EndPoint("PLAINTEXT", "127.0.0.1", 9090 + b),), rack=self.racks.get(b))

    def start(self, b: int, wakeup=None) -> Controller:
        session = Coordination(self.zk.connect())
        session.register_broker(self.registration(b))
        session.add_session_listener(on_session_reestablished=lambda: session.register_broker(self.registration(b)))
        channel = InProcessChannel(answer_all_ok)
        controller = Controller(session, b, channel, self.config, wakeup=wakeup)
        channel.on_response = controller.handle_response
        self.sessions[b], self.controllers[b], self.channels[b] = session, controller, channel
        controller.start()
        return controller

    def kill(self, b: int) -> None:
        """SIGKILL: the session ends (ephemerals vanish); the process does nothing more."""
        controller = self.controllers.pop(b)
        self.channels.pop(b)
        self.sessions.pop(b).close()
        controller._closed = True

    @contextlib.contextmanager
    def paused(self):
        """Controllers queue their events until the block ends (the in-memory store runs
        watches inside the write that fired them; an admin write that reads back what it
        wrote must not see the controller's reaction in between)."""
        paused = [c for c in self.controllers.values() if c._wakeup is None]
        for c in paused:
            c._wakeup = lambda: None
        try:
            yield
        finally:
            for c in paused:
                c._wakeup = None
                c.process_events()

    @property
    def active(self) -> Controller:
        (c,) = [c for c in self.controllers.values() if c.is_active]
        return c

    @property
    def channel(self) -> InProcessChannel:
        return self.active.channel

    def state(self, topic: str, partition: int = 0):
        return self.admin_session.get_partition_state(topic, partition)

    def replicas(self, topic: str, partition: int = 0):
        return self.admin_session.get_topic_assignment(topic).partitions[partition].replicas

    def controller_epoch(self) -> int:
        return self.admin_session.get_controller_epoch().epoch

    def close(self) -> None:
        for c in self.controllers.values():
            assert c.event_failures == []
            c.close()


@pytest.fixture
def cluster():
    made = []

    def make(*args, **kwargs):
        c = Cluster(*args, **kwargs)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


def told(channel: InProcessChannel, broker: int, kind, tp=None):
    """The partition states of ``kind`` requests ``broker`` was sent (for ``tp``)."""
    out = []
    for r in channel.requests(broker, kind):
        out += [s for s in getattr(r, "partition_states", ()) if tp is None or s.topic_partition == tp]
    return out


def test_one_controller_is_elected_and_the_epoch_fences_the_next(cluster):
    c = cluster()
    assert c.controller_epoch() == 1
    assert c.active.broker_id == 1 and c.admin_session.get_controller() == 1
    assert all(x.active_controller_id == 1 for x in c.controllers.values())


def test_losing_the_controller_znode_resigns_at_once(cluster):
    c = cluster()
    first = c.active
    c.admin_session.store.delete("/controller")
    assert not first.is_active or first.epoch.epoch == 2
    assert c.controller_epoch() == 2 and len([x for x in c.controllers.values() if x.is_active]) == 1


def test_create_topic_initial_states_and_what_brokers_are_told(cluster):
    c = cluster(brokers=(1, 2, 3, 4))
    created = c.admin.create_topic("t", 4, 3)
    with pytest.raises(TopicAlreadyExistsError):
        c.admin.create_topic("t", 1, 1)
    for p, a in created.partitions.items():
        state = c.state("t", p)
        assert (state.leader, state.isr, state.leader_epoch) == (a.replicas[0], a.replicas, 0)
        assert state.controller_epoch == 1
        for b in a.replicas:
            (s,) = told(c.channel, b, LeaderAndIsrRequest, ("t", p))
            assert s.is_new and s.leader == a.replicas[0] and s.replicas == a.replicas
        for b in {1, 2, 3, 4} - set(a.replicas):
            assert told(c.channel, b, LeaderAndIsrRequest, ("t", p)) == []
    cache = MetadataCache()
    for r in c.channel.requests(4, UpdateMetadataRequest):
        cache.update(r)
    assert [s.partition for s in cache.partitions_of("t")] == [0, 1, 2, 3]
    assert sorted(cache.brokers) == [1, 2, 3, 4] and cache.controller_id == 1
    assert cache.leader("t", 0).broker_id == created.partitions[0].replicas[0]
    assert cache.topic_ids["t"] == created.topic_id and cache.under_replicated() == []


def test_create_topic_places_rack_aware(cluster):
    racks = {1: "a", 2: "a", 3: "b", 4: "b", 5: "c", 6: "c"}
    c = cluster(brokers=tuple(racks), racks=racks)
    created = c.admin.create_topic("t", 6, 3)
    for a in created.partitions.values():
        assert {racks[b] for b in a.replicas} == {"a", "b", "c"}


def test_create_partitions_continues_the_placement(cluster):
    c = cluster()
    c.admin.create_topic("t", 2, 2)
    added = c.admin.create_partitions("t", 5)
    assert sorted(added) == [2, 3, 4]
    for p, replicas in added.items():
        state = c.state("t", p)
        assert state.leader == replicas[0] and state.isr == replicas and state.leader_epoch == 0
        assert c.active.partition_state("t", p) == state


def test_delete_topic_stops_and_deletes_every_replica(cluster):
    c = cluster()
    c.admin.create_topic("t", 2, 3)
    c.kill(3)
    c.channel.clear()
    c.admin.delete_topic("t")
    # Broker 3 is down: the deletion waits for it.
    assert c.admin_session.get_topic_assignment("t") is not None
    for b in (1, 2):
        (stop,) = c.channel.requests(b, StopReplicaRequest)
        assert {(p.topic, p.partition, p.delete, p.leader_epoch) for p in stop.partitions} == \
            {("t", 0, True, -2), ("t", 1, True, -2)}
    deleted = [r.deleted for r in c.channel.requests(1, UpdateMetadataRequest)]
    assert (("t", 0), ("t", 1)) in deleted
    c.start(3)
    assert c.channel.requests(3, StopReplicaRequest)
    assert c.admin_session.get_topic_assignment("t") is None
    assert c.admin_session.get_topics() == [] and c.admin_session.get_topic_deletions() == []
    assert c.admin_session.get_entity_config("topics", "t") == {}


def test_broker_loss_elects_from_the_isr_with_the_next_epoch(cluster):
    c = cluster()
    c.admin.create_topic("t", 3, 3, assignment={0: [1, 2, 3], 1: [2, 3, 1], 2: [3, 1, 2]})
    c.channel.clear()
    c.kill(2)
    assert (c.state("t", 0).leader, c.state("t", 0).isr) == (1, (1, 3))  # lost a follower: ISR shrinks
    assert c.state("t", 0).leader_epoch == 1
    s1 = c.state("t", 1)
    assert (s1.leader, s1.isr, s1.leader_epoch) == (3, (3, 1), 1)  # lost its leader: next in order
    for b in (1, 3):
        (s,) = told(c.channel, b, LeaderAndIsrRequest, ("t", 1))
        assert (s.leader, s.leader_epoch) == (3, 1)
        ums = c.channel.requests(b, UpdateMetadataRequest)
        assert ums and all(2 not in [x.broker_id for x in r.live_brokers] for r in ums)
        cache = MetadataCache()
        cache.update(ums[-1])
        assert cache.partitions[("t", 1)].offline_replicas == (2,)
    assert c.channel.requests(2) == []


def test_no_live_isr_member_means_offline_until_one_returns(cluster):
    c = cluster()
    c.admin.create_topic("t", 1, 2, assignment={0: [1, 2]})
    c.kill(2)
    assert c.state("t").isr == (1,)
    c.channel.clear()
    c.start(2)  # back, but not in the ISR: the leader has not taken it back yet
    (s,) = told(c.channel, 2, LeaderAndIsrRequest, ("t", 0))  # it follows the leader
    assert (s.leader, s.isr, s.leader_epoch, s.replicas) == (1, (1,), 1, (1, 2))
    assert c.state("t").isr == (1,)
    c.kill(1)  # the leader
    state = c.state("t")
    assert state.leader == -1 and state.isr == (1,)  # never an empty ISR
    c.start(1)
    state = c.state("t")
    assert state.leader == 1 and state.isr == (1,)


def test_unclean_election_when_the_topic_allows_it(cluster):
    c = cluster()
    c.admin.create_topic("t", 1, 2, {"unclean.leader.election.enable": "true"}, assignment={0: [1, 2]})
    c.admin.create_topic("u", 1, 2, assignment={0: [1, 2]})
    c.kill(2)
    c.start(2)
    c.kill(1)
    assert (c.state("t").leader, c.state("t").isr) == (2, (2,))
    assert c.state("u").leader == -1
    # ElectLeaders UNCLEAN does it on request.
    got = c.active.elect_leaders(ElectionType.UNCLEAN, [("u", 0), ("t", 0)])
    assert got[("u", 0)] is None and isinstance(got[("t", 0)], ElectionNotNeededError)
    assert c.state("u").leader == 2
    # A topic config change applies at the next election, without a failover.
    c.admin_session.create_topic(TopicAssignment("v", {0: ReplicaAssignment((1, 3))}, "AAAAAAAAAAAAAAAAAAAAAQ"))
    c.kill(3)
    assert c.state("v").leader == -1 and c.state("v").isr == (3,)
    c.admin_session.set_entity_config("topics", "v", {"unclean.leader.election.enable": "true"})
    c.start(1)
    assert (c.state("v").leader, c.state("v").isr) == (1, (1,))


def test_failover_loads_state_and_fences_the_zombie(cluster):
    c = cluster()
    c.admin.create_topic("t", 2, 3, assignment={0: [1, 2, 3], 1: [3, 2, 1]})
    c.start(4)
    c.kill(1)
    assert c.active.broker_id == 2 and c.controller_epoch() == 2
    assert c.state("t", 0).leader == 2
    c.kill(2)
    assert c.active.broker_id == 3 and c.controller_epoch() == 3
    assert c.state("t", 0).leader == 3 and c.state("t", 0).leader_epoch == 2
    # The new controller told every live broker everything.
    cache = MetadataCache()
    cache.update(c.channel.requests(4, UpdateMetadataRequest)[0])
    assert sorted(cache.brokers) == [3, 4] and cache.controller_id == 3 and cache.controller_epoch == 3
    assert [s.partition for s in cache.partitions_of("t")] == [0, 1]
    # A controller that resigns (closes) hands over at once.
    c.controllers[3].close()
    assert c.active.broker_id == 4 and c.controller_epoch() == 4


def test_a_zombie_controllers_write_is_fenced(cluster):
    c = cluster()
    c.admin.create_topic("t", 1, 3, assignment={0: [1, 2, 3]})
    zombie = c.active
    queued = []
    zombie._wakeup = queued.append
    c.kill(3)  # the zombie has this broker change queued, and has not handled it
    c.zk.expire_session(c.sessions[1].session_id)  # ... nor its session expiry
    assert c.controllers[2].is_active and c.controller_epoch() == 2
    stored = c.state("t")  # broker 1's registration went with its session: 2 leads
    assert stored.leader == 2 and 3 not in stored.isr and stored.controller_epoch == 2
    zombie.channel.clear()
    zombie._events.rotate(-1) if zombie._events[0][0] != "broker_change" else None
    assert zombie._events[0][0] == "broker_change"
    zombie.process_events()
    assert not zombie.is_active and zombie.epoch is None
    assert c.state("t") == stored
    assert all(not isinstance(r, LeaderAndIsrRequest) for b in (1, 2) for r in zombie.channel.requests(b))


def test_controlled_shutdown_moves_every_movable_leadership(cluster):
    c = cluster()
    c.admin.create_topic("t", 3, 2, assignment={0: [1, 2], 1: [2, 1], 2: [1, 3]})
    c.admin.create_topic("solo", 1, 1, assignment={0: [1]})
    c.kill(3)
    remaining = c.active.controlled_shutdown(1, c.sessions[1].get_broker(1).broker_epoch)
    assert remaining == [("t", 2)]  # its only other replica is down; RF=1 does not count
    assert (c.state("t", 0).leader, c.state("t", 0).isr) == (2, (2,))
    assert (c.state("t", 1).leader, c.state("t", 1).isr) == (2, (2,))
    assert c.state("solo").leader == 1
    assert any(("t", 1) in {(p.topic, p.partition) for p in r.partitions} and not r.partitions[0].delete
               for r in c.channel.requests(1, StopReplicaRequest))
    with pytest.raises(StaleBrokerEpochError):
        c.active.controlled_shutdown(2, 12345)
    with pytest.raises(BrokerNotAvailableError):
        c.active.controlled_shutdown(3)


def test_preferred_election_after_a_broker_returns(cluster):
    c = cluster(config=ControllerConfig(leader_imbalance_check_interval_seconds=10))
    c.admin.create_topic("t", 2, 2, assignment={0: [2, 1], 1: [2, 3]})
    c.kill(2)
    c.start(2)
    assert c.state("t", 0).leader == 1
    assert isinstance(c.active.elect_leaders(ElectionType.PREFERRED, [("t", 0)])[("t", 0)],
                      PreferredLeaderNotAvailableError)  # 2 is not back in the ISR
    for p, leader in ((0, 1), (1, 3)):
        s = c.state("t", p)
        c.active.alter_partition(leader, -1, "t", p, replication.AlterPartition(leader, s.leader_epoch, s.isr + (2,),
                                                                                s.zk_version))
    assert c.active.elect_leaders(ElectionType.PREFERRED, [("t", 0)]) == {("t", 0): None}
    assert c.state("t", 0).leader == 2 and c.state("t", 0).leader_epoch == 2
    assert isinstance(c.active.elect_leaders(ElectionType.PREFERRED, [("t", 0)])[("t", 0)], ElectionNotNeededError)
    # The automatic rebalance does partition 1 once the interval has passed.
    assert c.active.tick(0) == {}
    assert c.active.tick(9_999) == {}
    assert c.active.tick(10_000) == {("t", 1): None}
    assert c.state("t", 1).leader == 2


def test_preferred_election_through_zookeeper(cluster):
    c = cluster()
    c.admin.create_topic("t", 1, 2, assignment={0: [2, 1]})
    c.kill(2)
    c.start(2)
    s = c.state("t")
    c.active.alter_partition(1, -1, "t", 0, replication.AlterPartition(1, s.leader_epoch, (1, 2), s.zk_version))
    with c.paused():
        c.admin_session.create_preferred_replica_election([("t", 0)])
    assert c.state("t").leader == 2
    assert c.admin_session.get_preferred_replica_election() is None


def test_reassignment_start_to_finish(cluster):
    c = cluster(brokers=(1, 2, 3, 4))
    c.admin.create_topic("t", 1, 3, assignment={0: [1, 2, 3]})
    c.channel.clear()
    assert c.active.alter_partition_reassignments({("t", 0): [4, 2, 3]}) == {("t", 0): None}
    moving = c.active.list_partition_reassignments()
    assert moving == {("t", 0): c.admin_session.get_topic_assignment("t").partitions[0]}
    assert moving[("t", 0)].replicas == (4, 2, 3, 1)
    assert (moving[("t", 0)].adding_replicas, moving[("t", 0)].removing_replicas) == ((4,), (1,))
    (s,) = told(c.channel, 4, LeaderAndIsrRequest)
    assert s.leader == 1 and s.adding_replicas == (4,)
    # The leader adds 4 to the ISR once it caught up: the move completes.
    state = c.state("t")
    got = c.active.alter_partition(1, -1, "t", 0, replication.AlterPartition(1, state.leader_epoch, (1, 2, 3, 4),
                                                                             state.zk_version))
    assert got.isr == (1, 2, 3, 4)
    assert c.replicas("t") == (4, 2, 3) and c.active.list_partition_reassignments() == {}
    final = c.state("t")
    assert final.leader in (4, 2, 3) and set(final.isr) == {2, 3, 4}
    assert any(p.delete and p.topic == "t" for r in c.channel.requests(1, StopReplicaRequest) for p in r.partitions)
    assert c.active.alter_partition_reassignments({("t", 0): [1, 1]})[("t", 0)].__class__ is \
        InvalidReplicaAssignmentError


def test_reassignment_cancel_and_zookeeper_path(cluster):
    c = cluster(brokers=(1, 2, 3, 4))
    c.admin.create_topic("t", 2, 2, assignment={0: [1, 2], 1: [1, 2]})
    assert isinstance(c.active.alter_partition_reassignments({("t", 0): None})[("t", 0)],
                      NoReassignmentInProgressError)
    c.active.alter_partition_reassignments({("t", 0): [3, 4]})
    assert c.replicas("t") == (3, 4, 1, 2)
    assert c.active.alter_partition_reassignments({("t", 0): None}) == {("t", 0): None}
    assert c.replicas("t") == (1, 2) and c.active.list_partition_reassignments() == {}
    assert set(c.state("t").isr) == {1, 2}
    # /admin/reassign_partitions: a shrink completes at once and the znode goes.
    with c.paused():
        c.admin_session.create_partition_reassignment({("t", 1): [2]})
    assert c.replicas("t", 1) == (2,) and c.state("t", 1).leader == 2
    assert c.admin_session.get_partition_reassignment() is None
    # A new controller resumes a reassignment in flight.
    c.active.alter_partition_reassignments({("t", 0): [1, 3]})
    c.kill(1)  # the controller, and a replica of the target
    new = c.active
    assert new.list_partition_reassignments()[("t", 0)].adding_replicas == (3,)
    c.start(1)
    s = c.state("t")
    assert s.leader == 2 and s.isr == (2,)
    new.alter_partition(2, -1, "t", 0, replication.AlterPartition(2, s.leader_epoch, (2, 1, 3), s.zk_version))
    assert c.replicas("t") == (1, 3) and new.list_partition_reassignments() == {}
    assert c.state("t").leader == 1 and set(c.state("t").isr) == {1, 3}


def test_alter_partition_is_a_compare_and_set(cluster):
    c = cluster()
    c.admin.create_topic("t", 1, 3, assignment={0: [1, 2, 3]})
    s = c.state("t")
    shrink = replication.AlterPartition(1, s.leader_epoch, (1, 2), s.zk_version)
    got = c.active.alter_partition(1, -1, "t", 0, shrink)
    assert got == replication.LeaderAndIsr(1, 0, (1, 2), s.zk_version + 1)
    assert c.active.alter_partition(1, -1, "t", 0, shrink) == got  # a retry: the stored answer
    stale = replication.AlterPartition(1, s.leader_epoch, (1,), s.zk_version)
    with pytest.raises(InvalidUpdateVersionError):
        c.active.alter_partition(1, -1, "t", 0, stale)
    with pytest.raises(FencedLeaderEpochError):
        c.active.alter_partition(1, -1, "t", 0, replication.AlterPartition(1, 7, (1,), got.partition_epoch))
    with pytest.raises(NotLeaderError):
        c.active.alter_partition(2, -1, "t", 0, replication.AlterPartition(2, 0, (2,), got.partition_epoch))
    with pytest.raises(IneligibleReplicaError):
        c.active.alter_partition(1, -1, "t", 0, replication.AlterPartition(1, 0, (1, 2, 9), got.partition_epoch))
    with pytest.raises(StaleBrokerEpochError):
        c.active.alter_partition(1, 999, "t", 0, replication.AlterPartition(1, 0, (1,), got.partition_epoch))
    with pytest.raises(NotControllerError):
        c.controllers[2].alter_partition(1, -1, "t", 0, replication.AlterPartition(1, 0, (1,), got.partition_epoch))
    # The leader's replication state machine takes the answer as Kafka's leader does.
    assert replication.LeaderAndIsr(1, 0, (1, 2), got.partition_epoch) == got
    # The metadata carries the new ISR.
    cache = MetadataCache()
    for r in c.channel.requests(3, UpdateMetadataRequest):
        cache.update(r)
    assert cache.partitions[("t", 0)].isr == (1, 2) and cache.under_replicated() == [("t", 0)]


def test_create_topic_errors_are_kafkas(cluster):
    c = cluster()
    with pytest.raises(InvalidReplicationFactorError, match="larger than available brokers: 3"):
        c.admin.create_topic("t", 1, 4)
    with pytest.raises(InvalidTopicError):
        c.admin.create_topic("a/b", 1, 1)
    with pytest.raises(InvalidReplicaAssignmentError, match="not live"):
        c.admin.create_topic("t", 1, 1, assignment={0: [9]})
    with pytest.raises(InvalidReplicaAssignmentError, match="twice"):
        c.admin.create_topic("t", 1, 1, assignment={0: [1, 1]})
    c.admin.create_topic("t", 1, 2)
    with pytest.raises(InvalidPartitionsError):
        c.admin.create_partitions("t", 1)
    with pytest.raises(UnknownTopicOrPartitionError):
        c.admin.delete_topic("nope")


def test_reassignment_throttle_is_recorded_as_kafkas_tool_does(cluster):
    c = cluster(brokers=(1, 2, 3, 4))
    c.admin.create_topic("t", 2, 2, assignment={0: [1, 2], 1: [2, 3]})
    c.admin.set_reassignment_throttle({("t", 0): [3, 4], ("t", 1): [2, 3]}, 10_000_000)
    config = c.admin_session.get_entity_config("topics", "t")
    assert config["leader.replication.throttled.replicas"] == "0:1,0:2,1:2,1:3"
    assert config["follower.replication.throttled.replicas"] == "0:3,0:4"
    for b in (1, 2, 3, 4):
        broker = c.admin_session.get_entity_config("brokers", b)
        assert broker["leader.replication.throttled.rate"] == broker["follower.replication.throttled.rate"] == \
            "10000000"
    c.admin.clear_reassignment_throttle(["t"], [1, 2, 3, 4])
    assert "leader.replication.throttled.replicas" not in c.admin_session.get_entity_config("topics", "t")
    assert c.admin_session.get_entity_config("brokers", 1) == {}


def test_isr_change_notifications_of_kafka_2_leaders_reach_the_metadata(cluster):
    c = cluster()
    c.admin.create_topic("t", 1, 3, assignment={0: [1, 2, 3]})
    s = c.state("t")
    # A Kafka 2.x leader writes the ISR itself, then notifies the controller.
    c.sessions[1].update_partition_state("t", 0, dataclasses.replace(s, isr=(1, 2)), controller_epoch=None)
    c.channel.clear()
    with c.paused():
        c.sessions[1].propagate_isr_changes([("t", 0)])
    assert c.active.partition_state("t", 0).isr == (1, 2)
    cache = MetadataCache()
    cache.update(c.channel.requests(3, UpdateMetadataRequest)[-1])
    assert cache.partitions[("t", 0)].isr == (1, 2)
    assert c.admin_session.get_isr_change_notifications() == []


def test_a_topic_moving_is_deleted_once_its_reassignment_ends(cluster):
    c = cluster(brokers=(1, 2, 3))
    c.admin.create_topic("t", 1, 2, assignment={0: [1, 2]})
    c.active.alter_partition_reassignments({("t", 0): [1, 3]})
    with c.paused():
        c.admin.delete_topic("t")
    assert c.admin_session.get_topic_assignment("t") is not None  # ineligible while it moves
    s = c.state("t")
    c.active.alter_partition(1, -1, "t", 0, replication.AlterPartition(1, s.leader_epoch, (1, 2, 3), s.zk_version))
    assert c.admin_session.get_topics() == []
