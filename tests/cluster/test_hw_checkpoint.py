"""``replication-offset-checkpoint``: a clustered broker's replicas' high watermarks on
disk (pylog.cluster.node.ReplicaManager), in Kafka's format, and where a restarted
broker's high watermarks start.

A real broker core leads ``t-0`` through a real ReplicaManager, made leader by a
LeaderAndIsr as the controller sends it; the ISR is {1, 2} and broker 2's fetches are
played by hand.  "Restart" is closing the broker and opening its data directory again
with a new ReplicaManager.  Damaged files (cut short, garbage, a wrong count, not
UTF-8, empty) are logged as an ERROR naming the file, and ignored: the high watermark
starts at the log start offset, every record stays, and the ISR brings it back.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from pylog import _core
from pylog.broker.core import Broker
from pylog.cluster import replication
from pylog.cluster.channel import LeaderAndIsrRequest, MetadataCache, PartitionState
from pylog.cluster.node import HIGH_WATERMARK_CHECKPOINT, ReplicaManager
from pylog.cluster.quota import ReplicationQuota
from pylog.storage.checkpoint import CheckpointFile

RECORDS = 10


class Node:
    """What ReplicaManager.become and the checkpoint use of a ClusterNode."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.broker_id = 1
        self.broker_epoch = 5
        self.metadata = MetadataCache()
        self.coordination = SimpleNamespace(get_topic_assignment=lambda topic: None,
                                            get_entity_config=lambda kind, name: {})
        self.config = SimpleNamespace(replica_lag_time_max_ms=30_000)
        self.server = SimpleNamespace(state=SimpleNamespace(topic_changed=lambda topic: None))
        #: The partitions become() handed to the fetchers, (tp, leader) each.
        self.followed: list = []
        self.fetchers = SimpleNamespace(add_partitions=lambda follow, live: self.followed.extend(follow),
                                        remove_partition=lambda *a: None)
        self.stopping = False
        self.leader_quota = ReplicationQuota()
        self.called: list = []
        self.replica_manager = ReplicaManager(self)

    def call_in_loop(self, fn, *args) -> None:
        self.called.append(fn)

    def watch_topic_configs(self, topic: str) -> None:
        pass


def open_broker(path) -> Broker:
    b = Broker(path, background=False)
    if not b.has_topic("t"):
        b.create_topic("t", 2)
    return b


def lead(node: Node, epoch: int = 1, isr=(1, 2)) -> None:
    states = tuple(PartitionState("t", p, 1, 1, epoch, tuple(isr), 0, (1, 2)) for p in (0, 1))
    out = node.replica_manager.become(LeaderAndIsrRequest(0, 1, 5, states, {}, ()))
    assert all(e is None for e in out.values()), out


def produce(broker: Broker, n: int) -> None:
    for i in range(n):
        builder = _core.RecordBatchBuilder()
        builder.append_many([b"v%d" % i])
        assert broker.produce("t", 0, builder.build(), acks=1).error_code == 0


def follower_fetches(node: Node, offset: int) -> None:
    r = node.replica_manager.replicas[("t", 0)]
    with r.lock:
        assert r.state.fetch_for_follower(replication.FetchRequest(2, r.state.leader_epoch, offset), 0).error is None


def hw(node: Node) -> int:
    return node.replica_manager.high_watermark("t", 0)


@pytest.fixture
def data_dir(tmp_path):
    """A broker that led ``t-0``, committed 6 of its 10 records, and stopped: its
    data directory with the checkpoint it wrote."""
    path = tmp_path / "b1"
    b = open_broker(path)
    node = Node(b)
    b.replication = node.replica_manager
    lead(node)
    produce(b, RECORDS)
    follower_fetches(node, 6)
    assert hw(node) == 6
    node.replica_manager.checkpoint_high_watermarks()
    b.replication = None
    b.close()
    return path


def restart(path) -> tuple[Broker, Node]:
    b = open_broker(path)
    node = Node(b)
    b.replication = node.replica_manager
    return b, node


def test_the_checkpoint_is_kafkas_format(data_dir):
    assert (data_dir / HIGH_WATERMARK_CHECKPOINT).read_text() == "0\n2\nt 0 6\nt 1 0\n"


def test_a_restarted_leader_starts_from_the_checkpointed_high_watermark(data_dir):
    b, node = restart(data_dir)
    try:
        lead(node, epoch=2)
        assert hw(node) == 6          # not 0: consumers keep reading what was committed
        assert b.log_offsets("t", 0) == (0, 6)
    finally:
        b.close()


def test_the_checkpoint_is_bounded_by_the_log_end(data_dir):
    (data_dir / HIGH_WATERMARK_CHECKPOINT).write_text("0\n1\nt 0 999\n")
    b, node = restart(data_dir)
    try:
        lead(node, epoch=2)
        assert hw(node) == RECORDS
    finally:
        b.close()


def test_partitions_not_yet_named_keep_their_checkpoint_across_writes(data_dir):
    b, node = restart(data_dir)
    try:
        node.replica_manager.checkpoint_high_watermarks()      # before any LeaderAndIsr
        assert (data_dir / HIGH_WATERMARK_CHECKPOINT).read_text() == "0\n2\nt 0 6\nt 1 0\n"
    finally:
        b.close()


@pytest.mark.parametrize("damage", [
    pytest.param(lambda text: text[:7], id="cut-short"),
    pytest.param(lambda text: "\x00garbage\x01\n", id="garbage"),
    pytest.param(lambda text: text.replace("\n2\n", "\n3\n"), id="wrong-count"),
    pytest.param(lambda text: "", id="empty"),
    pytest.param(lambda text: text + "t 0 \xff\n", id="bad-line"),
])
def test_a_damaged_checkpoint_is_logged_and_nothing_is_lost(data_dir, damage, caplog):
    path = data_dir / HIGH_WATERMARK_CHECKPOINT
    path.write_text(damage(path.read_text()))
    with caplog.at_level(logging.ERROR, logger="pylog.cluster.node"):
        b, node = restart(data_dir)
    try:
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and str(path) in errors[0] and "ignored" in errors[0], errors
        lead(node, epoch=2)
        assert hw(node) == 0                      # the safe fallback: the log start offset
        assert b.log_offsets("t", 0)[0] == 0
        r = node.replica_manager.replicas[("t", 0)]
        assert r.log.log_end_offset == RECORDS    # nothing truncated
        follower_fetches(node, RECORDS)
        assert hw(node) == RECORDS                # the ISR brings it back
        node.replica_manager.checkpoint_high_watermarks()
        assert path.read_text() == f"0\n2\nt 0 {RECORDS}\nt 1 0\n"    # and the file is whole again
    finally:
        b.close()


def test_a_broker_killed_while_checkpointing_leaves_a_whole_file(tmp_path):
    """SIGKILL while a broker checkpoints in a loop: the file is the old or the new one,
    never a torn mix, and its high watermark never passes what was committed."""
    path = tmp_path / "b1"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r} + "/..")
        from cluster.test_hw_checkpoint import Node, open_broker, lead, produce, follower_fetches
        b = open_broker({str(path)!r})
        node = Node(b)
        b.replication = node.replica_manager
        lead(node)
        produce(b, 200)
        for i in range(1, 201):
            follower_fetches(node, i)
            node.replica_manager.checkpoint_high_watermarks()
            if i == 20:
                print("ready", flush=True)
        print("done", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.kill()
    finally:
        proc.wait(30)
        proc.stdout.close()
    b, node = restart(path)
    try:
        checkpointed = CheckpointFile(str(path / HIGH_WATERMARK_CHECKPOINT)).read()[("t", 0)]
        assert 20 <= checkpointed <= 200
        lead(node, epoch=2)
        assert hw(node) == checkpointed
        assert node.replica_manager.replicas[("t", 0)].log.log_end_offset == 200
    finally:
        b.close()
