"""A fake clock and a small driver for group-coordinator tests (no sleeps, no threads)."""

from __future__ import annotations

import itertools

from pylog.broker.assignors import RangeAssignor, assignor_for_name
from pylog.broker.consumer_protocol import (
    Assignment,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from pylog.broker.group import GroupCoordinator, GroupCoordinatorConfig, JoinGroupResult
from pylog.broker.group_offsets import InMemoryOffsetStore
from pylog.errors import MemberIdRequiredError

SESSION = 10_000
REBALANCE = 30_000


class FakeClock:
    def __init__(self, t: int = 1_700_000_000_000) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t

    def advance(self, ms: int) -> None:
        self.t += ms


class Harness:
    def __init__(self, group: str = "g", **config) -> None:
        # Members a test starts "together" land in one generation (as with Kafka's 3 s).
        config.setdefault("initial_rebalance_delay_ms", 1000)
        self.clock = FakeClock()
        self.store = InMemoryOffsetStore(8)
        self.config = GroupCoordinatorConfig(offsets_topic_num_partitions=8, **config)
        counter = itertools.count()
        self.gc = GroupCoordinator(self.store, self.config, clock=self.clock,
                                   member_id_suffix=lambda: f"id{next(counter)}")
        self.group = group

    def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        self.gc.tick()

    @staticmethod
    def metadata(topics=("t",), assignor="range", **kw) -> list[tuple[str, bytes]]:
        return [(assignor, encode_subscription(Subscription(list(topics), **kw)))]

    def join(self, member_id: str = "", client_id: str = "client", *, topics=("t",),
             protocols=None, session=SESSION, rebalance=REBALANCE, instance=None,
             require_known=True, group=None, protocol_type="consumer", skip=False):
        return self.gc.join_group(
            self.group if group is None else group, member_id, protocol_type,
            protocols if protocols is not None else self.metadata(topics),
            session_timeout_ms=session, rebalance_timeout_ms=rebalance, client_id=client_id,
            client_host="/127.0.0.1", group_instance_id=instance,
            require_known_member_id=require_known, supports_skip_assignment=skip)

    def join_new(self, client_id: str = "client", **kw):
        """A new dynamic member's two JoinGroups (v4+); returns the pending second one."""
        first = self.join("", client_id, **kw).result()
        assert first.error_code == MemberIdRequiredError.error_code
        return self.join(first.member_id, client_id, **kw)

    def sync(self, result: JoinGroupResult, assignments=None, *, instance=None, group=None):
        return self.gc.sync_group(self.group if group is None else group, result.generation_id, result.member_id,
                                  group_instance_id=instance, protocol_type="consumer",
                                  protocol_name=result.protocol_name, assignments=assignments)

    def leader_assignments(self, leader: JoinGroupResult, partitions: dict[str, int]) -> dict[str, bytes]:
        subs = {}
        for m in leader.members:
            s = decode_subscription(m.metadata)
            s.group_instance_id = m.group_instance_id
            subs[m.member_id] = s
        assignor = assignor_for_name(leader.protocol_name) if leader.protocol_name else RangeAssignor()
        return {m: encode_assignment(Assignment(a)) for m, a in assignor.assign(partitions, subs).items()}

    def complete_rebalance(self, pendings, partitions=None, instances=None) -> dict[str, dict[str, list[int]]]:
        """Given every member's pending JoinGroup, finish the join phase (ticking the
        clock as needed), run the leader's assignment, sync everyone; return each
        member's decoded assignment.  ``instances`` lists the members' group instance
        ids, in the order of ``pendings``."""
        partitions = partitions or {"t": 6}
        for _ in range(100):
            if all(p.done() for p in pendings):
                break
            self.advance(1000)
        results = [p.result() for p in pendings]
        assert all(r.error_code == 0 for r in results), results
        instances = dict(zip((r.member_id for r in results), instances or [None] * len(results)))
        leader = next(r for r in results if r.is_leader)
        syncs = []
        for r in results:
            assignments = self.leader_assignments(leader, partitions) if r.is_leader else None
            syncs.append((r, self.sync(r, assignments, instance=instances.get(r.member_id))))
        out = {}
        for r, s in syncs:
            res = s.result()
            assert res.error_code == 0, res
            out[r.member_id] = decode_assignment(res.assignment).partitions
        return out


def owners(assignments: dict[str, dict[str, list[int]]]) -> dict[tuple[str, int], str]:
    """(topic, partition) -> member; asserts no partition has two owners."""
    out: dict[tuple[str, int], str] = {}
    for member, topics in assignments.items():
        for t, ps in topics.items():
            for p in ps:
                assert (t, p) not in out, f"{t}-{p} owned by {out.get((t, p))} and {member}"
                out[(t, p)] = member
    return out
