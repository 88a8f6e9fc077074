"""A cluster on this machine: ``pylog cluster up`` and ``pylog cluster status``.

:class:`ZooKeeperServer` runs Debian's ``zookeeper`` package (the jar under
/usr/share/java, on the JVM ``java`` finds) as a standalone server on a free 127.0.0.1
port, with its own data directory and ``zoo.cfg`` (admin server and four-letter words
off); the cluster tests use the same class (tests/cluster/zk.py).  :class:`LocalCluster`
starts that ZooKeeper when none is given, then N ``pylog serve --zookeeper`` brokers as
child processes on free loopback ports, each with its own data directory under one base
directory, and stops them with SIGTERM (each moves its leaderships away first: a
controlled shutdown) before it stops ZooKeeper.

On disk: ``<base>/zookeeper/`` (zoo.cfg, data, zookeeper.log) and ``<base>/broker-<id>/``
(a broker's data directory, its output in ``<base>/broker-<id>.log``); a second ``up`` on
the same base directory brings the same brokers back with their data.

Crash behaviour: the children run in their own sessions; if this process is SIGKILLed
they keep running (stop them by their pids, printed at start).

Thread safety: one thread drives a LocalCluster.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["ZooKeeperServer", "LocalCluster", "ZOOKEEPER_JAR", "free_port", "java", "cluster_status"]

ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")


def java() -> str | None:
    return shutil.which("java")


def free_port() -> int:
    """A 127.0.0.1 port free now, for a server started later to listen on.

    Taken below the kernel's ephemeral range when there is room there: a port of that
    range, free when asked for, may go to any outgoing connection on the machine before
    the server binds it (a broker of a busy test run then fails with "Address already in
    use"); ports below it go only to servers that ask for them.  Otherwise (or if none
    of a few random picks is free) the kernel picks one."""
    low = _ephemeral_low()
    if low - 1024 >= 4096:
        for _ in range(32):
            port = random.randrange(max(1024, low - 16384), low)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_low() -> int:
    """The first port of Linux's ephemeral range (0 where it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


class ZooKeeperServer:
    """A standalone ZooKeeper JVM on 127.0.0.1 (see the module docstring)."""

    def __init__(self, data_dir: Path, tick_time_ms: int = 500, port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.tick_time_ms = tick_time_ms
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "ZooKeeperServer":
        """Start the JVM and wait until a client gets a session.

        Raises
        ------
        RuntimeError
            Java or the ZooKeeper jar is missing (``apt-get install zookeeper``), or the
            server exited or did not answer within ``timeout`` seconds.
        """
        from kazoo.client import KazooClient
        from kazoo.handlers.threading import KazooTimeoutError

        if not ZOOKEEPER_JAR.exists() or java() is None:
            raise RuntimeError(f"ZooKeeper needs {ZOOKEEPER_JAR} and java: install Debian's zookeeper package "
                               "(apt-get install zookeeper), or give a running one with --zookeeper HOST:PORT")
        if not self.port:
            self.port = free_port()
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        cfg = self.data_dir / "zoo.cfg"
        # tickTime 500 ms: sessions may be as short as 1 s (2 ticks) for the tests that
        # wait for a timeout; maxSessionTimeout lets Kafka's 18 s default through.
        cfg.write_text(
            f"tickTime={self.tick_time_ms}\n"
            f"dataDir={self.data_dir / 'data'}\n"
            f"clientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\n"
            "maxSessionTimeout=60000\n"
            "maxClientCnxns=0\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=\n"
            "snapCount=100000\n"
            "preAllocSize=1024\n"
            "forceSync=no\n")
        with open(self.data_dir / "zookeeper.log", "wb") as log:
            # The Debian jar's manifest names its dependencies; no logging binding: quiet.
            self.proc = subprocess.Popen(
                [java() or "java", "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                 "-Dzookeeper.admin.enableServer=false", "-cp", str(ZOOKEEPER_JAR),
                 "org.apache.zookeeper.server.ZooKeeperServerMain", str(cfg)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        # Ready when a client gets a session (ruok is one of the disabled four-letter words).
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ZooKeeper exited with {self.proc.returncode}: {self.log_tail()}")
            client = KazooClient(hosts=self.hosts, timeout=10)
            try:
                client.start(timeout=2)
                client.stop()
                client.close()
                return self
            except KazooTimeoutError:
                client.close()
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"ZooKeeper did not answer within {timeout} s: {self.log_tail()}") from None

    def log_tail(self) -> str:
        path = self.data_dir / "zookeeper.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGCONT)  # a paused JVM cannot handle SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class LocalCluster:
    """ZooKeeper (unless ``zookeeper`` is given) and ``brokers`` brokers on loopback.

    Parameters
    ----------
    base_dir : path
        Where the data directories and logs go (module docstring).
    brokers : int
        Broker ids 1..brokers.
    zookeeper : str, optional
        ``HOST:PORT[/chroot]`` of a running ZooKeeper; default: start one (chroot ``/pylog``).
    overrides : sequence of str
        ``key=value`` broker configs given to every broker (``--override``).  With fewer
        than 3 brokers, the internal topics' replication factors (and
        ``transaction.state.log.min.isr``) default to what the brokers can hold, as
        Kafka's development configs set them; an override given wins.
    """

    def __init__(self, base_dir: str | os.PathLike, brokers: int = 3, *, zookeeper: str | None = None,
                 overrides: Sequence[str] = ()) -> None:
        self.base_dir = Path(base_dir)
        self.count = brokers
        self.zookeeper_connect = zookeeper
        given = {o.split("=", 1)[0].strip() for o in overrides}
        small = {"offsets.topic.replication.factor": min(3, brokers),
                 "transaction.state.log.replication.factor": min(3, brokers),
                 "transaction.state.log.min.isr": min(2, brokers)}
        self.overrides = [f"{k}={v}" for k, v in small.items() if brokers < 3 and k not in given] + list(overrides)
        self.zookeeper: ZooKeeperServer | None = None
        self.ports: dict[int, int] = {}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        #: Extra ``pylog serve`` arguments of one broker, after the common ones (the last
        #: of a repeated option wins): the fault tests route a broker through proxies
        #: with ``--advertised-listener`` and ``--zookeeper``.
        self.broker_args: dict[int, list[str]] = {}

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.ports[i]}" for i in sorted(self.ports))

    def start(self, timeout: float = 60.0) -> "LocalCluster":
        """Start ZooKeeper (if needed) and every broker; return once each one listens."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self.zookeeper_connect is None:
            self.zookeeper = ZooKeeperServer(self.base_dir / "zookeeper").start(timeout)
            self.zookeeper_connect = f"{self.zookeeper.hosts}/pylog"
        try:
            for i in range(1, self.count + 1):
                self.start_broker(i)
            deadline = time.monotonic() + timeout
            for i in self.procs:
                self._wait_listening(i, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def start_broker(self, broker_id: int) -> None:
        port = self.ports.get(broker_id) or free_port()
        self.ports[broker_id] = port
        args = [sys.executable, "-m", "pylog.cli", "serve", "--node-id", str(broker_id),
                "--zookeeper", str(self.zookeeper_connect), "--listen", f"127.0.0.1:{port}",
                "--data-dir", str(self.base_dir / f"broker-{broker_id}")]
        for o in self.overrides:
            args += ["--override", o]
        args += self.broker_args.get(broker_id, [])
        with open(self.base_dir / f"broker-{broker_id}.log", "ab") as log:
            self.procs[broker_id] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait_listening(self, broker_id: int, deadline: float) -> None:
        proc = self.procs[broker_id]
        while True:
            if proc.poll() is not None:
                tail = (self.base_dir / f"broker-{broker_id}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"broker {broker_id} exited with {proc.returncode}: {tail}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.ports[broker_id])) == 0:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker {broker_id} did not listen on 127.0.0.1:{self.ports[broker_id]} in time")
            time.sleep(0.05)

    def stop_broker(self, broker_id: int, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        proc = self.procs.pop(broker_id, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM every broker (controlled shutdowns, one at a time, so leadership has
        somewhere to go), then stop ZooKeeper if this cluster started it.  ``sig=SIGKILL``
        ends the brokers at once instead, for a run whose end nothing looks at (a
        controlled shutdown of a whole cluster takes seconds: the last broker has nowhere
        to move its leaderships and retries as Kafka's does)."""
        for i in sorted(self.procs):
            self.stop_broker(i, sig)
        if self.zookeeper is not None:
            self.zookeeper.stop()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def cluster_status(bootstrap: str, timeout: float = 10.0) -> dict[str, Any]:
    """The cluster as its Metadata shows it: brokers, the controller, and the partitions
    that are under-replicated (ISR smaller than the replicas) or offline (no leader)."""
    from pylog.client.kafka.network import NetworkClient

    with NetworkClient(bootstrap, client_id="pylog-cluster-status") as client:
        snap = client.refresh_metadata(None, timeout_ms=int(timeout * 1000)).result(timeout)
    under, offline = [], []
    for name, t in sorted(snap.topics.items()):
        for p, pm in sorted(t.partitions.items()):
            if pm.leader_id < 0:
                offline.append((name, p))
            elif len(pm.isr) < len(pm.replicas):
                under.append((name, p))
    return {"cluster_id": snap.cluster_id, "controller_id": snap.controller_id,
            "brokers": sorted((n.node_id, n.host, n.port, n.rack) for n in snap.nodes.values()),
            "topics": len(snap.topics), "under_replicated": under, "offline": offline}
