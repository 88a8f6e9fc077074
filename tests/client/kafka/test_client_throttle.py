"""A broker's ``throttle_time_ms`` (KIP-219): from the versions at which a broker over a
quota answers at once and leaves the waiting to the client, ``pylog.connect`` writes
nothing more on that connection until the throttle time has passed, as Kafka's
NetworkClient does; older versions (the broker itself delayed the answer) are not waited
on again.  A :class:`~tests.client.kafka.rewriting_proxy.RewritingProxy` in front of an
in-process server puts the throttle time into answers and notes when each request came."""

from __future__ import annotations

import threading
import time

import pytest

import pylog
from pylog.client.kafka.connection import _CLIENT_THROTTLES_FROM
from pylog.protocol.apis import ApiKey
from tests.client.kafka.rewriting_proxy import RewritingProxy
from tests.server.util import unique

THROTTLE_MS = 400


class ThrottleOnce:
    """Puts ``THROTTLE_MS`` into the answer to the first request of ``api_key`` (and of
    nothing else), noting the time each request of that API was answered."""

    def __init__(self, api_key: int, version: int | None = None) -> None:
        self.api_key, self.version = api_key, version
        self.answered: list[tuple[float, int]] = []       # (monotonic time, version)
        self.lock = threading.Lock()

    def __call__(self, api_key, version, request, resp):
        if api_key != self.api_key:
            return None
        with self.lock:
            first = not self.answered
            self.answered.append((time.monotonic(), version))
        if first:
            resp.throttle_time_ms = THROTTLE_MS
            return resp
        return None


def test_the_versions_table_covers_the_client_apis_pylog_sends():
    # Every API of the KIP-219 notes that pylog's client sends is in the table.
    for api in (ApiKey.PRODUCE, ApiKey.FETCH, ApiKey.LIST_OFFSETS, ApiKey.METADATA, ApiKey.OFFSET_COMMIT,
                ApiKey.OFFSET_FETCH, ApiKey.FIND_COORDINATOR, ApiKey.JOIN_GROUP, ApiKey.HEARTBEAT,
                ApiKey.SYNC_GROUP, ApiKey.LEAVE_GROUP, ApiKey.INIT_PRODUCER_ID, ApiKey.CREATE_TOPICS):
        assert api in _CLIENT_THROTTLES_FROM


@pytest.fixture
def throttled(server_thread):
    """(client through a proxy that throttles the first Produce answer, the throttle,
    a new one-partition topic)."""
    topic = unique("thr")
    throttle = ThrottleOnce(ApiKey.PRODUCE)
    with RewritingProxy(server_thread.address[1], throttle) as px, \
            pylog.connect(px.bootstrap, client_id="throttle") as c:
        c.create_topic(topic, 1)
        yield c, throttle, topic


def test_a_throttled_answer_holds_back_the_next_request_on_that_connection(throttled):
    c, throttle, topic = throttled
    p = c.producer(linger_ms=0)
    assert p.send(topic, b"first").result(timeout=30).offset == 0
    assert p.send(topic, b"second").result(timeout=30).offset == 1
    p.close()
    (t0, v0), (t1, _v1) = throttle.answered[:2]
    assert v0 >= _CLIENT_THROTTLES_FROM[ApiKey.PRODUCE]
    # The second Produce could not be written before the throttle ended, so its answer
    # comes at least THROTTLE_MS after the first's (a lower bound: never flaky).
    assert t1 - t0 >= THROTTLE_MS / 1000 * 0.95
    conn = next(cn for cn in c._transport.net._conns.values() if cn.throttles)
    assert conn.throttles == 1 and conn.throttle_until == 0.0    # over, and cleared


def test_an_old_version_answer_is_not_waited_on_again(throttled):
    # Produce v5: the broker delays such an answer itself; the client must not wait twice.
    c, throttle, topic = throttled
    net = c._transport.net
    from pylog.protocol import messages as m
    R = m.ProduceRequest

    def produce(value: bytes):
        from pylog.records import RecordBatchBuilder
        b = RecordBatchBuilder()
        b.append(None, None, value)
        body = R(acks=1, timeout_ms=30000, topic_data=[R.TopicProduceData(
            name=topic, partition_data=[R.PartitionProduceData(index=0, records=b.build())])])
        return net.send(c._transport.cluster.leader_for(topic, 0), ApiKey.PRODUCE, body, version=5)

    c._transport.topic_metadata(topic)
    assert produce(b"a").result(30).throttle_time_ms == THROTTLE_MS
    conn = next(cn for cn in net._conns.values() if cn.node_id >= 0 and cn.responses_received)
    assert produce(b"b").result(30).responses[0].partition_responses[0].error_code == 0
    assert all(cn.throttles == 0 for cn in net._conns.values())
    assert conn.throttle_until == 0.0
    assert [v for _t, v in throttle.answered] == [5, 5]


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
