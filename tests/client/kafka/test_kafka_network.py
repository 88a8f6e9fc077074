"""NetworkClient against a real ``pylog serve``: bootstrap, metadata, pipelining, threads,
acks=0, coordinators, a restart mid-stream, close()."""

from __future__ import annotations

import socket
import threading
import uuid

import pytest

from pylog.client.kafka import ConnectionState, CoordinatorType, NetworkClient
from pylog.client.kafka.cluster import coordinator_node_id
from pylog.errors import IllegalStateError, NetworkError, PylogError, RequestTimedOutError, \
    UnknownTopicOrPartitionError
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey
from pylog.records import RecordBatchBuilder
from tests.server.conftest import ServeProcess, wait_until
from tests.server.util import unique


def create_topic(client: NetworkClient, name: str, partitions: int = 3) -> None:
    T = m.CreateTopicsRequest
    resp = client.send_to_any(ApiKey.CREATE_TOPICS, T(topics=[T.CreatableTopic(
        name=name, num_partitions=partitions, replication_factor=1)], timeout_ms=10000)).result(30)
    assert resp.topics[0].error_code == 0, resp


def batch(*values: bytes) -> bytes:
    b = RecordBatchBuilder()
    for v in values:
        b.append(None, None, v)
    return bytes(b.build())


def metadata_of(name: str) -> m.MetadataRequest:
    return m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(name=name)])


def test_bootstrap_gives_real_nodes_leaders_and_topic_ids(kafka_server, make_client):
    client = make_client(kafka_server.bootstrap)
    topic = unique("boot")
    create_topic(client, topic, 3)
    info = client.wait_for_metadata([topic], timeout=30)[topic]
    assert info.error_code == 0 and not info.is_internal
    assert isinstance(info.topic_id, uuid.UUID) and info.topic_id.int != 0
    assert sorted(info.partitions) == [0, 1, 2]
    nodes = client.cluster.nodes
    assert list(nodes) == [0]
    assert (nodes[0].host, nodes[0].port) == ("127.0.0.1", kafka_server.port)
    assert client.cluster.controller_id == 0 and client.cluster.cluster_id
    assert all(client.cluster.leader_for(topic, p) == 0 for p in range(3))
    assert client.cluster.leader_for(topic, 3) is None
    assert client.cluster.partitions_for(topic) == [0, 1, 2]
    # Requests now go to node 0 by its real id; the bootstrap pseudo-node is retired.
    assert client.send(0, ApiKey.METADATA, metadata_of(topic)).result(30).topics[0].name == topic
    wait_until(lambda: client.connection(-1) is None, what="the bootstrap connection to retire")
    assert client.is_ready(0)


def test_wait_for_metadata_unknown_topic_times_out_with_unknown_topic(kafka_server, make_client):
    client = make_client(kafka_server.bootstrap)
    with pytest.raises(UnknownTopicOrPartitionError, match="not present in metadata"):
        client.wait_for_metadata([unique("nosuch")], timeout=0.5)


def test_refresh_metadata_all_topics_and_auto_create(kafka_server, make_client):
    client = make_client(kafka_server.bootstrap)
    topic = unique("refresh")
    create_topic(client, topic, 1)
    snap = client.refresh_metadata().result(30)
    assert topic in snap.topics and snap.nodes
    auto = unique("auto")
    snap = client.refresh_metadata([auto], allow_auto_topic_creation=False).result(30)
    assert snap.topics[auto].error_code == 3            # UNKNOWN_TOPIC_OR_PARTITION
    assert client.cluster.partitions_for(auto) is None


def test_fifty_requests_pipelined_on_one_connection_answered_in_order(kafka_server, make_client):
    client = make_client(kafka_server.bootstrap)
    client.wait_for_metadata([], timeout=30)
    names = [unique("pipe") for _ in range(50)]
    order: list[int] = []
    futures = []
    for i, name in enumerate(names):
        f = client.send(0, ApiKey.METADATA, metadata_of(name))
        f.add_done_callback(lambda _f, i=i: order.append(i))
        futures.append(f)
    answers = [f.result(30) for f in futures]
    assert [a.topics[0].name for a in answers] == names     # each answer is its request's
    assert order == list(range(50))                          # and they came in order
    conn = client.connection(0)
    assert conn.connects == 1
    assert 1 < conn.max_in_flight_seen <= 5


def test_a_request_sent_from_a_done_callback_is_written_before_the_callback_returns(kafka_server, make_client):
    """A consumer's next prefetch is sent from the answer's done callback: it must be on
    the wire at once, not wait for the next turn of the I/O loop (by then the thread
    the answer woke may hold the GIL for its whole processing)."""
    client = make_client(kafka_server.bootstrap)
    client.wait_for_metadata([], timeout=30)
    client.send(0, ApiKey.METADATA, metadata_of(unique("connect"))).result(30)
    conn = client.connection(0)
    seen: dict = {}
    follow: list = []

    def on_answer(_f) -> None:
        before = conn.requests_sent
        follow.append(client.send(0, ApiKey.METADATA, metadata_of(unique("follow"))))
        seen["written_in_callback"] = conn.requests_sent - before
        seen["thread"] = threading.current_thread().name

    client.send(0, ApiKey.METADATA, metadata_of(unique("first"))).add_done_callback(on_answer)
    wait_until(lambda: follow, what="the done callback")
    assert follow[0].result(30).topics[0].error_code in (0, 3)
    assert seen == {"written_in_callback": 1, "thread": f"pylog-network-{client.client_id}"}


def test_max_in_flight_one_never_pipelines(kafka_server, make_client):
    client = make_client(kafka_server.bootstrap, max_in_flight=1)
    client.wait_for_metadata([], timeout=30)
    futures = [client.send(0, ApiKey.API_VERSIONS, m.ApiVersionsRequest(
        client_software_name="t", client_software_version="1")) for _ in range(20)]
    assert all(f.result(30).error_code == 0 for f in futures)
    assert client.connection(0).max_in_flight_seen == 1


def test_threads_sending_concurrently_get_their_own_answers(kafka_server, make_client):
    client = make_client(kafka_server.bootstrap)
    client.wait_for_metadata([], timeout=30)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(w: int) -> None:
        try:
            start.wait()
            names = [f"conc-{w}-{i}-{uuid.uuid4().hex[:6]}" for i in range(40)]
            futs = [(client.send_to_any if i % 2 else lambda *a, **k: client.send(0, *a, **k))(
                ApiKey.METADATA, metadata_of(n)) for i, n in enumerate(names)]
            got = [f.result(30).topics[0].name for f in futs]
            assert got == names
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert client.connection(0).requests_sent >= 320


def test_acks_zero_produce_completes_at_send_and_the_connection_stays_in_step(kafka_server, make_client):
    client = make_client(kafka_server.bootstrap)
    topic = unique("acks0")
    create_topic(client, topic, 1)
    client.wait_for_metadata([topic], timeout=30)
    P = m.ProduceRequest
    futs = [client.send(0, ApiKey.PRODUCE, P(acks=0, timeout_ms=5000, topic_data=[P.TopicProduceData(
        name=topic, partition_data=[P.PartitionProduceData(index=0, records=batch(b"v%d" % i))])]),
        expect_response=False) for i in range(10)]
    assert [f.result(30) for f in futs] == [None] * 10
    # acks=1 after them: answered, and the offsets show the ten acks=0 batches landed first.
    resp = client.send(0, ApiKey.PRODUCE, P(acks=1, timeout_ms=5000, topic_data=[P.TopicProduceData(
        name=topic, partition_data=[P.PartitionProduceData(index=0, records=batch(b"last"))])])).result(30)
    part = resp.responses[0].partition_responses[0]
    assert (part.error_code, part.base_offset) == (0, 10)


def test_caller_given_version_is_checked(kafka_server, make_client):
    client = make_client(kafka_server.bootstrap)
    client.wait_for_metadata([], timeout=30)
    assert client.api_versions(0) is None                   # not connected yet
    client.send(0, ApiKey.METADATA, metadata_of("x")).result(30)
    lo, hi = client.api_versions(0)[ApiKey.METADATA]
    assert client.send(0, ApiKey.METADATA, metadata_of("x"), version=lo + 1).result(30).topics[0].name == "x"
    with pytest.raises(PylogError, match="not spoken by both"):
        client.send(0, ApiKey.METADATA, metadata_of("x"), version=hi + 1).result(30)
    # The connection is unharmed: the refused request was never sent.
    assert client.send(0, ApiKey.METADATA, metadata_of("y")).result(30).topics[0].name == "y"


def test_find_coordinator_uses_its_own_connection_and_caches(kafka_server, make_client, monkeypatch):
    from pylog.client.kafka import connection as connection_module
    asked: list[list[str]] = []         # the keys of each FindCoordinator request written
    encode = connection_module.encode_request

    def recording(api_key, version, corr, client_id, body):
        if api_key == ApiKey.FIND_COORDINATOR:
            asked.append(list(body.coordinator_keys) if body.coordinator_keys else [body.key])
        return encode(api_key, version, corr, client_id, body)

    monkeypatch.setattr(connection_module, "encode_request", recording)
    client = make_client(kafka_server.bootstrap)
    client.wait_for_metadata([], timeout=30)       # so FindCoordinator goes to node 0
    group = unique("grp")
    node = client.find_coordinator(group).result(30)
    assert node == coordinator_node_id(0)
    assert client.cluster.coordinator_for(group, CoordinatorType.GROUP) == node
    resp = client.send(node, ApiKey.DESCRIBE_GROUPS, m.DescribeGroupsRequest(groups=[group])).result(30)
    assert resp.groups[0].group_id == group and resp.groups[0].error_code == 0
    assert client.connection(node) is not client.connection(0)
    del asked[:]
    assert client.find_coordinator(group).result(30) == node        # from the cache
    assert asked == []
    others = [unique("g2"), unique("g3")]
    many = client.find_coordinators([group, *others]).result(30)
    assert set(many.values()) == {node}
    # One v4 request for the two keys not cached (asked again if the answer was a
    # retriable error, as while a new offsets partition loads on a busy machine).
    assert asked and all(sorted(keys) == sorted(others) for keys in asked)
    del asked[:]
    assert client.cluster.coordinator_error(group, CoordinatorType.GROUP, 16)     # NOT_COORDINATOR
    assert client.cluster.coordinator_for(group) is None
    assert client.find_coordinator(group).result(30) == node
    assert asked and all(keys == [group] for keys in asked)


def test_unknown_node_fails_retriably(kafka_server, make_client):
    client = make_client(kafka_server.bootstrap)
    with pytest.raises(NetworkError, match="not in the cluster metadata") as ei:
        client.send(42, ApiKey.METADATA, metadata_of("x")).result(30)
    assert ei.value.retriable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_bootstrap_fails_retriably_then_connects_once_a_server_listens(tmp_path, make_client):
    port = _free_port()
    client = make_client(f"127.0.0.1:{port}", request_timeout_ms=5000)
    with pytest.raises(NetworkError, match="cannot connect") as ei:
        client.send(-1, ApiKey.METADATA, metadata_of("x")).result(30)
    assert ei.value.retriable and ei.value.error_code == 13
    conn = client.connection(-1)
    wait_until(lambda: conn.failures >= 2, what="the I/O thread's own metadata retries")
    assert conn.state is ConnectionState.DISCONNECTED
    with pytest.raises(RequestTimedOutError, match="no metadata"):
        client.wait_for_metadata([], timeout=0.3)
    sp = ServeProcess(str(tmp_path / "late"), port=port)
    sp.start()
    try:
        client.wait_for_metadata([], timeout=30)
        assert client.cluster.nodes[0].port == port
    finally:
        client.close()
        assert sp.stop() == 0


def test_server_killed_mid_stream_fails_in_flight_retriably_then_recovers(tmp_path, make_client):
    sp = ServeProcess(str(tmp_path / "data")).start()
    try:
        client = make_client(sp.bootstrap, request_timeout_ms=60000)
        topic = unique("restart")
        create_topic(client, topic, 1)
        client.wait_for_metadata([topic], timeout=30)
        F = m.FetchRequest
        # A long poll at the end of the log: certainly in flight when the server dies.
        poll = client.send(0, ApiKey.FETCH, F(replica_id=-1, max_wait_ms=30000, min_bytes=1, max_bytes=1 << 20,
                                               topics=[F.FetchTopic(topic=topic, partitions=[F.FetchPartition(
                                                   partition=0, fetch_offset=0, partition_max_bytes=1 << 20)])]))
        # Pipelined behind it (the broker answers a connection's requests in order).
        behind = [client.send(0, ApiKey.METADATA, metadata_of(topic)) for _ in range(3)]
        wait_until(lambda: client.connection(0).in_flight_count == 4, what="four requests in flight")
        sp.kill()
        for f in [poll, *behind]:
            # A FIN, or a RST when the killed server left bytes of ours unread.
            with pytest.raises(NetworkError, match="closed the connection|Connection reset by peer") as ei:
                f.result(30)
            assert ei.value.retriable
        sp.start()
        answered = []

        def try_once():
            try:
                answered.append(client.send(0, ApiKey.METADATA, metadata_of(topic)).result(30))
                return True
            except (NetworkError, RequestTimedOutError) as exc:
                assert exc.retriable
                return False

        wait_until(try_once, timeout=30, interval=0.1, what="a request after the restart")
        assert answered[0].topics[0].error_code == 0
        assert client.connection(0).connects >= 2
    finally:
        sp.stop()


def test_close_with_requests_in_flight(kafka_server, make_client):
    client = make_client(kafka_server.bootstrap)
    topic = unique("close")
    create_topic(client, topic, 1)
    client.wait_for_metadata([topic], timeout=30)
    F = m.FetchRequest
    polls = [client.send(0, ApiKey.FETCH, F(replica_id=-1, max_wait_ms=30000, min_bytes=1, max_bytes=1 << 20,
                                             topics=[F.FetchTopic(topic=topic, partitions=[F.FetchPartition(
                                                 partition=0, fetch_offset=0, partition_max_bytes=1 << 20)])]))
             for _ in range(3)]
    wait_until(lambda: client.connection(0).in_flight_count == 3, what="three polls in flight")
    conn = client.connection(0)
    thread = client._thread
    client.close()
    for f in polls:
        with pytest.raises(IllegalStateError, match="closed before this request completed"):
            f.result(5)
    assert not thread.is_alive() and thread not in threading.enumerate()
    assert conn.sock is None and conn.state is ConnectionState.CLOSED
    with pytest.raises(IllegalStateError, match="closed"):
        client.send(0, ApiKey.METADATA, metadata_of(topic))
    client.close()          # idempotent


def test_large_fetch_response_grows_its_own_buffer(kafka_server, make_client):
    import os

    client = make_client(kafka_server.bootstrap)
    topic = unique("large")
    create_topic(client, topic, 1)
    client.wait_for_metadata([topic], timeout=30)
    P, F = m.ProduceRequest, m.FetchRequest
    values = [os.urandom(900_000) for _ in range(3)]     # incompressible, each under max.message.bytes
    for v in values:
        resp = client.send(0, ApiKey.PRODUCE, P(acks=1, timeout_ms=5000, topic_data=[P.TopicProduceData(
            name=topic, partition_data=[P.PartitionProduceData(index=0, records=batch(v))])])).result(30)
        assert resp.responses[0].partition_responses[0].error_code == 0
    resp = client.send(0, ApiKey.FETCH, F(replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=10 << 20,
                                           topics=[F.FetchTopic(topic=topic, partitions=[F.FetchPartition(
                                               partition=0, fetch_offset=0, partition_max_bytes=10 << 20)])])
                       ).result(30)
    from pylog.records import iter_batches
    records = resp.responses[0].partitions[0].records
    got = [r.value for b in iter_batches(memoryview(bytes(records))) for r in b]
    assert got == values
    # Then small answers again, through the shared read buffer.
    assert client.send(0, ApiKey.METADATA, metadata_of(topic)).result(30).topics[0].name == topic
