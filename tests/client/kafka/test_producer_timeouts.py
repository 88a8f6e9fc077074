"""The remote producer's timeouts against a broker that holds its Produce answers (#12
audit, finding 9), through a :class:`~tests.client.kafka.rewriting_proxy.RewritingProxy`:
``request_timeout_ms`` is the producer's own (it was silently dropped for the
transport's), and ``delivery_timeout_ms`` bounds a batch on the wire too, as Kafka's
Sender expires in-flight batches.  The client's own request timeout is a minute, so
nothing here can pass by falling back to it."""

from __future__ import annotations

import threading

import pytest

import pylog
from pylog.client.producer import Producer
from pylog.errors import InvalidConfigError, RequestTimedOutError
from pylog.protocol.apis import ApiKey
from tests.client.helpers import FlakyTransport
from tests.client.kafka.rewriting_proxy import HOLD, RewritingProxy
from tests.server.util import unique


class HoldProduce:
    """Holds the answers of the next ``n`` Produce requests (and so everything after them
    on their connection, as a hung broker would); records each Produce's timeout_ms."""

    def __init__(self) -> None:
        self.n = 0
        self.timeouts: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, api_key, version, request, resp):
        if api_key != ApiKey.PRODUCE:
            return None
        with self._lock:
            self.timeouts.append(request.timeout_ms)
            if self.n > 0:
                self.n -= 1
                return HOLD
        return None


@pytest.fixture
def held(server_thread):
    hold = HoldProduce()
    px = RewritingProxy(server_thread.address[1], hold)
    c = pylog.connect(px.bootstrap, client_id="producer-timeouts", request_timeout_ms=60_000)
    topic = unique("pt")
    c.create_topic(topic, partitions=1)
    yield c, hold, topic
    c.close()
    px.stop()


def test_request_timeout_ms_is_the_producers_own(held):
    c, hold, topic = held
    p = c.producer(request_timeout_ms=700, linger_ms=0)
    p.send(topic, b"warm").result(timeout=30)
    hold.n = 1
    # The held request times out after 700 ms (not the client's minute), its connection
    # is closed and the batch goes again on a new one: appended once (idempotence).
    h = p.send(topic, b"second")
    assert h.exception(timeout=30) is None
    assert h.result().offset == 1
    assert hold.timeouts[0] == 700 and all(0 < t <= 700 for t in hold.timeouts)
    p.close()


def test_delivery_timeout_bounds_a_batch_on_the_wire(held):
    c, hold, topic = held
    p = c.producer(request_timeout_ms=2000, delivery_timeout_ms=2500, linger_ms=0, retry_backoff_ms=50)
    p.send(topic, b"warm").result(timeout=30)
    hold.n = 1_000_000          # a hung leader
    h = p.send(topic, b"never answered")
    # Failed by the producer at its delivery timeout, long before the client's own
    # minute: exception() returns it instead of raising that the wait ran out.
    exc = h.exception(timeout=30)
    assert isinstance(exc, RequestTimedOutError)
    # The retry (after the first request's 2 s) was sent with what was left of the
    # batch's 2.5 s, not a whole request timeout.
    assert hold.timeouts[1] == 2000 and 0 < hold.timeouts[-1] < 2000
    p.close(timeout=5)


def test_timeouts_are_checked_as_kafka_checks_them(held, client):
    c, _, topic = held
    # delivery.timeout.ms >= linger.ms + request.timeout.ms (KafkaProducer.configureDeliveryTimeout).
    with pytest.raises(InvalidConfigError, match="delivery_timeout_ms"):
        c.producer(delivery_timeout_ms=3000, request_timeout_ms=1000, linger_ms=2500)
    with pytest.raises(InvalidConfigError, match="delivery_timeout_ms"):
        c.producer(delivery_timeout_ms=3000)         # the client's request timeout: a minute
    c.producer(delivery_timeout_ms=3000, request_timeout_ms=1000, linger_ms=2000).close()
    p = c.producer(request_timeout_ms=200_000)   # the default delivery timeout gives way
    assert p.delivery_timeout_ms == 200_005
    p.close()
    # A transport that cannot time a request refuses the setting instead of dropping it.
    client.create_topic("t", 1)
    with pytest.raises(InvalidConfigError, match="request_timeout_ms"):
        Producer(FlakyTransport(client.transport, []), request_timeout_ms=1000)
    # The embedded transport appends in the call: the setting is taken, as over connect.
    client.producer(request_timeout_ms=1000, delivery_timeout_ms=2000).close()


def test_client_close_timeout_bounds_its_producers_flush(held):
    # Kafka's KafkaProducer.close(Duration): what is unsent at the timeout fails.  Without
    # one, a producer open against a hung broker held Client.close() for its
    # delivery_timeout_ms (two minutes by default).
    c, hold, topic = held
    p = c.producer(linger_ms=0)
    p.send(topic, b"warm").result(timeout=30)
    hold.n = 1_000_000
    h = p.send(topic, b"never answered")
    c.close(timeout=0.5)
    assert p.closed and h.done()
    assert isinstance(h.exception(timeout=0), RequestTimedOutError)


def test_making_a_producer_sends_nothing_and_survives_an_unreachable_cluster():
    # Kafka's producer constructor makes no request: the idempotent producer's id is had by
    # the sender before its first batch.  Here producer() raised NetworkError.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # closed again: nothing listens there
    with pylog.connect(f"127.0.0.1:{port}", request_timeout_ms=1000) as c:
        p = c.producer(linger_ms=0, delivery_timeout_ms=1500)
        assert p.enable_idempotence and p.producer_id == -1
        p.close(timeout=5)
