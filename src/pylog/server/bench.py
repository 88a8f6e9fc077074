"""``pylog bench produce|consume``: throughput and latency of pylog's client producing
and consuming, against any Kafka bootstrap server (``pylog serve``, a pylog cluster or
Apache Kafka), or of the embedded broker core in this process (``--embedded``).

Over the network the benchmark measures pylog's own client, ``pylog.connect``: what an
application using pylog sees, client and broker together.

Produce
    A :class:`~pylog.client.producer.Producer` (``--acks``, ``--compression``,
    ``--in-flight`` as ``max_in_flight``) gets ``--batch-records`` values of
    ``--record-size`` bytes per ``send_batch`` call (the columnar path: batches are
    built in C), round-robin over the topic's partitions.  A record's latency is the
    time from its ``send_batch`` call to its acknowledgement.  ``--rate`` caps records
    per second (for latency at a given load).
Consume
    A :class:`~pylog.client.consumer.Consumer` assigned partition 0 polls from offset 0
    (or ``--offset``) until ``--records`` records have arrived, each decoded into a
    ConsumerRecord (CRCs checked only with ``--verify``); MB/s counts keys and values.
    Latency here is per ``poll``.
Embedded
    The broker core's ``produce``/``fetch`` calls on whole batches, no client and no
    network: the floor the client is measured against.

Side by side with Apache Kafka (``--compare-kafka``)
    The same workload against pylog (``--bootstrap-server``, or a ``pylog serve`` this
    command starts over a temporary directory) and against Apache Kafka
    (``--kafka-bootstrap``, or a single-node KRaft broker this command starts from
    ``--kafka-classpath`` or the jars Maven resolves; see :mod:`pylog.server.kafka_peer`):
    one warm-up run on each, then ``--rounds`` runs alternating which goes first (a server
    started here runs at ``SCHED_IDLE`` while the other is measured); the
    medians side by side with the ratio pylog/Kafka, plus, for a server started here, its
    CPU per MB, RSS and time from process start to the first answered request.  No Kafka
    to be had is a usage error (exit 2) saying what to pass.

Progress goes to stderr while running: a tqdm bar on a terminal, else (piped, as in CI)
one line every ``--reporting-interval`` ms, as Kafka's perf tools print; the summary
(records/s, MB/s, latency percentiles from numpy) to stdout, or as JSON with ``--json``.

tqdm draws the bar (well kept, no dependencies of its own, and it only draws when asked
to, so the tools' plain-text output stays plain); numpy computes the percentiles.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Any, Callable

__all__ = ["add_command", "produce_wire", "consume_wire", "produce_embedded", "consume_embedded",
           "percentiles", "BenchResult"]


class BenchError(Exception):
    """The benchmark cannot go on (the log ends before ``records``): one line, exit 1."""


class BenchResult(dict):
    """records, bytes, seconds, records_per_s, mb_per_s, latency_ms (p50/p95/p99/max)."""


def percentiles(samples_ms: Any, weights: Any = None) -> dict[str, float]:
    """p50/p95/p99/max of ``samples_ms``; with ``weights``, sample i counts weights[i]
    times (a batch's latency is every record's in it).  The "higher" method: a
    percentile is always a latency that was measured, as Kafka's perf tools report."""
    import numpy as np

    a = np.asarray(samples_ms, dtype=np.float64)
    if weights is not None:
        a = np.repeat(a, np.asarray(weights, dtype=np.int64))
    if a.size == 0:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    p50, p95, p99 = np.percentile(a, [50, 95, 99], method="higher")
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(a.max())}


def _result(records: int, nbytes: int, seconds: float, latencies: list[float],
            weights: list[int] | None = None) -> BenchResult:
    seconds = max(seconds, 1e-9)
    return BenchResult(records=records, bytes=nbytes, seconds=seconds, records_per_s=records / seconds,
                       mb_per_s=nbytes / seconds / 1e6, latency_ms=percentiles(latencies, weights or None))


class Progress:
    """Progress on stderr: a tqdm bar when stderr is a terminal; otherwise one line every
    ``interval_ms`` (records so far, records/s, MB/s), as Kafka's perf tools print when
    piped.  ``enabled=False`` prints nothing."""

    def __init__(self, total: int, label: str, enabled: bool | None = None, *,
                 record_size: int = 0, interval_ms: int = 5000) -> None:
        self.total = max(total, 1)
        self.label = label
        self.enabled = enabled is not False
        self.record_size = record_size
        self.interval = interval_ms / 1000
        self.t0 = self.last = time.monotonic()
        self.last_done = 0
        self.bar: Any = None
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=label, unit=" records", unit_scale=True,
                            file=sys.stderr, leave=True, dynamic_ncols=True)

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        done = min(done, self.total)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            return
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        rate = (done - self.last_done) / max(now - self.last, 1e-9)
        mb = f" ({rate * self.record_size / 1e6:.1f} MB/sec)" if self.record_size else ""
        print(f"{self.label}: {done:,} of {self.total:,} records, {rate:,.1f} records/sec{mb}",
              file=sys.stderr, flush=True)
        self.last, self.last_done = now, done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _values(record_size: int, count: int) -> list[bytes]:
    import random

    rnd = random.Random(42)
    pool = [rnd.randbytes(record_size) for _ in range(16)]
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
                 partitions: int = 1, rate: float | None = None, progress: bool | None = None,
                 timeout: float = 30.0, reporting_interval_ms: int = 5000) -> BenchResult:
    """Produce ``records`` records to ``topic`` with pylog's client (``pylog.connect``)."""
    import threading

    from pylog.errors import TopicAlreadyExistsError
    from pylog.server.tools import connect

    client = connect(bootstrap, timeout, "pylog-bench")
    try:
        try:
            client.create_topic(topic, partitions)
        except TopicAlreadyExistsError:
            pass
        count = client.num_partitions(topic)
        batch_bytes = batch_records * (record_size + 32)
        timeout_ms = max(1, int(timeout * 1000))
        producer = client.producer(acks=acks, compression_type=compression, max_in_flight=in_flight,
                                   batch_size=min(max(batch_bytes, 16384), 1 << 20), linger_ms=0,
                                   buffer_memory=max(32 << 20, 2 * batch_bytes), client_id="pylog-bench",
                                   request_timeout_ms=timeout_ms, delivery_timeout_ms=timeout_ms,
                                   max_block_ms=timeout_ms)
        values = _values(record_size, batch_records)
        latencies: list[float] = []
        weights: list[int] = []
        failures: list[BaseException] = []
        done = threading.Condition()
        sent = 0
        acked = [0]
        bar = Progress(records, "produce", progress, record_size=record_size,
                       interval_ms=reporting_interval_ms)

        def track(future: Any, started: float, n: int) -> None:
            def on_done(f: Any) -> None:             # on the producer's sender thread
                exc = f.exception()
                with done:
                    if exc is not None:
                        failures.append(exc)
                    else:
                        acked[0] += n
                    latencies.append((time.perf_counter() - started) * 1000)
                    weights.append(n)
                    done.notify_all()
            future.add_done_callback(on_done)

        t0 = time.perf_counter()
        calls = 0
        while sent < records and not failures:
            n = min(batch_records, records - sent)
            if rate:
                due = t0 + sent / rate
                while (now := time.perf_counter()) < due:
                    time.sleep(min(due - now, 0.01))
            started = time.perf_counter()
            track(producer.send_batch(topic, values if n == batch_records else values[:n],
                                      partition=calls % count), started, n)
            calls += 1
            sent += n
            bar.update(acked[0])
        producer.flush()
        with done:
            done.wait_for(lambda: len(weights) == calls or bool(failures), timeout)
        elapsed = time.perf_counter() - t0
        bar.update(acked[0])
        bar.close()
        producer.close()
        if failures:
            raise failures[0]
        return _result(records, records * record_size, elapsed, latencies, weights)
    finally:
        client.close()


def consume_wire(bootstrap: str, topic: str, records: int, *, offset: int = 0, max_bytes: int = 8 << 20,
                 verify: bool = False, progress: bool | None = None, timeout: float = 30.0,
                 reporting_interval_ms: int = 5000) -> BenchResult:
    """Read ``records`` records of partition 0 of ``topic`` from ``offset`` with pylog's
    client (``pylog.connect``).  The result counts exactly ``records``."""
    from pylog.server.tools import connect

    client = connect(bootstrap, timeout, "pylog-bench")
    try:
        end = client.high_watermark(topic, 0)
        if end - offset < records:
            raise BenchError(f"{topic}-0 ends at offset {end}, before {records} records were read")
        consumer = client.consumer(client_id="pylog-bench", enable_auto_commit=False, auto_offset_reset="none",
                                   check_crcs=verify, max_partition_fetch_bytes=max_bytes,
                                   fetch_max_bytes=max_bytes, max_poll_records=max(500, min(records, 100_000)))
        consumer.assign([(topic, 0)])
        consumer.seek((topic, 0), offset)
        got = nbytes = 0
        latencies: list[float] = []
        bar = Progress(records, "consume", progress, interval_ms=reporting_interval_ms)
        t0 = last_data = time.perf_counter()
        while got < records:
            started = time.perf_counter()
            batch = consumer.poll(timeout_ms=500, max_records=records - got)
            now = time.perf_counter()
            latencies.append((now - started) * 1000)
            if not batch:
                if now - last_data > timeout:
                    raise BenchError(f"no record of {topic}-0 arrived for {timeout:g} s, after {got} "
                                     f"of {records} records")
                continue
            last_data = now
            got += len(batch)
            nbytes += sum(max(r.serialized_key_size, 0) + max(r.serialized_value_size, 0) for r in batch)
            bar.update(got)
        elapsed = time.perf_counter() - t0
        bar.close()
        consumer.close()
        return _result(got, nbytes, elapsed, latencies)
    finally:
        client.close()


def produce_embedded(data_dir: str, topic: str, records: int, *, record_size: int = 100,
                     batch_records: int = 5000, compression: str = "none",
                     progress: bool | None = None, reporting_interval_ms: int = 5000) -> BenchResult:
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
        bar = Progress(records, "produce", progress, record_size=record_size,
                       interval_ms=reporting_interval_ms)
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
                     progress: bool | None = None, reporting_interval_ms: int = 5000) -> BenchResult:
    """Read ``records`` records of partition 0 from a broker core opened in this process."""
    from pylog.broker.core import Broker
    from pylog.records import iter_batches

    with Broker(data_dir, background=False) as broker:
        position = got = nbytes = 0
        latencies: list[float] = []
        bar = Progress(records, "consume", progress, interval_ms=reporting_interval_ms)
        t0 = time.perf_counter()
        while got < records:
            started = time.perf_counter()
            res = broker.fetch(topic, 0, position, max_bytes)
            res.raise_for_error()
            rr = res.records
            if rr is None or rr.size == 0:
                raise BenchError(f"{topic}-0 ends at offset {position}, before {records} records were read")
            nbytes += rr.size
            # A consumer checks CRCs (check.crcs): that is the work of reading here.
            for b in iter_batches(rr.records, check_crc=True):
                if b.last_offset >= position:
                    got += min(b.last_offset + 1 - max(position, b.base_offset), records - got)
                    position = b.last_offset + 1
                    if got >= records:
                        break
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
    from pylog.server.tools import INT32_MAX, bootstrap_servers, common_options, float_in, int_in, topic_name

    p = sub.add_parser("bench", help="measure produce/consume throughput and latency",
                       description="Benchmark pylog's client (pylog.connect: its Producer and Consumer) "
                                   "producing or consuming against --bootstrap-server (any Kafka-protocol "
                                   "cluster), or the broker core in this process with --embedded DATA_DIR "
                                   "(no client, no network).")
    bsub = p.add_subparsers(dest="what", required=True, metavar="{produce,consume}")
    helps = {"produce": "produce --records records of --record-size bytes with pylog's producer "
                        "(pylog.connect; send_batch of --batch-records values) and report records/s, MB/s "
                        "and latency percentiles",
             "consume": "read --records records of partition 0 from --offset with pylog's consumer "
                        "(pylog.connect; poll) and report records/s, MB/s and poll latency percentiles"}
    for name in ("produce", "consume"):
        b = bsub.add_parser(name, help=helps[name], description=helps[name] + ".",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        common_options(b, connects=True)
        b.add_argument("--embedded", metavar="DATA_DIR", nargs="?", const="",
                       help="run against the broker core in this process over DATA_DIR (no network; "
                            "default: a temporary directory); not with --bootstrap-server")
        b.add_argument("--topic", default="pylog-bench", type=topic_name, help="topic to use")
        b.add_argument("--records", type=int_in(1), default=1_000_000, help="records to produce or consume")
        b.add_argument("--json", action="store_true", help="print the result as JSON")
        b.add_argument("--no-progress", action="store_true", help="print no progress on stderr")
        b.add_argument("--reporting-interval", type=int_in(1, 3_600_000), default=5000, metavar="MS",
                       help="milliseconds between progress lines when stderr is not a terminal")
        if name == "produce":
            b.add_argument("--record-size", type=int_in(0, 10 << 20), default=100, help="value bytes per record")
            b.add_argument("--batch-records", type=int_in(1, 1_000_000), default=5000,
                           help="records per send_batch call (--embedded: per batch)")
            b.add_argument("--in-flight", type=int_in(1, 10_000), default=5,
                           help="the producer's max_in_flight: produce requests outstanding per "
                                "connection (max.in.flight.requests.per.connection)")
            b.add_argument("--acks", type=int, choices=(-1, 0, 1), default=1, help="acks of every request")
            b.add_argument("--compression", choices=("none", "gzip", "snappy", "lz4", "zstd"), default="none",
                           help="compression of every batch")
            b.add_argument("--partitions", type=int_in(1, INT32_MAX), default=1,
                           help="partitions of the topic, if it is created")
            b.add_argument("--rate", type=float_in(0.0, 1e12, lo_open=True, what="records per second"),
                           help="records per second; None: as fast as possible")
        else:
            b.add_argument("--offset", type=int_in(0), default=0, help="offset to read from")
            b.add_argument("--max-bytes", type=int_in(1, INT32_MAX), default=8 << 20,
                           help="max bytes per fetch (the consumer's fetch_max_bytes and max_partition_fetch_bytes)")
            b.add_argument("--verify", action="store_true", help="check the CRC of every batch (check_crcs)")
        k = b.add_argument_group("side by side with Apache Kafka")
        k.add_argument("--compare-kafka", action="store_true",
                       help="run the same workload against pylog (--bootstrap-server if given, else a "
                            "`pylog serve` started over a temporary directory) and against Apache Kafka, "
                            "alternating, and print both side by side with their ratio")
        k.add_argument("--kafka-bootstrap", metavar="HOST:PORT", type=bootstrap_servers,
                       help="the Kafka broker to compare with (else one is started from --kafka-classpath, "
                            "or from the jars Maven resolves)")
        k.add_argument("--kafka-classpath", metavar="PATH",
                       help="Apache Kafka's jars to start a broker from: a Kafka distribution's directory, "
                            "a java classpath, or a file holding one (default: resolved with `mvn`)")
        k.add_argument("--rounds", type=int_in(1, 100),
                       help="measured runs on each side, after one warm-up run each (default 3); the "
                            "table shows medians")
        b.set_defaults(func=_main, bytes_args=("embedded", "kafka_classpath"))


#: Largest --batch-records x --record-size (a send_batch call, or a batch --embedded):
#: far above Kafka's 1 MiB message.max.bytes it would only use memory.
_MAX_BATCH_BYTES = 256 << 20


def _main(args: argparse.Namespace) -> int:
    import os

    from pylog.server.tools import CommandError

    if args.embedded is not None and "bootstrap_server" in args.given:
        raise CommandError("bench: give --bootstrap-server or --embedded, not both", 2)
    if args.embedded and os.path.exists(args.embedded) and not os.path.isdir(args.embedded):
        raise CommandError(f"bench: --embedded {os.fsdecode(args.embedded)!r} is not a directory", 2)
    if args.what == "produce" and args.record_size * args.batch_records > _MAX_BATCH_BYTES:
        raise CommandError(f"bench: a batch of {args.batch_records} records of {args.record_size} bytes is "
                           f"more than {_MAX_BATCH_BYTES >> 20} MiB: lower --batch-records or --record-size", 2)
    if args.compare_kafka:
        return _compare_kafka(args)
    for opt in ("kafka_bootstrap", "kafka_classpath", "rounds"):
        if getattr(args, opt) is not None:
            raise CommandError(f"bench: --{opt.replace('_', '-')} applies only with --compare-kafka", 2)
    progress = False if args.no_progress else None
    every = args.reporting_interval
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
                                       progress=progress, reporting_interval_ms=every)
            else:
                res = consume_embedded(data_dir, args.topic, args.records, max_bytes=args.max_bytes,
                                       progress=progress, reporting_interval_ms=every)
        elif args.what == "produce":
            res = produce_wire(args.bootstrap_server, args.topic, args.records, record_size=args.record_size,
                               batch_records=args.batch_records, in_flight=args.in_flight, acks=args.acks,
                               compression=args.compression, partitions=args.partitions, rate=args.rate,
                               progress=progress, timeout=args.timeout, reporting_interval_ms=every)
        else:
            res = consume_wire(args.bootstrap_server, args.topic, args.records, offset=args.offset,
                               max_bytes=args.max_bytes, verify=args.verify, progress=progress,
                               timeout=args.timeout, reporting_interval_ms=every)
    except BenchError as exc:
        raise CommandError(f"bench: {exc}") from None
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


# --------------------------------------------------------------------------------------
# --compare-kafka
# --------------------------------------------------------------------------------------


def _compare_kafka(args: argparse.Namespace) -> int:
    """The workload of ``args`` against pylog and Apache Kafka: one warm-up run on each
    (the JVM compiles its hot paths), then ``--rounds`` measured runs alternating which
    side goes first; medians side by side, with the ratio pylog/Kafka.  For a server this
    command started, also its CPU per MB (the process's CPU time over the measured runs
    / their MB), RSS at the end and start time to the first answered request."""
    import statistics

    from pylog.server.kafka_peer import (KafkaServer, KafkaUnavailable, PylogServer, resolve_classpath,
                                         side_by_side, take_turn)
    from pylog.server.tools import CommandError

    if args.embedded is not None:
        raise CommandError("bench: --compare-kafka runs over the network: not with --embedded", 2)
    if args.kafka_bootstrap is not None and args.kafka_classpath is not None:
        raise CommandError("bench: give --kafka-bootstrap (a running broker) or --kafka-classpath "
                           "(jars to start one from), not both", 2)
    rounds = args.rounds or 3
    servers: dict[str, Any] = {}            # the servers this command starts (and stops)
    bootstrap: dict[str, str] = {}
    try:
        if args.kafka_bootstrap is not None:
            bootstrap["kafka"] = args.kafka_bootstrap
        else:
            servers["kafka"] = KafkaServer(resolve_classpath(args.kafka_classpath))
        if "bootstrap_server" in args.given:
            bootstrap["pylog"] = args.bootstrap_server
        else:
            servers["pylog"] = PylogServer()
        for name, server in servers.items():
            _note(args, f"starting {name} on {server.bootstrap}")
            server.start()
            bootstrap[name] = server.bootstrap

        def run(name: str) -> BenchResult:
            take_turn(servers, name)       # the other server started here idles meanwhile
            if args.what == "produce":
                return produce_wire(bootstrap[name], args.topic, args.records, record_size=args.record_size,
                                    batch_records=args.batch_records, in_flight=args.in_flight, acks=args.acks,
                                    compression=args.compression, partitions=args.partitions, rate=args.rate,
                                    progress=False, timeout=args.timeout)
            return consume_wire(bootstrap[name], args.topic, args.records, offset=args.offset,
                                max_bytes=args.max_bytes, verify=args.verify, progress=False, timeout=args.timeout)

        for name in ("pylog", "kafka"):
            if args.what == "consume":
                _fill(bootstrap[name], args.topic, args.offset + args.records, args.timeout)
            _note(args, f"warm-up run on {name}")
            run(name)
        results: dict[str, list[BenchResult]] = {"pylog": [], "kafka": []}
        for r in range(rounds):
            for name in (("pylog", "kafka") if r % 2 == 0 else ("kafka", "pylog")):
                server = servers.get(name)
                c0 = server.cpu_seconds() if server else None
                res = run(name)
                if server is not None:
                    res["server_cpu_s"] = server.cpu_seconds() - c0
                results[name].append(res)
                _note(args, f"round {r + 1}/{rounds}: {name} {res['records_per_s']:,.0f} records/s")
        summary: dict[str, dict[str, float | None]] = {}
        for name, runs in results.items():
            server = servers.get(name)
            med = statistics.median
            row: dict[str, float | None] = {
                "records_per_s": med(x["records_per_s"] for x in runs),
                "mb_per_s": med(x["mb_per_s"] for x in runs),
                "latency_p50_ms": med(x["latency_ms"]["p50"] for x in runs),
                "latency_p99_ms": med(x["latency_ms"]["p99"] for x in runs),
                "server_cpu_ms_per_mb": None, "server_rss_mb": None, "start_s": None}
            if server is not None:
                row["server_cpu_ms_per_mb"] = med(x["server_cpu_s"] * 1000 / max(x["bytes"] / 1e6, 1e-9)
                                                  for x in runs)
                row["server_rss_mb"] = server.rss_bytes() / 1e6
                row["start_s"] = server.start_seconds
            summary[name] = row
    except KafkaUnavailable as exc:            # kafka-storage format failed
        raise CommandError(f"bench: {exc}", 2 if exc.usage else 1) from None
    except (RuntimeError, BenchError) as exc:  # a server did not start or died; a short log
        raise CommandError(f"bench: {exc}") from None
    finally:
        for server in servers.values():
            server.close()
    if args.json:
        ratios = {k: (v / summary["kafka"][k] if v is not None and summary["kafka"][k] else None)
                  for k, v in summary["pylog"].items()}
        print(json.dumps({"workload": args.what, "records": args.records, "rounds": rounds,
                          "pylog": summary["pylog"], "kafka": summary["kafka"], "ratio": ratios}))
        return 0
    size = f", {args.record_size} B records" if args.what == "produce" else ""
    labels = [("records/s", "records_per_s", ",.0f"), ("MB/s", "mb_per_s", ".1f"),
              ("latency p50 ms" + (" (per poll)" if args.what == "consume" else ""), "latency_p50_ms", ".2f"),
              ("latency p99 ms" + (" (per poll)" if args.what == "consume" else ""), "latency_p99_ms", ".2f"),
              ("server CPU ms/MB", "server_cpu_ms_per_mb", ".2f"), ("server RSS MB", "server_rss_mb", ".0f"),
              ("start to first answer s", "start_s", ".2f")]
    runs = f"{rounds} measured runs each, alternating (medians)" if rounds > 1 else "1 measured run each"
    print(side_by_side(f"{args.what}: {args.records:,} records{size}, pylog's client; {runs}, after a "
                       f"warm-up run each",
                       [(label, summary["pylog"][key], summary["kafka"][key], spec)
                        for label, key, spec in labels]))
    return 0


def _note(args: argparse.Namespace, text: str) -> None:
    if not args.no_progress:
        print(f"bench: {text}", file=sys.stderr, flush=True)


def _fill(bootstrap: str, topic: str, records: int, timeout: float) -> None:
    """Produce to partition 0 of ``topic`` until it holds ``records`` records (unmeasured:
    what a consume benchmark reads)."""
    from pylog.errors import UnknownTopicOrPartitionError
    from pylog.server.tools import connect

    client = connect(bootstrap, timeout, "pylog-bench")
    try:
        try:
            have = client.high_watermark(topic, 0)
        except UnknownTopicOrPartitionError:
            have = 0
    finally:
        client.close()
    if have < records:
        produce_wire(bootstrap, topic, records - have, progress=False, timeout=timeout)
