"""What the server answers when it cannot serve a request normally: stray bytes after a
body (ignored, as Kafka does), and a handler that fails (an error for each topic and
partition of the request, as Kafka answers; for a Produce with acks=0, which gets no
answer, a closed connection).  The server runs in-process on a free loopback port."""

from __future__ import annotations

import socket
import struct

from pylog.protocol import messages as m
from pylog.protocol.codec import decode_response, encode_request
from pylog.protocol.segments import segments_to_bytes
from pylog.records import RecordBatchBuilder
from pylog.server import handlers
from server.util import read_frame, unique


def exchange(address, frame: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(frame)
        return read_frame(s)


def with_trailing(frame: bytes, extra: bytes) -> bytes:
    """``frame`` (size prefix included) with ``extra`` appended inside the frame."""
    body = frame[4:] + extra
    return struct.pack(">i", len(body)) + body


def test_metadata_v12_with_three_stray_bytes_is_answered(inproc):
    topic = unique("stray")
    inproc.server.broker.create_topic(topic, 2)
    req = m.MetadataRequest(topics=None, allow_auto_topic_creation=True)
    frame = with_trailing(segments_to_bytes(encode_request(3, 12, 41, "rdkafka", req)), b"\x00\x00\x00")
    corr, resp = decode_response(3, 12, exchange(inproc.address, frame))
    assert corr == 41
    assert [b.port for b in resp.brokers] == [inproc.address[1]]
    mine = [t for t in resp.topics if t.name == topic]
    assert len(mine) == 1 and mine[0].error_code == 0 and len(mine[0].partitions) == 2


def test_a_failing_handler_answers_every_partition_with_the_error(inproc, monkeypatch):
    topic = unique("fail")
    inproc.server.broker.create_topic(topic, 3)

    def broken(*_args, **_kwargs):
        raise RuntimeError("injected handler failure")

    monkeypatch.setattr(handlers, "_produce", broken)
    b = RecordBatchBuilder()
    b.append(None, None, b"v")
    records = bytes(b.build())
    T = m.ProduceRequest
    req = T(acks=1, timeout_ms=1000, topic_data=[
        T.TopicProduceData(name=topic, partition_data=[T.PartitionProduceData(index=i, records=records)
                                                       for i in (0, 2)]),
        T.TopicProduceData(name="other", partition_data=[T.PartitionProduceData(index=5, records=records)])])
    for version in (3, 9):
        frame = segments_to_bytes(encode_request(0, version, 8, "t", req))
        corr, resp = decode_response(0, version, exchange(inproc.address, frame))
        assert corr == 8
        got = [(t.name, p.index, p.error_code, p.base_offset) for t in resp.responses for p in t.partition_responses]
        assert got == [(topic, 0, -1, -1), (topic, 2, -1, -1), ("other", 5, -1, -1)]
    # Nothing was appended, and the server still serves.
    assert inproc.server.broker.high_watermark(topic, 0) == 0
    corr, _ = decode_response(18, 0, exchange(inproc.address, segments_to_bytes(
        encode_request(18, 0, 3, "t", m.ApiVersionsRequest()))))
    assert corr == 3

    # acks=0: no answer is expected, so the connection is closed instead.
    req.acks = 0
    with socket.create_connection(inproc.address, timeout=10) as s:
        s.sendall(segments_to_bytes(encode_request(0, 9, 9, "t", req)))
        assert s.recv(100) == b""


def test_a_failing_list_offsets_answers_each_partition(inproc, monkeypatch):
    topic = unique("fail-lo")
    inproc.server.broker.create_topic(topic, 2)

    def broken(*_args, **_kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(inproc.server.broker, "list_offsets", broken)
    L = m.ListOffsetsRequest
    req = L(replica_id=-1, topics=[L.ListOffsetsTopic(name=topic, partitions=[
        L.ListOffsetsPartition(partition_index=i, timestamp=-1) for i in (0, 1)])])
    corr, resp = decode_response(2, 7, exchange(inproc.address, segments_to_bytes(encode_request(2, 7, 4, "t", req))))
    assert corr == 4
    assert [(t.name, p.partition_index, p.error_code, p.offset) for t in resp.topics for p in t.partitions] == \
        [(topic, 0, -1, -1), (topic, 1, -1, -1)]
