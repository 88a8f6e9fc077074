import os
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from pylog.broker.producer_state import DuplicateBatch, ProducerStateManager
from pylog.errors import InvalidProducerEpochError, OutOfOrderSequenceError


def _append(psm, pid, epoch, seq, count, offset, ts=1000):
    dup = psm.check(pid, epoch, seq, count, count - 1)
    if dup is None:
        psm.update(pid, epoch, seq, count, count - 1, offset, offset + count - 1, ts)
    return dup


def test_in_order_batches_accepted_and_duplicates_found(tmp_path):
    psm = ProducerStateManager(tmp_path)
    assert _append(psm, 7, 0, 0, 10, 0) is None
    assert _append(psm, 7, 0, 10, 5, 10) is None
    assert _append(psm, 7, 0, 0, 10, 99) == DuplicateBatch(0, 9, 1000)
    assert _append(psm, 7, 0, 10, 5, 99) == DuplicateBatch(10, 14, 1000)
    assert psm.map_end_offset == 15


def test_gap_and_reorder_rejected_without_changing_state(tmp_path):
    psm = ProducerStateManager(tmp_path)
    _append(psm, 1, 0, 0, 3, 0)
    before = list(psm.producers[1].batches)
    with pytest.raises(OutOfOrderSequenceError) as ei:
        psm.check(1, 0, 5, 1, 0)
    assert ei.value.error_code == 45
    with pytest.raises(OutOfOrderSequenceError):
        psm.check(1, 0, 1, 1, 0)  # overlaps but matches no batch
    assert list(psm.producers[1].batches) == before


def test_fenced_epoch_and_new_epoch_rules(tmp_path):
    psm = ProducerStateManager(tmp_path)
    _append(psm, 1, 3, 0, 2, 0)
    with pytest.raises(InvalidProducerEpochError) as ei:
        psm.check(1, 2, 2, 1, 0)
    assert ei.value.error_code == 47
    with pytest.raises(OutOfOrderSequenceError):
        psm.check(1, 4, 2, 1, 0)  # new epoch must restart at 0
    assert _append(psm, 1, 4, 0, 1, 2) is None
    psm.bump_epoch(1, 5)
    with pytest.raises(OutOfOrderSequenceError):
        psm.check(1, 5, 1, 1, 0)
    with pytest.raises(InvalidProducerEpochError):
        psm.check(1, 4, 1, 1, 0)


def test_only_last_five_batches_remembered(tmp_path):
    psm = ProducerStateManager(tmp_path)
    for i in range(7):
        _append(psm, 9, 0, i, 1, i)
    assert _append(psm, 9, 0, 2, 1, 50) == DuplicateBatch(2, 2, 1000)
    with pytest.raises(OutOfOrderSequenceError):
        psm.check(9, 0, 1, 1, 0)


def test_sequence_wraps_at_int32_max(tmp_path):
    psm = ProducerStateManager(tmp_path)
    top = 2**31 - 1
    psm.update(3, 0, top - 1, 2, 1, 0, 1, 0)
    assert psm.producers[3].last_seq == top
    assert psm.check(3, 0, 0, 1, 0) is None


def test_non_idempotent_batches_ignored(tmp_path):
    psm = ProducerStateManager(tmp_path)
    assert psm.check(-1, -1, -1, 5, 4) is None
    psm.update(-1, -1, -1, 5, 4, 0, 4, 0)
    assert psm.producers == {} and psm.map_end_offset == 5


def test_snapshot_round_trip_keeps_last_batch(tmp_path):
    psm = ProducerStateManager(tmp_path)
    _append(psm, 1, 0, 0, 4, 0, ts=11)
    _append(psm, 1, 0, 4, 2, 4, ts=12)
    _append(psm, 2, 5, 0, 1, 6, ts=13)
    path = psm.take_snapshot()
    assert os.path.basename(path) == f"{7:020d}.snapshot"
    # version 2 bytes + crc 4 + count 4 + 2 entries of 46 bytes
    assert os.path.getsize(path) == 10 + 2 * 46
    fresh = ProducerStateManager(tmp_path)
    assert fresh.load_snapshot(log_end_offset=7) == 7
    assert fresh.check(1, 0, 4, 2, 1) == DuplicateBatch(4, 5, 12)
    assert fresh.check(1, 0, 6, 1, 0) is None
    with pytest.raises(OutOfOrderSequenceError):
        fresh.check(1, 0, 7, 1, 0)
    assert fresh.producers[2].producer_epoch == 5


def test_corrupt_and_future_snapshots_are_dropped(tmp_path):
    psm = ProducerStateManager(tmp_path)
    _append(psm, 1, 0, 0, 1, 0)
    good = psm.take_snapshot()
    _append(psm, 1, 0, 1, 1, 1)
    later = psm.take_snapshot()
    _append(psm, 1, 0, 2, 1, 2)
    bad = psm.take_snapshot()
    data = bytearray(Path(bad).read_bytes())
    data[-1] ^= 0xFF
    Path(bad).write_bytes(data)
    fresh = ProducerStateManager(tmp_path)
    # The log only reaches offset 2: the snapshot at 3 describes data it no longer has.
    assert fresh.load_snapshot(log_end_offset=1) == 1
    assert not os.path.exists(later) and not os.path.exists(bad) and os.path.exists(good)


def test_corrupt_snapshot_is_deleted_and_older_one_used(tmp_path):
    psm = ProducerStateManager(tmp_path)
    _append(psm, 1, 0, 0, 1, 0)
    good = psm.take_snapshot()
    _append(psm, 1, 0, 1, 1, 1)
    bad = psm.take_snapshot()
    data = bytearray(Path(bad).read_bytes())
    data[12] ^= 0x01
    Path(bad).write_bytes(data)
    fresh = ProducerStateManager(tmp_path)
    assert fresh.load_snapshot(log_end_offset=2) == 1
    assert not os.path.exists(bad) and os.path.exists(good)
    assert fresh.producers[1].last_seq == 0


def test_replay_rebuilds_the_same_state(tmp_path):
    a = ProducerStateManager(tmp_path)
    headers = []
    offset = 0
    for i, n in enumerate([3, 1, 4]):
        _append(a, 42, 1, offset, n, offset)
        headers.append(dict(base_offset=offset, last_offset_delta=n - 1, max_timestamp=1000,
                            producer_id=42, producer_epoch=1, base_sequence=offset,
                            records_count=n, attributes=0))
        offset += n
    b = ProducerStateManager(tmp_path)
    b.replay(headers)
    assert list(b.producers[42].batches) == list(a.producers[42].batches)
    assert b.map_end_offset == a.map_end_offset == 8


@given(st.lists(st.integers(1, 20), min_size=1, max_size=30), st.data())
def test_model_retries_never_append_twice(tmp_path_factory, sizes, data):
    """Sending each batch, with random retries of any of the last five, appends each once."""
    psm = ProducerStateManager(tmp_path_factory.mktemp("ps"))
    log = []  # (seq, count) actually appended
    sent = []
    seq = 0
    for n in sizes:
        attempts = [(seq, n)]
        if data.draw(st.booleans()):
            # A retry of one of the five most recent batches, this one included.
            attempts.append(data.draw(st.sampled_from((sent + [(seq, n)])[-5:])))
        for s, c in attempts:
            offset = sum(x[1] for x in log)
            if _append(psm, 5, 0, s, c, offset) is None:
                log.append((s, c))
        sent.append((seq, n))
        seq += n
    assert log == sent
