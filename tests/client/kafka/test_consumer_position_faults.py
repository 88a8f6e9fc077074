"""The remote consumer's positions when the broker answers its lookups with errors (issue
#12's audit): ListOffsets, OffsetFetch and Fetch error codes injected by a
:class:`~tests.client.kafka.rewriting_proxy.RewritingProxy` in front of an in-process
server.  What is checked is what Kafka's Java consumer does: retriable codes are retried
and never reach the application, a committed offset is never replaced by
``auto_offset_reset``, and ``poll`` keeps to its own timeout."""

from __future__ import annotations

import pytest

import pylog
from pylog import TopicPartition
from pylog.protocol.apis import ApiKey
from tests.client.helpers import topic_with
from tests.client.kafka.rewriting_proxy import HOLD, RewritingProxy
from tests.server.util import unique


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from pylog.server.config import ServerConfig
    from pylog.server.server import ServerThread

    cfg = ServerConfig.from_kafka({"log.dirs": str(tmp_path_factory.mktemp("serve")),
                                   "listeners": "PLAINTEXT://127.0.0.1:0",
                                   "group.initial.rebalance.delay.ms": "0"})
    st = ServerThread(cfg).start()
    yield st
    st.stop()


class Faults:
    """Error codes to put in the next answers of one API: ``arm(api_key, code, n)``;
    answers of the APIs in ``hold`` are never given (nor any after them on that
    connection)."""

    def __init__(self) -> None:
        self.armed: dict[int, list] = {}
        self.hold: set[int] = set()

    def arm(self, api_key: int, code: int, n: int = 1) -> None:
        self.armed[api_key] = [code, n]

    def left(self, api_key: int) -> int:
        return self.armed.get(api_key, [0, 0])[1]

    def __call__(self, api_key: int, version: int, request, resp):
        if api_key in self.hold:
            return HOLD
        armed = self.armed.get(api_key)
        if not armed or armed[1] <= 0:
            return None
        armed[1] -= 1
        code = armed[0]
        if api_key == ApiKey.LIST_OFFSETS:
            for t in resp.topics:
                for p in t.partitions:
                    p.error_code, p.offset, p.timestamp = code, -1, -1
        elif api_key == ApiKey.FETCH:
            for t in resp.responses:
                for p in t.partitions:
                    p.error_code, p.records = code, None
        elif api_key == ApiKey.OFFSET_FETCH:
            resp.error_code = code
            for g in getattr(resp, "groups", None) or ():
                g.error_code = code
        return resp


@pytest.fixture
def faults():
    return Faults()


@pytest.fixture
def proxied(server, faults):
    """A client connected through a rewriting proxy driven by ``faults``."""
    made = []

    def connect(**kw):
        px = RewritingProxy(server.address[1], faults)
        c = pylog.connect(px.bootstrap, client_id="position-faults", **kw)
        made.append((c, px))
        connect.proxies.append(px)
        return c

    connect.proxies = []
    yield connect
    for c, px in made:
        c.close()
        px.stop()


def consume(cons, n: int, polls: int = 40) -> list:
    """Poll until ``n`` records came, or ``polls`` polls (of up to 500 ms) went by."""
    got: list = []
    for _ in range(polls):
        got += cons.poll(timeout_ms=500)
        if len(got) >= n:
            break
    return got


@pytest.mark.parametrize("code", [78, 3])       # OFFSET_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION
def test_list_offsets_retries_a_new_leaders_refusals(proxied, faults, code):
    # Kafka's new leader answers OFFSET_NOT_AVAILABLE until its high watermark caught up
    # (KIP-207); both codes are retried by Kafka's consumer (OffsetFetcherUtils).
    c = proxied()
    topic = topic_with(c, 3)
    cons = c.consumer(group_id=None, auto_offset_reset="earliest")
    cons.assign([(topic, 0)])
    tp = TopicPartition(topic, 0)
    faults.arm(ApiKey.LIST_OFFSETS, code, 2)
    assert cons.end_offsets([tp]) == {tp: 3}
    assert faults.left(ApiKey.LIST_OFFSETS) == 0
    faults.arm(ApiKey.LIST_OFFSETS, code, 2)
    cons.seek_to_end(tp)
    assert cons.position(tp) == 3
    # ... and inside poll, where auto_offset_reset looks the position up.
    faults.arm(ApiKey.LIST_OFFSETS, code, 2)
    cons.seek(tp, 10)             # out of range: reset to the earliest
    assert [r.offset for r in consume(cons, 3)] == [0, 1, 2]
    cons.close()


@pytest.mark.parametrize("code, reset", [(14, "latest"), (14, "earliest"), (15, "latest"), (16, "earliest")])
def test_a_coordinator_failing_past_the_request_timeout_never_replaces_the_committed_offset(
        proxied, faults, code, reset):
    # The coordinator answers OffsetFetch COORDINATOR_LOAD_IN_PROGRESS (or NOT_AVAILABLE,
    # NOT_COORDINATOR) for longer than request_timeout_ms: Kafka's consumer keeps the
    # partition without a position and asks again; it never applies auto_offset_reset,
    # which would skip records 5..99 (latest) or deliver 0..4 again (earliest).
    setup = proxied()
    topic = topic_with(setup, 100)
    group = unique("g")
    first = setup.consumer(group_id=group, enable_auto_commit=False)
    first.assign([(topic, 0)])
    first.commit({(topic, 0): 5})
    first.close(autocommit=False)
    c = proxied(request_timeout_ms=500)
    faults.arm(ApiKey.OFFSET_FETCH, code, 12)     # ~1.2 s of refusals (retry_backoff_ms=100)
    cons = c.consumer(topic, group_id=group, auto_offset_reset=reset, enable_auto_commit=False)
    got = consume(cons, 95)
    assert faults.left(ApiKey.OFFSET_FETCH) == 0
    assert [r.offset for r in got] == list(range(5, 100))
    assert cons.position((topic, 0)) == 100
    cons.close(autocommit=False)


def test_a_non_retriable_offset_fetch_error_is_raised_not_reset(proxied, faults):
    c = proxied()
    topic = topic_with(c, 3)
    faults.arm(ApiKey.OFFSET_FETCH, 30, 1)          # GROUP_AUTHORIZATION_FAILED
    cons = c.consumer(group_id=unique("g"), auto_offset_reset="earliest", enable_auto_commit=False)
    cons.assign([(topic, 0)])
    with pytest.raises(pylog.errors.GroupAuthorizationFailedError, match="OffsetFetch"):
        consume(cons, 1)
    assert consume(cons, 3)[0].offset == 0          # the next poll asks again
    cons.close(autocommit=False)


@pytest.mark.parametrize("code", [78, -1])      # OFFSET_NOT_AVAILABLE, UNKNOWN_SERVER_ERROR
def test_fetch_errors_kafka_retries_do_not_reach_poll(proxied, faults, code):
    # Kafka's FetchCollector: OFFSET_NOT_AVAILABLE requests a metadata update and
    # UNKNOWN_SERVER_ERROR is logged; either way the partition is fetched again.
    c = proxied()
    topic = topic_with(c, 3)
    cons = c.consumer(group_id=None, auto_offset_reset="earliest")
    cons.assign([(topic, 0)])
    assert cons.position((topic, 0)) == 0
    faults.arm(ApiKey.FETCH, code, 2)
    assert [r.offset for r in consume(cons, 3)] == [0, 1, 2]
    assert faults.left(ApiKey.FETCH) == 0
    cons.close()


def test_a_fetch_error_raised_from_poll_names_the_partition_and_offset(proxied, faults):
    c = proxied()
    topic = topic_with(c, 3)
    cons = c.consumer(group_id=None, auto_offset_reset="earliest")
    cons.assign([(topic, 0)])
    cons.seek((topic, 0), 1)
    faults.arm(ApiKey.FETCH, 2, 1)                  # CORRUPT_MESSAGE
    with pytest.raises(pylog.errors.CorruptRecordError, match=f"{topic}-0 at offset 1: Fetch answered CORRUPT_MESSAGE"):
        consume(cons, 2)
    assert [r.offset for r in consume(cons, 2)] == [1, 2]       # read again at the next poll
    cons.close()


@pytest.mark.parametrize("lookup", ["reset", "committed"])
def test_poll_keeps_to_its_timeout_while_a_position_lookup_hangs(proxied, faults, lookup):
    # The leader holds ListOffsets (auto_offset_reset), or the coordinator holds
    # OffsetFetch: Kafka's poll(timeout) returns empty within its timeout and keeps
    # the lookup going.  pylog's poll used to wait request_timeout_ms and then raise
    # RequestTimedOutError.  (Closing the consumer does not wait for its LeaveGroup,
    # which the held coordinator connection does not answer.)
    topic = topic_with(proxied(), 3)
    c = proxied(request_timeout_ms=2000)
    api = ApiKey.LIST_OFFSETS if lookup == "reset" else ApiKey.OFFSET_FETCH
    faults.hold.add(api)
    if lookup == "reset":
        cons = c.consumer(group_id=None, auto_offset_reset="earliest")
        cons.assign([(topic, 0)])
    else:
        cons = c.consumer(topic, group_id=unique("g"), auto_offset_reset="earliest")
    proxy = proxied.proxies[-1]
    asked = proxy.count(api)
    for _ in range(50):                         # (a group member joins first)
        assert cons.poll(timeout_ms=200) == []
        if proxy.count(api) > asked:
            break
    for _ in range(3):
        assert cons.poll(timeout_ms=200) == []
    assert proxy.count(api) == asked + 1        # one lookup in flight, not one per poll
    assert cons.assignment() == {TopicPartition(topic, 0)}
    cons.close(autocommit=False, timeout=0)


def test_a_seek_wins_over_a_reset_that_keeps_failing(proxied, faults):
    # Every ListOffsets answers OFFSET_NOT_AVAILABLE: the reset never completes, polls
    # return nothing (and raise nothing), and a seek sets the position for good: a
    # lookup completing later does not move it.
    c = proxied(request_timeout_ms=300)
    topic = topic_with(proxied(), 3)
    cons = c.consumer(group_id=None, auto_offset_reset="latest")
    cons.assign([(topic, 0)])
    faults.arm(ApiKey.LIST_OFFSETS, 78, 10**6)
    for _ in range(3):
        assert cons.poll(timeout_ms=100) == []
    cons.seek((topic, 0), 1)
    assert [r.offset for r in consume(cons, 2)] == [1, 2]
    faults.arm(ApiKey.LIST_OFFSETS, 78, 0)
    assert cons.poll(timeout_ms=300) == [] and cons.position((topic, 0)) == 3
    cons.close()


@pytest.mark.timeout(90)        # (a hang guard: the polls below take about 1 s in all)
def test_poll_does_not_wait_for_a_reconnect_attempt_while_the_broker_is_down(proxied):
    # Kafka's fetcher skips a node in reconnect backoff.  pylog queued the fetch until the
    # next connect attempt: a poll(200) lasted up to reconnect_backoff_max_ms (here 120 s).
    topic = topic_with(proxied(), 3)
    c = proxied(reconnect_backoff_ms=120_000, reconnect_backoff_max_ms=120_000)
    cons = c.consumer(group_id=None, auto_offset_reset="earliest")
    cons.assign([(topic, 0)])
    assert len(consume(cons, 3)) == 3
    proxied.proxies[-1].stop()      # the broker is gone: connections closed, connects refused
    for _ in range(5):
        assert cons.poll(timeout_ms=200) == []
    cons.close()


@pytest.mark.timeout(90)        # (a hang guard: the polls below take about 1 s in all)
def test_auto_commit_does_not_hold_poll_while_the_coordinator_hangs(proxied, faults):
    # Kafka's poll auto-commits without waiting (commitAsync).  pylog's waited for the
    # OffsetCommit inside poll, up to request_timeout_ms (here 120 s).
    topic = topic_with(proxied(), 3)
    c = proxied(request_timeout_ms=120_000)
    # (A static member: closing it sends no LeaveGroup, which would wait for the hung
    # coordinator.)
    cons = c.consumer(topic, group_id=unique("g"), group_instance_id="static", auto_offset_reset="earliest",
                      auto_commit_interval_ms=100)
    assert len(consume(cons, 3)) == 3
    proxy = proxied.proxies[-1]
    faults.hold.add(ApiKey.OFFSET_COMMIT)
    sent = proxy.count(ApiKey.OFFSET_COMMIT)
    for _ in range(50):
        assert cons.poll(timeout_ms=100) == []
        if proxy.count(ApiKey.OFFSET_COMMIT) > sent:
            break
    for _ in range(5):
        assert cons.poll(timeout_ms=100) == []
    assert proxy.count(ApiKey.OFFSET_COMMIT) == sent + 1      # one out, not one per interval
    cons.close(autocommit=False)
