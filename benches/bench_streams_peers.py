"""pylog.streams against its peers on one server (issue #15's speed section): the same two
jobs, run by pylog.streams, Quix Streams and Kafka Streams against the SAME fresh
``pylog serve`` in the same run, and by pylog.streams embedded (``pylog.open``).

The jobs, over an input topic of 4 partitions pre-filled with ``N`` records (keys from 1,000
distinct ``key-<i>``, 100-byte random values, record timestamps one millisecond apart):

- ``stateless``: filter (first value byte non-zero) + map_values (the first 50 bytes), bytes
  serdes (no JSON), to an output topic;
- ``windowed``: group by key + 1-second tumbling windows over the record timestamps (no
  grace) + count in a persistent store (pylog: RocksDB through rocksdict; Quix: its RocksDB;
  Kafka Streams: its RocksDB), changelog on, every update emitted (Kafka Streams' record
  cache off), to an output topic.

Each implementation gets its own consumer group and output topic; records/s = N / the time
from its start (just before ``StreamsApp.run`` / ``Application.run`` /
``KafkaStreams.start``, after the imports and the client's construction) until the output
topic's end offsets add up to every result (``expected_outputs``).  Everyone commits every
second, at-least-once, on one thread.  The remote implementations run in subprocesses of
their own (the JVM; Quix Streams in its own virtualenv, see below; pylog.streams on
``pylog.connect``), started one at a time; the embedded run is in this process.

Quix Streams pins a confluent-kafka older than the one the test suite pins, so it cannot
share the test environment: when ``quixstreams`` is not importable here (asv's environment
has it from asv.conf.json's matrix), it runs from a virtualenv of its own under
``~/.cache/pylog-bench/quixstreams-<version>-<pins>`` that :func:`quix_python` creates once
with pip, every package pinned by ci/constraints-quix.txt.  Kafka Streams runs only where Java and Maven
are (the jars and ``StreamsBench.java`` come from tests/kafka_ref's Maven build); without
them its figures are NaN.

Figures (asv ``track_*``; ``python -m benches.bench_streams_peers`` prints them):
records/s of each implementation and job, and the ratios the issue sets goals for:
pylog/quix (>= 3) and pylog/kafka-streams (>= 0.5) on the server, and pylog embedded
(>= 1M records/s stateless, >= 300k windowed), with the windowed job's in-memory store
beside it (``embedded_windowed_in_memory``: what the persistent store costs).  ``python -m
benches.bench_streams_peers embedded [ROUNDS]`` runs the three embedded figures alone,
alternating, and prints their medians over ROUNDS (default 5) rounds.
``PYLOG_BENCH_SMALL=1`` shrinks N to 2,000 for the smoke test; ``PYLOG_BENCH_PEERS_N`` sets it.

This module is also the worker the subprocesses run (``python bench_streams_peers.py
worker IMPL JOB BOOTSTRAP APP_ID INPUT OUTPUT STATE_DIR``): it imports nothing but the
standard library at the top, as the Quix virtualenv has no pylog.  A worker prints
``{"check": "starting"}`` just before it starts processing and stops (committing) when its
standard input is closed.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SMALL = os.environ.get("PYLOG_BENCH_SMALL", "") not in ("", "0")
N = int(os.environ.get("PYLOG_BENCH_PEERS_N") or (2_000 if SMALL else 1_000_000))
PARTITIONS = 4
JOBS = ("stateless", "windowed")
REMOTE = ("pylog", "quix", "kafka_streams")
COMMIT_INTERVAL_MS = 1_000
WINDOW_MS = 1_000

ROOT = Path(__file__).resolve().parent.parent
KAFKA_REF = ROOT / "tests" / "kafka_ref"
QUIX_CACHE = Path.home() / ".cache" / "pylog-bench"
#: The JVM's options: a short smoke run starts faster with the client compiler and the serial
#: collector (what tests/kafka_ref uses); a measurement wants the JIT's best code.
JVM_OPTS = (["-Xmx512m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"] if SMALL
            else ["-Xms256m", "-Xmx1g"])
#: How long one job may take before the bench gives up on an implementation.
JOB_TIMEOUT_S = float(os.environ.get("PYLOG_BENCH_PEERS_TIMEOUT", 900))


def keep(value: bytes) -> bool:
    """The stateless job's filter."""
    return value[0] != 0


def expected_outputs(job: str, values: list[bytes]) -> int:
    """Records the output topic holds once a job has processed every input record."""
    if job == "stateless":
        return sum(1 for v in values if keep(v))
    return len(values)   # the windowed count emits every update


# ---------------------------------------------------------------- the jobs (worker side)

def pylog_app(job: str, app_id: str, input_topic: str, output_topic: str, state_dir: str,
              store_type: str = "persistent"):
    """The job as a pylog.streams StreamsApp (``store_type``: the windowed job's store)."""
    from pylog.streams import Materialized, Serdes, StreamsBuilder, TimeWindows

    b = StreamsBuilder()
    s = b.stream(input_topic, key_serde=Serdes.bytes(), value_serde=Serdes.bytes())
    if job == "stateless":
        s.filter(lambda k, v: v[0] != 0).map_values(lambda v: v[:50]).to(output_topic)
    else:
        (s.group_by_key()
         .windowed_by(TimeWindows.of_size_with_no_grace(WINDOW_MS))
         .count(materialized=Materialized("counts", store_type=store_type))
         .to_stream()
         .to(output_topic, key_serde=None, value_serde=Serdes.long()))
    return b.build(application_id=app_id, config={"commit.interval.ms": COMMIT_INTERVAL_MS,
                                                  "state.dir": state_dir})


def quix_app(job: str, bootstrap: str, app_id: str, input_topic: str, output_topic: str, state_dir: str):
    """The job as a Quix Streams Application and its dataframe."""
    from quixstreams import Application

    app = Application(broker_address=bootstrap, consumer_group=app_id, auto_offset_reset="earliest",
                      commit_interval=COMMIT_INTERVAL_MS / 1000, state_dir=state_dir, loglevel="WARNING",
                      processing_guarantee="at-least-once")
    sdf = app.dataframe(app.topic(input_topic, key_deserializer="bytes", value_deserializer="bytes"))
    if job == "stateless":
        sdf = sdf.filter(lambda v: v[0] != 0).apply(lambda v: v[:50])
    else:
        sdf = sdf.tumbling_window(WINDOW_MS).count().current().apply(lambda w: w["value"].to_bytes(8, "big"))
    sdf.to_topic(app.topic(output_topic, key_serializer="bytes", value_serializer="bytes"))
    return app, sdf


def _started() -> None:
    print('{"check": "starting"}', flush=True)


def _on_stdin_closed(stop) -> None:
    def wait() -> None:
        while sys.stdin.buffer.read(256):
            pass
        stop()
    threading.Thread(target=wait, daemon=True).start()


def worker(impl: str, job: str, bootstrap: str, app_id: str, input_topic: str, output_topic: str,
           state_dir: str) -> None:
    """Run one job until standard input closes (see the module docstring)."""
    if impl == "pylog":
        import pylog

        client = pylog.connect(bootstrap)
        app = pylog_app(job, app_id, input_topic, output_topic, state_dir)
        _on_stdin_closed(app.stop)
        _started()
        try:
            app.run(client, poll_timeout_ms=50)
        finally:
            client.close()
    elif impl == "quix":
        qapp, sdf = quix_app(job, bootstrap, app_id, input_topic, output_topic, state_dir)
        _on_stdin_closed(qapp.stop)
        _started()
        qapp.run(sdf)
    else:
        raise SystemExit(f"worker: IMPL is pylog or quix, not {impl!r}")
    print('{"check": "done"}', flush=True)


# ---------------------------------------------------------------- peers' environments

QUIX_CONSTRAINTS = ROOT / "ci" / "constraints-quix.txt"


def quix_version() -> str:
    """Quix Streams' pinned version (ci/constraints-quix.txt, which pins everything its
    virtualenv holds)."""
    text = QUIX_CONSTRAINTS.read_text()
    mo = re.search(r"^quixstreams==(\S+)", text, re.M)
    if mo is None:
        raise RuntimeError(f"{QUIX_CONSTRAINTS} pins no quixstreams version")
    return mo.group(1)


def quix_python() -> str:
    """A Python interpreter that imports quixstreams: this one when it does (asv's
    environment), else that of a virtualenv made once with pip under ``QUIX_CACHE``.
    Raises RuntimeError with pip's output when it cannot be installed."""
    import importlib.util

    if importlib.util.find_spec("quixstreams") is not None:
        return sys.executable
    import hashlib

    version = quix_version()
    # Named after the pins too: a changed constraints file makes a new environment.
    pins = hashlib.sha256(QUIX_CONSTRAINTS.read_bytes()).hexdigest()[:12]
    venv = QUIX_CACHE / f"quixstreams-{version}-{pins}"
    python = venv / "bin" / "python"
    check = [str(python), "-W", "ignore", "-c", "import quixstreams"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(python)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    # Its own pins, not the suite's (PIP_CONSTRAINT in ci/test.sh): those pin a newer
    # confluent-kafka than quixstreams accepts.
    env = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-c", str(QUIX_CONSTRAINTS),
                           f"quixstreams=={version}"],
                          env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or subprocess.run(check, capture_output=True).returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        raise RuntimeError(f"could not install quixstreams=={version} into {venv}:\n{proc.stdout[-3000:]}"
                           f"\n{proc.stderr[-3000:]}")
    return str(python)


def kafka_streams_classpath() -> str | None:
    """The classpath of Kafka's jars and StreamsBench (tests/kafka_ref's Maven build, run
    here when it is missing or older than the pom or a Java source), or None without Java
    and Maven."""
    if shutil.which("java") is None or shutil.which("mvn") is None:
        return None
    cp_file = KAFKA_REF / "target" / "classpath.txt"
    sources = [KAFKA_REF / "pom.xml", *KAFKA_REF.glob("src/**/*.java")]
    if not cp_file.exists() or any(p.stat().st_mtime >= cp_file.stat().st_mtime for p in sources):
        proc = subprocess.run(["mvn", "-q", "-B", "-f", str(KAFKA_REF / "pom.xml"), "compile",
                               "dependency:build-classpath"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not cp_file.exists():
            raise RuntimeError(f"Maven could not build tests/kafka_ref:\n{proc.stdout[-4000:]}")
        cp_file.touch()
    return f"{KAFKA_REF / 'target' / 'classes'}{os.pathsep}{cp_file.read_text().strip()}"


# ---------------------------------------------------------------- the bench (parent side)

class Peer:
    """One job in a subprocess: started, waited for until it says it starts processing,
    stopped by closing its standard input (then SIGKILL after ``grace`` seconds)."""

    def __init__(self, cmd: list[str], grace: float = 60) -> None:
        self.grace = grace
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self._readers = [threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True)]
        self._readers[0].start()
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith('{"check": "starting"}'):
                self.started = time.perf_counter()
                # whatever it prints later must not fill the pipe and block it
                self._readers.append(threading.Thread(target=self.proc.stdout.read, daemon=True))
                self._readers[-1].start()
                return
        self.stop()
        raise RuntimeError(f"{cmd[:4]} exited with {self.proc.returncode} before starting:\n"
                           + "".join(self.err)[-4000:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        """Stop it and return its exit status."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass            # it died already
        try:
            code = self.proc.wait(self.grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        for t in self._readers:
            t.join(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        return code


def _output_count(consumer, topic: str) -> int:
    return sum(consumer.end_offsets([(topic, p) for p in range(PARTITIONS)]).values())


def wait_for_outputs(consumer, topic: str, want: int, alive=lambda: True,
                     timeout: float = JOB_TIMEOUT_S) -> float:
    """Poll ``topic``'s end offsets until they add up to ``want``; the moment (perf_counter)
    they did.  RuntimeError when the job died or ``timeout`` passed first."""
    deadline = time.monotonic() + timeout
    while True:
        if _output_count(consumer, topic) >= want:
            return time.perf_counter()
        if not alive():
            raise RuntimeError(f"the job writing {topic} stopped with {_output_count(consumer, topic)} "
                               f"of {want} results")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{topic} holds {_output_count(consumer, topic)} of {want} results "
                               f"after {timeout} s")
        time.sleep(0.02)


def prefill(client, topic: str, keys: list[bytes], values: list[bytes], stamps: list[int]) -> None:
    client.create_topic(topic, PARTITIONS)
    p = client.producer(linger_ms=5)
    send = p.send
    for k, v, t in zip(keys, values, stamps):
        send(topic, key=k, value=v, timestamp_ms=t)
    p.flush()
    p.close()


def _data(n: int):
    from benches._data import keys, timestamps, values
    return keys(n), values(n), timestamps(n)


def run_remote(impl: str, job: str, bootstrap: str, consumer, input_topic: str, want: int, tmp: str,
               python: str | None = None, classpath: str | None = None, check=None) -> float:
    """records/s of one implementation's job against the server; ``check(bootstrap, impl,
    job, output_topic)`` runs after the job stopped (the smoke test reads the results)."""
    import pylog

    app_id = f"{impl}-{job}"
    output = f"out-{app_id}"
    with pylog.connect(bootstrap) as admin:
        admin.create_topic(output, PARTITIONS)
    state_dir = os.path.join(tmp, app_id)
    os.makedirs(state_dir, exist_ok=True)
    args = [bootstrap, app_id, job, input_topic, output, state_dir]
    if impl == "kafka_streams":
        cmd = ["java", *JVM_OPTS, "-cp", classpath or "", "pylog.kafkaref.StreamsBench", *args]
    else:
        cmd = [python or sys.executable, "-W", "ignore", str(Path(__file__).resolve()), "worker", impl, job,
               *args[:2], *args[3:]]
    peer = Peer(cmd)
    try:
        done = wait_for_outputs(consumer, output, want, peer.alive)
    except RuntimeError as e:
        peer.stop()
        raise RuntimeError(f"{impl} {job}: {e}\n" + "".join(peer.err)[-4000:]) from None
    code = peer.stop()
    if code != 0:
        raise RuntimeError(f"{impl} {job} exited with {code}:\n" + "".join(peer.err)[-4000:])
    if check is not None:
        check(bootstrap, impl, job, output)
    return _output_count(consumer, input_topic) / (done - peer.started)


def run_embedded(job: str, keys: list[bytes], values: list[bytes], stamps: list[int],
                 store_type: str = "persistent") -> float:
    """records/s of pylog.streams on ``pylog.open`` over the same data (in this process)."""
    import pylog

    tmp = tempfile.mkdtemp(prefix="bench-peers-embedded-")
    try:
        with pylog.open(os.path.join(tmp, "data")) as client:
            prefill(client, "in", keys, values, stamps)
            client.create_topic("out", PARTITIONS)
            app = pylog_app(job, f"embedded-{job}", "in", "out", os.path.join(tmp, "state"), store_type)
            consumer = client.consumer()
            errors: list[BaseException] = []

            def run() -> None:
                try:
                    app.run(client, poll_timeout_ms=50)
                except BaseException as e:  # noqa: BLE001 - reported below
                    errors.append(e)
            t = threading.Thread(target=run, name=f"embedded-{job}")
            t0 = time.perf_counter()
            t.start()
            try:
                done = wait_for_outputs(consumer, "out", expected_outputs(job, values), t.is_alive)
            finally:
                app.stop()
                t.join()
            if errors:
                raise errors[0]
            return len(values) / (done - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def embedded_figures(keys: list[bytes], values: list[bytes], stamps: list[int]) -> dict:
    """The embedded runs, one each: ``embedded_stateless``, ``embedded_windowed`` (the
    persistent store) and ``embedded_windowed_in_memory``, in records/s."""
    out = {f"embedded_{job}": run_embedded(job, keys, values, stamps) for job in JOBS}
    out["embedded_windowed_in_memory"] = run_embedded("windowed", keys, values, stamps, "in_memory")
    return out


def embedded_rounds(n: int = N, rounds: int = 5) -> dict:
    """:func:`embedded_figures` ``rounds`` times on the same data, the three jobs
    alternating: ``{figure: [records/s of each round]}`` (no server, no peers: what
    ``python -m benches.bench_streams_peers embedded [ROUNDS]`` prints the medians of)."""
    keys, values, stamps = _data(n)
    out: dict = {}
    for _ in range(rounds):
        for k, v in embedded_figures(keys, values, stamps).items():
            out.setdefault(k, []).append(v)
    return out


def measure(n: int = N, impls: tuple[str, ...] = REMOTE, embedded: bool = True, check=None) -> dict:
    """Every figure of one run: ``{"n": n, "<impl>_<job>": records/s, ...}`` (NaN for a peer that
    is not there) and ``"<impl>_unavailable"``: why, for a peer left out.  One fresh
    ``pylog serve`` for all remote runs, stopped at the end; ``check`` as in
    :func:`run_remote`."""
    import pylog
    from benches.bench_server import ServeProcess

    keys, values, stamps = _data(n)
    out: dict = {"n": n}
    python = classpath = None
    if "quix" in impls:
        try:
            python = quix_python()
        except RuntimeError as e:
            out["quix_unavailable"] = str(e)
    if "kafka_streams" in impls:
        classpath = kafka_streams_classpath()
        if classpath is None:
            out["kafka_streams_unavailable"] = "no java and mvn on PATH"
    server = ServeProcess()
    tmp = tempfile.mkdtemp(prefix="bench-peers-")
    try:
        with pylog.connect(server.bootstrap) as client:
            prefill(client, "in", keys, values, stamps)
            consumer = client.consumer()
            for job in JOBS:
                want = expected_outputs(job, values)
                for impl in impls:
                    if f"{impl}_unavailable" in out:
                        out[f"{impl}_{job}"] = math.nan
                        continue
                    out[f"{impl}_{job}"] = run_remote(impl, job, server.bootstrap, consumer, "in", want, tmp,
                                                      python=python if impl == "quix" else None,
                                                      classpath=classpath, check=check)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if embedded:
        out.update(embedded_figures(keys, values, stamps))
    for job in JOBS:
        for peer in ("quix", "kafka_streams"):
            if f"{peer}_{job}" in out:
                out[f"pylog_over_{peer}_{job}"] = out[f"pylog_{job}"] / out[f"{peer}_{job}"]
    return out


class StreamsPeers:
    """One run of everything (asv's setup_cache: the server, the peers and the data are
    set up once and every figure below is read from that run)."""

    timeout = 3600

    def setup_cache(self) -> dict:
        return measure()

    setup_cache.timeout = 3600  # type: ignore[attr-defined]


def _track(key: str, unit: str = "records/s"):
    def track(self, results: dict) -> float:
        return float(results.get(key, math.nan))
    track.unit = unit  # type: ignore[attr-defined]
    track.__name__ = f"track_{key}"
    return track


for _job in JOBS:
    for _impl in (*REMOTE, "embedded"):
        setattr(StreamsPeers, f"track_{_impl}_{_job}", _track(f"{_impl}_{_job}"))
    for _peer in ("quix", "kafka_streams"):
        setattr(StreamsPeers, f"track_pylog_over_{_peer}_{_job}",
                _track(f"pylog_over_{_peer}_{_job}", "ratio"))
StreamsPeers.track_embedded_windowed_in_memory = _track("embedded_windowed_in_memory")  # type: ignore[attr-defined]


def report(results: dict) -> str:
    lines = [f"N = {results['n']:,} records, {PARTITIONS} partitions"]
    for job in JOBS:
        for impl in (*REMOTE, "embedded"):
            v = results.get(f"{impl}_{job}", math.nan)
            lines.append(f"{job:9} {impl:13} {v:12,.0f} records/s")
        for peer, goal in (("quix", 3.0), ("kafka_streams", 0.5)):
            v = results.get(f"pylog_over_{peer}_{job}", math.nan)
            lines.append(f"{job:9} pylog/{peer:13} {v:6.2f}x (goal >= {goal}x)")
    lines.append(f"windowed  embedded, in-memory store {results.get('embedded_windowed_in_memory', math.nan):12,.0f} "
                 "records/s")
    lines += [f"{k}: {v}" for k, v in results.items() if k.endswith("_unavailable")]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - the worker, or a manual report
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(*sys.argv[2:9])
    elif len(sys.argv) > 1 and sys.argv[1] == "embedded":
        import statistics
        for name, rates in embedded_rounds(rounds=int(sys.argv[2]) if len(sys.argv) > 2 else 5).items():
            print(f"{name:28} median {statistics.median(rates):12,.0f} records/s  rounds: "
                  + " ".join(f"{r:,.0f}" for r in rates))
    else:
        print(report(measure()))
