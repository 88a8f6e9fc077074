"""Fixtures of the client tests.

The behaviour tests take ``client``: a :class:`pylog.Client` (today ``pylog.open`` over a
temporary directory; the same tests are meant to run over the Kafka-protocol transport
too).  Tests that need the in-process broker itself (a fake clock, ``tick()``, the group
coordinator) use ``client.broker`` or ``fake_client`` and say so by name.
"""

import pytest

import pylog
from pylog.broker.group import GroupCoordinatorConfig


class FakeClock:
    """Milliseconds, moved only by the test."""

    def __init__(self, t: int = 1_700_000_000_000) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t

    def advance(self, ms: int) -> None:
        self.t += ms


@pytest.fixture
def client(tmp_path):
    """An embedded client: ``pylog.open`` with the broker's maintenance thread and the
    wall clock (producers and consumers run their own threads)."""
    c = pylog.open(tmp_path / "data", offsets_topic_num_partitions=4,
                   group=GroupCoordinatorConfig(min_session_timeout_ms=1000))
    yield c
    c.close()


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
