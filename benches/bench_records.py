"""Record batch v2 encode/decode: pylog vs aiokafka's Cython codec, same records.

The issue's workload: 1,000 records of 100 incompressible bytes, no key, no headers,
uncompressed.  Targets (ratios from one run): per-record ``append`` >= 1.5x aiokafka's
``DefaultRecordBatchBuilder`` (append + build), the bulk paths >= 5x; iterating the batch
touching offset/timestamp/key/value >= 1.5x aiokafka's ``DefaultRecordBatch``, the
columnar view >= 5x.

``python -m benches.bench_records`` prints the ratios without asv.
"""

from __future__ import annotations

import numpy as np

from benches._data import timestamps, values
from pylog.records import RecordBatch, RecordBatchBuilder, filter_batch, iter_batches

try:
    from aiokafka.record._crecords import DefaultRecordBatch as AioBatch
    from aiokafka.record._crecords import DefaultRecordBatchBuilder as AioBuilder
except ImportError:  # pragma: no cover - aiokafka is a test dependency
    AioBatch = AioBuilder = None

N = 1000
SIZE = 100
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def _aio_encode(vals, ts, codec=0):
    b = AioBuilder(2, codec, 0, -1, -1, -1, 1 << 30)
    for i in range(len(vals)):
        b.append(i, ts[i], None, vals[i], [])
    return b.build()


def _pylog_encode(vals, ts, codec="none"):
    b = RecordBatchBuilder(compression=codec)
    append = b.append
    for i in range(len(vals)):
        append(ts[i], None, vals[i])
    return b.build()


class Encode:
    """Build one batch of 1,000 x 100-byte records."""

    def setup(self):
        self.values = values(N, SIZE)
        self.timestamps = timestamps(N)
        self.ts_array = np.array(self.timestamps, dtype=np.int64)
        self.data = b"".join(self.values)
        self.offsets = np.arange(0, N * SIZE + 1, SIZE, dtype=np.int64)

    def time_append_pylog(self):
        _pylog_encode(self.values, self.timestamps)

    def time_append_many_pylog(self):
        b = RecordBatchBuilder()
        b.append_many(self.values, timestamps=self.timestamps)
        b.build()

    def time_append_columns_pylog(self):
        b = RecordBatchBuilder()
        b.append_columns(self.data, self.offsets, self.ts_array)
        b.build()

    def time_append_aiokafka(self):
        _aio_encode(self.values, self.timestamps)


class Decode:
    """Read every record of that batch, touching offset, timestamp, key and value."""

    def setup(self):
        self.batch = bytes(_aio_encode(values(N, SIZE), timestamps(N)))

    def time_iterate_pylog(self):
        for r in RecordBatch(self.batch):
            r.offset, r.timestamp, r.key, r.value

    def time_columns_pylog(self):
        c = RecordBatch(self.batch).columns()
        c.offsets, c.timestamps, c.key_lengths, c.value_offsets, c.value_lengths, c.values_buffer

    def time_iterate_aiokafka(self):
        for r in AioBatch(self.batch):
            r.offset, r.timestamp, r.key, r.value

    def time_validate_pylog(self):
        RecordBatch(self.batch).validate()

    def time_validate_crc_aiokafka(self):
        AioBatch(self.batch).validate_crc()


class Compressed:
    """Encode and decode 1,000 compressible records with each codec."""

    params = ["gzip", "snappy", "lz4", "zstd"]
    param_names = ["codec"]

    def setup(self, codec):
        self.values = [b"%06d:" % i + b"payload-" * 12 for i in range(N)]
        self.timestamps = timestamps(N)
        self.pylog_batch = _pylog_encode(self.values, self.timestamps, codec)
        self.aio_batch = bytes(_aio_encode(self.values, self.timestamps, CODEC_IDS[codec]))

    def time_encode_pylog(self, codec):
        b = RecordBatchBuilder(compression=codec)
        b.append_many(self.values, timestamps=self.timestamps)
        b.build()

    def time_encode_aiokafka(self, codec):
        _aio_encode(self.values, self.timestamps, CODEC_IDS[codec])

    def time_decode_pylog(self, codec):
        for r in RecordBatch(self.aio_batch):
            r.offset, r.timestamp, r.key, r.value

    def time_decode_aiokafka(self, codec):
        for r in AioBatch(self.aio_batch):
            r.offset, r.timestamp, r.key, r.value


class Batches:
    """Scan a 1 MiB run of 100 batches (a fetch response / segment read)."""

    def setup(self):
        vals = values(100, 100)
        ts = timestamps(100)
        self.run = b"".join(_pylog_encode(vals, ts) for _ in range(100))
        self.keep = np.arange(N) % 2 == 0
        self.batch = _pylog_encode(values(N, SIZE), timestamps(N))

    def time_iter_batches_crc(self):
        for _ in iter_batches(self.run):
            pass

    def time_filter_half(self):
        filter_batch(self.batch, self.keep)


def _ratios() -> None:  # pragma: no cover - a manual report
    import timeit

    def best(fn, number=200):
        return min(timeit.repeat(fn, number=number, repeat=7)) / number

    enc, dec = Encode(), Decode()
    enc.setup()
    dec.setup()
    aio_enc, aio_dec = best(enc.time_append_aiokafka), best(dec.time_iterate_aiokafka)
    for name, fn, base in [
        ("append", enc.time_append_pylog, aio_enc),
        ("append_many", enc.time_append_many_pylog, aio_enc),
        ("append_columns", enc.time_append_columns_pylog, aio_enc),
        ("iterate", dec.time_iterate_pylog, aio_dec),
        ("columns", dec.time_columns_pylog, aio_dec),
    ]:
        t = best(fn)
        print(f"{name:15s} {t * 1e6:8.1f} us   {base / t:5.2f}x aiokafka ({base * 1e6:.1f} us)")


if __name__ == "__main__":  # pragma: no cover
    _ratios()
