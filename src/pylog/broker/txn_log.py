"""The records of ``__transaction_state``, in Kafka's exact bytes, and their replay.

The transaction coordinator keeps one record per transactional id in the internal,
compacted topic ``__transaction_state`` (``transaction.state.log.num.partitions``, 50 by
default); a transactional id lives in partition :func:`partition_for_transactional_id`
(``Utils.abs(transactionalId.hashCode()) % partitions``, as for groups).  Every state
change of a transaction appends the whole new state; compaction keeps the last record
per key, and a null value (tombstone) removes an expired transactional id.  Replaying a
partition in order (:func:`replay`) rebuilds the coordinator's state after a restart.

``TransactionLogKey`` (big-endian): ``version`` int16 = 0, ``transactional_id`` string.

``TransactionLogValue`` (int16 version, then):

=====  ==============================================================================
v0     producer_id int64, producer_epoch int16, transaction_timeout_ms int32,
       transaction_status int8, transaction_partitions nullable array of
       (topic string, partition_ids array of int32),
       transaction_last_update_timestamp_ms int64, transaction_start_timestamp_ms int64
v1     the same fields in the flexible encoding (compact strings and arrays, tagged
       fields per struct), with tagged fields 0 previous_producer_id int64,
       1 next_producer_id int64, 2 client_transaction_version int16
=====  ==============================================================================

Kafka writes v0 for clients without KIP-890 part 2 (transaction version 0 or 1); so
does pylog.  ``transaction_partitions`` is null in state Empty, as Kafka writes it.
``transaction_status`` is the :class:`TransactionState` code.

Decoding is bounded: bad bytes raise :class:`~pylog.errors.CorruptRecordError`; bad
values to encode raise :class:`~pylog.errors.InvalidRequestError`.  Everything here is
pure and thread-safe.
"""

from __future__ import annotations

import enum
from typing import Iterable

from pylog._value import Value
from pylog.broker._codec import Reader, Writer
from pylog.broker.group_offsets import partition_for_group
from pylog.errors import CorruptRecordError, InvalidRequestError

__all__ = [
    "TRANSACTION_STATE_TOPIC",
    "DEFAULT_NUM_PARTITIONS",
    "TransactionState",
    "TransactionLogValue",
    "partition_for_transactional_id",
    "encode_key",
    "encode_value",
    "decode_key",
    "decode_value",
    "txn_record",
    "txn_tombstone",
    "replay",
    "replay_batch",
]

#: Kafka's internal topic of transaction state.
TRANSACTION_STATE_TOPIC = "__transaction_state"
#: ``transaction.state.log.num.partitions``, Kafka's default.
DEFAULT_NUM_PARTITIONS = 50

_KEY_VERSION = 0
_VALUE_VERSION = 0
_VALUE_NEWEST = 1

Record = tuple[bytes, "bytes | None"]


class TransactionState(enum.Enum):
    """Kafka's transaction states; the value is ``(code in the log, name on the wire)``."""

    EMPTY = (0, "Empty")
    ONGOING = (1, "Ongoing")
    PREPARE_COMMIT = (2, "PrepareCommit")
    PREPARE_ABORT = (3, "PrepareAbort")
    COMPLETE_COMMIT = (4, "CompleteCommit")
    COMPLETE_ABORT = (5, "CompleteAbort")
    DEAD = (6, "Dead")
    PREPARE_EPOCH_FENCE = (7, "PrepareEpochFence")

    @property
    def code(self) -> int:
        return self.value[0]

    @property
    def state_name(self) -> str:
        """The name DescribeTransactions and ListTransactions use."""
        return self.value[1]

    @classmethod
    def from_code(cls, code: int) -> "TransactionState":
        for s in cls:
            if s.value[0] == code:
                return s
        raise CorruptRecordError(f"unknown transaction status {code}")

    @classmethod
    def from_name(cls, name: str) -> "TransactionState | None":
        for s in cls:
            if s.value[1] == name:
                return s
        return None


class TransactionLogValue(Value):
    """One transactional id's state as stored.  ``partitions``: topic -> sorted
    partition ids (empty in Empty and the Complete states)."""

    _fields = ("producer_id", "producer_epoch", "transaction_timeout_ms", "state", "partitions",
               "last_update_timestamp_ms", "start_timestamp_ms", "previous_producer_id", "next_producer_id",
               "client_transaction_version")
    producer_id: int
    producer_epoch: int
    transaction_timeout_ms: int
    state: TransactionState
    partitions: dict[str, list[int]]
    last_update_timestamp_ms: int
    start_timestamp_ms: int
    previous_producer_id: int
    next_producer_id: int
    client_transaction_version: int

    def __init__(self, producer_id: int, producer_epoch: int, transaction_timeout_ms: int, state: TransactionState,
                 partitions: dict[str, list[int]] | None = None, last_update_timestamp_ms: int = -1,
                 start_timestamp_ms: int = -1, previous_producer_id: int = -1, next_producer_id: int = -1,
                 client_transaction_version: int = 0) -> None:
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.transaction_timeout_ms = transaction_timeout_ms
        self.state = state
        self.partitions = {} if partitions is None else partitions
        self.last_update_timestamp_ms = last_update_timestamp_ms
        self.start_timestamp_ms = start_timestamp_ms
        self.previous_producer_id = previous_producer_id
        self.next_producer_id = next_producer_id
        self.client_transaction_version = client_transaction_version


def partition_for_transactional_id(transactional_id: str, num_partitions: int = DEFAULT_NUM_PARTITIONS) -> int:
    """The ``__transaction_state`` partition of a transactional id, as Kafka computes it
    (the same ``Utils.abs(hashCode) % n`` as a group's offsets partition).

    Raises
    ------
    InvalidRequestError
        ``num_partitions`` is not positive or ``transactional_id`` is not a str.
    """
    return partition_for_group(transactional_id, num_partitions)


# --------------------------------------------------------------------------- encoding

def encode_key(transactional_id: str) -> bytes:
    w = Writer()
    w.int16(_KEY_VERSION, "version")
    w.string(transactional_id, "transactional_id")
    return w.getvalue()


def encode_value(value: TransactionLogValue, version: int = _VALUE_VERSION) -> bytes:
    """Bytes of a transaction's state (Kafka writes v0 for pre-KIP-890-part-2 clients).

    Raises
    ------
    InvalidRequestError
        Bad field values, or a state that is never written (PrepareEpochFence), or
        partitions in state Empty.
    """
    if version not in (0, 1):
        raise InvalidRequestError(f"TransactionLogValue version must be 0 or 1, got {version!r}")
    if value.state is TransactionState.PREPARE_EPOCH_FENCE:
        raise InvalidRequestError("PrepareEpochFence is a transient state and is never written to the log")
    if value.state is TransactionState.EMPTY and value.partitions:
        raise InvalidRequestError("a transaction in state Empty has no partitions")
    flex = version >= 1
    w = Writer()
    w.int16(version, "version")
    w.int64(value.producer_id, "producer_id")
    w.int16(value.producer_epoch, "producer_epoch")
    w.int32(value.transaction_timeout_ms, "transaction_timeout_ms")
    w.int8(value.state.code, "transaction_status")
    if value.state is TransactionState.EMPTY:
        if flex:
            w.uvarint(0)
        else:
            w.int32(-1, "transaction_partitions")
    else:
        w.array_length(len(value.partitions), compact=flex)
        for topic, parts in sorted(value.partitions.items()):
            w.string(topic, "topic", compact=flex)
            w.int32_array(sorted(parts), "partition_ids", compact=flex)
            if flex:
                w.empty_tagged_fields()
    w.int64(value.last_update_timestamp_ms, "transaction_last_update_timestamp_ms")
    w.int64(value.start_timestamp_ms, "transaction_start_timestamp_ms")
    if flex:
        tags = []
        if value.previous_producer_id != -1:
            tw = Writer()
            tw.int64(value.previous_producer_id, "previous_producer_id")
            tags.append((0, tw.getvalue()))
        if value.next_producer_id != -1:
            tw = Writer()
            tw.int64(value.next_producer_id, "next_producer_id")
            tags.append((1, tw.getvalue()))
        if value.client_transaction_version != 0:
            tw = Writer()
            tw.int16(value.client_transaction_version, "client_transaction_version")
            tags.append((2, tw.getvalue()))
        w.uvarint(len(tags))
        for tag, data in tags:
            w.uvarint(tag)
            w.uvarint(len(data))
            w.raw(data)
    return w.getvalue()


def txn_record(transactional_id: str, value: TransactionLogValue) -> Record:
    """(key, value) of a transaction state change, as the coordinator appends it."""
    return encode_key(transactional_id), encode_value(value)


def txn_tombstone(transactional_id: str) -> Record:
    """(key, None): removes an expired transactional id."""
    return encode_key(transactional_id), None


# --------------------------------------------------------------------------- decoding

def decode_key(data) -> str:
    """The transactional id of a ``__transaction_state`` key.

    Raises
    ------
    CorruptRecordError
        Truncated or malformed bytes, or a key version other than 0.
    """
    r = Reader(data, CorruptRecordError, "TransactionLogKey")
    version = r.int16()
    if version != _KEY_VERSION:
        raise r.fail(f"unknown key version {version}")
    tid = r.string()
    if r.remaining:
        raise r.fail(f"{r.remaining} bytes after the key")
    return tid


def decode_value(data) -> TransactionLogValue:
    """Raises CorruptRecordError for bad bytes.  Versions above 1 are read as v1
    (later versions only add tagged fields)."""
    r = Reader(data, CorruptRecordError, "TransactionLogValue")
    version = r.int16()
    if version < 0:
        raise r.fail(f"bad version {version}")
    flex = version >= 1
    value = TransactionLogValue(producer_id=r.int64(), producer_epoch=r.int16(),
                                transaction_timeout_ms=r.int32(), state=TransactionState.EMPTY)
    value.state = TransactionState.from_code(r.int8())
    n = r.array_length(3 if flex else 6, compact=flex, nullable=True)
    for _ in range(max(n, 0)):
        topic = r.string(compact=flex)
        count = r.array_length(4, compact=flex)
        parts = [r.int32() for _ in range(count)]
        if flex:
            r.skip_tagged_fields()
        value.partitions.setdefault(topic, []).extend(parts)
    value.last_update_timestamp_ms = r.int64()
    value.start_timestamp_ms = r.int64()
    if flex:
        for _ in range(r.uvarint()):
            tag = r.uvarint()
            size = r.uvarint()
            sub = Reader(r.raw(size), CorruptRecordError, "TransactionLogValue tagged field")
            if tag == 0:
                value.previous_producer_id = sub.int64()
            elif tag == 1:
                value.next_producer_id = sub.int64()
            elif tag == 2:
                value.client_transaction_version = sub.int16()
    return value


def replay(records: Iterable[Record], state: dict[str, TransactionLogValue] | None = None
           ) -> dict[str, TransactionLogValue]:
    """Apply ``(key, value)`` records in log order to ``state`` (transactional id ->
    latest value; a new dict if None): a later record replaces an earlier one, a
    tombstone removes the id.

    Raises
    ------
    CorruptRecordError
        A key or value cannot be decoded (``state`` then holds the records before it).
    """
    if state is None:
        state = {}
    for record in records:
        replay_batch([record], state)
    return state


def replay_batch(records: Iterable[Record], state: dict[str, TransactionLogValue]) -> None:
    """:func:`replay` of one batch, all or none: every record is decoded before any is
    applied (a coordinator loading its partitions skips a damaged batch and keeps the
    rest).

    Raises
    ------
    CorruptRecordError
        A key or value cannot be decoded; ``state`` is unchanged.
    """
    decoded = []
    for k, v in records:
        if k is None:
            raise CorruptRecordError("__transaction_state record without a key")
        decoded.append((decode_key(k), None if v is None else decode_value(v)))
    for tid, value in decoded:
        if value is None:
            state.pop(tid, None)
        else:
            state[tid] = value
