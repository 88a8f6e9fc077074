"""One log segment: a ``.log`` file of record batches and its two sparse indexes.

On disk, in the partition directory (Kafka's names and formats)::

    00000000000000001234.log         record batches (v2), back to back, no padding
    00000000000000001234.index       see pylog.storage.index
    00000000000000001234.timeindex
    00000000000000001234.txnindex    aborted transactions, only once there is one
                                     (pylog.storage.txn_index; the log maintains it, the
                                     segment renames and deletes it with its other files)

The name is the segment's base offset: every offset in it is >= that and < base + 2**32.
A segment is *active* (the log's last: appended to) or *sealed* (read-only).

- Active: the ``.log`` file is preallocated to ``segment_bytes`` (a sparse file, as Kafka
  with ``preallocate=true``) and memory-mapped read-write for zero-copy reads.  An append
  goes into the page cache in one pass from Cython (GIL released for large ones): a
  ``pwritev`` of each batch's header, rewritten (offsets, leader epoch, LogAppendTime),
  followed by the rest of the batch straight from the caller's buffer.  A memcpy into the
  mapping would make the kernel zero every new page before the copy lands on it (measured:
  a second pass over the bytes, 30-75% of the append's time), so only appends under 1.5 KiB,
  which mostly land on a page already mapped, are copied into the mapping.  The mapping
  shares the page cache with the file, so reads see every append at once.  Blocks ahead of
  the writer are allocated 4 MiB at a time (``posix_fallocate``; see
  ``_core.SegmentAppender``), so a full disk is an error, not a SIGBUS.  The whole append
  path (validation, roll checks, write, index entries) is one Cython call.  The indexes
  are preallocated and mapped too.  On roll and close the files are trimmed to their valid
  size, so a sealed segment is byte-identical to Kafka's: exactly its batches.
- Sealed: nothing is open until the first read or lookup; then the ``.log`` file is opened
  and mapped read-only and the indexes are mapped (and sanity-checked the first time).
  These resources are released under a :class:`SegmentCache` LRU limit shared by all the
  logs of a process or LogManager, so thousands of segments keep descriptors and mappings
  bounded.  Resources are released by dropping references, never by force: a read result
  still holding a view or descriptor keeps it alive until it is let go.

Crash behaviour: the bytes past a segment's valid size are zeros (preallocation) or a torn
append.  :meth:`LogSegment.recover` scans from the start, CRC-checking every batch in
Cython, truncates at the first torn or invalid one and rebuilds both indexes in the same
pass.  Truncating a segment zeroes the removed bytes through the mapping and syncs them,
so stale batches can never be recovered as valid ones.

Thread safety: a segment has no lock of its own; its :class:`~pylog.storage.Log`
serializes every call under the log's lock.  The cache may release a sealed segment's
resources from another log's thread: readers take local references first, so that is safe.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import threading
import time
import weakref
from collections import OrderedDict
from typing import Iterator

from pylog import _core
from pylog._value import Value, ValueTuple
from pylog.errors import CorruptRecordError, KafkaStorageError
from pylog.storage.config import LogConfig
from pylog.storage.index import CorruptIndexError, OffsetIndex, TimeIndex
from pylog.storage.txn_index import TXN_INDEX_SUFFIX

__all__ = ["LogSegment", "SegmentCache", "FileHandle", "BatchInfo", "RecoveryInfo",
           "LOG_SUFFIX", "INDEX_SUFFIX", "TIME_INDEX_SUFFIX", "CLEANED_SUFFIX", "SWAP_SUFFIX",
           "DELETED_SUFFIX", "segment_path", "parse_segment_name"]

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
#: Kafka's temporary suffixes: a cleaner's output being written, a finished replacement
#: being swapped in, a replaced segment waiting to be deleted.
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
DELETED_SUFFIX = ".deleted"

_FILE_SUFFIXES = (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX)
_CREATED_SUFFIXES = (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX)   # a .txnindex comes with its first entry
_MAX_RELATIVE = 0xFFFFFFFF
_NO_UPPER = (1 << 63) - 1

_logger = logging.getLogger(__name__)


def segment_path(directory: str, base_offset: int, kind: str = LOG_SUFFIX, suffix: str = "") -> str:
    """``<directory>/<base_offset as 20 digits><kind><suffix>``."""
    return os.path.join(directory, f"{base_offset:020d}{kind}{suffix}")


def parse_segment_name(name: str) -> tuple[int, str, str] | None:
    """``(base_offset, kind, suffix)`` of a segment file name, or None."""
    stem, dot, rest = name.partition(".")
    if len(stem) != 20 or not stem.isdigit() or not dot:
        return None
    kind, _, suffix = rest.partition(".")
    kind = "." + kind
    if kind not in _FILE_SUFFIXES:
        return None
    return int(stem), kind, ("." + suffix) if suffix else ""


def _count_batches(fd: int, start: int, end: int, min_offset: int) -> tuple[int, int]:
    """``(records, last_offset)`` of the batches whose headers parse (CRC unchecked) from
    byte ``start`` of the file, while their offsets keep increasing from ``min_offset``:
    what a recovery that cuts the file at ``start`` drops, as far as it can be told.
    ``(0, -1)`` when nothing there parses.  Runs only when recovery truncates."""
    records, last = 0, -1
    with mmap.mmap(fd, end, access=mmap.ACCESS_READ) as mm:
        pos = start
        while pos < end:
            head = _core.next_batch(mm, pos, end)
            if head is None or head[0] < max(min_offset, last + 1):
                break
            records += head[5]
            last = head[1]
            pos += head[2]
    return records, last


def _last_entry(path: str, entry_size: int, fmt: str) -> tuple[int, int]:
    """The last entry of an index file, read alone: ``(relative_offset, position)`` of a
    ``.index``, ``(timestamp, relative_offset)`` of a ``.timeindex``; ``(-1, -1)`` when the
    file is missing, empty or not whole entries (then there is nothing to check against)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return -1, -1
    try:
        size = os.fstat(fd).st_size
        if size < entry_size or size % entry_size:
            return -1, -1
        a, b = struct.unpack(fmt, os.pread(fd, entry_size, size - entry_size))
    finally:
        os.close(fd)
    return a, b


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class FileHandle:
    """An open file descriptor shared by a segment and the read results pointing into it.

    It is closed by :meth:`close` or when the last holder drops it, so a server may keep
    ``sendfile``-ing from a result after the segment was released, rolled or deleted.
    """

    __slots__ = ("fd", "path")

    def __init__(self, path: str, flags: int = os.O_RDONLY) -> None:
        self.path = path
        self.fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)

    def fileno(self) -> int:
        if self.fd < 0:
            raise ValueError(f"{self.path}: file handle is closed")
        return self.fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass

    def __repr__(self) -> str:
        return f"FileHandle({self.path!r}, fd={self.fd})"


class BatchInfo(ValueTuple):
    """Header facts of one stored batch (what iteration over a segment yields)."""

    __slots__ = ()

    base_offset: int
    last_offset: int
    position: int
    size: int
    max_timestamp: int
    attributes: int
    records_count: int


class RecoveryInfo(Value):
    """What :meth:`LogSegment.recover` found."""

    _fields = ("base_offset", "valid_bytes", "truncated_bytes", "batches", "next_offset", "reason",
               "dropped_records", "dropped_last_offset", "zero_tail")
    base_offset: int
    valid_bytes: int
    truncated_bytes: int
    batches: int
    next_offset: int
    reason: str | None
    """None: the segment ended cleanly (a zero tail is not corruption)."""
    dropped_records: int
    """Records in the batches that still parse in the removed bytes (a lower bound)."""
    dropped_last_offset: int
    """The last offset those batches claim (-1 when none parses)."""
    zero_tail: bool
    """The removed bytes (their first 64 KiB) are zeros."""

    def __init__(self, base_offset: int, valid_bytes: int, truncated_bytes: int, batches: int, next_offset: int,
                 reason: str | None, dropped_records: int = 0, dropped_last_offset: int = -1,
                 zero_tail: bool = False) -> None:
        self.base_offset = base_offset
        self.valid_bytes = valid_bytes
        self.truncated_bytes = truncated_bytes
        self.batches = batches
        self.next_offset = next_offset
        self.reason = reason
        self.dropped_records = dropped_records
        self.dropped_last_offset = dropped_last_offset
        self.zero_tail = zero_tail


class SegmentCache:
    """LRU bound on the sealed segments that hold open files and mappings.

    Shared by every log of a :class:`~pylog.storage.LogManager` (or one per standalone
    log).  Thread-safe.
    """

    def __init__(self, max_open: int = 64) -> None:
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        self.max_open = max_open
        self._lru: OrderedDict[int, LogSegment] = OrderedDict()
        self._lock = threading.Lock()

    def touch(self, segment: "LogSegment") -> None:
        evicted = []
        with self._lock:
            key = id(segment)
            if key in self._lru:
                self._lru.move_to_end(key)
            else:
                self._lru[key] = segment
                while len(self._lru) > self.max_open:
                    evicted.append(self._lru.popitem(last=False)[1])
        for seg in evicted:
            seg.release()

    def forget(self, segment: "LogSegment") -> None:
        with self._lock:
            self._lru.pop(id(segment), None)

    def __len__(self) -> int:
        return len(self._lru)


def _delegated(name: str) -> property:
    """A segment field that lives in the Cython appender while the segment is active."""
    private = "_py_" + name

    def get(self):
        app = self._appender
        return getattr(self, private) if app is None else getattr(app, name)

    def set(self, value):
        app = self._appender
        if app is None:
            setattr(self, private, value)
        else:
            setattr(app, name, value)

    return property(get, set)


class LogSegment:
    """A segment of a partition log.  See the module docstring for the on-disk format,
    crash behaviour and thread safety.

    Use :meth:`create` for a new (active) segment and :meth:`open` for an existing one
    (sealed until :meth:`activate`).  Offsets are absolute; positions are byte offsets in
    the ``.log`` file.
    """

    _appender = None  # pylog._core.SegmentAppender while active
    _size = _delegated("size")
    _next_offset = _delegated("next_offset")
    _max_ts = _delegated("max_ts")
    _max_ts_offset = _delegated("max_ts_offset")
    _rolling_ts = _delegated("rolling_ts")
    _last_time_entry = _delegated("last_time_entry")
    _bytes_since_index = _delegated("bytes_since_index")

    def __init__(self, directory: str, base_offset: int, config: LogConfig, *, suffix: str = "",
                 cache: SegmentCache | None = None, size: int = 0) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.config = config
        self.suffix = suffix
        self._path: tuple[str, str] | None = None  # (suffix, path): read paths hand it out
        self.created_ms = _now_ms()
        self._cache = cache
        self._size = size
        self._active = False
        self._deleted = False
        self._handle: FileHandle | None = None
        self._map: mmap.mmap | None = None
        self._offset_index: OffsetIndex | None = None
        self._time_index: TimeIndex | None = None
        self._indexes_trusted = False
        self._index_bypassed = False  # the active segment's index proved wrong: reads scan
        #: Exclusive upper bound on this segment's offsets (the next segment's base
        #: offset), set by the owning log; used to sanity-check indexes.
        self.upper_bound_offset: int | None = None
        self._next_offset: int | None = None
        self._max_ts: int | None = None
        self._max_ts_offset = -1
        self._rolling_ts: int | None = None
        self._bytes_since_index = 0
        self._capacity = 0
        self._last_time_entry = -1
        self._lock = threading.Lock()  # guards lazy opening against a concurrent release
        # Mappings of the .log file we let go of while a caller's view may still hold
        # them, each with how far into the file such a view can reach: the file is never
        # shrunk below a live one (touching a mapped page past the end of the file is
        # SIGBUS).  A trim that had to stop short is finished when they are gone.
        self._exposed: list[tuple[weakref.ref, int]] = []
        self._exposed_lock = threading.Lock()
        self._trim_pending = False
        self._high_water = 0  # largest valid size of the active mapping (truncation lowers _size)

    # -- construction ----------------------------------------------------------------

    @classmethod
    def create(cls, directory: str, base_offset: int, config: LogConfig, *, suffix: str = "",
               cache: SegmentCache | None = None, capacity: int | None = None) -> "LogSegment":
        """Create the three files of a new, empty segment and return it active, with room
        for ``capacity`` bytes (default ``segment_bytes``)."""
        seg = cls(directory, base_offset, config, suffix=suffix, cache=cache, size=0)
        seg._capacity = capacity or 0
        log_path = seg.path
        if os.path.exists(log_path) and os.path.getsize(log_path) > 0:
            raise KafkaStorageError(f"{log_path} already exists and is not empty")
        for kind in _CREATED_SUFFIXES:
            fd = os.open(seg.file_path(kind), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.close(fd)
        seg._next_offset = base_offset
        seg._max_ts, seg._max_ts_offset, seg._rolling_ts = -1, -1, -1
        seg._indexes_trusted = True
        seg.activate()
        return seg

    @classmethod
    def open(cls, directory: str, base_offset: int, config: LogConfig, *, suffix: str = "",
             cache: SegmentCache | None = None) -> "LogSegment":
        """An existing segment, sealed and with nothing open yet (its size is the file's)."""
        path = segment_path(directory, base_offset, LOG_SUFFIX, suffix)
        return cls(directory, base_offset, config, suffix=suffix, cache=cache,
                   size=os.path.getsize(path))

    # -- names and simple state ----------------------------------------------------

    def file_path(self, kind: str, suffix: str | None = None) -> str:
        return segment_path(self.directory, self.base_offset, kind,
                            self.suffix if suffix is None else suffix)

    @property
    def path(self) -> str:
        """Path of the ``.log`` file."""
        cached = self._path
        if cached is None or cached[0] != self.suffix:
            cached = self._path = (self.suffix, self.file_path(LOG_SUFFIX))
        return cached[1]

    @property
    def size(self) -> int:
        """Valid bytes in the ``.log`` file."""
        return self._size

    @property
    def is_active(self) -> bool:
        return self._active

    def __repr__(self) -> str:
        state = "active" if self._active else "sealed"
        return f"<LogSegment {self.base_offset} {state} {self._size} bytes{self.suffix}>"

    # -- lazy resources ------------------------------------------------------------

    def _readable(self) -> tuple[object, FileHandle]:
        """(mapping, handle) for reading; opens a sealed segment on first use."""
        with self._lock:
            mm, handle = self._map, self._handle
            if handle is None:
                if self._deleted:
                    raise KafkaStorageError(f"{self.path} was deleted")
                handle = FileHandle(self.path)
                mm = (mmap.mmap(handle.fd, self._size, access=mmap.ACCESS_READ)
                      if self._size else b"")
                self._map, self._handle = mm, handle
        if not self._active and self._cache is not None:
            self._cache.touch(self)
        if self._trim_pending:
            self._finish_trim()
        return mm, handle

    # -- never shrinking the file under a caller's view ----------------------------

    def _retire_map(self, mm, extent: int) -> None:
        """We drop our reference to ``mm``; if anything else still holds it (a view from
        a read, a reader thread between lookup and use), remember ``extent``."""
        if isinstance(mm, mmap.mmap) and not mm.closed:
            with self._exposed_lock:
                self._exposed.append((weakref.ref(mm), extent))

    def _shrink_floor(self) -> int:
        """The smallest size the ``.log`` file may have: the furthest reach of any
        mapping a caller may still read."""
        with self._exposed_lock:
            live = [(ref, extent) for ref, extent in self._exposed
                    if (mm := ref()) is not None and not mm.closed]
            self._exposed = live
        return max((extent for _, extent in live), default=0)

    def _trim(self, fd: int, size: int) -> None:
        """ftruncate the ``.log`` file to ``size``, or as close as live views allow (the
        rest of the way later: :meth:`_finish_trim`).  Bytes past ``size`` are zeros or
        data a truncation removed; readers and recovery stop at ``size``."""
        target = max(size, self._shrink_floor())
        if os.fstat(fd).st_size != target:
            os.ftruncate(fd, target)
        self._trim_pending = target > size

    def _finish_trim(self) -> None:
        with self._lock:
            if not self._trim_pending or self._active or self._deleted:
                return
            try:
                fd = os.open(self.path, os.O_RDWR)
            except FileNotFoundError:
                self._trim_pending = False
                return
            try:
                self._trim(fd, self._size)
            finally:
                os.close(fd)

    def _load_indexes(self) -> tuple[OffsetIndex, TimeIndex]:
        oi, ti = self._offset_index, self._time_index
        if oi is not None and ti is not None:
            return oi, ti
        mm, _ = self._readable()
        with self._lock:
            if self._offset_index is None or self._time_index is None:
                self._open_sealed_indexes(mm)
            oi, ti = self._offset_index, self._time_index
        if not self._active and self._cache is not None:
            self._cache.touch(self)
        return oi, ti

    def _open_sealed_indexes(self, mm) -> None:
        cfg = self.config
        try:
            oi = OffsetIndex(self.file_path(INDEX_SUFFIX), self.base_offset,
                             cfg.segment_index_bytes, writable=False)
            ti = TimeIndex(self.file_path(TIME_INDEX_SUFFIX), self.base_offset,
                           cfg.segment_index_bytes, writable=False)
            if not self._indexes_trusted:
                self._check_indexes(oi, ti, mm)
        except (CorruptIndexError, FileNotFoundError, ValueError) as exc:
            # Never trusted: rebuild from the log (headers only; the data itself was
            # CRC-checked on append or recovery and lies below the recovery point).
            _logger.warning("%s: indexes of segment %d are unusable (%s); rebuilding them from the log",
                            self.directory, self.base_offset, exc)
            self._rebuild_indexes(mm, check_crc=False)
            return
        self._indexes_trusted = True
        self._offset_index, self._time_index = oi, ti

    def _check_indexes(self, oi: OffsetIndex, ti: TimeIndex, mm) -> None:
        upper = self.upper_bound_offset
        max_offset = (upper - 1) if upper is not None else self.base_offset + _MAX_RELATIVE
        oi.sanity_check(max_offset, self._size)
        ti.sanity_check(max_offset)
        if len(oi):
            off, pos = oi.last_entry
            head = _core.next_batch(mm, pos, self._size)
            if head is None or head[0] > off:
                raise CorruptIndexError(f"{oi.path}: last entry ({off}, {pos}) is not a batch holding that offset")

    def _rebuild_indexes(self, mm, *, check_crc: bool) -> tuple:
        """Rebuild both index files from the log; returns the scan's result tuple."""
        cfg = self.config
        oi = OffsetIndex(self.file_path(INDEX_SUFFIX), self.base_offset, cfg.segment_index_bytes,
                         writable=True, fresh=True)
        ti = TimeIndex(self.file_path(TIME_INDEX_SUFFIX), self.base_offset, cfg.segment_index_bytes,
                       writable=True, fresh=True)
        res = _core.recover_segment(mm, self._size, self.base_offset, _core.DEFAULT_MAX_BATCH_SIZE,
                                    cfg.index_interval_bytes, oi._mm, oi.max_entries,
                                    ti._mm, ti.max_entries, check_crc)
        oi._set_entries(res[5])
        ti._set_entries(res[6])
        if not self._active:
            oi.trim()
            ti.trim()
        self._offset_index, self._time_index = oi, ti
        self._indexes_trusted = True
        return res

    def release(self) -> None:
        """Drop a sealed segment's descriptor and mappings (reopened on the next read).
        A no-op on the active segment."""
        with self._lock:
            if self._active:
                return
            mm, self._map = self._map, None
            self._retire_map(mm, len(mm) if isinstance(mm, mmap.mmap) else 0)
            del mm
            self._handle = None
            self._offset_index = None
            self._time_index = None
        if self._trim_pending:
            self._finish_trim()

    @property
    def is_open(self) -> bool:
        """Whether the segment currently holds a descriptor or mapping."""
        return self._handle is not None or self._offset_index is not None

    @property
    def offset_index(self) -> OffsetIndex:
        return self._load_indexes()[0]

    @property
    def time_index(self) -> TimeIndex:
        return self._load_indexes()[1]

    # -- lazily derived facts ------------------------------------------------------

    def _scan_tail(self) -> None:
        """Next offset and largest timestamp of a sealed segment, from its indexes plus a
        header scan of what follows their last entries."""
        mm, _ = self._readable()
        oi, ti = self._load_indexes()
        ts, ts_offset = ti.last_entry
        if not len(ti):
            ts, ts_offset = -1, -1
        _, pos = oi.last_entry
        # Scan headers from the last offset-index entry (or the start) to the end.
        res = _core.recover_segment(mm if pos == 0 else memoryview(mm)[pos:], self._size - pos,
                                    self.base_offset, _core.DEFAULT_MAX_BATCH_SIZE, 1 << 62,
                                    None, 0, None, 0, False)
        next_offset = res[2]
        if res[3] > ts:
            ts, ts_offset = res[3], res[4]
        if pos and next_offset == self.base_offset:
            next_offset = oi.last_entry[0] + 1
        self._next_offset = next_offset
        self._max_ts, self._max_ts_offset = ts, ts_offset

    @property
    def next_offset(self) -> int:
        """Last offset in the segment + 1 (the base offset when it is empty)."""
        if self._next_offset is None:
            self._scan_tail()
        return self._next_offset

    @property
    def max_timestamp(self) -> int:
        """Largest batch timestamp in the segment (-1 when none has one)."""
        if self._max_ts is None:
            self._scan_tail()
        return self._max_ts

    @property
    def offset_of_max_timestamp(self) -> int:
        if self._max_ts is None:
            self._scan_tail()
        return self._max_ts_offset

    @property
    def largest_timestamp(self) -> int:
        """What time-based retention compares: the largest timestamp, or the file's
        modification time when no batch has a timestamp (Kafka's rule)."""
        ts = self.max_timestamp
        if ts >= 0:
            return ts
        try:
            return int(os.path.getmtime(self.path) * 1000)
        except FileNotFoundError:
            return -1

    @property
    def rolling_timestamp(self) -> int:
        """maxTimestamp of the segment's first batch (-1 when empty): the reference point
        for rolling on ``segment_ms``."""
        if self._rolling_ts is None:
            mm, _ = self._readable()
            head = _core.next_batch(mm, 0, self._size) if self._size else None
            self._rolling_ts = head[3] if head else -1
        return self._rolling_ts

    # -- activation and sealing ----------------------------------------------------

    def activate(self) -> None:
        """Make this segment the appendable one: extend the ``.log`` file to
        ``segment_bytes`` (sparse) and the indexes to ``segment_index_bytes``, map them
        read-write.  The indexes must be trusted (recovered or sanity-checked) first."""
        if self._active:
            return
        if not self._indexes_trusted:
            self._load_indexes()
        # Facts derived from the sealed form, before it goes.
        next_offset = self.next_offset
        max_ts, max_ts_offset = self.max_timestamp, self.offset_of_max_timestamp
        rolling = self.rolling_timestamp
        n_oi, n_ti = len(self.offset_index), len(self.time_index)
        with self._lock:
            mm, self._map = self._map, None
            self._retire_map(mm, len(mm) if isinstance(mm, mmap.mmap) else 0)
            del mm
            self._handle = None
            self._offset_index = None
            self._time_index = None
        if self._cache is not None:
            self._cache.forget(self)
        cfg = self.config
        handle = FileHandle(self.path, os.O_RDWR)
        capacity = max(cfg.segment_bytes, self._size, self._capacity)
        # Zero anything past the valid size first: a stale tail must never be mistaken
        # for batches by a later recovery.  ftruncate down and up frees its blocks, but
        # only when no caller's view reaches past the valid size; otherwise the tail is
        # zeroed in place (the file never shrinks under a mapping).
        stale_end = os.fstat(handle.fd).st_size
        in_place = stale_end > self._size and self._shrink_floor() > self._size
        if stale_end > self._size and not in_place:
            os.ftruncate(handle.fd, self._size)
        if capacity > stale_end or not in_place:
            os.ftruncate(handle.fd, max(capacity, stale_end) if in_place else capacity)
        self._map = mmap.mmap(handle.fd, max(capacity, stale_end) if in_place else capacity)
        # No read-around on the faults of appends: the kernel would read (zero) up to
        # read_ahead_kb of the preallocated tail around each first touch (8 MiB on some
        # machines), per partition, and a thousand active segments then spend the
        # broker's CPU in memset.  An append touches each page once, in order.
        if hasattr(mmap, "MADV_RANDOM"):     # (Linux and the BSDs; elsewhere no hint)
            self._map.madvise(mmap.MADV_RANDOM)
        if in_place:
            _core.zero_range(self._map, self._size, stale_end)
        self._trim_pending = False
        self._high_water = self._size
        self._handle = handle
        oi = OffsetIndex(self.file_path(INDEX_SUFFIX), self.base_offset, cfg.segment_index_bytes,
                         writable=True, entries=n_oi)
        ti = TimeIndex(self.file_path(TIME_INDEX_SUFFIX), self.base_offset, cfg.segment_index_bytes,
                       writable=True, entries=n_ti)
        self._offset_index, self._time_index = oi, ti
        app = _core.SegmentAppender(
            self._map, handle.fd, oi._mm, ti._mm, oi.max_entries, ti.max_entries, cfg.segment_bytes,
            cfg.index_interval_bytes, self.base_offset, self._size, next_offset, max_ts, max_ts_offset,
            rolling, ti.last_entry[0], n_oi, n_ti, self.path)
        self._appender = app
        self._configure_appender(cfg)
        oi._attach(app)
        ti._attach(app)
        self._active = True

    @property
    def created_ms(self) -> int:
        """When the segment was created (ms): the reference for rolling on ``segment_ms``
        while it holds no batch with a timestamp."""
        return self._created_ms

    @created_ms.setter
    def created_ms(self, value: int) -> None:
        self._created_ms = value
        if self._appender is not None:
            self._appender.created_ms = value

    def _configure_appender(self, config: LogConfig) -> None:
        app = self._appender
        app.max_message_bytes = config.max_message_bytes
        app.stamp_append_time = config.message_timestamp_type == "LogAppendTime"
        app.roll_ms = config.segment_ms - config.segment_jitter_ms
        app.mmap_append = config.mmap_append
        app.created_ms = self.created_ms

    def reconfigure(self, config: LogConfig) -> None:
        """Take the log's new settings.  Sizes fixed at activation (``segment_bytes``,
        ``segment_index_bytes``) apply from the next segment on."""
        self.config = config
        if self._appender is not None:
            self._configure_appender(config)

    def seal(self, *, sync: bool = True) -> None:
        """Stop appending: write the final time-index entry, trim the ``.log`` file and
        the indexes to their valid sizes, and unmap (Kafka's onBecomeInactiveSegment).
        ``sync=False``: the indexes are not msync-ed (see :meth:`OffsetIndex.trim`)."""
        if not self._active:
            return
        # Each stage can be interrupted (an I/O error) and the whole method called again.
        oi, ti = self._offset_index, self._time_index
        app = self._appender
        if app is not None:
            if app.max_ts >= 0:
                ti.maybe_append(app.max_ts, app.max_ts_offset, skip_full_check=True)
            oi._detach()
            ti._detach()
            for name in ("size", "next_offset", "max_ts", "max_ts_offset", "rolling_ts",
                         "last_time_entry", "bytes_since_index"):
                setattr(self, "_py_" + name, getattr(app, name))
            self._appender = None
            app.release()
            if app.index_entries_skipped:
                _logger.warning("%s: %d index entries were left out for lack of disk space (lookups in "
                                "this segment scan further)", self.path, app.index_entries_skipped)
        mm, self._map = self._map, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                # A reader still holds a view (unmapped when it lets go), reaching at most
                # as far as the segment's valid size ever was.
                self._retire_map(mm, max(self._size, self._high_water))
            del mm
        if self._handle is not None:
            self._trim(self._handle.fd, self._size)
            self._handle = None
        oi.trim(sync=sync)
        ti.trim(sync=sync)
        self._active = False
        if self._index_bypassed:
            # Sealed, the index can be rebuilt: the next read that trips on it does so.
            self._index_bypassed = False
            self._indexes_trusted = False
        if self._cache is not None:
            self._cache.touch(self)  # its trimmed indexes stay mapped until evicted

    # -- appending -----------------------------------------------------------------

    def can_hold(self, size: int, last_offset: int) -> bool:
        """Whether an append of ``size`` bytes ending at ``last_offset`` fits without a roll
        for size, index capacity or 32-bit relative offsets (time is the log's check)."""
        oi, ti = self._offset_index, self._time_index
        return (self._size <= self.config.segment_bytes - size
                and oi._entries < oi._max_entries and ti._entries < ti._max_entries - 1
                and 0 <= last_offset - self.base_offset <= _MAX_RELATIVE)

    def append(self, batches, size: int, first_offset: int, last_offset: int, max_timestamp: int,
               offset_of_max_timestamp: int, assign_offsets: bool = False,
               leader_epoch: int | None = None, log_append_time: int = -1) -> int:
        """Append ``size`` bytes of batches already validated by
        ``_core.validate_batches``, with the offsets and timestamps given, no roll checks
        (the log cleaner's way to fill a ``.cleaned`` segment; :meth:`Log.append` is the
        public way in).  Returns the position."""
        if not self._active:
            raise KafkaStorageError(f"segment {self.base_offset} is not active")
        return self._appender.write(batches, size, first_offset, last_offset, max_timestamp,
                                    offset_of_max_timestamp, assign_offsets, leader_epoch,
                                    log_append_time)

    # -- reading -------------------------------------------------------------------

    def translate_offset(self, offset: int, start_position: int = 0) -> tuple[int, int, int]:
        """``(position, base_offset, last_offset)`` of the batch holding ``offset`` (or
        the first batch after it); ``(size, -1, -1)`` when there is none."""
        mm, _ = self._readable()
        pos = max(self.offset_index.lookup(offset)[1], start_position)
        return _core.find_batch(mm, pos, self._size, offset)

    def read(self, offset: int, max_bytes: int, max_offset: int, upper_offset: int = _NO_UPPER):
        """Whole batches from the one holding ``offset``: ``(mapping, handle, position,
        length, first_base_offset, last_offset)``; length 0 when there is none.

        ``upper_offset`` bounds the offsets the segment may hold (the next segment's base
        offset, or the log end offset for the active one): the headers passed on the way
        are checked against it and against each other (see ``_core.locate_read``).

        Raises
        ------
        CorruptRecordError
            A batch header on the way is inconsistent (its ``position`` attribute says
            where).  An offset index entry that disagrees with the log is not that: the
            read is redone from the segment's start and the index rebuilt (sealed) or
            bypassed (active) from then on, with a warning.
        """
        mm, handle = self._readable()
        if offset > self.base_offset and not self._index_bypassed:
            entry, start = self.offset_index.lookup(offset)
        else:
            entry, start = -1, 0
        try:
            position, length, first, last = _core.locate_read(
                mm, start, self._size, offset, max_bytes, max_offset, self.base_offset, upper_offset,
                entry if start else -1)
        except CorruptRecordError as exc:
            if not start:
                raise
            # The scan began at an index entry: the index may be what is wrong.  From the
            # segment's start, the log alone decides.
            position, length, first, last = _core.locate_read(
                mm, 0, self._size, offset, max_bytes, max_offset, self.base_offset, upper_offset)
            self._distrust_index(mm, f"{exc}, while the log read from its start is consistent")
        return mm, handle, position, length, first, last

    def _distrust_index(self, mm, why: str) -> None:
        """The offset index disagrees with the log: rebuild it (sealed) or stop using it
        until the segment is sealed (active: its appender owns the mapped index)."""
        _logger.warning("%s: offset index %s disagrees with the log (%s); %s", self.directory,
                        self.file_path(INDEX_SUFFIX), why,
                        "reads of this segment scan from its start until it is sealed" if self._active
                        else "rebuilding it from the log")
        if self._active:
            self._index_bypassed = True
            return
        with self._lock:
            # Unlinked first: a mapping of the old files (a lookup in another thread) stays
            # valid on the old inode, and a crash before the rebuild leaves no index, which
            # the next open rebuilds.
            self._offset_index = self._time_index = None
            for kind in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                try:
                    os.unlink(self.file_path(kind))
                except FileNotFoundError:
                    pass
            self._rebuild_indexes(mm, check_crc=False)

    def find_offset_by_timestamp(self, timestamp: int, min_offset: int):
        """``(offset, timestamp, leader_epoch)`` of the first record with a timestamp >=
        ``timestamp`` and offset >= ``min_offset``, or None (Kafka's
        LogSegment.findOffsetByTimestamp: time index, offset index, then a record scan)."""
        mm, _ = self._readable()
        oi, ti = self._load_indexes()
        _, indexed_offset = ti.lookup(timestamp)
        start = oi.lookup(max(indexed_offset, min_offset))[1]
        return _core.search_timestamp(mm, start, self._size, timestamp, min_offset)

    def find_offset_of_max_timestamp(self):
        """``(offset, timestamp, leader_epoch)`` of the record holding this segment's
        largest timestamp, or None (Kafka's MAX_TIMESTAMP answer): from the offset index
        entry at or below :attr:`offset_of_max_timestamp`, the first batch whose
        maxTimestamp is the segment's, then its first record with that timestamp."""
        max_ts, max_ts_offset = self.max_timestamp, self.offset_of_max_timestamp
        mm, _ = self._readable()
        oi, _ = self._load_indexes()
        start = oi.lookup(max(max_ts_offset, self.base_offset))[1]
        return _core.search_timestamp(mm, start, self._size, max_ts, 0, max_timestamp=True)

    def batches(self, start_position: int = 0) -> Iterator[tuple[BatchInfo, memoryview]]:
        """Iterate the stored batches from ``start_position`` (a batch boundary):
        ``(BatchInfo, zero-copy memoryview of the batch)`` pairs.  Python touches batches
        only; decode records with pylog.records.  The view reads the mapping: copy what
        must outlive a later truncation of this segment."""
        mm, _ = self._readable()
        view = memoryview(mm)
        pos, end = start_position, self._size
        while pos < end:
            head = _core.next_batch(mm, pos, end)
            if head is None:
                break
            base, last, size, max_ts, attrs, count = head
            yield BatchInfo(base, last, pos, size, max_ts, attrs, count), view[pos:pos + size]
            pos += size

    # -- recovery and truncation ---------------------------------------------------

    def recover(self, max_batch_size: int = _core.DEFAULT_MAX_BATCH_SIZE) -> RecoveryInfo:
        """CRC-check every batch from the start, truncate the file at the first torn or
        invalid one, and rebuild both indexes.  The segment must be sealed."""
        if self._active:
            raise KafkaStorageError("recover() a sealed segment; the active one is recovered before activation")
        self.release()
        file_size = os.path.getsize(self.path)
        self._size = file_size
        handle = FileHandle(self.path, os.O_RDWR)
        mm = mmap.mmap(handle.fd, file_size, access=mmap.ACCESS_READ) if file_size else b""
        try:
            res = _core.recover_segment(
                mm, file_size, self.base_offset, max_batch_size, self.config.index_interval_bytes,
                *self._fresh_index_buffers())
        finally:
            if file_size:
                mm.close()
        valid, batches, next_offset, max_ts, max_ts_offset, n_oi, n_ti, first_ts, tail_zero, why = res
        dropped, dropped_last = 0, -1
        if valid != file_size:
            # What the removed bytes held, as far as their headers still say (for the
            # warning the log writes): batches that parse, without their CRC, in order.
            dropped, dropped_last = _count_batches(handle.fd, valid, file_size, next_offset)
            self._trim(handle.fd, valid)
        handle.close()
        self._size = valid
        oi, ti = self._offset_index, self._time_index
        oi._set_entries(n_oi)
        ti._set_entries(n_ti)
        # The rebuilt entries are made durable with an fdatasync of each index file
        # rather than an msync of its mapping: the same dirty pages reach the disk, and
        # os.fdatasync lets other threads run meanwhile (mmap.flush holds the GIL), which
        # is what a LogManager's parallel recovery of many logs waits on.
        for index in (oi, ti):
            fd = os.open(index.path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        oi.trim(sync=False)
        ti.trim(sync=False)
        self._indexes_trusted = True
        self._next_offset = next_offset
        self._max_ts, self._max_ts_offset = max_ts, max_ts_offset
        self._rolling_ts = first_ts
        self._map = self._handle = None
        if tail_zero:
            why = None  # a stop at zeros is the unwritten, preallocated tail, not damage
        return RecoveryInfo(self.base_offset, valid, file_size - valid, batches, next_offset, why,
                            dropped, dropped_last, bool(tail_zero))

    def check_tail(self, *, check_crc: bool, max_batch_size: int = _core.DEFAULT_MAX_BATCH_SIZE) -> str | None:
        """The open-time check of a sealed segment: does the ``.log`` file end where its
        index says, with whole batches?  Returns None, or a sentence saying what is wrong
        (the caller then recovers the segment).

        Reads the last entry of each index (a few bytes each) and scans the batches from
        the last offset-index entry to the end of the file: each must parse (with its CRC
        when ``check_crc``: the active segment's tail after a clean shutdown), start at or
        below that entry's offset (the first), and have offsets increasing within the
        segment's bounds; the last must end exactly at the end of the file, and neither
        index may name an offset at or past the segment's next offset.  Costs two small
        reads and a scan of at most one index interval (plus a batch), whatever the
        segment's size.
        """
        if self._active:
            raise KafkaStorageError("check_tail() is for a sealed segment")
        size = os.path.getsize(self.path)
        upper = self.upper_bound_offset
        entry_off, entry_pos = _last_entry(self.file_path(INDEX_SUFFIX), 8, ">II")
        if entry_off < 0:
            entry_pos = 0
        time_off = _last_entry(self.file_path(TIME_INDEX_SUFFIX), 12, ">qI")[1]
        if entry_off >= 0 and entry_pos >= size:
            return (f"the offset index's last entry points at byte {entry_pos}, "
                    f"past the end of the {size}-byte log file")
        if size == 0:
            next_offset = self.base_offset
        else:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mm, memoryview(mm) as view:
                    def scan(crc: bool):
                        return _core.recover_segment(view[entry_pos:], size - entry_pos, self.base_offset,
                                                     max_batch_size, 1 << 62, None, 0, None, 0, crc)

                    res = scan(check_crc)
                    if check_crc and res[0] != size - entry_pos:
                        whole = scan(False)
                        if whole[0] == size - entry_pos:
                            # Whole, chained batches to the end of the file, and one failing
                            # only its CRC: damage from outside after a clean shutdown (a torn
                            # write leaves nothing whole after it).  Cutting there would drop
                            # the intact batches after it; it is kept and served as it is, as
                            # Kafka serves it (clients report the CRC), and said here.
                            bad = _core.next_batch(mm, entry_pos + res[0], size)
                            _logger.error(
                                "%s: the batch at byte %d (offsets %s) fails its CRC32C; the batches "
                                "around it are whole, so it is kept: fetches serve it as it is and "
                                "clients report it as corrupt", self.path, entry_pos + res[0],
                                f"{bad[0]}..{bad[1]}" if bad is not None else "unknown")
                            res = whole
                    head = _core.next_batch(mm, entry_pos, size) if entry_off >= 0 else None
            finally:
                os.close(fd)
            valid, batches, next_offset, tail_zero, why = res[0], res[1], res[2], res[8], res[9]
            if valid != size - entry_pos:
                what = "zeros" if tail_zero else (why or "not a batch")
                return (f"the {size - entry_pos - valid} bytes from byte {entry_pos + valid} to the end "
                        f"of the file are not whole batches ({what})")
            if entry_off >= 0 and (head is None or head[0] > self.base_offset + entry_off):
                return (f"the offset index's last entry ({self.base_offset + entry_off}, {entry_pos}) "
                        f"is not the position of a batch holding that offset")
            if entry_off >= 0 and not batches:
                next_offset = self.base_offset + entry_off + 1
        if upper is not None and next_offset > upper:
            return f"its batches run to offset {next_offset - 1}, past the next segment's base offset {upper}"
        if entry_off >= 0 and self.base_offset + entry_off >= next_offset:
            return (f"the offset index names offset {self.base_offset + entry_off}, but the log "
                    f"ends at offset {next_offset - 1}")
        if time_off >= 0 and self.base_offset + time_off >= next_offset:
            return (f"the time index names offset {self.base_offset + time_off}, but the log "
                    f"ends at offset {next_offset - 1}")
        return None

    def _fresh_index_buffers(self):
        cfg = self.config
        oi = OffsetIndex(self.file_path(INDEX_SUFFIX), self.base_offset, cfg.segment_index_bytes,
                         writable=True, fresh=True)
        ti = TimeIndex(self.file_path(TIME_INDEX_SUFFIX), self.base_offset, cfg.segment_index_bytes,
                       writable=True, fresh=True)
        self._offset_index, self._time_index = oi, ti
        return oi._mm, oi.max_entries, ti._mm, ti.max_entries

    def truncate_to(self, offset: int) -> int:
        """Remove every batch whose last offset is >= ``offset`` (a batch straddling
        ``offset`` goes whole).  The segment must be active.  Returns the bytes removed.

        The removed range is zeroed through the mapping and synced, so a crash can never
        bring those batches back.
        """
        if not self._active:
            raise KafkaStorageError("truncate_to() needs the active segment")
        position, base, _ = self.translate_offset(offset)
        if base < 0:
            return 0
        removed = self._size - position
        self._high_water = max(self._high_water, self._size)
        _core.zero_range(self._map, position, self._size)
        page = mmap.PAGESIZE
        start = position - position % page
        self._map.flush(start, min(len(self._map), self._size) - start)
        self._offset_index.truncate_to(offset)
        self._time_index.truncate_to(offset)
        self._size = position
        self._bytes_since_index = 0
        # Recompute what the removed batches may have contributed.
        res = _core.recover_segment(self._map, position, self.base_offset, _core.DEFAULT_MAX_BATCH_SIZE,
                                    1 << 62, None, 0, None, 0, False)
        self._next_offset = res[2]
        self._max_ts, self._max_ts_offset = res[3], res[4]
        self._rolling_ts = res[7]
        tts, toff = self._time_index.last_entry
        self._last_time_entry = tts
        if len(self._time_index) and tts > self._max_ts:
            self._max_ts, self._max_ts_offset = tts, toff
        return removed

    # -- durability and lifecycle --------------------------------------------------

    def flush(self) -> None:
        """fsync the ``.log`` file and msync the indexes."""
        if self._active:
            os.fsync(self._handle.fd)
            self._offset_index.flush()
            self._time_index.flush()
            return
        for kind in _FILE_SUFFIXES:
            try:
                fd = os.open(self.file_path(kind), os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def close(self, *, sync: bool = True) -> None:
        """Seal (if active; ``sync`` as :meth:`seal`) and release."""
        if self._active:
            self.seal(sync=sync)
        self.release()
        if self._cache is not None:
            self._cache.forget(self)

    def change_suffix(self, new_suffix: str) -> None:
        """Rename the segment's files to carry ``new_suffix`` (``""`` for a live segment)."""
        for kind in _FILE_SUFFIXES:
            src = self.file_path(kind)
            if os.path.exists(src):
                os.rename(src, self.file_path(kind, new_suffix))
        self.suffix = new_suffix
        if self._offset_index is not None:
            self._offset_index.path = self.file_path(INDEX_SUFFIX)
            self._time_index.path = self.file_path(TIME_INDEX_SUFFIX)

    def delete(self) -> None:
        """Close and delete the files (renamed to ``.deleted`` first, so a crash midway
        leaves only files that the next open removes)."""
        self.close()
        self._deleted = True
        if self.suffix != DELETED_SUFFIX:
            self.change_suffix(DELETED_SUFFIX)
        for kind in _FILE_SUFFIXES:
            try:
                os.unlink(self.file_path(kind))
            except FileNotFoundError:
                pass
