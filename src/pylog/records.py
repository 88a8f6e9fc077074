"""Kafka record batches (v2, magic 2) as Python sees them.

Encode with :class:`RecordBatchBuilder` (per record with ``append``, in bulk with
``append_many`` / ``append_columns``), decode with :class:`RecordBatch` (a zero-copy view:
header fields, ``validate()``, iteration of :class:`Record`, ``columns()`` for numpy
columns), walk a run of batches with :func:`iter_batches`, and drop records for the log
cleaner with :func:`filter_batch`.  Transaction markers are control batches:
:func:`build_control_batch` writes one and :class:`ControlRecord` reads one.

The byte layout is Kafka's (see ARCHITECTURE.md); batches built here decode in Kafka's
clients and theirs decode here, checked against kafka-python and aiokafka in the tests.
The per-record work is C (``pylog._core``); this module adds the Python-level helpers.

Thread safety: a :class:`RecordBatch` and its columns are immutable views and may be
shared between threads; a :class:`RecordBatchBuilder` is used by one thread at a time.
"""

from __future__ import annotations

import enum
import struct

from pylog import _core
from pylog._value import FrozenValue
from pylog.codecs import CODEC_NAMES, DEFAULT_MAX_UNCOMPRESSED
from pylog.errors import CorruptRecordError

__all__ = [
    "Record",
    "RecordBatch",
    "RecordBatchBuilder",
    "RecordColumns",
    "ControlRecord",
    "ControlRecordType",
    "build_control_batch",
    "filter_batch",
    "iter_batches",
    "CODEC_NAMES",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_UNCOMPRESSED",
    "BATCH_HEADER_SIZE",
]

Record = _core.Record
RecordBatch = _core.RecordBatch
RecordBatchBuilder = _core.RecordBatchBuilder
RecordColumns = _core.RecordColumns
iter_batches = _core.iter_batches
filter_batch = _core.filter_batch

DEFAULT_MAX_BATCH_SIZE = _core.DEFAULT_MAX_BATCH_SIZE
BATCH_HEADER_SIZE = 61


class ControlRecordType(enum.IntEnum):
    """The type in a control record's key (Kafka's ``ControlRecordType``)."""

    ABORT = 0
    COMMIT = 1
    LEADER_CHANGE = 2
    SNAPSHOT_HEADER = 3
    SNAPSHOT_FOOTER = 4
    KRAFT_VERSION = 5
    KRAFT_VOTERS = 6


_KEY = struct.Struct(">hh")          # version, type
_MARKER = struct.Struct(">hi")       # version, coordinator epoch
CONTROL_KEY_VERSION = 0
END_TXN_MARKER_VERSION = 0


class ControlRecord(FrozenValue):
    """A control record: a transaction marker (ABORT / COMMIT) or a KRaft control record.

    Attributes
    ----------
    type : ControlRecordType or int
        An unknown type is kept as its int.
    version : int
        The key's version (0).
    coordinator_epoch : int or None
        For ABORT / COMMIT markers, the transaction coordinator's epoch.
    """

    __slots__ = _fields = ("type", "version", "coordinator_epoch")
    type: ControlRecordType | int
    version: int
    coordinator_epoch: int | None

    def __init__(self, type: ControlRecordType | int,  # noqa: A002 - Kafka's field name
                 version: int = CONTROL_KEY_VERSION, coordinator_epoch: int | None = None) -> None:
        set_ = object.__setattr__
        set_(self, "type", type)
        set_(self, "version", version)
        set_(self, "coordinator_epoch", coordinator_epoch)

    @property
    def is_commit(self) -> bool:
        return self.type == ControlRecordType.COMMIT

    @property
    def is_abort(self) -> bool:
        return self.type == ControlRecordType.ABORT

    @classmethod
    def parse(cls, key, value) -> "ControlRecord":
        """Read a control record from its key and value.

        Raises
        ------
        CorruptRecordError
            A key shorter than 4 bytes or of negative version, or a transaction marker
            whose value is shorter than 6 bytes.
        """
        if key is None or len(key) < _KEY.size:
            raise CorruptRecordError(
                f"control record key must be at least {_KEY.size} bytes (version, type), "
                f"got {None if key is None else len(key)}")
        version, type_id = _KEY.unpack_from(key)
        if version < 0:
            raise CorruptRecordError(f"control record key version {version} is negative")
        try:
            ctype: ControlRecordType | int = ControlRecordType(type_id)
        except ValueError:
            ctype = type_id
        epoch = None
        if ctype in (ControlRecordType.ABORT, ControlRecordType.COMMIT):
            if value is None or len(value) < _MARKER.size:
                raise CorruptRecordError(
                    f"transaction marker value must be at least {_MARKER.size} bytes "
                    f"(version, coordinator epoch), got {None if value is None else len(value)}")
            _marker_version, epoch = _MARKER.unpack_from(value)
        return cls(ctype, version, epoch)

    @classmethod
    def from_record(cls, record) -> "ControlRecord":
        """Read the control record held by a :class:`Record` of a control batch."""
        return cls.parse(record.key, record.value)

    def key(self) -> bytes:
        return _KEY.pack(self.version, int(self.type))

    def value(self) -> bytes | None:
        if self.coordinator_epoch is None:
            return None
        return _MARKER.pack(END_TXN_MARKER_VERSION, self.coordinator_epoch)


def _control_type(control_type) -> ControlRecordType:
    if isinstance(control_type, str):
        try:
            return ControlRecordType[control_type.upper()]
        except KeyError:
            raise ValueError(f"unknown control record type {control_type!r}: use 'commit' or 'abort'") from None
    return ControlRecordType(control_type)


def build_control_batch(control_type, producer_id: int, producer_epoch: int,
                        coordinator_epoch: int = 0, *, base_offset: int = 0,
                        timestamp_ms: int | None = None, partition_leader_epoch: int = -1) -> bytes:
    """A transaction marker batch, as the transaction coordinator has the partition
    leader write: one control record, transactional and control attributes set, no
    compression, base sequence -1.

    Parameters
    ----------
    control_type : {"commit", "abort"} or ControlRecordType
    producer_id, producer_epoch : int
        The transactional producer the marker ends a transaction of.
    coordinator_epoch : int
        The transaction coordinator's epoch.
    base_offset, timestamp_ms, partition_leader_epoch
        Header fields (timestamp None: now).

    Returns
    -------
    bytes
    """
    ctype = _control_type(control_type)
    if ctype not in (ControlRecordType.ABORT, ControlRecordType.COMMIT):
        raise ValueError("build_control_batch writes transaction markers (commit / abort)")
    builder = RecordBatchBuilder(base_offset=base_offset, producer_id=producer_id,
                                 producer_epoch=producer_epoch, base_sequence=-1,
                                 is_transactional=True, is_control=True,
                                 partition_leader_epoch=partition_leader_epoch)
    marker = ControlRecord(ctype, CONTROL_KEY_VERSION, coordinator_epoch)
    builder.append(timestamp_ms, marker.key(), marker.value())
    return builder.build()
