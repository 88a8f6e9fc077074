"""The streams assignor (Kafka Streams' StreamsPartitionAssignor with its sticky task
assignor) driven as the group drives it: every member's subscription user data from
its own assignor, the leader's ``assign`` and ``assignment_user_data``, each member's
``on_assignment``.  Stickiness: a join moves only the tasks the newcomer needs; a
leave hands the leaver's tasks to the instances holding their standbys; standbys
never sit on the instance (process) running the task; threads of one process share
its tasks."""

from __future__ import annotations

import json
import random

import pytest

from pylog.broker.consumer_protocol import Assignment, Subscription
from pylog.streams.assignor import LATEST_OFFSET, StreamsPartitionAssignor

#: sub-topology 0 joins "a" and "b" (co-partitioned); sub-topology 1 reads a repartition topic
TOPIC_GROUP = {"a": 0, "b": 0, "app-rep-repartition": 1}
COUNTS = {"a": 6, "b": 6, "app-rep-repartition": 6}
TASKS = {(g, p) for g in (0, 1) for p in range(6)}


class Member:
    """One stream thread: its assignor and the tasks it ran."""

    def __init__(self, member_id, process_id, endpoint=None, standbys=0, stateful=(0, 1)):
        self.member_id = member_id
        self.active = set()
        self.standby = set()
        self.sums = {}
        self.assignor = StreamsPartitionAssignor(process_id, endpoint, topic_group=TOPIC_GROUP,
                                                 stateful_groups=stateful, num_standby_replicas=standbys,
                                                 task_state=self.state)

    def state(self):
        sums = {t: LATEST_OFFSET for t in self.active}
        sums.update(self.sums)
        return set(self.active), set(self.standby), sums

    def subscription(self):
        return Subscription(topics=sorted(TOPIC_GROUP), user_data=self.assignor.subscription_user_data(
            sorted(TOPIC_GROUP)))


def rebalance(members, counts=COUNTS, end_sums=None):
    """One generation: the first member leads; every member learns its tasks."""
    leader = members[0].assignor
    leader.end_offset_sums = (lambda tasks: {t: end_sums[t] for t in tasks if t in end_sums}) if end_sums else None
    subs = {m.member_id: m.subscription() for m in members}
    plan = leader.assign(counts, subs)
    data = leader.assignment_user_data(plan, subs)
    for m in members:
        m.assignor.on_assignment(Assignment(plan[m.member_id], data[m.member_id]), 1)
        m.active = set(m.assignor.active_tasks)
        m.standby = set(m.assignor.standby_tasks)
    return plan


def by_process(members):
    out = {}
    for m in members:
        out.setdefault(m.assignor.process_id, set()).update(m.active)
    return out


def check_partitions(members, plan):
    """Each member holds exactly its active tasks' partitions, every partition once."""
    seen = []
    for m in members:
        expected = {(t, p) for (g, p) in m.active for t, tg in TOPIC_GROUP.items() if tg == g}
        got = {(t, p) for t, ps in plan[m.member_id].items() for p in ps}
        assert got == expected
        seen.extend(got)
    assert sorted(seen) == sorted((t, p) for t, n in COUNTS.items() for p in range(n))


def test_first_assignment_is_balanced_and_keeps_co_partitioned_topics_together():
    members = [Member(f"m{i}", f"p{i}") for i in range(3)]
    plan = rebalance(members)
    check_partitions(members, plan)
    assert sorted(len(m.active) for m in members) == [4, 4, 4]
    assert set().union(*(m.active for m in members)) == TASKS
    for m in members:   # a task holds partition p of both joined topics
        assert plan[m.member_id].get("a") == plan[m.member_id].get("b")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_join_moves_only_the_tasks_the_newcomer_takes(seed):
    rnd = random.Random(seed)
    members = [Member(f"m{i}", f"p{i}") for i in range(rnd.randint(1, 3))]
    rebalance(members)
    before = by_process(members)
    members.append(Member("m9", "p9"))
    if rnd.random() < 0.5:
        members.reverse()                  # whoever leads gives the same answer
    plan = rebalance(members)
    check_partitions(members, plan)
    after = by_process(members)
    for pid, tasks in before.items():
        assert after[pid] <= tasks, "an old instance got a task it did not have"
    moved = sum(len(tasks - after[pid]) for pid, tasks in before.items())
    assert moved == len(after["p9"]) == len(TASKS) // len(after)
    assert max(map(len, after.values())) - min(map(len, after.values())) <= 1


def test_a_leavers_tasks_go_to_the_instances_holding_their_standbys():
    members = [Member(f"m{i}", f"p{i}", standbys=1) for i in range(3)]
    rebalance(members)
    for m in members:
        assert len(m.standby) == 4 and not (m.standby & m.active)
    leaver = members.pop(1)
    before = {m.member_id: (set(m.active), set(m.standby)) for m in members}
    rebalance(members)
    for m in members:
        active, standby = before[m.member_id]
        assert active <= m.active, "a task of a staying instance moved"
        assert m.active - active <= standby, "a leaver's task went where no standby was"
    assert set().union(*(m.active for m in members)) == TASKS
    assert sorted(len(m.active) for m in members) == [6, 6]
    assert leaver.active <= set().union(*(m.active for m in members))
    # one standby per task still, never beside its active
    for m in members:
        assert not (m.standby & m.active)
    assert sorted(t for m in members for t in m.standby) == sorted(TASKS)


def test_standbys_never_share_a_process_with_their_active_and_stateless_tasks_get_none():
    members = [Member("m0", "p0", standbys=2, stateful=(0,)), Member("m1", "p0", standbys=2, stateful=(0,)),
               Member("m2", "p1", standbys=2, stateful=(0,)), Member("m3", "p2", standbys=2, stateful=(0,))]
    rebalance(members)
    active = by_process(members)
    standby = {}
    for m in members:
        standby.setdefault(m.assignor.process_id, set()).update(m.standby)
    for pid in active:
        assert not (active[pid] & standby.get(pid, set()))
    for task in TASKS:
        holders = [pid for pid in standby if task in standby[pid]]
        assert len(holders) == (2 if task[0] == 0 else 0)
    # p0 runs two threads: twice the tasks of the one-thread instances, split evenly
    assert sorted(len(m.active) for m in members if m.assignor.process_id == "p0") == [3, 3]
    assert [len(active["p1"]), len(active["p2"])] == [3, 3]


def test_fewer_instances_than_replicas_place_what_they_can():
    members = [Member("m0", "p0", standbys=3), Member("m1", "p1", standbys=3)]
    rebalance(members)
    for task in TASKS:
        assert sum(task in m.standby for m in members) == 1


def test_an_orphaned_task_goes_to_the_freshest_state():
    members = [Member(f"m{i}", f"p{i}") for i in range(3)]
    members[0].active = {(0, p) for p in range(6)}
    members[1].sums = {(1, 0): 90, (1, 1): 10}
    members[2].sums = {(1, 0): 40, (1, 1): 95}
    rebalance(members, end_sums={(1, 0): 100, (1, 1): 100})
    assert (1, 0) in members[1].active and (1, 1) in members[2].active
    assert len(members[0].active) == 4          # kept up to its share


def test_tasks_are_shared_by_threads_and_a_new_thread_takes_only_what_balance_needs():
    members = [Member("m0", "p0"), Member("m1", "p1")]
    rebalance(members)
    before = {m.member_id: set(m.active) for m in members}
    members.append(Member("m2", "p0"))          # a second stream thread of p0
    rebalance(members)
    # tasks per thread: p0 (two threads) takes 8, p1 keeps 4 of its 6; m0 keeps its own
    assert members[1].active <= before["m1"] and len(members[1].active) == 4
    assert before["m0"] <= members[0].active | members[2].active
    assert members[0].active <= before["m0"]
    assert [len(members[0].active), len(members[2].active)] == [4, 4]


def test_assignment_carries_hosts_of_active_and_standby_partitions():
    members = [Member("m0", "p0", "h0:1", standbys=1), Member("m1", "p1", "h1:1", standbys=1)]
    rebalance(members)
    a = members[0].assignor
    assert a.partitions_by_host() == members[1].assignor.partitions_by_host()
    held = {h: {tp for tp in tps} for h, tps in a.partitions_by_host().items()}
    standby = a.standby_partitions_by_host()
    assert held["h0:1"] == standby["h1:1"] and held["h1:1"] == standby["h0:1"]
    assert held["h0:1"] | held["h1:1"] == {(t, p) for t, n in COUNTS.items() for p in range(n)}


def test_old_and_foreign_user_data_and_unknown_topics():
    m = Member("m0", "p0")
    subs = {"m0": m.subscription(),
            "x": Subscription(topics=["a", "b", "other"], user_data=json.dumps(
                {"version": 1, "process_id": "q", "endpoint": None}).encode()),
            "y": Subscription(topics=["a", "b", "other"], user_data=b"\xff not json")}
    plan = m.assignor.assign({"a": 3, "b": 3, "other": 3}, subs)
    owners = {}
    for member, parts in plan.items():
        for p in parts.get("a", ()):
            owners[p] = member
            assert p in parts["b"]
    assert sorted(owners) == [0, 1, 2] and len(set(owners.values())) == 3
    assert sorted(p for parts in plan.values() for p in parts.get("other", ())) == [0, 1, 2]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        StreamsPartitionAssignor("p", None, num_standby_replicas=-1)
    with pytest.raises(ValueError):
        StreamsPartitionAssignor("p", "no-port")


def test_a_leavers_tasks_go_to_their_caught_up_standby_even_past_its_share():
    members = [Member(f"m{i}", f"p{i}") for i in range(3)]
    members[0].active = {(0, 0), (0, 1), (0, 2), (0, 3)}
    members[1].active = {(1, 0), (1, 1), (1, 2), (1, 3)}
    members[2].active = {(0, 4), (0, 5), (1, 4), (1, 5)}
    # the leaver's tasks: (0, 4) and (0, 5) have a caught-up standby on p0, (1, 4) a far one on p1
    members[0].standby = {(0, 4), (0, 5)}
    members[0].sums = {(0, 4): 1000, (0, 5): 995}
    members[1].standby = {(1, 4)}
    members[1].sums = {(1, 4): 10}
    members.pop()
    rebalance(members, end_sums={(0, 4): 1000, (0, 5): 1000, (1, 4): 50_000})
    assert {(0, 4), (0, 5)} <= members[0].active and len(members[0].active) == 6
    assert (1, 4) in members[1].active or (1, 4) in members[0].active
    assert set().union(*(m.active for m in members)) == TASKS


@pytest.mark.parametrize("partitions,clients", [(2, 3), (5, 3), (4, 5), (7, 2)])
def test_uneven_counts_stay_within_one_task_and_a_join_takes_its_share(partitions, clients):
    counts = {"a": partitions, "b": partitions, "app-rep-repartition": partitions}
    members = [Member(f"m{i}", f"p{i}") for i in range(clients)]
    rebalance(members, counts)
    before = by_process(members)
    members.append(Member("m9", "p9"))
    rebalance(members, counts)
    after = by_process(members)
    sizes = sorted(map(len, after.values()))
    assert sizes[-1] - sizes[0] <= 1 and sum(sizes) == 2 * partitions
    moved = sum(len(tasks - after[pid]) for pid, tasks in before.items())
    assert moved == len(after["p9"])
    for pid, tasks in before.items():
        assert after[pid] <= tasks


def test_a_far_behind_newcomer_warms_replicas_up_before_it_gets_tasks():
    members = [Member("m0", "p0"), Member("m1", "p1")]
    members[0].active = set(TASKS)
    end = {t: 50_000 for t in TASKS}
    for m in members:
        m.assignor.clock_ms = lambda: 1000
    rebalance(members, end_sums=end)
    # every task stays where its state is; the newcomer warms two up (max.warmup.replicas)
    assert members[0].active == TASKS and members[1].active == set()
    assert len(members[1].standby) == 2
    assert members[0].assignor.next_probing_rebalance_ms == 1000 + 600_000
    moved = set()
    for _ in range(3):
        # the probing rebalance: the warm-ups caught up and their tasks move
        warmed = set(members[1].standby)
        members[1].sums = {t: 49_990 for t in warmed}
        rebalance(members, end_sums=end)
        assert warmed <= members[1].active and members[1].active - warmed == moved
        moved = set(members[1].active)
    assert sorted(len(m.active) for m in members) == [6, 6]
    assert members[1].standby == set()
    assert members[0].assignor.next_probing_rebalance_ms == 0


def test_a_newcomer_within_the_acceptable_lag_takes_its_tasks_at_once():
    members = [Member("m0", "p0"), Member("m1", "p1")]
    members[0].active = set(TASKS)
    rebalance(members, end_sums={t: 9_000 for t in TASKS})
    assert sorted(len(m.active) for m in members) == [6, 6]
    assert members[0].assignor.next_probing_rebalance_ms == 0


def test_a_standby_that_took_tasks_past_its_share_gives_them_back_in_a_probing_rebalance():
    members = [Member(f"m{i}", f"p{i}") for i in range(3)]
    members[0].active = {(0, 0), (0, 1), (0, 2), (0, 3)}
    members[1].active = {(1, 0), (1, 1), (1, 2), (1, 3)}
    members[2].active = {(0, 4), (0, 5), (1, 4), (1, 5)}
    members[0].standby = {(0, 4), (0, 5), (1, 4), (1, 5)}    # all the leaver's standbys on p0
    members[0].sums = {t: 100 for t in members[0].standby}
    members.pop()
    end = {t: 100 for t in TASKS}
    rebalance(members, end_sums=end)
    assert len(members[0].active) == 8 and len(members[1].active) == 4
    assert members[0].assignor.next_probing_rebalance_ms > 0
    assert len(members[1].standby & {(0, 4), (0, 5), (1, 4), (1, 5)}) == 2      # warm-ups (max.warmup.replicas)
    # the probing rebalance: p0 keeps its share, the warmed-up p1 takes the rest
    members[1].sums = {t: 100 for t in members[1].standby}
    rebalance(members, end_sums=end)
    assert sorted(len(m.active) for m in members) == [6, 6]
    assert set().union(*(m.active for m in members)) == TASKS
