"""Hostile input and load: malformed frames, lying length prefixes, oversized requests,
half-sent requests, silent clients, garbage in every field, corrupt batches in Produce,
a few thousand hostile frames at once; then 500 idle connections and 50 producers at
once.  The server answers with Kafka's error code or closes that one connection, logs
one line, keeps serving everyone else, keeps its memory bounded, and changes nothing
already stored."""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time

import pytest

from pylog.protocol import messages as m
from pylog.protocol.codec import decode_response, encode_request
from pylog.protocol.segments import segments_to_bytes
from pylog.records import RecordBatchBuilder
from tests.wire import BrokerConnection, WireClient, produce_on
from server.util import read_frame, unique, wait_for


def batch(values, key=None):
    b = RecordBatchBuilder()
    for v in values:
        b.append(None, key, v)
    return bytes(b.build())


def frame(api_key, version, body, corr=1, client_id="hostile"):
    return segments_to_bytes(encode_request(api_key, version, corr, client_id, body))


def connect(server, timeout=10.0):
    s = socket.create_connection((server.host, server.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def closed_by_server(s, timeout=10.0) -> bool:
    """True once the server closed ``s`` (EOF or reset) within ``timeout``."""
    s.settimeout(timeout)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def still_serves(server):
    with WireClient(server.bootstrap, timeout=10) as c:
        md = c.metadata(None)
        assert md.brokers[0].port == server.port
    return True


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def hostile_server(serve):
    return serve({"connections.max.idle.ms": "1500"})


def test_negative_and_oversized_frames_close_one_connection(hostile_server):
    server = hostile_server
    bystander = BrokerConnection(server.host, server.port)
    s = connect(server)
    s.sendall(struct.pack(">i", -5))
    assert closed_by_server(s)
    s.close()
    s = connect(server)
    s.sendall(struct.pack(">i", 104857600 + 1))      # one byte over socket.request.max.bytes
    assert closed_by_server(s)
    s.close()
    server.wait_for_log(r"negative size prefix -5")
    server.wait_for_log(r"larger than socket.request.max.bytes=104857600")
    # The bystander's connection was not disturbed.
    assert bystander.request(18, m.ApiVersionsRequest(client_software_name="t", client_software_version="1")).error_code == 0
    bystander.close()
    assert still_serves(server)


def test_lying_length_prefix_does_not_allocate_and_times_out(hostile_server):
    server = hostile_server
    pid = server.proc.pid
    before = rss_kib(pid)
    socks = []
    for _ in range(20):
        s = connect(server)
        # Announce the largest allowed request (100 MiB), send 1 KiB of it, then nothing.
        s.sendall(struct.pack(">i", 104857600) + b"\x00" * 1024)
        socks.append(s)
    assert still_serves(server)
    grown = rss_kib(pid) - before
    # 20 x 100 MiB were announced; only what arrived may be held.
    assert grown < 64 * 1024, f"RSS grew by {grown} KiB"
    # connections.max.idle.ms (1.5 s) closes each half-sent request.
    for s in socks:
        assert closed_by_server(s, timeout=15)
        s.close()
    server.wait_for_log(r"idle for more than connections.max.idle.ms=1500")


def test_silent_client_is_closed_when_idle(hostile_server):
    s = connect(hostile_server)
    t0 = time.monotonic()
    assert closed_by_server(s, timeout=15)
    assert time.monotonic() - t0 >= 1.0
    s.close()


def test_half_sent_request_then_hang_up_logs_one_line(hostile_server):
    server = hostile_server
    s = connect(server)
    whole = frame(3, 12, m.MetadataRequest(topics=None))
    s.sendall(whole[:len(whole) // 2])
    s.close()
    server.wait_for_log(r"closed the connection in the middle of a request")
    assert still_serves(server)


def test_truncated_and_garbage_bodies(hostile_server, rng):
    server = hostile_server
    good = frame(3, 12, m.MetadataRequest(topics=None))
    for cut in (9, 12, 14):
        s = connect(server)
        body = good[4:cut]
        s.sendall(struct.pack(">i", len(body)) + body)
        assert closed_by_server(s)
        s.close()
    # Garbage after a valid header.
    s = connect(server)
    payload = good[4:18] + bytes(rng.randrange(256) for _ in range(40))
    s.sendall(struct.pack(">i", len(payload)) + payload)
    try:
        read_frame(s)          # either an answer ...
    except (ConnectionError, OSError):
        pass                   # ... or the connection closed
    s.close()
    assert still_serves(server)


def test_corrupt_batch_gets_corrupt_message_and_changes_nothing(server):
    topic = unique("corrupt")
    with WireClient(server.bootstrap) as c:
        c.create_topic(topic, 2)
        c.produce(topic, 0, batch([b"keep-0", b"keep-1"]))
        conn = c.leader(topic, 0)
        good = batch([b"fine"])
        bad = bytearray(batch([b"will be damaged"]))
        bad[-3] ^= 0xFF                      # breaks the CRC
        T = m.ProduceRequest
        body = T(acks=-1, timeout_ms=5000, topic_data=[T.TopicProduceData(name=topic, partition_data=[
            T.PartitionProduceData(index=0, records=bytes(bad)),
            T.PartitionProduceData(index=1, records=good)])])
        resp = conn.request(0, body)
        parts = {p.index: p for p in resp.responses[0].partition_responses}
        assert parts[0].error_code == 2          # CORRUPT_MESSAGE
        assert parts[1].error_code == 0 and parts[1].base_offset == 0
        # Truncated batch, batch with a lying length, random bytes.
        for records in (batch([b"x"])[:-5], struct.pack(">qi", 0, 10**6) + b"\x00" * 60, os.urandom(100)):
            body = T(acks=1, timeout_ms=5000, topic_data=[T.TopicProduceData(name=topic, partition_data=[
                T.PartitionProduceData(index=0, records=records)])])
            p = conn.request(0, body).responses[0].partition_responses[0]
            assert p.error_code in (2, 10, 87), p   # CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, INVALID_RECORD
        # Nothing stored changed.
        assert c.list_offset(topic, 0, -1)[0] == 2
        data = c.fetch(topic, 0, 0, max_wait_ms=0).records
        values = [r.value for r in _records(data)]
        assert values == [b"keep-0", b"keep-1"]
    server.wait_for_log(r"produce to .* rejected: .*\(error 2\)")


def _records(data):
    from pylog.records import iter_batches

    out = []
    for b in iter_batches(memoryview(bytes(data))):
        out.extend(b)
    return out


def _fuzz_frames(rng, topic, n):
    """Valid requests of many APIs with random bytes damaged, cut or appended."""
    T = m.ProduceRequest
    F = m.FetchRequest
    seeds = [
        frame(18, 3, m.ApiVersionsRequest(client_software_name="f", client_software_version="1")),
        frame(3, 12, m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(name=topic)])),
        frame(3, 1, m.MetadataRequest(topics=None)),
        frame(0, 9, T(acks=1, timeout_ms=1000, topic_data=[T.TopicProduceData(name=topic, partition_data=[
            T.PartitionProduceData(index=0, records=batch([b"fuzz"]))])])),
        frame(0, 3, T(acks=1, timeout_ms=1000, topic_data=[T.TopicProduceData(name=topic, partition_data=[
            T.PartitionProduceData(index=0, records=batch([b"fuzz"]))])])),
        frame(1, 12, F(max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, session_epoch=-1, topics=[
            F.FetchTopic(topic=topic, partitions=[F.FetchPartition(partition=0, fetch_offset=0,
                                                                   partition_max_bytes=1 << 20)])])),
        frame(1, 4, F(max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, topics=[
            F.FetchTopic(topic=topic, partitions=[F.FetchPartition(partition=0, fetch_offset=0,
                                                                   partition_max_bytes=1 << 20)])])),
        frame(2, 7, m.ListOffsetsRequest(replica_id=-1, topics=[m.ListOffsetsRequest.ListOffsetsTopic(
            name=topic, partitions=[m.ListOffsetsRequest.ListOffsetsPartition(partition_index=0, timestamp=-1)])])),
        frame(11, 7, m.JoinGroupRequest(group_id="fz", session_timeout_ms=6000, rebalance_timeout_ms=6000,
                                        member_id="", protocol_type="consumer", protocols=[
                                            m.JoinGroupRequest.JoinGroupRequestProtocol(name="range",
                                                                                        metadata=b"\x00")])),
        frame(8, 8, m.OffsetCommitRequest(group_id="fz", topics=[m.OffsetCommitRequest.OffsetCommitRequestTopic(
            name=topic, partitions=[m.OffsetCommitRequest.OffsetCommitRequestPartition(
                partition_index=0, committed_offset=0, committed_metadata="")])])),
        frame(19, 5, m.CreateTopicsRequest(topics=[m.CreateTopicsRequest.CreatableTopic(
            name="fz-topic", num_partitions=1, replication_factor=1)], timeout_ms=1000, validate_only=True)),
        frame(32, 4, m.DescribeConfigsRequest(resources=[m.DescribeConfigsRequest.DescribeConfigsResource(
            resource_type=2, resource_name=topic, configuration_keys=None)])),
        frame(44, 1, m.IncrementalAlterConfigsRequest(resources=[
            m.IncrementalAlterConfigsRequest.AlterConfigsResource(resource_type=2, resource_name=topic, configs=[
                m.IncrementalAlterConfigsRequest.AlterableConfig(name="retention.ms", config_operation=0,
                                                                 value="1000")])], validate_only=True)),
        frame(22, 4, m.InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=1000)),
        frame(23, 3, m.OffsetForLeaderEpochRequest(topics=[
            m.OffsetForLeaderEpochRequest.OffsetForLeaderTopic(topic=topic, partitions=[
                m.OffsetForLeaderEpochRequest.OffsetForLeaderPartition(partition=0, leader_epoch=0)])])),
    ]
    out = []
    for _ in range(n):
        f = bytearray(rng.choice(seeds))
        body = f[4:]
        kind = rng.randrange(5)
        if kind == 0:
            for _ in range(rng.randrange(1, 6)):
                body[rng.randrange(len(body))] = rng.randrange(256)
        elif kind == 1:
            body = body[:rng.randrange(len(body))]
        elif kind == 2:
            body += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
        elif kind == 3:
            # Huge lengths/counts where strings and arrays start.
            i = rng.randrange(8, max(9, len(body) - 4))
            body[i:i + 4] = rng.choice([b"\x7f\xff\xff\xff", b"\xff\xff\xff\xfe", b"\xff\xff\xff\xff\x0f"[:4]])
        else:
            body = bytearray(os.urandom(rng.randrange(0, 64)))
        out.append(struct.pack(">i", len(body)) + bytes(body))
    return out


def test_thousands_of_hostile_frames_then_a_real_client(server, rng):
    topic = unique("fuzz")
    with WireClient(server.bootstrap) as c:
        c.create_topic(topic, 1)
        c.produce(topic, 0, batch([b"stored-0", b"stored-1", b"stored-2"]))
        before = bytes(c.fetch(topic, 0, 0, max_wait_ms=0).records)
    frames = _fuzz_frames(rng, topic, 3000)
    answered = closed = 0
    s = connect(server, timeout=5)
    for f in frames:
        try:
            s.sendall(f)
            s.settimeout(5)
            read_frame(s)
            answered += 1
        except (ConnectionError, OSError):
            closed += 1
            s.close()
            s = connect(server, timeout=5)
    s.close()
    assert answered + closed == len(frames)
    assert answered > 0 and closed > 0
    # The server still serves a real client, and the stored records are untouched
    # (fuzzed produces may only have appended records after them).
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": server.bootstrap, "group.id": unique("after-fuzz"),
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    first = []
    deadline = time.monotonic() + 20
    while len(first) < 3 and time.monotonic() < deadline:
        msg = c.poll(0.2)
        if msg is not None and not msg.error():
            first.append(msg.value())
    c.close()
    assert first[:3] == [b"stored-0", b"stored-1", b"stored-2"]
    with WireClient(server.bootstrap) as wc:
        after = bytes(wc.fetch(topic, 0, 0, max_wait_ms=0).records)
    assert after[:len(before)] == before
    assert server.proc.poll() is None


def test_request_memory_pool_serves_large_requests_in_turn(serve):
    # queued.max.request.bytes smaller than two requests: they are read one after the other.
    server = serve({"queued.max.request.bytes": str(3 * 1024 * 1024)})
    topic = unique("pool")
    with WireClient(server.bootstrap) as c:
        c.create_topic(topic, 4)
    big = [batch([os.urandom(900_000)]) for _ in range(4)]
    results = []

    def send(i):
        with BrokerConnection(server.host, server.port) as conn:
            results.append(produce_on(conn, topic, i, big[i], acks=1).error_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [0, 0, 0, 0]


def test_500_idle_connections_and_50_producers(server):
    topic = unique("load")
    with WireClient(server.bootstrap) as c:
        c.create_topic(topic, 10)
    idle = []
    try:
        for _ in range(500):
            idle.append(connect(server))
        assert still_serves(server)
        errors = []
        batches_per_producer = 20

        def produce(i):
            try:
                with BrokerConnection(server.host, server.port) as conn:
                    for j in range(batches_per_producer):
                        produce_on(conn, topic, i % 10, batch([f"p{i}-{j}-{k}".encode() for k in range(10)]),
                                   acks=1)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        with WireClient(server.bootstrap) as c:
            total = sum(c.list_offset(topic, p, -1)[0] for p in range(10))
        assert total == 50 * batches_per_producer * 10
        # The idle connections are still open and answer.
        for s in random.Random(7).sample(idle, 20):
            s.sendall(frame(18, 0, m.ApiVersionsRequest(), corr=5))
            corr, resp = decode_response(18, 0, read_frame(s))
            assert corr == 5 and resp.error_code == 0
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: still_serves(server), "server serving after 500 closes")


def test_pipelined_requests_are_answered_in_order(server):
    """A long-polling Fetch, then a large Produce and an ApiVersions on the same
    connection: one request at a time, answers in request order (Kafka's muted channel)."""
    topic = unique("order")
    with WireClient(server.bootstrap) as c:
        c.create_topic(topic, 1)
    F = m.FetchRequest
    T = m.ProduceRequest
    fetch = frame(1, 12, F(max_wait_ms=500, min_bytes=1, max_bytes=1 << 20, session_epoch=-1, topics=[
        F.FetchTopic(topic=topic, partitions=[F.FetchPartition(partition=0, fetch_offset=0,
                                                               partition_max_bytes=1 << 20)])]), corr=1)
    produce = frame(0, 9, T(acks=1, timeout_ms=5000, topic_data=[T.TopicProduceData(name=topic, partition_data=[
        T.PartitionProduceData(index=0, records=batch([os.urandom(1000) for _ in range(900)]))])]), corr=2)
    versions = frame(18, 0, m.ApiVersionsRequest(), corr=3)
    assert len(produce) > 512 * 1024
    s = connect(server)
    try:
        s.sendall(fetch + produce + versions)
        answers = [read_frame(s) for _ in range(3)]
    finally:
        s.close()
    assert [struct.unpack_from(">i", a)[0] for a in answers] == [1, 2, 3]
    _c, fetched = decode_response(1, 12, answers[0])
    # The produce was not handled before the fetch was answered: the fetch saw nothing.
    assert fetched.responses[0].partitions[0].high_watermark == 0
    _c, produced = decode_response(0, 9, answers[1])
    assert produced.responses[0].partition_responses[0].error_code == 0
