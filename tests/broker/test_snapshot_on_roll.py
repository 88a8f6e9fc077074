"""Producer-state snapshots at a roll (Kafka takes one when a segment rolls): the broker's
maintenance pass looks only at the partitions a roll or a truncation queued, so its cost
does not grow with idle partitions, and a rolled partition still gets its snapshot."""

from __future__ import annotations

import os
import time

from pylog import _core
from pylog.broker.core import Broker


def _batch(seq: int, pid: int = 9) -> bytes:
    b = _core.RecordBatchBuilder(producer_id=pid, producer_epoch=0, base_sequence=seq)
    b.append(int(time.time() * 1000), None, b"v" * 100)
    return bytes(b.build())


def _snapshots(broker: Broker, topic: str, partition: int) -> list[str]:
    path = broker._partition(topic, partition).log.path
    return sorted(n for n in os.listdir(path) if n.endswith(".snapshot"))


def test_a_roll_queues_its_partition_and_the_pass_snapshots_it(tmp_path):
    b = Broker(tmp_path / "data", background=False, offsets_topic_num_partitions=1)
    try:
        b.create_topic("t", 50, config={"segment.bytes": "1000"})
        b.tick()
        assert b._rolled == []
        for seq in range(12):                      # ~170 bytes a batch: rolls after a few
            assert b.produce("t", 3, _batch(seq)).error_code == 0
        part = b._partition("t", 3)
        assert part in b._rolled and {p.index for p in b._rolled} == {3}
        b.tick()
        assert b._rolled == []
        assert _snapshots(b, "t", 3)               # the idempotent producer's state
        assert part.snapshot_segment == part.log.active_segment.base_offset
        assert not _snapshots(b, "t", 4)
    finally:
        b.close()


def test_a_truncation_queues_its_partition(tmp_path):
    b = Broker(tmp_path / "data", background=False, offsets_topic_num_partitions=1)
    try:
        b.create_topic("t", 2, config={"segment.bytes": "1000"})
        for seq in range(12):
            b.produce("t", 0, _batch(seq))
        b.tick()
        part = b._partition("t", 0)
        part.log.truncate_to(2)
        assert b._rolled == [part]
        b.tick()
        assert part.snapshot_segment == part.log.active_segment.base_offset
    finally:
        b.close()
