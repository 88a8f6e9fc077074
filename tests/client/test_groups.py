"""Consumer groups end to end: members joining, leaving and crashing; each partition owned
by one member at a time; committed progress kept (at-least-once, nothing lost)."""

from __future__ import annotations

import threading
import time

import pytest

from pylog.broker.core import TopicPartition
from pylog.broker.group import GroupState
from pylog.client.consumer import ConsumerRebalanceListener
from pylog.errors import CommitFailedError

PARTS = 6


def all_tps(topic="t", n=PARTS):
    return {TopicPartition(topic, p) for p in range(n)}


def check_disjoint(consumers):
    seen = {}
    for c in consumers:
        for tp in c.assignment():
            assert tp not in seen, f"{tp} owned by {seen[tp].member_id()} and {c.member_id()}"
            seen[tp] = c


def settle(client, consumers, group="g", n=PARTS, rounds=2000, between=None, sink=None, seconds=20.0):
    """Poll every consumer (without waiting) until the group is stable and its members
    together hold every partition; check exclusivity after every poll.  Records polled
    meanwhile go to ``sink[consumer]`` (a list) when given.  Gives up after ``rounds``
    rounds *and* ``seconds`` (consumers look for new partitions on a 50 ms timer, so a
    round count alone fails when polls are fast)."""
    deadline = time.monotonic() + seconds
    done = 0
    while done < rounds or time.monotonic() < deadline:
        done += 1
        for c in consumers:
            recs = c.poll(timeout_ms=0)
            if sink is not None:
                sink[c] += [r.value for r in recs]
            check_disjoint(consumers)
        if between is not None:
            between()
        gen = client.broker.groups.group_generation(group)
        if (client.broker.groups.group_state(group) is GroupState.STABLE
                and all(c.generation() == gen and c._state == "stable" for c in consumers)
                and set().union(*(c.assignment() for c in consumers)) == all_tps(n=n)
                and not any(c._rejoin_needed for c in consumers)):
            return {c: c.assignment() for c in consumers}
    raise AssertionError(f"group did not settle: {[(c.member_id(), c.assignment()) for c in consumers]}")


class Recorder(ConsumerRebalanceListener):
    def __init__(self):
        self.events = []

    def on_partitions_revoked(self, revoked):
        self.events.append(("revoked", set(revoked)))

    def on_partitions_assigned(self, assigned):
        self.events.append(("assigned", set(assigned)))

    def on_partitions_lost(self, lost):
        self.events.append(("lost", set(lost)))


def member(client, **kw):
    # A member learns of a rebalance that others started from its next heartbeat's
    # REBALANCE_IN_PROGRESS: at the default 3 s interval, every rebalance of these tests
    # waited up to 3 s on it.  No test here checks the interval itself (those that care
    # pass their own).
    kw.setdefault("heartbeat_interval_ms", 100)
    kw.setdefault("group_id", "g")
    kw.setdefault("auto_offset_reset", "earliest")
    kw.setdefault("enable_auto_commit", False)
    return client.consumer("t", **kw)


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
def test_members_join_and_leave(client, strategy):
    client.create_topic("t", PARTS)
    cs = [member(client, partition_assignment_strategy=[strategy]) for _ in range(3)]
    plan = settle(client, cs)
    assert sorted(len(a) for a in plan.values()) == [2, 2, 2]
    cs[1].close()
    plan = settle(client, [cs[0], cs[2]])
    assert sorted(len(a) for a in plan.values()) == [3, 3]
    desc = client.describe_groups(["g"])[0]
    assert {m.member_id for m in desc.members} == {cs[0].member_id(), cs[2].member_id()}
    for c in (cs[0], cs[2]):
        c.close()
    assert client.describe_groups(["g"])[0].state == "Empty"


def test_cooperative_rebalance_only_moves_what_it_must(client):
    client.create_topic("t", PARTS)
    rec = Recorder()
    first = member(client, partition_assignment_strategy=["cooperative-sticky"], listener=rec)
    settle(client, [first])
    second = member(client, partition_assignment_strategy=["cooperative-sticky"])
    plan = settle(client, [first, second])
    assert len(plan[first]) == len(plan[second]) == 3
    revoked = [e for e in rec.events if e[0] == "revoked"]
    assert revoked == [("revoked", all_tps() - plan[first])]    # only the three that moved
    first.close()
    second.close()


def test_crashed_member_is_removed_after_its_session_and_nothing_committed_is_lost(fake_client, clock):
    client = fake_client
    client.create_topic("t", PARTS)
    # Auto-commit also commits what was polled before partitions are revoked.
    kw = dict(heartbeat_thread=False, session_timeout_ms=2000, heartbeat_interval_ms=500,
              enable_auto_commit=True, auto_commit_interval_ms=3_600_000)
    cs = [member(client, **kw) for _ in range(3)]
    settle(client, cs)
    p = client.producer(linger_ms=0)
    for i in range(600):
        p.send("t", b"%d" % i, partition=i % PARTS)
    p.flush()
    processed = {c: [] for c in cs}
    victim = cs[1]
    # Everyone processes a little and commits; the victim then processes more without
    # committing, and crashes.
    for c in cs:
        processed[c] += [r.value for r in c.poll(timeout_ms=0, max_records=30)]
        c.commit()
    uncommitted = [r.value for r in victim.poll(timeout_ms=0, max_records=40)]
    processed[victim] += uncommitted
    victim._abandon()
    survivors = [cs[0], cs[2]]
    for _ in range(10):
        clock.advance(600)
        for c in survivors:
            processed[c] += [r.value for r in c.poll(timeout_ms=0)]   # heartbeats when due
        client.broker.tick()
    assert victim.member_id() not in client.broker.groups.group_members("g")
    settle(client, survivors, sink=processed)
    for _ in range(200):
        got = 0
        for c in survivors:
            recs = c.poll(timeout_ms=0)
            processed[c] += [r.value for r in recs]
            got += len(recs)
            c.commit()
        check_disjoint(survivors)
        if not got:
            break
    everything = [v for vs in processed.values() for v in vs]
    assert set(everything) == {b"%d" % i for i in range(600)}          # nothing lost
    dups = {v for v in everything if everything.count(v) > 1}
    assert dups and dups <= set(uncommitted)                             # at-least-once only
    end = {tp: client.high_watermark(tp.topic, tp.partition) for tp in all_tps()}
    assert {tp: survivors[0].committed(tp).offset for tp in all_tps()} == end
    for c in survivors:
        c.close()
    p.close()


def test_commit_from_a_member_with_a_stale_generation_is_refused(fake_client, clock):
    client = fake_client
    client.create_topic("t", PARTS)
    kw = dict(heartbeat_thread=False, session_timeout_ms=2000, heartbeat_interval_ms=500)
    a, b = member(client, **kw), member(client, **kw)
    settle(client, [a, b])
    mine = sorted(a.assignment())[0]
    a.commit({mine: 1})
    for _ in range(5):
        clock.advance(600)
        b.poll(timeout_ms=0)
        client.broker.tick()
    assert a.member_id() not in client.broker.groups.group_members("g")
    with pytest.raises(CommitFailedError) as ei:
        a.commit({mine: 5})
    assert ei.value.error_code == 22
    assert a.committed(mine).offset == 1
    a.close()
    b.close()


def test_static_member_restart_keeps_its_partitions_without_rebalance(client):
    client.create_topic("t", PARTS)
    rec = Recorder()
    a = member(client, group_instance_id="a", listener=rec)
    b = member(client, group_instance_id="b")
    plan = settle(client, [a, b])
    generation = client.broker.groups.group_generation("g")
    before = plan[a]
    a.close()                                   # a static member does not leave
    assert client.broker.groups.group_state("g") is GroupState.STABLE
    events = len(rec.events)
    a2 = member(client, group_instance_id="a")
    plan = settle(client, [a2, b])
    assert plan[a2] == before
    assert client.broker.groups.group_generation("g") == generation
    assert len(rec.events) == events           # b's side saw nothing either
    a2.close()
    b.close()


def test_new_partitions_trigger_a_rebalance(client):
    client.create_topic("t", 2)
    a, b = member(client), member(client)
    settle(client, [a, b], n=2)
    client.create_partitions("t", 4)
    plan = settle(client, [a, b], n=4)
    assert sorted(len(x) for x in plan.values()) == [2, 2]
    a.close()
    b.close()


def test_threads_join_leave_and_consume_everything_once_committed(client):
    client.create_topic("t", PARTS)
    total = 3000
    owner: dict = {}
    lock = threading.Lock()
    processed: list = []
    stop = threading.Event()
    errors: list = []

    class Exclusive(ConsumerRebalanceListener):
        def __init__(self, name):
            self.name = name

        def on_partitions_assigned(self, assigned):
            with lock:
                for tp in assigned:
                    if owner.get(tp) not in (None, self.name):
                        errors.append(f"{tp} given to {self.name} while {owner[tp]} owns it")
                    owner[tp] = self.name

        def on_partitions_revoked(self, revoked):
            with lock:
                for tp in revoked:
                    if owner.get(tp) == self.name:
                        del owner[tp]

    def run(name, leave_after=None):
        c = member(client, listener=Exclusive(name))
        n = 0
        try:
            while not stop.is_set():
                recs = c.poll(timeout_ms=50)
                with lock:
                    processed.extend(r.value for r in recs)
                n += len(recs)
                try:
                    c.commit()
                except CommitFailedError:
                    pass                                  # rebalanced: those get reprocessed
                if leave_after is not None and n >= leave_after:
                    return
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(repr(exc))
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=("a",)), threading.Thread(target=run, args=("b", 400))]
    for t in threads:
        t.start()
    p = client.producer(linger_ms=1)
    for i in range(total):
        p.send("t", b"%d" % i, key=b"%d" % (i % 50))
        if i == total // 2:
            late = threading.Thread(target=run, args=("c",))
            late.start()
            threads.append(late)
    p.flush()
    done = threading.Event()

    def finished():
        with lock:
            return len(set(processed)) >= total

    for _ in range(600):
        if finished() or errors:
            break
        done.wait(0.05)
    stop.set()
    for t in threads:
        t.join()
    p.close()
    assert errors == []
    assert set(processed) == {b"%d" % i for i in range(total)}


def test_member_that_stops_polling_leaves_and_later_rejoins(client):
    import time

    client.create_topic("t", PARTS)
    rec = Recorder()
    slow = member(client, max_poll_interval_ms=150, heartbeat_interval_ms=20, session_timeout_ms=2000,
                  listener=rec)
    other = member(client)
    settle(client, [slow, other])
    gone = threading.Event()
    old_id = slow.member_id()
    deadline = time.monotonic() + 30
    # The heartbeat thread notices the missing polls and leaves: the other member then
    # rebalances alone and takes every partition.
    while old_id in client.broker.groups.group_members("g") and time.monotonic() < deadline:
        gone.wait(0.01)
    assert old_id not in client.broker.groups.group_members("g")
    plan = settle(client, [other])
    assert plan[other] == all_tps()
    slow.poll(timeout_ms=0)                       # learns it lost its partitions
    assert ("lost", set()) not in rec.events and any(e[0] == "lost" and e[1] for e in rec.events)
    settle(client, [slow, other])                 # and rejoins
    slow.close()
    other.close()
