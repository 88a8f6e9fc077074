"""A stopped ``pylog serve``'s data directory damaged from outside, then restarted
(issue 11): a real client (librdkafka) sees a corrupt sealed segment as an error, never
as an endless empty fetch; a garbage tail on the active segment is cut on the restart,
so records produced after it are read back and survive the next clean restart; and the
server's log says what it found."""

from __future__ import annotations

import os

import pytest

from server.util import unique

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

COMMON = {"socket.timeout.ms": 10000, "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 300}
N = 300


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                  "batch.num.messages": 3, **COMMON})
    errors = []
    for v in values:
        p.produce(topic, v, partition=0, on_delivery=lambda err, _m: errors.append(err) if err else None)
        p.poll(0)
    assert p.flush(30) == 0
    assert not errors


def _consume_from(bootstrap: str, topic: str, offset: int, until: int, max_polls: int = 400):
    """``(values, errors)`` polling from ``offset`` until ``until`` records or an error."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("dmg-g"), "enable.auto.commit": False,
                  "enable.partition.eof": True, "fetch.wait.max.ms": 50, **COMMON})
    c.assign([TopicPartition(topic, 0, offset)])
    values, errors = [], []
    try:
        for _ in range(max_polls):
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    break
                errors.append(msg.error())
                break
            values.append((msg.offset(), msg.value()))
            if len(values) >= until:
                break
    finally:
        c.close()
    return values, errors


def _segments(part_dir: str) -> list[str]:
    return sorted(n for n in os.listdir(part_dir) if n.endswith(".log"))


def test_corrupt_sealed_segment_is_an_error_and_a_garbage_tail_is_cut(serve):
    server = serve({"log.segment.bytes": "8192", "log.index.interval.bytes": "512"})
    topic = unique("dmg")
    a = AdminClient({"bootstrap.servers": server.bootstrap, **COMMON})
    a.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
    values = [b"v%04d-" % i + b"x" * 40 for i in range(N)]
    _produce(server.bootstrap, topic, values)
    assert server.stop() == 0

    part_dir = os.path.join(server.data_dir, f"{topic}-0")
    segs = _segments(part_dir)
    assert len(segs) >= 3
    # A flipped byte in the length field of a batch in the middle of the first sealed
    # segment (before its last index entry: the open's tail check does not see it, the
    # read path must).
    with open(os.path.join(part_dir, segs[0]), "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data) // 3:
        pos += int.from_bytes(data[pos + 8:pos + 12], "big") + 12
    damaged_base = int.from_bytes(data[pos:pos + 8], "big")
    with open(os.path.join(part_dir, segs[0]), "r+b") as f:
        f.seek(pos + 10)
        f.write(bytes([data[pos + 10] ^ 0x40]))
    # Garbage after the active segment's last batch (the clean-shutdown marker is there).
    with open(os.path.join(part_dir, segs[-1]), "ab") as f:
        f.write(bytes(range(7, 207)))
    server.start()

    # The damaged segment answers an error the client reports, not empty fetches forever.
    got, errors = _consume_from(server.bootstrap, topic, damaged_base, until=1)
    assert not got, "\n".join(server.lines[-20:])
    assert errors and errors[0].code() == KafkaError.INVALID_MSG, errors   # CORRUPT_MESSAGE (2)
    assert any("is corrupt at byte" in line and f"{topic}-0" in line for line in server.lines)
    # The garbage tail was cut with a warning, and nothing before it lost.
    assert any("truncated from" in line and f"{topic}-0" in line for line in server.lines)
    before, errors = _consume_from(server.bootstrap, topic, 0, until=damaged_base)
    assert not errors
    assert [v for _, v in before] == values[:damaged_base]

    # New records after the cut tail are readable and survive a clean restart.
    more = [b"after-%d" % i for i in range(10)]
    _produce(server.bootstrap, topic, more)
    last_segment_base = int(_segments(part_dir)[-1][:20])
    server.restart()
    tail, errors = _consume_from(server.bootstrap, topic, last_segment_base, until=10_000)
    assert not errors
    assert [v for _, v in tail][-10:] == more
    assert [o for o, _ in tail] == list(range(last_segment_base, N + 10))
