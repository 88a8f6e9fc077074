"""A hypothesis state machine over the group coordinator: simulated consumers join, sync,
heartbeat, commit, leave and restart while time jumps; after every step the coordinator's
invariants are checked."""

from collections import defaultdict

import pytest
from _group_harness import Harness
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pylog.broker.assignors import RangeAssignor
from pylog.broker.consumer_protocol import Assignment, decode_assignment, decode_subscription, encode_assignment
from pylog.broker.group import GroupState
from pylog.errors import (
    FencedInstanceIdError,
    IllegalGenerationError,
    MemberIdRequiredError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

NONE = 0
PARTITIONS = {"t": 6}
CLIENTS = [("dyn-0", None), ("dyn-1", None), ("dyn-2", None), ("stat-0", "inst-0"), ("stat-1", "inst-1")]


class Client:
    def __init__(self, name, instance):
        self.name = name
        self.instance = instance
        # Static members get sessions longer than the rebalance timeout (as they should, to
        # survive a restart), so they can miss a whole rebalance and stay members.
        self.session = 60_000 if instance else 10_000
        self.member_id = ""
        self.join = None        # PendingResponse of the last JoinGroup
        self.sync = None        # (generation, PendingResponse) of the last SyncGroup
        self.joined = None      # the last successful JoinGroupResult
        self.synced = None      # generation of the last successful SyncGroup
        self.fenced = False


class GroupMachine(RuleBasedStateMachine):
    @initialize(delay=st.sampled_from([0, 1000, 3000]))
    def setup(self, delay):
        # No offset expiration: the group then lives for the whole run, so generations
        # identify a rebalance unambiguously.
        self.h = Harness(initial_rebalance_delay_ms=delay, offsets_retention_check_interval_ms=10**12)
        self.gc = self.h.gc
        self.clients = [Client(n, i) for n, i in CLIENTS]
        self.pendings = []
        self.last_generation = 0
        self.leaders = defaultdict(set)                   # generation -> members told they lead
        self.assigned = defaultdict(dict)                 # generation -> member -> partitions
        self.generation_members = {}                      # generation -> members in the join response
        self.offset = 0

    # ---------------------------------------------------------------- client reactions

    def process(self):
        for c in self.clients:
            if c.join is not None and c.join.done():
                r, c.join = c.join.result(), None
                if r.error_code == NONE:
                    c.member_id, c.joined = r.member_id, r
                    if r.is_leader:
                        self.leaders[r.generation_id].add(r.member_id)
                        members = [m.member_id for m in r.members]
                        previous = self.generation_members.setdefault(r.generation_id, members)
                        assert previous == members or r.members == [] or set(previous) == set(members)
                elif r.error_code == MemberIdRequiredError.error_code:
                    c.member_id = r.member_id
                elif r.error_code == UnknownMemberIdError.error_code:
                    c.member_id, c.joined = "", None
                elif r.error_code == FencedInstanceIdError.error_code:
                    c.fenced = True
            if c.sync is not None and c.sync[1].done():
                generation, pending = c.sync
                c.sync = None
                r = pending.result()
                if r.error_code == NONE:
                    parts = decode_assignment(r.assignment).partitions if r.assignment else {}
                    mine = {("t", p) for p in parts.get("t", [])}
                    # A static member that restarts takes over its old incarnation's
                    # assignment in the same generation (the old one is fenced): the owner
                    # is the instance, not the member id.
                    owner = c.instance or c.member_id
                    seen = self.assigned[generation]
                    if owner in seen:
                        assert seen[owner] == mine           # one assignment per owner and generation
                    for other, theirs in seen.items():
                        if other != owner:
                            assert not (mine & theirs), f"generation {generation}: {other} and {owner}"
                    seen[owner] = mine
                    c.synced = generation
                else:
                    c.joined = None
                    if r.error_code == UnknownMemberIdError.error_code:
                        c.member_id = ""
                    elif r.error_code == FencedInstanceIdError.error_code:
                        c.fenced = True

    def track(self, pending):
        self.pendings.append(pending)
        return pending

    # ---------------------------------------------------------------- rules

    @rule(i=st.integers(0, len(CLIENTS) - 1))
    def join(self, i):
        c = self.clients[i]
        if c.fenced:
            return
        c.join = self.track(self.h.join(c.member_id, c.name, instance=c.instance, session=c.session))
        self.process()

    @rule(i=st.integers(0, len(CLIENTS) - 1))
    def sync(self, i):
        c = self.clients[i]
        if c.fenced or c.joined is None:
            return
        r = c.joined
        assignments = None
        if r.is_leader and r.members:
            subs = {}
            for m in r.members:
                s = decode_subscription(m.metadata)
                s.group_instance_id = m.group_instance_id
                subs[m.member_id] = s
            assignments = {m: encode_assignment(Assignment(a))
                           for m, a in RangeAssignor().assign(PARTITIONS, subs).items()}
        c.sync = (r.generation_id, self.track(self.h.sync(r, assignments, instance=c.instance)))
        self.process()

    @rule(i=st.integers(0, len(CLIENTS) - 1))
    def heartbeat(self, i):
        c = self.clients[i]
        if c.fenced or not c.member_id:
            return
        generation = c.joined.generation_id if c.joined else 0
        code = self.gc.heartbeat("g", generation, c.member_id, group_instance_id=c.instance)
        if code == UnknownMemberIdError.error_code:
            c.member_id, c.joined = "", None
        elif code in (IllegalGenerationError.error_code, RebalanceInProgressError.error_code):
            c.joined = None
        elif code == FencedInstanceIdError.error_code:
            c.fenced = True
        else:
            assert code in (NONE, RebalanceInProgressError.error_code)
        self.process()

    @rule(i=st.integers(0, len(CLIENTS) - 1))
    def commit(self, i):
        c = self.clients[i]
        if c.fenced or c.joined is None:
            return
        self.offset += 1
        generation = c.joined.generation_id
        out = self.gc.commit_offsets("g", {"t": {0: self.offset}}, generation_id=generation,
                                     member_id=c.member_id, group_instance_id=c.instance)
        if out["t"][0] == NONE:
            # Only a member of the current generation, outside CompletingRebalance, commits.
            assert self.gc.group_generation("g") == generation
            assert c.member_id in self.gc.group_members("g")
            assert self.gc.group_state("g") is not GroupState.COMPLETING_REBALANCE
            assert self.gc.fetch_offsets("g", {"t": [0]}).topics["t"][0].offset == self.offset
        self.process()

    @rule(i=st.integers(0, 2))
    def leave(self, i):
        c = self.clients[i]                              # dynamic members leave on shutdown
        if not c.member_id:
            return
        self.gc.leave_group("g", [c.member_id])
        c.member_id, c.joined = "", None
        self.process()

    @rule(i=st.integers(3, 4))
    def restart_static(self, i):
        c = self.clients[i]                              # a restart forgets the member id
        c.member_id, c.joined, c.fenced = "", None, False
        c.join = self.track(self.h.join("", c.name, instance=c.instance, session=c.session))
        self.process()

    @rule(i=st.integers(0, len(CLIENTS) - 1))
    def step(self, i):
        """What a well-behaved consumer does next: (re)join, sync, or heartbeat."""
        c = self.clients[i]
        if c.fenced or c.join is not None or c.sync is not None:
            return
        if c.joined is None:
            self.join(i)
        elif c.synced != c.joined.generation_id:
            self.sync(i)
        else:
            self.heartbeat(i)

    @rule(ms=st.sampled_from([1, 500, 1000, 3000, 9999, 10_000, 30_000, 120_000]))
    def advance(self, ms):
        self.h.advance(ms)
        self.process()

    # ---------------------------------------------------------------- invariants

    @invariant()
    def coordinator_is_consistent(self):
        if not hasattr(self, "gc"):
            return
        g = self.gc._groups.get("g")
        if g is None:
            assert self.last_generation == 0, "the group disappeared"
            return
        assert g.generation_id >= self.last_generation, "generation went back"
        self.last_generation = g.generation_id
        members = g.members
        if g.state in (GroupState.COMPLETING_REBALANCE, GroupState.STABLE):
            assert members, g.state
            assert g.leader_id in members
            assert g.protocol_name == "range"
        if members:
            assert g.leader_id in members
        else:
            assert g.state in (GroupState.EMPTY, GroupState.PREPARING_REBALANCE)
            assert g.leader_id is None
        if g.state is GroupState.EMPTY:
            assert not members
        assert g.pending_sync <= set(members)
        assert {m.group_instance_id: mid for mid, m in members.items() if m.group_instance_id} == g.static_members
        assert not set(g.pending_members) & set(members)
        if g.state is not GroupState.PREPARING_REBALANCE:
            assert all(m.join_pending is None for m in members.values())
        if g.state is not GroupState.COMPLETING_REBALANCE:
            assert all(m.sync_pending is None for m in members.values())

    @invariant()
    def one_leader_per_generation(self):
        if hasattr(self, "leaders"):
            for generation, leaders in self.leaders.items():
                assert len(leaders) <= 1, (generation, leaders)

    def teardown(self):
        if not hasattr(self, "h"):
            return
        # Liveness: with time, every request gets its answer.
        for _ in range(4):
            self.h.advance(300_000)
        assert all(p.done() for p in self.pendings)


GroupMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
test_group_state_machine = GroupMachine.TestCase


@pytest.mark.long
def test_group_state_machine_long():
    class Long(GroupMachine):
        pass

    Long.TestCase.settings = settings(max_examples=1500, stateful_step_count=80, deadline=None)
    Long.TestCase().runTest()
