"""Fixtures of the client tests.

The behaviour tests take ``client``: a :class:`pylog.Client`, once per transport:

- ``embedded``: ``pylog.open`` over a temporary directory;
- ``remote``: ``pylog.connect`` to a ``pylog serve`` (an in-process
  :class:`~pylog.server.server.ServerThread` on a free 127.0.0.1 port, on asyncio's loop)
  over its own temporary directory, started and stopped around each test: the tests
  assume a fresh cluster (topic "t", group "g").

Tests that need the in-process broker itself (a fake clock, ``tick()``, the group
coordinator, ``_append_internal``) take ``fake_client``, or carry
``@pytest.mark.embedded_only("why")``: they run on the embedded transport only.
"""

import time
from typing import Any

import pytest

import pylog
from pylog.broker.group import GroupCoordinatorConfig


class FakeClock:
    """Milliseconds, moved only by the test; it starts at the wall clock's now, so records
    the producer stamps with the real time are within the topic's
    message.timestamp.after.max.ms (one hour, Kafka 4's default)."""

    def __init__(self, t: int | None = None) -> None:
        self.t = int(time.time() * 1000) if t is None else t

    def __call__(self) -> int:
        return self.t

    def advance(self, ms: int) -> None:
        self.t += ms


#: Server settings of the remote transport's ``pylog serve``: as the embedded client's
#: (whose broker creates no topic on first use).
REMOTE_SERVER_SETTINGS = {
    "auto.create.topics.enable": "false",
    "offsets.topic.num.partitions": "4",
    "group.min.session.timeout.ms": "1000",
    "group.initial.rebalance.delay.ms": "0",
}


#: Tests that reach into the in-process broker, by name, with the reason: they run on
#: the embedded transport only (``@pytest.mark.embedded_only("why")`` does the same).
EMBEDDED_ONLY: dict[str, str] = {}

#: Known remote failures, by name, with the reason: skipped on the remote transport
#: until fixed.
REMOTE_KNOWN_FAILURES: dict[str, str] = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "embedded_only(reason): runs on the embedded transport only")


def pytest_collection_modifyitems(config, items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("client") != "remote":
            continue
        mark = item.get_closest_marker("embedded_only")
        reason = EMBEDDED_ONLY.get(item.originalname)
        if mark is not None:
            reason = mark.args[0] if mark.args else mark.kwargs.get("reason", "")
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"embedded transport only: {reason}"))
        elif item.originalname in REMOTE_KNOWN_FAILURES:
            item.add_marker(pytest.mark.skip(reason=f"remote, known failure: {REMOTE_KNOWN_FAILURES[item.originalname]}"))


class RemoteTestClient(pylog.Client):
    """``pylog.connect``'s client plus ``broker``: the broker of the in-process server it
    is connected to, so that tests may inspect the cluster side (group state and
    generation, members) and set up what no client can send (control batches).  The
    client itself reaches that broker only over the wire."""

    server_broker: Any = None

    @property
    def broker(self) -> Any:
        return self.server_broker


@pytest.fixture(params=["embedded", "remote"])
def client(request, tmp_path, monkeypatch):
    """A client on each transport: ``pylog.open`` with the broker's maintenance thread
    and the wall clock, or ``pylog.connect`` to a fresh ``pylog serve`` (producers and
    consumers run their own threads)."""
    if request.param == "embedded":
        c = pylog.open(tmp_path / "data", offsets_topic_num_partitions=4,
                       group=GroupCoordinatorConfig(min_session_timeout_ms=1000))
        yield c
        c.close()
        return
    from pylog.server.config import ServerConfig
    from pylog.server.server import EVENT_LOOP_ENV, ServerThread

    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    cfg = ServerConfig.from_kafka({"log.dirs": str(tmp_path / "serve"), "listeners": "PLAINTEXT://127.0.0.1:0",
                                   **REMOTE_SERVER_SETTINGS})
    server = ServerThread(cfg).start()
    try:
        c = pylog.connect(server.bootstrap, client_id="test")
        c.__class__ = RemoteTestClient
        c.server_broker = server.server.broker
        try:
            yield c
        finally:
            c.close()
    finally:
        server.stop()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def fake_client(tmp_path, clock):
    """An embedded client whose broker runs on a fake clock with no background thread:
    the test calls ``fake_client.broker.tick()``."""
    c = pylog.open(tmp_path / "data", clock=clock, background=False, offsets_topic_num_partitions=4,
                   group=GroupCoordinatorConfig(min_session_timeout_ms=1000))
    yield c
    c.close()


def drain(consumer, n, timeout_ms=5000, max_rounds=1000):
    """Poll until n records arrived (or rounds run out); returns them."""
    out = []
    for _ in range(max_rounds):
        if len(out) >= n:
            break
        out.extend(consumer.poll(timeout_ms=timeout_ms if not out else 200))
    return out
