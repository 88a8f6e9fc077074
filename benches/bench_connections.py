"""What connections cost ``pylog serve`` in memory: many idle clients plus a few active
producers (issue #17's figure, and the reason for the ``max.connections`` default).

The server runs as a subprocess (:class:`benches.bench_server.ServeProcess`); its resident
memory is read from ``/proc/PID/status`` (VmRSS; the kernel's socket buffers are not in
it).  Idle clients connect and complete one ApiVersions exchange, as a real client's
connection set-up does; each active producer is a connection sending Produce requests
(acks=1, one 16 KiB batch of 100-byte records to its own partition) back to back.

Figures (asv ``track_*``, also printed by ``python -m benches.bench_connections``):

- ``Connections.track_idle_kb_per_connection``: RSS added per idle connection (10,000).
- ``Connections.track_rss_mb_10k_idle_100_producers``: the server's RSS with 10,000 idle
  connections and 100 producers producing.
"""

from __future__ import annotations

import resource
import selectors
import socket
import struct
import time

from benches.bench_server import ServeProcess, _create_topic
from pylog.protocol import messages as m
from pylog.protocol.codec import encode_request
from pylog.protocol.segments import segments_to_bytes
from pylog.records import RecordBatchBuilder


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _frame_reader(sock: socket.socket) -> bytes:
    """One response frame (blocking; MSG_WAITALL waits for the whole of it)."""
    head = sock.recv(4, socket.MSG_WAITALL)
    size = struct.unpack(">i", head)[0] if len(head) == 4 else -1
    body = sock.recv(size, socket.MSG_WAITALL) if size >= 0 else b""
    if size < 0 or len(body) != size:
        raise ConnectionError("closed by the server")
    return body


def _produce_frame(topic: str, partition: int, correlation_id: int) -> bytes:
    b = RecordBatchBuilder()
    for i in range(160):
        b.append(None, None, b"p" * 100)
    P = m.ProduceRequest
    req = P(acks=1, timeout_ms=30_000, topic_data=[P.TopicProduceData(
        name=topic, partition_data=[P.PartitionProduceData(index=partition, records=bytes(b.build()))])])
    return segments_to_bytes(encode_request(0, 9, correlation_id, "bench-conn", req))


def connection_memory(idle: int = 10_000, producers: int = 100, produce_rounds: int = 20) -> dict:
    """Open ``idle`` idle connections, then run ``producers`` producers for
    ``produce_rounds`` requests each; the server's RSS before, with the idle connections,
    and at its peak while producing."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = idle + producers + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))
        soft = min(hard, need)
    if soft < need:
        raise RuntimeError(f"{need} file descriptors needed, the limit is {soft}")
    # The server's own limit is inherited from this process (raised above).
    server = ServeProcess(**{"max.connections": str(idle + producers + 16)})
    socks: list[socket.socket] = []
    try:
        topic = "conn-mem"
        _create_topic(server.bootstrap, topic, producers)
        time.sleep(0.5)
        base = rss_mb(server.proc.pid)
        hello = segments_to_bytes(encode_request(18, 0, 1, "bench-conn", m.ApiVersionsRequest()))
        step = 500
        while len(socks) < idle:
            batch = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(min(step, idle - len(socks)))]
            for s in batch:
                s.sendall(hello)
            for s in batch:
                _frame_reader(s)
            socks.extend(batch)
        time.sleep(0.5)
        with_idle = rss_mb(server.proc.pid)
        # Producers: each keeps one Produce in flight, the next sent on its answer.
        sel = selectors.DefaultSelector()
        frames = [_produce_frame(topic, i, 1) for i in range(producers)]
        left = {}
        for i in range(producers):
            s = socket.create_connection(("127.0.0.1", server.port))
            socks.append(s)
            s.sendall(frames[i])
            left[s] = produce_rounds - 1
            sel.register(s, selectors.EVENT_READ, i)
        peak = rss_mb(server.proc.pid)
        busy = producers
        while busy:
            for key, _ in sel.select(30):
                s = key.fileobj
                _frame_reader(s)
                if left[s] > 0:
                    left[s] -= 1
                    s.sendall(frames[key.data])
                else:
                    sel.unregister(s)
                    busy -= 1
            peak = max(peak, rss_mb(server.proc.pid))
        sel.close()
        return {"idle": idle, "producers": producers, "base_mb": base, "with_idle_mb": with_idle,
                "peak_mb": peak, "idle_kb_per_connection": (with_idle - base) * 1024 / max(idle, 1)}
    finally:
        for s in socks:
            s.close()
        server.stop()


class Connections:
    timeout = 600
    number = 1
    repeat = 1

    def setup_cache(self) -> dict:
        return connection_memory(10_000, 100)

    def track_idle_kb_per_connection(self, r: dict) -> float:
        return r["idle_kb_per_connection"]

    def track_rss_mb_10k_idle_100_producers(self, r: dict) -> float:
        return r["peak_mb"]


if __name__ == "__main__":
    r = connection_memory()
    print(f"server RSS: {r['base_mb']:.1f} MB at start, {r['with_idle_mb']:.1f} MB with {r['idle']} idle "
          f"connections ({r['idle_kb_per_connection']:.1f} kB each), peak {r['peak_mb']:.1f} MB with "
          f"{r['producers']} producers producing as well")
