"""``suppress`` per record with many windows buffered (pylog.streams' Kafka-style
time-ordered buffer: a dict and a heap, O(log n) per record).

``Suppress.time_process``: RECORDS records of new keys through a TopologyTestDriver
running ``windowed_by(TimeWindows).count().suppress(until_window_closes())`` whose
buffer already holds ``buffered`` windows that never close (one huge window); the
records per second should not fall with ``buffered`` (it fell about 6x from 2,000 to
8,000 buffered windows with the buffer's former min() per record).
``PYLOG_BENCH_SMALL=1`` runs a small size, for the smoke test.
"""

from __future__ import annotations

import os
import time

from pylog.streams import Serdes, StreamsBuilder, Suppressed, TimeWindows, TopologyTestDriver, WindowedSerdes

SMALL = os.environ.get("PYLOG_BENCH_SMALL", "") not in ("", "0")
RECORDS = 500 if SMALL else 5_000
S = Serdes.string()
CFG = {"application.id": "bench", "default.key.serde": S, "default.value.serde": S}
SIZE = 10 ** 12


class Suppress:
    params = [[100]] if SMALL else [[1_000, 10_000, 50_000]]
    param_names = ["buffered"]
    timeout = 600

    def setup(self, buffered: int) -> None:
        b = StreamsBuilder(CFG)
        (b.stream("in").group_by_key().windowed_by(TimeWindows.of_size_and_grace(SIZE, 0)).count()
         .suppress(Suppressed.until_window_closes()).to_stream()
         .to("out", key_serde=WindowedSerdes.time_windowed(S, SIZE), value_serde=Serdes.long()))
        self.driver = TopologyTestDriver(b.build(), CFG, initial_wall_clock_time_ms=0)
        self.input = self.driver.create_input_topic("in", S, S)
        for k in range(buffered):
            self.input.pipe_input(f"old{k}", "v", k)
        self.next = buffered

    def teardown(self, buffered: int) -> None:
        self.driver.close()

    def _run(self) -> int:
        start = self.next
        for k in range(start, start + RECORDS):
            self.input.pipe_input(f"new{k}", "v", k)
        self.next += RECORDS
        return len(self.driver.create_output_topic("out").read_records_to_list())

    def time_process(self, buffered: int) -> None:
        self._run()

    def track_records_per_s(self, buffered: int) -> float:
        t0 = time.perf_counter()
        self._run()
        return RECORDS / (time.perf_counter() - t0)

    track_records_per_s.unit = "records/s"  # type: ignore[attr-defined]
