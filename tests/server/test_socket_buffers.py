"""Socket buffer sizes of the server's connections: Kafka's ``socket.send.buffer.bytes``
(SO_SNDBUF of each accepted connection) and ``socket.receive.buffer.bytes`` (SO_RCVBUF of
the listener, inherited by what it accepts), 102400 each by default as Kafka's; -1 leaves
both to the OS."""

from __future__ import annotations

import socket
import sys

import pytest

from pylog.server.config import ServerConfig
from pylog.server.server import ServerThread

from .util import wait_for

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux reports twice the size set (socket(7))")


def _server_side_buffers(tmp_path, **overrides) -> tuple[int, int]:
    st = ServerThread(ServerConfig(log_dirs=str(tmp_path / "data"), listeners="127.0.0.1:0", **overrides))
    st.start()
    try:
        with socket.create_connection(st.address, timeout=10):
            wait_for(lambda: len(st.server.connections) == 1, "the server to accept the connection")
            sock = next(iter(st.server.connections)).sock
            return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    finally:
        st.stop()


def _os_defaults() -> tuple[int, int]:
    """What an accepted TCP connection's buffers are when nobody sets them."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()[:2], timeout=10):
            conn, _ = listener.accept()
            with conn:
                return (conn.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                        conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def test_connections_get_kafkas_default_buffer_sizes(tmp_path):
    # The kernel doubles what is set, for its own bookkeeping, and reports the double.
    assert _server_side_buffers(tmp_path) == (2 * 102400, 2 * 102400)


def test_configured_sizes_reach_the_sockets(tmp_path):
    got = _server_side_buffers(tmp_path, socket_send_buffer_bytes=65536, socket_receive_buffer_bytes=131072)
    assert got == (2 * 65536, 2 * 131072)  # both under the usual rmem_max/wmem_max caps


def test_minus_one_leaves_the_buffers_to_the_os(tmp_path):
    snd, rcv = _server_side_buffers(tmp_path, socket_send_buffer_bytes=-1, socket_receive_buffer_bytes=-1)
    os_snd, os_rcv = _os_defaults()
    assert (snd, rcv) == (os_snd, os_rcv)
    assert (snd, rcv) != (2 * 102400, 2 * 102400)
