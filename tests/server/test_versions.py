"""Every advertised API version is served: ApiVersions lists exactly the required table,
and a request of each API at each advertised version gets a well-formed answer with the
expected outcome (pylog's own codec as the client, so each version is exercised
explicitly, not only the one a real client happens to pick)."""

from __future__ import annotations

import socket
import struct
import uuid

import pytest

from pylog.protocol import messages as m
from pylog.protocol.codec import decode_response, encode_request
from pylog.protocol.segments import segments_to_bytes
from pylog.records import RecordBatchBuilder
from pylog.server.handlers import SERVED_VERSIONS
from tests.wire import BrokerConnection, WireClient

REQUIRED = {
    18: (0, 3), 3: (0, 12), 0: (3, 9), 1: (4, 12), 2: (0, 7), 10: (0, 4), 11: (0, 7), 14: (0, 5),
    12: (0, 4), 13: (0, 4), 8: (0, 8), 9: (0, 8), 15: (0, 5), 16: (0, 5), 42: (0, 2), 47: (0, 0),
    19: (0, 5), 20: (0, 4), 37: (0, 2), 21: (0, 2), 32: (0, 4), 33: (0, 1), 44: (0, 1), 22: (0, 5),
    23: (0, 3), 60: (0, 0), 24: (0, 5), 25: (0, 4), 26: (0, 4), 27: (0, 1), 28: (0, 4), 61: (0, 0),
    65: (0, 0), 66: (0, 1), 43: (0, 2), 35: (0, 4),
}


def batch(values, key=None, producer_id=-1, producer_epoch=-1, base_sequence=-1):
    b = RecordBatchBuilder(producer_id=producer_id, producer_epoch=producer_epoch,
                           base_sequence=base_sequence)
    for v in values:
        b.append(None, key, v)
    return bytes(b.build())


def raw_roundtrip(address, api_key, version, body, corr=1):
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(segments_to_bytes(encode_request(api_key, version, corr, "sweep", body)))
        return read_frame(s)


def read_frame(s):
    head = recv_exact(s, 4)
    (size,) = struct.unpack(">i", head)
    return recv_exact(s, size)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def test_api_versions_table_is_exactly_what_is_required(server):
    with BrokerConnection(server.host, server.port) as conn:
        resp = conn.request(18, m.ApiVersionsRequest(client_software_name="t", client_software_version="1"),
                            version=3)
    table = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
    assert resp.error_code == 0
    assert table == REQUIRED
    assert SERVED_VERSIONS == REQUIRED
    # pylog speaks transaction version 1 (KIP-890 part 1 only): no `transaction.version`
    # feature, which Kafka 4's Java producer needs finalized at 2 or more before it
    # leaves out AddPartitionsToTxn and sends EndTxn v5 / Produce v12 (neither served).
    assert not resp.supported_features and not resp.finalized_features
    assert table[26][1] <= 4 and table[0][1] <= 11


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_api_versions_every_version(server, version):
    frame = raw_roundtrip((server.host, server.port), 18, version,
                          m.ApiVersionsRequest(client_software_name="sweep", client_software_version="1.0"))
    _corr, resp = decode_response(18, version, frame)
    assert resp.error_code == 0
    assert {k.api_key for k in resp.api_keys} == set(REQUIRED)


def test_api_versions_newer_than_ours_gets_v0_body_with_the_list(server):
    # ApiVersions v9 with a v2 header (client id, empty tag section) and an unknown body.
    payload = struct.pack(">hhih", 18, 9, 77, 5) + b"sweep" + b"\x00" + b"\x01\x02\x03"
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(payload)) + payload)
        frame = read_frame(s)
        corr, resp = decode_response(18, 0, frame)
        assert corr == 77
        assert resp.error_code == 35
        assert {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys} == REQUIRED
        # The connection stays usable.
        s.sendall(segments_to_bytes(encode_request(18, 0, 78, "sweep", m.ApiVersionsRequest())))
        assert decode_response(18, 0, read_frame(s))[1].error_code == 0


def test_unknown_api_and_unsupported_version_get_error_35_and_keep_the_connection(server):
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        for corr, (key, version) in enumerate([(1000, 0), (0, 2), (1, 99), (24, 0), (17, 1)], start=10):
            payload = struct.pack(">hhih", key, version, corr, -1)
            if key == 0 and version == 2 or key in (24, 17):
                payload += b"\x00" * 16
            s.sendall(struct.pack(">i", len(payload)) + payload)
            frame = read_frame(s)
            assert struct.unpack_from(">i", frame)[0] == corr
            if key in (24, 17):
                # APIs the codec speaks but the server does not serve: their own response
                # shape, with UNSUPPORTED_VERSION in its top-level error (SaslHandshake
                # has one; AddPartitionsToTxn v0 keeps errors per partition and comes
                # back empty).
                _c, resp = decode_response(key, version, frame)
                if key == 17:
                    assert resp.error_code == 35
            else:
                assert frame[4:6] == struct.pack(">h", 35)
        s.sendall(segments_to_bytes(encode_request(18, 0, 99, "sweep", m.ApiVersionsRequest())))
        assert decode_response(18, 0, read_frame(s))[1].error_code == 0
    server.wait_for_log(r"unsupported request .* Unknown\(1000\) v0")


# ---------------------------------------------------------------------------------------
# One request per API and version
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep_server(module_server):
    with WireClient(module_server.bootstrap) as c:
        c.create_topic("sweep", 2)
        c.produce("sweep", 0, batch([b"a", b"b", b"c"]))
        c.produce("sweep", 1, batch([b"x"]))
    return module_server


def _versions():
    for key, (lo, hi) in sorted(REQUIRED.items()):
        for v in range(lo, hi + 1):
            yield key, v


def _request(key, v, tag):
    """A request of API ``key`` at version ``v`` and a check of its response."""
    R = m
    if key == 0:
        T = R.ProduceRequest
        body = R.ProduceRequest(acks=-1, timeout_ms=5000, topic_data=[T.TopicProduceData(name="sweep", partition_data=[
            T.PartitionProduceData(index=1, records=batch([f"v{v}".encode()]))])])

        def check(r):
            p = r.responses[0].partition_responses[0]
            assert p.error_code == 0 and p.base_offset >= 1
        return body, check
    if key == 1:
        F = R.FetchRequest
        body = R.FetchRequest(replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20,
                              isolation_level=0, session_id=0, session_epoch=-1,
                              topics=[F.FetchTopic(topic="sweep", partitions=[F.FetchPartition(
                                  partition=0, fetch_offset=1, partition_max_bytes=1 << 20)])])

        def check(r):
            p = r.responses[0].partitions[0]
            assert p.error_code == 0 and p.high_watermark == 3
            data = bytes(p.records)
            # The fetch offset (1) is inside the first batch: the whole batch comes back.
            assert struct.unpack_from(">q", data, 0)[0] == 0
        return body, check
    if key == 2:
        T = R.ListOffsetsRequest
        body = R.ListOffsetsRequest(replica_id=-1, topics=[T.ListOffsetsTopic(name="sweep", partitions=[
            T.ListOffsetsPartition(partition_index=0, timestamp=-1)])])

        def check(r):
            p = r.topics[0].partitions[0]
            assert p.error_code == 0
            assert (p.old_style_offsets == [3]) if v == 0 else (p.offset == 3)
        return body, check
    if key == 3:
        topics = [R.MetadataRequest.MetadataRequestTopic(name="sweep")]
        body = R.MetadataRequest(topics=topics, allow_auto_topic_creation=False) if v >= 4 else \
            R.MetadataRequest(topics=topics)

        def check(r):
            assert len(r.brokers) == 1
            t = [x for x in r.topics if x.name == "sweep"][0]
            assert t.error_code == 0 and len(t.partitions) == 2
            if v >= 10:
                assert t.topic_id != uuid.UUID(int=0)
        return body, check
    if key == 8:
        T = R.OffsetCommitRequest
        body = R.OffsetCommitRequest(group_id=f"g-{tag}", topics=[T.OffsetCommitRequestTopic(name="sweep", partitions=[
            T.OffsetCommitRequestPartition(partition_index=0, committed_offset=2, committed_metadata="m")])])

        def check(r):
            assert r.topics[0].partitions[0].error_code == 0
        return body, check
    if key == 9:
        if v >= 8:
            G = R.OffsetFetchRequest
            body = R.OffsetFetchRequest(groups=[G.OffsetFetchRequestGroup(group_id="g-commit", topics=[
                G.OffsetFetchRequestTopics(name="sweep", partition_indexes=[0])])])

            def check(r):
                assert r.groups[0].topics[0].partitions[0].committed_offset == 2
        else:
            T = R.OffsetFetchRequest
            body = R.OffsetFetchRequest(group_id="g-commit", topics=[T.OffsetFetchRequestTopic(name="sweep", partition_indexes=[0])])

            def check(r):
                assert r.topics[0].partitions[0].committed_offset == 2
        return body, check
    if key == 10:
        body = R.FindCoordinatorRequest(coordinator_keys=["g"]) if v >= 4 else \
            R.FindCoordinatorRequest(key="g")

        def check(r):
            if v >= 4:
                assert r.coordinators[0].error_code == 0 and r.coordinators[0].node_id == 0
            else:
                assert r.error_code == 0 and r.node_id == 0
        return body, check
    if key == 11:
        body = R.JoinGroupRequest(group_id=f"j-{tag}", session_timeout_ms=10000, rebalance_timeout_ms=10000,
                                  member_id="", protocol_type="consumer",
                                  protocols=[R.JoinGroupRequest.JoinGroupRequestProtocol(name="range",
                                                                                         metadata=b"")])

        def check(r):
            # v4+: a new member first gets MEMBER_ID_REQUIRED and its id.
            if v >= 4:
                assert r.error_code == 79 and r.member_id
            else:
                assert r.error_code == 0 and r.leader == r.member_id and r.generation_id == 1
        return body, check
    if key == 14:
        body = R.SyncGroupRequest(group_id="nosuch", generation_id=1, member_id="m", assignments=[])

        def check(r):
            assert r.error_code == 25            # UNKNOWN_MEMBER_ID
        return body, check
    if key == 12:
        body = R.HeartbeatRequest(group_id="nosuch", generation_id=1, member_id="m")

        def check(r):
            assert r.error_code == 25
        return body, check
    if key == 13:
        body = R.LeaveGroupRequest(group_id="nosuch",
                                   members=[R.LeaveGroupRequest.MemberIdentity(member_id="m")]) if v >= 3 \
            else R.LeaveGroupRequest(group_id="nosuch", member_id="m")

        def check(r):
            if v >= 3:
                assert r.error_code == 0 and r.members[0].error_code == 25
            else:
                assert r.error_code == 25
        return body, check
    if key == 15:
        body = R.DescribeGroupsRequest(groups=["g-commit"])

        def check(r):
            assert r.groups[0].group_id == "g-commit" and r.groups[0].error_code == 0
        return body, check
    if key == 16:
        body = R.ListGroupsRequest()

        def check(r):
            assert r.error_code == 0 and "g-commit" in {g.group_id for g in r.groups}
            if v >= 5:
                assert {g.group_type for g in r.groups} == {"classic"}
        return body, check
    if key == 42:
        body = R.DeleteGroupsRequest(groups_names=[f"g-{tag}"])

        def check(r):
            assert r.results[0].error_code == 0
        return body, check
    if key == 47:
        T = R.OffsetDeleteRequest
        body = R.OffsetDeleteRequest(group_id="g-commit", topics=[T.OffsetDeleteRequestTopic(name="sweep", partitions=[
            T.OffsetDeleteRequestPartition(partition_index=1)])])

        def check(r):
            assert r.error_code == 0 and r.topics[0].partitions[0].error_code == 0
        return body, check
    if key == 19:
        T = R.CreateTopicsRequest
        body = R.CreateTopicsRequest(topics=[T.CreatableTopic(name=f"ct-{tag}", num_partitions=3, replication_factor=1,
                                               configs=[T.CreatableTopicConfig(name="retention.ms",
                                                                               value="3600000")])],
                                     timeout_ms=5000)

        def check(r):
            t = r.topics[0]
            assert t.error_code == 0
            if v >= 5:
                assert t.num_partitions == 3
                assert {c.name: c.value for c in t.configs}["retention.ms"] == "3600000"
        return body, check
    if key == 20:
        body = R.DeleteTopicsRequest(topic_names=[f"ct-{tag}"], timeout_ms=5000)

        def check(r):
            assert r.responses[0].error_code == 0
        return body, check
    if key == 37:
        body = R.CreatePartitionsRequest(topics=[R.CreatePartitionsRequest.CreatePartitionsTopic(
            name=f"ct-{tag}", count=4, assignments=None)], timeout_ms=5000, validate_only=False)

        def check(r):
            assert r.results[0].error_code == 0
        return body, check
    if key == 21:
        T = R.DeleteRecordsRequest
        body = R.DeleteRecordsRequest(topics=[T.DeleteRecordsTopic(name=f"ct-{tag}", partitions=[
            T.DeleteRecordsPartition(partition_index=0, offset=0)])], timeout_ms=5000)

        def check(r):
            p = r.topics[0].partitions[0]
            assert p.error_code == 0 and p.low_watermark == 0
        return body, check
    if key == 32:
        body = R.DescribeConfigsRequest(resources=[R.DescribeConfigsRequest.DescribeConfigsResource(
            resource_type=2, resource_name="sweep", configuration_keys=None)])

        def check(r):
            res = r.results[0]
            assert res.error_code == 0
            names = {c.name for c in res.configs}
            assert {"retention.ms", "cleanup.policy", "segment.bytes", "max.message.bytes"} <= names
        return body, check
    if key in (33, 44):
        if key == 33:
            A = R.AlterConfigsRequest
            body = R.AlterConfigsRequest(resources=[A.AlterConfigsResource(resource_type=2, resource_name="sweep", configs=[
                A.AlterableConfig(name="retention.ms", value="86400000")])], validate_only=True)
        else:
            A = R.IncrementalAlterConfigsRequest
            body = R.IncrementalAlterConfigsRequest(resources=[A.AlterConfigsResource(resource_type=2, resource_name="sweep", configs=[
                A.AlterableConfig(name="retention.ms", config_operation=0, value="86400000")])],
                validate_only=True)

        def check(r):
            assert r.responses[0].error_code == 0
        return body, check
    if key == 22:
        body = R.InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60000)

        def check(r):
            assert r.error_code == 0 and r.producer_id >= 0 and r.producer_epoch == 0
        return body, check
    if key == 23:
        T = R.OffsetForLeaderEpochRequest
        body = R.OffsetForLeaderEpochRequest(topics=[T.OffsetForLeaderTopic(topic="sweep", partitions=[
            T.OffsetForLeaderPartition(partition=0, leader_epoch=0)])])

        def check(r):
            p = r.topics[0].partitions[0]
            assert p.error_code == 0 and p.end_offset == 3
        return body, check
    if key == 35:
        D = R.DescribeLogDirsRequest
        body = D(topics=[D.DescribableLogDirTopic(topic="sweep", partitions=[0, 1])])

        def check(r):
            (d,) = r.results
            assert d.error_code == 0 and [(t.name, [p.partition_index for p in t.partitions])
                                          for t in d.topics] == [("sweep", [0, 1])]
            assert all(p.partition_size > 0 for p in d.topics[0].partitions)
        return body, check
    if key == 60:
        body = R.DescribeClusterRequest()

        def check(r):
            assert r.error_code == 0 and r.brokers[0].broker_id == 0 and r.cluster_id
        return body, check
    if key in (24, 25, 26, 28):
        # Transactions of an id nobody initialised: INVALID_PRODUCER_ID_MAPPING (49).
        if key == 24 and v >= 4:
            T = R.AddPartitionsToTxnRequest
            body = T(transactions=[T.AddPartitionsToTxnTransaction(
                transactional_id=f"tx-{tag}", producer_id=7, producer_epoch=0, verify_only=True,
                topics=[T.AddPartitionsToTxnTopic(name="sweep", partitions=[0])])])
        elif key == 24:
            T = R.AddPartitionsToTxnRequest
            body = T(v3_and_below_transactional_id=f"tx-{tag}", v3_and_below_producer_id=7,
                     v3_and_below_producer_epoch=0,
                     v3_and_below_topics=[T.AddPartitionsToTxnTopic(name="sweep", partitions=[0])])
        elif key == 25:
            body = R.AddOffsetsToTxnRequest(transactional_id=f"tx-{tag}", producer_id=7, producer_epoch=0,
                                            group_id="g")
        elif key == 26:
            body = R.EndTxnRequest(transactional_id=f"tx-{tag}", producer_id=7, producer_epoch=0, committed=True)
        else:
            T = R.TxnOffsetCommitRequest
            body = T(transactional_id=f"tx-{tag}", group_id="g", producer_id=7, producer_epoch=0,
                     topics=[T.TxnOffsetCommitRequestTopic(name="sweep", partitions=[
                         T.TxnOffsetCommitRequestPartition(partition_index=0, committed_offset=1,
                                                           committed_metadata="")])])

        def check(r):
            if key == 24:
                topics = r.results_by_transaction[0].topic_results if v >= 4 else r.results_by_topic_v3_and_below
                codes = [p.partition_error_code for t in topics for p in t.results_by_partition]
            elif key == 28:
                codes = [p.error_code for t in r.topics for p in t.partitions]
            else:
                codes = [r.error_code]
            assert codes == [49], codes
        return body, check
    if key == 27:
        T = R.WriteTxnMarkersRequest
        body = T(markers=[T.WritableTxnMarker(producer_id=7, producer_epoch=0, transaction_result=False,
                                              topics=[T.WritableTxnMarkerTopic(name=f"ct-{tag}", partition_indexes=[1])],
                                              coordinator_epoch=0)])

        def check(r):
            assert r.markers[0].topics[0].partitions[0].error_code == 0
        return body, check
    if key == 61:
        T = R.DescribeProducersRequest
        body = T(topics=[T.TopicRequest(name="sweep", partition_indexes=[0, 9])])

        def check(r):
            codes = [p.error_code for p in r.topics[0].partitions]
            assert codes == [0, 3], codes
        return body, check
    if key == 65:
        body = R.DescribeTransactionsRequest(transactional_ids=["nobody"])

        def check(r):
            assert r.transaction_states[0].error_code == 105       # TRANSACTIONAL_ID_NOT_FOUND
        return body, check
    if key == 66:
        body = R.ListTransactionsRequest(state_filters=["Ongoing", "Nonsense"], producer_id_filters=[])

        def check(r):
            assert r.error_code == 0 and r.unknown_state_filters == ["Nonsense"]
        return body, check
    if key == 18:
        body = R.ApiVersionsRequest(client_software_name="sweep", client_software_version="1")

        def check(r):
            assert r.error_code == 0
        return body, check
    if key == 43:
        E = R.ElectLeadersRequest
        body = E(election_type=0, topic_partitions=[E.TopicPartitions(topic="sweep", partitions=[0])],
                 timeout_ms=5000)

        def check(r):
            assert r.replica_election_results[0].partition_result[0].error_code == 84   # ELECTION_NOT_NEEDED
        return body, check
    raise AssertionError(f"no sweep request for API {key}")


def test_every_advertised_version_is_served(sweep_server):
    address = (sweep_server.host, sweep_server.port)
    # Setup steps for APIs that need state: a commit to read back, a topic to grow.
    with WireClient(sweep_server.bootstrap) as c:
        c.commit("g-commit", {("sweep", 0): 2, ("sweep", 1): 1})
    failures = []
    for key, v in _versions():
        tag = f"{key}-{v}"
        try:
            if key in (20, 37, 21, 27):
                with WireClient(sweep_server.bootstrap) as c:
                    c.create_topic(f"ct-{tag}", 2)
            if key == 42:
                with WireClient(sweep_server.bootstrap) as c:
                    c.commit(f"g-{tag}", {("sweep", 0): 1})
            body, check = _request(key, v, tag)
            frame = raw_roundtrip(address, key, v, body)
            _corr, resp = decode_response(key, v, frame)
            check(resp)
        except Exception as exc:  # noqa: BLE001 - collect all failures, then report them
            failures.append(f"API {key} v{v}: {exc!r}")
    assert not failures, "\n".join(failures)
