"""Replication throttling (pylog.cluster.quota, applied by the leader's
ReplicaManager.fetch_for_follower and the follower's ReplicaFetcher).

The quota alone: Kafka's parsing of ``*.replication.throttled.replicas``, its windowed
rate, and its rule that only a replica out of the ISR is throttled.  Then a leader: a
real broker core leads ``t-0`` (2 MB of records) through a real ReplicaManager, and a
replica being added by a reassignment (broker 2, not in the ISR) fetches from it every
50 ms of a fake clock; the bytes it gets are counted per one-second window, so the rate
is checked by accounting, with no wall clock.
"""

from __future__ import annotations

from collections import Counter

import pytest

from cluster import test_hw_checkpoint as hw_checkpoint
from pylog import _core
from pylog.broker.core import Broker
from pylog.cluster import replication
from pylog.cluster.channel import LeaderAndIsrRequest, PartitionState
from pylog.cluster.controller import LEADER_REPLICATION_THROTTLED_REPLICAS
from pylog.cluster.quota import ReplicationQuota, throttled_partitions
from pylog.errors import InvalidConfigError

RATE = 20_000            # bytes/s
BATCH = 4096             # bytes of value per batch
BATCHES = 500            # 2 MB: more than the run can move at RATE
FETCH_MAX_BYTES = 16 * 1024
STEP_MS = 50
RUN_S = 60


def test_throttled_replicas_name_partitions_of_this_broker_or_all():
    assert throttled_partitions("0:1,0:2,1:2,3:1", 1) == {0, 3}
    assert throttled_partitions("0:1,0:2,1:2,3:1", 4) == frozenset()
    assert throttled_partitions("*", 7) is None
    assert throttled_partitions("", 1) == frozenset()
    with pytest.raises(InvalidConfigError):
        throttled_partitions("0-1", 1)


def test_the_rate_is_kafkas_windowed_rate():
    q = ReplicationQuota()
    q.set_rate(1000)
    t0 = 1_000_000
    q.record(5000, t0)
    # Measured over at least 10 windows: 5000 bytes at once is 500 B/s, under the quota.
    assert q.measure(t0) == 500.0 and not q.is_exceeded(t0)
    q.record(6000, t0 + 500)
    assert q.is_exceeded(t0 + 500)
    # Eleven windows later the burst has aged out.
    assert q.measure(t0 + 11_000) == 0.0 and not q.is_exceeded(t0 + 11_000)


def test_only_listed_replicas_out_of_the_isr_are_throttled():
    q = ReplicationQuota()
    q.set_rate(1)
    q.apply_topic_config("t", {LEADER_REPLICATION_THROTTLED_REPLICAS: "0:1"}, LEADER_REPLICATION_THROTTLED_REPLICAS, 1)
    q.record(100_000, 0)
    assert q.should_throttle("t", 0, in_sync=False, now_ms=0)
    assert not q.should_throttle("t", 0, in_sync=True, now_ms=0)       # never an in-sync replica
    assert not q.should_throttle("t", 1, in_sync=False, now_ms=0)      # not listed
    assert not q.should_throttle("u", 0, in_sync=False, now_ms=0)
    q.set_rate_config(None)                                           # the config removed: unlimited
    assert not q.should_throttle("t", 0, in_sync=False, now_ms=0)
    q.set_rate(1)
    q.apply_topic_config("t", {}, LEADER_REPLICATION_THROTTLED_REPLICAS, 1)
    assert not q.should_throttle("t", 0, in_sync=False, now_ms=0)


class Node(hw_checkpoint.Node):
    """The ClusterNode of test_hw_checkpoint; the follower never joins the ISR."""

    def send_alter_partition(self, r, alter) -> None:
        raise AssertionError(f"the follower never caught up, yet an ISR change was proposed: {alter}")


@pytest.fixture
def leader(tmp_path):
    """Broker 1 leading t-0 (replicas 1, 2; ISR {1}: 2 is being added) with 2 MB in it."""
    b = Broker(tmp_path / "b1", background=False)
    b.create_topic("t", 2)
    node = Node(b)
    b.replication = node.replica_manager
    states = tuple(PartitionState("t", p, 1, 1, 1, (1,), 0, (1, 2), adding_replicas=(2,)) for p in (0, 1))
    assert all(e is None for e in node.replica_manager.become(LeaderAndIsrRequest(0, 1, 5, states, {}, ())).values())
    for i in range(BATCHES):
        builder = _core.RecordBatchBuilder()
        builder.append_many([bytes([i % 256]) * BATCH])
        assert b.produce("t", 0, builder.build(), acks=1).error_code == 0
    node.replica_manager.after_leader_append("t", 0)       # the ISR of one: the high watermark follows
    assert node.replica_manager.high_watermark("t", 0) == BATCHES
    yield node
    b.replication = None
    b.close()


def catch_up(node: Node, partition: int = 0) -> Counter:
    """Broker 2 fetches t-<partition> every STEP_MS for RUN_S seconds of a fake clock;
    the bytes it got in each one-second window."""
    manager = node.replica_manager
    now = 1_000_000_000
    manager.clock = lambda: now
    per_second: Counter = Counter()
    offset = 0
    end = now + RUN_S * 1000
    while now < end:
        response = manager.fetch_for_follower("t", partition, replication.FetchRequest(
            2, 1, offset, max_bytes=FETCH_MAX_BYTES))
        assert response.error is None
        if response.records is not None:
            per_second[(now - 1_000_000_000) // 1000] += response.records.size
            offset = response.records.next_offset
            response.records.release()
        now += STEP_MS
    assert offset < BATCHES, "the follower caught up: the run moved everything, the rate is not measured"
    return per_second


def test_a_throttled_reassignment_moves_data_at_about_the_rate(leader):
    quota = leader.leader_quota
    quota.set_rate(RATE)
    quota.apply_topic_config("t", {LEADER_REPLICATION_THROTTLED_REPLICAS: "0:1,0:2"},
                             LEADER_REPLICATION_THROTTLED_REPLICAS, 1)
    per_second = catch_up(leader)
    total = sum(per_second.values())
    assert 0.8 * RATE * RUN_S <= total <= 1.2 * RATE * RUN_S, (total, RATE * RUN_S)
    # Within a second it is bursty, as Kafka's is: the rate is measured over the quota's
    # 11 one-second windows (at least 10 s), so a quiet quota lets about ten seconds'
    # worth through at once, then nothing until that ages out.  Over any span of the
    # quota's 11 windows, the bytes are about 11 seconds' worth.
    span = 11
    for start in range(RUN_S - span):
        moved = sum(per_second[s] for s in range(start, start + span))
        assert 0.8 * RATE * span <= moved <= RATE * span + FETCH_MAX_BYTES, (start, moved)


def test_an_unthrottled_partition_of_the_same_leader_is_not_slowed(leader):
    quota = leader.leader_quota
    quota.set_rate(RATE)
    quota.apply_topic_config("t", {LEADER_REPLICATION_THROTTLED_REPLICAS: "1:1"},
                             LEADER_REPLICATION_THROTTLED_REPLICAS, 1)
    manager = leader.replica_manager
    manager.clock = lambda: 1_000_000_000
    offset, moved = 0, 0
    for _ in range(40):      # 40 fetches at one instant: nothing holds them back
        response = manager.fetch_for_follower("t", 0, replication.FetchRequest(2, 1, offset, max_bytes=FETCH_MAX_BYTES))
        moved += response.records.size
        offset = response.records.next_offset
        response.records.release()
    assert moved > 10 * RATE
    assert quota.measure(1_000_000_000) == 0.0      # nothing counted against the quota
