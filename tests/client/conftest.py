import pytest

from pylog.broker.core import Broker
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
def broker(tmp_path):
    """A broker with its maintenance thread and the wall clock (producers and consumers
    run their own threads)."""
    b = Broker(tmp_path / "data", offsets_topic_num_partitions=4,
               group=GroupCoordinatorConfig(min_session_timeout_ms=1000))
    yield b
    b.close()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def fake_broker(tmp_path, clock):
    """A broker on a fake clock, no background thread: the test calls tick()."""
    b = Broker(tmp_path / "data", clock=clock, background=False, offsets_topic_num_partitions=4,
               group=GroupCoordinatorConfig(min_session_timeout_ms=1000))
    yield b
    b.close()


def drain(consumer, n, timeout_ms=5000, max_rounds=1000):
    """Poll until n records arrived (or rounds run out); returns them."""
    out = []
    for _ in range(max_rounds):
        if len(out) >= n:
            break
        out.extend(consumer.poll(timeout_ms=timeout_ms if not out else 200))
    return out
