"""A new, empty log writes its empty ``leader-epoch-checkpoint`` without fsync (as Kafka's
CheckpointFile creates it), so creating many partitions (a broker's 50
``__consumer_offsets`` ones at its first start) costs no fsync each; the flush that
covers the first epoch assigned makes the file durable, and a crash that lost the empty
file loses nothing."""

import logging
import os

from pylog.storage import LeaderEpochCache, Log
from pylog.storage.leader_epoch import LEADER_EPOCH_CHECKPOINT
from tests.storage.test_leader_epoch import _batches


def test_new_empty_log_writes_its_empty_checkpoint_unsynced(tmp_path, monkeypatch):
    path = tmp_path / "t-0" / LEADER_EPOCH_CHECKPOINT
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    log = Log.open(str(tmp_path / "t-0"))
    try:
        assert path.read_bytes() == b"0\n0\n"
        assert not any(LEADER_EPOCH_CHECKPOINT in p for p in synced)
        assert log.leader_epochs == ()
        log.append(_batches(2), leader_epoch=3)
        log.flush()          # appends record epochs unsynced; a flush writes them durably
        assert LeaderEpochCache.load(str(path)).entries == ((3, 0),)
        assert any(LEADER_EPOCH_CHECKPOINT in p for p in synced)     # its .tmp, then renamed
    finally:
        log.close()


def test_an_empty_log_whose_checkpoint_a_crash_lost_opens_quietly(tmp_path, caplog):
    d = tmp_path / "t-0"
    Log.open(str(d)).close()
    os.unlink(d / LEADER_EPOCH_CHECKPOINT)
    with caplog.at_level(logging.WARNING, logger="pylog"):
        log = Log.open(str(d))
    try:
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert log.leader_epochs == () and (d / LEADER_EPOCH_CHECKPOINT).read_bytes() == b"0\n0\n"
    finally:
        log.close()


def test_a_log_with_batches_whose_checkpoint_is_missing_still_rebuilds_it_durably(tmp_path, caplog):
    d = tmp_path / "t-0"
    log = Log.open(str(d))
    log.append(_batches(2), leader_epoch=1)
    log.close()
    os.unlink(d / LEADER_EPOCH_CHECKPOINT)
    with caplog.at_level(logging.WARNING, logger="pylog"):
        log = Log.open(str(d))
    try:
        assert "missing" in "\n".join(r.getMessage() for r in caplog.records)
        assert LeaderEpochCache.load(str(d / LEADER_EPOCH_CHECKPOINT)).entries == ((1, 0),)
    finally:
        log.close()
