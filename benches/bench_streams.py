"""pylog.streams per-record throughput: a stateless filter + map_values and a windowed
count, over 100-byte values with bytes serdes (no JSON), driven straight into a
stream task (the path the runtime's poll loop takes) and through the
TopologyTestDriver, and end to end through the StreamsApp runtime on ``pylog.open``
(consumer, task, producer).

Targets (issue #15): stateless >= 1M records/s embedded end to end; windowed count with
the persistent store >= 300k records/s.  These benchmarks time the processing side
alone (no consumer, no producer): ``track_*_records_per_s`` reports records/s.
``WindowedCountBatches`` runs the windowed count the runtime's way (polled batches
through the fused loop, a commit every ``COMMIT_EVERY`` records) over the in-memory
and the persistent (RocksDB) store side by side.
``PYLOG_BENCH_SMALL=1`` shrinks them for the smoke test; ``python -m
benches.bench_streams`` prints the numbers without asv.
"""

from __future__ import annotations

import os
import time

from benches._data import keys, timestamps, values
from pylog.streams import Serdes, StreamsBuilder, TimeWindows, TopologyTestDriver
from pylog.streams.task import StreamTask

SMALL = os.environ.get("PYLOG_BENCH_SMALL", "") not in ("", "0")
N = 2_000 if SMALL else 200_000


class _Counter:
    """A record collector that only counts (the producer's place in the runtime)."""

    def __init__(self) -> None:
        self.n = 0

    def send(self, topic, key, value, timestamp, headers, partitioner, partition) -> None:
        self.n += 1

    def send_many(self, topic, keys, values, timestamps, partitioner) -> None:
        self.n += len(timestamps)


def stateless_topology():
    b = StreamsBuilder()
    (b.stream("in", key_serde=Serdes.bytes(), value_serde=Serdes.bytes())
     .filter(lambda k, v: v[0] != 0)
     .map_values(lambda v: v[:50])
     .to("out"))
    return b.build()


def windowed_topology(store_type: str = "in_memory", window_ms: int = 60_000):
    from pylog.streams import Materialized

    b = StreamsBuilder()
    (b.stream("in", key_serde=Serdes.bytes(), value_serde=Serdes.bytes())
     .group_by_key()
     .windowed_by(TimeWindows.of_size_with_no_grace(window_ms))
     .count(materialized=Materialized("counts", store_type=store_type))
     .to_stream()
     .to("out", key_serde=None, value_serde=Serdes.long()))
    return b.build()


def make_task(topology, state_dir: str = ""):
    collector = _Counter()
    task = StreamTask(topology, topology.nodes, application_id="bench", task_id="0_0", config={},
                      collector=collector, state_dir=state_dir)
    return task, collector


class _Records:
    """N deterministic records (key, 100-byte value, timestamp) and a records/s helper."""

    timeout = 300

    def setup(self):
        self.vals = values(N)
        self.keys = keys(N)
        self.ts = timestamps(N)

    @staticmethod
    def _rate(run) -> float:
        t0 = time.perf_counter()
        run()
        return N / (time.perf_counter() - t0)


class Stateless(_Records):
    """filter + map_values + sink into the task: one record at a time (the
    TopologyTestDriver's path), and a polled batch at a time (the runtime's: one fused
    loop per batch of ``BATCH`` records)."""

    BATCH = 500

    def _run_task(self):
        task, collector = make_task(stateless_topology())
        process = task.process
        for k, v, t in zip(self.keys, self.vals, self.ts):
            process("in", k, v, t)
        task.close()
        return collector.n

    def _run_task_batches(self):
        import numpy as np

        task, collector = make_task(stateless_topology())
        offsets = np.arange(N, dtype=np.int64)
        for start in range(0, N, self.BATCH):
            stop = start + self.BATCH
            task.process_batch("in", self.keys[start:stop], self.vals[start:stop], self.ts[start:stop],
                               offsets[start:stop])
        task.close()
        return collector.n

    def _run_driver(self):
        driver = TopologyTestDriver(stateless_topology(), {"application.id": "bench"})
        pipe = driver.pipe_raw
        for k, v, t in zip(self.keys, self.vals, self.ts):
            pipe("in", k, v, t)
        driver.close()

    def time_task(self):
        self._run_task()

    def time_test_driver(self):
        self._run_driver()

    def time_task_batches(self):
        self._run_task_batches()

    def track_task_batches_records_per_s(self):
        return self._rate(self._run_task_batches)

    def track_task_records_per_s(self):
        return self._rate(self._run_task)

    def track_test_driver_records_per_s(self):
        return self._rate(self._run_driver)

    track_task_records_per_s.unit = "records/s"
    track_test_driver_records_per_s.unit = "records/s"
    track_task_batches_records_per_s.unit = "records/s"


class WindowedCount(_Records):
    """group_by_key + 1-minute tumbling windows + count, in-memory window store."""

    def _run(self):
        task, collector = make_task(windowed_topology())
        process = task.process
        for k, v, t in zip(self.keys, self.vals, self.ts):
            process("in", k, v, t)
        task.close()
        return collector.n

    def time_task(self):
        self._run()

    def track_task_records_per_s(self):
        return self._rate(self._run)

    track_task_records_per_s.unit = "records/s"


class WindowedCountBatches(_Records):
    """The windowed count as the runtime runs it: polled batches of ``BATCH`` records
    through the task's fused loop, a commit (store flush) every ``COMMIT_EVERY``
    records, with the in-memory and the persistent (RocksDB) store; 1-minute and
    1-second tumbling windows (1 s: the peers bench's job, nearly every record opens a
    window of its key)."""

    BATCH = 500
    COMMIT_EVERY = 20_000
    params = (["in_memory", "persistent"], [60_000, 1_000])
    param_names = ["store", "window_ms"]

    def setup(self, store="in_memory", window_ms=60_000):
        import tempfile

        import numpy as np
        super().setup()
        self.offsets = np.arange(N, dtype=np.int64)
        self.dir = tempfile.mkdtemp(prefix="bench-streams-windowed-")

    def teardown(self, store="in_memory", window_ms=60_000):
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self, store="in_memory", window_ms=60_000):
        import tempfile
        task, collector = make_task(windowed_topology(store, window_ms), tempfile.mkdtemp(dir=self.dir))
        for start in range(0, N, self.BATCH):
            stop = start + self.BATCH
            task.process_batch("in", self.keys[start:stop], self.vals[start:stop], self.ts[start:stop],
                               self.offsets[start:stop])
            if stop % self.COMMIT_EVERY == 0:
                task.flush()
        task.flush()
        task.close()
        return collector.n

    def time_task_batches(self, store, window_ms):
        self._run(store, window_ms)

    def track_task_batches_records_per_s(self, store, window_ms):
        return self._rate(lambda: self._run(store, window_ms))

    track_task_batches_records_per_s.unit = "records/s"


class EmbeddedRuntime(_Records):
    """The stateless job end to end on ``pylog.open``: a StreamsApp consumes N records
    from a 4-partition topic, filters and maps them, and produces the survivors (one
    run until idle per timed call, from the group's start).  The rate leaves out the
    idle polls that end a run (``IDLE_POLLS`` x ``POLL_MS``: waiting, not work)."""

    IDLE_POLLS = 2
    POLL_MS = 50

    timeout = 600
    number = 1
    repeat = 3

    def setup(self):
        import tempfile
        super().setup()

        import pylog
        self.dir = tempfile.mkdtemp(prefix="bench-streams-")
        self.client = pylog.open(self.dir)
        self.client.create_topic("in", 4)
        self.client.create_topic("out", 4)
        p = self.client.producer(linger_ms=5)
        for k, v in zip(self.keys, self.vals):
            p.send("in", key=k, value=v)
        p.flush()
        p.close()
        self.runs = 0

    def teardown(self):
        import shutil
        self.client.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self):
        self.runs += 1
        b = StreamsBuilder()
        (b.stream("in", key_serde=Serdes.bytes(), value_serde=Serdes.bytes())
         .filter(lambda k, v: v[0] != 0)
         .map_values(lambda v: v[:50])
         .to("out"))
        b.build(application_id=f"bench-{self.runs}", config={"commit.interval.ms": 1000}).run(
            self.client, until_idle=True, idle_polls=self.IDLE_POLLS, poll_timeout_ms=self.POLL_MS)

    def time_run(self):
        self._run()

    def track_records_per_s(self):
        t0 = time.perf_counter()
        self._run()
        return N / (time.perf_counter() - t0 - self.IDLE_POLLS * self.POLL_MS / 1000)

    track_records_per_s.unit = "records/s"


if __name__ == "__main__":  # pragma: no cover - a manual report
    s = Stateless()
    s.setup()
    print(f"stateless filter+map_values, task:   {s.track_task_records_per_s():,.0f} records/s")
    print(f"stateless filter+map_values, driver: {s.track_test_driver_records_per_s():,.0f} records/s")
    print(f"stateless, task, batches of {s.BATCH}:  {s.track_task_batches_records_per_s():,.0f} records/s")
    w = WindowedCount()
    w.setup()
    print(f"windowed count (in-memory), task:    {w.track_task_records_per_s():,.0f} records/s")
    wb = WindowedCountBatches()
    for store in ("in_memory", "persistent"):
        for window_ms in WindowedCountBatches.params[1]:
            wb.setup(store, window_ms)
            try:
                rate = wb.track_task_batches_records_per_s(store, window_ms)
            finally:
                wb.teardown(store, window_ms)
            print(f"windowed count ({store}, {window_ms} ms windows), task, batches of {wb.BATCH}: "
                  f"{rate:,.0f} records/s")
    e = EmbeddedRuntime()
    e.setup()
    try:
        print(f"stateless, StreamsApp on pylog.open: {e.track_records_per_s():,.0f} records/s (end to end)")
    finally:
        e.teardown()
