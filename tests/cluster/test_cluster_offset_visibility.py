"""On a real cluster, OffsetFetch does not answer a commit before the ISR has it.

Two ``pylog serve --zookeeper`` brokers, every link through :mod:`cluster.proxy`;
``__consumer_offsets`` has one partition, replicated on both.  The follower of that
partition is cut off from its leader (the proxy holds the bytes; with
``replica.lag.time.max.ms`` a minute it stays in the ISR), so the high watermark cannot
pass a new commit: the OffsetCommit waits, OffsetFetch answers the commit before it, and
with ``require_stable`` UNSTABLE_OFFSET_COMMIT.  When the link heals the follower
fetches the commit, the OffsetCommit is answered, and OffsetFetch answers it.
(The coordinator-level rules are in test_pending_offset_commits.)
"""

from __future__ import annotations

from cluster.proxy import ProxiedCluster
from cluster.util import killed_at_exit
from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC
from pylog.errors import CoordinatorLoadInProgressError, CoordinatorNotAvailableError, NotCoordinatorError
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey
from server.util import wait_for
from wire import WireClient, commit_on

UNSTABLE = 88  # UNSTABLE_OFFSET_COMMIT

OVERRIDES = ["replica.lag.time.max.ms=60000", "offsets.topic.num.partitions=1",
             "offsets.commit.timeout.ms=60000", "zookeeper.session.timeout.ms=30000"]


def fetch(conn, *, stable: bool) -> tuple[int, int]:
    """(committed offset, error code) of t-0 for group g (OffsetFetch v7)."""
    T = m.OffsetFetchRequest
    resp = conn.request(ApiKey.OFFSET_FETCH, T(group_id="g", require_stable=stable, topics=[
        T.OffsetFetchRequestTopic(name="t", partition_indexes=[0])]), version=7)
    assert resp.error_code == 0
    p = resp.topics[0].partitions[0]
    return p.committed_offset, p.error_code


def commit_body(offset: int):
    T = m.OffsetCommitRequest
    return T(group_id="g", generation_id_or_member_epoch=-1, member_id="", topics=[
        T.OffsetCommitRequestTopic(name="t", partitions=[
            T.OffsetCommitRequestPartition(partition_index=0, committed_offset=offset, committed_metadata="")])])


def test_offset_fetch_answers_a_commit_only_once_the_follower_has_it(tmp_path, zk_connect):
    with killed_at_exit(ProxiedCluster(tmp_path, zk_connect, 2, OVERRIDES)) as c, \
            WireClient(c.bootstrap, timeout=60) as w:
        wait_for(lambda: len(w.metadata([]).brokers) == 2, "2 registered brokers")
        w.create_topic("t", 1, 2)

        def offsets_partition():
            try:
                w.coordinator("g")        # the first FindCoordinator creates __consumer_offsets
            except Exception:  # noqa: BLE001 - not created / not loaded yet: asked again
                return None
            parts = [p for t in w.metadata([CONSUMER_OFFSETS_TOPIC]).topics for p in t.partitions]
            return parts[0] if parts and len(parts[0].isr_nodes) == 2 and parts[0].leader_id >= 0 else None

        part = wait_for(offsets_partition, "__consumer_offsets-0 led, with both brokers in its ISR", timeout=60)
        leader = part.leader_id
        follower = next(i for i in c.ids if i != leader)
        def first_commit():
            # FindCoordinator may name the new leader a moment before it has taken the
            # partition (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS): as a client does,
            # find it again and retry.
            try:
                conn = w.coordinator("g")
                commit_on(conn, "g", {("t", 0): 3})         # replicated: committed
            except (NotCoordinatorError, CoordinatorLoadInProgressError, CoordinatorNotAvailableError):
                return None
            return conn

        coordinator = wait_for(first_commit, "the first commit accepted by the coordinator", timeout=60)
        assert fetch(coordinator, stable=True) == (3, 0)

        c.isolate_from_peers(follower)
        committing = w.connect(coordinator.host, coordinator.port)
        reader = WireClient(c.bootstrap, timeout=60)
        try:
            asking = reader.coordinator("g")
            assert asking is not committing
            pending = committing.send_request(ApiKey.OFFSET_COMMIT, commit_body(7))
            # Once the commit is in the leader's log it is pending: require_stable says so,
            # and a plain OffsetFetch still answers the replicated commit.
            wait_for(lambda: fetch(asking, stable=True) == (-1, UNSTABLE), "the commit pending")
            assert fetch(asking, stable=False) == (3, 0)
            c.network.heal()
            resp = committing.receive(pending, timeout=60)
            assert [p.error_code for t in resp.topics for p in t.partitions] == [0]
            assert fetch(asking, stable=True) == (7, 0)
        finally:
            reader.close()
