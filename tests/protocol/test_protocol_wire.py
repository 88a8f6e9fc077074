"""Frames, headers, golden bytes and error paths of the protocol codec."""

from __future__ import annotations

import os
import struct

import pytest

from pylog import protocol
from pylog.errors import InvalidRequestError, UnsupportedVersionError
from pylog.protocol import (
    FileRegion,
    MalformedMessageError,
    MessageEncodeError,
    RequestHeader,
    UnsupportedRequestError,
)
from pylog.protocol import messages as m

# --------------------------------------------------------------------------------------
# Golden bytes
# --------------------------------------------------------------------------------------

# The first request librdkafka 2.16 (confluent-kafka 2.16.1, client.id "golden") sent to a
# socket: ApiVersions v3, captured off the wire.
LIBRDKAFKA_API_VERSIONS_V3 = bytes.fromhex(
    "0000003f"                      # frame size 63
    "0012" "0003" "00000001"        # api key 18, version 3, correlation id 1
    "0006" "676f6c64656e"           # client_id: int16 length 6 (never compact), "golden"
    "00"                            # header v2 tagged fields: none
    "17" "636f6e666c75656e742d6b61666b612d707974686f6e"  # compact string: 22+1, name
    "16" "322e31362e312d72646b61666b612d322e31362e30"    # compact string: 21+1, version
    "00"                            # body tagged fields: none
)

# librdkafka's next request after our ApiVersions response: Metadata v12 for no topics.
LIBRDKAFKA_METADATA_V12 = bytes.fromhex(
    "0003" "000c" "00000002" "0006" "676f6c64656e" "00"   # header v2
    "01"    # topics: compact array of 0 elements (N+1 = 1), not null
    "00"    # allow_auto_topic_creation false
    "00"    # include_topic_authorized_operations false
    "00"    # tagged fields
)


def test_librdkafka_api_versions_v3_request():
    frame = LIBRDKAFKA_API_VERSIONS_V3
    assert protocol.frame_size(frame[:4]) == len(frame) - 4
    header, body = protocol.decode_request(frame[4:])
    assert header == RequestHeader(18, 3, 1, "golden", 2)
    assert body == m.ApiVersionsRequest(client_software_name="confluent-kafka-python",
                                        client_software_version="2.16.1-rdkafka-2.16.0")
    again = protocol.encode_request(18, 3, 1, "golden", body)
    assert b"".join(again) == frame


def test_librdkafka_metadata_v12_request():
    header, body = protocol.decode_request(LIBRDKAFKA_METADATA_V12)
    assert (header.api_key, header.api_version, header.header_version) == (3, 12, 2)
    assert body.topics == [] and body.allow_auto_topic_creation is False
    assert body.include_topic_authorized_operations is False
    assert b"".join(protocol.encode_request(3, 12, 2, "golden", body))[4:] == \
        LIBRDKAFKA_METADATA_V12


def test_api_versions_v3_response_golden():
    R = m.ApiVersionsResponse
    resp = R(error_code=0, api_keys=[R.ApiVersion(api_key=0, min_version=3, max_version=9)],
             throttle_time_ms=0, finalized_features_epoch=5)
    expected = bytes.fromhex(
        "0000001d"          # frame size 29
        "00000007"          # correlation id; ApiVersions responses use header v0: no tags
        "0000"              # error_code
        "02"                # api_keys: compact array, 1 element
        "0000" "0003" "0009" "00"   # api key 0, 3..9, element tagged fields
        "00000000"          # throttle_time_ms
        "01"                # one tagged field:
        "01" "08" "0000000000000005"  # tag 1 (finalized_features_epoch), 8 bytes, 5
    )
    assert b"".join(protocol.encode_response(18, 3, 7, resp)) == expected
    corr, back = protocol.decode_response(18, 3, expected[4:])
    assert corr == 7 and back == resp


def test_produce_v3_request_golden():
    R = m.ProduceRequest
    req = R(acks=-1, timeout_ms=30000, topic_data=[R.TopicProduceData(
        name="t", partition_data=[R.PartitionProduceData(index=0, records=b"abc")])])
    expected = bytes.fromhex(
        "0000002b"                      # frame size 43
        "0000" "0003" "00000007"        # api key 0, version 3, correlation id 7
        "0003" "636c69"                 # client_id "cli" (header v1: no tags)
        "ffff"                          # transactional_id null (int16 -1)
        "ffff" "00007530"               # acks -1, timeout_ms 30000
        "00000001" "0001" "74"          # one topic, name "t"
        "00000001" "00000000"           # one partition, index 0
        "00000003" "616263"             # records: int32 length 3, "abc"
    )
    assert b"".join(protocol.encode_request(0, 3, 7, "cli", req)) == expected


def test_flexible_response_header_has_tag_section():
    resp = m.HeartbeatResponse(error_code=27)
    v4 = b"".join(protocol.encode_response(12, 4, 9, resp))
    v3 = b"".join(protocol.encode_response(12, 3, 9, resp))
    assert v4 == bytes.fromhex("0000000c" "00000009" "00" "00000000" "001b" "00")
    assert v3 == bytes.fromhex("0000000a" "00000009" "00000000" "001b")


# --------------------------------------------------------------------------------------
# Header rules
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "version", "req", "resp"), [
    (0, 8, 1, 0), (0, 9, 2, 1), (1, 11, 1, 0), (1, 12, 2, 1), (3, 8, 1, 0), (3, 9, 2, 1),
    (18, 2, 1, 0), (18, 3, 2, 0), (18, 9, 2, 0),  # ApiVersions responses: always v0
    (0, 11, 2, 1),  # a version pylog does not speak still follows the flexible rule
    (29, 3, 1, 0),  # an API pylog does not speak (DescribeAcls): v1 (tags cannot be known)
])
def test_header_versions(key, version, req, resp):
    assert protocol.request_header_version(key, version) == req
    assert protocol.response_header_version(key, version) == resp


def test_null_client_id_and_unicode_client_id():
    for cid in (None, "", "kli\u00e9nt-\u2603"):
        frame = b"".join(protocol.encode_request(12, 4, 1, cid, m.HeartbeatRequest()))[4:]
        header, _ = protocol.decode_request(frame)
        assert header.client_id == cid


def test_unknown_api_key_header_still_decodes():
    frame = struct.pack(">hhih", 29, 3, 42, 3) + b"abc" + b"\x00\x01\x02"
    header, offset = protocol.decode_request_header(frame)
    assert (header.api_key, header.api_version, header.correlation_id) == (29, 3, 42)
    assert header.client_id == "abc" and header.header_version == 1 and offset == 13
    with pytest.raises(UnsupportedRequestError) as info:
        protocol.decode_request(frame)
    assert info.value.header == header
    assert isinstance(info.value, UnsupportedVersionError)
    assert info.value.error_code == 35


def test_unsupported_version_is_answerable():
    # A Produce v11 request (newer than pylog speaks) from a flexible client.
    frame = struct.pack(">hhih", 0, 11, 5, 1) + b"c" + b"\x00" + b"garbage"
    header, offset = protocol.decode_request_header(frame)
    assert header.header_version == 2 and offset == 12
    with pytest.raises(UnsupportedRequestError) as info:
        protocol.decode_request(frame)
    assert info.value.api_key == 0 and info.value.api_version == 11
    assert info.value.header.correlation_id == 5


def test_api_versions_unknown_version_gets_v0_answer():
    # A future client sends ApiVersions v9; the broker answers v0 with header v0,
    # error 35, and the ApiVersions range it speaks (KIP-511).
    frame = struct.pack(">hhih", 18, 9, 77, 1) + b"c" + b"\x00" + b"\x02x\x021\x00"
    header, _ = protocol.decode_request_header(frame)
    segs = protocol.error_response(header.api_key, header.api_version,
                                   header.correlation_id, 35)
    wire = b"".join(segs)
    assert wire == bytes.fromhex("00000010" "0000004d" "0023" "00000001" "0012" "0000" "0003")
    corr, body = protocol.decode_response(18, 0, wire[4:])
    assert corr == 77 and body.error_code == 35
    assert [(k.api_key, k.min_version, k.max_version) for k in body.api_keys] == [(18, 0, 3)]


def test_supported_versions_table():
    table = protocol.supported_versions()
    assert table[0] == (3, 9) and table[1] == (4, 12) and table[3] == (0, 12)
    assert table[18] == (0, 3) and table[60] == (0, 0)
    assert list(table) == sorted(table)
    resp = protocol.api_versions_response()
    assert [(k.api_key, k.min_version, k.max_version) for k in resp.api_keys] == \
        [(k, lo, hi) for k, (lo, hi) in table.items()]


@pytest.mark.parametrize("key", sorted(protocol.supported_versions()))
def test_error_response_for_every_api_version(key):
    lo, hi = protocol.supported_versions()[key]
    for v in range(lo, hi + 1):
        wire = b"".join(protocol.error_response(key, v, 123, 42))
        corr, body = protocol.decode_response(key, v, wire[4:])
        assert corr == 123
        schema = type(body)._decl
        for f in schema.fields:
            if v in f.versions and f.name == "error_code":
                assert body.error_code == 42


def test_error_response_fills_partition_errors_of_a_given_body():
    R = m.ProduceResponse
    body = R(responses=[R.TopicProduceResponse(name="t", partition_responses=[
        R.PartitionProduceResponse(index=i) for i in range(3)])])
    wire = b"".join(protocol.error_response(0, 9, 1, 6, body=body))
    _, back = protocol.decode_response(0, 9, wire[4:])
    assert [p.error_code for p in back.responses[0].partition_responses] == [6, 6, 6]


def test_error_response_lists_the_requests_partitions():
    T = m.ProduceRequest
    req = T(acks=1, topic_data=[T.TopicProduceData(name="a", partition_data=[
        T.PartitionProduceData(index=0, records=b"x"), T.PartitionProduceData(index=3)]),
        T.TopicProduceData(name="b", partition_data=[T.PartitionProduceData(index=1)])])
    for v in (3, 9):
        wire = b"".join(protocol.error_response(0, v, 5, -1, request=req))
        _corr, back = protocol.decode_response(0, v, wire[4:])
        got = [(t.name, p.index, p.error_code, p.base_offset) for t in back.responses
               for p in t.partition_responses]
        assert got == [("a", 0, -1, -1), ("a", 3, -1, -1), ("b", 1, -1, -1)]
    F = m.FetchRequest
    req = F(topics=[F.FetchTopic(topic="t", partitions=[F.FetchPartition(partition=p) for p in (2, 5)])])
    for v in (4, 12):
        _corr, back = protocol.decode_response(1, v, b"".join(protocol.error_response(1, v, 5, 6, request=req))[4:])
        parts = back.responses[0].partitions
        assert back.responses[0].topic == "t"
        assert [(p.partition_index, p.error_code, p.high_watermark) for p in parts] == [(2, 6, -1), (5, 6, -1)]
        assert all(p.records is not None and len(p.records) == 0 for p in parts)
        assert back.error_code == (6 if v >= 7 else 0)
    O = m.OffsetFetchRequest
    req = O(groups=[O.OffsetFetchRequestGroup(group_id="g", topics=[
        O.OffsetFetchRequestTopics(name="t", partition_indexes=[1, 2])])])
    _corr, back = protocol.decode_response(9, 8, b"".join(protocol.error_response(9, 8, 5, 16, request=req))[4:])
    g = back.groups[0]
    assert (g.group_id, g.error_code) == ("g", 16)
    assert [(p.partition_index, p.error_code, p.committed_offset) for p in g.topics[0].partitions] == \
        [(1, 16, -1), (2, 16, -1)]
    _corr, back = protocol.decode_response(
        20, 4, b"".join(protocol.error_response(20, 4, 5, 41, request=m.DeleteTopicsRequest(topic_names=["x", "y"])))[4:])
    assert [(r.name, r.error_code) for r in back.responses] == [("x", 41), ("y", 41)]
    # Metadata v10-11 may ask by topic id with a null name, which the v11 answer cannot
    # carry: the entry keeps the id and an empty name; v12 answers null.
    import uuid
    tid = uuid.UUID(int=7)
    req = m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(topic_id=tid, name=None)])
    for v, name in ((11, ""), (12, None)):
        _corr, back = protocol.decode_response(3, v, b"".join(protocol.error_response(3, v, 5, 100, request=req))[4:])
        assert [(t.topic_id, t.name, t.error_code) for t in back.topics] == [(tid, name, 100)]


@pytest.mark.parametrize("key", sorted(protocol.supported_versions()))
def test_error_body_from_any_request_encodes(key):
    """For every API and version, an error response built from a random request of it
    encodes and decodes, carries the code in each error field, and lists one entry per
    entity of the request."""
    from _protocol_strategies import message_strategy
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    lo, hi = protocol.supported_versions()[key]

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data):
        v = data.draw(st.integers(lo, hi))
        req = data.draw(message_strategy(key, "request", v))
        wire = b"".join(protocol.error_response(key, v, 9, 37, request=req))
        corr, back = protocol.decode_response(key, v, wire[4:])
        assert corr == 9

        def codes(obj):
            for f in type(obj)._decl.fields:
                if v not in f.versions:
                    continue
                value = getattr(obj, f.name)
                if f.type == "int16" and (f.name == "error_code" or f.name.endswith("_error_code")):
                    yield value
                elif f.is_struct and isinstance(value, list):
                    for x in value:
                        yield from codes(x)
                elif f.is_struct and value is not None:
                    yield from codes(value)

        if key != 18:
            assert set(codes(back)) <= {37}
        if key == 0:
            assert [(t.name, [p.index for p in t.partition_responses]) for t in back.responses] == \
                [(t.name, [p.index for p in t.partition_data]) for t in req.topic_data]
        if key == 1:
            assert [[p.partition_index for p in t.partitions] for t in back.responses] == \
                [[p.partition for p in t.partitions] for t in req.topics]
        if key == 2:
            assert [[p.partition_index for p in t.partitions] for t in back.topics] == \
                [[p.partition_index for p in t.partitions] for t in req.topics]

    check()


def test_error_response_refuses_unknown_api():
    with pytest.raises(UnsupportedRequestError):
        protocol.error_response(29, 0, 1, 35)
    with pytest.raises(UnsupportedRequestError):
        protocol.error_response(0, 2, 1, 35)


# --------------------------------------------------------------------------------------
# Frames and segments
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", [b"", b"\x00\x00\x00", b"\xff\xff\xff\xff",
                                    struct.pack(">i", protocol.MAX_FRAME_SIZE + 1)])
def test_frame_size_rejects_bad_prefixes(prefix):
    with pytest.raises(MalformedMessageError):
        protocol.frame_size(prefix)


def test_frame_size_accepts_limit():
    assert protocol.frame_size(struct.pack(">i", 1000)) == 1000
    assert protocol.frame_size(struct.pack(">i", 2000), max_size=2000) == 2000


def test_fetch_response_with_file_regions(tmp_path):
    path = tmp_path / "00000000000000000000.log"
    data = os.urandom(10000)
    path.write_bytes(data)
    R = m.FetchResponse
    with open(path, "rb") as f:
        regions = [FileRegion(f, 0, 6000), FileRegion(f.fileno(), 6000, 4000)]
        small = b"tiny records"
        resp = R(responses=[R.FetchableTopicResponse(topic="t", partitions=[
            R.PartitionData(partition_index=i, high_watermark=10, records=r)
            for i, r in enumerate([regions[0], small, regions[1]])])])
        segs = protocol.encode_response(1, 12, 3, resp)
        assert [type(s) for s in segs] == [bytearray, FileRegion, bytearray, FileRegion,
                                           bytearray]
        assert segs[1] is regions[0] and segs[3] is regions[1]
        wire = protocol.segments_to_bytes(segs)
    assert len(wire) == protocol.segments_size(segs)
    assert protocol.frame_size(wire[:4]) == len(wire) - 4
    corr, back = protocol.decode_response(1, 12, wire[4:])
    parts = back.responses[0].partitions
    assert corr == 3
    assert [bytes(p.records) for p in parts] == [data[:6000], small, data[6000:]]


def test_large_records_are_not_copied():
    blob = bytearray(os.urandom(8192))
    R = m.ProduceRequest
    req = R(acks=1, topic_data=[R.TopicProduceData(name="t", partition_data=[
        R.PartitionProduceData(index=0, records=blob)])])
    segs = protocol.encode_request(0, 9, 1, None, req)
    assert any(s is blob for s in segs)
    mv = memoryview(bytes(blob)).cast("B", shape=[64, 128])  # a 2-D buffer is flattened
    req.topic_data[0].partition_data[0].records = mv
    assert b"".join(protocol.encode_request(0, 9, 1, None, req)) == b"".join(segs)


def test_file_region_validation():
    with pytest.raises(ValueError):
        FileRegion(0, -1, 10)
    with pytest.raises(ValueError):
        FileRegion(0, 0, 1 << 31)
    region = FileRegion(5, 10, 20)
    with pytest.raises(AttributeError):
        region.length = 3
    assert region == FileRegion(5, 10, 20) and len(region) == 20 and region.fileno() == 5
    # A view of the same bytes may ride along (for writers that copy); it must hold them
    # all, and it is no part of the region's identity.
    with pytest.raises(ValueError):
        FileRegion(5, 10, 20, memoryview(bytes(19)))
    with_view = FileRegion(5, 10, 20, memoryview(bytes(20)))
    assert with_view == region and hash(with_view) == hash(region) and region.view is None


def test_file_region_only_in_records_of_top_plans():
    R = m.JoinGroupRequest
    req = R(group_id="g", protocols=[R.JoinGroupRequestProtocol(
        name="range", metadata=FileRegion(0, 0, 3))])
    with pytest.raises(MessageEncodeError, match=r"protocols\[0\]\.metadata"):
        protocol.encode_request(11, 5, 1, None, req)


# --------------------------------------------------------------------------------------
# Encode errors name the field
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda r: setattr(r, "acks", 1 << 15), r"ProduceRequest\.acks: 32768 does not fit int16"),
    (lambda r: setattr(r.topic_data[0], "name", None), r"topic_data\[0\]\.name: None"),
    (lambda r: setattr(r.topic_data[0].partition_data[0], "index", "0"),
     r"partition_data\[0\]\.index: expected an int"),
    (lambda r: setattr(r.topic_data[0].partition_data[0], "records", 5),
     r"records: expected a bytes-like"),
    (lambda r: setattr(r, "topic_data", {"t": 1}), r"topic_data: expected a list"),
    (lambda r: r.topic_data.append("x"), r"topic_data\[1\]: expected a ProduceRequest"),
    (lambda r: setattr(r.topic_data[0], "name", "\udc80"), r"name: cannot be encoded as UTF-8"),
])
def test_encode_errors_name_the_field(mutate, match):
    R = m.ProduceRequest
    req = R(acks=1, topic_data=[R.TopicProduceData(name="t", partition_data=[
        R.PartitionProduceData(index=0, records=b"x")])])
    mutate(req)
    with pytest.raises(MessageEncodeError, match=match) as info:
        protocol.encode_request(0, 9, 1, None, req)
    assert isinstance(info.value, InvalidRequestError)
    assert (info.value.api_key, info.value.api_version) == (0, 9)


def test_non_ignorable_field_in_old_version_is_refused():
    req = m.FetchRequest(topics=[], session_id=0, session_epoch=-1)
    R = m.FetchRequest
    req.topics = [R.FetchTopic(topic="t", partitions=[
        R.FetchPartition(partition=0, last_fetched_epoch=3)])]
    with pytest.raises(MessageEncodeError, match="last_fetched_epoch=3"):
        protocol.encode_request(1, 11, 1, None, req)
    assert protocol.encode_request(1, 12, 1, None, req)
    req.topics[0].partitions[0].last_fetched_epoch = -1
    req.topics[0].partitions[0].log_start_offset = 77  # ignorable: silently dropped in v4
    assert protocol.encode_request(1, 4, 1, None, req)


def test_string_too_long_for_int16_prefix():
    req = m.HeartbeatRequest(group_id="g" * 40000)
    with pytest.raises(MessageEncodeError, match="32767"):
        protocol.encode_request(12, 3, 1, None, req)
    assert protocol.encode_request(12, 4, 1, None, req)  # compact strings have no such limit


def test_wrong_body_type_and_unknown_dict_keys():
    with pytest.raises(MessageEncodeError, match="expected a ProduceRequest"):
        protocol.encode_request(0, 9, 1, None, m.FetchRequest())
    with pytest.raises(MessageEncodeError, match="no field"):
        protocol.encode_request(0, 9, 1, None, {"akcs": 1})
    with pytest.raises(UnsupportedRequestError):
        protocol.encode_request(0, 10, 1, None, m.ProduceRequest())


# --------------------------------------------------------------------------------------
# Decode errors
# --------------------------------------------------------------------------------------


def _produce_frame(version=9):
    R = m.ProduceRequest
    req = R(acks=1, topic_data=[R.TopicProduceData(name="topic", partition_data=[
        R.PartitionProduceData(index=0, records=b"0123456789")])])
    return b"".join(protocol.encode_request(0, version, 1, "c", req))[4:]


def test_truncated_body_keeps_header():
    frame = _produce_frame()
    for cut in range(15, len(frame)):
        with pytest.raises(MalformedMessageError) as info:
            protocol.decode_request(frame[:cut])
        assert info.value.header.correlation_id == 1
        assert (info.value.api_key, info.value.api_version) == (0, 9)


def test_trailing_bytes_are_rejected():
    with pytest.raises(MalformedMessageError, match="1 bytes left"):
        protocol.decode_request(_produce_frame() + b"\x00")


def _metadata_v12_all_topics_with_stray_bytes() -> bytes:
    # What librdkafka 2.x sends for an all-topics Metadata v12: the body, then 3 zero bytes.
    body = m.MetadataRequest(topics=None, allow_auto_topic_creation=True)
    return b"".join(protocol.encode_request(3, 12, 7, "rdkafka", body))[4:] + b"\x00\x00\x00"


def test_allow_trailing_ignores_bytes_after_the_body():
    frame = _metadata_v12_all_topics_with_stray_bytes()
    header, pos = protocol.decode_request_header(frame)
    # Strict by default: the codec's own error, with the header attached.
    with pytest.raises(MalformedMessageError, match="3 bytes left after the message") as info:
        protocol.decode_request(frame)
    assert info.value.header.correlation_id == 7
    with pytest.raises(MalformedMessageError, match="3 bytes left"):
        protocol.decode_request_body(3, 12, frame, pos)
    # Allowed: the body decodes as if the bytes were not there.
    expected = protocol.decode_request_body(3, 12, frame[:-3], pos)
    assert expected.topics is None and expected.allow_auto_topic_creation is True
    assert protocol.decode_request_body(3, 12, frame, pos, allow_trailing=True) == expected
    assert protocol.decode_request(frame, allow_trailing=True) == (header, expected)
    # A bound: at most N bytes may follow.
    assert protocol.decode_request_body(3, 12, frame, pos, allow_trailing=3) == expected
    with pytest.raises(MalformedMessageError, match="3 bytes left"):
        protocol.decode_request_body(3, 12, frame, pos, allow_trailing=2)
    with pytest.raises(ValueError):
        protocol.decode_request_body(3, 12, frame, pos, allow_trailing=-1)


def test_allow_trailing_still_rejects_a_malformed_body():
    frame = _produce_frame()
    # Truncated inside the body: no amount of allowed trailing bytes makes it valid.
    for cut in range(15, len(frame)):
        with pytest.raises(MalformedMessageError):
            protocol.decode_request(frame[:cut], allow_trailing=True)
    # A records length running past the end of the frame is caught, not read past.
    v3 = _produce_frame(3)
    bad = v3[:-14] + struct.pack(">i", 1 << 20) + v3[-10:] + b"\x00" * 8
    with pytest.raises(MalformedMessageError, match="exceeds"):
        protocol.decode_request(bad, allow_trailing=True)
    assert protocol.decode_request(v3 + b"\x00" * 8, allow_trailing=True)[1] == protocol.decode_request(v3)[1]


def test_copy_false_decodes_in_place():
    frame = bytearray(_produce_frame())
    copied = protocol.decode_request(frame)[1].topic_data[0].partition_data[0].records
    header, pos = protocol.decode_request_header(memoryview(frame))
    body = protocol.decode_request_body(0, 9, memoryview(frame), pos, copy=False)
    records = body.topic_data[0].partition_data[0].records
    assert bytes(records) == bytes(copied) == b"0123456789"
    frame[frame.index(b"0123456789")] = ord("X")   # the records are views of the buffer ...
    assert bytes(records) == b"X123456789"
    assert bytes(copied) == b"0123456789"      # ... unless copied (the default)
    with pytest.raises(TypeError):
        protocol.decode_request_header(12345)


def test_lying_lengths_and_counts():
    frame = bytearray(_produce_frame(3))
    # The topic count (int32 after the 11-byte header, transactional_id, acks and
    # timeout) claims 2**31-1 topics.
    pos = 11 + 2 + 6
    bad = bytes(frame[:pos]) + struct.pack(">i", 0x7FFFFFFF) + bytes(frame[pos + 4:])
    with pytest.raises(MalformedMessageError, match="cannot fit"):
        protocol.decode_request(bad)
    bad = bytes(frame[:pos]) + struct.pack(">i", -2) + bytes(frame[pos + 4:])
    with pytest.raises(MalformedMessageError, match="negative|null"):
        protocol.decode_request(bad)
    # The records length claims more bytes than are left.
    bad = frame[:-14] + struct.pack(">i", 1 << 30) + frame[-10:]
    with pytest.raises(MalformedMessageError, match="exceeds"):
        protocol.decode_request(bytes(bad))


def test_over_long_varint_is_rejected():
    frame = _produce_frame(9)
    head = frame[:12]  # header v2: 8 fixed bytes, client id "c" (2 + 1), tag byte
    with pytest.raises(MalformedMessageError, match="varint"):
        protocol.decode_request(head + b"\xff\xff\xff\xff\xff\x01")
    with pytest.raises(MalformedMessageError, match="32 bits"):
        protocol.decode_request(head + b"\xff\xff\xff\xff\x7f")


def test_invalid_utf8_is_malformed():
    frame = struct.pack(">hhih", 12, 3, 1, -1) + struct.pack(">h", 2) + b"\xc3\x28" + \
        b"\x00" * 12
    with pytest.raises(MalformedMessageError, match="UTF-8"):
        protocol.decode_request(frame)
    with pytest.raises(MalformedMessageError, match="UTF-8"):
        protocol.decode_request_header(struct.pack(">hhih", 12, 3, 1, 2) + b"\xc3\x28")


def test_decode_accepts_other_buffers():
    frame = _produce_frame()
    a = protocol.decode_request(frame)[1]
    b = protocol.decode_request(bytearray(frame))[1]
    c = protocol.decode_request(memoryview(frame))[1]
    assert a == b == c
