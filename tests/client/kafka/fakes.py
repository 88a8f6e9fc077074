"""A fake Kafka broker for the network-layer tests: a plain socket server thread.

It answers ApiVersions (advertising ``versions``, by default everything pylog speaks)
and, in mode ``"ok"``, Metadata (itself as broker 0, one partition per requested topic)
and FindCoordinator (itself).  Other modes misbehave on every request but ApiVersions:

- ``"hang"``         never answers;
- ``"hang_all"``     never answers, not even ApiVersions;
- ``"garbage"``      answers with the right correlation id and a body that is not one;
- ``"noise"``        answers with text (an HTTP error page): its first 4 bytes read as a
                     frame size of about 1.2 GB;
- ``"wrong_corr"``   answers with another correlation id;
- ``"close_mid"``    sends half a frame and closes the connection;
- ``"oversize"``     announces a frame of ``2**30`` bytes and sends a few.

``topic_errors`` maps a topic to the error codes its next Metadata answers carry, one
per answer (e.g. ``[5, 5]``: LEADER_NOT_AVAILABLE twice, then a leader).  ``mode`` may
be changed while it runs; ``requests`` records ``(api_key, api_version)``
of every request received, ``closed_connections`` counts the connections the client
closed.
"""

from __future__ import annotations

import socket
import struct
import threading

from pylog.protocol import api_versions_response, decode_request, encode_response, messages as m, \
    segments_to_bytes, supported_versions
from pylog.protocol.apis import ApiKey


def _recv_exact(s: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class FakeBroker:
    def __init__(self, mode: str = "ok", versions: dict[int, tuple[int, int]] | None = None,
                 port: int = 0) -> None:
        self.mode = mode
        self.versions = supported_versions() if versions is None else versions
        self.requests: list[tuple[int, int]] = []
        self.closed_connections = 0
        self.accepted = 0
        self.topic_errors: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._accepter = threading.Thread(target=self._accept, name="fake-broker", daemon=True)
        self._accepter.start()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def api_requests(self, api_key: int) -> list[int]:
        """Versions of the requests received for ``api_key``."""
        with self._lock:
            return [v for k, v in self.requests if k == api_key]

    def stop(self) -> None:
        self._stopping = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._accepter.join(10)
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(10)

    def __enter__(self) -> FakeBroker:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                head = _recv_exact(conn, 4)
                if head is None:
                    break
                frame = _recv_exact(conn, struct.unpack(">i", head)[0])
                if frame is None:
                    break
                header, body = decode_request(frame)
                with self._lock:
                    self.requests.append((header.api_key, header.api_version))
                mode = self.mode            # once per request: the test may change it
                out = self._answer(header, body, mode)
                if out:
                    try:
                        conn.sendall(out)
                    except OSError:         # the client closed it (it should, for bad answers)
                        break
                if mode == "close_mid" and header.api_key != ApiKey.API_VERSIONS:
                    # FIN after half a frame; read what else comes so closing sends no RST.
                    conn.shutdown(socket.SHUT_WR)
                    while _recv_exact(conn, 1) is not None:
                        pass
                    break
        finally:
            with self._lock:
                self.closed_connections += 1
                self._conns.remove(conn)
            conn.close()

    def _answer(self, header, body, mode: str) -> bytes | None:
        key, version, corr = header.api_key, header.api_version, header.correlation_id
        if mode == "hang_all":
            return None
        if key == ApiKey.API_VERSIONS:
            lo, hi = self.versions.get(ApiKey.API_VERSIONS, (0, 0))
            if version > hi:    # (a table without ApiVersions still answers v0)
                # KIP-511: a v0 body with UNSUPPORTED_VERSION and our versions.
                resp = api_versions_response(error_code=35, versions=self.versions)
                return segments_to_bytes(encode_response(key, 0, corr, resp))
            resp = api_versions_response(versions=self.versions)
            return segments_to_bytes(encode_response(key, version, corr, resp))
        if mode == "hang":
            return None
        if mode == "garbage":
            junk = b"\x7f\xff\xff\xff" * 3
            return struct.pack(">ii", 4 + len(junk), corr) + junk
        if mode == "noise":
            return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
        if mode == "wrong_corr":
            return segments_to_bytes(encode_response(key, version, corr + 1000, self._body(key, body)))
        if mode == "close_mid":
            full = segments_to_bytes(encode_response(key, version, corr, self._body(key, body)))
            return full[:len(full) // 2]            # and _serve closes the connection
        if mode == "oversize":
            return struct.pack(">ii", 1 << 30, corr) + b"x" * 100
        return segments_to_bytes(encode_response(key, version, corr, self._body(key, body)))

    def _body(self, key: int, req):
        if key == ApiKey.METADATA:
            R = m.MetadataResponse
            names = [] if req.topics is None else [t.name for t in req.topics]
            with self._lock:
                codes = {n: self.topic_errors[n].pop(0) for n in names if self.topic_errors.get(n)}
            return R(brokers=[R.MetadataResponseBroker(node_id=0, host="127.0.0.1", port=self.port)],
                     cluster_id="fake-cluster", controller_id=0, topics=[
                         R.MetadataResponseTopic(error_code=codes[n], name=n, is_internal=False, partitions=[])
                         if n in codes else
                         R.MetadataResponseTopic(error_code=0, name=n, is_internal=False, partitions=[
                             R.MetadataResponsePartition(error_code=0, partition_index=0, leader_id=0,
                                                         leader_epoch=0, replica_nodes=[0], isr_nodes=[0])])
                         for n in names])
        if key == ApiKey.DESCRIBE_CONFIGS:       # no config of the topic's own: defaults apply
            R = m.DescribeConfigsResponse
            return R(results=[R.DescribeConfigsResult(error_code=0, resource_type=r.resource_type,
                                                      resource_name=r.resource_name, configs=[])
                              for r in req.resources])
        if key == ApiKey.FIND_COORDINATOR:
            R = m.FindCoordinatorResponse
            if req.coordinator_keys:
                return R(coordinators=[R.Coordinator(key=k, node_id=0, host="127.0.0.1", port=self.port)
                                       for k in req.coordinator_keys])
            return R(node_id=0, host="127.0.0.1", port=self.port)
        raise AssertionError(f"the fake broker does not answer API {key}")
