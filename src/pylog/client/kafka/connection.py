"""One TCP connection to one broker: non-blocking, pipelined, driven by an I/O thread.

A :class:`BrokerConnection` belongs to the :class:`~pylog.client.kafka.network.NetworkClient`
that created it and is used **only on that client's I/O thread**: it is not thread-safe
and needs no lock.  Other threads reach it through ``NetworkClient.send``, which hands a
:class:`ClientRequest` to the I/O thread.  Callers hold a ``concurrent.futures.Future``
per request; this module resolves it, on the I/O thread.

Life cycle (``state``)
    ``DISCONNECTED`` -> ``connect()`` -> ``CONNECTING`` (non-blocking TCP connect) ->
    ``NEGOTIATING`` (ApiVersions v3 with client_software_name/version; on
    UNSUPPORTED_VERSION the request is made again at the version the broker advertises for
    ApiVersions, or v0) -> ``READY``.  Any failure closes the socket and goes back to
    ``DISCONNECTED`` with a reconnect time (exponential backoff with jitter, Kafka's
    ``reconnect.backoff.ms``/``reconnect.backoff.max.ms``); ``CLOSED`` is final.

Pipelining
    Requests wait in a queue until the connection is ``READY``; then up to
    ``max_in_flight`` are written without waiting for answers.  Each request gets the
    next correlation id; Kafka answers in order on a connection, so the next response must
    answer the oldest request in flight: any other correlation id is a protocol error
    that closes the connection.  A request sent with ``expect_response=False`` (Produce
    with acks=0) takes no slot and its future completes once its bytes are in the
    kernel's send buffer.  Each request uses the highest version both sides speak, or the
    caller's version if both speak it (else UnsupportedVersionError for that request).

Quotas (KIP-219)
    An answer with ``throttle_time_ms`` > 0, at a version from which the broker leaves the
    waiting to the client, holds back every further request on this connection (they
    queue; their deadlines keep running) until that time has passed, as Kafka's
    NetworkClient does; answers to requests already in flight are still read.

What fails how (nothing is retried here)
    - Connection refused, reset, closed by the peer, a malformed response, a response with
      an unexpected correlation id, a frame size outside ``[4, max_response_size]``: the
      connection closes, and every request in flight *and* queued fails with
      :class:`~pylog.errors.NetworkError` (retriable).  A request in flight may have been
      processed by the broker: whether to retry is for the layer that knows about
      idempotence.
    - A request that reaches its deadline fails with
      :class:`~pylog.errors.RequestTimedOutError`; if it was on the wire, or the
      connection was still being set up, the connection is closed as well (Kafka's
      NetworkClient does the same: the answer may still come and would be out of step).
    - Connection set-up (TCP connect plus ApiVersions) longer than
      ``connection_setup_timeout_ms`` closes the connection.

Bounds
    Reads go through a fixed 64 KiB buffer with ``recv_into``; a frame larger than that
    gets its own buffer, grown by doubling as its bytes arrive (so a peer that announces
    a huge frame and sends little costs little) and never beyond ``max_response_size``
    (default 100 MiB, Kafka's ``socket.request.max.bytes``).  At most ``max_in_flight``
    encoded requests are held for writing; writes use ``sendmsg`` over the encoded
    segments, without joining them.  Each ready event reads at most 8 chunks before the
    I/O thread serves other sockets.
"""

from __future__ import annotations

import collections
import enum
import errno
import os
import random
import selectors
import socket
import struct
import time
from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable

from pylog.errors import (
    IllegalStateError,
    NetworkError,
    PylogError,
    RequestTimedOutError,
    UnsupportedVersionError,
    error_for_code,
)
from pylog.protocol import messages as m
from pylog.protocol._plan import read_uvarint, skip_tags
from pylog.protocol.apis import MAX_FRAME_SIZE, ApiKey, api_name, response_header_version, supported_versions
from pylog.protocol.codec import decode_response_body, encode_request, peek_correlation_id
from pylog.protocol.segments import FileRegion, segments_to_bytes
from pylog._protocol import frame_buffer     # after pylog.protocol, which it imports

__all__ = ["BrokerConnection", "ClientRequest", "ConnectionState", "DEFAULT_MAX_RESPONSE_SIZE"]

# KIP-219: from these versions on (api key -> first version), a broker over a quota sends
# its answer at once with ``throttle_time_ms`` and leaves the waiting to the client, which
# sends nothing more on that connection until the time is up (older versions: the broker
# delays the answer itself, and the client must not wait again).  From the "on quota
# violation, brokers send out responses before throttling" notes of Kafka's message
# schemas; Produce's is version 6, as its Java client has it.  An API missing here whose
# answer has a ``throttle_time_ms`` came after KIP-219 and is throttled at every version.
_CLIENT_THROTTLES_FROM = {
    0: 6, 1: 8, 2: 3, 3: 6, 8: 4, 9: 4, 10: 2, 11: 3, 12: 2, 13: 2, 14: 2, 15: 2, 16: 2,
    18: 2, 19: 3, 20: 2, 21: 1, 22: 1, 24: 1, 25: 1, 26: 1, 28: 1, 29: 1, 30: 1, 31: 1,
    32: 2, 33: 1, 34: 1, 35: 1, 37: 1, 38: 1, 39: 1, 40: 1, 41: 1, 42: 1,
}

#: Largest response frame accepted by default (Kafka's ``socket.request.max.bytes``).
DEFAULT_MAX_RESPONSE_SIZE = MAX_FRAME_SIZE

_I32 = struct.Struct(">i")
_I16 = struct.Struct(">h")
_RBUF_SIZE = 64 * 1024
#: A large frame's first buffer; doubled as bytes arrive.  Above 1 MiB so the answer to a
#: fetch of the default ``max_partition_fetch_bytes`` (1 MiB of records and the response's
#: few dozen header bytes) fits at once: growing a 1 MiB buffer by those bytes moved the
#: whole MiB (realloc) and zeroed the tail, for every such fetch.
_LARGE_FRAME_START = (1 << 20) + (64 << 10)
_READS_PER_EVENT = 8
_IOV_MAX = 512                      # segments per sendmsg (Linux allows 1024)
_UNSUPPORTED_VERSION = 35
_EVENT_READ, _EVENT_WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_OUR_VERSIONS = supported_versions()


class ConnectionState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    NEGOTIATING = "negotiating"
    READY = "ready"
    CLOSED = "closed"


class ClientRequest:
    """One request on its way to a broker; created by ``NetworkClient.send``.

    ``body`` is a message instance, a mapping, or a callable ``body(version)`` that builds
    the body once the version is known (for APIs whose fields change with the version).
    ``deadline`` is a ``time.monotonic()`` value.
    """

    __slots__ = ("api_key", "version", "body", "future", "expect_response", "deadline",
                 "correlation_id", "sent_version", "written", "internal")

    def __init__(self, api_key: int, body: Any, future: Future, *, version: int | None,
                 expect_response: bool, deadline: float, internal: bool = False) -> None:
        self.api_key = int(api_key)
        self.version = version
        self.body = body
        self.future = future
        self.expect_response = expect_response
        self.deadline = deadline
        self.correlation_id = -1
        self.sent_version = -1
        self.written = False
        self.internal = internal

    def __repr__(self) -> str:
        return (f"<ClientRequest {api_name(self.api_key)} v{self.sent_version} "
                f"corr={self.correlation_id}>")


def _clone(exc: PylogError) -> PylogError:
    # One instance per future: an exception raised in several threads would collect
    # their tracebacks.
    return type(exc)(str(exc))


def _fail(req: ClientRequest, exc: PylogError) -> None:
    fut = req.future
    if not req.written and not fut.running():
        if not fut.set_running_or_notify_cancel():
            return                  # cancelled while queued
    try:
        fut.set_exception(_clone(exc))
    except InvalidStateError:
        pass


class BrokerConnection:
    """A connection to broker ``node_id`` at ``host:port`` (see the module docstring).

    Parameters
    ----------
    node_id : int
    host, port
    selector : selectors.BaseSelector
        The I/O thread's selector; the connection registers and unregisters its socket.
    client_id : str
    max_in_flight : int
        Requests written and not yet answered, at most (Kafka's
        ``max.in.flight.requests.per.connection``, 5).
    max_response_size : int
        Largest response frame accepted, in bytes.
    reconnect_backoff_ms, reconnect_backoff_max_ms : int
        Wait before reconnecting: ``reconnect_backoff_ms * 2**failures`` capped at the max,
        with +-20% jitter, as Kafka's clients do.
    connection_setup_timeout_ms : int
        TCP connect plus ApiVersions must finish within this.
    client_software_name, client_software_version : str
        Sent in ApiVersions v3+.
    """

    def __init__(self, node_id: int, host: str, port: int, selector: Any, *,
                 client_id: str | None = "pylog", max_in_flight: int = 5,
                 max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
                 reconnect_backoff_ms: int = 50, reconnect_backoff_max_ms: int = 1000,
                 connection_setup_timeout_ms: int = 10000,
                 client_software_name: str = "pylog", client_software_version: str = "0",
                 rng: random.Random | None = None) -> None:
        self.node_id = node_id
        self.host, self.port = host, port
        self.client_id = client_id
        self.max_in_flight = max_in_flight
        self.max_response_size = max_response_size
        self.reconnect_backoff = reconnect_backoff_ms / 1000
        self.reconnect_backoff_max = reconnect_backoff_max_ms / 1000
        self.setup_timeout = connection_setup_timeout_ms / 1000
        self.software = (client_software_name, client_software_version)
        self._selector = selector
        self._rng = rng or random.Random()
        self.state = ConnectionState.DISCONNECTED
        self.sock: socket.socket | None = None
        #: Negotiated versions: api_key -> (min, max) both sides speak.  Empty until READY.
        self.api_versions: dict[int, tuple[int, int]] = {}
        #: The broker's own table from its ApiVersions answer.
        self.broker_versions: dict[int, tuple[int, int]] = {}
        self.failures = 0                   # consecutive failed connects (backoff exponent)
        self.next_connect_at = 0.0          # monotonic time before which connect() waits
        self.last_activity = time.monotonic()
        self.last_error: PylogError | None = None
        #: Monotonic time before which no request is written (KIP-219: the broker's
        #: ``throttle_time_ms``); 0.0 when not throttled.
        self.throttle_until = 0.0
        self.throttles = 0                  # answers that throttled this connection
        #: Called as ``on_close(connection, error)`` after each close (the NetworkClient's hook).
        self.on_close: Callable[[BrokerConnection, PylogError], None] | None = None
        # Inspection counters (tests, metrics).
        self.max_in_flight_seen = 0
        self.connects = 0
        self.requests_sent = 0
        self.responses_received = 0
        self._queue: collections.deque[ClientRequest] = collections.deque()
        self._in_flight: collections.deque[ClientRequest] = collections.deque()
        self._corr = 0
        self._setup_deadline = 0.0
        self._earliest_deadline = float("inf")
        self._versions_request: ClientRequest | None = None
        # Write side: encoded segments as byte memoryviews, and acks=0 requests waiting for
        # their last byte to be written (completed at byte position ``end``).
        self._wbuf: collections.deque[memoryview] = collections.deque()
        self._written_total = 0
        self._queued_total = 0
        self._unanswered_writes: collections.deque[tuple[int, ClientRequest]] = collections.deque()
        self._events = 0
        # Read side.
        self._rbuf = bytearray(_RBUF_SIZE)
        self._rstart = 0
        self._rend = 0
        self._frame: bytearray | None = None
        self._frame_size = 0
        self._frame_pos = 0

    def __repr__(self) -> str:
        return f"<BrokerConnection node {self.node_id} {self.host}:{self.port} {self.state.value}>"

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    # -- queries -------------------------------------------------------------------------

    @property
    def in_flight_count(self) -> int:
        return len(self._in_flight)

    @property
    def queued_count(self) -> int:
        return len(self._queue)

    def is_ready(self) -> bool:
        return self.state is ConnectionState.READY

    def is_idle(self) -> bool:
        """Nothing queued, in flight or left to write."""
        return not (self._queue or self._in_flight or self._wbuf or self._unanswered_writes)

    def can_connect(self, now: float) -> bool:
        return self.state is ConnectionState.DISCONNECTED and now >= self.next_connect_at

    def earliest_deadline(self) -> float:
        """The earliest time at which :meth:`check_timeouts` has something to do."""
        d = self._earliest_deadline
        if self.state in (ConnectionState.CONNECTING, ConnectionState.NEGOTIATING):
            d = min(d, self._setup_deadline)
        if self.throttle_until and self._queue:
            d = min(d, self.throttle_until)
        return d

    # -- requests ------------------------------------------------------------------------

    def enqueue(self, req: ClientRequest, now: float) -> None:
        """Queue ``req``; it is written once the connection is ready and has room."""
        if self.state is ConnectionState.CLOSED:
            _fail(req, IllegalStateError(f"connection to node {self.node_id} is closed"))
            return
        self._queue.append(req)
        if req.deadline < self._earliest_deadline:
            self._earliest_deadline = req.deadline
        if self.state is ConnectionState.READY:
            self._pump(now)

    def _pump(self, now: float) -> None:
        """Write queued requests while there is room in flight."""
        queue, in_flight = self._queue, self._in_flight
        if self.throttle_until:
            if now < self.throttle_until:
                self._flush(now)
                return
            self.throttle_until = 0.0
        while queue and len(in_flight) < self.max_in_flight and self.state is ConnectionState.READY:
            req = queue.popleft()
            if not req.future.set_running_or_notify_cancel():
                continue                            # cancelled while queued
            try:
                version = self._version_for(req)
                body = req.body(version) if callable(req.body) else req.body
                segs = encode_request(req.api_key, version, self._next_corr(), self.client_id, body)
            except PylogError as exc:
                req.future.set_exception(exc)       # this request only: nothing was sent
                continue
            except Exception as exc:  # a body callable's bug: the caller's, reported to it
                req.future.set_exception(exc)
                continue
            req.correlation_id = self._corr
            req.sent_version = version
            req.written = True
            self._write(segs)
            self.requests_sent += 1
            if req.expect_response:
                in_flight.append(req)
                if len(in_flight) > self.max_in_flight_seen:
                    self.max_in_flight_seen = len(in_flight)
            else:
                self._unanswered_writes.append((self._queued_total, req))
        self._flush(now)

    def _version_for(self, req: ClientRequest) -> int:
        r = self.api_versions.get(req.api_key)
        if r is None:
            raise UnsupportedVersionError(
                f"broker {self.node_id} ({self.address}) does not serve {api_name(req.api_key)} "
                "at any version pylog speaks")
        if req.version is None:
            return r[1]
        if not r[0] <= req.version <= r[1]:
            raise UnsupportedVersionError(
                f"{api_name(req.api_key)} v{req.version} is not spoken by both pylog and broker "
                f"{self.node_id} ({self.address}): common versions are v{r[0]}-v{r[1]}")
        return req.version

    def _next_corr(self) -> int:
        self._corr = (self._corr + 1) & 0x7FFFFFFF
        return self._corr

    # -- connecting ----------------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Start a non-blocking connect (state DISCONNECTED only).  Name resolution is
        blocking (``getaddrinfo``), as in Kafka's clients."""
        if self.state is not ConnectionState.DISCONNECTED:
            return
        self.connects += 1
        self._setup_deadline = now + self.setup_timeout
        self.last_activity = now
        try:
            infos = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            self._connect_failed(now, f"cannot resolve {self.host}: {exc}")
            return
        family, type_, proto, _, addr = infos[(self.connects - 1) % len(infos)]
        try:
            sock = socket.socket(family, type_, proto)
        except OSError as exc:
            self._connect_failed(now, f"cannot create a socket: {exc}")
            return
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex(addr)
        except OSError as exc:
            err = exc.errno or errno.EIO
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            sock.close()
            self._connect_failed(now, f"cannot connect to {self.address}: {errno.errorcode.get(err, err)} "
                                      f"({_strerror(err)})")
            return
        self.sock = sock
        self.state = ConnectionState.CONNECTING
        self._selector.register(sock, _EVENT_READ | _EVENT_WRITE, self)
        self._events = _EVENT_READ | _EVENT_WRITE
        if err == 0:
            self._connected(now)

    def _connect_failed(self, now: float, why: str) -> None:
        self.close(NetworkError(f"broker {self.node_id}: {why}"), now)

    def _connected(self, now: float) -> None:
        self.state = ConnectionState.NEGOTIATING
        self._send_api_versions(_OUR_VERSIONS[ApiKey.API_VERSIONS][1], now)

    def _send_api_versions(self, version: int, now: float) -> None:
        body = m.ApiVersionsRequest(client_software_name=self.software[0],
                                    client_software_version=self.software[1]) if version >= 3 \
            else m.ApiVersionsRequest()
        req = ClientRequest(ApiKey.API_VERSIONS, body, Future(), version=version,
                            expect_response=True, deadline=self._setup_deadline, internal=True)
        req.future.set_running_or_notify_cancel()
        req.correlation_id = self._next_corr()
        req.sent_version = version
        req.written = True
        self._versions_request = req
        self._in_flight.append(req)
        self._write(encode_request(ApiKey.API_VERSIONS, version, req.correlation_id,
                                   self.client_id, body))
        self._flush(now)

    def _on_api_versions(self, req: ClientRequest, frame: bytes | bytearray, now: float) -> None:
        self._versions_request = None
        version = req.sent_version
        if version > 0 and len(frame) >= 6 and _I16.unpack_from(frame, 4)[0] == _UNSUPPORTED_VERSION:
            # KIP-511: the broker does not speak our ApiVersions version and answers with
            # a v0 body listing its own range: ask again at its highest, or at v0.
            resp = self._decode(ApiKey.API_VERSIONS, 0, frame)
            theirs = {k.api_key: k.max_version for k in resp.api_keys}
            retry = min(theirs.get(ApiKey.API_VERSIONS, 0), version - 1)
            self._send_api_versions(max(retry, 0), now)
            return
        resp = self._decode(ApiKey.API_VERSIONS, version, frame)
        if resp.error_code:
            exc = error_for_code(resp.error_code, f"broker {self.node_id} ({self.address}) refused "
                                                  f"ApiVersions v{version}")
            self.close(exc, now)
            return
        self.broker_versions = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
        versions = {}
        for key, (lo, hi) in self.broker_versions.items():
            mine = _OUR_VERSIONS.get(key)
            if mine is not None and max(lo, mine[0]) <= min(hi, mine[1]):
                versions[key] = (max(lo, mine[0]), min(hi, mine[1]))
        self.api_versions = versions
        self.state = ConnectionState.READY
        self.failures = 0
        self.last_error = None
        self._pump(now)

    # -- socket events -------------------------------------------------------------------

    def on_writable(self, now: float) -> None:
        if self.state is ConnectionState.CONNECTING:
            assert self.sock is not None
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._connect_failed(now, f"cannot connect to {self.address}: "
                                          f"{errno.errorcode.get(err, err)} ({_strerror(err)})")
                return
            self._connected(now)
            return
        self._flush(now)

    def _write(self, segs: list) -> None:
        for seg in segs:
            if isinstance(seg, FileRegion):
                seg = segments_to_bytes([seg])
            mv = memoryview(seg)
            if mv.ndim != 1 or mv.itemsize != 1:
                mv = mv.cast("B")
            if mv.nbytes:
                self._wbuf.append(mv)
                self._queued_total += mv.nbytes

    def _flush(self, now: float) -> None:
        wbuf = self._wbuf
        sock = self.sock
        while wbuf and sock is not None:
            iov = list(wbuf) if len(wbuf) <= _IOV_MAX else [wbuf[i] for i in range(_IOV_MAX)]
            try:
                n = sock.sendmsg(iov)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.close(NetworkError(f"send to broker {self.node_id} ({self.address}) failed: "
                                        f"{exc.strerror or exc}"), now)
                return
            self._written_total += n
            self.last_activity = now
            while n:
                head = wbuf[0]
                if n >= head.nbytes:
                    n -= head.nbytes
                    wbuf.popleft()
                else:
                    wbuf[0] = head[n:]
                    n = 0
        done = self._unanswered_writes
        while done and done[0][0] <= self._written_total:
            _, req = done.popleft()
            try:
                req.future.set_result(None)
            except InvalidStateError:
                pass
        self._update_interest()

    def _update_interest(self) -> None:
        if self.sock is None:
            return
        want = _EVENT_READ | _EVENT_WRITE if (self._wbuf or self.state is ConnectionState.CONNECTING) \
            else _EVENT_READ
        if want != self._events:
            self._selector.modify(self.sock, want, self)
            self._events = want

    def on_readable(self, now: float) -> None:
        for _ in range(_READS_PER_EVENT):
            if self.sock is None:
                return
            if self._frame is not None:
                frame = self._frame
                if self._frame_pos == len(frame):           # grow: more bytes are coming
                    grown = frame_buffer(len(frame) + min(len(frame), self._frame_size - len(frame)))
                    grown[:self._frame_pos] = frame
                    self._frame = frame = grown
                with memoryview(frame) as mv, mv[self._frame_pos:] as dst:
                    n = self._recv_into(dst, now)
                if n is None:
                    return
                self._frame_pos += n
                if self._frame_pos == self._frame_size:
                    self._frame = None
                    self._deliver(frame, now)
                continue
            if self._rstart == self._rend:
                self._rstart = self._rend = 0
            elif self._rend == len(self._rbuf):
                left = self._rend - self._rstart
                self._rbuf[:left] = self._rbuf[self._rstart:self._rend]
                self._rstart, self._rend = 0, left
            room = len(self._rbuf) - self._rend
            with memoryview(self._rbuf) as mv, mv[self._rend:] as dst:
                n = self._recv_into(dst, now)
            if n is None:
                return
            self._rend += n
            self._parse(now)
            if n < room:
                return                                      # drained the socket

    def _recv_into(self, dst: memoryview, now: float) -> int | None:
        """Bytes read into ``dst``; None when nothing more can be read now (or the
        connection was closed)."""
        assert self.sock is not None
        try:
            n = self.sock.recv_into(dst)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            self.close(NetworkError(f"receive from broker {self.node_id} ({self.address}) failed: "
                                    f"{exc.strerror or exc}"), now)
            return None
        if n == 0:
            where = " in the middle of a response" if (self._frame is not None or self._rend > self._rstart) else ""
            self.close(NetworkError(f"broker {self.node_id} ({self.address}) closed the "
                                    f"connection{where}"), now)
            return None
        self.last_activity = now
        return n

    def _parse(self, now: float) -> None:
        buf = self._rbuf
        while self._rend - self._rstart >= 4 and self.sock is not None:
            (size,) = _I32.unpack_from(buf, self._rstart)
            if not 4 <= size <= self.max_response_size:
                self._protocol_error(f"sent a response frame of {size} bytes (accepted: 4 to "
                                     f"{self.max_response_size}; raise max_response_size if "
                                     "larger responses are legitimate)", now)
                return
            start = self._rstart + 4
            have = self._rend - start
            if have >= size:
                frame = bytes(buf[start:start + size])
                self._rstart = start + size
                self._deliver(frame, now)
                continue
            if size + 4 > len(buf):
                # Too big for the read buffer: a buffer of its own, grown as bytes arrive.
                # Not zero-filled (bytearray(n) zeroed each MiB with the GIL held, for
                # bytes recv_into overwrites at once).
                big = frame_buffer(max(min(size, _LARGE_FRAME_START), have))
                big[:have] = memoryview(buf)[start:self._rend]
                self._frame, self._frame_size, self._frame_pos = big, size, have
                self._rstart = self._rend = 0
            return

    def _protocol_error(self, what: str, now: float) -> None:
        self.close(NetworkError(f"broker {self.node_id} ({self.address}) {what}; connection closed"), now)

    def _deliver(self, frame: bytes | bytearray, now: float) -> None:
        corr = peek_correlation_id(frame)
        if not self._in_flight:
            self._protocol_error(f"sent a response (correlation id {corr}) with no request in flight", now)
            return
        req = self._in_flight[0]
        if corr != req.correlation_id:
            self._protocol_error(f"answered correlation id {corr} where {req.correlation_id} "
                                 f"({api_name(req.api_key)}) was expected", now)
            return
        self._in_flight.popleft()
        self.responses_received += 1
        if req is self._versions_request:
            try:
                self._on_api_versions(req, frame, now)
            except PylogError as exc:
                self._protocol_error(f"sent a malformed ApiVersions response: {exc}", now)
            return
        try:
            body = self._decode(req.api_key, req.sent_version, frame)
        except PylogError as exc:
            # The stream itself may be fine, but a broker that sends bodies we cannot read
            # is not one to keep talking to: fail everything and reconnect.
            self._in_flight.appendleft(req)
            self._protocol_error(f"sent a malformed {api_name(req.api_key)} v{req.sent_version} "
                                 f"response: {exc}", now)
            return
        throttle = getattr(body, "throttle_time_ms", 0)
        if throttle and throttle > 0 and req.sent_version >= _CLIENT_THROTTLES_FROM.get(req.api_key, 0):
            until = now + throttle / 1000
            if until > self.throttle_until:
                self.throttle_until = until
            self.throttles += 1
        try:
            req.future.set_result(body)
        except InvalidStateError:
            pass
        if self._queue:
            self._pump(now)

    def _decode(self, api_key: int, version: int, frame: Any) -> Any:
        # A bytes frame decodes zero-copy as it is; a large frame's bytearray belongs to
        # this response alone, so it is decoded in place too (copy=False).
        pos = 4
        if response_header_version(api_key, version) >= 1:
            count, pos = read_uvarint(frame, pos)
            if count:
                pos = skip_tags(frame, pos, count)
        return decode_response_body(api_key, version, frame, pos, copy=False)

    # -- timers --------------------------------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        """Fail requests past their deadline; close the connection if one of them was on
        the wire or the set-up took too long."""
        if self.state in (ConnectionState.CONNECTING, ConnectionState.NEGOTIATING) \
                and now >= self._setup_deadline:
            self.close(NetworkError(f"broker {self.node_id} ({self.address}): connection set-up "
                                    f"(connect and ApiVersions) took more than "
                                    f"{self.setup_timeout * 1000:.0f} ms"), now)
            return
        if self.throttle_until and now >= self.throttle_until and self.state is ConnectionState.READY:
            self._pump(now)                 # the throttle is over: write what waited
        if now < self._earliest_deadline:
            return
        earliest = float("inf")
        for req in self._in_flight:
            if req.deadline <= now and not req.internal:
                # Kafka closes the connection: the late answer would be out of step.
                _fail(req, RequestTimedOutError(
                    f"{api_name(req.api_key)} to broker {self.node_id} ({self.address}) got no "
                    f"response in time; the connection is closed"))
                self._in_flight.remove(req)
                self.close(NetworkError(f"broker {self.node_id} ({self.address}): connection "
                                        f"closed after a request timed out"), now)
                return
            earliest = min(earliest, req.deadline)
        setting_up = self.state is not ConnectionState.READY
        expired = [r for r in self._queue if r.deadline <= now]
        if expired:
            for req in expired:
                self._queue.remove(req)
                _fail(req, RequestTimedOutError(
                    f"{api_name(req.api_key)} to broker {self.node_id} ({self.address}) was not "
                    f"sent in time: the connection is {self.state.value}"))
            if setting_up and self.state is not ConnectionState.DISCONNECTED:
                self.close(NetworkError(f"broker {self.node_id} ({self.address}): connection "
                                        "closed after a request timed out during set-up"), now)
                return
        for req in self._queue:
            earliest = min(earliest, req.deadline)
        self._earliest_deadline = earliest

    # -- closing -------------------------------------------------------------------------

    def close(self, error: PylogError, now: float | None = None, *, final: bool = False) -> None:
        """Close the socket and fail every request in flight and queued with ``error``.
        Afterwards the state is DISCONNECTED (reconnect after the backoff) or, with
        ``final``, CLOSED."""
        now = time.monotonic() if now is None else now
        if self.sock is not None:
            try:
                self._selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        was = self.state
        self.state = ConnectionState.CLOSED if final else ConnectionState.DISCONNECTED
        if was is not ConnectionState.READY:
            self.failures += 1
        backoff = min(self.reconnect_backoff * 2 ** min(max(self.failures - 1, 0), 30),
                      self.reconnect_backoff_max)
        self.next_connect_at = now + backoff * self._rng.uniform(0.8, 1.2)
        self.last_error = error
        self.api_versions = {}
        self._versions_request = None
        in_flight, queue, unanswered = self._in_flight, self._queue, self._unanswered_writes
        self._in_flight, self._queue = collections.deque(), collections.deque()
        self._unanswered_writes = collections.deque()
        self._wbuf.clear()
        self._written_total = self._queued_total = 0
        self._rstart = self._rend = 0
        self._frame = None
        self._events = 0
        self._earliest_deadline = float("inf")
        for req in in_flight:
            if not req.internal:
                _fail(req, error)
        for _, req in unanswered:
            _fail(req, error)
        for req in queue:
            _fail(req, error)
        if self.on_close is not None:
            self.on_close(self, error)


def _strerror(err: int) -> str:
    try:
        return os.strerror(err)
    except ValueError:
        return str(err)


def make_request(api_key: int, body: Any, *, version: int | None = None,
                 timeout_ms: float, expect_response: bool = True,
                 callback: Callable[[Future], None] | None = None) -> ClientRequest:
    """A :class:`ClientRequest` with a new future and a deadline ``timeout_ms`` from now."""
    fut: Future = Future()
    if callback is not None:
        fut.add_done_callback(callback)
    return ClientRequest(api_key, body, fut, version=version, expect_response=expect_response,
                         deadline=time.monotonic() + timeout_ms / 1000)
