"""The ``.txnindex`` files: Kafka's byte format, their life with their segments
(truncation, retention, compaction swaps), the search a read_committed fetch makes, and
damage found at open."""

from __future__ import annotations

import logging
import os
import shutil

import pytest

from pylog.storage import Log
from pylog.storage.txn_index import AbortedTxn, CorruptTxnIndexError, TransactionIndex
from tests.storage.batches import make_batch


def _fill(log: Log, n: int, per_batch: int = 2) -> None:
    for i in range(n):
        log.append(make_batch([b"v%d" % i] * per_batch))


def _idx(log: Log, base: int = 0) -> str:
    return os.path.join(log.path, f"{base:020d}.txnindex")


def test_entries_are_kafkas_34_byte_abortedtxn(log_dir):
    log = Log.open(log_dir)
    _fill(log, 5)
    assert not os.path.exists(_idx(log))    # created with its first entry only
    log.append_aborted_txn(AbortedTxn(producer_id=0x0102030405060708, first_offset=2, last_offset=5,
                                      last_stable_offset=6))
    log.append_aborted_txn(AbortedTxn(9, 7, 8, 3))
    with open(_idx(log), "rb") as f:
        data = f.read()
    # version int16 0, producerId int64, firstOffset int64, lastOffset int64, lastStableOffset int64
    assert data == bytes.fromhex(
        "0000" "0102030405060708" "0000000000000002" "0000000000000005" "0000000000000006"
        "0000" "0000000000000009" "0000000000000007" "0000000000000008" "0000000000000003")
    log.close()
    reopened = Log.open(log_dir)
    assert reopened.aborted_transactions() == [AbortedTxn(0x0102030405060708, 2, 5, 6), AbortedTxn(9, 7, 8, 3)]
    assert reopened.txn_index_rebuild_from is None
    reopened.close()


@pytest.mark.parametrize("data, fault", [
    (AbortedTxn(1, 0, 3, 4).pack() + b"\x00", "not a multiple of the 34-byte entry"),
    (b"\x00\x01" + AbortedTxn(1, 0, 3, 4).pack()[2:], "unknown version 1"),
    (AbortedTxn(-1, 0, 3, 4).pack(), "invalid"),
    (AbortedTxn(1, 5, 3, 4).pack(), "invalid"),
    (AbortedTxn(1, 0, 9, 4).pack(), "outside the segment"),
    (AbortedTxn(1, 0, 3, 4).pack() + AbortedTxn(2, 0, 3, 4).pack(), "does not follow"),
    (AbortedTxn(1, 0, 3, 9).pack(), "last stable offset 9 is past the marker"),
])
def test_damaged_index_is_detected(data, fault):
    with pytest.raises(CorruptTxnIndexError, match=fault):
        TransactionIndex.decode(data, 0, 8, "x.txnindex")


def test_search_visits_later_segments_and_stops_at_the_lso(log_dir):
    log = Log.open(log_dir)
    _fill(log, 5)              # offsets 0..9
    log.roll()
    _fill(log, 5)              # 10..19
    log.roll()
    _fill(log, 5)              # 20..29
    # Producer 1 aborted 4..12 (marker in segment 10); producer 2 aborted 11..21 (marker in
    # segment 20), while producer 3's transaction from 15 was still open.
    log.append_aborted_txn(AbortedTxn(1, 4, 12, 11))
    log.append_aborted_txn(AbortedTxn(2, 11, 21, 15))
    assert log.collect_aborted_transactions(0, 4) == []
    assert log.collect_aborted_transactions(0, 5) == [(1, 4)]
    assert log.collect_aborted_transactions(5, 10) == [(1, 4)]        # the marker is in a later segment
    assert log.collect_aborted_transactions(10, 20) == [(1, 4), (2, 11)]
    assert log.collect_aborted_transactions(13, 20) == [(2, 11)]
    assert log.collect_aborted_transactions(22, 30) == []
    # Early stop: the first entry's LSO (11) covers a range ending at 11.
    assert log.collect_aborted_transactions(0, 11) == [(1, 4)]
    log.close()


def test_truncation_retention_and_reset_keep_the_index_with_its_segment(log_dir):
    log = Log.open(log_dir)
    _fill(log, 5)
    log.append_aborted_txn(AbortedTxn(1, 0, 3, 4))
    log.append_aborted_txn(AbortedTxn(2, 5, 7, 8))
    log.roll()
    _fill(log, 5)
    log.append_aborted_txn(AbortedTxn(3, 11, 13, 14))
    log.truncate_to(12)
    assert [e.producer_id for e in log.aborted_transactions()] == [1, 2]
    assert not os.path.exists(_idx(log, 10))           # its only entry went
    log.truncate_to(6)                                  # removes segment 10 and the batch 6..7
    assert [e.producer_id for e in log.aborted_transactions()] == [1]
    with open(_idx(log), "rb") as f:
        assert f.read() == AbortedTxn(1, 0, 3, 4).pack()
    _fill(log, 3)
    log.roll()
    _fill(log, 1)
    log.delete_records_before(log.segments[-1].base_offset)
    log.apply_retention()
    assert not os.path.exists(_idx(log)) and log.aborted_transactions() == []
    log.close()


def test_damaged_or_recovered_index_waits_for_a_rebuild(log_dir, caplog):
    log = Log.open(log_dir, segment_bytes=1 << 20)
    _fill(log, 5)
    log.append_aborted_txn(AbortedTxn(1, 0, 3, 4))
    log.roll()
    _fill(log, 2)
    log.append_aborted_txn(AbortedTxn(2, 10, 11, 12))
    log.close()
    with open(_idx(log), "ab") as f:        # a torn append
        f.write(b"\x00\x00\x00")
    caplog.set_level(logging.WARNING)
    log = Log.open(log_dir, segment_bytes=1 << 20)
    assert log.txn_index_rebuild_from == 0
    assert any("not a multiple of the 34-byte entry" in r.getMessage() and "rebuilt" in r.getMessage()
               for r in caplog.records)
    assert log.aborted_transactions() == [AbortedTxn(2, 10, 11, 12)]   # the damaged one was reset
    log.rebuild_txn_indexes(0, [AbortedTxn(1, 0, 3, 4), AbortedTxn(2, 10, 11, 12)])
    assert log.txn_index_rebuild_from is None
    assert len(log.aborted_transactions()) == 2
    # Unclean shutdown (the files copied as a SIGKILL leaves them): the segments recovery
    # rescans wait for a rebuild; the entries of the others are kept.
    crash_dir = log_dir + "-crash"
    shutil.copytree(log_dir, crash_dir)
    log.close()
    crashed = Log.open(crash_dir, segment_bytes=1 << 20)
    assert crashed.txn_index_rebuild_from is not None
    assert crashed.txn_index_rebuild_from <= 10
    assert len(crashed.aborted_transactions()) == 2
    crashed.close()
