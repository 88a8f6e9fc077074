"""Log: append/read against an in-memory model, formats on disk, rolls, truncation,
retention, timestamps, reopen, bad input, threads."""

import os
import struct
import threading

import pytest
from hypothesis import given, settings, strategies as st

from pylog.errors import (CorruptRecordError, InvalidConfigError, InvalidRecordError, KafkaStorageError,
                          LogClosedError,
                          OffsetOutOfRangeError, RecordBatchTooLargeError, RecordTooLargeError)
from pylog.storage import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, MAX_TIMESTAMP, Log, LogConfig
from tests.storage.batches import batch_headers, decode, make_batch, sized_batch
from tests.storage.conftest import read_all, snapshot

T0 = 1_700_000_000_000


def _values(i, n=3):
    return [b"value-%d-%d" % (i, j) for j in range(n)]


# -- append and read against a model --------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(1, 20), st.integers(0, 300), st.integers(1, 4)), min_size=1, max_size=40),
       reads=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 5000)), max_size=30),
       segment_bytes=st.sampled_from([600, 2000, 1 << 20]))
def test_append_read_model(tmp_path_factory, ops, reads, segment_bytes):
    """Records read back equal the in-memory list of what was appended, for random
    batch shapes, segment sizes and read positions/sizes."""
    model = []  # (offset, value)
    d = str(tmp_path_factory.mktemp("log") / "t-0")
    log = Log.open(d, segment_bytes=segment_bytes, index_interval_bytes=128)
    for i, (n, size, nbatches) in enumerate(ops):
        chunks, vals = [], []
        for b in range(nbatches):
            v = [bytes([i % 256, b]) * (size // 2) + b"%d" % j for j in range(n)]
            vals += v
            chunks.append(make_batch(v, base_timestamp=T0 + i))
        data = b"".join(chunks)
        if len(data) > segment_bytes:
            with pytest.raises(RecordBatchTooLargeError):
                log.append(data)
            continue
        info = log.append(data)
        assert info.base_offset == len(model) and info.last_offset == len(model) + len(vals) - 1
        assert info.batches == nbatches and info.records == len(vals) and info.log_append_time == -1
        model += [(len(model) + k, v) for k, v in enumerate(vals)]
    assert log.log_end_offset == len(model)
    assert [(o, v) for o, _, _, v in read_all(log)] == model
    for frac, max_bytes in reads:
        if not model:
            break
        target = int(frac * (len(model) - 1))
        r = log.read(target, max_bytes)
        recs = decode(r.records)
        assert recs[0][0] <= target <= recs[-1][0]  # whole batches holding the target
        assert r.size <= max_bytes or len(batch_headers(r.records)) == 1
        assert [(o, v) for o, _, _, v in recs] == model[recs[0][0]:recs[-1][0] + 1]
    log.close()
    log = Log.open(d, segment_bytes=segment_bytes, index_interval_bytes=128)
    assert [(o, v) for o, _, _, v in read_all(log)] == model
    log.close()


def test_read_semantics(log_dir):
    log = Log.open(log_dir, segment_bytes=1 << 16)
    for i in range(10):
        log.append(make_batch(_values(i, 5)))
    # Mid-batch: the whole batch comes back.
    r = log.read(7, 1)
    assert (r.base_offset, r.last_offset, r.next_offset) == (5, 9, 10)
    assert [rec[0] for rec in decode(r.records)] == [5, 6, 7, 8, 9]
    # At least one whole batch even when max_bytes is tiny; then only whole batches.
    assert len(batch_headers(r.records)) == 1
    one = r.size
    r2 = log.read(0, one * 3 + 1)
    assert r2.size == one * 3
    # max_offset (e.g. the high watermark) is exclusive.
    r3 = log.read(0, 1 << 20, max_offset=15)
    assert r3.last_offset == 14
    assert log.read(15, 1 << 20, max_offset=15).size == 0
    assert log.read(12, 1 << 20, max_offset=13).size == 0  # the batch holding 12 ends at 14
    # Reading exactly at the log end offset: empty.  Past it or below the start: error.
    end = log.read(50)
    assert end.size == 0 and end.records.nbytes == 0 and end.next_offset == 50
    with pytest.raises(OffsetOutOfRangeError):
        log.read(51)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1)
    log.close()


def test_read_is_zero_copy_and_sendfile_ready(log_dir):
    log = Log.open(log_dir)
    batch = make_batch(_values(0))
    log.append(batch)
    log.append(make_batch(_values(1)))
    r = log.read(0, 1 << 20)
    assert r.records.readonly is False or r.records.readonly is True  # a memoryview
    assert isinstance(r.records, memoryview) and r.views == [r.records]
    assert r.records.obj is not None  # a view of the mapping, not a bytes copy
    assert not isinstance(r.records.obj, bytes)
    with open(r.path, "rb") as f:
        f.seek(r.position)
        assert f.read(r.size) == bytes(r.records)
    assert os.pread(r.fileno(), r.size, r.position) == bytes(r.records)
    # sendfile into a pipe
    rd, wr = os.pipe()
    try:
        sent = os.sendfile(wr, r.fileno(), r.position, r.size)
        assert os.read(rd, sent) == bytes(r.records)[:sent]
    finally:
        os.close(rd)
        os.close(wr)
    r.release()
    log.close()


# -- what goes on disk -------------------------------------------------------------------

def test_closed_segments_are_exactly_the_batches_with_new_base_offsets(log_dir):
    """Byte-identical to Kafka: the batches as sent, with only baseOffset rewritten, no
    padding; indexes trimmed to their entries."""
    log = Log.open(log_dir, segment_bytes=1000, index_interval_bytes=300)
    sent = [make_batch(_values(i, 1 + i % 4), base_timestamp=T0 + i) for i in range(40)]
    infos = [log.append(b) for b in sent]
    log.close()
    by_segment: dict[int, bytearray] = {}
    for b, info in zip(sent, infos):
        expected = bytearray(b)
        expected[0:8] = struct.pack(">q", info.base_offset)
        by_segment.setdefault(info.segment_base_offset, bytearray()).extend(expected)
    assert len(by_segment) > 3
    for base, data in by_segment.items():
        with open(os.path.join(log_dir, f"{base:020d}.log"), "rb") as f:
            assert f.read() == bytes(data)
        isize = os.path.getsize(os.path.join(log_dir, f"{base:020d}.index"))
        tsize = os.path.getsize(os.path.join(log_dir, f"{base:020d}.timeindex"))
        assert isize % 8 == 0 and tsize % 12 == 0 and tsize >= 12
    # The CRC still holds (baseOffset lies outside it) and kafka-python decodes it.
    for h in batch_headers(by_segment[0]):
        assert h["magic"] == 2


def test_active_segment_is_preallocated_and_mapped(log_dir):
    log = Log.open(log_dir, segment_bytes=1 << 20, segment_index_bytes=4096)
    log.append(make_batch(_values(0)))
    seg = log.active_segment
    assert os.path.getsize(seg.path) == 1 << 20
    assert os.path.getsize(seg.file_path(".index")) == 4096
    assert os.path.getsize(seg.file_path(".timeindex")) == 4092  # whole 12-byte entries
    log.close()
    assert os.path.getsize(seg.path) == seg.size


def test_index_entries_every_interval(log_dir):
    log = Log.open(log_dir, index_interval_bytes=1000)
    batches = [sized_batch(10, 50, seed=i) for i in range(60)]
    for b in batches:
        log.append(b)
    seg = log.active_segment
    entries = seg.offset_index.entries
    size = len(batches[0])
    assert len(entries) == (60 * size) // (1000 + size) or len(entries) > 10
    positions = [int(p) for p in entries["position"]]
    assert all(p % size == 0 for p in positions)
    assert all(b - a > 1000 for a, b in zip(positions, positions[1:]))
    log.close()


def test_log_append_time_and_leader_epoch(log_dir):
    now = [T0 + 5_000_000]
    log = Log.open(log_dir, message_timestamp_type="LogAppendTime", clock=lambda: now[0])
    info = log.append(make_batch(_values(0), base_timestamp=T0) + make_batch(_values(1), base_timestamp=T0),
                      leader_epoch=7)
    assert info.log_append_time == now[0] and info.batches == 2
    data = bytes(log.read(0, 1 << 20).records)
    for h in batch_headers(data):  # read_batch_header checks the recomputed CRC
        assert h["attributes"] & 0x08
        assert h["max_timestamp"] == now[0] and h["base_timestamp"] == T0
        assert h["partition_leader_epoch"] == 7
    assert all(ts == now[0] for _, ts, _, _ in decode(data))  # kafka-python agrees
    assert log.offset_for_timestamp(now[0]) == (now[0], 0)
    # A replica of this log keeps the leader's bytes, stamp included.
    now[0] += 1000
    replica = Log.open(log_dir + "-replica", message_timestamp_type="LogAppendTime", clock=lambda: now[0])
    info = replica.append(data, assign_offsets=False)
    assert info.log_append_time == -1 and bytes(replica.read(0, 1 << 20).records) == data
    replica.close()
    log.close()


@pytest.mark.parametrize("mmap_append", [False, True])
@pytest.mark.parametrize("form", ["bytes", "list", "tuple"])
@pytest.mark.parametrize("n_batches, n_records, value_size", [
    (3, 4, 20),      # small: copied into the mapping
    (3, 40, 100),    # ~4 KiB batches: one pwritev
    (700, 2, 30),    # more batches than one pwritev takes (grouped calls)
])
def test_header_rewrites_on_every_write_path(log_dir, n_batches, n_records, value_size, form,
                                             mmap_append):
    # Offsets, leader epoch and LogAppendTime (with its recomputed CRC) land the same
    # whichever way the bytes reach the file (and whether they come as one buffer, a list
    # of one batch each, or a tuple of buffers of several batches, an empty one among
    # them); everything else is the producer's bytes.
    now = [T0 + 9_000]
    log = Log.open(log_dir, message_timestamp_type="LogAppendTime", clock=lambda: now[0],
                   mmap_append=mmap_append)
    log.append(sized_batch(5, 10))   # offsets do not start at 0
    pieces = [sized_batch(n_records, value_size, seed=i) for i in range(n_batches)]
    given = b"".join(pieces)
    if form == "list":
        arg = pieces
    elif form == "tuple":
        arg = tuple([b"".join(pieces[:2]), memoryview(b""), bytearray(b"".join(pieces[2:]))])
    else:
        arg = given
    info = log.append(arg, leader_epoch=3)
    assert (info.base_offset, info.last_offset) == (5, 5 + n_batches * n_records - 1)
    data = bytes(log.read(5, 1 << 30).records)
    assert len(data) == len(given)
    headers = batch_headers(data)  # checks every CRC
    assert [h["base_offset"] for h in headers] == [5 + i * n_records for i in range(n_batches)]
    assert all(h["partition_leader_epoch"] == 3 and h["max_timestamp"] == now[0] for h in headers)
    assert [r[2:] for r in decode(data)] == [r[2:] for r in decode(given)]
    log.close()
    reopened = Log.open(log_dir)
    assert bytes(reopened.read(5, 1 << 30).records) == data
    reopened.close()


def test_replica_append_keeps_offsets(log_dir):
    log = Log.open(log_dir, segment_bytes=1 << 16)
    src = Log.open(log_dir + "-leader", segment_bytes=1 << 16)
    for i in range(5):
        src.append(make_batch(_values(i)))
    src.truncate_to(src.log_end_offset)
    data = bytes(src.read(0, 1 << 20).records)
    info = log.append(data, assign_offsets=False)
    assert (info.base_offset, info.last_offset) == (0, 14)
    assert bytes(log.read(0, 1 << 20).records) == data
    before = snapshot(log_dir)
    with pytest.raises(InvalidRecordError):
        log.append(data, assign_offsets=False)  # offsets below the log end offset
    hs = batch_headers(data)
    swapped = data[hs[1]["position"]:hs[2]["position"]] + data[:hs[1]["position"]]
    with pytest.raises(InvalidRecordError):
        log.append(bytes(struct.pack(">q", 100)) + swapped[8:], assign_offsets=False)
    assert snapshot(log_dir) == before and log.log_end_offset == 15
    # A gap is allowed (compacted leaders), and rolls when it overflows 32 bits.
    far = bytearray(make_batch([b"far"]))
    far[0:8] = struct.pack(">q", 15 + 2**32 + 10)
    info = log.append(bytes(far), assign_offsets=False)
    assert info.base_offset == 15 + 2**32 + 10 and info.segment_base_offset == info.base_offset
    assert log.log_end_offset == info.base_offset + 1
    src.close()
    log.close()


# -- bad input leaves the log as it was ----------------------------------------------

@pytest.mark.parametrize("case", ["crc", "truncated", "magic", "count", "too_large", "type", "str",
                                  "empty", "trailing_garbage", "second_batch_bad", "list_second_bad",
                                  "list_split_batch", "empty_list", "list_of_empties", "list_with_str"])
def test_rejected_append_changes_nothing(log_dir, case):
    log = Log.open(log_dir, segment_bytes=1 << 16, max_message_bytes=2000)
    for i in range(3):
        log.append(make_batch(_values(i)))
    log.flush()
    files_before, leo_before = snapshot(log_dir), log.log_end_offset
    good = make_batch(_values(9))
    bad: object = bytearray(good)
    err = CorruptRecordError
    if case == "crc":
        bad[-1] ^= 0xFF
    elif case == "truncated":
        bad = good[:-3]
    elif case == "magic":
        bad[16] = 1
    elif case == "count":
        bad[57:61] = struct.pack(">i", -4)
    elif case == "too_large":
        bad, err = sized_batch(30, 100), RecordTooLargeError
    elif case == "type":
        bad, err = 12345, TypeError
    elif case == "str":
        bad, err = "not bytes", TypeError
    elif case == "empty":
        bad = b""
    elif case == "trailing_garbage":
        bad = good + b"\x00\x01"
    elif case == "second_batch_bad":
        second = bytearray(good)
        second[-1] ^= 1
        bad = good + bytes(second)
    elif case == "list_second_bad":
        second = bytearray(good)
        second[-1] ^= 1
        bad = [good, good, bytes(second), good]
    elif case == "list_split_batch":   # every piece must hold whole batches
        bad = [good, good[:30], good[30:]]
    elif case == "empty_list":
        bad = []
    elif case == "list_of_empties":
        bad = (b"", bytearray())
    elif case == "list_with_str":
        bad, err = [good, "not bytes"], TypeError
    with pytest.raises(err) as exc:
        log.append(bad)
    assert str(exc.value)
    if case == "list_second_bad":    # positions count across the buffers
        assert f"batch 2, at byte {2 * len(good)}" in str(exc.value)
    assert log.log_end_offset == leo_before
    assert snapshot(log_dir) == files_before
    assert log.append(good).base_offset == leo_before  # still appendable
    log.close()


def test_errors_are_the_documented_kinds(log_dir):
    log = Log.open(log_dir)
    with pytest.raises(OffsetOutOfRangeError) as exc:
        log.read(3)
    assert exc.value.error_code == 1 and isinstance(exc.value, IndexError)
    log.close()
    with pytest.raises(LogClosedError):
        log.append(make_batch([b"x"]))


# -- rolling ----------------------------------------------------------------------------

def test_roll_on_segment_bytes(log_dir):
    b = make_batch(_values(0))
    log = Log.open(log_dir, segment_bytes=len(b) * 3 + 5)
    for i in range(10):
        log.append(make_batch(_values(i)))
    assert [s.base_offset for s in log.segments] == [0, 9, 18, 27]
    assert all(s.size == 3 * len(b) for s in log.segments[:-1])
    log.close()


def test_roll_on_segment_ms_by_timestamps(log_dir):
    log = Log.open(log_dir, segment_ms=1000)
    log.append(make_batch([b"a"], base_timestamp=T0))
    log.append(make_batch([b"b"], base_timestamp=T0 + 1000))  # exactly segment_ms: no roll
    assert len(log.segments) == 1
    log.append(make_batch([b"c"], base_timestamp=T0 + 1001))
    assert [s.base_offset for s in log.segments] == [0, 2]
    log.close()


def test_roll_on_segment_ms_by_clock_without_timestamps(log_dir):
    now = [T0]
    log = Log.open(log_dir, segment_ms=1000, clock=lambda: now[0])
    log.active_segment.created_ms = T0
    log.append(make_batch([b"a"], timestamps=[-1]))
    now[0] = T0 + 2000
    log.append(make_batch([b"b"], timestamps=[-1]))
    assert len(log.segments) == 2
    log.close()


def test_roll_on_full_index(log_dir):
    # 24-byte indexes: 3 offset entries, 2 time entries (the last slot is kept for the roll).
    log = Log.open(log_dir, segment_index_bytes=24, index_interval_bytes=0)
    for i in range(12):
        log.append(make_batch(_values(i, 1), base_timestamp=T0 + i))
    segs = log.segments
    assert len(segs) > 3
    for s in segs[:-1]:
        assert len(s.time_index) <= 2 and len(s.offset_index) <= 3
    assert [o for o, *_ in read_all(log)] == list(range(12))
    log.close()


def test_roll_on_relative_offset_overflow(log_dir):
    log = Log.open(log_dir)
    log.append(make_batch([b"a"]))
    big = bytearray(make_batch([b"b"]))
    big[0:8] = struct.pack(">q", 2**32 - 1)  # relative offset 2**32 - 1 still fits
    log.append(bytes(big), assign_offsets=False)
    assert len(log.segments) == 1
    big[0:8] = struct.pack(">q", 2**32)
    log.append(bytes(big), assign_offsets=False)
    assert [s.base_offset for s in log.segments] == [0, 2**32]
    assert log.read(2**32 - 1).base_offset == 2**32 - 1
    log.close()


def test_append_larger_than_segment(log_dir):
    log = Log.open(log_dir, segment_bytes=500, max_message_bytes=10_000)
    with pytest.raises(RecordBatchTooLargeError):
        log.append(sized_batch(10, 100))
    log.close()


# -- truncation and deletion ---------------------------------------------------------

def test_truncate_to(log_dir):
    log = Log.open(log_dir, segment_bytes=1000)
    for i in range(30):
        log.append(make_batch(_values(i)))  # offsets 3i..3i+2
    assert len(log.segments) > 3
    assert not log.truncate_to(90)
    assert log.truncate_to(60)  # a batch boundary
    assert log.log_end_offset == 60
    assert [o for o, *_ in read_all(log)] == list(range(60))
    assert log.truncate_to(50)  # inside the batch 48..50: it goes whole
    assert log.log_end_offset == 48
    assert log.append(make_batch([b"new"])).base_offset == 48
    assert [o for o, *_ in read_all(log)][-2:] == [47, 48]
    assert log.offset_for_timestamp(T0 + 2) is not None
    log.close()
    log = Log.open(log_dir, segment_bytes=1000)
    assert log.log_end_offset == 49 and read_all(log)[-1][3] == b"new"
    assert log.truncate_to(0) and log.log_end_offset == 0 and len(log.segments) == 1
    log.close()


def test_truncate_zeroes_the_removed_bytes(log_dir):
    log = Log.open(log_dir, segment_bytes=1 << 16)
    for i in range(10):
        log.append(make_batch(_values(i)))
    log.truncate_to(9)
    seg = log.active_segment
    with open(seg.path, "rb") as f:
        f.seek(seg.size)
        assert f.read(4096).count(0) == 4096
    log.close()


def test_truncate_never_ends_below_the_log_start(log_dir):
    log = Log.open(log_dir)
    log.append(make_batch([b"x"] * 8))        # 0..7
    log.delete_records_before(5)
    assert log.truncate_to(6)                  # the batch 0..7 goes whole
    assert (log.log_start_offset, log.log_end_offset) == (5, 5)
    assert log.append(make_batch([b"y"])).base_offset == 5
    log.close()
    log = Log.open(log_dir)
    assert (log.log_start_offset, log.log_end_offset) == (5, 6)
    log.close()


def test_truncate_below_log_start(log_dir):
    log = Log.open(log_dir, segment_bytes=500)
    for i in range(10):
        log.append(make_batch(_values(i)))
    log.delete_records_before(20)
    log.truncate_to(5)
    assert (log.log_start_offset, log.log_end_offset) == (5, 5)
    assert log.append(make_batch([b"x"])).base_offset == 5
    log.close()


def test_delete_records_before(log_dir):
    log = Log.open(log_dir, segment_bytes=700)
    for i in range(20):
        log.append(make_batch(_values(i)))
    bases = [s.base_offset for s in log.segments]
    assert len(bases) > 3
    target = bases[2] + 1
    assert log.delete_records_before(target) == target
    assert log.log_start_offset == target
    assert [s.base_offset for s in log.segments][0] == bases[2]
    assert not os.path.exists(os.path.join(log_dir, f"{bases[0]:020d}.log"))
    with pytest.raises(OffsetOutOfRangeError):
        log.read(target - 1)
    assert log.read(target).base_offset <= target
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_records_before(log.log_end_offset + 1)
    assert log.delete_records_before(5) == target  # never backwards
    log.delete_records_before(log.log_end_offset)  # everything: the active segment stays
    assert len(log.segments) == 1 and log.log_start_offset == log.log_end_offset
    log.close()
    log = Log.open(log_dir, segment_bytes=700)
    assert log.log_start_offset == log.log_end_offset == 60
    log.close()


# -- retention -------------------------------------------------------------------------

def test_retention_by_time(log_dir):
    log = Log.open(log_dir, segment_bytes=700, retention_ms=10_000)
    for i in range(20):
        log.append(make_batch(_values(i), base_timestamp=T0 + i * 1000))
    segs = log.segments
    # Segments whose newest record is more than 10 s older than now go, oldest first.
    now = segs[2].max_timestamp + 10_001
    res = log.apply_retention(now_ms=now)
    assert res.deleted_segments == tuple(s.base_offset for s in segs[:3])
    assert res.deleted_bytes == sum(s.size for s in segs[:3])
    assert log.log_start_offset == segs[3].base_offset == res.log_start_offset
    # Never the active segment, however old.
    res = log.apply_retention(now_ms=T0 + 10**9)
    assert len(log.segments) == 1 and log.active_segment is segs[-1]
    log.close()


def test_retention_by_size(log_dir):
    log = Log.open(log_dir, segment_bytes=700, retention_bytes=2000)
    for i in range(30):
        log.append(make_batch(_values(i)))
    log.apply_retention(now_ms=T0)
    assert log.size <= 2000 + log.segments[0].size
    assert log.size - log.segments[0].size < 2000 <= log.size or len(log.segments) == 1
    log.close()


def test_retention_off_for_compact_only(log_dir):
    log = Log.open(log_dir, segment_bytes=700, retention_ms=1, cleanup_policy="compact")
    for i in range(10):
        log.append(make_batch(_values(i)))
    assert log.apply_retention(now_ms=T0 + 10**9).deleted_segments == ()
    log.close()


# -- timestamps ------------------------------------------------------------------------

def test_offset_for_timestamp(log_dir):
    log = Log.open(log_dir, segment_bytes=800, index_interval_bytes=100)
    # Record i has timestamp T0 + 10 * i, except a few out of order.
    stamps = [T0 + 10 * i for i in range(60)]
    stamps[17] = T0 + 5
    for i in range(0, 60, 4):
        log.append(make_batch([b"r%d" % j for j in range(i, i + 4)], timestamps=stamps[i:i + 4]))
    for target in [T0 - 1, T0, T0 + 1, T0 + 5, T0 + 171, T0 + 200, T0 + 590, T0 + 595]:
        expected = next(((o, ts) for o, ts in enumerate(stamps) if ts >= target), None)
        got = log.offset_for_timestamp(target)
        if expected is None:
            assert got is None
        else:
            assert (got.offset, got.timestamp) == expected, target
    assert log.offset_for_timestamp(LATEST_TIMESTAMP) == (-1, 60)
    assert log.offset_for_timestamp(EARLIEST_TIMESTAMP) == (-1, 0)
    assert log.offset_for_timestamp(MAX_TIMESTAMP) == (T0 + 590, 59)
    log.delete_records_before(30)
    assert log.offset_for_timestamp(T0).offset == 30
    log.close()


# -- reopen, config, threads ---------------------------------------------------------------

def test_reopen_after_clean_close(log_dir):
    log = Log.open(log_dir, segment_bytes=1000)
    for i in range(20):
        log.append(make_batch(_values(i)))
    before = read_all(log)
    log.close()
    files = snapshot(log_dir)
    log = Log.open(log_dir, segment_bytes=1000)
    assert log.had_clean_shutdown and log.recovered == []
    assert read_all(log) == before
    assert log.recovery_point == log.log_end_offset == 60
    assert not os.path.exists(os.path.join(log_dir, ".kafka_cleanshutdown"))
    log.close()
    assert snapshot(log_dir) == files


def test_config_validation_and_kafka_names():
    cfg = LogConfig.from_kafka({"segment.bytes": "1048576", "retention.ms": "-1",
                                "message.timestamp.type": "LogAppendTime", "preallocate": "true",
                                "flush.messages": str(2**63 - 1)})
    assert cfg.segment_bytes == 1 << 20 and cfg.retention_ms == -1 and cfg.flush_messages is None
    assert cfg.message_timestamp_type == "LogAppendTime"
    assert LogConfig.from_kafka(cfg.to_kafka()) == cfg
    for bad in [{"segment.bytes": "0"}, {"segment.bytes": "abc"}, {"no.such.setting": "1"},
                {"message.timestamp.type": "Wall"}, {"retention.ms": "-2"}, {"cleanup.policy": "keep"},
                {"min.cleanable.dirty.ratio": "2"}]:
        with pytest.raises(InvalidConfigError):
            LogConfig.from_kafka(bad)
    with pytest.raises(InvalidConfigError):
        LogConfig(segment_bytes=True)
    with pytest.raises(InvalidConfigError):
        Log.open("/tmp/never-created-pylog", segment_byts=10)


def test_appends_from_many_threads(log_dir):
    log = Log.open(log_dir, segment_bytes=20_000)
    per_thread = 200

    def work(t):
        for i in range(per_thread):
            info = log.append(make_batch([b"%d:%d" % (t, i)] * 2))
            assert info.last_offset == info.base_offset + 1

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    recs = read_all(log)
    assert [o for o, *_ in recs] == list(range(6 * per_thread * 2))
    seen = {}
    for _, _, _, v in recs:
        seen[v] = seen.get(v, 0) + 1
    assert len(seen) == 6 * per_thread and set(seen.values()) == {2}
    # per-thread order preserved
    for t in range(6):
        mine = [int(v.split(b":")[1]) for _, _, _, v in recs[::2] if v.startswith(b"%d:" % t)]
        assert mine == sorted(mine)
    log.close()


def test_flush_policy_by_messages(log_dir):
    log = Log.open(log_dir, flush_messages=6)
    for i in range(3):
        log.append(make_batch(_values(i)))
        assert log.recovery_point == (0 if i == 0 else 6)
    log.close()


def test_flush_policy_by_time(log_dir):
    now = [T0]
    log = Log.open(log_dir, flush_ms=100, clock=lambda: now[0])
    log.append(make_batch(_values(0)))
    assert log.recovery_point == 0
    now[0] += 150
    log.append(make_batch(_values(1)))
    assert log.recovery_point == 6
    log.append(make_batch(_values(2)))
    assert not log.maybe_flush(now_ms=now[0] + 10) and log.recovery_point == 6
    assert log.maybe_flush(now_ms=now[0] + 1000) and log.recovery_point == 9
    log.close()


def test_update_config_applies_to_the_open_log(log_dir):
    now = [T0 + 5_000]
    log = Log.open(log_dir, clock=lambda: now[0])
    log.append(make_batch(_values(0), base_timestamp=T0))
    log.update_config(max_message_bytes=100)
    with pytest.raises(RecordTooLargeError):
        log.append(sized_batch(5, 100))
    assert log.log_end_offset == 3
    log.update_config(message_timestamp_type="LogAppendTime", max_message_bytes=1 << 20)
    info = log.append(make_batch(_values(1), base_timestamp=T0))
    assert info.log_append_time == now[0]
    segments = len(log.segments)
    log.update_config(segment_bytes=1 << 16)     # sizes a segment at creation: rolls a non-empty one
    assert len(log.segments) == segments + 1 and log.config.segment_bytes == 1 << 16
    with pytest.raises(InvalidConfigError):
        log.update_config(segment_bytes=-1)
    assert log.config.segment_bytes == 1 << 16
    log.close()


def test_append_may_fsync_says_when_an_append_would_fsync(tmp_path, monkeypatch):
    """The hint a server's event loop reads before appending: a flush policy (a new
    epoch's checkpoint is written by the next flush); checked against the fsyncs the
    appends really make, and the checkpoint is written once the log is flushed."""
    fsyncs = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real(fd))[1])
    with Log.open(str(tmp_path / "plain")) as log:
        assert not log.append_may_fsync(0) and not log.append_may_fsync(None)
        del fsyncs[:]
        log.append(make_batch([b"a"]), leader_epoch=0)
        log.append(make_batch([b"b"]), leader_epoch=0)
        log.append(make_batch([b"c"]), leader_epoch=1)
        assert fsyncs == [], "no append fsyncs, not even a new epoch's first"
        assert not log.append_may_fsync(2)
        assert log.leader_epochs == ((0, 0), (1, 2))
        log.flush()
        assert fsyncs, "a flush makes the segment and the epoch checkpoint durable"
        assert (tmp_path / "plain" / "leader-epoch-checkpoint").read_text() == "0\n2\n0 0\n1 2\n"
    with Log.open(str(tmp_path / "flushed"), flush_messages=1) as log:
        log.append(make_batch([b"a"]), leader_epoch=0)
        assert log.append_may_fsync(0) and log.append_may_fsync(None)
        del fsyncs[:]
        log.append(make_batch([b"b"]), leader_epoch=0)
        assert fsyncs, "flush_messages=1 fsyncs every append"


@pytest.mark.parametrize("epoch, error", [(1 << 40, ValueError), (-2, ValueError), ("7", TypeError),
                                          (7.5, TypeError), (True, TypeError)])
def test_a_bad_leader_epoch_is_refused_before_anything_changes(tmp_path, epoch, error):
    """Checked before the lock: a full segment must not roll for an append that is then
    refused, and a float must never reach leader-epoch-checkpoint."""
    d = str(tmp_path / "log")
    with Log.open(d, segment_bytes=2048) as log:
        while log.active_segment.size < 1800:
            log.append(make_batch([b"x" * 200]), leader_epoch=0)
        files, leo, epochs = sorted(os.listdir(d)), log.log_end_offset, log.leader_epochs
        with pytest.raises(error):
            log.append(make_batch([b"y" * 400]), leader_epoch=epoch)
        assert (sorted(os.listdir(d)), log.log_end_offset, log.leader_epochs) == (files, leo, epochs)


def test_a_failed_roll_refuses_appends_instead_of_crashing(tmp_path, monkeypatch):
    """A roll seals the active segment, then creating the next one fails (EMFILE): the
    log has no appender and says so on every append until reopened (it used to read
    a None appender from C and crash the process)."""
    import pylog.storage.log as logmod

    d = str(tmp_path / "log")
    log = Log.open(d, segment_bytes=2048)
    real = logmod.LogSegment.create

    def fail(*args, **kwargs):
        raise OSError(24, "Too many open files (simulated)")

    monkeypatch.setattr(logmod.LogSegment, "create", fail)
    with pytest.raises(OSError):
        for _ in range(50):
            log.append(make_batch([b"x" * 200]))
    leo = log.log_end_offset
    for _ in range(2):
        with pytest.raises(KafkaStorageError, match="a roll failed"):
            log.append(make_batch([b"y"]))
    assert log.log_end_offset == leo
    monkeypatch.setattr(logmod.LogSegment, "create", real)
    log.close()
    with Log.open(d, segment_bytes=2048) as again:
        assert again.log_end_offset == leo
        assert again.append(make_batch([b"z"])).base_offset == leo


def test_replica_append_reads_the_buffers_it_wrote_even_if_the_list_changes(tmp_path):
    """A replica append learns its epochs from the buffers appended, not from the
    caller's list read again afterwards (the write may run without the GIL)."""
    def replica_batch(offset, epoch):
        # baseOffset and partitionLeaderEpoch lie before the CRC'd part of the header.
        b = bytearray(make_batch([b"r"], timestamps=[-1]))
        struct.pack_into(">q", b, 0, offset)
        struct.pack_into(">i", b, 12, epoch)
        return bytes(b)

    armed = []

    def clock():
        if armed:
            armed[0][:] = [42]   # the caller's list changes while the append runs
        return 1_700_000_000_000

    with Log.open(str(tmp_path / "log"), clock=clock) as log:
        log.append(replica_batch(0, 3), assign_offsets=False)
        pieces = [replica_batch(1, 5), replica_batch(2, 5)]
        armed.append(pieces)
        info = log.append(pieces, assign_offsets=False)
        assert pieces == [42], "the clock ran during the append and changed the list"
        assert (info.base_offset, log.log_end_offset) == (1, 3)
        assert [tuple(e) for e in log.leader_epochs] == [(3, 0), (5, 1)]
