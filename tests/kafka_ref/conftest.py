"""Apache Kafka as the reference (issue #16): its jars, a broker, and `pylog serve`.

- ``kafka_jars`` (session): runs Maven once on ``pom.xml`` beside this file: it fetches
  Apache Kafka's jars (broker, clients, Streams, tools; into ``~/.m2``) and compiles the
  Java driver under ``src/``.  The result, ``target/classpath.txt``, is reused while it is
  newer than the pom and every Java source.  Java 17+ and Maven are part of the project's
  machines, so their absence FAILS these tests with a message saying what is missing.
- ``kafka_broker`` (session): Apache Kafka, single-node KRaft (broker and controller in one
  JVM), on free loopback ports with a throwaway data dir: ``kafka-storage format``
  (``kafka.tools.StorageTool``) with a generated cluster id, then ``kafka.Kafka``.  Ready
  when it logs "Kafka Server started" (a KRaft broker logs it once unfenced).  Stopped at
  the end of the session with SIGTERM, then SIGKILL.
- ``module_server`` (module): one ``pylog serve``, the fixture of tests/server/conftest.py.

:class:`Jvm` runs a main class of those jars (the Java driver, Kafka's tools) and returns
its exit status and output.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from pylog.server.kafka_peer import LOG4J2_PROPERTIES, kraft_properties
# module_server: one `pylog serve` per test module (tests/server/conftest.py's fixture).
from server.conftest import module_server  # noqa: F401

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
TARGET = HERE / "target"
CLASSPATH_FILE = TARGET / "classpath.txt"
CLASSES = TARGET / "classes"

#: Attempts at the Maven run: the first one downloads ~150 MB of jars from Maven Central.
MAVEN_ATTEMPTS = 3
#: JVM options for every JVM the tests start: small heaps, serial GC and the client
#: compiler only, which is what suits short runs on a 2-core machine; and no bytecode
#: verifier pass over the application's classes (Kafka's jars as Maven Central serves
#: them, the driver as javac wrote it), ~0.15 s of a ~0.9 s tool run spent re-checking
#: them at every start.
JVM_OPTS = ["-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-XX:+UnlockDiagnosticVMOptions", "-XX:-BytecodeVerificationRemote",
            "-Djava.awt.headless=true"]

# Kafka's warnings, and the line of KafkaRaftServer that says it started.
_LOG4J2 = LOG4J2_PROPERTIES + """\
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
"""


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"`{tool}` is not on PATH: the Apache Kafka reference tests (tests/kafka_ref, "
                    "issue #16) need Java 17+ and Maven, which the project's machines have; "
                    "install them (Debian: openjdk-17-jdk-headless maven)", pytrace=False)
    return path


def _stale() -> bool:
    if not CLASSPATH_FILE.exists():
        return True
    built = CLASSPATH_FILE.stat().st_mtime
    sources = [POM, *HERE.glob("src/**/*.java")]
    return any(p.stat().st_mtime >= built for p in sources)


def _maven(mvn: str) -> float:
    """Run Maven (retrying a failed download); returns the seconds it took."""
    cmd = [mvn, "-q", "-B", "-f", str(POM), "compile", "dependency:build-classpath"]
    t0 = time.monotonic()
    out = ""
    for attempt in range(1, MAVEN_ATTEMPTS + 1):
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=900)
        if proc.returncode == 0 and CLASSPATH_FILE.exists():
            # build-classpath leaves an unchanged file as it was: mark it fresh.
            CLASSPATH_FILE.touch()
            return time.monotonic() - t0
        out = proc.stdout
        if "COMPILATION ERROR" in out:
            break  # the driver does not compile: trying again will not help
        if attempt < MAVEN_ATTEMPTS:
            time.sleep(5 * attempt)
    pytest.fail(f"Maven could not fetch Apache Kafka's jars or build the driver "
                f"({' '.join(cmd)}):\n{out[-6000:]}", pytrace=False)


@dataclass
class Jvm:
    """Runs main classes of the Kafka jars and the driver."""

    java: str
    classpath: str
    log4j2: Path

    def command(self, main: str, args: list[str], opts: list[str] = ()) -> list[str]:
        return [self.java, *JVM_OPTS, *opts, f"-Dlog4j2.configurationFile={self.log4j2}",
                "-cp", self.classpath, main, *args]

    def run(self, main: str, *args: str, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(main, list(args)), input=input, text=True,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)

    def check(self, main: str, *args: str, input: str | None = None,
              timeout: float = 120) -> str:
        """Run and return stdout; fail the test with both outputs on a non-zero exit."""
        proc = self.run(main, *args, input=input, timeout=timeout)
        if proc.returncode != 0:
            pytest.fail(f"{main} {' '.join(args)} exited with {proc.returncode}:\n"
                        f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
        return proc.stdout


@pytest.fixture(scope="session")
def kafka_jars(tmp_path_factory) -> Jvm:
    java = _require("java")
    mvn = _require("mvn")
    version = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    major = re.search(r'version "(\d+)', version)
    if major is None or int(major.group(1)) < 17:
        pytest.fail(f"Apache Kafka 4 needs Java 17 or newer; `java -version` says:\n{version}",
                    pytrace=False)
    if _stale():
        took = _maven(mvn)
        print(f"\n[kafka_ref] Maven fetched Apache Kafka's jars and built the driver in {took:.1f} s",
              file=sys.stderr)
    deps = CLASSPATH_FILE.read_text().strip()
    log4j2 = tmp_path_factory.mktemp("log4j2") / "log4j2.properties"
    log4j2.write_text(_LOG4J2)
    return Jvm(java, f"{CLASSES}{os.pathsep}{deps}", log4j2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KafkaBroker:
    """Apache Kafka, one KRaft node being broker and controller, on loopback."""

    def __init__(self, jvm: Jvm, data_dir: Path) -> None:
        self.jvm = jvm
        self.dir = data_dir
        self.port = free_port()
        self.controller_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _properties(self) -> Path:
        props = kraft_properties(self.port, self.controller_port, self.dir / "data")
        props.update({
            # What tests/server/conftest.py gives `pylog serve`, so both answer alike.
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.num.partitions": "4",
            "group.min.session.timeout.ms": "1000",
            # Tests stamp records in 2023 (fixed timestamps compare across runs); the default
            # 7 days would delete them at a retention check, whenever one falls in a test.
            "log.retention.ms": "-1",
        })
        path = self.dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def start(self, timeout: float = 120) -> "KafkaBroker":
        props = self._properties()
        cluster_id = "-"
        while cluster_id.startswith("-"):  # the storage tool would take it for an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        self.jvm.check("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                       timeout=timeout)
        self.proc = subprocess.Popen(self.jvm.command("kafka.Kafka", [str(props)]),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        started = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if "Kafka Server started" in line:
                    started.set()
            started.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not started.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            pytest.fail("Apache Kafka did not start:\n" + self.log_text()[-6000:], pytrace=False)
        return self

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        return code

    def log_text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(scope="session")
def kafka_broker(kafka_jars, tmp_path_factory):
    broker = KafkaBroker(kafka_jars, tmp_path_factory.mktemp("kafka"))
    t0 = time.monotonic()
    broker.start()
    print(f"\n[kafka_ref] Apache Kafka started in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    try:
        yield broker
    finally:
        broker.stop()
