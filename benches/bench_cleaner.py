"""Log compaction throughput (pylog.storage.cleaner) against a pure-Python peer.

Data: RECORDS records of 100-byte values (benches/_data.py) under 10,000 distinct keys,
in batches of 100 records built by kafka-python's builder (an independent encoder),
rolled into segments of 8 MiB; the whole log except an empty active segment is cleaned.

- ``time_pylog_clean``: ``LogCleaner.clean(log, force=True)``: header scan and offset map
  (one read), filter pass, writing the cleaned segments, the crash-safe swap with its
  fsyncs, the checkpoint.  Each timed call cleans a fresh copy of the dirty log.
- ``time_peer_aiokafka_dict``: what a Python program would write: decode every batch
  with aiokafka's (Cython) DefaultRecordBatch and keep ``latest[key] = (offset, value)``
  in a dict.  It only computes the survivors; it writes nothing.

Throughput is the log's bytes over the time; ``python -m benches.bench_cleaner`` prints
both and the ratio from one run.  ``PYLOG_BENCH_SMALL=1`` shrinks the sizes for the
smoke test.
"""

import os
import shutil
import tempfile
import time
import warnings

from benches._data import keys, timestamps, values

SMALL = os.environ.get("PYLOG_BENCH_SMALL", "") not in ("", "0")
RECORDS = 5_000 if SMALL else 200_000
DISTINCT_KEYS = 500 if SMALL else 10_000
RECORDS_PER_BATCH = 100
VALUE_SIZE = 100
SEGMENT_BYTES = (64 << 10) if SMALL else (8 << 20)

_CACHE = {}


def make_batches():
    """The benchmark's batches (built once per process)."""
    if "batches" not in _CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from kafka.record.default_records import DefaultRecordBatchBuilder
        ks, vs, ts = keys(RECORDS, DISTINCT_KEYS), values(RECORDS, VALUE_SIZE), timestamps(RECORDS)
        batches = []
        for start in range(0, RECORDS, RECORDS_PER_BATCH):
            b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                          producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                          batch_size=1 << 30)
            for i in range(start, min(start + RECORDS_PER_BATCH, RECORDS)):
                b.append(i - start, timestamp=ts[i], key=ks[i], value=vs[i], headers=[])
            batches.append(bytes(b.build()))
        _CACHE["batches"] = batches
    return _CACHE["batches"]


def pristine_log_dir():
    """A closed log holding the batches, every segment sealed (built once per process)."""
    if "dir" not in _CACHE:
        from pylog.storage import Log

        root = tempfile.mkdtemp(prefix="pylog-bench-cleaner-")
        path = os.path.join(root, "bench-0")
        log = Log.open(path, segment_bytes=SEGMENT_BYTES, cleanup_policy="compact")
        for b in make_batches():
            log.append(b)
        log.roll()
        log.close()
        _CACHE["dir"] = path
    return _CACHE["dir"]


def log_bytes():
    return sum(len(b) for b in make_batches())


class Compaction:
    """One timed call compacts the whole dirty log (pylog) or computes its latest value
    per key (peer)."""

    number = 1          # each call needs a fresh, dirty copy of the log
    repeat = (3, 10, 60.0)
    timeout = 600

    def setup(self):
        from pylog.storage import Log

        self.batches = make_batches()
        self.tmp = tempfile.mkdtemp(prefix="pylog-bench-")
        path = os.path.join(self.tmp, "bench-0")
        shutil.copytree(pristine_log_dir(), path)
        self.log = Log.open(path, segment_bytes=SEGMENT_BYTES, cleanup_policy="compact")

    def teardown(self):
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def time_pylog_clean(self):
        from pylog.storage.cleaner import LogCleaner

        self.stats = LogCleaner().clean(self.log, force=True)

    def time_peer_aiokafka_dict(self):
        from aiokafka.record.default_records import DefaultRecordBatch

        latest = {}
        base = 0  # the batches were built at offset 0; the log gives them consecutive offsets
        for raw in self.batches:
            n = 0
            for rec in DefaultRecordBatch(raw):
                latest[rec.key] = (base + rec.offset, rec.value)
                n += 1
            base += n
        self.latest = latest


def main():
    """Best of 7 of each, in wall-clock time (what asv measures) and in this process's CPU
    time (steadier on a shared machine; it leaves out waiting for fsync)."""
    size = log_bytes()
    wall, cpu = {}, {}
    names = ("time_pylog_clean", "time_peer_aiokafka_dict")
    for _ in range(7):
        for name in names:
            bench = Compaction()
            bench.setup()
            w0, c0 = time.perf_counter(), time.process_time()
            getattr(bench, name)()
            w, c = time.perf_counter() - w0, time.process_time() - c0
            bench.teardown()
            wall[name] = min(wall.get(name, w), w)
            cpu[name] = min(cpu.get(name, c), c)
    for name in names:
        print(f"{name}: {size / wall[name] / 1e6:8.1f} MB/s wall, {size / cpu[name] / 1e6:8.1f} MB/s CPU "
              f"({size / 1e6:.1f} MB)")
    print(f"ratio pylog / peer: {wall[names[1]] / wall[names[0]]:.2f}x wall, "
          f"{cpu[names[1]] / cpu[names[0]]:.2f}x CPU")


if __name__ == "__main__":
    main()
