"""A Kafka proxy for one broker that rewrites answers: the client's fault tests put it
between ``pylog.connect`` and a ``pylog serve``.

Every request and answer is decoded with pylog's codec.  Metadata and FindCoordinator
answers are pointed at the proxy, so the client never goes around it.  ``rewrite(api_key,
api_version, request, response)`` (called on the proxy's thread of that connection) may
return a changed response, :data:`HOLD` (never answer: that connection's later answers
are held too, as a hung broker's are), or None (unchanged).  ``requests`` counts the
requests seen per API key.  Only 127.0.0.1 is bound or dialled; :meth:`RewritingProxy.stop`
closes every socket, which ends the proxy's threads.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import Counter
from typing import Any, Callable

from pylog.protocol import decode_request, decode_response, encode_response, segments_to_bytes
from pylog.protocol.apis import ApiKey
from tests.client.kafka.fakes import _recv_exact

__all__ = ["RewritingProxy", "HOLD"]

#: ``rewrite``'s answer for "never answer this" (nor anything after it on that connection).
HOLD = object()


def _read_frame(sock: socket.socket) -> bytes | None:
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    return _recv_exact(sock, struct.unpack(">i", head)[0])


class RewritingProxy:
    def __init__(self, upstream_port: int, rewrite: Callable[[int, int, Any, Any], Any] | None = None) -> None:
        self.upstream_port = upstream_port
        self.rewrite = rewrite
        self.requests: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._start(self._accept)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def count(self, api_key: int) -> int:
        with self._lock:
            return self.requests[api_key]

    def _start(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, name="rewriting-proxy", daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                if self._stopped:   # accepted while stop() ran: its threads would outlive it
                    client.close()
                    upstream.close()
                    return
                self._socks += [client, upstream]
            asked: dict[int, tuple[int, int, Any]] = {}
            self._start(self._forward_requests, client, upstream, asked)
            self._start(self._forward_answers, client, upstream, asked)

    def _forward_requests(self, client: socket.socket, upstream: socket.socket, asked: dict) -> None:
        while (frame := _read_frame(client)) is not None:
            header, body = decode_request(frame)
            asked[header.correlation_id] = (header.api_key, header.api_version, body)
            with self._lock:
                self.requests[header.api_key] += 1
            try:
                upstream.sendall(struct.pack(">i", len(frame)) + frame)
            except OSError:
                break
        self._shut(client, upstream)

    def _forward_answers(self, client: socket.socket, upstream: socket.socket, asked: dict) -> None:
        held = False
        while (frame := _read_frame(upstream)) is not None:
            (corr,) = struct.unpack_from(">i", frame)
            api_key, version, request = asked.pop(corr)
            out = frame
            if api_key != ApiKey.API_VERSIONS:
                _, resp = decode_response(api_key, version, frame)
                self._point_at_proxy(api_key, resp)
                changed = self.rewrite(api_key, version, request, resp) if self.rewrite is not None else None
                if changed is HOLD:
                    held = True
                resp = changed if changed is not None and changed is not HOLD else resp
                out = segments_to_bytes(encode_response(api_key, version, corr, resp))[4:]
            if held:
                continue
            try:
                client.sendall(struct.pack(">i", len(out)) + out)
            except OSError:
                break
        self._shut(client, upstream)

    def _point_at_proxy(self, api_key: int, resp: Any) -> None:
        if api_key == ApiKey.METADATA:
            for b in resp.brokers:
                b.host, b.port = "127.0.0.1", self.port
        elif api_key == ApiKey.FIND_COORDINATOR:
            for c in getattr(resp, "coordinators", None) or ():
                c.host, c.port = "127.0.0.1", self.port
            if getattr(resp, "host", None):
                resp.host, resp.port = "127.0.0.1", self.port

    @staticmethod
    def _shut(*socks: socket.socket) -> None:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)     # wakes the accepting thread
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            self._stopped = True
            socks = list(self._socks)
        self._shut(*socks)
        for t in self._threads:
            t.join(10)
        for s in socks:
            s.close()

    def __enter__(self) -> RewritingProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
