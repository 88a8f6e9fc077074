"""Record batches for the storage tests, built by kafka-python's DefaultRecordBatchBuilder:
an implementation independent of pylog's own codec."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # kafka-python's package import uses importlib.resources.read_text (deprecated).
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def make_batch(values, *, timestamps=None, keys=None, base_timestamp: int = 1_700_000_000_000,
               codec: str = "none", producer_id: int = -1) -> bytes:
    """One v2 batch holding ``values`` (bytes each); timestamps default to one per ms."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=CODECS[codec], is_transactional=False,
                                  producer_id=producer_id, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 30)
    for i, value in enumerate(values):
        ts = timestamps[i] if timestamps is not None else base_timestamp + i
        key = keys[i] if keys is not None else None
        if b.append(i, timestamp=ts, key=key, value=value, headers=[]) is None:
            raise ValueError("batch builder refused a record")
    return bytes(b.build())


def sized_batch(n_records: int, value_size: int, *, seed: int = 0, base_timestamp: int = 1_700_000_000_000) -> bytes:
    """A batch of ``n_records`` incompressible values of ``value_size`` bytes."""
    import random

    r = random.Random(seed)
    return make_batch([r.randbytes(value_size) for _ in range(n_records)], base_timestamp=base_timestamp)


def decode(data) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """``(offset, timestamp, key, value)`` of every record in concatenated batches."""
    out = []
    data = bytes(data)
    pos = 0
    while pos < len(data):
        size = int.from_bytes(data[pos + 8:pos + 12], "big") + 12
        batch = DefaultRecordBatch(data[pos:pos + size])
        for rec in batch:
            out.append((rec.offset, rec.timestamp, rec.key, rec.value))
        pos += size
    return out


def batch_headers(data) -> list[dict]:
    """Header fields of each batch in ``data`` (via pylog._core.read_batch_header)."""
    from pylog import _core

    out, pos, data = [], 0, bytes(data)
    while pos < len(data):
        h = _core.read_batch_header(data, pos)
        h["position"] = pos
        out.append(h)
        pos += h["size"]
    return out
