"""THROTTLING_QUOTA_EXCEEDED on CreateTopics, CreatePartitions and DeleteTopics (#12 audit,
finding 11): retried after the answer's throttle_time_ms while the call's timeout allows,
as Kafka's admin client does by default (retryOnQuotaViolation, KIP-599).  A
:class:`~tests.client.kafka.rewriting_proxy.RewritingProxy` in front of an in-process
server puts the code in the answers; the requests it turns into refusals change nothing
on the server (validate_only, or a topic that does not exist)."""

from __future__ import annotations

import pytest

import pylog
from pylog.errors import ThrottlingQuotaExceededError, UnknownTopicOrPartitionError
from pylog.protocol.apis import ApiKey
from tests.client.kafka.rewriting_proxy import RewritingProxy
from tests.server.util import unique

_QUOTA = 89


class Throttle:
    """Answers the next ``n`` requests of ``api_key`` THROTTLING_QUOTA_EXCEEDED with a
    throttle time of 100 ms."""

    def __init__(self) -> None:
        self.api_key, self.n = None, 0

    def __call__(self, api_key, version, request, resp):
        if api_key != self.api_key or self.n <= 0:
            return None
        self.n -= 1
        resp.throttle_time_ms = 100
        for r in getattr(resp, "topics", None) or getattr(resp, "responses", None) or resp.results:
            r.error_code = _QUOTA
            if hasattr(r, "error_message"):
                r.error_message = "quota exceeded (injected)"
        return resp


@pytest.fixture
def throttled(server_thread):
    throttle = Throttle()
    px = RewritingProxy(server_thread.address[1], throttle)
    c = pylog.connect(px.bootstrap, client_id="admin-quota", request_timeout_ms=10_000)
    yield c, throttle, px
    c.close()
    px.stop()


def test_quota_refusals_are_retried_after_the_throttle_time(throttled):
    c, throttle, px = throttled
    topic = unique("q")
    c.create_topic(topic, 1)

    throttle.api_key, throttle.n = ApiKey.CREATE_TOPICS, 2
    assert c.create_topic(unique("q"), 2, validate_only=True).name
    assert throttle.n == 0 and px.count(ApiKey.CREATE_TOPICS) == 1 + 3

    throttle.api_key, throttle.n = ApiKey.CREATE_PARTITIONS, 2
    c.create_partitions(topic, 3, validate_only=True)
    assert throttle.n == 0 and px.count(ApiKey.CREATE_PARTITIONS) == 3

    # Retried, the request reaches the server's own answer.
    throttle.api_key, throttle.n = ApiKey.DELETE_TOPICS, 2
    with pytest.raises(UnknownTopicOrPartitionError):
        c.delete_topic(unique("missing"))
    assert throttle.n == 0 and px.count(ApiKey.DELETE_TOPICS) == 3
    assert c.num_partitions(topic) == 1


def test_a_quota_that_outlasts_the_call_is_raised(server_thread):
    throttle = Throttle()
    throttle.api_key, throttle.n = ApiKey.CREATE_TOPICS, 1_000_000
    with RewritingProxy(server_thread.address[1], throttle) as px, \
            pylog.connect(px.bootstrap, client_id="admin-quota", request_timeout_ms=1000) as c:
        with pytest.raises(ThrottlingQuotaExceededError):
            c.create_topic(unique("q"), 1, validate_only=True)
        assert px.count(ApiKey.CREATE_TOPICS) > 1
