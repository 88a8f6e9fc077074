"""Opening and closing a broker's data directory by partition count (issue #17, and the
controlled-shutdown target of #13).

Each data directory holds one topic of N partitions with one small batch each, written by
pylog's (idempotent) producer, so every partition has a producer snapshot, a leader epoch
checkpoint and indexes: what a real broker's partitions hold.

- ``OpenClose.time_open_clean``: ``Broker(data_dir)`` after a clean shutdown (the
  clean-shutdown marker and checkpoints present).  Kafka's log loading after a clean
  shutdown does no per-partition recovery; pylog's target: 1000 partitions listening
  within 100 ms of an empty directory (benches/bench_scale.py ``OpenTime`` measures the
  listen itself).
- ``OpenClose.time_open_clean_until_served``: the same until ``Broker(data_dir)``
  returns, its deferred loads still going on in the loader thread.
- ``OpenClose.time_open_unclean``: the same after the marker is removed (a crash): every
  partition's tail is recovered, which the open may not skip.
- ``OpenClose.time_close_untouched``: ``Broker.close`` right after an open (nothing
  changed: nothing to write).
- ``OpenClose.time_close_touched``: ``Broker.close`` after one record was appended to
  every partition (every snapshot, index and checkpoint has something to write).  Goal:
  1000 partitions in well under a second of I/O on a quiet disk.

The open benchmarks include waiting for the partitions' deferred loading to finish
(:meth:`Broker.wait_loaded`), so they compare whole work, not
only the part before the broker answers.  ``PYLOG_BENCH_SMALL=1`` runs 10 partitions
only (the smoke test).  ``python -m benches.bench_open_close`` prints every figure.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

SMALL = os.environ.get("PYLOG_BENCH_SMALL", "") not in ("", "0")
COUNTS = [10] if SMALL else [10, 100, 1000]
RECORD = b"x" * 100
TOPIC = "wide"


def make_data_dir(path: str, partitions: int) -> None:
    """A cleanly closed data directory of one topic with one idempotent batch per partition."""
    import pylog

    with pylog.open(path, background=False) as client:
        client.create_topic(TOPIC, partitions)
        with client.producer(linger_ms=0) as p:
            for i in range(partitions):
                p.send(TOPIC, RECORD, partition=i)
            p.flush()


def open_client(path: str, wait: bool = True):
    """``pylog.open(path)``, its partitions' deferred loading finished unless not ``wait``."""
    import pylog

    client = pylog.open(path, background=False)
    wait_loaded = getattr(client.broker, "wait_loaded", None)
    if wait and wait_loaded is not None:
        wait_loaded()
    return client


def touch_every_partition(client, partitions: int) -> None:
    """One idempotent record into every partition (a producer state to snapshot)."""
    with client.producer(linger_ms=0) as p:
        for i in range(partitions):
            p.send(TOPIC, RECORD, partition=i)
        p.flush()


class _DataDir:
    """One timed call per figure on a copy of a prepared data directory."""

    params = COUNTS
    param_names = ["partitions"]
    timeout = 1200
    number = 1
    repeat = 3
    warmup_time = 0

    def setup_cache(self) -> str:
        root = tempfile.mkdtemp(prefix="pylog-bench-openclose-")
        for n in COUNTS:
            make_data_dir(os.path.join(root, str(n)), n)
        return root

    def setup(self, root: str, partitions: int) -> None:
        self.tmp = tempfile.mkdtemp(prefix="pylog-bench-openclose-run-")
        self.path = os.path.join(self.tmp, "data")
        shutil.copytree(os.path.join(root, str(partitions)), self.path)
        self.client = None

    def teardown(self, root: str, partitions: int) -> None:
        if self.client is not None:
            self.client.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class OpenClose(_DataDir):
    def time_open_clean(self, root: str, partitions: int) -> None:
        self.client = open_client(self.path)

    def time_open_clean_until_served(self, root: str, partitions: int) -> None:
        # Until the broker answers (what delays `pylog serve`'s listen); the deferred
        # loads go on in the loader thread.
        self.client = open_client(self.path, wait=False)

    def time_open_unclean(self, root: str, partitions: int) -> None:
        # Set up inside the timed call's data dir copy: no marker means a crash.
        os.unlink(os.path.join(self.path, ".kafka_cleanshutdown"))
        self.client = open_client(self.path)


class Close(_DataDir):
    def setup(self, root: str, partitions: int) -> None:
        super().setup(root, partitions)
        self.client = open_client(self.path)

    def time_close_untouched(self, root: str, partitions: int) -> None:
        self.client.close()


class CloseTouched(_DataDir):
    def setup(self, root: str, partitions: int) -> None:
        super().setup(root, partitions)
        self.client = open_client(self.path)
        touch_every_partition(self.client, partitions)

    def time_close_touched(self, root: str, partitions: int) -> None:
        self.client.close()


def measure(partitions: int) -> dict[str, float]:
    """ms of each figure for ``partitions`` partitions (one run each)."""
    root = tempfile.mkdtemp(prefix="pylog-bench-openclose-")
    out = {}
    try:
        src = os.path.join(root, "src")
        make_data_dir(src, partitions)
        for name, unclean, touch in (("open_clean", False, False), ("open_clean_until_served", False, False),
                                     ("open_unclean", True, False),
                                     ("close_untouched", False, False), ("close_touched", False, True)):
            path = os.path.join(root, name)
            shutil.copytree(src, path)
            if unclean:
                os.unlink(os.path.join(path, ".kafka_cleanshutdown"))
            t0 = time.perf_counter()
            client = open_client(path, wait=name != "open_clean_until_served")
            t_open = time.perf_counter() - t0
            if touch:
                touch_every_partition(client, partitions)
            t0 = time.perf_counter()
            client.close()
            t_close = time.perf_counter() - t0
            out[name] = round((t_close if name.startswith("close") else t_open) * 1000, 1)
            shutil.rmtree(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or COUNTS:
        print(f"{n:5d} partitions:", measure(n))
