"""Persistent stores on RocksDB (through ``rocksdict``), as Kafka Streams' RocksDB stores.

Why RocksDB: measured side by side with LMDB (py-lmdb), LevelDB (plyvel) and sqlite3
in ``benches/bench_streams_stores.py`` (1M keys, 100-byte values; see that file and
the commit that chose it for the table).  LMDB reads faster from Python (gets 3-4x,
range scans about 1.5x, opens in 0.4 ms against 9 ms) and restores about as fast, but
it checksums nothing (a damaged page is served as data, where pylog's rule is that
damage on disk is detected), refuses keys over 511 bytes (Kafka keys have no such
limit), and used 2.3x the disk (267 MB against 115 MB).  RocksDB writes as fast or
faster (200k puts in batches of 1000: 0.40 s against 0.48 s), checksums every block,
compresses, has no key limit, and is the engine Kafka Streams runs, so its tuning
(no write-ahead log, flush on commit) carries over.  sqlite3 was 5-9x slower to write
and restore; plyvel (LevelDB) was close to RocksDB but slower to read and is the
less maintained binding.

On disk (Kafka's layout)::

    <state_dir>/<application_id>/<task_id>/rocksdb/<store_name>/          key-value store
    <state_dir>/<application_id>/<task_id>/rocksdb/<store_name>/<store_name>.<segment start ms>/
                                                                           window/session segments

A key-value store holds its keys as they are.  A window or session store keeps one
RocksDB per segment of ``segment_interval_ms`` (max(retention/2, 60 s)), keyed by
Kafka's WindowKeySchema (``key | start int64 BE | seqnum int32 BE``) or
SessionKeySchema (``key | end int64 BE | start int64 BE``); expiry drops whole
segments (closed and deleted), as Kafka's RocksDBSegmentedBytesStore does.  The
newest segment also holds, under the empty key, the observed stream time and the
last duplicate seqnum at the last flush (int64 + int32 BE), so a reopened store
expires exactly as before and never reuses a seqnum.

Crash behaviour: writes skip RocksDB's write-ahead log (the changelog topic is the
source of truth, as in Kafka Streams); ``flush()``, called on commit before the task
checkpoint is written, persists them.  A window or session store gathers its writes
between two flushes in a write buffer (a dict per segment, the latest value or
deletion of each entry, read before RocksDB) and writes it as one RocksDB WriteBatch
per segment on flush, before a range scan, and when it holds
``WRITE_BUFFER_ENTRIES`` writes: a put is a dict assignment, not a call into
RocksDB, and an entry written many times between commits reaches RocksDB once.  A
segment's RocksDB is opened (created) only when its buffered writes are written, so a
segment that expires between two flushes (short windows, fast stream time: a 1 s
window store has 60 s segments, and a task can pass several between two commits)
never touches the disk.  A killed process therefore leaves a store
that holds at least everything up to its checkpointed offset, and restoring from
there repairs the rest.  A store RocksDB finds damaged (a ``Corruption`` status) is
logged, wiped and reopened empty, with ``wiped`` set so the state manager restores it
from the beginning of its changelog; any other failure to open (a store another
instance holds open: RocksDB's LOCK) raises KafkaStorageError and deletes nothing.
Thread safety: one task thread.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import tempfile
from collections import deque
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Set, Tuple

from pylog.errors import KafkaStorageError

from ._base import KeyValueDefaults, StoreBase, check_key
from ._windows import INT64_MAX, Retention, SessionOps, WindowOps
from .keys import session_key_from_binary, window_key_from_binary

__all__ = ["RocksDBKeyValueStore", "RocksDBWindowStore", "RocksDBSessionStore", "store_directory"]

log = logging.getLogger(__name__)

_STREAM_TIME_KEY = b""
#: Writes a segmented store gathers before it writes them to RocksDB uncommitted.
WRITE_BUFFER_ENTRIES = 100_000
_MISSING = object()
#: Under the empty key of the newest segment: observed stream time, last seqnum.
_META = struct.Struct(">qi")


def store_directory(state_dir: str, application_id: str, task_id: Any, store_name: str) -> str:
    """``<state_dir>/<application_id>/<task_id>/rocksdb/<store_name>``; an empty
    ``state_dir`` means Kafka's default, ``<temp dir>/kafka-streams``."""
    if not state_dir:
        state_dir = os.path.join(tempfile.gettempdir(), "kafka-streams")
    return os.path.join(state_dir, application_id, str(task_id), "rocksdb", store_name)


def _rocksdict() -> Any:
    try:
        import rocksdict
    except ImportError:
        raise ImportError(
            "persistent state stores need RocksDB: pip install 'pylog[streams]' (or use "
            "Stores.in_memory_*_store)") from None
    return rocksdict


_BLOCK_CACHE: Any = None


def rocksdb_options() -> Any:
    """RocksDB options as Kafka Streams' RocksDBStore sets them: a 50 MB LRU block cache
    (shared by the stores of this process), 4 KB blocks with a 10-bit bloom filter,
    16 MB write buffers (3 of them), universal compaction, no compression (values are
    usually small serialized records), paranoid checks on open."""
    global _BLOCK_CACHE
    rocksdict = _rocksdict()
    if _BLOCK_CACHE is None:
        _BLOCK_CACHE = rocksdict.Cache(50 << 20)
    table = rocksdict.BlockBasedOptions()
    table.set_block_cache(_BLOCK_CACHE)
    table.set_block_size(4096)
    table.set_bloom_filter(10, False)
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_paranoid_checks(True)
    opts.set_block_based_table_factory(table)
    opts.set_write_buffer_size(16 << 20)
    opts.set_max_write_buffer_number(3)
    opts.set_compaction_style(rocksdict.DBCompactionStyle.universal())
    opts.set_compression_type(rocksdict.DBCompressionType.none())
    opts.increase_parallelism(max(os.cpu_count() or 2, 2))
    return opts


def _open_db(path: str) -> Any:
    rocksdict = _rocksdict()
    db = rocksdict.Rdict(path, options=rocksdb_options())
    wo = rocksdict.WriteOptions()
    # Kafka Streams' setting: the changelog is the log.  (A property at run time; the
    # package's stub declares a method.)
    wo.disable_wal = True  # type: ignore[method-assign,assignment]
    db.set_write_options(wo)
    return db


class _RocksDBStore(StoreBase):
    persistent = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.path: Optional[str] = None
        #: True when init() found a store RocksDB could not open and started it empty.
        self.wiped = False

    def _directory(self, context: Any) -> str:
        return store_directory(context.state_dir, context.application_id, context.task_id, self.name)

    def _open_or_wipe(self, path: str) -> Any:
        try:
            return _open_db(path)
        except Exception as e:  # rocksdict raises plain Exception for RocksDB's Status
            if not str(e).startswith("Corruption"):
                # Not damage: above all the LOCK of a store another instance has open,
                # whose files a wipe would delete under it. Kafka fails the same way.
                raise KafkaStorageError(
                    f"state store {self.name!r}: RocksDB could not open {path}: {e}; another instance "
                    f"of the application may have this task's store open on the same state directory "
                    f"(give each instance its own state_dir), or the directory is not writable") from e
            log.warning("state store %r: RocksDB could not open %s (%s); wiping it, the store will "
                        "be restored from its changelog", self.name, path, e)
            shutil.rmtree(path, ignore_errors=True)
            self.wiped = True
            try:
                return _open_db(path)
            except Exception as e2:
                raise KafkaStorageError(f"state store {self.name!r}: cannot create a RocksDB at {path}: "
                                        f"{e2}; check the state directory is writable") from e2


class RocksDBKeyValueStore(KeyValueDefaults, _RocksDBStore):
    """Key-value store in one RocksDB (Kafka's RocksDBStore)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._db: Any = None

    def init(self, context: Any) -> None:
        self.path = self._directory(context)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.wiped = False
        self._db = self._open_or_wipe(self.path)
        super().init(context)

    def put(self, key: bytes, value: Optional[bytes]) -> None:
        self._check_open()
        key = check_key(key)
        if value is None:
            self._db.delete(key)
        else:
            self._db.put(key, bytes(value))

    def put_all(self, entries: Iterable[Tuple[bytes, Optional[bytes]]]) -> None:
        import rocksdict

        self._check_open()
        wb = rocksdict.WriteBatch(raw_mode=True)
        for key, value in entries:
            key = check_key(key)
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, bytes(value))
        self._db.write(wb)

    def get(self, key: bytes) -> Optional[bytes]:
        self._check_open()
        return self._db.get(check_key(key))

    def range(self, from_key: Optional[bytes], to_key: Optional[bytes]) -> Iterator[Tuple[bytes, bytes]]:
        self._check_open()
        if from_key is not None and to_key is not None and from_key > to_key:
            return iter(())
        return self._forward(from_key, lambda k: to_key is not None and k > to_key)

    def reverse_range(self, from_key: Optional[bytes], to_key: Optional[bytes]) -> Iterator[Tuple[bytes, bytes]]:
        self._check_open()
        if from_key is not None and to_key is not None and from_key > to_key:
            return iter(())
        it = self._db.items(backwards=True, from_key=to_key) if to_key is not None else self._db.items(backwards=True)
        return self._take_while(it, lambda k: from_key is not None and k < from_key)

    def all(self) -> Iterator[Tuple[bytes, bytes]]:
        return self.range(None, None)

    def reverse_all(self) -> Iterator[Tuple[bytes, bytes]]:
        return self.reverse_range(None, None)

    def prefix_scan(self, prefix: bytes) -> Iterator[Tuple[bytes, bytes]]:
        self._check_open()
        prefix = check_key(prefix)
        return self._forward(prefix, lambda k: not k.startswith(prefix))

    def approximate_num_entries(self) -> int:
        self._check_open()
        return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def _forward(self, lo: Optional[bytes], stop: Any) -> Iterator[Tuple[bytes, bytes]]:
        it = self._db.items(from_key=lo) if lo is not None else self._db.items()
        return self._take_while(it, stop)

    def _take_while(self, it: Iterator[Tuple[bytes, bytes]], stop: Any) -> Iterator[Tuple[bytes, bytes]]:
        # A RocksDB iterator reads a snapshot taken when it was made; like Kafka's, it
        # refuses to go on once the store is closed.
        for k, v in it:
            if not self._open:
                self._check_open()
            if stop(k):
                return
            yield k, v

    def flush(self) -> None:
        self._check_open()
        self._db.flush(True)

    def close(self) -> None:
        if self._db is not None:
            if self._open:
                self._db.flush(True)
            self._db.close()
            self._db = None
        super().close()




class _Segmented(Retention, _RocksDBStore):
    """Entries ``(key, t, x)`` in one RocksDB per time segment; see the module docstring.

    ``_suffix`` packs ``(t, x)`` big-endian, so within a segment one key's entries
    are in ``(t, x)`` order.
    """

    _suffix: struct.Struct
    _parse_changelog_key: Callable[[bytes], Tuple[bytes, int, int]]

    def __init__(self, name: str, retention_ms: int, time_ordered: bool = False) -> None:
        super().__init__(name)
        self._init_retention(retention_ms, time_ordered)
        self._segments: Dict[int, Any] = {}
        # segment id -> {entry's binary key: value, or None to delete}; see the module docstring
        self._pending: Dict[int, Dict[bytes, Optional[bytes]]] = {}
        self._pending_deletes: Set[int] = set()    # the segments with a deletion in _pending
        self._pending_writes = 0

    # -- segments -------------------------------------------------------------
    def _segment_path(self, segment_id: int) -> str:
        return os.path.join(str(self.path), f"{self.name}.{segment_id * self.segment_interval_ms}")

    def init(self, context: Any) -> None:
        self.path = self._directory(context)
        os.makedirs(self.path, exist_ok=True)
        self.wiped = False
        self._segments = {}
        self._pending = {}
        self._pending_deletes = set()
        self._pending_writes = 0
        self.observed_stream_time = -1
        prefix = self.name + "."
        for entry in sorted(os.listdir(self.path)):
            tail = entry[len(prefix):] if entry.startswith(prefix) else ""
            # (ASCII only: str.isdigit() takes "²", which int() refuses.)
            if not (tail.isascii() and tail.isdigit()) or int(tail) % self.segment_interval_ms:
                log.warning("state store %r: ignoring %s in %s (not a segment of this store)",
                            self.name, entry, self.path)
                continue
            seg_id = int(tail) // self.segment_interval_ms
            self._segments[seg_id] = self._open_or_wipe(self._segment_path(seg_id))
        if self._segments:
            newest = self._segments[max(self._segments)]
            raw = newest.get(_STREAM_TIME_KEY)
            if raw is not None and len(raw) == _META.size:
                self.observed_stream_time, seqnum = _META.unpack(raw)
                if hasattr(self, "last_seqnum"):
                    self.last_seqnum = seqnum
            else:  # never flushed: the newest segment's start is a safe lower bound
                self.observed_stream_time = max(self._segments) * self.segment_interval_ms
        StoreBase.init(self, context)
        self._drop_expired(self._min_live())

    def _segment(self, t: int, create: bool) -> Any:
        seg_id = t // self.segment_interval_ms
        db = self._segments.get(seg_id)
        if db is None and create:
            db = self._segments[seg_id] = self._open_or_wipe(self._segment_path(seg_id))
        return db

    def _drop_expired(self, min_live: int) -> None:
        min_seg = min_live // self.segment_interval_ms
        for seg_id in [s for s in self._pending if s < min_seg]:
            del self._pending[seg_id]       # a segment never written to RocksDB: nothing on disk
            self._pending_deletes.discard(seg_id)
        for seg_id in [s for s in self._segments if s < min_seg]:
            db = self._segments.pop(seg_id)
            db.close()
            shutil.rmtree(self._segment_path(seg_id), ignore_errors=True)

    # -- primitives (see _windows) ---------------------------------------------
    def _store(self, key: bytes, t: int, x: int, value: Optional[bytes]) -> None:
        seg_id = t // self.segment_interval_ms
        pending = self._pending.get(seg_id)
        if pending is None:
            if value is None and seg_id not in self._segments:
                return      # deleting from a segment that does not exist
            pending = self._pending[seg_id] = {}
        if value is None:
            pending[key + self._suffix.pack(t, x)] = None
            self._pending_deletes.add(seg_id)
        else:
            pending[key + self._suffix.pack(t, x)] = bytes(value)
        self._pending_writes += 1
        if self._pending_writes >= WRITE_BUFFER_ENTRIES:
            self._write_pending()

    def _store_runs(self, runs: Dict[int, Dict[bytes, bytes]]) -> None:
        # a run's binary keys are this store's (WindowKeySchema): one dict update each
        interval, pending_all = self.segment_interval_ms, self._pending
        n = 0
        for t, run in runs.items():
            seg = t // interval
            pending = pending_all.get(seg)
            if pending is None:
                pending_all[seg] = pending = {}
            pending.update(run)
            n += len(run)
        self._pending_writes += n
        if self._pending_writes >= WRITE_BUFFER_ENTRIES:
            self._write_pending()

    def _write_pending(self) -> None:
        """The write buffer to RocksDB: one WriteBatch per segment (no sync); a segment
        written for the first time is opened (created) here."""
        if not self._pending:
            return
        import rocksdict

        pending, self._pending = self._pending, {}
        deletes, self._pending_deletes = self._pending_deletes, set()
        self._pending_writes = 0
        for seg_id, entries in pending.items():
            db = self._segments.get(seg_id)
            if db is None:
                if seg_id in deletes and all(v is None for v in entries.values()):
                    continue    # deletions in a segment not on disk yet: nothing to delete
                db = self._segment(seg_id * self.segment_interval_ms, create=True)
            wb = rocksdict.WriteBatch(raw_mode=True)
            if seg_id in deletes:
                for binary, value in entries.items():
                    if value is None:
                        wb.delete(binary)
                    else:
                        wb.put(binary, value)
            else:   # puts only (window runs): the loop in C, a call into RocksDB per entry
                deque(map(wb.put, entries.keys(), entries.values()), maxlen=0)
            db.write(wb)

    def _lookup(self, key: bytes, t: int, x: int) -> Optional[bytes]:
        if t < self._min_live():
            return None
        seg_id = t // self.segment_interval_ms
        binary = key + self._suffix.pack(t, x)
        pending = self._pending.get(seg_id)
        if pending is not None:
            hit = pending.get(binary, _MISSING)
            if hit is not _MISSING:
                return hit  # type: ignore[return-value]
        db = self._segments.get(seg_id)
        return None if db is None else db.get(binary)

    def _live_segments(self, t_from: int, t_to: int) -> list:
        lo, hi = t_from // self.segment_interval_ms, t_to // self.segment_interval_ms
        return [self._segments[s] for s in sorted(self._segments) if lo <= s <= hi]

    def _key_entries(self, key: bytes, t_from: int, t_to: int) -> list:
        t_from = max(t_from, self._min_live())
        if t_from > t_to:
            return []
        self._write_pending()
        suffix, n = self._suffix, self._suffix.size
        lo, hi = key + suffix.pack(t_from, 0), key + suffix.pack(t_to, INT64_MAX if n == 16 else 0x7FFFFFFF)
        out: list = []
        for db in self._live_segments(t_from, t_to):
            for binary, value in db.items(from_key=lo):
                if binary > hi:
                    break
                if len(binary) - n == len(key):  # another key that sorts in between
                    t, x = suffix.unpack_from(binary, len(key))
                    out.append(((key, t, x), value))
        return out

    def _time_entries(self, key_from: Optional[bytes], key_to: Optional[bytes], t_from: int,
                      t_to: int) -> list:
        t_from = max(t_from, self._min_live())
        if t_from > t_to or (key_from is not None and key_to is not None and key_from > key_to):
            return []
        self._write_pending()
        suffix, n = self._suffix, self._suffix.size
        out: list = []
        for db in self._live_segments(t_from, t_to):
            # A segment is in key order; the caller wants (t, key, x) order: sort it.
            # The scan starts at key_from (no entry of a smaller key sorts after it)
            # but runs to the segment's end: the key is not length-prefixed, so an
            # entry of a key <= key_to can sort after one of a key > key_to.
            seg = []
            it = db.items(from_key=key_from) if key_from is not None else db.items()
            for binary, value in it:
                if len(binary) < n:
                    continue  # the stream-time entry
                key = binary[:-n]
                if (key_to is not None and key > key_to) or (key_from is not None and key < key_from):
                    continue
                t, x = suffix.unpack_from(binary, len(binary) - n)
                if t_from <= t <= t_to:
                    seg.append(((key, t, x), value))
            seg.sort(key=lambda e: (e[0][1], e[0][0], e[0][2]))
            out.extend(seg)
        return out

    def restore_batch(self, records: Iterable[Tuple[bytes, Optional[bytes]]]) -> None:
        """Apply changelog records as Kafka's segmented store does: stream time first
        advances to the batch's greatest timestamp (dropping what that expires), then
        each live segment gets one RocksDB WriteBatch.  The changelog key is the store
        key (both are the key schema's), so records go in as they are.  The visible
        result equals applying the records one by one."""
        import rocksdict

        self._check_open()
        self._write_pending()
        suffix, n = self._suffix, self._suffix.size
        dups = getattr(self, "retain_duplicates", False)
        parsed = []
        for binary, value in records:
            if len(binary) < n:
                self._parse_changelog_key(binary)  # raises CorruptRecordError, naming the layout
            t, x = suffix.unpack_from(binary, len(binary) - n)
            parsed.append((binary, value, t, x))
        if not parsed:
            return
        self._observe(max(p[2] for p in parsed))
        min_live = self._min_live()
        batches: Dict[int, Any] = {}
        for binary, value, t, x in parsed:
            if dups:
                self.last_seqnum = x
                if value is None:
                    continue  # a null put on a duplicates store stores nothing
            elif n == 12 and x != 0:
                binary = binary[:-4] + b"\x00\x00\x00\x00"  # without duplicates the seqnum is 0
            if t < min_live:
                continue
            seg_id = t // self.segment_interval_ms
            wb = batches.get(seg_id)
            if wb is None:
                if value is None and seg_id not in self._segments:
                    continue  # deleting from a segment that does not exist
                self._segment(t, create=True)
                wb = batches[seg_id] = rocksdict.WriteBatch(raw_mode=True)
            if value is None:
                wb.delete(binary)
            else:
                wb.put(binary, bytes(value))
        for seg_id, wb in batches.items():
            self._segments[seg_id].write(wb)

    def flush(self) -> None:
        self._check_open()
        self._write_pending()
        if self.observed_stream_time >= 0:
            # Stream time's segment is the newest one (nothing later is ever stored).
            meta = _META.pack(self.observed_stream_time, getattr(self, "last_seqnum", 0))
            self._segment(self.observed_stream_time, create=True).put(_STREAM_TIME_KEY, meta)
        for db in self._segments.values():
            db.flush(True)

    def close(self) -> None:
        if self._open:
            self.flush()
        for db in self._segments.values():
            db.close()
        self._segments = {}
        self._pending = {}
        self._pending_deletes = set()
        self._pending_writes = 0
        super().close()


class RocksDBWindowStore(WindowOps, _Segmented):
    """Window store in segmented RocksDBs (Kafka's RocksDBWindowStore); same
    behaviour as :class:`~pylog.streams.state.memory.InMemoryWindowStore`."""

    _suffix = struct.Struct(">qi")
    _parse_changelog_key = staticmethod(window_key_from_binary)
    restore_batch = _Segmented.restore_batch

    def __init__(self, name: str, retention_ms: int, window_size_ms: int, retain_duplicates: bool = False,
                 time_ordered: bool = False) -> None:
        _Segmented.__init__(self, name, retention_ms, time_ordered)
        self._init_window(window_size_ms, retain_duplicates)


class RocksDBSessionStore(SessionOps, _Segmented):
    """Session store in segmented RocksDBs (Kafka's RocksDBSessionStore), segments by
    session end; same behaviour as the in-memory session store."""

    _suffix = struct.Struct(">qq")
    _parse_changelog_key = staticmethod(session_key_from_binary)
    restore_batch = _Segmented.restore_batch

    def __init__(self, name: str, retention_ms: int) -> None:
        _Segmented.__init__(self, name, retention_ms)
