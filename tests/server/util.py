"""Helpers shared by the server tests (imported as ``server.util``)."""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time

_counter = itertools.count()


def unique(prefix: str) -> str:
    """A topic or group name no other test uses."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


def wait_for(predicate, what: str = "condition", timeout: float = 30.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def drain(consumer, count: int, timeout: float = 30.0, exact: bool = True) -> list:
    """Poll a confluent-kafka consumer until ``count`` records arrived (then, with
    ``exact``, a little longer to catch extra ones); raises on errors other than EOF."""
    from confluent_kafka import KafkaError

    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"received {len(got)} of {count} records in {timeout} s")
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise AssertionError(f"consumer error: {msg.error()}")
        got.append(msg)
    if exact:
        extra_deadline = time.monotonic() + 0.3
        while time.monotonic() < extra_deadline:
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                got.append(msg)
    return got


def recv_exact(s: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from ``s``; ConnectionError when the server closes first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the server")
        buf += chunk
    return bytes(buf)


def read_frame(s: socket.socket) -> bytes:
    """One size-prefixed response frame from ``s`` (without the prefix)."""
    (size,) = struct.unpack(">i", recv_exact(s, 4))
    return recv_exact(s, size)
