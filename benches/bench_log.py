"""Log.append and Log.read throughput against their peers, in one suite.

Peers (the issue's targets in brackets):
- ``os.write`` of the same bytes to a plain file        [append >= 0.8x its throughput;
  AppendRatio measures the ratio itself, alternating the two in one process]
- SQLite (stdlib sqlite3, WAL, one transaction per 1,000 rows) storing the same records
  as rows                                                [append >= 10x]
- reading the raw segment file sequentially             [read >= 0.8x]

Each batch is 16 KiB-ish: 160 records of 100 bytes (benches/_data.py), built once by
kafka-python's builder (an independent encoder).  ``PYLOG_BENCH_SMALL=1`` shrinks every
size for the smoke test.
"""

import os
import shutil
import sqlite3
import tempfile
import warnings

from benches._data import timestamps, values

SMALL = os.environ.get("PYLOG_BENCH_SMALL", "") not in ("", "0")
BATCHES = 16 if SMALL else 1024          # per timed call: 16 MiB of appends
RECORDS_PER_BATCH = 160
VALUE_SIZE = 100
SEGMENT_BYTES = (1 << 20) if SMALL else (1 << 30)


def make_batches(n_batches=BATCHES):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka.record.default_records import DefaultRecordBatchBuilder
    vals = values(RECORDS_PER_BATCH)
    ts = timestamps(RECORDS_PER_BATCH)
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
    for i, (v, t) in enumerate(zip(vals, ts)):
        b.append(i, timestamp=t, key=None, value=v, headers=[])
    batch = bytes(b.build())
    return [batch] * n_batches, vals


class Append:
    """One timed call appends BATCHES batches of ~16 KiB (pylog) or the same bytes/rows
    (peers), to a file that grows across calls as a log does."""

    timeout = 600

    def setup(self):
        from pylog.storage import Log

        self.tmp = tempfile.mkdtemp(prefix="pylog-bench-")
        self.batches, self.vals = make_batches()
        self.log = Log.open(os.path.join(self.tmp, "bench-0"), segment_bytes=SEGMENT_BYTES)
        # The design card's pure mmap append (LogConfig.mmap_append): every batch copied
        # into the mapping; the default writes batches of 1.5 KiB and more with pwritev.
        self.log_mmap = Log.open(os.path.join(self.tmp, "bench-1"), segment_bytes=SEGMENT_BYTES,
                                 mmap_append=True)
        self.fd = os.open(os.path.join(self.tmp, "plain.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.db = sqlite3.connect(os.path.join(self.tmp, "bench.sqlite"), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE records (offset INTEGER PRIMARY KEY, ts INTEGER, value BLOB)")
        self.next_row = 0

    def teardown(self):
        self.log.close()
        self.log_mmap.close()
        os.close(self.fd)
        self.db.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def time_log_append(self):
        append = self.log.append
        for b in self.batches:
            append(b)

    def time_log_append_mmap(self):
        append = self.log_mmap.append
        for b in self.batches:
            append(b)

    def time_os_write(self):
        fd, write = self.fd, os.write
        for b in self.batches:
            write(fd, b)

    def time_sqlite_wal(self):
        db, vals = self.db, self.vals
        rows_in_txn = 0
        db.execute("BEGIN")
        for _ in self.batches:
            start = self.next_row
            db.executemany("INSERT INTO records VALUES (?, ?, ?)",
                           [(start + i, 1_700_000_000_000 + i, v) for i, v in enumerate(vals)])
            self.next_row += len(vals)
            rows_in_txn += len(vals)
            if rows_in_txn >= 1000:
                db.execute("COMMIT")
                db.execute("BEGIN")
                rows_in_txn = 0
        db.execute("COMMIT")


class AppendRatio:
    """Log.append's throughput as a multiple of os.write's, the two alternating in short
    rounds inside one process so that both see the same machine load (the time_ benchmarks
    above run one after the other and drift apart on a busy shared machine).  The issue's
    target is >= 0.8."""

    timeout = 600
    ROUNDS = 4 if SMALL else 24
    PER_ROUND = 4 if SMALL else 256        # 4 MiB of 16 KiB batches per round and side

    def setup(self):
        from pylog.storage import Log

        self.tmp = tempfile.mkdtemp(prefix="pylog-bench-")
        batches, _ = make_batches(self.PER_ROUND)
        self.batches = batches
        self.log = Log.open(os.path.join(self.tmp, "bench-0"), segment_bytes=SEGMENT_BYTES)
        self.fd = os.open(os.path.join(self.tmp, "plain.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def teardown(self):
        self.log.close()
        os.close(self.fd)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def track_log_append_vs_os_write(self):
        import statistics
        import time

        append, write, fd, batches = self.log.append, os.write, self.fd, self.batches
        ratios = []
        for _ in range(self.ROUNDS):
            t0 = time.perf_counter()
            for b in batches:
                append(b)
            t1 = time.perf_counter()
            for b in batches:
                write(fd, b)
            t2 = time.perf_counter()
            ratios.append((t2 - t1) / (t1 - t0))
        return statistics.median(ratios)

    track_log_append_vs_os_write.unit = "x os.write"


class Read:
    """Sequential read of a segment's worth of 16 KiB batches: Log.read in 1 MiB fetches
    (zero-copy views; each view's bytes are summed over 1 byte per 4 KiB page so the pages
    are really touched) against reading the raw file into a buffer in 1 MiB chunks."""

    timeout = 600

    def setup(self):
        from pylog.storage import Log

        self.tmp = tempfile.mkdtemp(prefix="pylog-bench-")
        batches, _ = make_batches()
        self.log = Log.open(os.path.join(self.tmp, "bench-0"), segment_bytes=SEGMENT_BYTES)
        for b in batches:
            self.log.append(b)
        # Seal it: the file is then exactly the batches (no preallocated tail), and the
        # log reads it as it reads any older segment (mapped read-only on first use).
        self.log.roll()
        self.path = self.log.segments[0].path
        self.size = self.log.segments[0].size
        self.buf = bytearray(1 << 20)

    def teardown(self):
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def time_log_read(self):
        log, offset, end = self.log, 0, self.log.log_end_offset
        total = 0
        while offset < end:
            r = log.read(offset, 1 << 20)
            total += len(bytes(r.records[::4096]))  # really touch every page
            offset = r.next_offset
        return total

    def time_raw_file_read(self):
        total = 0
        with open(self.path, "rb", buffering=0) as f:
            view = memoryview(self.buf)
            while True:
                n = f.readinto(view)
                if not n:
                    break
                total += n
        return total
