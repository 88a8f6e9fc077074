"""The leader epoch cache and ``leader-epoch-checkpoint``, alone and inside a Log."""

import os

import pytest

from pylog.storage import LeaderEpochCache, Log
from pylog.storage.leader_epoch import LEADER_EPOCH_CHECKPOINT
from tests.storage.batches import batch_headers, make_batch


def _file(path):
    with open(path, "rb") as f:
        return f.read()


def test_file_format_is_kafkas(tmp_path):
    path = str(tmp_path / LEADER_EPOCH_CHECKPOINT)
    cache = LeaderEpochCache(path)
    assert cache.assign(0, 0) and cache.assign(3, 1500)
    assert not cache.assign(3, 1700)          # an epoch keeps its first start offset
    assert not cache.assign(-1, 2000)         # unstamped batches say nothing
    assert _file(path) == b"0\n2\n0 0\n3 1500\n"
    assert LeaderEpochCache.load(path).entries == ((0, 0), (3, 1500))


def test_assign_drops_what_a_new_entry_contradicts(tmp_path):
    cache = LeaderEpochCache(str(tmp_path / "c"))
    for e, o in [(1, 0), (2, 10), (4, 20)]:
        cache.assign(e, o)
    cache.assign(3, 15)                       # an older epoch after a newer one: both columns stay sorted
    assert cache.entries == ((1, 0), (2, 10), (3, 15))
    cache.assign(5, 15)                       # same start offset: the newer epoch replaces it
    assert cache.entries == ((1, 0), (2, 10), (5, 15))


def test_truncation_at_both_ends(tmp_path):
    cache = LeaderEpochCache(str(tmp_path / "c"))
    for e, o in [(0, 0), (1, 100), (2, 200), (4, 300)]:
        cache.assign(e, o)
    cache.truncate_from_end(250)
    assert cache.entries == ((0, 0), (1, 100), (2, 200))
    cache.truncate_from_start(150)            # epoch 1 covered 100..199: it now starts at 150
    assert cache.entries == ((1, 150), (2, 200))
    cache.truncate_from_start(200)
    assert cache.entries == ((2, 200),)
    cache.truncate_from_end(200)
    assert cache.entries == ()
    assert LeaderEpochCache.load(cache.path).entries == ()


@pytest.mark.parametrize("asked, expected", [
    (-1, (-1, -1)),       # undefined epoch
    (0, (0, 100)),        # epoch 0 ends where epoch 2 begins
    (1, (0, 100)),        # never led: the largest epoch below it, and where the next begins
    (2, (2, 250)),
    (5, (5, 250)),        # the newest epoch ends at the log end offset
    (6, (-1, -1)),        # newer than any known
])
def test_end_offset_for_epoch(tmp_path, asked, expected):
    cache = LeaderEpochCache(str(tmp_path / "c"))
    for e, o in [(0, 0), (2, 100), (5, 250)]:
        cache.assign(e, o)
    assert cache.end_offset_for(asked, log_end_offset=400) == (expected if asked != 5 else (5, 400))


def test_epoch_below_every_known_one(tmp_path):
    cache = LeaderEpochCache(str(tmp_path / "c"))
    cache.assign(3, 40)
    cache.assign(4, 90)
    assert cache.end_offset_for(1, 100) == (1, 40)
    assert LeaderEpochCache(str(tmp_path / "empty")).end_offset_for(1, 100) == (-1, -1)


@pytest.mark.parametrize("content", [
    b"", b"0\n", b"1\n0\n", b"0\n2\n0 0\n", b"0\n1\n0\n", b"0\nx\n", b"0\n2\n3 10\n2 20\n",
    b"0\n2\n1 10\n2 10\n", b"0\n1\n-1 5\n", b"\xff\xfe\n", b"0\n1\n" + b"9" * (17 << 20) + b" 1\n",
])
def test_unreadable_file_starts_empty(tmp_path, content):
    path = str(tmp_path / LEADER_EPOCH_CHECKPOINT)
    with open(path, "wb") as f:
        f.write(content)
    cache = LeaderEpochCache.load(path)
    assert cache.entries == () and cache.load_error


# -- inside a Log ---------------------------------------------------------------------

def _batches(n, epoch=-1):
    data = make_batch([b"v%d" % i for i in range(n)])
    if epoch >= 0:   # a replica's copy carries the leader's epoch in partitionLeaderEpoch
        data = data[:12] + epoch.to_bytes(4, "big") + data[16:]
    return data


def test_log_learns_epochs_from_leader_appends(tmp_path):
    d = str(tmp_path / "t-0")
    log = Log.open(d)
    log.append(_batches(3))                   # no epoch given: nothing to learn
    assert log.leader_epochs == () and log.latest_epoch == -1
    log.append(_batches(3), leader_epoch=0)
    log.append(_batches(3), leader_epoch=0)
    log.append(_batches(2), leader_epoch=2)
    assert log.leader_epochs == ((0, 3), (2, 9))
    assert [h["partition_leader_epoch"] for h in batch_headers(bytes(log.read(3, 1 << 20).records))] == [0, 0, 2]
    assert log.end_offset_for_epoch(0) == (0, 9)
    assert log.end_offset_for_epoch(1) == (0, 9)
    assert log.end_offset_for_epoch(2) == (2, 11)
    log.flush()       # appends leave the file to the flush that moves the recovery point
    assert _file(os.path.join(d, LEADER_EPOCH_CHECKPOINT)) == b"0\n2\n0 3\n2 9\n"
    log.truncate_to(9)                        # epoch 2's records go, and with them the epoch
    assert log.leader_epochs == ((0, 3),) and log.latest_epoch == 0
    log.delete_records_before(5)
    assert log.leader_epochs == ((0, 5),)
    log.close()
    reopened = Log.open(d)
    assert reopened.leader_epochs == ((0, 5),)
    reopened.close()


def test_replica_appends_take_epochs_from_the_batches(tmp_path):
    # Five 2-record batches numbered as the leader numbered them, stamped with its epochs.
    epochs = (1, 1, 3, 3, 4)
    data = b"".join((2 * i).to_bytes(8, "big") + _batches(2, e)[8:] for i, e in enumerate(epochs))
    log = Log.open(str(tmp_path / "t-0"))
    log.append(data, assign_offsets=False)
    assert log.leader_epochs == ((1, 0), (3, 4), (4, 8))
    log.close()


def test_recovery_relearns_epochs_past_the_checkpoint(tmp_path):
    # An unclean shutdown: the checkpoint file is lost, the batches keep their epochs.
    d = str(tmp_path / "t-0")
    log = Log.open(d)
    log.append(_batches(2), leader_epoch=1)
    log.append(_batches(2), leader_epoch=2)
    log.close()
    os.unlink(os.path.join(d, LEADER_EPOCH_CHECKPOINT))
    os.unlink(os.path.join(d, ".kafka_cleanshutdown"))
    log = Log.open(d)
    assert log.leader_epochs == ((1, 0), (2, 2))
    assert os.path.exists(os.path.join(d, LEADER_EPOCH_CHECKPOINT))
    log.close()


def test_a_new_epoch_lost_with_its_unsynced_checkpoint_is_relearned_by_recovery(tmp_path, monkeypatch):
    """An append's new epoch is written to the checkpoint by the next flush, not by the
    append; a crash before it leaves the old version.  Until then the epoch's batches lie
    past the durable recovery point, so recovery learns the epoch again from them."""
    from pylog.storage.checkpoint import CheckpointFile
    from pylog.storage.log import CLEAN_SHUTDOWN_FILE, RECOVERY_POINT_CHECKPOINT

    d = str(tmp_path / "t-0")
    path = os.path.join(d, LEADER_EPOCH_CHECKPOINT)
    log = Log.open(d)
    log.append(_batches(2), leader_epoch=1)
    log.flush()
    assert log.recovery_point == 2
    before = _file(path)
    fsyncs = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real(fd))[1])
    log.append(_batches(2), leader_epoch=2)
    assert fsyncs == [] and _file(path) == before, "written by the next flush, not by the append"
    monkeypatch.setattr(os, "fsync", real)
    log.close()
    assert _file(path) == b"0\n2\n1 0\n2 2\n"
    # What the disk holds after a crash before the next flush: the old checkpoint, the
    # recovery point of the last flush, no clean-shutdown marker.
    with open(path, "wb") as f:
        f.write(before)
    rp_file = CheckpointFile(os.path.join(d, RECOVERY_POINT_CHECKPOINT))
    rp_file.write({key: 2 for key in rp_file.read()})
    os.unlink(os.path.join(d, CLEAN_SHUTDOWN_FILE))
    log = Log.open(d)
    assert log.leader_epochs == ((1, 0), (2, 2))
    assert log.end_offset_for_epoch(1) == (1, 2)
    log.close()
    assert _file(path) == b"0\n2\n1 0\n2 2\n"


def test_corrupt_checkpoint_is_replaced(tmp_path):
    d = str(tmp_path / "t-0")
    log = Log.open(d)
    log.append(_batches(2), leader_epoch=1)
    log.close()
    with open(os.path.join(d, LEADER_EPOCH_CHECKPOINT), "wb") as f:
        f.write(b"garbage")
    log = Log.open(d)     # clean shutdown, but the damaged cache is rebuilt from the batches
    assert log.leader_epochs == ((1, 0),)
    assert _file(os.path.join(d, LEADER_EPOCH_CHECKPOINT)) == b"0\n1\n1 0\n"
    log.append(_batches(1), leader_epoch=2)
    assert log.leader_epochs == ((1, 0), (2, 2))
    log.close()


def test_a_failed_checkpoint_write_is_tried_again_before_the_recovery_point_moves(tmp_path, monkeypatch):
    """A flush whose epoch checkpoint write fails (a full disk) raises and leaves the
    recovery point where it was; the next flush writes the epoch, not skips it."""
    import pylog.storage.leader_epoch as le

    d = str(tmp_path / "t-0")
    log = Log.open(d)
    log.append(_batches(2), leader_epoch=1)
    real = le.atomic_write
    monkeypatch.setattr(le, "atomic_write", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError):
        log.flush()
    assert log.recovery_point == 0
    monkeypatch.setattr(le, "atomic_write", real)
    log.flush()
    assert log.recovery_point == 2
    assert _file(os.path.join(d, LEADER_EPOCH_CHECKPOINT)) == b"0\n1\n1 0\n"
    log.close()
