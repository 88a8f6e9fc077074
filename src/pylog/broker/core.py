"""The broker core: topics, produce, fetch, offsets, configs, producer ids and groups, over
one data directory.

Both front doors call this one implementation: the embedded client directly, the
Kafka wire-protocol server by translating each request into these calls.  So every
operation comes in two shapes: a per-partition (or per-topic) result carrying Kafka's
error code (``error_code``, ``error_message``; :meth:`raise_for_error`), which is what a
response needs, and a raising convenience for Python callers.  Bad input always gets an
error from :mod:`pylog.errors` and changes nothing.

On disk
-------
::

    <data_dir>/
      meta.properties, *-checkpoint, .kafka_cleanshutdown     the LogManager's (pylog.storage)
      topic-metadata.json                                      this module: the topic registry
      <topic>-<partition>/                                     one Log per partition
        <offset>.snapshot                                      producer state (open transactions too)
        <offset>.txnindex                                      aborted transactions (pylog.storage)
      __consumer_offsets-<0..49>/                              committed offsets, group metadata
      __transaction_state-<0..49>/                             transaction state (created on first use;
                                                               pylog.broker.txn_coordinator)

``topic-metadata.json`` (JSON, ``"version": 1``) holds, per topic, its id (Kafka's
base64 Uuid form), partition count, leader epoch, whether it is internal, and its config
overrides as canonical strings; plus ``producer_id_block_end``, the end of the block of
producer ids handed out.  It is replaced atomically (write ``.tmp``, fsync, rename, fsync
the directory), so a crash leaves the old registry or the new one.

Crash behaviour
---------------
The registry is written before the logs change: creating a topic (or partitions) writes
the registry first, then creates the logs, and opening creates any partition log the
registry lists but the disk lacks; deleting a topic removes it from the registry first,
then deletes its logs, and opening deletes any log whose topic the registry no longer
lists.  A data directory without a registry (written by a bare LogManager) has its logs
adopted as topics.  Logs recover as :mod:`pylog.storage` describes.  Producer state is
snapshotted at a clean shutdown (and when a segment rolls) and otherwise rebuilt by
replaying batch headers from the newest snapshot; when the log's ``.txnindex`` files
cannot be trusted (an unclean shutdown, a damaged file) the replay starts at a snapshot
at or below the first untrusted segment and its ABORT markers rebuild them, so open
transactions and the last stable offset are right after any restart.  Producer ids come in blocks of
``producer_id_block_size``; the block end is persisted before any id of it is handed out,
so after a crash ids restart at the next block and are never reused (Kafka's
ProducerIdsRecord does the same).

Opening and closing many partitions
-----------------------------------
After a clean shutdown a partition needs no recovery, so the open only notes it: its log,
indexes, leader epochs and producer snapshot load on its first use, or in the loader
thread that starts with the broker (with ``start_loader=False``, at
:meth:`Broker.start_loading`: ``pylog serve`` calls it once it listens), as Kafka's
``num.recovery.threads.per.data.dir`` threads, and :meth:`Broker.wait_loaded` waits for
that thread.  The internal topics, and every
partition after an unclean shutdown, load (and recover) before the broker is returned.
The first new producer id waits for every partition to be loaded, so the id-block check
above sees all of them.  A clean close writes a producer snapshot only where appends
happened since the last one, without an fsync each, and makes all of it durable with
one ``syncfs`` before the checkpoints and the clean-shutdown marker
(:meth:`pylog.storage.manager.LogManager.close` says what a kill at each step leaves).

Towards KRaft
-------------
The registry is the state a KRaft metadata log would hold.  Moving there means turning
each registry change into a record appended to ``__cluster_metadata-0`` (TopicRecord and
PartitionRecord on create, PartitionChangeRecord on create_partitions, ConfigRecord on
alter, RemoveTopicRecord on delete, ProducerIdsRecord on a new id block) and replaying
that log on open; this file then plays the part of the metadata snapshot.  Every change
already goes through :meth:`Broker._commit_registry` in that order (state change
described, made durable, then applied to the logs), which is the seam.

Threads
-------
Thread-safe.  The registry has one lock; each partition has one lock that serialises the
producer-state check, the log append and the state update of a produce; fetches read the
log under the log's own lock only.  A transactional append (and a transaction marker)
also holds the log's lock across the append and the state update, and a read_committed
fetch computes the last stable offset and reads under it, so it never sees records of a
transaction without the transaction being open.  The group coordinator has its own lock and may call
into the ``__consumer_offsets`` partitions while holding it (never the other way round);
so does the transaction coordinator, with the partitions of ``__transaction_state`` and of
its transactions (markers) and then the group coordinator's lock; the produce path asks
it (``txn_verifier``) without taking its lock.
A background thread (``background=True``) applies retention and flush policies, writes
checkpoints and producer snapshots, and fires group timeouts, and the storage's
:class:`~pylog.storage.cleaner.LogCleaner` compacts ``cleanup.policy=compact`` topics in a
thread of its own; with ``background=False`` call :meth:`Broker.tick` yourself, which does
all of it (tests drive it with a fake clock).
"""

from __future__ import annotations

import copy
import errno as _errno
import dataclasses
import json
import logging
import os
import resource
import struct
import threading
import time
from dataclasses import field
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

from pylog import _core
from pylog import codecs as _codecs
from pylog._uuid import random_kafka_uuid
from pylog._value import FrozenValue, Value, frozen_dataclass
from pylog.broker.group import CommitOffset, GroupCoordinator, GroupCoordinatorConfig, OffsetFetchResult
from pylog.broker import group_offsets as _group_offsets
from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC
from pylog.broker.producer_state import CONTROL_ABORT, CONTROL_COMMIT, ProducerStateManager
from pylog.broker import txn_log as _txn_log
from pylog.broker.txn_coordinator import (BrokerTxnIO, ListTransactionsResult, TransactionCoordinator,
                                          TransactionCoordinatorConfig, TransactionDescription)
from pylog.broker.topic_config import (LONG_MAX, ConfigEntry, TopicConfig, apply_config_ops, check_config_ops,
                                       normalize_all)
from pylog.errors import (CorruptRecordError, InvalidConfigError, InvalidPartitionsError,
                          InvalidReplicationFactorError, InvalidRequestError, InvalidRecordError,
                          InvalidRequiredAcksError, InvalidTimestampError, InvalidTopicError,
                          KafkaStorageError, LogClosedError, NotEnoughReplicasError, OffsetOutOfRangeError,
                          PolicyViolationError, PylogError, TopicAlreadyExistsError, UnknownTopicOrPartitionError,
                          error_for_code)
from pylog.records import build_control_batch
from pylog.storage import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, MAX_TIMESTAMP, Log, LogManager, ReadResult
from pylog.storage.txn_index import AbortedTxn
from pylog.storage.cleaner import LogCleaner
from pylog.storage.checkpoint import atomic_write
from pylog.storage.dir_lock import DataDirLock
from pylog.records import ControlRecord

__all__ = [
    "Broker",
    "BrokerConfig",
    "TopicPartition",
    "OffsetAndMetadata",
    "NewTopic",
    "ProduceResult",
    "FetchResult",
    "ListOffsetsResult",
    "EpochEndOffset",
    "InitProducerIdResult",
    "PartitionInfo",
    "TopicDescription",
    "TopicResult",
    "ProducerInfo",
    "REGISTRY_FILE",
    "READ_UNCOMMITTED",
    "READ_COMMITTED",
]

_log = logging.getLogger("pylog.broker")

REGISTRY_FILE = "topic-metadata.json"
_REGISTRY_VERSION = 1
_MAX_REGISTRY_BYTES = 256 << 20  # bounded read: a real registry is ~200 bytes a topic
READ_UNCOMMITTED = 0
READ_COMMITTED = 1
_MAX_COALESCED_BYTES = 1024 * 1024
_ATTR_TRANSACTIONAL = 0x10
_ATTR_CONTROL = 0x20
_INT32_MAX = 2**31 - 1
_FENCED_LEADER_EPOCH = 74
_UNKNOWN_LEADER_EPOCH = 75
#: Descriptors an open partition keeps (measured: the active segment's .log twice, for
#: appends and for reads, and its .index and .timeindex).
_FDS_PER_PARTITION = 4
_LEGAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_CODEC_FOR_COMPRESSION_TYPE = {"uncompressed": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} appears twice")
        out[k] = v
    return out


def _is_int(v: Any, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def _check_registry(doc: Any, topic_defaults: Mapping[str, Any]) -> None:
    """Raise ValueError (or InvalidConfigError) naming what is wrong with a parsed
    registry; keys it does not know are left alone."""
    if not isinstance(doc, dict) or doc.get("version") != _REGISTRY_VERSION:
        raise ValueError(f"unsupported registry version {doc.get('version') if isinstance(doc, dict) else doc!r}")
    cluster_id = doc.get("cluster_id")
    if cluster_id is not None and not (isinstance(cluster_id, str) and 0 < len(cluster_id) <= 64
                                       and set(cluster_id) <= _LEGAL_CHARS):
        raise ValueError(f"cluster_id {cluster_id!r} is not a cluster id")
    if not _is_int(doc.get("producer_id_block_end", 0), 0, 2**63 - 1):
        raise ValueError(f"producer_id_block_end {doc.get('producer_id_block_end')!r} is not an offset-sized int")
    topics = doc.get("topics", {})
    if not isinstance(topics, dict):
        raise ValueError("topics is not an object")
    ids: set[str] = set()
    for name, e in topics.items():
        if not (0 < len(name) <= 249 and set(name) <= _LEGAL_CHARS and name not in (".", "..")):
            raise ValueError(f"topic name {name[:60]!r} is not a legal topic name")
        if not isinstance(e, dict):
            raise ValueError(f"topic {name!r} is not an object")
        if not _is_int(e.get("partitions"), 1, _INT32_MAX):
            raise ValueError(f"topic {name!r} has no valid partition count")
        if not _is_int(e.get("leader_epoch", 0), 0, _INT32_MAX):
            raise ValueError(f"topic {name!r} has leader_epoch {e.get('leader_epoch')!r}")
        if not isinstance(e.get("internal", False), bool):
            raise ValueError(f"topic {name!r} has internal {e.get('internal')!r}")
        tid = e.get("topic_id")
        if tid is not None:
            if not (isinstance(tid, str) and len(tid) == 22 and set(tid) <= _LEGAL_CHARS):
                raise ValueError(f"topic {name!r} has topic_id {tid!r}")
            if tid in ids:
                raise ValueError(f"topic {name!r} has the topic_id of another topic")
            ids.add(tid)
        configs = e.get("configs", {})
        if not isinstance(configs, dict) or not all(isinstance(v, str) for v in configs.values()):
            raise ValueError(f"topic {name!r} has configs that are not strings")
        TopicConfig(configs, topic_defaults).log_config()


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _timestamp_error(topic: "_Topic", base_ts: int, max_ts: int, now: int) -> InvalidTimestampError | None:
    """The error for a client's CreateTime batch whose timestamps fall outside the
    topic's ``message.timestamp.*.max.ms`` bounds around the broker's clock ``now``."""
    if topic.ts_after != LONG_MAX and max_ts > now + topic.ts_after:
        return InvalidTimestampError(
            f"timestamp {max_ts} is more than message.timestamp.after.max.ms="
            f"{topic.ts_after} ahead of the broker's clock ({now})")
    if topic.ts_before != LONG_MAX and base_ts < now - topic.ts_before:
        return InvalidTimestampError(
            f"timestamp {base_ts} is more than message.timestamp.before.max.ms="
            f"{topic.ts_before} behind the broker's clock ({now})")
    if topic.ts_diff != LONG_MAX and (max_ts > now + topic.ts_diff or base_ts < now - topic.ts_diff):
        return InvalidTimestampError(
            f"timestamps {base_ts}..{max_ts} differ from the broker's clock "
            f"({now}) by more than message.timestamp.difference.max.ms={topic.ts_diff}")
    return None


def _new_topic_id() -> str:
    return random_kafka_uuid()


# --------------------------------------------------------------------------- value types

class TopicPartition(NamedTuple):
    """A partition of a topic (hashable; equal to the plain ``(topic, partition)`` tuple)."""

    topic: str
    partition: int


class OffsetAndMetadata(NamedTuple):
    """A committed offset: the next offset to consume, its metadata string and the leader
    epoch of the record before it (-1: unknown)."""

    offset: int
    metadata: str = ""
    leader_epoch: int = -1


def iter_commit_offsets(offsets: Any) -> Iterator[tuple[Any, Any, Any]]:
    """``(topic, partition, offset)`` of an OffsetCommit's ``topic -> partition -> offset``
    mapping, as given (topic and partition are checked by the caller), with an
    :class:`OffsetAndMetadata` turned into a :class:`CommitOffset` and an int left as it is.

    Raises
    ------
    InvalidRequestError
        ``offsets`` is not such a mapping, or an offset is a tuple of another kind.
    """
    try:
        items = list(offsets.items())
    except AttributeError:
        raise InvalidRequestError("offsets must map topic -> partition -> offset") from None
    for topic, parts in items:
        try:
            pitems = list(dict(parts).items())
        except (TypeError, ValueError):
            raise InvalidRequestError("offsets must map topic -> partition -> offset") from None
        for p, v in pitems:
            if isinstance(v, OffsetAndMetadata):
                v = CommitOffset(v.offset, v.metadata, v.leader_epoch)
            elif isinstance(v, tuple) and not isinstance(v, CommitOffset):
                raise InvalidRequestError(f"offset of {topic!r}/{p!r} must be an int or OffsetAndMetadata")
            yield topic, p, v


class NewTopic(NamedTuple):
    """A topic to create (CreateTopics): -1 for the broker's default partitions / replicas."""

    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    configs: Mapping[str, Any] | None = None


class _Result(Value):
    """Base of per-partition results: Kafka's error code and message."""

    __slots__ = ()
    error_code: int
    error_message: str | None

    @property
    def error(self) -> PylogError | None:
        """The error as an exception (None on success)."""
        if self.error_code == 0:
            return None
        return error_for_code(self.error_code, self.error_message)

    def raise_for_error(self) -> None:
        if self.error_code != 0:
            raise error_for_code(self.error_code, self.error_message)


class ProduceResult(_Result):
    """Outcome of appending one batch (or one partition's records of a produce request).

    ``duplicate`` is True when the batch was a retry of one already in the log (an
    idempotent producer's retried send): nothing was appended and ``base_offset`` is the
    original's.  ``log_append_time`` is -1 under CreateTime.  ``record_errors`` lists
    ``(batch_index, message)`` of the records that made the batch be rejected (Produce
    v8+ ``record_errors``: a null key on a compacted topic), else None.
    """

    __slots__ = _fields = ("error_code", "base_offset", "log_append_time", "log_start_offset", "error_message",
                           "duplicate", "record_errors")
    error_code: int
    base_offset: int
    log_append_time: int
    log_start_offset: int
    error_message: str | None
    duplicate: bool
    record_errors: list[tuple[int, str | None]] | None

    def __init__(self, error_code: int = 0, base_offset: int = -1, log_append_time: int = -1,
                 log_start_offset: int = -1, error_message: str | None = None, duplicate: bool = False,
                 record_errors: list[tuple[int, str | None]] | None = None) -> None:
        self.error_code = error_code
        self.base_offset = base_offset
        self.log_append_time = log_append_time
        self.log_start_offset = log_start_offset
        self.error_message = error_message
        self.duplicate = duplicate
        self.record_errors = record_errors

    @classmethod
    def failed(cls, exc: BaseException) -> "ProduceResult":
        if isinstance(exc, PylogError):
            return cls(error_code=exc.error_code, error_message=str(exc),
                       record_errors=getattr(exc, "record_errors", None))
        return cls(error_code=-1, error_message=f"{type(exc).__name__}: {exc}")


class FetchResult(_Result):
    """One partition of a fetch.  ``records`` is a storage :class:`ReadResult` (zero-copy
    memoryview plus the file range for ``sendfile``), or None on error.  Its batches may
    start below the offset asked for; consumers skip those records.

    ``aborted_transactions`` (READ_COMMITTED only, else None): ``(producer_id,
    first_offset)`` of the aborted transactions overlapping the records returned, as
    Fetch v4+ answers; a consumer drops those producers' records from ``first_offset``
    up to their ABORT marker."""

    __slots__ = _fields = ("error_code", "high_watermark", "last_stable_offset", "log_start_offset", "records",
                           "error_message", "aborted_transactions")
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    records: ReadResult | None
    error_message: str | None
    aborted_transactions: list[tuple[int, int]] | None

    def __init__(self, error_code: int = 0, high_watermark: int = -1, last_stable_offset: int = -1,
                 log_start_offset: int = -1, records: ReadResult | None = None, error_message: str | None = None,
                 aborted_transactions: list[tuple[int, int]] | None = None) -> None:
        self.error_code = error_code
        self.high_watermark = high_watermark
        self.last_stable_offset = last_stable_offset
        self.log_start_offset = log_start_offset
        self.records = records
        self.error_message = error_message
        self.aborted_transactions = aborted_transactions


class ListOffsetsResult(_Result):
    """ListOffsets of one partition: offset -1 (and timestamp -1) when no record is that late."""

    __slots__ = _fields = ("error_code", "timestamp", "offset", "leader_epoch", "error_message")
    error_code: int
    timestamp: int
    offset: int
    leader_epoch: int
    error_message: str | None

    def __init__(self, error_code: int = 0, timestamp: int = -1, offset: int = -1, leader_epoch: int = -1,
                 error_message: str | None = None) -> None:
        self.error_code = error_code
        self.timestamp = timestamp
        self.offset = offset
        self.leader_epoch = leader_epoch
        self.error_message = error_message


class EpochEndOffset(_Result):
    """OffsetForLeaderEpoch of one partition: the largest epoch at or below the one asked
    and the offset where it ended (the log end offset for the current epoch); -1 and -1
    (Kafka's UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET) when no such epoch is known."""

    __slots__ = _fields = ("error_code", "leader_epoch", "end_offset", "error_message")
    error_code: int
    leader_epoch: int
    end_offset: int
    error_message: str | None

    def __init__(self, error_code: int = 0, leader_epoch: int = -1, end_offset: int = -1,
                 error_message: str | None = None) -> None:
        self.error_code = error_code
        self.leader_epoch = leader_epoch
        self.end_offset = end_offset
        self.error_message = error_message


class InitProducerIdResult(_Result):
    __slots__ = _fields = ("error_code", "producer_id", "producer_epoch", "error_message")
    error_code: int
    producer_id: int
    producer_epoch: int
    error_message: str | None

    def __init__(self, error_code: int = 0, producer_id: int = -1, producer_epoch: int = -1,
                 error_message: str | None = None) -> None:
        self.error_code = error_code
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.error_message = error_message


class TopicResult(_Result):
    """Per-topic outcome of create/delete/create-partitions/alter-configs."""

    __slots__ = _fields = ("name", "error_code", "error_message", "topic_id", "num_partitions",
                           "replication_factor", "configs")
    name: str
    error_code: int
    error_message: str | None
    topic_id: str | None
    num_partitions: int
    replication_factor: int
    configs: list[ConfigEntry] | None

    def __init__(self, name: str = "", error_code: int = 0, error_message: str | None = None,
                 topic_id: str | None = None, num_partitions: int = -1, replication_factor: int = -1,
                 configs: list[ConfigEntry] | None = None) -> None:
        self.name = name
        self.error_code = error_code
        self.error_message = error_message
        self.topic_id = topic_id
        self.num_partitions = num_partitions
        self.replication_factor = replication_factor
        self.configs = configs


class PartitionInfo(FrozenValue):
    __slots__ = _fields = ("partition", "leader", "leader_epoch", "replicas", "isr", "offline_replicas",
                           "log_start_offset", "high_watermark")
    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline_replicas: tuple[int, ...]
    log_start_offset: int
    high_watermark: int

    def __init__(self, partition: int, leader: int, leader_epoch: int, replicas: tuple[int, ...],
                 isr: tuple[int, ...], offline_replicas: tuple[int, ...] = (), log_start_offset: int = 0,
                 high_watermark: int = 0) -> None:
        set_ = object.__setattr__
        set_(self, "partition", partition)
        set_(self, "leader", leader)
        set_(self, "leader_epoch", leader_epoch)
        set_(self, "replicas", replicas)
        set_(self, "isr", isr)
        set_(self, "offline_replicas", offline_replicas)
        set_(self, "log_start_offset", log_start_offset)
        set_(self, "high_watermark", high_watermark)


class TopicDescription(FrozenValue):
    __slots__ = _fields = ("name", "topic_id", "is_internal", "partitions")
    name: str
    topic_id: str
    is_internal: bool
    partitions: tuple[PartitionInfo, ...]

    def __init__(self, name: str, topic_id: str, is_internal: bool, partitions: tuple[PartitionInfo, ...]) -> None:
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "topic_id", topic_id)
        set_(self, "is_internal", is_internal)
        set_(self, "partitions", partitions)

    @property
    def num_partitions(self) -> int:
        return len(self.partitions)


class ProducerInfo(FrozenValue):
    """An idempotent producer active on a partition (DescribeProducers)."""

    __slots__ = _fields = ("producer_id", "producer_epoch", "last_sequence", "last_timestamp", "coordinator_epoch",
                           "current_txn_start_offset")
    producer_id: int
    producer_epoch: int
    last_sequence: int
    last_timestamp: int
    coordinator_epoch: int
    current_txn_start_offset: int

    def __init__(self, producer_id: int, producer_epoch: int, last_sequence: int, last_timestamp: int,
                 coordinator_epoch: int, current_txn_start_offset: int) -> None:
        set_ = object.__setattr__
        set_(self, "producer_id", producer_id)
        set_(self, "producer_epoch", producer_epoch)
        set_(self, "last_sequence", last_sequence)
        set_(self, "last_timestamp", last_timestamp)
        set_(self, "coordinator_epoch", coordinator_epoch)
        set_(self, "current_txn_start_offset", current_txn_start_offset)


# --------------------------------------------------------------------------- config

@frozen_dataclass
class BrokerConfig:
    """Broker settings (Kafka's broker config names in snake_case).

    Attributes
    ----------
    node_id : int
    num_partitions : int
        Partitions of a topic created without a count (``num.partitions``).
    default_replication_factor : int
        Must be 1: a single node holds one replica.
    auto_create_topics_enable : bool
        Create an unknown topic on first produce or metadata lookup (Kafka's default is
        true; pylog's is false, so that a misspelt topic is an error an embedding service
        sees).
    offsets_topic_num_partitions, offsets_topic_segment_bytes : int
        ``__consumer_offsets`` layout (Kafka: 50 partitions, 100 MiB segments).
    topic_defaults : mapping
        Broker-level defaults of topic configs, by topic config name
        (``{"retention.ms": 3600000}`` is ``log.retention.ms``).
    topic_default_sources : mapping
        Where each of ``topic_defaults`` comes from (a ConfigSource; default
        STATIC_BROKER_CONFIG), as DescribeConfigs of a topic reports it.
    group : GroupCoordinatorConfig
        Group coordinator settings (session timeout bounds, rebalance delay, ...).
    txn : TransactionCoordinatorConfig
        Transaction coordinator settings (``transaction.max.timeout.ms``, ...).
    log_retention_check_interval_ms, log_flush_scheduler_interval_ms,
    log_flush_offset_checkpoint_interval_ms : int
        How often the background work runs.
    producer_id_block_size : int
        Producer ids are persisted in blocks of this many.
    producer_id_expiration_ms, producer_id_expiration_check_interval_ms : int
        Idempotent-producer state of a producer idle this long is dropped (Kafka: 1 day,
        checked every 10 minutes).
    log_cleaner_enable, log_cleaner_backoff_ms, log_cleaner_dedupe_buffer_size
        Compaction of ``cleanup.policy=compact`` topics (``__consumer_offsets`` among
        them): on, a pass every 15 s, a 128 MiB offset map (Kafka's defaults).
    max_open_segments : int
        Sealed segments that may hold open files and mappings at once.
    num_recovery_threads_per_data_dir : int
        Threads that open and recover the partitions an open must load before it
        returns (all of them after an unclean shutdown), as Kafka's setting of that name
        (:data:`pylog.storage.manager.DEFAULT_RECOVERY_THREADS` says why 8).
    """

    node_id: int = 0
    num_partitions: int = 1
    default_replication_factor: int = 1
    auto_create_topics_enable: bool = False
    offsets_topic_num_partitions: int = 50
    offsets_topic_segment_bytes: int = 100 * 1024 * 1024
    topic_defaults: Mapping[str, Any] = field(default_factory=dict)
    topic_default_sources: Mapping[str, int] = field(default_factory=dict)
    group: GroupCoordinatorConfig = field(default_factory=GroupCoordinatorConfig)
    txn: TransactionCoordinatorConfig = field(default_factory=TransactionCoordinatorConfig)
    log_retention_check_interval_ms: int = 300_000
    log_flush_scheduler_interval_ms: int = 1_000
    log_flush_offset_checkpoint_interval_ms: int = 60_000
    producer_id_block_size: int = 1000
    producer_id_expiration_ms: int = 86_400_000
    producer_id_expiration_check_interval_ms: int = 600_000
    max_open_segments: int = 256
    num_recovery_threads_per_data_dir: int = 8
    log_cleaner_enable: bool = True
    log_cleaner_backoff_ms: int = 15_000
    log_cleaner_dedupe_buffer_size: int = 128 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("num_partitions", "offsets_topic_num_partitions", "log_retention_check_interval_ms",
                     "log_flush_scheduler_interval_ms", "log_flush_offset_checkpoint_interval_ms",
                     "producer_id_block_size", "max_open_segments", "offsets_topic_segment_bytes",
                     "num_recovery_threads_per_data_dir",
                     "log_cleaner_backoff_ms", "log_cleaner_dedupe_buffer_size",
                     "producer_id_expiration_ms", "producer_id_expiration_check_interval_ms"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise InvalidConfigError(f"{name} must be a positive int, got {v!r}")
        if self.default_replication_factor != 1:
            raise InvalidReplicationFactorError(
                f"default_replication_factor={self.default_replication_factor}: a single node holds one replica")
        if not isinstance(self.node_id, int) or self.node_id < 0:
            raise InvalidConfigError(f"node_id must be an int >= 0, got {self.node_id!r}")
        if not isinstance(self.group, GroupCoordinatorConfig):
            raise InvalidConfigError("group must be a GroupCoordinatorConfig")
        if not isinstance(self.txn, TransactionCoordinatorConfig):
            raise InvalidConfigError("txn must be a TransactionCoordinatorConfig")
        # Validates the defaults (raises InvalidConfigError naming the bad one).
        object.__setattr__(self, "topic_defaults", normalize_all(self.topic_defaults))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "BrokerConfig":
        """Build from keywords; unknown names raise InvalidConfigError."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise InvalidConfigError(f"unknown broker config {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**kwargs)


# --------------------------------------------------------------------------- internal state

class _Partition:
    """One partition of a topic: its log, producer state and append lock.

    A partition found clean at open is *deferred*: ``loader`` loads its log and producer
    state on the first use of :attr:`log` or :attr:`producers` (from any thread; others
    wait for that load), or when the broker's loader thread reaches it (module docstring
    of :mod:`pylog.storage.manager`, deferred loading).  ``loaded`` says which it is.
    """

    __slots__ = ("topic", "index", "_log", "_producers", "lock", "snapshot_segment", "storage_failed",
                 "_loader", "_load_lock")

    def __init__(self, topic: "_Topic", index: int, log, loader: Callable[["_Partition"], None] | None = None) -> None:
        self.topic = topic
        self.index = index
        self.lock = threading.Lock()
        self.snapshot_segment = -1
        # Whether the last append failed with a storage error (logged once, until cleared).
        self.storage_failed = False
        self._log = self._producers = None
        self._loader = loader
        self._load_lock = threading.Lock() if loader is not None else None
        if log is not None:
            self.attach(log)

    def attach(self, log) -> None:
        """Take ``log`` as this partition's log, with an empty producer state."""
        self._producers = ProducerStateManager(log.path)
        log.add_truncation_listener(self.on_truncation)
        log.add_roll_listener(self.on_roll)
        self._log = log

    def on_roll(self, log) -> None:
        """The log has a new active segment: queue the partition for the broker's
        producer-state snapshot (:meth:`Broker._snapshot_rolled`).  Runs under the log's
        lock, on the appending thread: a list append, nothing more."""
        rolled = self.topic.rolled
        if rolled is not None:
            rolled.append(self)

    @property
    def loaded(self) -> bool:
        return self._loader is None

    def _load(self) -> None:
        with self._load_lock:
            loader = self._loader
            if loader is not None:
                loader(self)
                self._loader = None

    @property
    def log(self):
        if self._loader is not None:
            self._load()
        return self._log

    @property
    def producers(self) -> ProducerStateManager:
        if self._loader is not None:
            self._load()
        return self._producers

    def on_truncation(self, log, log_end_offset: int) -> None:
        """The log lost its records from ``log_end_offset`` on (a replica diverging from
        its leader; the log's ``.txnindex`` files are truncated with it): rebuild the
        producer state up to there from the newest snapshot below, as Kafka's
        ``truncateAndReload``, so a transaction whose marker went is open again and one
        whose records all went is gone.  Runs under the log's lock."""
        psm = self._producers
        start = max(psm.load_snapshot(log_end_offset), log.log_start_offset)
        if start < log_end_offset:
            psm.replay(Broker._batch_headers(log, start))
        psm.map_end_offset = log_end_offset
        self.on_roll(log)     # its active segment may be another one now


class _Topic:
    __slots__ = ("name", "topic_id", "partitions", "config", "internal", "leader_epoch", "codec",
                 "min_insync", "ts_before", "ts_after", "ts_diff", "create_time", "compacted", "rolled")

    def __init__(self, name: str, topic_id: str, config: TopicConfig, internal: bool,
                 leader_epoch: int = 0, rolled: list | None = None) -> None:
        self.name = name
        self.topic_id = topic_id
        self.partitions: list[_Partition] = []
        self.internal = internal
        self.leader_epoch = leader_epoch
        # The broker's queue of partitions whose log rolled (_Partition.on_roll).
        self.rolled = rolled
        self.set_config(config)

    def set_config(self, config: TopicConfig) -> None:
        self.config = config
        ct = config["compression.type"]
        self.codec = _CODEC_FOR_COMPRESSION_TYPE.get(ct, -1)   # -1: keep the producer's
        self.min_insync = config["min.insync.replicas"]
        self.ts_before = config["message.timestamp.before.max.ms"]
        self.ts_after = config["message.timestamp.after.max.ms"]
        self.ts_diff = config["message.timestamp.difference.max.ms"]
        self.create_time = config["message.timestamp.type"] == "CreateTime"
        # compact or compact,delete: every record needs a key (Kafka's INVALID_RECORD).
        self.compacted = "compact" in config["cleanup.policy"]


class _Fallback(Exception):
    """A coalesced append must be redone batch by batch (to attribute an error, or
    because a batch is a duplicate)."""


def _seq_next(last: int) -> int:
    return 0 if last == _INT32_MAX else last + 1


def _last_seq(base: int, delta: int) -> int:
    if base > _INT32_MAX - delta:
        return delta - (_INT32_MAX - base) - 1
    return base + delta


class _OffsetsTopicStore:
    """The group coordinator's :class:`~pylog.broker.group_offsets.OffsetStore`: the
    records of one group go to its ``__consumer_offsets`` partition as one batch."""

    def __init__(self, broker: "Broker", num_partitions: int) -> None:
        self._broker = broker
        self.num_partitions = num_partitions

    def append(self, partition: int, records: Sequence[tuple[bytes, bytes | None]], *,
               producer_id: int = -1, producer_epoch: int = -1) -> None:
        if not records:
            return
        self._broker.ensure_offsets_topic()   # the first group write creates the topic
        if producer_id >= 0:   # a TxnOffsetCommit: a transactional batch of that producer
            builder = _core.RecordBatchBuilder(producer_id=producer_id, producer_epoch=producer_epoch,
                                               base_sequence=-1, is_transactional=True)
        else:
            builder = _core.RecordBatchBuilder()
        builder.append_many([v for _, v in records], keys=[k for k, _ in records])
        res = self._broker._append_internal(CONSUMER_OFFSETS_TOPIC, partition, builder.build())
        res.raise_for_error()


# --------------------------------------------------------------------------- broker

class Broker:
    """A broker over one data directory (see the module docstring).

    Parameters
    ----------
    data_dir : str or os.PathLike
        Created if missing.
    config : BrokerConfig, optional
        Or pass its fields as keywords.
    clock : callable, optional
        Milliseconds since the epoch (default: wall clock); used for timestamps,
        retention and group timeouts.
    background : bool
        Run the maintenance thread (default).  Without it, call :meth:`tick`.
    start_loader : bool
        Start the loader thread of the partitions deferred at open now (default); False
        leaves that to :meth:`start_loading` (a server calls it once it listens, so the
        loads do not compete with its start-up; a partition used before is loaded then).

    Raises
    ------
    KafkaStorageError
        The data directory or its registry cannot be read.
    InvalidConfigError
        A bad setting.
    """

    #: A clustered broker's replica manager (:class:`pylog.cluster.node.ReplicaManager`);
    #: None for a single node.  When set it decides per partition: whether a produce may
    #: append here (``check_produce``: NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS), the
    #: leader epoch stamped into appended batches, whether a consumer may fetch here
    #: (``check_fetch``), and the high watermark that bounds consumer reads.
    replication: Any = None

    def __init__(self, data_dir: str | os.PathLike, config: BrokerConfig | None = None, *,
                 clock: Callable[[], int] | None = None, background: bool = True, start_loader: bool = True,
                 **settings: Any) -> None:
        if config is None:
            config = BrokerConfig.from_kwargs(**settings)
        elif settings:
            raise InvalidConfigError("pass either a BrokerConfig or keyword settings, not both")
        self.config = config
        self.data_dir = os.fspath(data_dir)
        self.clock = clock or _wall_ms
        self._lock = threading.RLock()
        self._topics: dict[str, _Topic] = {}
        # Partitions whose log rolled (or was truncated) since the last producer-state
        # snapshot pass: appended by any thread, emptied by _snapshot_rolled.
        self._rolled: list[_Partition] = []
        self._closed = False
        self._listeners: list[Callable[[str, int, int], object]] = []
        self._wake_listeners: list[Callable[[], object]] = []
        self._data_cond = threading.Condition(threading.Lock())
        self._data_waiters = 0
        self._wake_seq = 0          # wake_waiters() calls, counted under _data_cond
        #: KIP-890 verification of transactional produce, set by the transaction
        #: coordinator: ``(topic, partition, producer_id, producer_epoch, base_sequence)``
        #: -> 0, or the Kafka error code to reject the batch with (INVALID_TXN_STATE for
        #: a partition not added to the producer's ongoing transaction).  None: no
        #: coordinator runs, transactional batches are refused.
        self.txn_verifier: Callable[[str, int, int, int, int], int] | None = None
        #: Whether :meth:`txn_offset_commit` asks this broker's own transaction
        #: coordinator that the group's offsets partition is in the transaction.  False on
        #: a clustered broker, whose TxnOffsetCommit handler asks the id's coordinator on
        #: whichever broker it is before calling (:mod:`pylog.cluster.txn_verification`).
        self.verify_txn_offsets = True
        os.makedirs(self.data_dir, exist_ok=True)
        self._registry_path = os.path.join(self.data_dir, REGISTRY_FILE)

        registry = self._lock_and_read_registry()
        self._pid_block_end = int(registry.get("producer_id_block_end", 0)) if registry else 0
        self._next_pid = self._pid_block_end   # the rest of the last block may have been used
        entries: dict[str, dict] = dict(registry.get("topics", {})) if registry else {}
        topic_configs = {}
        for name, e in entries.items():
            topic_configs[name] = TopicConfig(e.get("configs", {}), config.topic_defaults).log_config()
        self._default_config = TopicConfig({}, config.topic_defaults)
        self.logs = LogManager(self.data_dir, config=self._default_config.log_config(),
                               topic_configs=topic_configs, max_open_segments=config.max_open_segments,
                               node_id=config.node_id, clock=self.clock, dir_lock=self._dir_lock,
                               cluster_id=registry.get("cluster_id") if registry else None,
                               defer_clean_loads=True,
                               recovery_threads=config.num_recovery_threads_per_data_dir)
        self._pids_checked = False
        self._loaded = threading.Event()
        self.cluster_id = self.logs.meta.get("cluster.id", "")
        self.had_clean_shutdown = self.logs.had_clean_shutdown
        try:
            self._load_topics(registry is not None, entries)
            self._check_producer_id_block()
            self._pids_checked = all(part.loaded for t in self._topics.values() for part in t.partitions)
            offsets_topic = self._topics.get(CONSUMER_OFFSETS_TOPIC)
            if offsets_topic is not None:
                offsets_topic.internal = True
            # __consumer_offsets is created on first use (ensure_offsets_topic), as Kafka
            # creates it on the first FindCoordinator: a broker nobody runs a group on
            # neither creates nor opens its 50 logs at start-up.
            self.groups = GroupCoordinator(
                _OffsetsTopicStore(self, self.offsets_topic_partitions()), config.group, clock=self.clock)
            self._load_groups()
            self.transactions = TransactionCoordinator(BrokerTxnIO(self), config.txn, clock=self.clock)
            # KIP-890 part 1: the produce path appends a transactional batch only where the
            # coordinator says its partition is in the producer's ongoing transaction.
            self.txn_verifier = self.transactions.verify
            self._load_transactions()
        except BaseException:
            self.logs.close()
            raise
        self.cleaner: LogCleaner | None = None
        if config.log_cleaner_enable:
            self.cleaner = LogCleaner(self.logs, interval_ms=config.log_cleaner_backoff_ms,
                                      dedupe_buffer_size=config.log_cleaner_dedupe_buffer_size, clock=self.clock)
        now = self.clock()
        self._next_clean = now + config.log_cleaner_backoff_ms
        self._next_pid_expiry = now + config.producer_id_expiration_check_interval_ms
        self._next_retention = now + config.log_retention_check_interval_ms
        self._next_flush = now + config.log_flush_scheduler_interval_ms
        self._next_checkpoint = now + config.log_flush_offset_checkpoint_interval_ms
        self._bg_stop = threading.Event()
        self._bg_wake = threading.Event()
        self._bg_thread: threading.Thread | None = None
        self._loader_thread: threading.Thread | None = None
        if self._pids_checked:
            self._loaded.set()
        else:
            # Kafka loads logs in num.recovery.threads.per.data.dir threads; one is enough
            # here (the loads hold the GIL most of the time).
            self._loader_thread = threading.Thread(target=self._load_in_background, daemon=True,
                                                   name=f"pylog-log-loader-{config.node_id}")
            if start_loader:
                self._loader_thread.start()
        if background:
            self._bg_thread = threading.Thread(target=self._background, name=f"pylog-broker-{config.node_id}",
                                               daemon=True)
            self._bg_thread.start()
            if self.cleaner is not None:
                self.cleaner.start()

    @classmethod
    def open(cls, data_dir: str | os.PathLike, **settings: Any) -> "Broker":
        """``Broker(data_dir, **settings)``; ``clock`` and ``background`` are accepted too."""
        return cls(data_dir, **settings)

    # ------------------------------------------------------------------ registry

    def _lock_and_read_registry(self) -> dict | None:
        """Take the data directory's lock (held until :meth:`close`; the LogManager
        releases it), then read the registry: None when there is none.  The lock is
        released again when the registry is refused."""
        self._dir_lock = DataDirLock.acquire(self.data_dir, f"a pylog broker (node {self.config.node_id})")
        try:
            return self._read_registry()
        except BaseException:
            self._dir_lock.release()
            raise

    def _read_registry(self) -> dict | None:
        """The registry, validated as untrusted input (bounded, strict JSON, every field
        checked).  Damage refuses the open with a one-line KafkaStorageError: the file
        holds what the logs cannot tell (topic configs such as ``cleanup.policy``, topic
        ids, the producer id block), so guessing could lose or resurrect data."""
        try:
            with open(self._registry_path, "rb") as f:
                raw = f.read(_MAX_REGISTRY_BYTES + 1)
        except FileNotFoundError:
            # Any partition directory betrays a broker's logs: __consumer_offsets' are not
            # enough, as a broker that never ran a group has none.
            offsets_logs = sorted(n for n in os.listdir(self.data_dir)
                                  if n.rpartition("-")[2].isdigit() and n.rpartition("-")[0]
                                  and os.path.isdir(os.path.join(self.data_dir, n)))
            if offsets_logs:
                raise KafkaStorageError(
                    f"{self._registry_path} is missing, but {self.data_dir} holds a broker's logs "
                    f"({offsets_logs[0]} ...): their topic configs and producer ids cannot be rebuilt "
                    "safely; restore the file from a backup") from None
            return None
        except OSError as exc:
            raise KafkaStorageError(f"cannot read {self._registry_path}: {exc.strerror or exc}") from None
        try:
            if len(raw) > _MAX_REGISTRY_BYTES:
                raise ValueError(f"larger than {_MAX_REGISTRY_BYTES} bytes")
            doc = json.loads(raw, object_pairs_hook=_unique_keys)
            _check_registry(doc, self.config.topic_defaults)
            return doc
        except (ValueError, AttributeError, TypeError, RecursionError, InvalidConfigError) as exc:
            why = str(exc).replace("\n", " ")[:200]
            raise KafkaStorageError(
                f"{self._registry_path} is not a valid pylog topic registry ({why}); it is written "
                "atomically, so this means outside damage: restore it from a backup") from None

    def _check_producer_id_block(self) -> None:
        """Producer ids are never handed out twice: a registry whose block end lies at or
        below an id the logs hold (a damaged or adopted registry) is moved past it, or a
        new producer could be taken for an old one and have its batches dropped as
        duplicates.  Looks at the loaded partitions only; :meth:`_ensure_pids_checked`
        runs it again over all of them before the first new id is handed out."""
        seen = max((pid for t in self._topics.values() for part in t.partitions if part.loaded
                    for pid in part.producers.producers), default=-1)
        if seen >= self._pid_block_end:
            _log.warning("%s: producer_id_block_end %d is not above producer id %d found in the logs; "
                         "handing out ids from %d", self._registry_path, self._pid_block_end, seen, seen + 1)
            self._pid_block_end = self._next_pid = seen + 1
            with self._lock:
                self._commit_registry()

    def _commit_registry(self, counts: Mapping[str, int] | None = None, new: "_Topic | None" = None) -> None:
        """Make the registry durable (caller holds the registry lock); ``counts`` gives
        partition counts that the in-memory topics do not have yet, ``new`` a topic being
        created that they do not list yet.  The one seam where a KRaft metadata log would
        take over (module docstring)."""
        topics = {}
        for t in [*self._topics.values(), *([new] if new is not None else [])]:
            count = (counts or {}).get(t.name, len(t.partitions))
            topics[t.name] = {"topic_id": t.topic_id, "partitions": count,
                              "leader_epoch": t.leader_epoch, "internal": t.internal,
                              "configs": dict(sorted(t.config.overrides.items()))}
        doc = {"version": _REGISTRY_VERSION, "cluster_id": self.cluster_id,
               "producer_id_block_end": self._pid_block_end, "topics": topics}
        try:
            atomic_write(self._registry_path, json.dumps(doc, indent=1, sort_keys=True).encode())
        except OSError as exc:
            raise KafkaStorageError(f"cannot write {self._registry_path}: {exc}") from exc

    def _load_topics(self, have_registry: bool, entries: dict[str, dict]) -> None:
        """Build the topics from the registry and the logs.  A partition whose log the
        manager deferred (found clean) is deferred here too, its producer state with it
        (:class:`_Partition`); the internal topics, which the group and transaction
        coordinators replay now, and every partition after an unclean shutdown (its
        ``.txnindex`` may need the producer-state replay to be rebuilt) load now."""
        on_disk: dict[str, int] = {}
        for (topic, p) in self.logs.topic_partitions():
            on_disk[topic] = max(on_disk.get(topic, 0), p + 1)
        changed = False
        for name, count in sorted(on_disk.items()):
            if name in entries:
                continue
            if have_registry:
                # Deleted from the registry before a crash finished removing its logs.
                for p in range(count):
                    if self.logs.get_log(name, p) is not None:
                        self.logs.delete_log(name, p)
                _log.info("removed the logs of deleted topic %s", name)
            else:
                entries[name] = {"topic_id": _new_topic_id(), "partitions": count, "configs": {},
                                 "internal": name == CONSUMER_OFFSETS_TOPIC}
                changed = True
        for name, e in sorted(entries.items()):
            cfg = TopicConfig(e.get("configs", {}), self.config.topic_defaults, self.config.topic_default_sources)
            topic = _Topic(name, e.get("topic_id") or _new_topic_id(), cfg, bool(e.get("internal")),
                           int(e.get("leader_epoch", 0)), self._rolled)
            count = int(e["partitions"])
            if on_disk.get(name, 0) > count:
                # Partitions beyond the registry's count were being created when it crashed
                # (the registry is written first, so this is only a hand-made directory).
                count = on_disk[name]
                changed = True
            log_config = cfg.log_config()
            eager = name in (CONSUMER_OFFSETS_TOPIC, _txn_log.TRANSACTION_STATE_TOPIC)
            for p in range(count):
                if not eager and self.logs.is_deferred(name, p):
                    topic.partitions.append(_Partition(topic, p, None, self._load_partition))
                    continue
                log = self.logs.get_or_create_log(name, p, log_config)
                part = _Partition(topic, p, log)
                self._load_producer_state(part)
                topic.partitions.append(part)
            self._topics[name] = topic
        if changed or not have_registry:
            with self._lock:
                self._commit_registry()

    def _load_partition(self, part: _Partition) -> None:
        """The loader of a deferred partition (runs under its load lock, takes the log
        manager's lock, never the broker's)."""
        log = self.logs.get_log(part.topic.name, part.index)
        if log is None:
            why = "the broker is closed" if self._closed else "it was deleted before it was loaded"
            raise LogClosedError(f"{part.topic.name}-{part.index}: {why}")
        part.attach(log)
        self._load_producer_state(part)

    def _load_in_background(self) -> None:
        """The loader thread: every deferred partition, then the producer-id check."""
        try:
            for topic in list(self._topics.values()):
                for part in list(topic.partitions):
                    if self._bg_stop.is_set():
                        return
                    if part.loaded:
                        continue
                    try:
                        part._load()
                    except PylogError as exc:   # deleted meanwhile, or closed
                        _log.debug("%s-%d: deferred load skipped: %s", topic.name, part.index, exc)
                    except Exception:  # noqa: BLE001 - the first use loads it again and raises
                        _log.exception("%s-%d: deferred load failed", topic.name, part.index)
            self._ensure_pids_checked()
        except PylogError as exc:
            _log.debug("deferred loading stopped: %s", exc)
        finally:
            self._loaded.set()

    def _ensure_pids_checked(self) -> None:
        """Load every deferred partition and run :meth:`_check_producer_id_block` over all
        of them, once, before a new producer id is handed out.  Callers may hold the
        broker's lock: loads take only partition and log-manager locks."""
        if self._pids_checked:
            return
        for topic in list(self._topics.values()):
            for part in list(topic.partitions):
                if not part.loaded:
                    try:
                        part._load()
                    except LogClosedError:
                        pass
        with self._lock:
            if not self._pids_checked:
                self._check_producer_id_block()
                self._pids_checked = True

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Wait until every partition deferred at open is loaded (or the broker closed);
        returns whether that happened within ``timeout`` seconds."""
        return self._loaded.wait(timeout)

    def start_loading(self) -> None:
        """Start the loader thread of a broker opened with ``start_loader=False`` (a no-op
        otherwise, when there is nothing to load, after the first call, or once closed)."""
        with self._lock:
            thread = self._loader_thread
            if thread is not None and thread.ident is None and not self._closed:
                thread.start()

    def _load_producer_state(self, part: _Partition) -> None:
        """Producer state (open transactions included) from the newest snapshot plus a
        replay of the batch headers after it; when the log's ``.txnindex`` files need a
        rebuild (an unclean shutdown, a damaged file), the replay starts at a snapshot
        at or below where they do and its ABORT markers rebuild them."""
        log = part._log
        psm = part._producers
        leo = log.log_end_offset
        rebuild = log.txn_index_rebuild_from
        start = max(psm.load_snapshot(leo, rebuild), log.log_start_offset)
        aborted = psm.replay(self._batch_headers(log, start)) if start < leo else []
        if rebuild is not None:
            log.rebuild_txn_indexes(rebuild, aborted)
            _log.info("%s: rebuilt the transaction index from offset %d (%d aborted transaction(s))",
                      os.path.basename(log.path), rebuild, sum(a.last_offset >= rebuild for a in aborted))
        psm.map_end_offset = leo
        part.snapshot_segment = log.active_segment.base_offset

    @staticmethod
    def _batch_headers(log, start: int) -> Iterator:
        """The intact batches of ``log`` from ``start`` (damaged ones are passed over with
        a WARN, see :func:`_scan_batches`)."""
        name = os.path.basename(log.path)
        for b, crc_ok in _scan_batches(log, name, start, "the producer-state replay"):
            if crc_ok:
                yield b
            else:
                _log.warning("%s: the batch at offsets %d..%d fails its CRC; its producer state is "
                             "not replayed", name, b.base_offset, b.last_offset)

    def offsets_topic_partitions(self) -> int:
        """Partition count of ``__consumer_offsets``: the topic's, or the one it will be
        created with (``offsets_topic_num_partitions``) while it does not exist yet."""
        topic = self._topics.get(CONSUMER_OFFSETS_TOPIC)
        return self.config.offsets_topic_num_partitions if topic is None else len(topic.partitions)

    def ensure_offsets_topic(self) -> int:
        """Create ``__consumer_offsets`` unless it exists (FindCoordinator for a group,
        the first group write); returns its partition count.  Thread-safe; creating it
        writes files (the registry, then 50 logs by default)."""
        if CONSUMER_OFFSETS_TOPIC not in self._topics:
            with self._lock:
                if CONSUMER_OFFSETS_TOPIC not in self._topics:
                    self._create_topic(CONSUMER_OFFSETS_TOPIC, self.config.offsets_topic_num_partitions,
                                       {"cleanup.policy": "compact",
                                        "segment.bytes": str(self.config.offsets_topic_segment_bytes)},
                                       internal=True)
                    _log.info("created %s with %d partitions", CONSUMER_OFFSETS_TOPIC,
                              self.config.offsets_topic_num_partitions)
        return len(self._topics[CONSUMER_OFFSETS_TOPIC].partitions)

    def _load_groups(self) -> None:
        """Replay every ``__consumer_offsets`` partition (when the topic exists) into the
        group coordinator (:meth:`_replay_group_partition`)."""
        topic = self._topics.get(CONSUMER_OFFSETS_TOPIC)
        for part in topic.partitions if topic is not None else ():
            state = self._replay_group_partition(part)
            if state is not None:
                self.groups.load_state(state, partition=part.index)

    def load_group_partition(self, partition: int) -> int:
        """Replay ``__consumer_offsets-<partition>`` into the group coordinator, which
        then serves its groups: a clustered broker that became the partition's leader
        (after ``groups.begin_load``).  Returns the number of groups loaded."""
        part = self._partition(CONSUMER_OFFSETS_TOPIC, partition)
        state = self._replay_group_partition(part) or _group_offsets.ReplayState()
        return self.groups.load_state(state, partition=partition)

    def _replay_group_partition(self, part: _Partition) -> "_group_offsets.ReplayState | None":
        """The groups and offsets of one ``__consumer_offsets`` partition, read from its
        log up to its end; None when it holds no readable batch.

        Each batch is one group's atomic write (:class:`_OffsetsTopicStore`), so a damaged
        batch (bad CRC, undecodable records) is skipped with a WARN naming its offsets and
        the reason, and every other batch is replayed: only the groups whose latest
        records were in it fall back to their earlier ones.  A damaged batch header
        hides where the next batch starts; the replay then resumes at the next segment.
        """
        state = _group_offsets.ReplayState()
        name = f"{CONSUMER_OFFSETS_TOPIC}-{part.index}"
        any_records = False
        for batch, crc_ok in _scan_batches(part.log, name, what="the group replay"):
            try:
                if not crc_ok:
                    raise CorruptRecordError(f"CRC mismatch (stored {batch.crc:#010x})")
                cols = batch.columns()
                if batch.is_control:
                    # A transaction marker settles the producer's TxnOffsetCommits.
                    for k, v in zip(cols.keys(), cols.values()):
                        marker = ControlRecord.parse(k, v)
                        if marker.is_commit or marker.is_abort:
                            state.complete_txn(batch.producer_id, marker.is_commit)
                    continue
                _group_offsets.replay_batch(zip(cols.keys(), cols.values()), state,
                                            batch.producer_id if batch.attributes & _ATTR_TRANSACTIONAL else -1)
            except PylogError as exc:
                _log.warning("%s: skipped the damaged batch at offsets %d..%d (%s); groups whose "
                             "latest commits were in it fall back to their earlier records",
                             name, batch.base_offset, batch.last_offset, exc)
                continue
            any_records = True
        return state if any_records else None

    def _load_transactions(self) -> None:
        """Replay ``__transaction_state`` (when it exists) into the transaction
        coordinator, which then completes the transactions left in a Prepare state."""
        topic = self._topics.get(_txn_log.TRANSACTION_STATE_TOPIC)
        if topic is None:
            return
        topic.internal = True
        self.transactions.load({part.index: self._replay_txn_partition(part) for part in topic.partitions})

    def load_txn_partition(self, partition: int) -> int:
        """Replay ``__transaction_state-<partition>`` into the transaction coordinator,
        which then serves its ids: a clustered broker that became the partition's leader
        (after ``transactions.begin_load``).  Returns the number of ids loaded."""
        part = self._partition(_txn_log.TRANSACTION_STATE_TOPIC, partition)
        part.topic.internal = True
        return self.transactions.load_partition(partition, self._replay_txn_partition(part))

    def _replay_txn_partition(self, part: _Partition) -> dict:
        """transactional id -> its latest value in one partition, read to its end.  A
        damaged batch is skipped with a WARN (each batch is one state change of one id,
        which falls back to its earlier record)."""
        name = f"{_txn_log.TRANSACTION_STATE_TOPIC}-{part.index}"
        state: dict = {}
        for batch, crc_ok in _scan_batches(part.log, name, what="the transaction state replay"):
            if batch.is_control and crc_ok:
                continue
            try:
                if not crc_ok:
                    raise CorruptRecordError(f"CRC mismatch (stored {batch.crc:#010x})")
                cols = batch.columns()
                _txn_log.replay_batch(zip(cols.keys(), cols.values()), state)
            except PylogError as exc:
                _log.warning("%s: skipped the damaged batch at offsets %d..%d (%s)", name,
                             batch.base_offset, batch.last_offset, exc)
        return state

    # ------------------------------------------------------------------ lookup

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"broker over {self.data_dir} is closed")

    def _topic(self, name: Any) -> _Topic:
        topic = self._topics.get(name) if isinstance(name, str) else None
        if topic is None:
            self._check_open()
            if not isinstance(name, str):
                raise InvalidTopicError(f"topic names are str, not {type(name).__name__}")
            if self.config.auto_create_topics_enable and name != CONSUMER_OFFSETS_TOPIC:
                try:
                    self.create_topic(name)
                except TopicAlreadyExistsError:
                    pass
                return self._topic(name)
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}")
        return topic

    def _partition(self, topic: Any, partition: Any) -> _Partition:
        t = self._topic(topic)
        if isinstance(partition, bool) or not isinstance(partition, int):
            raise UnknownTopicOrPartitionError(f"partition must be an int, not {type(partition).__name__}")
        parts = t.partitions
        if not 0 <= partition < len(parts):
            raise UnknownTopicOrPartitionError(
                f"topic {topic!r} has partitions 0..{len(parts) - 1}; there is no partition {partition}")
        return parts[partition]

    def has_topic(self, name: str) -> bool:
        return name in self._topics

    # -- a clustered broker's replicas (pylog.cluster.node) -----------------------------

    def partition_log(self, topic: str, partition: int) -> Log:
        """The :class:`~pylog.storage.log.Log` of a partition, for a clustered broker's
        replica of it: its offsets and leader epochs, reads.  Its appends and
        truncations go through :meth:`append_as_follower` and :meth:`truncate_partition`
        (under the partition's lock).  Raises UnknownTopicOrPartitionError."""
        return self._partition(topic, partition).log

    def topic_leader_epoch(self, topic: str) -> int:
        """The leader epoch a single node stamps into a topic's batches.  Raises
        UnknownTopicOrPartitionError."""
        return self._topic(topic).leader_epoch

    def append_as_follower(self, topic: str, partition: int, records: Any) -> None:
        """A follower's append: batches as the leader numbered and stamped them (the
        first starts at the log end offset), offsets and epochs kept, their producer
        state replayed, so this replica knows every idempotent producer's sequence when
        it becomes leader.  Raises what :meth:`Log.append` raises (the log is then as
        before); thread-safe (the partition's lock)."""
        part = self._partition(topic, partition)
        with part.lock:
            log = part.log
            start = log.log_end_offset
            log.append(records, assign_offsets=False)
            psm = part.producers
            psm.replay(self._batch_headers(log, start))
            psm.map_end_offset = log.log_end_offset

    def partition_lock(self, topic: str, partition: int) -> threading.Lock:
        """The lock every append to and truncation of a partition holds.  A clustered
        broker's leadership changes hold it too, so the leadership a leader append reads
        under it (:meth:`ReplicaManager.append_epoch`) stays true until the append is
        done.  Lock order: a replica's lock, then this one, then the Log's.  Raises
        UnknownTopicOrPartitionError."""
        return self._partition(topic, partition).lock

    def truncate_partition(self, topic: str, partition: int, offset: int) -> bool:
        """:meth:`Log.truncate_to` under the partition's lock (a follower diverging from
        its leader); whether anything was removed."""
        part = self._partition(topic, partition)
        with part.lock:
            return part.log.truncate_to(offset)

    def append_may_fsync(self, name: str, partition: int) -> bool:
        """Whether a client's append to partition ``partition`` of topic ``name`` may
        fsync before it returns: the topic has a ``flush.messages`` or ``flush.ms``
        policy (its own or the broker's).  A caller on an event loop then appends from a
        thread.  False for an unknown partition."""
        topic = self._topics.get(name)
        if topic is None or type(partition) is not int or not 0 <= partition < len(topic.partitions):
            return False
        return topic.partitions[partition].log.append_may_fsync(topic.leader_epoch)

    def num_partitions(self, topic: str) -> int:
        """Partition count of ``topic``.  Raises UnknownTopicOrPartitionError."""
        return len(self._topic(topic).partitions)

    def topic_config(self, topic: str) -> TopicConfig:
        """The effective configs of ``topic``.  Raises UnknownTopicOrPartitionError."""
        return self._topic(topic).config

    # ------------------------------------------------------------------ topics

    @staticmethod
    def _validate_topic_name(name: Any) -> None:
        if not isinstance(name, str):
            raise InvalidTopicError(f"topic names are str, not {type(name).__name__}")
        if not name or len(name) > 249 or name in (".", "..") or not set(name) <= _LEGAL_CHARS:
            raise InvalidTopicError(
                f"invalid topic name {name!r}: use 1 to 249 characters of [a-zA-Z0-9._-], not '.' or '..'")

    def create_topic(self, name: str, partitions: int | None = None, replication_factor: int | None = None,
                     config: Mapping[str, Any] | None = None, *, validate_only: bool = False) -> TopicDescription:
        """Create a topic (CreateTopics).

        Parameters
        ----------
        name : str
        partitions : int, optional
            Default ``num_partitions`` of the broker config.
        replication_factor : int, optional
            1 (or -1 / None for the default): a single node holds one replica.
        config : mapping, optional
            Topic configs by Kafka's dotted names; values as strings or Python values.
        validate_only : bool
            Check everything, create nothing.

        Raises
        ------
        InvalidTopicError, TopicAlreadyExistsError, InvalidPartitionsError,
        InvalidReplicationFactorError, InvalidConfigError
        """
        self._check_open()
        self._validate_topic_name(name)
        count = self.config.num_partitions if partitions is None or partitions == -1 else partitions
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1_000_000:
            raise InvalidPartitionsError(f"a topic needs 1 to 1000000 partitions, got {partitions!r}")
        rf = replication_factor
        if rf not in (None, -1, 1) or isinstance(rf, bool):
            raise InvalidReplicationFactorError(
                f"replication factor {rf!r} is larger than the 1 broker available")
        overrides = normalize_all(config)
        with self._lock:
            self._check_open()
            if name in self._topics:
                raise TopicAlreadyExistsError(f"topic {name!r} already exists")
            collision = name.replace(".", "_")
            for other in self._topics:
                if other.replace(".", "_") == collision:
                    raise InvalidTopicError(
                        f"topic {name!r} collides with existing topic {other!r} ('.' and '_' are "
                        "the same in metric names)")
            self._check_partition_capacity(count)
            if validate_only:
                return TopicDescription(name, "", False, tuple(
                    self._partition_info_empty(p) for p in range(count)))
            self._create_topic(name, count, overrides)
            return self.describe_topic(name)

    def _partition_info_empty(self, p: int) -> PartitionInfo:
        node = self.config.node_id
        return PartitionInfo(p, node, 0, (node,), (node,))

    def _create_topic(self, name: str, count: int, overrides: Mapping[str, str], internal: bool = False) -> None:
        with self._lock:
            cfg = TopicConfig(overrides, self.config.topic_defaults, self.config.topic_default_sources)
            topic = _Topic(name, _new_topic_id(), cfg, internal, rolled=self._rolled)
            # Registry first: a crash from here on leaves a topic whose missing logs are
            # created on open.
            self._commit_registry({name: count}, new=topic)
            try:
                self._add_partitions(topic, count)
            except BaseException:
                self._undo_registry(f"topic {name!r}")
                raise
            # Published with all its partitions, as a KRaft broker applies a topic's records
            # at once: metadata never shows it with fewer (Kafka's AdminClient takes a topic
            # without partitions for an unknown one, and Kafka Streams fails on that).
            self._topics[name] = topic

    def create_topics(self, topics: Iterable[NewTopic | str], *, validate_only: bool = False) -> dict[str, TopicResult]:
        """CreateTopics for several topics: a :class:`TopicResult` per name, with an error
        code for each topic that could not be created."""
        out: dict[str, TopicResult] = {}
        for spec in topics:
            if isinstance(spec, str):
                spec = NewTopic(spec)
            try:
                d = self.create_topic(spec.name, spec.num_partitions, spec.replication_factor, spec.configs,
                                      validate_only=validate_only)
                out[spec.name] = TopicResult(spec.name, topic_id=d.topic_id or None,
                                             num_partitions=d.num_partitions, replication_factor=1,
                                             configs=None if validate_only else self.describe_configs(spec.name))
            except PylogError as exc:
                out[str(spec.name)] = TopicResult(str(spec.name), exc.error_code, str(exc))
        return out

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data (DeleteTopics).

        Raises
        ------
        UnknownTopicOrPartitionError, InvalidTopicError (an internal topic)
        """
        self._check_open()
        with self._lock:
            topic = self._topic(name)
            if topic.internal:
                raise InvalidTopicError(f"internal topic {name!r} cannot be deleted")
            del self._topics[name]
            try:
                self._commit_registry()
            except BaseException:
                self._topics[name] = topic
                raise
            for part in topic.partitions:
                with part.lock:
                    self.logs.delete_log(name, part.index)
            self.logs.topic_configs.pop(name, None)
        # Committed offsets of the deleted topic must not apply to a topic recreated under
        # its name (Kafka drops them).  OffsetDelete does it for every group that is empty
        # or no longer subscribed to the topic; a group still subscribed keeps them until
        # it is empty and they expire.
        partitions = list(range(len(topic.partitions)))
        for g in self.groups.list_groups():
            res = self.groups.delete_offsets(g.group_id, {name: partitions})
            if res.error_code not in (0, 69):   # 69: the group went away meanwhile
                _log.info("group %s keeps its offsets of deleted topic %s (%s)", g.group_id, name,
                          res.error.kafka_name if res.error else res.error_code)

    def delete_topics(self, names: Iterable[str]) -> dict[str, TopicResult]:
        out: dict[str, TopicResult] = {}
        for name in names:
            try:
                tid = self._topic(name).topic_id
                self.delete_topic(name)
                out[name] = TopicResult(name, topic_id=tid)
            except PylogError as exc:
                out[str(name)] = TopicResult(str(name), exc.error_code, str(exc))
        return out

    def create_partitions(self, name: str, total: int, *, validate_only: bool = False) -> None:
        """Grow a topic to ``total`` partitions (CreatePartitions).  Keyed records of
        existing keys may then map to other partitions, as in Kafka.

        Raises
        ------
        UnknownTopicOrPartitionError, InvalidPartitionsError
        """
        self._check_open()
        with self._lock:
            topic = self._topic(name)
            current = len(topic.partitions)
            if isinstance(total, bool) or not isinstance(total, int) or total <= current or total > 1_000_000:
                raise InvalidPartitionsError(
                    f"topic {name!r} has {current} partitions; the new count must be larger (got {total!r})")
            if topic.internal:
                raise InvalidTopicError(f"internal topic {name!r} cannot be changed")
            if validate_only:
                return
            self._check_partition_capacity(total - current)
            self._commit_registry({name: total})
            try:
                self._add_partitions(topic, total)
            except BaseException:
                self._undo_registry(f"partitions {current}..{total - 1} of {name!r}")
                raise

    def _add_partitions(self, topic: _Topic, total: int) -> None:
        """Create the logs of ``topic``'s partitions up to ``total``, all or none: when one
        cannot be created (out of file descriptors, a full disk), those created here are
        deleted again and the topic keeps the partitions it had.  The new partitions are
        published together, once all their logs exist."""
        first = len(topic.partitions)
        log_config = topic.config.log_config()
        added: list[_Partition] = []
        try:
            for p in range(first, total):
                log = self.logs.get_or_create_log(topic.name, p, log_config)
                added.append(_Partition(topic, p, log))
        except BaseException as exc:
            for part in added:
                try:
                    self.logs.delete_log(topic.name, part.index)
                except Exception as cleanup:  # noqa: BLE001 - the first failure is the one to report
                    _log.warning("cannot delete the log of %s-%d after a failed create: %s",
                                 topic.name, part.index, cleanup)
            if isinstance(exc, OSError) and not isinstance(exc, PylogError):
                raise KafkaStorageError(f"cannot create the logs of {topic.name!r}: {exc}") from exc
            raise
        # One list.extend: readers (metadata, produce) see all the new partitions or none.
        topic.partitions.extend(added)

    def _undo_registry(self, what: str) -> None:
        """Rewrite the registry from the in-memory topics after a create failed part-way
        (it was committed first, so a crash creates missing logs on open)."""
        try:
            self._commit_registry()
        except PylogError as exc:
            _log.error("the registry still lists %s, whose creation failed: %s (its logs are created "
                       "on the next open)", what, exc)

    def _check_partition_capacity(self, more: int) -> None:
        """Refuse ``more`` partitions beyond what the process's open-file limit can hold:
        each open partition keeps about ``_FDS_PER_PARTITION`` descriptors, and a quarter of
        the limit (at most 1024) stays for connections, rolls, snapshots and the cleaner.  A client must not be able to
        make the broker run out of descriptors (and then fail to open its own data dir)."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return
        held = sum(len(t.partitions) for t in list(self._topics.values()))
        cap = (soft - min(soft // 4, 1024)) // _FDS_PER_PARTITION
        if held + more > cap:
            raise InvalidPartitionsError(
                f"{more} more partition(s) would exceed what this broker can keep open: it holds "
                f"{held} and the open-file limit ({soft}, `ulimit -n`) allows about {cap}; raise the "
                "limit or create fewer partitions")

    def list_topics(self, *, internal: bool = False) -> list[str]:
        """Topic names, sorted (internal topics only with ``internal=True``)."""
        return sorted(n for n, t in list(self._topics.items()) if internal or not t.internal)

    def describe_topic(self, name: str) -> TopicDescription:
        """Partitions (leader, replicas, ISR, log start offset, high watermark) of a topic.

        Raises UnknownTopicOrPartitionError.
        """
        topic = self._topic(name)
        node = self.config.node_id
        parts = []
        for part in list(topic.partitions):
            log = part.log
            parts.append(PartitionInfo(part.index, node, topic.leader_epoch, (node,), (node,), (),
                                       log.log_start_offset, log.log_end_offset))
        return TopicDescription(topic.name, topic.topic_id, topic.internal, tuple(parts))

    def partition_sizes(self, wanted: Mapping[str, Iterable[int]] | None = None) -> dict[str, dict[int, int]]:
        """Bytes held by each partition's log (Kafka's ``Log.size``: the segments' valid
        bytes), for DescribeLogDirs: every topic's partitions (internal ones included) when
        ``wanted`` is None, else those named that exist (others are left out, as Kafka
        leaves them out).  A partition whose loading was deferred is loaded first (this
        runs off the event loop); safe from any thread."""
        out: dict[str, dict[int, int]] = {}
        pairs = (((n, None) for n in list(self._topics)) if wanted is None else wanted.items())
        for name, indexes in pairs:
            topic = self._topics.get(name)
            if topic is None:
                continue
            parts = list(topic.partitions)
            chosen = range(len(parts)) if indexes is None else [i for i in indexes if 0 <= i < len(parts)]
            sizes = {i: parts[i].log.size for i in chosen}
            if sizes:
                out[name] = sizes
        return out

    def describe_topics(self, names: Iterable[str] | None = None) -> dict[str, TopicDescription | TopicResult]:
        """Metadata of several topics (all non-internal ones when None): a description, or
        a :class:`TopicResult` with the error for each unknown one."""
        out: dict[str, TopicDescription | TopicResult] = {}
        for name in (self.list_topics() if names is None else names):
            try:
                out[name] = self.describe_topic(name)
            except PylogError as exc:
                out[str(name)] = TopicResult(str(name), exc.error_code, str(exc))
        return out

    # ------------------------------------------------------------------ configs

    def describe_configs(self, topic: str, names: Iterable[str] | None = None, *,
                         include_synonyms: bool = False, include_documentation: bool = False) -> list[ConfigEntry]:
        """Every topic config (or ``names``; names that are not topic configs are left
        out, as Kafka does) with its value and source, defaults included (DescribeConfigs).
        Raises UnknownTopicOrPartitionError."""
        return self._topic(topic).config.describe(names, include_synonyms=include_synonyms,
                                                  include_documentation=include_documentation)

    def alter_configs(self, topic: str, configs: Mapping[str, Any], *, validate_only: bool = False) -> None:
        """Replace the topic's overrides with ``configs`` (AlterConfigs: settings left out
        return to their defaults).  Raises UnknownTopicOrPartitionError, InvalidConfigError."""
        self._apply_configs(topic, normalize_all(configs), validate_only)

    def incremental_alter_configs(self, topic: str, ops: Iterable[tuple[str, Any, Any]], *,
                                  validate_only: bool = False) -> None:
        """IncrementalAlterConfigs: ``(name, op, value)`` with op ``"set"`` (0),
        ``"delete"`` (1), ``"append"`` (2) or ``"subtract"`` (3); append/subtract only for
        list configs.  All or nothing.  Raises UnknownTopicOrPartitionError, InvalidConfigError
        (as Kafka, an unknown name or a bad value before an unknown topic)."""
        ops = list(ops)
        check_config_ops(ops)
        overrides = apply_config_ops(self._topic(topic).config.overrides, ops, self.config.topic_defaults)
        self._apply_configs(topic, overrides, validate_only)

    def _apply_configs(self, topic_name: str, overrides: dict[str, str], validate_only: bool) -> None:
        self._check_open()
        with self._lock:
            topic = self._topic(topic_name)
            new = TopicConfig(overrides, self.config.topic_defaults, self.config.topic_default_sources)
            log_config = new.log_config()
            if topic.internal and "cleanup.policy" in overrides and overrides["cleanup.policy"] != "compact":
                raise InvalidConfigError(f"{topic_name} must stay compacted")
            if validate_only:
                return
            old = topic.config
            topic.set_config(new)
            try:
                self._commit_registry()
            except BaseException:
                topic.set_config(old)
                raise
            self.logs.topic_configs[topic_name] = log_config
            for part in topic.partitions:
                _apply_log_config(part.log, log_config)

    def set_topic_defaults(self, defaults: Mapping[str, Any], sources: Mapping[str, int] | None = None, *,
                           validate_only: bool = False) -> None:
        """Replace the broker-level defaults of topic configs at run time (Kafka's dynamic
        ``log.*`` broker configs): every topic that does not override a setting, and every
        log created later, takes the new value, as in Kafka.  ``sources`` says where each
        default comes from (see :class:`BrokerConfig`).  All or nothing: if the defaults
        are bad, or make any topic's settings inconsistent, nothing changes.  The defaults
        are not persisted here (the caller owns where they come from).

        Raises
        ------
        InvalidConfigError
        """
        self._check_open()
        normalized = normalize_all(defaults)
        sources = dict(sources or {})
        with self._lock:
            default = TopicConfig({}, normalized, sources)
            default_log = default.log_config()
            news = {}
            for name, topic in self._topics.items():
                cfg = TopicConfig(topic.config.overrides, normalized, sources)
                news[name] = (cfg, cfg.log_config())
            if validate_only:
                return
            self.config = dataclasses.replace(self.config, topic_defaults=normalized,
                                              topic_default_sources=sources)
            self._default_config = default
            self.logs.config = default_log
            for name, topic in self._topics.items():
                cfg, log_config = news[name]
                topic.set_config(cfg)
                self.logs.topic_configs[name] = log_config
                for part in topic.partitions:
                    _apply_log_config(part.log, log_config)

    def reconfigure_cleaner(self, *, backoff_ms: int | None = None, dedupe_buffer_size: int | None = None) -> None:
        """Change the log cleaner's pass interval and offset-map memory at run time
        (Kafka's dynamic ``log.cleaner.backoff.ms`` / ``log.cleaner.dedupe.buffer.size``);
        a clean already running finishes with the old map.  Raises InvalidConfigError."""
        changes = {}
        if backoff_ms is not None:
            changes["log_cleaner_backoff_ms"] = backoff_ms
        if dedupe_buffer_size is not None:
            changes["log_cleaner_dedupe_buffer_size"] = dedupe_buffer_size
        if not changes:
            return
        new = dataclasses.replace(self.config, **changes)     # validates
        with self._lock:
            self.config = new
            if self.cleaner is not None:
                self.cleaner.interval_ms = new.log_cleaner_backoff_ms
                self.cleaner.dedupe_buffer_size = new.log_cleaner_dedupe_buffer_size
                self.cleaner.wakeup()

    # ------------------------------------------------------------------ produce

    def produce(self, topic: str, partition: int, records, *, acks: int = -1) -> ProduceResult:
        """Append a produce request's records to one partition (Produce).

        ``records`` is one or more v2 batches, as a client sent them.  Each is validated
        (size, CRC32C, counts, timestamps, producer sequence; on a compacted topic, a key
        on every record) and appended as it came, unless the topic's ``compression.type``
        asks for another codec.  Several batches are appended all or none, as Kafka
        appends a request's records for a partition: when one is rejected, the log and
        the producer state are as before.  Never raises for a per-partition problem: the
        result carries Kafka's error code.

        Parameters
        ----------
        acks : {-1, 0, 1}
            -1 (all): also requires ``min.insync.replicas`` <= 1 (one replica here).
        """
        return self.produce_partitions(topic, ((partition, records),), acks=acks)[0]

    def produce_partitions(self, topic: str, partitions: Iterable[tuple[int, Any]], *,
                           acks: int = -1) -> list[ProduceResult]:
        """:meth:`produce` for several partitions of one topic (a Produce request's topic):
        one result per ``(partition, records)`` pair, in order.  The topic, the acks
        check and the clock are looked up once, not per partition; each partition is
        appended, and its fetchers told, as :meth:`produce` would.  Never raises for a
        per-partition problem."""
        if not isinstance(acks, int) or acks not in (-1, 0, 1):
            err = ProduceResult.failed(InvalidRequiredAcksError(f"acks must be -1 (all), 0 or 1, got {acks!r}"))
            return [err for _ in partitions]
        t = self._topics.get(topic) if type(topic) is str else None
        parts = t.partitions if t is not None else ()
        # Alone (not clustered), whether acks can be met depends on the topic only.
        acks_met = t is not None and self.replication is None and not (acks == -1 and t.min_insync > 1)
        now = self.clock()
        out = []
        for partition, records in partitions:
            try:
                if type(partition) is int and 0 <= partition < len(parts):
                    part = parts[partition]
                else:   # the slow lookup raises the right error (or creates the topic)
                    part = self._partition(topic, partition)
            except PylogError as exc:
                out.append(ProduceResult.failed(exc))
                continue
            out.append(self._produce_to(part, records, acks, now, acks_met))
        return out

    def produce_one(self, topic: str, partition: int, records: Any, acks: int = -1) -> ProduceResult | None:
        """:meth:`produce_partitions` for the one partition of a server's usual Produce
        request (librdkafka sends one request per partition), with fewer Python calls;
        None, with nothing done, when the partition is not plainly there (an unknown
        topic or partition, which the general path reports or creates) or when its
        append may fsync (a flush policy: an event loop appends from a thread then)."""
        t = self._topics.get(topic) if type(topic) is str else None
        if t is None or type(partition) is not int or not 0 <= partition < len(t.partitions) \
                or type(acks) is not int or acks not in (-1, 0, 1):
            return None
        part = t.partitions[partition]
        if part.log.append_may_fsync(t.leader_epoch):
            return None
        alone = self.replication is None
        acks_met = alone and not (acks == -1 and t.min_insync > 1)
        now = self.clock()
        if acks_met:
            header = _core.lone_batch_header(records)
            if header is not None:
                res = self._append_lone(part, records, header, now)
                if res is not None:
                    return res
        return self._produce_to(part, records, acks, now, acks_met)

    def _append_lone(self, part: _Partition, records: Any, header: tuple, now: int) -> ProduceResult | None:
        """:meth:`_produce_to` of a request's usual records, in a few Python calls: one
        batch (``header`` is ``_core.lone_batch_header(records)``) from a client, neither
        transactional nor control, to a topic that keeps the producer's codec and needs
        no per-record check (not compacted, not internal), with acks already known to be
        met.  The same checks, append and producer-state update as the general path
        (:meth:`_check_batch`, :meth:`_append_lone_locked`); None, with nothing done, for
        any other batch, which the general path takes."""
        attrs, pid, epoch, seq, count, delta, base_ts, max_ts = header
        topic = part.topic
        if attrs & (_ATTR_TRANSACTIONAL | _ATTR_CONTROL) or not count or topic.internal or topic.compacted \
                or (topic.codec >= 0 and attrs & 0x07 != topic.codec):
            return None
        if topic.create_time:
            err = _timestamp_error(topic, base_ts, max_ts, now)
            if err is not None:
                return ProduceResult.failed(err)
        return self._append_lone_locked(part, records, pid, epoch, seq, count, delta, max_ts)

    def _append_lone_locked(self, part: _Partition, batch: Any, pid: int, epoch: int, seq: int, count: int,
                            delta: int, max_ts: int) -> ProduceResult:
        """Append one checked batch that is neither transactional nor control (its buffer
        and the header fields the producer state needs) under the partition's lock: an
        idempotent producer's retry answers the original's offsets, anything else is
        appended and the producer state updated; fetchers waiting on the partition are
        told.  Never raises for a per-partition problem (a deleted partition answers
        UNKNOWN_TOPIC_OR_PARTITION)."""
        with part.lock:
            try:
                psm = part.producers
                if pid >= 0:
                    dup = psm.check(pid, epoch, seq, count, delta, is_transactional=False)
                    if dup is not None:
                        # Kafka answers a retry with the original's timestamp, under CreateTime too.
                        return ProduceResult(0, dup.first_offset, dup.timestamp, part.log.log_start_offset, None, True)
                info = self._log_append(part, (batch,))
            except LogClosedError:
                return ProduceResult.failed(
                    UnknownTopicOrPartitionError(f"{part.topic.name}-{part.index} was deleted"))
            except PylogError as exc:
                return ProduceResult.failed(exc)
            offset = info.base_offset
            last = offset + delta
            append_time = info.log_append_time
            if pid >= 0:
                psm.update(pid, epoch, seq, count, delta, offset, last,
                           append_time if append_time >= 0 else max_ts, is_transactional=False, is_control=False)
            elif last >= psm.map_end_offset:
                # A producer without an id (the common case): no producer state beyond the end.
                psm.map_end_offset = last + 1
            log = part.log
            res = ProduceResult(0, offset, append_time, log.log_start_offset)
            leo = log.log_end_offset
        self.notify_high_watermark(part.topic.name, part.index, leo)
        return res

    def _produce_to(self, part: _Partition, records: Any, acks: int, now: int, acks_met: bool) -> ProduceResult:
        """Append a produce request's records for ``part`` (one or more batches); never
        raises for a per-partition problem."""
        try:
            batches = self._split_batches(records)
            if len(batches) == 1:
                return self._append_one(part, batches[0], acks, True, now, acks_met)
            return self._append_request(part, batches, acks)
        except PylogError as exc:
            return ProduceResult.failed(exc)

    def append(self, topic: str, partition: int, records, *, acks: int = -1) -> ProduceResult:
        """:meth:`produce`, raising the error instead of returning it."""
        res = self.produce(topic, partition, records, acks=acks)
        res.raise_for_error()
        return res

    def produce_batches(self, topic: str, partition: int, batches: Sequence, *, acks: int = -1) -> list[ProduceResult]:
        """Append several separately sent batches of one partition in order, with one
        result each (the embedded producer's path: batches of one idempotent producer
        in sequence are appended together, with the same checks as one by one).  Each
        batch succeeds or fails on its own, as separate requests would; a failed batch
        appends nothing."""
        try:
            if not isinstance(acks, int) or acks not in (-1, 0, 1):
                raise InvalidRequiredAcksError(f"acks must be -1 (all), 0 or 1, got {acks!r}")
            part = self._partition(topic, partition)
        except PylogError as exc:
            return [ProduceResult.failed(exc) for _ in batches]
        return self._append_batches(part, list(batches), acks, client=True)

    def _append_internal(self, topic: str, partition: int, batch: bytes) -> ProduceResult:
        """Append for the broker itself (the group coordinator): internal topics allowed."""
        try:
            part = self._partition(topic, partition)
            return self._append_batches(part, [batch], -1, client=False)[0]
        except PylogError as exc:
            return ProduceResult.failed(exc)

    @staticmethod
    def _split_batches(records) -> list:
        """One view per batch of a produce request's records (headers checked, not CRCs:
        the append checks those)."""
        if isinstance(records, (str, int, float)) or records is None:
            raise CorruptRecordError(f"records must be bytes-like record batches, not {type(records).__name__}")
        try:
            view = memoryview(records)
        except TypeError:
            raise CorruptRecordError(f"records must be bytes-like record batches, not {type(records).__name__}") from None
        out = []
        it = _core.iter_batches(view, check_crc=False)
        for b in it:
            out.append(b)
        if not out:
            raise CorruptRecordError("a produce request needs at least one whole record batch")
        if it.position != len(view):
            raise CorruptRecordError(
                f"the records end with a partial batch ({len(view) - it.position} bytes after the last whole batch)")
        return out

    def _check_batch(self, topic: _Topic, b, client: bool, now: int, partition: int = -1):
        """Per-batch checks before the append; returns the batch (maybe recompressed)."""
        attrs = b.attributes
        if client:
            if topic.internal:
                raise InvalidTopicError(f"clients cannot produce to internal topic {topic.name!r}")
            if attrs & _ATTR_CONTROL:
                raise InvalidRecordError("clients cannot write control batches")
            if attrs & _ATTR_TRANSACTIONAL:
                verifier = self.txn_verifier
                if verifier is None:
                    raise InvalidRecordError(
                        "transactional batches need a transaction coordinator, which this broker does not run yet")
                if b.producer_id < 0 or b.base_sequence < 0:
                    raise InvalidRecordError(
                        f"a transactional batch needs a producer id and a sequence (got producer id "
                        f"{b.producer_id}, base sequence {b.base_sequence})")
                code = verifier(topic.name, partition, b.producer_id, b.producer_epoch, b.base_sequence)
                if code:
                    raise error_for_code(
                        code, f"transactional batch of producer {b.producer_id} epoch {b.producer_epoch} "
                              f"for {topic.name}-{partition} refused by the transaction coordinator")
        if b.records_count == 0 and not attrs & _ATTR_CONTROL:
            raise InvalidRecordError("a record batch must hold at least one record")
        # The bounds guard against clients' clocks; the broker's own records (the group and
        # transaction coordinators') carry its own time and are not checked against it.
        if client and topic.create_time and not attrs & _ATTR_CONTROL:
            err = _timestamp_error(topic, b.base_timestamp, b.max_timestamp, now)
            if err is not None:
                raise err
        if topic.compacted and not attrs & _ATTR_CONTROL:
            # Per-record work, in C (compressed batches are decompressed for it).
            nulls = b.null_key_indexes()
            if nulls:
                if not b.crc_matches():   # a damaged batch is reported as such first, as Kafka does
                    raise CorruptRecordError(f"record batch at base offset {b.base_offset} fails its CRC")
                raise _null_key_error(topic.name, partition, nulls)
        if topic.codec >= 0 and b.codec != topic.codec and not attrs & _ATTR_CONTROL:
            return _core.RecordBatch(_recompress(b, topic.codec))
        return b

    def _acks_unsatisfiable(self, part: _Partition, acks: int) -> PylogError | None:
        """The error for acks=all when min.insync.replicas asks more than this one node
        (or, clustered, more than the ISR), or for a produce to a partition not led here."""
        topic = part.topic
        if self.replication is not None:
            return self.replication.check_produce(topic.name, part.index, acks)
        return self.single_node_acks_error(topic.name, part.index, acks)

    def single_node_acks_error(self, name: str, partition: int, acks: int) -> NotEnoughReplicasError | None:
        """acks=all on a partition this node alone holds (a single node, or a clustered
        broker's partition the cluster does not know): min.insync.replicas above 1 fails."""
        topic = self._topic(name)
        if acks == -1 and topic.min_insync > 1:
            return NotEnoughReplicasError(
                f"{topic.name}-{partition}: min.insync.replicas={topic.min_insync} but this single "
                "node has 1 in-sync replica (acks=all cannot be satisfied)")
        return None

    def _checked(self, part: _Partition, raw, client: bool, now: int):
        """``raw`` as a checked RecordBatch view (:meth:`_check_batch`), or the failed
        ProduceResult saying why not."""
        try:
            b = raw if isinstance(raw, _core.RecordBatch) else _core.RecordBatch(raw)
            return self._check_batch(part.topic, b, client, now, part.index)
        except PylogError as exc:
            return ProduceResult.failed(exc)
        except TypeError as exc:
            return ProduceResult.failed(CorruptRecordError(f"not a record batch: {exc}"))

    def _append_one(self, part: _Partition, raw, acks: int, client: bool, now: int | None = None,
                    acks_met: bool = False) -> ProduceResult:
        """:meth:`_append_batches` for one batch (a producer's usual request), without
        the coalescing bookkeeping.  ``now``: the broker's clock, when the caller has it;
        ``acks_met``: the caller knows ``acks`` can be met (:meth:`produce_partitions`)."""
        if not acks_met:
            err = self._acks_unsatisfiable(part, acks)
            if err is not None:
                return ProduceResult.failed(err)
        b = self._checked(part, raw, client, self.clock() if now is None else now)
        if type(b) is ProduceResult:
            return b
        if b.attributes & (_ATTR_TRANSACTIONAL | _ATTR_CONTROL):
            # The producer state's transaction bookkeeping (and a marker's) is _append_locked's.
            return self._locked_append(part, self._append_txn_one_locked, part, b)
        return self._append_lone_locked(part, b, b.producer_id, b.producer_epoch, b.base_sequence,
                                        b.records_count, b.last_offset_delta, b.max_timestamp)

    def _append_txn_one_locked(self, part: _Partition, b) -> ProduceResult:
        return self._append_locked(part, [b], b.size)[0]

    def _locked_append(self, part: _Partition, append: Callable[..., ProduceResult], *args: Any) -> ProduceResult:
        """Run ``append(*args)`` under the partition's lock: a failure becomes the result
        (a deleted partition answers UNKNOWN_TOPIC_OR_PARTITION), and waiting fetchers
        are told of what it appended."""
        with part.lock:
            try:
                res = append(*args)
            except LogClosedError:
                return ProduceResult.failed(
                    UnknownTopicOrPartitionError(f"{part.topic.name}-{part.index} was deleted"))
            except PylogError as exc:
                return ProduceResult.failed(exc)
            if res.duplicate:
                return res
            leo = part.log.log_end_offset
        self.notify_high_watermark(part.topic.name, part.index, leo)
        return res

    def _append_request(self, part: _Partition, batches: list, acks: int) -> ProduceResult:
        """The several batches of one produce request's partition, all or none: each is
        checked, then their producer sequences in order against a scratch copy of the
        producer state, then all go to the log in one append (which writes all or
        nothing), and only then is the producer state updated."""
        err = self._acks_unsatisfiable(part, acks)
        if err is not None:
            return ProduceResult.failed(err)
        now = self.clock()
        views = []
        for raw in batches:
            b = self._checked(part, raw, True, now)
            if type(b) is ProduceResult:
                return b
            views.append(b)
        return self._locked_append(part, self._append_all_locked, part, views)

    def _append_all_locked(self, part: _Partition, views: list) -> ProduceResult:
        """:meth:`_append_request`'s work under the partition lock.  A duplicate batch
        (an idempotent producer's retry) makes the whole request a duplicate, as in
        Kafka: nothing is appended and the answer is the original's offsets.  Raises
        PylogError with nothing changed."""
        psm = part.producers
        log = part.log
        scratch = None
        offset = log.log_end_offset
        for b in views:
            transactional = bool(b.attributes & _ATTR_TRANSACTIONAL)
            last = offset + b.last_offset_delta
            if b.producer_id >= 0:
                if scratch is None:
                    scratch = _scratch_producer_state(psm, views)
                dup = scratch.check(b.producer_id, b.producer_epoch, b.base_sequence, b.records_count,
                                    b.last_offset_delta, is_transactional=transactional)
                if dup is not None:
                    # Kafka answers a retry with the original batch's timestamp as its
                    # log append time, under CreateTime too.
                    ts = dup.timestamp
                    return ProduceResult(0, dup.first_offset, ts, log.log_start_offset, None, True)
                scratch.update(b.producer_id, b.producer_epoch, b.base_sequence, b.records_count,
                               b.last_offset_delta, offset, last, b.max_timestamp, is_transactional=transactional,
                               is_control=bool(b.attributes & _ATTR_CONTROL))
            offset = last + 1
        if any(b.attributes & _ATTR_TRANSACTIONAL for b in views):
            self._verify_txn_locked(part, views)
            with log.lock:   # see _append_locked
                return self._append_and_update(part, views)[0]
        return self._append_and_update(part, views)[0]

    def _log_append(self, part: _Partition, views: list):
        """``log.append`` of checked views, with storage failures reported once: the first
        failing append of a partition logs an ERROR naming the partition, its directory
        and the errno; later ones stay quiet until an append succeeds again, which logs
        that it cleared.  Every failing append still gets KAFKA_STORAGE_ERROR.  A bare
        OSError (a segment file that could not be created in a roll) becomes
        KafkaStorageError.  Raises PylogError with nothing appended."""
        log = part.log
        try:
            # Read under the partition's lock, which leadership changes hold too: a
            # replica that stopped leading since the produce's check refuses here
            # (NotLeaderError) rather than append in an epoch it does not lead.
            epoch = part.topic.leader_epoch if self.replication is None else \
                self.replication.append_epoch(part.topic.name, part.index)
            info = log.append(views[0] if len(views) == 1 else views, leader_epoch=epoch)
        except LogClosedError:
            raise
        except KafkaStorageError as exc:
            _storage_failure(part, exc)
            raise
        except PylogError:
            raise
        except OSError as exc:
            err = KafkaStorageError(f"{log.path}: {exc.strerror or exc} (the log is unchanged)")
            err.errno = exc.errno
            _storage_failure(part, err)
            raise err from exc
        if part.storage_failed:
            part.storage_failed = False
            _log.warning("%s-%d: appends to %s succeed again (offset %d)", part.topic.name, part.index,
                         log.path, info.base_offset)
        return info

    def _append_batches(self, part: _Partition, batches: list, acks: int, client: bool) -> list[ProduceResult]:
        topic = part.topic
        n = len(batches)
        if n == 1:
            return [self._append_one(part, batches[0], acks, client)]
        results: list[ProduceResult | None] = [None] * n
        views: list = [None] * n
        now = self.clock()
        err = self._acks_unsatisfiable(part, acks)
        if err is not None:
            return [ProduceResult.failed(err) for _ in range(n)]
        for i, raw in enumerate(batches):
            b = self._checked(part, raw, client, now)
            if type(b) is ProduceResult:
                results[i] = b
            else:
                views[i] = b
        appended = False
        with part.lock:
            i = 0
            limit = min(_MAX_COALESCED_BYTES, max(part.log.config.segment_bytes // 2, 1))
            while i < n:
                if results[i] is not None:
                    i += 1
                    continue
                j = i + 1
                size = views[i].size
                while j < n and results[j] is None and size + views[j].size <= limit \
                        and _continues(views[j - 1], views[j]):
                    size += views[j].size
                    j += 1
                if j - i > 1:
                    try:
                        results[i:j] = self._append_locked(part, views[i:j], size)
                        appended = True
                        i = j
                        continue
                    except (PylogError, _Fallback):
                        pass   # nothing changed; redo one by one to attribute the error
                for k in range(i, j):
                    try:
                        res = self._append_locked(part, views[k:k + 1], views[k].size)[0]
                        appended = appended or not res.duplicate
                        results[k] = res
                    except _Fallback:
                        raise AssertionError("a single batch never falls back")  # pragma: no cover
                    except LogClosedError:
                        results[k] = ProduceResult.failed(UnknownTopicOrPartitionError(
                            f"{topic.name}-{part.index} was deleted"))
                    except PylogError as exc:
                        results[k] = ProduceResult.failed(exc)
                i = j
            leo = part.log.log_end_offset if appended else -1
        if appended:
            self.notify_high_watermark(topic.name, part.index, leo)
        return results  # type: ignore[return-value]

    def _append_locked(self, part: _Partition, views: list, size: int) -> list[ProduceResult]:
        """Append views (one batch, or batches of one producer in sequence) under the
        partition lock.  Raises PylogError (nothing changed) or _Fallback."""
        psm = part.producers
        log = part.log
        h0 = views[0]
        pid = h0.producer_id
        transactional = bool(h0.attributes & _ATTR_TRANSACTIONAL)
        if pid >= 0:
            dup = psm.check(pid, h0.producer_epoch, h0.base_sequence, h0.records_count,
                            h0.last_offset_delta, is_transactional=transactional)
            if dup is not None:
                if len(views) > 1:
                    raise _Fallback()
                # As the one-batch path: the original's timestamp, under CreateTime too.
                return [ProduceResult(0, dup.first_offset, dup.timestamp, log.log_start_offset, None, True)]
        if transactional:
            self._verify_txn_locked(part, views)
            # A transaction may open here: the log's lock over the append and the state
            # update lets a read_committed fetch (which computes the LSO under it) never
            # see the records without the open transaction.
            with log.lock:
                return self._append_and_update(part, views)
        return self._append_and_update(part, views)

    def _verify_txn_locked(self, part: _Partition, views: list) -> None:
        """KIP-890 part 1 once more, under the partition's lock: :meth:`_check_batch` asked
        the transaction coordinator before the lock was taken, and a marker that ended the
        transaction may have landed since (markers take this lock too, after the
        coordinator left Ongoing).  Appending then would leave a transaction no marker
        ever closes, holding the LSO forever.  Raises PylogError, nothing appended."""
        verifier = self.txn_verifier
        if verifier is None or part.topic.internal:
            return
        for b in views:
            if b.attributes & _ATTR_TRANSACTIONAL and not b.attributes & _ATTR_CONTROL:
                code = verifier(part.topic.name, part.index, b.producer_id, b.producer_epoch, b.base_sequence)
                if code:
                    raise error_for_code(
                        code, f"transactional batch of producer {b.producer_id} epoch {b.producer_epoch} "
                              f"for {part.topic.name}-{part.index}: its transaction ended before the append")

    def _append_and_update(self, part: _Partition, views: list) -> list[ProduceResult]:
        psm = part.producers
        log = part.log
        # Several coalesced batches go as a list: one pwritev, no joined copy.
        info = self._log_append(part, views)
        offset = info.base_offset
        start = log.log_start_offset
        if len(views) == 1 and views[0].producer_id < 0 and not views[0].attributes & _ATTR_CONTROL:
            # A producer without an id (the common case): no producer state beyond the end.
            last = offset + views[0].last_offset_delta
            if last + 1 > psm.map_end_offset:
                psm.map_end_offset = last + 1
            return [ProduceResult(0, offset, info.log_append_time, start)]
        out = []
        for b in views:
            delta = b.last_offset_delta
            last = offset + delta
            ts = info.log_append_time if info.log_append_time >= 0 else b.max_timestamp
            psm.update(b.producer_id, b.producer_epoch, b.base_sequence, b.records_count, delta, offset, last,
                       ts, is_transactional=bool(b.attributes & _ATTR_TRANSACTIONAL),
                       is_control=bool(b.attributes & _ATTR_CONTROL))
            out.append(ProduceResult(0, offset, info.log_append_time, start))
            offset = last + 1
        return out

    # ------------------------------------------------------------------ fetch & offsets

    def fetch(self, topic: str, partition: int, offset: int, max_bytes: int = 1024 * 1024, *,
              isolation_level: int = READ_UNCOMMITTED) -> FetchResult:
        """Read whole batches from ``offset`` up to the high watermark (Fetch, one
        partition).  At least one batch is returned when there is one, however large.
        With ``isolation_level=READ_COMMITTED`` the read stops at the last stable offset
        (:meth:`last_stable_offset`) and the result lists the aborted transactions
        overlapping what it returns (from the ``.txnindex`` files: batch headers only,
        no record is read).  Never raises for a per-partition problem (unknown
        partition, offset out of range)."""
        try:
            part = self._partition(topic, partition)
            if self.replication is not None:
                err = self.replication.check_fetch(topic, partition)
                if err is not None:
                    raise err
            if isinstance(offset, bool) or not isinstance(offset, int):
                raise InvalidRequestError(f"fetch offset must be an int, not {type(offset).__name__}")
            if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
                raise InvalidRequestError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
            if isolation_level == READ_COMMITTED:
                with part.log.lock:   # the LSO and the read see the same appends (see _append_locked)
                    return self._read_partition(part, offset, max_bytes, True)
            return self._read_partition(part, offset, max_bytes, False)
        except LogClosedError:
            return FetchResult(UnknownTopicOrPartitionError.error_code,
                               error_message=f"{topic}-{partition} was deleted")
        except PylogError as exc:
            return FetchResult(exc.error_code, error_message=str(exc))

    def _read_partition(self, part: _Partition, offset: int, max_bytes: int, committed: bool) -> FetchResult:
        log = part.log
        hw = log.log_end_offset if self.replication is None else \
            self.replication.high_watermark(part.topic.name, part.index)
        lso = _stable_offset(part, hw)
        try:
            rr = log.read(offset, max_bytes, max_offset=lso if committed else hw)
        except OffsetOutOfRangeError as exc:
            return FetchResult(exc.error_code, hw, lso, log.log_start_offset, None, str(exc))
        if not committed:
            return FetchResult(0, hw, lso, rr.log_start_offset, rr)
        aborted = log.collect_aborted_transactions(offset, rr.next_offset) if rr.size else []
        return FetchResult(0, hw, lso, rr.log_start_offset, rr, None, aborted)

    def last_stable_offset(self, topic: str, partition: int) -> int:
        """The partition's last stable offset: the first offset of its oldest open
        transaction, bounded by the high watermark (the high watermark when none is
        open).  A read_committed consumer reads below it.
        Raises UnknownTopicOrPartitionError."""
        part = self._partition(topic, partition)
        with part.log.lock:
            return _stable_offset(part, part.log.log_end_offset)

    def stable_offsets(self, topic: str, partition: int) -> tuple[int, int, int]:
        """``(log_start_offset, high_watermark, last_stable_offset)`` of a partition,
        consistent with each other, without reading it (a read_committed consumer's poll
        at the LSO has nothing to read).  Raises UnknownTopicOrPartitionError."""
        part = self._partition(topic, partition)
        log = part.log
        with log.lock:
            hw = log.log_end_offset
            return log.log_start_offset, hw, _stable_offset(part, hw)

    def write_txn_markers(self, markers: Iterable) -> dict[tuple[str, int, int], ProduceResult]:
        """WriteTxnMarkers: end transactions on their partitions, as the transaction
        coordinator asks a partition leader.

        Each marker is ``(producer_id, producer_epoch, coordinator_epoch, commit,
        [(topic, partition), ...])``.  On each partition a COMMIT (``commit`` true) or
        ABORT control batch is appended, the producer's open transaction there is
        closed (an ABORT adds an entry to the segment's ``.txnindex``) and the last
        stable offset moves on.  A marker for a producer with no open transaction on the
        partition is written all the same, as Kafka writes it.  Internal topics
        (``__consumer_offsets``) take markers too.

        Returns
        -------
        dict
            ``(topic, partition, producer_id)`` -> :class:`ProduceResult` (the marker's
            offset), with INVALID_PRODUCER_EPOCH for a marker older than the producer's
            epoch, TRANSACTION_COORDINATOR_FENCED for one from an older coordinator
            epoch than the partition's last marker, UNKNOWN_TOPIC_OR_PARTITION, or a
            storage error.  Nothing is appended for a rejected marker.
        """
        out: dict[tuple[str, int, int], ProduceResult] = {}
        for producer_id, producer_epoch, coordinator_epoch, commit, partitions in markers:
            for topic, partition in partitions:
                out[(topic, partition, producer_id)] = self._write_marker(
                    topic, partition, producer_id, producer_epoch, coordinator_epoch, bool(commit))
        return out

    def _write_marker(self, topic: str, partition: int, producer_id: int, producer_epoch: int,
                      coordinator_epoch: int, commit: bool) -> ProduceResult:
        try:
            self._check_open()
            part = self._partition(topic, partition)
            if self.replication is not None:
                # A clustered broker writes markers as their partition's leader only,
                # under min.insync.replicas as an acks=all append (Kafka's).
                refused = self.replication.check_produce(topic, partition, -1)
                if refused is not None:
                    raise refused
            ctype = CONTROL_COMMIT if commit else CONTROL_ABORT
            batch = _core.RecordBatch(build_control_batch(ctype, producer_id, producer_epoch, coordinator_epoch,
                                                          timestamp_ms=self.clock()))
            log = part.log
            with part.lock:
                psm = part.producers
                psm.check_marker(producer_id, producer_epoch, coordinator_epoch)
                with log.lock:   # marker, state and .txnindex entry in one hold (see Log)
                    info = self._log_append(part, [batch])
                    offset = info.base_offset
                    ts = info.log_append_time if info.log_append_time >= 0 else batch.max_timestamp
                    done = psm.update(producer_id, producer_epoch, -1, 1, 0, offset, offset, ts,
                                      is_transactional=True, is_control=True, control_type=ctype,
                                      coordinator_epoch=coordinator_epoch)
                    if done is not None and done.is_aborted:
                        log.append_aborted_txn(AbortedTxn(producer_id, done.first_offset, offset,
                                                          psm.stable_offset_after(done)))
                    leo = log.log_end_offset
            self.notify_high_watermark(topic, partition, leo)
            return ProduceResult(0, offset, info.log_append_time, log.log_start_offset)
        except LogClosedError:
            return ProduceResult.failed(UnknownTopicOrPartitionError(f"{topic}-{partition} was deleted"))
        except PylogError as exc:
            return ProduceResult.failed(exc)

    def log_offsets(self, topic: str, partition: int) -> tuple[int, int]:
        """``(log_start_offset, high_watermark)`` of a partition, without reading it: a
        fetch at the high watermark has nothing to read (a caught-up consumer's poll).
        Raises UnknownTopicOrPartitionError."""
        log = self._partition(topic, partition).log
        if self.replication is not None:
            return log.log_start_offset, self.replication.high_watermark(topic, partition)
        return log.log_start_offset, log.log_end_offset

    def high_watermark(self, topic: str, partition: int) -> int:
        """Raises UnknownTopicOrPartitionError."""
        if self.replication is not None:
            self._partition(topic, partition)
            return self.replication.high_watermark(topic, partition)
        return self._partition(topic, partition).log.log_end_offset

    def log_start_offset(self, topic: str, partition: int) -> int:
        """Raises UnknownTopicOrPartitionError."""
        return self._partition(topic, partition).log.log_start_offset

    def list_offsets(self, topic: str, partition: int, timestamp: int, *,
                     isolation_level: int = READ_UNCOMMITTED) -> ListOffsetsResult:
        """ListOffsets: ``-1`` latest (high watermark; the last stable offset with
        ``isolation_level=READ_COMMITTED``), ``-2`` earliest, ``-3`` the record with the
        largest timestamp, else the first record whose timestamp is >= it.  With
        READ_COMMITTED a record found at or past the last stable offset is not
        answered (offset -1), as Kafka answers.  A clustered broker answers only as the
        partition's leader (else NOT_LEADER_OR_FOLLOWER), with its leader epoch, and
        never past the high watermark: what a consumer can fetch."""
        try:
            part = self._partition(topic, partition)
            if isinstance(timestamp, bool) or not isinstance(timestamp, int):
                raise InvalidRequestError(f"timestamp must be an int, not {type(timestamp).__name__}")
            log = part.log
            epoch = self._current_leader_epoch(part)
            if timestamp == LATEST_TIMESTAMP:
                if isolation_level == READ_COMMITTED:
                    with log.lock:
                        return ListOffsetsResult(0, -1, _stable_offset(part, self._fetchable_end(part)), epoch)
                return ListOffsetsResult(0, -1, self._fetchable_end(part), epoch)
            if timestamp == EARLIEST_TIMESTAMP:
                return ListOffsetsResult(0, -1, log.log_start_offset, epoch)
            if timestamp < 0 and timestamp != MAX_TIMESTAMP:
                raise InvalidRequestError(f"timestamp {timestamp} is neither >= 0 nor -1, -2 or -3")
            hit = log.offset_for_timestamp(timestamp)
            if hit is not None and isolation_level == READ_COMMITTED and hit.offset >= self.last_stable_offset(
                    topic, partition):
                hit = None   # not fetchable yet by a read_committed consumer (Kafka filters it too)
            if hit is not None and self.replication is not None and hit.offset >= self._fetchable_end(part):
                hit = None   # past the high watermark: not fetchable yet
            if hit is None:
                return ListOffsetsResult(0, -1, -1, -1)
            return ListOffsetsResult(0, hit.timestamp, hit.offset, epoch)
        except LogClosedError:
            return ListOffsetsResult(UnknownTopicOrPartitionError.error_code,
                                     error_message=f"{topic}-{partition} was deleted")
        except PylogError as exc:
            return ListOffsetsResult(exc.error_code, error_message=str(exc))

    def offset_for_leader_epoch(self, topic: str, partition: int, leader_epoch: int,
                                current_leader_epoch: int = -1) -> EpochEndOffset:
        """OffsetForLeaderEpoch of one partition: where ``leader_epoch`` ended in this log.

        A consumer asks it after a leader change to check that the position it holds (an
        offset and the epoch of the record before it) is still in the log: the answer is
        the largest epoch at or below ``leader_epoch`` and the first offset of the epoch
        after it, or the log end offset when that is the partition's current epoch.

        As a Kafka leader does, the partition's current epoch counts as begun at the log
        end offset even before a record was written in it.  An epoch older than every one
        known gets the start of the oldest known (its records are gone); one newer than the
        current epoch, or -1, gets epoch -1 and offset -1.

        Parameters
        ----------
        current_leader_epoch : int
            The leader epoch the client believes current; -1 skips the check.  Older than
            the partition's gives FENCED_LEADER_EPOCH, newer UNKNOWN_LEADER_EPOCH.

        Never raises for a per-partition problem: the result carries Kafka's error code.
        """
        try:
            for name, value in (("leader_epoch", leader_epoch), ("current_leader_epoch", current_leader_epoch)):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise InvalidRequestError(f"{name} must be an int, not {type(value).__name__}")
            part = self._partition(topic, partition)
            current = self._current_leader_epoch(part)
            if current_leader_epoch >= 0 and current_leader_epoch != current:
                older = current_leader_epoch < current
                return EpochEndOffset(
                    _FENCED_LEADER_EPOCH if older else _UNKNOWN_LEADER_EPOCH,
                    error_message=f"{topic}-{partition} is in leader epoch {current}, the request's is "
                                  f"{'older' if older else 'newer'} ({current_leader_epoch})")
            log = part.log
            if leader_epoch < 0 or leader_epoch > current:
                return EpochEndOffset(0, -1, -1)
            with log.lock:
                latest = log.latest_epoch
                if latest >= current:
                    return EpochEndOffset(0, *log.end_offset_for_epoch(leader_epoch))
                # No record of the current epoch yet.  A Kafka leader enters its epoch in
                # the cache when it takes over; here the epoch reaches the cache with its
                # first append, so answer as if it began at the log end offset.
                leo = log.log_end_offset
                if leader_epoch == current:
                    return EpochEndOffset(0, current, leo)
                epoch, end = log.end_offset_for_epoch(leader_epoch)
                if end < 0:   # newer than every known epoch: it lasted until the current one
                    epoch, end = (latest if latest >= 0 else leader_epoch), leo
                return EpochEndOffset(0, epoch, end)
        except LogClosedError:
            return EpochEndOffset(UnknownTopicOrPartitionError.error_code,
                                  error_message=f"{topic}-{partition} was deleted")
        except PylogError as exc:
            return EpochEndOffset(exc.error_code, error_message=str(exc))

    def _current_leader_epoch(self, part: _Partition) -> int:
        """The partition's leader epoch: the topic's on a single node; on a clustered
        broker the replication state's, which must lead the partition.

        Raises
        ------
        NotLeaderError
            A clustered broker that does not lead the partition.
        """
        if self.replication is None:
            return part.topic.leader_epoch
        refused = self.replication.check_fetch(part.topic.name, part.index)
        if refused is not None:
            raise refused
        return self.replication.leader_epoch(part.topic.name, part.index)

    def _fetchable_end(self, part: _Partition) -> int:
        """Where a consumer's reads of the partition stop: the log end offset on a
        single node, the high watermark on a clustered broker."""
        if self.replication is None:
            return part.log.log_end_offset
        return self.replication.high_watermark(part.topic.name, part.index)

    def delete_records(self, topic: str, partition: int, offset: int) -> int:
        """Advance the log start offset to ``offset`` (-1: the high watermark); returns the
        new log start offset (DeleteRecords' low watermark).

        Raises
        ------
        UnknownTopicOrPartitionError, OffsetOutOfRangeError (beyond the high watermark),
        InvalidTopicError (an internal topic), PolicyViolationError (cleanup.policy
        without delete)
        """
        part = self._partition(topic, partition)
        if part.topic.internal:
            raise InvalidTopicError(f"records of internal topic {topic!r} cannot be deleted")
        if "delete" not in part.log.config.cleanup_policy:
            # As Kafka: only a log whose cleanup.policy deletes gives records up on request.
            raise PolicyViolationError(f"records of {topic}-{partition} cannot be deleted: its "
                                       f"cleanup.policy is {part.log.config.cleanup_policy or 'empty'!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < -1:
            raise OffsetOutOfRangeError(f"cannot delete records before offset {offset!r}")
        with part.lock:
            target = part.log.log_end_offset if offset == -1 else offset
            low = part.log.delete_records_before(target)
            part.producers.delete_snapshots_below(low)
            return low

    # ------------------------------------------------------------------ producer ids

    def init_producer_id(self, transactional_id: str | None = None, transaction_timeout_ms: int = 60000, *,
                         producer_id: int = -1, producer_epoch: int = -1) -> InitProducerIdResult:
        """InitProducerId for an idempotent producer: a new producer id at epoch 0, or,
        given the id and epoch it had (KIP-360), the same id at the next epoch (a new id
        when the epoch is exhausted).  Ids are never reused, across restarts too."""
        try:
            self._check_open()
            if transactional_id is not None:
                pid, epoch = self.transactions.init_producer_id(transactional_id, transaction_timeout_ms,
                                                                producer_id, producer_epoch)
                return InitProducerIdResult(0, pid, epoch)
            with self._lock:
                if producer_id >= 0:
                    if producer_id >= self._next_pid or producer_epoch < 0:
                        raise InvalidRequestError(
                            f"producer id {producer_id} epoch {producer_epoch} was not issued by this broker")
                    if producer_epoch < 32766:
                        return InitProducerIdResult(0, producer_id, producer_epoch + 1)
                return InitProducerIdResult(0, self._allocate_producer_id(), 0)
        except PylogError as exc:
            return InitProducerIdResult(exc.error_code, error_message=str(exc))

    def _allocate_producer_id(self) -> int:
        """A producer id never handed out before (its block is durable first; clustered,
        claimed in ZooKeeper, so no two brokers hand out the same id)."""
        if self.replication is not None:
            return self.replication.allocate_producer_id()
        self._ensure_pids_checked()
        with self._lock:
            if self._next_pid >= self._pid_block_end:
                self._pid_block_end = self._next_pid + self.config.producer_id_block_size
                try:
                    self._commit_registry()
                except BaseException:
                    self._pid_block_end = self._next_pid
                    raise
            pid = self._next_pid
            self._next_pid += 1
            return pid

    # ------------------------------------------------------------------ transactions

    def find_transaction_coordinator(self, transactional_id: str) -> int:
        """The ``__transaction_state`` partition of ``transactional_id`` (this broker
        coordinates them all); the topic is created on first use.
        Raises InvalidRequestError for an empty id."""
        return self.transactions.partition_for(transactional_id)

    def add_partitions_to_txn(self, transactional_id: str, producer_id: int, producer_epoch: int,
                              partitions: Iterable[tuple[str, int]], *,
                              verify_only: bool = False) -> dict[tuple[str, int], int]:
        """AddPartitionsToTxn: ``(topic, partition)`` -> error code (see
        :meth:`TransactionCoordinator.add_partitions`)."""
        return self.transactions.add_partitions(transactional_id, producer_id, producer_epoch, partitions,
                                                verify_only=verify_only)

    def add_offsets_to_txn(self, transactional_id: str, producer_id: int, producer_epoch: int,
                           group_id: str) -> int:
        """AddOffsetsToTxn: adds the group's ``__consumer_offsets`` partition to the
        transaction; an error code."""
        self.ensure_offsets_topic()
        # The count the group coordinator hashes over (a clustered broker's is the
        # cluster topic's, not this broker's offsets.topic.num.partitions).
        return self.transactions.add_offsets(transactional_id, producer_id, producer_epoch, group_id,
                                             self.groups.num_partitions)

    def txn_offset_commit(self, transactional_id: str, group_id: str, producer_id: int, producer_epoch: int,
                          offsets: Mapping[str, Mapping[int, Any]], *, member_id: str | None = None,
                          generation_id: int = -1, group_instance_id: str | None = None
                          ) -> dict[str, dict[int, int]]:
        """TxnOffsetCommit: topic -> partition -> error code.  The offsets become the
        group's committed offsets when the transaction commits, and are dropped if it
        aborts.  The group's offsets partition must have been added to the transaction
        (AddOffsetsToTxn) first: INVALID_TXN_STATE otherwise (KIP-890 verification,
        here unless :attr:`verify_txn_offsets` says the caller did it)."""
        known: dict[str, dict[int, Any]] = {}
        out: dict[str, dict[int, int]] = {}
        for topic, p, v in iter_commit_offsets(offsets):
            t = self._topics.get(topic) if isinstance(topic, str) else None
            if t is None or t.internal or not isinstance(p, int) or isinstance(p, bool) \
                    or not 0 <= p < len(t.partitions):
                out.setdefault(topic, {})[p] = UnknownTopicOrPartitionError.error_code
            else:
                off = v.offset if isinstance(v, CommitOffset) else v
                if isinstance(off, bool) or not isinstance(off, int) or off < 0:
                    raise InvalidRequestError(f"committed offset of {topic}-{p} must be an int >= 0, got {off!r}")
                known.setdefault(topic, {})[p] = v
        if not known:
            return out
        code = 0
        if isinstance(group_id, str) and group_id and self.verify_txn_offsets:
            n = self.groups.num_partitions
            tp = (CONSUMER_OFFSETS_TOPIC, _group_offsets.partition_for_group(group_id, n))
            code = self.transactions.add_partitions(transactional_id, producer_id, producer_epoch, [tp],
                                                    verify_only=True)[tp]
        if code:
            res = {t: {p: code for p in ps} for t, ps in known.items()}
        else:
            res = self.groups.txn_commit_offsets(group_id, producer_id, producer_epoch, known,
                                                 generation_id=generation_id, member_id=member_id or "",
                                                 group_instance_id=group_instance_id)
        for topic, parts in res.items():
            out.setdefault(topic, {}).update(parts)
        return out

    def end_txn(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool) -> int:
        """EndTxn: commit or abort the producer's ongoing transaction (markers on every
        partition of it, offsets made visible or dropped); an error code."""
        return self.transactions.end_txn(transactional_id, producer_id, producer_epoch, bool(commit))

    def describe_transactions(self, transactional_ids: Iterable[str]) -> list[TransactionDescription]:
        """DescribeTransactions: one description per id, TRANSACTIONAL_ID_NOT_FOUND for
        an unknown one."""
        return self.transactions.describe(transactional_ids)

    def list_transactions(self, state_filters: Iterable[str] = (), producer_id_filters: Iterable[int] = (),
                          *, duration_filter_ms: int = -1) -> ListTransactionsResult:
        """ListTransactions, filtered by Kafka's state names, by producer ids and (v1,
        KIP-994) to transactions running at least ``duration_filter_ms``."""
        return self.transactions.list(state_filters, producer_id_filters, duration_filter_ms=duration_filter_ms)

    def write_txn_markers_and_complete(self, markers: Sequence[tuple[int, int, int, bool, Sequence[tuple[str, int]]]]
                                       ) -> dict[tuple[str, int], int]:
        """:meth:`write_txn_markers`, then the group coordinator settles the
        TxnOffsetCommits of every ``__consumer_offsets`` partition that got its marker.
        ``(topic, partition)`` -> error code of the partitions that failed."""
        failed: dict[tuple[str, int], int] = {}
        res = self.write_txn_markers([(pid, epoch, ce, commit, list(parts))
                                      for pid, epoch, ce, commit, parts in markers])
        for (topic, partition, _pid), r in res.items():
            if r.error_code:
                failed[(topic, partition)] = r.error_code
        for pid, _epoch, _ce, commit, parts in markers:
            offsets_parts = [p for t, p in parts if t == CONSUMER_OFFSETS_TOPIC and (t, p) not in failed]
            if offsets_parts:
                self.groups.complete_txn(pid, offsets_parts, commit)
        return failed

    def describe_producers(self, topic: str, partition: int) -> list[ProducerInfo]:
        """Idempotent producers with state on a partition (DescribeProducers).
        Raises UnknownTopicOrPartitionError."""
        part = self._partition(topic, partition)
        with part.lock:
            return [ProducerInfo(e.producer_id, e.producer_epoch, e.last_seq, e.last_timestamp,
                                 e.coordinator_epoch, e.current_txn_first_offset)
                    for e in part.producers.producers.values()]

    # ------------------------------------------------------------------ groups

    def commit_offsets(self, group_id: str, offsets: Mapping[str, Mapping[int, Any]], *,
                       generation_id: int = -1, member_id: str = "", group_instance_id: str | None = None,
                       retention_time_ms: int = -1) -> dict[str, dict[int, int]]:
        """OffsetCommit: topic -> partition -> error code.  Partitions that do not exist get
        UNKNOWN_TOPIC_OR_PARTITION and are not committed; the rest go to the group
        coordinator (member and generation checks, ``__consumer_offsets`` append)."""
        known: dict[str, dict[int, Any]] = {}
        out: dict[str, dict[int, int]] = {}
        unknown = UnknownTopicOrPartitionError.error_code
        for topic, p, v in iter_commit_offsets(offsets):
            t = self._topics.get(topic) if isinstance(topic, str) else None
            if t is None or t.internal or not isinstance(p, int) or isinstance(p, bool) \
                    or not 0 <= p < len(t.partitions):
                out.setdefault(topic, {})[p] = unknown
            else:
                off = v.offset if isinstance(v, CommitOffset) else v
                if isinstance(off, bool) or not isinstance(off, int) or off < 0:
                    raise InvalidRequestError(f"committed offset of {topic}-{p} must be an int >= 0, got {off!r}")
                known.setdefault(topic, {})[p] = v
        if known:
            res = self.groups.commit_offsets(group_id, known, generation_id=generation_id, member_id=member_id,
                                             group_instance_id=group_instance_id,
                                             retention_time_ms=retention_time_ms)
            for topic, parts in res.items():
                out.setdefault(topic, {}).update(parts)
        return out

    def fetch_offsets(self, group_id: str, partitions: Mapping[str, Iterable[int]] | None = None, *,
                      require_stable: bool = False) -> OffsetFetchResult:
        """OffsetFetch (see :meth:`GroupCoordinator.fetch_offsets`)."""
        return self.groups.fetch_offsets(group_id, partitions, require_stable=require_stable)

    # ------------------------------------------------------------------ waiting for data

    def add_append_listener(self, fn: Callable[[str, int, int], object]) -> None:
        """Call ``fn(topic, partition, high_watermark)`` after every append, in the
        appending thread, outside every broker lock.  It must be quick and must not raise
        (an asyncio server uses it to wake fetches waiting for data, through
        ``loop.call_soon_threadsafe``)."""
        with self._lock:
            self._listeners = self._listeners + [fn]

    def remove_append_listener(self, fn: Callable[[str, int, int], object]) -> None:
        with self._lock:
            self._listeners = [f for f in self._listeners if f is not fn]

    def notify_high_watermark(self, topic: str, partition: int, hw: int) -> None:
        """A partition's high watermark moved to ``hw`` (an append here, or a clustered
        broker's replica manager after its ISR caught up): wake the fetches waiting for
        data (:meth:`wait_for_data`) and call the append listeners.  Any thread."""
        if self._data_waiters:
            with self._data_cond:
                self._data_cond.notify_all()
        for fn in self._listeners:
            try:
                fn(topic, partition, hw)
            except Exception:  # noqa: BLE001 - a listener must not break a produce
                _log.exception("append listener %r failed", fn)

    def wait_for_data(self, positions: Mapping[tuple[str, int], int], timeout: float | None,
                      stop: Callable[[], bool] | None = None) -> bool:
        """Block until a partition's high watermark passes its position in ``positions``
        (True), ``stop()`` is true, or ``timeout`` seconds pass (False).  For a fetch's
        ``max_wait_ms`` in a thread."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def ready() -> bool:
            for (topic, p), off in positions.items():
                t = self._topics.get(topic)
                if t is not None and p < len(t.partitions) and t.partitions[p].log.log_end_offset > off:
                    return True
            return False

        # ``stop`` is the caller's code and takes its own locks (a consumer's asks the group
        # coordinator, whose lock is held while it appends to __consumer_offsets, and that
        # append's _notify takes _data_cond): it is never called under _data_cond, or the
        # two locks are taken in both orders and the threads deadlock.  A wake_waiters()
        # between stop() and wait() is not lost: it moved _wake_seq.
        with self._data_cond:
            self._data_waiters += 1
        try:
            while True:
                with self._data_cond:
                    seq = self._wake_seq
                if self._closed or (stop is not None and stop()):
                    return False
                with self._data_cond:
                    if ready():
                        return True
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    if seq == self._wake_seq:
                        self._data_cond.wait(remaining)
        finally:
            with self._data_cond:
                self._data_waiters -= 1

    def wake_waiters(self) -> None:
        """Wake every :meth:`wait_for_data` caller (they re-check their ``stop``) and call
        every wake listener: something other than data changed (a group began to
        rebalance, a consumer was told to stop waiting)."""
        with self._data_cond:
            self._wake_seq += 1
            self._data_cond.notify_all()
        for fn in self._wake_listeners:
            try:
                fn()
            except Exception:  # noqa: BLE001 - a listener must not break the caller
                _log.exception("wake listener %r failed", fn)

    def add_wake_listener(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` whenever :meth:`wake_waiters` runs (asyncio consumers use it, with
        ``loop.call_soon_threadsafe``, to re-check their group state).  Called in the
        waking thread; must be quick and must not raise."""
        with self._lock:
            self._wake_listeners = self._wake_listeners + [fn]

    def remove_wake_listener(self, fn: Callable[[], object]) -> None:
        with self._lock:
            self._wake_listeners = [f for f in self._wake_listeners if f is not fn]

    # ------------------------------------------------------------------ maintenance

    def tick(self, now_ms: int | None = None) -> int:
        """Do the due background work at ``now_ms`` (default: the clock): group timeouts,
        flush policies, retention, checkpoints and producer snapshots.  Returns when the
        next work is due (ms)."""
        if self._closed:
            return LONG_MAX
        now = self.clock() if now_ms is None else now_ms
        group_next = self.groups.tick(now)
        txn_next = self.transactions.tick(now)
        if self._data_waiters or self._wake_listeners:
            # Group timeouts may have fired: let waiting consumers re-check their state.
            self.wake_waiters()
        if now >= self._next_flush:
            self.logs.maybe_flush(now)
            self._next_flush = now + self.config.log_flush_scheduler_interval_ms
        if now >= self._next_retention:
            for (topic, p), res in self.logs.apply_retention(now).items():
                t = self._topics.get(topic)
                if t is not None and p < len(t.partitions):
                    part = t.partitions[p]
                    with part.lock:
                        part.producers.delete_snapshots_below(res.log_start_offset)
            self._next_retention = now + self.config.log_retention_check_interval_ms
        if self.cleaner is not None and not self.cleaner.running and now >= self._next_clean:
            # Without the background thread (background=False) compaction runs from here.
            self.cleaner.clean_once(now)
            self._next_clean = now + self.config.log_cleaner_backoff_ms
        if now >= self._next_pid_expiry:
            self._expire_producers(now)
            self._next_pid_expiry = now + self.config.producer_id_expiration_check_interval_ms
        self._snapshot_rolled()
        if now >= self._next_checkpoint:
            self.logs.checkpoint()
            self._next_checkpoint = now + self.config.log_flush_offset_checkpoint_interval_ms
        nxt = min(self._next_flush, self._next_retention, self._next_checkpoint,
                  self._next_pid_expiry, txn_next)
        if self.cleaner is not None and not self.cleaner.running:
            # A cleaner in its own thread keeps its own time: _next_clean, not advanced
            # then, would make every tick after the first backoff due at once, and the
            # background thread tick every millisecond (#17).
            nxt = min(nxt, self._next_clean)
        if group_next is not None:
            nxt = min(nxt, group_next)
        return nxt

    def _expire_producers(self, now: int) -> None:
        for topic in list(self._topics.values()):
            for part in list(topic.partitions):
                if not part.loaded:
                    continue
                with part.lock:
                    gone = part.producers.remove_expired(now, self.config.producer_id_expiration_ms)
                if gone:
                    _log.info("%s-%d: expired idle producers %s", topic.name, part.index, gone)

    def _snapshot_rolled(self) -> None:
        """Snapshot producer state of partitions whose log rolled (Kafka snapshots on
        roll), so recovery after a crash replays at most about a segment.  Only the
        partitions a roll or a truncation queued since the last pass are looked at
        (_Partition.on_roll): a pass costs nothing per idle partition."""
        rolled = self._rolled
        done = set()
        while rolled:
            part = rolled.pop()
            if part in done or not part.loaded:
                continue
            done.add(part)
            log = part.log
            if log.closed or log.active_segment.base_offset == part.snapshot_segment:
                continue
            with part.lock:
                if log.closed:
                    continue
                part.producers.map_end_offset = log.log_end_offset
                if part.producers.producers:
                    part.producers.take_snapshot()
                    part.producers.delete_snapshots_below(log.log_start_offset)
                part.snapshot_segment = log.active_segment.base_offset

    def _background(self) -> None:
        while not self._bg_stop.is_set():
            try:
                nxt = self.tick()
            except Exception:  # noqa: BLE001 - keep the maintenance thread alive
                _log.exception("broker background work failed")
                nxt = self.clock() + 1000
            delay = (nxt - self.clock()) / 1000.0
            # Group deadlines can move earlier at any request: re-check at least every 200 ms.
            self._bg_wake.wait(min(max(delay, 0.001), 0.2))
            self._bg_wake.clear()

    # ------------------------------------------------------------------ close

    def close(self) -> None:
        """Stop the background thread, snapshot producer state, flush every log and mark a
        clean shutdown.  Idempotent.  (The client side closes its producers and consumers
        first: the handle ``pylog.open`` returns does, then closes this broker.)"""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._bg_stop.set()
        self._bg_wake.set()
        if self._bg_thread is not None and self._bg_thread is not threading.current_thread():
            self._bg_thread.join()
        loader = self._loader_thread
        if loader is not None and loader.ident is None:
            self._loaded.set()        # never started (start_loading): nothing to wait for
        elif loader is not None and loader is not threading.current_thread():
            loader.join()
        if self.cleaner is not None:
            self.cleaner.stop()
        self.wake_waiters()
        # Producer snapshots are written without an fsync each; the log manager's close
        # makes them durable with its logs (one syncfs) and then calls back to rename
        # them into place (its docstring says what a kill at each step leaves).  A
        # partition whose snapshot at its log end offset exists already (nothing appended
        # since it was written, e.g. untouched since the open) writes none.
        pending: list[tuple[str, str, str]] = []
        for topic in list(self._topics.values()):
            for part in topic.partitions:
                if not part.loaded:   # unchanged since the open: its snapshot stands
                    continue
                with part.lock:
                    if part.log.closed:
                        continue
                    psm = part.producers
                    psm.map_end_offset = part.log.log_end_offset
                    if not psm.producers or os.path.exists(psm.snapshot_path(psm.map_end_offset)):
                        continue
                    name = f"{topic.name}-{part.index}"
                    try:
                        pending.append((name, *psm.write_snapshot_tmp(sync=False)))
                    except OSError as exc:
                        _log.error("%s: producer snapshot failed: %s", name, exc)

        def rename_snapshots() -> None:
            for name, tmp, path in pending:
                try:
                    os.replace(tmp, path)
                except OSError as exc:
                    _log.error("%s: producer snapshot failed: %s", name, exc)

        self.logs.close(after_sync=rename_snapshots if pending else None)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Broker {self.data_dir} {len(self._topics)} topics{' closed' if self._closed else ''}>"


def _scan_batches(log, name: str, start: int | None = None, what: str = "replay") -> Iterator:
    """``(batch, crc_ok)`` for the batches of ``log`` from ``start`` (default: the log
    start offset), headers checked and CRC computed, for replaying a log at startup.

    Where a read or a batch header fails (damage on disk), the batches before the damage
    are still yielded (the log is re-read batch by batch to find it), a WARN names the
    offsets passed over, and the scan goes on at the next segment (the first place a
    batch is known to start), or ends at the active segment.  A batch whose CRC fails is
    yielded (the caller reports it) but its header is not trusted to say where the next
    one starts."""
    big = 8 * 1024 * 1024
    chunk = big
    offset = log.log_start_offset if start is None else start
    while offset < log.log_end_offset:
        at = offset
        reason = None
        try:
            rr = log.read(offset, max_bytes=chunk)
        except OffsetOutOfRangeError:
            return
        except PylogError as exc:
            if chunk > 1:
                chunk = 1         # at least one whole batch per read: find the damaged one
                continue
            rr, reason = None, str(exc)
        if rr is not None:
            it = _core.iter_batches(rr.records, check_crc=False)
            try:
                for b in it:
                    ok = b.crc_matches()
                    if ok:
                        offset = max(offset, b.next_offset)
                    yield b, ok
            except PylogError as exc:
                reason = str(exc)
            else:
                if rr.size == 0:
                    reason = "no whole batch can be read there"
                elif it.position < rr.size:
                    reason = "a batch length runs past the data read"
                else:
                    offset = max(offset, rr.next_offset)
                    if offset > at:
                        continue
                    reason = "the read did not advance"
        resume = next((seg.base_offset for seg in log.segments if seg.base_offset > offset),
                      log.log_end_offset)
        _log.warning("%s: %s skipped offsets %d..%d: the batch at %d cannot be read (%s)",
                     name, what, offset, resume - 1, offset, reason)
        offset = resume
        chunk = big


def _stable_offset(part: _Partition, high_watermark: int) -> int:
    """The LSO: the oldest open transaction's first offset, bounded by the high
    watermark, and by the log start offset from below (DeleteRecords or retention may
    have removed the transaction's first records, as in Kafka).  Exact under the log's
    lock; a hint without it."""
    first = part.producers.first_unstable_offset()
    if first is None or first >= high_watermark:
        return high_watermark
    return max(first, part.log.log_start_offset)


def _apply_log_config(log, config) -> None:
    """Give a live log its topic's new settings (a deleted, closed log is skipped)."""
    with log.lock:
        if not log.closed:
            log.update_config(config)


def _null_key_error(topic: str, partition: int, indexes: list[int]) -> InvalidRecordError:
    """Kafka's INVALID_RECORD for records without a key on a compacted topic: one record
    error per record (``record_errors``), the message naming the first three."""
    one = f"compacted topic partition {topic}-{partition} cannot accept a record without a key"
    shown = ", ".join(str(i) for i in indexes[:3]) + (", ..." if len(indexes) > 3 else "")
    exc = InvalidRecordError(f"{len(indexes)} record(s) of the batch rejected (batch index {shown}): {one}; "
                             "give every record of a cleanup.policy=compact topic a key")
    exc.record_errors = [(i, one) for i in indexes]   # type: ignore[attr-defined]
    return exc


def _scratch_producer_state(psm: ProducerStateManager, views: list) -> ProducerStateManager:
    """A copy of ``psm`` deep enough to check and update the producers of ``views`` on it
    without touching ``psm`` (the producer state after a rejected append is the one
    before it)."""
    scratch = copy.copy(psm)
    scratch.producers = {pid: copy.deepcopy(psm.producers[pid])
                         for pid in {b.producer_id for b in views} if pid in psm.producers}
    scratch.ongoing = dict(psm.ongoing)
    return scratch


def _storage_failure(part: _Partition, exc: BaseException) -> None:
    """Log a partition's first failing append (see :meth:`Broker._log_append`)."""
    if part.storage_failed:
        return
    part.storage_failed = True
    code = next((e.errno for e in (exc, exc.__cause__, exc.__context__)
                 if isinstance(e, OSError) and e.errno), None)
    name = f"errno {_errno.errorcode.get(code, code)}, " if code else ""
    _log.error("%s-%d: appends to %s fail (%s%s); producers get KAFKA_STORAGE_ERROR until it clears "
               "(free disk space or fix the device); logged once", part.topic.name, part.index,
               part.log.path, name, exc)


def _continues(a, b) -> bool:
    """Whether batch b directly follows batch a of the same idempotent producer (or both
    have no producer), so they can be appended together (a transactional producer's
    batches too: the first opens the transaction, the others are in it)."""
    if (a.attributes | b.attributes) & _ATTR_CONTROL or (a.attributes ^ b.attributes) & _ATTR_TRANSACTIONAL:
        return False
    if a.producer_id != b.producer_id:
        return False
    if a.producer_id < 0:
        return True
    if a.producer_epoch != b.producer_epoch or a.base_sequence < 0 or b.base_sequence < 0:
        return False
    return b.base_sequence == _seq_next(_last_seq(a.base_sequence, a.last_offset_delta))


def _recompress(b, codec: int) -> bytes:
    """The batch with its records section in ``codec`` (the topic's compression.type),
    header fields kept, CRC recomputed.  Batch-level work: the records are not decoded."""
    section = b.records_buffer
    body = _codecs.compress(codec, section) if codec else bytes(section)
    raw = memoryview(b)
    header = bytearray(raw[:61])
    attrs = (b.attributes & ~0x07) | codec
    struct.pack_into(">h", header, 21, attrs)
    struct.pack_into(">i", header, 8, 61 - 12 + len(body))
    crc = _core.crc32c(body, _core.crc32c(memoryview(header)[21:]))
    struct.pack_into(">I", header, 17, crc)
    return bytes(header) + body
