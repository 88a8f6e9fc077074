"""How a connection cuts the byte stream into requests: frames split anywhere across
reads, pipelined, small ones assembled in the read buffer and large ones received into
a reused frame buffer, which must never be overwritten while a request decoded from it
is still being handled.  The server runs in-process (own thread and loop) on a free
loopback port."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

from pylog.protocol import messages as m
from pylog.protocol.codec import decode_response, encode_request
from pylog.protocol.segments import segments_to_bytes
from pylog.records import RecordBatchBuilder, iter_batches
from pylog.server import connection
from pylog.server.server import ServerThread
from server.util import read_frame, unique

BUF = connection.READ_BUFFER_SIZE


def batch(values: list[bytes]) -> bytes:
    b = RecordBatchBuilder(compression="none", batch_size=1 << 30)
    b.append_many(values)
    return bytes(b.build())


def produce_frame(topic: str, records: bytes, corr: int) -> bytes:
    T = m.ProduceRequest
    return segments_to_bytes(encode_request(0, 9, corr, "framing", T(acks=1, timeout_ms=10000, topic_data=[
        T.TopicProduceData(name=topic, partition_data=[T.PartitionProduceData(index=0, records=records)])])))


def versions_frame(corr: int) -> bytes:
    return segments_to_bytes(encode_request(18, 0, corr, "framing", m.ApiVersionsRequest()))


def sized_batch(total: int, rng: random.Random) -> bytes:
    """A batch whose Produce frame is about ``total`` bytes (records of random bytes)."""
    values = []
    left = max(total - 200, 1)
    while left > 0:
        n = min(left, rng.randint(1, 20_000))
        values.append(rng.randbytes(n))
        left -= n + 12
    return batch(values)


def stored_values(st: ServerThread, topic: str) -> list[bytes]:
    res = st.server.broker.fetch(topic, 0, 0, 1 << 30)
    assert res.error_code == 0
    out = [bytes(r.value) for b in iter_batches(res.records.records, check_crc=True) for r in b]
    res.records.release()
    return out


def test_frames_split_anywhere_and_pipelined_are_answered_in_order(inproc):
    rng = random.Random(1)
    topic = unique("split")
    inproc.server.broker.create_topic(topic, 1)
    # Sizes around the read buffer's edge, small ones and large ones, mixed.
    sizes = [100, BUF - 400, BUF + 300, 3 * BUF, 50, 700_000, BUF * 2 + 17, 10, 1_000_000, 200]
    frames, expected = [], []
    for i, size in enumerate(sizes):
        if size < 60:
            frames.append(versions_frame(i))
            continue
        records = sized_batch(size, rng)
        frames.append(produce_frame(topic, records, i))
        expected.extend(bytes(r.value) for b in iter_batches(memoryview(records)) for r in b)
    assert any(len(f) <= BUF for f in frames) and any(len(f) > 2 * BUF for f in frames)
    stream = b"".join(frames)
    s = socket.create_connection(inproc.address)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    answers = []
    reader = threading.Thread(target=lambda: answers.extend(read_frame(s) for _ in frames))
    reader.start()
    try:
        pos = 0
        while pos < len(stream):
            # Cuts of 1 byte to a few hundred KiB: prefixes and bodies split across reads.
            n = rng.choice([1, 3, 4, 5, rng.randint(1, 1000), rng.randint(1, 300_000)])
            s.sendall(stream[pos:pos + n])
            pos += n
        reader.join(60)
    finally:
        s.close()
    assert not reader.is_alive()
    assert [struct.unpack_from(">i", a)[0] for a in answers] == list(range(len(frames)))
    for i, a in enumerate(answers):
        if sizes[i] < 60:
            assert decode_response(18, 0, a)[1].error_code == 0
        else:
            p = decode_response(0, 9, a)[1].responses[0].partition_responses[0]
            assert p.error_code == 0, p
    assert stored_values(inproc, topic) == expected


def test_many_small_frames_straddling_the_read_buffer(inproc):
    """Hundreds of small pipelined frames in one write: they fill the read buffer many
    times over, and the frame cut by its end is moved to its front and completed."""
    rng = random.Random(5)
    topic = unique("small")
    inproc.server.broker.create_topic(topic, 1)
    frames, expected = [], []
    for i in range(400):
        values = [rng.randbytes(rng.randint(1, 3000)) for _ in range(rng.randint(1, 3))]
        frames.append(produce_frame(topic, batch(values), i))
        expected.extend(values)
    stream = b"".join(frames)
    assert len(stream) > 10 * BUF
    s = socket.create_connection(inproc.address)
    answers = []
    reader = threading.Thread(target=lambda: answers.extend(read_frame(s) for _ in frames))
    reader.start()
    try:
        s.sendall(stream)
        reader.join(60)
    finally:
        s.close()
    assert not reader.is_alive()
    assert [struct.unpack_from(">i", a)[0] for a in answers] == list(range(len(frames)))
    assert all(decode_response(0, 9, a)[1].responses[0].partition_responses[0].error_code == 0
               for a in answers)
    assert stored_values(inproc, topic) == expected


def test_large_frames_reuse_one_buffer(inproc, monkeypatch):
    allocated = []
    real = connection.frame_buffer

    def counting(size):
        allocated.append(size)
        return real(size)

    monkeypatch.setattr(connection, "frame_buffer", counting)
    topic = unique("reuse")
    inproc.server.broker.create_topic(topic, 1)
    rng = random.Random(2)
    records = [sized_batch(400_000, rng) for _ in range(3)]
    s = socket.create_connection(inproc.address)
    try:
        for i in range(30):
            s.sendall(produce_frame(topic, records[i % 3], i))
            p = decode_response(0, 9, read_frame(s))[1].responses[0].partition_responses[0]
            assert p.error_code == 0
    finally:
        s.close()
    # The read buffer, and one frame buffer for all 30 large requests.
    assert sorted(allocated) == [BUF, 524288], allocated
    assert len(stored_values(inproc, topic)) == 10 * sum(
        sum(1 for b in iter_batches(memoryview(r)) for _ in b) for r in records)


def test_kept_frame_buffers_are_capped_and_released(inproc, monkeypatch):
    """Frame buffers kept between requests count against one server-wide cap; beyond it
    a large frame gets a buffer of its own; closing a connection releases what it kept."""
    monkeypatch.setattr(connection, "KEPT_FRAME_BUFFERS_MAX", 600_000)
    topic = unique("cap")
    inproc.server.broker.create_topic(topic, 1)
    records = sized_batch(300_000, random.Random(6))      # kept as a 512 KiB buffer
    socks = [socket.create_connection(inproc.address) for _ in range(3)]
    try:
        for round_ in range(3):
            for i, s in enumerate(socks):
                s.sendall(produce_frame(topic, records, 10 * round_ + i))
                assert decode_response(0, 9, read_frame(s))[1].responses[0].partition_responses[0].error_code == 0
            assert inproc.server.kept_frame_bytes == 524288
    finally:
        for s in socks:
            s.close()

    def released():
        return inproc.server.kept_frame_bytes == 0

    deadline = time.monotonic() + 10
    while not released() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert released()
    assert len(stored_values(inproc, topic)) == 9 * sum(1 for b in iter_batches(memoryview(records)) for _ in b)


def test_buffer_of_a_request_still_in_flight_is_not_reused(inproc):
    """A Produce to a topic that does not exist yet is handled off the loop (it creates
    the topic); its records are views of the frame buffer meanwhile.  The next large
    frame, pipelined behind it, is received while it is in flight: it must go to another
    buffer, or the first request's records would be overwritten under it."""
    rng = random.Random(3)
    first_topic, second_topic = unique("inflight-a"), unique("inflight-b")
    inproc.server.broker.create_topic(second_topic, 1)
    for round_ in range(5):
        a = sized_batch(600_000, rng)
        b = sized_batch(600_000, rng)
        topic = f"{first_topic}-{round_}"
        s = socket.create_connection(inproc.address)
        try:
            s.sendall(produce_frame(topic, a, 1) + produce_frame(second_topic, b, 2))
            answers = [decode_response(0, 9, read_frame(s))[1] for _ in range(2)]
        finally:
            s.close()
        for resp in answers:
            assert resp.responses[0].partition_responses[0].error_code == 0, resp
        assert stored_values(inproc, topic) == [bytes(r.value) for x in iter_batches(memoryview(a)) for r in x]


def test_eof_in_the_middle_of_a_large_frame_closes_cleanly(inproc):
    topic = unique("eof")
    inproc.server.broker.create_topic(topic, 1)
    frame = produce_frame(topic, sized_batch(300_000, random.Random(4)), 1)
    s = socket.create_connection(inproc.address)
    s.sendall(frame[:200_000])
    s.close()
    # The server keeps serving, and nothing of the half-sent request was stored.
    s = socket.create_connection(inproc.address)
    try:
        s.sendall(versions_frame(9))
        assert decode_response(18, 0, read_frame(s))[0] == 9
    finally:
        s.close()
    assert stored_values(inproc, topic) == []
