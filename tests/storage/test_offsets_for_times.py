"""ListOffsets by timestamp and MAX_TIMESTAMP (-3) answered at record level, as Apache
Kafka 4.x answers them, for compressed and uncompressed batches alike.

The oracle reads the segment files with kafka-python's record decoder (independent of
pylog's) and applies Kafka's rules by brute force:

- a timestamp ``t`` >= 0 (UnifiedLog.fetchOffsetByTimestamp, LogSegment.findOffsetByTimestamp,
  FileRecords.searchForTimestamp): the first segment whose largest timestamp is >= ``t``
  answers alone, with its first record, in offset order and at or above the log start
  offset, whose timestamp is >= ``t``;
- MAX_TIMESTAMP (since KAFKA-16310): the first segment holding the log's largest timestamp,
  its first batch with that maxTimestamp, and that batch's first record with exactly that
  timestamp (RecordBatch.offsetOfMaxTimestamp); the log start offset does not apply.

A LogAppendTime batch gives every record its maxTimestamp.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

from pylog.errors import CorruptRecordError
from pylog.storage import MAX_TIMESTAMP, Log
from tests.storage.batches import CODECS, DefaultRecordBatch, DefaultRecordBatchBuilder

T0 = 1_700_000_000_000


def build_batch(records, codec: str) -> bytes:
    """One v2 batch of ``(offset_delta, timestamp)`` records (gaps in the deltas stand for
    records a compaction removed), built by kafka-python."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=CODECS[codec], is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
    for delta, ts in records:
        # Values repeat so that every codec really shrinks them.
        if b.append(delta, timestamp=ts, key=None, value=b"v%d" % ts * 3, headers=[]) is None:
            raise ValueError("batch builder refused a record")
    return bytes(b.build())


def segment_files(directory) -> list[list[tuple[int, int, list[tuple[int, int]]]]]:
    """Each segment, in offset order, as ``[(max_timestamp, last_offset, [(offset,
    timestamp), ...]), ...]`` per batch, decoded by kafka-python from the ``.log`` files."""
    segments = []
    for name in sorted(n for n in os.listdir(directory) if n.endswith(".log") and n[:-4].isdigit()):
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        batches, pos = [], 0
        while pos + 61 <= len(data):
            length = struct.unpack_from(">i", data, pos + 8)[0]
            if length <= 0:
                break  # the preallocated tail of an active segment
            batch = DefaultRecordBatch(data[pos:pos + 12 + length])
            records = [(r.offset, r.timestamp) for r in batch]
            last = struct.unpack_from(">q", data, pos)[0] + struct.unpack_from(">i", data, pos + 23)[0]
            batches.append((batch.max_timestamp, last, records))
            pos += 12 + length
        segments.append(batches)
    return segments


def kafka_answer(segments, target: int, log_start: int) -> tuple[int, int] | None:
    """``(timestamp, offset)`` Apache Kafka answers, by brute force over every record."""
    if target == MAX_TIMESTAMP:
        best, best_ts = None, None
        for seg in segments:
            ts = max((b[0] for b in seg), default=-1)
            if best is None or ts > best_ts:
                best, best_ts = seg, ts
        for max_ts, _, records in best or ():
            if max_ts == best_ts:
                return next(((ts, off) for off, ts in records if ts == best_ts), None)
        return None
    for seg in segments:
        # pylog skips the segments wholly below the log start offset (retention deletes them).
        if not seg or seg[-1][1] < log_start or max(b[0] for b in seg) < target:
            continue
        for max_ts, _, records in seg:
            if max_ts >= target:
                hit = next(((ts, off) for off, ts in records if ts >= target and off >= log_start), None)
                if hit is not None:
                    return hit
        return None
    return None


def check_against_kafka(log: Log, directory, targets) -> None:
    segments = segment_files(directory)
    start = log.log_start_offset
    for target in [*targets, MAX_TIMESTAMP]:
        got = log.offset_for_timestamp(target)
        want = kafka_answer(segments, target, start)
        assert (None if got is None else tuple(got)) == want, (target, start)


record_lists = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40)), min_size=1, max_size=8)
batch_specs = st.tuples(record_lists, st.sampled_from(sorted(CODECS)))


@settings(max_examples=60, deadline=None)
@given(appends=st.lists(st.lists(batch_specs, min_size=1, max_size=3), min_size=1, max_size=12),
       segment_bytes=st.sampled_from([2000, 4000, 1 << 20]),
       log_append_time=st.booleans(),
       clock_ticks=st.lists(st.integers(0, 3), min_size=12, max_size=12),
       delete_fraction=st.none() | st.floats(0, 1))
def test_offset_for_timestamp_model(tmp_path_factory, appends, segment_bytes, log_append_time,
                                    clock_ticks, delete_fraction):
    """Random batches of every codec, timestamps out of order and equal within and across
    batches, offset gaps, several batches per append, CreateTime and LogAppendTime (a clock
    that may stand still), rolled segments, DeleteRecords, and a reopen: every answer is
    Kafka's."""
    directory = str(tmp_path_factory.mktemp("log") / "t-0")
    times = iter([T0 + sum(clock_ticks[:i + 1]) for i in range(len(clock_ticks))])
    now = [T0]

    def clock() -> int:
        return now[0]

    settings_ = dict(segment_bytes=segment_bytes, index_interval_bytes=64, clock=clock,
                     message_timestamp_type="LogAppendTime" if log_append_time else "CreateTime")
    log = Log.open(directory, **settings_)
    try:
        for batches in appends:
            now[0] = next(times)
            chunks = []
            for records, codec in batches:
                deltas, offset = [], 0
                for gap, ts in records:
                    offset += gap
                    deltas.append((offset, T0 + ts))
                    offset += 1
                chunks.append(build_batch(deltas, codec))
            log.append(b"".join(chunks))
        targets = [T0 - 1, *(T0 + t for t in range(0, 44, 3)), T0 + 10**6]
        check_against_kafka(log, directory, targets)
        if delete_fraction is not None:
            log.delete_records_before(int(delete_fraction * log.log_end_offset))
            check_against_kafka(log, directory, targets)
        log.close()
        # Reopened: the segments' largest timestamps and their offsets come back from the
        # time indexes (clean shutdown) and the answers stay the same.
        log = Log.open(directory, **settings_)
        check_against_kafka(log, directory, targets)
    finally:
        log.close()


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_issue_16_finding(log_dir, codec):
    """The Java driver's partition 0: records 0..99 with timestamps T0 + 2 * i, in batches
    of a few records (several waves, as a producer's linger makes them)."""
    log = Log.open(log_dir)
    sizes = [29, 21, 17, 33]
    offset = 0
    for n in sizes:
        log.append(build_batch([(i, T0 + 2 * (offset + i)) for i in range(n)], codec))
        offset += n
    assert tuple(log.offset_for_timestamp(T0 + 100)) == (T0 + 100, 50)
    assert tuple(log.offset_for_timestamp(T0 + 101)) == (T0 + 102, 51)
    assert tuple(log.offset_for_timestamp(MAX_TIMESTAMP)) == (T0 + 198, 99)
    assert log.offset_for_timestamp(T0 + 199) is None
    log.delete_records_before(50)
    assert tuple(log.offset_for_timestamp(T0)) == (T0 + 100, 50)
    log.close()


def test_max_timestamp_takes_the_first_record_and_batch_holding_it(log_dir):
    """Equal largest timestamps: the first batch that holds it, and in it the first record
    with it, even when later records of that batch and later batches have it too."""
    log = Log.open(log_dir, index_interval_bytes=1)
    log.append(build_batch([(0, T0 + 5), (1, T0 + 9), (2, T0 + 1)], "lz4"))
    log.append(build_batch([(0, T0 + 3), (1, T0 + 20), (2, T0 + 7), (3, T0 + 20)], "gzip"))
    log.append(build_batch([(0, T0 + 20), (1, T0 + 20)], "none"))
    assert tuple(log.offset_for_timestamp(MAX_TIMESTAMP)) == (T0 + 20, 4)
    # Out of order inside a compressed batch: the first record at or after the target.
    assert tuple(log.offset_for_timestamp(T0 + 6)) == (T0 + 9, 1)
    assert tuple(log.offset_for_timestamp(T0 + 8)) == (T0 + 9, 1)
    assert tuple(log.offset_for_timestamp(T0 + 10)) == (T0 + 20, 4)
    log.close()


def test_log_append_time_compressed(log_dir):
    """LogAppendTime: every record has the batch's maxTimestamp, so both answers name the
    first record of the first batch stamped with it."""
    now = [T0 + 1000]
    log = Log.open(log_dir, message_timestamp_type="LogAppendTime", clock=lambda: now[0])
    log.append(build_batch([(2, T0), (5, T0 + 1)], "zstd"))  # offsets 2 and 5 of 0..5
    now[0] += 7
    log.append(build_batch([(0, T0), (1, T0)], "snappy"))
    log.append(build_batch([(0, T0)], "gzip"))
    assert tuple(log.offset_for_timestamp(T0 + 1000)) == (T0 + 1000, 2)
    assert tuple(log.offset_for_timestamp(T0 + 1001)) == (T0 + 1007, 6)
    assert tuple(log.offset_for_timestamp(MAX_TIMESTAMP)) == (T0 + 1007, 6)
    log.close()


def test_damaged_records_are_reported(log_dir):
    """A searched batch whose records do not parse answers CorruptRecordError (Kafka's
    CORRUPT_MESSAGE), never a guess."""
    log = Log.open(log_dir)
    log.append(build_batch([(0, T0), (1, T0 + 1)], "none"))
    log.close()
    path = os.path.join(log_dir, "00000000000000000000.log")
    with open(path, "r+b") as f:
        f.seek(61)
        f.write(b"\x7f")  # the first record's length now runs past the batch
    log = Log.open(log_dir, clean_shutdown=True)
    with pytest.raises(CorruptRecordError):
        log.offset_for_timestamp(T0 + 1)
    log.close()


@pytest.mark.bench
def test_bench_list_offsets_smoke(monkeypatch, tmp_path):
    """benches/bench_list_offsets.py at small size: every timed call runs, and the answers
    it times are the records holding the targets."""
    import importlib
    import sys

    monkeypatch.setenv("PYLOG_BENCH_SMALL", "1")
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("benches.bench_list_offsets", None)
    bench_mod = importlib.import_module("benches.bench_list_offsets")
    try:
        assert bench_mod.SMALL
        for codec in bench_mod.OffsetForTimestamp.params:
            bench = bench_mod.OffsetForTimestamp()
            bench.setup(codec)
            try:
                for name in dir(bench):
                    if name.startswith("time_"):
                        getattr(bench, name)(codec)
                assert bench.answers() == [(t, t - T0) for t in bench.targets]
            finally:
                bench.teardown(codec)
    finally:
        sys.modules.pop("benches.bench_list_offsets", None)
