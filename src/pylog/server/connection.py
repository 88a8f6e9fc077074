"""One client connection: request frames in, response segments out.

Reading
    The socket is non-blocking and watched with ``loop.add_reader``.  Bytes are received
    (``recv_into``, no intermediate objects) into a fixed read buffer of
    ``READ_BUFFER_SIZE`` bytes; a frame's 4-byte size prefix is checked against
    ``socket.request.max.bytes`` before anything else is read, and the bytes it announces
    are *reserved* from the server's request memory pool (``queued.max.request.bytes``);
    if the pool is exhausted the connection stops reading until memory is released.
    A frame that fits the read buffer is copied out of it as ``bytes`` and handled.  A
    larger one (a Produce request of many records) is received straight into a frame
    buffer of its own, which the connection keeps and reuses for its next large frame
    once nothing refers to the last one any more: the records reach the log with one
    copy out of the kernel, and no page faults of freshly allocated memory or joining of
    received chunks (removing those cut the server's CPU per MB of pipelined 475 KB
    Produce requests by more than half).  Buffers are not zero-filled, so the memory a
    connection commits grows with the bytes it receives, never with an announced
    length.  Between requests a connection keeps its read buffer and one frame buffer
    (up to 16 MiB); the frame buffers kept by all connections together are capped at
    ``KEPT_FRAME_BUFFERS_MAX``.

Ordering (Kafka's muted channel)
    Requests of one connection are handled one at a time, in order, and a response is
    queued (or corked, see Writing) before the next request is handled, so responses leave
    in request order.  A
    request whose answer comes later (a long-polling Fetch, JoinGroup, SyncGroup) holds
    the connection until it completes; meanwhile bytes keep being read up to a small
    read-ahead, so a client that hangs up is noticed.

Writing
    A handler answers with a response body (a message object, encoded here), or with
    the whole response frame as ``bytes`` when it encodes its own (Produce).  A
    response is a list of segments (:mod:`pylog.protocol.segments`).  The frames of
    the small requests handled in one pass over what one read brought (a producer
    pipelining small Produce requests, one per partition, as librdkafka does) are
    corked and go out together at the end of the pass, with one ``sendmsg``, in request
    order: one system call and one wake-up of the client instead of one per request.
    While a read fills the read buffer, the pass reads again (``READS_PER_PASS`` reads
    at most), so a burst of pipelined requests is answered in a few sendmsg calls.  A
    large request (one not assembled in the read buffer) is answered at once: its own
    system call costs little beside its bytes, and its client waits for no other.  Runs of
    bytes-like segments go out with ``socket.sendmsg`` (one syscall, no joining), each
    :class:`~pylog.protocol.segments.FileRegion` with ``os.sendfile``: record bytes go
    from the segment file to the socket without entering Python.  Those calls are made
    under ``TCP_CORK`` (Linux), so a Fetch answer (its head, records, and the tagged
    fields after them) leaves as one TCP segment and wakes its client once, not three
    times.  With ``PYLOG_FETCH_COPY_LOOPBACK=1`` records go to a loopback peer
    (127.0.0.0/8, ::1) instead with the rest of the answer in one ``sendmsg``, from the
    segment's mapping (the region's ``view``), and the mapping's page table entries are
    dropped once they have gone (``MADV_DONTNEED``, a marker queued after them: the page
    cache keeps the pages, and the server's resident set does not grow by every segment
    it has served).  On this project's machines (Linux 6.18, a VM) loopback takes 1.6x
    the bytes per second that way (sendfile's splice path costs the sender more than one
    copy, and loopback copies every byte into the receiver anyway): a client that does
    little per record fetched 1.5x the records per second.  It is not the default: it
    costs 1.5x the server's CPU per MB, and librdkafka consumers, which on 2 cores are
    limited by their own CPU, read 2-5% fewer records per second beside it (#16).
    Only when the socket is full does the connection register a writer callback.
    A request answered later (a parked Fetch) is answered by what completes it, at once
    (:meth:`Connection.answer_now`): a Fetch woken by an append goes out before the
    Produce that made the append is answered.

Errors
    Anything a client sends can at worst close *this* connection, with one log line.

Thread safety: a connection is used only by the event loop's thread.
"""

from __future__ import annotations

import collections
import logging
import mmap
import os
import socket
import struct
import sys
import time
from typing import TYPE_CHECKING, Any

from pylog._protocol import frame_buffer
from pylog.errors import PylogError
from pylog.protocol.codec import RequestHeader, decode_request_body, decode_request_header, encode_response
from pylog.protocol.messages import Data
from pylog.protocol.segments import FileRegion

_HEAD = struct.Struct(">hhi")  # api_key, api_version, correlation_id


#: ``PYLOG_FETCH_COPY_LOOPBACK=1``: records go to loopback peers with sendmsg from the
#: segment's mapping instead of sendfile (see "Writing" in the module docstring; read at
#: import).
FETCH_COPY_ENV = "PYLOG_FETCH_COPY_LOOPBACK"
#: whether it is on: connections read it, and so does the fetch path (:mod:`pylog.server.fetch`),
#: which gives a region its view only then
COPY_TO_LOOPBACK = os.environ.get(FETCH_COPY_ENV, "") not in ("", "0")


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (a peer's address as the socket gives it) is this machine's
    loopback: 127.0.0.0/8, ::1, or an IPv4-mapped 127.x address."""
    return host.startswith("127.") or host == "::1" or host.startswith("::ffff:127.")


class _DropPages:
    """Queued after records sent from a mapping (``view``, the bytes at ``position`` of
    a shared file mapping from the file's byte 0): once reached, the whole pages of that
    range leave this process's page tables (``MADV_DONTNEED``).  A shared file mapping
    loses nothing by it: the pages stay in the page cache, dirty ones are written back
    as before, and a later read of the range faults them in again."""

    __slots__ = ("view", "position")

    def __init__(self, view: memoryview, position: int) -> None:
        self.view = view
        self.position = position

    def __len__(self) -> int:
        return 0

    def drop(self) -> None:
        mm = self.view.obj
        if _DONTNEED is None or not isinstance(mm, mmap.mmap) or mm.closed:
            return
        start = -(-self.position // _PAGE) * _PAGE
        end = (self.position + len(self.view)) // _PAGE * _PAGE
        if end > start:
            try:
                mm.madvise(_DONTNEED, start, end - start)
            except (OSError, ValueError):
                pass        # (a hint: the next read maps what it needs either way)


_PAGE = mmap.PAGESIZE
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)
_I32 = struct.Struct(">i")
_PRODUCE = 0

if TYPE_CHECKING:  # pragma: no cover
    from pylog.server.server import Server

__all__ = ["Connection", "NO_RESPONSE"]

_log = logging.getLogger("pylog.server")

#: A handler returns this when the request gets no response (Produce with acks=0).
NO_RESPONSE: Any = object()

#: Size of a connection's read buffer: frames up to this size (prefix included) are
#: assembled in it; it also bounds how far a connection reads ahead of the request
#: being handled (pipelined requests, or an EOF).
READ_BUFFER_SIZE = 64 * 1024
#: Reads one pass may make while each fills the read buffer, their answers corked
#: together: fewer sendmsg calls (and client wake-ups) for pipelined small requests, at
#: the cost of holding the first answers until the pass ends (a few hundred µs at most).
READS_PER_PASS = 4
#: Frame buffers up to this size are kept for the connection's next large frame ...
_KEEP_FRAME_BUFFER = 16 * 1024 * 1024
#: ... while all connections together keep at most this many bytes of them (beyond it
#: a large frame gets a buffer of its own, freed once handled).
KEPT_FRAME_BUFFERS_MAX = 256 * 1024 * 1024
#: iovec entries per sendmsg (Linux IOV_MAX is 1024).
_IOV_MAX = 512
#: Linux's TCP_CORK (None elsewhere): see Connection._flush.
_TCP_CORK = getattr(socket, "TCP_CORK", None)

_monotonic = time.monotonic
_getrefcount = sys.getrefcount


def _debug_enabled() -> bool:
    return _log.isEnabledFor(logging.DEBUG)

class Connection:
    """A client connection served by :class:`~pylog.server.server.Server`.

    Attributes
    ----------
    peer : str
        ``host:port`` of the client, as log lines show it.
    client_host : str
        The client's address (DescribeGroups reports it per member).
    last_active : float
        ``time.monotonic()`` of the last byte read or written.
    """

    __slots__ = ("server", "loop", "sock", "fd", "peer", "client_host", "rbuf", "rview",
                 "rstart", "rend", "need", "reserved", "out", "inflight", "reading", "writing",
                 "closed", "last_active", "requests", "fbuf", "large", "fgot", "ready", "cork",
                 "tcp_corked", "copy_records", "__weakref__")

    def __init__(self, server: Server, sock: socket.socket, addr: Any) -> None:
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.fd = sock.fileno()
        if isinstance(addr, tuple) and len(addr) >= 2:
            self.client_host = str(addr[0])
            self.peer = f"{addr[0]}:{addr[1]}"
        else:
            self.client_host = str(addr)
            self.peer = str(addr)
        # Received bytes not yet handled are rbuf[rstart:rend] (rview is a view of rbuf).
        self.rbuf = frame_buffer(READ_BUFFER_SIZE)
        self.rview = memoryview(self.rbuf)
        self.rstart = 0
        self.rend = 0
        self.need = 0            # size of the frame being read (0: between frames)
        self.reserved = 0        # bytes reserved from the server's request pool
        self.out: collections.deque = collections.deque()
        self.inflight: Any = None  # (header, future) of a request answered later
        self.reading = False
        self.writing = False
        self.closed = False
        self.tcp_corked = False  # TCP_CORK on until the queued output has gone (_flush)
        #: Records of mapped segments go out with sendmsg from the mapping, not sendfile
        #: (see "Writing" in the module docstring): to a loopback peer, if asked for.
        self.copy_records = COPY_TO_LOOPBACK and _is_loopback(self.client_host)
        self.last_active = _monotonic()
        self.requests = 0
        self.fbuf: bytearray | None = None   # frame buffer kept for reuse (see _start_large)
        self.large: bytearray | None = None  # the buffer of the large frame being received
        self.fgot = 0                        # bytes of that frame received so far
        self.ready: memoryview | None = None  # a complete large frame not yet handled
        # Response frames held while one pass of _process handles the frames of one read
        # (None outside a pass): they leave together (see "Writing" in the module docstring).
        self.cork: list | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._resume_reading()

    def close(self, why: str | None = None, *, level: int = logging.INFO) -> None:
        """Close the connection (idempotent); ``why`` becomes the one log line."""
        if self.closed:
            return
        self.closed = True
        if why:
            _log.log(level, "connection %s closed: %s", self.peer, why)
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False
        if self.writing:
            self.loop.remove_writer(self.fd)
            self.writing = False
        inflight, self.inflight = self.inflight, None
        if inflight is not None and not inflight[1].done():
            inflight[1].cancel()
        cork, self.cork = self.cork, None
        if cork and not self.out:
            # Answers to the requests before the one that closed it: what the socket
            # takes now, as if each had been sent when it was handled.
            try:
                self.sock.sendmsg(cork)
            except OSError:
                pass
        self.out.clear()
        self.rstart = self.rend = 0
        self._drop_frame_buffer()
        self.large = self.ready = None
        if self.reserved:
            self.server.release_request_memory(self.reserved)
            self.reserved = 0
        try:
            self.sock.close()
        except OSError:
            pass
        self.server.connection_closed(self)

    # -- reading -------------------------------------------------------------------

    def _resume_reading(self) -> None:
        if not self.reading and not self.closed:
            self.loop.add_reader(self.fd, self._on_readable)
            self.reading = True

    def _pause_reading(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False

    def _on_readable(self) -> None:
        if self.large is not None:
            self._read_large()
            return
        # One corked pass over up to READS_PER_PASS reads, while each fills the buffer
        # (a client pipelining small requests has sent more): their answers leave with
        # one sendmsg (see "Writing" in the module docstring).
        self.cork = []
        try:
            for _ in range(READS_PER_PASS):
                if not self._read_small() or self.closed or not self.reading or self.large is not None \
                        or self.inflight is not None or self.out or self.ready is not None:
                    break
        finally:
            cork, self.cork = self.cork, None
            if cork and not self.closed:
                self.send_segments(cork)

    def _read_small(self) -> bool:
        """One read into the read buffer, and the frames it completes handled; True when
        the read filled the room it had (more is probably waiting)."""
        rend = self.rend
        if rend == READ_BUFFER_SIZE:
            if not self._compact():
                self._update_reading()
                return False
            rend = self.rend
        room = READ_BUFFER_SIZE - rend
        try:
            n = self.sock.recv_into(self.rview[rend:])
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self.close(f"read failed: {exc.strerror or exc}")
            return False
        if not n:
            self._eof(rend - self.rstart)
            return False
        self.last_active = _monotonic()
        self.rend = rend + n
        self._process()
        return n == room

    def _compact(self) -> bool:
        """Move the unhandled bytes to the front of the read buffer; False if there was
        no room to make (they fill it)."""
        start = self.rstart
        if start == 0:
            return False
        end = self.rend
        if end > start:
            rview = self.rview
            rview[:end - start] = rview[start:end]
        self.rstart = 0
        self.rend = end - start
        return True

    def _eof(self, buffered: int) -> None:
        if buffered:
            self.close(f"client closed the connection in the middle of a request "
                       f"({buffered} bytes of it received)")
        else:
            self.close("client closed the connection", level=logging.DEBUG)

    def _start_large(self) -> None:
        """Start receiving a frame too large for the read buffer (its prefix is read and
        its bytes reserved) into a frame buffer: the one kept from the last large frame
        when it is large enough and nothing refers to it any more (the records of a
        request decoded from it are views of it until the request is done, and a
        request answered later keeps them), else a new one."""
        need = self.need
        fbuf = self.fbuf
        # Referring to fbuf when it is free: self.fbuf, the local, getrefcount's argument.
        if fbuf is None or len(fbuf) < need or _getrefcount(fbuf) != 3:
            fbuf = None
            self._drop_frame_buffer()
            size = need
            if need <= _KEEP_FRAME_BUFFER:
                # Room to grow, so slowly growing requests do not each need a new buffer
                # (what is never written is never committed).
                size = min(max(1 << (need - 1).bit_length(), 2 * READ_BUFFER_SIZE),
                           _KEEP_FRAME_BUFFER)
            fbuf = frame_buffer(size)
            server = self.server
            if size <= _KEEP_FRAME_BUFFER and server.kept_frame_bytes + size <= KEPT_FRAME_BUFFERS_MAX:
                self.fbuf = fbuf
                server.kept_frame_bytes += size
        # The start of the frame is already in the read buffer.
        start = self.rstart + 4
        got = min(self.rend - start, need)
        if got:
            with memoryview(fbuf) as fv:
                fv[:got] = self.rview[start:start + got]
        start += got
        if start == self.rend:
            self.rstart = self.rend = 0
        else:
            self.rstart = start
        self.large = fbuf
        self.fgot = got
        if got == need:
            self._large_done()
        else:
            # The rest has usually arrived with the start: take it now rather than after
            # another turn of the event loop (at worst one recv that finds nothing).
            self._read_large(False)

    def _drop_frame_buffer(self) -> None:
        """Stop keeping the frame buffer (a request may still use it; it is freed with
        the last reference)."""
        fbuf, self.fbuf = self.fbuf, None
        if fbuf is not None:
            self.server.kept_frame_bytes -= len(fbuf)

    def _read_large(self, process: bool = True) -> None:
        fbuf = self.large
        got = self.fgot
        try:
            with memoryview(fbuf) as fv:
                n = self.sock.recv_into(fv[got:self.need])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(f"read failed: {exc.strerror or exc}")
            return
        if not n:
            self._eof(4 + got)
            return
        self.last_active = _monotonic()
        got += n
        self.fgot = got
        if got == self.need:
            self._large_done()
            if process:
                self._process()

    def _large_done(self) -> None:
        fbuf, self.large = self.large, None
        need, self.need = self.need, 0
        self.fgot = 0
        whole = memoryview(fbuf)
        if len(fbuf) == need:
            self.ready = whole
        else:
            self.ready = whole[:need]
            whole.release()   # the slice holds the buffer; this view is not needed
        if self.reserved:
            reserved, self.reserved = self.reserved, 0
            self.server.release_request_memory(reserved)

    def _check_prefix(self) -> bool:
        """Read and check the size prefix of the frame at the head of the read buffer,
        and reserve its bytes from the request pool.  False if the connection was
        closed."""
        (size,) = _I32.unpack_from(self.rbuf, self.rstart)
        limit = self.server.config.socket_request_max_bytes
        if size < 0 or size > limit:
            if size < 0:
                why = f"malformed frame: negative size prefix {size}"
            else:
                why = f"request of {size} bytes is larger than socket.request.max.bytes={limit}"
            self.close(why, level=logging.WARNING)
            return False
        self.need = size
        if self.server.reserve_request_memory(size + 4, self):
            self.reserved = size + 4
        return True

    def memory_available(self) -> bool:
        """Retry a reservation that failed; called by the server when request memory was
        released.  Returns True when the connection no longer waits for memory."""
        if self.closed or self.need == 0 or self.reserved:
            return True
        if not self.server.reserve_request_memory(self.need + 4, self):
            return False
        self.reserved = self.need + 4
        # Carry on from the loop, not from inside the connection that released memory.
        self.loop.call_soon(self._process)
        return True

    def _process(self) -> None:
        """Handle every complete frame received, in order, while the connection is free
        (no request in flight, no response waiting for the socket).  The response frames
        of the pass are corked and sent together when it ends."""
        if self.cork is not None:       # a nested pass (a request answered at once)
            self._process_frames()
            return
        self.cork = []
        try:
            self._process_frames()
        finally:
            cork, self.cork = self.cork, None
            if cork and not self.closed:
                self.send_segments(cork)

    def _process_frames(self) -> None:
        while not self.closed:
            if self.ready is not None:
                # A large frame, waiting for the connection to be free.
                if self.inflight is not None or self.out:
                    break
                frame, self.ready = self.ready, None
                # Not corked: a large request's answer (and those corked before it) go
                # out now, not after the next large frames are received and handled.
                cork, self.cork = self.cork, None
                if cork:
                    self.send_segments(cork)
                    cork.clear()
                self._dispatch(frame)
                self.cork = cork
                frame = None   # so its buffer can be reused for the next large frame
                continue
            if self.large is not None:
                break
            need = self.need
            start = self.rstart
            if need == 0:
                if self.rend - start < 4:
                    break
                if not self._check_prefix():
                    return
                need = self.need
            if need + 4 > READ_BUFFER_SIZE:
                if not self.reserved:
                    break   # waits for request memory
                self._start_large()
                continue
            if self.rend - start < need + 4:
                if start + need + 4 > READ_BUFFER_SIZE:
                    self._compact()
                break
            if self.inflight is not None or self.out:
                break
            frame = bytes(self.rview[start + 4:start + 4 + need])
            start += 4 + need
            if start == self.rend:
                self.rstart = self.rend = 0
            else:
                self.rstart = start
            self.need = 0
            if self.reserved:
                reserved, self.reserved = self.reserved, 0
                self.server.release_request_memory(reserved)
            self._dispatch(frame)
        self._update_reading()

    def _update_reading(self) -> None:
        if self.closed:
            return
        if self.large is not None:
            self._resume_reading()
        elif self.need and not self.reserved:
            self._pause_reading()    # until request memory is available
        elif self.rend - self.rstart >= READ_BUFFER_SIZE:
            self._pause_reading()    # read ahead as far as the buffer goes
        else:
            self._resume_reading()

    # -- requests ------------------------------------------------------------------

    def _dispatch(self, frame: bytes | memoryview) -> None:
        server = self.server
        self.requests += 1
        try:
            header, pos = decode_request_header(frame)
        except PylogError as exc:
            header = getattr(exc, "header", None)
            if header is None and len(frame) >= 8:
                # The header did not decode past the correlation id (e.g. a version far
                # above ours read as flexible, with no tagged-field section): the first 8
                # bytes still say which API and version was asked for, and that is all an
                # UNSUPPORTED_VERSION answer needs.
                key, ver, corr = _HEAD.unpack_from(frame, 0)
                header = RequestHeader(key, ver, corr, None, 1)
            if header is not None:
                entry = server.handlers.get(header.api_key)
                if entry is None or not entry[0] <= header.api_version <= entry[1]:
                    # A request we do not serve is answered with UNSUPPORTED_VERSION
                    # whatever its header holds past the correlation id (KIP-511 for
                    # ApiVersions: the body is not read either).
                    server.answer_unsupported(self, header, frame, len(frame))
                    return
            self.close(f"malformed request header: {exc}", level=logging.WARNING)
            return
        api_key = header.api_key
        version = header.api_version
        entry = server.handlers.get(api_key)
        if entry is None or not entry[0] <= version <= entry[1]:
            server.answer_unsupported(self, header, frame, pos)
            return
        try:
            # Bytes after the body are ignored, as Kafka's broker ignores them (librdkafka
            # 2.x sends three after an all-topics Metadata v12 request).  copy=False: a
            # large frame is a view of a frame buffer, reused only once nothing refers
            # to it (see _start_large).
            body = decode_request_body(api_key, version, frame, pos, copy=False, allow_trailing=True)
        except PylogError as exc:
            self.close(f"malformed {entry[3]} v{version} request (correlation id "
                       f"{header.correlation_id}): {exc}", level=logging.WARNING)
            return
        if _debug_enabled():
            _log.debug("request %s v%d correlation_id=%d client_id=%s peer=%s", entry[3], version,
                       header.correlation_id, header.client_id, self.peer)
        try:
            result = entry[2](self, header, body)
        except Exception as exc:  # noqa: BLE001 - a handler bug must not kill the server
            _log.exception("%s v%d from %s (correlation id %d) failed: %r", entry[3], version,
                           self.peer, header.correlation_id, exc)
            result = self._failed(header, body)
        if isinstance(result, Data):     # a response body: the usual case
            self.send_response(header, result)
            return
        if type(result) is bytes:        # a whole response frame, already encoded
            self.send_frame(result)
            return
        if result is NO_RESPONSE:
            return
        if hasattr(result, "add_done_callback"):
            self.inflight = (header, result, body)
            result.add_done_callback(self._on_inflight_done)
            return
        self.send_response(header, result)

    def _failed(self, header: Any, body: Any) -> Any:
        """The answer to a request whose handler failed: UNKNOWN_SERVER_ERROR for each
        of its topics and partitions (as Kafka answers), or, for a Produce with acks=0,
        which gets no answer, closing the connection, so the client notices (Kafka's way
        too)."""
        if header.api_key == _PRODUCE and getattr(body, "acks", None) == 0:
            self.close("a produce request with acks=0 failed", level=logging.WARNING)
            return NO_RESPONSE
        return self.server.error_response(header.api_key, header.api_version, -1, body)

    def answer_now(self, future: Any) -> None:
        """Send the answer to the request in flight now that ``future``, its answer,
        is done: called by what completed it (a produce that woke a parked Fetch sends
        the fetch's answer before its own, not one turn of the loop later, after it).
        The frames read meanwhile are handled on the loop's next turn, not inside the
        caller.  Nothing happens if ``future`` is not this connection's request in
        flight (the future's done callback answers it then)."""
        inflight = self.inflight
        if self.closed or inflight is None or inflight[1] is not future or not future.done():
            return
        self._on_inflight_done(future, False)
        if not self.closed:
            if self.rend > self.rstart or self.ready is not None:
                self.loop.call_soon(self._process)
            else:
                self._update_reading()

    def _on_inflight_done(self, future: Any, process: bool = True) -> None:
        inflight = self.inflight
        if self.closed or inflight is None or inflight[1] is not future:
            return
        self.inflight = None
        header, _future, request = inflight
        inflight = None
        if future.cancelled():
            self.close("request cancelled")
            return
        exc = future.exception()
        if exc is not None:
            _log.error("request %d (api %d v%d) from %s failed: %r", header.correlation_id,
                       header.api_key, header.api_version, self.peer, exc, exc_info=exc)
            body = self._failed(header, request)
        else:
            body = future.result()
        # The request's records may be views of the frame buffer: let it go before the
        # next frame is read, so the buffer can be reused.
        request = None
        if body is not NO_RESPONSE:
            self.send_response(header, body)
        if process and not self.closed:
            self._process()

    def send_response(self, header: Any, body: Any) -> None:
        if type(body) is bytes:          # a whole response frame, already encoded
            self.send_frame(body)
            return
        try:
            segs = encode_response(header.api_key, header.api_version, header.correlation_id, body)
        except Exception as exc:  # noqa: BLE001 - a handler bug: answer nothing, close
            _log.exception("cannot encode the response to api %d v%d for %s: %r",
                           header.api_key, header.api_version, self.peer, exc)
            self.close("response encoding failed", level=logging.ERROR)
            return
        if _debug_enabled():
            _log.debug("response api_key=%d v%d correlation_id=%d peer=%s", header.api_key,
                       header.api_version, header.correlation_id, self.peer)
        self.send_segments(segs)

    # -- writing -------------------------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        """Send one encoded frame: corked during a pass of :meth:`_process` (sent with
        the pass's other responses, in order), else straight to the socket when nothing
        is queued (a small response usually goes whole with this one ``send``), else
        queued."""
        if self.closed:
            return
        cork = self.cork
        if cork is not None and not self.out and not self.writing:
            cork.append(frame)
            return
        if self.out or self.writing:
            self.send_segments([frame])
            return
        try:
            sent = self.sock.send(frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.close(f"write failed: {exc.strerror or exc}")
            return
        if sent:
            self.last_active = _monotonic()
        if sent < len(frame):
            self.send_segments([memoryview(frame)[sent:]])

    def send_segments(self, segs: list) -> None:
        if self.closed:
            return
        cork = self.cork
        if cork and segs is not cork:
            # Responses corked so far go first.
            self.out.extend(cork)
            cork.clear()
        if self.copy_records:
            # Each region's view in its place, the markers after the whole answer: the
            # answer goes in one sendmsg (a marker ends a run of bytes-like segments).
            out = self.out
            drops = []
            for s in segs:
                if type(s) is FileRegion and s.view is not None:
                    out.append(s.view)
                    drops.append(_DropPages(s.view, s.position))
                else:
                    out.append(s)
            out.extend(drops)
        else:
            self.out.extend(segs)
        if not self.writing:
            self._flush()

    def _on_writable(self) -> None:
        self._flush()
        if not self.closed and not self.out:
            self._process()

    def _flush(self) -> None:
        out = self.out
        if not self.tcp_corked and len(out) > 1 and _TCP_CORK is not None \
                and any(type(s) is FileRegion for s in out):
            # Several system calls (sendmsg, sendfile, sendmsg for a Fetch answer): corked,
            # they leave as one TCP segment, not one per call, so the client wakes once
            # for the frame, not once per piece of it.  The cork stays on while the rest
            # waits for room in the socket's buffer (full segments still leave; only a
            # partial one waits for the bytes after it) and comes off when the queue has
            # gone: two system calls per answer, not two per wake-up (a 10 MB answer
            # through Kafka's 100 KB send buffer takes ~30 wake-ups).
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)
                self.tcp_corked = True
            except OSError:
                pass
        self._flush_segments()
        if self.tcp_corked and not self.out and not self.closed:
            self.tcp_corked = False
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 0)
            except OSError:
                pass

    def _flush_segments(self) -> None:
        out = self.out
        sock = self.sock
        fd = self.fd
        wrote = False
        while out:
            seg = out[0]
            if type(seg) is _DropPages:
                out.popleft()
                seg.drop()
                continue
            if type(seg) is FileRegion:
                try:
                    sent = os.sendfile(fd, seg.fileno(), seg.position, seg.length)
                except (BlockingIOError, InterruptedError):
                    break
                except (OSError, ValueError) as exc:
                    self.close(f"write failed: {getattr(exc, 'strerror', None) or exc}")
                    return
                if sent == 0:
                    # The file ended before the region: the frame cannot be completed.
                    self.close(f"sendfile: {seg!r} runs past the end of its file", level=logging.ERROR)
                    return
                wrote = True
                if sent == seg.length:
                    out.popleft()
                    continue
                out[0] = FileRegion(seg.file, seg.position + sent, seg.length - sent)
                break
            batch = []
            total = 0
            for s in out:
                if type(s) is FileRegion or type(s) is _DropPages or len(batch) == _IOV_MAX:
                    break
                batch.append(s)
                total += len(s)
            try:
                sent = sock.sendmsg(batch)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.close(f"write failed: {exc.strerror or exc}")
                return
            wrote = True
            if sent == total:
                for _ in range(len(batch)):
                    out.popleft()
                continue
            while sent:
                s = out[0]
                n = len(s)
                if sent >= n:
                    out.popleft()
                    sent -= n
                else:
                    out[0] = memoryview(s)[sent:]
                    sent = 0
            break
        if wrote:
            self.last_active = _monotonic()
        if out:
            if not self.writing:
                self.loop.add_writer(fd, self._on_writable)
                self.writing = True
        elif self.writing:
            self.loop.remove_writer(fd)
            self.writing = False

    def __repr__(self) -> str:
        return f"<Connection {self.peer}{' closed' if self.closed else ''}>"
