"""The network client: one I/O thread, one connection per broker, futures for answers.

:class:`NetworkClient` is the part of pylog's Kafka-protocol client that moves requests
and responses; the producer, consumer and admin layers build on it.

Threading model
    One daemon I/O thread per client runs a ``selectors`` loop (no asyncio: the client is
    used from plain threads and from any event loop alike).  It owns every socket, every
    :class:`~pylog.client.kafka.connection.BrokerConnection` and all writes to
    :class:`~pylog.client.kafka.cluster.ClusterMetadata`.  The public methods are safe
    from any thread: they put a command on a queue and wake the I/O thread through an
    ``eventfd`` (a socketpair where there is none), so a send is picked up at once; a
    send made on the I/O thread itself (a done callback, an I/O task) is written before
    the call returns, behind the commands queued before it.
    ``send`` returns a ``concurrent.futures.Future`` resolved **on the I/O thread**: done
    callbacks run there, so they must be short and must never wait on another future of
    the same client (they may call ``send``).  From asyncio, ``asyncio.wrap_future``.

I/O tasks
    :meth:`NetworkClient.add_task` lets a layer above run its own short step on the I/O
    thread, when woken from any thread (:meth:`IOTask.wake`) or when the timer the step
    asked for is due, before the loop writes the requests queued: what the step sends is
    written in the same turn of the loop, without a hand-over between threads.  The
    remote producer drains its accumulator this way (librdkafka's broker thread does the
    same), so a record crosses one thread on its way to the socket.

What is retried where
    - Connections: reconnected on demand with exponential backoff (``reconnect_backoff_ms``
      50 doubling to ``reconnect_backoff_max_ms`` 1000, +-20% jitter).
    - Metadata: refreshed by the I/O thread on its own (bootstrap, ``metadata_max_age_ms``,
      :meth:`ClusterMetadata.request_update`), retried every ``retry_backoff_ms``.
    - ApiVersions: retried once at a lower version when the broker asks for it.
    - Requests: **never** retried here.  A connection failure fails every request queued
      or in flight on it with :class:`~pylog.errors.NetworkError` (retriable); a request
      past its deadline fails with :class:`~pylog.errors.RequestTimedOutError` (retriable)
      and, if it was on the wire, closes its connection.  The layers above know whether a
      request may be repeated (idempotent producer, offsets) and retry it themselves.

Bounds
    Per connection: ``max_in_flight`` (5) requests written and unanswered; a response
    frame of at most ``max_response_size`` bytes (100 MiB), read into buffers that grow
    only as bytes arrive; ``request_timeout_ms`` (30000) per request, counted from
    ``send``; ``socket_connection_setup_timeout_ms`` (10000) for connect plus ApiVersions;
    a connection idle for ``connections_max_idle_ms`` (540000) is closed.  A broker that
    answers garbage or out of order is disconnected; one that hangs is disconnected when
    the first request on the wire times out.  Queued requests are bounded by the callers
    (the producer's ``buffer_memory``), not here.

Not done here: TLS and SASL (plaintext only), re-bootstrapping when every known broker
is gone (Kafka's KIP-899).
"""

from __future__ import annotations

import collections
import logging
import os
import random
import selectors
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Sequence

from pylog.client.kafka.cluster import (
    ClusterMetadata,
    CoordinatorType,
    MetadataSnapshot,
    TopicMetadata,
    least_loaded,
)
from pylog.client.kafka.connection import (
    DEFAULT_MAX_RESPONSE_SIZE,
    BrokerConnection,
    ClientRequest,
    ConnectionState,
    _fail,
)
from pylog.errors import (
    IllegalStateError,
    InvalidConfigError,
    NetworkError,
    PylogError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    UnsupportedVersionError,
    error_for_code,
)
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey

__all__ = ["NetworkClient", "IOTask"]

log = logging.getLogger("pylog.client.kafka")

_SEND, _SEND_ANY, _RELEASE = 0, 1, 2
_RETRIABLE_TOPIC_ERRORS = frozenset({3, 5, 100})   # UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC_ID


def _positive(name: str, value: Any, *, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        raise InvalidConfigError(f"{name} must be an int >= {0 if zero else 1}, not {value!r}")
    return value


class _Wakeup:
    """A file descriptor the selector watches; ``wake()`` from any thread makes it ready.
    A lock orders wake-ups against ``close()``, so a late wake-up never writes to a
    descriptor number the process has since reused."""

    def __init__(self) -> None:
        self.pending = False
        self._lock = threading.Lock()
        self._closed = False
        if hasattr(os, "eventfd"):
            self._fd: int | None = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - non-Linux
            self._fd = None
            self._r, self._w = socket.socketpair()
            self._r.setblocking(False)
            self._w.setblocking(False)

    def fileno(self) -> int:
        return self._fd if self._fd is not None else self._r.fileno()

    def wake(self) -> None:
        if self.pending:
            return
        with self._lock:
            if self._closed:
                return
            self.pending = True
            try:
                if self._fd is not None:
                    os.eventfd_write(self._fd, 1)
                else:  # pragma: no cover
                    self._w.send(b"\0")
            except BlockingIOError:
                pass                # already signalled

    def clear(self) -> None:
        # Cleared before the command queue is drained, so a command queued after the
        # drain always writes a new wake-up.
        self.pending = False
        try:
            if self._fd is not None:
                os.eventfd_read(self._fd)
            else:  # pragma: no cover
                self._r.recv(4096)
        except BlockingIOError:
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
            else:  # pragma: no cover
                self._r.close()
                self._w.close()


class IOTask:
    """A step a layer above runs on the network client's I/O thread
    (:meth:`NetworkClient.add_task`).

    ``step()`` runs on the I/O thread after :meth:`wake` (any thread) or once the delay
    it returned last has passed; it returns the seconds until it wants to run again, or
    None (only when woken).  It must be short and must never wait for an answer of the
    client (the I/O thread would wait on itself); the requests it sends are written in
    the same turn of the loop.  ``on_close()`` runs once on the I/O thread when the
    client stops, unless the task was cancelled first.  An exception in either is
    logged, never raised into the loop."""

    __slots__ = ("step", "on_close", "deadline", "woken", "cancelled", "_client")

    def __init__(self, client: "NetworkClient", step: Callable[[], float | None],
                 on_close: Callable[[], object] | None) -> None:
        self.step = step
        self.on_close = on_close
        self.deadline = float("inf")    # monotonic time of the next timed run (I/O thread)
        self.woken = False
        self.cancelled = False
        self._client = client

    def wake(self) -> None:
        """Run the step soon (any thread; several wakes before it runs make one run)."""
        if self.woken or self.cancelled:
            return
        self.woken = True
        client = self._client
        client._woken.append(self)
        if threading.current_thread() is not client._thread:
            client._wakeup.wake()

    def cancel(self) -> None:
        """Never run the step again (nor ``on_close``).  A step running now finishes."""
        self.cancelled = True
        client = self._client
        with client._lock:
            client._tasks = tuple(t for t in client._tasks if t is not self)


class NetworkClient:
    """Connections to a Kafka-protocol cluster, driven by one I/O thread.

    Parameters
    ----------
    bootstrap_servers : str or list of str
        ``host:port[,host:port...]``; :class:`~pylog.errors.InvalidConfigError` if malformed.
    client_id : str
    request_timeout_ms : int
        Default deadline of a request, from ``send`` to its answer (30000).
    max_in_flight : int
        Unanswered requests per connection (5).
    reconnect_backoff_ms, reconnect_backoff_max_ms : int
        50 and 1000, as Kafka's clients.
    socket_connection_setup_timeout_ms : int
        Connect plus ApiVersions (10000).
    connections_max_idle_ms : int
        540000.
    metadata_max_age_ms, retry_backoff_ms : int
        300000 and 100.
    max_response_size : int
        Largest response frame accepted (100 MiB).
    client_software_name, client_software_version : str
        Sent in ApiVersions (default "pylog" and pylog's version).

    The I/O thread starts at once and fetches metadata from the bootstrap servers.
    """

    def __init__(self, bootstrap_servers: str | Sequence[str], *, client_id: str = "pylog",
                 request_timeout_ms: int = 30000, max_in_flight: int = 5,
                 reconnect_backoff_ms: int = 50, reconnect_backoff_max_ms: int = 1000,
                 socket_connection_setup_timeout_ms: int = 10000,
                 connections_max_idle_ms: int = 540000, metadata_max_age_ms: int = 300000,
                 retry_backoff_ms: int = 100, max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
                 client_software_name: str = "pylog", client_software_version: str | None = None) -> None:
        self.request_timeout_ms = _positive("request_timeout_ms", request_timeout_ms)
        self.max_in_flight = _positive("max_in_flight", max_in_flight)
        self.reconnect_backoff_ms = _positive("reconnect_backoff_ms", reconnect_backoff_ms, zero=True)
        self.reconnect_backoff_max_ms = max(_positive("reconnect_backoff_max_ms", reconnect_backoff_max_ms,
                                                      zero=True), reconnect_backoff_ms)
        self.setup_timeout_ms = _positive("socket_connection_setup_timeout_ms",
                                          socket_connection_setup_timeout_ms)
        self.connections_max_idle_ms = _positive("connections_max_idle_ms", connections_max_idle_ms)
        self.max_response_size = _positive("max_response_size", max_response_size)
        if self.max_response_size < 8:
            raise InvalidConfigError(f"max_response_size must be at least 8 bytes, not {max_response_size}")
        if client_id is not None and not isinstance(client_id, str):
            raise InvalidConfigError(f"client_id must be a string, not {client_id!r}")
        if client_software_version is None:
            from pylog import __version__ as client_software_version
        self.client_id = client_id
        self._software: tuple[str, str] = (client_software_name, str(client_software_version))
        self.cluster = ClusterMetadata(
            bootstrap_servers,
            metadata_max_age_ms=_positive("metadata_max_age_ms", metadata_max_age_ms, zero=True),
            retry_backoff_ms=_positive("retry_backoff_ms", retry_backoff_ms, zero=True))
        self._rng = random.Random()
        self._selector = selectors.DefaultSelector()
        self._wakeup = _Wakeup()
        self._selector.register(self._wakeup, selectors.EVENT_READ, None)
        self._commands: collections.deque[tuple[int, int | None, ClientRequest]] = collections.deque()
        self._lock = threading.Lock()          # orders submissions against shutdown
        self._closing = False
        self._drained = False
        self._conns: dict[int, BrokerConnection] = {}
        self._metadata_in_flight = False
        self._tasks: tuple[IOTask, ...] = ()
        self._woken: collections.deque[IOTask] = collections.deque()
        self.cluster.on_update_requested = self._wakeup.wake
        self._thread = threading.Thread(target=self._run, name=f"pylog-network-{client_id}", daemon=True)
        self._thread.start()

    # -- public API (any thread) ---------------------------------------------------------

    def send(self, node_id: int, api_key: int, body: Any, *, version: int | None = None,
             timeout_ms: int | None = None, expect_response: bool = True) -> Future:
        """Send a request to broker ``node_id``.

        Parameters
        ----------
        node_id : int
            A broker id from the metadata, a bootstrap pseudo-node (< 0) or a coordinator
            id from :meth:`find_coordinator`.
        api_key : int
        body : message, mapping, or callable
            ``messages.<Api>Request``, a mapping for its ``from_dict``, or
            ``body(version) -> message`` when the fields depend on the version.
        version : int, optional
            Default: the highest version both sides speak; a given version is checked.
        timeout_ms : int, optional
            Deadline from now (default ``request_timeout_ms``).
        expect_response : bool
            False for Produce with acks=0: the future completes (with None) once the
            request is written.

        Returns
        -------
        concurrent.futures.Future
            Resolves to the decoded response body; fails with
            :class:`~pylog.errors.NetworkError`, :class:`~pylog.errors.RequestTimedOutError`,
            :class:`~pylog.errors.UnsupportedVersionError` or an encode error.

        Raises
        ------
        IllegalStateError
            The client is closed.
        """
        req = self._request(api_key, body, version, timeout_ms, expect_response)
        self._submit(_SEND, node_id, req)
        return req.future

    def send_to_any(self, api_key: int, body: Any, *, version: int | None = None,
                    timeout_ms: int | None = None, expect_response: bool = True) -> Future:
        """As :meth:`send`, to the least-loaded broker (a bootstrap server before the first
        metadata): a ready connection with the fewest requests, else one being set up,
        else one that may connect now, else the one whose backoff ends first."""
        req = self._request(api_key, body, version, timeout_ms, expect_response)
        self._submit(_SEND_ANY, None, req)
        return req.future

    def refresh_metadata(self, topics: Iterable[str] | None = None, *,
                         allow_auto_topic_creation: bool = False,
                         timeout_ms: int | None = None) -> Future:
        """Send a Metadata request now for ``topics`` (None: every topic) and apply the
        answer; the future resolves to the new :class:`MetadataSnapshot`."""
        names = None if topics is None else list(topics)
        outer: Future = Future()
        outer.set_running_or_notify_cancel()
        request_version = self.cluster.request_version

        def done(f: Future) -> None:       # on the I/O thread
            exc = f.exception()
            if exc is not None:
                self.cluster.failed_update(time.monotonic(), exc)
                outer.set_exception(exc)
                return
            snap = self.cluster.update(f.result(), time.monotonic(), topics=names,
                                       request_version=request_version)
            self._after_metadata()
            outer.set_result(snap)

        self._send_with(None, ApiKey.METADATA, _metadata_body(names, allow_auto_topic_creation),
                        timeout_ms, done)
        return outer

    def wait_for_metadata(self, topics: Iterable[str], timeout: float | None = None) -> dict[str, TopicMetadata]:
        """Block until the brokers are known and every topic in ``topics`` is in the
        metadata with its partitions (tracking them from now on); returns their
        :class:`TopicMetadata`.

        Parameters
        ----------
        timeout : float, optional
            Seconds (default ``request_timeout_ms``).

        Raises
        ------
        UnknownTopicOrPartitionError
            A topic is still unknown when the time is up.
        RequestTimedOutError
            No metadata arrived in time (brokers unreachable: see ``cluster.last_error``).
        PylogError
            A topic has a non-retriable error (INVALID_TOPIC_EXCEPTION, ...).
        IllegalStateError
            Called on the I/O thread (it would wait on itself), or the client is closed.
        """
        if threading.current_thread() is self._thread:
            raise IllegalStateError("wait_for_metadata() on the network client's I/O thread would "
                                    "wait forever; use refresh_metadata() and a callback")
        names = list(topics)
        timeout = self.request_timeout_ms / 1000 if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self.cluster.add_topics(names)
        while True:
            if self._closing:
                raise IllegalStateError("the network client is closed")
            attempts = self.cluster.attempts
            snap = self.cluster.snapshot()
            missing = []
            for name in names:
                t = snap.topics.get(name)
                if t is None or t.error_code in _RETRIABLE_TOPIC_ERRORS:
                    missing.append(name)
                elif t.error_code:
                    raise error_for_code(t.error_code, f"topic {name!r}: metadata error {t.error_code}")
            if not missing and snap.nodes:
                return {name: snap.topics[name] for name in names}
            left = deadline - time.monotonic()
            if left <= 0:
                if snap.version == 0:
                    why = f": {self.cluster.last_error}" if self.cluster.last_error else ""
                    raise RequestTimedOutError(f"no metadata from {self._bootstrap_text()} within "
                                               f"{timeout:.3g} s{why}")
                raise UnknownTopicOrPartitionError(
                    f"topic(s) {', '.join(missing)} not present in metadata after {timeout:.3g} s")
            self.cluster.request_update()
            self.cluster.wait_for_update(attempts, left)

    def find_coordinator(self, key: str, key_type: int = CoordinatorType.GROUP, *,
                         timeout_ms: int | None = None) -> Future:
        """The coordinator of group (or transactional id) ``key``: a future of the node id
        to :meth:`send` to (cached; see :mod:`~pylog.client.kafka.cluster`).  Fails with
        the retriable COORDINATOR_NOT_AVAILABLE/NOT_COORDINATOR errors, or a network error."""
        outer: Future = Future()
        outer.set_running_or_notify_cancel()

        def done(f: Future) -> None:
            exc = f.exception()
            if exc is not None:
                outer.set_exception(exc)
                return
            r = f.result()[key]
            if isinstance(r, BaseException):
                outer.set_exception(r)
            else:
                outer.set_result(r)

        self.find_coordinators([key], key_type, timeout_ms=timeout_ms).add_done_callback(done)
        return outer

    def find_coordinators(self, keys: Iterable[str], key_type: int = CoordinatorType.GROUP, *,
                          timeout_ms: int | None = None) -> Future:
        """Coordinators of several keys, in one FindCoordinator v4 request when the broker
        speaks it (else one request per key): a future of ``{key: node id or the
        PylogError for that key}``.  Cached answers are used without a request."""
        key_type = CoordinatorType(key_type)
        result: dict[str, Any] = {}
        todo = []
        for key in dict.fromkeys(keys):
            cached = self.cluster.coordinator_for(key, key_type)
            if cached is not None:
                result[key] = cached
            else:
                todo.append(key)
        outer: Future = Future()
        outer.set_running_or_notify_cancel()
        if not todo:
            outer.set_result(result)
            return outer
        pending = {"n": 0}
        lock = threading.Lock()

        def finish_one() -> None:
            with lock:
                pending["n"] -= 1
                last = pending["n"] == 0
            if last:
                outer.set_result(result)

        def ask(batch: list[str]) -> None:
            with lock:
                pending["n"] += 1
            try:
                self._send_with(None, ApiKey.FIND_COORDINATOR, _find_coordinator_body(batch, key_type),
                                timeout_ms, lambda f: answered(batch, f))
            except IllegalStateError as exc:        # closed meanwhile (asked from a callback)
                for key in batch:
                    result[key] = exc
                finish_one()

        def answered(batch: list[str], f: Future) -> None:
            exc = f.exception()
            if exc is not None:
                for key in batch:
                    result[key] = exc
                finish_one()
                return
            resp = f.result()
            if resp.coordinators:
                entries = [(c.key, c.error_code, c.error_message, c.node_id, c.host, c.port)
                           for c in resp.coordinators]
            else:
                entries = [(batch[0], resp.error_code, resp.error_message, resp.node_id, resp.host, resp.port)]
            for key, code, msg, node_id, host, port in entries:
                if key not in batch or key in result:
                    continue
                if code:
                    self.cluster.coordinator_error(key, key_type, code)
                    result[key] = error_for_code(code, f"FindCoordinator({key_type.name.lower()} {key!r}): "
                                                       f"{msg or error_for_code(code)}")
                else:
                    result[key] = self.cluster.set_coordinator(key, key_type, node_id, host, port)
            for key in batch:           # an old broker answered only the first key
                if key not in result:
                    ask([key])
            finish_one()

        ask(todo)
        return outer

    def add_task(self, step: Callable[[], float | None],
                 on_close: Callable[[], object] | None = None) -> IOTask:
        """Run ``step`` on the I/O thread when woken or when its timer is due (see
        :class:`IOTask`); it first runs when woken.

        Raises
        ------
        IllegalStateError
            The client is closed.
        """
        task = IOTask(self, step, on_close)
        with self._lock:
            if self._closing:
                raise IllegalStateError("the network client is closed")
            self._tasks = self._tasks + (task,)
        return task

    def release(self, node_id: int) -> None:
        """Close and forget the connection ``node_id`` (an extra connection no longer
        needed); its requests still queued or in flight fail with
        :class:`~pylog.errors.NetworkError`.  Sends submitted after this call get a new
        connection.  No-op when closed."""
        try:
            self._submit(_RELEASE, node_id, None)  # type: ignore[arg-type]
        except IllegalStateError:
            pass

    def api_versions(self, node_id: int) -> dict[int, tuple[int, int]] | None:
        """Versions both pylog and broker ``node_id`` speak, per API key (None before the
        connection is ready)."""
        conn = self._conns.get(node_id)
        if conn is None or not conn.is_ready():
            return None
        return dict(conn.api_versions)

    def connection(self, node_id: int) -> BrokerConnection | None:
        """The connection object of ``node_id``, for inspection only (state, counters):
        it belongs to the I/O thread."""
        return self._conns.get(node_id)

    def is_ready(self, node_id: int) -> bool:
        conn = self._conns.get(node_id)
        return conn is not None and conn.is_ready()

    def on_io_thread(self) -> bool:
        """Whether the caller is the I/O thread (a done callback): it must not wait for an
        answer of this client."""
        return threading.current_thread() is self._thread

    @property
    def closed(self) -> bool:
        return self._closing

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the I/O thread: requests queued or in flight fail with
        :class:`~pylog.errors.IllegalStateError`, sockets are closed.  Idempotent."""
        with self._lock:
            self._closing = True
        self._wakeup.wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> NetworkClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<NetworkClient {self._bootstrap_text()} {len(self._conns)} connections>"

    # -- internals (caller side) ---------------------------------------------------------

    def _bootstrap_text(self) -> str:
        return ",".join(f"{n.host}:{n.port}" for n in self.cluster.bootstrap_nodes.values())

    def _request(self, api_key: int, body: Any, version: int | None, timeout_ms: int | None,
                 expect_response: bool) -> ClientRequest:
        if timeout_ms is None:
            timeout_ms = self.request_timeout_ms
        return ClientRequest(api_key, body, Future(), version=version, expect_response=expect_response,
                             deadline=time.monotonic() + timeout_ms / 1000)

    def _send_with(self, node_id: int | None, api_key: int, body: Any, timeout_ms: int | None,
                   callback: Callable[[Future], None]) -> None:
        # The callback is attached before the request leaves this thread, so it always
        # runs on the I/O thread.
        req = self._request(api_key, body, None, timeout_ms, True)
        req.future.add_done_callback(callback)
        self._submit(_SEND_ANY if node_id is None else _SEND, node_id, req)

    def _submit(self, kind: int, node_id: int | None, req: ClientRequest) -> None:
        with self._lock:
            if self._closing:
                raise IllegalStateError("the network client is closed")
            self._commands.append((kind, node_id, req))
        if threading.current_thread() is not self._thread:
            self._wakeup.wake()
        else:
            # A done callback (a consumer's next prefetch, a producer's next batch) or an
            # I/O task sends: write it now, before this thread next lets go of the GIL
            # (a recv, the select).  Left for the top of the loop, it waited until the
            # thread woken by the answer had done its work and blocked again.  The
            # commands queued before it go first, in order.
            self._drain_commands(time.monotonic())

    # -- the I/O thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closing:
                now = time.monotonic()
                if self._wakeup.pending:
                    self._wakeup.clear()
                if self._tasks or self._woken:
                    self._run_tasks(now)
                self._drain_commands(now)
                self._maybe_update_metadata(now)
                events = self._selector.select(self._poll_timeout(now))
                now = time.monotonic()
                for key, mask in events:
                    conn = key.data
                    if conn is None:
                        self._wakeup.clear()    # the drain at the top of the loop follows
                        continue
                    if mask & selectors.EVENT_WRITE:
                        conn.on_writable(now)
                    if mask & selectors.EVENT_READ and conn.sock is not None:
                        conn.on_readable(now)
                self._timers(now)
        except BaseException:  # a bug: say so, and fail everything rather than hang callers
            log.critical("pylog network client I/O thread failed", exc_info=True)
            raise
        finally:
            self._shutdown()

    def _run_tasks(self, now: float) -> None:
        # Woken tasks and those whose timer is due; each runs at most once a turn.  (The
        # wake-up was cleared before: a wake during a step makes the loop turn again.)
        woken = self._woken
        due = []
        while woken:
            task = woken.popleft()
            task.woken = False
            if not task.cancelled and task not in due:
                due.append(task)
        for task in self._tasks:
            if task.deadline <= now and task not in due:
                due.append(task)
        for task in due:
            try:
                delay = task.step()
            except Exception:  # the layer's bug: say so, keep the connections going
                log.exception("I/O task %r failed", task.step)
                delay = None
            task.deadline = float("inf") if delay is None else time.monotonic() + max(delay, 0.0)

    def _drain_commands(self, now: float) -> None:
        commands = self._commands
        while commands:
            kind, node_id, req = commands.popleft()
            if kind == _RELEASE:
                released = self._conns.get(node_id)  # type: ignore[arg-type]
                if released is not None:
                    self._retire(node_id, released, now)  # type: ignore[arg-type]
                continue
            if kind == _SEND_ANY:
                node_id = self._least_loaded(now)
                if node_id is None:
                    _fail(req, NetworkError("no broker to send to"))
                    continue
            assert node_id is not None
            conn = self._connection_for(node_id)
            if conn is None:
                _fail(req, NetworkError(f"node {node_id} is not in the cluster metadata"))
                self.cluster.request_update()
                continue
            conn.enqueue(req, now)
            if conn.can_connect(now):
                conn.connect(now)

    def _connection_for(self, node_id: int) -> BrokerConnection | None:
        conn = self._conns.get(node_id)
        if conn is not None:
            return conn
        node = self.cluster.node(node_id)
        if node is None:
            return None
        conn = BrokerConnection(
            node_id, node.host, node.port, self._selector, client_id=self.client_id,
            max_in_flight=self.max_in_flight, max_response_size=self.max_response_size,
            reconnect_backoff_ms=self.reconnect_backoff_ms,
            reconnect_backoff_max_ms=self.reconnect_backoff_max_ms,
            connection_setup_timeout_ms=self.setup_timeout_ms,
            client_software_name=self._software[0], client_software_version=self._software[1],
            rng=self._rng)
        conn.on_close = self._on_connection_closed
        self._conns[node_id] = conn
        return conn

    def _least_loaded(self, now: float) -> int | None:
        conns = self._conns

        def load(node_id: int) -> tuple[int, float]:
            conn = conns.get(node_id)
            if conn is None:
                return (2, 0)
            if conn.state is ConnectionState.READY:
                return (0, conn.in_flight_count + conn.queued_count)
            if conn.state in (ConnectionState.CONNECTING, ConnectionState.NEGOTIATING):
                return (1, conn.queued_count)
            if conn.can_connect(now):
                return (2, conn.queued_count)
            return (3, conn.next_connect_at)

        return least_loaded(self.cluster.candidate_nodes(), load, self._rng)

    def _on_connection_closed(self, conn: BrokerConnection, error: PylogError) -> None:
        if self._closing or getattr(error, "_idle", False):
            return
        if self.cluster.is_coordinator_connection(conn.node_id):
            self.cluster.invalidate_coordinators_on(conn.node_id)
        elif conn.node_id >= 0:
            self.cluster.request_update()       # a broker gone: leaders may have moved

    # Metadata ---------------------------------------------------------------------------

    def _maybe_update_metadata(self, now: float) -> None:
        if self._metadata_in_flight or self.cluster.time_to_next_update(now) > 0:
            return
        node_id = self._least_loaded(now)
        conn = self._connection_for(node_id) if node_id is not None else None
        if conn is None:
            return
        topics = self.cluster.tracked_topics()
        request_version = self.cluster.request_version
        req = ClientRequest(ApiKey.METADATA, _metadata_body(topics, False), Future(), version=None,
                            expect_response=True, deadline=now + self.request_timeout_ms / 1000)
        self._metadata_in_flight = True
        self.cluster.attempt_started(now)

        def done(f: Future) -> None:
            self._metadata_in_flight = False
            exc = f.exception()
            if exc is not None:
                if not self._closing:
                    log.debug("metadata request to node %s failed: %s", node_id, exc)
                self.cluster.failed_update(time.monotonic(), exc)
                return
            self.cluster.update(f.result(), time.monotonic(), topics=topics,
                                request_version=request_version)
            self._after_metadata()

        req.future.add_done_callback(done)
        conn.enqueue(req, now)
        if conn.can_connect(now):
            conn.connect(now)

    def _after_metadata(self) -> None:
        """Retire bootstrap pseudo-nodes and follow brokers that moved (I/O thread)."""
        if threading.current_thread() is not self._thread:
            return                  # a refresh failed on a caller thread: nothing to retire
        now = time.monotonic()
        nodes = self.cluster.nodes
        for node_id, conn in list(self._conns.items()):
            if node_id < 0:
                if nodes and conn.is_idle():
                    self._retire(node_id, conn, now)
            elif node_id in nodes:
                n = nodes[node_id]
                if (n.host, n.port) != (conn.host, conn.port):
                    conn.close(NetworkError(f"broker {node_id} moved from {conn.address} to "
                                            f"{n.host}:{n.port}"), now)
                    conn.host, conn.port = n.host, n.port

    def _retire(self, node_id: int, conn: BrokerConnection, now: float) -> None:
        err = NetworkError("connection no longer needed")
        err._idle = True            # type: ignore[attr-defined]
        conn.close(err, now, final=True)
        del self._conns[node_id]

    # Timers -----------------------------------------------------------------------------

    def _poll_timeout(self, now: float) -> float:
        if self._commands or self._closing or self._woken:
            return 0.0
        t = now + self.cluster.time_to_next_update(now) if not self._metadata_in_flight else float("inf")
        for task in self._tasks:
            t = min(t, task.deadline)
        idle = self.connections_max_idle_ms / 1000
        for conn in self._conns.values():
            t = min(t, conn.earliest_deadline())
            if conn.state is ConnectionState.DISCONNECTED and conn.queued_count:
                t = min(t, conn.next_connect_at)
            elif conn.state is ConnectionState.READY and conn.is_idle():
                t = min(t, conn.last_activity + idle)
        return min(max(0.0, t - now), 60.0)

    def _timers(self, now: float) -> None:
        idle = self.connections_max_idle_ms / 1000
        retire_bootstrap = bool(self.cluster.nodes)
        for node_id, conn in list(self._conns.items()):
            conn.check_timeouts(now)
            if conn.state is ConnectionState.DISCONNECTED:
                if conn.queued_count and conn.can_connect(now):
                    conn.connect(now)
                elif node_id < 0 and retire_bootstrap and conn.is_idle():
                    self._retire(node_id, conn, now)
            elif conn.is_idle() and (now - conn.last_activity >= idle
                                     or (node_id < 0 and retire_bootstrap and conn.is_ready())):
                if node_id < 0:
                    self._retire(node_id, conn, now)
                else:
                    err = NetworkError(f"connection to broker {node_id} idle for {idle:.0f} s")
                    err._idle = True    # type: ignore[attr-defined]
                    conn.close(err, now)

    def _shutdown(self) -> None:
        err = IllegalStateError("the network client was closed before this request completed")
        with self._lock:
            self._closing = True
            commands, self._commands = self._commands, collections.deque()
            tasks, self._tasks = self._tasks, ()
        for task in tasks:
            if task.on_close is not None and not task.cancelled:
                try:
                    task.on_close()
                except Exception:  # keep closing
                    log.exception("I/O task on_close %r failed", task.on_close)
        now = time.monotonic()
        for conn in list(self._conns.values()):
            try:
                conn.close(err, now, final=True)
            except Exception:  # keep closing the others
                log.exception("closing %r", conn)
        for kind, _, req in commands:
            if kind != _RELEASE:
                _fail(req, err)
        self._conns.clear()
        try:
            self._selector.unregister(self._wakeup)
        except (KeyError, ValueError):
            pass
        self._selector.close()
        self._wakeup.close()
        self.cluster.close()


def _metadata_body(topics: list[str] | None, allow_auto_topic_creation: bool) -> Callable[[int], Any]:
    def body(version: int) -> Any:
        if topics is None:
            names: list[Any] | None = [] if version == 0 else None   # v0: an empty list means all
        elif not topics and version == 0:
            names = []      # v0 cannot ask for brokers only; it gets every topic
        else:
            names = [m.MetadataRequest.MetadataRequestTopic(name=t)  # type: ignore[attr-defined]
                     for t in topics]
        req = m.MetadataRequest(topics=names)
        if version >= 4:
            req.allow_auto_topic_creation = allow_auto_topic_creation
        return req
    return body


def _find_coordinator_body(keys: list[str], key_type: CoordinatorType) -> Callable[[int], Any]:
    def body(version: int) -> Any:
        if version >= 4:
            return m.FindCoordinatorRequest(key_type=int(key_type), coordinator_keys=list(keys))
        if version == 0 and key_type != CoordinatorType.GROUP:
            raise UnsupportedVersionError("the broker speaks only FindCoordinator v0, which cannot "
                                          "look up transaction coordinators")
        req = m.FindCoordinatorRequest(key=keys[0])
        if version >= 1:
            req.key_type = int(key_type)
        return req
    return body
