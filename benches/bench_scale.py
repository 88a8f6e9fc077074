"""``pylog serve`` at scale (issue #17): the figures operators plan around.

Every figure is one whole run against a fresh ``pylog serve`` subprocess
(:class:`benches.bench_server.ServeProcess`), with the peer of the figure measured in the
same run, so a ratio and not a noisy absolute is what is tracked:

- ``PartitionSweep.track_*``: a confluent-kafka producer (100-byte records, acks=1, no
  compression, records spread round-robin over the partitions by explicit partition)
  into a topic of 1, 10, 100 and 1000 partitions: records/s and the server's CPU ms per
  MB produced, each as a ratio to the one-partition run of the same call.  Goal: 1000
  partitions cost at most 1.4x the CPU per MB of one (throughput at least 0.7x).
- ``ProduceReplay.track_*``: the server's side of that figure without the client's
  batching (which varies with the client's share of a busy machine): one fixed stream of
  pipelined Produce v9 requests of one partition each, as librdkafka sends them, ~900 KB
  batches to one partition against ~8.8 KB batches (80 records) spread over 1000
  partitions: the server's CPU ms per MB of each and their ratio, and the same ~8.8 KB
  batches to one partition, which splits that ratio into the cost of smaller requests
  and the cost of spreading them.  Every partition is written once before (unmeasured),
  so the figure is the steady state, not the creation of 1000 segments.  The kernel's
  part of it, and Apache Kafka's own ratio, are in ``benches/bench_partition_floor.py``.
- ``BusyNeighbour.track_p99_ms`` / ``track_p999_ms``: end-to-end latency at 10,000
  records/s (confluent-kafka producer with linger.ms=0 and consumer) while another
  process spins on the CPU; the quiet figure of the same call is reported beside it.
  Goal: p99 at most 2 ms and p99.9 at most 10 ms over at least 60 s.  Everything runs
  under the ordinary scheduler even under ``chrt`` (a real-time server could not be
  delayed by the spinner at all), so on a shared machine other work competes too: each
  run says how busy the rest of the machine was and which share of the outliers came
  while it was (``track_busy_machine_outlier_share``), and ``PYLOG_BENCH_CGROUP`` can
  name a high-weight cgroup to run in, which keeps other work off the cores.
- ``MultiConsumer.track_records_per_s``: records/s delivered in total to several
  consumers, each in its own process, in one group over 8 partitions, from the start
  signal (given once the group has settled) to the last record.  Goal: at least 2M records/s
  of 100-byte records.  Two kinds of consumer (the parameter): confluent-kafka's
  ``consume`` and pylog's remote client's ``poll_batches`` (which reads each batch's
  columns with numpy, no Python object per record).  On this 2-core machine a
  confluent-kafka consumer process spends a core on about 1.3M records/s of Message
  objects, so with those the consumers, not the server, are the limit; pylog's
  columnar consumers leave the server as the limit.
- ``OpenTime.track_listen_ms_*``: ``pylog serve`` from exec to "listening" over a data
  directory of 1000 partitions left by a clean shutdown, beside the same over an empty
  one (the interpreter's and pylog's own start-up) and the difference, and the peer: a
  bare asyncio+uvloop server started the same way (``track_listen_ms_floor``), and
  pylog's start-up over it (``track_listen_ms_over_floor``), the part pylog can change.
  Goal (#17): at most 100 ms to listen with 1000 partitions, interpreter start included.
- ``UncleanOpen.track_*``: opening a broker over a data directory of 1000 partitions
  after an unclean shutdown (every partition recovered before the open returns), with
  ``num.recovery.threads.per.data.dir`` at pylog's default beside the same with one
  thread (Kafka's default) in the same call: ms of each and their ratio.

``python -m benches.bench_scale [seconds]`` prints every figure.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

from benches.bench_server import ServeProcess, _create_topic, end_to_end_latency, process_cpu_seconds

RECORD = b"x" * 100


def produce_spread(bootstrap: str, topic: str, records: int, partitions: int) -> float:
    """Records/s of one confluent-kafka producer sending ``records`` 100-byte records
    round-robin over ``partitions`` partitions (acks=1, no compression)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "compression.type": "none",
                  "linger.ms": 5, "batch.num.messages": 10000, "batch.size": 1_000_000,
                  "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_000_000,
                  "socket.nagle.disable": True, "enable.idempotence": False})
    produce = p.produce
    t0 = time.perf_counter()
    for i in range(records):
        part = i % partitions
        try:
            produce(topic, RECORD, partition=part)
        except BufferError:
            p.poll(0.005)
            produce(topic, RECORD, partition=part)
    remaining = p.flush(300)
    elapsed = time.perf_counter() - t0
    if remaining:
        raise RuntimeError(f"{remaining} records not delivered")
    return records / elapsed


def partition_sweep(records: int = 1_000_000, counts: tuple[int, ...] = (1, 10, 100, 1000)) -> dict:
    """For each partition count, a fresh server: records/s and the server's CPU ms per MB
    produced, and both as ratios to the first count's."""
    out: dict = {}
    for n in counts:
        server = ServeProcess()
        try:
            _create_topic(server.bootstrap, "sweep", n)
            c0 = server.cpu_seconds()
            rate = produce_spread(server.bootstrap, "sweep", records, n)
            cpu_ms_per_mb = (server.cpu_seconds() - c0) * 1000 / (records * len(RECORD) / 1e6)
        finally:
            server.stop()
        out[n] = {"records_per_s": rate, "cpu_ms_per_mb": cpu_ms_per_mb}
    base = out[counts[0]]
    for n in counts:
        out[n]["throughput_ratio"] = out[n]["records_per_s"] / base["records_per_s"]
        out[n]["cpu_ratio"] = out[n]["cpu_ms_per_mb"] / base["cpu_ms_per_mb"]
    return out


def _record_batch(records: int) -> bytes:
    from pylog.records import RecordBatchBuilder

    b = RecordBatchBuilder()
    for _ in range(records):
        b.append(None, None, RECORD)
    return b.build()


def _replay_frames(topic: str, partitions: int, batch_records: int) -> list[bytes]:
    """One Produce v9 request frame (acks=1) per partition, each one batch of
    ``batch_records`` 100-byte records."""
    from pylog.protocol import messages as m
    from pylog.protocol.codec import encode_request
    from pylog.protocol.segments import segments_to_bytes

    batch = _record_batch(batch_records)
    R = m.ProduceRequest
    return [segments_to_bytes(encode_request(0, 9, i, topic, R(acks=1, timeout_ms=30000, topic_data=[
        R.TopicProduceData(name=topic, partition_data=[R.PartitionProduceData(index=i, records=batch)])])))
        for i in range(partitions)]


def _error_code_at(topic: str) -> int:
    """Where a Produce v9 response of one partition of ``topic`` holds its error code,
    counted from the start of the frame's body (after the size): correlation id (4),
    header tags (1), topics (1), name (1 + len), partitions (1), index (4)."""
    return 4 + 1 + 1 + 1 + len(topic.encode()) + 1 + 4


def warm_partitions(server, topic: str, partitions: int, batch_records: int, timeout: float = 120) -> None:
    """Write two batches to every partition of ``topic``, unmeasured, until each is
    acknowledged (a new topic's partitions on Apache Kafka answer NOT_LEADER until their
    leaders are in place): the replay then measures appends to segments in use (blocks
    allocated ahead, first index entries written), not the creation of 1000 of them,
    which a broker pays once per segment."""
    import socket
    import struct

    from pylog.protocol.codec import decode_response

    frames = _replay_frames(topic, partitions, batch_records)
    at = _error_code_at(topic)
    pending = list(range(partitions)) * 2
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", server.port)) as sock, sock.makefile("rb") as f:
        while pending:
            failed = []
            for k in range(0, len(pending), 64):    # a window at a time: neither side blocks
                window = pending[k:k + 64]
                sock.sendall(b"".join(frames[i] for i in window))
                for i in window:
                    (size,) = struct.unpack(">i", f.read(4))
                    body = f.read(size)
                    code = decode_response(0, 9, body)[1].responses[0].partition_responses[0].error_code
                    if int.from_bytes(body[at:at + 2], "big", signed=True) != code:
                        raise AssertionError("the Produce response's layout is not the one expected")
                    if code:
                        failed.append(i)
            if failed and time.monotonic() > deadline:
                raise RuntimeError(f"{len(failed)} partitions of {topic} still fail (error {code})")
            if failed:
                time.sleep(0.2)
            pending = failed


def replay_stream(server, topic: str, partitions: int, batch_records: int, megabytes: float,
                  window: int = 64) -> dict:
    """Server CPU ms per MB and MB/s for a fixed stream of Produce v9 requests (acks=1) to
    ``topic`` on ``server`` (anything with ``port`` and ``cpu_seconds()``), each one batch
    of ``batch_records`` 100-byte records for one partition, round-robin over
    ``partitions``, ``window`` requests in flight on one connection.  Every answer must
    carry no error."""
    import socket
    import struct
    import threading

    frames = _replay_frames(topic, partitions, batch_records)
    batch_bytes = len(_record_batch(batch_records))
    at = _error_code_at(topic)
    count = max(int(megabytes * 1e6 / batch_bytes), 1)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    answered = [0]
    errors: list[int] = []
    done = threading.Semaphore(0)

    def read() -> None:
        with sock.makefile("rb", buffering=1 << 20) as f:
            for _ in range(count):
                (size,) = struct.unpack(">i", f.read(4))
                body = f.read(size)
                if body[at] or body[at + 1]:
                    errors.append(int.from_bytes(body[at:at + 2], "big", signed=True))
                answered[0] += 1
                done.release()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        c0 = server.cpu_seconds()
        t0 = time.perf_counter()
        sent = 0
        while sent < count:
            k = min(window - (sent - answered[0]), count - sent)
            if k <= 0:
                done.acquire()
                continue
            sock.sendall(b"".join(frames[(sent + j) % partitions] for j in range(k)))
            sent += k
        reader.join(300)
        elapsed = time.perf_counter() - t0
        cpu = server.cpu_seconds() - c0
    finally:
        sock.close()
    if errors:
        raise RuntimeError(f"{len(errors)} of {count} produce answers carried errors (first: {errors[0]})")
    mb = count * batch_bytes / 1e6
    return {"cpu_ms_per_mb": cpu * 1000 / mb, "mb_per_s": mb / elapsed, "request_bytes": len(frames[0])}


def produce_replay(partitions: int, batch_records: int, megabytes: float, window: int = 64,
                   warm: bool = True) -> dict:
    """:func:`replay_stream` against a fresh ``pylog serve`` and a new topic of
    ``partitions`` partitions, each written once first (unmeasured) when ``warm``."""
    server = ServeProcess()
    try:
        _create_topic(server.bootstrap, "replay", partitions)
        if warm:
            warm_partitions(server, "replay", partitions, batch_records)
        return replay_stream(server, "replay", partitions, batch_records, megabytes, window)
    finally:
        server.stop()


def replay_ratio(megabytes: float = 100.0, warm: bool = True) -> dict:
    """:func:`produce_replay` of ~900 KB requests to one partition ("one"), of ~8.8 KB
    requests over 1000 ("wide") and of ~8.8 KB requests to one partition ("narrow"):
    ``cpu_ratio`` (wide over one) is the issue's figure; it splits into what the smaller
    requests cost (``request_ratio``, narrow over one) and what spreading them over 1000
    partitions adds (``spread_ratio``, wide over narrow)."""
    one = produce_replay(1, 9000, megabytes * 3, warm=warm)
    wide = produce_replay(1000, 80, megabytes, warm=warm)
    narrow = produce_replay(1, 80, megabytes, warm=warm)
    return {"one": one, "wide": wide, "narrow": narrow,
            "cpu_ratio": wide["cpu_ms_per_mb"] / one["cpu_ms_per_mb"],
            "request_ratio": narrow["cpu_ms_per_mb"] / one["cpu_ms_per_mb"],
            "spread_ratio": wide["cpu_ms_per_mb"] / narrow["cpu_ms_per_mb"]}


def _spin(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        pass


#: A cgroup (v1 ``cpu`` or v2 directory) the latency runs join, if set: on a shared machine
#: one made with a high ``cpu.shares``/``cpu.weight`` keeps other work from taking the
#: cores while the server, the clients and the spinner still compete among themselves
#: under the kernel's ordinary scheduler, the condition the figure is about.
LATENCY_CGROUP_ENV = "PYLOG_BENCH_CGROUP"
#: A record slower than this (ms; the goal's p99 bound) is an outlier.
OUTLIER_MS = 2.0
#: Other processes using more than this (cores) in a sampling interval: a busy machine.
OTHER_BUSY_CORES = 0.25


def _proc_stat() -> tuple[int, int, int]:
    """(idle + iowait, steal) clock ticks summed over the CPUs, and the runnable tasks
    now.  Busy time is taken as what is not idle: Linux measures idle time exactly
    (tickless), but charges user and system time a whole tick at a time, which misses
    most of a thread that wakes on a 1 ms timer and runs for less than a tick."""
    with open("/proc/stat") as f:
        first = f.readline().split()[1:]
        running = next((int(line.split()[1]) for line in f if line.startswith("procs_running")), 0)
    return int(first[3]) + int(first[4]), int(first[7]), running


class _MachineSampler:
    """Every ``interval`` seconds, in a thread: the cores the processes other than
    ``pids`` used (the CPUs' time not idle, less those processes' own run time), the
    cores the hypervisor stole, and the runnable tasks."""

    def __init__(self, pids: list[int], interval: float = 0.25) -> None:
        import threading

        self.pids = pids
        self.interval = interval
        self.rows: list[tuple[int, float, float, int]] = []   # (end ns, other, steal, running)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="machine-sampler", daemon=True)

    def _own(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self.pids)

    def _run(self) -> None:
        hz = os.sysconf("SC_CLK_TCK")
        cpus = os.cpu_count() or 1
        t0, (idle0, steal0, _), own0 = time.perf_counter_ns(), _proc_stat(), self._own()
        while not self._stop.wait(self.interval):
            t1, (idle1, steal1, running), own1 = time.perf_counter_ns(), _proc_stat(), self._own()
            dt = (t1 - t0) / 1e9
            busy = cpus * dt - (idle1 - idle0) / hz
            self.rows.append((t1, (busy - (own1 - own0)) / dt, (steal1 - steal0) / hz / dt, running))
            t0, idle0, steal0, own0 = t1, idle1, steal1, own1

    def __enter__(self) -> "_MachineSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class _OrdinaryScheduling:
    """This process (and what it starts: the server, the spinner, librdkafka's threads)
    under ``SCHED_OTHER`` while the figure is measured, and in :data:`LATENCY_CGROUP_ENV`'s
    cgroup if set.  Measured under ``chrt -f`` every one of them would be a real-time
    thread that the spinner can never delay (it would get a core of its own): the figure
    would say nothing about a CPU-bound neighbour."""

    def __enter__(self) -> "_OrdinaryScheduling":
        from pylog.server.kafka_peer import _set_policy

        self._set_policy = _set_policy
        self.policy = os.sched_getscheduler(0)
        self.priority = os.sched_getparam(0).sched_priority
        if self.policy != os.SCHED_OTHER:
            self._set_policy(os.getpid(), os.SCHED_OTHER, 0)    # every thread
        self.cgroup = os.environ.get(LATENCY_CGROUP_ENV) or None
        if self.cgroup:
            # A process with real-time threads may not join a cgroup without real-time
            # runtime (v1 with RT group scheduling): joined only after the switch above.
            with open(os.path.join(self.cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cgroup:
            with open(os.path.join(os.path.dirname(self.cgroup.rstrip("/")), "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        if self.policy != os.SCHED_OTHER:
            try:
                self._set_policy(os.getpid(), self.policy, self.priority)
            except PermissionError:
                pass     # not allowed back up (no CAP_SYS_NICE nor RLIMIT_RTPRIO): stays ordinary


def _outliers_by_machine_load(samples, sent_ns, rows) -> dict:
    """How the outliers (> :data:`OUTLIER_MS`) fall between the sampling intervals when
    the rest of the machine was busy (other processes > :data:`OTHER_BUSY_CORES` cores)
    and those when it was not, each record counted in the interval it was sent in."""
    import numpy as np

    lat = np.asarray(samples, dtype=np.float64)
    out = {"outliers": int((lat > OUTLIER_MS).sum()), "other_cpu": 0.0, "steal_cpu": 0.0,
           "busy_machine_records": 0.0, "busy_machine_outliers": 0.0}
    if not rows or not lat.size or len(sent_ns) != lat.size:
        return out
    ends = np.array([r[0] for r in rows], dtype=np.int64)
    other = np.array([r[1] for r in rows])
    out["other_cpu"] = float(other.mean())
    out["steal_cpu"] = float(np.mean([r[2] for r in rows]))
    out["running_max"] = int(max(r[3] for r in rows))
    busy = other[np.minimum(np.searchsorted(ends, np.asarray(sent_ns, dtype=np.int64)), len(ends) - 1)] \
        > OTHER_BUSY_CORES
    out["busy_machine_records"] = float(busy.mean())
    if out["outliers"]:
        out["busy_machine_outliers"] = float(busy[lat > OUTLIER_MS].mean())
    return out


def latency_busy_neighbour(seconds: float = 60.0, rate: int = 10_000) -> dict:
    """End-to-end latency percentiles (ms) with a CPU-bound process beside the server,
    and without it in the same call.

    The server, the clients and the spinner run under the kernel's ordinary scheduler
    even when this is called under ``chrt`` (:class:`_OrdinaryScheduling`; in the cgroup
    :data:`LATENCY_CGROUP_ENV` names, if set).  Each run also reports what else the
    machine did meanwhile, since on a shared machine other work is a neighbour too: the
    1-minute load average when it started and ended (``load1``, ``load1_end``), the cores
    other processes used (``other_cpu``, mean of 0.25 s intervals) and the hypervisor
    stole (``steal_cpu``), the records slower than :data:`OUTLIER_MS` (``outliers``), the
    share of records and of outliers sent while other processes used more than
    :data:`OTHER_BUSY_CORES` cores (``busy_machine_records``, ``busy_machine_outliers``),
    the server's CPU seconds (``server_cpu_s``) and the policy it was called under."""
    import numpy as np

    def run(busy: bool) -> dict:
        server = ServeProcess()
        spinner = None
        try:
            _create_topic(server.bootstrap, "latency")
            pids = [server.proc.pid, os.getpid()]
            if busy:
                spinner = multiprocessing.get_context("spawn").Process(
                    target=_spin, args=(time.monotonic() + seconds + 30,), daemon=True)
                spinner.start()
                pids.append(spinner.pid)
            load1 = os.getloadavg()[0]
            cpu0 = server.cpu_seconds()
            with _MachineSampler(pids) as machine:
                lat = end_to_end_latency(server.bootstrap, "latency", rate, seconds, raw=True)
            lat["server_cpu_s"] = server.cpu_seconds() - cpu0
            lat["load1"] = load1
            lat["load1_end"] = os.getloadavg()[0]
        finally:
            if spinner is not None:
                spinner.terminate()
                spinner.join(10)
            server.stop()
        samples = np.asarray(lat.pop("samples"), dtype=np.float64)
        lat["p999"] = float(np.percentile(samples, 99.9, method="higher")) if samples.size else 0.0
        lat.update(_outliers_by_machine_load(samples, lat.pop("sent_ns"), machine.rows))
        return lat

    with _OrdinaryScheduling() as sched:
        figures = {"quiet": run(False), "busy": run(True)}
    figures["policy"] = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO",
                         os.SCHED_RR: "SCHED_RR"}.get(sched.policy, str(sched.policy))
    figures["cgroup"] = sched.cgroup
    return figures


def _wait_in_group(poll, assignment, slot: int, assigned, start) -> None:
    """Poll until the start signal, telling the parent how many partitions the group
    gives this member (they stay paused: the assignment callbacks pause them)."""
    while not start.is_set():
        assigned[slot] = len(assignment())
        poll()


def _read_to(progress, quota: int) -> bool:
    """Whether the group has read ``quota`` distinct records: the sum over partitions
    of the next offset each has reached (offsets are dense: no control batches)."""
    with progress.get_lock():
        return sum(progress[:]) >= quota


def _advance(progress, reached: dict) -> None:
    """Move the shared per-partition positions forward to ``reached`` (next offsets)."""
    with progress.get_lock():
        for partition, next_offset in reached.items():
            if next_offset > progress[partition]:
                progress[partition] = next_offset


def _consume_part(bootstrap: str, topic: str, group: str, quota: int, start, progress, assigned,
                  slot: int) -> None:
    """One confluent-kafka consumer process: join ``group``, holding what it is given
    paused until the start signal, then read until the group has read ``quota`` records.

    Positions are shared between the processes (``progress``, the next offset per
    partition): a partition the group moves to this member after a rebalance is read on
    from where its last holder stopped, so a rebalance at any moment neither loses
    records (a partition read from "latest") nor counts any twice."""
    from confluent_kafka import Consumer, TopicPartition

    def on_assign(consumer, partitions):
        with progress.get_lock():
            at = [TopicPartition(topic, tp.partition, progress[tp.partition]) for tp in partitions]
        consumer.assign(at)
        if not start.is_set():
            consumer.pause(at)

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "fetch.max.bytes": 52_428_800,
                  "max.partition.fetch.bytes": 10_485_760, "queued.min.messages": 1_000_000,
                  "queued.max.messages.kbytes": 1_048_576, "fetch.wait.max.ms": 10,
                  "heartbeat.interval.ms": 300})     # (members learn of a rebalance sooner)
    c.subscribe([topic], on_assign=on_assign)
    _wait_in_group(lambda: c.consume(1, 0.02), c.assignment, slot, assigned, start)
    c.resume(c.assignment())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not _read_to(progress, quota):
        reached = {}
        for m in c.consume(1000, 0.2):
            if m.error() is None:
                reached[m.partition()] = m.offset() + 1
        if reached:
            _advance(progress, reached)
    c.close()


def _consume_part_pylog(bootstrap: str, topic: str, group: str, quota: int, start, progress, assigned,
                        slot: int) -> None:
    """:func:`_consume_part` with pylog's remote client: ``poll_batches``, the records of
    each batch counted from its numpy columns (value lengths summed and checked)."""
    import pylog
    from pylog.client.consumer import ConsumerRebalanceListener

    with pylog.connect(bootstrap) as client:
        c = client.consumer(group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
                            heartbeat_interval_ms=300)

        class Resume(ConsumerRebalanceListener):
            def on_partitions_assigned(self, partitions):
                for tp in partitions:
                    c.seek(tp, progress[tp.partition])
                if partitions and not start.is_set():
                    c.pause(*partitions)

        c.subscribe([topic], listener=Resume())
        _wait_in_group(lambda: c.poll(timeout_ms=20), c.assignment, slot, assigned, start)
        c.resume(*c.assignment())
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _read_to(progress, quota):
            reached = {}
            for item in c.poll_batches(timeout_ms=200):
                lengths = item.columns().value_lengths
                if int(lengths.sum()) != len(RECORD) * len(lengths):
                    raise RuntimeError("multi-consumer: a record of the wrong size")
                reached[item.partition] = item.next_offset
            if reached:
                _advance(progress, reached)
        c.close()


_CONSUME_PARTS = {"confluent": _consume_part, "pylog": _consume_part_pylog}


def _consumers_cpu(procs: list) -> float | None:
    """CPU seconds of the consumer processes so far, all threads (None if one has
    already exited: a member leaves as soon as the group has read everything)."""
    try:
        return sum(process_cpu_seconds(p.pid) for p in procs)
    except OSError:
        return None


def multi_consumer(records: int = 4_000_000, consumers: int = 4, partitions: int = 8,
                   kind: str = "confluent", timeout: float = 600) -> dict:
    """Records/s delivered in total to ``consumers`` consumer processes of ``kind``
    (confluent-kafka or pylog's remote client) in one group over ``partitions``
    partitions, and the CPU seconds the server and the consumer processes (all of them
    together) spent in that time: with the machine's cores, what bounds the rate.  The
    clock runs from the start signal, given once the group has settled (every partition
    held by a member, unchanged for half a second, all paused), to the moment the last
    record arrived: what the server delivers, not how long a group takes to form or to
    leave."""
    from pylog.server import bench

    server = ServeProcess()
    procs: list = []
    try:
        bench.produce_wire(server.bootstrap, "fanout", records, record_size=100,
                           batch_records=9_000, partitions=partitions, progress=False)
        ctx = multiprocessing.get_context("spawn")
        start, progress = ctx.Event(), ctx.Array("q", partitions)
        assigned = ctx.Array("i", consumers)
        procs = [ctx.Process(target=_CONSUME_PARTS[kind], args=(server.bootstrap, "fanout", "fanout-group",
                                                                 records, start, progress, assigned, i))
                 for i in range(consumers)]
        for p in procs:
            p.start()
        settled_since = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if sum(assigned[:]) == partitions and min(assigned[:]) > 0:
                settled_since = settled_since or time.monotonic()
                if time.monotonic() - settled_since >= 0.5:
                    break
            else:
                settled_since = None
            if not all(p.is_alive() for p in procs):
                raise RuntimeError(f"multi-consumer: a {kind} consumer process died while joining")
            time.sleep(0.01)
        else:
            raise RuntimeError(f"multi-consumer: the group did not settle: {assigned[:]}")
        c0 = server.cpu_seconds()
        k0 = _consumers_cpu(procs)
        t0 = time.perf_counter()
        start.set()
        # Until the last record arrived, not until the processes are gone: their closes
        # (LeaveGroup, the others' rebalance) are not delivery.
        deadline = time.monotonic() + timeout
        while sum(progress[:]) < records and time.monotonic() < deadline and any(p.is_alive() for p in procs):
            time.sleep(0.001)
        elapsed = time.perf_counter() - t0
        cpu = server.cpu_seconds() - c0
        k1 = _consumers_cpu(procs)
        consumers_cpu = None if k0 is None or k1 is None else k1 - k0
        got = sum(progress[:])
        if got < records:
            raise RuntimeError(f"multi-consumer: {got} of {records} records read in {elapsed:.0f} s, "
                               f"positions {progress[:]}, members alive {[p.is_alive() for p in procs]}")
        for p in procs:
            p.join(timeout)
        if any(p.exitcode for p in procs):
            raise RuntimeError(f"multi-consumer: a {kind} consumer process failed")
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        server.stop()
    return {"records": got, "seconds": elapsed, "records_per_s": got / elapsed, "server_cpu_s": cpu,
            "consumers_cpu_s": consumers_cpu}


#: The floor under ``pylog serve``'s start-up: the interpreter, asyncio, uvloop and logging,
#: a listening socket and the log line, nothing of pylog.
_FLOOR_SERVER = """
import asyncio, logging, sys
import uvloop
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
loop = uvloop.new_event_loop()
asyncio.set_event_loop(loop)
async def main():
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    logging.getLogger("floor").info("listening on %s:%d", *server.sockets[0].getsockname()[:2])
    await server.serve_forever()
loop.run_until_complete(main())
"""


def _listen_ms(data_dir: str | None, env: dict | None = None) -> float:
    """Milliseconds from exec of ``pylog serve`` over ``data_dir`` (None: of the floor
    server, :data:`_FLOOR_SERVER`) to its "listening" line."""
    if data_dir is None:
        cmd = [sys.executable, "-c", _FLOOR_SERVER]
    else:
        cmd = [sys.executable, "-m", "pylog.cli", "serve", "--data-dir", data_dir,
               "--listen", "127.0.0.1:0", "--log-level", "INFO"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "listening on" in line:
                return (time.perf_counter() - t0) * 1000
        raise RuntimeError("pylog serve exited before listening")
    finally:
        proc.terminate()
        proc.wait(60)
        if proc.stderr is not None:
            proc.stderr.close()


def open_time(partitions: int = 1000, rounds: int = 5) -> dict:
    """Median of ``rounds`` (alternating): ms to listen over a clean data dir of
    ``partitions`` partitions (one small batch each), over an empty one, and the
    difference; and the peer: ms for a bare asyncio+uvloop server to listen
    (``floor_listen_ms``, :data:`_FLOOR_SERVER`), with pylog's start-up over it
    (``over_floor_ms``: listen_ms - floor_listen_ms), which holds what pylog can change
    and less of a busy machine's noise than either absolute.

    The servers run with their bytecode cached (in a temporary ``PYTHONPYCACHEPREFIX``,
    filled by one unmeasured start of each), as an installed package has it: under
    ``PYTHONDONTWRITEBYTECODE`` every start would compile pylog's modules again, which
    measures the compiler (it doubled the figure), not pylog."""
    import statistics
    import tempfile

    import pylog

    with tempfile.TemporaryDirectory(prefix="pylog-bench-open-") as full, \
            tempfile.TemporaryDirectory(prefix="pylog-bench-open-empty-") as empty, \
            tempfile.TemporaryDirectory(prefix="pylog-bench-pycache-") as pycache:
        with pylog.open(full) as b:
            b.create_topic("wide", partitions)
            with b.producer(linger_ms=0) as p:
                for i in range(partitions):
                    p.send("wide", RECORD, partition=i)
                p.flush()
        with pylog.open(empty):
            pass
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = pycache
        _listen_ms(empty, env)
        _listen_ms(full, env)
        _listen_ms(None, env)
        full_ms, empty_ms, floor_ms = [], [], []
        for _ in range(rounds):
            full_ms.append(_listen_ms(full, env))
            empty_ms.append(_listen_ms(empty, env))
            floor_ms.append(_listen_ms(None, env))
    listen, base, floor = statistics.median(full_ms), statistics.median(empty_ms), statistics.median(floor_ms)
    return {"listen_ms": listen, "empty_listen_ms": base, "extra_ms": listen - base,
            "floor_listen_ms": floor, "over_floor_ms": listen - floor}


def unclean_open(partitions: int = 1000, rounds: int = 3) -> dict:
    """Best of ``rounds`` (alternating): ms for ``Broker(data_dir)`` over a data dir of
    ``partitions`` partitions (one small batch each, written by an idempotent producer)
    whose clean-shutdown marker is gone, with the default recovery threads and with one."""
    import shutil
    import tempfile

    from benches.bench_open_close import make_data_dir
    from pylog.broker.core import Broker, BrokerConfig

    default = BrokerConfig().num_recovery_threads_per_data_dir
    times: dict[int, list[float]] = {default: [], 1: []}
    with tempfile.TemporaryDirectory(prefix="pylog-bench-unclean-") as root:
        src = os.path.join(root, "src")
        make_data_dir(src, partitions)
        os.unlink(os.path.join(src, ".kafka_cleanshutdown"))
        for _ in range(rounds):
            for threads in times:
                path = os.path.join(root, "run")
                shutil.copytree(src, path)
                t0 = time.perf_counter()
                b = Broker(path, background=False, num_recovery_threads_per_data_dir=threads)
                times[threads].append((time.perf_counter() - t0) * 1000)
                b.close()
                shutil.rmtree(path)
    best = {k: min(v) for k, v in times.items()}
    return {"threads": default, "ms": best[default], "ms_one_thread": best[1],
            "speedup": best[1] / best[default]}


# ---------------------------------------------------------------------------------------
# asv classes
# ---------------------------------------------------------------------------------------


class _Once:
    timeout = 1800
    number = 1
    repeat = 1


class PartitionSweep(_Once):
    def setup_cache(self) -> dict:
        return partition_sweep()

    def track_cpu_ratio_1000_to_1(self, sweep: dict) -> float:
        return sweep[1000]["cpu_ratio"]

    track_cpu_ratio_1000_to_1.unit = "ratio"

    def track_throughput_ratio_1000_to_1(self, sweep: dict) -> float:
        return sweep[1000]["throughput_ratio"]

    track_throughput_ratio_1000_to_1.unit = "ratio"

    def track_throughput_ratio_100_to_1(self, sweep: dict) -> float:
        return sweep[100]["throughput_ratio"]

    track_throughput_ratio_100_to_1.unit = "ratio"


class ProduceReplay(_Once):
    def setup_cache(self) -> dict:
        return replay_ratio()

    def track_cpu_ratio_1000_to_1(self, fig: dict) -> float:
        return fig["cpu_ratio"]

    track_cpu_ratio_1000_to_1.unit = "ratio"

    def track_cpu_ms_per_mb_1000(self, fig: dict) -> float:
        return fig["wide"]["cpu_ms_per_mb"]

    track_cpu_ms_per_mb_1000.unit = "ms/MB"

    def track_spread_ratio_same_request_size(self, fig: dict) -> float:
        return fig["spread_ratio"]

    track_spread_ratio_same_request_size.unit = "ratio"


class BusyNeighbour(_Once):
    def setup_cache(self) -> dict:
        return latency_busy_neighbour()

    def track_p99_ms(self, lat: dict) -> float:
        return lat["busy"]["p99"]

    track_p99_ms.unit = "ms"

    def track_p999_ms(self, lat: dict) -> float:
        return lat["busy"]["p999"]

    track_p999_ms.unit = "ms"

    def track_p99_busy_to_quiet(self, lat: dict) -> float:
        return lat["busy"]["p99"] / lat["quiet"]["p99"]

    track_p99_busy_to_quiet.unit = "ratio"

    def track_busy_machine_outlier_share(self, lat: dict) -> float:
        return lat["busy"]["busy_machine_outliers"]

    track_busy_machine_outlier_share.unit = "ratio"


class MultiConsumer(_Once):
    params = ["confluent", "pylog"]
    param_names = ["consumer"]

    def setup_cache(self) -> dict:
        return {kind: multi_consumer(kind=kind) for kind in self.params}

    def track_records_per_s(self, runs: dict, kind: str) -> float:
        return runs[kind]["records_per_s"]

    track_records_per_s.unit = "records/s"

    def track_records_per_server_cpu_s(self, runs: dict, kind: str) -> float:
        """What one core of the server would deliver at this rate of work: records over
        the server's CPU seconds (the consumers, not the server, set the pace here)."""
        return runs[kind]["records"] / max(runs[kind]["server_cpu_s"], 1e-9)

    track_records_per_server_cpu_s.unit = "records/s"


class OpenTime(_Once):
    def setup_cache(self) -> dict:
        return open_time()

    def track_listen_ms_1000_partitions(self, fig: dict) -> float:
        return fig["listen_ms"]

    track_listen_ms_1000_partitions.unit = "ms"

    def track_listen_ms_empty(self, fig: dict) -> float:
        return fig["empty_listen_ms"]

    track_listen_ms_empty.unit = "ms"

    def track_listen_ms_extra_1000_partitions(self, fig: dict) -> float:
        return fig["extra_ms"]

    track_listen_ms_extra_1000_partitions.unit = "ms"

    def track_listen_ms_floor(self, fig: dict) -> float:
        return fig["floor_listen_ms"]

    track_listen_ms_floor.unit = "ms"

    def track_listen_ms_over_floor(self, fig: dict) -> float:
        return fig["over_floor_ms"]

    track_listen_ms_over_floor.unit = "ms"


class UncleanOpen(_Once):
    def setup_cache(self) -> dict:
        return unclean_open()

    def track_ms_1000_partitions(self, fig: dict) -> float:
        return fig["ms"]

    track_ms_1000_partitions.unit = "ms"

    def track_ms_1000_partitions_one_thread(self, fig: dict) -> float:
        return fig["ms_one_thread"]

    track_ms_1000_partitions_one_thread.unit = "ms"

    def track_speedup_vs_one_thread(self, fig: dict) -> float:
        return fig["speedup"]

    track_speedup_vs_one_thread.unit = "ratio"


if __name__ == "__main__":
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    print("open time, 1000 partitions:", open_time())
    for n, fig in partition_sweep().items():
        print(f"sweep {n:5d} partitions:", {k: round(v, 3) for k, v in fig.items()})
    for kind in _CONSUME_PARTS:
        print(f"multi-consumer {kind}:", multi_consumer(kind=kind))
    lat = latency_busy_neighbour(secs)
    for k in ("quiet", "busy"):
        print(f"latency {k}:", {m: round(v, 3) for m, v in lat[k].items()})
    os._exit(0)
