"""OffsetFetch never answers a commit the ISR does not have yet (Kafka's pending offset
commits, GroupMetadata.pendingOffsetCommits).

A commit appended to a replicated store is held apart until the store says the ISR took
it; only then is it the committed offset; a commit the ISR did not take is dropped and
the one before it stands.  ``require_stable`` (OffsetFetch v7+) answers
UNSTABLE_OFFSET_COMMIT for a partition with a pending commit, plain or transactional.

At the coordinator level the store is :class:`ManualStore`, whose replication handles
the test completes; at the broker level, a real broker core leads
``__consumer_offsets-0`` with a follower played by hand (test_coordinator_replication's
``cluster`` fixture).  The whole cluster, with a follower stopped, is in
test_cluster_groups.
"""

from __future__ import annotations

from cluster.test_coordinator_replication import ManualStore, cluster, committed  # noqa: F401 - fixture
from pylog.broker.group import GroupCoordinator
from pylog.broker.group_offsets import InMemoryOffsetStore
from pylog.errors import NotLeaderError, RequestTimedOutError

UNSTABLE = 88   # UNSTABLE_OFFSET_COMMIT


def fetched(groups: GroupCoordinator, *, stable: bool = False, partition: int = 0) -> tuple[int, int]:
    """(offset, error code) of t-<partition> for group g, asked by name."""
    res = groups.fetch_offsets("g", {"t": [partition]}, require_stable=stable)
    assert res.error_code == 0
    p = res.topics["t"][partition]
    return p.offset, p.error_code


def commit(groups: GroupCoordinator, store: ManualStore, offset: int):
    """Group g commits ``offset`` for t-0; the replication handle of its append."""
    assert groups.commit_offsets("g", {"t": {0: offset}}) == {"t": {0: 0}}
    return store.handles[-1]


def test_a_commit_is_fetched_only_once_replicated():
    store = ManualStore()
    groups = GroupCoordinator(store)
    assert groups.commit_offsets("g", {"t": {0: 5}}) == {"t": {0: 0}}
    assert fetched(groups) == (-1, 0)
    assert fetched(groups, stable=True) == (-1, UNSTABLE)
    assert groups.fetch_offsets("g").topics == {}          # all partitions: only committed ones
    store.handles[-1].set_result(None)
    assert fetched(groups) == (5, 0)
    assert fetched(groups, stable=True) == (5, 0)
    assert groups.fetch_offsets("g").topics["t"][0].offset == 5


def test_a_commit_the_isr_did_not_take_is_dropped_and_the_earlier_one_stands():
    store = ManualStore()
    groups = GroupCoordinator(store)
    groups.commit_offsets("g", {"t": {0: 5, 1: 6}})
    store.handles[-1].set_result(None)
    groups.commit_offsets("g", {"t": {0: 9}})
    assert fetched(groups) == (5, 0)
    assert fetched(groups, stable=True) == (-1, UNSTABLE)
    assert fetched(groups, stable=True, partition=1) == (6, 0)   # only the pending partition is unstable
    store.handles[-1].set_result(RequestTimedOutError("the ISR did not take it"))
    assert fetched(groups, stable=True) == (5, 0)
    assert fetched(groups, stable=True, partition=1) == (6, 0)


def test_a_group_that_existed_only_for_a_failed_commit_goes():
    store = ManualStore()
    groups = GroupCoordinator(store)
    groups.commit_offsets("g", {"t": {0: 5}})
    assert groups.group_state("g") is not None
    store.handles[-1].set_result(NotLeaderError("moved"))
    assert groups.group_state("g") is None
    assert fetched(groups, stable=True) == (-1, 0)


def test_commits_in_flight_complete_in_log_order():
    store = ManualStore()
    groups = GroupCoordinator(store)
    first = commit(groups, store, 5)
    second = commit(groups, store, 9)
    first.set_result(None)
    assert fetched(groups) == (5, 0)
    assert fetched(groups, stable=True) == (-1, UNSTABLE)   # 9 is still pending
    second.set_result(None)
    assert fetched(groups, stable=True) == (9, 0)


def test_an_earlier_commit_failing_leaves_a_later_pending_one_pending():
    store = ManualStore()
    groups = GroupCoordinator(store)
    first = commit(groups, store, 5)
    second = commit(groups, store, 9)
    first.set_result(RequestTimedOutError("timed out"))
    assert fetched(groups, stable=True) == (-1, UNSTABLE)
    second.set_result(None)
    assert fetched(groups, stable=True) == (9, 0)
    # And the other way round: the later one fails, the earlier replicated one stands.
    third = commit(groups, store, 10)
    fourth = commit(groups, store, 11)
    third.set_result(None)
    fourth.set_result(NotLeaderError("moved"))
    assert fetched(groups, stable=True) == (10, 0)


def test_an_offset_deleted_while_its_commit_is_pending_stays_deleted():
    store = ManualStore()
    groups = GroupCoordinator(store)
    pending = commit(groups, store, 5)
    res = groups.delete_offsets("g", {"t": [0]})
    assert res.error_code == 0 and res.topics == {"t": {0: 0}}
    # The tombstone follows the commit in the log, so the log agrees: nothing committed.
    assert store.inner.records(0)[-1][1] is None
    pending.set_result(None)
    assert fetched(groups, stable=True) == (-1, 0)


def test_a_transactional_commit_the_isr_did_not_take_is_not_committed_by_its_marker():
    store = ManualStore()
    groups = GroupCoordinator(store)
    pid = 7000
    assert groups.txn_commit_offsets("g", pid, 0, {"t": {0: 11}}) == {"t": {0: 0}}
    assert fetched(groups, stable=True) == (-1, UNSTABLE)
    store.handles[-1].set_result(RequestTimedOutError("the ISR did not take it"))
    groups.complete_txn(pid, [0], True)
    store.handles[-1].set_result(None)                        # the COMMIT marker is replicated
    assert fetched(groups, stable=True) == (-1, 0)


def test_a_plain_commit_replicated_after_a_transactional_one_wins():
    store = ManualStore()
    groups = GroupCoordinator(store)
    pid = 7001
    groups.txn_commit_offsets("g", pid, 0, {"t": {0: 11}})
    store.handles[-1].set_result(None)
    plain = commit(groups, store, 20)
    groups.complete_txn(pid, [0], True)
    store.handles[-1].set_result(None)                        # the marker: 11 is committed
    assert fetched(groups) == (11, 0)
    assert fetched(groups, stable=True) == (-1, UNSTABLE)     # 20 is pending
    plain.set_result(None)
    assert fetched(groups, stable=True) == (20, 0)


def test_a_store_durable_as_it_returns_commits_at_once():
    """Single node and embedded: no pending commits, nothing observable changes."""
    groups = GroupCoordinator(InMemoryOffsetStore(1))
    groups.commit_offsets("g", {"t": {0: 5}})
    assert fetched(groups, stable=True) == (5, 0)


def test_the_broker_answers_a_commit_only_once_the_follower_fetched_it(cluster):  # noqa: F811 - fixture
    c = cluster
    assert c.groups.commit_offsets("g", {"t": {0: 5}}) == {"t": {0: 0}}
    c.node.drain()
    assert committed(c, "g") is None                 # in the leader's log, not the follower's
    assert c.hw() < c.end()
    c.follower_fetches()
    assert committed(c, "g") == 5
    assert c.groups.commit_offsets("g", {"t": {0: 9}}) == {"t": {0: 0}}
    c.node.drain()
    assert committed(c, "g") == 5
    res = c.groups.fetch_offsets("g", {"t": [0]}, require_stable=True)
    assert res.topics["t"][0].error_code == UNSTABLE
    c.follower_fetches()
    assert committed(c, "g") == 9


def test_a_transactional_commit_appended_after_a_pending_plain_one_wins():
    store = ManualStore()
    groups = GroupCoordinator(store)
    pid = 7002
    plain = commit(groups, store, 20)
    groups.txn_commit_offsets("g", pid, 0, {"t": {0: 30}})     # appended after the plain commit
    store.handles[-1].set_result(None)
    plain.set_result(None)
    assert fetched(groups) == (20, 0)
    groups.complete_txn(pid, [0], True)
    store.handles[-1].set_result(None)
    assert fetched(groups, stable=True) == (30, 0)
