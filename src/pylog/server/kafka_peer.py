"""Servers as child processes, side by side: ``pylog serve`` and Apache Kafka (single-node
KRaft), for ``pylog bench produce|consume --compare-kafka`` and the asv benchmark
``benches/bench_vs_kafka.py`` (issue #16).

:class:`PylogServer` and :class:`KafkaServer` start a server on a free 127.0.0.1 port over
a base directory of their own, wait until it answers a request, and stop it with SIGTERM
(a clean shutdown), so the same data can be served again (:meth:`ChildServer.restart`).
Each reports the figures a benchmark reads from outside the process: the time from
spawning the process to the first answered ApiVersions request (``start_seconds``), its
CPU time (user + system of every thread, live or exited, from ``/proc/PID/stat``) and
its resident set size (``VmRSS``).  While one server is measured, :func:`take_turn` runs
the others at ``SCHED_IDLE``, so an idle JVM's compiler, collector and timers take no CPU
from it.

Apache Kafka runs from the jars of a classpath (:func:`resolve_classpath`): one given
(a ``java -cp`` string, a file holding one such as Maven's ``dependency:build-classpath``
output, or a Kafka distribution's directory, whose ``libs/*`` is used), or the one Maven
resolves from a small ``pom.xml`` that this module writes to ``~/.cache/pylog``
(the jars go to Maven's ``~/.m2``).  The broker is configured as Kafka's quickstart does
(``kafka-storage format`` with a random cluster id, then ``kafka.Kafka``; one node being
broker and controller) with the JVM options of Kafka's ``kafka-server-start.sh``
(``KAFKA_HEAP_OPTS``, default ``-Xmx1G -Xms1G``, and ``KAFKA_JVM_PERFORMANCE_OPTS``, G1)
taken from the environment as that script does.  Formatting the storage is a separate
JVM run before the broker starts: it is not part of ``start_seconds``.

On disk, under the base directory: ``data/`` (the server's data directory, ``log.dirs``),
``server.log`` (the server's output, appended over restarts) and, for Kafka,
``server.properties`` and ``log4j2.properties``.

Crash behaviour: the children run in sessions of their own; if this process dies they
keep running (their pids are in ``ChildServer.proc``).  Thread safety: one thread drives a
server object.
"""

from __future__ import annotations

import abc
import base64
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from pylog.cluster.local import free_port

__all__ = ["KafkaUnavailable", "ChildServer", "PylogServer", "KafkaServer", "resolve_classpath", "take_turn",
           "KAFKA_VERSION", "LOG4J2_PROPERTIES", "first_fetch_seconds", "kraft_properties",
           "side_by_side"]

#: The Apache Kafka release the generated pom asks Maven for (tests/kafka_ref/pom.xml's).
KAFKA_VERSION = "4.4.0"
_LOG4J_VERSION = "2.25.5"
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

_POM = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by pylog (pylog.server.kafka_peer): Apache Kafka's broker jars, for
     pylog's side-by-side benchmark.  mvn dependency:build-classpath lists them. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>pylog.bench</groupId>
  <artifactId>kafka-peer</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.8.1</version>
        <configuration>
          <includeScope>runtime</includeScope>
          <outputFile>${{project.build.directory}}/classpath.txt</outputFile>
        </configuration>
      </plugin>
    </plugins>
  </build>
</project>
"""

#: Kafka's log: warnings and errors, on stderr.
LOG4J2_PROPERTIES = """\
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
"""


def kraft_properties(port: int, controller_port: int, log_dirs: str | os.PathLike) -> dict[str, str]:
    """server.properties of one KRaft node being broker and controller on 127.0.0.1,
    PLAINTEXT, with internal topics of replication factor 1 and no initial rebalance
    delay (what a single node needs; everything else is Kafka's default)."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dirs),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }


class KafkaUnavailable(Exception):
    """Apache Kafka cannot be run here: no classpath given and no Maven, or no Java
    (``usage`` True: the user must pass something else), or Maven or the storage tool
    failed (``usage`` False)."""

    def __init__(self, message: str, usage: bool = True) -> None:
        super().__init__(message)
        self.usage = usage


# --------------------------------------------------------------------------------------
# the classpath
# --------------------------------------------------------------------------------------


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pylog" / f"kafka-{KAFKA_VERSION}"


def resolve_classpath(given: str | None = None, *, mvn: str | None = None, timeout: float = 900) -> str:
    """The ``java -cp`` string of Apache Kafka's broker.

    ``given`` is a classpath (entries joined by ``os.pathsep``), a file holding one, or
    a directory: a Kafka distribution (its ``libs/*``) or a directory of jars (``dir/*``).
    Without it, Maven (``mvn`` on PATH) resolves the jars from a pom written to
    ``~/.cache/pylog``; the result is cached there.  Raises :class:`KafkaUnavailable`
    when neither is possible, with what to pass instead.
    """
    if given:
        path = Path(given)
        if path.is_dir():
            libs = path / "libs"
            return str((libs if libs.is_dir() else path) / "*")
        if path.is_file() and path.suffix != ".jar":
            try:
                text = path.read_text().strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise KafkaUnavailable(f"--kafka-classpath {given}: cannot read it as a classpath file "
                                       f"({exc})") from None
            if not text:
                raise KafkaUnavailable(f"the classpath file {given} is empty")
            return text
        if os.pathsep not in given and not path.exists():
            raise KafkaUnavailable(f"--kafka-classpath {given}: no such file or directory")
        return given
    mvn = mvn or shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailable("Apache Kafka's jars are not available: pass --kafka-bootstrap HOST:PORT "
                               "(a running Kafka broker) or --kafka-classpath (a Kafka distribution's "
                               "directory, or a java classpath), or put Maven (`mvn`) on PATH")
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    pom = cache / "pom.xml"
    text = _POM.format(kafka=KAFKA_VERSION, log4j=_LOG4J_VERSION)
    if not pom.exists() or pom.read_text() != text:
        pom.write_text(text)
    out = cache / "target" / "classpath.txt"
    if not out.exists() or out.stat().st_mtime < pom.stat().st_mtime:
        proc = subprocess.run([mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom),
                               "dependency:build-classpath"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
        if proc.returncode != 0 or not out.exists():
            raise KafkaUnavailable(f"Maven could not resolve Apache Kafka {KAFKA_VERSION}'s jars "
                                   f"(mvn -f {pom} dependency:build-classpath): "
                                   f"{proc.stdout.strip()[-1500:]}", usage=False)
        out.touch()
    return out.read_text().strip()


# --------------------------------------------------------------------------------------
# probes: the first answered request
# --------------------------------------------------------------------------------------


def _read_frame(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    (size,) = struct.unpack(">i", head)
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if not n:
            raise ConnectionError("closed")
        got += n
    return bytes(buf)


def _api_versions_answered(port: int) -> bool:
    # ApiVersions v0: size, api key 18, version 0, correlation id, client id; the answer
    # carries the same correlation id and error code 0.
    request = struct.pack(">hhih", 18, 0, 7, 5) + b"probe"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(struct.pack(">i", len(request)) + request)
            frame = _read_frame(s)
    except OSError:
        return False
    return len(frame) >= 6 and struct.unpack_from(">ih", frame) == (7, 0)


def _fetch_has_records(port: int, topic: str, partition: int = 0, offset: int = 0) -> bool:
    from pylog.protocol import messages as m
    from pylog.protocol.codec import decode_response, encode_request
    from pylog.protocol.segments import segments_to_bytes

    F = m.FetchRequest
    request = segments_to_bytes(encode_request(1, 11, 1, "probe", F(
        replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, isolation_level=0, session_id=0,
        session_epoch=-1, topics=[F.FetchTopic(topic=topic, partitions=[F.FetchPartition(
            partition=partition, fetch_offset=offset, partition_max_bytes=1 << 20)])])))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(request)
            _cid, body = decode_response(1, 11, _read_frame(s))
    except OSError:
        return False
    for t in body.responses:
        for p in t.partitions:
            records = p.records
            if p.error_code == 0 and records is not None and len(records) > 0:
                return True
    return False


def first_fetch_seconds(server: "ChildServer", topic: str, timeout: float = 300) -> float:
    """Stop ``server`` cleanly, start it again over the same data, and return the seconds
    from spawning the process to the first Fetch of ``topic``-0 at offset 0 answered with
    records (error code 0)."""
    server.stop()
    t0 = server.spawn()
    deadline = t0 + timeout
    while not _fetch_has_records(server.port, topic):
        server.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} served no record of {topic}-0 within {timeout:g} s of starting")
        time.sleep(0.005)
    return time.monotonic() - t0


# --------------------------------------------------------------------------------------
# the servers
# --------------------------------------------------------------------------------------


def take_turn(servers: Mapping[str, "ChildServer"], name: str) -> bool:
    """Let ``servers[name]`` run at this process's scheduling policy and every other one
    at ``SCHED_IDLE`` (every thread of each, Linux), so the idle server's background
    work (a JVM's compiler, garbage collector and timers) takes no CPU from the one being
    measured.  Threads a server starts later inherit its policy.  Done only where this
    process may raise a thread back (root, or a real-time policy such as ``chrt -f``
    gives); returns whether it was done."""
    if not hasattr(os, "SCHED_IDLE") or not os.path.isdir("/proc/self/task"):
        return False
    policy = os.sched_getscheduler(0)
    if os.geteuid() != 0 and policy not in (os.SCHED_FIFO, os.SCHED_RR):
        return False
    priority = os.sched_getparam(0).sched_priority
    for other, server in servers.items():
        proc = getattr(server, "proc", None)
        if proc is None or proc.poll() is not None:
            continue
        if other == name:
            _set_policy(proc.pid, policy, priority)
        else:
            _set_policy(proc.pid, os.SCHED_IDLE, 0)
    return True


def _set_policy(pid: int, policy: int, priority: int) -> None:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return
    for tid in tids:
        try:
            os.sched_setscheduler(int(tid), policy, os.sched_param(priority))
        except ProcessLookupError:
            pass    # the thread ended meanwhile


class ChildServer(abc.ABC):
    """A server process on 127.0.0.1:``port`` over ``base_dir``/data (see the module
    docstring).  ``base_dir=None``: a temporary directory, removed by :meth:`close`."""

    name = "server"

    def __init__(self, base_dir: str | os.PathLike | None = None) -> None:
        self._tmp = None
        if base_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"pylog-peer-{self.name}-")
            base_dir = self._tmp.name
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The server's command line."""

    def environment(self) -> dict[str, str]:
        """The server's environment (default: this process's)."""
        return dict(os.environ)

    def prepare(self) -> None:
        """Work done once before the first start (Kafka: format the storage)."""

    def spawn(self) -> float:
        """Start the process; returns its ``time.monotonic()`` start time."""
        self.prepare()
        with open(self.base_dir / "server.log", "ab") as log:
            t0 = time.monotonic()
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env=self.environment())
        return t0

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise RuntimeError(f"{self.name} exited (status {code}); its output ends:\n{self.log_tail()}")

    def wait_answering(self, deadline: float) -> None:
        while not _api_versions_answered(self.port):
            self.check_alive()
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer on {self.bootstrap} in time; its output "
                                   f"ends:\n{self.log_tail()}")
            time.sleep(0.005)

    def start(self, timeout: float = 180) -> "ChildServer":
        """Start the server and wait until it answers ApiVersions; ``start_seconds`` is
        the time from spawning the process to that answer."""
        t0 = self.spawn()
        try:
            self.wait_answering(t0 + timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self, timeout: float = 120) -> int | None:
        """SIGTERM (a clean shutdown), then SIGKILL after ``timeout`` seconds."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(30)

    def restart(self, timeout: float = 300) -> "ChildServer":
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop the server; remove its directory if it was a temporary one."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "ChildServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what is read from outside ------------------------------------------------------

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process, every thread it ever ran included
        (a JVM's compiler and GC threads come and go)."""
        self.check_alive()
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def rss_bytes(self) -> int:
        self.check_alive()
        with open(f"/proc/{self.proc.pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return (self.base_dir / "server.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class PylogServer(ChildServer):
    """``pylog serve`` (this Python, ``-m pylog.cli``) with ``overrides`` as broker configs."""

    name = "pylog"

    def __init__(self, base_dir: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> None:
        super().__init__(base_dir)
        self.overrides = ["group.initial.rebalance.delay.ms=0", *overrides]

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "pylog.cli", "serve", "--data-dir", str(self.data_dir),
               "--listen", self.bootstrap, "--log-level", "WARNING"]
        for o in self.overrides:
            cmd += ["--override", o]
        return cmd

    def environment(self) -> dict[str, str]:
        """As an installed pylog starts: with compiled modules.  pip compiles them at
        install; a source checkout writes them on first import, unless
        ``PYTHONDONTWRITEBYTECODE`` is set (some sandboxes set it), when every start would
        compile pylog from source again (~0.2 s, counted as start-up time).  Then they
        go to a cache of their own (``PYTHONPYCACHEPREFIX``), not into the checkout."""
        env = dict(os.environ)
        if env.pop("PYTHONDONTWRITEBYTECODE", None) and "PYTHONPYCACHEPREFIX" not in env:
            env["PYTHONPYCACHEPREFIX"] = str(_cache_dir().parent / "pycache")
        return env


class KafkaServer(ChildServer):
    """Apache Kafka, one KRaft node being broker and controller, from ``classpath``."""

    name = "kafka"

    def __init__(self, classpath: str, base_dir: str | os.PathLike | None = None, *,
                 java: str | None = None, overrides: Sequence[str] = ()) -> None:
        java = java or shutil.which("java")
        if java is None:
            raise KafkaUnavailable("`java` is not on PATH: Apache Kafka needs Java 17 or newer; or pass "
                                   "--kafka-bootstrap HOST:PORT (a running Kafka broker)")
        super().__init__(base_dir)
        self.java = java
        self.classpath = classpath
        self.controller_port = free_port()
        self.overrides = list(overrides)

    def _write_configs(self) -> Path:
        props = kraft_properties(self.port, self.controller_port, self.data_dir)
        for o in self.overrides:
            k, _, v = o.partition("=")
            props[k] = v
        path = self.base_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.base_dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        return path

    def _jvm(self, main: str, args: list[str], heap: str | None = None) -> list[str]:
        heap = (heap or os.environ.get("KAFKA_HEAP_OPTS", "-Xmx1G -Xms1G")).split()
        perf = os.environ.get("KAFKA_JVM_PERFORMANCE_OPTS",
                              "-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 "
                              "-XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15").split()
        return [self.java, *heap, *perf, "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.base_dir / 'log4j2.properties'}",
                "-cp", self.classpath, main, *args]

    def prepare(self) -> None:
        props = self._write_configs()
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = "-"
        while cluster_id.startswith("-"):      # the storage tool would take it for an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # The storage tool needs no big heap.
        cmd = self._jvm("kafka.tools.StorageTool", ["format", "-t", cluster_id, "-c", str(props)], "-Xmx256m")
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=300)
        if proc.returncode != 0:
            raise KafkaUnavailable(f"kafka-storage format failed (status {proc.returncode}): "
                                   f"{proc.stdout.strip()[-2000:]}", usage=False)

    def command(self) -> list[str]:
        return self._jvm("kafka.Kafka", [str(self.base_dir / "server.properties")])


# --------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------


def side_by_side(title: str, rows: Sequence[tuple[str, float | None, float | None, str]],
                 names: tuple[str, str] = ("pylog", "kafka")) -> str:
    """A text table: one row per figure, ``(label, pylog value, peer value, format)``,
    with the ratio pylog / peer.  A missing value prints as ``-``."""
    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    body = [(label, fmt(a, spec), fmt(b, spec),
             "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x")
            for label, a, b, spec in rows]
    head = ("", names[0], names[1], f"{names[0]}/{names[1]}")
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(4)]
    lines = [title]
    for r in [head, *body]:
        lines.append("  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:]))]))
    return "\n".join(lines)
