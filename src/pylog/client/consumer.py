"""The consumer: Kafka's consumer semantics over a :class:`~pylog.client.transport.Transport`.

Partitions come either from :meth:`Consumer.assign` (manual) or from a consumer group
(:meth:`Consumer.subscribe`, with ``group_id``): the consumer speaks Kafka's classic group
protocol with the group coordinator through the transport (embedded: the broker core's
coordinator, the same one the wire-protocol server's JoinGroup/SyncGroup/Heartbeat
handlers call).  The member chosen as leader runs the
assignor (``range``, ``roundrobin`` or ``cooperative-sticky``, Kafka's Java assignors,
byte-compatible) over every member's subscription.  With eager assignors every member
revokes everything before rejoining; with cooperative-sticky only partitions that move are
revoked, and they are handed to their new owner in a second rebalance; either way a
partition is never assigned to two members of one generation.

Fetching asks the transport for every assigned partition that has nothing buffered in
one call (``fetch_max_bytes`` in all, ``max_partition_fetch_bytes`` each; embedded these
are zero-copy :class:`~pylog.storage.ReadResult` views of the partition logs) and decodes
whole batches into :class:`ConsumerRecord` objects in one C loop
(``pylog._core.decode_fetched``); ``poll`` hands them out ``max_records`` at a time.  When
nothing is there, ``poll`` waits in the transport's fetch (``fetch_min_bytes``, up to its
timeout) without holding the consumer's lock, and keeps what that fetch brought.
Ordering within a partition is exactly append order.  Before a poll hands records out,
every partition's next fetch, from where its buffer ends, is started
(:meth:`Transport.prefetch <pylog.client.transport.Transport.prefetch>`, as Kafka's
consumer sends its next fetches then): over the network the next answers are on their
way while the caller processes (the Kafka transport reads a chain of up to
:data:`~pylog.client.kafka.transport.PREFETCH_DEPTH` answers ahead per partition, as
librdkafka fills its queue ahead of the application).  The transport hands an answer
over only for a fetch at the offset it was read at, so a seek, reset, pause or rebalance
never gets records read ahead for an old position.  Once a poll holds records it fills up only
from answers already there (embedded: the logs; network: fetches already answered) and
never waits on a round trip for more.

Columnar reading: :meth:`Consumer.poll_batches` hands out the fetched batches themselves,
as :class:`ConsumerBatch` views of the fetched bytes (embedded: the mapped segment, which
storage keeps mapped while a view lives; remote: the Fetch response), each cut to the
records at or after the position, with numpy columns (:class:`ConsumerColumns`) decoded
in C.  Python touches batches, never records: CRCs are checked per batch in C, control
batches skipped, positions moved per batch.  A partition's buffer holds what one kind of
poll fetched; the other kind drops it and reads again from the position, so mixing them
neither loses nor repeats a record.

Delivery is at-least-once: positions advance as records are returned, and commits (manual
or auto-commit every ``auto_commit_interval_ms``, and before partitions are revoked)
store the position, the next offset to read.  Committed offsets live in
``__consumer_offsets`` and survive restarts.

Positions follow Kafka's fetch states: a partition assigned without a position first
takes the group's committed offset, and ``auto_offset_reset`` applies only when there is
none (or the position fell out of the log's range).  The lookups (OffsetFetch,
ListOffsets) do not block: ``poll`` waits for them no longer than its timeout (at least
a round trip, :data:`_LOOKUP_GRACE_S`), a partition is not fetched until its position
is known, and a retriable failure (a coordinator loading after a failover, a new leader
answering OFFSET_NOT_AVAILABLE) is looked up again later, never replaced by the reset
policy.

Poison pills: when ``key_deserializer`` or ``value_deserializer`` raises,
``on_deserialization_error`` decides: ``"raise"`` (default) raises
:class:`~pylog.errors.RecordDeserializationError` naming topic, partition and offset (the
position stays on the record: ``seek`` past it to go on), ``"skip"`` logs and skips it,
``"dead_letter"`` appends the raw record to ``dead_letter_topic`` with headers saying why
and where it came from, then goes on.

asyncio: :class:`~pylog.client.aio.AIOConsumer` drives this same code through
``_poll_nowait``, a poll round in which nothing waits on the network: fetches go out as
prefetches and only answers already there are taken, position lookups and JoinGroup /
SyncGroup advance as their answers come, the commit before revoking partitions is sent
and the next JoinGroup waits for it, and a leader lacking a member's topic metadata
assigns once a background update brought it.

Closing is bounded as Kafka's ``close(Duration)``: :meth:`Consumer.close` waits for the
final commit, the LeaveGroup and the heartbeat thread no longer than its ``timeout``
(30 s by default).

Threads: every public method may be called from any thread (calls are serialised; a
blocking ``poll`` does not hold the lock while it waits for data).  Rebalance listener
callbacks run in the thread that calls ``poll``.  Group members heartbeat from a
background thread (``heartbeat_thread=True``), so processing between polls may take up
to ``max_poll_interval_ms``; a consumer that does not poll for that long leaves the group.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple

from pylog import _core
from pylog.broker.assignors import COOPERATIVE, ConsumerPartitionAssignor, assignor_for_name
from pylog.broker.consumer_protocol import (PROTOCOL_TYPE, Assignment, Subscription, decode_assignment,
                                            decode_subscription, encode_assignment, encode_subscription)
from pylog.broker.core import OffsetAndMetadata, TopicPartition
from pylog.broker.group import CommitOffset, MemberIdentity, PendingResponse
from pylog.errors import (CommitFailedError, CorruptRecordError, FencedInstanceIdError, IllegalGenerationError, IllegalStateError,
                          InvalidConfigError, InvalidGroupIdError, InvalidRequestError, MemberIdRequiredError,
                          NoOffsetForPartitionError, OffsetOutOfRangeError, PylogError,
                          RebalanceInProgressError, RecordDeserializationError, RequestTimedOutError,
                          TopicAlreadyExistsError,
                          UnknownMemberIdError, UnknownTopicOrPartitionError, error_for_code)

__all__ = ["Consumer", "ConsumerBatch", "ConsumerColumns", "ConsumerRecord", "ConsumerRebalanceListener",
           "OffsetAndTimestamp", "ConsumerGroupMetadata"]

ConsumerRecord = _core.ConsumerRecord
_log = logging.getLogger("pylog.client.consumer")

_E_REBALANCE = RebalanceInProgressError.error_code
_E_ILLEGAL_GENERATION = IllegalGenerationError.error_code
_E_UNKNOWN_MEMBER = UnknownMemberIdError.error_code
_E_MEMBER_ID_REQUIRED = MemberIdRequiredError.error_code
_E_FENCED = FencedInstanceIdError.error_code
_E_OFFSET_OUT_OF_RANGE = OffsetOutOfRangeError.error_code
_E_UNKNOWN_TOPIC = UnknownTopicOrPartitionError.error_code
_E_UNSTABLE_OFFSET_COMMIT = 88
_E_UNKNOWN_SERVER_ERROR = -1
#: How long a read_committed consumer waits for a transaction's pending offset commit
#: to end (UNSTABLE_OFFSET_COMMIT), and how often it asks again.
_UNSTABLE_WAIT_S = 30.0
_UNSTABLE_BACKOFF_S = 0.05
#: After a position lookup (OffsetFetch, ListOffsets) failed with a retriable error, the
#: next one waits this long (Kafka's retry.backoff.ms).
_LOOKUP_BACKOFF_S = 0.1
#: The least a poll waits for a position lookup (even ``poll(0)``): enough for a healthy
#: broker's answer, so that a poll right after ``assign`` or a rebalance reads at once.
_LOOKUP_GRACE_S = 0.1

#: The default bound of :meth:`Consumer.close` (Kafka's DEFAULT_CLOSE_TIMEOUT_MS).
_CLOSE_TIMEOUT_S = 30.0
_NO_BLOCK = {"block": False}

_UNJOINED, _JOINING, _SYNCING, _STABLE = "unjoined", "joining", "syncing", "stable"
_POLICIES = ("raise", "skip", "dead_letter")
_DLQ_PREFIX = "pylog.dlq."


class _AbortedFilter:
    """read_committed, as Kafka's Fetcher does it: drops the transactional batches of
    producers with an aborted transaction (the fetch answer's ``aborted_transactions``,
    ``(producer_id, first_offset)``) from that first offset up to the producer's ABORT
    marker.  Fed the batches of one answer in offset order; looks at batch headers and at
    the one record of a control batch, never at data records."""

    __slots__ = ("_pending", "_next", "_aborted")

    def __init__(self, aborted: list[tuple[int, int]]) -> None:
        self._pending = sorted(aborted, key=lambda a: a[1])
        self._next = 0
        self._aborted: set[int] = set()

    def keep(self, batch: Any) -> bool:
        pid = batch.producer_id
        if pid < 0:
            return True
        pending = self._pending
        last = batch.last_offset
        while self._next < len(pending) and pending[self._next][1] <= last:
            self._aborted.add(pending[self._next][0])
            self._next += 1
        if batch.is_control:
            records = batch.records()
            key = records[0].key if records else None
            # A control record's key: version int16, type int16 (0 ABORT, 1 COMMIT).
            if key is not None and len(key) >= 4 and key[2] == 0 and key[3] == 0:
                self._aborted.discard(pid)
            return True        # (control batches are skipped when records are read)
        return not (batch.is_transactional and pid in self._aborted)


def _committed_runs(buf: Any, aborted: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], int]:
    """The byte ranges of ``buf`` (whole v2 batches) that a read_committed consumer keeps,
    and the offset after the last whole batch (-1: none)."""
    keep = _AbortedFilter(aborted).keep
    runs: list[tuple[int, int]] = []
    run_start = -1
    end_offset = -1
    it = _core.iter_batches(buf, check_crc=False)      # (kept batches are checked when decoded)
    pos = 0
    for b in it:
        start, pos = pos, it.position
        end_offset = b.next_offset
        if keep(b):
            if run_start < 0:
                run_start = start
        elif run_start >= 0:
            runs.append((run_start, start))
            run_start = -1
    if run_start >= 0:
        runs.append((run_start, pos))
    return runs, end_offset


class OffsetAndTimestamp(NamedTuple):
    offset: int
    timestamp: int
    leader_epoch: int = -1


class ConsumerGroupMetadata(NamedTuple):
    """A consumer's group membership as a transactional producer sends it with its
    offsets (:meth:`Producer.send_offsets_to_transaction
    <pylog.client.producer.Producer.send_offsets_to_transaction>`, KIP-447): the group
    coordinator refuses the offsets of a member that was fenced by a rebalance."""

    group_id: str
    generation_id: int = -1
    member_id: str = ""
    group_instance_id: str | None = None


class ConsumerRebalanceListener:
    """Called in ``poll`` when the group changes this member's partitions.

    ``on_partitions_revoked`` runs before partitions are taken away (commit what you
    processed: auto-commit already does), ``on_partitions_assigned`` after new ones are
    given, ``on_partitions_lost`` when the member was dropped from the group (its
    partitions may already belong to another member: do not commit); by default it calls
    ``on_partitions_revoked``.
    """

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.on_partitions_revoked(lost)


class ConsumerColumns:
    """The columns of the records a :class:`ConsumerBatch` delivers: numpy views (no
    copy) of a :class:`~pylog.records.RecordColumns`, cut to the records at or after the
    consumer's position (and before the ``max_records`` cut), so that index 0 is the first
    record delivered and ``len()`` is the number delivered.

    Attributes
    ----------
    offsets, timestamps : ndarray of int64
    key_offsets, value_offsets, header_offsets : ndarray of int64
        Where each key, value and header section starts in :attr:`buffer`.
    key_lengths, value_lengths, header_counts : ndarray of int32
        -1 for a null key or value.
    buffer : memoryview
        The batch's uncompressed records section (a view of the fetched bytes when the
        batch is not compressed): ``buffer[value_offsets[i]:value_offsets[i] +
        value_lengths[i]]`` is the value of record ``i``.
    columns : RecordColumns
        The whole batch's columns (records before the position included) ...
    start : int
        ... of which these are the records from index ``start`` on.

    The arrays are read-only and stay valid as long as this object lives.
    """

    __slots__ = ("columns", "start", "offsets", "timestamps", "key_offsets", "key_lengths", "value_offsets",
                 "value_lengths", "header_offsets", "header_counts")

    def __init__(self, columns: Any, start: int, stop: int) -> None:
        self.columns: Any = columns
        self.start = start
        c = columns
        whole = start == 0 and stop == len(c)
        cut = slice(start, stop)
        # numpy slices are views: nothing is copied either way.
        self.offsets: Any = c.offsets if whole else c.offsets[cut]
        self.timestamps: Any = c.timestamps if whole else c.timestamps[cut]
        self.key_offsets: Any = c.key_offsets if whole else c.key_offsets[cut]
        self.key_lengths: Any = c.key_lengths if whole else c.key_lengths[cut]
        self.value_offsets: Any = c.value_offsets if whole else c.value_offsets[cut]
        self.value_lengths: Any = c.value_lengths if whole else c.value_lengths[cut]
        self.header_offsets: Any = c.header_offsets if whole else c.header_offsets[cut]
        self.header_counts: Any = c.header_counts if whole else c.header_counts[cut]

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def buffer(self) -> memoryview:
        return self.columns.buffer

    def _index(self, i: int) -> int:
        n = len(self.offsets)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record index {i} out of range for {n} records")
        return self.start + i

    def key(self, i: int) -> bytes | None:
        """Key of record ``i`` (bytes or None)."""
        return self.columns.key(self._index(i))

    def value(self, i: int) -> bytes | None:
        """Value of record ``i`` (bytes or None)."""
        return self.columns.value(self._index(i))

    def headers(self, i: int) -> tuple:
        """Headers of record ``i``: a tuple of (str, bytes or None)."""
        return self.columns.headers(self._index(i))

    def keys(self) -> list:
        """Every key as bytes or None (one object per record: not for hot loops)."""
        return self.columns.keys()[self.start:self.start + len(self.offsets)]

    def values(self) -> list:
        """Every value as bytes or None (one object per record: not for hot loops)."""
        return self.columns.values()[self.start:self.start + len(self.offsets)]


class ConsumerBatch:
    """The records of one fetched v2 record batch that :meth:`Consumer.poll_batches`
    delivers: a zero-copy view, raw bytes (no deserializers).

    Attributes
    ----------
    topic : str
    partition : int
    batch : RecordBatch
        The whole batch as fetched, a view of the fetched bytes (embedded: the mapped
        segment; remote: the Fetch response), header fields and all.  It may begin
        before the records delivered (after a ``seek`` into it, or when ``poll`` or a
        ``max_records`` cut took its first records): read records through
        :meth:`columns`, which holds only the delivered ones.
    start, stop : int
        The delivered records are ``batch``'s records ``start`` to ``stop - 1`` (by
        index in the batch).
    next_offset : int
        The consumer's position after this batch: what a commit stores.

    ``len(batch_item)`` is the number of records delivered (at least 1).
    """

    __slots__ = ("topic", "partition", "batch", "start", "stop", "next_offset", "_columns")

    def __init__(self, topic: str, partition: int, batch: Any, start: int, stop: int, next_offset: int,
                 columns: Any = None) -> None:
        self.topic = topic
        self.partition = partition
        self.batch: Any = batch
        self.start = start
        self.stop = stop
        self.next_offset = next_offset
        self._columns = columns

    def __len__(self) -> int:
        return self.stop - self.start

    def columns(self) -> ConsumerColumns:
        """The delivered records as numpy columns (decoded in C, once per batch; a
        compressed batch is decompressed then).

        Raises
        ------
        CorruptRecordError
            A record of the batch is malformed.
        """
        cols = self._columns
        if not isinstance(cols, ConsumerColumns):
            cols = self._columns = ConsumerColumns(cols if cols is not None else self.batch.columns(),
                                                   self.start, self.stop)
        return cols

    def __repr__(self) -> str:
        return (f"<ConsumerBatch {self.topic}-{self.partition}: {self.stop - self.start} records up to offset "
                f"{self.next_offset - 1}, of the batch at base offset {self.batch.base_offset} "
                f"({self.batch.compression})>")


class _PartitionState:
    __slots__ = ("position", "await_reset", "paused", "pending", "idx", "next_fetch", "fail", "leader_epoch",
                 "high_watermark", "batches", "bidx", "head_columns", "batch_error")

    def __init__(self) -> None:
        # None: not known yet (Kafka's INITIALIZING: the committed offset is looked up,
        # or, with ``await_reset``, AWAIT_RESET: auto_offset_reset is applied).  Such a
        # partition is not fetched until a lookup sets it.
        self.position: int | None = None
        self.await_reset = False
        self.paused = False
        # What poll serves: decoded records ...
        self.pending: list = []
        self.idx = 0
        self.fail: tuple | None = None
        # ... or what poll_batches serves: batch views (never both at once).
        self.batches: list = []
        self.bidx = 0
        self.head_columns = None          # the decoded columns of batches[bidx], when known
        self.batch_error: PylogError | None = None
        self.next_fetch = -1
        self.leader_epoch = -1
        self.high_watermark = -1

    def drop_fetched(self) -> None:
        self.pending = []
        self.idx = 0
        self.fail = None
        self.batches = []
        self.bidx = 0
        self.head_columns = None
        self.batch_error = None

    def buffered(self) -> bool:
        """Whether something fetched is still to be served (or raised)."""
        return (self.idx < len(self.pending) or self.fail is not None or self.bidx < len(self.batches)
                or self.batch_error is not None)


def _tp(value: Any) -> TopicPartition:
    try:
        topic, partition = value
    except (TypeError, ValueError):
        raise InvalidRequestError(f"{value!r} is not a (topic, partition) pair") from None
    if not isinstance(topic, str) or isinstance(partition, bool) or not isinstance(partition, int):
        raise InvalidRequestError(f"{value!r} is not a (str topic, int partition) pair")
    return TopicPartition(topic, partition)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Consumer:
    """A consumer over a :class:`~pylog.client.transport.Transport`.

    Usually made with ``client.consumer(*topics, ...)`` (:class:`~pylog.client.client.Client`).
    Settings are Kafka's consumer configs in snake_case.

    :meth:`poll` returns :class:`ConsumerRecord` objects; :meth:`poll_batches` returns
    the fetched record batches as zero-copy :class:`ConsumerBatch` views with numpy
    columns, raw bytes without deserializers, for code that processes records in bulk::

        for item in consumer.poll_batches(timeout_ms=1000):
            cols = item.columns()          # only the records at or after the position
            total += int(cols.value_lengths.sum())

    Both move the same positions and run the same group protocol; they may be mixed.

    Parameters
    ----------
    transport : Transport
    *topics : str
        Subscribe to these at once (needs ``group_id``).
    group_id : str, optional
        Needed for ``subscribe`` and for commits.
    group_instance_id : str, optional
        Static membership (KIP-345): a restart within ``session_timeout_ms`` keeps the
        member's partitions without a rebalance.
    auto_offset_reset : {"latest", "earliest", "none"}
        Where to start without a committed offset (or when it is out of range).
    enable_auto_commit : bool, auto_commit_interval_ms : int
        Default True, 5000.
    session_timeout_ms, heartbeat_interval_ms, max_poll_interval_ms : int
        Defaults 45000, 3000, 300000 (Kafka's).
    max_poll_records : int
        Default 500.
    max_partition_fetch_bytes : int
        Default 1 MiB: how much of one partition is read at a time.
    fetch_max_bytes : int
        Default 50 MiB (Kafka's): how much one fetch of several partitions reads in all.
    fetch_min_bytes : int
        Default 1: a waiting fetch returns once this much is there (embedded: any data).
    fetch_max_wait_ms : int
        Default 500: the longest a network fetch waits on the broker (``poll``'s timeout
        bounds the whole wait).
    partition_assignment_strategy : sequence of str or assignors
        Default ``("range", "cooperative-sticky")`` (Kafka's): eager while one of them is
        eager.
    key_deserializer, value_deserializer : callable, optional
    on_deserialization_error : {"raise", "skip", "dead_letter"}
    dead_letter_topic : str, optional
        For ``"dead_letter"`` (default ``<topic>.DLQ``, created like the source topic if
        missing).
    check_crcs : bool
        Check each fetched batch's CRC32C (default True).
    isolation_level : {"read_uncommitted", "read_committed"}
    client_id : str
    heartbeat_thread : bool
        Heartbeat from a background thread (default); without it, ``poll`` heartbeats.
    default_api_timeout_ms : int
        Default 60000 (Kafka's): how long :meth:`position` keeps looking a position up.

    Raises
    ------
    InvalidConfigError
        A bad setting.
    """

    def __init__(self, transport, *topics: str, group_id: str | None = None, group_instance_id: str | None = None,
                 auto_offset_reset: str = "latest", enable_auto_commit: bool = True,
                 auto_commit_interval_ms: int = 5000, session_timeout_ms: int = 45_000,
                 heartbeat_interval_ms: int = 3000, max_poll_interval_ms: int = 300_000,
                 max_poll_records: int = 500, max_partition_fetch_bytes: int = 1024 * 1024,
                 fetch_max_wait_ms: int = 500, fetch_min_bytes: int = 1,
                 fetch_max_bytes: int = 52_428_800,
                 partition_assignment_strategy: Iterable[str | ConsumerPartitionAssignor] = ("range", "cooperative-sticky"),
                 key_deserializer: Callable[[bytes | None], Any] | None = None,
                 value_deserializer: Callable[[bytes | None], Any] | None = None,
                 on_deserialization_error: str = "raise", dead_letter_topic: str | None = None,
                 check_crcs: bool = True, isolation_level: str = "read_uncommitted",
                 client_id: str = "pylog-consumer", heartbeat_thread: bool = True,
                 listener: ConsumerRebalanceListener | None = None, default_api_timeout_ms: int = 60_000) -> None:
        def positive(name: str, v: Any, minimum: int = 1) -> int:
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise InvalidConfigError(f"{name} must be an int >= {minimum}, got {v!r}")
            return v

        if group_id is not None and (not isinstance(group_id, str) or not group_id):
            raise InvalidConfigError(f"group_id must be a non-empty str, got {group_id!r}")
        if auto_offset_reset not in ("latest", "earliest", "none"):
            raise InvalidConfigError(f"auto_offset_reset must be latest, earliest or none, got {auto_offset_reset!r}")
        if on_deserialization_error not in _POLICIES:
            raise InvalidConfigError(
                f"on_deserialization_error must be one of {', '.join(_POLICIES)}, got {on_deserialization_error!r}")
        if isolation_level not in ("read_uncommitted", "read_committed"):
            raise InvalidConfigError(f"isolation_level must be read_uncommitted or read_committed, got {isolation_level!r}")
        for name, fn in (("key_deserializer", key_deserializer), ("value_deserializer", value_deserializer)):
            if fn is not None and not callable(fn):
                raise InvalidConfigError(f"{name} must be callable, got {fn!r}")
        self.session_timeout_ms = positive("session_timeout_ms", session_timeout_ms)
        self.heartbeat_interval_ms = positive("heartbeat_interval_ms", heartbeat_interval_ms)
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise InvalidConfigError("heartbeat_interval_ms must be lower than session_timeout_ms")
        self.max_poll_interval_ms = positive("max_poll_interval_ms", max_poll_interval_ms)
        self.max_poll_records = positive("max_poll_records", max_poll_records)
        self.max_partition_fetch_bytes = positive("max_partition_fetch_bytes", max_partition_fetch_bytes)
        self.fetch_max_wait_ms = positive("fetch_max_wait_ms", fetch_max_wait_ms, 0)
        self.fetch_min_bytes = positive("fetch_min_bytes", fetch_min_bytes, 0)
        self.fetch_max_bytes = positive("fetch_max_bytes", fetch_max_bytes)
        self.auto_commit_interval_ms = positive("auto_commit_interval_ms", auto_commit_interval_ms)
        self.default_api_timeout_ms = positive("default_api_timeout_ms", default_api_timeout_ms)
        assignors: list[ConsumerPartitionAssignor] = []
        for a in partition_assignment_strategy:
            assignors.append(assignor_for_name(a) if isinstance(a, str) else a)
        if not assignors or not all(isinstance(a, ConsumerPartitionAssignor) for a in assignors):
            raise InvalidConfigError("partition_assignment_strategy needs at least one assignor")
        self.assignors = assignors
        self.rebalance_protocol = (COOPERATIVE if all(COOPERATIVE in a.supported_protocols for a in assignors)
                                   else "eager")
        self.group_id = group_id
        self.group_instance_id = group_instance_id
        self.auto_offset_reset = auto_offset_reset
        self.enable_auto_commit = bool(enable_auto_commit) and group_id is not None
        self.key_deserializer = key_deserializer
        self.value_deserializer = value_deserializer
        self.on_deserialization_error = on_deserialization_error
        self.dead_letter_topic = dead_letter_topic
        self.check_crcs = bool(check_crcs)
        self.isolation_level = 1 if isolation_level == "read_committed" else 0
        self.client_id = client_id
        self._transport = transport
        self._lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._closed = False
        self._wakeup = False
        self._subscription: set[str] | None = None
        self._manual = False
        self._listener: ConsumerRebalanceListener | None = listener
        self._assignment: dict[TopicPartition, _PartitionState] = {}
        self._rr = 0
        # Records an iterator (sync or async) took from poll and has not yielded yet: a
        # commit of positions must not pass them.
        self._held: list = []
        self._held_idx = 0
        # group membership
        self._member_id = ""
        # This member's key for the transport's per-member resources (its own
        # coordinator connection over the network), released when it leaves or closes.
        self._member_key = object()
        self._generation = -1
        self._state = _UNJOINED
        self._protocol: str | None = None
        self._join_pending: PendingResponse | None = None
        self._sync_pending: PendingResponse | None = None
        self._rejoin_needed = False
        self._lost = False
        self._fatal: PylogError | None = None
        self._last_poll = time.monotonic()
        self._clock = transport.clock        # the coordinator's clock: sessions are measured on it
        self._next_heartbeat = 0
        self._next_auto_commit = time.monotonic() + self.auto_commit_interval_ms / 1000
        self._metadata_snapshot: dict[str, int] = {}
        self._next_metadata_check = 0.0
        # Position lookups in flight: (future, {partition: its state when asked}).
        self._committed_lookup: tuple[Any, dict[TopicPartition, _PartitionState]] | None = None
        self._reset_lookup: tuple[Any, dict[TopicPartition, _PartitionState]] | None = None
        self._lookup_ready = False
        self._lookup_not_before = 0.0
        self._auto_commit: Any = None         # the auto-commit in flight (a future)
        # True while the asyncio consumer's poll round runs (see _poll_nowait): nothing
        # in it waits on the network.
        self._nonblocking = False
        # A commit before revoking that a join waits for (asyncio: sent, not waited on).
        self._join_after: Any = None
        # A poisoned record for the dead-letter topic stopped an asyncio poll round.
        self._dead_letter_due = False
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self._use_hb_thread = heartbeat_thread
        if topics:
            self.subscribe(list(topics))

    # ------------------------------------------------------------------ subscription

    def subscribe(self, topics: Iterable[str] | str, listener: ConsumerRebalanceListener | None = None) -> None:
        """Join ``group_id`` for these topics (replacing any earlier subscription).

        Raises
        ------
        InvalidGroupIdError
            No ``group_id``.
        IllegalStateError
            Partitions were assigned manually.
        InvalidRequestError
            ``topics`` is not a collection of topic names.
        """
        if isinstance(topics, str):
            topics = [topics]
        try:
            names = set(topics)
        except TypeError:
            raise InvalidRequestError(f"topics must be a collection of names, not {type(topics).__name__}") from None
        if not all(isinstance(t, str) and t for t in names):
            raise InvalidRequestError(f"topic names must be non-empty str, got {sorted(map(repr, names))}")
        with self._lock:
            self._check_open()
            if self.group_id is None:
                raise InvalidGroupIdError("subscribe() needs a group_id (or use assign())")
            if self._manual:
                raise IllegalStateError("partitions were assigned manually: unsubscribe() first")
            if listener is not None:
                self._listener = listener
            changed = names != self._subscription
            self._subscription = names
            if changed and self._state != _UNJOINED:
                self._rejoin_needed = True
            if self._use_hb_thread and self._hb_thread is None:
                self._hb_thread = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                                   name=f"pylog-heartbeat-{self.client_id}")
                self._hb_thread.start()

    def subscription(self) -> set[str]:
        return set(self._subscription or ())

    def unsubscribe(self) -> None:
        """Give up every partition: revoke (subscription) or drop (manual assignment),
        and leave the group."""
        with self._lock:
            self._check_open()
            if self._subscription is not None:
                self._revoke(set(self._assignment), commit=not self._nonblocking)
                self._leave_group("unsubscribed", deadline=0.0 if self._nonblocking else None)
            self._assignment.clear()
            self._subscription = None
            self._manual = False
            self._prefetch()

    def assign(self, partitions: Iterable[Any]) -> None:
        """Consume exactly these partitions, without group management (commits still go
        to ``group_id`` if there is one).

        Raises
        ------
        IllegalStateError
            The consumer is subscribed.
        UnknownTopicOrPartitionError
            A partition does not exist.
        """
        tps = [_tp(p) for p in partitions]
        for tp in tps:
            # Never creates the topic (pylog.open and pylog.connect alike): a consumer that
            # names a missing topic, say misspelt, is told so.
            if not 0 <= tp.partition < self._transport.topic_metadata(tp.topic, create=False)[0]:
                raise UnknownTopicOrPartitionError(f"{tp.topic} has no partition {tp.partition}")
        self._assign(tps)

    def _assign(self, tps: list[TopicPartition]) -> None:
        """assign() once the partitions were checked."""
        with self._lock:
            self._check_open()
            if self._subscription is not None:
                raise IllegalStateError("the consumer is subscribed: unsubscribe() before assign()")
            keep = {tp: st for tp, st in self._assignment.items() if tp in set(tps)}
            self._assignment = {tp: keep.get(tp) or _PartitionState() for tp in dict.fromkeys(tps)}
            self._manual = bool(tps)
            self._prefetch()        # drops what was read ahead for partitions given up

    def group_metadata(self) -> ConsumerGroupMetadata:
        """This member's group, generation, member id and instance id, for
        :meth:`Producer.send_offsets_to_transaction
        <pylog.client.producer.Producer.send_offsets_to_transaction>`.  Raises
        IllegalStateError without a group_id."""
        if self.group_id is None:
            raise IllegalStateError("group_metadata() needs a consumer with a group_id")
        return ConsumerGroupMetadata(self.group_id, self._generation, self._member_id, self.group_instance_id)

    def enforce_rebalance(self, reason: str = "enforced by the application") -> None:
        """Rejoin the group, as the same member, at the next poll (Kafka's
        ``enforceRebalance``); nothing without a group subscription."""
        if self.group_id is None or self._subscription is None:
            return
        with self._state_lock:
            self._rejoin_needed = True
        self._transport.wake()

    def rebalance_in_progress(self) -> bool:
        """Whether the member's group is rebalancing (it will rejoin at the next poll),
        as far as known without a request; False without a group subscription."""
        if self.group_id is None or self._subscription is None:
            return False
        return self._rejoin_needed or self._transport.group_rebalancing(self.group_id)

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer has now."""
        return set(self._assignment)

    # ------------------------------------------------------------------ group membership

    def _subscription_bytes(self, assignor: ConsumerPartitionAssignor) -> bytes:
        topics = sorted(self._subscription or ())
        owned: dict[str, list[int]] = {}
        generation = -1
        if self.rebalance_protocol == COOPERATIVE:
            # What we own and since when: the cooperative assignor needs both.  Eager
            # members own nothing when they join, so they send neither, and a restarted
            # static member's subscription is then the same as before its restart.
            generation = self._generation
            for tp in sorted(self._assignment):
                owned.setdefault(tp.topic, []).append(tp.partition)
        sub = Subscription(topics=topics, user_data=assignor.subscription_user_data(topics, generation),
                           owned_partitions=owned, generation_id=generation)
        return encode_subscription(sub)

    def _start_join(self, reason: str) -> None:
        if self.rebalance_protocol != COOPERATIVE and self._assignment and not self._lost:
            self._wait_before_join(self._revoke(set(self._assignment), commit=True))
        if self._join_after is not None:
            if not self._join_after.done():
                # The commit before revoking is still out (asyncio): join once it ends,
                # as Kafka's onJoinPrepare waits for its auto-commit.
                with self._state_lock:
                    self._state = _UNJOINED
                    self._rejoin_needed = False
                return
            self._join_after = None
        protocols = [(a.name, self._subscription_bytes(a)) for a in self.assignors]
        with self._state_lock:
            self._state = _JOINING
            self._rejoin_needed = False
        self._join_pending = self._transport.join_group(
            self.group_id, self._member_id, PROTOCOL_TYPE, protocols,
            session_timeout_ms=self.session_timeout_ms, rebalance_timeout_ms=self.max_poll_interval_ms,
            client_id=self.client_id, group_instance_id=self.group_instance_id, reason=reason,
            member_key=self._member_key)
        # Members waiting for data must notice the rebalance now, not at their timeout.
        self._transport.wake()

    def _wait_before_join(self, commit: Any) -> None:
        """The next JoinGroup waits for ``commit`` (a revoke's commit sent without
        waiting, or None); its end wakes the consumer."""
        if commit is not None and not commit.done():
            self._join_after = commit
            commit.add_done_callback(lambda _f: self._transport.wake())

    def _reset_member(self) -> None:
        with self._state_lock:
            self._member_id = ""
            self._generation = -1
            self._state = _UNJOINED

    def _lose_partitions(self) -> None:
        lost = set(self._assignment)
        self._assignment.clear()
        self._drop_held(lost)
        self._prefetch()
        self._lost = False
        if lost and self._listener is not None:
            self._listener.on_partitions_lost(lost)

    def _ensure_membership(self, deadline: float) -> bool:
        """Advance the group protocol; True once the member is Stable with an assignment.
        Waits for the coordinator's answers until ``deadline`` (monotonic seconds)."""
        while True:
            if self._fatal is not None:
                raise self._fatal
            if self._lost:
                self._lose_partitions()
                if self._state == _STABLE:
                    with self._state_lock:
                        self._state = _UNJOINED
            state = self._state
            if state == _STABLE:
                if self._rejoin_needed:
                    self._start_join("rejoin requested")
                    continue
                if self._transport.group_rebalancing(self.group_id):
                    self._start_join("the group is rebalancing")
                    continue
                if not self._use_hb_thread and self._clock() >= self._next_heartbeat:
                    self._heartbeat_once()
                    continue
                now = time.monotonic()
                if now >= self._next_metadata_check:
                    self._next_metadata_check = now + 0.05
                    if self._metadata_changed():
                        self._start_join("the subscribed topics' partitions changed")
                        continue
                return True
            if state == _UNJOINED:
                self._start_join("joining")
                if self._state == _UNJOINED:        # waiting for the revoke's commit
                    remaining = deadline - time.monotonic()
                    if self._nonblocking or remaining <= 0 or self._join_after is None:
                        return False
                    concurrent.futures.wait([self._join_after], min(remaining, 0.1))
                continue
            pending = self._join_pending if state == _JOINING else self._sync_pending
            assert pending is not None      # set on entering _JOINING / _SYNCING
            if not pending.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                try:
                    pending.wait(min(remaining, 0.1))
                except PylogError:
                    pass
                continue
            result = pending.result()
            if state == _JOINING:
                if not self._on_join(result):
                    return False        # the leader waits for metadata (asyncio)
            else:
                self._on_sync(result)

    def _on_join(self, res) -> bool:
        """Handle a JoinGroup answer; False when the leader cannot assign yet (asyncio:
        the metadata of a member's topic is on its way) and will be called again."""
        code = res.error_code
        if code == _E_MEMBER_ID_REQUIRED:
            self._member_id = res.member_id
            self._start_join("member id assigned")
            return True
        if code == _E_UNKNOWN_MEMBER:
            self._reset_member()
            return True
        if code != 0:
            self._join_failed(code)
            return True
        self._member_id = res.member_id
        self._generation = res.generation_id
        self._protocol = res.protocol_name
        assignments = None
        if res.is_leader:
            assignments = self._assign_as_leader(res)
            if assignments is None:
                return False
        with self._state_lock:
            self._state = _SYNCING
        self._sync_pending = self._transport.sync_group(
            self.group_id, self._generation, self._member_id, group_instance_id=self.group_instance_id,
            protocol_type=PROTOCOL_TYPE, protocol_name=self._protocol, assignments=assignments,
            member_key=self._member_key)
        return True

    def _join_failed(self, code: int) -> None:
        """A JoinGroup/SyncGroup error the caller has no special handling for: a fenced
        static member and non-retriable errors are fatal (raised now and by later polls);
        after a retriable one the next poll joins again."""
        if code == _E_FENCED:
            self._fatal = FencedInstanceIdError(
                f"group {self.group_id}: another consumer joined with group_instance_id {self.group_instance_id!r}")
            raise self._fatal
        err = error_for_code(code)
        if err.retriable:
            with self._state_lock:
                self._state = _UNJOINED
            return
        self._fatal = err
        raise err

    def _assign_as_leader(self, res) -> dict[str, bytes] | None:
        """Every member's assignment; None (asyncio only) while the metadata of a
        subscribed topic is being looked up."""
        assignor = next(a for a in self.assignors if a.name == res.protocol_name)
        subs: dict[str, Subscription] = {}
        for m in res.members:
            sub = decode_subscription(m.metadata)
            sub.group_instance_id = m.group_instance_id
            subs[m.member_id] = sub
        counts = self._partition_counts({t for s in subs.values() for t in s.topics})
        if counts is None:
            return None
        plan = assignor.assign(counts, subs)
        user_data = assignor.assignment_user_data(plan, subs)
        return {mid: encode_assignment(Assignment(dict(parts), user_data.get(mid))) for mid, parts in plan.items()}

    def _on_sync(self, res) -> None:
        code = res.error_code
        if code == _E_REBALANCE:
            self._start_join("the group rebalanced again")
            return
        if code in (_E_UNKNOWN_MEMBER, _E_ILLEGAL_GENERATION):
            if code == _E_UNKNOWN_MEMBER:
                self._reset_member()
            else:
                with self._state_lock:
                    self._state = _UNJOINED
            self._lose_partitions()
            return
        if code != 0:
            self._join_failed(code)
            return
        assignment = decode_assignment(res.assignment)
        next(a for a in self.assignors if a.name == self._protocol).on_assignment(assignment, self._generation)
        new = {TopicPartition(t, p) for t, ps in assignment.partitions.items() for p in ps
               if t in (self._subscription or ())}
        owned = set(self._assignment)
        revoked = owned - new
        added = new - owned
        self._metadata_snapshot = self._subscribed_counts()
        with self._state_lock:
            self._state = _STABLE
        if revoked:
            # Cooperative: only what moves is revoked (eager revoked everything before joining).
            self._wait_before_join(self._revoke(revoked, commit=True))
            with self._state_lock:
                # Hand what we revoked to its new owner in a follow-up rebalance.
                self._rejoin_needed = True
        for tp in sorted(added):
            self._assignment[tp] = _PartitionState()
        self._next_heartbeat = self._clock() + self.heartbeat_interval_ms
        self._resolve_positions(added)
        if self._listener is not None:
            self._listener.on_partitions_assigned(set(added))

    def _partition_counts(self, topics: Iterable[str]) -> dict[str, int] | None:
        """The transport's partition counts; None while an asyncio poll round would have
        to wait for metadata (the update is started)."""
        if self._nonblocking:
            return self._transport.partition_counts(topics, wait=False)
        return self._transport.partition_counts(topics)

    def _subscribed_counts(self) -> dict[str, int]:
        counts = self._partition_counts(self._subscription or ())
        return self._metadata_snapshot if counts is None else counts

    def _metadata_changed(self) -> bool:
        return self._subscribed_counts() != self._metadata_snapshot

    def _revoke(self, tps: set[TopicPartition], *, commit: bool) -> Any:
        """Revoke ``tps`` (listener, then drop them), committing their positions first
        with ``commit`` and auto-commit.  In an asyncio poll round the commit is sent
        without waiting: its future is returned (else None)."""
        sent = None
        if not tps:
            return sent
        if commit and self.enable_auto_commit:
            offsets = {tp: OffsetAndMetadata(st.position, "", st.leader_epoch)
                       for tp, st in self._assignment.items() if tp in tps and st.position is not None}
            try:
                sent = self._commit(offsets, wait=not self._nonblocking)
            except PylogError as exc:
                _log.warning("group %s: commit before revoking %s failed: %s", self.group_id, sorted(tps), exc)
        if self._listener is not None:
            self._listener.on_partitions_revoked(set(tps))
        for tp in tps:
            self._assignment.pop(tp, None)
        self._drop_held(set(tps))
        self._prefetch()            # what was read ahead for them is dropped now
        return sent

    def _heartbeat_once(self) -> None:
        with self._state_lock:
            if self._state != _STABLE:
                return
            gen, member = self._generation, self._member_id
        code = self._transport.heartbeat(self.group_id, gen, member, group_instance_id=self.group_instance_id)
        self._next_heartbeat = self._clock() + self.heartbeat_interval_ms
        self._on_heartbeat(code, gen)

    def _on_heartbeat(self, code: int, gen: int) -> None:
        if code == 0:
            return
        with self._state_lock:
            if self._state != _STABLE or gen != self._generation:
                return   # a rebalance overtook this heartbeat
            if code == _E_REBALANCE:
                self._rejoin_needed = True
            elif code in (_E_ILLEGAL_GENERATION, _E_UNKNOWN_MEMBER):
                self._lost = True
                if code == _E_UNKNOWN_MEMBER:
                    self._member_id = ""
                    self._generation = -1
            elif code == _E_FENCED:
                self._fatal = FencedInstanceIdError(
                    f"group {self.group_id}: fenced by another consumer with instance id {self.group_instance_id!r}")
        self._transport.wake()

    def _heartbeat_loop(self) -> None:
        interval = self.heartbeat_interval_ms / 1000
        while not self._hb_stop.wait(interval):
            try:
                if time.monotonic() - self._last_poll > self.max_poll_interval_ms / 1000 and self._state == _STABLE:
                    _log.warning("group %s: member %s did not poll for max_poll_interval_ms=%d; leaving the group",
                                 self.group_id, self._member_id, self.max_poll_interval_ms)
                    self._leave_group("max_poll_interval_ms expired")
                    with self._state_lock:
                        self._lost = True
                    continue
                self._heartbeat_once()
            except Exception:  # noqa: BLE001 - the heartbeat thread must go on
                _log.exception("heartbeat failed")

    def _leave_group(self, reason: str, deadline: float | None = None) -> None:
        """LeaveGroup (not for a static member), then release the member's resources.
        ``deadline`` (monotonic seconds): best effort, the answer is waited for until
        then at most (Kafka's ``close(timeout)``); None: until it comes."""
        with self._state_lock:
            member = self._member_id
            self._state = _UNJOINED
            self._member_id = ""
            self._generation = -1
        if member and self.group_id is not None and self.group_instance_id is None:
            members = [MemberIdentity(member, None, reason)]
            if deadline is None:
                self._transport.leave_group(self.group_id, members)
            else:
                left = self._await(self._transport.leave_group_async(self.group_id, members), deadline)
                if left is None and deadline:       # (0.0: sent, not waited for, on purpose)
                    _log.warning("group %s: no answer to LeaveGroup of member %s in time; closing anyway",
                                 self.group_id, member)
            self._transport.wake()
        self._transport.release_member(self._member_key)

    @staticmethod
    def _await(fut: Any, deadline: float) -> Any:
        """``fut``'s result if it comes before ``deadline`` (None if not); its exception
        is raised."""
        try:
            return fut.result(max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            return None

    # ------------------------------------------------------------------ positions

    def _resolve_positions(self, tps: Iterable[TopicPartition], *, wait_until: float | None = None) -> None:
        """Look up the positions of ``tps`` that have none, by Kafka's rules: the group's
        committed offset; ``auto_offset_reset`` only for a partition the group has no
        committed offset for (or whose position was out of range).

        Lookups do not block: one OffsetFetch and one ListOffsets at most are in flight
        (the transport's ``*_async`` calls); this starts what is needed, applies what
        has completed and waits for the rest only until ``wait_until`` (monotonic
        seconds; None: not at all), so ``poll`` keeps to its own timeout while a
        coordinator or leader is slow (Kafka's poll bounds its lookups by its timer).
        A lookup completing wakes a waiting poll.  Embedded, lookups complete at once.

        A retriable failure (the coordinator is loading or moved, a new leader's offsets
        are not available yet, no answer in time) leaves the position unknown: such a
        partition is not fetched, and is looked up again after :data:`_LOOKUP_BACKOFF_S`,
        as Kafka's consumer does; it never falls back to the reset policy.

        Raises
        ------
        NoOffsetForPartitionError
            No committed offset and ``auto_offset_reset="none"``.
        GroupAuthorizationFailedError, UnknownTopicOrPartitionError, ...
            A non-retriable OffsetFetch or ListOffsets error.
        """
        tps = list(tps)
        while True:
            self._start_lookups(tps)
            lookups = [lk for lk in (self._committed_lookup, self._reset_lookup) if lk is not None]
            if any(f.done() for f, _ in lookups):
                self._finish_lookups()
                continue
            left = None if wait_until is None else wait_until - time.monotonic()
            if left is None or left <= 0:
                return
            if lookups:
                concurrent.futures.wait([f for f, _ in lookups], left, concurrent.futures.FIRST_COMPLETED)
            elif any((st := self._assignment.get(tp)) is not None and st.position is None for tp in tps):
                time.sleep(max(0.0, min(self._lookup_not_before - time.monotonic(), left)))    # the backoff
            else:
                return

    def _start_lookups(self, tps: list[TopicPartition]) -> None:
        if time.monotonic() < self._lookup_not_before:
            return
        need = [(tp, st) for tp in tps if (st := self._assignment.get(tp)) is not None and st.position is None]
        if self._committed_lookup is None and self.group_id is not None:
            initializing = {tp: st for tp, st in need if not st.await_reset}
            if initializing:
                by_topic: dict[str, list[int]] = {}
                for tp in initializing:
                    by_topic.setdefault(tp.topic, []).append(tp.partition)
                fut = self._transport.fetch_offsets_async(self.group_id, by_topic,
                                                          require_stable=bool(self.isolation_level))
                self._committed_lookup = (fut, initializing)
                self._when_done(fut)
        if self._reset_lookup is None:
            reset = {tp: st for tp, st in need if st.await_reset or self.group_id is None}
            if reset:
                if self.auto_offset_reset == "none":
                    tp = next(iter(reset))
                    raise NoOffsetForPartitionError(
                        f"{tp.topic}-{tp.partition} has no committed offset and auto_offset_reset is 'none': seek() it")
                ts = -2 if self.auto_offset_reset == "earliest" else -1
                fut = self._transport.list_offsets_async([(tp.topic, tp.partition, ts) for tp in reset],
                                                         isolation_level=self.isolation_level)
                self._reset_lookup = (fut, reset)
                self._when_done(fut)

    def _when_done(self, fut: Any) -> None:
        """A lookup completing later wakes a waiting poll (its ``stop`` sees it)."""
        if not fut.done():
            def done(_f: Any) -> None:
                self._lookup_ready = True
                self._transport.wake()
            fut.add_done_callback(done)

    def _finish_lookups(self) -> None:
        """Apply the completed lookups to the partitions they were made for (if nothing,
        a seek or a rebalance, set them meanwhile)."""
        self._lookup_ready = False
        failed = False
        if self._committed_lookup is not None and self._committed_lookup[0].done():
            fut, states = self._committed_lookup
            self._committed_lookup = None
            live = {tp: st for tp, st in states.items()
                    if self._assignment.get(tp) is st and st.position is None and not st.await_reset}
            committed = self._committed_positions(fut, live) if live else {}
            failed = committed is None
            for tp, offset in (committed or {}).items():
                st = live[tp]
                if offset >= 0:
                    st.position = offset
                else:
                    st.await_reset = True        # none committed: auto_offset_reset
        if self._reset_lookup is not None and self._reset_lookup[0].done():
            fut, states = self._reset_lookup
            self._reset_lookup = None
            if not self._reset_positions(fut, states):
                failed = True
        if failed:
            self._lookup_not_before = time.monotonic() + _LOOKUP_BACKOFF_S

    def _committed_positions(self, fut: Any, live: dict[TopicPartition, _PartitionState]
                             ) -> dict[TopicPartition, int] | None:
        """From a completed OffsetFetch: the committed offsets of ``live`` (-1: none
        committed); a partition left out (or None for all) could not be looked up this
        time (a retriable error, logged).  Raises the non-retriable errors, as Kafka's
        OffsetFetch handler does (a partition's UNKNOWN_TOPIC_OR_PARTITION included)."""
        tps = sorted(live)
        try:
            res = fut.result()
        except PylogError as exc:
            if not exc.retriable:
                raise
            _log.info("group %s: committed offsets of %s not known yet: %s", self.group_id, tps, exc)
            return None
        if res.error_code:
            err = error_for_code(res.error_code, f"group {self.group_id}: OffsetFetch answered "
                                                 f"{error_for_code(res.error_code).kafka_name}")
            if not err.retriable:
                raise err
            _log.info("group %s: committed offsets of %s not known yet: %s", self.group_id, tps, err)
            return None
        out: dict[TopicPartition, int] = {}
        for tp in tps:
            fo = res.topics.get(tp.topic, {}).get(tp.partition)
            if fo is None:
                out[tp] = -1
                continue
            code = fo.error_code
            if code == 0:
                out[tp] = fo.offset if fo.offset >= 0 else -1
                continue
            err = error_for_code(code, f"group {self.group_id}: the committed offset of {tp.topic}-{tp.partition}: "
                                       f"{error_for_code(code).kafka_name}")
            if code == _E_UNKNOWN_TOPIC or not err.retriable:
                raise err
            # UNSTABLE_OFFSET_COMMIT (a transaction's commit is pending), ...: asked again.
            _log.info("%s", err)
        return out

    def _reset_positions(self, fut: Any, states: dict[TopicPartition, _PartitionState]) -> bool:
        """From a completed ListOffsets of ``auto_offset_reset``: set the positions;
        False when some could not be looked up this time (a retriable error, logged:
        their positions stay unknown).  Raises the non-retriable errors."""
        live = [(tp, st) for tp, st in states.items() if self._assignment.get(tp) is st and st.position is None]
        try:
            results = fut.result()
        except PylogError as exc:
            if not exc.retriable:
                if live:
                    raise
                return True
            _log.info("positions of %s not reset yet: %s", sorted(states), exc)
            return False
        done = True
        for (tp, st), res in zip(states.items(), results):
            if (tp, st) not in live:
                continue
            if res.error_code:
                err = error_for_code(res.error_code, res.error_message or f"{tp.topic}-{tp.partition}: ListOffsets "
                                                     f"answered {error_for_code(res.error_code).kafka_name}")
                if not err.retriable:
                    raise err
                _log.info("position of %s-%d not reset yet: %s", tp.topic, tp.partition, err)
                done = False
            else:
                st.position = res.offset
                st.await_reset = False
        return done

    # ------------------------------------------------------------------ polling

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> list[ConsumerRecord]:
        """Records from the assigned partitions, at most ``max_records`` (default
        ``max_poll_records``), waiting up to ``timeout_ms`` for some to arrive.  Also runs
        the group protocol (rebalance listeners are called from here) and auto-commit.

        Returns
        -------
        list of ConsumerRecord
            In append order within each partition.

        Raises
        ------
        IllegalStateError
            Nothing subscribed or assigned, or the consumer is closed.
        RecordDeserializationError
            A deserializer failed and the policy is ``"raise"``.
        NoOffsetForPartitionError
            No committed offset and ``auto_offset_reset="none"``.
        """
        return self._poll(timeout_ms, max_records, False)

    def poll_batches(self, timeout_ms: int = 0, max_records: int | None = None) -> list[ConsumerBatch]:
        """Fetched record batches as zero-copy views, for columnar processing: the
        records ``poll`` would return, a batch at a time, without a Python object per
        record.

        Each item is a :class:`ConsumerBatch` of one partition: ``batch`` (the
        :class:`~pylog.records.RecordBatch` view of the fetched bytes: embedded, the
        mapped log segment; remote, the Fetch response) and ``columns()`` (numpy offsets,
        timestamps, key/value positions and lengths over the records buffer), cut to the
        records at or after the position, so no record is delivered twice.  Values and
        keys are raw bytes: the consumer's deserializers and ``on_deserialization_error``
        do not apply here.  Control batches are skipped; with ``check_crcs`` every
        batch's CRC32C is checked (in C) before it is handed out.  The views stay valid as
        long as the caller holds them, across later polls, segment rolls and retention.

        Everything else is as :meth:`poll`: group membership, rebalance listeners,
        auto-commit, pause/resume and seek; positions move past what is returned, so
        ``position()`` and commits count it as consumed.  ``poll`` and ``poll_batches``
        may be mixed: what one fetched and the other cannot serve is dropped and read
        again from the position.

        Parameters
        ----------
        timeout_ms : int or float
            Wait up to this long for data when none is buffered.
        max_records : int, optional
            At most this many records in all (default ``max_poll_records``): a batch
            that would pass it is cut (its ``columns()`` end there; the rest comes next).

        Returns
        -------
        list of ConsumerBatch
            In append order within each partition; each holds at least one record.

        Raises
        ------
        CorruptRecordError
            A fetched batch failed its CRC or header checks (raised once the batches
            before it were returned; the position stays on it: ``seek`` past it to go
            on).  A malformed record in a batch whose CRC matched is raised by its
            ``columns()``.
        IllegalStateError, NoOffsetForPartitionError
            As :meth:`poll`.
        """
        return self._poll(timeout_ms, max_records, True)

    def _poll(self, timeout_ms: Any, max_records: Any, batches: bool) -> list:
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, (int, float)) or timeout_ms < 0:
            raise InvalidRequestError(f"timeout_ms must be a number >= 0, got {timeout_ms!r}")
        max_records = self._max_records(max_records)
        install = self._install_batches if batches else self._install
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            with self._lock:
                records = self._poll_round(max_records, batches, deadline)
                if records is None:
                    return []
                if records or self._wakeup:
                    self._wakeup = False
                    return records
                waiting = [(tp, st) for tp, st in self._assignment.items()
                           if not st.paused and st.position is not None]
                wanted = [(tp.topic, tp.partition, st.position, self.max_partition_fetch_bytes)
                          for tp, st in waiting]
                unknown = any(st.position is None and not st.paused for st in self._assignment.values())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if self._subscription is not None and not self._use_hb_thread:
                remaining = min(remaining, max((self._next_heartbeat - self._clock()) / 1000, 0.001))
            if unknown:
                # A partition whose position is not known yet: look it up again soon.
                remaining = min(remaining, _LOOKUP_BACKOFF_S)
            # Wait in the transport's fetch, without the lock; keep what it brings.
            results = self._transport.fetch(wanted, max_wait_ms=remaining * 1000, min_bytes=self.fetch_min_bytes,
                                            max_bytes=self.fetch_max_bytes, isolation_level=self.isolation_level,
                                            stop=self._should_stop_waiting, owner=self._member_key)
            if any(res is not None and (res.error_code or (res.records is not None and res.records.size))
                   for res in results):
                with self._lock:
                    if not self._closed:
                        for (tp, st), want, res in zip(waiting, wanted, results):
                            # Only if nothing moved the partition meanwhile (seek, rebalance, pause).
                            if res is not None and self._assignment.get(tp) is st and not st.paused \
                                    and st.position == want[2] and not st.buffered():
                                install(tp, st, res)

    def _max_records(self, max_records: Any) -> int:
        if max_records is None:
            return self.max_poll_records
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
            raise InvalidRequestError(f"max_records must be an int >= 1, got {max_records!r}")
        return max_records

    def _poll_round(self, max_records: int, batches: bool, deadline: float) -> list | None:
        """One round of poll (lock held): the group protocol, auto-commit, and what is
        buffered or can be fetched; None while the member has no assignment yet."""
        self._check_open()
        self._last_poll = time.monotonic()
        if self._subscription is None and not self._manual:
            raise IllegalStateError("the consumer is not subscribed to any topic nor assigned any partition")
        if self._subscription is not None:
            if not self._ensure_membership(deadline):
                return None
        self._maybe_auto_commit()
        records = self._collect(max_records, batches, deadline)
        if records:
            self._prefetch()
        return records

    def _poll_nowait(self, max_records: int | None, batches: bool) -> list:
        """The asyncio consumer's poll: one round that never waits on the network.  The
        group protocol advances only as far as answers have come; positions are looked
        up without waiting; fetches are sent as prefetches and only answers already there
        are taken (``Transport.fetch(block=False)``).  What comes later wakes the caller
        through the transport's data and wake listeners.  Raises what :meth:`poll`
        raises."""
        max_records = self._max_records(max_records)
        if not self._lock.acquire(blocking=False):
            # Another thread has the consumer (a close waiting for its commit, a
            # synchronous call): not waited for; the caller polls again.
            self._check_open()
            return []
        try:
            self._nonblocking = True
            try:
                records = self._poll_round(max_records, batches, 0.0)
            finally:
                self._nonblocking = False
            self._wakeup = False
            return records or []
        finally:
            self._lock.release()

    def _prefetch(self) -> None:
        """Before handing records out, start the next fetch of every assigned, unpaused
        partition with a known position, as Kafka's consumer sends its next fetches at
        the end of ``poll``, so the network reads while the caller processes.  The read
        ahead starts where the buffer ends (``next_fetch``), so a partition still
        serving its buffer has its next answers on the way (the Kafka transport keeps a
        chain of up to PREFETCH_DEPTH per partition, kept or in flight), and the next one
        is there when the buffer runs out, rather than asked for only then.  The
        transport hands an answer over only for a fetch at the offset it was read at: a
        position moved meanwhile (seek, reset, rebalance, the other kind of poll) reads
        elsewhere and the chain is dropped; a paused partition's is dropped at once."""
        wanted = []
        for tp, st in self._assignment.items():
            if st.paused or st.position is None or st.fail is not None or st.batch_error is not None:
                continue
            offset = st.next_fetch if st.buffered() else st.position
            if offset >= 0:
                wanted.append((tp.topic, tp.partition, offset, self.max_partition_fetch_bytes))
        self._transport.prefetch(wanted, max_wait_ms=self.fetch_max_wait_ms, min_bytes=self.fetch_min_bytes,
                                 max_bytes=self.fetch_max_bytes, isolation_level=self.isolation_level,
                                 owner=self._member_key)

    def _should_stop_waiting(self) -> bool:
        return (self._closed or self._wakeup or self._rejoin_needed or self._lost or self._fatal is not None
                or self._lookup_ready
                or (self._subscription is not None and self._transport.group_rebalancing(self.group_id)))

    def _fetchable(self) -> list[tuple[TopicPartition, _PartitionState]]:
        items = [(tp, st) for tp, st in self._assignment.items() if not st.paused]
        if len(items) > 1:
            self._rr = (self._rr + 1) % len(items)
            items = items[self._rr:] + items[:self._rr]
        return items

    def _collect(self, max_records: int, batches: bool = False, deadline: float = 0.0) -> list:
        """Up to ``max_records`` records (``batches``: in ConsumerBatch items) from what is
        buffered, fetching (without waiting) for the partitions that have nothing; once
        some records are taken, only what needs no round trip is fetched.  Positions not
        known yet are looked up, waiting until ``deadline`` but at least
        :data:`_LOOKUP_GRACE_S` (a round trip to a healthy broker, as the fetch here
        makes one even for ``poll(0)``): a slow coordinator or leader costs a poll
        that much, never ``request_timeout_ms``."""
        out: list = []
        if batches:
            self._release_held()
            serve, install = self._serve_batches, self._install_batches
        else:
            serve, install = self._serve, self._install
        items = self._fetchable()
        unresolved = [tp for tp, st in items if st.position is None]
        nonblocking = self._nonblocking
        if unresolved or self._lookup_ready:
            self._resolve_positions(unresolved, wait_until=None if nonblocking else
                                    max(deadline, time.monotonic() + _LOOKUP_GRACE_S))
        left = max_records
        for _ in range(64):   # bounded: each round makes progress or stops
            empty = []
            for tp, st in items:
                if left <= 0:
                    return out
                if st.position is None:
                    continue        # its lookup failed for now: not fetched (the next poll looks again)
                # What the other kind of poll fetched is dropped and read again from the
                # position (which is exact: everything before it was returned).
                if batches:
                    other = st.idx < len(st.pending) or st.fail is not None
                else:
                    other = st.bidx < len(st.batches) or st.batch_error is not None
                if other:
                    st.drop_fetched()
                left = serve(tp, st, out, left)
                if left < 0:
                    return out
                if not st.buffered():
                    empty.append((tp, st))
            if left <= 0 or not empty:
                return out
            if out or nonblocking:
                # Records in hand are not held back for a round trip: start the next
                # fetches (Kafka's consumer returns what its completed fetches hold), so
                # the fetch below takes only answers already there and rides on the rest.
                # A network fetch per round here cost a round trip each, ~1 ms, while
                # new records kept every round busy: polls held records for tens of ms.
                # (asyncio: always, and the fetch below sends nothing.)
                self._prefetch()
            # Every partition with nothing buffered, in one fetch (one request per leader).
            results = self._transport.fetch(
                [(tp.topic, tp.partition, st.position, self.max_partition_fetch_bytes) for tp, st in empty],
                max_bytes=self.fetch_max_bytes, isolation_level=self.isolation_level, owner=self._member_key,
                **_NO_BLOCK if nonblocking else {})
            progressed = False
            for (tp, st), res in zip(empty, results):
                if res is None:
                    continue
                try:
                    if install(tp, st, res):
                        progressed = True
                except PylogError:
                    if not out:
                        raise
                    # Positions already moved past ``out``: return it; the partition is
                    # read again (and raises) next time.
                    return out
            if not progressed:
                if nonblocking:
                    self._prefetch()    # for a partition whose stale kept answer was dropped
                return out
            items = empty
        return out

    def _serve(self, tp: TopicPartition, st: _PartitionState, out: list, left: int) -> int:
        """Move up to ``left`` of ``st``'s buffered records to ``out``, applying the
        deserialization-error policy; returns how many more may be taken, -1 when poll
        must return now."""
        while left > 0:
            if st.idx < len(st.pending):
                take = st.pending[st.idx:st.idx + left]
                st.idx += len(take)
                out.extend(take)
                left -= len(take)
                if st.idx >= len(st.pending):
                    st.pending = []
                    st.idx = 0
                    st.position = st.next_fetch
                else:
                    st.position = take[-1].offset + 1
                continue
            if st.fail is not None:
                if not self._handle_poison(tp, st, raise_now=not out):
                    return -1
                continue
            break
        return left

    def _serve_batches(self, tp: TopicPartition, st: _PartitionState, out: list, left: int) -> int:
        """Move ``st``'s buffered batches to ``out`` as ConsumerBatch items, up to ``left``
        records (the last one cut if needed); per batch, never per record.  Returns how
        many more may be taken, -1 when poll_batches must return now (an error to raise
        next time)."""
        batches = st.batches
        while left > 0 and st.bidx < len(batches):
            b = batches[st.bidx]
            pos = st.position
            cols = st.head_columns
            if pos <= b.base_offset and cols is None:
                start, n = 0, b.records_count
            else:
                # It begins below the position (a seek, a poll or a cut took its start).
                if cols is None:
                    cols = self._columns_of(tp, b)
                start = int(cols.offsets.searchsorted(pos))
                n = len(cols) - start
            if n > left:
                if cols is None:
                    cols = self._columns_of(tp, b)
                stop = start + left
                st.position = int(cols.offsets[stop - 1]) + 1
                st.head_columns = cols
            else:
                stop = start + n
                st.position = b.next_offset
                st.head_columns = None
                st.bidx += 1
            if stop > start:
                st.leader_epoch = b.partition_leader_epoch
                out.append(ConsumerBatch(tp.topic, tp.partition, b, start, stop, st.position, cols))
                left -= stop - start
        if st.bidx >= len(batches):
            if batches:
                st.batches = []
                st.bidx = 0
                assert st.position is not None      # what was served had a position
                st.position = max(st.position, st.next_fetch)
            if st.batch_error is not None:
                if out:
                    return -1
                err, st.batch_error = st.batch_error, None
                raise err
        return left

    @staticmethod
    def _columns_of(tp: TopicPartition, b: Any) -> Any:
        try:
            return b.columns()
        except CorruptRecordError as exc:
            raise CorruptRecordError(f"{tp.topic}-{tp.partition}: {exc}") from exc

    def _install_error(self, tp: TopicPartition, st: _PartitionState, res) -> bool | None:
        """The part of installing a fetch result both kinds of poll share: an out-of-range
        position is reset (returns whether it moved), an unknown partition or an
        UNKNOWN_SERVER_ERROR is skipped (False: fetched again, as Kafka's FetchCollector
        does), other errors raise, naming the partition and offset.  (The transport
        already answers None, "not read this time", for the retriable ones: leader
        moved, OFFSET_NOT_AVAILABLE, ...)  None: there are records to take."""
        if res.error_code == _E_OFFSET_OUT_OF_RANGE:
            if self.auto_offset_reset == "none":
                raise OffsetOutOfRangeError(
                    f"{tp.topic}-{tp.partition}: position {st.position} is out of range "
                    f"(the log holds [{res.log_start_offset}, {res.high_watermark})) and auto_offset_reset is 'none'")
            old = st.position
            st.position = None
            st.await_reset = True
            self._resolve_positions([tp])
            _log.info("%s-%d: position %d out of range, reset to %s", tp.topic, tp.partition, old, st.position)
            return st.position is not None and st.position != old
        code = res.error_code
        if code == _E_UNKNOWN_TOPIC:
            return False
        if code == _E_UNKNOWN_SERVER_ERROR:
            # As Kafka's FetchCollector: logged, and the partition is fetched again.
            _log.warning("%s-%d: Fetch at offset %s answered UNKNOWN_SERVER_ERROR; fetching it again",
                         tp.topic, tp.partition, st.position)
            return False
        if code:
            raise error_for_code(code, f"{tp.topic}-{tp.partition} at offset {st.position}: Fetch answered "
                                       f"{error_for_code(code).kafka_name}")
        st.high_watermark = res.high_watermark
        rr = res.records
        if rr is None or rr.size == 0:
            return False
        return None

    def _install(self, tp: TopicPartition, st: _PartitionState, res) -> bool:
        """Take a fetch result of ``tp`` read at ``st.position``: decode its records (or
        reset an out-of-range position); False when there is nothing new."""
        done = self._install_error(tp, st, res)
        if done is not None:
            return done
        records: list = []
        assert st.position is not None      # fetched at it
        if res.aborted_transactions and self.isolation_level:
            # Some batches belong to aborted transactions: decode the runs between them.
            buf = memoryview(res.records.records)
            runs, end_offset = _committed_runs(buf, res.aborted_transactions)
            next_offset, fail = st.position, None
            for start, stop in runs:
                next_offset, fail = _core.decode_fetched(
                    buf[start:stop], tp.topic, tp.partition, st.position, records, check_crc=self.check_crcs,
                    key_deserializer=self.key_deserializer, value_deserializer=self.value_deserializer)
                if fail is not None:
                    break
            if fail is None:
                next_offset = max(next_offset, end_offset, st.position)
        else:
            next_offset, fail = _core.decode_fetched(
                res.records.records, tp.topic, tp.partition, st.position, records, check_crc=self.check_crcs,
                key_deserializer=self.key_deserializer, value_deserializer=self.value_deserializer)
        if records:
            st.leader_epoch = records[-1].leader_epoch
        progressed = bool(records) or fail is not None or next_offset != st.position
        st.pending = records
        st.idx = 0
        st.fail = fail
        st.next_fetch = next_offset
        if not records:
            st.position = next_offset
        return progressed

    def _install_batches(self, tp: TopicPartition, st: _PartitionState, res) -> bool:
        """As :meth:`_install`, for poll_batches: keep views of the result's batches
        (each checked in C, CRC included with ``check_crcs``), without those wholly
        below the position, control batches and empty ones.  A corrupt batch ends the
        run: the batches before it are served first, then its error is raised."""
        done = self._install_error(tp, st, res)
        if done is not None:
            return done
        keep: list = []
        assert st.position is not None      # fetched at it
        next_offset = st.position
        error = None
        committed = _AbortedFilter(res.aborted_transactions).keep \
            if res.aborted_transactions and self.isolation_level else None
        try:
            for b in _core.iter_batches(res.records.records, check_crc=self.check_crcs):
                end = b.next_offset
                if committed is not None and not committed(b):
                    next_offset = max(next_offset, end)
                    continue
                if end <= next_offset:
                    continue
                if b.records_count and not b.is_control:
                    keep.append(b)
                next_offset = end
        except PylogError as exc:
            error = CorruptRecordError(f"{tp.topic}-{tp.partition}: {exc}, in the batch at offset {next_offset} "
                                       f"or after it (seek past it to go on)")
            error.__cause__ = exc
        st.batches = keep
        st.bidx = 0
        st.head_columns = None
        st.batch_error = error
        st.next_fetch = next_offset
        progressed = bool(keep) or error is not None or next_offset != st.position
        if not keep:
            st.position = next_offset
        return progressed

    def _handle_poison(self, tp: TopicPartition, st: _PartitionState, raise_now: bool) -> bool:
        """Apply the deserialization-error policy to the record in ``st.fail``.  Returns
        False when poll must return what it has (the error is raised by the next poll)."""
        assert st.fail is not None
        offset, ts, ts_type, key, value, headers, epoch, exc = st.fail
        where = f"{tp.topic}-{tp.partition} at offset {offset}"
        if self.on_deserialization_error == "raise":
            if not raise_now:
                return False
            err = RecordDeserializationError(
                f"deserializing the record of {where} failed: {type(exc).__name__}: {exc}; seek to "
                f"offset {offset + 1} to skip it", topic=tp.topic, partition=tp.partition, offset=offset)
            raise err from exc
        if self.on_deserialization_error == "dead_letter":
            if self._nonblocking:
                # The dead-letter produce is a round trip: the asyncio consumer runs it
                # off the loop (_settle_poison), then polls on.
                self._dead_letter_due = self._dead_letter_due or raise_now
                return False
            self._dead_letter(tp, offset, ts, key, value, headers, exc)
            _log.warning("sent the record of %s to the dead-letter topic: %s: %s", where, type(exc).__name__, exc)
        else:
            _log.warning("skipped the record of %s: %s: %s", where, type(exc).__name__, exc)
        st.fail = None
        st.position = offset + 1
        return True

    def _settle_poison(self) -> None:
        """Apply the dead-letter policy to each partition whose next record is a poisoned
        one (the asyncio consumer calls this from a worker thread when a poll round
        stopped there: ``_dead_letter_due``)."""
        with self._lock:
            self._dead_letter_due = False
            for tp, st in list(self._assignment.items()):
                if st.fail is not None and st.idx >= len(st.pending):
                    self._handle_poison(tp, st, raise_now=True)

    def _dead_letter(self, tp: TopicPartition, offset: int, ts: int, key, value, headers, exc) -> None:
        topic = self.dead_letter_topic or f"{tp.topic}.DLQ"
        t = self._transport
        if topic not in t.partition_counts([topic]):
            try:
                t.create_topic(topic, t.topic_metadata(tp.topic)[0])
            except TopicAlreadyExistsError:
                pass
        extra = [
            (_DLQ_PREFIX + "original.topic", tp.topic.encode()),
            (_DLQ_PREFIX + "original.partition", str(tp.partition).encode()),
            (_DLQ_PREFIX + "original.offset", str(offset).encode()),
            (_DLQ_PREFIX + "original.timestamp", str(ts).encode()),
            (_DLQ_PREFIX + "group.id", (self.group_id or "").encode()),
            (_DLQ_PREFIX + "exception.class", type(exc).__qualname__.encode()),
            (_DLQ_PREFIX + "exception.message", str(exc).encode("utf-8", "replace")),
        ]
        builder = _core.RecordBatchBuilder()
        builder.append(ts, key, value, list(headers) + extra)
        partition = tp.partition % t.topic_metadata(topic)[0]
        t.produce([(topic, partition, [builder.build()])], acks=-1)[0][0].raise_for_error()

    def _maybe_auto_commit(self) -> None:
        if not self.enable_auto_commit:
            return
        now = time.monotonic()
        if now < self._next_auto_commit:
            return
        self._next_auto_commit = now + self.auto_commit_interval_ms / 1000
        if self._subscription is not None and self._state != _STABLE:
            return
        if self._auto_commit is not None and not self._auto_commit.done():
            return              # the last one is still out (the coordinator is slow)
        # Without waiting, as Kafka's poll auto-commits (commitAsync): an unreachable
        # coordinator must not hold the poll for request_timeout_ms.
        try:
            self._auto_commit = self._commit(self._consumed(), wait=False)
        except PylogError as exc:
            _log.warning("group %s: auto-commit failed: %s", self.group_id, exc)

    def _consumed(self) -> dict[TopicPartition, OffsetAndMetadata]:
        out = {tp: OffsetAndMetadata(st.position, "", st.leader_epoch)
               for tp, st in self._assignment.items() if st.position is not None}
        for rec in self._held[self._held_idx:]:
            tp = TopicPartition(rec.topic, rec.partition)
            if tp in out and rec.offset < out[tp].offset:
                out[tp] = OffsetAndMetadata(rec.offset, "", rec.leader_epoch)
        return out

    def _drop_held(self, tps: set[TopicPartition]) -> None:
        if self._held_idx < len(self._held):
            self._held = [r for r in self._held[self._held_idx:]
                          if TopicPartition(r.topic, r.partition) not in tps]
            self._held_idx = 0

    def _release_held(self) -> None:
        """Give back the records an iterator took from poll and has not yielded: their
        partitions are read again from the first of them, so that poll_batches neither
        passes nor repeats them.  (A loop over records, but only once, when a program
        switches from iterating to poll_batches.)"""
        if self._held_idx >= len(self._held):
            return
        first: dict[TopicPartition, int] = {}
        for rec in self._held[self._held_idx:]:
            tp = TopicPartition(rec.topic, rec.partition)
            if tp not in first:
                first[tp] = rec.offset
        self._held, self._held_idx = [], 0
        for tp, offset in first.items():
            st = self._assignment.get(tp)
            if st is not None:
                st.drop_fetched()
                st.position = offset

    def _next_held(self):
        """The next record for an iterator, or None when it must poll again."""
        if self._held_idx < len(self._held):
            rec = self._held[self._held_idx]
            self._held_idx += 1
            return rec
        return None

    # ------------------------------------------------------------------ commits

    def commit(self, offsets: Mapping[Any, OffsetAndMetadata | int] | None = None) -> None:
        """Commit offsets (default: the position of every assigned partition, i.e. what
        ``poll`` returned) and wait for them to be stored.

        Raises
        ------
        InvalidGroupIdError
            No ``group_id``.
        CommitFailedError
            A partition is not owned by this member (the group rebalanced), or its
            generation is stale: poll again (rejoin) and reprocess from the committed offset.
        RebalanceInProgressError
            A rebalance is completing; poll and commit again.
        UnknownTopicOrPartitionError, OffsetMetadataTooLargeError, ...
            Per partition; nothing is committed when the consumer itself refuses.
        """
        with self._lock:
            self._check_open()
            self._commit(self._consumed() if offsets is None else self._normalize_offsets(offsets))

    def _commit_nowait(self, offsets: Mapping[Any, OffsetAndMetadata | int] | None = None) -> Any:
        """:meth:`commit`'s checks, then the OffsetCommit sent without waiting: a future
        of its codes for :meth:`_commit_result` (None: nothing to commit).  Commits are
        sent in call order on the coordinator's connection, and answered in order."""
        with self._lock:
            self._check_open()
            return self._commit(self._consumed() if offsets is None else self._normalize_offsets(offsets),
                                wait=False, report=False)

    def commit_async(self, offsets: Mapping[Any, OffsetAndMetadata | int] | None = None,
                     callback: Callable[[dict, BaseException | None], Any] | None = None) -> None:
        """Commit without raising: ``callback(offsets, exception)`` gets the outcome.  An
        embedded commit is an in-memory append, so it has completed when this returns."""
        normalized: dict[Any, Any]
        try:
            with self._lock:
                self._check_open()
                normalized = self._consumed() if offsets is None else self._normalize_offsets(offsets)
                self._commit(normalized)
            error = None
        except PylogError as exc:
            normalized = {} if offsets is None else dict(offsets)
            error = exc
            _log.warning("group %s: async commit failed: %s", self.group_id, exc)
        if callback is not None:
            callback(normalized, error)

    @staticmethod
    def _normalize_offsets(offsets: Mapping[Any, Any]) -> dict[TopicPartition, OffsetAndMetadata]:
        try:
            items = list(offsets.items())
        except AttributeError:
            raise InvalidRequestError("offsets must map (topic, partition) -> offset") from None
        out = {}
        for key, value in items:
            tp = _tp(key)
            if isinstance(value, OffsetAndMetadata):
                om = value
            elif isinstance(value, int) and not isinstance(value, bool):
                om = OffsetAndMetadata(value)
            else:
                raise InvalidRequestError(f"offset of {tp} must be an int or OffsetAndMetadata, not {value!r}")
            if isinstance(om.offset, bool) or not isinstance(om.offset, int) or om.offset < 0:
                raise InvalidRequestError(f"offset of {tp} must be an int >= 0, got {om.offset!r}")
            if not isinstance(om.metadata, str):
                raise InvalidRequestError(f"metadata of {tp} must be a str")
            out[tp] = om
        return out

    def _commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata], wait: bool = True,
                report: bool = True) -> Any:
        """Commit ``offsets``, raising what the coordinator refused; ``wait=False``: send
        and return the future (None when there is nothing to commit), its outcome logged
        (and a rejoin requested when the group moved on) when it completes, unless not
        ``report`` (the caller passes the codes to :meth:`_commit_result` itself)."""
        if self.group_id is None:
            raise InvalidGroupIdError("committing offsets needs a group_id")
        if not offsets:
            return None
        group_managed = self._subscription is not None
        if group_managed:
            if self._state != _STABLE:
                raise RebalanceInProgressError(
                    f"group {self.group_id} is rebalancing: poll() to finish it, then commit")
            foreign = sorted(tp for tp in offsets if tp not in self._assignment)
            if foreign:
                raise CommitFailedError(
                    f"cannot commit {', '.join(f'{t}-{p}' for t, p in foreign)}: not owned by this member "
                    f"of group {self.group_id} (the group rebalanced, or it was never assigned)")
            generation, member = self._generation, self._member_id
        else:
            generation, member = -1, ""
        request: dict[str, dict[int, CommitOffset]] = {}
        for tp, om in offsets.items():
            request.setdefault(tp.topic, {})[tp.partition] = CommitOffset(om.offset, om.metadata, om.leader_epoch)
        instance = self.group_instance_id if group_managed else None
        if not wait:
            fut = self._transport.commit_offsets_async(self.group_id, request, generation_id=generation,
                                                       member_id=member, group_instance_id=instance)
            if report:
                fut.add_done_callback(self._async_commit_done)
            return fut
        self._commit_result(self._transport.commit_offsets(self.group_id, request, generation_id=generation,
                                                           member_id=member, group_instance_id=instance))
        return None

    def _async_commit_done(self, fut: Any) -> None:
        """(The transport's thread, or the caller's when completed at once.)"""
        try:
            self._commit_result(fut.result())
        except PylogError as exc:
            _log.warning("group %s: auto-commit failed: %s", self.group_id, exc)

    def _commit_result(self, result: Mapping[str, Mapping[int, int]]) -> None:
        for topic, parts in sorted(result.items()):
            for p, code in sorted(parts.items()):
                if code == 0:
                    continue
                if code in (_E_ILLEGAL_GENERATION, _E_UNKNOWN_MEMBER):
                    with self._state_lock:
                        self._rejoin_needed = True
                    raise CommitFailedError(
                        f"commit of {topic}-{p} refused: {error_for_code(code).kafka_name} (the group moved on); "
                        "poll to rejoin and reprocess from the committed offset")
                raise error_for_code(code, f"commit of {topic}-{p} to group {self.group_id} failed: "
                                           f"{error_for_code(code).kafka_name}")

    def _fetch_committed(self, by_topic: dict[str, list[int]]) -> Any:
        """OffsetFetch of this group.  A read_committed consumer asks for stable offsets
        (KIP-447: not while a transaction's offset commit of a partition is pending) and
        waits, up to :data:`_UNSTABLE_WAIT_S`, for the pending commits to end
        (UNSTABLE_OFFSET_COMMIT), so it never starts from an offset a committing
        transaction is about to move."""
        assert self.group_id is not None
        stable = bool(self.isolation_level)
        deadline = time.monotonic() + _UNSTABLE_WAIT_S
        while True:
            res = self._transport.fetch_offsets(self.group_id, by_topic, require_stable=stable)
            unstable = res.error_code == _E_UNSTABLE_OFFSET_COMMIT or any(
                fo.error_code == _E_UNSTABLE_OFFSET_COMMIT for parts in res.topics.values() for fo in parts.values())
            if not unstable or time.monotonic() + _UNSTABLE_BACKOFF_S >= deadline:
                return res
            time.sleep(_UNSTABLE_BACKOFF_S)

    def committed(self, partitions: Any) -> Any:
        """The committed offset of a partition (an :class:`OffsetAndMetadata`, or None), or
        of several (a dict).  Raises InvalidGroupIdError without a ``group_id``."""
        single = isinstance(partitions, tuple) and len(partitions) == 2 and isinstance(partitions[0], str)
        tps = [_tp(partitions)] if single else [_tp(p) for p in partitions]
        if self.group_id is None:
            raise InvalidGroupIdError("committed offsets need a group_id")
        by_topic: dict[str, list[int]] = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        res = self._fetch_committed(by_topic)
        res.raise_for_error()
        out: dict[TopicPartition, OffsetAndMetadata | None] = {}
        for tp in tps:
            fo = res.topics.get(tp.topic, {}).get(tp.partition)
            out[tp] = None if fo is None or fo.offset < 0 else OffsetAndMetadata(fo.offset, fo.metadata, fo.leader_epoch)
        return out[tps[0]] if single else out

    # ------------------------------------------------------------------ positions API

    def _state_of(self, tp: Any) -> tuple[TopicPartition, _PartitionState]:
        tp = _tp(tp)
        st = self._assignment.get(tp)
        if st is None:
            raise IllegalStateError(f"{tp.topic}-{tp.partition} is not assigned to this consumer")
        return tp, st

    def position(self, partition: Any) -> int:
        """The offset of the next record ``poll`` returns for ``partition`` (assigned),
        looked up first if not known yet (retried for up to ``default_api_timeout_ms``).

        Raises
        ------
        RequestTimedOutError
            It could not be looked up in time (the coordinator or the leader kept
            answering retriable errors).
        NoOffsetForPartitionError, ...
            As :meth:`poll`.
        """
        with self._lock:
            tp, st = self._state_of(partition)
            deadline = time.monotonic() + self.default_api_timeout_ms / 1000
            if st.position is None:
                self._resolve_positions([tp], wait_until=deadline)
            if st.position is None:
                raise RequestTimedOutError(f"the position of {tp.topic}-{tp.partition} could not be looked up "
                                           f"within default_api_timeout_ms={self.default_api_timeout_ms}")
            return st.position

    def seek(self, partition: Any, offset: int) -> None:
        """Read ``partition`` from ``offset`` on (beyond the log's range: reset by
        ``auto_offset_reset`` at the next poll).  Raises IllegalStateError if not assigned."""
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidRequestError(f"seek offset must be an int >= 0, got {offset!r}")
        with self._lock:
            tp, st = self._state_of(partition)
            st.drop_fetched()
            self._drop_held({tp})
            st.position = offset
            st.await_reset = False

    def seek_to_beginning(self, *partitions: Any) -> None:
        """Seek to the log start offset of ``partitions`` (default: all assigned)."""
        self._seek_special(partitions, -2)

    def seek_to_end(self, *partitions: Any) -> None:
        """Seek to the high watermark of ``partitions`` (default: all assigned)."""
        self._seek_special(partitions, -1)

    def _seek_special(self, partitions: tuple, ts: int) -> None:
        states = self._seek_states(partitions)
        self._seek_to(states, self._transport.list_offsets([(tp.topic, tp.partition, ts) for tp, _ in states],
                                                           isolation_level=self.isolation_level))

    def _seek_states(self, partitions: tuple) -> list[tuple[TopicPartition, _PartitionState]]:
        with self._lock:
            return [self._state_of(p) for p in (list(partitions) if partitions else list(self._assignment))]

    def _seek_to(self, states: list[tuple[TopicPartition, _PartitionState]], results: list) -> None:
        """Apply a ListOffsets looked up (without the lock) for ``states``; a partition
        given up meanwhile is left alone."""
        for res in results:
            res.raise_for_error()
        with self._lock:
            for (tp, st), res in zip(states, results):
                if self._assignment.get(tp) is not st:
                    continue
                st.drop_fetched()
                self._drop_held({tp})
                st.position = res.offset
                st.await_reset = False

    def offsets_for_times(self, timestamps: Mapping[Any, int]) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """For each partition, the first offset whose timestamp is >= the given one (None
        when there is none).  Raises UnknownTopicOrPartitionError, InvalidRequestError."""
        asked = []
        for key, ts in timestamps.items():
            tp = _tp(key)
            if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
                raise InvalidRequestError(f"timestamp of {tp} must be an int >= 0, got {ts!r}")
            asked.append((tp, ts))
        out = {}
        for (tp, _), res in zip(asked, self._transport.list_offsets([(tp.topic, tp.partition, ts) for tp, ts in asked],
                                                                    isolation_level=self.isolation_level)):
            res.raise_for_error()
            out[tp] = None if res.offset < 0 else OffsetAndTimestamp(res.offset, res.timestamp, res.leader_epoch)
        return out

    def beginning_offsets(self, partitions: Iterable[Any]) -> dict[TopicPartition, int]:
        return self._list(partitions, -2)

    def end_offsets(self, partitions: Iterable[Any]) -> dict[TopicPartition, int]:
        """High watermarks (the offset the next record will get); last stable offsets
        for a read_committed consumer."""
        return self._list(partitions, -1)

    def _list(self, partitions: Iterable[Any], ts: int) -> dict[TopicPartition, int]:
        tps = [_tp(p) for p in partitions]
        out = {}
        for tp, res in zip(tps, self._transport.list_offsets([(tp.topic, tp.partition, ts) for tp in tps],
                                                             isolation_level=self.isolation_level)):
            res.raise_for_error()
            out[tp] = res.offset
        return out

    def lag(self, partition: Any) -> int:
        """Records between the position and the high watermark of an assigned partition."""
        tp = _tp(partition)
        pos = self.position(tp)
        res = self._transport.list_offsets([(tp.topic, tp.partition, -1)], isolation_level=self.isolation_level)[0]
        res.raise_for_error()
        return max(res.offset - pos, 0)

    def pause(self, *partitions: Any) -> None:
        """Stop returning records of these assigned partitions until :meth:`resume`."""
        with self._lock:
            for p in partitions:
                _, st = self._state_of(p)
                st.paused = True
            self._prefetch()            # what was read ahead for them is dropped now

    def resume(self, *partitions: Any) -> None:
        with self._lock:
            for p in partitions:
                _, st = self._state_of(p)
                st.paused = False

    def paused(self) -> set[TopicPartition]:
        return {tp for tp, st in self._assignment.items() if st.paused}

    def partitions_for_topic(self, topic: str) -> set[int]:
        """Partition ids of ``topic``; never creates it.  Raises UnknownTopicOrPartitionError."""
        return set(range(self._transport.topic_metadata(topic, create=False)[0]))

    def topics(self) -> set[str]:
        return set(self._transport.list_topics())

    def member_id(self) -> str:
        return self._member_id

    def generation(self) -> int:
        return self._generation

    def wakeup(self) -> None:
        """Make a blocked :meth:`poll` return (empty) now."""
        self._wakeup = True
        self._transport.wake()

    # ------------------------------------------------------------------ closing

    def _check_open(self) -> None:
        if self._closed:
            raise IllegalStateError("the consumer is closed")

    def close(self, autocommit: bool = True, timeout: float | None = None) -> None:
        """Commit (with auto-commit enabled and ``autocommit``), leave the group (a static
        member stays until its session times out, as in Kafka) and stop.  Idempotent.

        ``timeout`` (seconds, default 30 as Kafka's ``close()``) bounds it all, as
        Kafka's ``close(Duration)``: the final commit and the LeaveGroup are waited for
        until then at most (best effort: a coordinator that does not answer in time is
        not waited for, its member then leaves when its session times out), and so is
        the heartbeat thread.  ``timeout=0`` sends them without waiting.

        Raises
        ------
        InvalidRequestError
            ``timeout`` is not a number >= 0.
        """
        if timeout is None:
            timeout = _CLOSE_TIMEOUT_S
        elif isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise InvalidRequestError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closed:
                return
            try:
                if autocommit and self.enable_auto_commit and self._assignment and (
                        self._subscription is None or self._state == _STABLE):
                    try:
                        sent = self._commit(self._consumed(), wait=False, report=False)
                        codes = None if sent is None else self._await(sent, deadline)
                        if codes is not None:
                            self._commit_result(codes)
                        elif sent is not None:
                            _log.warning("group %s: final commit not answered within the close timeout",
                                         self.group_id)
                    except PylogError as exc:
                        _log.warning("group %s: final commit failed: %s", self.group_id, exc)
                if self._subscription is not None and self._assignment and self._listener is not None \
                        and self._state == _STABLE:
                    self._listener.on_partitions_revoked(set(self._assignment))
                if self._subscription is not None:
                    try:
                        self._leave_group("the consumer is closing", deadline)
                    except PylogError as exc:
                        _log.warning("group %s: LeaveGroup failed: %s", self.group_id, exc)
            finally:
                self._closed = True
                self._assignment.clear()
                self._hb_stop.set()
                self._transport.wake()
                self._transport.prefetch([], owner=self._member_key)     # drop what was read ahead
                self._transport.release_member(self._member_key)
                self._closed_hook()
        if self._hb_thread is not None and self._hb_thread is not threading.current_thread():
            # (A daemon thread: one stuck in a heartbeat round trip ends with it.)
            self._hb_thread.join(max(0.0, deadline - time.monotonic()))

    def _abandon(self) -> None:
        """Stop without committing or leaving, as a crashed process would (its session
        then times out).  For tests and crash drills."""
        with self._lock:
            self._closed = True
            self._hb_stop.set()
            self._transport.prefetch([], owner=self._member_key)
            self._transport.release_member(self._member_key)
            self._closed_hook()
        if self._hb_thread is not None:
            self._hb_thread.join()

    #: Called with the consumer once it is closed (the Client that made it forgets it).
    _on_close: Callable[[Any], object] | None = None

    def _closed_hook(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __iter__(self) -> Iterator[ConsumerRecord]:
        """Records forever (``poll`` in a loop), until the consumer is closed."""
        while not self._closed:
            rec = self._next_held()
            if rec is not None:
                yield rec
                continue
            try:
                batch = self.poll(timeout_ms=1000)
            except IllegalStateError:
                if self._closed:
                    return
                raise
            self._held, self._held_idx = batch, 0

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Consumer {self.client_id} group={self.group_id} member={self._member_id or '-'} "
                f"gen={self._generation} partitions={len(self._assignment)}{' closed' if self._closed else ''}>")
