"""The partition log: an ordered run of segments with one appendable end.

On disk: one directory in Kafka's layout (see :mod:`pylog.storage.segment`)::

    orders-0/
      00000000000000000000.log / .index / .timeindex
      00000000000000368011.log / .index / .timeindex      <- active segment
      00000000000000368011.txnindex      aborted transactions whose ABORT marker is in
                                         that segment (pylog.storage.txn_index), only
                                         for segments that have one
      recovery-point-offset-checkpoint   (standalone logs only; a LogManager keeps these
      log-start-offset-checkpoint         for all its logs in the data directory, as Kafka)
      .kafka_cleanshutdown               (standalone logs only, present while closed cleanly)
      leader-epoch-checkpoint            which leader epoch began at which offset
                                         (pylog.storage.leader_epoch)

Crash behaviour: a log opened after a clean close trusts its files (indexes are still
sanity-checked before use).  After an unclean shutdown every segment that holds offsets at
or past the recovery point (the offset up to which the log was last flushed) is recovered:
each batch is CRC-checked in Cython, the torn or corrupt tail (or the zero tail left by
preallocation) is truncated, indexes are rebuilt, and segments after a damaged one are
deleted.  Flushed data is never lost; unflushed data survives a process crash (it is in
the page cache) and loses at most a suffix on power loss.  As in Kafka, a roll schedules
a flush of the segments it sealed on a background thread, which then advances the
recovery point to the new segment, so recovery normally rescans only the active one.
The cleaner's swap protocol (:meth:`Log.replace_segments`) is completed or rolled back
on open.

Transaction indexes: the log keeps each segment's ``.txnindex`` (appended by
:meth:`Log.append_aborted_txn` under the same lock hold as the marker's append, so a
flush never separates them; truncated by :meth:`Log.truncate_to`; deleted with its
segment) and answers :meth:`Log.collect_aborted_transactions` from them.  Who writes a
marker knows the transaction's first offset and the LSO; the log does not, so after an
unclean shutdown it cannot rebuild an index alone: :attr:`Log.txn_index_rebuild_from`
says from which offset the indexes are not trusted (the first segment recovery
rescanned, or a ``.txnindex`` that failed its sanity check at open, reported with a
WARN), and the owner replays the log's control batches from there (with the producer
state of that offset: pylog.broker) and hands the entries to
:meth:`Log.rebuild_txn_indexes`.  Until then reads with aborted transactions are
answered from what the indexes hold.

Thread safety: every public method takes the log's lock (one re-entrant ``_core.LogLock``
per Log, with threading.RLock's semantics and a C fast path for the append),
so appends from many threads are safe and serialized, and reads see whole appends.  A
:class:`ReadResult` is a zero-copy view of the mapped file: it stays valid (the memory
stays mapped, the descriptor open) after the lock is released and even after the segment
is deleted, but its bytes change if the log is later truncated below them with
:meth:`Log.truncate_to`; copy what you keep across such a truncation.  For asyncio, call
from a thread (``asyncio.to_thread``) when a flush policy may fsync.
"""

from __future__ import annotations

import bisect
import logging
import os
import queue
import threading
import weakref
import time
from typing import Callable, Sequence

from pylog import _core
from pylog._value import ValueTuple
from pylog.errors import (CorruptRecordError, InvalidRequestError, KafkaStorageError, LogClosedError,
                          OffsetOutOfRangeError)
from pylog.storage.checkpoint import CheckpointFile, CorruptCheckpointError, fsync_dir
from pylog.storage.config import LogConfig
from pylog.storage.leader_epoch import LEADER_EPOCH_CHECKPOINT, EpochEntry, LeaderEpochCache
from pylog.storage.segment import (CLEANED_SUFFIX, DELETED_SUFFIX, LOG_SUFFIX, SWAP_SUFFIX,
                                   LogSegment, RecoveryInfo, SegmentCache, parse_segment_name)
from pylog.storage.txn_index import TXN_INDEX_SUFFIX, AbortedTxn, CorruptTxnIndexError, TransactionIndex

__all__ = ["Log", "LogAppendInfo", "ReadResult", "TimestampOffset", "RetentionResult",
           "LATEST_TIMESTAMP", "EARLIEST_TIMESTAMP", "MAX_TIMESTAMP",
           "RECOVERY_POINT_CHECKPOINT", "LOG_START_OFFSET_CHECKPOINT", "CLEAN_SHUTDOWN_FILE"]

#: ListOffsets special timestamps (Kafka's ListOffsetsRequest constants).
LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2
MAX_TIMESTAMP = -3

_logger = logging.getLogger(__name__)

RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"

# How often a standalone log rewrites its recovery-point checkpoint on flush (Kafka:
# log.flush.offset.checkpoint.interval.ms).  A stale checkpoint only means more recovery.
_CHECKPOINT_INTERVAL_MS = 1000




def _unlink_if_there(path: str) -> None:
    """Delete a leftover the open sweeps away; one already gone is fine (a checkpoint's
    ``.tmp`` is renamed into place by its writer between our listing and our unlink)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_topic_partition(name: str) -> tuple[str, int] | None:
    """``("orders", 3)`` for a directory named ``orders-3``; None otherwise."""
    topic, dash, part = name.rpartition("-")
    if not dash or not topic or not part.isdigit():
        return None
    return topic, int(part)


class LogAppendInfo(ValueTuple):
    """What :meth:`Log.append` did."""

    __slots__ = ()

    base_offset: int
    """Offset of the first record appended."""
    last_offset: int
    log_append_time: int
    """The time stamped on the batches, or -1 under CreateTime."""
    position: int
    """Byte position of the append in its segment's ``.log`` file."""
    size: int
    segment_base_offset: int
    batches: int
    records: int
    max_timestamp: int
    offset_of_max_timestamp: int


_core.set_append_info_type(LogAppendInfo)


class _BackgroundFlusher:
    """One daemon thread per process that fsyncs segments after their log rolled (Kafka
    schedules the same flush on its scheduler), so the recovery point follows the rolls
    without an fsync on the append path."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition(self._lock)
        self._pending = 0

    def submit(self, log: "Log", offset: int) -> None:
        with self._lock:
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="pylog-log-flusher", daemon=True)
                self._thread.start()
        self._queue.put((weakref.ref(log), offset))

    def _run(self) -> None:
        while True:
            ref, offset = self._queue.get()
            try:
                log = ref()
                if log is not None:
                    log._flush_sealed_upto(offset)
            except Exception:
                _logger.exception("background flush of a rolled segment failed")
            finally:
                with self._lock:
                    self._pending -= 1
                    if not self._pending:
                        self._idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every submitted flush is done (tests, orderly shutdown)."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._pending, timeout)


_flusher = _BackgroundFlusher()


class TimestampOffset(ValueTuple):
    """Answer of :meth:`Log.offset_for_timestamp` (Kafka's ListOffsets)."""

    __slots__ = ()

    timestamp: int
    offset: int


class RetentionResult(ValueTuple):
    """What :meth:`Log.apply_retention` deleted."""

    __slots__ = ()

    deleted_segments: tuple[int, ...]
    """Base offsets of the deleted segments."""
    deleted_bytes: int
    log_start_offset: int


class ReadResult:
    """Whole batches read from a log, as zero-copy views and as a file range.

    Attributes
    ----------
    records : memoryview
        The batches, a read-only view of the mapped segment (no copy).
    file : FileHandle
        The segment's open ``.log`` file; ``file.fileno()`` with :attr:`position` and
        :attr:`size` is what ``os.sendfile`` needs.  It stays open while this result lives.
    path : str
        The segment file's path.
    position, size : int
        Byte range of the batches in the file.
    offset : int
        The offset asked for.
    base_offset, last_offset : int
        First and last offsets of the returned batches (-1 when empty).
    next_offset : int
        Where the next read should start.
    log_start_offset, log_end_offset : int
        The log's bounds at the time of the read.
    """

    __slots__ = ("records", "file", "path", "position", "size", "offset", "base_offset",
                 "last_offset", "next_offset", "log_start_offset", "log_end_offset",
                 "segment_base_offset")

    def __init__(self, records, file, path, position, size, offset, base_offset, last_offset,
                 log_start_offset, log_end_offset, segment_base_offset) -> None:
        self.records = records
        self.file = file
        self.path = path
        self.position = position
        self.size = size
        self.offset = offset
        self.base_offset = base_offset
        self.last_offset = last_offset
        self.next_offset = last_offset + 1 if size else offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset
        self.segment_base_offset = segment_base_offset

    @property
    def views(self) -> list[memoryview]:
        """The data as a list of zero-copy memoryviews (one per segment read)."""
        return [self.records] if self.size else []

    def fileno(self) -> int:
        return self.file.fileno()

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return bytes(self.records)

    def release(self) -> None:
        """Let go of the mapping view now rather than when garbage-collected."""
        self.records.release()

    def __repr__(self) -> str:
        return (f"<ReadResult offsets {self.base_offset}..{self.last_offset} "
                f"{self.size} bytes at {self.path}:{self.position}>")


class Log(_core.LogBase):
    """A partition log over one directory in Kafka's layout.

    Open with :meth:`Log.open`.  The on-disk format, crash behaviour and thread safety are
    described in this module's docstring.

    Seams for the log cleaner and other maintenance (documented, stable):

    - :attr:`segments` / :meth:`segments_in_range`: the segments, oldest first;
      :meth:`LogSegment.batches` iterates a segment's stored batches zero-copy.
    - :meth:`new_segment` creates a ``.cleaned`` segment to write a replacement into
      (:meth:`LogSegment.append`, then :meth:`LogSegment.seal`).
    - :meth:`replace_segments` swaps such segments in for old ones, crash-safely.
    """

    def __init__(self, path: str, config: LogConfig, cache: SegmentCache, clock: Callable[[], int],
                 managed: bool, topic_partition: tuple[str, int] | None) -> None:
        self.path = path
        self.config = config
        self._cache = cache
        self._clock = clock
        self._managed = managed
        self.topic_partition = topic_partition
        self._lock = _core.LogLock()
        self._segments: list[LogSegment] = []
        self._bases: list[int] = []
        self._log_start_offset = 0
        self._log_end_offset = 0
        self._recovery_point = 0
        self._unflushed_messages = 0
        self._last_flush_ms = clock()
        self._last_checkpoint_ms = 0
        self._closed = False
        self._epochs: LeaderEpochCache | None = None
        self._latest_epoch = -1  # the cache's newest epoch, read by the append path
        self._first_recovered = -1
        self._truncation_listeners: list[Callable[["Log", int], None]] = []
        self._roll_listeners: list[Callable[["Log"], None]] = []
        self._truncations = 0
        self._reported_damage: set[tuple[int, int]] = set()
        #: What recovery did at open: one RecoveryInfo per recovered segment.
        self.recovered: list[RecoveryInfo] = []
        # Transaction indexes of the segments that have one (by base offset), and the
        # offset from which they wait for a rebuild (see the module docstring).
        self._txn_indexes: dict[int, TransactionIndex] = {}
        self._txn_index_files: set[int] = set()
        # Every entry of every index in marker order, with their last offsets (for
        # bisect): what a read_committed fetch searches, rebuilt when an index changes.
        self._txn_flat: tuple[list[int], list[AbortedTxn]] | None = None
        self._txn_rebuild_from: int | None = None
        self.had_clean_shutdown = False
        # The append path's settings live in the active segment's appender (set on
        # activation and by update_config); this one is the log's own.
        self._flush_policy = config.flush_messages is not None or config.flush_ms is not None

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, *, config: LogConfig | None = None,
             recovery_point: int | None = None, log_start_offset: int | None = None,
             clean_shutdown: bool | None = None, cache: SegmentCache | None = None,
             clock: Callable[[], int] | None = None, **settings) -> "Log":
        """Open (creating if needed) the log in directory ``path``.

        Parameters
        ----------
        path
            The partition directory (``<topic>-<partition>`` under a LogManager; any name
            when standalone).
        config
            A :class:`LogConfig`; or pass its settings as keywords (``segment_bytes=...``).
        recovery_point, log_start_offset, clean_shutdown
            Given by a :class:`LogManager`, which keeps them for all its logs.  Leave them
            out for a standalone log: it keeps its own checkpoint files and clean-shutdown
            marker in its directory.
        cache
            The LRU of open sealed segments to share (default: one per log, 16 segments).
        clock
            Milliseconds since the epoch (default: wall clock); used for LogAppendTime,
            ``segment_ms`` and ``flush_ms``.

        Raises
        ------
        InvalidConfigError
            A setting is unknown or out of range.
        """
        if config is None:
            config = LogConfig.from_dict(settings)
        elif settings:
            config = config.replace(**settings)
        path = os.fspath(path)
        managed = clean_shutdown is not None
        log = cls(path, config, cache if cache is not None else SegmentCache(16), clock or _wall_ms, managed,
                  parse_topic_partition(os.path.basename(os.path.normpath(path))))
        with log._lock:
            log._load(recovery_point, log_start_offset, clean_shutdown)
        return log

    def _tp_key(self) -> tuple[str, int]:
        return self.topic_partition or (os.path.basename(os.path.normpath(self.path)) or "log", 0)

    def _read_own_checkpoint(self, name: str) -> int | None:
        try:
            return CheckpointFile(os.path.join(self.path, name)).read().get(self._tp_key())
        except CorruptCheckpointError as exc:
            _logger.warning("%s; recovering without it", exc)
            return None

    def _load(self, recovery_point: int | None, log_start_offset: int | None,
              clean_shutdown: bool | None) -> None:
        os.makedirs(self.path, exist_ok=True)
        marker = os.path.join(self.path, CLEAN_SHUTDOWN_FILE)
        if not self._managed:
            clean_shutdown = os.path.exists(marker)
            recovery_point = self._read_own_checkpoint(RECOVERY_POINT_CHECKPOINT)
            log_start_offset = self._read_own_checkpoint(LOG_START_OFFSET_CHECKPOINT)
            if clean_shutdown and recovery_point is None:
                # close() writes the checkpoint before the marker: its loss is damage, so
                # the marker is not trusted either; every segment is recovered.
                _logger.warning("%s: no valid recovery point beside the clean-shutdown marker; "
                                "recovering every segment", self.path)
                clean_shutdown = False
        self.had_clean_shutdown = bool(clean_shutdown)

        bases, swaps = self._sweep_directory(log_start_offset or 0)
        segments = {b: LogSegment.open(self.path, b, self.config, cache=self._cache) for b in bases}
        self._complete_swaps(segments, swaps)

        ordered = [segments[b] for b in sorted(segments)]
        start = log_start_offset if log_start_offset is not None else 0
        fresh = not ordered
        if fresh:
            ordered = [LogSegment.create(self.path, start, self.config, cache=self._cache)]
        for seg, nxt in zip(ordered, ordered[1:] + [None]):
            seg.upper_bound_offset = nxt.base_offset if nxt is not None else None
        self._segments = ordered
        self._bases = [s.base_offset for s in ordered]

        rp = recovery_point if recovery_point is not None else 0
        if not clean_shutdown and not fresh:
            self._recover_from(rp)
        if not fresh:
            self._check_unrecovered()
        last = self._segments[-1]
        last.activate()
        self._log_end_offset = last.next_offset
        self._log_start_offset = max(start, self._segments[0].base_offset)
        if self._log_start_offset > self._log_end_offset:
            self._log_start_offset = self._log_end_offset
        if recovery_point is not None and recovery_point > self._log_end_offset:
            # Below the recovery point everything was flushed: a log ending lower lost
            # flushed data outside our control (a segment file deleted or cut).
            _logger.warning("%s: the log ends at offset %d, below its recovery point %d: flushed "
                            "records %d..%d are missing (segment files deleted or truncated outside "
                            "pylog?)", self._describe(), self._log_end_offset, recovery_point,
                            self._log_end_offset, recovery_point - 1)
        self._recovery_point = self._log_end_offset if clean_shutdown else min(rp, self._log_end_offset)
        self._load_epochs()
        self._load_txn_indexes()
        if not self._managed and os.path.exists(marker):
            # From now on a crash must be recovered.
            os.unlink(marker)
            fsync_dir(self.path)

    def _sweep_directory(self, log_start_offset: int = 0) -> tuple[list[int], list[int]]:
        """Delete leftovers (``.cleaned``, ``.deleted``, ``.tmp``, indexes without a log)
        and return the base offsets of live segments and of ``.swap`` segments.  An index
        without its log is reported with the offsets that went with the log (those at or
        past ``log_start_offset``)."""
        names = os.listdir(self.path)
        live: set[int] = set()
        swaps: set[int] = set()
        index_files: list[tuple[int, str]] = []
        parsed_names = [(name, parse_segment_name(name)) for name in names]
        # replace_segments renames its outputs .cleaned -> .swap highest base offset first,
        # so a .swap at or above a remaining .cleaned belongs to a swap that never finished
        # being committed: it is rolled back with the .cleaned files (Kafka's KAFKA-6264).
        cleaned = [p[0] for _, p in parsed_names if p is not None and p[2] == CLEANED_SUFFIX]
        min_cleaned = min(cleaned) if cleaned else None
        for name, parsed in parsed_names:
            full = os.path.join(self.path, name)
            if name.endswith(".tmp"):
                _unlink_if_there(full)
                continue
            if parsed is None:
                continue
            base, kind, suffix = parsed
            if suffix in (CLEANED_SUFFIX, DELETED_SUFFIX):
                _unlink_if_there(full)
            elif suffix == SWAP_SUFFIX:
                if kind == LOG_SUFFIX and (min_cleaned is None or base < min_cleaned):
                    swaps.add(base)
                else:
                    _unlink_if_there(full)  # indexes are rebuilt when the swap completes
            elif suffix == "":
                if kind == LOG_SUFFIX:
                    live.add(base)
                else:
                    index_files.append((base, full))
                    if kind == TXN_INDEX_SUFFIX:
                        self._txn_index_files.add(base)
        for base, full in index_files:
            if base not in live and base not in swaps:
                later = [b for b in live if b > base]
                if later and min(later) <= log_start_offset:
                    lost = "its offsets were below the log start offset already (removed by retention)"
                elif later:
                    lost = (f"offsets {max(base, log_start_offset)}..{min(later) - 1} of that segment are "
                            "no longer in the log (consumers skip them)")
                else:
                    lost = f"offsets from {base} are no longer in the log, unless that segment held none"
                _logger.warning("%s: deleting %s: its segment's .log file is missing (deleted outside "
                                "pylog, or a crash while the segment was being deleted); %s",
                                self._describe(), full, lost)
                _unlink_if_there(full)
        return sorted(live), sorted(swaps)

    def _complete_swaps(self, segments: dict[int, LogSegment], swaps: list[int]) -> None:
        """Finish a committed but interrupted :meth:`replace_segments`: each ``.swap``
        segment replaces every live segment whose offsets overlap its own (measured by
        the segments' actual last offsets, so a replacement already renamed live is never
        taken for one of the old segments)."""
        opened = []
        for base in swaps:
            swap = LogSegment.open(self.path, base, self.config, suffix=SWAP_SUFFIX, cache=self._cache)
            swap.recover()
            opened.append(swap)
        for swap in opened:
            lo, hi = swap.base_offset, max(swap.next_offset, swap.base_offset + 1)
            for old_base in sorted(segments):
                seg = segments[old_base]
                if old_base < hi and max(seg.next_offset, old_base + 1) > lo:
                    segments.pop(old_base).delete()
        for swap in opened:
            swap.change_suffix("")
            segments[swap.base_offset] = swap
        if swaps:
            fsync_dir(self.path)

    def _load_txn_indexes(self) -> None:
        """Open the ``.txnindex`` files there are (most segments have none), check each,
        and set :attr:`txn_index_rebuild_from` where one cannot be trusted: from the
        first segment recovery rescanned (its markers and index entries may disagree
        after a crash) or the first whose file fails its check."""
        bases = {s.base_offset for s in self._segments}
        rebuild = []
        if self.recovered:
            rebuild.append(min(r.base_offset for r in self.recovered))
        for seg in self._segments:
            if seg.base_offset not in self._txn_index_files:
                continue
            idx = TransactionIndex(seg.file_path(TXN_INDEX_SUFFIX), seg.base_offset)
            try:
                idx.sanity_check(seg.upper_bound_offset)
            except CorruptTxnIndexError as exc:
                _logger.warning("%s: %s; the transaction index is rebuilt from the log's markers from "
                                "offset %d on", self._describe(), exc, seg.base_offset)
                idx.reset()
                rebuild.append(seg.base_offset)
            self._txn_indexes[seg.base_offset] = idx
        self._txn_flat = None
        self._txn_index_files &= bases
        self._txn_rebuild_from = min(rebuild) if rebuild and self._log_end_offset > self._log_start_offset else None

    def _txn_index(self, seg: LogSegment) -> TransactionIndex:
        idx = self._txn_indexes.get(seg.base_offset)
        if idx is None or idx.path != seg.file_path(TXN_INDEX_SUFFIX):
            idx = self._txn_indexes[seg.base_offset] = TransactionIndex(seg.file_path(TXN_INDEX_SUFFIX),
                                                                        seg.base_offset)
            self._txn_flat = None
            idx._entries = []   # a segment without a file has no entry
        return idx

    def _forget_txn_indexes(self) -> None:
        """Drop the indexes of segments no longer in the log (their files went with them)."""
        live = {s.base_offset for s in self._segments}
        for base in [b for b in self._txn_indexes if b not in live]:
            del self._txn_indexes[base]
        self._txn_flat = None

    @property
    def txn_index_rebuild_from(self) -> int | None:
        """The offset from which the ``.txnindex`` files wait for
        :meth:`rebuild_txn_indexes` (after an unclean shutdown or a damaged file), None
        when they are all trusted."""
        return self._txn_rebuild_from

    def append_aborted_txn(self, txn: AbortedTxn) -> None:
        """Add an aborted transaction to the ``.txnindex`` of the segment holding its
        marker (``txn.last_offset``, normally in the active segment).  Call it in the
        same hold of :attr:`lock` as the marker's append.

        Raises
        ------
        ValueError
            The marker offset is not in the log, or not after the index's last entry.
        """
        with self._lock:
            self._check_open()
            if not self._log_start_offset <= txn.last_offset < self._log_end_offset:
                raise ValueError(f"marker offset {txn.last_offset} is not in the log "
                                 f"[{self._log_start_offset}, {self._log_end_offset})")
            seg = self._segments[bisect.bisect_right(self._bases, txn.last_offset) - 1]
            self._txn_index(seg).append(txn)
            flat = self._txn_flat
            if flat is not None and (not flat[0] or flat[0][-1] < txn.last_offset):
                flat[0].append(txn.last_offset)
                flat[1].append(txn)
            else:
                self._txn_flat = None

    def collect_aborted_transactions(self, start_offset: int, upper_bound_offset: int) -> list[tuple[int, int]]:
        """``(producer_id, first_offset)`` of the aborted transactions overlapping
        ``[start_offset, upper_bound_offset)``, from the ``.txnindex`` files of the
        segment holding ``start_offset`` and the ones after it (an abort whose marker
        lies below that segment ends before ``start_offset``; one whose marker lies in
        a later segment may still begin in the range), stopping early as Kafka's
        ``collectAbortedTransactions``: an entry whose LSO reaches the range's end
        closes the search (a later abort overlapping the range would have been open
        then, and held that LSO lower).  The entries of all segments are searched as
        one list, marker order, from the first whose marker is at or past
        ``start_offset`` (the ones before end below the range).  Headers only: no record
        is read."""
        out: list[tuple[int, int]] = []
        if not self._txn_indexes:
            return out
        with self._lock:
            flat = self._txn_flat
            if flat is None:
                entries = [e for base in sorted(self._txn_indexes) for e in self._txn_indexes[base].entries]
                flat = self._txn_flat = ([e.last_offset for e in entries], entries)
            lasts, entries = flat
            for i in range(bisect.bisect_left(lasts, start_offset), len(entries)):
                pid, first, _last, lso = entries[i]
                if first < upper_bound_offset:
                    out.append((pid, first))
                if lso >= upper_bound_offset:
                    break
        return out

    def aborted_transactions(self) -> list[AbortedTxn]:
        """Every entry of every ``.txnindex``, oldest first (tools, tests)."""
        with self._lock:
            return [e for seg in self._segments
                    for e in (self._txn_indexes[seg.base_offset].entries
                              if seg.base_offset in self._txn_indexes else ())]

    def rebuild_txn_indexes(self, from_offset: int, aborted: Sequence[AbortedTxn]) -> None:
        """Replace the ``.txnindex`` of every segment from the one holding
        ``from_offset`` on with ``aborted`` (the aborts whose markers lie there, in
        marker order; others are ignored), and trust the indexes again."""
        with self._lock:
            self._check_open()
            i = max(bisect.bisect_right(self._bases, from_offset) - 1, 0)
            first = self._segments[i].base_offset
            for seg in self._segments[i:]:
                self._txn_index(seg).reset()
            for txn in aborted:
                if first <= txn.last_offset < self._log_end_offset:
                    seg = self._segments[bisect.bisect_right(self._bases, txn.last_offset) - 1]
                    self._txn_index(seg).append(txn)
            self._forget_txn_indexes()
            for base in [b for b, idx in self._txn_indexes.items() if b >= first and not idx.entries]:
                del self._txn_indexes[base]    # no file, nothing to search
            if self._txn_rebuild_from is not None and self._txn_rebuild_from >= first:
                self._txn_rebuild_from = None

    def _load_epochs(self) -> None:
        """Read ``leader-epoch-checkpoint``, add the epochs of the batches recovery just
        scanned (they may be newer than the file), and clip it to the log's bounds."""
        path = os.path.join(self.path, LEADER_EPOCH_CHECKPOINT)
        epochs = LeaderEpochCache.load(path)
        first = self._first_recovered
        if epochs.load_error is not None or (not os.path.exists(path) and self._log_end_offset > self._log_start_offset):
            # Damaged, or lost while the log holds batches: rebuild it from all of them.
            _logger.warning("%s; rebuilding the leader epoch cache from the batches of all %d segment(s)",
                            epochs.load_error or f"{path}: missing", len(self._segments))
            first = 0
        if first >= 0:
            for seg in self._segments[first:]:
                mm, _ = seg._readable()
                for epoch, start in _core.leader_epoch_starts(mm, 0, seg.size, epochs.latest_epoch):
                    epochs.assign(epoch, start)
        epochs.truncate_from_end(self._log_end_offset)
        epochs.truncate_from_start(self._log_start_offset)
        if epochs.load_error is None and not os.path.exists(path) and not epochs.entries \
                and self._log_end_offset == self._log_start_offset:
            # A new, empty log: its empty checkpoint need not be durable (a crash that loses
            # it loses nothing; Kafka creates the file unsynced too).  Creating partitions
            # (a broker's 50 __consumer_offsets ones at its first start) then costs no fsync
            # of the file and its directory each; the next flush (sync) writes it durably.
            epochs._write(durable=False)
        elif epochs.load_error is not None or not os.path.exists(path):
            epochs.flush()
        self._epochs = epochs
        self._latest_epoch = epochs.latest_epoch

    def _recover_from(self, recovery_point: int) -> None:
        """Recover every segment holding offsets at or past ``recovery_point``."""
        segs = self._segments
        first = max(bisect.bisect_right(self._bases, recovery_point) - 1, 0)
        self._first_recovered = first
        i = first
        while i < len(segs):
            seg = segs[i]
            info = seg.recover(self._max_batch_size())
            self.recovered.append(info)
            if info.reason is not None or info.dropped_records:
                self._warn_truncation(seg, info, "recovery after an unclean shutdown")
            if info.reason is not None and i + 1 < len(segs):
                # Damage inside the unflushed part of the log: nothing after it can be
                # trusted to follow on (Kafka deletes those segments too).
                gone = segs[i + 1:]
                _logger.warning(
                    "%s: deleting %d unflushed segment(s) after the damage in segment %d: offsets "
                    "%d..%d (bases %s) are dropped", self._describe(), len(gone), seg.base_offset,
                    gone[0].base_offset, max(gone[-1].next_offset - 1, gone[0].base_offset),
                    ", ".join(str(g.base_offset) for g in gone))
                for g in gone:
                    g.delete()
                del segs[i + 1:]
                seg.upper_bound_offset = None
                break
            i += 1
        self._bases = [s.base_offset for s in segs]

    def _check_unrecovered(self) -> None:
        """The open-time check of every segment recovery did not scan (all of them after
        a clean shutdown): each sealed one must end where its index says, with whole
        batches (a cheap check, headers only); the last one, about to take appends, has
        its tail past the last index entry CRC-checked too, so a clean-shutdown marker
        never makes the log trust (and append after) a tail it has not read.  A segment
        that fails is recovered (CRC-checked, truncated at the damage, indexes rebuilt)
        with a warning; the segments after it stay (they are intact, flushed data)."""
        segs = self._segments
        stop = self._first_recovered if self._first_recovered >= 0 else len(segs)
        last = len(segs) - 1
        for i in range(stop):
            seg = segs[i]
            problem = seg.check_tail(check_crc=i == last, max_batch_size=self._max_batch_size())
            if problem is None:
                continue
            info = seg.recover(self._max_batch_size())
            self.recovered.append(info)
            self._warn_truncation(seg, info, problem)

    def _max_batch_size(self) -> int:
        return max(self.config.max_message_bytes, _core.DEFAULT_MAX_BATCH_SIZE)

    def _describe(self) -> str:
        """The partition as a log message names it: ``topic-partition (directory)``."""
        tp = self.topic_partition
        return f"{tp[0]}-{tp[1]} ({self.path})" if tp is not None else self.path

    def _warn_truncation(self, seg: LogSegment, info: RecoveryInfo, why: str) -> None:
        """Kafka's warning when recovery cuts a segment: which partition, which file,
        what was dropped and why."""
        cause = info.reason or ("zeros after the last batch" if info.zero_tail else why)
        if info.dropped_records:
            dropped = (f"dropped {info.dropped_records} record(s) at offsets {info.next_offset}.."
                       f"{info.dropped_last_offset} (as far as the removed headers tell)")
        else:
            dropped = f"no whole batch was in the {info.truncated_bytes} bytes removed"
        upper = seg.upper_bound_offset
        gap = ""
        if upper is not None and info.next_offset < upper:
            # A sealed segment: what the removed bytes held is not in the log any more, up to
            # where the next segment starts (the headers read above may not tell it all).
            gap = (f"; offsets {info.next_offset}..{upper - 1} are no longer in the log (the next "
                   f"segment starts at {upper}): consumers skip them")
        _logger.warning("%s: segment %s truncated from %d to %d bytes at the first invalid batch "
                        "(%s) [%s]: %s; this segment now ends at offset %d%s", self._describe(), seg.path,
                        info.valid_bytes + info.truncated_bytes, info.valid_bytes, cause, why,
                        dropped, info.next_offset - 1, gap)

    # -- properties ----------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        """First offset a read may ask for."""
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        """Offset the next appended record gets (last offset + 1)."""
        return self._log_end_offset

    @property
    def recovery_point(self) -> int:
        """Offsets below this were flushed (fsynced) and are not rescanned after a crash."""
        return self._recovery_point

    @property
    def size(self) -> int:
        """Total valid bytes in all segments."""
        with self._lock:
            return sum(s.size for s in self._segments)

    @property
    def segments(self) -> tuple[LogSegment, ...]:
        """The segments, oldest first; the last is the active one.  A snapshot: take the
        log's lock (``with log.lock:``) to keep it current while you use it."""
        with self._lock:
            return tuple(self._segments)

    @property
    def active_segment(self) -> LogSegment:
        return self._segments[-1]

    @property
    def lock(self) -> _core.LogLock:
        """The log's lock, for maintenance code (the cleaner) that must see a stable
        segment list across several calls."""
        return self._lock

    @property
    def closed(self) -> bool:
        return self._closed

    def segments_in_range(self, from_offset: int, to_offset: int) -> list[LogSegment]:
        """Segments that may hold offsets in ``[from_offset, to_offset)``."""
        with self._lock:
            i = max(bisect.bisect_right(self._bases, from_offset) - 1, 0)
            j = bisect.bisect_left(self._bases, to_offset)
            return self._segments[i:j]

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"log {self.path} is closed")

    # -- appending -----------------------------------------------------------------
    # append() is LogBase.append (pylog/_log.pxi): the whole per-append path in C.

    def update_config(self, config: LogConfig | None = None, **settings) -> None:
        """Apply new settings to the open log (a topic's configs changed): a
        :class:`LogConfig`, or keywords replacing fields of the current one.  Everything
        applies to the next append; ``segment_bytes`` and ``segment_index_bytes`` size a
        segment when it is created, so a change to either rolls a non-empty active
        segment and applies from the new one.

        Raises InvalidConfigError for an unknown or out-of-range setting (nothing changes)."""
        with self._lock:
            self._check_open()
            base = config if config is not None else self.config
            new = base.replace(**settings) if settings else base
            old, self.config = self.config, new
            self._flush_policy = new.flush_messages is not None or new.flush_ms is not None
            active = self._segments[-1]
            active.reconfigure(new)
            if ((old.segment_bytes, old.segment_index_bytes) != (new.segment_bytes, new.segment_index_bytes)
                    and active.size):
                self._roll(self._log_end_offset)

    def assign_epoch(self, epoch: int, start_offset: int) -> None:
        """Record in the leader epoch cache that ``epoch`` starts at ``start_offset``
        (a new leader's epoch, before it appends in it), written to
        ``leader-epoch-checkpoint`` durably before this returns.  Not thread-safe: the
        caller serialises it with the partition's appends."""
        self._assign_epoch(epoch, start_offset)

    def _assign_epoch(self, epoch: int, start_offset: int, durable: bool = True) -> None:
        # Appends pass durable=False: the checkpoint is written (durably) before the
        # recovery point passes start_offset (see _sync_epochs and leader_epoch's docstring).
        self._epochs.assign(epoch, start_offset, durable=durable)
        self._latest_epoch = self._epochs.latest_epoch

    def _sync_epochs(self) -> None:
        """Before the recovery point moves on: a new epoch an append recorded is written
        to the checkpoint durably, as recovery will no longer rescan the batches that
        carry it."""
        self._epochs.sync()

    # -- leader epochs ---------------------------------------------------------------

    @property
    def leader_epochs(self) -> tuple[EpochEntry, ...]:
        """The leader epoch cache: ``(epoch, start_offset)`` entries, oldest first, as
        ``leader-epoch-checkpoint`` holds them.  Filled by appends that carry a
        ``leader_epoch`` (or, for replica appends, by the epochs in the batches)."""
        with self._lock:
            return self._epochs.entries

    @property
    def latest_epoch(self) -> int:
        """The newest leader epoch in the log, -1 when none is known."""
        return self._latest_epoch

    def append_may_fsync(self, leader_epoch: int | None = None) -> bool:
        """Whether an :meth:`append` may fsync before it returns: the log has a flush
        policy (``flush_messages`` / ``flush_ms``).  (A new ``leader_epoch`` does not:
        ``leader-epoch-checkpoint`` is written at the next flush.)  For a caller on an
        event loop, which then appends from a thread.  Lock-free: a hint, exact unless
        the config changes meanwhile."""
        return self._flush_policy

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """Kafka's OffsetForLeaderEpoch: ``(epoch, end_offset)`` where ``end_offset`` is
        the first offset of the next newer epoch (the log end offset for the newest), and
        ``epoch`` the largest known epoch at or below the one asked; ``(-1, -1)`` when the
        epoch is newer than any known, or none is known."""
        with self._lock:
            self._check_open()
            return self._epochs.end_offset_for(epoch, self._log_end_offset)

    def roll(self) -> LogSegment:
        """Seal the active segment and start a new one at the log end offset (a no-op
        returning the active segment when it is empty).  Returns the active segment."""
        with self._lock:
            self._check_open()
            if self._segments[-1].size == 0:
                return self._segments[-1]
            return self._roll(self._log_end_offset)

    def _roll(self, base_offset: int) -> LogSegment:
        old = self._segments[-1]
        if old.size == 0 and old.base_offset == base_offset:
            return old
        if old.base_offset >= base_offset:
            raise KafkaStorageError(f"cannot roll to {base_offset}: the active segment starts at {old.base_offset}")
        old.seal()
        new = LogSegment.create(self.path, base_offset, self.config, cache=self._cache)
        old.upper_bound_offset = base_offset
        self._segments.append(new)
        self._bases.append(base_offset)
        if self._recovery_point < base_offset:
            _flusher.submit(self, base_offset)
        for listener in self._roll_listeners:
            try:
                listener(self)
            except Exception:  # a listener's failure must not fail the append that rolled
                _logger.exception("roll listener %r failed for %s", listener, self.path)
        return new

    def _flush_sealed_upto(self, offset: int) -> None:
        """Kafka's flush after a roll (run by the background flusher): fsync the sealed
        segments below ``offset`` that lie past the recovery point, then advance the
        recovery point to ``offset``, so a crash rescans only what came later."""
        with self._lock:
            if self._closed or self._recovery_point >= offset or offset > self._log_end_offset:
                return
            truncations = self._truncations
            i = max(bisect.bisect_right(self._bases, self._recovery_point) - 1, 0)
            j = bisect.bisect_left(self._bases, offset)
            pending = [seg for seg in self._segments[i:j] if not seg.is_active]
        try:
            for seg in pending:   # sealed: fsynced through their own descriptors, lock not held
                seg.flush()
            fsync_dir(self.path)
        except FileNotFoundError:
            return                # the log was deleted meanwhile: nothing left to make durable
        with self._lock:
            if not self._closed and self._truncations == truncations and offset <= self._log_end_offset:
                self._sync_epochs()
                self._recovery_point = max(self._recovery_point, offset)
                self._write_own_checkpoints()

    # -- reading -------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int = 1024 * 1024, max_offset: int | None = None) -> ReadResult:
        """Whole batches starting with the one that holds ``offset``.

        Parameters
        ----------
        offset : int
            The first offset wanted; a batch holding it is returned whole (it may start
            below ``offset``, as Kafka's fetch does).
        max_bytes : int
            Stop before a batch that would take the result past this; at least one whole
            batch is always returned, however large (Kafka's KIP-74).
        max_offset : int, optional
            Exclusive bound: only batches whose last offset is below it (e.g. a high
            watermark).  Default: the log end offset.

        Returns
        -------
        ReadResult
            Zero-copy memoryview plus (file, position, size) for sendfile.  Empty at the
            log end offset.  Batches come from one segment per read; ask again at
            ``result.next_offset`` for more.

        Raises
        ------
        OffsetOutOfRangeError
            ``offset`` is below the log start offset or above the log end offset.
        CorruptRecordError
            A batch header on the way to (or in) the answer is inconsistent: damage the
            open-time checks did not see (they read segment tails only).  Logged once per
            place; ``resume_offset`` is the next offset a read can be answered from (the
            next segment's base offset, or the log end offset), ``segment_path`` and
            ``position`` say where.  A record whose CRC alone is wrong is returned as
            stored, as Kafka does: the client's CRC check reports it.
        """
        with self._lock:
            self._check_open()
            leo, start = self._log_end_offset, self._log_start_offset
            if offset < start or offset > leo:
                raise OffsetOutOfRangeError(
                    f"offset {offset} is out of range: the log holds [{start}, {leo})")
            bound = leo if max_offset is None else min(max_offset, leo)
            segs = self._segments
            i = bisect.bisect_right(self._bases, offset) - 1
            if i < 0:
                i = 0
            if offset < bound:
                while i < len(segs):
                    seg = segs[i]
                    upper = seg.upper_bound_offset
                    try:
                        mm, handle, pos, length, first, last = seg.read(
                            offset, max_bytes, bound, leo if upper is None else upper)
                    except CorruptRecordError as exc:
                        raise self._read_damage(seg, exc, leo if upper is None else upper) from None
                    if length or pos < seg.size:
                        return ReadResult(memoryview(mm)[pos:pos + length], handle, seg.path, pos,
                                          length, offset, first, last, start, leo, seg.base_offset)
                    i += 1
            seg = segs[min(i, len(segs) - 1)]
            mm, handle = seg._readable()
            return ReadResult(memoryview(b""), handle, seg.path, seg.size, 0, offset, -1, -1,
                              start, leo, seg.base_offset)

    def _read_damage(self, seg: LogSegment, exc: CorruptRecordError, resume: int) -> CorruptRecordError:
        """The error a read answers at damage in a segment (Fetch: CORRUPT_MESSAGE, as
        Kafka answers a batch whose header does not parse), logged once per place."""
        position = getattr(exc, "position", -1)
        key = (seg.base_offset, position)
        msg = (f"{self._describe()}: segment {seg.path} is corrupt at byte {position}: {exc}; "
               f"reads there answer this error (the next segment, or the log end, starts at "
               f"offset {resume})")
        if key not in self._reported_damage:
            self._reported_damage.add(key)
            _logger.error("%s", msg)
        err = CorruptRecordError(msg)
        err.position = position
        err.segment_path = seg.path
        err.resume_offset = resume
        return err

    def offset_for_timestamp(self, timestamp: int) -> TimestampOffset | None:
        """Kafka's ListOffsets for this log (UnifiedLog.fetchOffsetByTimestamp), answered
        at record level for compressed and uncompressed batches alike.

        ``timestamp`` >= 0: the first segment whose largest timestamp (its file's
        modification time when it holds none) is >= ``timestamp`` answers alone, with
        its first record, in offset order at or above the log start offset, whose
        timestamp is >= ``timestamp`` (time index, offset index, then the records of each
        batch whose maxTimestamp qualifies, decompressed and walked in Cython); None when
        that segment has no such record.  Segments wholly below the log start offset are
        skipped (retention deletes them).  ``LATEST_TIMESTAMP`` (-1): ``(-1,
        log_end_offset)``; ``EARLIEST_TIMESTAMP`` (-2): ``(-1, log_start_offset)``;
        ``MAX_TIMESTAMP`` (-3): in the first segment holding the log's largest timestamp,
        the first batch with that maxTimestamp and in it the first record with that
        timestamp (Kafka since KAFKA-16310; like Kafka, the log start offset is not
        applied).
        """
        with self._lock:
            self._check_open()
            start = self._log_start_offset
            if timestamp == LATEST_TIMESTAMP:
                return TimestampOffset(-1, self._log_end_offset)
            if timestamp == EARLIEST_TIMESTAMP:
                return TimestampOffset(-1, start)
            if timestamp == MAX_TIMESTAMP:
                best = None
                for seg in self._segments:
                    if best is None or seg.max_timestamp > best.max_timestamp:
                        best = seg
                hit = best.find_offset_of_max_timestamp() if best is not None else None
            elif timestamp < 0:
                raise InvalidRequestError(f"timestamp {timestamp} is neither >= 0 nor -1, -2 or -3")
            else:
                hit = None
                for seg in self._segments:
                    if seg.next_offset <= start:
                        continue
                    largest = seg.max_timestamp
                    if largest < 0:
                        largest = seg.largest_timestamp  # its file's modification time
                    if largest >= timestamp:
                        hit = seg.find_offset_by_timestamp(timestamp, start)
                        break
            return TimestampOffset(hit[1], hit[0]) if hit is not None else None

    # -- truncation and deletion ---------------------------------------------------

    def truncate_to(self, offset: int) -> bool:
        """Remove every record at or above ``offset`` (a replica diverging from its
        leader).  A batch holding ``offset`` goes whole, so the log end offset becomes
        ``offset`` or that batch's base offset, whichever is lower, but never less than
        the log start offset.  Truncating below the log start offset empties the log and
        restarts it at ``offset``.  Returns whether anything was removed.

        The new log end offset survives a crash even when it lies in a gap left by
        compaction (a new, empty segment is then started at it)."""
        if offset < 0:
            raise OffsetOutOfRangeError(f"cannot truncate to negative offset {offset}")
        with self._lock:
            self._check_open()
            if offset >= self._log_end_offset:
                # Nothing to remove, but a leader that never appended in its epoch left
                # that epoch starting at the log end offset: as a follower it must go, or
                # its next fetch names an epoch the new leader never had (Kafka trims it
                # here too).
                self._epochs.truncate_from_end(self._log_end_offset)
                self._latest_epoch = self._epochs.latest_epoch
                return False
            if offset < self._log_start_offset:
                self._truncate_fully_and_start_at(offset)
                self._notify_truncation()
                return True
            segs = self._segments
            keep = bisect.bisect_right(self._bases, offset)  # segments with base <= offset
            for seg in segs[keep:]:
                seg.delete()
            del segs[keep:]
            self._bases = self._bases[:keep]
            seg = segs[-1]
            seg.upper_bound_offset = None
            seg.activate()
            position, removed_base, _ = seg.translate_offset(offset)
            seg.truncate_to(offset)
            new_leo = min(offset, removed_base) if removed_base >= 0 else offset
            # Never below the log start (a removed batch may have begun below it): the log
            # is then empty at its start, and offsets below it are never handed out again.
            new_leo = max(new_leo, seg.base_offset, self._log_start_offset)
            self._forget_txn_indexes()
            idx = self._txn_indexes.get(seg.base_offset)
            if idx is not None:
                idx.truncate_to(new_leo)
                self._txn_flat = None
            if self._txn_rebuild_from is not None and self._txn_rebuild_from >= new_leo:
                self._txn_rebuild_from = None
            if new_leo > seg.next_offset:
                # The log now ends in a gap (offsets a compaction removed): only a segment
                # named after the log end offset makes the files say where it is, so a
                # crash cannot bring it back lower and hand the gap's offsets out again.  (An
                # emptied segment stays, sealed at zero bytes, so the log start stays too.)
                self._roll(new_leo)
            self._log_end_offset = new_leo
            self._epochs.truncate_from_end(new_leo)
            self._latest_epoch = self._epochs.latest_epoch
            self._recovery_point = min(self._recovery_point, self._log_end_offset)
            fsync_dir(self.path)
            self._notify_truncation()
            return True

    @property
    def truncation_count(self) -> int:
        """How many :meth:`truncate_to` calls removed data since the log was opened (a
        maintenance task compares it before and after its work)."""
        return self._truncations

    def add_truncation_listener(self, listener: Callable[["Log", int], None]) -> None:
        """Call ``listener(log, new_log_end_offset)`` after each :meth:`truncate_to` that
        removes data, under the log's lock: it must be quick and must not wait for
        anything that may be waiting for this log (the log cleaner lowers its checkpoint
        here, as Kafka's does)."""
        with self._lock:
            if listener not in self._truncation_listeners:
                self._truncation_listeners.append(listener)

    def add_roll_listener(self, listener: Callable[["Log"], None]) -> None:
        """Call ``listener(log)`` after each roll (a new active segment), under the log's
        lock, from the thread that rolled (an append's, usually): it must be quick and
        must not wait for anything (the broker queues the partition for a producer-state
        snapshot, which Kafka takes at the roll)."""
        with self._lock:
            if listener not in self._roll_listeners:
                self._roll_listeners.append(listener)

    def _notify_truncation(self) -> None:
        self._truncations += 1
        for listener in list(self._truncation_listeners):
            try:
                listener(self, self._log_end_offset)
            except Exception:  # a listener's failure must not fail the truncation
                _logger.exception("truncation listener %r failed for %s", listener, self.path)

    def _truncate_fully_and_start_at(self, offset: int) -> None:
        for seg in self._segments:
            seg.delete()
        self._segments = [LogSegment.create(self.path, offset, self.config, cache=self._cache)]
        self._bases = [offset]
        self._txn_indexes.clear()
        self._txn_flat = None
        self._txn_rebuild_from = None
        self._log_start_offset = self._log_end_offset = self._recovery_point = offset
        self._epochs.clear()
        self._latest_epoch = -1
        fsync_dir(self.path)
        self._write_own_checkpoints(force=True)

    def delete_records_before(self, offset: int) -> int:
        """Advance the log start offset to ``offset`` (Kafka's DeleteRecords) and delete
        the whole segments that lie below it (never the active one).  Returns the new log
        start offset.

        Raises
        ------
        OffsetOutOfRangeError
            ``offset`` is above the log end offset.
        """
        with self._lock:
            self._check_open()
            if offset > self._log_end_offset:
                raise OffsetOutOfRangeError(
                    f"cannot delete records before {offset}: the log end offset is {self._log_end_offset}")
            if offset > self._log_start_offset:
                self._log_start_offset = offset
                self._delete_prefix(self._start_breached_prefix())
                self._epochs.truncate_from_start(self._log_start_offset)
                self._write_own_checkpoints(force=True)
            return self._log_start_offset

    def _start_breached_prefix(self) -> int:
        n = 0
        segs = self._segments
        while n < len(segs) - 1 and segs[n + 1].base_offset <= self._log_start_offset:
            n += 1
        return n

    def _delete_prefix(self, n: int) -> tuple[list[int], int]:
        n = min(n, len(self._segments) - 1)
        if n <= 0:
            return [], 0
        gone = self._segments[:n]
        self._segments = self._segments[n:]
        self._bases = self._bases[n:]
        for seg in gone:
            seg.delete()
        fsync_dir(self.path)
        self._forget_txn_indexes()
        self._log_start_offset = max(self._log_start_offset, self._segments[0].base_offset)
        self._recovery_point = max(self._recovery_point, self._segments[0].base_offset)
        self._epochs.truncate_from_start(self._log_start_offset)
        return [s.base_offset for s in gone], sum(s.size for s in gone)

    def apply_retention(self, now_ms: int | None = None) -> RetentionResult:
        """Delete whole segments past retention, oldest first, never the active one.

        With ``cleanup_policy`` containing ``delete``: segments whose largest timestamp is
        more than ``retention_ms`` before ``now_ms``, and the oldest segments while the log
        is more than ``retention_bytes`` large.  Always: segments wholly below the log
        start offset.  The log start offset advances to the first remaining segment.
        """
        with self._lock:
            self._check_open()
            cfg = self.config
            now = self._clock() if now_ms is None else now_ms
            segs = self._segments
            candidates = len(segs) - 1
            prefix = self._start_breached_prefix()
            if "delete" in cfg.cleanup_policy:
                if cfg.retention_ms >= 0:
                    n = 0
                    while n < candidates and now - segs[n].largest_timestamp > cfg.retention_ms:
                        n += 1
                    prefix = max(prefix, n)
                if cfg.retention_bytes >= 0:
                    diff = sum(s.size for s in segs) - cfg.retention_bytes
                    n = 0
                    while n < candidates and diff - segs[n].size >= 0:
                        diff -= segs[n].size
                        n += 1
                    prefix = max(prefix, n)
            deleted, nbytes = self._delete_prefix(prefix)
            if deleted:
                self._write_own_checkpoints(force=True)
            return RetentionResult(tuple(deleted), nbytes, self._log_start_offset)

    # -- maintenance seams (log cleaner) -------------------------------------------

    def new_segment(self, base_offset: int, suffix: str = CLEANED_SUFFIX, *,
                    capacity: int | None = None) -> LogSegment:
        """Create an empty, appendable segment named ``<base_offset>.log<suffix>`` in this
        log's directory (not part of the log) for a replacement to be written into, with
        room for ``capacity`` bytes (default ``segment_bytes``; a cleaner grouping segments
        passes their total size).

        Fill it with :meth:`LogSegment.append` (batches validated by
        ``_core.validate_batches``, offsets kept), then :meth:`LogSegment.seal` it and hand
        it to :meth:`replace_segments`.  A crash before the swap leaves a ``.cleaned``
        file, which the next open deletes.
        """
        return LogSegment.create(self.path, base_offset, self.config, suffix=suffix, cache=self._cache,
                                 capacity=capacity)

    def replace_segments(self, new_segments: Sequence[LogSegment], old_segments: Sequence[LogSegment]) -> None:
        """Swap ``new_segments`` (sealed ``.cleaned`` segments from :meth:`new_segment`)
        in for ``old_segments`` (current, non-active segments of this log), crash-safely.

        Kafka's protocol: (1) flush the new segments and rename them ``.cleaned`` ->
        ``.swap``, highest base offset first (the commit point is the rename of the
        lowest); (2) rename the old segments to ``.deleted``; (3) rename ``.swap`` -> live;
        (4) delete the ``.deleted`` files.  Each step is made durable (directory fsync)
        before the next.  The new segments' data is fsynced, and the old files unlinked,
        without the log's lock (nobody else can see those files then), so appends and
        reads wait only for the renames and directory fsyncs.  On open, a ``.swap`` at
        or above a remaining ``.cleaned`` is an uncommitted swap and is deleted with the
        ``.cleaned`` and ``.deleted`` files (the old segments stay); the other ``.swap``
        segments complete the swap, each replacing the live segments whose offsets
        overlap its own.  The new segments' offsets must lie within the old segments'
        range.
        """
        news = sorted(new_segments, key=lambda s: s.base_offset)
        for seg in news:
            if seg.is_active:
                raise ValueError(f"{seg!r} must be sealed before it is swapped in")
            seg.flush()   # still .cleaned, the cleaner's own: no lock needed
        with self._lock:
            self._check_open()
            olds = list(old_segments)
            if not olds:
                raise ValueError("replace_segments needs at least one old segment")
            for seg in olds:
                if seg not in self._segments:
                    raise ValueError(f"{seg!r} is not a segment of this log")
                if seg is self._segments[-1]:
                    raise ValueError("the active segment cannot be replaced")
            lo = min(s.base_offset for s in olds)
            hi = max(s.upper_bound_offset for s in olds)
            for seg in news:
                if not lo <= seg.base_offset < hi:
                    raise ValueError(f"{seg!r} lies outside the replaced range [{lo}, {hi})")
            # Highest base offset first: until the lowest is renamed, a crash leaves a
            # .cleaned below every .swap, and the next open rolls the whole swap back.
            for seg in reversed(news):
                seg.change_suffix(SWAP_SUFFIX)
            fsync_dir(self.path)
            for seg in olds:
                seg.close()
                seg.change_suffix(DELETED_SUFFIX)
            fsync_dir(self.path)
            for seg in news:
                seg.change_suffix("")
            fsync_dir(self.path)
            remaining = [s for s in self._segments if not any(s is o for o in olds)]
            # The replaced segments' .txnindex files went with them; the cleaner drops the
            # data of aborted transactions, so its output needs no entries.
            for seg in olds:
                self._txn_indexes.pop(seg.base_offset, None)
            self._txn_flat = None
            self._segments = sorted(remaining + news, key=lambda s: s.base_offset)
            self._bases = [s.base_offset for s in self._segments]
            for seg, nxt in zip(self._segments, self._segments[1:]):
                seg.upper_bound_offset = nxt.base_offset
        # Out of the log now, closed and named .deleted (an open deletes any left by a
        # crash): unlinking large files need not hold up appends.
        for seg in olds:
            seg.delete()

    # -- durability ----------------------------------------------------------------

    def flush(self) -> None:
        """fsync every segment written since the last flush and advance the recovery
        point to the log end offset."""
        with self._lock:
            self._check_open()
            self._flush_locked()

    def _flush_locked(self) -> None:
        rp = self._recovery_point
        if rp < self._log_end_offset or self._unflushed_messages:
            i = max(bisect.bisect_right(self._bases, rp) - 1, 0)
            for seg in self._segments[i:]:
                seg.flush()
            idx = self._txn_indexes.get(self._segments[-1].base_offset)
            if idx is not None:   # a sealed segment's flush covers its .txnindex
                idx.flush()
            self._sync_epochs()
            self._recovery_point = self._log_end_offset
        self._unflushed_messages = 0
        self._last_flush_ms = self._clock()
        self._write_own_checkpoints()

    def maybe_flush(self, now_ms: int | None = None) -> bool:
        """Flush if the flush policy (``flush_messages`` / ``flush_ms``) says so; for a
        timer to call.  Returns whether it flushed."""
        with self._lock:
            self._check_open()
            return self._maybe_flush_locked(now_ms)

    def _maybe_flush_locked(self, now_ms: int | None = None) -> bool:
        cfg = self.config
        due = cfg.flush_messages is not None and self._unflushed_messages >= cfg.flush_messages
        if not due and cfg.flush_ms is not None:
            now = self._clock() if now_ms is None else now_ms
            due = now - self._last_flush_ms >= cfg.flush_ms and self._recovery_point < self._log_end_offset
        if due:
            self._flush_locked()
        return due

    def _write_own_checkpoints(self, force: bool = False) -> None:
        if self._managed:
            return
        now = _wall_ms()
        if not force and now - self._last_checkpoint_ms < _CHECKPOINT_INTERVAL_MS:
            return
        key = self._tp_key()
        CheckpointFile(os.path.join(self.path, RECOVERY_POINT_CHECKPOINT)).write({key: self._recovery_point})
        CheckpointFile(os.path.join(self.path, LOG_START_OFFSET_CHECKPOINT)).write({key: self._log_start_offset})
        self._last_checkpoint_ms = now

    def checkpoint(self) -> None:
        """Write a standalone log's checkpoint files now (a LogManager writes its own)."""
        with self._lock:
            self._write_own_checkpoints(force=True)

    def close(self, *, sync: bool = True) -> None:
        """Flush, trim the active segment, release everything and (standalone) write the
        checkpoints and the clean-shutdown marker.  Idempotent.

        ``sync=False`` (a LogManager's clean shutdown, for a log it manages): no fsync or
        msync here; the recovery point moves to the log end offset all the same, and the
        manager makes the whole filesystem durable (one ``syncfs``) before it writes that
        recovery point to its checkpoint, so the checkpoint never names data that is not
        on disk.  A kill before then leaves the old checkpoint and no clean-shutdown
        marker: the next open recovers from the old recovery point."""
        with self._lock:
            if self._closed:
                return
            sync = sync or not self._managed
            if sync:
                self._flush_locked()
            else:
                self._epochs.sync(durable=False)     # the manager's syncfs follows
                self._recovery_point = self._log_end_offset
                self._unflushed_messages = 0
            for seg in self._segments:
                seg.close(sync=sync)
            self._closed = True
            if not self._managed:
                self._write_own_checkpoints(force=True)
                with open(os.path.join(self.path, CLEAN_SHUTDOWN_FILE), "wb") as f:
                    os.fsync(f.fileno())
                fsync_dir(self.path)

    def delete(self) -> None:
        """Close the log and delete its directory."""
        import shutil

        with self._lock:
            if not self._closed:
                for seg in self._segments:
                    seg.close()
                self._closed = True
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "Log":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Log {self.path} [{self._log_start_offset}, {self._log_end_offset}) "
                f"{len(self._segments)} segments>")
