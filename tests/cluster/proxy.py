"""A fault-injecting TCP proxy on loopback for the cluster fault tests (``cluster.proxy``).

:class:`FaultyNetwork` runs every proxy of one test on one asyncio loop in a thread of
its own. :meth:`FaultyNetwork.proxy` listens on a free ``127.0.0.1`` port and forwards
each connection to a target (a broker's real port, ZooKeeper's port). A connection is a
*link* from a source to the proxy's name:

- a ZooKeeper proxy made with ``source=<broker id>`` (each broker gets its own, through its
  ``zookeeper.connect``): every connection on it comes from that broker;
- a broker proxy (the broker's ``advertised.listeners`` points at it, so clients and
  peers both come through it) reads the first Kafka request header of a connection and
  takes the source from its ``client_id``: ``pylog-replica-fetcher-<id>-...``,
  ``pylog-broker-<id>-controller`` and ``pylog-controller-<id>-to-...`` are broker
  ``<id>``; anything else is ``"client"``. So "broker 2 cannot reach broker 1" and
  "clients still reach broker 1" are separate links on the same port.

Faults, per (source, destination) link and direction (``"out"``: source to destination,
requests; ``"back"``: destination to source, responses):

- :meth:`FaultyNetwork.pause` holds the bytes (the proxy stops reading, TCP's window
  fills): packets lost while TCP retransmits; when healed they flow on, in order.
- :meth:`FaultyNetwork.blackhole` reads and discards them: one-way or two-way loss that
  TCP cannot repair. A connection that lost bytes is closed when the link heals (a real
  TCP connection would have been reset), so no peer ever parses a torn stream.
- :meth:`FaultyNetwork.delay` forwards each chunk after ``seconds``, in order.
- :meth:`FaultyNetwork.heal` undoes all of these for a link (or every link).

A new connection on a faulty link is accepted and then suffers the fault (no RST: a
partition is silence). Only 127.0.0.1 is ever bound or dialled.

Thread safety: every public method may be called from any thread; the changes are made
on the proxy loop and have taken effect when the call returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["FaultyNetwork", "Proxy", "LinkFault", "kafka_source"]

CLIENT = "client"
_BROKER_CLIENT_ID = re.compile(r"^pylog-(?:replica-fetcher|broker|controller)-(\d+)-")
_CHUNK = 65536


def kafka_source(header: bytes) -> str | int | None:
    """The source of a Kafka connection from its first request's bytes (size, api_key,
    api_version, correlation_id, client_id as int16 length + UTF-8): a broker id, or
    ``"client"``; None while the header is incomplete."""
    if len(header) < 14:
        return None
    (n,) = struct.unpack_from(">h", header, 12)
    if n < 0:
        return CLIENT
    if len(header) < 14 + n:
        return None
    m = _BROKER_CLIENT_ID.match(header[14:14 + n].decode("utf-8", "replace"))
    return int(m.group(1)) if m else CLIENT


@dataclass
class LinkFault:
    """What happens to one direction of one link."""

    mode: str = "pass"  # "pass", "pause" or "drop"
    delay: float = 0.0


@dataclass(eq=False)
class _Conn:
    source: Any
    dest: Any
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    lost_bytes: int = 0

    def close(self) -> None:
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.transport.abort()


class Proxy:
    """One listening port of a :class:`FaultyNetwork` (made by :meth:`FaultyNetwork.proxy`)."""

    def __init__(self, network: "FaultyNetwork", name: Any, target: tuple[str, int],
                 source: Any = None, classify: Callable[[bytes], Any] | None = None) -> None:
        if target[0] != "127.0.0.1":
            raise ValueError("the fault proxy forwards to 127.0.0.1 only")
        self.network = network
        self.name = name
        self.target = target
        self.source = source
        self.classify = classify
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
        """The accept callback (synchronous, in the protocol's connection_made): the
        connection is known to the network before its task first runs, its source still
        None while the first bytes are read, so a close ends it wherever its task is; a
        task cancelled before it ever ran would otherwise leave the socket to the garbage
        collector (a ResourceWarning)."""
        conn = _Conn(self.source, self.name, [writer])
        self.network._conns.add(conn)
        return self._accept(conn, reader, writer)

    async def _accept(self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        net = self.network
        try:
            first = b""
            if conn.source is None:
                classify = self.classify or kafka_source
                while (source := classify(first)) is None:
                    chunk = await reader.read(_CHUNK)
                    if not chunk:
                        return
                    first += chunk
                conn.source = source
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            conn.writers.append(up_writer)
            await asyncio.gather(self._pump(conn, "out", reader, up_writer, first),
                                 self._pump(conn, "back", up_reader, writer, b""))
        except OSError:
            pass
        finally:
            net._conns.discard(conn)
            conn.close()

    async def _pump(self, conn: _Conn, direction: str, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, pending: bytes) -> None:
        net = self.network
        try:
            while True:
                chunk = pending or await reader.read(_CHUNK)
                pending = b""
                if not chunk:
                    break
                while True:
                    fault = net._fault(conn.source, conn.dest, direction)
                    if fault.mode != "pause":
                        break
                    await net._changed_wait()
                if fault.mode == "drop":
                    conn.lost_bytes += len(chunk)
                    net.dropped_bytes += len(chunk)
                    continue
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            conn.close()


class FaultyNetwork:
    """The proxies of one test and the faults on their links (module docstring)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._faults: dict[tuple[Any, Any, str], LinkFault] = {}
        self._conns: set[_Conn] = set()
        self._changed: asyncio.Event | None = None
        self.proxies: list[Proxy] = []
        self.dropped_bytes = 0
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        self._call(self._init)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _init(self) -> None:
        self._changed = asyncio.Event()

    def _call(self, coro_fn: Callable[..., Any], *args: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro_fn(*args), self.loop).result(30)

    def _fault(self, source: Any, dest: Any, direction: str) -> LinkFault:
        return self._faults.get((source, dest, direction)) or _PASS

    async def _changed_wait(self) -> None:
        assert self._changed is not None
        await self._changed.wait()

    def _notify(self) -> None:
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()

    # -- proxies

    def proxy(self, name: Any, target_port: int, *, source: Any = None,
              classify: Callable[[bytes], Any] | None = None) -> Proxy:
        """A proxy named ``name`` (the links' destination) to ``127.0.0.1:target_port``;
        ``source`` fixes every connection's source, else ``classify`` (default
        :func:`kafka_source`) reads it from the first bytes."""
        p = Proxy(self, name, ("127.0.0.1", target_port), source, classify)
        self._call(p._start)
        self.proxies.append(p)
        return p

    # -- faults

    def _set(self, source: Any, dest: Any, directions: tuple[str, ...], fault: LinkFault | None) -> None:
        async def apply() -> None:
            for d in directions:
                key = (source, dest, d)
                if fault is None:
                    self._faults.pop(key, None)
                else:
                    self._faults[key] = fault
            if fault is None:
                # TCP would have reset a connection that lost bytes: close it, so nobody
                # parses a stream with a hole in it.
                for c in list(self._conns):
                    if c.source == source and c.dest == dest and c.lost_bytes:
                        c.close()
            self._notify()
        self._call(apply)

    def pause(self, source: Any, dest: Any, *, directions: tuple[str, ...] = ("out", "back")) -> None:
        self._set(source, dest, directions, LinkFault("pause"))

    def blackhole(self, source: Any, dest: Any, *, directions: tuple[str, ...] = ("out", "back")) -> None:
        self._set(source, dest, directions, LinkFault("drop"))

    def delay(self, source: Any, dest: Any, seconds: float, *,
              directions: tuple[str, ...] = ("out", "back")) -> None:
        self._set(source, dest, directions, LinkFault("pass", seconds))

    def heal(self, source: Any = None, dest: Any = None) -> None:
        """Heal one link (both directions), or every link when none is named."""
        if source is None and dest is None:
            for (s, d, _) in list(self._faults):
                self._set(s, d, ("out", "back"), None)
            return
        self._set(source, dest, ("out", "back"), None)

    def links(self) -> dict[tuple[Any, Any, str], LinkFault]:
        return dict(self._faults)

    def close(self) -> None:
        async def shutdown() -> None:
            for p in self.proxies:
                if p.server is not None:
                    p.server.close()
            for c in list(self._conns):
                c.close()
            self._faults.clear()
            self._notify()
        with contextlib.suppress(Exception):
            self._call(shutdown)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        # Pumps still parked on a closed stream are cancelled with the loop. A connection
        # accepted in the loop's last iterations is closed here too, and an aborted
        # transport closes its socket in a callback of the next iteration: run the loop
        # until no connection and no task is left.
        for _ in range(5):
            while self._conns:
                self._conns.pop().close()
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            tick = self.loop.create_task(asyncio.sleep(0))
            self.loop.run_until_complete(asyncio.gather(*tasks, tick, return_exceptions=True))
            if not self._conns and not asyncio.all_tasks(self.loop):
                break
        self.loop.close()

    def __enter__(self) -> "FaultyNetwork":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_PASS = LinkFault()


class ProxiedCluster:
    """A :class:`pylog.cluster.local.LocalCluster` whose every link runs through a
    :class:`FaultyNetwork`: broker ``i`` advertises proxy ``i`` (clients and peers reach
    it there) and reaches ZooKeeper through a proxy of its own (links ``(i, "zk")``).

    ``zk_connect`` is ``host:port/chroot`` of the test's ZooKeeper; ``overrides`` go to
    every broker. Use as a context manager; :attr:`bootstrap` lists the proxied addresses.
    """

    def __init__(self, base_dir: Any, zk_connect: str, brokers: int = 3, overrides: Any = ()) -> None:
        from pylog.cluster.local import LocalCluster, free_port

        self.network = FaultyNetwork()
        hosts, slash, chroot = zk_connect.partition("/")
        zk_port = int(hosts.rsplit(":", 1)[1])
        self.cluster = LocalCluster(base_dir, brokers, zookeeper=zk_connect, overrides=overrides)
        self.ids = list(range(1, brokers + 1))
        for i in self.ids:
            self.cluster.ports[i] = free_port()
            kafka = self.network.proxy(i, self.cluster.ports[i])
            zk = self.network.proxy("zk", zk_port, source=i)
            self.cluster.broker_args[i] = ["--advertised-listener", kafka.address,
                                           "--zookeeper", f"{zk.address}{slash}{chroot}"]
        self.proxy_of = {i: self.network.proxies[2 * k] for k, i in enumerate(self.ids)}

    @property
    def bootstrap(self) -> str:
        return ",".join(self.proxy_of[i].address for i in self.ids)

    def isolate_from_peers(self, broker: int) -> None:
        """Cut ``broker`` off from every other broker (both ways); clients and ZooKeeper
        still reach it."""
        for other in self.ids:
            if other != broker:
                self.network.pause(broker, other)
                self.network.pause(other, broker)

    def isolate_from_zookeeper(self, broker: int) -> None:
        self.network.pause(broker, "zk")

    def __enter__(self) -> "ProxiedCluster":
        try:
            self.cluster.start()
        except BaseException:
            self.network.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.network.heal()
            self.cluster.stop()
        finally:
            self.network.close()
