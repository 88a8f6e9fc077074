"""Differential tests: pylog's batches against independent implementations.

- batches pylog builds decode in kafka-python's and aiokafka's readers (aiokafka's Cython
  reader and its pure-Python one) with the same records;
- batches they build, with every codec they support, decode in pylog with the same
  records and header fields;
- uncompressed, pylog's bytes equal kafka-python's byte for byte;
- CRCs agree with the ``crc32c`` package.
"""

import warnings

import crc32c as crc32c_oracle
import pytest
from aiokafka.record import default_records as aio
from hypothesis import given, settings, strategies as st

with warnings.catch_warnings():
    # kafka-python's package import uses importlib.resources.read_text (deprecated).
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.record import default_records as kp

from pylog.codecs import codec_id
from pylog.records import RecordBatch, RecordBatchBuilder, filter_batch

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]

optional_bytes = st.none() | st.binary(max_size=300)
headers = st.lists(st.tuples(st.text(max_size=20), optional_bytes), max_size=4)
timestamps = st.integers(min_value=0, max_value=2**42)
records = st.lists(st.tuples(timestamps, optional_bytes, optional_bytes, headers),
                   min_size=1, max_size=20)
producer = st.tuples(st.integers(-1, 2**63 - 1), st.integers(-1, 2**15 - 1),
                     st.integers(-1, 2**31 - 1))


def norm(recs):
    """(offset, timestamp, key, value, headers) with headers as a tuple of tuples."""
    return [(r.offset, r.timestamp, None if r.key is None else bytes(r.key),
             None if r.value is None else bytes(r.value),
             tuple((k, None if v is None else bytes(v)) for k, v in r.headers)) for r in recs]


def expected(recs, base_offset=0):
    return [(base_offset + i, ts, k, v, tuple(h)) for i, (ts, k, v, h) in enumerate(recs)]


def ours(recs, **kw):
    b = RecordBatchBuilder(**kw)
    for ts, k, v, h in recs:
        b.append(ts, k, v, h)
    return b.build()


# -- ours -> theirs ----------------------------------------------------------------------

@pytest.mark.parametrize("codec", CODECS)
@given(recs=records, base_offset=st.integers(0, 2**40), prod=producer, txn=st.booleans())
@settings(max_examples=40)
def test_ours_decode_in_kafka_python_and_aiokafka(codec, recs, base_offset, prod, txn):
    pid, epoch, seq = prod
    data = ours(recs, base_offset=base_offset, compression=codec, producer_id=pid,
                producer_epoch=epoch, base_sequence=seq, is_transactional=txn)
    want = expected(recs, base_offset)
    readers = [kp.DefaultRecordBatch, aio.DefaultRecordBatch, aio._DefaultRecordBatchPy]
    for reader in readers:
        batch = reader(bytes(data))
        assert batch.validate_crc(), reader
        assert batch.base_offset == base_offset
        assert batch.compression_type == codec_id(codec)
        assert batch.is_transactional == txn
        assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == prod
        assert norm(batch) == want, reader
    assert int.from_bytes(data[17:21], "big") == crc32c_oracle.crc32c(data[21:])


@given(recs=records, prod=producer)
@settings(max_examples=60)
def test_uncompressed_bytes_equal_kafka_python(recs, prod):
    pid, epoch, seq = prod
    theirs = kp.DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                          producer_id=pid, producer_epoch=epoch,
                                          base_sequence=seq, batch_size=1 << 30)
    for i, (ts, k, v, h) in enumerate(recs):
        theirs.append(i, ts, k, v, h)
    # kafka-python writes partition leader epoch 0 (the broker sets it).
    assert ours(recs, partition_leader_epoch=0, producer_id=pid, producer_epoch=epoch,
                base_sequence=seq) == bytes(theirs.build())


@given(recs=records)
@settings(max_examples=30)
def test_columns_and_bulk_agree_with_aiokafka(recs):
    b = RecordBatchBuilder()
    b.append_many([v for _, _, v, _ in recs], keys=[k for _, k, _, _ in recs],
                  timestamps=[ts for ts, _, _, _ in recs], headers=[h for *_, h in recs])
    data = b.build()
    theirs = norm(aio.DefaultRecordBatch(bytes(data)))
    assert theirs == expected(recs)
    cols = RecordBatch(data).columns()
    assert [(int(o), int(t), cols.key(i), cols.value(i), cols.headers(i))
            for i, (o, t) in enumerate(zip(cols.offsets, cols.timestamps))] == theirs


# -- theirs -> ours ----------------------------------------------------------------------

BUILDERS = {
    "kafka-python": kp.DefaultRecordBatchBuilder,
    "aiokafka": aio.DefaultRecordBatchBuilder,
    "aiokafka-py": aio._DefaultRecordBatchBuilderPy,
}


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("client", list(BUILDERS))
@given(recs=records, prod=producer, txn=st.booleans(), compressible=st.booleans())
@settings(max_examples=25)
def test_theirs_decode_in_ours(client, codec, recs, prod, txn, compressible):
    pid, epoch, seq = prod
    if txn and pid < 0:
        pid, epoch, seq = 1, 0, 0  # kafka-python refuses transactional without a producer id
    if compressible:  # make sure the codec is really used (clients skip useless compression)
        recs = recs + [(recs[0][0], None, b"z" * 2000, [])]
    builder = BUILDERS[client](2, codec_id(codec), txn, pid, epoch, seq, 1 << 30)
    for i, (ts, k, v, h) in enumerate(recs):
        builder.append(i, ts, k, v, h)
    data = bytes(builder.build())
    batch = RecordBatch(data)
    batch.validate()
    if compressible:
        assert batch.compression == codec
    assert batch.is_transactional == txn
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (pid, epoch, seq)
    assert batch.records_count == len(recs)
    assert batch.crc == crc32c_oracle.crc32c(data[21:])
    assert norm(batch) == expected(recs)
    cols = batch.columns()
    assert cols.offsets.tolist() == list(range(len(recs)))
    assert cols.values() == [v for _, _, v, _ in recs]
    # The cleaner's re-encode of their batch reads back in their reader.
    keep = [i % 2 == 0 for i in range(len(recs))]
    filtered = filter_batch(batch, keep)
    kept = [r for r, k in zip(expected(recs), keep) if k]
    assert norm(kp.DefaultRecordBatch(filtered)) == kept
    assert norm(aio.DefaultRecordBatch(filtered)) == kept


def test_raw_snappy_from_librdkafka_style_batch():
    """librdkafka writes snappy without the xerial framing."""
    import cramjam

    plain = ours([(5, b"k", b"v" * 100, [("h", b"1")])] * 3)
    section = bytes(cramjam.snappy.compress_raw(plain[61:]))
    data = bytearray(plain[:61]) + section
    data[8:12] = (len(data) - 12).to_bytes(4, "big")
    data[21:23] = (2).to_bytes(2, "big")
    data[17:21] = crc32c_oracle.crc32c(bytes(data[21:])).to_bytes(4, "big")
    batch = RecordBatch(bytes(data))
    batch.validate()
    assert norm(batch) == norm(RecordBatch(plain))
    assert norm(kp.DefaultRecordBatch(bytes(data))) == norm(batch)
