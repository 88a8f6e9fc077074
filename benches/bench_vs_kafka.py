"""``pylog serve`` side by side with Apache Kafka (issue #16): the same librdkafka
(confluent-kafka) workloads against both, on this machine, in the same run.

Apache Kafka 4.x runs as a single KRaft node (broker and controller in one JVM) from the
jars Maven fetches for the reference tests (``tests/kafka_ref/pom.xml``; its
``target/classpath.txt`` when there, else Maven is run on that pom; ``PYLOG_KAFKA_CLASSPATH``
overrides), with the JVM options of Kafka's ``kafka-server-start.sh`` (1 GB heap, G1).
Both servers are child processes started and measured the same way
(:mod:`pylog.server.kafka_peer`).  Both are warmed first with one unmeasured round of
every workload (so the JVM has compiled the hot paths of each, both record sizes
included), then each round runs every workload on one server and then on the other, the
order alternating; the figures are the medians of the rounds, and the ratios pylog /
Kafka (goals in brackets), each goal judged by the median of the rounds' own ratios with a
sign test of the rounds that met it (:func:`paired`, :func:`verdict`).  Only one server works at a time, and the other is idle but
not silent: a JVM keeps compiling, collecting and running its timers.  So while one
server is measured the other runs at ``SCHED_IDLE`` (:func:`take_turn`), and gets a CPU
only when nothing else wants it; the measured one runs at this process's policy (under
``chrt -f``, real-time, as the clients).  Without that, in runs under ``chrt -f 10`` the
idle Kafka took 4-30 ms of CPU during each 0.2-0.8 s consume of pylog's, at real-time
priority, and the idle pylog well under 1 ms during Kafka's.  The clients' process keeps
the memory it frees (:func:`keep_client_heap`): otherwise each produce run faulted in
its ~300 MB of copied records afresh, 0.2-0.3 s of a 0.45 s run, whichever server it ran on.

- produce and consume throughput, 100 B and 1 KB records, records/s (ratio >= 1.0):
  :func:`benches.bench_server.confluent_produce` (acks=1, no compression, linger 5 ms)
  and :func:`~benches.bench_server.confluent_consume`, one partition.  A consume takes
  0.2-0.8 s, and the same server's figure swung by 30% from round to round while other
  jobs shared the machine, which they can only slow down: each round reads its records
  ``CONSUME_READS`` (3) times, a fresh consumer each time, and keeps the best read.  A
  produce swings more (200,000 records of 1 KB: 175k-1.18M records/s on one server in
  one run): on this VM the page cache takes memory the host has not backed or has
  taken back (a DAMON scheme pages out cold file pages, and free-page reporting hands
  them to the host), and a write into such a page waits for the host.  Which pages a
  run gets is the machine's doing, not the server's, and it too can only slow a run
  down: each round produces ``PRODUCE_RUNS`` (3) times, a fresh producer and a topic
  of its own each time, and keeps the best run (the consumes read the first topic);
- fetch throughput with a minimal client (:func:`fetch_loop`), records/s and server CPU
  per MB: what each server's Fetch path delivers when the client does next to nothing.
  librdkafka's consumer is the limit of the consume figures above: read from its queue
  alone, with nothing left to fetch, it takes 2.7M records/s of 100 B and 1.85M of 1 KB
  on this machine, and fetching beside it (its broker thread receiving and parsing every
  record into an op, while the server shares the other core) brings that to ~1.8M and
  ~1.3M on either server.  These rows show the servers themselves;
- the ceiling: the throughput figures above, in every round, against
  :mod:`benches.ceiling_server` (:class:`CeilingServer`), a Kafka-protocol server that
  writes produced records to a file with one ``pwrite`` and answers a Fetch with a view
  of that file's mapping, and does nothing else.  No server that keeps its records in
  files does less work, so what the clients reach against it is their limit on this
  machine (the client's own, and the page cache's: on this VM, records written into pages
  the guest has not touched lately cost a host fault per page, 0.25-0.35 GB/s for any
  writer); each server's figure is also given as the median of its rounds' ratios to the
  ceiling (its run sits between the two servers' in each round).  A throughput goal on
  which both servers sit at the ceiling is decided by the client and the machine, and can
  only be a tie.  (Latency has no such ceiling here: this server hands a Produce to a
  waiting Fetch across threads, which pylog's event loop does not);
- end-to-end latency p50 and p99 at 10,000 records/s (p99 ratio <= 1.0):
  :func:`benches.bench_server.end_to_end_latency` (linger 0, a consumer polling);
- server CPU per MB: the server process's CPU time (user + system, every thread) over a
  phase / the MB of record values in it, produce and consume, both record sizes;
- server RSS after the warm-up round (the first 1M records of 100 B produced and
  consumed, and the 1 KB ones; <= 0.25);
- cold start: spawning the process to the first answered ApiVersions request, on an
  empty data directory (<= 0.1); Kafka's ``kafka-storage format`` runs before and is
  not counted;
- restart over 1 GB: with every round's data plus a 1 GB topic of 1 KB records on disk,
  stop cleanly (SIGTERM), start again, time from spawning to the first Fetch answered
  with records of that topic.

Run: ``python -m benches.bench_vs_kafka [rounds]`` prints the table (the command in the
README's performance section), or asv (``asv run --python=same -b bench_vs_kafka``): one
``setup_cache`` runs the whole comparison once, each ratio is a ``track_*`` value.
``PYLOG_BENCH_SMALL=1`` shrinks every size (the smoke test).  The machine's load average
is printed with the table: both servers and the clients share its cores.
"""

from __future__ import annotations

import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

from benches.bench_server import _create_topic, confluent_consume, confluent_produce, end_to_end_latency
from pylog.server.kafka_peer import (ChildServer, KafkaServer, PylogServer, first_fetch_seconds,
                                     resolve_classpath, side_by_side, take_turn)

SMALL = os.environ.get("PYLOG_BENCH_SMALL", "") not in ("", "0")
#: records per throughput run, by record size
RECORDS = {100: 20_000, 1000: 5_000} if SMALL else {100: 1_000_000, 1000: 200_000}
LATENCY_RATE = 2_000 if SMALL else 10_000
LATENCY_SECONDS = 1.0 if SMALL else 3.0
RESTART_BYTES = 5_000_000 if SMALL else 1_000_000_000
#: reads of a round's records, each by a fresh consumer; the round's consume figure is the
#: best of them (see the module docstring)
CONSUME_READS = 1 if SMALL else 3
#: produce runs per round, each by a fresh producer to a topic of its own; the round's
#: produce figure is the best of them (see the module docstring)
PRODUCE_RUNS = 1 if SMALL else 3
#: bytes of records the minimal Fetch client reads per run (the round's topic, over and over)
FETCH_BYTES = 5_000_000 if SMALL else 1_000_000_000
COLD_TRIALS = 1 if SMALL else 3
ROUNDS = 1 if SMALL else 3

_KAFKA_REF = Path(__file__).resolve().parents[1] / "tests" / "kafka_ref"

#: (key, label, format, goal) of every figure, in the table's order; the goal is the
#: issue's bound on the ratio pylog / Kafka, ">=" or "<=" it.
FIGURES = [
    ("produce_100", "produce 100 B, records/s", ",.0f", (">=", 1.0)),
    ("consume_100", "consume 100 B, records/s", ",.0f", (">=", 1.0)),
    ("produce_1000", "produce 1 KB, records/s", ",.0f", (">=", 1.0)),
    ("consume_1000", "consume 1 KB, records/s", ",.0f", (">=", 1.0)),
    ("fetch_100", "fetch 100 B, minimal client, records/s", ",.0f", None),
    ("fetch_1000", "fetch 1 KB, minimal client, records/s", ",.0f", None),
    ("latency_p50", "end-to-end p50 ms at 10k/s", ".2f", None),
    ("latency_p99", "end-to-end p99 ms at 10k/s", ".2f", ("<=", 1.0)),
    ("cpu_produce_100", "CPU ms/MB produce 100 B", ".2f", None),
    ("cpu_consume_100", "CPU ms/MB consume 100 B", ".2f", None),
    ("cpu_produce_1000", "CPU ms/MB produce 1 KB", ".2f", None),
    ("cpu_consume_1000", "CPU ms/MB consume 1 KB", ".2f", None),
    ("cpu_fetch_100", "CPU ms/MB fetch 100 B, minimal client", ".2f", None),
    ("cpu_fetch_1000", "CPU ms/MB fetch 1 KB, minimal client", ".2f", None),
    ("rss_mb", "RSS MB after 1M records", ".0f", ("<=", 0.25)),
    ("cold_start_s", "cold start s", ".3f", ("<=", 0.1)),
    ("restart_s", "restart over 1 GB s", ".3f", None),
]

#: Figures also measured on the ceiling (:class:`CeilingServer`), in every round, between
#: the two servers: the clients' own limit on this machine.
CEILING_FIGURES = ("produce_100", "consume_100", "produce_1000", "consume_1000", "fetch_100", "fetch_1000")

#: Figures measured outside the rounds (cold starts before them, RSS in the warm-up,
#: the restart after them): judged by the ratio of the two sides' medians.
NOT_PER_ROUND = frozenset({"rss_mb", "cold_start_s", "restart_s"})


class CeilingServer(ChildServer):
    """:mod:`benches.ceiling_server`: a Kafka-protocol server that writes records to a file
    and does no other work, started and measured as the two servers are."""

    name = "ceiling"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "benches.ceiling_server", "--listen", self.bootstrap,
                "--data-dir", str(self.data_dir)]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        return env


def kafka_classpath() -> str:
    """Apache Kafka's classpath: ``PYLOG_KAFKA_CLASSPATH``, else the reference tests'
    (Maven is run on tests/kafka_ref/pom.xml if it has not been yet)."""
    given = os.environ.get("PYLOG_KAFKA_CLASSPATH")
    if given:
        return resolve_classpath(given)
    cp_file = _KAFKA_REF / "target" / "classpath.txt"
    if not cp_file.exists():
        subprocess.run(["mvn", "-q", "-B", "-f", str(_KAFKA_REF / "pom.xml"), "dependency:build-classpath"],
                       check=True, stdin=subprocess.DEVNULL, timeout=900)
    return resolve_classpath(str(cp_file))


def fetch_loop(bootstrap: str, topic: str, records: int, total_bytes: int,
               max_bytes: int = 10_485_760) -> tuple[int, float]:
    """A minimal Fetch client on partition 0 of ``topic`` (``records`` records from offset
    0): Fetch v12 requests one after another, as a consumer's fetcher sends them (up to
    ``max_bytes`` per answer, librdkafka's ``max.partition.fetch.bytes`` in the consume
    runs), each answer received into one buffer and its batch headers walked to the next
    offset, nothing decoded; from the start again at the end of the records, until
    ``total_bytes`` bytes of whole batches arrived.  Bytes of a batch cut off at the end
    of an answer (Kafka sends them, pylog does not) are not counted.  Returns (bytes,
    records/s)."""
    from pylog.protocol.codec import decode_response_body, encode_request

    host, port = bootstrap.rsplit(":", 1)
    buf = bytearray(64 << 20)
    view = memoryview(buf)
    head, be64, be32 = struct.Struct(">i"), struct.Struct(">q"), struct.Struct(">i")
    got_bytes = got_records = offset = corr = 0
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        while got_bytes < total_bytes:
            corr += 1
            req = {"replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 52_428_800,
                   "isolation_level": 0, "session_id": 0, "session_epoch": -1,
                   "topics": [{"topic": topic, "partitions": [{
                       "partition": 0, "current_leader_epoch": -1, "fetch_offset": offset,
                       "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": max_bytes}]}],
                   "forgotten_topics_data": [], "rack_id": ""}
            sock.sendall(b"".join(bytes(seg) for seg in encode_request(1, 12, corr, "fetch-loop", req)))
            n = 0
            while n < 4:
                n += sock.recv_into(view[n:4])
            size = head.unpack_from(buf, 0)[0] + 4
            if size > len(buf):
                raise RuntimeError(f"fetch_loop: a {size}-byte answer")
            while n < size:
                r = sock.recv_into(view[n:size])
                if not r:
                    raise RuntimeError("fetch_loop: the server closed the connection")
                n += r
            # Header v1: correlation id, then an empty tagged-field section (one byte).
            if buf[8] != 0:
                raise RuntimeError("fetch_loop: tagged fields in a response header")
            body = decode_response_body(1, 12, view[:size], 9, copy=False)
            part = body.responses[0].partitions[0]
            if body.error_code or part.error_code:
                raise RuntimeError(f"fetch_loop: error {body.error_code or part.error_code}")
            data = part.records
            pos, end, nxt = 0, len(data), offset
            while pos + 61 <= end:
                length = be32.unpack_from(data, pos + 8)[0]
                if pos + 12 + length > end:
                    break                       # cut off at the end of the answer
                nxt = be64.unpack_from(data, pos)[0] + be32.unpack_from(data, pos + 23)[0] + 1
                pos += 12 + length
            if nxt == offset:
                raise RuntimeError(f"fetch_loop: no whole batch at offset {offset}")
            got_bytes += pos
            got_records += nxt - offset
            offset = nxt if nxt < records else 0
            data = part = body = None
        elapsed = time.perf_counter() - t0
    return got_bytes, got_records / elapsed


def _round(server, r: int | str, out: dict, latency: bool = True) -> None:
    """One round of every throughput workload on ``server`` and, if ``latency``, the
    latency one (``r`` names its topics; the warm-up round, ``"warm"``, records the
    server's RSS)."""
    for size, n in RECORDS.items():
        # Each produce run to a topic of its own, and the reads from the first: a consumer
        # of a topic holding more than the records it counts keeps fetching past them, and
        # read 1.2-1.6M records/s of 100 B where it read 1.9-2.0M of a topic of its own.
        topics = [f"t{size}-{r}"] + [f"t{size}-{r}-{k}" for k in range(1, PRODUCE_RUNS)]
        topic = topics[0]
        for t in topics:
            _create_topic(server.bootstrap, t)
        c0 = server.cpu_seconds()
        out[f"produce_{size}"].append(max(confluent_produce(server.bootstrap, t, n, size) for t in topics))
        c1 = server.cpu_seconds()
        out[f"consume_{size}"].append(max(confluent_consume(server.bootstrap, topic, n)
                                          for _ in range(CONSUME_READS)))
        c2 = server.cpu_seconds()
        mb = n * size / 1e6
        out[f"cpu_produce_{size}"].append((c1 - c0) * 1000 / (mb * PRODUCE_RUNS))
        out[f"cpu_consume_{size}"].append((c2 - c1) * 1000 / (mb * CONSUME_READS))
        got, rate = fetch_loop(server.bootstrap, topic, n, FETCH_BYTES)
        out[f"fetch_{size}"].append(rate)
        out[f"cpu_fetch_{size}"].append((server.cpu_seconds() - c2) * 1000 / (got / 1e6))
        if size == 100 and r == "warm":
            out["rss_mb"].append(server.rss_bytes() / 1e6)
    if not latency:
        return
    _create_topic(server.bootstrap, f"latency-{r}")
    lat = end_to_end_latency(server.bootstrap, f"latency-{r}", LATENCY_RATE, LATENCY_SECONDS)
    out["latency_p50"].append(lat["p50"])
    out["latency_p99"].append(lat["p99"])


def keep_client_heap() -> bool:
    """Make this process's C allocator (glibc) keep the memory it frees, so each produce
    run reuses the last one's instead of faulting it in afresh.  confluent-kafka copies
    every record into a message of its own (~300 MB for 1M records of 100 B), freed by
    the delivery reports in ``flush()``; glibc gave that back to the kernel, and every
    produce run took ~77,000 page faults: 0.2-0.3 s of a 0.45 s run on this VM (a bare
    touch of 300 MB of fresh memory takes 0.25-0.31 s here).  That is the client's cost,
    not either server's, and its swings fell on either server's rounds.  The broker threads'
    request buffers (~1 MB) stay in their heaps too (``M_MMAP_THRESHOLD``: setting the
    trim threshold turns off glibc's self-adjusting one).  Returns whether it was done."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_TRIM_THRESHOLD, 1 << 30)) and bool(mallopt(M_MMAP_THRESHOLD, 16 << 20))


def compare(rounds: int = ROUNDS, log=sys.stderr) -> dict:
    """Every figure for pylog and Kafka (medians of ``rounds``), their ratios, and the
    load average (1 minute) at the start and at the end of the run."""
    cp = kafka_classpath()
    keep_client_heap()
    load0 = os.getloadavg()[0]
    samples: dict[str, dict[str, list[float]]] = {
        name: {key: [] for key, *_ in FIGURES} for name in ("pylog", "kafka", "ceiling")}
    # Cold starts first, on empty directories, before the long run heats the page cache
    # with its data (both servers' code is in it after the first trial either way).
    for trial in range(COLD_TRIALS):
        for name in (("pylog", "kafka") if trial % 2 == 0 else ("kafka", "pylog")):
            server = PylogServer() if name == "pylog" else KafkaServer(cp)
            try:
                server.start()
                samples[name]["cold_start_s"].append(server.start_seconds)
            finally:
                server.close()
            print(f"cold start {name}: {server.start_seconds:.3f} s", file=log, flush=True)
    servers = {"pylog": PylogServer(), "kafka": KafkaServer(cp), "ceiling": CeilingServer()}
    turns = False
    try:
        for name, server in servers.items():
            server.start()
        for name, server in servers.items():
            turns = take_turn(servers, name)
            warm: dict[str, list[float]] = {key: [] for key, *_ in FIGURES}
            _round(server, "warm", warm, latency=name != "ceiling")
            samples[name]["rss_mb"] += warm["rss_mb"]
            print(f"{name} warmed", file=log, flush=True)
        for r in range(rounds):
            # The ceiling between the two, so that it shares what the machine does to either.
            for name in (("pylog", "ceiling", "kafka") if r % 2 == 0 else ("kafka", "ceiling", "pylog")):
                take_turn(servers, name)
                _round(servers[name], r, samples[name], latency=name != "ceiling")
                got = {k: round(v[-1], 2) for k, v in samples[name].items() if v}
                print(f"round {r + 1}/{rounds} {name}: {got}", file=log, flush=True)
        for name in ("pylog", "kafka"):
            server = servers[name]
            take_turn(servers, name)
            _create_topic(server.bootstrap, "restart")
            confluent_produce(server.bootstrap, "restart", RESTART_BYTES // 1000, 1000)
        for name in ("pylog", "kafka"):
            take_turn(servers, name)
            samples[name]["restart_s"].append(first_fetch_seconds(servers[name], "restart"))
            print(f"restart {name}: {samples[name]['restart_s'][-1]:.3f} s", file=log, flush=True)
    finally:
        for server in servers.values():
            server.close()
    result: dict = {"load_average": (load0, os.getloadavg()[0]), "rounds": rounds, "turns": turns}
    for name in ("pylog", "kafka"):
        result[name] = {k: statistics.median(v) for k, v in samples[name].items() if v}
    result["ratio"] = {k: result["pylog"][k] / result["kafka"][k] for k in result["pylog"]
                       if result["kafka"].get(k)}
    result.update(paired(samples, rounds))
    result.update(against_ceiling(samples))
    return result


def against_ceiling(samples: dict) -> dict:
    """``ceiling``: the median of each of :data:`CEILING_FIGURES` on the ceiling;
    ``vs_ceiling``: for pylog and for Kafka, the median of each round's ratio to that
    round's ceiling run (which ran between the two servers).  ``samples``: each side's
    per-round lists, by figure, the ceiling's under ``"ceiling"``."""
    ceiling = samples.get("ceiling", {})
    keys = [k for k in CEILING_FIGURES if ceiling.get(k) and all(ceiling[k])]
    return {"ceiling": {k: statistics.median(ceiling[k]) for k in keys},
            "vs_ceiling": {name: {k: statistics.median(a / b for a, b in zip(samples[name][k], ceiling[k]))
                                  for k in keys if samples[name].get(k)}
                           for name in ("pylog", "kafka")}}


def paired(samples: dict, rounds: int) -> dict:
    """Each round's own ratio of every figure measured in the rounds: its two sides ran
    back to back under the same load, so the ratio cancels what the machine did to
    both, which the ratio of the two medians does not (it can set pylog's slow rounds
    against Kafka's fast ones when the VM slowed down part way).  ``paired``: their
    median, which a goal is judged on; ``rounds_met`` and ``sign_p``: how many rounds met
    the goal and a sign test of that, which say how much of it the rounds' noise could
    be.  ``samples``: each side's per-round lists, by figure."""
    out: dict = {"paired": {}, "rounds_met": {}, "sign_p": {}}
    for key, *_rest, goal in FIGURES:
        pairs = list(zip(samples["pylog"].get(key, ()), samples["kafka"].get(key, ())))
        if key in NOT_PER_ROUND or not pairs or len(pairs) != rounds or not all(b for _a, b in pairs):
            continue
        ratios = [a / b for a, b in pairs]
        out["paired"][key] = statistics.median(ratios)
        if goal is not None:
            op, bound = goal
            met = sum((x >= bound) if op == ">=" else (x <= bound) for x in ratios)
            out["rounds_met"][key] = met
            out["sign_p"][key] = sign_test(met, rounds)
    return out


def sign_test(k: int, n: int) -> float:
    """Two-sided p-value of ``k`` successes in ``n`` rounds under a fair coin: how
    likely a split at least this uneven is when the two servers are equal."""
    from math import comb

    tail = sum(comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def verdict(result: dict, key: str) -> str | None:
    """Whether the goal of ``key`` is met: by the median of the rounds' own ratios where
    every round has both sides (else by the ratio of the medians), with the rounds that
    met it and what the sign test says of them."""
    goal = next(g for k, *_rest, g in FIGURES if k == key)
    ratio = result["paired"].get(key, result["ratio"].get(key))
    if goal is None or ratio is None:
        return None
    op, bound = goal
    met = ratio >= bound if op == ">=" else ratio <= bound
    text = f"goal {op} {bound:g}: {'met' if met else 'NOT met'}"
    if key not in result.get("rounds_met", {}):
        return text
    k, n, p = result["rounds_met"][key], result["rounds"], result["sign_p"][key]
    if p >= 0.05:
        how = "a tie within the rounds' noise"
    else:
        how = "met beyond the rounds' noise" if 2 * k > n else "missed beyond the rounds' noise"
    return f"{text}, rounds' median {ratio:.2f}x, met in {k} of {n} (sign test p={p:.2g}: {how})"


def table(result: dict) -> str:
    """The side-by-side table, with each goal and whether it is met."""
    rows = [(label, result["pylog"].get(key), result["kafka"].get(key), spec) for key, label, spec, _ in FIGURES]
    lines = side_by_side(f"pylog serve vs Apache Kafka, confluent-kafka clients, medians of {result['rounds']} "
                         f"alternating rounds; load average {result['load_average'][0]:.1f} at the start, "
                         f"{result['load_average'][1]:.1f} at the end"
                         + ("; the idle server at SCHED_IDLE" if result.get("turns") else ""), rows).splitlines()
    for i, (key, *_rest) in enumerate(FIGURES):
        said = verdict(result, key)
        if said is not None:
            lines[i + 2] += f"   {said}"
    if result.get("ceiling"):
        lines += ["", ceiling_table(result)]
    return "\n".join(lines)


def ceiling_table(result: dict) -> str:
    """Each server against the ceiling (:class:`CeilingServer`): medians of the rounds'
    own ratios, each round's ceiling run between that round's two servers."""
    labels = {key: label for key, label, *_ in FIGURES}
    spec = {key: s for key, _label, s, _goal in FIGURES}
    vs = result["vs_ceiling"]
    body = [(labels[k], format(result["ceiling"][k], spec[k]), f"{vs['pylog'][k]:.2f}x", f"{vs['kafka'][k]:.2f}x")
            for k in CEILING_FIGURES if k in result["ceiling"]]
    head = ("", "ceiling", "pylog/ceiling", "kafka/ceiling")
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(4)]
    lines = ["the same clients against a server that only writes records to a file and sends them from its "
             "mapping (benches.ceiling_server): the ceiling's "
             "median, and the medians of the rounds' ratios to it"]
    for r in [head, *body]:
        lines.append("  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:]))]))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# asv
# ---------------------------------------------------------------------------------------


class VsKafka:
    """Each ``track_*`` is one ratio pylog / Kafka from a single comparison run
    (``setup_cache``), so every ratio's two sides were measured in the same run."""

    timeout = 3600
    number = 1
    repeat = 1

    def setup_cache(self) -> dict:
        return compare()


def _track(key: str, which: tuple[str, ...] = ("ratio",), suffix: str = "ratio"):
    """An asv ``track_`` method reading ``result[which[0]][which[1]]...[key]``."""
    def track(self, result: dict) -> float:
        for step in which:
            result = result[step]
        return result[key]

    track.__name__ = f"track_{key}_{suffix}"
    track.unit = "ratio"
    return track


for _key in CEILING_FIGURES:
    setattr(VsKafka, f"track_{_key}_vs_ceiling_ratio", _track(_key, ("vs_ceiling", "pylog"), "vs_ceiling_ratio"))
for _key, *_rest, _goal in FIGURES:
    setattr(VsKafka, f"track_{_key}_ratio", _track(_key))
    if _goal is not None and _key not in NOT_PER_ROUND:
        setattr(VsKafka, f"track_{_key}_rounds_median_ratio", _track(_key, ("paired",), "rounds_median_ratio"))


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    t0 = time.monotonic()
    result = compare(rounds)
    print(table(result))
    print(f"({time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
