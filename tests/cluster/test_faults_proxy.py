"""The fault proxy itself (:mod:`cluster.proxy`) against a loopback echo server: links
told apart by the Kafka client_id, pause holding bytes until healed, blackhole losing
them (one way) and closing the connection on heal, delay keeping order."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

import pytest

from cluster.proxy import CLIENT, FaultyNetwork, kafka_source
from server.util import wait_for


@pytest.fixture
def echo():
    """A loopback server echoing every connection's bytes back."""
    listener = socket.create_server(("127.0.0.1", 0))
    conns = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=pump, args=(conn,), daemon=True).start()

    def pump(conn):
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield listener.getsockname()[1]
    listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone would not
    listener.close()
    for c in conns:
        c.close()
    t.join(5)


@pytest.fixture
def net():
    with FaultyNetwork() as n:
        yield n


def header(client_id: str | None) -> bytes:
    cid = b"\xff\xff" if client_id is None else struct.pack(">h", len(client_id)) + client_id.encode()
    body = struct.pack(">hhi", 18, 3, 7) + cid
    return struct.pack(">i", len(body)) + body


def recv_n(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def test_kafka_source_reads_the_client_id():
    assert kafka_source(header("pylog-replica-fetcher-2-1")) == 2
    assert kafka_source(header("pylog-broker-3-controller")) == 3
    assert kafka_source(header("pylog-controller-1-to-2")) == 1
    assert kafka_source(header("rdkafka")) == CLIENT
    assert kafka_source(header(None)) == CLIENT
    assert kafka_source(header("pylog-replica-fetcher-2-1")[:15]) is None


def test_pause_holds_a_links_bytes_and_leaves_other_links_alone(echo, net):
    p = net.proxy(1, echo)
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as broker2, \
            socket.create_connection(("127.0.0.1", p.port), timeout=10) as client:
        h2, hc = header("pylog-replica-fetcher-2-1"), header("rdkafka")
        broker2.sendall(h2)
        client.sendall(hc)
        assert recv_n(broker2, len(h2)) == h2 and recv_n(client, len(hc)) == hc
        net.pause(2, 1)
        broker2.sendall(b"held")
        client.sendall(b"flows")
        assert recv_n(client, 5) == b"flows"
        broker2.settimeout(0.3)
        with pytest.raises(socket.timeout):
            broker2.recv(4)
        broker2.settimeout(10)
        net.heal(2, 1)
        assert recv_n(broker2, 4) == b"held"


def test_one_way_blackhole_loses_answers_and_closes_on_heal(echo, net):
    p = net.proxy("zk", echo, source=1)
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(b"ping")
        assert recv_n(s, 4) == b"ping"
        net.blackhole(1, "zk", directions=("back",))
        s.sendall(b"lost")
        wait_for(lambda: net.dropped_bytes == 4, "the echo dropped on its way back")
        net.heal(1, "zk")
        # TCP would have reset a connection with a hole in it: the proxy closes it.
        assert recv_n(s, 4) == b""
    assert net.dropped_bytes == 4
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(b"again")
        assert recv_n(s, 5) == b"again"


def test_delay_keeps_order(echo, net):
    p = net.proxy("zk", echo, source=1)
    net.delay(1, "zk", 0.05)
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        data = bytes(range(256)) * 64
        for i in range(0, len(data), 1000):
            s.sendall(data[i:i + 1000])
        assert recv_n(s, len(data)) == data


def test_close_ends_a_connection_still_being_classified(echo):
    """A connection whose first bytes do not yet name its source (a client that has just
    connected) is closed with the network: the peer reads the end of the stream, and no
    socket is left for the garbage collector to warn about (an unclosed socket is a
    ResourceWarning, an error under ``filterwarnings = error``)."""
    net = FaultyNetwork()
    try:
        p = net.proxy(1, echo)

        async def tasks() -> int:
            return len(asyncio.all_tasks())
        idle = net._call(tasks)
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        s.sendall(header("rdkafka")[:6])   # part of a request header: the source is unknown
        wait_for(lambda: net._call(tasks) > idle, "the proxy accepting the connection")
    finally:
        net.close()
    with s:
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass   # closed with an RST: ended all the same
