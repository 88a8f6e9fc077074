"""The records of ``__consumer_offsets``, in Kafka's exact bytes, and their replay.

The group coordinator keeps committed offsets and group metadata in the internal,
compacted topic ``__consumer_offsets`` (50 partitions by default; a group lives in
partition :func:`partition_for_group`).  A record's key says what it is about and its value
the latest state; a null value (tombstone) deletes it, and compaction keeps only the last
record per key.  Replaying a partition's records in order (:func:`replay`) rebuilds the
coordinator's state after a restart.

Key (big-endian), an int16 version then the fields:

- version 0 or 1, ``OffsetCommitKey``: ``group`` string, ``topic`` string, ``partition``
  int32.  Kafka writes version 1.
- version 2, ``GroupMetadataKey``: ``group`` string.
- versions 3 and up are the records of KIP-848 consumer groups and of share groups,
  which pylog does not write; :func:`decode_key` raises UnsupportedVersionError for them
  and :func:`replay` skips them.

``OffsetCommitValue`` (int16 version, then):

====  =============================================================================
v0    offset int64, metadata string, commit_timestamp int64
v1    offset int64, metadata string, commit_timestamp int64, expire_timestamp int64
v2    offset int64, metadata string, commit_timestamp int64
v3    offset int64, leader_epoch int32, metadata string, commit_timestamp int64
v4    as v3 in the flexible encoding (compact string, trailing tagged fields)
====  =============================================================================

Kafka writes v1 when the commit carried a retention time (OffsetCommit v2-v4 with
``retention_time_ms`` set), else v3; so does pylog.

``GroupMetadataValue`` (int16 version, then): ``protocol_type`` string, ``generation``
int32, ``protocol`` nullable string, ``leader`` nullable string,
``current_state_timestamp`` int64 (v2+), then an array of members: ``member_id`` string,
``group_instance_id`` nullable string (v3+), ``client_id`` string, ``client_host``
string, ``rebalance_timeout`` int32 (v1+), ``session_timeout`` int32, ``subscription``
bytes, ``assignment`` bytes.  v4 is the flexible encoding.  Kafka writes v3; so does pylog.

Values newer than v4 are read as v4 (KIP-915: later versions only add tagged fields).

Decoding is bounded: bad bytes raise :class:`~pylog.errors.CorruptRecordError`; bad values
to encode raise :class:`~pylog.errors.InvalidRequestError`.  Everything here is pure and
thread-safe except :class:`InMemoryOffsetStore`, which has its own lock.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable, Protocol, Sequence, Union

from pylog._value import FrozenValue, Value
from pylog.broker._codec import Reader, Writer
from pylog.errors import CorruptRecordError, InvalidRequestError, UnsupportedVersionError

__all__ = [
    "CONSUMER_OFFSETS_TOPIC",
    "DEFAULT_NUM_PARTITIONS",
    "OffsetCommitKey",
    "GroupMetadataKey",
    "OffsetCommitValue",
    "GroupMetadataValue",
    "MemberMetadata",
    "java_string_hash",
    "partition_for_group",
    "encode_offset_commit_key",
    "encode_group_metadata_key",
    "encode_offset_commit_value",
    "encode_group_metadata_value",
    "decode_key",
    "decode_offset_commit_value",
    "decode_group_metadata_value",
    "offset_commit_record",
    "offset_commit_tombstone",
    "group_metadata_record",
    "group_metadata_tombstone",
    "ReplayState",
    "replay",
    "replay_batch",
    "OffsetStore",
    "InMemoryOffsetStore",
]

#: Kafka's internal topic for committed offsets and group metadata.
CONSUMER_OFFSETS_TOPIC = "__consumer_offsets"
#: ``offsets.topic.num.partitions``, Kafka's default.
DEFAULT_NUM_PARTITIONS = 50

OFFSET_COMMIT_KEY_VERSION = 1
GROUP_METADATA_KEY_VERSION = 2
GROUP_METADATA_VALUE_VERSION = 3
_OFFSET_VALUE_NEWEST = 4
_GROUP_VALUE_NEWEST = 4

Record = tuple[bytes, "bytes | None"]


class OffsetCommitKey(FrozenValue):
    __slots__ = _fields = ("group", "topic", "partition")
    group: str
    topic: str
    partition: int

    def __init__(self, group: str, topic: str, partition: int) -> None:
        set_ = object.__setattr__
        set_(self, "group", group)
        set_(self, "topic", topic)
        set_(self, "partition", partition)


class GroupMetadataKey(FrozenValue):
    __slots__ = _fields = ("group",)
    group: str

    def __init__(self, group: str) -> None:
        object.__setattr__(self, "group", group)


class OffsetCommitValue(Value):
    """A committed offset.  ``expire_timestamp`` is -1 unless the commit carried a
    retention time (then the record is written as v1, the only version holding it)."""

    _fields = ("offset", "metadata", "commit_timestamp", "leader_epoch", "expire_timestamp")
    offset: int
    metadata: str
    commit_timestamp: int
    leader_epoch: int
    expire_timestamp: int

    def __init__(self, offset: int, metadata: str = "", commit_timestamp: int = -1, leader_epoch: int = -1,
                 expire_timestamp: int = -1) -> None:
        self.offset = offset
        self.metadata = metadata
        self.commit_timestamp = commit_timestamp
        self.leader_epoch = leader_epoch
        self.expire_timestamp = expire_timestamp


class MemberMetadata(Value):
    """One member as stored in a GroupMetadataValue record.  ``subscription`` is the
    member's metadata for the group's selected protocol, ``assignment`` what it got."""

    _fields = ("member_id", "client_id", "client_host", "session_timeout", "subscription", "assignment",
               "rebalance_timeout", "group_instance_id")
    member_id: str
    client_id: str
    client_host: str
    session_timeout: int
    subscription: bytes
    assignment: bytes
    rebalance_timeout: int
    group_instance_id: str | None

    def __init__(self, member_id: str, client_id: str, client_host: str, session_timeout: int, subscription: bytes,
                 assignment: bytes, rebalance_timeout: int = -1, group_instance_id: str | None = None) -> None:
        self.member_id = member_id
        self.client_id = client_id
        self.client_host = client_host
        self.session_timeout = session_timeout
        self.subscription = subscription
        self.assignment = assignment
        self.rebalance_timeout = rebalance_timeout
        self.group_instance_id = group_instance_id


class GroupMetadataValue(Value):
    _fields = ("protocol_type", "generation", "protocol", "leader", "current_state_timestamp", "members")
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp: int
    members: list[MemberMetadata]

    def __init__(self, protocol_type: str, generation: int, protocol: str | None = None, leader: str | None = None,
                 current_state_timestamp: int = -1, members: list[MemberMetadata] | None = None) -> None:
        self.protocol_type = protocol_type
        self.generation = generation
        self.protocol = protocol
        self.leader = leader
        self.current_state_timestamp = current_state_timestamp
        self.members = [] if members is None else members


# --------------------------------------------------------------------------- partitions

def java_string_hash(s: str) -> int:
    """Java's ``String.hashCode()`` of ``s`` (over UTF-16 code units), a signed int32."""
    units = s.encode("utf-16-be", "surrogatepass")
    h = 0
    for i in range(0, len(units), 2):
        h = (31 * h + ((units[i] << 8) | units[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_group(group_id: str, num_partitions: int = DEFAULT_NUM_PARTITIONS) -> int:
    """The ``__consumer_offsets`` partition of a group, as Kafka computes it:
    ``Utils.abs(group_id.hashCode()) % num_partitions``.

    Kafka uses ``Utils.abs`` here (``abs``, with ``Integer.MIN_VALUE`` mapped to 0), not
    the ``toPositive`` (low 31 bits) of the producer's partitioner; the two differ for
    negative hashes, and only ``abs`` finds the coordinator Kafka clients look for.

    Raises
    ------
    InvalidRequestError
        ``num_partitions`` is not positive or ``group_id`` is not a str.
    """
    if not isinstance(group_id, str):
        raise InvalidRequestError(f"group id must be a str, not {type(group_id).__name__}")
    if not isinstance(num_partitions, int) or num_partitions <= 0:
        raise InvalidRequestError(f"num_partitions must be a positive int, got {num_partitions!r}")
    h = java_string_hash(group_id)
    return (0 if h == -(2**31) else abs(h)) % num_partitions


# --------------------------------------------------------------------------- encoding

def encode_offset_commit_key(group: str, topic: str, partition: int) -> bytes:
    w = Writer()
    w.int16(OFFSET_COMMIT_KEY_VERSION, "version")
    w.string(group, "group")
    w.string(topic, "topic")
    w.int32(partition, "partition")
    return w.getvalue()


def encode_group_metadata_key(group: str) -> bytes:
    w = Writer()
    w.int16(GROUP_METADATA_KEY_VERSION, "version")
    w.string(group, "group")
    return w.getvalue()


def encode_offset_commit_value(value: OffsetCommitValue, version: int | None = None) -> bytes:
    """Bytes of an offset commit; ``version`` None picks what Kafka writes (1 with an
    expire timestamp, else 3).

    Raises
    ------
    InvalidRequestError
        Bad field values, or an expire timestamp with a version that cannot hold it.
    """
    if version is None:
        version = 1 if value.expire_timestamp != -1 else 3
    if not isinstance(version, int) or not 0 <= version <= _OFFSET_VALUE_NEWEST:
        raise InvalidRequestError(f"OffsetCommitValue version must be 0..4, got {version!r}")
    if value.expire_timestamp != -1 and version != 1:
        raise InvalidRequestError("only OffsetCommitValue v1 holds an expire timestamp")
    flexible = version >= 4
    w = Writer()
    w.int16(version, "version")
    w.int64(value.offset, "offset")
    if version >= 3:
        w.int32(value.leader_epoch, "leader_epoch")
    w.string(value.metadata, "metadata", compact=flexible)
    w.int64(value.commit_timestamp, "commit_timestamp")
    if version == 1:
        w.int64(value.expire_timestamp, "expire_timestamp")
    if flexible:
        w.empty_tagged_fields()
    return w.getvalue()


def encode_group_metadata_value(value: GroupMetadataValue,
                                version: int = GROUP_METADATA_VALUE_VERSION) -> bytes:
    """Bytes of a group's metadata (Kafka writes v3).

    Raises
    ------
    InvalidRequestError
        Bad field values.
    """
    if not isinstance(version, int) or not 0 <= version <= _GROUP_VALUE_NEWEST:
        raise InvalidRequestError(f"GroupMetadataValue version must be 0..4, got {version!r}")
    flexible = version >= 4
    w = Writer()
    w.int16(version, "version")
    w.string(value.protocol_type, "protocol_type", compact=flexible)
    w.int32(value.generation, "generation")
    w.string(value.protocol, "protocol", nullable=True, compact=flexible)
    w.string(value.leader, "leader", nullable=True, compact=flexible)
    if version >= 2:
        w.int64(value.current_state_timestamp, "current_state_timestamp")
    w.array_length(len(value.members), compact=flexible)
    for m in value.members:
        w.string(m.member_id, "member_id", compact=flexible)
        if version >= 3:
            w.string(m.group_instance_id, "group_instance_id", nullable=True, compact=flexible)
        w.string(m.client_id, "client_id", compact=flexible)
        w.string(m.client_host, "client_host", compact=flexible)
        if version >= 1:
            w.int32(m.rebalance_timeout, "rebalance_timeout")
        w.int32(m.session_timeout, "session_timeout")
        w.bytes_(m.subscription, "subscription", compact=flexible)
        w.bytes_(m.assignment, "assignment", compact=flexible)
        if flexible:
            w.empty_tagged_fields()
    if flexible:
        w.empty_tagged_fields()
    return w.getvalue()


def offset_commit_record(group: str, topic: str, partition: int,
                         value: OffsetCommitValue) -> Record:
    """(key, value) of an offset commit, as the coordinator appends it."""
    return encode_offset_commit_key(group, topic, partition), encode_offset_commit_value(value)


def offset_commit_tombstone(group: str, topic: str, partition: int) -> Record:
    """(key, None): deletes a committed offset (OffsetDelete, expiration, group deletion)."""
    return encode_offset_commit_key(group, topic, partition), None


def group_metadata_record(group: str, value: GroupMetadataValue) -> Record:
    return encode_group_metadata_key(group), encode_group_metadata_value(value)


def group_metadata_tombstone(group: str) -> Record:
    """(key, None): deletes a group's metadata (DeleteGroups, an expired empty group)."""
    return encode_group_metadata_key(group), None


# --------------------------------------------------------------------------- decoding

def decode_key(data) -> OffsetCommitKey | GroupMetadataKey:
    """The key of a ``__consumer_offsets`` record.

    Raises
    ------
    CorruptRecordError
        Truncated or malformed bytes.
    UnsupportedVersionError
        A record type pylog does not read (key version 3 and up: KIP-848 consumer
        groups, share groups).
    """
    r = Reader(data, CorruptRecordError, "__consumer_offsets key")
    version = r.int16()
    if version in (0, 1):
        key = OffsetCommitKey(r.string(), r.string(), r.int32())
    elif version == 2:
        key = GroupMetadataKey(r.string())
    elif version > 2:
        raise UnsupportedVersionError(
            f"__consumer_offsets key version {version} is a record type pylog does not read")
    else:
        raise r.fail(f"bad key version {version}")
    if r.remaining:
        raise r.fail(f"{r.remaining} bytes after the key")
    return key


def decode_offset_commit_value(data) -> OffsetCommitValue:
    """Raises CorruptRecordError for bad bytes."""
    r = Reader(data, CorruptRecordError, "OffsetCommitValue")
    version = r.int16()
    if version < 0:
        raise r.fail(f"bad version {version}")
    flexible = version >= 4
    offset = r.int64()
    leader_epoch = r.int32() if version >= 3 else -1
    metadata = r.string(compact=flexible)
    commit_ts = r.int64()
    expire_ts = r.int64() if version == 1 else -1
    if flexible:
        r.skip_tagged_fields()
    return OffsetCommitValue(offset=offset, metadata=metadata, commit_timestamp=commit_ts,
                             leader_epoch=leader_epoch, expire_timestamp=expire_ts)


def decode_group_metadata_value(data) -> GroupMetadataValue:
    """Raises CorruptRecordError for bad bytes."""
    r = Reader(data, CorruptRecordError, "GroupMetadataValue")
    version = r.int16()
    if version < 0:
        raise r.fail(f"bad version {version}")
    flex = version >= 4
    value = GroupMetadataValue(
        protocol_type=r.string(compact=flex),
        generation=r.int32(),
        protocol=r.string(nullable=True, compact=flex),
        leader=r.string(nullable=True, compact=flex),
    )
    if version >= 2:
        value.current_state_timestamp = r.int64()
    # Smallest possible member encoding, so a huge count is refused before any work.
    if flex:
        min_member = 15
    else:
        min_member = 18 + (4 if version >= 1 else 0) + (2 if version >= 3 else 0)
    for _ in range(r.array_length(min_member, compact=flex)):
        member_id = r.string(compact=flex)
        instance_id = r.string(nullable=True, compact=flex) if version >= 3 else None
        client_id = r.string(compact=flex)
        client_host = r.string(compact=flex)
        rebalance_timeout = r.int32() if version >= 1 else -1
        session_timeout = r.int32()
        subscription = r.bytes_(compact=flex)
        assignment = r.bytes_(compact=flex)
        if flex:
            r.skip_tagged_fields()
        value.members.append(MemberMetadata(
            member_id=member_id, group_instance_id=instance_id, client_id=client_id,
            client_host=client_host, rebalance_timeout=rebalance_timeout,
            session_timeout=session_timeout, subscription=subscription, assignment=assignment))
    if flex:
        r.skip_tagged_fields()
    return value


# --------------------------------------------------------------------------- replay

class ReplayState(Value):
    """Coordinator state rebuilt from ``__consumer_offsets`` records.

    ``offsets``: group -> (topic, partition) -> committed offset.  ``groups``: group ->
    its last metadata.  A group may have offsets and no metadata (a group that only
    commits, or whose members all left before any metadata was written).  ``skipped``
    counts records of types pylog does not read.
    """

    _fields = ("offsets", "groups", "skipped", "pending")
    offsets: dict[str, dict[tuple[str, int], OffsetCommitValue]]
    groups: dict[str, GroupMetadataValue]
    skipped: int
    #: Transactional offset commits whose transaction has no marker yet: producer id ->
    #: group -> (topic, partition) -> offset (KIP-98: they become committed offsets
    #: when the producer's COMMIT marker follows, and are dropped at its ABORT marker).
    pending: dict[int, dict[str, dict[tuple[str, int], OffsetCommitValue]]]

    def __init__(self, offsets: dict[str, dict[tuple[str, int], OffsetCommitValue]] | None = None,
                 groups: dict[str, GroupMetadataValue] | None = None, skipped: int = 0,
                 pending: dict[int, dict[str, dict[tuple[str, int], OffsetCommitValue]]] | None = None) -> None:
        self.offsets = {} if offsets is None else offsets
        self.groups = {} if groups is None else groups
        self.skipped = skipped
        self.pending = {} if pending is None else pending

    def complete_txn(self, producer_id: int, commit: bool) -> None:
        """A transaction marker of ``producer_id`` was read: its pending offsets become
        committed offsets (commit) or are dropped (abort)."""
        groups = self.pending.pop(producer_id, None)
        if commit and groups:
            for group, offsets in groups.items():
                self.offsets.setdefault(group, {}).update(offsets)


def replay(records: Iterable[Record], state: ReplayState | None = None) -> ReplayState:
    """Apply ``(key, value)`` records in log order to ``state`` (a new one if None).

    A later record for a key replaces an earlier one; a tombstone removes it.  Feeding a
    log in pieces (or each partition in turn) gives the same state as feeding it at once.

    Raises
    ------
    CorruptRecordError
        A key or value cannot be decoded (the state then holds the records before it).
    """
    if state is None:
        state = ReplayState()
    for key_bytes, value_bytes in records:
        _apply(state, _decode(key_bytes, value_bytes))
    return state


def replay_batch(records: Iterable[Record], state: ReplayState, producer_id: int = -1) -> None:
    """Apply the records of one batch to ``state``, all or none: every record is decoded
    before any is applied.  A coordinator loading its partitions skips a batch that
    raises and keeps the rest, since each batch is one atomic write of one group
    (:class:`OffsetStore`).  ``producer_id`` >= 0 marks a transactional batch (a
    TxnOffsetCommit): its offsets wait in ``state.pending`` for the producer's marker
    (:meth:`ReplayState.complete_txn`).

    Raises
    ------
    CorruptRecordError
        A key or value cannot be decoded; ``state`` is unchanged.
    """
    decoded = [_decode(k, v) for k, v in records]
    if producer_id >= 0:
        pending = state.pending.setdefault(producer_id, {})
        for item in decoded:
            if item is not None and isinstance(item[0], OffsetCommitKey) and item[1] is not None:
                key, value = item
                pending.setdefault(key.group, {})[(key.topic, key.partition)] = value
            else:
                _apply(state, item)
        return
    for item in decoded:
        _apply(state, item)


#: A decoded record: (key, value or None for a tombstone), or None for a type pylog skips.
_Decoded = Union[tuple[Union[OffsetCommitKey, GroupMetadataKey],
                       Union[OffsetCommitValue, GroupMetadataValue, None]], None]


def _decode(key_bytes, value_bytes) -> _Decoded:
    """(key, value or None for a tombstone), or None for a record type pylog skips."""
    if key_bytes is None:
        raise CorruptRecordError("__consumer_offsets record without a key")
    try:
        key = decode_key(key_bytes)
    except UnsupportedVersionError:
        return None
    if value_bytes is None:
        return key, None
    if isinstance(key, OffsetCommitKey):
        return key, decode_offset_commit_value(value_bytes)
    return key, decode_group_metadata_value(value_bytes)


def _apply(state: ReplayState, item: _Decoded) -> None:
    if item is None:
        state.skipped += 1
        return
    key, value = item
    if isinstance(key, OffsetCommitKey):
        # A plain commit written after a transactional one wins over it when that
        # transaction commits (Kafka keeps the offset appended last).
        for groups in state.pending.values():
            offsets = groups.get(key.group)
            if offsets is not None:
                offsets.pop((key.topic, key.partition), None)
        if value is None:
            group_offsets = state.offsets.get(key.group)
            if group_offsets is not None:
                group_offsets.pop((key.topic, key.partition), None)
                if not group_offsets:
                    del state.offsets[key.group]
        else:
            state.offsets.setdefault(key.group, {})[(key.topic, key.partition)] = value
    elif value is None:
        state.groups.pop(key.group, None)
    else:
        state.groups[key.group] = value


# --------------------------------------------------------------------------- store

class OffsetStore(Protocol):
    """Where the coordinator persists its records: the ``__consumer_offsets`` log.

    ``append`` writes the records of one group, all to the group's partition, as one
    atomic batch (Kafka appends a commit's offsets in one batch, so they are all durable
    or none are).  It returns once the records are durable as the log defines it, and
    raises a :class:`~pylog.errors.PylogError` if they are not: the coordinator then
    reports the error and leaves its state as it was.  Implementations must be callable
    while the coordinator holds its lock, and must not call back into the coordinator.

    A replicated store (a clustered broker's) returns a replication handle instead of
    None: an object whose ``add_done_callback(fn)`` calls ``fn(error)`` once, on any
    thread but never under the coordinator's lock, with None when the high watermark
    has passed the records or the PylogError that says it will not (the ISR did not
    take them in time, leadership moved).  The coordinator acts on what depends on the
    write only then (expired offsets go, a failed assignment sends the group back to
    rebalancing, a failed commit is undone).  Such a store also has
    ``replicated(partition)``: a handle for everything the partition holds now (a
    transaction marker, after which the coordinator settles the transaction's offsets).
    """

    num_partitions: int

    def append(self, partition: int, records: Sequence[Record], *, producer_id: int = -1,
               producer_epoch: int = -1) -> Any:
        """``producer_id`` >= 0: a transactional batch of that producer and epoch (a
        TxnOffsetCommit), which the partition refuses with INVALID_PRODUCER_EPOCH when a
        newer epoch of the producer has written there.  Returns None, or a replication
        handle (see the class docstring)."""


class InMemoryOffsetStore:
    """An :class:`OffsetStore` keeping records in lists, one per partition (tests, and
    embedded use without persistence).  Thread-safe.  Nothing survives the process.

    ``fail_with`` makes the next appends raise that error instead of storing (to test the
    coordinator's handling of storage errors).
    """

    def __init__(self, num_partitions: int = DEFAULT_NUM_PARTITIONS) -> None:
        if not isinstance(num_partitions, int) or num_partitions <= 0:
            raise InvalidRequestError(f"num_partitions must be a positive int, got {num_partitions!r}")
        self.num_partitions = num_partitions
        self._lock = threading.Lock()
        self._partitions: list[list[Record]] = [[] for _ in range(num_partitions)]
        self.fail_with: BaseException | None = None

    def append(self, partition: int, records: Sequence[Record], *, producer_id: int = -1,
               producer_epoch: int = -1) -> None:
        if not 0 <= partition < self.num_partitions:
            raise InvalidRequestError(
                f"partition {partition} of {CONSUMER_OFFSETS_TOPIC} is outside 0..{self.num_partitions - 1}")
        with self._lock:
            if self.fail_with is not None:
                raise self.fail_with
            self._partitions[partition].extend(records)

    def records(self, partition: int | None = None) -> list[Record]:
        """The records of one partition, or of all partitions in partition order."""
        with self._lock:
            if partition is not None:
                return list(self._partitions[partition])
            return [r for part in self._partitions for r in part]
