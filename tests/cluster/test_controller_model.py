"""A hypothesis state machine drives controllers on the in-memory ZooKeeper through
random broker kills, restarts, session expiries (controller failovers), controlled
shutdowns, topic operations, ISR changes, elections and reassignments, and checks
Kafka's invariants after every step:

- every partition has at most one leader per leader epoch (in ZooKeeper, and in every
  LeaderAndIsr any controller, zombie or not, sent);
- leader ∈ ISR ⊆ replicas; leader epochs and the controller epoch only grow;
- a partition is without a live leader only when no live ISR member exists (with unclean
  election enabled: no live replica at all).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cluster.test_controller import Cluster
from pylog.cluster import replication
from pylog.cluster.channel import LeaderAndIsrRequest
from pylog.cluster.controller import ControllerConfig, ElectionType
from pylog.errors import PylogError

BROKERS = (1, 2, 3, 4)
TOPICS = ("a", "b", "c")


class ControllerMachine(RuleBasedStateMachine):
    unclean = False

    def __init__(self) -> None:
        super().__init__()
        self.c = Cluster(brokers=BROKERS, config=ControllerConfig(unclean_leader_election_enable=self.unclean,
                                                                  leader_imbalance_check_interval_seconds=1))
        self.down: set[int] = set()
        self.channels = list(self.c.channels.values())
        self.leader_of_epoch: dict[tuple[str, int, int], int] = {}
        self.max_epoch: dict[tuple[str, int], int] = {}
        self.controller_epoch = 0
        self.now_ms = 0
        #: A controller whose events wait in its queue (SIGSTOP), then run (SIGCONT): a zombie
        #: once another controller was elected meanwhile.
        self.stalled = None

    def teardown(self) -> None:
        event(f"partitions whose state the invariants saw: {min(len(self.max_epoch), 5)}"
              f"{'+' if len(self.max_epoch) >= 5 else ''}")
        self.c.close()

    @property
    def controller(self):
        """The active controller; rules that ask it wait while a stalled one holds the role."""
        active = [c for c in self.c.controllers.values() if c.is_active and c is not self.stalled]
        return active[0] if len(active) == 1 else None

    @property
    def live(self) -> list[int]:
        return [b for b in BROKERS if b not in self.down]

    def _started(self, b: int) -> None:
        self.c.start(b)
        self.channels.append(self.c.channels[b])

    # -- faults ------------------------------------------------------------------------

    @precondition(lambda self: len(self.live) > 1)
    @rule(data=st.data())
    def kill(self, data):
        b = data.draw(st.sampled_from(self.live))
        if self.stalled is self.c.controllers[b]:
            self.stalled = None
        self.c.kill(b)
        self.down.add(b)

    @precondition(lambda self: self.stalled is None and self.controller is not None)
    @rule()
    def stall_the_controller(self):
        self.stalled = self.controller
        self.stalled._wakeup = lambda: None

    @precondition(lambda self: self.stalled is not None)
    @rule()
    def resume_the_stalled_controller(self):
        stalled, self.stalled = self.stalled, None
        stalled._wakeup = None
        stalled.process_events()

    @precondition(lambda self: self.down)
    @rule(data=st.data())
    def restart(self, data):
        b = data.draw(st.sampled_from(sorted(self.down)))
        self.down.discard(b)
        self._started(b)

    @rule(data=st.data())
    def expire_session(self, data):
        b = data.draw(st.sampled_from(self.live))
        self.c.zk.expire_session(self.c.sessions[b].session_id)

    @precondition(lambda self: len(self.live) > 1 and self.controller is not None)
    @rule(data=st.data())
    def controlled_shutdown_then_stop(self, data):
        b = data.draw(st.sampled_from(self.live))
        self.controller.controlled_shutdown(b)
        if self.stalled is self.c.controllers[b]:
            self.stalled = None
        self.c.kill(b)
        self.down.add(b)

    # -- topics ------------------------------------------------------------------------

    @initialize(topic=st.sampled_from(TOPICS), partitions=st.integers(1, 3), rf=st.integers(1, 3))
    def first_topic(self, topic, partitions, rf):
        # Every run starts with partitions: left to the rules, about half the runs never
        # created a topic (or only under a stalled controller), so no invariant saw a
        # partition state (the teardown's event() counts them).
        self.c.admin.create_topic(topic, partitions, rf)

    @rule(topic=st.sampled_from(TOPICS), partitions=st.integers(1, 3), rf=st.integers(1, 3))
    def create_topic(self, topic, partitions, rf):
        try:
            self.c.admin.create_topic(topic, partitions, rf)
        except PylogError as e:  # exists, or too few brokers: Kafka's answers, tested elsewhere
            event(f"create_topic refused: {type(e).__name__}")

    @rule(topic=st.sampled_from(TOPICS))
    def delete_topic(self, topic):
        try:
            with self.c.paused():
                self.c.admin.delete_topic(topic)
        except PylogError as e:
            event(f"delete_topic refused: {type(e).__name__}")

    @rule(topic=st.sampled_from(TOPICS), more=st.integers(1, 2))
    def create_partitions(self, topic, more):
        a = self.c.admin_session.get_topic_assignment(topic)
        if a is None:
            return
        try:
            self.c.admin.create_partitions(topic, len(a.partitions) + more)
        except PylogError as e:
            event(f"create_partitions refused: {type(e).__name__}")

    @rule(data=st.data())
    def zookeeper_reassignment_or_election(self, data):
        parts = self._partitions()
        if not parts or not self.live:
            return
        tp, r, s = data.draw(st.sampled_from(parts))
        try:
            with self.c.paused():
                if data.draw(st.booleans()):
                    self.c.admin_session.create_partition_reassignment(
                        {tp: data.draw(st.lists(st.sampled_from(self.live), min_size=1, max_size=3, unique=True))})
                else:
                    self.c.admin_session.create_preferred_replica_election([tp])
        except PylogError as e:  # one is in progress already
            event(f"ZooKeeper reassignment or election refused: {type(e).__name__}")

    # -- what leaders and admins ask -----------------------------------------------------

    def _partitions(self):
        out = []
        for topic in self.c.admin_session.get_topics():
            a = self.c.admin_session.get_topic_assignment(topic)
            if a is None:
                continue
            for p, r in sorted(a.partitions.items()):
                state = self.c.admin_session.get_partition_state(topic, p)
                if state is not None:
                    out.append(((topic, p), r, state))
        return out

    @precondition(lambda self: self.controller is not None)
    @rule(data=st.data(), grow=st.booleans())
    def leader_changes_isr(self, data, grow):
        candidates = [(tp, r, s) for tp, r, s in self._partitions() if s.leader in self.live]
        if not candidates:
            return
        tp, r, s = data.draw(st.sampled_from(candidates))
        if grow:
            extra = [b for b in r.replicas if b in self.live and b not in s.isr]
            new_isr = s.isr + tuple(extra[:1])
        else:
            new_isr = tuple(b for b in s.isr if b == s.leader or data.draw(st.booleans()))
        try:
            self.controller.alter_partition(s.leader, -1, tp[0], tp[1],
                                          replication.AlterPartition(s.leader, s.leader_epoch, new_isr, s.zk_version))
            event(f"ISR {'grown' if grow else 'shrunk'}")
        except PylogError as e:  # the topic is being deleted, or an ISR member is shutting down
            event(f"AlterPartition refused: {type(e).__name__}")

    @precondition(lambda self: self.controller is not None)
    @rule(data=st.data())
    def stale_alter_partition_is_refused(self, data):
        candidates = [(tp, r, s) for tp, r, s in self._partitions()
                      if s.leader in self.live and s.zk_version > 0 and s.isr != (s.leader,)]
        if not candidates:
            return
        tp, r, s = data.draw(st.sampled_from(candidates))
        stale = replication.AlterPartition(s.leader, s.leader_epoch, (s.leader,), s.zk_version - 1)
        with pytest.raises(PylogError):
            self.controller.alter_partition(s.leader, -1, tp[0], tp[1], stale)

    @precondition(lambda self: self.controller is not None)
    @rule(kind=st.sampled_from(list(ElectionType)))
    def elect_leaders(self, kind):
        self.controller.elect_leaders(kind)

    @precondition(lambda self: self.controller is not None)
    @rule(ms=st.integers(0, 2000))
    def time_passes(self, ms):
        self.now_ms += ms
        self.controller.tick(self.now_ms)

    @precondition(lambda self: self.controller is not None)
    @rule(data=st.data(), cancel=st.booleans())
    def reassign(self, data, cancel):
        parts = self._partitions()
        if not parts:
            return
        tp, r, s = data.draw(st.sampled_from(parts))
        target = None if cancel else data.draw(st.lists(st.sampled_from(self.live), min_size=1, max_size=3,
                                                        unique=True))
        self.controller.alter_partition_reassignments({tp: target})

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def one_active_controller_and_growing_epochs(self):
        if self.stalled is None:
            assert self.controller is not None and self.controller.broker_id in self.live
        epoch = self.c.controller_epoch()
        assert epoch >= self.controller_epoch
        self.controller_epoch = epoch
        for controller in self.c.controllers.values():
            assert controller.event_failures == []

    @invariant()
    def partition_states_are_sound(self):
        deleting = set(self.c.admin_session.get_topic_deletions())
        for topic in self.c.admin_session.get_topics():
            a = self.c.admin_session.get_topic_assignment(topic)
            for p, r in a.partitions.items():
                s = self.c.admin_session.get_partition_state(topic, p)
                if s is None:
                    if self.stalled is not None or topic in deleting:
                        continue  # not seen by the stalled controller yet; or never to be used
                    assert not any(b in self.live for b in r.replicas), f"{topic}-{p} has live replicas, no state"
                    continue
                key = (a.topic_id, p)
                assert s.leader_epoch >= self.max_epoch.get(key, -1)
                self.max_epoch[key] = s.leader_epoch
                assert self.leader_of_epoch.setdefault((*key, s.leader_epoch), s.leader) == s.leader
                assert set(s.isr) <= set(r.replicas) and s.isr
                if s.leader != -1:
                    assert s.leader in s.isr
                if topic in deleting or self.stalled is not None:
                    continue
                if s.leader not in self.live:
                    eligible = r.replicas if self.unclean else s.isr
                    assert not [b for b in eligible if b in self.live], f"{topic}-{p} {s} could have a leader"

    @invariant()
    def one_leader_per_epoch_in_what_brokers_were_told(self):
        ids = {}
        for channel in self.channels:
            for broker, requests in channel.sent.items():
                for request in requests:
                    if not isinstance(request, LeaderAndIsrRequest):
                        continue
                    for s in request.partition_states:
                        key = (request.topic_ids[s.topic], s.partition, s.leader_epoch)
                        assert ids.setdefault(key, s.leader) == s.leader, f"two leaders in epoch {key}"
            channel.clear()
        for key, leader in ids.items():
            assert self.leader_of_epoch.setdefault(key, leader) == leader


class UncleanControllerMachine(ControllerMachine):
    unclean = True


_FAST = settings(max_examples=60, stateful_step_count=40, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TestController = ControllerMachine.TestCase
TestController.settings = _FAST
TestUncleanController = UncleanControllerMachine.TestCase
TestUncleanController.settings = _FAST


@pytest.mark.long
def test_controller_model_long():
    from hypothesis.stateful import run_state_machine_as_test
    for machine in (ControllerMachine, UncleanControllerMachine):
        run_state_machine_as_test(machine, settings=settings(max_examples=300, stateful_step_count=60, deadline=None,
                                                             suppress_health_check=list(HealthCheck)))
