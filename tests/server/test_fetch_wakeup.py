"""The produce -> parked Fetch path, as end-to-end latency sees it (#17): a Fetch
woken by an append is answered by the append itself, before the Produce that made it;
a Fetch answer with records (header, file region, tagged-field trailer) leaves as one
TCP segment, so the consumer wakes once for it; the codec plans a server builds after
it listens are moved out of the collector's way.  The server runs in-process on a free
loopback port."""

from __future__ import annotations

import asyncio
import gc
import socket
import struct

import pytest

from pylog.protocol import messages as m
from pylog.records import iter_batches
from pylog.server import connection as connection_module
from tests.wire import BrokerConnection
from server.test_long_poll import batch, send_fetch
from server.util import unique, wait_for

P = m.ProduceRequest

#: struct tcp_info's tcpi_data_segs_in (Linux 4.6+): TCP segments with data received.
_DATA_SEGS_IN = 152


def produce_body(topic, records):
    return P(transactional_id=None, acks=1, timeout_ms=30_000, topic_data=[
        P.TopicProduceData(name=topic, partition_data=[P.PartitionProduceData(index=0, records=records)])])


def data_segments_in(conn: BrokerConnection) -> int:
    info = conn._conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("<I", info, _DATA_SEGS_IN)[0]


def peer(conn: BrokerConnection) -> str:
    host, port = conn._conn.sock.getsockname()[:2]
    return f"{host}:{port}"


def values(partition) -> list[bytes]:
    return [r.value for b in iter_batches(memoryview(partition.records)) for r in b]


def parked(inproc, topic) -> bool:
    return bool(inproc.server.state.fetch_waiters.by_partition.get((topic, 0)))


def test_a_woken_fetch_is_answered_before_the_produce_that_woke_it(inproc, monkeypatch):
    topic = unique("wake")
    inproc.server.broker.create_topic(topic, 1)
    host, port = inproc.address
    flushed: list[str] = []
    flush = connection_module.Connection._flush_segments

    def recording(self):
        flushed.append(self.peer)
        flush(self)

    with BrokerConnection(host, port) as consumer, BrokerConnection(host, port) as producer:
        pending = send_fetch(consumer, topic, 0, 30_000)
        wait_for(lambda: parked(inproc, topic), "the fetch to wait")
        monkeypatch.setattr(connection_module.Connection, "_flush_segments", recording)
        answer = producer.request(0, produce_body(topic, batch([b"a", b"b"])))
        assert answer.responses[0].partition_responses[0].error_code == 0
        fetched = consumer.receive(pending).responses[0].partitions[0]
        assert values(fetched) == [b"a", b"b"]
        # The consumer's answer went to its socket first, within the produce, not one
        # turn of the event loop after the produce's own answer.
        assert flushed[:2] == [peer(consumer), peer(producer)]


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="TCP_CORK is Linux's")
@pytest.mark.parametrize("copy", [False, True], ids=["sendfile", "from-the-mapping"])
@pytest.mark.parametrize("woken", [True, False], ids=["woken", "at-once"])
def test_a_fetch_answer_with_records_arrives_in_one_tcp_segment(inproc, woken, copy, monkeypatch):
    # Records go with sendfile, or (PYLOG_FETCH_COPY_LOOPBACK) to a loopback peer from the
    # segment's mapping: both ways, the answer leaves as one segment.
    monkeypatch.setattr(connection_module, "COPY_TO_LOOPBACK", copy)
    topic = unique("cork")
    broker = inproc.server.broker
    broker.create_topic(topic, 1)
    if not woken:
        broker.append(topic, 0, batch([b"a", b"b"]))
    host, port = inproc.address
    with BrokerConnection(host, port) as consumer:
        before = data_segments_in(consumer)
        pending = send_fetch(consumer, topic, 0, 30_000)
        if woken:
            wait_for(lambda: parked(inproc, topic), "the fetch to wait")
            broker.append(topic, 0, batch([b"a", b"b"]))
        fetched = consumer.receive(pending).responses[0].partitions[0]
        assert values(fetched) == [b"a", b"b"]
        # v12: the frame's head, the records and the tagged fields after them.
        assert data_segments_in(consumer) - before == 1


def test_codec_plans_built_after_listening_are_frozen_once_built(inproc):
    from pylog.protocol import codec
    from pylog.server.server import _freeze_when_warm

    server = inproc.server
    wait_for(lambda: server.warmed_up.is_set(), "the codec plans to be built")
    plan = codec._plan("response", 1, 12)
    assert any(o is plan for o in gc.get_objects())
    try:
        asyncio.run(_freeze_when_warm(server))
        # In the permanent generation: no collection walks it any more.
        assert not any(o is plan for o in gc.get_objects())
    finally:
        gc.unfreeze()
