"""A leader append and a leadership change on the same partition, interleaved on
purpose (pylog.broker.core's produce path through ReplicaManager, as Kafka's Partition
holds its leader-ISR lock over the leader check, the epoch and the append).

A produce that passed the "am I the leader" check and then met a LeaderAndIsr making
this broker a follower in a newer epoch appended anyway, stamped with the *new*
leader's epoch (read after the change): this replica's log then held a batch in the new
epoch that the new leader never wrote, which no divergence check can find (same epoch),
and the producer was answered as if it were committed.  Now the leadership and its epoch
are read where the append happens, under the partition's lock, which every leadership
change holds too: the produce is refused with NOT_LEADER_OR_FOLLOWER and the log is as
before.  A real broker core and ReplicaManager (the harness of test_hw_checkpoint); the
interleaving is forced by holding the produce between its check and its append.
"""

from __future__ import annotations

import threading

import pytest

from cluster.test_hw_checkpoint import Node, open_broker, produce
from pylog import _core
from pylog.cluster.channel import LeaderAndIsrRequest, PartitionState
from pylog.errors import NotLeaderError

EPOCH = 3


def _become(node: Node, leader: int, epoch: int) -> None:
    states = (PartitionState("t", 0, 1, leader, epoch, (1, 2), 0, (1, 2)),)
    out = node.replica_manager.become(LeaderAndIsrRequest(0, 1, 5, states, {}, ()))
    assert all(e is None for e in out.values()), out


@pytest.fixture
def node(tmp_path):
    b = open_broker(tmp_path / "b1")
    n = Node(b)
    b.replication = n.replica_manager
    _become(n, 1, EPOCH)
    produce(b, 4)
    yield n
    b.replication = None
    b.close()


def _batch(value: bytes) -> bytes:
    builder = _core.RecordBatchBuilder()
    builder.append_many([value])
    return builder.build()


def _held_between_check_and_append(broker, monkeypatch):
    """Make the next produce stop after its leader check (in ``_checked``, which runs
    after it) until the returned event is set; the first event says it got there."""
    reached, go = threading.Event(), threading.Event()
    checked = broker._checked

    def held(*args, **kwargs):
        reached.set()
        assert go.wait(10)
        return checked(*args, **kwargs)

    monkeypatch.setattr(broker, "_checked", held)
    return reached, go


@pytest.mark.parametrize("acks", [1, -1])
def test_a_produce_meeting_a_new_follower_epoch_is_refused_and_appends_nothing(node, monkeypatch, acks):
    b = node.broker
    log = b.partition_log("t", 0)
    end, epoch = log.log_end_offset, log.latest_epoch
    reached, go = _held_between_check_and_append(b, monkeypatch)
    results = []
    t = threading.Thread(target=lambda: results.append(b.produce("t", 0, _batch(b"late"), acks=acks)))
    t.start()
    assert reached.wait(10)
    _become(node, 2, EPOCH + 1)          # broker 2 leads now; this one follows
    go.set()
    t.join(10)
    assert not t.is_alive()
    (res,) = results
    assert res.error_code == NotLeaderError.error_code, res
    assert (log.log_end_offset, log.latest_epoch) == (end, epoch)


def test_a_produce_meeting_a_new_epoch_of_its_own_leadership_is_stamped_consistently(node, monkeypatch):
    """Re-elected in a newer epoch between check and append: the append lands in the new
    epoch, after the offset where the epoch cache says that epoch starts."""
    b = node.broker
    log = b.partition_log("t", 0)
    reached, go = _held_between_check_and_append(b, monkeypatch)
    results = []
    t = threading.Thread(target=lambda: results.append(b.produce("t", 0, _batch(b"late"), acks=1)))
    t.start()
    assert reached.wait(10)
    _become(node, 1, EPOCH + 1)
    go.set()
    t.join(10)
    (res,) = results
    assert res.error_code == 0, res
    assert log.latest_epoch == EPOCH + 1
    assert log.end_offset_for_epoch(EPOCH + 1)[1] == res.base_offset + 1
    assert log.end_offset_for_epoch(EPOCH)[1] == res.base_offset


def test_a_produce_meeting_a_session_expiry_is_refused_and_appends_nothing(node, monkeypatch):
    """The ZooKeeper session expired between check and append: the broker resigns every
    leadership at once (ClusterNode._resign_leaderships), under the same locks."""
    from types import SimpleNamespace

    from pylog.cluster.node import ClusterNode

    b = node.broker
    log = b.partition_log("t", 0)
    end = log.log_end_offset
    reached, go = _held_between_check_and_append(b, monkeypatch)
    results = []
    t = threading.Thread(target=lambda: results.append(b.produce("t", 0, _batch(b"late"), acks=1)))
    t.start()
    assert reached.wait(10)
    cluster_node = SimpleNamespace(replica_manager=node.replica_manager, broker_id=1, call_in_loop=node.call_in_loop,
                                   coordinators=SimpleNamespace(leadership_changed=lambda *a: None))
    ClusterNode._resign_leaderships(cluster_node)
    go.set()
    t.join(10)
    (res,) = results
    assert res.error_code == NotLeaderError.error_code, res
    assert log.log_end_offset == end


def test_a_leadership_change_of_a_deleted_partition_still_applies(node):
    """A replica whose partition the broker core no longer has (deleted): the change
    needs no partition lock, and applies."""
    rm = node.replica_manager
    r = rm.replicas[("t", 0)]
    node.broker.delete_topic("t")
    with rm.leadership_change("t", 0):
        with r.lock:
            assert r.state.resign()
