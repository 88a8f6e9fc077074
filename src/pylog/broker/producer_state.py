"""Idempotent-producer state of one partition: which batches each producer has written.

An idempotent producer numbers the records it sends to a partition (``baseSequence`` in
the batch header) and tags them with its ``producerId`` and ``producerEpoch``.  Before a
batch is appended, :meth:`ProducerStateManager.check` decides, as Kafka's broker does:

- a batch whose producer id, epoch and sequence range match one of the last five batches
  of that producer is a *duplicate* of a retried send: it is not appended again, and the
  producer is told the offsets of the original (:class:`DuplicateBatch`);
- an epoch below the producer's current epoch is fenced (``INVALID_PRODUCER_EPOCH``);
- a new epoch must start at sequence 0, and within an epoch each batch must follow the
  previous one (``lastSequence + 1``, wrapping at 2**31 - 1), else
  ``OUT_OF_ORDER_SEQUENCE_NUMBER``.

After the append, :meth:`ProducerStateManager.update` records the batch.  Only batch
headers are looked at: no record is decoded (but the one control record of a transaction
marker, whose key says COMMIT or ABORT).

Transactions
------------
A transactional data batch of a producer with no transaction open on the partition opens
one at its base offset (``current_txn_first_offset``); the producer's COMMIT or ABORT
marker closes it (:meth:`ProducerStateManager.update` returns the
:class:`CompletedTxn`).  ``ongoing`` maps each producer with an open transaction to its
first offset, oldest first, so :meth:`ProducerStateManager.first_unstable_offset` (the
last stable offset before the high watermark bounds it) costs one lookup.  A marker is
checked by :meth:`ProducerStateManager.check_marker`: an epoch below the producer's is
``INVALID_PRODUCER_EPOCH``, a coordinator epoch below the last marker's
``TRANSACTION_COORDINATOR_FENCED``, as Kafka's ``ProducerAppendInfo``.  A marker for a
producer with no open transaction is accepted and completes nothing.  A producer with an
open transaction is never expired (:meth:`ProducerStateManager.remove_expired`): its
marker must find it.

On disk
-------
``<log_dir>/<offset:020d>.snapshot``, Kafka's producer snapshot format (version 1), all
big-endian: ``version int16 = 1``, ``crc uint32`` (CRC-32C of every byte after the CRC
field), ``count int32``, then per producer ``producer_id int64, epoch int16,
last_sequence int32, last_offset int64, offset_delta int32, timestamp int64,
coordinator_epoch int32, current_txn_first_offset int64``.  ``offset`` in the name is the
log end offset the snapshot describes.

Crash behaviour
---------------
A snapshot is written to a temporary file, made durable (its own fsync, or at a clean
shutdown one ``syncfs`` for all partitions' files) and only then renamed into place, so a
crash leaves either the old set of snapshots or the new one (plus a ``.tmp`` file that the
log's open deletes).  After a crash the broker loads the
newest snapshot at or below the log end offset and replays the batch headers from there
(:meth:`ProducerStateManager.replay`), which rebuilds the same state the appends built.

A snapshot is untrusted input: its read is bounded (:data:`MAX_SNAPSHOT_BYTES`), and one
whose version, CRC, length or entries are wrong (a producer listed twice, a negative id,
epoch or offset, a last offset at or past the snapshot's own offset) is deleted with a
WARN naming the file and the fault, and the next older snapshot (or, with none, the log
from its start) is replayed instead: the state is rebuilt from the log, never guessed.
A snapshot keeps only each producer's last batch, as Kafka's does, so after a restart
duplicates of that last batch are still recognised, older ones are rejected as out of
order.

Thread safety
-------------
None of its own: the partition log's append lock serialises check/update.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections import deque
from typing import Iterable

from pylog import _core
from pylog._value import FrozenValue, Value, ValueTuple
from pylog.errors import (
    InvalidProducerEpochError,
    InvalidTxnStateError,
    OutOfOrderSequenceError,
    TransactionCoordinatorFencedError,
)
from pylog.storage.txn_index import AbortedTxn

__all__ = [
    "BatchMetadata",
    "CompletedTxn",
    "DuplicateBatch",
    "ProducerStateEntry",
    "ProducerStateManager",
    "NO_PRODUCER_ID",
    "NO_PRODUCER_EPOCH",
    "NO_SEQUENCE",
]

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
#: How many recent batches per producer are remembered for duplicate detection.
NUM_BATCHES_TO_RETAIN = 5
_INT32_MAX = 2**31 - 1

_SNAPSHOT_VERSION = 1
_HEADER = struct.Struct(">hI")          # version, crc
_COUNT = struct.Struct(">i")
_ENTRY = struct.Struct(">qhiqiqiq")     # 46 bytes
_SNAPSHOT_NAME = re.compile(r"^(\d{20})\.snapshot$")
#: Bounded read: ``count`` entries of 46 bytes; a million producers is 46 MB.
MAX_SNAPSHOT_BYTES = 256 << 20

_log = logging.getLogger("pylog.broker.producer_state")
#: Control record types of transaction markers (Kafka's ControlRecordType).
CONTROL_ABORT = 0
CONTROL_COMMIT = 1


class CompletedTxn(ValueTuple):
    """A transaction a marker closed: its first offset, the marker's offset, the outcome."""

    __slots__ = ()

    producer_id: int
    first_offset: int
    last_offset: int
    is_aborted: bool


def marker_of(batch) -> tuple[int, int]:
    """``(control_type, coordinator_epoch)`` of a control batch: its one record's key
    (version int16, type int16) and, for a transaction marker, its value (version
    int16, coordinator epoch int32); -1 for what is not readable.  One record, decoded
    in C.  A dict (a test's header) may carry ``control_type`` and ``coordinator_epoch``."""
    if isinstance(batch, dict):
        return batch.get("control_type", -1), batch.get("coordinator_epoch", -1)
    for record in batch:
        key, value = record.key, record.value
        ctype = struct.unpack_from(">h", key, 2)[0] if key is not None and len(key) >= 4 else -1
        epoch = struct.unpack_from(">i", value, 2)[0] if value is not None and len(value) >= 6 else -1
        return ctype, epoch
    return -1, -1


class BatchMetadata(FrozenValue):
    """What is remembered of one appended batch."""

    __slots__ = _fields = ("first_seq", "last_seq", "first_offset", "last_offset", "timestamp")
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp: int

    def __init__(self, first_seq: int, last_seq: int, first_offset: int, last_offset: int, timestamp: int) -> None:
        set_ = object.__setattr__
        set_(self, "first_seq", first_seq)
        set_(self, "last_seq", last_seq)
        set_(self, "first_offset", first_offset)
        set_(self, "last_offset", last_offset)
        set_(self, "timestamp", timestamp)


class DuplicateBatch(FrozenValue):
    """Returned by :meth:`ProducerStateManager.check` for a retried batch already in the
    log: the producer gets the original offsets back, nothing is appended."""

    __slots__ = _fields = ("first_offset", "last_offset", "timestamp")
    first_offset: int
    last_offset: int
    timestamp: int

    def __init__(self, first_offset: int, last_offset: int, timestamp: int) -> None:
        set_ = object.__setattr__
        set_(self, "first_offset", first_offset)
        set_(self, "last_offset", last_offset)
        set_(self, "timestamp", timestamp)


class ProducerStateEntry(Value):
    __slots__ = _fields = ("producer_id", "producer_epoch", "coordinator_epoch", "current_txn_first_offset",
                           "batches")
    producer_id: int
    producer_epoch: int
    coordinator_epoch: int
    current_txn_first_offset: int
    batches: deque

    def __init__(self, producer_id: int, producer_epoch: int = NO_PRODUCER_EPOCH, coordinator_epoch: int = -1,
                 current_txn_first_offset: int = -1, batches: deque | None = None) -> None:
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.coordinator_epoch = coordinator_epoch
        self.current_txn_first_offset = current_txn_first_offset
        self.batches = deque(maxlen=NUM_BATCHES_TO_RETAIN) if batches is None else batches

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    @property
    def last_offset(self) -> int:
        return self.batches[-1].last_offset if self.batches else -1

    @property
    def last_timestamp(self) -> int:
        return self.batches[-1].timestamp if self.batches else -1


def _seq_add(seq: int, delta: int) -> int:
    """Sequence arithmetic wraps at Int32.MAX_VALUE back to 0, as Kafka's."""
    if seq > _INT32_MAX - delta:
        return delta - (_INT32_MAX - seq) - 1
    return seq + delta


def _in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (last_seq == _INT32_MAX and next_seq == 0)


class ProducerStateManager:
    """Producer state of one partition log (see the module docstring for the rules).

    Parameters
    ----------
    log_dir : str or os.PathLike
        The partition directory; snapshots live there.
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.log_dir = os.fspath(log_dir)
        self.producers: dict[int, ProducerStateEntry] = {}
        #: Producer id -> first offset of its open transaction, oldest first.
        self.ongoing: dict[int, int] = {}
        # The first of them (None: no transaction open): one attribute, so a reader may
        # look without a lock (a consistent LSO still needs the log's lock, see core).
        self._first_unstable: int | None = None
        #: Offset up to which the state reflects the log (exclusive).
        self.map_end_offset = 0
        #: KIP-890 on a clustered leader (pylog.cluster.txn_verification): producer id ->
        #: the VerificationGuard set while its transaction coordinator is asked; removed
        #: by the producer's next marker or the batch that opens its transaction here
        #: (Kafka's VerificationStateEntry).  Not in snapshots.
        self.verification_guards: dict[int, object] = {}

    # -- validation -------------------------------------------------------------------------

    def check(self, producer_id: int, producer_epoch: int, base_sequence: int,
              records_count: int, last_offset_delta: int, *, is_transactional: bool = False):
        """Validate a batch's producer fields before it is appended.

        Returns
        -------
        DuplicateBatch or None
            A duplicate of a recent batch (append nothing), or None (append it).

        Raises
        ------
        InvalidProducerEpochError
            The epoch is older than the producer's current epoch (a fenced producer).
        OutOfOrderSequenceError
            The sequence does not follow the producer's last one.
        InvalidTxnStateError
            A non-transactional batch from a producer with a transaction open here
            (Kafka's "expected transactional write").
        """
        if producer_id < 0:
            return None
        entry = self.producers.get(producer_id)
        if entry is None:
            return None
        if producer_epoch < entry.producer_epoch:
            raise InvalidProducerEpochError(
                f"producer {producer_id} epoch {producer_epoch} is older than its current "
                f"epoch {entry.producer_epoch}: a newer producer instance has fenced it")
        if not is_transactional and entry.current_txn_first_offset >= 0:
            raise InvalidTxnStateError(
                f"producer {producer_id} has a transaction open from offset {entry.current_txn_first_offset}: "
                "expected a transactional batch (end the transaction first)")
        if base_sequence < 0:
            return None  # an idempotence-less batch from a producer with an id (control batch)
        last_seq = _seq_add(base_sequence, max(last_offset_delta, records_count - 1, 0))
        if producer_epoch == entry.producer_epoch:
            for b in entry.batches:
                if b.first_seq == base_sequence and b.last_seq == last_seq:
                    return DuplicateBatch(b.first_offset, b.last_offset, b.timestamp)
            current = entry.last_seq
            if current == NO_SEQUENCE:
                if base_sequence != 0:
                    # Known only from a bumped epoch (InitProducerId): it must start at 0.
                    raise OutOfOrderSequenceError(
                        f"producer {producer_id} epoch {producer_epoch}: expected sequence 0, "
                        f"got {base_sequence}")
            elif not _in_sequence(current, base_sequence):
                raise OutOfOrderSequenceError(
                    f"producer {producer_id} epoch {producer_epoch}: out of order sequence "
                    f"{base_sequence}, expected {_seq_add(current, 1)}")
        elif base_sequence != 0:
            raise OutOfOrderSequenceError(
                f"producer {producer_id}: the first batch of new epoch {producer_epoch} must "
                f"have sequence 0, got {base_sequence}")
        return None

    def check_marker(self, producer_id: int, producer_epoch: int, coordinator_epoch: int) -> None:
        """Validate a transaction marker (COMMIT / ABORT) before it is appended.

        Raises
        ------
        InvalidProducerEpochError
            The marker's epoch is older than the producer's (Kafka answers a stale
            marker with INVALID_PRODUCER_EPOCH, as it does a zombie's produce).
        TransactionCoordinatorFencedError
            The marker comes from an older transaction coordinator than the last one.
        """
        entry = self.producers.get(producer_id)
        if entry is None:
            return
        if producer_epoch < entry.producer_epoch:
            raise InvalidProducerEpochError(
                f"marker for producer {producer_id} has epoch {producer_epoch}, older than its "
                f"current epoch {entry.producer_epoch}")
        if coordinator_epoch < entry.coordinator_epoch:
            raise TransactionCoordinatorFencedError(
                f"marker for producer {producer_id} comes from coordinator epoch {coordinator_epoch}; "
                f"a newer coordinator (epoch {entry.coordinator_epoch}) already wrote one")

    def first_unstable_offset(self) -> int | None:
        """First offset of the oldest open transaction, None when none is open."""
        return self._first_unstable

    def _ongoing_changed(self) -> None:
        self._first_unstable = next(iter(self.ongoing.values()), None)

    def stable_offset_after(self, txn: CompletedTxn) -> int:
        """The LSO once ``txn`` is complete (the ``.txnindex`` entry's last stable
        offset): the oldest other open transaction's first offset, else past the marker."""
        for pid, first in self.ongoing.items():
            if pid != txn.producer_id:
                return first
        return txn.last_offset + 1

    # -- state changes ----------------------------------------------------------------------

    def update(self, producer_id: int, producer_epoch: int, base_sequence: int,
               records_count: int, last_offset_delta: int, first_offset: int,
               last_offset: int, timestamp: int, *, is_transactional: bool = False,
               is_control: bool = False, control_type: int = -1,
               coordinator_epoch: int = -1) -> CompletedTxn | None:
        """Record an appended batch (after :meth:`check` or :meth:`check_marker`
        allowed it).  For a COMMIT / ABORT marker (``control_type``) of a producer with an
        open transaction, returns the :class:`CompletedTxn` it closed (the caller adds an
        aborted one to the ``.txnindex``); else None."""
        if last_offset + 1 > self.map_end_offset:
            self.map_end_offset = last_offset + 1
        if producer_id < 0:
            return None
        entry = self.producers.get(producer_id)
        if entry is None:
            entry = self.producers[producer_id] = ProducerStateEntry(producer_id, producer_epoch)
        if producer_epoch > entry.producer_epoch:
            entry.producer_epoch = producer_epoch
            entry.batches.clear()
        if self.verification_guards and (is_control or is_transactional):
            self.verification_guards.pop(producer_id, None)
        if is_control:
            if control_type not in (CONTROL_ABORT, CONTROL_COMMIT):
                return None    # not a transaction marker (a KRaft control record)
            if coordinator_epoch >= 0:
                entry.coordinator_epoch = coordinator_epoch
            first = entry.current_txn_first_offset
            entry.current_txn_first_offset = -1
            if first < 0:
                return None
            self.ongoing.pop(producer_id, None)
            self._ongoing_changed()
            return CompletedTxn(producer_id, first, last_offset, control_type == CONTROL_ABORT)
        if is_transactional and entry.current_txn_first_offset < 0 and records_count > 0:
            # (An empty batch is what the cleaner keeps of a decided transaction's last
            # batch once its records are superseded; its marker may be gone: it opens
            # nothing.  Clients cannot produce empty batches.)
            entry.current_txn_first_offset = first_offset
            self.ongoing[producer_id] = first_offset
            if self._first_unstable is None:
                self._first_unstable = first_offset
        if base_sequence >= 0:
            last_seq = _seq_add(base_sequence, max(last_offset_delta, records_count - 1, 0))
            entry.batches.append(
                BatchMetadata(base_sequence, last_seq, first_offset, last_offset, timestamp))
        return None

    def bump_epoch(self, producer_id: int, producer_epoch: int) -> None:
        """InitProducerId gave ``producer_id`` a new epoch: older epochs are fenced from now."""
        entry = self.producers.get(producer_id)
        if entry is None:
            self.producers[producer_id] = ProducerStateEntry(producer_id, producer_epoch)
        elif producer_epoch > entry.producer_epoch:
            entry.producer_epoch = producer_epoch
            entry.batches.clear()

    def replay(self, headers: Iterable) -> list[AbortedTxn]:
        """Rebuild state from batches read from the log, in offset order.

        Each item has the attributes (or dict keys) of a ``_core.RecordBatch``:
        base_offset, last_offset_delta, max_timestamp, producer_id, producer_epoch,
        base_sequence, records_count, attributes (a dict may carry ``control_type``;
        a RecordBatch's is read from its one control record).

        Returns the aborted transactions the replayed markers closed, as ``.txnindex``
        entries (what the index of the replayed range must hold).
        """
        aborted: list[AbortedTxn] = []
        for h in headers:
            get = h.__getitem__ if isinstance(h, dict) else h.__getattribute__
            base = get("base_offset")
            delta = get("last_offset_delta")
            attrs = get("attributes")
            is_control = bool(attrs & 0x20)
            ctype, coordinator_epoch = marker_of(h) if is_control and attrs & 0x10 else (-1, -1)
            done = self.update(get("producer_id"), get("producer_epoch"), get("base_sequence"),
                               get("records_count"), delta, base, base + delta,
                               get("max_timestamp"), is_transactional=bool(attrs & 0x10),
                               is_control=is_control, control_type=ctype,
                               coordinator_epoch=coordinator_epoch)
            if done is not None and done.is_aborted:
                aborted.append(AbortedTxn(done.producer_id, done.first_offset, done.last_offset,
                                          self.stable_offset_after(done)))
        return aborted

    def remove_expired(self, now_ms: int, expiration_ms: int) -> list[int]:
        """Forget producers whose last batch is more than ``expiration_ms`` old and that
        have no transaction open (Kafka's ``producer.id.expiration.ms``): an idempotent
        producer idle that long starts over as unknown.  Returns the ids removed."""
        gone = [pid for pid, e in self.producers.items()
                if e.current_txn_first_offset < 0 and e.batches and now_ms - e.last_timestamp > expiration_ms]
        for pid in gone:
            del self.producers[pid]
        return gone

    def truncate(self) -> None:
        """Forget everything (the log was truncated below what the state covers; the
        caller replays from the newest snapshot that is still valid)."""
        self.producers.clear()
        self.ongoing.clear()
        self.verification_guards.clear()
        self._first_unstable = None
        self.map_end_offset = 0

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot_path(self, offset: int) -> str:
        return os.path.join(self.log_dir, f"{offset:020d}.snapshot")

    def list_snapshots(self) -> list[int]:
        """Offsets of the snapshot files in the log dir, ascending."""
        out = []
        try:
            names = os.listdir(self.log_dir)
        except FileNotFoundError:
            return out
        for name in names:
            m = _SNAPSHOT_NAME.match(name)
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    def take_snapshot(self) -> str:
        """Write the state as ``<map_end_offset>.snapshot`` (atomic: tmp, fsync, rename)."""
        tmp, path = self.write_snapshot_tmp()
        os.replace(tmp, path)
        return path

    def write_snapshot_tmp(self, *, sync: bool = True) -> tuple[str, str]:
        """The first half of :meth:`take_snapshot`: write the state to
        ``<map_end_offset>.snapshot.tmp`` (fsync-ed when ``sync``) and return that path and
        the snapshot's own.  A caller that passes ``sync=False`` makes many of them durable
        at once (one ``syncfs``, :func:`pylog.storage.manager.sync_filesystem`) before it
        renames each into place: a kill before the rename leaves a ``.tmp`` file that the
        log's open deletes, so the older snapshots stand and the replay covers the rest."""
        body = bytearray(_COUNT.pack(len(self.producers)))
        for e in self.producers.values():
            last = e.batches[-1] if e.batches else None
            body += _ENTRY.pack(
                e.producer_id, e.producer_epoch,
                last.last_seq if last else NO_SEQUENCE,
                last.last_offset if last else -1,
                (last.last_offset - last.first_offset) if last else 0,
                last.timestamp if last else -1,
                e.coordinator_epoch, e.current_txn_first_offset)
        data = _HEADER.pack(_SNAPSHOT_VERSION, _core.crc32c(body)) + body
        path = self.snapshot_path(self.map_end_offset)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        return tmp, path

    def load_snapshot(self, log_end_offset: int, at_or_below: int | None = None) -> int:
        """Load the newest valid snapshot at or below ``log_end_offset`` (and at or
        below ``at_or_below`` when given: a replay must start there, e.g. to rebuild
        the ``.txnindex`` of segments from there on; the newer ones are still checked);
        delete snapshots above the log end offset (they describe data the log no longer
        has) and any that fail their checks, with a WARN.

        Returns the offset from which the caller must replay batch headers (0 if none).
        """
        self.truncate()
        limit = log_end_offset if at_or_below is None else min(at_or_below, log_end_offset)
        for offset in reversed(self.list_snapshots()):
            path = self.snapshot_path(offset)
            if offset > log_end_offset:
                os.unlink(path)
                continue
            # A newer snapshot than the replay may start from is read all the same (into
            # a scratch state): a damaged file is reported and removed wherever it is.
            target = self if offset <= limit else ProducerStateManager(self.log_dir)
            try:
                with open(path, "rb") as f:
                    data = f.read(MAX_SNAPSHOT_BYTES + 1)
                if len(data) > MAX_SNAPSHOT_BYTES:
                    raise ValueError(f"larger than {MAX_SNAPSHOT_BYTES} bytes")
                target._decode_snapshot(data, offset)
            except (ValueError, struct.error, OSError) as exc:
                self.truncate()
                older = [o for o in self.list_snapshots() if o < offset]
                _log.warning("%s: damaged producer snapshot (%s); deleted it, rebuilding producer state "
                             "from %s", path, exc,
                             f"the snapshot at offset {older[-1]}" if older else "the log's start")
                try:
                    os.unlink(path)
                except OSError:
                    pass
                continue
            if target is not self:
                continue
            self.map_end_offset = offset
            return offset
        return 0

    def _decode_snapshot(self, data: bytes, offset: int) -> None:
        """Fill ``producers`` from a snapshot of the log up to ``offset`` (exclusive);
        ValueError names what is wrong (the caller then clears the state)."""
        if len(data) < _HEADER.size + _COUNT.size:
            raise ValueError("producer snapshot too short")
        version, crc = _HEADER.unpack_from(data, 0)
        if version != _SNAPSHOT_VERSION:
            raise ValueError(f"unknown producer snapshot version {version}")
        body = memoryview(data)[_HEADER.size:]
        if _core.crc32c(body) != crc:
            raise ValueError("producer snapshot CRC mismatch")
        (count,) = _COUNT.unpack_from(body, 0)
        if count < 0 or _COUNT.size + count * _ENTRY.size != len(body):
            raise ValueError("producer snapshot length does not match its entry count")
        for i in range(count):
            (pid, epoch, last_seq, last_offset, offset_delta, ts, coord_epoch,
             txn_first) = _ENTRY.unpack_from(body, _COUNT.size + i * _ENTRY.size)
            if pid < 0 or epoch < NO_PRODUCER_EPOCH or pid in self.producers:
                raise ValueError(f"entry {i}: producer id {pid} epoch {epoch} is invalid or listed twice")
            if last_seq >= 0 and not (0 <= offset_delta <= last_offset < offset):
                raise ValueError(f"entry {i}: producer {pid}'s last batch ends at {last_offset} "
                                 f"(delta {offset_delta}), outside the snapshot's offsets 0..{offset - 1}")
            if txn_first >= offset or txn_first < -1:
                raise ValueError(f"entry {i}: producer {pid}'s open transaction starts at {txn_first}")
            entry = ProducerStateEntry(pid, epoch, coord_epoch, txn_first)
            if last_seq >= 0:
                first_seq = last_seq - offset_delta if last_seq >= offset_delta else 0
                entry.batches.append(BatchMetadata(first_seq, last_seq, last_offset - offset_delta,
                                                   last_offset, ts))
            self.producers[pid] = entry
        for first, pid in sorted((e.current_txn_first_offset, e.producer_id)
                                 for e in self.producers.values() if e.current_txn_first_offset >= 0):
            self.ongoing[pid] = first
        self._ongoing_changed()

    def delete_snapshots_below(self, offset: int, keep_latest: int = 2) -> None:
        """Remove old snapshots below ``offset`` (log start moved), keeping the newest few."""
        snaps = self.list_snapshots()
        for s in snaps[:-keep_latest] if keep_latest else snaps:
            if s < offset:
                try:
                    os.unlink(self.snapshot_path(s))
                except OSError:
                    pass
