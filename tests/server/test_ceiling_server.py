"""benches/ceiling_server.py, the server that does the least a log can (the clients'
ceiling in benches/bench_vs_kafka.py): it must be a Kafka server as far as the measured
clients go (records come back in order, at their offsets, to librdkafka), write what it
acknowledges to its files, and refuse what it cannot keep without keeping any of it."""

import os
import pathlib
import socket
import struct
import sys
import threading
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benches import ceiling_server as cs  # noqa: E402
from pylog.errors import CorruptRecordError, OffsetOutOfRangeError  # noqa: E402
from pylog.protocol import messages as m  # noqa: E402
from pylog.protocol.apis import ApiKey  # noqa: E402
from pylog.records import RecordBatchBuilder, iter_batches  # noqa: E402
from tests.wire import BrokerConnection, fetch_on, produce_on, raise_for_code  # noqa: E402


@pytest.fixture
def ceiling(tmp_path):
    server = cs.CeilingServer(str(tmp_path))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.close()


def _batch(values: list[bytes]) -> bytes:
    b = RecordBatchBuilder()
    for v in values:
        b.append(1_700_000_000_000, None, v)
    return bytes(b.build())


def _create(conn: BrokerConnection, topic: str, partitions: int = 1) -> int:
    T = m.CreateTopicsRequest
    resp = conn.request(ApiKey.CREATE_TOPICS, T(topics=[T.CreatableTopic(
        name=topic, num_partitions=partitions, replication_factor=1, assignments=[], configs=[])],
        timeout_ms=1000, validate_only=False))
    return resp.topics[0].error_code


def _read(conn: BrokerConnection, topic: str, offset: int, **kw) -> list[tuple[int, bytes]]:
    part = fetch_on(conn, [(topic, 0, offset)], **kw)[(topic, 0)]
    raise_for_code(part.error_code, None, f"fetch {topic} at {offset}")
    return [(r.offset, bytes(r.value)) for batch in iter_batches(bytes(part.records)) for r in batch]


def test_librdkafka_reads_back_what_it_produced_in_order(ceiling):
    confluent_kafka = pytest.importorskip("confluent_kafka")
    boot = f"{ceiling.host}:{ceiling.port}"
    with BrokerConnection(ceiling.host, ceiling.port) as conn:
        assert _create(conn, "t") == 0
        assert _create(conn, "t") == 36                      # TOPIC_ALREADY_EXISTS
    p = confluent_kafka.Producer({"bootstrap.servers": boot, "linger.ms": 5, "batch.num.messages": 1000})
    for i in range(5000):
        p.produce("t", str(i).encode())
    assert p.flush(30) == 0
    c = confluent_kafka.Consumer({"bootstrap.servers": boot, "group.id": "g", "enable.auto.commit": False})
    c.assign([confluent_kafka.TopicPartition("t", 0, 0)])
    got, deadline = [], time.monotonic() + 30
    while len(got) < 5000 and time.monotonic() < deadline:
        got += [(msg.offset(), msg.value()) for msg in c.consume(1000, 1.0) if msg.error() is None]
    c.close()
    assert got == [(i, str(i).encode()) for i in range(5000)]
    with BrokerConnection(ceiling.host, ceiling.port) as conn:
        batches = fetch_on(conn, [("t", 0, 0)], max_bytes=50_000_000)[("t", 0)]
        assert len(list(iter_batches(bytes(batches.records)))) >= 5    # several batches, offsets chained
        assert batches.high_watermark == 5000


def test_a_torn_batch_is_refused_and_nothing_of_it_kept(ceiling):
    with BrokerConnection(ceiling.host, ceiling.port) as conn:
        _create(conn, "t")
        assert produce_on(conn, "t", 0, _batch([b"a", b"b"]), acks=1).base_offset == 0
        good = _batch([b"c"])
        with pytest.raises(CorruptRecordError):
            produce_on(conn, "t", 0, good + good[:-1], acks=1)        # the second batch cut short
        bad_length = bytearray(good)
        struct.pack_into(">i", bad_length, 8, 5)                        # shorter than a header
        with pytest.raises(CorruptRecordError):
            produce_on(conn, "t", 0, bytes(bad_length), acks=1)
        backwards = bytearray(good)
        struct.pack_into(">i", backwards, 23, -2)                       # a negative last offset delta
        with pytest.raises(CorruptRecordError):
            produce_on(conn, "t", 0, good + bytes(backwards), acks=1)
        assert _read(conn, "t", 0) == [(0, b"a"), (1, b"b")]
        assert produce_on(conn, "t", 0, good, acks=1).base_offset == 2
        assert _read(conn, "t", 1) == [(0, b"a"), (1, b"b"), (2, b"c")]   # from the batch holding 1


def test_fetch_edges_and_the_byte_budget(ceiling):
    with BrokerConnection(ceiling.host, ceiling.port) as conn:
        _create(conn, "t")
        for i in range(3):
            produce_on(conn, "t", 0, _batch([bytes([i]) * 100] * 10), acks=1)
        one = len(_batch([b"\0" * 100] * 10))
        assert len(_read(conn, "t", 0, partition_max_bytes=one)) == 10       # exactly one batch fits
        assert len(_read(conn, "t", 0, partition_max_bytes=2 * one + 1)) == 20
        assert len(_read(conn, "t", 0, partition_max_bytes=1)) == 10         # at least one batch
        t0 = time.monotonic()
        assert _read(conn, "t", 30, max_wait_ms=200) == []                    # at the end: waits, empty
        assert time.monotonic() - t0 >= 0.15
        with pytest.raises(OffsetOutOfRangeError):
            _read(conn, "t", 31)
        assert fetch_on(conn, [("nope", 0, 0)])[("nope", 0)].error_code == 3


def test_a_waiting_fetch_is_answered_by_an_append(ceiling):
    with BrokerConnection(ceiling.host, ceiling.port) as reader, \
            BrokerConnection(ceiling.host, ceiling.port) as writer:
        _create(writer, "t")
        produced = []
        late = threading.Timer(0.1, lambda: produced.append(
            produce_on(writer, "t", 0, _batch([b"late"]), acks=1)))
        late.start()
        t0 = time.monotonic()
        assert _read(reader, "t", 0, max_wait_ms=10_000) == [(0, b"late")]
        assert time.monotonic() - t0 < 5
        # The reader can have the record before the writer has its answer: wait for it,
        # so the writer's connection is not closed under a request in flight.
        late.join(10)
        assert [p.base_offset for p in produced] == [0]


def test_records_are_in_the_partitions_file_with_their_offsets(ceiling, tmp_path):
    with BrokerConnection(ceiling.host, ceiling.port) as conn:
        _create(conn, "t", partitions=2)
        first, second = _batch([b"a", b"b"]), _batch([b"c"])
        assert produce_on(conn, "t", 1, first + second, acks=1).base_offset == 0
        assert produce_on(conn, "t", 1, _batch([b"d"]), acks=1).base_offset == 3
        assert not (tmp_path / "t-0").exists()                  # created by its first append
    assert (tmp_path / "t-1").stat().st_size == cs.CAPACITY        # sparse, sized once
    written = first + second + _batch([b"d"])
    with open(tmp_path / "t-1", "rb") as f:
        data = f.read(len(written) + 4096)
    assert data[len(written):len(written) + 4096] == bytes(4096)
    got = [(r.offset, bytes(r.value)) for b in iter_batches(data[:len(written)]) for r in b]
    assert got == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]


def test_a_failed_mapping_refuses_that_append_and_the_next_one_succeeds(tmp_path, monkeypatch):
    real = cs.mmap.mmap
    failures = iter([OSError(12, "Cannot allocate memory")])

    def flaky(*args, **kw):
        exc = next(failures, None)
        if exc is not None:
            raise exc
        return real(*args, **kw)

    monkeypatch.setattr(cs.mmap, "mmap", flaky)
    part = cs.Partition(str(tmp_path / "t-0"))
    try:
        assert part.append(memoryview(bytearray(_batch([b"a"])))) == (cs._KAFKA_STORAGE_ERROR, -1)
        assert part.next_offset == 0 and part.end == 0
        assert part.append(memoryview(bytearray(_batch([b"b"])))) == (cs._NONE, 0)
        code, view = part.read(0, 1 << 20, 0)
        assert code == cs._NONE
        assert [bytes(r.value) for b in iter_batches(bytes(view)) for r in b] == [b"b"]
    finally:
        view = None
        os.close(part.fd)


def test_a_topic_name_that_is_not_a_file_name_is_refused(ceiling, tmp_path):
    with BrokerConnection(ceiling.host, ceiling.port) as conn:
        for name in ("../up", "a/b", "..", "", "x" * 250):
            assert _create(conn, name) == 17, name
        assert _create(conn, "x" * 249) == 0
    assert [p.name for p in tmp_path.parent.iterdir() if p.name == "up"] == []


@pytest.mark.parametrize("frame", [
    struct.pack(">hhih", 11, 0, 1, 1) + b"x",                       # JoinGroup v0: not answered
    struct.pack(">hhih", 1, 12, 1, 1) + b"x" + b"\xff" * 7,         # a Fetch cut short
])
def test_a_request_it_does_not_answer_closes_only_its_connection(ceiling, frame):
    with socket.create_connection((ceiling.host, ceiling.port), timeout=5) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        assert s.recv(10) == b""
    with BrokerConnection(ceiling.host, ceiling.port) as conn:       # the server still serves
        assert _create(conn, "after") == 0


@pytest.mark.parametrize("size", [-1, 0, cs._MAX_FRAME + 1])
def test_a_frame_size_out_of_bounds_closes_only_its_connection(ceiling, size):
    with socket.create_connection((ceiling.host, ceiling.port), timeout=5) as s:
        s.sendall(struct.pack(">i", size))
        assert s.recv(10) == b""
    with BrokerConnection(ceiling.host, ceiling.port) as conn:       # the server still serves
        assert _create(conn, "after") == 0


def test_a_data_dir_that_is_not_a_directory_is_a_usage_error(tmp_path, capsys):
    assert cs.main(["--data-dir", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cs.main(["--listen", "127.0.0.1:0"])                      # --data-dir is required
