"""``pylog serve``: the Kafka wire-protocol server.

One asyncio event loop (uvloop's when it is installed; ``PYLOG_EVENT_LOOP=asyncio`` or
``=uvloop`` in the environment picks one) accepts connections and runs every
request handler; its thread asks Linux for a short scheduler slice
(:mod:`pylog.server.sched`, ``PYLOG_LOOP_SLICE_US``), so a CPU-bound process beside the
server delays its wake-ups less; handlers translate Kafka requests into calls on the broker core
(:mod:`pylog.broker`), the same calls the embedded client makes.  Work that can block for
long runs off the loop, in a small thread pool: log flushes (fsync), retention and the
final flush on shutdown.

Lifecycle
    :meth:`Server.start` opens the broker (recovering the data directory), binds the
    listener and starts the periodic tasks; :meth:`Server.stop` stops accepting, closes
    every connection, flushes and closes the broker (which writes Kafka's clean-shutdown
    marker).  :func:`run` does both around SIGTERM/SIGINT for the command line.

Logging
    Plain lines on stderr, one event per line, ``key=value`` where it helps grepping:
    ``2024-05-01 12:00:00,123 INFO pylog.server: listening on 127.0.0.1:9092 ...``.

Thread safety: a Server belongs to the thread running its loop; :meth:`request_stop` is
the one method other threads (and signal handlers) may call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import gc
import logging
import os
import socket
import struct
import sys
import threading
import time
from typing import Any, Callable

from pylog.errors import InvalidConfigError, PylogError
from pylog.protocol.apis import ApiKey, api_name
from pylog.protocol.codec import encode_response, precompile
from pylog.server import sched
from pylog.server.config import ServerConfig, parse_connection_overrides
from pylog.server.connection import Connection
from pylog.server.dynamic_config import DynamicBrokerConfigs

__all__ = ["Server", "ServerThread", "run", "configure_logging", "new_event_loop"]

_log = logging.getLogger("pylog.server")

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_UNSUPPORTED_VERSION = 35
_I32 = struct.Struct(">i")


def configure_logging(level: str | int = "INFO") -> None:
    """Plain, greppable lines on stderr (idempotent: a second call points the handler at
    the current ``sys.stderr``, which a program running the CLI in-process may have
    replaced since, and closed)."""
    root = logging.getLogger("pylog")
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            level = logging.INFO
    root.setLevel(level)
    mine = [h for h in root.handlers if getattr(h, "_pylog", False)]
    for h in mine:
        if isinstance(h, logging.StreamHandler) and h.stream is not sys.stderr:
            with h.lock:   # (not setStream: it flushes the old stream, which may be closed)
                h.stream = sys.stderr
    if not mine:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        handler._pylog = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.propagate = False


#: Environment variable choosing the event loop: ``auto`` (the default: uvloop's when
#: it is installed), ``uvloop`` (an error when it is not installed) or ``asyncio``.
EVENT_LOOP_ENV = "PYLOG_EVENT_LOOP"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The event loop :data:`EVENT_LOOP_ENV` asks for: by default uvloop's when uvloop
    is installed, else asyncio's.  Raises InvalidConfigError for an unknown choice, or
    for ``uvloop`` when it is not installed."""
    choice = os.environ.get(EVENT_LOOP_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "asyncio", "uvloop"):
        raise InvalidConfigError(f"{EVENT_LOOP_ENV}={choice!r}: expected auto, asyncio or uvloop")
    if choice == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        if choice == "uvloop":
            raise InvalidConfigError(f"{EVENT_LOOP_ENV}=uvloop, but uvloop is not installed") from None
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: which implementation ``loop`` is, for the log."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


class Server:
    """The Kafka wire-protocol server over one broker.

    Parameters
    ----------
    config : ServerConfig
    broker : optional
        A broker core to serve; by default one is opened on ``config.log_dirs`` by
        :meth:`start` and closed by :meth:`stop`.
    """

    def __init__(self, config: ServerConfig | None = None, *, broker: Any = None) -> None:
        self.config = config or ServerConfig()
        self.broker = broker
        self._own_broker = broker is None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.connections: set[Connection] = set()
        self.handlers: dict[int, tuple[int, int, Callable, str]] = {}
        self.bound_address: tuple[str, int] | None = None
        self.advertised: tuple[str, int] | None = None
        self.started_at = 0.0
        self._sock: socket.socket | None = None
        self._accepting = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._stopped: asyncio.Event | None = None
        self._stopping = False
        self._pool_used = 0
        self._pool_waiters: list[Connection] = []
        #: Bytes of frame buffers connections keep for their next large request.
        self.kept_frame_bytes = 0
        self._accept_paused_until = 0.0
        #: Open connections by client address (max.connections.per.ip).
        self.connections_per_ip: dict[str, int] = {}
        self._ip_overrides: dict[str, int] = {}
        self._paused_at_cap = False
        self.state: Any = None   # handler-side state (pylog.server.handlers.ServerState)
        #: The broker's cluster side (pylog.cluster.node.ClusterNode) when zookeeper.connect is set.
        self.cluster: Any = None
        #: Static settings plus the dynamic broker configs (set by :meth:`start`).
        self.dynamic_configs: DynamicBrokerConfigs = None  # type: ignore[assignment]
        self._thread_id: int | None = None
        #: Set once the codec plans of every served API are built (see :meth:`start`).
        self.warmed_up: asyncio.Event | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Open the broker, bind the listener and start serving."""
        from pylog.server import handlers

        self.loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        # The threads running when the start-up begins: those it starts get the loop
        # thread's scheduler slice once the server listens (_set_loop_slice).
        threads_before = {t.ident for t in threading.enumerate()}
        self._stopped = asyncio.Event()
        self.warmed_up = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="pylog-io")
        if self.broker is None:
            # The broker core locks the data directory (<log.dirs>/.lock, as Kafka does)
            # before it reads anything there, and holds it until it is closed: a second
            # server, or an embedded broker, on the same directory is refused.
            t0 = time.monotonic()
            try:
                # The dynamic broker configs persisted in the data dir override the static
                # ones, before the logs open with them (only read here: a server that
                # cannot take the data dir's lock writes nothing).
                self.dynamic_configs = DynamicBrokerConfigs.load(self.config)
                self.config = self.dynamic_configs.effective
                self.broker = await self.loop.run_in_executor(
                    self._executor, handlers.open_broker, self.config, self.dynamic_configs)
                if self.config.zookeeper_connect:
                    # A single node creates __consumer_offsets on the first group's
                    # FindCoordinator; a clustered broker has its local one from the start
                    # (its coordinators hash groups over the cluster topic's count, which
                    # they read from ZooKeeper: pylog.cluster.coordinators).
                    await self.loop.run_in_executor(self._executor, self.broker.ensure_offsets_topic)
            except BaseException:
                self._executor.shutdown(wait=False)
                raise
            _log.info("broker opened: data_dir=%s in %.0f ms", self.config.log_dirs,
                      (time.monotonic() - t0) * 1000)
        else:
            # A broker given by the caller keeps its own settings; broker configs altered
            # at run time are kept in its data dir.
            self.dynamic_configs = DynamicBrokerConfigs(self.config.replace(log_dirs=self.broker.data_dir))
        self.state = handlers.ServerState(self)
        self.handlers = handlers.handler_table()
        if self.config.zookeeper_connect:
            from pylog.server.cluster_handlers import cluster_handler_table
            self.handlers = cluster_handler_table(self.handlers)
        # The codec plans are built just after the listener opens, one API per turn of
        # the loop (about 20 ms in all), what a client sends first (ApiVersions, Metadata)
        # first: not on the first request of each kind, which would pay for it in its
        # latency, and not before the server listens, which would delay every start
        # (~3 ms for those two, #17).  A request that comes before its API's plans are
        # built has them built for it (codec._plan, under the codec's lock).
        first = [k for k in (ApiKey.API_VERSIONS, ApiKey.METADATA) if k in self.handlers]
        plans = first + sorted(set(self.handlers) - set(first))
        # Host names in max.connections.per.ip.overrides are resolved once, here, off the
        # loop (Kafka resolves them when the config is read).
        self._ip_overrides = await self.loop.run_in_executor(
            self._executor, resolve_connection_overrides, self.config.max_connections_per_ip_overrides)
        host, port = self.config.listen_address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.config.socket_receive_buffer_bytes > 0:
                # On the listener, before bind, as Kafka's acceptor sets it: accepted
                # sockets inherit it, and the window scale offered in the handshake fits it.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.socket_receive_buffer_bytes)
            sock.bind((host, port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if self._own_broker:
                await self.loop.run_in_executor(self._executor, self.broker.close)
            self._executor.shutdown(wait=False)
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
        self._sock = sock
        self.bound_address = sock.getsockname()[:2]
        self.advertised = self.config.advertised_address(self.bound_address)
        self.started_at = time.time()
        self._schedule_periodic()
        if self.config.zookeeper_connect:
            from pylog.cluster.node import ClusterNode
            self.cluster = ClusterNode(self)
            await self.loop.run_in_executor(None, self.cluster.start)
            self._every(1.0, self.cluster.tick)
        # Accept only now (clients wait in the listen backlog meanwhile), as Kafka enables
        # request processing at the end of its start-up: a clustered broker answering
        # Metadata before it has read the cluster id from ZooKeeper gives its own, and
        # librdkafka warns that it is connected to two clusters.
        self.loop.add_reader(sock.fileno(), self._on_accept)
        self._accepting = True
        self.loop.call_soon(self._set_loop_slice, threads_before)
        self.loop.call_soon(self._precompile_each, plans)
        if self._own_broker:
            # The partitions the open deferred load from now on (or on first use), not
            # while the server starts: Kafka's log loading after the broker is up (#17).
            self.broker.start_loading()
        _log.info("listening on %s:%d advertised=%s:%d node_id=%d cluster_id=%s loop=%s",
                  self.bound_address[0], self.bound_address[1], self.advertised[0],
                  self.advertised[1], self.config.node_id, self.state.cluster_id, loop_name(self.loop))

    def _set_loop_slice(self, threads_before: set[int | None]) -> None:
        """Ask for the loop thread's short scheduler slice, so it preempts a CPU-bound
        neighbour soon after a request wakes it (pylog.server.sched, #17), and for the
        same slice on the threads the start-up started (the I/O pool's, the broker's):
        those the loop thread starts from now on inherit it.  Run first thing after the
        server listens: the slice is for serving, and setting it (ctypes) is ~1.5 ms."""
        slice_us = sched.loop_slice_us()
        if not slice_us:
            return
        if not sched.set_slice(slice_us):
            _log.debug("the event loop thread keeps the kernel's scheduler slice")
            return
        for t in threading.enumerate():
            if t.ident not in threads_before and t.name.startswith("pylog-") and t.native_id:
                sched.set_slice(slice_us, t.native_id)

    def _precompile_each(self, api_keys: list[int]) -> None:
        """Build the codec plans of ``api_keys``, one API per turn of the loop."""
        if api_keys and not self._stopping:
            precompile((api_keys[0],))
            self.loop.call_soon(self._precompile_each, api_keys[1:])
        elif not api_keys and self.warmed_up is not None:
            self.warmed_up.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def serve_until_stopped(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    def request_stop(self) -> None:
        """Ask the server to stop (thread- and signal-safe)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._thread_id:
            loop.create_task(self.stop())
        else:
            asyncio.run_coroutine_threadsafe(self.stop(), loop)

    async def stop(self) -> None:
        """Stop accepting, close every connection, flush and close the broker."""
        if self._stopping:
            if self._stopped is not None:
                await self._stopped.wait()
            return
        self._stopping = True
        _log.info("shutting down: %d connection(s) open", len(self.connections))
        if self.cluster is not None:
            # Kafka's order: the controlled shutdown first, while this broker still
            # answers its followers' fetches and its clients (moved partitions:
            # NOT_LEADER_OR_FOLLOWER) until the other brokers know the new leaders; then
            # the listener and connections close; the ZooKeeper session (deregistration)
            # closes last, in cluster.stop below.
            await self._cluster_step(self.cluster.leave_leadership, "the controlled shutdown")
        if self._sock is not None:
            if self._accepting:
                self.loop.remove_reader(self._sock.fileno())
                self._accepting = False
            self._sock.close()
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        for conn in list(self.connections):
            conn.close("server shutting down", level=logging.DEBUG)
        if self.cluster is not None:
            await self._cluster_step(self.cluster.stop, "leaving the cluster")
        if self.state is not None:
            self.state.shutdown()
        if self._own_broker and self.broker is not None:
            t0 = time.monotonic()
            try:
                await self.loop.run_in_executor(self._executor, self.broker.close)
            except Exception as exc:  # noqa: BLE001 - report, and still finish stopping
                _log.error("closing the broker failed: %r", exc)
            else:
                _log.info("broker closed cleanly in %.0f ms (flushed, clean-shutdown marker written)",
                          (time.monotonic() - t0) * 1000)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        _log.info("stopped")
        assert self._stopped is not None
        self._stopped.set()

    async def _cluster_step(self, step: Any, what: str) -> None:
        """Run a blocking step of leaving the cluster off the loop (an error is logged:
        the server still finishes stopping), then fail the acks=all waiters left."""
        try:
            await self.loop.run_in_executor(None, step)
        except Exception as exc:  # noqa: BLE001 - report, and still finish stopping
            _log.error("%s failed: %r", what, exc)
        self.cluster.replica_manager.fail_all_waiters()

    # -- accepting -----------------------------------------------------------------

    def _on_accept(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(64):
            if len(self.connections) >= self.config.max_connections:
                self._pause_accept_at_cap()
                return
            try:
                client, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop accepting for a moment rather than spin.
                    _log.warning("accept failed: %s; pausing accepts for 100 ms", exc.strerror)
                    self.loop.remove_reader(sock.fileno())
                    self._accepting = False
                    self.loop.call_later(0.1, self._resume_accept)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                _log.warning("accept failed: %s", exc)
                return
            ip = str(addr[0]) if isinstance(addr, tuple) else str(addr)
            count = self.connections_per_ip.get(ip, 0)
            limit = self._ip_overrides.get(ip, self.config.max_connections_per_ip)
            if count >= limit:
                # Kafka's TooManyConnectionsException: accepted, then closed at once.
                _log.info("connection from %s refused: it has %d connection(s) open, "
                          "max.connections.per.ip=%d", ip, count, limit)
                client.close()
                continue
            self._setup_socket(client)
            conn = Connection(self, client, addr)
            self.connections.add(conn)
            self.connections_per_ip[ip] = count + 1
            _log.debug("connection %s accepted", conn.peer)
            conn.start()
            if len(self.connections) >= self.config.max_connections:
                self._pause_accept_at_cap()
                return

    def connection_limits_changed(self, ip_overrides: dict[str, int] | None = None) -> None:
        """``self.config`` changed (a dynamic connection cap): accept again if the cap
        was reached and is no longer (a lower cap stops accepting at the next attempt);
        ``ip_overrides``, when given, are the new per-address caps
        (:func:`resolve_connection_overrides`).  Open connections are never closed."""
        if ip_overrides is not None:
            self._ip_overrides = ip_overrides
        if self._paused_at_cap and len(self.connections) < self.config.max_connections \
                and not self._stopping:
            self._paused_at_cap = False
            self._resume_accept()

    def _pause_accept_at_cap(self) -> None:
        """max.connections reached: stop accepting (new clients wait in the listen backlog,
        as behind Kafka's blocked acceptor) until a connection closes."""
        if self._accepting and self._sock is not None:
            self.loop.remove_reader(self._sock.fileno())
            self._accepting = False
        if not self._paused_at_cap:
            self._paused_at_cap = True
            _log.warning("max.connections=%d reached: not accepting connections until one closes",
                         self.config.max_connections)

    def _resume_accept(self) -> None:
        if self._sock is not None and not self._accepting and not self._stopping:
            self.loop.add_reader(self._sock.fileno(), self._on_accept)
            self._accepting = True

    def _setup_socket(self, client: socket.socket) -> None:
        client.setblocking(False)
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self.config.socket_send_buffer_bytes > 0:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.socket_send_buffer_bytes)

    def connection_closed(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            ip = conn.client_host
            left = self.connections_per_ip.get(ip, 1) - 1
            if left > 0:
                self.connections_per_ip[ip] = left
            else:
                self.connections_per_ip.pop(ip, None)
        self.connection_limits_changed()
        if self.state is not None:
            self.state.connection_closed(conn)

    # -- request memory pool (queued.max.request.bytes) -------------------------------

    def reserve_request_memory(self, n: int, conn: Connection) -> bool:
        limit = self.config.queued_max_request_bytes
        if limit < 0:
            return True
        # One request may always proceed alone, however large (it is bounded by
        # socket.request.max.bytes), so a pool smaller than a request cannot deadlock.
        if self._pool_used and self._pool_used + n > limit:
            if conn not in self._pool_waiters:
                self._pool_waiters.append(conn)
            return False
        self._pool_used += n
        return True

    def release_request_memory(self, n: int) -> None:
        if self.config.queued_max_request_bytes < 0:
            return
        self._pool_used -= n
        if self._pool_waiters:
            waiters, self._pool_waiters = self._pool_waiters, []
            for i, conn in enumerate(waiters):
                if not conn.memory_available():
                    self._pool_waiters.extend(c for c in waiters[i:] if not c.closed
                                              and c not in self._pool_waiters)
                    break

    @property
    def request_memory_used(self) -> int:
        return self._pool_used

    # -- answering what is not served ----------------------------------------------

    def error_response(self, api_key: int, api_version: int, error_code: int, request: Any = None) -> Any:
        """A response of ``api_key``/``api_version`` carrying ``error_code``: in its
        top-level error fields, and for each topic/partition (group, resource) of the
        decoded ``request`` when it is given (see ServerState.error_response)."""
        return self.state.error_response(api_key, api_version, error_code, request)

    def answer_unsupported(self, conn: Connection, header: Any, frame: bytes, pos: int) -> None:
        """A request for an API or version this server does not serve.

        - ApiVersions at a version above ours: a v0 body with UNSUPPORTED_VERSION and our
          version table (KIP-511), so the client can pick a version and ask again.
        - An API pylog's codec speaks at that version but the server does not serve:
          that API's response with UNSUPPORTED_VERSION as its error code.
        - An unknown API key, or a version the codec cannot encode: a frame with the
          correlation id and UNSUPPORTED_VERSION as an int16 (no schema exists to say
          more); the connection stays open.
        """
        api_key, version = header.api_key, header.api_version
        # Clients routinely open with an ApiVersions newer than ours (that is how they
        # negotiate): not worth an INFO line.
        _log.log(logging.DEBUG if api_key == ApiKey.API_VERSIONS else logging.INFO,
                 "unsupported request from %s: %s v%d (correlation id %d, client %r)",
                 conn.peer, api_name(api_key), version, header.correlation_id, header.client_id)
        if api_key == ApiKey.API_VERSIONS:
            body = self.state.api_versions_body(_UNSUPPORTED_VERSION)
            segs = encode_response(api_key, 0, header.correlation_id, body)
            conn.send_segments(segs)
            return
        try:
            body = self.error_response(api_key, version, _UNSUPPORTED_VERSION)
            segs = encode_response(api_key, version, header.correlation_id, body)
        except (PylogError, KeyError):
            segs = [_I32.pack(6) + _I32.pack(header.correlation_id) + struct.pack(">h", _UNSUPPORTED_VERSION)]
        conn.send_segments(segs)

    # -- periodic work -------------------------------------------------------------

    def _schedule_periodic(self) -> None:
        idle_s = self.config.connections_max_idle_ms / 1000
        # Flushes, retention, checkpoints and producer snapshots run in the broker core's
        # own background thread, off the loop; the loop only sweeps idle connections.
        self._every(min(max(idle_s / 4, 0.05), 10.0), self._sweep_idle)

    def _every(self, interval: float, fn: Callable[[], Any]) -> None:
        def tick() -> None:
            if self._stopping:
                return
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - a failing task must not stop the timer
                _log.exception("periodic task failed: %r", exc)
            self._timers.append(self.loop.call_later(interval, tick))
            if len(self._timers) > 64:
                self._timers = [t for t in self._timers if not t.cancelled() and t.when() > self.loop.time()]
        self._timers.append(self.loop.call_later(interval, tick))

    def call_off_loop(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        """Run ``fn(*args)`` in the I/O pool; a future of its result."""
        assert self._executor is not None
        # The executor's work item keeps what it was given until after the future's result
        # reaches the loop; a request handed over directly would pin its frame buffer past
        # the answer, so the connection's next large frame could not reuse it.  The call's
        # arguments are dropped when the call returns, before the result is published.
        call = [fn, args]

        def run() -> Any:
            f, a = call
            call.clear()
            try:
                return f(*a)
            finally:
                del f, a   # a traceback kept with an exception keeps the frame, not these

        return self.loop.run_in_executor(self._executor, run)

    def _sweep_idle(self) -> None:
        limit = self.config.connections_max_idle_ms / 1000
        now = time.monotonic()
        for conn in list(self.connections):
            if conn.inflight is None and now - conn.last_active > limit:
                conn.close(f"idle for more than connections.max.idle.ms="
                           f"{self.config.connections_max_idle_ms}")

    def call_in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop: now if called from its thread, else soon."""
        if threading.get_ident() == self._thread_id:
            fn(*args)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)


def resolve_connection_overrides(text: str) -> dict[str, int]:
    """``max.connections.per.ip.overrides`` by client address: each host given by name
    counts for every address it resolves to (a name that does not resolve is logged and
    skipped, as it can match no client)."""
    out: dict[str, int] = {}
    for host, count in parse_connection_overrides(text).items():
        import ipaddress  # only with overrides: not on the start-up path of `pylog serve` (#17)

        try:
            out[str(ipaddress.ip_address(host))] = count
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError as exc:
            _log.warning("max.connections.per.ip.overrides: host %r does not resolve (%s); its "
                         "override applies to no client", host, exc)
            continue
        for info in infos:
            out[str(info[4][0])] = count
    return out


def run(config: ServerConfig, *, ready: Callable[[Server], Any] | None = None) -> int:
    """Run a server until SIGTERM or SIGINT (the ``pylog serve`` command).  Returns the
    process exit status."""
    import signal

    try:
        loop = new_event_loop()
    except InvalidConfigError as exc:
        _log.error("cannot start: %s", exc)
        return 1
    asyncio.set_event_loop(loop)
    server = Server(config)

    early: list[int] = []
    started: list[bool] = []

    async def main() -> int:
        # Handlers first: a SIGTERM while the data dir opens (or just after the server
        # said it listens) must still end in a clean shutdown, not the default death
        # that leaves every partition to recover on the next start.
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, _on_signal, sig)
            except (NotImplementedError, RuntimeError):
                signal.signal(sig, lambda s, f: _on_signal(s))
        try:
            await server.start()
        except (OSError, PylogError) as exc:
            _log.error("cannot start: %s", exc)
            return 1
        started.append(True)
        if early:
            server.request_stop()
        elif ready is not None:
            ready(server)
        freeze = loop.create_task(_freeze_when_warm(server))
        await server.serve_until_stopped()
        freeze.cancel()
        return 0

    def _on_signal(sig: int) -> None:
        _log.info("received %s", signal.Signals(sig).name)
        if not started:
            early.append(sig)          # still starting: stop as soon as it has started
        else:
            server.request_stop()

    try:
        return loop.run_until_complete(main())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


async def _freeze_when_warm(server: Server) -> None:
    """Once the codec plans are built, move them (some 16,000 objects built after the
    server listened) to the GC's permanent generation, as ``pylog serve`` does with what
    its start-up built: they live as long as the process.  Walking them made each full
    collection (one about every 10 s at 10,000 records/s) stall the event loop for 2-5
    ms; without them it takes 0.2-0.5 ms (#17)."""
    assert server.warmed_up is not None
    await server.warmed_up.wait()
    if gc.isenabled():
        gc.freeze()


class ServerThread:
    """A server running on its own event loop in a background thread (tests, benchmarks,
    embedding a server in another program).

    ``ServerThread(config).start()`` returns once the server listens (or raises what
    stopped it from starting); :attr:`address` is the advertised (host, port);
    :meth:`stop` shuts it down cleanly and joins the thread.  Usable as a context manager.
    """

    def __init__(self, config: ServerConfig, *, broker: Any = None) -> None:
        self.config = config
        self.server = Server(config, broker=broker)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self.server.advertised is not None
        return self.server.advertised

    @property
    def bootstrap(self) -> str:
        host, port = self.address
        return f"{host}:{port}"

    def start(self, timeout: float = 60.0) -> ServerThread:
        self._thread = threading.Thread(target=self._run, name="pylog-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the server did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = self.loop = new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            loop.run_until_complete(self.server.serve_until_stopped())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def stop(self, timeout: float = 60.0) -> None:
        if self._thread is None:
            return
        if self._error is None and self.loop is not None and not self.loop.is_closed():
            self.server.request_stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the server did not stop within {timeout} s")
        self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
