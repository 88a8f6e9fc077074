"""``pylog bench produce|consume``: throughput and latency of producing and consuming,
against any Kafka bootstrap server (``pylog serve`` or Apache Kafka) or against the
embedded broker core in this process.

Produce
    Records of ``--record-size`` bytes are built into batches of ``--batch-records``
    (pylog's batch builder, one C loop per batch) and sent with up to ``--in-flight``
    requests outstanding on one connection.  A record's latency is the time from the
    moment its batch was built to the moment the broker acknowledged it.  ``--rate``
    caps records per second (for latency at a given load).
Consume
    Fetches from offset 0 (or ``--offset``) until ``--records`` records have arrived,
    counting records from the batch headers (no record is decoded unless ``--verify``).
    Latency here is per Fetch request.

A progress bar goes to stderr while running; the summary (records/s, MB/s, latency
percentiles) to stdout, or as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import deque
from typing import Any, Callable

__all__ = ["add_command", "produce_wire", "consume_wire", "produce_embedded", "consume_embedded",
           "percentiles", "BenchResult"]


class BenchResult(dict):
    """records, bytes, seconds, records_per_s, mb_per_s, latency_ms (p50/p95/p99/max)."""


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    if not samples_ms:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    s = sorted(samples_ms)

    def at(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))]

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": s[-1]}


def _result(records: int, nbytes: int, seconds: float, latencies: list[float],
            weights: list[int] | None = None) -> BenchResult:
    if weights:
        expanded = []
        for lat, w in zip(latencies, weights):
            expanded.extend([lat] * w)
        latencies = expanded
    seconds = max(seconds, 1e-9)
    return BenchResult(records=records, bytes=nbytes, seconds=seconds, records_per_s=records / seconds,
                       mb_per_s=nbytes / seconds / 1e6, latency_ms=percentiles(latencies))


class Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal, or forced)."""

    def __init__(self, total: int, label: str, enabled: bool | None = None) -> None:
        self.total = max(total, 1)
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = time.monotonic()
        self.last = 0.0

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.1 and done < self.total:
            return
        self.last = now
        frac = min(done / self.total, 1.0)
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        rate = done / max(now - self.t0, 1e-9)
        sys.stderr.write(f"\r{self.label} [{bar}] {frac * 100:5.1f}% {done:,} records {rate:,.0f}/s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _values(record_size: int, count: int) -> list[bytes]:
    import random

    rnd = random.Random(42)
    pool = [bytes(rnd.getrandbits(8) for _ in range(record_size)) for _ in range(16)]
    return [pool[i % 16] for i in range(count)]


def _batches(record_size: int, batch_records: int, compression: str) -> Callable[[int], bytes]:
    from pylog.records import RecordBatchBuilder

    values = _values(record_size, batch_records)

    def make(n: int) -> bytes:
        b = RecordBatchBuilder(compression=compression, batch_size=1 << 30)
        b.append_many(values[:n])
        return b.build()

    return make


def produce_wire(bootstrap: str, topic: str, records: int, *, record_size: int = 100,
                 batch_records: int = 5000, in_flight: int = 5, acks: int = 1, compression: str = "none",
                 partitions: int = 1, rate: float | None = None, progress: bool | None = None) -> BenchResult:
    """Produce ``records`` records to ``topic`` over the Kafka protocol."""
    from pylog.errors import TopicAlreadyExistsError
    from pylog.protocol import messages as m
    from pylog.server.wire_client import WireClient, raise_for_code

    client = WireClient(bootstrap, client_id="pylog-bench")
    try:
        try:
            client.create_topic(topic, partitions)
        except TopicAlreadyExistsError:
            pass
        leaders = client.partitions(topic)
        conn = client.node(leaders[0])
        # Round-robin over the partitions led by the same broker as partition 0.
        targets = sorted(p for p, node in leaders.items() if node == leaders[0])
        make = _batches(record_size, batch_records, compression)
        full = make(batch_records)
        T = m.ProduceRequest
        pending: deque = deque()
        latencies: list[float] = []
        weights: list[int] = []
        sent = acked = 0
        partition = 0
        bar = Progress(records, "produce", progress)
        t0 = time.perf_counter()

        def complete_one() -> None:
            nonlocal acked
            handle, started, n = pending.popleft()
            resp = conn.receive(handle)
            p = resp.responses[0].partition_responses[0]
            raise_for_code(p.error_code, p.error_message, "produce")
            latencies.append((time.perf_counter() - started) * 1000)
            weights.append(n)
            acked += n
            bar.update(acked)

        while sent < records:
            n = min(batch_records, records - sent)
            if rate:
                due = t0 + sent / rate
                while True:
                    now = time.perf_counter()
                    if now >= due:
                        break
                    if pending:
                        complete_one()
                    else:
                        time.sleep(min(due - now, 0.01))
            started = time.perf_counter()
            batch = full if n == batch_records else make(n)
            body = T(acks=acks, timeout_ms=30000, topic_data=[T.TopicProduceData(name=topic, partition_data=[
                T.PartitionProduceData(index=partition, records=batch)])])
            if acks == 0:
                conn.send(0, body)
                acked += n
            else:
                pending.append((conn.send_request(0, body), started, n))
            sent += n
            partition = targets[(targets.index(partition) + 1) % len(targets)]
            while len(pending) >= in_flight:
                complete_one()
        while pending:
            complete_one()
        elapsed = time.perf_counter() - t0
        bar.close()
        return _result(records, records * record_size, elapsed, latencies, weights)
    finally:
        client.close()


def consume_wire(bootstrap: str, topic: str, records: int, *, offset: int = 0, max_bytes: int = 8 << 20,
                 verify: bool = False, progress: bool | None = None) -> BenchResult:
    """Fetch ``records`` records of partition 0 of ``topic`` from ``offset``."""
    from pylog.records import iter_batches
    from pylog.server.wire_client import WireClient, fetch_on, raise_for_code

    client = WireClient(bootstrap, client_id="pylog-bench")
    try:
        conn = client.leader(topic, 0)
        got = nbytes = 0
        position = offset
        latencies: list[float] = []
        bar = Progress(records, "consume", progress)
        t0 = time.perf_counter()
        while got < records:
            started = time.perf_counter()
            pd = fetch_on(conn, [(topic, 0, position)], max_bytes=max_bytes, partition_max_bytes=max_bytes,
                          max_wait_ms=500)[(topic, 0)]
            latencies.append((time.perf_counter() - started) * 1000)
            raise_for_code(pd.error_code, None, "fetch")
            data = pd.records
            if not data:
                if pd.high_watermark <= position:
                    raise SystemExit(f"pylog bench: {topic}-0 ends at offset {pd.high_watermark}, "
                                     f"before {records} records were read")
                continue
            nbytes += len(data)
            for b in iter_batches(memoryview(data), check_crc=verify):
                if b.last_offset < position:
                    continue
                if verify:
                    n = sum(1 for r in b if r.offset >= position)
                else:
                    n = b.last_offset + 1 - max(position, b.base_offset)
                got += n
                position = b.last_offset + 1
            bar.update(got)
        elapsed = time.perf_counter() - t0
        bar.close()
        return _result(got, nbytes, elapsed, latencies)
    finally:
        client.close()


def produce_embedded(data_dir: str, topic: str, records: int, *, record_size: int = 100,
                     batch_records: int = 5000, compression: str = "none",
                     progress: bool | None = None) -> BenchResult:
    """Produce into a broker core opened in this process (no network)."""
    from pylog.broker.core import Broker

    with Broker(data_dir, background=False) as broker:
        if not broker.has_topic(topic):
            broker.create_topic(topic, 1)
        make = _batches(record_size, batch_records, compression)
        full = make(batch_records)
        latencies: list[float] = []
        weights: list[int] = []
        sent = 0
        bar = Progress(records, "produce", progress)
        t0 = time.perf_counter()
        while sent < records:
            n = min(batch_records, records - sent)
            started = time.perf_counter()
            res = broker.produce(topic, 0, full if n == batch_records else make(n), acks=1)
            res.raise_for_error()
            latencies.append((time.perf_counter() - started) * 1000)
            weights.append(n)
            sent += n
            bar.update(sent)
        elapsed = time.perf_counter() - t0
        bar.close()
        return _result(records, records * record_size, elapsed, latencies, weights)


def consume_embedded(data_dir: str, topic: str, records: int, *, max_bytes: int = 8 << 20,
                     progress: bool | None = None) -> BenchResult:
    """Read ``records`` records of partition 0 from a broker core opened in this process."""
    from pylog.broker.core import Broker
    from pylog.records import iter_batches

    with Broker(data_dir, background=False) as broker:
        position = got = nbytes = 0
        latencies: list[float] = []
        bar = Progress(records, "consume", progress)
        t0 = time.perf_counter()
        while got < records:
            started = time.perf_counter()
            res = broker.fetch(topic, 0, position, max_bytes)
            res.raise_for_error()
            rr = res.records
            if rr is None or rr.size == 0:
                raise SystemExit(f"pylog bench: {topic}-0 ends at offset {position}")
            nbytes += rr.size
            # A consumer checks CRCs (check.crcs): that is the work of reading here.
            for b in iter_batches(rr.records, check_crc=True):
                if b.last_offset >= position:
                    got += b.last_offset + 1 - max(position, b.base_offset)
                    position = b.last_offset + 1
            del b, rr   # the batch views hold the mapping until dropped
            latencies.append((time.perf_counter() - started) * 1000)
            bar.update(got)
        elapsed = time.perf_counter() - t0
        bar.close()
        return _result(got, nbytes, elapsed, latencies)


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------


def add_command(sub: Any) -> None:
    p = sub.add_parser("bench", help="measure produce/consume throughput and latency",
                       description="Benchmark producing or consuming against --bootstrap-server (the Kafka "
                                   "protocol) or --embedded DATA_DIR (the broker core in this process).")
    bsub = p.add_subparsers(dest="what", required=True)
    for name in ("produce", "consume"):
        b = bsub.add_parser(name)
        where = b.add_mutually_exclusive_group()
        where.add_argument("--bootstrap-server", default="127.0.0.1:9092")
        where.add_argument("--embedded", metavar="DATA_DIR", nargs="?", const="",
                           help="the embedded engine over DATA_DIR (default: a temporary directory)")
        b.add_argument("--topic", default="pylog-bench")
        b.add_argument("--records", type=int, default=1_000_000)
        b.add_argument("--json", action="store_true", help="print the result as JSON")
        b.add_argument("--no-progress", action="store_true")
        if name == "produce":
            b.add_argument("--record-size", type=int, default=100)
            b.add_argument("--batch-records", type=int, default=5000)
            b.add_argument("--in-flight", type=int, default=5)
            b.add_argument("--acks", type=int, choices=(-1, 0, 1), default=1)
            b.add_argument("--compression", choices=("none", "gzip", "snappy", "lz4", "zstd"), default="none")
            b.add_argument("--partitions", type=int, default=1, help="of the topic, if it is created")
            b.add_argument("--rate", type=float, help="records per second (default: as fast as possible)")
        else:
            b.add_argument("--offset", type=int, default=0)
            b.add_argument("--max-bytes", type=int, default=8 << 20)
            b.add_argument("--verify", action="store_true", help="check CRCs and decode every record")
        b.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from pylog.errors import PylogError

    progress = False if args.no_progress else None
    temp = None
    try:
        if args.embedded is not None:
            data_dir = args.embedded
            if not data_dir:
                temp = tempfile.TemporaryDirectory(prefix="pylog-bench-")
                data_dir = temp.name
                if args.what == "consume":
                    produce_embedded(data_dir, args.topic, args.records, progress=False)
            if args.what == "produce":
                res = produce_embedded(data_dir, args.topic, args.records, record_size=args.record_size,
                                       batch_records=args.batch_records, compression=args.compression,
                                       progress=progress)
            else:
                res = consume_embedded(data_dir, args.topic, args.records, max_bytes=args.max_bytes,
                                       progress=progress)
        elif args.what == "produce":
            res = produce_wire(args.bootstrap_server, args.topic, args.records, record_size=args.record_size,
                               batch_records=args.batch_records, in_flight=args.in_flight, acks=args.acks,
                               compression=args.compression, partitions=args.partitions, rate=args.rate,
                               progress=progress)
        else:
            res = consume_wire(args.bootstrap_server, args.topic, args.records, offset=args.offset,
                               max_bytes=args.max_bytes, verify=args.verify, progress=progress)
    except PylogError as exc:
        print(f"pylog bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if temp is not None:
            temp.cleanup()
    if args.json:
        print(json.dumps(res))
    else:
        lat = res["latency_ms"]
        print(f"{args.what}: {res['records']:,} records in {res['seconds']:.2f} s: "
              f"{res['records_per_s']:,.0f} records/s, {res['mb_per_s']:.1f} MB/s; latency ms "
              f"p50 {lat['p50']:.2f} p95 {lat['p95']:.2f} p99 {lat['p99']:.2f} max {lat['max']:.2f}")
    return 0

