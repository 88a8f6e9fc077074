"""ListOffsets by timestamp (Log.offset_for_timestamp) against its peer, in one suite.

Kafka answers with the first record at or after the timestamp, decompressing the batch
that holds it; pylog does the same in C (time index, offset index, a header scan, then one
batch's records).  The peer is the same search written the plain way: kafka-python's
decoder (an independent implementation) iterating the records of that one batch, given
its bytes already sliced out of the log, so the ratio measures the per-record part.

A log of BATCHES batches of 160 records of 100 bytes (benches/_data.py), one millisecond
apart; TARGETS timestamps spread over it per timed call.  ``PYLOG_BENCH_SMALL=1`` shrinks
the log for the smoke test.
"""

import os
import shutil
import tempfile
import warnings

from benches._data import values

SMALL = os.environ.get("PYLOG_BENCH_SMALL", "") not in ("", "0")
BATCHES = 16 if SMALL else 2048
RECORDS_PER_BATCH = 160
TARGETS = 100
T0 = 1_700_000_000_000
CODECS = {"none": 0, "gzip": 1, "lz4": 3}


def _kafka_python():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
    return DefaultRecordBatch, DefaultRecordBatchBuilder


def make_batch(codec: str, first_ts: int) -> bytes:
    _, builder = _kafka_python()
    b = builder(magic=2, compression_type=CODECS[codec], is_transactional=False, producer_id=-1,
                producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
    for i, v in enumerate(values(RECORDS_PER_BATCH)):
        b.append(i, timestamp=first_ts + i, key=None, value=v, headers=[])
    return bytes(b.build())


class OffsetForTimestamp:
    """One timed call answers TARGETS timestamps (each inside a different batch)."""

    params = list(CODECS)
    param_names = ["codec"]
    timeout = 600

    def setup(self, codec):
        from pylog.storage import Log

        self.tmp = tempfile.mkdtemp(prefix="pylog-bench-")
        self.log = Log.open(os.path.join(self.tmp, "bench-0"), segment_bytes=1 << 30)
        self.batches = []
        for n in range(BATCHES):
            batch = make_batch(codec, T0 + n * RECORDS_PER_BATCH)
            self.log.append(batch)
            self.batches.append(batch)
        span = BATCHES * RECORDS_PER_BATCH
        # Uneven steps: targets land at varying places inside their batches.
        self.targets = [T0 + (k * span) // TARGETS + k % 7 for k in range(TARGETS)]

    def teardown(self, codec):
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def time_log_offset_for_timestamp(self, codec):
        find = self.log.offset_for_timestamp
        for t in self.targets:
            find(t)

    def time_log_max_timestamp(self, codec):
        self.log.offset_for_timestamp(-3)

    def time_kafka_python_batch_search(self, codec):
        """The peer: only the records of the batch holding each target, in Python."""
        batch_cls, _ = _kafka_python()
        for t in self.targets:
            batch = self.batches[(t - T0) // RECORDS_PER_BATCH]
            for record in batch_cls(batch):
                if record.timestamp >= t:
                    break

    def answers(self):
        """``[(timestamp, offset), ...]`` pylog gives for the targets (for the smoke test)."""
        return [tuple(self.log.offset_for_timestamp(t)) for t in self.targets]
