"""A Kafka-protocol server that keeps records in memory and does nothing else: the peer
that says what the clients of :mod:`benches.bench_vs_kafka` reach when the server costs
next to nothing (#16).

Both pylog and Apache Kafka write every produced batch to a file and read it back with
``sendfile``; this server copies a Produce's records into memory and answers a Fetch
with a view of that memory.  What a client reaches against it is the ceiling of that
client on this machine for that workload: no server that stores records can do better
(it does at least this server's work), so a workload where pylog and Kafka both reach
it within the rounds' noise is decided by the client, not by either server.

What it answers (every version pylog's codec speaks, :func:`pylog.protocol.supported_versions`):
ApiVersions, Metadata (itself as broker 0, leader of every partition), CreateTopics,
Produce (acks 0, 1 or all: the same), Fetch (waiting up to ``max_wait_ms`` for an
append when there is nothing to return), ListOffsets (earliest and latest only),
FindCoordinator (itself).  Any other request, and one that does not decode, closes its
connection, with a line on stderr.  Not a broker: no idempotence or transactions, no groups, no retention but one
rule: only the records of the :data:`KEEP` most recently created topics are held (each
partition's memory is an anonymous ``mmap`` of :data:`CAPACITY` bytes of address space,
pages touched as records arrive); an older topic's log start moves to its end and its
memory is released.

Offsets: a Produce's batches get consecutive offsets (the base offset of each batch is
written into the stored copy; the CRC does not cover it).  Records are checked only for
whole batch framing (a batch's length must fit in the request): the answer to a bad one
is CORRUPT_MESSAGE, and nothing of that partition's records in the request is kept.

Thread safety: one thread per connection; each partition's state is guarded by its own
condition variable, the topic table by one lock.

Run: ``python -m benches.ceiling_server [--listen 127.0.0.1:PORT]``; it prints
``listening on HOST:PORT`` to stderr when it accepts connections, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import bisect
import mmap
import os
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

#: topics whose records are held (the most recently created); older ones are emptied
KEEP = 4
#: address space reserved per partition: the records one partition can hold
CAPACITY = 1 << 30

_ANSWERED = (ApiKey.API_VERSIONS, ApiKey.METADATA, ApiKey.CREATE_TOPICS, ApiKey.PRODUCE, ApiKey.FETCH,
             ApiKey.LIST_OFFSETS, ApiKey.FIND_COORDINATOR)
_NONE, _OFFSET_OUT_OF_RANGE, _CORRUPT_MESSAGE, _UNKNOWN_TOPIC_OR_PARTITION = 0, 1, 2, 3
_INVALID_REQUEST, _KAFKA_STORAGE_ERROR, _TOPIC_ALREADY_EXISTS, _INVALID_PARTITIONS = 42, 56, 36, 37
_MAX_FRAME = 200 << 20
_BATCH_HEADER = 61
_be64, _be32 = struct.Struct(">q"), struct.Struct(">i")


class Partition:
    """One partition's records: ``mem[0:end]``, batch ``i`` at ``starts[i]:ends[i]`` with
    base offset ``bases[i]``; offsets ``[log_start, next_offset)``."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.mem: mmap.mmap | None = None
        self.end = 0
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.bases: list[int] = []
        self.log_start = 0
        self.next_offset = 0
        self.dropped = False

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
            spans.append((pos, size, _be32.unpack_from(records, pos + 23)[0]))
            pos += size
        if not spans:
            return _CORRUPT_MESSAGE, -1
        with self.cond:
            if self.dropped:
                return _KAFKA_STORAGE_ERROR, -1
            if self.mem is None:
                self.mem = mmap.mmap(-1, CAPACITY, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if self.end + n > CAPACITY:
                return _KAFKA_STORAGE_ERROR, -1
            base = self.next_offset
            at = self.end
            self.mem[at:at + n] = records
            for pos, size, last_delta in spans:
                _be64.pack_into(self.mem, at + pos, self.next_offset)
                self.starts.append(at + pos)
                self.ends.append(at + pos + size)
                self.bases.append(self.next_offset)
                self.next_offset += last_delta + 1
            self.end = at + n
            self.cond.notify_all()
        return _NONE, base

    def read(self, offset: int, max_bytes: int, wait_s: float) -> tuple[int, Any]:
        """(error code, records) from ``offset``: whole batches up to ``max_bytes`` (at
        least one), waiting up to ``wait_s`` when ``offset`` is the end."""
        with self.cond:
            if offset == self.next_offset and wait_s > 0:
                self.cond.wait(wait_s)
            if offset < self.log_start or offset > self.next_offset:
                return _OFFSET_OUT_OF_RANGE, b""
            if offset == self.next_offset or self.mem is None:
                return _NONE, b""
            i = bisect.bisect_right(self.bases, offset) - 1
            start = self.starts[i]
            j = max(i + 1, bisect.bisect_right(self.ends, start + max_bytes))
            return _NONE, memoryview(self.mem)[start:self.ends[j - 1]]

    def drop(self) -> None:
        """Release the records: the log now starts at its end."""
        with self.cond:
            self.dropped = True
            self.log_start = self.next_offset
            self.starts, self.ends, self.bases = [], [], []
            self.mem = None          # unmapped once no answer in flight holds a view of it


class CeilingServer:
    """The server: a listening socket and a thread per connection."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.host, self.port = self.sock.getsockname()[:2]
        self.lock = threading.Lock()
        self.topics: dict[str, list[Partition]] = {}
        self.topic_ids: dict[str, uuid.UUID] = {}
        self.order: list[str] = []
        self.versions = {k: v for k, v in supported_versions().items() if k in _ANSWERED}

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
                    last_stable_offset=part.next_offset, log_start_offset=part.log_start,
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
        dropped: list[list[Partition]] = []
        with self.lock:
            for t in req.topics:
                count = 1 if t.num_partitions == -1 else t.num_partitions
                if t.name in self.topics:
                    code, msg = _TOPIC_ALREADY_EXISTS, f"Topic '{t.name}' already exists."
                elif not 0 < count <= 10_000:
                    code, msg = _INVALID_PARTITIONS, f"{count} partitions"
                else:
                    code, msg = _NONE, None
                    if not req.validate_only:
                        self.topics[t.name] = [Partition() for _ in range(count)]
                        self.topic_ids[t.name] = uuid.uuid4()
                        self.order.append(t.name)
                        while len(self.order) > KEEP:
                            dropped.append(self.topics[self.order.pop(0)])
                out.append(R.CreatableTopicResult(name=t.name, error_code=code, error_message=msg,
                                                  num_partitions=count if code == _NONE else -1,
                                                  replication_factor=1 if code == _NONE else -1, configs=None))
        for parts in dropped:
            for part in parts:
                part.drop()
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
                    code, offset = _NONE, part.log_start
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
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    try:
        server = CeilingServer(host or "127.0.0.1", int(port))
    except (ValueError, OSError) as exc:
        print(f"ceiling: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"listening on {server.host}:{server.port}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
