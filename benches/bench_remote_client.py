"""The remote client (``pylog.connect``) against its peers, over the same ``pylog serve``.

Issue #12's speed targets (ratios pylog over peer, throughput; higher is better), 100-byte
records, one partition, every client on the same loopback server:

- ``producer().send()`` + ``flush()``: at least 1.0x confluent-kafka's ``produce()`` +
  ``flush()``; ``send_batch`` (columnar) at least 5x it.  All producers acks=all,
  idempotent, linger 5 ms, batch size 16384, no compression.
- consumer ``poll`` over N records: at least 1.0x confluent-kafka's
  ``consume(num_messages=1000)``; the columnar batch view (``poll_batches``, the
  ``pylog-batches`` consumer: numpy over each batch's columns, summing the value lengths,
  no Python object per record) at least 5x.
- both at least 3x aiokafka (``send`` + ``flush``, ``getmany``) and kafka-python
  (``send`` + ``flush``, ``poll``).
- end-to-end p99 at 10,000 records/s (producer linger 0, a consumer thread in the same
  process): at most 2 ms.  confluent-kafka measured the same way is the peer.  p50,
  p99 and p99.9 are reported, each run in a fresh process, with the load average (the
  machine's other work moves the tails: run under ``chrt -f 10`` for isolated figures).

Issue #14's, against pylog itself: ``send`` in transactions committed every 100 ms
(``pylog-txn``) at least 0.8x the idempotent ``send``; ``poll`` at read_committed
(``pylog-read_committed``) at least 0.9x read_uncommitted.

Two ways to run it:

- asv (``asv run --python=same --quick -b bench_remote_client``): every client is a
  parameter of one benchmark, so the peers stand side by side in one table.  asv runs
  each (benchmark, parameter) in a process of its own, so each starts its own
  ``pylog serve`` (subprocess on a free loopback port) in ``setup`` and stops it in
  ``teardown``.
- ``python -m benches.bench_remote_client [rounds]``: one server shared by every client,
  ``rounds`` rounds (default 3) alternating pylog and its peers, the ratios printed from
  the medians of that one run.

Every timing starts with a connected, warmed client (metadata known, producer id
assigned) and ends when every record is acknowledged (produce) or handed to the caller
(consume).  ``PYLOG_BENCH_SMALL=1`` shrinks every size for the smoke test.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import struct
import sys
import threading
import time
import warnings

from benches._data import values
from benches.bench_server import ServeProcess, _create_topic

SMALL = os.environ.get("PYLOG_BENCH_SMALL", "") not in ("", "0")
N_PRODUCE = 2_000 if SMALL else 100_000
N_CONSUME = 2_000 if SMALL else 200_000
LATENCY_RATE = 2_000 if SMALL else 10_000
LATENCY_SECONDS = 0.6 if SMALL else 3.0
#: Records fetched per call by every consumer (confluent's consume(num_messages=)).
CONSUME_CHUNK = 1_000
BATCH_SIZE = 16_384
#: The peers fetch ahead in the background; at the end of a run their last fetch waits on
#: the server (the broker serves one request per connection at a time), and the next
#: run's re-read from offset 0 would queue behind it for the default 500 ms.  pylog's
#: consumer fetches only inside ``poll``, so leaves no such wait behind.
PEER_FETCH_WAIT_MS = 10
LINGER_MS = 5
#: The transactional producer commits this often (issue #14's benchmark).
TXN_COMMIT_S = 0.1


def _quiet_import_kafka():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import kafka
    return kafka


# ---------------------------------------------------------------------------------------
# Producers: run(topic, values) sends every value and returns once all are acknowledged.
# ---------------------------------------------------------------------------------------


class _PylogProducer:
    def __init__(self, bootstrap: str) -> None:
        import pylog

        self.client = pylog.connect(bootstrap)
        self.producer = self.client.producer(acks="all", linger_ms=LINGER_MS, batch_size=BATCH_SIZE,
                                             buffer_memory=256 << 20)

    def run(self, topic: str, vals: list[bytes]) -> None:
        send = self.producer.send
        for v in vals:
            send(topic, v)
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()
        self.client.close()


class _PylogSendBatch(_PylogProducer):
    def run(self, topic: str, vals: list[bytes]) -> None:
        self.producer.send_batch(topic, vals).result()


class _PylogTransactional(_PylogProducer):
    """``send`` in transactions committed every :data:`TXN_COMMIT_S` (issue #14: at least
    0.8x the idempotent producer's records/s on the same data)."""

    def __init__(self, bootstrap: str) -> None:
        import pylog

        self.client = pylog.connect(bootstrap)
        self.producer = self.client.producer(acks="all", linger_ms=LINGER_MS, batch_size=BATCH_SIZE,
                                             buffer_memory=256 << 20, transactional_id=f"bench-{time.time_ns()}")
        self.producer.init_transactions()

    def run(self, topic: str, vals: list[bytes]) -> None:
        p = self.producer
        send = p.send
        p.begin_transaction()
        next_commit = time.monotonic() + TXN_COMMIT_S
        for i, v in enumerate(vals):
            send(topic, v)
            if not i % 1000 and time.monotonic() >= next_commit:
                p.commit_transaction()
                p.begin_transaction()
                next_commit = time.monotonic() + TXN_COMMIT_S
        p.commit_transaction()


class _ConfluentProducer:
    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer

        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                                  "linger.ms": LINGER_MS, "batch.size": BATCH_SIZE,
                                  "compression.type": "none",
                                  "queue.buffering.max.messages": 2_000_000,
                                  "queue.buffering.max.kbytes": 2_000_000, "log_level": 0})

    def run(self, topic: str, vals: list[bytes]) -> None:
        produce = self.producer.produce
        for v in vals:
            produce(topic, v)
        if self.producer.flush(120):
            raise RuntimeError("confluent-kafka: records not delivered")

    def close(self) -> None:
        self.producer.flush(10)


class _AiokafkaProducer:
    def __init__(self, bootstrap: str) -> None:
        from aiokafka import AIOKafkaProducer

        self.loop = asyncio.new_event_loop()

        async def start():
            p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                 linger_ms=LINGER_MS, max_batch_size=BATCH_SIZE)
            await p.start()
            return p

        self.producer = self.loop.run_until_complete(start())

    def run(self, topic: str, vals: list[bytes]) -> None:
        async def go():
            send = self.producer.send
            for v in vals:
                await send(topic, v)
            await self.producer.flush()

        self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.producer.stop())
        self.loop.close()


class _KafkaPythonProducer:
    def __init__(self, bootstrap: str) -> None:
        kafka = _quiet_import_kafka()
        self.producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                            linger_ms=LINGER_MS, batch_size=BATCH_SIZE)

    def run(self, topic: str, vals: list[bytes]) -> None:
        send = self.producer.send
        for v in vals:
            send(topic, v)
        self.producer.flush(120)

    def close(self) -> None:
        self.producer.close(10)


PRODUCERS = {"pylog": _PylogProducer, "pylog-send_batch": _PylogSendBatch, "pylog-txn": _PylogTransactional,
             "confluent": _ConfluentProducer, "aiokafka": _AiokafkaProducer,
             "kafka-python": _KafkaPythonProducer}


# ---------------------------------------------------------------------------------------
# Consumers: run(topic, n) reads partition 0 from offset 0 until n records were handed out.
# ---------------------------------------------------------------------------------------


class _PylogConsumer:
    def __init__(self, bootstrap: str, topic: str) -> None:
        import pylog

        self.client = pylog.connect(bootstrap)
        self.consumer = self.client.consumer(auto_offset_reset="earliest", enable_auto_commit=False,
                                             max_poll_records=CONSUME_CHUNK)
        self.consumer.assign([(topic, 0)])

    def run(self, topic: str, n: int) -> int:
        c = self.consumer
        c.seek((topic, 0), 0)
        got = 0
        while got < n:
            for record in c.poll(timeout_ms=1000, max_records=CONSUME_CHUNK):
                record.value
                got += 1
        return got

    def close(self) -> None:
        self.consumer.close()
        self.client.close()


class _PylogReadCommitted(_PylogConsumer):
    """``poll`` at read_committed (issue #14: at least 0.9x read_uncommitted): the fetches
    stop at the last stable offset and carry the aborted transactions (none here)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        import pylog

        self.client = pylog.connect(bootstrap)
        self.consumer = self.client.consumer(auto_offset_reset="earliest", enable_auto_commit=False,
                                             max_poll_records=CONSUME_CHUNK, isolation_level="read_committed")
        self.consumer.assign([(topic, 0)])


class _PylogBatchConsumer(_PylogConsumer):
    """``poll_batches``: what a columnar user does, numpy over each batch's columns (the
    sum of the value lengths), never a Python object per record."""

    def run(self, topic: str, n: int) -> int:
        c = self.consumer
        c.seek((topic, 0), 0)
        got = 0
        value_bytes = 0
        while got < n:
            for item in c.poll_batches(timeout_ms=1000, max_records=CONSUME_CHUNK):
                lengths = item.columns().value_lengths
                value_bytes += int(lengths.sum())
                got += len(lengths)
        if value_bytes != 100 * got:
            raise RuntimeError(f"pylog-batches: {value_bytes} value bytes in {got} records of 100 bytes")
        return got


class _ConfluentConsumer:
    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{time.time_ns()}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": PEER_FETCH_WAIT_MS,
                                  # librdkafka stops fetching for fetch.queue.backoff.ms (1 s)
                                  # once queued.min.messages (100,000) wait in its queue: a
                                  # 200,000-record run then stalls for a second, half the time.
                                  "queued.min.messages": 1_000_000,
                                  "queued.max.messages.kbytes": 1_048_576, "log_level": 0})

    def run(self, topic: str, n: int) -> int:
        from confluent_kafka import TopicPartition

        c = self.consumer
        c.assign([TopicPartition(topic, 0, 0)])
        got = 0
        while got < n:
            # No more than are left: consume(k) waits for k messages or its timeout.
            for m in c.consume(min(CONSUME_CHUNK, n - got), 1.0):
                if m.error() is None:
                    m.value()
                    got += 1
        return got

    def close(self) -> None:
        self.consumer.close()


class _AiokafkaConsumer:
    def __init__(self, bootstrap: str, topic: str) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self.loop = asyncio.new_event_loop()
        self.tp = TopicPartition(topic, 0)

        async def start():
            c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                 auto_offset_reset="earliest", fetch_max_wait_ms=PEER_FETCH_WAIT_MS)
            await c.start()
            c.assign([self.tp])
            return c

        self.consumer = self.loop.run_until_complete(start())

    def run(self, topic: str, n: int) -> int:
        async def go():
            c = self.consumer
            c.seek(self.tp, 0)
            got = 0
            while got < n:
                for records in (await c.getmany(timeout_ms=1000, max_records=CONSUME_CHUNK)).values():
                    for r in records:
                        r.value
                        got += 1
            return got

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.consumer.stop())
        self.loop.close()


class _KafkaPythonConsumer:
    def __init__(self, bootstrap: str, topic: str) -> None:
        kafka = _quiet_import_kafka()
        self.tp = kafka.TopicPartition(topic, 0)
        self.consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                            auto_offset_reset="earliest", fetch_max_wait_ms=PEER_FETCH_WAIT_MS)
        self.consumer.assign([self.tp])

    def run(self, topic: str, n: int) -> int:
        c = self.consumer
        c.seek(self.tp, 0)
        got = 0
        while got < n:
            for records in c.poll(timeout_ms=1000, max_records=CONSUME_CHUNK).values():
                for r in records:
                    r.value
                    got += 1
        return got

    def close(self) -> None:
        self.consumer.close()


CONSUMERS = {"pylog": _PylogConsumer, "pylog-batches": _PylogBatchConsumer,
             "pylog-read_committed": _PylogReadCommitted, "confluent": _ConfluentConsumer,
             "aiokafka": _AiokafkaConsumer, "kafka-python": _KafkaPythonConsumer}


def fill(bootstrap: str, topic: str, n: int) -> None:
    """Create ``topic`` (one partition) and write ``n`` 100-byte records to it."""
    p = _PylogSendBatch(bootstrap)
    try:
        vals = values(n)
        for i in range(0, n, 50_000):
            p.run(topic, vals[i:i + 50_000])
    finally:
        p.close()


# ---------------------------------------------------------------------------------------
# End-to-end latency: records carry their send time; a consumer thread reads them.
# ---------------------------------------------------------------------------------------


def _pylog_latency_pair(bootstrap: str, topic: str):
    import pylog

    client = pylog.connect(bootstrap)
    producer = client.producer(acks="all", linger_ms=0)
    consumer = client.consumer(auto_offset_reset="latest", enable_auto_commit=False, fetch_max_wait_ms=100)
    consumer.assign([(topic, 0)])
    consumer.poll(timeout_ms=100)        # resolves the start position before anything is sent

    def send(value: bytes) -> None:
        producer.send(topic, value)

    def receive() -> list[bytes]:
        return [r.value for r in consumer.poll(timeout_ms=100)]

    def close() -> None:
        producer.close()
        consumer.close()
        client.close()

    return send, lambda: None, receive, close


def _confluent_latency_pair(bootstrap: str, topic: str):
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 0, "socket.nagle.disable": True, "log_level": 0})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-{time.time_ns()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100, "fetch.min.bytes": 1,
                         "socket.nagle.disable": True, "auto.offset.reset": "latest", "log_level": 0})
    consumer.assign([TopicPartition(topic, 0)])
    consumer.consume(1, 1.0)

    def send(value: bytes) -> None:
        producer.produce(topic, value)

    def receive() -> list[bytes]:
        # poll() hands over each record as soon as it is there; consume(n) would wait for n.
        m = consumer.poll(0.1)
        return [m.value()] if m is not None and m.error() is None else []

    def close() -> None:
        producer.flush(10)
        consumer.close()

    return send, lambda: producer.poll(0), receive, close


LATENCY_PAIRS = {"pylog": _pylog_latency_pair, "confluent": _confluent_latency_pair}


def end_to_end_latency(kind: str, bootstrap: str, topic: str, rate: int = LATENCY_RATE,
                       seconds: float = LATENCY_SECONDS) -> dict:
    """Send ``rate`` records/s for ``seconds`` (in 1 ms ticks) while a thread consumes;
    latency = receive time - the send time each record carries.  The first half second
    (connections, fetch start) is not counted."""
    import numpy as np

    from pylog.server.bench import percentiles

    send, service, receive, close = LATENCY_PAIRS[kind](bootstrap, topic)
    total = int(rate * seconds)
    latencies: list[float] = []
    done = threading.Event()

    def consume() -> None:
        while len(latencies) < total and not done.is_set():
            for value in receive():
                now = time.perf_counter_ns()
                latencies.append((now - struct.unpack_from(">q", value)[0]) / 1e6)

    t = threading.Thread(target=consume)
    t.start()
    pad = b"x" * 92
    per_tick = max(1, rate // 1000)
    sent = 0
    t0 = time.perf_counter()
    try:
        while sent < total:
            delay = t0 + sent / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            for _ in range(min(per_tick, total - sent)):
                send(struct.pack(">q", time.perf_counter_ns()) + pad)
                sent += 1
            service()
        deadline = time.monotonic() + 30
        while len(latencies) < total and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.02)
    finally:
        done.set()
        t.join(30)
        close()
    measured = latencies[min(len(latencies), rate // 2):]
    if len(latencies) < total:
        raise RuntimeError(f"{kind}: {len(latencies)} of {total} records arrived")
    # p99.9 too ("higher", as the others: a latency that was measured).
    p999 = float(np.percentile(measured, 99.9, method="higher")) if measured else 0.0
    return {"records": len(measured), **percentiles(measured), "p99.9": p999}


# ---------------------------------------------------------------------------------------
# asv classes: the client is the parameter, so the peers stand side by side.
# ---------------------------------------------------------------------------------------


class _OnServer:
    number = 1
    repeat = 3
    warmup_time = 0
    timeout = 300

    def _start(self) -> None:
        self.server = ServeProcess()

    def teardown(self, *args) -> None:
        closer = getattr(self, "client", None)
        try:
            if closer is not None:
                closer.close()
        finally:
            self.server.stop()


class Produce(_OnServer):
    """N 100-byte records sent and acknowledged (acks=all, idempotent, linger 5 ms)."""

    params = list(PRODUCERS)
    param_names = ["client"]

    def setup(self, kind: str) -> None:
        self._start()
        _create_topic(self.server.bootstrap, "produce")
        self.values = values(N_PRODUCE)
        self.client = PRODUCERS[kind](self.server.bootstrap)
        self.client.run("produce", self.values[:100])     # connected, producer id assigned

    def time_produce(self, kind: str) -> None:
        self.client.run("produce", self.values)


class Consume(_OnServer):
    """N 100-byte records read from offset 0 of one partition, 1,000 per call."""

    params = list(CONSUMERS)
    param_names = ["client"]

    def setup(self, kind: str) -> None:
        self._start()
        fill(self.server.bootstrap, "consume", N_CONSUME)
        self.client = CONSUMERS[kind](self.server.bootstrap, "consume")
        self.client.run("consume", CONSUME_CHUNK)          # connected, partition resolved

    def time_consume(self, kind: str) -> None:
        self.client.run("consume", N_CONSUME)


class EndToEndLatency(_OnServer):
    """p99 milliseconds from send to receipt at LATENCY_RATE records/s (linger 0)."""

    params = list(LATENCY_PAIRS)
    param_names = ["client"]
    repeat = 1

    def setup(self, kind: str) -> None:
        self._start()
        _create_topic(self.server.bootstrap, "latency")

    def track_p99_ms(self, kind: str) -> float:
        return end_to_end_latency(kind, self.server.bootstrap, "latency")["p99"]

    track_p99_ms.unit = "ms"


# ---------------------------------------------------------------------------------------
# One server, alternating rounds, ratios from one run.
# ---------------------------------------------------------------------------------------


def _latency_in_fresh_process(kind: str, bootstrap: str, topic: str) -> dict:
    """:func:`end_to_end_latency` in a new interpreter, as asv runs each benchmark: not
    in this one, which by then holds the heaps and the background threads of every
    throughput client above (kafka-python's and aiokafka's among them), all competing
    with the measured client for the GIL and the collector."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(end_to_end_latency, (kind, bootstrap, topic))


#: The end-to-end percentiles compare() reports.
LATENCY_QUANTILES = ("p50", "p99", "p99.9")


def compare(rounds: int = 3, out=sys.stdout) -> dict:
    """Throughput (records/s) of every producer and consumer and end-to-end latency
    percentiles of pylog and confluent, ``rounds`` rounds alternating the clients over
    one shared server.  Returns ``{"produce": {kind: [rates]}, "consume": {...},
    "latency_p50_ms": {...}, "latency_p99_ms": {...}, "latency_p99.9_ms": {...},
    "load_average": [1-minute load average after each latency run]}``."""
    server = ServeProcess()
    result: dict = {"produce": {k: [] for k in PRODUCERS}, "consume": {k: [] for k in CONSUMERS},
                    **{f"latency_{q}_ms": {k: [] for k in LATENCY_PAIRS} for q in LATENCY_QUANTILES},
                    "load_average": []}
    try:
        bootstrap = server.bootstrap
        _create_topic(bootstrap, "produce")
        fill(bootstrap, "consume", N_CONSUME)
        vals = values(N_PRODUCE)
        producers: dict = {}
        consumers: dict = {}
        try:
            for k, cls in PRODUCERS.items():
                producers[k] = cls(bootstrap)
            for k, cls in CONSUMERS.items():
                consumers[k] = cls(bootstrap, "consume")
            for p in producers.values():
                p.run("produce", vals[:100])
            for c in consumers.values():
                c.run("consume", CONSUME_CHUNK)
            for r in range(rounds):
                order = list(PRODUCERS) if r % 2 == 0 else list(reversed(PRODUCERS))
                for k in order:
                    t0 = time.perf_counter()
                    producers[k].run("produce", vals)
                    result["produce"][k].append(N_PRODUCE / (time.perf_counter() - t0))
                order = list(CONSUMERS) if r % 2 == 0 else list(reversed(CONSUMERS))
                for k in order:
                    t0 = time.perf_counter()
                    got = consumers[k].run("consume", N_CONSUME)
                    result["consume"][k].append(got / (time.perf_counter() - t0))
        finally:
            for x in (*producers.values(), *consumers.values()):
                x.close()
        for r in range(rounds):
            kinds = list(LATENCY_PAIRS) if r % 2 == 0 else list(reversed(LATENCY_PAIRS))
            for i, k in enumerate(kinds):
                topic = f"latency-{r}-{i}"
                _create_topic(bootstrap, topic)
                lat = _latency_in_fresh_process(k, bootstrap, topic)
                for q in LATENCY_QUANTILES:
                    result[f"latency_{q}_ms"][k].append(lat[q])
                result["load_average"].append(os.getloadavg()[0])
    finally:
        server.stop()
    _report(result, out)
    return result


def _report(result: dict, out) -> None:
    med = {sect: {k: statistics.median(v) for k, v in d.items()} for sect, d in result.items()
           if isinstance(d, dict)}
    for sect in ("produce", "consume"):
        print(f"{sect} (records/s, median of {len(next(iter(result[sect].values())))} rounds):", file=out)
        for k, v in result[sect].items():
            print(f"  {k:18s} {med[sect][k]:12,.0f}   {', '.join(f'{x:,.0f}' for x in v)}", file=out)
    send, batch = med["produce"]["pylog"], med["produce"]["pylog-send_batch"]
    poll, batches = med["consume"]["pylog"], med["consume"]["pylog-batches"]
    print("ratios (pylog / peer):", file=out)
    for peer in ("confluent", "aiokafka", "kafka-python"):
        print(f"  send {send / med['produce'][peer]:6.2f}x {peer:13s} send_batch {batch / med['produce'][peer]:6.2f}x"
              f"   consume {poll / med['consume'][peer]:6.2f}x   poll_batches {batches / med['consume'][peer]:6.2f}x",
              file=out)
    print(f"transactions: send in transactions committed every {TXN_COMMIT_S * 1000:.0f} ms "
          f"{med['produce']['pylog-txn'] / send:.2f}x idempotent send; read_committed poll "
          f"{med['consume']['pylog-read_committed'] / poll:.2f}x read_uncommitted", file=out)
    for q in LATENCY_QUANTILES:
        print("end-to-end %s ms at %d records/s: %s" % (q, LATENCY_RATE, ", ".join(
            f"{k} {med[f'latency_{q}_ms'][k]:.2f} ({', '.join(f'{x:.2f}' for x in v)})"
            for k, v in result[f"latency_{q}_ms"].items())), file=out)
    loads = result["load_average"]
    if loads:
        print(f"load average (1 min) during the latency runs: {min(loads):.1f} to {max(loads):.1f}", file=out)


if __name__ == "__main__":
    compare(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
