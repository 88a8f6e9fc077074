"""Fixtures for the cluster tests.

- ``zookeeper_server``: one real standalone ZooKeeper for the whole session
  (:class:`cluster.zk.ZooKeeperServer`), skipped with the reason only when Debian's
  package is absent and cannot be installed.
- ``zk_connect``: a fresh chroot on it per test (``127.0.0.1:port/pylog-<n>``), so tests
  never see each other's znodes.
- ``ensemble``: parametrized over the two coordination stores, ``memory``
  (:class:`~pylog.cluster.coordination_memory.MemoryZooKeeper`) and ``zookeeper`` (kazoo
  on the real server, in a fresh chroot): ``ensemble.connect()`` opens a broker's
  session (a :class:`~pylog.cluster.coordination.Coordination`), ``ensemble.expire(c)``
  makes ZooKeeper expire its session. Every session is closed when the test ends. One
  suite runs on both, so the in-memory store cannot drift from ZooKeeper's semantics.
"""

from __future__ import annotations

import itertools
import os
import threading

import pytest

from cluster import zk
from pylog.errors import CoordinationError

_chroots = itertools.count()


@pytest.fixture(scope="session")
def zookeeper_server(tmp_path_factory):
    reason = zk.ensure_installed()
    if reason is not None:
        pytest.skip(reason)
    server = zk.ZooKeeperServer(tmp_path_factory.mktemp("zookeeper")).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def zk_connect(zookeeper_server) -> str:
    return f"{zookeeper_server.hosts}/pylog-{os.getpid()}-{next(_chroots)}"


class Ensemble:
    """Sessions on one coordination store for one test (see the module docstring)."""

    def __init__(self, kind: str, zk_connect: str | None = None, server: zk.ZooKeeperServer | None = None) -> None:
        self.kind = kind
        self.zk_connect = zk_connect
        self.server = server
        self.sessions: list = []
        if kind == "memory":
            from pylog.cluster.coordination_memory import MemoryZooKeeper

            self.memory = MemoryZooKeeper()

    def connect(self, session_timeout_ms: int = 10000):
        from pylog.cluster.coordination import Coordination

        if self.kind == "memory":
            coordination = Coordination(self.memory.connect())
        else:
            from pylog.cluster.zookeeper import connect

            coordination = connect(self.zk_connect, session_timeout_ms=session_timeout_ms,
                                   connection_timeout_ms=20000)
        self.sessions.append(coordination)
        return coordination

    def expire(self, coordination, timeout: float = 30.0) -> None:
        """Expire ``coordination``'s session in ZooKeeper; returns once its client has seen
        the expiry and is connected on a new session."""
        old = coordination.session_id
        if self.kind == "memory":
            self.memory.expire_session(old)
            return
        renewed = threading.Event()
        coordination.add_session_listener(on_session_reestablished=renewed.set)
        client = coordination.store.client
        # The trick can lose a race: the victim reconnects to its session before the
        # intruder closes it, and the session lives on. A request after the close tells:
        # it succeeds on the old session only if the trick failed; then repeat it.
        for _ in range(5):
            zk.expire_session(self.server.hosts, client.client_id)
            try:
                coordination.store.exists("/")
            except CoordinationError:
                pass  # the expiry itself, seen by this request
            else:
                if coordination.session_id == old and client.connected and not renewed.is_set():
                    continue
            if renewed.wait(timeout) and coordination.session_id != old:
                return
        raise AssertionError(f"session 0x{old:x} did not expire")

    def close(self) -> None:
        for coordination in self.sessions:
            coordination.close()


@pytest.fixture(params=["memory", "zookeeper"])
def ensemble(request):
    if request.param == "memory":
        ens = Ensemble("memory")
    else:
        server = request.getfixturevalue("zookeeper_server")
        ens = Ensemble("zookeeper", request.getfixturevalue("zk_connect"), server)
    try:
        yield ens
    finally:
        ens.close()
