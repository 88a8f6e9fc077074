"""The Kafka-protocol transport: the client's operations as requests to a Kafka cluster.

:class:`KafkaTransport` implements :class:`~pylog.client.transport.Transport` over a
:class:`~pylog.client.kafka.network.NetworkClient` (``pylog.connect``).  This module holds
the data paths (Produce, Fetch, ListOffsets, InitProducerId, metadata); group and admin
operations are delegated to :class:`~pylog.client.kafka.group_ops.GroupOps` and
:class:`~pylog.client.kafka.admin_ops.AdminOps` over the same network client.

Produce
    The partitions' batches are grouped by leader (from the metadata; an unknown leader
    waits for one metadata update, then answers LEADER_NOT_AVAILABLE / UNKNOWN_TOPIC_OR_PARTITION).
    Kafka's brokers take exactly one v2 batch per partition in a Produce request, so
    request ``k`` to a leader carries the ``k``-th batch of each of its partitions (counted
    across the entries of one call: the producer gives each batch its own entry, so each
    is reported as soon as its own request is answered); the
    requests are pipelined on the leader's connection (answered in order, appended in
    order) and the leaders are written to concurrently.  :meth:`~KafkaTransport.produce_async`
    returns once the requests are queued and reports each partition as its answers come
    (on the I/O thread), so the producer keeps sending to the other leaders, and more of
    a partition's batches, while a request is out; :meth:`~KafkaTransport.produce` waits
    for them all.  The producer calls it from a step of its own on the I/O thread
    (:meth:`~KafkaTransport.add_io_task`), so its requests are written in the same turn
    of the I/O loop, without a hand-over.  Batches go out as the buffers
    the producer built (the codec passes records of 4 KiB or more to ``sendmsg`` as their
    own segments: no copy).  Nothing is retried here: NOT_LEADER_OR_FOLLOWER,
    FENCED_LEADER_EPOCH, UNKNOWN_TOPIC_OR_PARTITION and network errors request a metadata
    update and come back as retriable results; the producer owns retries and ordering.

Fetch
    One Fetch request per leader (no fetch sessions), ``max_wait_ms``/``min_bytes`` passed
    to the broker, which holds the long poll.  Brokers handle one request of a connection
    at a time, so fetches travel on connections of their own
    (:func:`~pylog.client.kafka.cluster.extra_connection_id`): one per concurrent
    ``fetch`` call and broker, reused once its requests are answered, so a waiting
    consumer never delays a produce, a heartbeat or another consumer.  A fetch that does
    not wait uses the broker's main connection, so it is handled after this client's
    earlier requests to that broker (what an acks=0 produce wrote is read back).  A wait is cut
    into slices of at most :data:`FETCH_SLICE_MS` (Kafka's default ``fetch.max.wait.ms``):
    :meth:`~KafkaTransport.wake` and ``stop()`` end the caller's wait at once, but the
    broker keeps the abandoned request until its slice ends, holding that connection;
    the slice bounds how long, how late a request times out, and how late a moved leader
    is followed.  An answer nobody waits for any more (the caller was woken, or another
    leader answered first) is kept per partition (Kafka's "completed fetches") and handed
    to the next fetch of that partition at that offset, and the data listeners are
    called.  Retriable partition errors (leader moved, broker unreachable) request a
    metadata update; such a partition is None ("not read this time") in the answer.

Prefetch
    :meth:`~KafkaTransport.prefetch` sends the fetches a consumer will want next and
    returns (Kafka's consumer sends its next fetches before handing records out;
    librdkafka fills a queue ahead of the application).  The answers join the kept ones,
    tagged with their owner (the consumer): a fetch by that owner at the same offset and
    isolation level takes one without a round trip, a fetch at another offset drops it,
    and a fetch that finds the partition's prefetch still in flight at its offset waits
    for it (if it waits at all) instead of asking again.  A partition's prefetches form a
    *chain* of up to :data:`PREFETCH_DEPTH` answers, kept or in flight: when an answer
    with data comes (I/O thread), the fetch at the offset after its last whole batch is
    sent at once, so while the consumer serves one answer the next is kept and the one
    after it is on its way.  One fetch of a chain is in flight at a time (the next offset
    is known only from the answer before).  A fetch at the chain's first offset takes
    that answer and leaves the rest; a fetch or prefetch at any other offset drops the
    whole chain; an error, an empty answer or a dropped chain ends it.  A fetch is sent
    only while the kept and reserved bytes leave room for the partition's ``max_bytes``
    within the caller's ``max_bytes``.

Readiness for asyncio consumers
    The asyncio consumer never waits for a Fetch: it prefetches, then calls
    ``fetch(block=False)``, which takes only answers already kept and sends nothing.  A
    prefetch answered with data calls the data listeners (which wake the event loop).  A
    fetch that does not wait (``max_wait_ms`` 0) or a prefetch that finds nothing for a
    partition, while data listeners are registered, puts that partition on a *watch*: a
    background long poll (slices of :data:`FETCH_SLICE_MS`) whose data is kept for the
    next fetch and announced to the listeners.  A partition leaves the watch when data
    arrives or when no fetch asked for it for :data:`WATCH_IDLE_S`.

Threads: every method may be called from any thread.  Response callbacks (and so the
data listeners) run on the network client's I/O thread.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Mapping, Sequence

from pylog import _core
from pylog.broker.core import FetchResult, InitProducerIdResult, ListOffsetsResult, ProduceResult
from pylog.client.kafka.admin_ops import AdminOps
from pylog.client.kafka.cluster import METADATA_ERRORS, MetadataSnapshot, extra_connection_id
from pylog.client.kafka.connection import ConnectionState
from pylog.client.kafka.group_ops import GroupOps
from pylog.client.kafka.network import IOTask, NetworkClient
from pylog.client.kafka.txn_ops import TxnOps
from pylog.client.transport import DEFAULT_FETCH_MAX_BYTES, READ_UNCOMMITTED
from pylog.errors import (
    IllegalStateError,
    InvalidConfigError,
    NetworkError,
    PylogError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    error_for_code,
)
from pylog.protocol import messages as _messages
from pylog.protocol.apis import ApiKey

__all__ = ["KafkaTransport", "FETCH_SLICE_MS", "WATCH_IDLE_S", "DEFAULT_MAX_MESSAGE_BYTES", "PREFETCH_DEPTH"]

log = logging.getLogger("pylog.client.kafka")
m: Any = _messages      # nested message classes are made at import time: untyped

#: The longest Fetch wait asked of a broker at once (Kafka's default fetch.max.wait.ms).
FETCH_SLICE_MS = 500
#: A watched partition no fetch asked for this long leaves the watch.
WATCH_IDLE_S = 5.0
#: Kafka's default max.message.bytes, used when the broker does not say.
DEFAULT_MAX_MESSAGE_BYTES = 1048588
#: Answers read ahead per partition for one owner, kept or in flight (a chain).
PREFETCH_DEPTH = 2


#: The Produce request's classes, looked up once (the hot path of every send).
_ProduceRequest = m.ProduceRequest
_TopicProduceData = _ProduceRequest.TopicProduceData
_PartitionProduceData = _ProduceRequest.PartitionProduceData

_NONE = 0
_OFFSET_OUT_OF_RANGE = 1
_UNKNOWN_TOPIC_OR_PARTITION = 3
_LEADER_NOT_AVAILABLE = 5
_REPLICA_NOT_AVAILABLE = 9
_NETWORK_EXCEPTION = 13
_INVALID_TOPIC = 17
_OFFSET_NOT_AVAILABLE = 78
#: Partition errors after which a fetch or ListOffsets is simply tried again (after a
#: metadata update): the leader moved or is not known yet, or a new leader's high
#: watermark has not caught up yet (OFFSET_NOT_AVAILABLE, KIP-207), as Kafka's
#: FetchCollector and OffsetFetcherUtils have it.
_RETRY_LATER = METADATA_ERRORS | {_REPLICA_NOT_AVAILABLE, _NETWORK_EXCEPTION, _OFFSET_NOT_AVAILABLE,
                                  7}   # 7: REQUEST_TIMED_OUT
_TOPIC_RESOURCE = 2
_NON_TRANSACTIONAL_TIMEOUT_MS = 2**31 - 1


class _Records:
    """A fetched partition's records: ``records`` (a zero-copy view of the response) and
    ``size``, the shape of the storage's ReadResult the consumer reads."""

    __slots__ = ("records", "size")

    def __init__(self, records: Any) -> None:
        if records is None:
            records = b""
        self.records = records
        self.size = len(records)

    def __repr__(self) -> str:
        return f"<fetched records {self.size} bytes>"


_NO_RECORDS = _Records(b"")


def _next_fetch_offset(records: Any, offset: int) -> int:
    """The offset after the last whole batch of a Fetch answer's ``records`` read at
    ``offset`` (where a consumer's next fetch starts: a truncated last batch is not
    counted, control and aborted batches are), or -1 when there is no whole batch past
    ``offset``.  The batches are walked in C, headers only (the consumer checks CRCs); a
    corrupt one ends the walk before it."""
    last: collections.deque = collections.deque(maxlen=1)
    try:
        last.extend(_core.iter_batches(records, check_crc=False))
    except PylogError:
        pass
    if not last:
        return -1
    nxt = last[0].next_offset
    return nxt if nxt > offset else -1


class _Slot:
    """Extra connections (one per broker) that one fetch call, or one watch round, uses."""

    __slots__ = ("number", "pending", "owner_done")

    def __init__(self, number: int) -> None:
        self.number = number
        self.pending = 0
        self.owner_done = False


class _Prefetch:
    """One partition of a prefetch request in flight: the offset and isolation level it
    reads at, the owner that asked, and the bytes reserved for its answer (released when
    the answer comes, even when the prefetch was dropped meanwhile)."""

    __slots__ = ("offset", "isolation_level", "owner", "reserved")

    def __init__(self, offset: int, isolation_level: int, owner: Any, reserved: int) -> None:
        self.offset = offset
        self.isolation_level = isolation_level
        self.owner = owner
        self.reserved = reserved


class _ProduceAnswer:
    """The results of one produce_async call, gathered per partition: ``on_done(i, results)``
    once every batch of ``work[i]`` is answered (its requests may go to several leaders
    only across partitions; a partition's batches all go to its leader)."""

    __slots__ = ("results", "left", "on_done", "lock")

    def __init__(self, work: Sequence[tuple[str, int, Sequence[Any]]],
                 on_done: Callable[[int, list[ProduceResult]], object]) -> None:
        self.results: list[list[ProduceResult | None]] = [[None] * len(batches) for _, _, batches in work]
        self.left = [len(batches) for _, _, batches in work]
        self.on_done = on_done
        # Answers come on the I/O thread, and on the caller's for requests failed at once.
        self.lock = threading.Lock()

    def put(self, i: int, k: int, res: ProduceResult) -> None:
        with self.lock:
            self.results[i][k] = res
            self.left[i] -= 1
            done = not self.left[i]
        if done:
            self.on_done(i, self.results[i])  # type: ignore[arg-type]


class KafkaTransport:
    """A :class:`~pylog.client.transport.Transport` over the Kafka protocol.

    Parameters
    ----------
    bootstrap_servers : str or list of str
        ``host:port[,host:port...]``.
    allow_auto_create_topics : bool
        Ask the cluster to create a topic the first time :meth:`topic_metadata` names it
        (Kafka's producer does; the broker's ``auto.create.topics.enable`` decides).
    network_client : NetworkClient, optional
        Use this one (owned by the transport from now on) instead of making one.
    **network
        :class:`~pylog.client.kafka.network.NetworkClient` settings (``client_id``,
        ``request_timeout_ms``, ``metadata_max_age_ms``, ``retry_backoff_ms``,
        ``reconnect_backoff_ms``, ...).

    Raises
    ------
    InvalidConfigError
        A malformed bootstrap list or setting.
    """

    def __init__(self, bootstrap_servers: str | Sequence[str] | None = None, *,
                 allow_auto_create_topics: bool = True, network_client: NetworkClient | None = None,
                 **network: Any) -> None:
        if not isinstance(allow_auto_create_topics, bool):
            raise InvalidConfigError(f"allow_auto_create_topics must be a bool, not {allow_auto_create_topics!r}")
        if network_client is None:
            if bootstrap_servers is None:
                raise InvalidConfigError("bootstrap_servers is required: 'host:port[,host:port...]'")
            network_client = NetworkClient(bootstrap_servers, **network)
        elif network:
            raise InvalidConfigError(f"network settings {sorted(network)} given with a network_client")
        self.net = net = network_client
        self.cluster = net.cluster
        self.allow_auto_create_topics = allow_auto_create_topics
        self.request_timeout_ms = net.request_timeout_ms
        self._retry_backoff = max(self.cluster.retry_backoff, 0.01)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._wake_seq = 0
        self._closed = False
        self._data_listeners: tuple[Callable[[str, int, int], object], ...] = ()
        self._wake_listeners: tuple[Callable[[], object], ...] = ()
        self._max_message_bytes: dict[str, tuple[int, float]] = {}
        # (topic, partition) -> [(offset, isolation_level, FetchResult, prefetch owner or
        # None, next offset or -1), ...]: answers nobody took, a chain in offset order
        # (each read at the next offset of the one before; at most PREFETCH_DEPTH, one
        # when the owner is None), and their record bytes in all.
        self._completed: dict[tuple[str, int], list[tuple[int, int, FetchResult, Any, int]]] = {}
        self._completed_bytes = 0
        # (topic, partition) -> its prefetch in flight (one at most: a chain's next one
        # reads after the last kept answer); the bytes those reserve in all.
        self._prefetching: dict[tuple[str, int], _Prefetch] = {}
        self._prefetch_reserved = 0
        self._free_slots: list[_Slot] = []
        self._slot_count = 0
        # (topic, partition, isolation_level) -> [offset, max_bytes, last asked (monotonic)]
        self._watch: dict[tuple[str, int, int], list] = {}
        self._watching = False
        self._background_refresh: Future | None = None
        #: Requests sent, per API key (inspection: tests count Produce requests).
        self.requests_sent: dict[int, int] = {}
        self._bind_ops()

    def _bind_ops(self) -> None:
        """Groups and admin: GroupOps and AdminOps over the same network client."""
        g = self._groups = GroupOps(self.net, request_timeout_ms=self.request_timeout_ms,
                                    client_id=self.net.client_id)
        self.heartbeat = g.heartbeat
        self.release_member = g.release_member
        self.leave_group = g.leave_group
        self.leave_group_async = g.leave_group_async
        self.group_rebalancing = g.group_rebalancing
        self.commit_offsets = g.commit_offsets
        self.commit_offsets_async = g.commit_offsets_async
        self.fetch_offsets = g.fetch_offsets
        self.fetch_offsets_async = g.fetch_offsets_async
        x = self._txns = TxnOps(g, request_timeout_ms=self.request_timeout_ms, retry_backoff=self._retry_backoff)
        self.add_partitions_to_txn = x.add_partitions_to_txn
        self.add_partitions_to_txn_async = x.add_partitions_to_txn_async
        self.add_offsets_to_txn = x.add_offsets_to_txn
        self.txn_offset_commit = x.txn_offset_commit
        self.end_txn = x.end_txn
        a = self._admin = AdminOps(self.net, request_timeout_ms=self.request_timeout_ms,
                                   client_id=self.net.client_id)
        self.describe_topic = a.describe_topic
        self.describe_topics = a.describe_topics
        self.list_topics = a.list_topics
        self.describe_configs = a.describe_configs
        self.delete_records = a.delete_records
        self.list_groups = a.list_groups
        self.describe_groups = a.describe_groups
        self.delete_groups = a.delete_groups
        # Calls that change topics or configs refresh what this transport caches.
        self.create_topic = self._refreshing(a.create_topic)
        self.create_topics = self._refreshing(a.create_topics)
        self.delete_topic = self._refreshing(a.delete_topic)
        self.delete_topics = self._refreshing(a.delete_topics)
        self.create_partitions = self._refreshing(a.create_partitions)
        self.alter_configs = self._refreshing(a.alter_configs)
        self.incremental_alter_configs = self._refreshing(a.incremental_alter_configs)

    def _refreshing(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` followed by a metadata update that this call waits for, so this client's
        producers and consumers see the topics it just created, grew or deleted (other
        clients see them at their next update, as with Kafka)."""
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                self._max_message_bytes.clear()
                if not self._closed:
                    try:
                        tracked = self.cluster.tracked_topics()
                        names = None if tracked is None else sorted(set(tracked) | set(self.cluster.topics))
                        self._wait(self.net.refresh_metadata(names), self.request_timeout_ms)
                    except PylogError as exc:
                        log.debug("metadata update after %s failed: %s", fn.__name__, exc)
                        self.cluster.request_update()
        call.__name__ = call.__qualname__ = fn.__name__
        call.__doc__ = fn.__doc__
        return call

    def join_group(self, *args: Any, **kwargs: Any) -> Any:
        """GroupOps.join_group; its completion also calls the wake listeners."""
        pending = self._groups.join_group(*args, **kwargs)
        pending.add_done_callback(lambda _p: self._call_wake_listeners())
        return pending

    def sync_group(self, *args: Any, **kwargs: Any) -> Any:
        """GroupOps.sync_group; its completion also calls the wake listeners."""
        pending = self._groups.sync_group(*args, **kwargs)
        pending.add_done_callback(lambda _p: self._call_wake_listeners())
        return pending

    # ------------------------------------------------------------------ requests

    def _send(self, node_id: int, api_key: int, body: Any, **kw: Any) -> Future:
        self.requests_sent[api_key] = self.requests_sent.get(api_key, 0) + 1
        return self.net.send(node_id, api_key, body, **kw)

    def _send_to_any(self, api_key: int, body: Any, **kw: Any) -> Future:
        self.requests_sent[api_key] = self.requests_sent.get(api_key, 0) + 1
        return self.net.send_to_any(api_key, body, **kw)

    def _check_open(self) -> None:
        if self._closed:
            raise IllegalStateError("the transport is closed")

    def _wait(self, fut: Future, timeout_ms: float) -> Any:
        """The future's result, waiting at most ``timeout_ms`` (plus a margin: the
        network client fails the request itself at its deadline)."""
        try:
            return fut.result(timeout_ms / 1000 + 5)
        except TimeoutError:
            raise RequestTimedOutError(f"no answer within {timeout_ms:.0f} ms") from None

    def _leaders(self, topics: Iterable[str], snap: MetadataSnapshot | None = None) -> MetadataSnapshot:
        """A snapshot naming ``topics`` (tracked from now on): one metadata update is
        waited for when one of them is not known yet or has a leaderless partition."""
        topics = set(topics)
        self.cluster.add_topics(topics)
        snap = snap or self.cluster.snapshot()
        if all(t in snap.topics and not snap.topics[t].error_code
               and all(p.leader_id >= 0 for p in snap.topics[t].partitions.values()) for t in topics) and snap.nodes:
            return snap
        try:
            self._wait(self.net.refresh_metadata(sorted(topics)), self.request_timeout_ms)
        except PylogError as exc:
            log.debug("metadata update for %s failed: %s", sorted(topics), exc)
        return self.cluster.snapshot()

    # ------------------------------------------------------------------ produce

    def produce(self, work: Sequence[tuple[str, int, Sequence[Any]]], *, acks: int,
                transactional_id: str | None = None,
                timeout_ms: int | Sequence[int] | None = None) -> list[list[ProduceResult]]:
        out: list[list[ProduceResult] | None] = [None] * len(work)
        answered = threading.Event()
        left = [len(work)]
        lock = threading.Lock()

        def on_done(i: int, results: list[ProduceResult]) -> None:
            with lock:
                out[i] = results
                left[0] -= 1
                if not left[0]:
                    answered.set()

        self.produce_async(work, acks=acks, on_done=on_done, transactional_id=transactional_id, timeout_ms=timeout_ms)
        # The network client fails every request at its deadline; the margin is for a
        # wedged I/O thread only.
        if timeout_ms is None or not work:
            longest = self.request_timeout_ms
        else:
            longest = timeout_ms if isinstance(timeout_ms, (int, float)) else max(timeout_ms)
        if work and not answered.wait(longest / 1000 + 5):
            with lock:
                for i, (topic, partition, batches) in enumerate(work):
                    if out[i] is None:
                        exc = RequestTimedOutError(f"{topic}-{partition}: no answer within "
                                                   f"{longest:.0f} ms")
                        out[i] = [ProduceResult.failed(exc) for _ in batches]
        return out  # type: ignore[return-value]

    def produce_async(self, work: Sequence[tuple[str, int, Sequence[Any]]], *, acks: int,
                      on_done: Callable[[int, list[ProduceResult]], object],
                      transactional_id: str | None = None, timeout_ms: int | Sequence[int] | None = None) -> None:
        """Send the Produce requests and return; ``on_done(i, results)`` runs on the network
        client's I/O thread as each partition's requests are answered (at once, in this
        thread, for a partition without a known leader or a request that could not be
        queued).  A waiting caller (the producer's sender) should hand the results to
        its own thread rather than run user code in ``on_done``.  May be called from
        ``on_done`` itself (the producer sends a partition's next batch as an answer
        frees its slot): then a partition whose leader is not known answers
        LEADER_NOT_AVAILABLE at once instead of waiting for a metadata update."""
        self._check_open()
        snap = self.cluster.snapshot()
        leaders = [snap.leader_for(t, p) for t, p, _ in work]
        if None in leaders:
            if self.net.on_io_thread():
                # Called from a done callback (or the producer's I/O step): waiting for
                # metadata would wait for this thread.  The leaderless partitions answer
                # retriably; the update follows.
                self.cluster.add_topics({t for t, _, _ in work})
                self.cluster.request_update()
            else:
                snap = self._leaders({t for t, _, _ in work}, snap)
                leaders = [snap.leader_for(t, p) for t, p, _ in work]
        # leader -> request index k -> [(work index, k, topic, partition, batch)]
        by_leader: dict[int, list[list[tuple[int, int, str, int, Any]]]] = {}
        answer = _ProduceAnswer(work, on_done)
        taken: dict[tuple[str, int], int] = {}      # (topic, partition) -> its requests so far
        for i, (topic, partition, batches) in enumerate(work):
            if not batches:
                on_done(i, [])
                continue
            leader = leaders[i]
            if leader is None:
                t = snap.topics.get(topic)
                if t is not None and not t.error_code and partition in t.partitions:
                    code = _LEADER_NOT_AVAILABLE
                elif t is not None and t.error_code and t.error_code != _UNKNOWN_TOPIC_OR_PARTITION:
                    code = t.error_code
                else:
                    code = _UNKNOWN_TOPIC_OR_PARTITION
                self.cluster.request_update()
                err = error_for_code(code, f"{topic}-{partition}: no leader known")
                for k in range(len(batches)):
                    answer.put(i, k, ProduceResult.failed(err))
                continue
            reqs = by_leader.setdefault(leader, [])
            # A partition may come in several entries (one per batch): its batches take
            # the leader's requests one after another, in order.
            first = taken.get((topic, partition), 0)
            for k, batch in enumerate(batches):
                if first + k == len(reqs):
                    reqs.append([])
                reqs[first + k].append((i, k, topic, partition, batch))
            taken[(topic, partition)] = first + len(batches)
        if timeout_ms is None:
            timeout_ms = self.request_timeout_ms
        per_entry = None if isinstance(timeout_ms, (int, float)) else timeout_ms
        for leader, reqs in by_leader.items():
            for entries in reqs:
                if per_entry is not None:
                    # The producer's: its request timeout, or less for a batch whose
                    # delivery timeout ends sooner.
                    timeout_ms = max(1, min(int(per_entry[i]) for i, _, _, _, _ in entries))
                topic_data: dict[str, list[Any]] = {}
                for _, _, topic, partition, batch in entries:
                    parts = topic_data.get(topic)
                    if parts is None:
                        parts = topic_data[topic] = []
                    parts.append(_PartitionProduceData(index=partition, records=batch))
                body = _ProduceRequest(
                    transactional_id=transactional_id, acks=acks, timeout_ms=timeout_ms,
                    topic_data=[_TopicProduceData(name=t, partition_data=parts) for t, parts in topic_data.items()])
                try:
                    fut = self._send(leader, ApiKey.PRODUCE, body, expect_response=acks != 0, timeout_ms=timeout_ms)
                except PylogError as send_exc:
                    self._produce_answered(answer, entries, acks, None, send_exc)
                    continue
                fut.add_done_callback(functools.partial(self._produce_future_done, answer, entries, acks))

    def add_io_task(self, step: Callable[[], float | None],
                    on_close: Callable[[], object] | None = None) -> IOTask:
        """Run ``step`` on the network client's I/O thread when woken or when its timer
        is due (:meth:`NetworkClient.add_task <pylog.client.kafka.network.NetworkClient.add_task>`):
        the producer drains its accumulator there, so what it sends (:meth:`produce_async`
        from the step) is written in the same turn of the loop.  Raises
        IllegalStateError when closed."""
        self._check_open()
        return self.net.add_task(step, on_close)

    def _produce_future_done(self, answer: _ProduceAnswer, entries: list[tuple[int, int, str, int, Any]],
                             acks: int, fut: Future) -> None:
        """A Produce request's future resolved (on the I/O thread, or at once in the
        sender's when it failed before it was queued)."""
        exc = NetworkError("the Produce request was cancelled") if fut.cancelled() else fut.exception()
        if exc is not None and not isinstance(exc, PylogError):
            exc = NetworkError(f"Produce failed: {type(exc).__name__}: {exc}")
        self._produce_answered(answer, entries, acks, None if exc is not None else fut.result(), exc)

    def _produce_answered(self, answer: _ProduceAnswer, entries: list[tuple[int, int, str, int, Any]],
                          acks: int, resp: Any, exc: BaseException | None) -> None:
        """Results of one Produce request's partitions from its response or failure."""
        answers: dict[tuple[str, int], Any] = {}
        if resp is not None:
            for tr in resp.responses:
                for pr in tr.partition_responses:
                    answers[(tr.name, pr.index)] = pr
        if isinstance(exc, (NetworkError, RequestTimedOutError)):
            self.cluster.request_update()
        for i, k, topic, partition, _ in entries:
            if exc is not None:
                res = ProduceResult.failed(exc)
            elif acks == 0:
                res = ProduceResult()
            elif (pr := answers.get((topic, partition))) is None:
                res = ProduceResult.failed(NetworkError(f"the Produce answer left out {topic}-{partition}"))
            elif pr.error_code:
                code = pr.error_code
                self.cluster.handle_error_code(code)
                errs = pr.record_errors
                res = ProduceResult(
                    error_code=code, error_message=pr.error_message or str(error_for_code(code)),
                    record_errors=[(e.batch_index, e.batch_index_error_message) for e in errs] if errs else None)
            else:
                res = ProduceResult(error_code=0, base_offset=pr.base_offset,
                                    log_append_time=pr.log_append_time_ms, log_start_offset=pr.log_start_offset)
            answer.put(i, k, res)

    def init_producer_id(self, *, producer_id: int = -1, producer_epoch: int = -1,
                         transactional_id: str | None = None,
                         transaction_timeout_ms: int = 60000) -> InitProducerIdResult:
        """InitProducerId to the least-loaded broker (v3+ when bumping an epoch, KIP-360;
        older brokers hand out a new id instead), or with ``transactional_id`` to its
        transaction coordinator (:class:`~pylog.client.kafka.txn_ops.TxnOps`).  Retriable
        errors are retried for up to ``request_timeout_ms``; the last one is returned."""
        self._check_open()
        if transactional_id is not None:
            return self._txns.init_producer_id(transactional_id, transaction_timeout_ms, producer_id,
                                               producer_epoch)
        deadline = time.monotonic() + self.request_timeout_ms / 1000
        bump = producer_id >= 0

        def body(version: int) -> Any:
            req = m.InitProducerIdRequest(transactional_id=None,
                                          transaction_timeout_ms=_NON_TRANSACTIONAL_TIMEOUT_MS)
            if version >= 3 and bump:
                req.producer_id, req.producer_epoch = producer_id, producer_epoch
            return req

        while True:
            try:
                resp = self._wait(self._send_to_any(ApiKey.INIT_PRODUCER_ID, body), self.request_timeout_ms)
                res = InitProducerIdResult(error_code=resp.error_code, producer_id=resp.producer_id,
                                           producer_epoch=resp.producer_epoch)
                retriable = bool(resp.error_code) and error_for_code(resp.error_code).retriable
            except PylogError as exc:
                res = InitProducerIdResult(error_code=exc.error_code, error_message=str(exc))
                retriable = exc.retriable and not isinstance(exc, IllegalStateError)
            if not retriable or time.monotonic() + self._retry_backoff >= deadline or self._closed:
                return res
            time.sleep(self._retry_backoff)

    # ------------------------------------------------------------------ fetch

    def _take_slot(self) -> _Slot:
        with self._lock:
            if self._free_slots:
                slot = self._free_slots.pop()
            else:
                self._slot_count += 1
                slot = _Slot(self._slot_count)
            slot.owner_done = False
            slot.pending = 0
            return slot

    def _slot_finished(self, slot: _Slot) -> None:
        """The owner is done with ``slot`` (lock held); it is free once answered."""
        slot.owner_done = True
        if slot.pending == 0:
            self._free_slots.append(slot)

    def _request_done(self, slot: _Slot) -> None:
        """One request on ``slot`` answered (lock held)."""
        slot.pending -= 1
        if slot.pending == 0 and slot.owner_done:
            self._free_slots.append(slot)

    def _reconnecting(self, node: int) -> bool:
        """Whether ``node``'s connection was lost and waits out its reconnect backoff."""
        conn = self.net.connection(node)
        return (conn is not None and conn.state is ConnectionState.DISCONNECTED
                and time.monotonic() < conn.next_connect_at)

    def _send_fetches(self, parts: list[tuple[str, int, int, int]], slot: _Slot, wait_ms: int, min_bytes: int,
                      max_bytes: int, isolation_level: int, snap: MetadataSnapshot,
                      on_done: Callable[[list[tuple[str, int, int, int]], Any, BaseException | None], None],
                      ) -> list[tuple[str, int, int, int]]:
        """One Fetch per leader of ``parts`` on ``slot``'s connections; returns the parts
        with no known leader (a metadata update is requested for them)."""
        by_leader: dict[int, list[tuple[str, int, int, int]]] = {}
        leaderless = []
        for part in parts:
            leader = snap.leader_for(part[0], part[1])
            if leader is None:
                leaderless.append(part)
            else:
                by_leader.setdefault(leader, []).append(part)
        if leaderless:
            self.cluster.add_topics({p[0] for p in leaderless})
            self.cluster.request_update()
        for leader, lparts in by_leader.items():
            topics: dict[str, list[Any]] = {}
            for topic, partition, offset, part_max in lparts:
                pm = snap.topics[topic].partitions.get(partition)
                topics.setdefault(topic, []).append(m.FetchRequest.FetchPartition(
                    partition=partition, current_leader_epoch=pm.leader_epoch if pm is not None else -1,
                    fetch_offset=offset, last_fetched_epoch=-1, log_start_offset=-1,
                    partition_max_bytes=part_max))
            body = m.FetchRequest(replica_id=-1, max_wait_ms=wait_ms, min_bytes=min_bytes, max_bytes=max_bytes,
                                  isolation_level=isolation_level, session_id=0, session_epoch=-1,
                                  topics=[m.FetchRequest.FetchTopic(topic=t, partitions=ps) for t, ps in topics.items()],
                                  forgotten_topics_data=[], rack_id="")
            with self._lock:
                slot.pending += 1
            try:
                # A fetch that does not wait takes the broker's main connection, behind
                # this client's earlier requests there (an acks=0 produce is then read
                # back); a long poll takes the slot's own connection.
                node = extra_connection_id(leader, slot.number) if wait_ms > 0 else leader
                if self._reconnecting(leader) or (node != leader and self._reconnecting(node)):
                    # As Kafka's fetcher skips a node in reconnect backoff: not read this
                    # time, rather than queued until the next connect attempt (up to
                    # reconnect_backoff_max_ms), which held a poll(200) for ~1 s (#12).
                    raise NetworkError(f"broker {leader}: waiting to reconnect")
                fut = self._send(node, ApiKey.FETCH, body,
                                 timeout_ms=self.request_timeout_ms + wait_ms)
            except PylogError as exc:
                with self._lock:
                    self._request_done(slot)
                on_done(lparts, None, exc)
                continue
            fut.add_done_callback(functools.partial(self._fetch_answered, parts=lparts, slot=slot, on_done=on_done))
        return leaderless

    def _fetch_answered(self, fut: Future, parts: list[tuple[str, int, int, int]], slot: _Slot,
                        on_done: Callable[[list[tuple[str, int, int, int]], Any, BaseException | None], None]) -> None:
        exc = fut.exception()
        try:
            on_done(parts, None if exc is not None else fut.result(), exc)
        finally:
            with self._cond:
                self._request_done(slot)
                self._cond.notify_all()

    def _parse_fetch(self, parts: list[tuple[str, int, int, int]], resp: Any,
                     exc: BaseException | None) -> dict[tuple[str, int], FetchResult | None]:
        """Results of one Fetch answer by partition: None for a partition to try again
        later (its leader moved, the broker is unreachable: metadata update requested)."""
        out: dict[tuple[str, int], FetchResult | None] = {}
        if exc is not None or resp is None:
            if not isinstance(exc, IllegalStateError):
                self.cluster.request_update()
            for topic, partition, _, _ in parts:
                out[(topic, partition)] = None
            return out
        if resp.error_code:
            self.cluster.handle_error_code(resp.error_code)
            for topic, partition, _, _ in parts:
                out[(topic, partition)] = None
            return out
        for tr in resp.responses:
            for pd in tr.partitions:
                code = pd.error_code
                if code and code in _RETRY_LATER and code != _UNKNOWN_TOPIC_OR_PARTITION:
                    self.cluster.handle_error_code(code)
                    out[(tr.topic, pd.partition_index)] = None
                    continue
                if code:
                    self.cluster.handle_error_code(code)
                records: Any = _Records(pd.records) if not code else None   # ReadResult's shape
                aborted = pd.aborted_transactions
                out[(tr.topic, pd.partition_index)] = FetchResult(
                    error_code=code, high_watermark=pd.high_watermark,
                    last_stable_offset=pd.last_stable_offset, log_start_offset=pd.log_start_offset,
                    records=records,
                    aborted_transactions=None if aborted is None else [(a.producer_id, a.first_offset)
                                                                       for a in aborted])
        return out

    def _keep_completed(self, parts: list[tuple[str, int, int, int]], results: Mapping[tuple[str, int], Any],
                        isolation_level: int) -> None:
        """Keep the data of an answer nobody waits for; call the data listeners (I/O thread)."""
        with self._lock:
            got = self._keep_locked(parts, results, isolation_level, None)
        self._announce(got)

    def _keep_locked(self, parts: Sequence[tuple[str, int, int, int]], results: Mapping[tuple[str, int], Any],
                     isolation_level: int, owner: Any) -> list[tuple[str, int, int]]:
        """Keep the partitions of ``results`` that have data (lock held): an owner's
        answer read where its kept chain ends joins the chain, any other replaces what
        the partition kept.  Returns ``(topic, partition, high_watermark)`` of each, for
        :meth:`_announce`."""
        got = []
        for topic, partition, offset, _ in parts:
            res = results.get((topic, partition))
            if res is None or res.error_code or res.records is None or not res.records.size:
                continue
            key = (topic, partition)
            chain = self._completed.get(key)
            if chain is not None:
                last = chain[-1]
                if owner is None or last[3] is not owner or last[4] != offset or last[1] != isolation_level:
                    self._drop_kept(key)
                    chain = None
            # Only an owner's answer can be followed by a read-ahead: the next offset of
            # the others is not needed.
            nxt = _next_fetch_offset(res.records.records, offset) if owner is not None else -1
            entry = (offset, isolation_level, res, owner, nxt)
            if chain is None:
                self._completed[key] = [entry]
            else:
                chain.append(entry)
            self._completed_bytes += res.records.size
            self._watch.pop((topic, partition, isolation_level), None)
            got.append((topic, partition, res.high_watermark))
        return got

    def _announce(self, got: Sequence[tuple[str, int, int]]) -> None:
        for topic, partition, hw in got:
            for fn in self._data_listeners:
                try:
                    fn(topic, partition, hw)
                except Exception:  # noqa: BLE001 - a listener's bug must not stop the I/O thread
                    log.exception("data listener %r failed", fn)

    def _take_head(self, key: tuple[str, int]) -> FetchResult:
        """Take the first kept answer of ``key``'s chain out (lock held; there is one)."""
        chain = self._completed[key]
        head = chain.pop(0)
        if not chain:
            del self._completed[key]
        self._completed_bytes -= head[2].records.size  # type: ignore[union-attr]  # kept: has data
        return head[2]

    def _drop_kept(self, key: tuple[str, int]) -> None:
        """Drop every kept answer of ``key`` (lock held)."""
        chain = self._completed.pop(key, None)
        if chain is not None:
            for kept in chain:
                self._completed_bytes -= kept[2].records.size  # type: ignore[union-attr]

    def _drop_chain(self, key: tuple[str, int], owner: Any) -> None:
        """Drop ``owner``'s read-ahead of ``key``: its kept answers and its prefetch in
        flight, whose answer is thrown away when it comes (lock held)."""
        chain = self._completed.get(key)
        if chain is not None and chain[0][3] is owner:
            self._drop_kept(key)
        pf = self._prefetching.get(key)
        if pf is not None and pf.owner is owner:
            del self._prefetching[key]

    # ------------------------------------------------------------------ prefetch

    def prefetch(self, wanted: Sequence[tuple[str, int, int, int]], *, max_wait_ms: float = 0, min_bytes: int = 1,
                 max_bytes: int = DEFAULT_FETCH_MAX_BYTES, isolation_level: int = READ_UNCOMMITTED,
                 owner: Any = None) -> None:
        """Send Fetch requests (one per leader, on the fetch connections) for the
        partitions of ``wanted`` and return at once: the read-ahead of ``owner``.
        Answers with data are kept (Kafka's completed fetches) and the data listeners are
        called; a later :meth:`fetch` of the partition at the same offset and isolation
        level takes the kept answer without a round trip, and a :meth:`fetch` that finds
        the partition's prefetch still in flight at its offset waits for that answer
        (when it may wait at all) instead of asking again.

        Each partition is read ahead as a chain of up to :data:`PREFETCH_DEPTH` answers,
        kept or in flight, starting at its offset in ``wanted``: when an answer with data
        comes (on the I/O thread), the fetch at the offset after its last whole batch is
        sent at once (a truncated last batch is not counted; control batches and those of
        aborted transactions are, as the consumer counts them), and a call that finds a
        chain shorter than that with nothing in flight sends its next fetch.  One fetch of
        a chain is in flight at a time.  An answer with an error or without data, or an
        unknown leader, ends the chain (the consumer's own fetch meets the error).

        ``wanted`` is ``owner``'s whole prefetch set: its chains of partitions left out
        of ``wanted``, or whose first answer (kept or in flight) is at another offset or
        isolation level, are dropped whole (a prefetch in flight cannot be called back:
        its answer is thrown away when it comes, and no fetch follows it), so
        ``prefetch([], owner=o)`` forgets ``o``'s.

        Memory: a fetch of a partition is sent only when its ``max_bytes`` (the fourth
        field of ``wanted``) fits in the room left: ``max_bytes`` minus the bytes of all
        kept answers and those reserved by prefetches in flight (a chain's next fetch is
        bounded the same way, with this call's ``max_bytes``).  So kept bytes stay within
        ``max_bytes``, unless a single batch is larger than a partition's ``max_bytes``
        (a broker hands out the first batch whole, KIP-74).

        ``max_wait_ms`` (at most :data:`FETCH_SLICE_MS`) and ``min_bytes`` are passed to
        the broker, for a chain's later fetches too: a prefetch may be a long poll, on a
        connection of its own, so it delays no other request and no ``close()``.
        Partitions without a known leader are left out.  A closed transport does nothing.
        """
        if self._closed:
            return
        snap = self.cluster.snapshot()
        send: list[tuple[str, int, int, int]] = []
        entries: dict[tuple[str, int], _Prefetch] = {}
        with self._lock:
            if owner is not None:
                asked = {(t, p): o for t, p, o, _ in wanted}
                for key, kept in list(self._completed.items()):
                    head = kept[0]
                    if head[3] is owner and (asked.get(key) != head[0] or head[1] != isolation_level):
                        self._drop_chain(key, owner)
                for key, pf in list(self._prefetching.items()):
                    if pf.owner is not owner:
                        continue
                    first = self._completed.get(key)
                    if first is not None and first[0][3] is owner:
                        continue                # the chain's next one: its head was checked
                    if asked.get(key) != pf.offset or pf.isolation_level != isolation_level:
                        del self._prefetching[key]
            room = max_bytes - self._completed_bytes - self._prefetch_reserved
            for topic, partition, offset, part_max in wanted:
                key = (topic, partition)
                if room <= 0:
                    break
                if key in self._prefetching or key in entries or part_max > room \
                        or snap.leader_for(topic, partition) is None:
                    continue
                chain = self._completed.get(key)
                if chain is not None:
                    # The chain's next fetch, after its last kept answer.
                    last = chain[-1]
                    if len(chain) >= PREFETCH_DEPTH or chain[0][0] != offset or chain[0][1] != isolation_level \
                            or chain[0][3] is not owner or last[3] is not owner or last[4] < 0:
                        continue
                    offset = last[4]
                room -= part_max
                entries[key] = pf = _Prefetch(offset, isolation_level, owner, part_max)
                self._prefetching[key] = pf
                self._prefetch_reserved += part_max
                send.append((topic, partition, offset, part_max))
        if send:
            wait_ms = int(min(max(max_wait_ms, 0), FETCH_SLICE_MS))
            self._send_prefetches(send, entries, snap, (wait_ms, min_bytes, max_bytes, isolation_level, owner))

    def _send_prefetches(self, send: list[tuple[str, int, int, int]], entries: dict[tuple[str, int], _Prefetch],
                         snap: MetadataSnapshot, call: tuple[int, int, int, int, Any]) -> None:
        """Send the prefetches of ``send`` (registered in ``entries`` and
        ``_prefetching``), one Fetch per leader; ``call`` is ``(wait_ms, min_bytes,
        max_bytes, isolation_level, owner)`` of the prefetch call they continue."""
        by_leader: dict[int, list[tuple[str, int, int, int]]] = {}
        for part in send:
            by_leader.setdefault(snap.leader_for(part[0], part[1]), []).append(part)  # type: ignore[arg-type]
        wait_ms, min_bytes, _, isolation_level, _ = call
        on_done = functools.partial(self._prefetch_answered, entries=entries, call=call)
        slot = self._take_slot()
        try:
            for leader_parts in by_leader.values():
                self._send_fetches(leader_parts, slot, wait_ms, min_bytes, sum(p[3] for p in leader_parts),
                                   isolation_level, snap, on_done)
        finally:
            with self._lock:
                self._slot_finished(slot)

    def _prefetch_answered(self, parts: list[tuple[str, int, int, int]], resp: Any, exc: BaseException | None,
                           entries: dict[tuple[str, int], _Prefetch], call: tuple[int, int, int, int, Any]) -> None:
        """A prefetch's answer (I/O thread, or the caller's for a request that could not
        be sent): keep what came for the prefetches not dropped meanwhile, and send each
        chain's next fetch while the chain is shorter than PREFETCH_DEPTH and the room
        left allows."""
        _, _, max_bytes, isolation_level, owner = call
        results = self._parse_fetch(parts, resp, exc)
        follow: list[tuple[str, int, int, int]] = []
        nexts: dict[tuple[str, int], _Prefetch] = {}
        snap = self.cluster.snapshot()
        with self._lock:
            live = []
            for part in parts:
                key = (part[0], part[1])
                pf = entries[key]
                self._prefetch_reserved -= pf.reserved
                if self._prefetching.get(key) is pf:       # not dropped meanwhile
                    del self._prefetching[key]
                    live.append(part)
            got = self._keep_locked(live, results, isolation_level, owner)
            if got and owner is not None and not self._closed:
                room = max_bytes - self._completed_bytes - self._prefetch_reserved
                for topic, partition, _ in got:
                    key = (topic, partition)
                    chain = self._completed[key]
                    last = chain[-1]
                    part_max = entries[key].reserved
                    if len(chain) >= PREFETCH_DEPTH or last[3] is not owner or last[4] < 0 \
                            or part_max > room or key in self._prefetching \
                            or snap.leader_for(topic, partition) is None:
                        continue
                    room -= part_max
                    nexts[key] = pf = _Prefetch(last[4], isolation_level, owner, part_max)
                    self._prefetching[key] = pf
                    self._prefetch_reserved += part_max
                    follow.append((topic, partition, last[4], part_max))
        if follow:
            self._send_prefetches(follow, nexts, snap, call)
        self._announce(got)
        if self._data_listeners and not self._closed:
            # Nothing came: the watch long-polls on for asyncio consumers.
            self._watch_empty(live, [results.get((t, p)) for t, p, _, _ in live], isolation_level)

    def fetch(self, wanted: Sequence[tuple[str, int, int, int]], *, max_wait_ms: float = 0, min_bytes: int = 1,
              max_bytes: int = DEFAULT_FETCH_MAX_BYTES, isolation_level: int = READ_UNCOMMITTED,
              stop: Callable[[], bool] | None = None, owner: Any = None,
              block: bool = True) -> list[FetchResult | None]:
        self._check_open()
        n = len(wanted)
        out: list[FetchResult | None] = [None] * n
        deadline = time.monotonic() + max(max_wait_ms, 0) / 1000
        seq = self._wake_seq
        # Answers kept from earlier requests come first: the first of a chain read at
        # this offset is taken, the rest stays; a chain at another offset (the caller
        # seeked) is dropped whole, with its prefetch in flight.  Partitions with a
        # prefetch in flight at their offset "ride" on it: not asked again, its answer
        # awaited (if this call waits).
        riding: dict[tuple[str, int], int] = {}
        if self._completed or self._prefetching:
            hit = False
            with self._lock:
                for i, (topic, partition, offset, _) in enumerate(wanted):
                    key = (topic, partition)
                    chain = self._completed.get(key)
                    # Another owner's prefetch is its own (read at its time, for its position).
                    if chain is not None and (chain[0][3] is None or chain[0][3] is owner):
                        if chain[0][0] == offset and chain[0][1] == isolation_level:
                            out[i] = self._take_head(key)
                            hit = True
                            continue
                        self._drop_kept(key)
                    pf = self._prefetching.get(key)
                    if pf is not None and pf.owner is owner:
                        if pf.offset == offset and pf.isolation_level == isolation_level:
                            riding[key] = offset
                        elif owner is not None:
                            del self._prefetching[key]      # read ahead for another position
            if hit:
                return out
        if not block:
            # Only what already came: nothing is sent, nothing waited for (the asyncio
            # consumer prefetched these; an answer wakes it through the listeners).
            # A partition without a leader asks for the metadata it needs.
            snap = self.cluster.snapshot()
            leaderless = {t for t, p, _, _ in wanted if snap.leader_for(t, p) is None}
            if leaderless:
                self.cluster.add_topics(leaderless)
                self.cluster.request_update()
            return out
        if not wanted:
            self._wait_until(deadline, seq, stop)
            return out
        if riding and max_wait_ms <= 0:
            # Not read this time: the prefetch's answer is kept for the next fetch.
            rest = [i for i, w in enumerate(wanted) if (w[0], w[1]) not in riding]
            if rest:
                got = self.fetch([wanted[i] for i in rest], min_bytes=min_bytes, max_bytes=max_bytes,
                                 isolation_level=isolation_level, owner=owner)
                for i, res in zip(rest, got):
                    out[i] = res
            return out
        index = {(t, p): i for i, (t, p, _, _) in enumerate(wanted)}
        slot = self._take_slot()
        state: dict[str, Any] = {"results": {}, "outstanding": 0, "data": False}

        def on_done(parts: list[tuple[str, int, int, int]], resp: Any, exc: BaseException | None) -> None:
            results = self._parse_fetch(parts, resp, exc)
            with self._lock:
                mine = state["active"]
                if mine:
                    state["outstanding"] -= 1
                    state["results"].update(results)
                    if any(r is not None and r.records is not None and r.records.size for r in results.values()):
                        state["data"] = True
            if not mine:
                self._keep_completed(parts, results, isolation_level)

        try:
            while True:
                if max_wait_ms > 0 and stop is not None and stop():
                    break                       # asked to stop before this slice
                now = time.monotonic()
                wait_ms = int(min(max((deadline - now) * 1000, 0), FETCH_SLICE_MS))
                snap = self.cluster.snapshot()
                if any(snap.leader_for(t, p) is None for t, p, _, _ in wanted):
                    self.cluster.add_topics({t for t, _, _, _ in wanted})
                with self._lock:
                    state["results"] = {}
                    state["outstanding"] = 0
                    state["data"] = False
                    state["active"] = True
                    rode = self._ride(riding, isolation_level, owner, state["results"])
                    if state["results"]:
                        state["data"] = True
                send = [w for w in wanted if (w[0], w[1]) not in rode] if rode else list(wanted)
                by_leader = len({snap.leader_for(t, p) for t, p, _, _ in send} - {None}) if not state["data"] else 0
                with self._lock:
                    state["outstanding"] = by_leader
                leaderless = self._send_fetches(send, slot, wait_ms, min_bytes, max_bytes,
                                                isolation_level, snap, on_done) if not state["data"] else []
                # Wait for the answers: all of them, or the first with data, or a wake-up
                # that stop() accepts.  A prefetch ridden on may wait longer than this
                # call may: the deadline bounds that wait.
                stopped = False
                with self._cond:
                    while not state["data"] and (state["outstanding"] > 0 or rode):
                        if self._closed:
                            break
                        if self._wake_seq != seq:
                            seq = self._wake_seq
                            if stop is not None and stop():
                                stopped = True
                                break
                        if rode:
                            before = len(state["results"])
                            rode = self._ride(rode, isolation_level, owner, state["results"])
                            if len(state["results"]) > before:
                                state["data"] = True
                                break
                            left = deadline - time.monotonic()
                            if left <= 0:
                                rode = {}       # its answer is kept for the next fetch
                            elif rode:
                                self._cond.wait(left)
                            continue
                        self._cond.wait(FETCH_SLICE_MS / 1000 + self.request_timeout_ms / 1000)
                    state["active"] = False
                    results = state["results"]
                for key, got in results.items():
                    at = index.get(key)
                    if at is not None:
                        out[at] = got
                if stopped or self._closed or max_wait_ms <= 0 or state["data"]:
                    break
                total = 0
                final = False
                retry = bool(leaderless)
                for (topic, partition, _, _), res in zip(wanted, out):
                    if res is None:
                        # A prefetch ridden on that found nothing: asked directly next.
                        retry = retry or (topic, partition) not in riding
                    elif res.error_code == _UNKNOWN_TOPIC_OR_PARTITION:
                        retry = True
                    elif res.error_code:
                        final = True               # an error answers at once
                    elif res.records is not None:
                        total += res.records.size
                if final or total >= max(min_bytes, 1):
                    break
                if time.monotonic() >= deadline:
                    break
                if stop is not None and stop():
                    break
                if retry:
                    # A leader to find (or a topic to appear): back off, then ask again.
                    if self._wait_until(min(deadline, time.monotonic() + self._retry_backoff), seq, stop):
                        break
                    seq = self._wake_seq
        finally:
            with self._lock:
                state["active"] = False
                self._slot_finished(slot)
        if max_wait_ms <= 0 and self._data_listeners:
            self._watch_empty(wanted, out, isolation_level)
        return out

    def _ride(self, riding: Mapping[tuple[str, int], int], isolation_level: int, owner: Any,
              results: dict[tuple[str, int], Any]) -> dict[tuple[str, int], int]:
        """For a fetch by ``owner`` riding on its prefetches (lock held): move the answers
        that came with data into ``results``; returns the partitions whose prefetch is
        still in flight."""
        left = {}
        for key, offset in riding.items():
            pf = self._prefetching.get(key)
            if pf is not None and pf.owner is owner and pf.offset == offset and pf.isolation_level == isolation_level:
                left[key] = offset
                continue
            chain = self._completed.get(key)
            if chain is not None and (chain[0][3] is None or chain[0][3] is owner) and chain[0][0] == offset \
                    and chain[0][1] == isolation_level:
                results[key] = self._take_head(key)
        return left

    def _wait_until(self, deadline: float, seq: int, stop: Callable[[], bool] | None) -> bool:
        """Sleep until ``deadline``, or a wake-up ``stop()`` accepts (True), or close."""
        with self._cond:
            while not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if self._wake_seq != seq:
                    seq = self._wake_seq
                    if stop is not None and stop():
                        return True
                self._cond.wait(left)
        return True

    # ------------------------------------------------------------------ the watch

    def _watch_empty(self, wanted: Sequence[tuple[str, int, int, int]], out: Sequence[FetchResult | None],
                     isolation_level: int) -> None:
        """Put the partitions a non-waiting fetch found empty on the watch."""
        now = time.monotonic()
        start = False
        with self._lock:
            for (topic, partition, offset, part_max), res in zip(wanted, out):
                if res is None or res.error_code or (res.records is not None and res.records.size):
                    continue
                self._watch[(topic, partition, isolation_level)] = [offset, part_max, now]
            if self._watch and not self._watching and not self._closed:
                self._watching = start = True
        if start:
            self._watch_round()

    def _watch_round(self) -> None:
        """Send one long poll for the watched partitions (any thread, I/O thread included)."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k, v in self._watch.items() if now - v[2] > WATCH_IDLE_S]:
                del self._watch[key]
            if not self._watch or self._closed or not self._data_listeners:
                self._watch.clear()
                self._watching = False
                return
            by_iso: dict[int, list[tuple[str, int, int, int]]] = {}
            for (topic, partition, iso), (offset, part_max, _) in self._watch.items():
                by_iso.setdefault(iso, []).append((topic, partition, offset, part_max))
        slot = self._take_slot()
        snap = self.cluster.snapshot()
        counter = {"left": 0}
        started = 0
        for iso, parts in by_iso.items():
            counter["left"] += len({snap.leader_for(t, p) for t, p, _, _ in parts} - {None})

        def on_done(parts: list[tuple[str, int, int, int]], resp: Any, exc: BaseException | None,
                    iso: int = 0) -> None:
            results = self._parse_fetch(parts, resp, exc)
            self._keep_completed(parts, results, iso)
            with self._lock:
                counter["left"] -= 1
                last = counter["left"] == 0
            if last:
                self._watch_next(slot, exc)

        try:
            for iso, parts in by_iso.items():
                self._send_fetches(parts, slot, FETCH_SLICE_MS, 1, DEFAULT_FETCH_MAX_BYTES, iso, snap,
                                   functools.partial(on_done, iso=iso))
                started += 1
        except PylogError:
            pass
        with self._lock:
            nothing_sent = counter["left"] == 0
        if nothing_sent:
            self._watch_next(slot, None)

    def _watch_next(self, slot: _Slot, exc: BaseException | None) -> None:
        with self._lock:
            self._slot_finished(slot)
        if exc is not None or not self.cluster.snapshot().nodes:
            # Broker unreachable or leaders unknown: again after a back-off, from a timer.
            t = threading.Timer(self._retry_backoff, self._watch_round)
            t.daemon = True
            t.start()
            return
        self._watch_round()

    # ------------------------------------------------------------------ offsets

    @staticmethod
    def _split_repeated(requests: Sequence[tuple[str, int, int]],
                        by_leader: dict[int, list[int]]) -> list[tuple[int, list[int]]]:
        """One ListOffsets per leader, or more where a partition is asked for more than
        once (start and end offsets, say): a broker refuses a request that names a
        partition twice (INVALID_REQUEST, as Kafka's does)."""
        out: list[tuple[int, list[int]]] = []
        for leader, idx in by_leader.items():
            rounds: list[tuple[set[tuple[str, int]], list[int]]] = []
            for i in idx:
                tp = requests[i][0], requests[i][1]
                for seen, members in rounds:
                    if tp not in seen:
                        break
                else:
                    seen, members = set(), []
                    rounds.append((seen, members))
                seen.add(tp)
                members.append(i)
            out.extend((leader, members) for _, members in rounds)
        return out

    def list_offsets(self, requests: Sequence[tuple[str, int, int]], *,
                     isolation_level: int = READ_UNCOMMITTED) -> list[ListOffsetsResult]:
        """ListOffsets per leader; partitions whose leader moved (or whose broker is
        unreachable, or whose new leader answers OFFSET_NOT_AVAILABLE or, before its
        metadata caught up, UNKNOWN_TOPIC_OR_PARTITION) are asked again after a metadata
        update, for up to ``request_timeout_ms``, as Kafka's consumer does.  A result
        still failing then names its partition in ``error_message``."""
        self._check_open()
        out: list[ListOffsetsResult | None] = [None] * len(requests)
        todo = list(range(len(requests)))
        deadline = time.monotonic() + self.request_timeout_ms / 1000
        snap = self._leaders({t for t, _, _ in requests})
        while True:
            by_leader: dict[int, list[int]] = {}
            retry = []
            for i in todo:
                topic, partition, _ = requests[i]
                leader = snap.leader_for(topic, partition)
                if leader is not None:
                    by_leader.setdefault(leader, []).append(i)
                    continue
                t = snap.topics.get(topic)
                if t is None or t.error_code == _UNKNOWN_TOPIC_OR_PARTITION or (
                        not t.error_code and partition not in t.partitions):
                    out[i] = ListOffsetsResult(error_code=_UNKNOWN_TOPIC_OR_PARTITION,
                                               error_message=f"{topic}-{partition} does not exist")
                elif t.error_code and t.error_code not in _RETRY_LATER:
                    out[i] = ListOffsetsResult(error_code=t.error_code)
                else:
                    out[i] = ListOffsetsResult(error_code=_LEADER_NOT_AVAILABLE)
                    retry.append(i)
            futures: list[tuple[list[int], Future | None, PylogError | None]] = []
            for leader, idx in self._split_repeated(requests, by_leader):
                topics: dict[str, list[Any]] = {}
                for i in idx:
                    topic, partition, ts = requests[i]
                    pm = snap.topics[topic].partitions.get(partition)
                    topics.setdefault(topic, []).append(m.ListOffsetsRequest.ListOffsetsPartition(
                        partition_index=partition, timestamp=ts, max_num_offsets=1,
                        current_leader_epoch=pm.leader_epoch if pm is not None else -1))
                body = m.ListOffsetsRequest(replica_id=-1, isolation_level=isolation_level,
                                            topics=[m.ListOffsetsRequest.ListOffsetsTopic(name=t, partitions=ps)
                                                    for t, ps in topics.items()])
                try:
                    futures.append((idx, self._send(leader, ApiKey.LIST_OFFSETS, body), None))
                except PylogError as send_exc:
                    futures.append((idx, None, send_exc))
            for idx, fut, failed in futures:
                resp: Any = None
                exc: PylogError | None = failed
                if fut is not None:
                    try:
                        resp = self._wait(fut, self.request_timeout_ms)
                    except PylogError as e:
                        exc = e
                if exc is not None:
                    for i in idx:
                        out[i] = ListOffsetsResult(error_code=exc.error_code, error_message=str(exc))
                        if exc.retriable and not isinstance(exc, IllegalStateError):
                            retry.append(i)
                    continue
                answers = {(tr.name, pr.partition_index): pr for tr in resp.topics for pr in tr.partitions}
                for i in idx:
                    topic, partition, _ = requests[i]
                    pr = answers.get((topic, partition))
                    if pr is None:
                        out[i] = ListOffsetsResult(error_code=_UNKNOWN_TOPIC_OR_PARTITION)
                        continue
                    code = pr.error_code
                    if code:
                        self.cluster.handle_error_code(code)
                        out[i] = ListOffsetsResult(error_code=code, error_message=(
                            f"{topic}-{partition}: ListOffsets answered {error_for_code(code).kafka_name}"))
                        if code in _RETRY_LATER:     # (a partition the metadata named: its leader answered)
                            retry.append(i)
                        continue
                    offset = pr.offset
                    if offset is None or (offset == -1 and pr.old_style_offsets):
                        offset = pr.old_style_offsets[0] if pr.old_style_offsets else -1
                    out[i] = ListOffsetsResult(error_code=0, timestamp=pr.timestamp, offset=offset,
                                               leader_epoch=pr.leader_epoch)
            if not retry or self._closed or time.monotonic() + self._retry_backoff >= deadline:
                return out  # type: ignore[return-value]
            todo = retry
            self.cluster.request_update()
            attempts = self.cluster.attempts
            self.cluster.wait_for_update(attempts, min(self._retry_backoff * 5, max(deadline - time.monotonic(), 0)))
            snap = self.cluster.snapshot()

    def list_offsets_async(self, requests: Sequence[tuple[str, int, int]], *,
                           isolation_level: int = READ_UNCOMMITTED) -> Future:
        """:meth:`list_offsets` without waiting: a future of its results.  Its rounds
        (a metadata update and a backoff between them) run on a short-lived daemon
        thread of their own, which ends with the call (at most about
        ``request_timeout_ms``); position lookups are rare (an assignment, a reset), so a
        thread each costs little, and no caller's thread waits on a slow leader."""
        self._check_open()
        fut: Future = Future()
        fut.set_running_or_notify_cancel()

        def run() -> None:
            try:
                fut.set_result(self.list_offsets(requests, isolation_level=isolation_level))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                fut.set_exception(exc)

        threading.Thread(target=run, name="pylog-list-offsets", daemon=True).start()
        return fut

    # ------------------------------------------------------------------ metadata

    def topic_metadata(self, topic: str, *, create: bool = True, wait_ms: int = 0) -> tuple[int, int]:
        self._check_open()
        started = time.monotonic()
        self.cluster.add_topics((topic,))       # followed by the periodic updates from now on
        snap = self.cluster.snapshot()
        t = snap.topics.get(topic)
        if t is None or t.error_code:
            snap = self._wait(self.net.refresh_metadata(
                [topic], allow_auto_topic_creation=create and self.allow_auto_create_topics), self.request_timeout_ms)
            t = snap.topics.get(topic)
            code = t.error_code if t is not None else _UNKNOWN_TOPIC_OR_PARTITION
            if code == _UNKNOWN_TOPIC_OR_PARTITION:
                left = wait_ms / 1000 - (time.monotonic() - started)
                if left <= 0:
                    raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
                # Another client may have just created it, and the broker asked may not
                # know it yet: wait for it as Kafka's producer does (max.block.ms).
                t = self.net.wait_for_metadata([topic], timeout=left)[topic]
                return len(t.partitions), self._max_bytes(topic)
            if code and not error_for_code(code).retriable:
                raise error_for_code(code, f"topic {topic!r}: metadata error {code}")
            if code or not t.partitions:    # being created: its leaders come with an update
                t = self.net.wait_for_metadata([topic])[topic]
        return len(t.partitions), self._max_bytes(topic)

    def _max_bytes(self, topic: str) -> int:
        cached = self._max_message_bytes.get(topic)
        now = time.monotonic()
        if cached is not None and now < cached[1]:
            return cached[0]
        value = DEFAULT_MAX_MESSAGE_BYTES
        body = m.DescribeConfigsRequest(
            resources=[m.DescribeConfigsRequest.DescribeConfigsResource(
                resource_type=_TOPIC_RESOURCE, resource_name=topic, configuration_keys=["max.message.bytes"])],
            include_synonyms=False, include_documentation=False)
        try:
            resp = self._wait(self._send_to_any(ApiKey.DESCRIBE_CONFIGS, body), self.request_timeout_ms)
            for r in resp.results:
                if r.error_code:
                    continue
                for c in r.configs:
                    if c.name == "max.message.bytes" and c.value is not None:
                        value = int(c.value)
        except (PylogError, ValueError) as exc:
            log.debug("DescribeConfigs of %r failed (%s): using max.message.bytes=%d", topic, exc, value)
            if isinstance(exc, (NetworkError, RequestTimedOutError)) and cached is not None:
                return cached[0]
        self._max_message_bytes[topic] = (value, now + self.cluster.metadata_max_age)
        return value

    def partition_counts(self, topics: Iterable[str], *, wait: bool = True) -> dict[str, int] | None:
        self._check_open()
        names = list(dict.fromkeys(topics))
        snap = self.cluster.snapshot()
        if any(t not in snap.topics for t in names):
            self.cluster.add_topics(names)
            if not wait:
                self._refresh_in_background(names)
                return None
            try:
                snap = self._wait(self.net.refresh_metadata(names), self.request_timeout_ms)
            except PylogError as exc:
                log.debug("metadata of %s failed: %s", names, exc)
                snap = self.cluster.snapshot()
        out = {}
        for name in names:
            t = snap.topics.get(name)
            if t is not None and not t.error_code and t.partitions:
                out[name] = len(t.partitions)
        return out

    def _refresh_in_background(self, names: list[str]) -> None:
        """A metadata update of ``names`` nobody waits for (one at a time); the wake
        listeners are called when it ends, so an asyncio consumer looks again."""
        with self._lock:
            if self._background_refresh is not None and not self._background_refresh.done():
                return
            try:
                fut = self._background_refresh = self.net.refresh_metadata(names)
            except PylogError as exc:
                log.debug("metadata update of %s failed: %s", names, exc)
                return
        fut.add_done_callback(lambda _f: self._call_wake_listeners())

    # ------------------------------------------------------------------ readiness

    def clock(self) -> int:
        return time.time_ns() // 1_000_000

    def wake(self) -> None:
        with self._cond:
            self._wake_seq += 1
            self._cond.notify_all()
        self._call_wake_listeners()

    def _call_wake_listeners(self) -> None:
        for fn in self._wake_listeners:
            try:
                fn()
            except Exception:  # noqa: BLE001
                log.exception("wake listener %r failed", fn)

    def add_data_listener(self, fn: Callable[[str, int, int], object]) -> None:
        with self._lock:
            self._data_listeners = self._data_listeners + (fn,)

    def remove_data_listener(self, fn: Callable[[str, int, int], object]) -> None:
        with self._lock:
            ls = list(self._data_listeners)
            if fn in ls:
                ls.remove(fn)
            self._data_listeners = tuple(ls)

    def add_wake_listener(self, fn: Callable[[], object]) -> None:
        with self._lock:
            self._wake_listeners = self._wake_listeners + (fn,)

    def remove_wake_listener(self, fn: Callable[[], object]) -> None:
        with self._lock:
            ls = list(self._wake_listeners)
            if fn in ls:
                ls.remove(fn)
            self._wake_listeners = tuple(ls)

    # ------------------------------------------------------------------ life cycle

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._watch.clear()
            self._completed.clear()
            self._completed_bytes = 0
            self._prefetching.clear()
            self._cond.notify_all()
        self.net.close()

    def __enter__(self) -> KafkaTransport:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<KafkaTransport {self.net._bootstrap_text()}{' closed' if self._closed else ''}>"
