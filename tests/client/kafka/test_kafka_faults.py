"""NetworkClient against fake brokers that hang, answer garbage or out of step, close
mid-frame or announce huge frames; ApiVersions negotiation; periodic metadata."""

from __future__ import annotations

import pytest

from pylog.client.kafka import ConnectionState
from pylog.errors import IllegalStateError, NetworkError, RequestTimedOutError
from pylog.protocol import messages as m, supported_versions
from pylog.protocol.apis import ApiKey
from tests.server.conftest import wait_until


def metadata_of(name: str) -> m.MetadataRequest:
    return m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(name=name)])


def ready_client(make_client, fake, **kw):
    client = make_client(fake.bootstrap, **kw)
    client.wait_for_metadata([], timeout=30)
    assert client.send(0, ApiKey.METADATA, metadata_of("warm")).result(30).topics[0].name == "warm"
    return client


def test_hanging_broker_times_out_closes_and_reconnects(fake_broker, make_client):
    fake = fake_broker("ok")
    client = ready_client(make_client, fake)
    conn = client.connection(0)
    fake.mode = "hang"
    late = client.send(0, ApiKey.METADATA, metadata_of("late"), timeout_ms=300)
    other = client.send(0, ApiKey.METADATA, metadata_of("other"), timeout_ms=60000)
    with pytest.raises(RequestTimedOutError, match="no response in time") as ei:
        late.result(30)
    assert ei.value.retriable
    # Its connection was closed: the request behind it fails as a network error.
    with pytest.raises(NetworkError, match="after a request timed out"):
        other.result(30)
    wait_until(lambda: fake.closed_connections >= 1, what="the fake to see the connection closed")
    fake.mode = "ok"
    assert client.send(0, ApiKey.METADATA, metadata_of("again")).result(30).topics[0].name == "again"
    assert conn.connects == 2 and conn.is_ready()


def test_broker_hanging_in_api_versions_times_out_during_setup(fake_broker, make_client):
    fake = fake_broker("hang_all")
    client = make_client(fake.bootstrap, socket_connection_setup_timeout_ms=60000)
    f = client.send(-1, ApiKey.METADATA, metadata_of("x"), timeout_ms=300)
    with pytest.raises(RequestTimedOutError, match="was not sent in time: the connection is negotiating"):
        f.result(30)
    wait_until(lambda: fake.closed_connections >= 1, what="the set-up connection to be closed")
    fake.mode = "ok"
    client.wait_for_metadata([], timeout=30)


@pytest.mark.parametrize("mode, message", [
    ("garbage", "malformed Metadata"),
    ("noise", "response frame of 1213486160 bytes"),
    ("wrong_corr", "answered correlation id"),
    ("close_mid", "closed the connection in the middle of a response"),
    ("oversize", "response frame of 1073741824 bytes"),
])
def test_misbehaving_broker_gives_retriable_error_and_client_recovers(fake_broker, make_client, mode, message):
    fake = fake_broker("ok")
    client = ready_client(make_client, fake)
    conn = client.connection(0)
    fake.mode = mode
    futures = [client.send(0, ApiKey.METADATA, metadata_of(f"t{i}")) for i in range(3)]
    for i, f in enumerate(futures):
        with pytest.raises(NetworkError) as ei:
            f.result(30)
        assert ei.value.retriable and ei.value.error_code == 13
        if i == 0:
            assert message in str(ei.value)
    assert conn.state is not ConnectionState.READY or conn.connects > 1
    wait_until(lambda: fake.closed_connections >= 1, what="the connection to be closed")
    fake.mode = "ok"
    assert client.send(0, ApiKey.METADATA, metadata_of("fine")).result(30).topics[0].name == "fine"
    assert conn.connects >= 2


def test_max_response_size_is_configurable(fake_broker, make_client):
    fake = fake_broker("ok")
    client = make_client(fake.bootstrap, max_response_size=64)
    # The fake's Metadata answer is larger than 64 bytes: refused, the connection closed.
    with pytest.raises(NetworkError, match="raise max_response_size"):
        client.send(-1, ApiKey.METADATA, metadata_of("a-rather-long-topic-name-to-pass-64-bytes")).result(30)


def test_api_versions_picks_highest_common_version(fake_broker, make_client):
    versions = supported_versions()
    versions[ApiKey.METADATA] = (0, 4)
    fake = fake_broker("ok", versions=versions)
    client = make_client(fake.bootstrap)
    client.wait_for_metadata([], timeout=30)
    assert set(fake.api_requests(ApiKey.METADATA)) == {4}
    assert fake.api_requests(ApiKey.API_VERSIONS) == [3]
    client.send(0, ApiKey.METADATA, metadata_of("x")).result(30)
    assert client.api_versions(0)[ApiKey.METADATA] == (0, 4)
    assert fake.api_requests(ApiKey.METADATA)[-1] == 4


@pytest.mark.parametrize("api_versions_range, expected", [((0, 2), [3, 2]), (None, [3, 0])])
def test_api_versions_falls_back_when_the_broker_does_not_speak_v3(fake_broker, make_client,
                                                                   api_versions_range, expected):
    versions = supported_versions()
    if api_versions_range is None:
        del versions[ApiKey.API_VERSIONS]
    else:
        versions[ApiKey.API_VERSIONS] = api_versions_range
    fake = fake_broker("ok", versions=versions)
    client = make_client(fake.bootstrap)
    client.wait_for_metadata([], timeout=30)
    assert fake.api_requests(ApiKey.API_VERSIONS)[:2] == expected


def test_find_coordinator_v3_broker_gets_one_request_per_key(fake_broker, make_client):
    versions = supported_versions()
    versions[ApiKey.FIND_COORDINATOR] = (0, 3)
    fake = fake_broker("ok", versions=versions)
    client = make_client(fake.bootstrap)
    client.wait_for_metadata([], timeout=30)
    got = client.find_coordinators(["a", "b", "c"]).result(30)
    assert set(got) == {"a", "b", "c"} and len(set(got.values())) == 1
    assert fake.api_requests(ApiKey.FIND_COORDINATOR) == [3, 3, 3]


def test_periodic_metadata_refresh(fake_broker, make_client):
    fake = fake_broker("ok")
    client = make_client(fake.bootstrap, metadata_max_age_ms=50)
    wait_until(lambda: len(fake.api_requests(ApiKey.METADATA)) >= 4, what="periodic refreshes")
    assert client.cluster.snapshot().version >= 4


def test_request_update_after_a_broker_connection_fails(fake_broker, make_client):
    fake = fake_broker("ok")
    client = ready_client(make_client, fake)
    before = len(fake.api_requests(ApiKey.METADATA))
    fake.mode = "wrong_corr"
    with pytest.raises(NetworkError):
        client.send(0, ApiKey.METADATA, metadata_of("x")).result(30)
    fake.mode = "ok"
    # The I/O thread refreshes metadata on its own after the failure (a broker gone).
    wait_until(lambda: client.cluster.snapshot().version >= 2
               and len(fake.api_requests(ApiKey.METADATA)) > before + 1, what="a metadata refresh")


def test_close_while_requests_hang_on_a_fake_broker(fake_broker, make_client):
    fake = fake_broker("ok")
    client = ready_client(make_client, fake)
    fake.mode = "hang"
    futures = [client.send(0, ApiKey.METADATA, metadata_of(f"h{i}")) for i in range(8)]
    wait_until(lambda: client.connection(0).in_flight_count == 5, what="five requests in flight")
    assert client.connection(0).queued_count == 3
    conns = [client.connection(0)]
    client.close()
    for f in futures:
        with pytest.raises(IllegalStateError, match="closed before"):
            f.result(10)
    assert all(c.sock is None for c in conns)
    wait_until(lambda: fake.closed_connections == fake.accepted, what="the fake to see every socket closed")


def test_a_topic_without_a_leader_yet_is_waited_for_not_raised(fake_broker):
    # A leader election under way answers LEADER_NOT_AVAILABLE for the topic: the
    # producer's first look-up retries it until a leader is known, as Kafka's clients do.
    from pylog.client.kafka.transport import KafkaTransport

    fake = fake_broker("ok")
    fake.topic_errors["electing"] = [5, 5]
    t = KafkaTransport(fake.bootstrap, request_timeout_ms=30_000, retry_backoff_ms=10)
    try:
        partitions, _max_bytes = t.topic_metadata("electing")
    finally:
        t.close()
    assert partitions == 1
    assert fake.topic_errors["electing"] == []      # both answers without a leader were seen
