"""A consumer of many partitions against ``pylog serve``, with and without incremental
fetch sessions (KIP-227): what one fetch round costs the server and the wire.

A counting proxy sits between the consumer and the server (the server advertises the
proxy's address, so every connection goes through it); it counts the consumer's Fetch
requests and their bytes and the bytes of the answers.  The server runs as a subprocess,
so the CPU time of its event-loop thread (where every request is handled) comes from
``/proc`` (:func:`loop_cpu_seconds`).
Sessions are switched off with ``max.incremental.fetch.session.cache.slots=0``, which
makes every fetch a full one: the same server build, before and after.

While measuring, a trickle producer appends one record every 2 ms to a random partition
(so fetch rounds are driven by data, as for a live consumer, not only by ``fetch.wait``).
The loop's CPU per round is net of its CPU with the trickle and no consumer (the appends),
measured first.

Figures (asv ``track_*``, also printed by ``python -m benches.bench_fetch_sessions``):

- ``KafkaPythonManyPartitions.track_server_cpu_ms_per_round``,
  ``track_request_bytes_per_round`` and ``track_response_bytes_per_round`` (parameter
  ``sessions``: on, off): kafka-python, which fetches with sessions, over 1000 partitions.
- ``ConfluentManyPartitions.track_server_cpu_ms_per_round``: confluent-kafka (librdkafka
  2.16 fetches sessionless, session id 0 and epoch -1, so sessions cannot help it).
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from typing import Callable

from benches.bench_server import ServeProcess, _create_topic

_FETCH = 1


class CountingProxy:
    """A loopback TCP proxy to ``target`` counting Fetch requests and bytes both ways."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.target: tuple[str, int] | None = None
        self.lock = threading.Lock()
        self.fetch_requests = 0
        self.fetch_request_bytes = 0
        self.response_bytes = 0
        self._closing = False
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.fetch_requests = self.fetch_request_bytes = self.response_bytes = 0

    def counts(self) -> tuple[int, int, int]:
        with self.lock:
            return self.fetch_requests, self.fetch_request_bytes, self.response_bytes

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            assert self.target is not None
            upstream = socket.create_connection(self.target)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._socks.append(s)
            fetcher = threading.Event()     # set once the connection sent a Fetch
            buf = bytearray()

            def requests(data: bytes, buf: bytearray = buf, fetcher: threading.Event = fetcher) -> None:
                buf += data
                while len(buf) >= 6:
                    (size,) = struct.unpack_from(">i", buf)
                    if len(buf) < 4 + size:
                        break
                    (api_key,) = struct.unpack_from(">h", buf, 4)
                    if api_key == _FETCH:
                        fetcher.set()
                        with self.lock:
                            self.fetch_requests += 1
                            self.fetch_request_bytes += 4 + size
                    del buf[:4 + size]

            def responses(data: bytes, fetcher: threading.Event = fetcher) -> None:
                # Counts the answers on consumer connections only (not the trickle producer's).
                if fetcher.is_set():
                    with self.lock:
                        self.response_bytes += len(data)

            threading.Thread(target=_pump, args=(client, upstream, requests), daemon=True).start()
            threading.Thread(target=_pump, args=(upstream, client, responses), daemon=True).start()

    def close(self) -> None:
        self.sock.close()
        for s in self._socks:
            _shut(s)
            s.close()


def _pump(src: socket.socket, dst: socket.socket, seen: Callable[[bytes], None]) -> None:
    """Copy ``src`` to ``dst`` until either closes, showing every chunk to ``seen``."""
    try:
        while True:
            data = src.recv(1 << 16)
            if not data:
                break
            dst.sendall(data)
            seen(data)
    except OSError:
        pass
    finally:
        _shut(dst)


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def loop_cpu_seconds(server: ServeProcess) -> float:
    """CPU time of the server's main thread, the one running the event loop and so every
    request handler (the broker's background threads are left out: their periodic work
    does not depend on the consumer)."""
    with open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def _trickle(bootstrap: str, topic: str, partitions: int, stop: threading.Event, period: float) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "1"})
    rng = random.Random(1)
    while not stop.wait(period):
        p.produce(topic, b"t" * 100, partition=rng.randrange(partitions))
        p.poll(0)
    p.flush(10)
    del p       # librdkafka's client goes with its last reference (no reconnects after the run)


def _kafka_python_consumer(bootstrap: str, topic: str, partitions: int) -> tuple:
    import kafka

    c = kafka.KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                            enable_auto_commit=False, fetch_max_wait_ms=100,
                            max_partition_fetch_bytes=1 << 20)
    c.assign([kafka.TopicPartition(topic, p) for p in range(partitions)])

    def poll() -> int:
        return sum(len(v) for v in c.poll(timeout_ms=100).values())
    return poll, c.close


def _confluent_consumer(bootstrap: str, topic: str, partitions: int) -> tuple:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-sessions", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])

    def poll() -> int:
        return sum(1 for msg in c.consume(1000, 0.1) if msg.error() is None)
    return poll, c.close


def fetch_round_cost(client: str = "kafka-python", partitions: int = 1000, seconds: float = 10.0,
                     sessions: bool = True) -> dict:
    """One consumer of ``partitions`` partitions (one record each to start with), caught
    up, then measured for ``seconds`` under the trickle producer."""
    proxy = CountingProxy()
    server = ServeProcess(**{"advertised.listeners": f"127.0.0.1:{proxy.port}",
                             "max.incremental.fetch.session.cache.slots": "1000" if sessions else "0"})
    proxy.target = ("127.0.0.1", server.port)
    bootstrap = f"127.0.0.1:{proxy.port}"
    stop = threading.Event()
    close = None
    try:
        topic = "sessions"
        _create_topic(server.bootstrap, topic, partitions)
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": server.bootstrap, "linger.ms": 5})
        for i in range(partitions):
            p.produce(topic, b"s" * 100, partition=i)
        p.flush(30)
        del p
        trickle = threading.Thread(target=_trickle, args=(server.bootstrap, topic, partitions, stop, 0.002),
                                   daemon=True)
        trickle.start()
        # The event loop's CPU without the consumer (the trickle's appends): subtracted
        # from the measured window, so the figure is what fetching costs.
        cpu0 = loop_cpu_seconds(server)
        t0 = time.monotonic()
        time.sleep(seconds / 2)
        base_rate = (loop_cpu_seconds(server) - cpu0) / (time.monotonic() - t0)
        make = _kafka_python_consumer if client == "kafka-python" else _confluent_consumer
        poll, close = make(bootstrap, topic, partitions)
        got = 0
        deadline = time.monotonic() + 120
        while got < partitions and time.monotonic() < deadline:
            got += poll()
        if got < partitions:
            raise RuntimeError(f"{client} consumed {got} of {partitions} records")
        for _ in range(5):
            poll()            # settle: the trickle is flowing, the session (if any) made
        proxy.reset()
        cpu0 = loop_cpu_seconds(server)
        t0 = time.monotonic()
        records = 0
        while time.monotonic() - t0 < seconds:
            records += poll()
        cpu = loop_cpu_seconds(server) - cpu0
        elapsed = time.monotonic() - t0
        net = max(cpu - base_rate * elapsed, 0.0)
        rounds, req_bytes, resp_bytes = proxy.counts()
        stop.set()
        trickle.join(30)
        rounds = max(rounds, 1)
        return {"client": client, "partitions": partitions, "sessions": sessions, "rounds": rounds,
                "records": records, "server_cpu_ms_per_round": net * 1000 / rounds,
                "gross_cpu_ms_per_round": cpu * 1000 / rounds,
                "server_cpu_s": cpu, "baseline_cpu_s": base_rate * elapsed, "request_bytes_per_round": req_bytes / rounds,
                "response_bytes_per_round": resp_bytes / rounds}
    finally:
        stop.set()
        if close is not None:
            close()
        proxy.close()
        server.stop()


# ---------------------------------------------------------------------------------------
# asv classes
# ---------------------------------------------------------------------------------------


class _Once:
    timeout = 600
    number = 1
    repeat = 1


class KafkaPythonManyPartitions(_Once):
    """kafka-python over 1000 partitions, with sessions ("on") and without ("off")."""
    params = ["on", "off"]
    param_names = ["sessions"]

    def setup_cache(self) -> dict:
        return {"on": fetch_round_cost("kafka-python", 1000, 10.0, sessions=True),
                "off": fetch_round_cost("kafka-python", 1000, 10.0, sessions=False)}

    def track_server_cpu_ms_per_round(self, r: dict, sessions: str) -> float:
        return r[sessions]["server_cpu_ms_per_round"]

    def track_request_bytes_per_round(self, r: dict, sessions: str) -> float:
        return r[sessions]["request_bytes_per_round"]

    def track_response_bytes_per_round(self, r: dict, sessions: str) -> float:
        return r[sessions]["response_bytes_per_round"]


class ConfluentManyPartitions(_Once):
    def track_server_cpu_ms_per_round(self) -> float:
        return fetch_round_cost("confluent", 1000, 10.0)["server_cpu_ms_per_round"]


if __name__ == "__main__":
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    for client, sessions in (("kafka-python", True), ("kafka-python", False), ("confluent", True),
                             ("confluent", False)):
        r = fetch_round_cost(client, n, secs, sessions)
        print(f"{client:13s} sessions={'on ' if sessions else 'off'} rounds={r['rounds']:5d} "
              f"records={r['records']:6d} loop_cpu_s={r['server_cpu_s']:.2f} "
              f"(baseline {r['baseline_cpu_s']:.2f}) loop_cpu_ms/round gross={r['gross_cpu_ms_per_round']:.3f} "
              f"net={r['server_cpu_ms_per_round']:.3f} "
              f"request_B/round={r['request_bytes_per_round']:.0f} "
              f"response_B/round={r['response_bytes_per_round']:.0f}", flush=True)
