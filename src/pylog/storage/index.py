"""Sparse offset and time indexes of a segment, as Kafka writes them.

On disk (both big-endian, no header, fixed-size entries):

- ``<base>.index``: 8-byte entries ``(relative_offset u32, position u32)``: the batch
  whose last offset is ``base + relative_offset`` (or a set of batches appended together
  ending there) starts at byte ``position`` of the ``.log`` file.
- ``<base>.timeindex``: 12-byte entries ``(timestamp i64, relative_offset u32)``: the
  largest timestamp seen so far in the segment, and the (last) offset of the batch that
  holds it.

Entries are sparse (one per ``index_interval_bytes`` of log) and strictly increasing.
The index of the active segment is preallocated to ``segment_index_bytes`` (rounded
down to whole entries) and memory-mapped; it is trimmed to its entries on roll and close,
so a closed index file is exactly its entries, as Kafka's.  In memory an index is the
mapping; searches run in Cython on it, and :attr:`entries` gives a numpy structured array
viewing it (made on first use: neither the broker nor its open needs numpy, whose import
would be a third of `pylog serve`'s start-up).

Crash behaviour: indexes are never trusted after an unclean shutdown: the segments being
recovered rebuild theirs, and any index opened later is sanity-checked first
(:meth:`sanity_check`: size a multiple of the entry size, entries increasing, none beyond
the segment) and rebuilt from the log when the check fails.

Thread safety: none of its own.  The owning :class:`~pylog.storage.Log` serializes
writers with its lock; lookups on a sealed (read-only) index are safe from any thread.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
from typing import TYPE_CHECKING, Any

from pylog import _core
from pylog.errors import KafkaStorageError

__all__ = ["OffsetIndex", "TimeIndex", "CorruptIndexError", "OFFSET_INDEX_DTYPE", "TIME_INDEX_DTYPE"]

if TYPE_CHECKING:
    import numpy as np

# OFFSET_INDEX_DTYPE: numpy view of one ``.index`` entry; TIME_INDEX_DTYPE: of one
# ``.timeindex`` entry.  Made on first use (module __getattr__), with numpy.
_DTYPE_FIELDS = {
    "OFFSET_INDEX_DTYPE": [("relative_offset", ">u4"), ("position", ">u4")],
    "TIME_INDEX_DTYPE": [("timestamp", ">i8"), ("relative_offset", ">u4")],
}


def __getattr__(name: str) -> Any:
    fields = _DTYPE_FIELDS.get(name)
    if fields is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import numpy as np

    dtype = globals()[name] = np.dtype(fields)
    return dtype


_EMPTY = b""
_logger = logging.getLogger(__name__)
#: Pages of a writable index are allocated this far ahead of its entries.
_POPULATE_AHEAD = 64 * 1024


class CorruptIndexError(KafkaStorageError):
    """An index file failed its sanity check (it is then rebuilt from the log)."""


class _MappedIndex:
    """Shared machinery: file, mapping, entry count, trim and close."""

    ENTRY_SIZE = 0
    _DTYPE_NAME = ""
    _IS_TIME = False
    #: While the segment is active its Cython appender writes entries and owns the count.
    _source = None

    @property
    def _entries(self) -> int:
        src = self._source
        if src is None:
            return self._n
        return src.ti_entries if self._IS_TIME else src.oi_entries

    @_entries.setter
    def _entries(self, n: int) -> None:
        src = self._source
        if src is None:
            self._n = n
        elif self._IS_TIME:
            src.ti_entries = n
        else:
            src.oi_entries = n

    def _attach(self, appender) -> None:
        self._source = appender

    def _detach(self) -> None:
        if self._source is not None:
            n = self._entries
            self._source = None
            self._n = n

    def __init__(self, path: str, base_offset: int, max_index_size: int, *, writable: bool,
                 entries: int | None = None, fresh: bool = False) -> None:
        self.path = path
        self.base_offset = base_offset
        self.writable = writable
        self._max_entries = max(max_index_size // self.ENTRY_SIZE, 1)
        self._mm: mmap.mmap | None = None
        self._array: "np.ndarray | None" = None
        self._ready = 0
        self.entries_skipped = 0
        flags = os.O_RDWR | os.O_CREAT if writable else os.O_RDONLY
        fd = os.open(path, flags, 0o644)
        try:
            if fresh:
                os.ftruncate(fd, 0)
            file_size = os.fstat(fd).st_size
            if file_size % self.ENTRY_SIZE and not writable:
                raise CorruptIndexError(
                    f"{path}: size {file_size} is not a multiple of {self.ENTRY_SIZE}")
            on_disk = file_size // self.ENTRY_SIZE
            self._entries = on_disk if entries is None else entries
            if self._entries > on_disk:
                raise CorruptIndexError(f"{path}: {self._entries} entries expected, file holds {on_disk}")
            if writable:
                self._max_entries = max(self._max_entries, self._entries)
                size = self._max_entries * self.ENTRY_SIZE
                if file_size != size:
                    # Preallocate (sparse, as Kafka's RandomAccessFile.setLength) and zero
                    # anything past the valid entries, so stale bytes never look like entries.
                    os.ftruncate(fd, self._entries * self.ENTRY_SIZE)
                    os.ftruncate(fd, size)
                self._mm = mmap.mmap(fd, size)
                if size and hasattr(mmap, "MADV_RANDOM"):
                    # Entries land 8 or 12 bytes at a time: without this hint the first
                    # write fault into the sparse file makes the kernel allocate and zero
                    # a large folio of readahead size (measured 2-3 ms per index file, in
                    # the append that writes a segment's first entry); with it, a page.
                    self._mm.madvise(mmap.MADV_RANDOM)
            else:
                self._max_entries = on_disk
                if file_size:
                    self._mm = mmap.mmap(fd, file_size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)  # the mapping stays valid without the descriptor

    # -- state ---------------------------------------------------------------------

    @property
    def entries(self) -> "np.ndarray":
        """The valid entries: a read-only numpy view over the mapped file (zero-copy)."""
        import numpy as np

        dtype = globals().get(self._DTYPE_NAME) or __getattr__(self._DTYPE_NAME)
        if self._mm is None:
            return np.empty(0, dtype=dtype)
        if self._array is None:
            self._array = np.frombuffer(self._mm, dtype=dtype, count=len(self._mm) // self.ENTRY_SIZE)
        view = self._array[: self._entries]
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return self._entries

    @property
    def max_entries(self) -> int:
        return self._max_entries

    @property
    def is_full(self) -> bool:
        return self._entries >= self._max_entries

    @property
    def _buf(self):
        return self._mm if self._mm is not None else _EMPTY

    def _room(self, end: int) -> bool:
        """Whether the entry ending at byte ``end`` can be written: its page has a block.
        The file is sparse; writing into a page a full disk has no block for would kill
        the process (SIGBUS), so pages are allocated ahead, and without room the entry is
        left out (a sparser index only makes lookups scan further)."""
        if end <= self._ready:
            return True
        assert self._mm is not None
        rc = _core.populate_write(self._mm, self._ready, min(end + _POPULATE_AHEAD, len(self._mm)))
        if rc == 0:
            self._ready = min(end + _POPULATE_AHEAD, len(self._mm))
            return True
        if rc == 1:                              # kernel older than 5.14: write as before
            self._ready = len(self._mm)
            return True
        if _core.populate_write(self._mm, self._ready, end) == 0:
            self._ready = end
            return True
        self.entries_skipped += 1
        if self.entries_skipped == 1:
            _logger.warning("%s: no disk space for index entries; leaving them out (lookups in this "
                            "segment scan further until it is rebuilt)", self.path)
        return False

    def _check_writable(self) -> None:
        if not self.writable or self._mm is None:
            raise KafkaStorageError(f"{self.path}: index is not open for writing")

    def reset(self) -> None:
        """Drop every entry (before a rebuild)."""
        self._check_writable()
        _core.zero_range(self._mm, 0, self._entries * self.ENTRY_SIZE)
        self._entries = 0

    def _set_entries(self, n: int) -> None:
        self._entries = n

    def _truncate_entries(self, keep: int) -> None:
        self._check_writable()
        if keep < self._entries:
            _core.zero_range(self._mm, keep * self.ENTRY_SIZE, self._entries * self.ENTRY_SIZE)
            self._entries = keep

    def flush(self) -> None:
        """msync the mapping (a no-op for a read-only index)."""
        if self.writable and self._mm is not None:
            self._mm.flush()

    def trim(self, *, sync: bool = True) -> None:
        """Cut the file to its valid entries and remap it read-only (on roll and close).
        ``sync=False`` leaves out the msync: the written pages stay dirty in the page
        cache (unmapping a shared mapping loses nothing) for a caller that makes the whole
        filesystem durable next (a clean shutdown's one ``syncfs``)."""
        if not self.writable:
            return
        self._detach()
        if sync:
            self.flush()
        self._unmap()
        with open(self.path, "r+b") as f:
            os.ftruncate(f.fileno(), self._entries * self.ENTRY_SIZE)
        self.writable = False
        self._max_entries = self._entries
        if self._entries:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                self._mm = mmap.mmap(fd, self._entries * self.ENTRY_SIZE, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)

    def _unmap(self) -> None:
        self._array = None
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # someone still holds a view of it: it unmaps when they let go

    def close(self) -> None:
        """Flush (if writable) and unmap."""
        self.flush()
        self._unmap()

    def rename(self, path: str) -> None:
        os.rename(self.path, path)
        self.path = path


class OffsetIndex(_MappedIndex):
    """Sparse map from offset to the position of its batch in the segment's ``.log``.

    On disk: ``.index``, 8-byte big-endian entries ``(relative_offset u32, position u32)``,
    strictly increasing in both, relative to the segment's ``base_offset``.  See the module
    docstring for crash behaviour and thread safety.
    """

    ENTRY_SIZE = _core.OFFSET_INDEX_ENTRY_SIZE
    _DTYPE_NAME = "OFFSET_INDEX_DTYPE"
    _PACK = struct.Struct(">II")

    def lookup(self, offset: int) -> tuple[int, int]:
        """``(offset, position)`` of the greatest entry at or below ``offset``;
        ``(base_offset, 0)`` when there is none.  Binary search in Cython, warm tail first."""
        # Plain attribute reads only: this is the per-fetch hot path.
        src, mm, base = self._source, self._mm, self.base_offset
        slot, rel, pos = _core.offset_index_lookup(
            _EMPTY if mm is None else mm, self._n if src is None else src.oi_entries, offset - base)
        if slot < 0:
            return base, 0
        return base + rel, pos

    @property
    def last_entry(self) -> tuple[int, int]:
        """``(offset, position)`` of the last entry, ``(base_offset, 0)`` when empty."""
        if not self._entries:
            return self.base_offset, 0
        rel, pos = self._PACK.unpack_from(self._mm, (self._entries - 1) * 8)
        return self.base_offset + rel, pos

    def append(self, offset: int, position: int) -> None:
        """Add an entry; it must be above the last one in both offset and position.  On a
        full disk the entry is left out (see :meth:`_room`)."""
        self._check_writable()
        if self.is_full:
            raise KafkaStorageError(f"{self.path}: offset index is full ({self._entries} entries)")
        rel = offset - self.base_offset
        if not 0 <= rel <= 0xFFFFFFFF:
            raise KafkaStorageError(f"offset {offset} does not fit the index of segment {self.base_offset}")
        if self._entries:
            last_off, last_pos = self.last_entry
            if offset <= last_off or position <= last_pos:
                raise KafkaStorageError(
                    f"index entry ({offset}, {position}) is not above the last ({last_off}, {last_pos})")
        if not self._room((self._entries + 1) * 8):
            return
        self._PACK.pack_into(self._mm, self._entries * 8, rel, position)
        self._entries += 1

    def truncate_to(self, offset: int) -> None:
        """Remove every entry whose offset is >= ``offset``."""
        keep = _core.offset_index_first_at_or_above(self._buf, self._entries, offset - self.base_offset)
        self._truncate_entries(keep)

    def sanity_check(self, max_offset: int, segment_size: int) -> None:
        """Raise CorruptIndexError unless the entries increase and lie within the
        segment (offsets <= ``max_offset``, positions < ``segment_size``)."""
        problem = _core.offset_index_check(self._buf, self._entries, max_offset - self.base_offset,
                                           segment_size)
        if problem:
            raise CorruptIndexError(f"{self.path}: {problem}")


class TimeIndex(_MappedIndex):
    """Sparse map from timestamp to offset.

    On disk: ``.timeindex``, 12-byte big-endian entries ``(timestamp i64,
    relative_offset u32)``: timestamps strictly increasing, offsets never decreasing.
    See the module docstring for crash behaviour and thread safety.
    """

    ENTRY_SIZE = _core.TIME_INDEX_ENTRY_SIZE
    _DTYPE_NAME = "TIME_INDEX_DTYPE"
    _IS_TIME = True
    _PACK = struct.Struct(">qI")

    @property
    def is_full(self) -> bool:
        # As Kafka: the last slot is reserved for the entry written when the segment rolls.
        return self._entries >= self._max_entries - 1

    def lookup(self, timestamp: int) -> tuple[int, int]:
        """``(timestamp, offset)`` of the greatest entry whose timestamp is <= ``timestamp``;
        ``(-1, base_offset)`` when there is none."""
        slot, ts, rel = _core.time_index_lookup(self._buf, self._entries, timestamp)
        if slot < 0:
            return -1, self.base_offset
        return ts, self.base_offset + rel

    @property
    def last_entry(self) -> tuple[int, int]:
        """``(timestamp, offset)`` of the last entry, ``(-1, base_offset)`` when empty."""
        if not self._entries:
            return -1, self.base_offset
        ts, rel = self._PACK.unpack_from(self._mm, (self._entries - 1) * 12)
        return ts, self.base_offset + rel

    def maybe_append(self, timestamp: int, offset: int, *, skip_full_check: bool = False) -> bool:
        """Add ``(timestamp, offset)`` if ``timestamp`` is above the last entry's (Kafka's
        TimeIndex.maybeAppend).  ``skip_full_check`` is for the final entry written on
        roll, which may use the last slot.  Returns whether an entry was added."""
        self._check_writable()
        last_ts, last_off = self.last_entry
        if timestamp <= last_ts:
            return False
        if self._entries and offset < last_off:
            raise KafkaStorageError(f"time index offset {offset} below the last entry's {last_off}")
        if self._entries >= self._max_entries or (not skip_full_check and self.is_full):
            return False
        if not self._room((self._entries + 1) * 12):
            return False
        self._PACK.pack_into(self._mm, self._entries * 12, timestamp, offset - self.base_offset)
        self._entries += 1
        return True

    def truncate_to(self, offset: int) -> None:
        """Remove every entry whose offset is >= ``offset``."""
        keep = _core.time_index_first_at_or_above(self._buf, self._entries, offset - self.base_offset)
        self._truncate_entries(keep)

    def sanity_check(self, max_offset: int) -> None:
        """Raise CorruptIndexError unless timestamps strictly increase, offsets never
        decrease and none is beyond ``max_offset``."""
        problem = _core.time_index_check(self._buf, self._entries, max_offset - self.base_offset)
        if problem:
            raise CorruptIndexError(f"{self.path}: {problem}")
