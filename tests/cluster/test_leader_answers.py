"""What a clustered broker answers a consumer's ListOffsets and OffsetForLeaderEpoch:
as the partition's leader, in the replication state's leader epoch, never past the high
watermark (pylog.broker.core through Broker.replication).

librdkafka validates its position with OffsetForLeaderEpoch after every leader change,
naming the epoch the metadata gave it; a broker answering from its single-node epoch
(0) refused that forever with UNKNOWN_LEADER_EPOCH, and the consumer stopped reading
(the Jepsen run's reader read a fraction of what was produced).  ListOffsets answered
the log end offset, past the high watermark, so a reader waiting for "the end" waited
for records no consumer may fetch.
"""

from __future__ import annotations

import pytest

from cluster.test_hw_checkpoint import Node, follower_fetches, open_broker, produce
from pylog.cluster.channel import LeaderAndIsrRequest, PartitionState
from pylog.errors import FencedLeaderEpochError, NotLeaderError, UnknownLeaderEpochError

EPOCH = 3


@pytest.fixture
def node(tmp_path):
    b = open_broker(tmp_path / "b1")
    n = Node(b)
    b.replication = n.replica_manager
    states = (PartitionState("t", 0, 1, 1, EPOCH, (1, 2), 0, (1, 2)),     # led here
              PartitionState("t", 1, 1, 2, EPOCH, (1, 2), 0, (1, 2)))     # followed
    assert all(e is None for e in n.replica_manager.become(LeaderAndIsrRequest(0, 1, 5, states, {}, ())).values())
    produce(b, 10)
    follower_fetches(n, 6)
    yield n
    b.replication = None
    b.close()


def test_offset_for_leader_epoch_is_answered_in_the_replicas_epoch(node):
    b = node.broker
    res = b.offset_for_leader_epoch("t", 0, EPOCH, current_leader_epoch=EPOCH)
    assert (res.error_code, res.leader_epoch, res.end_offset) == (0, EPOCH, 10)
    assert b.offset_for_leader_epoch("t", 0, EPOCH, EPOCH + 1).error_code == UnknownLeaderEpochError.error_code
    assert b.offset_for_leader_epoch("t", 0, EPOCH, EPOCH - 1).error_code == FencedLeaderEpochError.error_code
    assert b.offset_for_leader_epoch("t", 1, EPOCH, EPOCH).error_code == NotLeaderError.error_code


def test_list_offsets_stops_at_the_high_watermark(node):
    b = node.broker
    latest = b.list_offsets("t", 0, -1)
    assert (latest.error_code, latest.offset, latest.leader_epoch) == (0, 6, EPOCH)
    assert b.list_offsets("t", 0, -2).offset == 0
    assert b.list_offsets("t", 0, 0).offset == 0
    assert b.list_offsets("t", 1, -1).error_code == NotLeaderError.error_code
