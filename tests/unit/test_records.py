"""Unit tests of pylog.records: builder, batch view, iteration, columns, iter_batches,
filter_batch, control batches.  Byte-level expectations come from the v2 layout in
ARCHITECTURE.md; cross-client agreement is in test_records_differential.py."""

import mmap
import pickle
import struct
import time

import numpy as np
import pytest

from pylog import _core, codecs, records
from pylog.errors import (
    CorruptRecordError,
    RecordBatchTooLargeError,
    RecordTooLargeError,
    UnsupportedCompressionTypeError,
)
from pylog.records import (
    ControlRecord,
    ControlRecordType,
    Record,
    RecordBatch,
    RecordBatchBuilder,
    build_control_batch,
    filter_batch,
    iter_batches,
)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
HEADER = struct.Struct(">qiibIhiqqqhii")


def tuples(batch):
    return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in batch]


def sample_records():
    return [
        (1_700_000_000_000, b"key-1", b"value-1", ()),
        (1_700_000_000_005, None, b"no key", (("h1", b"v1"), ("h2", None))),
        (1_700_000_000_003, b"k", None, ()),
        (1_700_000_000_010, b"", b"", (("", b""),)),
        (1_699_999_999_990, b"\x00" * 300, b"\xff" * 1000, (("utf8-\u00e9", b"x" * 200),)),
    ]


def build(recs=None, **kw):
    b = RecordBatchBuilder(**kw)
    for ts, k, v, h in recs if recs is not None else sample_records():
        b.append(ts, k, v, h)
    return b.build()


# -- builder and header -----------------------------------------------------------------

def test_header_fields_byte_for_byte():
    data = build(base_offset=1000, producer_id=77, producer_epoch=3, base_sequence=12,
                 is_transactional=True, partition_leader_epoch=9)
    (base, length, epoch, magic, crc, attrs, lod, base_ts, max_ts, pid, pepoch, bseq,
     count) = HEADER.unpack_from(data)
    assert (base, length, epoch, magic) == (1000, len(data) - 12, 9, 2)
    assert attrs == 0x10
    assert (lod, count) == (4, 5)
    assert base_ts == 1_700_000_000_000  # the first record's timestamp
    assert max_ts == 1_700_000_000_010
    assert (pid, pepoch, bseq) == (77, 3, 12)
    assert crc == _core.crc32c(data[21:])


def test_batch_attributes_roundtrip():
    data = build(base_offset=5, producer_id=77, producer_epoch=3, base_sequence=12,
                 is_transactional=True, partition_leader_epoch=9)
    b = RecordBatch(data)
    assert b.base_offset == 5 and b.last_offset_delta == 4 and b.last_offset == 9
    assert b.next_offset == 10
    assert b.size == len(data) and b.batch_length == len(data) - 12
    assert b.magic == 2 and b.partition_leader_epoch == 9
    assert b.is_transactional and not b.is_control and b.timestamp_type == "create"
    assert b.compression == "none" and b.codec == 0
    assert (b.producer_id, b.producer_epoch, b.base_sequence) == (77, 3, 12)
    assert b.last_sequence == 16
    assert b.records_count == 5
    assert b.base_timestamp == 1_700_000_000_000 and b.max_timestamp == 1_700_000_000_010
    assert b.crc == struct.unpack_from(">I", data, 17)[0]
    assert b.crc_matches()
    assert "RecordBatch" in repr(b)


def test_defaults_have_no_producer():
    b = RecordBatch(build())
    assert (b.producer_id, b.producer_epoch, b.base_sequence) == (-1, -1, -1)
    assert b.partition_leader_epoch == -1 and b.last_sequence == -1
    assert not b.is_transactional and not b.is_control


@pytest.mark.parametrize("codec", CODECS)
def test_roundtrip_every_codec(codec):
    data = build(compression=codec)
    b = RecordBatch(data)
    b.validate()
    assert b.compression == codec
    assert b.codec == codecs.codec_id(codec)
    expected = [(i, ts, k, v, tuple(h)) for i, (ts, k, v, h) in enumerate(sample_records())]
    assert tuples(b) == expected


def test_compression_applies_to_records_section():
    recs = [(1, None, b"a" * 1000, ())] * 50
    plain = build(recs)
    for codec in CODECS[1:]:
        packed = build(recs, compression=codec)
        assert len(packed) < len(plain) / 5
        assert packed[:8] == plain[:8] or True
        assert codecs.decompress(codec, packed[61:]) == plain[61:]


def test_snappy_encodes_xerial():
    data = build(compression="snappy")
    assert data[61:69] == codecs.XERIAL_MAGIC


def test_compression_by_id_and_unknown():
    assert RecordBatchBuilder(compression=1).compression == "gzip"
    assert RecordBatchBuilder(compression=None).compression == "none"
    with pytest.raises(UnsupportedCompressionTypeError):
        RecordBatchBuilder(compression="brotli")
    with pytest.raises(ValueError):
        RecordBatchBuilder(timestamp_type="wall")
    with pytest.raises(ValueError):
        RecordBatchBuilder(producer_epoch=40000)
    with pytest.raises(ValueError):
        RecordBatchBuilder(base_offset=-1)


def test_null_and_empty_key_value_distinct():
    b = RecordBatch(build([(1, None, None, ()), (2, b"", b"", ()), (3, b"k", None, ())]))
    assert [(r.key, r.value) for r in b] == [(None, None), (b"", b""), (b"k", None)]
    cols = b.columns()
    assert cols.key_lengths.tolist() == [-1, 0, 1]
    assert cols.value_lengths.tolist() == [-1, 0, -1]


def test_headers_roundtrip_and_types():
    b = RecordBatchBuilder()
    b.append(1, None, b"v", [("a", b"1"), ("b", None), ("c", bytearray(b"3")), ("d", memoryview(b"44"))])
    b.append(2, None, b"v", (["e", b"5"],))
    [r1, r2] = RecordBatch(b.build())
    assert r1.headers == (("a", b"1"), ("b", None), ("c", b"3"), ("d", b"44"))
    assert r2.headers == (("e", b"5"),)


@pytest.mark.parametrize("bad", [[("a", "str")], [(b"a", b"1")], [("a",)], ["ab"], 5])
def test_bad_headers_raise_type_error(bad):
    b = RecordBatchBuilder()
    with pytest.raises(TypeError):
        b.append(1, None, b"v", bad)
    assert len(b) == 0  # a rejected append leaves the builder as it was


def test_key_value_types():
    b = RecordBatchBuilder()
    b.append(1, bytearray(b"k"), memoryview(b"value"))
    b.append(2, np.frombuffer(b"np", dtype=np.uint8), b"x")
    with pytest.raises(TypeError):
        b.append(3, "str key", b"v")
    with pytest.raises(TypeError):
        b.append(3, None, 12)
    assert [(r.key, r.value) for r in RecordBatch(b.build())] == [(b"k", b"value"), (b"np", b"x")]


def test_timestamp_none_is_now():
    before = int(time.time() * 1000)
    b = RecordBatchBuilder()
    b.append(None, None, b"v")
    after = int(time.time() * 1000)
    [r] = RecordBatch(b.build())
    assert before - 1 <= r.timestamp <= after + 1


def test_negative_timestamp_deltas():
    recs = [(1000, None, b"a", ()), (10, None, b"b", ()), (5000, None, b"c", ())]
    b = RecordBatch(build(recs))
    assert [r.timestamp for r in b] == [1000, 10, 5000]
    assert b.base_timestamp == 1000 and b.max_timestamp == 5000


def test_log_append_time():
    data = build([(10, None, b"a", ()), (30, None, b"b", ()), (20, None, b"c", ())],
                 timestamp_type="log_append")
    b = RecordBatch(data)
    assert b.timestamp_type == "log_append" and b.attributes & 0x08
    # Every record of a LogAppendTime batch carries the batch's maxTimestamp.
    assert [r.timestamp for r in b] == [30, 30, 30]
    assert b.columns().timestamps.tolist() == [30, 30, 30]


def test_empty_builder_builds_empty_batch():
    b = RecordBatchBuilder()
    data = b.build()
    assert len(data) == 61
    batch = RecordBatch(data)
    batch.validate()
    assert batch.records_count == 0 and list(batch) == []
    assert len(batch.columns()) == 0
    assert batch.base_timestamp == -1


def test_len_and_sizes():
    b = RecordBatchBuilder(batch_size=1000)
    assert len(b) == 0 and b.size_in_bytes() == 61 and b.estimated_size() == 61
    assert b.has_room_for(10, 10_000)  # an empty batch always takes one record
    b.append(1, None, b"x" * 100)
    assert len(b) == 1
    assert b.size_in_bytes() == len(b.build())
    assert b.has_room_for(0, 500)
    assert not b.has_room_for(0, 900)
    assert b.record_size_upper_bound(-1, 10, [("h", b"1")]) >= 10 + 3
    while b.has_room_for(5, 100):
        b.append(1, b"abcde", b"y" * 100)
    assert b.size_in_bytes() <= 1000
    assert b.size_in_bytes() == len(b.build())


def test_build_twice_and_append_after_build():
    b = RecordBatchBuilder()
    b.append(1, None, b"a")
    first = b.build()
    assert b.build() == first
    b.append(2, None, b"b")
    assert [r.value for r in RecordBatch(b.build())] == [b"a", b"b"]
    assert [r.value for r in RecordBatch(first)] == [b"a"]


def test_set_producer_state():
    b = RecordBatchBuilder()
    b.set_producer_state(5, 6, 7)
    b.append(1, None, b"x")
    batch = RecordBatch(b.build())
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (5, 6, 7)


def test_large_values_grow_buffer():
    big = bytes(range(256)) * 4096  # 1 MiB
    b = RecordBatchBuilder()
    for i in range(5):
        b.append(i, None, big)
    batch = RecordBatch(b.build())
    batch.validate()
    assert all(r.value == big for r in batch)


# -- bulk paths --------------------------------------------------------------------------

def test_append_many_matches_append():
    values = [b"v%d" % i for i in range(100)] + [None, b""]
    keys = [b"k%d" % i if i % 3 else None for i in range(len(values))]
    ts = list(range(1000, 1000 + len(values)))
    one = RecordBatchBuilder()
    for t, k, v in zip(ts, keys, values):
        one.append(t, k, v)
    many = RecordBatchBuilder()
    many.append_many(values, keys=keys, timestamps=ts)
    assert one.build() == many.build()
    arr = RecordBatchBuilder()
    arr.append_many(values, keys=keys, timestamps=np.array(ts, dtype=np.int64))
    assert arr.build() == one.build()


def test_append_many_constant_timestamp_and_headers():
    b = RecordBatchBuilder()
    b.append_many([b"a", bytearray(b"b"), memoryview(b"c")], timestamps=42,
                  headers=[[("h", b"1")], (), None])
    batch = RecordBatch(b.build())
    assert tuples(batch) == [(0, 42, None, b"a", (("h", b"1"),)), (1, 42, None, b"b", ()),
                             (2, 42, None, b"c", ())]


def test_append_many_default_timestamp_now():
    b = RecordBatchBuilder()
    now = int(time.time() * 1000)
    b.append_many([b"a", b"b"])
    assert all(abs(r.timestamp - now) < 5000 for r in RecordBatch(b.build()))


def test_append_many_continues_offsets():
    b = RecordBatchBuilder(base_offset=10)
    b.append(1, None, b"a")
    b.append_many([b"b", b"c"], timestamps=[2, 3])
    b.append(4, None, b"d")
    assert [(r.offset, r.value) for r in RecordBatch(b.build())] == [
        (10, b"a"), (11, b"b"), (12, b"c"), (13, b"d")]


def test_append_many_errors():
    b = RecordBatchBuilder()
    with pytest.raises(ValueError):
        b.append_many([b"a"], keys=[b"a", b"b"])
    with pytest.raises(ValueError):
        b.append_many([b"a"], timestamps=[1, 2])
    with pytest.raises(ValueError):
        b.append_many([b"a"], headers=[(), ()])
    with pytest.raises(TypeError):
        b.append_many(["text"])
    with pytest.raises(TypeError):
        b.append_many([b"a"], timestamps=np.array([1.5]))
    b.append_many([])
    assert len(b) == 0


def test_append_columns():
    values = [b"alpha", b"", b"gamma-gamma", b"d"]
    keys = [b"k1", b"k22", b"", b"k4"]
    data = b"".join(values)
    offs = np.cumsum([0] + [len(v) for v in values]).astype(np.int64)
    koffs = np.cumsum([0] + [len(k) for k in keys]).astype(np.int64)
    ts = np.array([5, 6, 7, 8], dtype=np.int64)
    b = RecordBatchBuilder()
    b.append_columns(data, offs, ts, key_buffer=b"".join(keys), key_offsets=koffs)
    ref = RecordBatchBuilder()
    ref.append_many(values, keys=keys, timestamps=ts.tolist())
    assert b.build() == ref.build()
    nokeys = RecordBatchBuilder()
    nokeys.append_columns(memoryview(data), offs, timestamps=9)
    assert [(r.key, r.value, r.timestamp) for r in RecordBatch(nokeys.build())] == [
        (None, v, 9) for v in values]


@pytest.mark.parametrize("offsets", [[0, 5, 3], [0, 100], [-1, 2], []])
def test_append_columns_bad_offsets(offsets):
    b = RecordBatchBuilder()
    with pytest.raises(ValueError):
        b.append_columns(b"abcdef", np.array(offsets, dtype=np.int64), timestamps=1)
    assert len(b) == 0


def test_append_columns_key_args_together():
    with pytest.raises(ValueError):
        RecordBatchBuilder().append_columns(b"ab", np.array([0, 2]), 1, key_buffer=b"x")


# -- RecordBatch views -------------------------------------------------------------------

def test_zero_copy_views_of_many_buffers():
    data = build()
    for buf in (data, bytearray(data), memoryview(data), memoryview(b"xx" + data)[2:]):
        b = RecordBatch(buf)
        assert bytes(b) == data
        assert memoryview(b).readonly and memoryview(b).nbytes == len(data)
        assert len(list(b)) == 5


def test_mmap_slice(tmp_path):
    data = build() + build(base_offset=5)
    path = tmp_path / "segment.log"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        batches = list(iter_batches(m))
        assert [b.base_offset for b in batches] == [0, 5]
        assert [r.value for r in batches[1]] == [r.value for r in RecordBatch(data)]
        second = RecordBatch(memoryview(m)[len(data) // 2:])
        assert second.base_offset == 5
        del batches, second


def test_trailing_bytes_are_not_part_of_the_batch():
    data = build()
    b = RecordBatch(data + b"garbage")
    assert bytes(b) == data
    b.validate()


def test_writable_export_refused():
    b = RecordBatch(bytearray(build()))
    view = memoryview(b)
    assert view.readonly
    with pytest.raises(TypeError):
        view[0] = 1


def test_records_buffer():
    data = build()
    b = RecordBatch(data)
    assert bytes(b.records_buffer) == data[61:]
    c = RecordBatch(build(compression="gzip"))
    assert bytes(c.records_buffer) == data[61:]


def test_record_object():
    r = Record(5, 10, b"k", None, [("a", b"b")])
    assert (r.offset, r.timestamp, r.key, r.value, r.headers) == (5, 10, b"k", None, (("a", b"b"),))
    assert r == Record(5, 10, b"k", None, (("a", b"b"),))
    assert r != Record(6, 10, b"k", None, ())
    assert pickle.loads(pickle.dumps(r)) == r
    assert hash(r) == hash(Record(5, 10, b"k", None, (("a", b"b"),)))
    assert "offset=5" in repr(r)
    with pytest.raises(AttributeError):
        r.offset = 1
    assert Record.value.__doc__


def test_records_list():
    b = RecordBatch(build())
    assert [r.offset for r in b.records()] == [0, 1, 2, 3, 4]


# -- columns -----------------------------------------------------------------------------

@pytest.mark.parametrize("codec", CODECS)
def test_columns_match_iteration(codec):
    b = RecordBatch(build(base_offset=100, compression=codec))
    cols = b.columns()
    recs = list(b)
    assert len(cols) == len(recs)
    assert cols.offsets.dtype == np.int64 and cols.timestamps.dtype == np.int64
    assert cols.key_lengths.dtype == np.int32 and cols.value_lengths.dtype == np.int32
    assert cols.offsets.tolist() == [r.offset for r in recs]
    assert cols.timestamps.tolist() == [r.timestamp for r in recs]
    buf = cols.values_buffer
    for i, r in enumerate(recs):
        assert cols.key(i) == r.key and cols.value(i) == r.value and cols.headers(i) == r.headers
        if r.value is not None:
            off, n = cols.value_offsets[i], cols.value_lengths[i]
            assert bytes(buf[off:off + n]) == r.value
        if r.key is not None:
            off, n = cols.key_offsets[i], cols.key_lengths[i]
            assert bytes(cols.keys_buffer[off:off + n]) == r.key
    assert cols.keys() == [r.key for r in recs]
    assert cols.values() == [r.value for r in recs]
    assert cols.key(-1) == recs[-1].key
    with pytest.raises(IndexError):
        cols.value(len(recs))
    assert cols.header_counts.tolist() == [len(r.headers) for r in recs]


def test_columns_are_read_only_and_zero_copy():
    data = bytearray(build())
    cols = RecordBatch(data).columns()
    with pytest.raises(ValueError):
        cols.offsets[0] = 5
    # Uncompressed: the buffer is a view into the batch itself.
    data_view = cols.buffer
    assert data_view.obj is not None and bytes(data_view) == bytes(data[61:])
    with pytest.raises(BufferError):
        data.extend(b"x")  # exported: cannot be resized under the view


# -- iter_batches ------------------------------------------------------------------------

def test_iter_batches_and_partial_tail():
    batches = [build(base_offset=i * 5, compression=c) for i, c in enumerate(CODECS)]
    run = b"".join(batches)
    got = list(iter_batches(run))
    assert [b.base_offset for b in got] == [0, 5, 10, 15, 20]
    assert [bytes(b) for b in got] == batches
    for cut in (1, 10, 60, 61, 62, len(batches[-1]) - 1):
        it = iter_batches(run[:-cut])
        assert [b.base_offset for b in it] == [0, 5, 10, 15]
        assert it.position == len(run) - len(batches[-1])
    assert list(iter_batches(b"")) == []


def test_iter_batches_corrupt_raises():
    a, b = build(), build(base_offset=5)
    bad = bytearray(a + b)
    bad[len(a) + 30] ^= 0xFF  # inside the second batch's CRC-covered bytes
    it = iter_batches(bytes(bad))
    assert next(it).base_offset == 0
    with pytest.raises(CorruptRecordError, match="CRC"):
        next(it)
    assert len(list(iter_batches(bytes(bad), check_crc=False))) == 2
    bad_magic = bytearray(a + b)
    bad_magic[len(a) + 16] = 1
    with pytest.raises(CorruptRecordError, match="magic"):
        list(iter_batches(bytes(bad_magic)))
    # A partial tail whose magic is wrong is garbage, not a partial batch.
    with pytest.raises(CorruptRecordError, match="magic"):
        list(iter_batches(bytes(bad_magic[:-10])))
    short_length = bytearray(a + b)
    struct.pack_into(">i", short_length, len(a) + 8, 10)
    with pytest.raises(CorruptRecordError, match="length"):
        list(iter_batches(bytes(short_length)))


def test_iter_batches_max_size():
    data = build()
    with pytest.raises(RecordTooLargeError):
        list(iter_batches(data, max_size=100))


# -- validate ----------------------------------------------------------------------------

def test_validate_detects_crc_and_record_damage():
    data = bytearray(build())
    RecordBatch(bytes(data)).validate()
    data[-1] ^= 1
    b = RecordBatch(bytes(data))
    assert not b.crc_matches()
    with pytest.raises(CorruptRecordError, match="CRC"):
        b.validate()
    assert not b.is_valid()


def _reheader(records_section: bytes, count: int, last_offset_delta: int, attrs: int = 0) -> bytes:
    """A batch with a correct CRC around an arbitrary records section."""
    size = 61 + len(records_section)
    head = bytearray(HEADER.pack(0, size - 12, -1, 2, 0, attrs, last_offset_delta, 0, 0, -1, -1, -1, count))
    out = head + records_section
    struct.pack_into(">I", out, 17, _core.crc32c(bytes(out[21:])))
    return bytes(out)


def _zigzag(n: int) -> bytes:
    u = (n << 1) ^ (n >> 63)
    u &= (1 << 64) - 1
    out = bytearray()
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


def _record(offset_delta=0, ts_delta=0, key=None, value=b"v", headers=(), pad=b""):
    body = b"\x00" + _zigzag(ts_delta) + _zigzag(offset_delta)
    body += _zigzag(-1) if key is None else _zigzag(len(key)) + key
    body += _zigzag(-1) if value is None else _zigzag(len(value)) + value
    body += _zigzag(len(headers))
    for hk, hv in headers:
        body += _zigzag(len(hk)) + hk + (_zigzag(-1) if hv is None else _zigzag(len(hv)) + hv)
    body += pad
    return _zigzag(len(body)) + body


def test_handmade_batch_decodes():
    data = _reheader(_record(0, 0, b"k", b"v", [(b"h", b"x")]) + _record(2, 5), 2, 2)
    b = RecordBatch(data)
    b.validate()
    assert tuples(b) == [(0, 0, b"k", b"v", (("h", b"x"),)), (2, 5, None, b"v", ())]


def test_record_attributes_byte_is_ignored():
    rec = bytearray(_record(0, 0, None, b"v"))
    rec[1] = 0x7F
    b = RecordBatch(_reheader(bytes(rec), 1, 0))
    b.validate()
    assert [r.value for r in b] == [b"v"]


@pytest.mark.parametrize("section,count,lod,match", [
    (_record(0) + b"\x00", 1, 0, "remain"),                          # trailing byte
    (_record(0), 2, 1, "recordsCount"),                         # fewer records than recordsCount
    (_record(0) + _record(0), 2, 1, "offset delta"),                  # offsets not increasing
    (_record(0) + _record(3), 2, 2, "offset delta"),                  # past lastOffsetDelta
    (_record(0, pad=b"\x00"), 1, 0, "declared length"),               # record length too long
    (_zigzag(3) + b"\x00" * 10, 1, 0, "smaller"),                  # length below the minimum
    (_zigzag(-5) + b"\x00" * 10, 1, 0, "smaller"),                    # negative length
    (b"\xff\xff\xff\xff\xff\xff" + b"\x00" * 10, 1, 0, "varint"),     # overlong varint
    (_zigzag(8) + b"\x00\x00\x00" + _zigzag(-2) + b"\x00\x00\x00\x00", 1, 0, "key"),
    (_zigzag(8) + b"\x00\x00\x00" + _zigzag(30) + b"\x00\x00\x00\x00", 1, 0, "key"),
    (_zigzag(8) + b"\x00\x00\x00\x01" + _zigzag(30) + b"\x00\x00\x00", 1, 0, "value"),
    (_zigzag(8) + b"\x00\x00\x00\x01\x01" + _zigzag(-1) + b"\x00\x00", 1, 0, "header"),
    (_record(0, headers=[(b"k", b"v")])[:-3] + b"\x01\x01\x00", 1, 0, "header|varint|declared"),
])
def test_malformed_records(section, count, lod, match):
    b = RecordBatch(_reheader(section, count, lod))
    with pytest.raises(CorruptRecordError, match=match):
        b.validate()
    with pytest.raises(CorruptRecordError):
        list(b)
    with pytest.raises(CorruptRecordError):
        b.columns()
    with pytest.raises(CorruptRecordError):
        filter_batch(b, np.ones(count, dtype=bool))


def test_invalid_utf8_header_key_is_replaced_like_java():
    b = RecordBatch(_reheader(_record(0, headers=[(b"\xff", b"v")]), 1, 0))
    [r] = b
    assert r.headers == (("\ufffd", b"v"),)


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d[:30], "truncated"),
    (lambda d: d[:-1], "truncated"),
    (lambda d: d[:16] + b"\x01" + d[17:], "magic"),
    (lambda d: d[:8] + struct.pack(">i", 5) + d[12:], "length"),
    (lambda d: d[:57] + struct.pack(">i", -1) + d[61:], "recordsCount"),
    (lambda d: struct.pack(">q", -5) + d[8:], "negative base offset"),
])
def test_bad_headers_raise_at_construction(mutate, match):
    with pytest.raises(CorruptRecordError, match=match):
        RecordBatch(mutate(build()))


def test_unknown_codec_is_corrupt():
    data = bytearray(build())
    struct.pack_into(">h", data, 21, 6)
    b = RecordBatch(bytes(data))
    with pytest.raises(CorruptRecordError, match="codec"):
        list(b)


def test_decompression_bomb_bounded():
    recs = [(1, None, b"\x00" * 100_000, ())] * 30  # 3 MB of zeros
    data = build(recs, compression="gzip")
    b = RecordBatch(data)
    with pytest.raises(CorruptRecordError, match="decompress"):
        b.validate()
    ok = RecordBatch(data, max_uncompressed=10 << 20)
    ok.validate()
    assert len(list(ok)) == 30


def test_exported_buffer_outlives_source():
    data = bytearray(build())
    b = RecordBatch(memoryview(data))
    del data
    assert len(list(b)) == 5


# -- filter_batch ------------------------------------------------------------------------

@pytest.mark.parametrize("codec", CODECS)
def test_filter_batch(codec):
    data = build(base_offset=50, compression=codec, producer_id=9, producer_epoch=1,
                 base_sequence=100, is_transactional=True, partition_leader_epoch=4)
    keep = np.array([False, True, False, True, False])
    out = filter_batch(RecordBatch(data), keep)
    b = RecordBatch(out)
    b.validate()
    orig = RecordBatch(data)
    expected = [t for t, k in zip(tuples(orig), keep) if k]
    assert tuples(b) == expected
    assert b.base_offset == 50 and b.last_offset_delta == orig.last_offset_delta
    assert b.base_timestamp == orig.base_timestamp
    assert b.max_timestamp == max(t[1] for t in expected)
    assert (b.producer_id, b.producer_epoch, b.base_sequence) == (9, 1, 100)
    assert b.attributes == orig.attributes and b.partition_leader_epoch == 4
    assert b.records_count == 2


def test_filter_batch_all_none_and_inputs():
    data = build()
    assert filter_batch(data, np.zeros(5, dtype=bool)) is None
    assert filter_batch(data, np.ones(5, dtype=bool)) == data
    assert filter_batch(data, [1, 0, 0, 0, 0]) is not None
    with pytest.raises(ValueError):
        filter_batch(data, np.ones(4, dtype=bool))
    assert filter_batch(RecordBatchBuilder().build(), np.zeros(0, dtype=bool)) is None


def test_filter_batch_log_append_keeps_max_timestamp():
    data = build([(10, None, b"a", ()), (30, None, b"b", ())], timestamp_type="log_append")
    out = RecordBatch(filter_batch(data, np.array([True, False])))
    assert out.max_timestamp == 30 and [r.timestamp for r in out] == [30]


# -- control batches ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["commit", "abort", ControlRecordType.COMMIT])
def test_control_batch(kind):
    data = build_control_batch(kind, producer_id=42, producer_epoch=3, coordinator_epoch=7,
                               base_offset=100, timestamp_ms=1234)
    b = RecordBatch(data)
    b.validate()
    assert b.is_control and b.is_transactional and b.attributes == 0x30
    assert (b.producer_id, b.producer_epoch, b.base_sequence) == (42, 3, -1)
    [r] = b
    assert r.offset == 100 and r.timestamp == 1234
    c = ControlRecord.from_record(r)
    expected = ControlRecordType.ABORT if kind == "abort" else ControlRecordType.COMMIT
    assert c.type == expected and c.coordinator_epoch == 7 and c.version == 0
    assert c.is_commit == (expected == ControlRecordType.COMMIT)
    assert c.is_abort == (expected == ControlRecordType.ABORT)
    assert r.key == struct.pack(">hh", 0, int(expected))
    assert r.value == struct.pack(">hi", 0, 7)


def test_control_record_parse_errors_and_unknown():
    with pytest.raises(CorruptRecordError):
        ControlRecord.parse(b"\x00", b"")
    with pytest.raises(CorruptRecordError):
        ControlRecord.parse(None, b"")
    with pytest.raises(CorruptRecordError):
        ControlRecord.parse(struct.pack(">hh", -1, 0), b"\x00" * 6)
    with pytest.raises(CorruptRecordError):
        ControlRecord.parse(struct.pack(">hh", 0, 1), b"\x00\x00")
    other = ControlRecord.parse(struct.pack(">hh", 0, 99), None)
    assert other.type == 99 and other.coordinator_epoch is None
    leader = ControlRecord.parse(struct.pack(">hh", 0, 2), b"anything")
    assert leader.type == ControlRecordType.LEADER_CHANGE
    with pytest.raises(ValueError):
        build_control_batch("leader_change", 1, 1)
    with pytest.raises(ValueError):
        build_control_batch("bogus", 1, 1)


def test_is_control_builder_flag():
    b = RecordBatchBuilder(is_control=True, is_transactional=True, producer_id=1, producer_epoch=0)
    b.append(1, ControlRecord(ControlRecordType.ABORT, 0, 3).key(), ControlRecord(ControlRecordType.ABORT, 0, 3).value())
    batch = RecordBatch(b.build())
    assert batch.is_control
    assert ControlRecord.from_record(next(iter(batch))).is_abort


def test_public_module_surface():
    for name in records.__all__:
        assert hasattr(records, name), name
    assert records.BATCH_HEADER_SIZE == 61


def test_too_large_batch_guard():
    b = RecordBatchBuilder()
    value = b"x" * 1000
    with pytest.raises(RecordBatchTooLargeError):
        b.append_many([value] * 2_200_000)  # 2.2 GB: batchLength is an int32
    assert len(b) == 0 and b.size_in_bytes() == 61


# -- hostile inputs: memory safety whatever user objects do ------------------------------

class Sneaky:
    """An int-like whose conversion mutates the caller's lists."""

    def __init__(self, value, victim):
        self.value, self.victim = value, victim

    def __index__(self):
        self.victim.clear()
        return self.value


def test_append_many_snapshots_its_inputs():
    values = [b"a" * 50, b"b" * 50, b"c" * 50]
    timestamps = [Sneaky(1, values), 2, 3]
    b = RecordBatchBuilder()
    b.append_many(values, timestamps=timestamps)
    assert [(r.timestamp, r.value) for r in RecordBatch(b.build())] == [
        (1, b"a" * 50), (2, b"b" * 50), (3, b"c" * 50)]


class ShapeShifter:
    """A header pair that yields a longer value on every unpacking."""

    def __init__(self):
        self.calls = 0

    def __iter__(self):
        self.calls += 1
        return iter(("key", b"v" * (10 ** self.calls)))


def test_headers_unpacked_once():
    b = RecordBatchBuilder()
    b.append(1, None, b"x", [ShapeShifter()])
    [r] = RecordBatch(b.build())
    assert r.headers == (("key", b"v" * 10),)


def test_uninitialised_objects_do_not_crash():
    blank = RecordBatch.__new__(RecordBatch)
    for call in (blank.validate, blank.columns, blank.crc_matches, lambda: list(blank)):
        with pytest.raises(ValueError):
            call()
    it_type = type(iter(RecordBatch(build())))
    assert list(it_type.__new__(it_type)) == []
    bi_type = type(iter_batches(b""))
    assert list(bi_type.__new__(bi_type)) == []


def test_modified_column_arrays_are_not_trusted():
    cols = RecordBatch(build()).columns()
    arr = cols.value_offsets
    arr.flags.writeable = True
    arr[0] = 10**9
    with pytest.raises(IndexError):
        cols.value(0)
    counts = cols.header_counts
    counts.flags.writeable = True
    counts[1] = 10**6
    with pytest.raises((IndexError, CorruptRecordError)):
        cols.headers(1)
