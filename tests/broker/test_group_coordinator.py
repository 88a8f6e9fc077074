"""Group coordinator scenarios, driven by a fake clock."""

import threading

import pytest
from _group_harness import REBALANCE, SESSION, Harness, owners

from pylog.broker.consumer_protocol import Subscription, encode_subscription
from pylog.broker.group import (
    CommitOffset,
    FetchedOffset,
    GroupCoordinator,
    GroupCoordinatorConfig,
    GroupState,
    MemberIdentity,
    PendingResponse,
)
from pylog.broker.group_offsets import (
    GroupMetadataKey,
    OffsetCommitKey,
    OffsetCommitValue,
    decode_group_metadata_value,
    decode_key,
    offset_commit_record,
    partition_for_group,
)
from pylog.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    FencedInstanceIdError,
    GroupIdNotFoundError,
    GroupSubscribedToTopicError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    InvalidCommitOffsetSizeError,
    InvalidConfigError,
    InvalidGroupIdError,
    InvalidRequestError,
    InvalidSessionTimeoutError,
    KafkaStorageError,
    MemberIdRequiredError,
    NonEmptyGroupError,
    NotCoordinatorError,
    NotLeaderError,
    OffsetMetadataTooLargeError,
    RebalanceInProgressError,
    RecordTooLargeError,
    RequestTimedOutError,
    UnknownMemberIdError,
)

NONE = 0
UNKNOWN_MEMBER = UnknownMemberIdError.error_code
ILLEGAL_GENERATION = IllegalGenerationError.error_code
REBALANCING = RebalanceInProgressError.error_code
FENCED = FencedInstanceIdError.error_code


def stable_group(h: Harness, n: int = 3, partitions=None):
    """n dynamic members in a Stable group; returns (join results, assignments)."""
    pendings = [h.join_new(f"c{i}") for i in range(n)]
    assignments = h.complete_rebalance(pendings, partitions)
    return [p.result() for p in pendings], assignments


def group_records(h: Harness):
    return [(decode_key(k), v) for k, v in h.store.records()]


# --------------------------------------------------------------------------- joining

def test_three_members_join_with_initial_delay():
    h = Harness(initial_rebalance_delay_ms=3000)
    first = [h.join("", f"c{i}").result() for i in range(3)]
    assert [r.error_code for r in first] == [MemberIdRequiredError.error_code] * 3
    assert [r.member_id for r in first] == ["c0-id0", "c1-id1", "c2-id2"]
    pendings = [h.join(r.member_id, f"c{i}") for i, r in enumerate(first)]
    assert h.gc.group_state("g") is GroupState.PREPARING_REBALANCE
    h.advance(2999)
    assert not any(p.done() for p in pendings)           # still within the initial delay
    h.advance(1)
    assert not any(p.done() for p in pendings)           # members arrived: delay extended once
    h.advance(3000)
    results = [p.result() for p in pendings]
    assert {r.generation_id for r in results} == {1}
    assert {r.leader for r in results} == {"c0-id0"}     # the first member to join leads
    assert {r.protocol_name for r in results} == {"range"}
    assert [len(r.members) for r in results] == [3, 0, 0]
    assert [m.member_id for m in results[0].members] == [r.member_id for r in results]
    assert h.gc.group_state("g") is GroupState.COMPLETING_REBALANCE

    leader = results[0]
    follower_syncs = [h.sync(r) for r in results[1:]]
    assert not any(s.done() for s in follower_syncs)     # followers wait for the leader
    leader_sync = h.sync(leader, h.leader_assignments(leader, {"t": 6}))
    assert all(s.done() for s in follower_syncs + [leader_sync])
    assert h.gc.group_state("g") is GroupState.STABLE
    from pylog.broker.consumer_protocol import decode_assignment
    got = {r.member_id: decode_assignment(s.result().assignment).partitions
           for r, s in zip(results, [leader_sync] + follower_syncs)}
    assert got == {"c0-id0": {"t": [0, 1]}, "c1-id1": {"t": [2, 3]}, "c2-id2": {"t": [4, 5]}}
    # The assignment was persisted with the generation.
    (key, value), = [(k, v) for k, v in group_records(h) if isinstance(k, GroupMetadataKey)]
    stored = decode_group_metadata_value(value)
    assert (stored.generation, stored.protocol, stored.leader) == (1, "range", "c0-id0")
    assert [m.member_id for m in stored.members] == list(got)
    assert all(m.assignment for m in stored.members)


def test_initial_delay_is_bounded_by_the_rebalance_timeout():
    h = Harness(initial_rebalance_delay_ms=3000)
    p0 = h.join_new("a", rebalance=7000)
    for i in range(10):                                   # a new member every 2.5 s
        h.advance(2500)
        if p0.done():
            break
        h.join_new(f"b{i}", rebalance=7000)
    assert p0.done()
    assert h.clock.t - 1_700_000_000_000 <= 7000 + 3000


def test_old_clients_get_a_member_id_without_member_id_required():
    h = Harness()
    p = h.join("", "old-client", require_known=False)
    h.advance(1000)
    r = p.result()
    assert r.error_code == NONE and r.member_id == "old-client-id0" and r.generation_id == 1


def test_pending_member_blocks_the_join_until_it_joins_or_expires():
    h = Harness()
    _, _ = stable_group(h, 1)
    first = h.join("", "late").result()                   # MEMBER_ID_REQUIRED, pending
    assert first.error_code == MemberIdRequiredError.error_code
    existing = h.gc.group_members("g")[0]
    assert h.gc.heartbeat("g", 1, existing) == NONE        # a pending id does not rebalance
    other = h.join_new("other")                           # a real join starts the rebalance
    rejoin = h.join(existing, "c0")
    assert not rejoin.done()                              # waits for the pending member
    h.advance(SESSION)                                    # which never comes back
    assert rejoin.done() and other.done()
    assert rejoin.result().generation_id == 2
    assert len(h.gc.group_members("g")) == 2


def test_join_errors():
    h = Harness()
    assert h.join("", group="").result().error_code == InvalidGroupIdError.error_code
    assert h.join("", session=5999).result().error_code == InvalidSessionTimeoutError.error_code
    assert h.join("", session=1_800_001).result().error_code == InvalidSessionTimeoutError.error_code
    assert h.join("", protocols=[]).result().error_code == InconsistentGroupProtocolError.error_code
    with pytest.raises(InvalidRequestError):
        h.join("", protocols=[("range", 5)])
    with pytest.raises(InvalidRequestError):
        h.join(None)
    assert h.join("someone").result().error_code == UNKNOWN_MEMBER      # unknown group
    assert h.gc.group_state("g") is None                  # failed joins leave no group behind
    stable_group(h, 1)
    assert h.join("someone-else").result().error_code == UNKNOWN_MEMBER
    r = h.join("", protocol_type="connect").result()
    assert r.error_code == InconsistentGroupProtocolError.error_code
    r = h.join("", protocols=h.metadata(assignor="roundrobin")).result()
    assert r.error_code == InconsistentGroupProtocolError.error_code


def test_protocol_is_chosen_by_vote_among_common_protocols():
    h = Harness(initial_rebalance_delay_ms=100)
    sub = encode_subscription(Subscription(["t"]))
    prefs = [[("range", sub), ("roundrobin", sub), ("x", sub)],
             [("roundrobin", sub), ("range", sub)],
             [("roundrobin", sub), ("range", sub), ("y", sub)]]
    pendings = [h.join_new(f"c{i}", protocols=p) for i, p in enumerate(prefs)]
    h.advance(1000)
    assert {p.result().protocol_name for p in pendings} == {"roundrobin"}


def test_rejoin_during_completing_rebalance_with_same_metadata_gets_current_generation():
    h = Harness()
    pendings = [h.join_new(f"c{i}") for i in range(2)]
    h.advance(2000)
    results = [p.result() for p in pendings]
    assert h.gc.group_state("g") is GroupState.COMPLETING_REBALANCE
    again = h.join(results[0].member_id, "c0").result()   # the leader lost its response
    assert again.generation_id == results[0].generation_id and len(again.members) == 2
    assert h.gc.group_state("g") is GroupState.COMPLETING_REBALANCE


def test_follower_rejoin_in_stable_without_change_does_not_rebalance_but_leader_does():
    h = Harness()
    results, _ = stable_group(h, 2)
    again = h.join(results[1].member_id, "c1").result()
    assert again.error_code == NONE and again.generation_id == 1 and again.members == []
    assert h.gc.group_state("g") is GroupState.STABLE
    pending = h.join(results[0].member_id, "c0")          # the leader asks for a rebalance
    assert h.gc.group_state("g") is GroupState.PREPARING_REBALANCE
    assert h.gc.heartbeat("g", 1, results[1].member_id) == REBALANCING
    h.join(results[1].member_id, "c1")
    assert pending.result().generation_id == 2


# --------------------------------------------------------------------------- leaving, crashing

def test_member_leaving_rebalances_and_partitions_are_reowned():
    h = Harness()
    results, gen1 = stable_group(h, 3)
    owners(gen1)
    leaver = results[1].member_id
    out = h.gc.leave_group("g", [leaver])
    assert out.error_code == NONE and out.members[0].error_code == NONE
    assert h.gc.group_state("g") is GroupState.PREPARING_REBALANCE
    stay = [r for r in results if r.member_id != leaver]
    assert all(h.gc.heartbeat("g", 1, r.member_id) == REBALANCING for r in stay)
    assert h.gc.heartbeat("g", 1, leaver) == UNKNOWN_MEMBER
    # Rejoining completes the join as soon as every remaining member is back: no timeout.
    pendings = [h.join(r.member_id, "c") for r in stay]
    assert all(p.done() for p in pendings)
    gen2 = h.complete_rebalance(pendings)
    assert {p.result().generation_id for p in pendings} == {2}
    assert set(owners(gen2)) == {("t", p) for p in range(6)}
    assert set(gen2) == {r.member_id for r in stay}


def test_leader_leaving_hands_leadership_to_the_next_member():
    h = Harness()
    results, _ = stable_group(h, 3)
    h.gc.leave_group("g", [MemberIdentity(results[0].member_id, reason="shutting down")])
    pendings = [h.join(r.member_id, "c") for r in results[1:]]
    assert {p.result().leader for p in pendings} == {results[1].member_id}


def test_crashed_member_is_removed_after_its_session_timeout():
    h = Harness()
    results, _ = stable_group(h, 3)
    alive = [r.member_id for r in results[:2]]
    crashed = results[2].member_id
    for _ in range(3):                                    # the others heartbeat every 3 s
        h.advance(3000)
        assert [h.gc.heartbeat("g", 1, m) for m in alive] == [NONE, NONE]
    assert crashed in h.gc.group_members("g")
    h.advance(1000)                                       # 10 s since the crashed one's last sign
    assert crashed not in h.gc.group_members("g")
    assert h.gc.group_state("g") is GroupState.PREPARING_REBALANCE
    assert [h.gc.heartbeat("g", 1, m) for m in alive] == [REBALANCING, REBALANCING]
    pendings = [h.join(m, "c") for m in alive]
    gen2 = h.complete_rebalance(pendings)
    assert set(gen2) == set(alive) and len(owners(gen2)) == 6


def test_expiry_is_applied_before_a_late_request():
    h = Harness()
    results, _ = stable_group(h, 2)
    h.clock.advance(SESSION + 1)                          # no tick in between
    assert h.gc.heartbeat("g", 1, results[0].member_id) == UNKNOWN_MEMBER


def test_members_that_do_not_rejoin_are_removed_at_the_rebalance_timeout():
    h = Harness()
    results, _ = stable_group(h, 3)
    new = h.join_new("newcomer")                          # starts a rebalance
    back = h.join(results[0].member_id, "c0")
    for _ in range(9):                                    # the others only heartbeat
        h.advance(3000)
        for r in results[1:]:
            assert h.gc.heartbeat("g", 1, r.member_id) == REBALANCING
    assert not back.done()
    h.advance(3000)                                       # 30 s: the rebalance timeout
    assert back.done() and new.done()
    assert back.result().generation_id == 2
    assert sorted(h.gc.group_members("g")) == sorted([results[0].member_id, new.result().member_id])


def test_new_member_that_never_gets_its_response_times_out():
    h = Harness(new_member_join_timeout_ms=60_000)
    results, _ = stable_group(h, 1)
    new = h.join_new("slow", rebalance=600_000)           # a rebalance that may take 10 minutes
    for _ in range(20):
        h.advance(3000)
        h.gc.heartbeat("g", 1, results[0].member_id)
    assert new.result().error_code == UNKNOWN_MEMBER       # removed after 60 s
    assert h.gc.group_members("g") == [results[0].member_id]


def test_member_that_never_syncs_is_removed_after_the_rebalance_timeout():
    h = Harness()
    pendings = [h.join_new(f"c{i}") for i in range(2)]
    h.advance(2000)
    leader, follower = [p.result() for p in pendings]
    sync = h.sync(leader, h.leader_assignments(leader, {"t": 4}))
    assert sync.result().error_code == NONE
    for _ in range(9):                                    # both heartbeat; the follower never syncs
        h.advance(3000)
        assert h.gc.heartbeat("g", 1, leader.member_id) == NONE
        assert h.gc.heartbeat("g", 1, follower.member_id) == NONE
    h.advance(3000)
    assert follower.member_id not in h.gc.group_members("g")
    assert h.gc.group_state("g") is GroupState.PREPARING_REBALANCE
    assert h.gc.heartbeat("g", 1, leader.member_id) == REBALANCING


# --------------------------------------------------------------------------- static membership

def static_group(h: Harness, instances=("i-a", "i-b"), session=SESSION):
    pendings = [h.join("", f"c{i}", instance=inst, session=session) for i, inst in enumerate(instances)]
    assignments = h.complete_rebalance(pendings, instances=list(instances))
    return {inst: p.result() for inst, p in zip(instances, pendings)}, assignments


def test_static_member_restart_without_rebalance():
    h = Harness()
    members, gen1 = static_group(h)
    old = members["i-a"]
    assert old.member_id.startswith("i-a-")              # static ids start with the instance id
    restarted = h.join("", "c0", instance="i-a").result()
    assert restarted.error_code == NONE
    assert restarted.member_id != old.member_id
    assert restarted.generation_id == 1
    assert h.gc.group_state("g") is GroupState.STABLE     # no rebalance
    assert h.gc.heartbeat("g", 1, members["i-b"].member_id) == NONE
    # The old incarnation is fenced.
    assert h.gc.heartbeat("g", 1, old.member_id, group_instance_id="i-a") == FENCED
    # The new one syncs and gets the old assignment back.
    from pylog.broker.consumer_protocol import decode_assignment
    sync = h.sync(restarted, instance="i-a").result()
    assert decode_assignment(sync.assignment).partitions == gen1[old.member_id]
    assert h.gc.heartbeat("g", 1, restarted.member_id, group_instance_id="i-a") == NONE
    # The replacement was persisted (a restart of the coordinator keeps the new id).
    last = decode_group_metadata_value([v for k, v in group_records(h) if isinstance(k, GroupMetadataKey)][-1])
    assert restarted.member_id in [m.member_id for m in last.members]


def test_static_leader_restart_is_told_to_skip_assignment():
    h = Harness()
    members, _ = static_group(h)
    leader_instance = next(i for i, r in members.items() if r.is_leader)
    new = h.join("", "c", instance=leader_instance, skip=True).result()
    assert new.is_leader and new.skip_assignment and len(new.members) == 2
    h2 = Harness()
    members2, _ = static_group(h2)
    leader2 = next(i for i, r in members2.items() if r.is_leader)
    old_client = h2.join("", "c", instance=leader2).result()   # JoinGroup < v9
    assert not old_client.is_leader and old_client.leader == members2[leader2].member_id


def test_static_member_restart_with_new_subscription_rebalances():
    h = Harness()
    members, _ = static_group(h)
    pending = h.join("", "c0", instance="i-a", topics=("t", "u"))
    assert h.gc.group_state("g") is GroupState.PREPARING_REBALANCE
    other = h.join(members["i-b"].member_id, "c1", instance="i-b")
    assert pending.result().generation_id == 2 and other.result().generation_id == 2


def test_static_member_restart_with_reset_consumer_state_does_not_rebalance():
    # A restarted Java consumer reports generation -1, no owned partitions and new sticky
    # assignor user data; its subscription (topics, rack) is the same: no rebalance, as
    # on Apache Kafka.
    h = Harness()
    pendings = [h.join("", f"c{i}", instance=inst,
                       protocols=h.metadata(generation_id=1, owned_partitions={"t": [i]}, user_data=b"gen1"))
                for i, inst in enumerate(("i-a", "i-b"))]
    h.complete_rebalance(pendings, instances=["i-a", "i-b"])
    restarted = h.join("", "c0", instance="i-a",
                       protocols=h.metadata(generation_id=-1, user_data=b"gen-1")).result()
    assert restarted.error_code == NONE and restarted.generation_id == 1
    assert h.gc.group_state("g") is GroupState.STABLE
    # A different rack is a different subscription (rack-aware assignors use it).
    h.join("", "c1", instance="i-b", protocols=h.metadata(generation_id=1, rack_id="r2"))
    assert h.gc.group_state("g") is GroupState.PREPARING_REBALANCE


def test_fenced_instance_id():
    h = Harness()
    members, _ = static_group(h)
    a = members["i-a"]
    b = members["i-b"]
    # Another process claims instance i-a with a member id that is not i-a's.
    assert h.join(b.member_id, "c", instance="i-a").result().error_code == FENCED
    assert h.gc.commit_offsets("g", {"t": {0: 1}}, generation_id=1, member_id=b.member_id,
                               group_instance_id="i-a") == {"t": {0: FENCED}}
    assert h.sync(b, instance="i-a").result().error_code == FENCED
    assert h.gc.leave_group("g", [MemberIdentity(b.member_id, "i-a")]).members[0].error_code == FENCED
    # Unknown instance ids are unknown members.
    assert h.gc.heartbeat("g", 1, a.member_id, group_instance_id="i-zzz") == UNKNOWN_MEMBER
    assert h.gc.group_state("g") is GroupState.STABLE


def test_static_member_waiting_in_join_is_fenced_by_its_replacement():
    h = Harness()
    members, _ = static_group(h)
    h.join_new("newcomer")                                # rebalance starts
    waiting = h.join(members["i-a"].member_id, "c0", instance="i-a")
    replacement = h.join("", "c0", instance="i-a")
    assert waiting.result().error_code == FENCED
    h.join(members["i-b"].member_id, "c1", instance="i-b")
    assert replacement.result().error_code == NONE and replacement.result().generation_id == 2


def test_static_members_are_not_removed_when_they_miss_a_rebalance():
    h = Harness()
    members, _ = static_group(h, session=120_000)         # sessions outlast a restart
    newcomer = h.join_new("newcomer")
    back = h.join(members["i-a"].member_id, "c0", instance="i-a", session=120_000)
    h.advance(REBALANCE)                                  # i-b does not rejoin (restarting)
    result = back.result()
    assert result.generation_id == 2 and newcomer.result().generation_id == 2
    assert members["i-b"].member_id in h.gc.group_members("g")
    # The leader assigns to i-b as well, from its last known subscription.
    leader = next(r for r in (result, newcomer.result()) if r.is_leader)
    assert members["i-b"].member_id in [m.member_id for m in leader.members]
    follower = next(r for r in (result, newcomer.result()) if not r.is_leader)
    h.sync(follower, instance="i-a" if follower is result else None)
    h.sync(leader, h.leader_assignments(leader, {"t": 6}), instance="i-a" if leader is result else None)
    assert h.gc.group_state("g") is GroupState.STABLE
    # i-b comes back still thinking it is in generation 1.
    b = members["i-b"].member_id
    assert h.gc.commit_offsets("g", {"t": {0: 9}}, generation_id=1, member_id=b,
                               group_instance_id="i-b") == {"t": {0: ILLEGAL_GENERATION}}
    assert h.gc.heartbeat("g", 1, b, group_instance_id="i-b") == ILLEGAL_GENERATION
    rejoin = h.join(b, "c1", instance="i-b", session=120_000).result()
    assert rejoin.generation_id == 2 and h.gc.group_state("g") is GroupState.STABLE
    assert h.sync(rejoin, instance="i-b").result().assignment != b""
    assert h.gc.commit_offsets("g", {"t": {0: 9}}, generation_id=2, member_id=b,
                               group_instance_id="i-b") == {"t": {0: NONE}}


def test_admin_removes_a_static_member_by_instance_id():
    h = Harness()
    members, _ = static_group(h)
    out = h.gc.leave_group("g", [MemberIdentity("", "i-a"), MemberIdentity("", "i-nope"),
                                 MemberIdentity("ghost")])
    assert [m.error_code for m in out.members] == [NONE, UNKNOWN_MEMBER, UNKNOWN_MEMBER]
    assert h.gc.group_members("g") == [members["i-b"].member_id]


# --------------------------------------------------------------------------- heartbeat and sync errors

def test_heartbeat_errors():
    h = Harness()
    assert h.gc.heartbeat("nope", 0, "m") == UNKNOWN_MEMBER
    assert h.gc.heartbeat("", 0, "m") == InvalidGroupIdError.error_code
    results, _ = stable_group(h, 2)
    m = results[0].member_id
    assert h.gc.heartbeat("g", 0, m) == ILLEGAL_GENERATION
    assert h.gc.heartbeat("g", 1, "stranger") == UNKNOWN_MEMBER
    assert h.gc.heartbeat("g", 1, m) == NONE


def test_heartbeat_during_completing_rebalance_is_fine():
    h = Harness()
    pendings = [h.join_new(f"c{i}") for i in range(2)]
    h.advance(2000)
    r = pendings[1].result()
    assert h.gc.heartbeat("g", r.generation_id, r.member_id) == NONE


def test_sync_errors():
    h = Harness()
    assert h.gc.sync_group("nope", 1, "m").result().error_code == UNKNOWN_MEMBER
    pendings = [h.join_new(f"c{i}") for i in range(2)]
    h.advance(2000)
    leader, follower = [p.result() for p in pendings]
    assert h.gc.sync_group("g", 7, follower.member_id).result().error_code == ILLEGAL_GENERATION
    assert h.gc.sync_group("g", 1, follower.member_id, protocol_name="roundrobin").result().error_code == \
        InconsistentGroupProtocolError.error_code
    assert h.gc.sync_group("g", 1, "stranger").result().error_code == UNKNOWN_MEMBER
    # The leader forgets a member: it gets an empty assignment.
    s1 = h.sync(follower)
    h.sync(leader, {leader.member_id: b"\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"})
    assert s1.result().error_code == NONE and s1.result().assignment == b""
    # A rebalance in progress: SyncGroup is refused.
    h.join_new("third")
    assert h.sync(leader).result().error_code == REBALANCING
    with pytest.raises(InvalidRequestError):
        h.gc.sync_group("g", 1, leader.member_id, assignments={"x": 5})


def test_waiting_followers_are_told_to_rejoin_when_a_rebalance_starts():
    h = Harness()
    pendings = [h.join_new(f"c{i}") for i in range(2)]
    h.advance(2000)
    follower_sync = h.sync(pendings[1].result())
    h.join_new("third")
    assert follower_sync.result().error_code == REBALANCING


# --------------------------------------------------------------------------- offsets

def test_commit_and_fetch_with_metadata():
    h = Harness()
    results, _ = stable_group(h, 2)
    m = results[0].member_id
    out = h.gc.commit_offsets("g", {"t": {0: CommitOffset(42, "note", 5), 1: 7}}, generation_id=1, member_id=m)
    assert out == {"t": {0: NONE, 1: NONE}}
    fetched = h.gc.fetch_offsets("g", {"t": [0, 1, 2], "other": [0]})
    assert fetched.error_code == NONE
    t = fetched.topics["t"]
    assert (t[0].offset, t[0].metadata, t[0].leader_epoch) == (42, "note", 5)
    assert (t[1].offset, t[1].metadata) == (7, "")
    assert t[2].offset == -1 and fetched.topics["other"][0].offset == -1
    assert set(h.gc.fetch_offsets("g").topics["t"]) == {0, 1}
    assert h.gc.fetch_offsets("never-seen", {"t": [0]}).topics["t"][0].offset == -1


def test_stale_generation_commit_is_rejected():
    h = Harness()
    results, _ = stable_group(h, 2)
    m0, m1 = results[0].member_id, results[1].member_id
    h.gc.leave_group("g", [m1])
    h.complete_rebalance([h.join(m0, "c0")])
    assert h.gc.group_generation("g") == 2
    assert h.gc.commit_offsets("g", {"t": {0: 5}}, generation_id=1, member_id=m0) == \
        {"t": {0: ILLEGAL_GENERATION}}
    assert h.gc.commit_offsets("g", {"t": {0: 5}}, generation_id=2, member_id=m1) == \
        {"t": {0: UNKNOWN_MEMBER}}
    assert h.gc.commit_offsets("g", {"t": {0: 5}}) == {"t": {0: UNKNOWN_MEMBER}}   # no member id
    assert h.gc.fetch_offsets("g", {"t": [0]}).topics["t"][0].offset == -1           # nothing changed
    assert h.gc.commit_offsets("g", {"t": {0: 5}}, generation_id=2, member_id=m0) == {"t": {0: NONE}}


def test_commits_to_unknown_groups():
    h = Harness()
    assert h.gc.commit_offsets("ghost", {"t": {0: 1}}, generation_id=3, member_id="m") == \
        {"t": {0: ILLEGAL_GENERATION}}
    assert h.gc.group_state("ghost") is None
    # Generation -1: a group that only stores offsets (admin tools, manual assignment).
    assert h.gc.commit_offsets("simple", {"t": {0: 11}}) == {"t": {0: NONE}}
    assert h.gc.group_state("simple") is GroupState.EMPTY
    assert h.gc.fetch_offsets("simple", {"t": [0]}).topics["t"][0].offset == 11


def test_commit_during_rebalance():
    h = Harness()
    results, _ = stable_group(h, 2)
    m0, m1 = results[0].member_id, results[1].member_id
    h.join_new("third")                                   # PreparingRebalance
    # Members of the current generation may still commit (before rejoining).
    assert h.gc.commit_offsets("g", {"t": {0: 3}}, generation_id=1, member_id=m0) == {"t": {0: NONE}}
    h.join(m0, "c0")
    h.join(m1, "c1")
    assert h.gc.group_state("g") is GroupState.COMPLETING_REBALANCE
    assert h.gc.commit_offsets("g", {"t": {0: 4}}, generation_id=2, member_id=m0) == {"t": {0: REBALANCING}}
    assert h.gc.fetch_offsets("g", {"t": [0]}).topics["t"][0].offset == 3


def test_offset_metadata_too_large_is_per_partition():
    h = Harness(offset_metadata_max_bytes=10)
    out = h.gc.commit_offsets("s", {"t": {0: CommitOffset(1, "x" * 11), 1: CommitOffset(2, "x" * 10)}})
    assert out == {"t": {0: OffsetMetadataTooLargeError.error_code, 1: NONE}}
    fetched = h.gc.fetch_offsets("s", {"t": [0, 1]}).topics["t"]
    assert fetched[0].offset == -1 and fetched[1].offset == 2


def test_bad_commit_input_raises_and_changes_nothing():
    h = Harness()
    with pytest.raises(InvalidRequestError):
        h.gc.commit_offsets("s", {"t": {0: "five"}})
    with pytest.raises(InvalidRequestError):
        h.gc.commit_offsets("s", {"t": {0: CommitOffset(1, metadata=5)}})
    with pytest.raises(InvalidRequestError):
        h.gc.commit_offsets("s", [("t", 0)])
    assert h.gc.group_state("s") is None and h.store.records() == []


@pytest.mark.parametrize("failure,code", [
    (NotLeaderError("moved"), NotCoordinatorError.error_code),
    (KafkaStorageError("disk"), NotCoordinatorError.error_code),
    (RecordTooLargeError("big"), InvalidCommitOffsetSizeError.error_code),
    (RequestTimedOutError("slow"), CoordinatorNotAvailableError.error_code),
    (OSError("boom"), -1),
])
def test_storage_failure_fails_the_commit_and_changes_nothing(failure, code):
    h = Harness()
    assert h.gc.commit_offsets("s", {"t": {0: 1}}) == {"t": {0: NONE}}
    h.store.fail_with = failure
    assert h.gc.commit_offsets("s", {"t": {0: 2, 1: 2}}) == {"t": {0: code, 1: code}}
    t = h.gc.fetch_offsets("s", {"t": [0, 1]}).topics["t"]
    assert (t[0].offset, t[1].offset) == (1, -1)


def test_storage_failure_during_sync_fails_the_generation():
    h = Harness()
    pendings = [h.join_new(f"c{i}") for i in range(2)]
    h.advance(2000)
    leader, follower = [p.result() for p in pendings]
    waiting = h.sync(follower)
    h.store.fail_with = NotLeaderError("moved")
    out = h.sync(leader, h.leader_assignments(leader, {"t": 2})).result()
    assert out.error_code == NotCoordinatorError.error_code
    assert waiting.result().error_code == NotCoordinatorError.error_code
    assert h.gc.group_state("g") is GroupState.PREPARING_REBALANCE


def test_offsets_fetch_after_replay_from_the_store():
    h = Harness()
    results, assignments = stable_group(h, 2)
    m0 = results[0].member_id
    h.gc.commit_offsets("g", {"t": {0: CommitOffset(100, "a", 3), 1: 200}}, generation_id=1, member_id=m0)
    h.gc.commit_offsets("g", {"t": {0: CommitOffset(150, "b", 4)}}, generation_id=1, member_id=m0)
    h.gc.commit_offsets("simple", {"u": {5: CommitOffset(9, "s")}})
    # A new coordinator (the broker restarted) rebuilds everything from the records.
    restarted = GroupCoordinator(h.store, h.config, clock=h.clock)
    assert restarted.load(h.store.records()) == 2
    t = restarted.fetch_offsets("g", {"t": [0, 1]}).topics["t"]
    assert (t[0].offset, t[0].metadata, t[0].leader_epoch) == (150, "b", 4)
    assert t[1].offset == 200
    assert restarted.fetch_offsets("simple", {"u": [5]}).topics["u"][5].metadata == "s"
    assert restarted.group_state("g") is GroupState.STABLE
    assert restarted.group_generation("g") == 1
    assert restarted.group_leader("g") == m0
    # Members carry on in their generation, and get their assignment back.
    assert restarted.heartbeat("g", 1, m0) == NONE
    from pylog.broker.consumer_protocol import decode_assignment
    sync = restarted.sync_group("g", 1, m0).result()
    assert decode_assignment(sync.assignment).partitions == assignments[m0]
    # Members that are gone for good expire after their session timeout.
    h.clock.advance(SESSION // 2)
    assert restarted.heartbeat("g", 1, m0) == NONE
    h.clock.advance(SESSION // 2)
    restarted.tick()
    assert restarted.group_members("g") == [m0]
    assert restarted.group_state("g") is GroupState.PREPARING_REBALANCE


def test_delete_group_rules():
    h = Harness()
    stable_group(h, 1)
    h.gc.commit_offsets("simple", {"t": {0: 1, 1: 2}})
    out = h.gc.delete_groups(["g", "simple", "missing", ""])
    assert out == {"g": NonEmptyGroupError.error_code, "simple": NONE,
                   "missing": GroupIdNotFoundError.error_code, "": GroupIdNotFoundError.error_code}
    assert h.gc.group_state("simple") is None
    assert h.gc.fetch_offsets("simple", {"t": [0]}).topics["t"][0].offset == -1
    # Tombstones for every offset and the group, in the group's partition.
    part = partition_for_group("simple", 8)
    tail = h.store.records(part)[-3:]
    assert [decode_key(k) for k, _ in tail] == [OffsetCommitKey("simple", "t", 0),
                                                OffsetCommitKey("simple", "t", 1),
                                                GroupMetadataKey("simple")]
    assert all(v is None for _, v in tail)
    restarted = GroupCoordinator(h.store, h.config, clock=h.clock)
    restarted.load(h.store.records())
    assert restarted.group_state("simple") is None
    # Once its members are gone, the group can be deleted.
    h.gc.leave_group("g", h.gc.group_members("g"))
    assert h.gc.group_state("g") is GroupState.EMPTY
    assert h.gc.delete_groups(["g"]) == {"g": NONE}


def test_a_group_named_twice_is_deleted_once_and_answered_as_deleted():
    """Found by the server fuzz: the second name answered GROUP_ID_NOT_FOUND over the
    first's success, so a client was told the deletion failed while it happened."""
    h = Harness()
    h.gc.commit_offsets("simple", {"t": {0: 1}})
    assert h.gc.delete_groups(["simple", "simple"]) == {"simple": NONE}
    assert h.gc.group_state("simple") is None


def test_offset_delete():
    h = Harness()
    results, _ = stable_group(h, 1)
    m = results[0].member_id
    h.gc.commit_offsets("g", {"t": {0: 1}, "gone": {0: 2}}, generation_id=1, member_id=m)
    out = h.gc.delete_offsets("g", {"t": [0], "gone": [0]})
    assert out.error_code == NONE
    assert out.topics == {"t": {0: GroupSubscribedToTopicError.error_code}, "gone": {0: NONE}}
    f = h.gc.fetch_offsets("g", {"t": [0], "gone": [0]}).topics
    assert f["t"][0].offset == 1 and f["gone"][0].offset == -1
    assert h.gc.delete_offsets("nope", {"t": [0]}).error_code == GroupIdNotFoundError.error_code
    h.gc.leave_group("g", [m])
    assert h.gc.delete_offsets("g", {"t": [0]}).topics == {"t": {0: NONE}}
    # A non-consumer group with members cannot have offsets deleted.
    h.join("", "w", group="connect-g", protocol_type="connect", require_known=False,
           protocols=[("default", b"x")])
    assert h.gc.delete_offsets("connect-g", {"t": [0]}).error_code == NonEmptyGroupError.error_code


def test_describe_and_list_groups():
    h = Harness()
    results, _ = stable_group(h, 2)
    h.gc.commit_offsets("simple", {"t": {0: 1}})
    d, missing = h.gc.describe_groups(["g", "missing"])
    assert (d.state, d.protocol_type, d.protocol_data) == ("Stable", "consumer", "range")
    assert [m.member_id for m in d.members] == [r.member_id for r in results]
    assert all(m.metadata and m.assignment and m.client_host == "/127.0.0.1" for m in d.members)
    assert (missing.state, missing.error_code) == ("Dead", NONE)
    assert h.gc.describe_groups(["missing"], not_found_error=True)[0].error_code == \
        GroupIdNotFoundError.error_code
    listed = {g.group_id: (g.state, g.protocol_type) for g in h.gc.list_groups()}
    assert listed == {"g": ("Stable", "consumer"), "simple": ("Empty", "")}
    assert [g.group_id for g in h.gc.list_groups(states=["empty"])] == ["simple"]
    assert h.gc.list_groups(types=["consumer"]) == []
    assert len(h.gc.list_groups(types=["Classic"])) == 2
    h.join_new("third")
    d, = h.gc.describe_groups(["g"])
    assert d.state == "PreparingRebalance" and all(m.metadata == b"" for m in d.members)


def test_offsets_expire_after_the_group_is_empty_for_the_retention_time():
    h = Harness(offsets_retention_ms=100_000, offsets_retention_check_interval_ms=10_000)
    results, _ = stable_group(h, 1)
    m = results[0].member_id
    h.gc.commit_offsets("g", {"t": {0: 1}}, generation_id=1, member_id=m)
    for _ in range(40):                                   # the member stays: nothing expires
        h.advance(3000)
        assert h.gc.heartbeat("g", 1, m) == NONE
    assert h.gc.fetch_offsets("g", {"t": [0]}).topics["t"][0].offset == 1
    h.gc.leave_group("g", [m])                            # empty from now on
    h.advance(90_000)
    assert h.gc.fetch_offsets("g", {"t": [0]}).topics["t"][0].offset == 1
    h.advance(20_000)
    assert h.gc.group_state("g") is None
    tail = group_records(h)[-2:]
    assert tail == [(OffsetCommitKey("g", "t", 0), None), (GroupMetadataKey("g"), None)]


def test_commit_with_retention_time_expires_on_its_own():
    h = Harness(offsets_retention_check_interval_ms=1000)
    h.gc.commit_offsets("s", {"t": {0: 1}}, retention_time_ms=5000)
    h.advance(4000)
    assert h.gc.fetch_offsets("s", {"t": [0]}).topics["t"][0].offset == 1
    h.advance(2000)
    assert h.gc.fetch_offsets("s", {"t": [0]}).topics["t"][0].offset == -1


# --------------------------------------------------------------------------- ownership, config

def test_unload_and_not_coordinator():
    h = Harness()
    pendings = [h.join_new(f"c{i}") for i in range(2)]
    h.advance(2000)
    follower = pendings[1].result()
    waiting_sync = h.sync(follower)                       # waits for the leader
    part = partition_for_group("g", 8)
    assert h.gc.unload(part) == 1
    assert waiting_sync.result().error_code == NotCoordinatorError.error_code
    assert h.gc.group_state("g") is None
    assert h.join("").result().error_code == NotCoordinatorError.error_code
    assert h.gc.commit_offsets("g", {"t": {0: 1}}) == {"t": {0: NotCoordinatorError.error_code}}
    assert h.gc.heartbeat("g", 1, follower.member_id) == NotCoordinatorError.error_code
    h.gc.load([], partition=part)                         # this broker leads it again
    assert h.join("").result().error_code == MemberIdRequiredError.error_code


def test_a_partition_being_loaded_answers_load_in_progress():
    """A clustered broker that became the partition's leader answers
    COORDINATOR_LOAD_IN_PROGRESS until its replay ends; the other partitions of a broker
    that serves none (unload_all) answer NOT_COORDINATOR."""
    h = Harness()
    h.gc.commit_offsets("g", {"t": {0: 5}})
    part = partition_for_group("g", 8)
    assert h.gc.unload_all() == 1
    assert h.gc.commit_offsets("g", {"t": {0: 6}}) == {"t": {0: NotCoordinatorError.error_code}}
    h.gc.begin_load(part)
    assert h.gc.fetch_offsets("g").error_code == CoordinatorLoadInProgressError.error_code
    assert h.join("").result().error_code == CoordinatorLoadInProgressError.error_code
    other = next(g for g in (f"g{i}" for i in range(100)) if partition_for_group(g, 8) != part)
    assert h.gc.fetch_offsets(other).error_code == NotCoordinatorError.error_code
    h.gc.load([offset_commit_record("g", "t", 0, OffsetCommitValue(5))], partition=part)
    assert h.gc.fetch_offsets("g").topics == {"t": {0: FetchedOffset(5, -1, "")}}
    h.gc.begin_load(part)
    h.gc.unload(part)                                     # led elsewhere before the load ended
    assert h.gc.fetch_offsets("g").error_code == NotCoordinatorError.error_code


def test_bad_config_is_rejected():
    with pytest.raises(InvalidConfigError):
        GroupCoordinatorConfig(min_session_timeout_ms=0)
    with pytest.raises(InvalidConfigError):
        GroupCoordinatorConfig(min_session_timeout_ms=10, max_session_timeout_ms=5)
    with pytest.raises(InvalidConfigError):
        GroupCoordinatorConfig(initial_rebalance_delay_ms=-1)


def test_kafka_defaults():
    c = GroupCoordinatorConfig()
    assert (c.min_session_timeout_ms, c.max_session_timeout_ms) == (6000, 1_800_000)
    assert c.initial_rebalance_delay_ms == 0 and c.offsets_topic_num_partitions == 50


# --------------------------------------------------------------------------- completion handles

def test_pending_response_api():
    p = PendingResponse()
    with pytest.raises(RequestTimedOutError):
        p.result()
    with pytest.raises(RequestTimedOutError):
        p.wait(0)
    seen = []
    p.add_done_callback(lambda r: seen.append(r.result()))
    for cb in p._set("done"):
        cb(p)
    assert seen == ["done"] and p.wait(0) == "done"
    p.add_done_callback(lambda r: seen.append("late"))     # already done: runs at once
    assert seen == ["done", "late"]
    assert p._set("again") == [] and p.result() == "done"


def test_callbacks_run_outside_the_lock_and_may_call_back():
    h = Harness(initial_rebalance_delay_ms=1000)
    heard = []
    p = h.join_new("c0")

    def on_join(resp):
        r = resp.result()
        # Calling into the coordinator from a callback must not deadlock.
        heard.append(h.gc.heartbeat("g", r.generation_id, r.member_id))

    p.add_done_callback(on_join)
    h.advance(1000)
    assert heard == [NONE]


def test_threads_can_share_the_coordinator():
    h = Harness()
    h.gc.commit_offsets("s", {"t": {0: 0}})
    errors = []

    def worker(n):
        try:
            for i in range(200):
                out = h.gc.commit_offsets("s", {f"t{n}": {i % 5: i}})
                assert out == {f"t{n}": {i % 5: NONE}}
                h.gc.fetch_offsets("s")
                h.gc.tick()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    topics = h.gc.fetch_offsets("s").topics
    assert all(topics[f"t{n}"] == {k: topics[f"t{n}"][k] for k in range(5)} for n in range(4))
    assert topics["t0"][4].offset == 199


def test_load_rejects_inconsistent_records_and_loads_nothing():
    from pylog.broker.group_offsets import (
        GroupMetadataValue,
        MemberMetadata,
        OffsetCommitValue,
        group_metadata_record,
        offset_commit_record,
    )
    h = Harness()
    bad = group_metadata_record("g", GroupMetadataValue(
        "consumer", 3, None, None, members=[MemberMetadata("m", "c", "h", 10_000, b"", b"")]))
    good = offset_commit_record("other", "t", 0, OffsetCommitValue(5))
    from pylog.errors import CorruptRecordError
    with pytest.raises(CorruptRecordError):
        h.gc.load([good, bad])
    assert h.gc.group_state("other") is None and h.gc.group_state("g") is None
    with pytest.raises(CorruptRecordError):
        h.gc.load([good, (b"\x00\x01\x00", b"")])
    assert h.gc.group_state("other") is None


def test_a_failing_callback_does_not_break_the_coordinator(caplog):
    h = Harness(initial_rebalance_delay_ms=1000)
    p = h.join_new("c0")

    def boom(_):
        raise RuntimeError("callback bug")

    p.add_done_callback(boom)
    h.advance(1000)
    assert p.result().error_code == NONE
    assert "a completion callback raised" in caplog.text
    assert h.gc.heartbeat("g", 1, p.result().member_id) == NONE
