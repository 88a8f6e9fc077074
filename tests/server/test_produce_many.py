"""Produce to many partitions the way librdkafka does it (issue #17): one small Produce
request per partition, pipelined on one connection.  Every request is answered, in
order, with the offsets the partition gave (the one-partition fast path of the produce
handler), the odd ones answered as the general path answers them (an unknown partition,
a corrupt batch, no records, a topic created on first use), and the answers to the
requests of one read leave corked together, not one system call each."""

from __future__ import annotations

import socket
import struct
import threading

from pylog.protocol import messages as m
from pylog.protocol.codec import decode_response, encode_request
from pylog.protocol.segments import segments_to_bytes
from pylog.records import RecordBatchBuilder, iter_batches
from server.util import read_frame, unique

PARTITIONS = 60


def _batch(value: bytes) -> bytes:
    b = RecordBatchBuilder()
    b.append(None, None, value)
    return b.build()


def _produce(topic: str, partition: int, records: bytes | None, corr: int, acks: int = 1) -> bytes:
    T = m.ProduceRequest
    return segments_to_bytes(encode_request(0, 9, corr, "many", T(acks=acks, timeout_ms=10000, topic_data=[
        T.TopicProduceData(name=topic, partition_data=[T.PartitionProduceData(index=partition, records=records)])])))


def _exchange(st, frames: list[bytes], answered: int | None = None) -> tuple[list[bytes], socket.socket]:
    """Send ``frames`` with one sendall and read one answer per frame, or ``answered``
    answers (in a thread, so the server's answers never wait for the sender)."""
    s = socket.create_connection(st.address, timeout=60)   # a safety net, not a timing
    answers: list[bytes] = []
    count = len(frames) if answered is None else answered
    reader = threading.Thread(target=lambda: answers.extend(read_frame(s) for _ in range(count)))
    reader.start()
    s.sendall(b"".join(frames))
    reader.join(60)
    assert not reader.is_alive()
    return answers, s


def _values(st, topic: str, partition: int) -> list[bytes]:
    res = st.server.broker.fetch(topic, partition, 0, 1 << 20)
    assert res.error_code == 0
    out = [bytes(r.value) for b in iter_batches(res.records.records, check_crc=True) for r in b]
    res.records.release()
    return out


def test_pipelined_single_partition_requests_are_answered_in_order(inproc):
    topic = unique("many")
    inproc.server.broker.create_topic(topic, PARTITIONS)
    corrupt = bytearray(_batch(b"bad"))
    corrupt[-1] ^= 0xFF                      # fails its CRC
    new_topic = unique("many-new")
    frames, expect = [], []
    for rnd in range(2):
        for p in range(PARTITIONS):
            frames.append(_produce(topic, p, _batch(b"%d-%d" % (p, rnd)), len(frames)))
            expect.append((0, rnd))
    for records, partition, code in ((_batch(b"x"), PARTITIONS + 5, 3),     # UNKNOWN_TOPIC_OR_PARTITION
                                     (bytes(corrupt), 1, 2),                 # CORRUPT_MESSAGE
                                     (None, 2, 87)):                         # INVALID_RECORD
        frames.append(_produce(topic, partition, records, len(frames)))
        expect.append((code, -1))
    frames.append(_produce(new_topic, 0, _batch(b"first"), len(frames)))     # created on first use
    expect.append((0, 0))
    answers, s = _exchange(inproc, frames)
    s.close()
    assert [struct.unpack_from(">i", a)[0] for a in answers] == list(range(len(frames)))
    got = []
    for a in answers:
        p = decode_response(0, 9, a)[1].responses[0].partition_responses[0]
        got.append((p.error_code, p.base_offset))
    assert got == expect
    for p in range(PARTITIONS):
        assert _values(inproc, topic, p) == [b"%d-0" % p, b"%d-1" % p]
    assert _values(inproc, new_topic, 0) == [b"first"]


class _CountingSocket:
    """The server side of a connection, counting the system calls that send."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sends = 0

    def send(self, data) -> int:
        self.sends += 1
        return self._sock.send(data)

    def sendmsg(self, buffers) -> int:
        self.sends += 1
        return self._sock.sendmsg(buffers)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


def test_answers_to_the_requests_of_one_read_leave_together(inproc):
    topic = unique("corked")
    inproc.server.broker.create_topic(topic, PARTITIONS)
    answers, s = _exchange(inproc, [segments_to_bytes(encode_request(18, 0, 0, "many", m.ApiVersionsRequest()))])
    try:
        (conn,) = inproc.server.connections
        counting = _CountingSocket(conn.sock)
        conn.sock = counting              # the loop is idle: no request of this client is pending
        frames = [_produce(topic, p, _batch(b"v%d" % p), p + 1) for p in range(PARTITIONS)]
        reader_answers: list[bytes] = []
        reader = threading.Thread(target=lambda: reader_answers.extend(read_frame(s) for _ in frames))
        reader.start()
        s.sendall(b"".join(frames))        # about 6 KB: one or a few reads on the server side
        reader.join(60)
        assert not reader.is_alive()
        assert [struct.unpack_from(">i", a)[0] for a in reader_answers] == list(range(1, PARTITIONS + 1))
        assert all(decode_response(0, 9, a)[1].responses[0].partition_responses[0].error_code == 0
                   for a in reader_answers)
        # One sendmsg per pass over what a read brought, not one send per answer.
        assert counting.sends <= PARTITIONS // 4, counting.sends
    finally:
        s.close()


def test_a_burst_over_several_reads_is_answered_in_order(inproc):
    """More pipelined requests than several read buffers hold (the server reads on while
    each read fills its buffer, corking the answers of all), with a request too large for
    the read buffer and one with acks=0 (no answer) in the middle."""
    from pylog.server import connection

    topic = unique("burst")
    inproc.server.broker.create_topic(topic, PARTITIONS)
    value = b"v" * 2000
    frames, expect = [], []
    count = 6 * connection.READ_BUFFER_SIZE // 2100
    for i in range(count):
        if i == count // 2:
            big = _batch(b"B" * (connection.READ_BUFFER_SIZE + 1000))
            frames.append(_produce(topic, 0, big, i))
        elif i == count // 3:
            frames.append(_produce(topic, 1, _batch(value), i, acks=0))
            continue
        else:
            frames.append(_produce(topic, i % PARTITIONS, _batch(value), i))
        expect.append(i)
    answers, s = _exchange(inproc, frames, answered=len(expect))
    s.close()
    assert [struct.unpack_from(">i", a)[0] for a in answers] == expect
    assert all(decode_response(0, 9, a)[1].responses[0].partition_responses[0].error_code == 0 for a in answers)
    assert sum(len(_values(inproc, topic, p)) for p in range(PARTITIONS)) == count
