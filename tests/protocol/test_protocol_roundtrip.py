"""Every message at every version pylog speaks survives encode -> decode -> encode."""

from __future__ import annotations

import uuid

import pytest
from _protocol_strategies import all_versions, message_strategy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylog import protocol
from pylog.protocol import messages as m
from pylog.protocol.apis import api_name

ALL = all_versions()
IDS = [f"{api_name(k)}{kind.capitalize()}-v{v}" for k, kind, v in ALL]


def _encode(kind, key, version, obj):
    enc = protocol.encode_request_body if kind == "request" else protocol.encode_response_body
    return enc(key, version, obj)


def _decode(kind, key, version, buf):
    dec = protocol.decode_request_body if kind == "request" else protocol.decode_response_body
    return dec(key, version, buf)


def _roundtrip(kind, key, version, obj):
    wire = b"".join(_encode(kind, key, version, obj))
    back = _decode(kind, key, version, wire)
    assert back == obj
    again = b"".join(_encode(kind, key, version, back))
    assert again == wire
    return wire


@pytest.mark.parametrize(("key", "kind", "version"), ALL, ids=IDS)
def test_defaults_roundtrip(key, kind, version):
    cls = m.message_class(key, kind)
    _roundtrip(kind, key, version, cls())


@pytest.mark.parametrize(("key", "kind", "version"), ALL, ids=IDS)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_random_roundtrip(key, kind, version, data):
    obj = data.draw(message_strategy(key, kind, version))
    _roundtrip(kind, key, version, obj)


@pytest.mark.long
@pytest.mark.parametrize(("key", "kind", "version"), ALL, ids=IDS)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_roundtrip_long(key, kind, version, data):
    obj = data.draw(message_strategy(key, kind, version))
    _roundtrip(kind, key, version, obj)


def test_decoded_records_are_views_of_the_frame():
    R = m.ProduceRequest
    blob = bytes(range(256)) * 40
    req = R(acks=1, timeout_ms=100, topic_data=[R.TopicProduceData(
        name="t", partition_data=[R.PartitionProduceData(index=3, records=blob)])])
    frame = b"".join(protocol.encode_request(0, 9, 1, "c", req))[4:]
    _, back = protocol.decode_request(frame)
    records = back.topic_data[0].partition_data[0].records
    assert isinstance(records, memoryview)
    assert records.obj is frame  # zero-copy: a view of the frame, not a copy
    assert records == blob


def test_dicts_encode_like_objects():
    as_dict = {"acks": -1, "timeout_ms": 5, "topic_data": [
        {"name": "t", "partition_data": [{"index": 0, "records": b"abc"}]}]}
    R = m.ProduceRequest
    as_obj = R(acks=-1, timeout_ms=5, topic_data=[R.TopicProduceData(
        name="t", partition_data=[R.PartitionProduceData(index=0, records=b"abc")])])
    for v in (3, 9):
        assert b"".join(protocol.encode_request_body(0, v, as_dict)) == \
            b"".join(protocol.encode_request_body(0, v, as_obj))


def test_absent_field_defaults_are_made_on_access_and_fresh():
    R = m.FetchResponse
    resp = R(responses=[R.FetchableTopicResponse(topic="t", partitions=[
        R.PartitionData(partition_index=1, records=b"x")])])
    wire = b"".join(protocol.encode_response_body(1, 4, resp))
    a = protocol.decode_response_body(1, 4, wire)
    b = protocol.decode_response_body(1, 4, wire)
    pa, pb = a.responses[0].partitions[0], b.responses[0].partitions[0]
    assert pa.current_leader == R.LeaderIdAndEpoch(leader_id=-1, leader_epoch=-1)
    pa.current_leader.leader_id = 7  # mutating one decoded object ...
    assert pb.current_leader.leader_id == -1  # ... never leaks into another
    assert pa.diverging_epoch.epoch == -1 and pa.snapshot_id.end_offset == -1


def test_tagged_fields_are_written_only_when_not_default():
    R = m.FetchResponse

    def partition(**kw):
        return R.PartitionData(partition_index=0, records=None, **kw)

    def wire(p):
        return b"".join(protocol.encode_response_body(1, 12, R(responses=[
            R.FetchableTopicResponse(topic="t", partitions=[p])])))

    plain = wire(partition())
    tagged = wire(partition(current_leader=R.LeaderIdAndEpoch(leader_id=2, leader_epoch=9)))
    # tag 1, size 9 (int32 + int32 + empty tag section), fields, then the count went 0 -> 1
    assert len(tagged) == len(plain) + 11
    assert bytes([1, 9, 0, 0, 0, 2, 0, 0, 0, 9, 0]) in tagged
    back = protocol.decode_response_body(1, 12, tagged)
    assert back.responses[0].partitions[0].current_leader.leader_id == 2


def test_unknown_tags_are_skipped():
    R = m.ApiVersionsRequest
    wire = bytearray(b"".join(protocol.encode_request_body(18, 3, R(
        client_software_name="x", client_software_version="1"))))
    assert wire[-1] == 0
    wire[-1:] = bytes([2, 40, 2, 0xAA, 0xBB, 41, 0])  # two tags pylog does not know
    back = protocol.decode_request_body(18, 3, bytes(wire))
    assert back.client_software_name == "x"


def test_uuid_fields_decode_as_uuid():
    R = m.MetadataResponse
    tid = uuid.uuid4()
    resp = R(topics=[R.MetadataResponseTopic(name="t", topic_id=tid)])
    back = protocol.decode_response_body(3, 12, b"".join(
        protocol.encode_response_body(3, 12, resp)))
    assert back.topics[0].topic_id == tid
    assert isinstance(back.topics[0].topic_id, uuid.UUID)
    assert back.topics[0].topic_id.version == tid.version
