"""``pylog serve`` under real clients: throughput, the server's CPU per MB, sendfile
efficiency and end-to-end latency.

Each benchmark starts ``pylog serve`` as a subprocess on a free loopback port over a
temporary data directory (so the server's CPU time can be read from ``/proc``) and stops
it afterwards.  Figures (asv ``track_*`` values, also printed by
``python -m benches.bench_server``):

- ``ConfluentProduce.track_records_per_s``: confluent-kafka (librdkafka) producer, 100-byte
  records, acks=1, no compression.
- ``ConfluentConsume.track_records_per_s``: confluent-kafka consumer reading them back.
- ``ServerCpu.track_produce_to_fetch_cpu_ratio``: the issue's figure: the server's CPU
  seconds per MB produced by a confluent-kafka producer (100-byte records, acks=1, no
  compression) divided by its CPU seconds per MB fetched by a confluent-kafka consumer
  reading exactly those records back (see :func:`server_cpu_ratio`).
- ``ServerCpu.track_produce_to_fetch_cpu_ratio_large_batches``: the same ratio with pylog's
  client (``pylog.connect``) on both sides (about 1 MB Produce batches, 8 MB fetches), where
  neither client's batching enters (the kernel's floor under both is ``KernelFloor``).
- ``KernelFloor.track_recv_pwrite_to_sendfile_cpu_ratio`` and
  ``track_splice_to_sendfile_cpu_ratio``: the floor under the ratio above, with no
  server at all: CPU per MB of receiving bytes on a loopback socket and writing them to
  a file (or splicing them there), over CPU per MB of sendfile'ing them back out (see
  :func:`kernel_floor_ratio`).  ``track_server_produce_over_floor``: the server's CPU
  per MB produced (confluent-kafka) over that recv+pwrite floor, in the same run: what
  the server adds to the kernel's unavoidable work.
- ``Sendfile.track_fetch_to_raw_sendfile_ratio``: bytes/s of Fetch responses (records sent
  with sendfile) over bytes/s of a raw ``os.sendfile`` of the same segment file ranges, to
  identical receivers that discard what they read.
- ``EndToEndLatency.track_p99_ms``: produce-to-consume latency of records produced at
  10,000 records/s (confluent-kafka producer with linger.ms=0 and consumer).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

_LISTENING = re.compile(r"listening on (\S+):(\d+) ")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` so far: the run time of all its threads in
    nanoseconds (``/proc/PID/task/*/schedstat``); /proc/PID/stat's user + system
    time counts in clock ticks (10 ms), too coarse for a phase of a few hundred
    ms.  A server's threads (event loop, I/O pool, broker background, cleaner)
    live as long as it does, so no thread's time is lost by exiting."""
    total = 0
    tasks = f"/proc/{pid}/task"
    try:
        for tid in os.listdir(tasks):
            try:
                with open(f"{tasks}/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass     # a thread that just exited
    except OSError:
        total = 0
    if total:
        return total / 1e9
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class ServeProcess:
    """``pylog serve`` in a subprocess over a temporary data directory."""

    def __init__(self, **overrides: str) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="pylog-bench-serve-")
        cmd = [sys.executable, "-m", "pylog.cli", "serve", "--data-dir", self.tmp.name,
               "--listen", "127.0.0.1:0", "--log-level", "WARNING",
               "--override", "group.initial.rebalance.delay.ms=0"]
        for k, v in overrides.items():
            cmd += ["--override", f"{k}={v}"]
        # INFO is needed for the "listening on" line; WARNING keeps the run quiet after it.
        cmd[cmd.index("WARNING")] = "INFO"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        self.port = None
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            mo = _LISTENING.search(line)
            if mo:
                self.port = int(mo.group(2))
                break
            if time.monotonic() > deadline:
                break
        if self.port is None:
            self.stop()
            raise RuntimeError("pylog serve did not start")
        # Keep draining stderr so the server never blocks on a full pipe.
        self._drain = threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True)
        self._drain.start()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> str:
        return self.tmp.name

    def cpu_seconds(self) -> float:
        """CPU time of the server process so far (:func:`process_cpu_seconds`)."""
        return process_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.tmp.cleanup()


def _create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    import pylog

    with pylog.connect(bootstrap) as c:
        c.create_topic(topic, partitions)


def confluent_produce(bootstrap: str, topic: str, records: int, record_size: int = 100, acks: str = "1") -> float:
    """Records per second of one confluent-kafka producer (``acks``, default 1; no compression)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "compression.type": "none",
                  "linger.ms": 5, "batch.num.messages": 10000, "batch.size": 1_000_000,
                  "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_000_000,
                  "socket.nagle.disable": True, "enable.idempotence": False})
    value = b"x" * record_size
    produce = p.produce
    t0 = time.perf_counter()
    for _ in range(records):
        try:
            produce(topic, value)
        except BufferError:
            p.poll(0.005)
            produce(topic, value)
    remaining = p.flush(120)
    elapsed = time.perf_counter() - t0
    if remaining:
        raise RuntimeError(f"{remaining} records not delivered")
    return records / elapsed


def confluent_consume(bootstrap: str, topic: str, records: int) -> float:
    """Records per second of one confluent-kafka consumer reading ``records`` records,
    timed from its first records to its last: the steady rate.  The set-up before the
    first records (connections, metadata, the first fetch of up to 10 MB and librdkafka
    parsing it, 50-60 ms against either server here) is a fixed cost, not throughput: in
    a run of 200,000 records of 1 KB it was a quarter of the time measured."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{time.time_ns()}",
                  "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                  "max.partition.fetch.bytes": 10_485_760, "queued.min.messages": 1_000_000,
                  "queued.max.messages.kbytes": 1_048_576, "fetch.wait.max.ms": 10})
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    t0 = None
    first = 0
    deadline = time.monotonic() + 300
    while got < records and time.monotonic() < deadline:
        # Ask for no more than are left: consume(n) waits for n messages or the timeout,
        # so the last call would otherwise idle up to a second (while librdkafka keeps
        # polling the server with empty fetches).  1,000 at a time, as an application
        # would: lists of 200,000 Message objects survived into CPython's older GC
        # generations and were rescanned there, halving the rate (measured ~0.4M vs
        # ~0.8-1.0M records/s alternating on this machine).
        msgs = c.consume(min(1_000, records - got), 1.0)
        got += sum(1 for m in msgs if m.error() is None)
        if t0 is None and got:
            t0, first = time.perf_counter(), got
    if t0 is None or got <= first:
        raise RuntimeError(f"confluent_consume: {got} of {records} records in 300 s")
    elapsed = time.perf_counter() - t0
    c.close()
    return (got - first) / elapsed


class _FetchWindow(threading.Thread):
    """Samples the server's CPU time and the bytes it has written with write calls and
    sendfile (``wchar`` of /proc/PID/io: Fetch responses send their records with
    sendfile; responses' other bytes go with sendmsg, which it does not count) every
    ``interval`` seconds, so the CPU spent up to the moment the last record left the
    server can be told apart from the CPU of a caught-up consumer's empty long polls."""

    def __init__(self, server: ServeProcess, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._done = threading.Event()

    def _wchar(self) -> int:
        with open(f"/proc/{self.server.proc.pid}/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
        raise RuntimeError("no wchar in /proc/PID/io")

    def sample(self) -> None:
        self.samples.append((self.server.cpu_seconds(), self._wchar()))

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.sample()

    def finish(self) -> tuple[float, float]:
        """(CPU seconds until the last sendfile byte, CPU seconds of the whole window),
        both from the first sample."""
        self._done.set()
        self.join()
        self.sample()
        start_cpu, start_w = self.samples[0]
        end_cpu, end_w = self.samples[-1]
        # Small writes (a checkpoint file) may come later: 64 KiB of slack.
        sent = next(c for c, w in self.samples if w >= end_w - 65536) if end_w > start_w else end_cpu
        return sent - start_cpu, end_cpu - start_cpu


def server_cpu_ratio(server: ServeProcess, topic: str, megabytes: int = 200) -> dict:
    """The issue's figure: server CPU per MB produced / server CPU per MB fetched, with
    confluent-kafka (librdkafka) on both sides.

    Produce phase: :func:`confluent_produce` writes ``megabytes`` MB of 100-byte records
    (acks=1, no compression) into a new one-partition topic.  Fetch phase: a
    :func:`confluent_consume` consumer reads exactly those records back.  Only the
    server process's CPU is counted (all its threads, :meth:`ServeProcess.cpu_seconds`),
    and each phase's CPU is divided by the same volume (the records' bytes; the fetched
    wire bytes also carry batch headers, about 1% more).  Both clients run on this
    machine, so a busy client slows the server's caches in both phases alike.

    The fetch phase's CPU is counted until the last record byte left the server
    (:class:`_FetchWindow`): librdkafka prefetches far ahead of the Python consume
    loop, then sends an empty long-polling Fetch every ``fetch.wait.max.ms`` until the
    loop has caught up; that CPU depends on how slow the client is, not on the MB
    fetched.  It is reported apart (``cpu_ms_fetch_idle_polls``), with the whole
    phase's figure (``cpu_ms_per_mb_fetch_whole_phase``).  Also returns both clients'
    rates.
    """
    records = megabytes * 10_000            # 100-byte records
    _create_topic(server.bootstrap, topic)
    c0 = server.cpu_seconds()
    produce_rate = confluent_produce(server.bootstrap, topic, records)
    c1 = server.cpu_seconds()
    window = _FetchWindow(server)
    window.sample()
    window.start()
    consume_rate = confluent_consume(server.bootstrap, topic, records)
    fetch_cpu, whole_cpu = window.finish()
    mb = records * 100 / 1e6
    per_mb_produce = (c1 - c0) / mb
    per_mb_fetch = fetch_cpu / mb
    return {"cpu_ms_per_mb_produce": per_mb_produce * 1000, "cpu_ms_per_mb_fetch": per_mb_fetch * 1000,
            "ratio": per_mb_produce / max(per_mb_fetch, 1e-9),
            "cpu_ms_per_mb_fetch_whole_phase": whole_cpu / mb * 1000,
            "cpu_ms_fetch_idle_polls": (whole_cpu - fetch_cpu) * 1000,
            "produce_records_per_s": produce_rate, "consume_records_per_s": consume_rate}


def server_cpu_ratio_large_batches(server: ServeProcess, topic: str, megabytes: int = 200) -> dict:
    """Server CPU per MB produced / per MB fetched with pylog's client (``pylog.connect``,
    as ``pylog bench`` drives it) on both sides: ``send_batch`` in about 1 MB Produce
    batches (4 in flight) and 8 MB fetches, so the figure is the server's own, with no
    small client batches in it."""
    from pylog.server import bench

    records = megabytes * 10_000            # 100-byte records
    c0 = server.cpu_seconds()
    bench.produce_wire(server.bootstrap, topic, records, record_size=100, batch_records=9_000,
                       in_flight=4, acks=1, progress=False)
    c1 = server.cpu_seconds()
    res = bench.consume_wire(server.bootstrap, topic, records, max_bytes=8 << 20, progress=False)
    c2 = server.cpu_seconds()
    produced_mb = records * 100 / 1e6
    fetched_mb = res["bytes"] / 1e6
    per_mb_produce = (c1 - c0) / produced_mb
    per_mb_fetch = (c2 - c1) / fetched_mb
    return {"cpu_ms_per_mb_produce": per_mb_produce * 1000, "cpu_ms_per_mb_fetch": per_mb_fetch * 1000,
            "ratio": per_mb_produce / max(per_mb_fetch, 1e-9)}


_FLOOR_CHUNK = 1 << 20


def _floor_store(mode: str, path: str, nbytes: int) -> float:
    """Thread CPU seconds of storing ``nbytes`` received on a loopback socket into a
    preallocated file with no protocol at all, 1 MiB per call: ``"recv+pwrite"``
    (``recv_into`` a buffer, ``os.pwrite`` it: what a server that validates the bytes
    before writing them must do) or ``"splice"`` (socket -> pipe -> file, no user-space
    copy: the least any server can do).  The sender is another thread; only the storing
    thread's CPU is counted (``time.thread_time``)."""
    import fcntl

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    payload = os.urandom(_FLOOR_CHUNK)

    def send() -> None:
        with socket.create_connection(listener.getsockname()) as s:
            for _ in range(nbytes // _FLOOR_CHUNK):
                s.sendall(payload)

    sender = threading.Thread(target=send)
    sender.start()
    conn, _ = listener.accept()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, nbytes)
        pos = 0
        t0 = time.thread_time()
        if mode == "recv+pwrite":
            view = memoryview(bytearray(_FLOOR_CHUNK))
            while pos < nbytes:
                n = conn.recv_into(view, _FLOOR_CHUNK, socket.MSG_WAITALL)
                if not n:
                    break
                pos += os.pwrite(fd, view[:n], pos)
        else:
            r, w = os.pipe()
            try:
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _FLOOR_CHUNK)
                while pos < nbytes:
                    n = os.splice(conn.fileno(), w, _FLOOR_CHUNK)
                    if not n:
                        break
                    while n:
                        k = os.splice(r, fd, n, offset_dst=pos)
                        pos += k
                        n -= k
            finally:
                os.close(r)
                os.close(w)
        cpu = time.thread_time() - t0
    finally:
        os.close(fd)
        conn.close()
        sender.join()
        listener.close()
    if pos != nbytes:
        raise RuntimeError(f"stored {pos} of {nbytes} bytes")
    return cpu


def _floor_sendfile(path: str, nbytes: int) -> float:
    """Thread CPU seconds of ``os.sendfile`` of ``nbytes`` of a file in the page cache
    to a loopback socket whose reader (another thread) drops them."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def receive() -> None:
        conn, _ = listener.accept()
        with conn:
            _drain_socket(conn, nbytes)

    receiver = threading.Thread(target=receive)
    receiver.start()
    fd = os.open(path, os.O_RDONLY)
    try:
        with socket.create_connection(listener.getsockname()) as out:
            pos = 0
            t0 = time.thread_time()
            while pos < nbytes:
                pos += os.sendfile(out.fileno(), fd, pos, nbytes - pos)
            cpu = time.thread_time() - t0
    finally:
        os.close(fd)
        receiver.join()
        listener.close()
    return cpu


def kernel_floor_ratio(megabytes: int = 100, rounds: int = 3) -> dict:
    """The least CPU per MB a server can spend storing bytes it receives, over the CPU
    per MB of sending them from the page cache with sendfile: no protocol, no Python per
    record, no CRC, 1 MiB per system call, on a loopback socket like the server's.

    This is the floor under ``ServerCpu.track_produce_to_fetch_cpu_ratio``: a Produce
    must at least receive and write its bytes, a Fetch at least sendfile them.  Rounds
    alternate (store, then send the file just stored, so both meet the same page cache
    and machine load); the medians are returned, with per-MB CPU in ms."""
    import statistics
    import tempfile

    nbytes = megabytes * _FLOOR_CHUNK
    rows: dict[str, list[float]] = {"recv+pwrite": [], "splice": [], "sendfile": []}
    with tempfile.TemporaryDirectory(prefix="pylog-bench-floor-") as tmp:
        path = os.path.join(tmp, "segment")
        for _ in range(rounds):
            for mode in ("recv+pwrite", "splice"):
                rows[mode].append(_floor_store(mode, path, nbytes))
            rows["sendfile"].append(_floor_sendfile(path, nbytes))
            os.unlink(path)
    mb = nbytes / 1e6
    ms = {k: statistics.median(v) / mb * 1000 for k, v in rows.items()}
    return {"recv_pwrite_ms_per_mb": ms["recv+pwrite"], "splice_ms_per_mb": ms["splice"],
            "sendfile_ms_per_mb": ms["sendfile"],
            "recv_pwrite_to_sendfile": ms["recv+pwrite"] / ms["sendfile"],
            "splice_to_sendfile": ms["splice"] / ms["sendfile"]}


def _drain_socket(sock: socket.socket, nbytes: int) -> None:
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    left = nbytes
    while left:
        n = sock.recv_into(view, min(len(buf), left))
        if not n:
            raise ConnectionError("closed early")
        left -= n


def _fetch_ranges(segment: str, chunk: int) -> list[tuple[int, int, int]]:
    """(first offset, file position, length) of consecutive ranges of whole batches of
    ``segment``, each at most ``chunk`` bytes: what successive Fetch requests return."""
    import mmap

    from pylog.errors import CorruptRecordError
    from pylog.records import iter_batches

    with open(segment, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        headers = []
        it = iter_batches(memoryview(mm), check_crc=False)
        try:
            for b in it:
                headers.append((b.base_offset, b.size))
        except CorruptRecordError:
            pass       # the active segment's preallocated, zero-filled tail
        del it
    finally:
        try:
            mm.close()
        except BufferError:
            pass       # views still referenced: the mapping goes with them
    out = []
    start_offset = start_pos = None
    pos = 0
    for base, size in headers:
        if start_offset is not None and pos + size - start_pos > chunk:
            out.append((start_offset, start_pos, pos - start_pos))
            start_offset = None
        if start_offset is None:
            start_offset, start_pos = base, pos
        pos += size
    if start_offset is not None:
        out.append((start_offset, start_pos, pos - start_pos))
    return out


def fetch_vs_raw_sendfile(server: ServeProcess, topic: str, megabytes: int = 200) -> dict:
    """Bytes/s of records fetched with Fetch and of ``os.sendfile`` of the same file ranges.

    Both sides send the same ranges of the segment file (found from its batch headers),
    to receivers that read and drop the bytes.  Fetch requests are pipelined, four in
    flight on one connection, as a consumer keeps fetches outstanding; responses are not
    decoded beyond their size.
    """
    import struct

    from pylog.protocol import messages as m
    from pylog.protocol.codec import encode_request
    from pylog.protocol.segments import segments_to_bytes
    from pylog.server import bench

    records = megabytes * 10_000
    bench.produce_wire(server.bootstrap, topic, records, record_size=100, batch_records=9_000,
                       in_flight=4, acks=1, progress=False)
    segment = os.path.join(server.data_dir, f"{topic}-0", "00000000000000000000.log")
    chunk = 32 << 20
    ranges = _fetch_ranges(segment, chunk)
    total = sum(r[2] for r in ranges)
    F = m.FetchRequest
    requests = [segments_to_bytes(encode_request(1, 11, i + 1, "bench", F(
        replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=chunk, isolation_level=0, session_id=0,
        session_epoch=-1, topics=[F.FetchTopic(topic=topic, partitions=[F.FetchPartition(
            partition=0, fetch_offset=first, partition_max_bytes=chunk)])])))
        for i, (first, _pos, _len) in enumerate(ranges)]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray(chunk + (1 << 20))
        view = memoryview(buf)
        head = bytearray(4)
        received = 0
        t0 = time.perf_counter()
        sent = 0
        for i in range(len(requests)):
            while sent < len(requests) and sent < i + 4:
                sock.sendall(requests[sent])
                sent += 1
            sock.recv_into(head, 4, socket.MSG_WAITALL)
            (size,) = struct.unpack(">i", head)
            got = 0
            while got < size:
                n = sock.recv_into(view[got:size], size - got)
                if not n:
                    raise ConnectionError("closed early")
                got += n
            received += size
        fetch_s = time.perf_counter() - t0
    if received < total:
        raise RuntimeError(f"fetched {received} bytes, expected at least {total}")
    fetch_rate = total / fetch_s
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    receiver_done = threading.Event()

    def receive() -> None:
        conn, _ = listener.accept()
        with conn:
            _drain_socket(conn, total)
        receiver_done.set()

    t = threading.Thread(target=receive)
    t.start()
    with socket.create_connection(("127.0.0.1", port)) as out, open(segment, "rb") as f:
        t0 = time.perf_counter()
        for _first, pos, length in ranges:
            end = pos + length
            while pos < end:
                pos += os.sendfile(out.fileno(), f.fileno(), pos, end - pos)
        receiver_done.wait(60)
        raw_s = time.perf_counter() - t0
    t.join()
    listener.close()
    raw_rate = total / raw_s
    return {"fetch_mb_per_s": fetch_rate / 1e6, "raw_sendfile_mb_per_s": raw_rate / 1e6,
            "ratio": fetch_rate / raw_rate}


def end_to_end_latency(bootstrap: str, topic: str, rate: int = 10_000, seconds: float = 3.0, *,
                       raw: bool = False) -> dict:
    """Produce at ``rate`` records/s with confluent-kafka (linger.ms=0) while a consumer
    reads; latency = receive time - the send time carried in each record.  With ``raw``,
    the measured latencies (ms) are also returned, as ``samples``, and beside them the
    time each of those records was sent (``time.perf_counter_ns()``), as ``sent_ns``."""
    import struct

    from confluent_kafka import Consumer, Producer, TopicPartition

    total = int(rate * seconds)
    latencies: list[float] = []
    sent_at: list[int] = []
    ready = threading.Event()
    done = threading.Event()

    def consume() -> None:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-{time.time_ns()}",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 100, "fetch.min.bytes": 1,
                      "socket.nagle.disable": True})
        c.assign([TopicPartition(topic, 0, 0)])
        c.consume(1, 1.0)
        ready.set()
        while len(latencies) < total and not done.is_set():
            # poll() hands over each record as soon as it is there (consume(n) would wait
            # to collect n of them).
            msg = c.poll(0.1)
            if msg is not None and msg.error() is None:
                now = time.perf_counter_ns()
                (sent,) = struct.unpack_from(">q", msg.value())
                latencies.append((now - sent) / 1e6)
                if raw:
                    sent_at.append(sent)
        c.close()

    t = threading.Thread(target=consume)
    t.start()
    ready.wait(30)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 0, "socket.nagle.disable": True})
    pad = b"x" * 92
    # Send in 1 ms ticks (rate / 1000 records each) and sleep between them, so the producer
    # does not spin on the GIL the consumer thread needs.
    per_tick = max(1, rate // 1000)
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        due = t0 + sent / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        for _ in range(min(per_tick, total - sent)):
            p.produce(topic, struct.pack(">q", time.perf_counter_ns()) + pad)
            sent += 1
        p.poll(0)
    p.flush(30)
    deadline = time.monotonic() + 30
    while len(latencies) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    t.join(30)
    from pylog.server.bench import percentiles

    # The first half second warms up connections and fetch sessions: not measured.
    measured = latencies[min(len(latencies), rate // 2):]
    out = {"records": len(measured), **percentiles(measured)}
    if raw:
        out["samples"] = measured
        out["sent_ns"] = sent_at[min(len(sent_at), rate // 2):]
    return out


# ---------------------------------------------------------------------------------------
# asv classes
# ---------------------------------------------------------------------------------------


class _Once:
    """Each figure is one whole run against a fresh server (a ``track_*`` value), not a
    timing repeated by asv."""
    timeout = 600
    number = 1
    repeat = 1


class ConfluentProduce(_Once):
    records = 1_000_000

    def setup(self) -> None:
        self.server = ServeProcess()
        _create_topic(self.server.bootstrap, "produce")

    def teardown(self) -> None:
        self.server.stop()

    def track_records_per_s(self) -> float:
        return confluent_produce(self.server.bootstrap, "produce", self.records)

    track_records_per_s.unit = "records/s"


class ConfluentConsume(_Once):
    records = 1_000_000

    def setup(self) -> None:
        from pylog.server import bench

        self.server = ServeProcess()
        bench.produce_wire(self.server.bootstrap, "consume", self.records, record_size=100,
                           batch_records=9_000, progress=False)

    def teardown(self) -> None:
        self.server.stop()

    def track_records_per_s(self) -> float:
        return confluent_consume(self.server.bootstrap, "consume", self.records)

    track_records_per_s.unit = "records/s"


class ServerCpu(_Once):
    megabytes = 200

    def setup(self) -> None:
        self.server = ServeProcess()

    def teardown(self) -> None:
        self.server.stop()

    def track_produce_to_fetch_cpu_ratio(self) -> float:
        return server_cpu_ratio(self.server, "cpu", self.megabytes)["ratio"]

    track_produce_to_fetch_cpu_ratio.unit = "ratio"

    def track_produce_to_fetch_cpu_ratio_large_batches(self) -> float:
        return server_cpu_ratio_large_batches(self.server, "cpu-large", self.megabytes)["ratio"]

    track_produce_to_fetch_cpu_ratio_large_batches.unit = "ratio"


class KernelFloor(_Once):
    megabytes = 100

    def track_recv_pwrite_to_sendfile_cpu_ratio(self) -> float:
        return kernel_floor_ratio(self.megabytes)["recv_pwrite_to_sendfile"]

    track_recv_pwrite_to_sendfile_cpu_ratio.unit = "ratio"

    def track_splice_to_sendfile_cpu_ratio(self) -> float:
        return kernel_floor_ratio(self.megabytes)["splice_to_sendfile"]

    track_splice_to_sendfile_cpu_ratio.unit = "ratio"

    def track_server_produce_over_floor(self) -> float:
        server = ServeProcess()
        try:
            _create_topic(server.bootstrap, "floor")
            c0 = server.cpu_seconds()
            confluent_produce(server.bootstrap, "floor", 2_000_000)
            produce_ms_per_mb = (server.cpu_seconds() - c0) / 200 * 1000   # 2M x 100 bytes
        finally:
            server.stop()
        return produce_ms_per_mb / kernel_floor_ratio(self.megabytes)["recv_pwrite_ms_per_mb"]

    track_server_produce_over_floor.unit = "ratio"


class Sendfile(_Once):
    megabytes = 200

    def setup(self) -> None:
        self.server = ServeProcess()

    def teardown(self) -> None:
        self.server.stop()

    def track_fetch_to_raw_sendfile_ratio(self) -> float:
        return fetch_vs_raw_sendfile(self.server, "sendfile", self.megabytes)["ratio"]

    track_fetch_to_raw_sendfile_ratio.unit = "ratio"


class EndToEndLatency(_Once):
    seconds = 3.0

    def setup(self) -> None:
        self.server = ServeProcess()
        _create_topic(self.server.bootstrap, "latency")

    def teardown(self) -> None:
        self.server.stop()

    def track_p99_ms(self) -> float:
        return end_to_end_latency(self.server.bootstrap, "latency", 10_000, self.seconds)["p99"]

    track_p99_ms.unit = "ms"


def main() -> None:
    """Run every measurement once and print the figures."""
    records = int(os.environ.get("PYLOG_BENCH_RECORDS", "1000000"))
    server = ServeProcess()
    try:
        _create_topic(server.bootstrap, "produce")
        rate = confluent_produce(server.bootstrap, "produce", records)
        print(f"confluent-kafka produce: {rate:,.0f} records/s ({rate * 100 / 1e6:.1f} MB/s)")
        rate = confluent_consume(server.bootstrap, "produce", records)
        print(f"confluent-kafka consume: {rate:,.0f} records/s")
        cpu = server_cpu_ratio(server, "cpu")
        print(f"server CPU (confluent-kafka): {cpu['cpu_ms_per_mb_produce']:.2f} ms/MB produced, "
              f"{cpu['cpu_ms_per_mb_fetch']:.2f} ms/MB fetched, ratio {cpu['ratio']:.2f}")
        cpu = server_cpu_ratio_large_batches(server, "cpu-large")
        print(f"server CPU (pylog client, 1 MB batches): {cpu['cpu_ms_per_mb_produce']:.2f} ms/MB produced, "
              f"{cpu['cpu_ms_per_mb_fetch']:.2f} ms/MB fetched, ratio {cpu['ratio']:.2f}")
        fl = kernel_floor_ratio()
        print(f"kernel floor (no server): recv+pwrite {fl['recv_pwrite_ms_per_mb']:.2f} ms/MB, splice "
              f"{fl['splice_ms_per_mb']:.2f} ms/MB, sendfile {fl['sendfile_ms_per_mb']:.2f} ms/MB: ratios "
              f"{fl['recv_pwrite_to_sendfile']:.2f} and {fl['splice_to_sendfile']:.2f}")
        sf = fetch_vs_raw_sendfile(server, "sendfile")
        print(f"fetch {sf['fetch_mb_per_s']:.0f} MB/s vs raw sendfile {sf['raw_sendfile_mb_per_s']:.0f} MB/s: "
              f"ratio {sf['ratio']:.2f}")
        _create_topic(server.bootstrap, "latency")
        lat = end_to_end_latency(server.bootstrap, "latency")
        print(f"end-to-end latency at 10k records/s ({lat['records']} records): p50 {lat['p50']:.2f} ms "
              f"p99 {lat['p99']:.2f} ms max {lat['max']:.2f} ms")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
