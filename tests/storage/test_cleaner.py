"""Log compaction (pylog.storage.cleaner and the C passes in _cleaner.pxi): latest value per
key with offsets, values, headers and timestamps intact; tombstones and KIP-534 delete
horizons; the active segment, min_compaction_lag_ms, dirty ratio and max_offset bounds;
codecs; idempotent and transactional batches; segment grouping; checkpoints; bad input.

Batches are built by kafka-python's builder (an implementation independent of pylog's)
unless a test needs pylog's (compression always applied), and read back through
Log.read and kafka-python's decoder.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pylog import _core
from pylog.errors import CorruptRecordError, InvalidConfigError, LogClosedError
from pylog.records import RecordBatch, RecordBatchBuilder, build_control_batch, filter_batch
from pylog.storage import Log, LogConfig, LogManager
from pylog.storage.cleaner import CLEANER_OFFSET_CHECKPOINT, NO_DELETE_HORIZON, LogCleaner
from pylog.storage.checkpoint import CheckpointFile

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

T0 = 1_700_000_000_000
DAY = 86_400_000
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
ATTR_DELETE_HORIZON = 0x40


# -- helpers (also used by the other cleaner test files) -----------------------------------

def kbatch(records, *, codec="none", producer_id=-1, producer_epoch=-1, base_sequence=-1,
           transactional=False, ts=T0) -> bytes:
    """One batch built by kafka-python: ``records`` are ``(key, value[, headers[, ts]])``."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=CODECS[codec], is_transactional=transactional,
                                  producer_id=producer_id, producer_epoch=producer_epoch,
                                  base_sequence=base_sequence, batch_size=1 << 30)
    for i, rec in enumerate(records):
        headers = list(rec[2]) if len(rec) > 2 else []
        stamp = rec[3] if len(rec) > 3 else ts + i
        if b.append(i, timestamp=stamp, key=rec[0], value=rec[1], headers=headers) is None:
            raise ValueError("kafka-python refused a record")
    return bytes(b.build())


def pbatch(records, *, codec="none", ts=T0, **kwargs) -> bytes:
    """One batch built by pylog's builder (compresses whatever the size)."""
    b = RecordBatchBuilder(compression=codec, **kwargs)
    for i, rec in enumerate(records):
        b.append(rec[3] if len(rec) > 3 else ts + i, rec[0], rec[1], rec[2] if len(rec) > 2 else ())
    return b.build()


def log_batches(log: Log) -> list[bytes]:
    """Every stored batch, in order, as bytes (read through Log.read)."""
    out = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        r = log.read(offset, 1 << 20)
        if r.size == 0:
            break
        data = bytes(r.records)
        r.release()
        pos = 0
        while pos < len(data):
            h = _core.read_batch_header(data, pos)
            out.append(data[pos:pos + h["size"]])
            pos += h["size"]
        offset = r.next_offset
    return out


def log_records(log: Log) -> list[tuple]:
    """``(offset, key, value, headers, timestamp)`` of every readable data record, decoded
    by kafka-python."""
    out = []
    for raw in log_batches(log):
        if header(raw)["attributes"] & 0x20:
            continue  # control batches: transaction markers
        for rec in DefaultRecordBatch(raw):
            if rec.offset >= log.log_start_offset:
                out.append((rec.offset, rec.key, rec.value, tuple(rec.headers), rec.timestamp))
    return out


def header(raw: bytes) -> dict:
    return _core.read_batch_header(raw)


def latest_per_key(records, end_offset: int) -> list[tuple]:
    """The records a clean of ``[.., end_offset)`` keeps, tombstones included: the last of
    each key below end_offset, every keyless record, everything from end_offset on."""
    latest = {}
    for rec in records:
        if rec[0] < end_offset and rec[1] is not None:
            latest[rec[1]] = rec[0]
    return [rec for rec in records if rec[0] >= end_offset or rec[1] is None or latest[rec[1]] == rec[0]]


def open_log(path, **settings) -> Log:
    cfg = dict(segment_bytes=1024, index_interval_bytes=128, cleanup_policy="compact",
               delete_retention_ms=DAY, min_cleanable_dirty_ratio=0.5)
    cfg.update(settings)
    return Log.open(path, **cfg)


def fill(log: Log, rng: random.Random, n_batches: int, *, keys: int = 8, tombstones: float = 0.1,
         keyless: float = 0.05, codec: str = "none", ts: int = T0) -> list[tuple]:
    """Append random batches; returns the records appended as (offset, key, value, headers, ts)."""
    appended = []
    for i in range(n_batches):
        recs = []
        for j in range(rng.randint(1, 6)):
            key = None if rng.random() < keyless else b"key-%d" % rng.randrange(keys)
            value = None if key is not None and rng.random() < tombstones else rng.randbytes(rng.randint(0, 40))
            headers = (("h", b"%d" % j),) if rng.random() < 0.3 else ()
            recs.append((key, value, headers, ts + i))
        info = log.append(kbatch(recs, codec=codec))
        for k, rec in enumerate(recs):
            appended.append((info.base_offset + k, rec[0], rec[1], rec[2], rec[3]))
    return appended


@pytest.fixture
def log_path(tmp_path):
    return str(tmp_path / "compacted-0")


# -- C parts: digests and the offset map ----------------------------------------------

REF_K0 = int.from_bytes(bytes(range(8)), "little")
REF_K1 = int.from_bytes(bytes(range(8, 16)), "little")


def test_siphash_reference_vectors():
    """The SipHash core against the reference vectors (key 00..0f, message 00..len-1)."""
    assert _core.siphash(b"", REF_K0, REF_K1).hex() == "310e0edd47db6f72"
    assert _core.siphash(bytes(range(1)), REF_K0, REF_K1).hex() == "fd67dc93c539f874"
    assert _core.siphash(bytes(range(2)), REF_K0, REF_K1).hex() == "5a4fa9d909806c0d"
    assert _core.siphash(b"", REF_K0, REF_K1, digest_size=16).hex() == "a3817f04ba25a8e66df67214c7550293"
    assert _core.siphash(bytes(range(1)), REF_K0, REF_K1, digest_size=16).hex() == "da87c1d86b99af44347659119b22fc45"


def test_siphash13_matches_pythons_string_hash():
    """CPython hashes bytes with SipHash-1-3; under PYTHONHASHSEED=0 its key is zero, so the
    1-3 rounds the offset map uses are checked against an independent implementation."""
    msgs = [b"a", b"abcdefg", b"abcdefgh", b"key-123456789", bytes(range(40))]
    code = "import sys; print(' '.join(str(hash(m)) for m in %r))" % (msgs,)
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    expected = [int(x) for x in out.stdout.split()]
    ours = [int.from_bytes(_core.siphash(m, 0, 0, c_rounds=1, d_rounds=3), "little", signed=True) for m in msgs]
    assert ours == expected


def test_siphash_rejects_bad_parameters():
    with pytest.raises(ValueError):
        _core.siphash(b"x", digest_size=4)
    with pytest.raises(ValueError):
        _core.siphash(b"x", c_rounds=0)


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.tuples(st.binary(max_size=12), st.integers(0, 10**12)), max_size=400))
def test_offset_map_against_dict(ops):
    """Greatest offset per key, through growth, against a dict."""
    m = _core.OffsetMap(0, seed=bytes(16))
    model: dict[bytes, int] = {}
    for key, offset in ops:
        m.put(key, offset)
        model[key] = max(model.get(key, -1), offset)
    assert len(m) == len(model)
    for key, offset in model.items():
        assert m.get(key) == offset and key in m
    assert m.get(b"\xff" * 13) is None and m.get(b"\xff" * 13, -7) == -7
    assert m.memory_bytes == m.capacity_slots * _core.OFFSET_MAP_SLOT_BYTES
    assert len(model) * 4 <= m.capacity_slots * 3


def test_offset_map_digest_depends_on_seed():
    a, b = _core.OffsetMap(seed=bytes(16)), _core.OffsetMap(seed=bytes(16))
    c = _core.OffsetMap(seed=b"\x01" * 16)
    assert a.digest(b"k") == b.digest(b"k") != c.digest(b"k")
    assert len(a.digest(b"k")) == 16
    with pytest.raises(ValueError):
        _core.OffsetMap(seed=b"short")
    with pytest.raises(ValueError):
        a.put(b"k", -1)


# -- re-encoding -----------------------------------------------------------------------------

record_lists = st.lists(
    st.tuples(st.one_of(st.none(), st.binary(max_size=8)), st.one_of(st.none(), st.binary(max_size=30)),
              st.lists(st.tuples(st.text(max_size=3), st.one_of(st.none(), st.binary(max_size=4))), max_size=2),
              st.integers(T0 - 10**6, T0 + 10**6)),
    min_size=1, max_size=20)


@settings(max_examples=40, deadline=None)
@given(records=record_lists, codec=st.sampled_from(["none", "gzip", "lz4", "zstd", "snappy"]),
       horizon=st.integers(0, 2**62), log_append=st.booleans())
def test_set_delete_horizon_keeps_every_record(records, codec, horizon, log_append):
    """KIP-534 rewrite: bit 6 and baseTimestamp = horizon; kafka-python and pylog still
    decode every record with its own timestamp, key, value and headers."""
    raw = pbatch(records, codec=codec, producer_id=7, producer_epoch=2, base_sequence=40,
                 timestamp_type="log_append" if log_append else "create")
    out = _core.set_delete_horizon(raw, horizon)
    h, h0 = header(out), header(raw)
    assert h["attributes"] == h0["attributes"] | ATTR_DELETE_HORIZON
    assert h["base_timestamp"] == horizon
    for field in ("base_offset", "last_offset_delta", "max_timestamp", "producer_id", "producer_epoch",
                  "base_sequence", "records_count", "partition_leader_epoch"):
        assert h[field] == h0[field], field
    before = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in RecordBatch(raw)]
    after = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in RecordBatch(out)]
    assert after == before
    theirs = [(r.offset, r.key, r.value) for r in DefaultRecordBatch(out)]
    assert theirs == [(o, k, v) for o, _t, k, v, _h in before]
    assert DefaultRecordBatch(out).validate_crc()
    if not log_append:
        assert [r.timestamp for r in DefaultRecordBatch(out)] == [t for _o, t, *_ in before]


def test_empty_batch_keeps_producer_fields():
    raw = kbatch([(b"k", b"v"), (b"k2", b"v")], producer_id=9, producer_epoch=3, base_sequence=11)
    out = _core.empty_batch(raw)
    h, h0 = header(out), header(raw)
    assert h["records_count"] == 0 and h["size"] == 61
    for field in ("base_offset", "last_offset_delta", "producer_id", "producer_epoch", "base_sequence",
                  "max_timestamp"):
        assert h[field] == h0[field]
    assert list(DefaultRecordBatch(out)) == [] and DefaultRecordBatch(out).validate_crc()


@settings(max_examples=40, deadline=None)
@given(keys=st.lists(st.integers(0, 4), min_size=1, max_size=25), seed=st.integers(0, 1000),
       codec=st.sampled_from(["none", "gzip", "lz4"]))
def test_filter_pass_writes_what_filter_batch_writes(keys, seed, codec):
    """Differential: the filter pass's own re-encode equals filter_batch on the same mask."""
    r = random.Random(seed)
    records = [(b"k%d" % k, r.randbytes(r.randint(0, 9)), (), T0 + r.randint(0, 50)) for k in keys]
    raw = pbatch(records, codec=codec)
    later = {b"k%d" % k for k in range(5) if r.random() < 0.5}
    m = _core.OffsetMap(seed=bytes(16))
    for i, rec in enumerate(records):
        m.put(rec[0], i)
    for key in later:
        m.put(key, 1000)  # superseded by a record past this batch
    last = {rec[0]: i for i, rec in enumerate(records)}
    mask = np.array([rec[0] not in later and last[rec[0]] == i for i, rec in enumerate(records)])
    f = _core.CleanerFilter(m, 0, T0, DAY)
    pos, need, out = f.filter(raw, 0, len(raw), 1 << 30)
    assert (pos, need) == (len(raw), 0)
    expected = filter_batch(raw, mask)
    if expected is None:
        assert out == b""
    elif mask.all():
        assert out == raw
    else:
        assert out == expected
    assert f.records_kept == int(mask.sum()) and f.records_removed == len(records) - int(mask.sum())


# -- compaction -------------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32), codec=st.sampled_from(["none", "gzip", "lz4"]),
       keys=st.integers(1, 12), segment_bytes=st.sampled_from([700, 1024, 4096]))
def test_latest_per_key_kept_with_offsets_values_headers(tmp_path_factory, seed, codec, keys, segment_bytes):
    rng = random.Random(seed)
    path = str(tmp_path_factory.mktemp("c") / "t-0")
    log = open_log(path, segment_bytes=segment_bytes)
    appended = fill(log, rng, rng.randint(1, 60), keys=keys, codec=codec)
    end = log.active_segment.base_offset
    stats = LogCleaner().clean(log, now_ms=T0, force=True)
    expected = latest_per_key(appended, end)
    assert log_records(log) == expected
    assert (log.log_start_offset, log.log_end_offset) == (0, len(appended))
    if end > 0:
        assert stats.cleaned and stats.end_offset == end
        kept_below = sum(1 for rec in expected if rec[0] < end)
        assert stats.records_kept == kept_below
        assert stats.records_removed == end - kept_below
    log.close()
    log = open_log(path, segment_bytes=segment_bytes)
    assert log_records(log) == expected
    # Every offset can still be looked up (indexes of the cleaned segments are sound).
    for rec in expected:
        r = log.read(rec[0], 1)
        assert r.base_offset <= rec[0] <= r.last_offset
    log.close()


def test_cleaning_again_changes_nothing(log_path, rng):
    log = open_log(log_path)
    appended = fill(log, rng, 80, tombstones=0.0)
    LogCleaner().clean(log, now_ms=T0, force=True)
    first = log_batches(log)
    stats = LogCleaner().clean(log, now_ms=T0, force=True)
    assert stats.cleaned and stats.records_removed == 0 and stats.batches_rewritten == 0
    assert log_batches(log) == first
    assert log_records(log) == latest_per_key(appended, log.active_segment.base_offset)
    log.close()


def test_tombstones_kept_then_removed_after_delete_retention(log_path):
    log = open_log(log_path, delete_retention_ms=1000)
    log.append(kbatch([(b"a", b"1"), (b"b", b"1")], ts=T0))
    log.append(kbatch([(b"a", None, (("why", b"gone"),))], ts=T0 + 10))     # tombstone at offset 2
    log.append(kbatch([(b"b", b"2")], ts=T0 + 20))
    log.roll()
    log.append(kbatch([(b"c", b"1")], ts=T0 + 30))
    cleaner = LogCleaner()
    now = T0 + 5000
    stats = cleaner.clean(log, now_ms=now, force=True)
    assert stats.horizons_set == 1 and stats.tombstones_removed == 0
    assert [(o, k, v, h) for o, k, v, h, _t in log_records(log)] == [
        (2, b"a", None, (("why", b"gone"),)), (3, b"b", b"2", ()), (4, b"c", b"1", ())]
    tomb = log_batches(log)[0]
    assert header(tomb)["attributes"] & ATTR_DELETE_HORIZON
    assert header(tomb)["base_timestamp"] == now + 1000
    assert log_records(log)[0][4] == T0 + 10           # the record keeps its own timestamp
    # Before the horizon: kept; the horizon is not moved by a later clean.
    stats = cleaner.clean(log, now_ms=now + 999, force=True)
    assert stats.tombstones_removed == 0 and stats.horizons_set == 0
    assert log_records(log)[0][:3] == (2, b"a", None)
    assert header(log_batches(log)[0])["base_timestamp"] == now + 1000
    # At the horizon: dropped.
    stats = cleaner.clean(log, now_ms=now + 1000, force=True)
    assert stats.tombstones_removed == 1
    assert [rec[:3] for rec in log_records(log)] == [(3, b"b", b"2"), (4, b"c", b"1")]
    log.close()


def test_expired_horizon_makes_the_log_due(log_path):
    log = open_log(log_path, delete_retention_ms=1000, min_cleanable_dirty_ratio=0.9)
    log.append(kbatch([(b"a", b"1")]))
    log.append(kbatch([(b"a", None)]))
    log.roll()
    cleaner = LogCleaner()
    assert cleaner.clean(log, now_ms=T0, force=True).horizons_set == 1
    assert cleaner.inspect(log, now_ms=T0 + 999).due is False
    info = cleaner.inspect(log, now_ms=T0 + 1000)
    assert info.due and info.reason == "delete_horizon"
    stats = cleaner.clean(log, now_ms=T0 + 1000)
    assert stats.cleaned and stats.tombstones_removed == 1
    assert log_records(log) == []
    assert cleaner.inspect(log, now_ms=T0 + 10**9).due is False
    log.close()


def test_superseded_tombstone_goes_at_once(log_path):
    log = open_log(log_path)
    log.append(kbatch([(b"a", b"1"), (b"a", None), (b"a", b"2")]))
    log.roll()
    stats = LogCleaner().clean(log, now_ms=T0, force=True)
    assert [rec[:3] for rec in log_records(log)] == [(2, b"a", b"2")]
    assert stats.horizons_set == 0
    assert not header(log_batches(log)[0])["attributes"] & ATTR_DELETE_HORIZON
    log.close()


def test_active_segment_untouched(log_path):
    log = open_log(log_path, segment_bytes=4096)
    for i in range(10):
        log.append(kbatch([(b"a", b"%d" % i)]))
    log.roll()
    for i in range(10, 20):
        log.append(kbatch([(b"a", b"%d" % i)]))        # duplicates inside the active segment
    active = log.active_segment
    with open(active.path, "rb") as f:
        before = f.read(active.size)
    stats = LogCleaner().clean(log, now_ms=T0, force=True)
    # The map covers the cleaned range only: its last "a" stays, as do the active segment's.
    assert stats.end_offset == 10 and stats.records_removed == 9
    assert log.active_segment is active
    with open(active.path, "rb") as f:
        assert f.read(active.size) == before
    assert [rec[2] for rec in log_records(log)] == [b"%d" % i for i in range(9, 20)]
    log.close()


def test_only_active_segment_nothing_to_clean(log_path):
    log = open_log(log_path)
    log.append(kbatch([(b"a", b"1"), (b"a", b"2")]))
    stats = LogCleaner().clean(log, now_ms=T0, force=True)
    assert not stats.cleaned and stats.reason == "nothing_to_clean"
    assert len(log_records(log)) == 2
    log.close()


def test_min_compaction_lag(log_path):
    log = open_log(log_path, min_compaction_lag_ms=1000)
    log.append(kbatch([(b"a", b"old")], ts=T0))
    log.roll()
    log.append(kbatch([(b"a", b"mid")], ts=T0 + 500))
    log.roll()
    log.append(kbatch([(b"a", b"new")], ts=T0 + 2000))
    log.roll()
    log.append(kbatch([(b"z", b"active")], ts=T0 + 2000))
    cleaner = LogCleaner()
    # At T0 + 1200 only the first segment (newest record T0) is older than the lag.
    stats = cleaner.clean(log, now_ms=T0 + 1200, force=True)
    assert stats.end_offset == 1
    assert [rec[2] for rec in log_records(log)] == [b"old", b"mid", b"new", b"active"]
    stats = cleaner.clean(log, now_ms=T0 + 1600, force=True)
    assert stats.end_offset == 2
    assert [rec[2] for rec in log_records(log)] == [b"mid", b"new", b"active"]
    stats = cleaner.clean(log, now_ms=T0 + 3001, force=True)
    assert stats.end_offset == 3
    assert [rec[2] for rec in log_records(log)] == [b"new", b"active"]
    log.close()


def test_dirty_ratio_trigger_and_checkpoint(log_path):
    log = open_log(log_path, segment_bytes=2048, min_cleanable_dirty_ratio=0.5)
    for i in range(40):
        log.append(kbatch([(b"k%d" % (i % 4), b"v" * 20)]))
    log.roll()
    cleaner = LogCleaner()
    info = cleaner.inspect(log, now_ms=T0)
    assert info.first_dirty_offset == 0 and info.clean_bytes == 0 and info.dirty_ratio == 1.0
    assert info.due and info.reason == "dirty_ratio" and info.cleanable_end_offset == 40
    stats = cleaner.clean(log, now_ms=T0)
    assert stats.cleaned and stats.end_offset == 40
    cp = CheckpointFile(os.path.join(log_path, CLEANER_OFFSET_CHECKPOINT)).read()
    assert cp == {("compacted", 0): 40}
    assert cleaner.first_dirty_offset(log) == 40
    # A little dirt: below the ratio.
    for i in range(2):
        log.append(kbatch([(b"k0", b"w" * 20)]))
    log.roll()
    info = cleaner.inspect(log, now_ms=T0)
    assert info.first_dirty_offset == 40 and 0 < info.dirty_ratio < 0.5
    assert info.clean_bytes > 0 and info.dirty_bytes > 0
    stats = cleaner.clean(log, now_ms=T0)
    assert not stats.cleaned and stats.reason == "below_min_dirty_ratio"
    assert cleaner.first_dirty_offset(log) == 40
    # More dirt than clean data: due.
    for i in range(30):
        log.append(kbatch([(b"k%d" % (i % 4), b"x" * 20)]))
    log.roll()
    info = cleaner.inspect(log, now_ms=T0)
    assert info.dirty_ratio >= 0.5 and info.due
    stats = cleaner.clean(log, now_ms=T0)
    assert stats.cleaned and stats.first_dirty_offset == 40 and stats.end_offset == 72
    assert cleaner.first_dirty_offset(log) == 72
    assert [rec[2][:1] for rec in log_records(log)] == [b"x"] * 4
    # A fresh cleaner (a restart) reads the checkpoint.
    assert LogCleaner().first_dirty_offset(log) == 72
    log.close()


def test_max_compaction_lag_makes_a_log_due(log_path):
    log = open_log(log_path, min_cleanable_dirty_ratio=1.0, max_compaction_lag_ms=10_000)
    log.append(kbatch([(b"a", b"1")], ts=T0))
    log.roll()
    cleaner = LogCleaner()
    log.append(kbatch([(b"a", b"2")], ts=T0))
    info = cleaner.inspect(log, now_ms=T0 + 5_000)
    assert info.due and info.reason == "dirty_ratio"    # ratio 1.0 >= 1.0
    log.close()
    log = open_log(log_path + "b", min_cleanable_dirty_ratio=1.0, max_compaction_lag_ms=10_000)
    log.append(kbatch([(b"a", b"1")] * 3, ts=T0))
    log.roll()
    log.append(kbatch([(b"a", b"2")], ts=T0))
    cleaner.clean(log, now_ms=T0, force=True)
    log.append(kbatch([(b"a", b"3")], ts=T0 + 1))
    log.roll()
    assert cleaner.inspect(log, now_ms=T0 + 5_000).reason == "below_min_dirty_ratio"
    info = cleaner.inspect(log, now_ms=T0 + 10_002)
    assert info.due and info.reason == "max_compaction_lag"
    log.close()


def test_max_offset_bounds_the_clean(log_path):
    log = open_log(log_path)
    for i in range(3):
        log.append(kbatch([(b"a", b"%d" % i)]))
        log.roll()
    log.append(kbatch([(b"z", b"z")]))
    stats = LogCleaner().clean(log, now_ms=T0, force=True, max_offset=2)
    assert stats.end_offset == 2
    assert [rec[2] for rec in log_records(log)] == [b"1", b"2", b"z"]
    log.close()


@pytest.mark.parametrize("codec", ["gzip", "lz4", "snappy", "zstd"])
def test_compressed_batches_compact(log_path, codec):
    log = open_log(log_path, segment_bytes=1 << 16)
    appended = []
    for i in range(12):
        recs = [(b"k%d" % ((i + j) % 5), b"value-%d-%d" % (i, j) * 3, (("n", b"%d" % j),)) for j in range(6)]
        info = log.append(pbatch(recs, codec=codec, ts=T0 + i))
        appended += [(info.base_offset + j, r[0], r[1], r[2], T0 + i + j) for j, r in enumerate(recs)]
    log.roll()
    stats = LogCleaner().clean(log, now_ms=T0, force=True)
    assert stats.batches_rewritten > 0
    assert log_records(log) == latest_per_key(appended, len(appended))
    for raw in log_batches(log):
        assert header(raw)["attributes"] & 0x07 == CODECS[codec]   # codec kept
        RecordBatch(raw).validate()
    log.close()


def test_keyless_records_kept(log_path):
    log = open_log(log_path)
    log.append(kbatch([(None, b"x"), (b"a", b"1"), (None, b"y"), (b"a", b"2"), (None, None)]))
    log.roll()
    LogCleaner().clean(log, now_ms=T0, force=True)
    assert [rec[:3] for rec in log_records(log)] == [(0, None, b"x"), (2, None, b"y"), (3, b"a", b"2"),
                                                    (4, None, None)]
    log.close()


def test_idempotent_producer_keeps_an_empty_last_batch(log_path):
    log = open_log(log_path, segment_bytes=1 << 16)
    log.append(kbatch([(b"a", b"1"), (b"b", b"1")], producer_id=5, producer_epoch=1, base_sequence=0))
    log.append(kbatch([(b"a", b"2"), (b"b", b"2"), (b"c", b"2")], producer_id=5, producer_epoch=1, base_sequence=2))
    log.append(kbatch([(b"x", b"1")], producer_id=6, producer_epoch=0, base_sequence=0))
    log.append(kbatch([(b"a", b"3"), (b"b", b"3"), (b"c", b"3")]))         # no producer id
    log.roll()
    stats = LogCleaner().clean(log, now_ms=T0, force=True)
    assert stats.empty_batches == 1
    batches = log_batches(log)
    heads = [header(b) for b in batches]
    # Producer 5's first batch goes; its last one stays as a header with its sequence state.
    assert [(h["base_offset"], h["records_count"], h["producer_id"]) for h in heads] == [
        (2, 0, 5), (5, 1, 6), (6, 3, -1)]
    assert heads[0]["last_offset_delta"] == 2 and heads[0]["base_sequence"] == 2
    assert heads[0]["producer_epoch"] == 1 and heads[0]["size"] == 61
    assert [rec[:3] for rec in log_records(log)] == [(5, b"x", b"1"), (6, b"a", b"3"), (7, b"b", b"3"),
                                                    (8, b"c", b"3")]
    log.close()
    log = open_log(log_path, segment_bytes=1 << 16)
    assert [header(b)["records_count"] for b in log_batches(log)] == [0, 1, 3]
    log.close()


def _txn(log, pid, records, epoch=0):
    return log.append(kbatch(records, producer_id=pid, producer_epoch=epoch, base_sequence=0, transactional=True))


def _marker(log, kind, pid, epoch=0, ts=T0):
    return log.append(build_control_batch(kind, pid, epoch, timestamp_ms=ts))


def test_transactions(log_path):
    log = open_log(log_path, segment_bytes=1 << 16, delete_retention_ms=100)
    log.append(kbatch([(b"a", b"base"), (b"b", b"base")]))                  # 0, 1
    _txn(log, 7, [(b"a", b"committed")])                                   # 2
    _marker(log, "commit", 7)                                              # 3
    _txn(log, 8, [(b"b", b"aborted"), (b"c", b"aborted")])                 # 4, 5
    _marker(log, "abort", 8)                                               # 6
    log.roll()
    log.append(kbatch([(b"z", b"active")]))
    cleaner = LogCleaner()
    stats = cleaner.clean(log, now_ms=T0, force=True)
    # Aborted data is gone and did not supersede b's committed value; the commit marker
    # stays while its transaction's record does; the abort marker's transaction has no
    # data left, so the marker gets a delete horizon.
    assert [rec[:3] for rec in log_records(log)] == [(1, b"b", b"base"), (2, b"a", b"committed"),
                                                    (7, b"z", b"active")]
    heads = [header(b) for b in log_batches(log)]
    markers = [h for h in heads if h["attributes"] & 0x20]
    assert [h["base_offset"] for h in markers] == [3, 6]
    assert not markers[0]["attributes"] & ATTR_DELETE_HORIZON
    assert markers[1]["attributes"] & ATTR_DELETE_HORIZON and markers[1]["base_timestamp"] == T0 + 100
    assert stats.horizons_set == 1 and stats.markers_removed == 0
    # The committed value is superseded: its marker then gets a horizon too.
    log.append(kbatch([(b"a", b"later")]))
    log.roll()
    stats = cleaner.clean(log, now_ms=T0 + 50, force=True)
    assert stats.markers_removed == 0 and stats.horizons_set == 1
    stats = cleaner.clean(log, now_ms=T0 + 120, force=True)
    assert stats.markers_removed == 1                     # the abort marker's horizon passed
    stats = cleaner.clean(log, now_ms=T0 + 150, force=True)
    assert stats.markers_removed == 1                     # and then the commit marker's
    assert not [h for h in map(header, log_batches(log)) if h["attributes"] & 0x20]
    assert [rec[:3] for rec in log_records(log)] == [(1, b"b", b"base"), (7, b"z", b"active"),
                                                    (8, b"a", b"later")]
    log.close()


def test_open_transaction_bounds_the_clean(log_path):
    log = open_log(log_path, segment_bytes=1 << 16)
    log.append(kbatch([(b"a", b"1")]))
    log.append(kbatch([(b"a", b"2")]))
    log.roll()                                                              # [0, 2)
    _txn(log, 9, [(b"a", b"in-txn")])
    log.append(kbatch([(b"a", b"3")]))
    log.roll()                                                              # [2, 4): txn open
    log.append(kbatch([(b"a", b"4")]))
    log.roll()                                                              # [4, 5)
    log.append(kbatch([(b"z", b"z")]))
    cleaner = LogCleaner()
    stats = cleaner.clean(log, now_ms=T0, force=True)
    assert stats.end_offset == 2                          # stops before the undecided transaction
    assert [rec[2] for rec in log_records(log)] == [b"2", b"in-txn", b"3", b"4", b"z"]
    _marker(log, "commit", 9)
    log.roll()
    stats = cleaner.clean(log, now_ms=T0, force=True)
    assert stats.end_offset == log.active_segment.base_offset
    assert [rec[2] for rec in log_records(log)] == [b"4", b"z"]
    log.close()


def test_transaction_in_progress_from_the_start(log_path):
    log = open_log(log_path, segment_bytes=1 << 16)
    _txn(log, 3, [(b"a", b"1")])
    log.roll()
    log.append(kbatch([(b"a", b"2")]))
    stats = LogCleaner().clean(log, now_ms=T0, force=True)
    assert not stats.cleaned and stats.reason == "transaction_in_progress"
    log.close()


def test_small_segments_are_merged(log_path, rng):
    log = open_log(log_path, segment_bytes=600)
    appended = fill(log, rng, 150, keys=5, tombstones=0.0)
    before = len(log.segments)
    stats = LogCleaner().clean(log, now_ms=T0, force=True)
    assert before > 20
    cleaned = [s for s in log.segments[:-1]]
    assert stats.segments_before == before and stats.segments_after == len(log.segments)
    assert len(cleaned) <= stats.bytes_written // 600 + 2 and 1 <= stats.swaps <= len(cleaned)
    assert sum(s.size for s in cleaned) == stats.bytes_written
    assert all(s.size <= 600 for s in cleaned)
    assert log_records(log) == latest_per_key(appended, log.active_segment.base_offset)
    log.close()


def test_output_larger_than_a_segment_is_split(log_path):
    """Delete horizons lengthen records (their timestamp deltas grow): the output of a full
    segment then spills into a second new segment starting inside the old one."""
    log = open_log(log_path, segment_bytes=1200, delete_retention_ms=10 * DAY)
    appended = []
    while len(log.segments) < 2:
        recs = [(b"t%d" % (len(appended) + j), None, (), T0) for j in range(10)]
        info = log.append(kbatch(recs))
        appended += [(info.base_offset + j, r[0], None, (), T0) for j, r in enumerate(recs)]
    first = log.segments[0]
    assert first.size > 1000
    stats = LogCleaner().clean(log, now_ms=T0 + DAY, force=True)
    assert stats.horizons_set > 0 and stats.bytes_written > first.size
    assert stats.swaps == 1 and len(log.segments) == 3
    assert [rec[:3] for rec in log_records(log)] == [rec[:3] for rec in appended]
    log.close()
    log = open_log(log_path, segment_bytes=1200, delete_retention_ms=10 * DAY)
    assert [rec[:3] for rec in log_records(log)] == [rec[:3] for rec in appended]
    log.close()


def test_records_below_log_start_dropped(log_path):
    log = open_log(log_path, segment_bytes=1 << 16)
    log.append(kbatch([(b"a%d" % i, b"v") for i in range(6)]))
    log.roll()
    log.append(kbatch([(b"z", b"z")]))
    log.delete_records_before(3)
    stats = LogCleaner().clean(log, now_ms=T0, force=True)
    assert stats.records_removed == 3
    assert [rec[0] for rec in log_records(log)] == [3, 4, 5, 6]
    raw = log_batches(log)[0]
    assert [r.offset for r in RecordBatch(raw)] == [3, 4, 5]
    log.close()


def test_compact_delete_policy_keeps_retention(log_path):
    log = open_log(log_path, cleanup_policy="compact,delete", retention_ms=1000)
    log.append(kbatch([(b"a", b"1")], ts=T0))
    log.roll()
    log.append(kbatch([(b"a", b"2")], ts=T0 + 5000))
    log.roll()
    log.append(kbatch([(b"z", b"z")], ts=T0 + 5000))
    assert LogCleaner().clean(log, now_ms=T0 + 5000, force=True).cleaned
    assert [rec[2] for rec in log_records(log)] == [b"2", b"z"]
    res = log.apply_retention(now_ms=T0 + 7000)
    assert res.deleted_segments
    assert [rec[2] for rec in log_records(log)] == [b"z"]
    log.close()


def test_delete_policy_is_not_compacted(log_path):
    log = open_log(log_path, cleanup_policy="delete")
    log.append(kbatch([(b"a", b"1"), (b"a", b"2")]))
    log.roll()
    cleaner = LogCleaner()
    assert cleaner.inspect(log).reason == "not_compacted"
    stats = cleaner.clean(log, force=True)
    assert not stats.cleaned and stats.reason == "not_compacted"
    assert len(log_records(log)) == 2
    log.close()


def test_dirty_section_only_map_when_the_range_is_large(log_path, rng):
    """With a map too small for the whole range, only the dirty section is mapped (Kafka's
    way), in as many cleans as it takes; the result is the same."""
    log = open_log(log_path, segment_bytes=2048)
    appended = fill(log, rng, 60, keys=6, tombstones=0.0)
    cleaner = LogCleaner(dedupe_buffer_size=1024 * 32 // 16)     # 64 records
    cleaner.clean(log, now_ms=T0, force=True)
    appended += fill(log, rng, 60, keys=6, tombstones=0.0)
    end = log.active_segment.base_offset
    passes, map_starts = 0, []
    while cleaner.first_dirty_offset(log) < end:
        stats = cleaner.clean(log, now_ms=T0, force=True)
        assert stats.cleaned
        map_starts.append(stats.map_start_offset)
        passes += 1
        assert passes < 50
    assert passes > 1 and max(map_starts) > 0
    assert log_records(log) == latest_per_key(appended, end)
    log.close()


def test_corrupt_batch_raises_and_leaves_the_log(log_path):
    log = open_log(log_path)
    for i in range(6):
        log.append(kbatch([(b"a", b"value-%d" % i)]))
    log.roll()
    log.append(kbatch([(b"z", b"z")]))
    first = log.segments[0]
    with open(first.path, "r+b") as f:       # flip a byte of the second batch's records
        f.seek(first.size - 3)
        b = f.read(1)
        f.seek(first.size - 3)
        f.write(bytes([b[0] ^ 0xFF]))
    # The roll's background flush writes the recovery point checkpoint (through a .tmp
    # file): let it finish, so the listings compare only what the cleaner did.
    from pylog.storage.log import _flusher
    assert _flusher.wait_idle(30)
    files_before = sorted(os.listdir(log_path))
    with open(first.path, "rb") as f:
        data_before = f.read()
    with pytest.raises(CorruptRecordError, match="CRC"):
        LogCleaner().clean(log, now_ms=T0, force=True)
    assert sorted(os.listdir(log_path)) == files_before
    with open(first.path, "rb") as f:
        assert f.read() == data_before
    log.close()


def test_closed_log(log_path):
    log = open_log(log_path)
    log.close()
    with pytest.raises(LogClosedError):
        LogCleaner().clean(log, force=True)
    with pytest.raises(LogClosedError):
        LogCleaner().inspect(log)


def test_bad_cleaner_settings():
    with pytest.raises(InvalidConfigError):
        LogCleaner(dedupe_buffer_size=0)
    with pytest.raises(InvalidConfigError):
        LogCleaner(io_buffer_size=True)
    with pytest.raises(InvalidConfigError):
        LogCleaner(seed=b"x")
    with pytest.raises(InvalidConfigError):
        LogCleaner().start()


def test_log_manager_checkpoint_in_data_dir(tmp_path):
    cfg = LogConfig(segment_bytes=1024, cleanup_policy="compact")
    with LogManager(str(tmp_path), config=cfg) as mgr:
        logs = [mgr.get_or_create_log("users", p) for p in range(2)]
        plain = mgr.get_or_create_log("events", 0, {"cleanup_policy": "delete"})
        for log in logs + [plain]:
            for i in range(4):
                log.append(kbatch([(b"k", b"%d" % i)]))
            log.roll()
        cleaner = LogCleaner(mgr)
        results = cleaner.clean_once(now_ms=T0)
        assert set(results) == {("users", 0), ("users", 1)}
        assert all(s.cleaned for s in results.values())
        cp = CheckpointFile(os.path.join(str(tmp_path), CLEANER_OFFSET_CHECKPOINT)).read()
        assert cp == {("users", 0): 4, ("users", 1): 4}
        assert not os.path.exists(os.path.join(logs[0].path, CLEANER_OFFSET_CHECKPOINT))
        assert [rec[2] for rec in log_records(logs[0])] == [b"3"]
        assert len(log_records(plain)) == 4
        assert cleaner.clean_once(now_ms=T0) == {}
        mgr.delete_log("users", 1)
        logs[0].append(kbatch([(b"k", b"4")]))
        logs[0].roll()
        cleaner.clean_once(now_ms=T0)
        cp = CheckpointFile(os.path.join(str(tmp_path), CLEANER_OFFSET_CHECKPOINT)).read()
        assert cp == {("users", 0): 5}


def test_clean_once_marks_a_corrupt_log_uncleanable(tmp_path):
    cfg = LogConfig(segment_bytes=1024, cleanup_policy="compact")
    with LogManager(str(tmp_path), config=cfg) as mgr:
        bad, good = mgr.get_or_create_log("bad", 0), mgr.get_or_create_log("good", 0)
        for log in (bad, good):
            for i in range(4):
                log.append(kbatch([(b"k", b"%d" % i)]))
            log.roll()
        seg = bad.segments[0]
        with open(seg.path, "r+b") as f:
            f.seek(seg.size - 2)
            f.write(b"\xee")
        cleaner = LogCleaner(mgr)
        results = cleaner.clean_once(now_ms=T0)
        assert set(results) == {("good", 0)}
        assert isinstance(cleaner.uncleanable[("bad", 0)], CorruptRecordError)
        assert cleaner.clean_once(now_ms=T0) == {}


def test_stale_checkpoint_past_the_log_end_is_ignored(log_path):
    log = open_log(log_path)
    for i in range(4):
        log.append(kbatch([(b"k", b"%d" % i)]))
    log.roll()
    CheckpointFile(os.path.join(log_path, CLEANER_OFFSET_CHECKPOINT)).write({("compacted", 0): 999})
    cleaner = LogCleaner()
    assert cleaner.first_dirty_offset(log) == 0
    assert cleaner.clean(log, now_ms=T0).cleaned
    with open(os.path.join(log_path, CLEANER_OFFSET_CHECKPOINT), "w") as f:
        f.write("garbage")
    assert cleaner.first_dirty_offset(log) == 0
    log.close()


def test_truncated_and_reappended_clean_section_is_recompacted(log_path):
    """A replica truncation below the checkpoint lowers it to the new log end offset (the
    cleaner listens to the logs it cleans), so the re-appended records are dirty again
    and the duplicates they make are removed."""
    log = open_log(log_path)
    for i in range(6):
        log.append(kbatch([(b"k%d" % i, b"v")]))
    log.roll()
    log.append(kbatch([(b"z", b"z")]))
    cleaner = LogCleaner()
    assert cleaner.clean(log, now_ms=T0, force=True).end_offset == 6
    log.truncate_to(3)
    for i in range(5):
        log.append(kbatch([(b"k0", b"again-%d" % i)]))
    log.roll()
    log.append(kbatch([(b"z", b"z")]))
    assert cleaner.first_dirty_offset(log) == 3
    stats = cleaner.clean(log, now_ms=T0, force=True)
    assert stats.map_start_offset == 0
    assert [rec[:3] for rec in log_records(log)] == [(1, b"k1", b"v"), (2, b"k2", b"v"), (7, b"k0", b"again-4"),
                                                    (8, b"z", b"z")]
    log.close()


def test_truncation_during_a_clean_aborts_it(log_path, monkeypatch):
    # Truncating only the active segment leaves the cleaned segments byte for byte as
    # read, so only the truncation count can tell the clean that the log moved.
    import pylog.storage.cleaner as cleaner_module
    log = open_log(log_path)
    for i in range(6):
        log.append(kbatch([(b"k%d" % (i % 2), b"v%d" % i)]))
    log.roll()
    log.append(kbatch([(b"z", b"1")]))
    log.append(kbatch([(b"z", b"2")]))
    before = [rec[:3] for rec in log_records(log)]
    feed = cleaner_module._feed
    calls = []

    def feed_then_truncate(*args, **kwargs):
        if not calls:
            log.truncate_to(log.log_end_offset - 1)
        calls.append(1)
        return feed(*args, **kwargs)

    monkeypatch.setattr(cleaner_module, "_feed", feed_then_truncate)
    cleaner = LogCleaner()
    stats = cleaner.clean(log, now_ms=T0, force=True)
    assert calls and not stats.cleaned and "truncated" in stats.reason
    assert [rec[:3] for rec in log_records(log)] == before[:-1]
    assert cleaner.first_dirty_offset(log) == 0
    monkeypatch.setattr(cleaner_module, "_feed", feed)
    assert cleaner.clean(log, now_ms=T0, force=True).cleaned
    log.close()


def test_no_delete_horizon_constant():
    assert NO_DELETE_HORIZON == 2**63 - 1
    assert _core.SegmentScan().min_horizon == NO_DELETE_HORIZON


def test_scan_reports_producers_transactions_and_horizons():
    data = (kbatch([(b"a", b"1")], producer_id=4, base_sequence=0)
            + kbatch([(b"b", b"1")], producer_id=5, base_sequence=0, transactional=True)
            + build_control_batch("abort", 5, 0)
            + _core.set_delete_horizon(kbatch([(b"c", None)]), T0 + 9))
    # Give the batches distinct offsets, as in a log.
    buf, pos, off = bytearray(data), 0, 0
    while pos < len(buf):
        h = _core.read_batch_header(buf, pos)
        buf[pos:pos + 8] = off.to_bytes(8, "big")
        off += h["last_offset_delta"] + 1
        pos += h["size"]
    scan = _core.SegmentScan()
    assert scan.scan(bytes(buf), 0, len(buf)) == (len(buf), 0)
    assert scan.batches == 4 and scan.records == 4 and scan.size_bytes == len(buf)
    assert scan.last_batches == {4: 0, 5: 1}
    assert scan.transactions == [(1, 1, 5, False, -1), (2, 2, 5, True, 0)]
    assert scan.min_horizon == T0 + 9
    # A partial batch at the end is left for the next buffer, with the size it needs.
    last_size = len(_core.set_delete_horizon(kbatch([(b"c", None)]), T0 + 9))
    assert _core.SegmentScan().scan(bytes(buf[:-5]), 0, len(buf) - 5) == (len(buf) - last_size, last_size)
    assert _core.SegmentScan().scan(bytes(buf[:-last_size + 10]), 0, len(buf) - last_size + 10) == (
        len(buf) - last_size, 61)
