"""A Kafka-protocol server that does the least a log can: the peer that says what the
clients of :mod:`benches.bench_vs_kafka` reach when the server costs next to nothing (#16).

Both pylog and Apache Kafka check every produced batch, index it, write it to a segment
file and read it back with ``sendfile``.  This server writes a Produce's records to a file
with one ``pwrite`` (the copy into the page cache that every log makes, and that on a
virtual machine costs what the host takes to back pages the guest touches for the first
time) and answers a Fetch with a view of that file's mapping, sent with ``sendmsg``.
What a client reaches against it is the ceiling of that client on this machine for that
workload: no server that keeps its records in files can do better (it does at least this
server's work), so a workload where pylog and Kafka both reach it within the rounds' noise
is decided by the client and the machine, not by either server.

What it answers (every version pylog's codec speaks, :func:`pylog.protocol.supported_versions`):
ApiVersions, Metadata (itself as broker 0, leader of every partition), CreateTopics,
Produce (acks 0, 1 or all: the same), Fetch (waiting up to ``max_wait_ms`` for an
append when there is nothing to return), ListOffsets (earliest and latest only),
FindCoordinator (itself).  Any other request, and one that does not decode, closes its
connection, with a line on stderr.  Not a broker: no idempotence or transactions, no
groups, no retention, no index, no recovery.

On disk: one file per partition, ``<data dir>/<topic>-<partition>``, created at the
partition's first append, sized :data:`CAPACITY` bytes (sparse: blocks are allocated as
records are written) and holding the partition's batches back to back from byte 0, each
with its base offset written in (the CRC does not cover it).  Nothing else is kept on
disk: the batches' positions are in memory only, and the files are not read again; the
data directory belongs to the caller, who removes it.

Offsets: a Produce's batches get consecutive offsets.  Records are checked only for
whole batch framing (a batch's length must fit in the request) and a last offset delta
that is not negative: the answer to a bad one
is CORRUPT_MESSAGE, and nothing of that partition's records in the request is kept.

Thread safety: one thread per connection; each partition's state is guarded by its own
condition variable, the topic table by one lock.

Run: ``python -m benches.ceiling_server --data-dir DIR [--listen 127.0.0.1:PORT]``; it
prints ``listening on HOST:PORT`` to stderr when it accepts connections, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import bisect
import mmap
import os
import re
import signal
import socket
import struct
import sys
import threading
import uuid
from typing import Any

from pylog.protocol import ProtocolError, api_versions_response, decode_request_body, decode_request_header, \
    encode_response, frame_size, messages as m, supported_versions
from pylog.protocol.apis import ApiKey

#: bytes of records one partition can hold (its file's size, sparse, and its mapping's)
CAPACITY = 1 << 30

_ANSWERED = (ApiKey.API_VERSIONS, ApiKey.METADATA, ApiKey.CREATE_TOPICS, ApiKey.PRODUCE, ApiKey.FETCH,
             ApiKey.LIST_OFFSETS, ApiKey.FIND_COORDINATOR)
_NONE, _OFFSET_OUT_OF_RANGE, _CORRUPT_MESSAGE, _UNKNOWN_TOPIC_OR_PARTITION = 0, 1, 2, 3
_INVALID_TOPIC, _INVALID_REQUEST, _KAFKA_STORAGE_ERROR, _TOPIC_ALREADY_EXISTS, _INVALID_PARTITIONS = 17, 42, 56, 36, 37
_MAX_FRAME = 200 << 20
#: Kafka's rule for topic names (they name this server's files)
_LEGAL_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_BATCH_HEADER = 61
_be64, _be32 = struct.Struct(">q"), struct.Struct(">i")


class Partition:
    """One partition's records: the file at ``path``, mapped as ``mem``; ``[0, end)``
    is written, batch ``i`` at ``starts[i]:ends[i]`` with base offset ``bases[i]``;
    offsets ``[0, next_offset)``."""

    def __init__(self, path: str) -> None:
        self.cond = threading.Condition()
        self.path = path
        self.fd = -1
        self.mem: mmap.mmap | None = None
        self.end = 0
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.bases: list[int] = []
        self.next_offset = 0

    def append(self, records: memoryview) -> tuple[int, int]:
        """Store ``records`` (whole v2 batches); returns (error code, base offset)."""
        n = len(records)
        # Framing first, before anything is kept: each batch's length fits the request.
        spans, pos = [], 0
        while pos < n:
            if n - pos < _BATCH_HEADER:
                return _CORRUPT_MESSAGE, -1
            size = 12 + _be32.unpack_from(records, pos + 8)[0]
            if size < _BATCH_HEADER or pos + size > n:
                return _CORRUPT_MESSAGE, -1
            last_delta = _be32.unpack_from(records, pos + 23)[0]
            if last_delta < 0:          # offsets must move forward (the reads bisect them)
                return _CORRUPT_MESSAGE, -1
            spans.append((pos, size, last_delta))
            pos += size
        if not spans:
            return _CORRUPT_MESSAGE, -1
        if records.readonly:
            records = memoryview(bytearray(records))
        with self.cond:
            if self.end + n > CAPACITY:
                return _KAFKA_STORAGE_ERROR, -1
            at, base = self.end, self.next_offset
            # Base offsets go into the request's own buffer, so the one write is the only
            # touch of the file's pages on the way in.
            offset = base
            for pos, _, last_delta in spans:
                _be64.pack_into(records, pos, offset)
                offset += last_delta + 1
            try:
                # Set up in steps that can each be tried again: a failure after the
                # file is created leaves it to the next append, not refused by O_EXCL.
                if self.fd < 0:
                    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                if self.mem is None:
                    os.ftruncate(self.fd, CAPACITY)
                    self.mem = mmap.mmap(self.fd, CAPACITY)
                written = os.pwrite(self.fd, records, at)
            except OSError as exc:
                print(f"ceiling: cannot write {self.path}: {exc}", file=sys.stderr)
                written = -1
            if written != n:            # none or part of it written: nothing of it is kept
                return _KAFKA_STORAGE_ERROR, -1
            offset = base
            for pos, size, last_delta in spans:
                self.starts.append(at + pos)
                self.ends.append(at + pos + size)
                self.bases.append(offset)
                offset += last_delta + 1
            self.next_offset = offset
            self.end = at + n
            self.cond.notify_all()
        return _NONE, base

    def read(self, offset: int, max_bytes: int, wait_s: float) -> tuple[int, Any]:
        """(error code, records) from ``offset``: whole batches up to ``max_bytes`` (at
        least one), waiting up to ``wait_s`` when ``offset`` is the end."""
        with self.cond:
            if offset == self.next_offset and wait_s > 0:
                self.cond.wait(wait_s)
            if offset < 0 or offset > self.next_offset:
                return _OFFSET_OUT_OF_RANGE, b""
            if offset == self.next_offset or self.mem is None:
                return _NONE, b""
            i = bisect.bisect_right(self.bases, offset) - 1
            start = self.starts[i]
            j = max(i + 1, bisect.bisect_right(self.ends, start + max_bytes))
            return _NONE, memoryview(self.mem)[start:self.ends[j - 1]]


class CeilingServer:
    """The server: a listening socket and a thread per connection."""

    def __init__(self, data_dir: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.data_dir = data_dir
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.host, self.port = self.sock.getsockname()[:2]
        self.lock = threading.Lock()
        self.topics: dict[str, list[Partition]] = {}
        self.topic_ids: dict[str, uuid.UUID] = {}
        self.versions = {k: v for k, v in supported_versions().items() if k in _ANSWERED}

    def close(self) -> None:
        """Stop accepting connections and close the partitions' files (their mappings
        go when no answer in flight holds a view of them)."""
        self.sock.close()
        with self.lock:
            for parts in self.topics.values():
                for part in parts:
                    with part.cond:
                        if part.fd >= 0:
                            os.close(part.fd)
                            part.fd = -1

    def serve_forever(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    # -- a connection ----------------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                head = _recv(conn, 4)
                if head is None:
                    return
                frame = _recv(conn, frame_size(head, _MAX_FRAME))
                if frame is None:
                    return
                header, pos = decode_request_header(frame)
                lo, hi = self.versions.get(header.api_key, (0, -1))
                if not lo <= header.api_version <= hi:
                    print(f"ceiling: API {header.api_key} v{header.api_version} is not answered; closing the "
                          "connection", file=sys.stderr)
                    return
                body = decode_request_body(header.api_key, header.api_version, frame, pos, copy=False)
                answer = self._answer(header.api_key, header.api_version, body)
                if header.api_key == ApiKey.PRODUCE and body.acks == 0:
                    continue
                _send(conn, encode_response(header.api_key, header.api_version, header.correlation_id,
                                            answer))
        except ProtocolError as exc:
            print(f"ceiling: {exc}; closing the connection", file=sys.stderr)
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, key: int, version: int, req: Any) -> Any:
        if key == ApiKey.API_VERSIONS:
            return api_versions_response(versions=self.versions)
        if key == ApiKey.PRODUCE:
            return self._produce(req)
        if key == ApiKey.FETCH:
            return self._fetch(req)
        if key == ApiKey.METADATA:
            return self._metadata(req)
        if key == ApiKey.CREATE_TOPICS:
            return self._create_topics(req)
        if key == ApiKey.LIST_OFFSETS:
            return self._list_offsets(req, version)
        R = m.FindCoordinatorResponse
        if req.coordinator_keys:
            return R(coordinators=[R.Coordinator(key=k, node_id=0, host=self.host, port=self.port)
                                   for k in req.coordinator_keys])
        return R(node_id=0, host=self.host, port=self.port)

    def _partition(self, topic: str, index: int) -> Partition | None:
        parts = self.topics.get(topic)
        return parts[index] if parts is not None and 0 <= index < len(parts) else None

    # -- the APIs ------------------------------------------------------------------------

    def _produce(self, req: Any) -> Any:
        R = m.ProduceResponse
        out = []
        for t in req.topic_data:
            answers = []
            for p in t.partition_data:
                part = self._partition(t.name, p.index)
                if part is None:
                    code, base = _UNKNOWN_TOPIC_OR_PARTITION, -1
                elif p.records is None:
                    code, base = _CORRUPT_MESSAGE, -1
                else:
                    code, base = part.append(memoryview(p.records))
                answers.append(R.PartitionProduceResponse(index=p.index, error_code=code, base_offset=base,
                                                          log_append_time_ms=-1, log_start_offset=0))
            out.append(R.TopicProduceResponse(name=t.name, partition_responses=answers))
        return R(responses=out, throttle_time_ms=0)

    def _fetch(self, req: Any) -> Any:
        R = m.FetchResponse
        wait_s = max(0, req.max_wait_ms) / 1000
        budget = req.max_bytes if req.max_bytes > 0 else 1 << 31
        out = []
        for t in req.topics:
            answers = []
            for p in t.partitions:
                part = self._partition(t.topic, p.partition)
                if part is None:
                    answers.append(R.PartitionData(partition_index=p.partition,
                                                   error_code=_UNKNOWN_TOPIC_OR_PARTITION, high_watermark=-1,
                                                   last_stable_offset=-1, log_start_offset=-1, records=b""))
                    continue
                # One partition waits (the consumers measured fetch one); the rest do not.  The
                # first with records may take a whole batch beyond the budget (Kafka's KIP-74).
                if budget > 0:
                    code, records = part.read(p.fetch_offset, max(1, min(p.partition_max_bytes, budget)), wait_s)
                else:
                    code, records = _NONE, b""
                wait_s = 0
                budget -= len(records)
                answers.append(R.PartitionData(
                    partition_index=p.partition, error_code=code, high_watermark=part.next_offset,
                    last_stable_offset=part.next_offset, log_start_offset=0,
                    aborted_transactions=None, preferred_read_replica=-1, records=records))
            out.append(R.FetchableTopicResponse(topic=t.topic, partitions=answers))
        return R(throttle_time_ms=0, error_code=0, session_id=0, responses=out)

    def _metadata(self, req: Any) -> Any:
        R = m.MetadataResponse
        with self.lock:
            names = list(self.topics) if req.topics is None else [t.name for t in req.topics]
            topics = []
            for name in names:
                parts = self.topics.get(name)
                if parts is None:
                    topics.append(R.MetadataResponseTopic(error_code=_UNKNOWN_TOPIC_OR_PARTITION, name=name,
                                                          is_internal=False, partitions=[]))
                    continue
                topics.append(R.MetadataResponseTopic(
                    error_code=0, name=name, topic_id=self.topic_ids[name], is_internal=False, partitions=[
                        R.MetadataResponsePartition(error_code=0, partition_index=i, leader_id=0, leader_epoch=0,
                                                    replica_nodes=[0], isr_nodes=[0], offline_replicas=[])
                        for i in range(len(parts))]))
        return R(throttle_time_ms=0, brokers=[R.MetadataResponseBroker(node_id=0, host=self.host, port=self.port)],
                 cluster_id="pylog-ceiling", controller_id=0, topics=topics)

    def _create_topics(self, req: Any) -> Any:
        R = m.CreateTopicsResponse
        out = []
        with self.lock:
            for t in req.topics:
                count = 1 if t.num_partitions == -1 else t.num_partitions
                if not _LEGAL_NAME.fullmatch(t.name) or t.name in (".", ".."):
                    code, msg = _INVALID_TOPIC, f"'{t.name}' is not a legal topic name."
                elif t.name in self.topics:
                    code, msg = _TOPIC_ALREADY_EXISTS, f"Topic '{t.name}' already exists."
                elif not 0 < count <= 10_000:
                    code, msg = _INVALID_PARTITIONS, f"{count} partitions"
                else:
                    code, msg = _NONE, None
                    if not req.validate_only:
                        self.topics[t.name] = [Partition(os.path.join(self.data_dir, f"{t.name}-{i}"))
                                               for i in range(count)]
                        self.topic_ids[t.name] = uuid.uuid4()
                out.append(R.CreatableTopicResult(name=t.name, error_code=code, error_message=msg,
                                                  num_partitions=count if code == _NONE else -1,
                                                  replication_factor=1 if code == _NONE else -1, configs=None))
        return R(throttle_time_ms=0, topics=out)

    def _list_offsets(self, req: Any, version: int) -> Any:
        R = m.ListOffsetsResponse
        out = []
        for t in req.topics:
            answers = []
            for p in t.partitions:
                part = self._partition(t.name, p.partition_index)
                if part is None:
                    code, offset = _UNKNOWN_TOPIC_OR_PARTITION, -1
                elif p.timestamp == -1:
                    code, offset = _NONE, part.next_offset
                elif p.timestamp == -2:
                    code, offset = _NONE, 0
                else:
                    code, offset = _INVALID_REQUEST, -1
                if version == 0:
                    answers.append(R.ListOffsetsPartitionResponse(
                        partition_index=p.partition_index, error_code=code,
                        old_style_offsets=[offset] if code == _NONE else []))
                else:
                    answers.append(R.ListOffsetsPartitionResponse(
                        partition_index=p.partition_index, error_code=code, timestamp=-1, offset=offset,
                        leader_epoch=0 if code == _NONE else -1))
            out.append(R.ListOffsetsTopicResponse(name=t.name, partitions=answers))
        return R(throttle_time_ms=0, topics=out)


def _recv(conn: socket.socket, n: int) -> bytearray | None:
    """Exactly ``n`` bytes, or None at the end of the stream."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        r = conn.recv_into(view[got:])
        if not r:
            return None
        got += r
    return buf


def _send(conn: socket.socket, segments: list) -> None:
    """Every byte of ``segments`` (records as views of the partition's memory, not copied)."""
    bufs = [memoryview(s).cast("B") for s in segments if len(s)]
    while bufs:
        sent = conn.sendmsg(bufs[:1024])
        while sent:
            if sent >= len(bufs[0]):
                sent -= len(bufs.pop(0))
            else:
                bufs[0] = bufs[0][sent:]
                sent = 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benches.ceiling_server", description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1 on a free port)")
    ap.add_argument("--data-dir", required=True, help="the partitions' files go here (an existing directory)")
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not os.path.isdir(args.data_dir):
        print(f"ceiling: --data-dir {args.data_dir} is not a directory", file=sys.stderr)
        return 2
    try:
        server = CeilingServer(args.data_dir, host or "127.0.0.1", int(port))
    except (ValueError, OSError) as exc:
        print(f"ceiling: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"listening on {server.host}:{server.port}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
