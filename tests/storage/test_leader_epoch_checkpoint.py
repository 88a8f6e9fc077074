"""A damaged ``leader-epoch-checkpoint`` is untrusted input: a Log that finds one says
what is wrong and where, and rebuilds the cache from its batches' partitionLeaderEpoch
rather than follow the file."""

import logging
import os

import pytest

from pylog.storage import LeaderEpochCache, Log
from pylog.storage.leader_epoch import LEADER_EPOCH_CHECKPOINT
from tests.storage.test_leader_epoch import _batches


@pytest.mark.parametrize("content, reason", [
    (b"0\n3\n1 0\n2 2\n4 4", "torn"),                   # cut mid-line: "4 4" of "4 45"
    (b"0\n3\n1 0\n2 2\n", "says 3 entries, holds 2"),  # cut at a line end
    (b"", "truncated"),
    (b"\x00\x00\x00\x00\x00\x00\n", "version"),         # zero-filled after a crash
    (b"PK\x03\x04garbage\xff\n", "not ASCII"),
    (b"1\n1\n1 0\n", "unsupported version '1'"),
    (b"0\n2\n2 2\n1 0\n", "does not follow"),            # epochs going down
    (b"0\n2\n1 0\n2 0\n", "does not follow"),            # start offsets not increasing
])
def test_a_damaged_checkpoint_is_reported_and_rebuilt_from_the_batches(tmp_path, caplog, content, reason):
    d = str(tmp_path / "t-0")
    log = Log.open(d)
    log.append(_batches(2), leader_epoch=1)
    log.append(_batches(2), leader_epoch=2)
    log.append(_batches(2), leader_epoch=4)
    log.close()
    path = os.path.join(d, LEADER_EPOCH_CHECKPOINT)
    with open(path, "wb") as f:
        f.write(content)
    assert LeaderEpochCache.load(path).entries == ()
    with caplog.at_level(logging.WARNING, logger="pylog"):
        log = Log.open(d)
    warning = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert path in warning and reason in warning and "rebuilding" in warning
    assert log.leader_epochs == ((1, 0), (2, 2), (4, 4))
    assert log.end_offset_for_epoch(3) == (2, 4)
    log.close()
    assert LeaderEpochCache.load(path).entries == ((1, 0), (2, 2), (4, 4))


def test_a_whole_checkpoint_is_trusted(tmp_path, caplog):
    path = str(tmp_path / LEADER_EPOCH_CHECKPOINT)
    with open(path, "wb") as f:
        f.write(b"0\n2\n1 0\n4 12\n")
    cache = LeaderEpochCache.load(path)
    assert cache.entries == ((1, 0), (4, 12)) and cache.load_error is None


def test_truncating_at_the_log_end_drops_an_epoch_without_records(tmp_path):
    # A replica became leader of epoch 3 at offset 4 (the replication state machine
    # records the epoch start then), appended nothing, and now follows another leader.
    d = str(tmp_path / "t-0")
    log = Log.open(d)
    log.append(_batches(4), leader_epoch=1)
    log._assign_epoch(3, 4)
    assert log.leader_epochs == ((1, 0), (3, 4)) and log.latest_epoch == 3
    assert not log.truncate_to(4)             # no record removed...
    assert log.leader_epochs == ((1, 0),) and log.latest_epoch == 1   # ...but the empty epoch goes
    log.close()
    assert LeaderEpochCache.load(os.path.join(d, LEADER_EPOCH_CHECKPOINT)).entries == ((1, 0),)
