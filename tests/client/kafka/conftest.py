"""Fixtures for the Kafka-protocol network layer: a real ``pylog serve`` shared by a
module, fake brokers, and network clients that are closed (and checked for leaked
threads and sockets) when the test ends."""

from __future__ import annotations

import threading

import pytest

from pylog.client.kafka import NetworkClient
from tests.client.kafka.fakes import FakeBroker
from tests.server.conftest import ServeProcess, _check_stopped


@pytest.fixture(scope="module")
def kafka_server(tmp_path_factory):
    """One ``pylog serve`` on 127.0.0.1 for the module's tests (each uses its own topics)."""
    sp = ServeProcess(str(tmp_path_factory.mktemp("serve")))
    sp.start()
    try:
        yield sp
    finally:
        _check_stopped(sp)


@pytest.fixture
def fake_broker():
    """A factory of :class:`FakeBroker` s, all stopped at the end."""
    started: list[FakeBroker] = []

    def factory(mode: str = "ok", **kw) -> FakeBroker:
        fb = FakeBroker(mode, **kw)
        started.append(fb)
        return fb

    yield factory
    for fb in started:
        fb.stop()


def _io_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pylog-network-")]


@pytest.fixture
def make_client():
    """A factory of :class:`NetworkClient` s; each is closed at the end, and the test fails
    if its I/O thread is still alive or a connection still holds a socket."""
    made: list[NetworkClient] = []

    def factory(bootstrap: str, **kw) -> NetworkClient:
        c = NetworkClient(bootstrap, **kw)
        made.append(c)
        return c

    yield factory
    for c in made:
        conns = list(c._conns.values())
        c.close()
        assert not c._thread.is_alive(), "the network client's I/O thread outlived close()"
        assert all(conn.sock is None for conn in conns), "a connection kept its socket after close()"


@pytest.fixture(scope="module")
def server_thread(tmp_path_factory):
    """An in-process ``pylog serve`` (ServerThread on 127.0.0.1) for the module's tests,
    for tests that put a rewriting proxy in front of it (each uses its own topics)."""
    from pylog.server.config import ServerConfig
    from pylog.server.server import ServerThread

    cfg = ServerConfig.from_kafka({"log.dirs": str(tmp_path_factory.mktemp("serve")),
                                   "listeners": "PLAINTEXT://127.0.0.1:0",
                                   "group.initial.rebalance.delay.ms": "0"})
    st = ServerThread(cfg).start()
    yield st
    st.stop()
