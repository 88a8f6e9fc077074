"""Log compaction: Kafka's log cleaner for logs with ``cleanup_policy`` ``"compact"`` or
``"compact,delete"``.

A clean keeps, of every key, the record with the greatest offset, and drops tombstones
(records with a key and a null value) once their delete horizon has passed.  Offsets never
change: records only disappear, and a read of a removed offset returns the next batch.

What a clean does (:meth:`LogCleaner.clean`):

1. Bounds.  The cleanable range is whole sealed segments from the first segment up to
   (not including) the first of: the active segment; the first dirty segment holding a
   record newer than ``min_compaction_lag_ms``; a segment reaching ``max_offset`` (pass
   the high watermark); a segment holding data of a transaction that is not decided by
   a marker inside the range.  Records from the cleaner checkpoint (the *first dirty
   offset*) on are *dirty*; below it they were cleaned before.
2. Trigger (unless ``force``): dirty bytes / cleanable bytes >= ``min_cleanable_dirty_ratio``,
   or the first dirty segment is older than ``max_compaction_lag_ms``, or a delete horizon
   the previous clean left has passed (remembered in memory: after a restart, tombstones
   whose horizon passed go at the next clean the ratio or lag calls for, or a forced one).
3. Offset map.  Key digest (SipHash-1-3, 128-bit, random key) -> greatest offset, built in
   C over the cleanable range, leaving out control batches and the data of aborted
   transactions.  The whole range goes into the map when it holds at most
   ``dedupe_buffer_size / 32`` records, so duplicates are found even in the clean section
   (a replica truncation can make re-appended data look clean); otherwise only the dirty
   section does, as in Kafka, and the range is cut so its records fit.
4. Filter.  Every batch of the range is read again and each record kept unless a later
   record has its key, it lies below the log start offset, or it is a tombstone whose
   batch's delete horizon has passed.  Records without a key are kept as they are.  The
   data of aborted transactions is dropped.  Untouched batches are copied byte for byte;
   others are re-encoded with :func:`pylog.records.filter_batch` (offsets, timestamps,
   producer fields, codec kept).
5. Write and swap.  Output goes to ``.cleaned`` segments packed up to ``segment_bytes``
   (so compaction merges small segments instead of multiplying them), each swapped in for
   the segments it replaces with :meth:`Log.replace_segments`, under the log's lock.
6. Checkpoint.  The end of the cleaned range becomes the first dirty offset.

Tombstones and transaction markers (Kafka 3.x, KIP-534): the first clean that keeps a
tombstone gives its batch a *delete horizon*: attribute bit 6 set and baseTimestamp =
``now + delete_retention_ms`` (record timestamp deltas re-based, so every record keeps its
timestamp).  A later clean at or after the horizon drops the tombstones of that batch.  A
transaction marker (COMMIT/ABORT control batch) is kept while any record of its
transaction is in the log; after that it gets a delete horizon the same way and is
dropped once it passes.  Other control batches are always kept.  When every record of an
idempotent producer's last batch in the range goes, an empty batch (header only,
offsets and producer fields kept) stays, as Kafka keeps one, so the producer's sequence
and epoch survive in the log.

On disk: ``cleaner-offset-checkpoint`` in Kafka's checkpoint format (see
:mod:`pylog.storage.checkpoint`): for the logs of a :class:`LogManager` given to the
cleaner, one file in the data directory (the manager defines the name and leaves the file
to the cleaner); for any other log, a file of the same name in the log's own directory.
A missing or unreadable checkpoint means "everything is dirty".  Segments being written
are ``<base offset>.log.cleaned`` (+ indexes), swapped in by the ``.swap`` / ``.deleted``
protocol of :meth:`Log.replace_segments`.

Crash behaviour: a crash (or an exception) at any point leaves either the old segments or
the new ones for every swapped group, never a mix with lost data: before a swap starts the
``.cleaned`` files are deleted at the next open; once a ``.swap`` file exists the next open
completes the swap.  Every record a clean drops is superseded by a record at a higher
offset of the cleanable range, which survives in old or new form, so the latest value of
every key survives any crash.  The checkpoint is written after the last swap; a crash
before it only makes the next clean redo work.

Thread safety: :class:`LogCleaner` is thread-safe; cleans of one log (by any cleaner of the
process) run one at a time.
The log's lock is held only to snapshot the segment list and for each swap; reading,
filtering and writing run while appends, reads, rolls and retention go on.  The cleaner
reads segments with ``pread`` (never through their mappings, so a concurrent truncation
cannot fault it) and, under the lock before each swap, checks that the segments it cleaned
are still in the log, sealed, and byte-for-byte what it read (a fingerprint of every
batch header, CRCs included); otherwise the clean is abandoned and its output deleted.
Readers holding a :class:`~pylog.storage.ReadResult` of a replaced segment keep valid
bytes (the old mapping stays alive); later reads see the cleaned data.  As in Kafka, a
:meth:`Log.truncate_to` during a clean aborts it (the cleaner listens to the logs it
cleans: :meth:`Log.add_truncation_listener`), and lowers the log's first dirty offset to
the new log end offset, so re-appended records are dirty again.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from dataclasses import fields
from typing import Callable, Sequence

from pylog import _core
from pylog._value import FrozenValue, frozen_dataclass
from pylog.codecs import DEFAULT_MAX_UNCOMPRESSED
from pylog.errors import CorruptRecordError, InvalidConfigError, KafkaStorageError, LogClosedError, PylogError
from pylog.storage.checkpoint import CheckpointFile, CorruptCheckpointError
from pylog.storage.log import Log
from pylog.storage.manager import CLEANER_OFFSET_CHECKPOINT, LogManager
from pylog.storage.segment import (CLEANED_SUFFIX, DELETED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, LogSegment,
                                   segment_path)

__all__ = ["LogCleaner", "CleanerStats", "CleanableInfo", "CLEANER_OFFSET_CHECKPOINT", "NO_DELETE_HORIZON"]

_logger = logging.getLogger("pylog.storage.cleaner")

#: ``min_horizon`` / delete-horizon value meaning "none".
NO_DELETE_HORIZON = 2**63 - 1
_MAX_RELATIVE_OFFSET = 0xFFFFFFFF
_MAX_BATCH = 2**31 - 1
_CONTROL_ABORT = 0
_BATCH_HEADER_SIZE = 61
# Output is handed to the segment in writes of at least this many bytes (one offset index
# entry per write at most, as in Kafka, whose cleaner appends a buffer at a time).
_MIN_WRITE_BYTES = 32 << 10
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


# One lock per log directory for every cleaner of the process: two cleans of one log would
# write the same ``.cleaned`` names.
_LOG_LOCKS: dict[str, threading.Lock] = {}
_LOG_LOCKS_GUARD = threading.Lock()


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class _Aborted(Exception):
    """The log changed under a clean (or was closed): give up, delete the output."""


class CleanableInfo(FrozenValue):
    """Where a log stands for the cleaner (:meth:`LogCleaner.inspect`).

    Attributes
    ----------
    log_start_offset, first_dirty_offset : int
        The first dirty offset comes from the cleaner checkpoint (the log start offset
        when there is none or it lies outside the log).
    cleanable_end_offset : int
        End of the whole sealed segments that may be cleaned, before transactions are
        looked at (the log start offset when there are none).
    clean_bytes, dirty_bytes : int
        Bytes of the cleanable segments below / at or after the first dirty offset.
    dirty_ratio : float
        ``dirty_bytes / (clean_bytes + dirty_bytes)`` (0 when both are 0).
    due : bool
        Whether :meth:`LogCleaner.clean` without ``force`` would clean now.
    reason : str
        Why (``"dirty_ratio"``, ``"max_compaction_lag"``, ``"delete_horizon"``) or why not
        (``"not_compacted"``, ``"nothing_to_clean"``, ``"below_min_dirty_ratio"``).
    """

    __slots__ = _fields = ("log_start_offset", "first_dirty_offset", "cleanable_end_offset", "clean_bytes",
                           "dirty_bytes", "dirty_ratio", "due", "reason")
    log_start_offset: int
    first_dirty_offset: int
    cleanable_end_offset: int
    clean_bytes: int
    dirty_bytes: int
    dirty_ratio: float
    due: bool
    reason: str

    def __init__(self, log_start_offset: int, first_dirty_offset: int, cleanable_end_offset: int, clean_bytes: int,
                 dirty_bytes: int, dirty_ratio: float, due: bool, reason: str) -> None:
        set_ = object.__setattr__
        set_(self, "log_start_offset", log_start_offset)
        set_(self, "first_dirty_offset", first_dirty_offset)
        set_(self, "cleanable_end_offset", cleanable_end_offset)
        set_(self, "clean_bytes", clean_bytes)
        set_(self, "dirty_bytes", dirty_bytes)
        set_(self, "dirty_ratio", dirty_ratio)
        set_(self, "due", due)
        set_(self, "reason", reason)


@frozen_dataclass
class CleanerStats:
    """What one :meth:`LogCleaner.clean` did.

    ``cleaned`` is False when nothing was swapped; ``reason`` then says why
    (``"not_compacted"``, ``"nothing_to_clean"``, ``"below_min_dirty_ratio"``,
    ``"transaction_in_progress"``, or ``"aborted: ..."`` when the log changed under the
    clean or was closed).  Offsets: the first dirty offset before the clean, the end of
    the cleaned range (the new first dirty offset) and where the offset map started.
    Counters are over the cleaned range: bytes read and written by the filter pass,
    records and batches kept and removed, batches re-encoded, tombstones and transaction
    markers removed, delete horizons set, empty producer batches kept; segments of the
    whole log before and after; swaps done.
    """

    cleaned: bool
    reason: str
    first_dirty_offset: int = -1
    end_offset: int = -1
    map_start_offset: int = -1
    dirty_ratio: float = 0.0
    map_entries: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    records_kept: int = 0
    records_removed: int = 0
    batches_kept: int = 0
    batches_removed: int = 0
    batches_rewritten: int = 0
    tombstones_removed: int = 0
    markers_removed: int = 0
    horizons_set: int = 0
    empty_batches: int = 0
    segments_before: int = 0
    segments_after: int = 0
    swaps: int = 0
    elapsed_ms: float = 0.0


_FILTER_COUNTERS = ("bytes_read", "bytes_written", "records_kept", "records_removed", "batches_kept",
                    "batches_removed", "batches_rewritten", "tombstones_removed", "markers_removed",
                    "horizons_set", "empty_batches")


# -- reading segments ----------------------------------------------------------------------

def _feed(seg: LogSegment, size: int, step: Callable, chunk_bytes: int) -> None:
    """Read the first ``size`` bytes of ``seg``'s ``.log`` file with pread, in chunks of
    whole batches, calling ``step(buf, pos, end, file_offset) -> (pos, need)`` until every
    batch was consumed.  ``step`` may stop early; it is called again from where it did."""
    try:
        fd = os.open(seg.path, os.O_RDONLY | _O_CLOEXEC)
    except FileNotFoundError:
        raise _Aborted(f"segment {seg.base_offset} was deleted during the clean") from None
    try:
        buf = bytearray(max(min(chunk_bytes, size), _BATCH_HEADER_SIZE))
        file_pos = 0
        while file_pos < size:
            want = min(len(buf), size - file_pos)
            with memoryview(buf) as mv:
                got = os.preadv(fd, [mv[:want]], file_pos)
            if got != want:
                raise _Aborted(f"segment {seg.base_offset} shrank during the clean")
            pos = need = 0
            while pos < want:
                new_pos, need = step(buf, pos, want, file_pos)
                if new_pos == pos:
                    break
                pos = new_pos
            if pos == 0:
                if need <= want or file_pos + need > size:
                    raise CorruptRecordError(
                        f"{seg.path}: the batch at position {file_pos} runs past the segment's "
                        f"{size} valid bytes")
                buf = bytearray(need)
                continue
            file_pos += pos
    finally:
        os.close(fd)


def _mapping(seg: LogSegment):
    """The segment's read mapping, through its public batch iterator (call under the
    log's lock: nothing can truncate the file meanwhile)."""
    for _info, view in seg.batches(0):
        return view.obj
    return b""


def _fingerprint_now(seg: LogSegment) -> tuple[int, int]:
    mm = _mapping(seg)
    return _core.batches_fingerprint(mm, 0, seg.size) if seg.size else (0, 0)


def _transactions(events: Sequence[tuple], end_offset: int) -> tuple[list[int], int | None]:
    """Aborted data batches (base offsets) and the first offset of the earliest
    transaction still open, over the transactional batches below ``end_offset``."""
    open_txns: dict[int, list[int]] = {}
    aborted: list[int] = []
    for base, _last, pid, is_control, control_type in events:
        if base >= end_offset:
            break
        if is_control:
            batches = open_txns.pop(pid, None)
            if batches and control_type == _CONTROL_ABORT:
                aborted.extend(batches)
        else:
            open_txns.setdefault(pid, []).append(base)
    first_open = min(b[0] for b in open_txns.values()) if open_txns else None
    return aborted, first_open


class _ScanStep:
    """Pass 0 over one segment: :meth:`SegmentScan.scan`, optionally filling a map."""

    __slots__ = ("scan", "offset_map", "min_offset")

    def __init__(self, scan, offset_map, min_offset: int) -> None:
        self.scan, self.offset_map, self.min_offset = scan, offset_map, min_offset

    def __call__(self, buf, pos: int, end: int, file_offset: int) -> tuple[int, int]:
        return self.scan.scan(buf, pos, end, file_offset, self.offset_map, self.min_offset)


class _MapStep:
    """Pass 1 over one segment: :meth:`OffsetMap.add_batches`, with its fingerprint."""

    __slots__ = ("offset_map", "min_offset", "aborted", "max_uncompressed", "fingerprint")

    def __init__(self, offset_map, min_offset: int, aborted, max_uncompressed: int) -> None:
        self.offset_map, self.min_offset, self.aborted = offset_map, min_offset, aborted
        self.max_uncompressed = max_uncompressed
        self.fingerprint = 0

    def __call__(self, buf, pos: int, end: int, file_offset: int) -> tuple[int, int]:
        new_pos, need, _added, self.fingerprint = self.offset_map.add_batches(
            buf, pos, end, self.min_offset, self.aborted, self.fingerprint, file_offset,
            self.max_uncompressed)
        return new_pos, need


# -- output side of a clean -----------------------------------------------------------------

class _Output:
    """Writes a clean's surviving batches into ``.cleaned`` segments and swaps them in.

    Output for consecutive old segments goes into one new segment while their expected
    output (old size times the share of bytes kept so far) fits ``segment_bytes``; a new
    segment then starts at the base offset of the old segment that would not fit, and the
    group before it is swapped in.  When output turns out larger than expected, a new
    segment starts mid-way at the next batch's base offset and the old segment straddled
    is swapped out with both; so every old segment's base offset lies within a replacing
    segment's offsets, or past all of them (what crash recovery of a ``.swap`` relies on).
    """

    def __init__(self, log: Log, check: Callable[[list, list], None]) -> None:
        self.log = log
        self.capacity = log.config.segment_bytes
        self.check = check
        self.current: LogSegment | None = None
        self.news: list[LogSegment] = []
        self.olds: list[LogSegment] = []
        self.old: LogSegment | None = None
        self.old_has_output = False
        self.unswapped: list[LogSegment] = []
        self.swaps = 0

    def begin(self, old: LogSegment, old_end: int, kept_share: float) -> None:
        cur = self.current
        if cur is not None and cur.size > 0 and (
                cur.size + old.size * kept_share > self.capacity
                or old_end - 1 - cur.base_offset > _MAX_RELATIVE_OFFSET):
            self.finish_group()
        if self.current is None:
            self.current = self._new(old.base_offset)
        self.olds.append(old)
        self.old = old
        self.old_has_output = False

    def _remove_files(self, base_offset: int) -> None:
        """Unlink a new segment's files in any of its not-yet-live names (best effort)."""
        for kind in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            for suffix in (CLEANED_SUFFIX, DELETED_SUFFIX):
                path = segment_path(self.log.path, base_offset, kind, suffix)
                if not os.path.lexists(path):
                    continue
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    _logger.warning("log cleaner: cannot remove a leftover of %s: %s", self.log.path, exc)

    def _new(self, base_offset: int) -> LogSegment:
        # Leftovers of an abandoned clean in this process (an open sweeps them too).
        self._remove_files(base_offset)
        try:
            seg = self.log.new_segment(base_offset, suffix=CLEANED_SUFFIX)
        except BaseException:
            self._remove_files(base_offset)
            raise
        self.unswapped.append(seg)
        return seg

    def write(self, data: bytes) -> None:
        """Append whole batches (validated, CRC included, before they are written)."""
        (n, size, _records, first, last, _span, max_ts, _rel, max_ts_last, _first_max,
         monotonic) = _core.validate_batches(data, _MAX_BATCH)
        if not monotonic:
            raise CorruptRecordError("cleaned batches out of offset order")
        cur = self.current
        if cur.can_hold(size, last):
            cur.append(data, size, first_offset=first, last_offset=last, max_timestamp=max_ts,
                       offset_of_max_timestamp=max_ts_last)
            self.old_has_output = True
            return
        if n > 1:
            pos = 0
            while pos < size:
                head = _core.next_batch(data, pos, size)
                self.write(data[pos:pos + head[2]])
                pos += head[2]
            return
        if cur.size == 0:
            raise KafkaStorageError(
                f"a cleaned batch of {size} bytes (offsets {first}..{last}) does not fit a segment of "
                f"segment_bytes={self.capacity}; raise segment_bytes")
        cur.seal()
        self.news.append(cur)
        self.current = self._new(first if self.old_has_output else self.old.base_offset)
        self.write(data)

    def finish_group(self) -> None:
        if self.current is None:
            return
        self.current.seal()
        self.news.append(self.current)
        self.current = None
        news, olds = self.news, self.olds
        self.news, self.olds = [], []
        self.check(news, olds)          # raises _Aborted; holds the log's lock through the swap
        self.swaps += 1

    def discard(self) -> None:
        """Delete every output segment not swapped in (after an abort)."""
        for seg in self.unswapped:
            try:
                seg.delete()
            except OSError:
                pass
            self._remove_files(seg.base_offset)
        self.unswapped = []
        self.current = None


# -- the cleaner ------------------------------------------------------------------------------

class LogCleaner:
    """Compacts logs whose ``cleanup_policy`` includes ``compact`` (see the module
    docstring for what a clean does, its on-disk files, crash behaviour and thread safety).

    Parameters
    ----------
    manager : LogManager, optional
        The logs to clean in the background (:meth:`start`) or with :meth:`clean_once`;
        their checkpoint is ``<data_dir>/cleaner-offset-checkpoint``.  :meth:`clean` works
        on any log without one.
    interval_ms : int
        Pause between background passes (Kafka's ``log.cleaner.backoff.ms``, 15 s).
    dedupe_buffer_size : int
        Memory for the offset map (Kafka's ``log.cleaner.dedupe.buffer.size``, 128 MiB);
        a clean maps at most ``dedupe_buffer_size // 32`` records.
    io_buffer_size : int
        Bytes read from a segment at a time (larger batches get a larger buffer).
    max_uncompressed : int
        Largest size a compressed batch's records may decompress to.
    clock : callable, optional
        Milliseconds since the epoch (default: wall clock) for delete horizons and lags.
    seed : bytes, optional
        16-byte key of the offset map's digests (default: random per clean).
    """

    def __init__(self, manager: LogManager | None = None, *, interval_ms: int = 15_000,
                 dedupe_buffer_size: int = 128 << 20, io_buffer_size: int = 4 << 20,
                 max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED, clock: Callable[[], int] | None = None,
                 seed: bytes | None = None) -> None:
        for name, value, lo in (("interval_ms", interval_ms, 0), ("dedupe_buffer_size", dedupe_buffer_size, 1024),
                                ("io_buffer_size", io_buffer_size, 4096), ("max_uncompressed", max_uncompressed, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise InvalidConfigError(f"{name}={value!r} must be an int >= {lo}")
        if seed is not None and len(seed) != 16:
            raise InvalidConfigError("seed must be 16 bytes")
        self.manager = manager
        self.interval_ms = interval_ms
        self.dedupe_buffer_size = dedupe_buffer_size
        self.io_buffer_size = io_buffer_size
        self.max_uncompressed = max_uncompressed
        self._clock = clock or _wall_ms
        self._seed = seed
        self._lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._damage_reported: set[str] = set()
        self._horizons: dict[str, int] = {}
        self._lowest_truncation: dict[int, int] = {}
        self._uncleanable: dict[tuple[str, int], BaseException] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._cond = threading.Condition()
        self._passes_started = 0
        self._passes_done = 0

    @property
    def max_map_records(self) -> int:
        """Most records one clean puts into its offset map."""
        return self.dedupe_buffer_size // 32

    # -- checkpoint ----------------------------------------------------------------------

    def _checkpoint_location(self, log: Log) -> tuple[str, tuple[str, int], bool]:
        tp = log.topic_partition
        if self.manager is not None and tp is not None and self.manager.get_log(*tp) is log:
            return os.path.join(self.manager.data_dir, CLEANER_OFFSET_CHECKPOINT), tp, True
        key = tp or (os.path.basename(os.path.normpath(log.path)) or "log", 0)
        return os.path.join(log.path, CLEANER_OFFSET_CHECKPOINT), key, False

    def _read_checkpoint(self, log: Log) -> int | None:
        path, key, _shared = self._checkpoint_location(log)
        try:
            return CheckpointFile(path).read().get(key)
        except CorruptCheckpointError as exc:
            self._warn_damaged(exc)
            return None

    def _warn_damaged(self, exc: CorruptCheckpointError) -> None:
        """Once per fault (the next write replaces the file): cleaning is only redone,
        never skipped, so the fallback loses nothing."""
        message = str(exc)
        if message not in self._damage_reported:
            self._damage_reported.add(message)
            _logger.warning("%s; cleaning each log it covered from its log start offset", message)

    def _write_checkpoint(self, log: Log, offset: int, *, prune: bool = True,
                          only_lower: bool = False) -> None:
        path, key, shared = self._checkpoint_location(log)
        # The manager's lock is taken before the checkpoint lock, never under it: a
        # truncation listener waits for the checkpoint lock while holding a log's lock,
        # and the manager takes logs' locks while holding its own.
        # Deferred logs (not loaded yet) are live too: their entries stay.
        live = set(self.manager.topic_partitions()) if shared and prune else None
        with self._checkpoint_lock:
            cp = CheckpointFile(path)
            try:
                entries = cp.read() if shared or only_lower else {}
            except CorruptCheckpointError as exc:
                self._warn_damaged(exc)
                entries = {}
            if only_lower and (key not in entries or entries[key] <= offset):
                return
            entries[key] = offset
            if live is not None:
                entries = {tp: off for tp, off in entries.items() if tp in live}
            cp.write(entries)

    def _on_truncation(self, log: Log, log_end_offset: int) -> None:
        """A log this cleaner knows was truncated: records from the new log end offset
        on are new, so the first dirty offset may not lie above it (Kafka's cleaner
        manager does the same).  A clean in progress notices the truncation count."""
        self._lowest_truncation[id(log)] = min(
            log_end_offset, self._lowest_truncation.get(id(log), log_end_offset))
        self._write_checkpoint(log, log_end_offset, prune=False, only_lower=True)

    def first_dirty_offset(self, log: Log) -> int:
        """The checkpointed first dirty offset of ``log``, or its log start offset when
        there is none or it lies outside ``[log_start_offset, log_end_offset]``."""
        start, end = log.log_start_offset, log.log_end_offset
        cp = self._read_checkpoint(log)
        if cp is None or cp < start or cp > end:
            return start
        return cp

    # -- planning --------------------------------------------------------------------------

    def _bounds(self, log: Log, segs: Sequence[LogSegment], now: int, max_offset: int | None,
                first_dirty: int) -> list[LogSegment]:
        """The sealed segments that may be cleaned (before transactions are looked at)."""
        cfg = log.config
        candidates = list(segs[:-1])
        ends = [s.base_offset for s in segs[1:]]
        n = len(candidates)
        if max_offset is not None:
            n = next((i for i in range(n) if ends[i] > max_offset), n)
        lag = cfg.min_compaction_lag_ms
        if lag > 0:
            for i in range(n):
                if ends[i] > first_dirty and candidates[i].largest_timestamp > now - lag:
                    n = i
                    break
        return candidates[:n]

    def _info(self, log: Log, segs: Sequence[LogSegment], cleanable: list[LogSegment], start: int,
              first_dirty: int, now: int) -> CleanableInfo:
        cfg = log.config
        ends = {id(s): nxt.base_offset for s, nxt in zip(segs, segs[1:])}
        clean = sum(s.size for s in cleanable if ends[id(s)] <= first_dirty)
        dirty_segs = [s for s in cleanable if ends[id(s)] > first_dirty]
        dirty = sum(s.size for s in dirty_segs)
        total = clean + dirty
        ratio = dirty / total if total else 0.0
        end = ends[id(cleanable[-1])] if cleanable else start
        if "compact" not in cfg.cleanup_policy:
            due, reason = False, "not_compacted"
        elif not cleanable:
            due, reason = False, "nothing_to_clean"
        elif dirty_segs and ratio >= cfg.min_cleanable_dirty_ratio:
            due, reason = True, "dirty_ratio"
        elif dirty_segs and now - self._first_timestamp(dirty_segs[0]) > cfg.max_compaction_lag_ms:
            due, reason = True, "max_compaction_lag"
        elif self._horizons.get(log.path, NO_DELETE_HORIZON) <= now:
            due, reason = True, "delete_horizon"
        elif not dirty_segs:
            due, reason = False, "nothing_to_clean"
        else:
            due, reason = False, "below_min_dirty_ratio"
        return CleanableInfo(start, first_dirty, end, clean, dirty, ratio, due, reason)

    @staticmethod
    def _first_timestamp(seg: LogSegment) -> int:
        ts = seg.rolling_timestamp
        return ts if ts >= 0 else seg.largest_timestamp

    def inspect(self, log: Log, now_ms: int | None = None, *, max_offset: int | None = None) -> CleanableInfo:
        """Whether and why ``log`` is due for cleaning, from segment sizes and the
        checkpoint (cheap: no data is read)."""
        now = self._clock() if now_ms is None else now_ms
        with log.lock:
            if log.closed:
                raise LogClosedError(f"log {log.path} is closed")
            segs = log.segments
            start = log.log_start_offset
        first_dirty = self.first_dirty_offset(log)
        cleanable = self._bounds(log, segs, now, max_offset, first_dirty)
        return self._info(log, segs, cleanable, start, first_dirty, now)

    # -- cleaning ------------------------------------------------------------------------

    @staticmethod
    def _log_lock(log: Log) -> threading.Lock:
        key = os.path.realpath(log.path)
        with _LOG_LOCKS_GUARD:
            lock = _LOG_LOCKS.get(key)
            if lock is None:
                lock = _LOG_LOCKS[key] = threading.Lock()
            return lock

    def clean(self, log: Log, now_ms: int | None = None, force: bool = False, *,
              max_offset: int | None = None) -> CleanerStats:
        """Compact ``log`` once.

        Parameters
        ----------
        log : Log
        now_ms : int, optional
            The clean's time (default: the cleaner's clock): delete horizons are set from
            it and compared with it, ``min_compaction_lag_ms`` counts back from it.
        force : bool
            Clean even when the dirty ratio (or lag, or horizon) does not call for it.
            The active segment, ``min_compaction_lag_ms``, open transactions and
            ``max_offset`` are respected anyway.
        max_offset : int, optional
            Exclusive bound: only segments wholly below it are cleaned (a broker passes
            its high watermark).

        Returns
        -------
        CleanerStats

        Raises
        ------
        LogClosedError
            The log is closed when the clean starts (a close during the clean abandons it:
            ``reason`` ``"aborted: ..."``).
        CorruptRecordError
            A batch of the cleanable range fails its checks; the log is left as it was.
        KafkaStorageError
            An I/O error, or a re-encoded batch that no longer fits a segment.
        """
        t0 = time.perf_counter()
        now = self._clock() if now_ms is None else now_ms
        with self._log_lock(log):
            stats = self._clean(log, now, force, max_offset)
        return _with(stats, elapsed_ms=(time.perf_counter() - t0) * 1000)

    def _clean(self, log: Log, now: int, force: bool, max_offset: int | None) -> CleanerStats:
        cfg = log.config
        with log.lock:
            if log.closed:
                raise LogClosedError(f"log {log.path} is closed")
            log.add_truncation_listener(self._on_truncation)
            truncations = log.truncation_count
            self._lowest_truncation.pop(id(log), None)
            segs = log.segments
            start = log.log_start_offset
            sizes = {id(s): s.size for s in segs}
        if "compact" not in cfg.cleanup_policy:
            return CleanerStats(False, "not_compacted", segments_before=len(segs), segments_after=len(segs))
        first_dirty = self.first_dirty_offset(log)
        cleanable = self._bounds(log, segs, now, max_offset, first_dirty)
        info = self._info(log, segs, cleanable, start, first_dirty, now)
        base = dict(first_dirty_offset=first_dirty, dirty_ratio=info.dirty_ratio,
                    segments_before=len(segs), segments_after=len(segs))
        if not cleanable:
            return CleanerStats(False, "nothing_to_clean", **base)
        if not force and not info.due:
            return CleanerStats(False, info.reason, **base)
        try:
            horizon_due = self._horizons.get(log.path, NO_DELETE_HORIZON) <= now
            return self._compact(log, segs, cleanable, sizes, start, first_dirty, now, force,
                                 horizon_due, base, truncations)
        except _Aborted as exc:
            return CleanerStats(False, f"aborted: {exc}", **base)

    def _compact(self, log: Log, segs, cleanable: list[LogSegment], sizes: dict, start: int,
                 first_dirty: int, now: int, force: bool, horizon_due: bool, base: dict,
                 truncations: int) -> CleanerStats:
        chunk = self.io_buffer_size
        # Pass 0: headers (records per segment, transactions, producers, fingerprints),
        # filling an offset map on the way: without transactions it is the one we need.
        scans = []
        budget = self.max_map_records
        optimistic: _core.OffsetMap | None = _core.OffsetMap(1 << 12, seed=self._seed)
        scanned_records = 0
        for seg in cleanable:
            scan = _core.SegmentScan(self.max_uncompressed)
            if optimistic is not None and scanned_records + sizes[id(seg)] // 8 > budget:
                optimistic = None  # possibly too many records: decide after counting
            _feed(seg, sizes[id(seg)], _ScanStep(scan, optimistic, start), chunk)
            scanned_records += scan.records
            if optimistic is not None and scanned_records > budget:
                optimistic = None
            scans.append(scan)
        bases = [s.base_offset for s in cleanable]
        all_ends = {id(s): nxt.base_offset for s, nxt in zip(segs, segs[1:])}
        ends = [all_ends[id(s)] for s in cleanable]
        events = [e for scan in scans for e in scan.transactions]

        n, aborted = self._transaction_cut(events, bases, ends, len(cleanable))
        records = [scan.records for scan in scans]
        first_dirty_idx = next((i for i, e in enumerate(ends) if e > first_dirty), len(cleanable))
        if sum(records[:n]) <= budget:
            map_from = 0
        else:
            # Kafka's way: map the dirty section only, as much of it as fits.
            map_from = min(first_dirty_idx, n)
            total, cut = 0, map_from
            while cut < n and (cut == map_from or total + records[cut] <= budget):
                total += records[cut]
                cut += 1
            if cut < n:
                n, aborted = self._transaction_cut(events, bases, ends, cut)
            map_from = min(map_from, n)
        if n == 0:
            return CleanerStats(False, "transaction_in_progress", **base)
        if first_dirty_idx >= n and not (force or horizon_due):
            return CleanerStats(False, "transaction_in_progress", **base)
        end_offset = ends[n - 1]
        cleanable, scans = cleanable[:n], scans[:n]
        import numpy as np   # here, not at import: a broker's start-up does not pay for numpy

        aborted_arr = np.array(sorted(aborted), dtype=np.int64)
        last_batches: dict[int, int] = {}
        for scan in scans:
            last_batches.update(scan.last_batches)
        last_arr = np.array(sorted(last_batches.values()), dtype=np.int64)

        # Pass 1: the offset map, unless pass 0 built it (no transactions, all of it fits).
        if optimistic is not None and not events and map_from == 0 and n == len(records):
            offset_map = optimistic
        else:
            optimistic = None
            offset_map = _core.OffsetMap(min(sum(records[map_from:n]), 1 << 16), seed=self._seed)
            for i in range(map_from, n):
                seg = cleanable[i]
                step = _MapStep(offset_map, start, aborted_arr, self.max_uncompressed)
                _feed(seg, sizes[id(seg)], step, chunk)
                if step.fingerprint != scans[i].fingerprint:
                    raise _Aborted(f"segment {seg.base_offset} changed during the clean")

        # Pass 2: filter, write, swap.
        filt = _core.CleanerFilter(offset_map, start, now, log.config.delete_retention_ms,
                                   aborted_arr, last_arr, self.max_uncompressed)
        fingerprints = {id(s): scan.fingerprint for s, scan in zip(cleanable, scans)}
        remaining = list(cleanable)

        def check_and_swap(news: list[LogSegment], olds: list[LogSegment]) -> None:
            with log.lock:
                if log.closed:
                    raise _Aborted("the log was closed")
                if log.truncation_count != truncations:
                    # Kafka aborts cleaning on truncation: a record dropped as superseded
                    # may be superseded only by one the truncation removed.
                    raise _Aborted("the log was truncated during the clean")
                current = log.segments
                live = {id(s) for s in current[:-1]}
                for seg in olds + remaining[len(olds):]:
                    if id(seg) not in live or seg.size != sizes[id(seg)]:
                        raise _Aborted(f"segment {seg.base_offset} was truncated, deleted or replaced")
                for seg in olds:
                    pos, fp = _fingerprint_now(seg)
                    if pos != seg.size or fp != fingerprints[id(seg)]:
                        raise _Aborted(f"segment {seg.base_offset} changed during the clean")
                for seg in news:
                    out.unswapped.remove(seg)
                # From here the swap protocol owns the new files: never delete them.
                log.replace_segments(news, olds)
            del remaining[:len(olds)]

        out = _Output(log, check_and_swap)
        out_limit = max(log.config.index_interval_bytes, _MIN_WRITE_BYTES)

        def step(buf, pos, end, file_offset):
            new_pos, need, data = filt.filter(buf, pos, end, out_limit, file_offset)
            if data:
                out.write(data)
            return new_pos, need

        try:
            for i, seg in enumerate(cleanable):
                out.begin(seg, ends[i], filt.bytes_written / filt.bytes_read if filt.bytes_read else 1.0)
                filt.fingerprint = 0
                _feed(seg, sizes[id(seg)], step, chunk)
                if filt.fingerprint != fingerprints[id(seg)]:
                    raise _Aborted(f"segment {seg.base_offset} changed during the clean")
            out.finish_group()
        except LogClosedError:
            out.discard()
            raise _Aborted("the log was closed") from None
        except BaseException:
            out.discard()
            raise

        self._write_checkpoint(log, end_offset)
        if log.truncation_count != truncations:
            # Truncated after the last swap: the listener's lower checkpoint may have been
            # overwritten just now; put back the lowest truncation point since we began.
            lowest = self._lowest_truncation.get(id(log))
            if lowest is not None:
                self._write_checkpoint(log, lowest, prune=False, only_lower=True)
        self._horizons[log.path] = filt.min_horizon
        counters = {name: getattr(filt, name) for name in _FILTER_COUNTERS}
        return CleanerStats(True, "cleaned", first_dirty_offset=first_dirty, end_offset=end_offset,
                            map_start_offset=bases[map_from] if map_from < n else end_offset,
                            dirty_ratio=base["dirty_ratio"], map_entries=len(offset_map),
                            segments_before=base["segments_before"], segments_after=len(log.segments),
                            swaps=out.swaps, **counters)

    @staticmethod
    def _transaction_cut(events, bases: list[int], ends: list[int], n: int) -> tuple[int, list[int]]:
        """Shrink the range ``[0, n)`` of segments until no transaction with data in it is
        undecided within it; returns the new ``n`` and the aborted data batches."""
        while n > 0:
            aborted, first_open = _transactions(events, ends[n - 1])
            if first_open is None:
                return n, aborted
            n = bisect.bisect_right(bases, first_open) - 1
        return 0, []

    # -- many logs, in the background ---------------------------------------------------

    @property
    def uncleanable(self) -> dict[tuple[str, int], BaseException]:
        """Logs the background cleaner gave up on, with the error (Kafka marks such a
        partition uncleanable until restart).  :meth:`clean` still accepts them."""
        with self._lock:
            return dict(self._uncleanable)

    def clean_once(self, now_ms: int | None = None) -> dict[tuple[str, int], CleanerStats]:
        """One pass over the manager's logs: clean every log that is due, filthiest
        (highest dirty ratio) first.  Returns the stats of each clean that ran.  A log
        whose clean fails is reported in :attr:`uncleanable` and skipped from then on."""
        if self.manager is None:
            raise InvalidConfigError("clean_once() and start() need LogCleaner(manager=...)")
        due = []
        for tp, log in self.manager.logs().items():
            if log.closed or "compact" not in log.config.cleanup_policy:
                continue
            with self._lock:
                if tp in self._uncleanable:
                    continue
            try:
                info = self.inspect(log, now_ms)
            except LogClosedError:
                continue
            if info.due:
                due.append((info.dirty_ratio, tp, log))
        due.sort(key=lambda item: -item[0])
        results = {}
        for _ratio, tp, log in due:
            if self._stop.is_set():
                break
            try:
                results[tp] = self.clean(log, now_ms)
            except LogClosedError:
                continue
            except (PylogError, OSError) as exc:
                with self._lock:
                    self._uncleanable[tp] = exc
                _logger.error("log cleaner: giving up on %s-%d: %s", tp[0], tp[1], exc)
        return results

    def start(self) -> None:
        """Start the background thread (one pass every ``interval_ms``)."""
        if self.manager is None:
            raise InvalidConfigError("start() needs LogCleaner(manager=...)")
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="pylog-log-cleaner", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            with self._cond:
                self._passes_started += 1
            try:
                self.clean_once()
            except Exception:  # a pass must never kill the thread
                _logger.exception("log cleaner pass failed")
            finally:
                with self._cond:
                    self._passes_done += 1
                    self._cond.notify_all()
            self._wake.wait(self.interval_ms / 1000)

    def wakeup(self) -> None:
        """Start the next background pass now rather than after ``interval_ms``."""
        self._wake.set()

    def wait_for_pass(self, timeout: float | None = None) -> bool:
        """Wake the background thread and wait for a whole pass that starts after this
        call.  Returns False on timeout or when the thread is not running."""
        with self._cond:
            target = self._passes_started + 1
        self.wakeup()
        with self._cond:
            return self._cond.wait_for(
                lambda: self._passes_done >= target or not self.running, timeout) and self._passes_done >= target

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stop.is_set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the background thread (a clean in progress finishes first)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> "LogCleaner":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _with(stats: CleanerStats, **changes) -> CleanerStats:
    values = {f.name: getattr(stats, f.name) for f in fields(stats)}
    values.update(changes)
    return CleanerStats(**values)
