"""Caching wrappers (Kafka's CachingKeyValueStore, CachingWindowStore, CachingSessionStore).

Writes go to a per-store write-back cache; between two commits the cache keeps only
the latest value per key, so the wrapped (logging, then inner) store and the
changelog see one write per key per commit instead of one per record, and the
flush listener (the KTable's downstream) sees one update per key.  ``flush()``
(called on commit) writes the dirty entries to the wrapped store in the order they
were last written, calls the flush listener with ``(key, new_value, old_value,
timestamp)`` for each, then flushes the wrapped store.  When more than
``max_entries`` keys are dirty the cache flushes early, as Kafka's evicts.

Reads see the cache first: ``get`` and every range merge the dirty entries with
the wrapped store's entries (a cached deletion hides the stored value).

Crash behaviour: dirty entries are lost with the process; they were not committed
either (their input offsets were not), so they are reprocessed.  One task thread.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable, Iterable, Iterator, Optional, Tuple

from pylog.errors import IllegalStateError

from ._base import KeyValueDefaults, check_key, context_timestamp
from ._windows import INT64_MAX, _check_session, check_time
from .changelogging import (ChangeLoggingKeyValueStore, ChangeLoggingSessionStore, ChangeLoggingWindowStore,
                            WrappedStore)

__all__ = ["CachingKeyValueStore", "CachingWindowStore", "CachingSessionStore", "FlushListener",
           "DEFAULT_MAX_CACHE_ENTRIES"]

FlushListener = Callable[[bytes, Optional[bytes], Optional[bytes], int], None]
DEFAULT_MAX_CACHE_ENTRIES = 10_000

_MISSING = object()


class _Cache(WrappedStore):
    """The write-back cache of every caching store: dirty entries in last-write
    order, written below (logged when a logging store is below) and reported to the
    flush listener on flush, on close and when more than ``max_entries`` are dirty.
    Subclasses say how an entry is read from (``_stored(entry)``) and written to
    (``_write_below(entry, value, timestamp)``) the store below."""

    def __init__(self, inner: Any, max_entries: int = DEFAULT_MAX_CACHE_ENTRIES) -> None:
        super().__init__(inner)
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        # entry -> (value or None for a deletion, record timestamp); insertion order is
        # the order of the last write, which a flush keeps.
        self._dirty: dict = {}
        self._listener: Optional[Callable[..., None]] = None
        self._send_old_values = False
        self._logs = isinstance(inner, (ChangeLoggingKeyValueStore, ChangeLoggingWindowStore,
                                        ChangeLoggingSessionStore))

    def set_flush_listener(self, listener: Optional[Callable[..., None]], send_old_values: bool = False) -> bool:
        """Call ``listener(entry, new, old, timestamp)`` for each entry a flush writes
        (``entry``: the key; ``(key, window_start)``; ``(key, start, end)``).

        ``old`` is the value the store below held before (``None`` unless
        ``send_old_values``).  Returns True, as Kafka's does, to say it caches."""
        self._listener = listener
        self._send_old_values = send_old_values
        return True

    def _check_open(self) -> None:
        if not self.inner.is_open():
            raise IllegalStateError(f"state store {self.name!r} is not open (call init() first, or it was closed)")

    def _remember(self, entry: Any, value: Optional[bytes], default_ts: int) -> None:
        self._dirty.pop(entry, None)  # move to the end: flush in last-write order
        self._dirty[entry] = (None if value is None else bytes(value), context_timestamp(self.context, default_ts))
        if len(self._dirty) > self.max_entries:
            self._flush_cache()

    def _flush_cache(self) -> None:
        dirty, self._dirty = self._dirty, {}
        listener = self._listener
        for entry, (value, ts) in dirty.items():
            old = self._stored(entry) if (listener is not None and self._send_old_values) else None  # type: ignore[attr-defined]
            self._write_below(entry, value, ts)  # type: ignore[attr-defined]
            if listener is not None:
                listener(entry, value, old, ts)

    def flush(self) -> None:
        self._check_open()
        self._flush_cache()
        self.inner.flush()

    def flush_cache(self) -> None:
        self._check_open()
        self._flush_cache()
        self.inner.flush_cache()

    def close(self) -> None:
        # Kafka flushes the cache on close, so a clean close loses nothing.
        if self.inner.is_open():
            self._flush_cache()
        self._dirty.clear()
        self.inner.close()

    def restore_batch(self, records: Iterable[Tuple[bytes, Optional[bytes]]]) -> None:
        self._dirty.clear()
        self.inner.restore_batch(records)


class CachingKeyValueStore(KeyValueDefaults, _Cache):
    def put(self, key: bytes, value: Optional[bytes]) -> None:
        self._check_open()
        self._remember(check_key(key), value, 0)

    def delete(self, key: bytes) -> Optional[bytes]:
        old = self.get(key)
        self.put(key, None)  # a tombstone even for an absent key: it may be stored below
        return old

    def _stored(self, key: bytes) -> Optional[bytes]:
        return self.inner.get(key)

    def _write_below(self, key: bytes, value: Optional[bytes], ts: int) -> None:
        if self._logs:
            self.inner.put(key, value, timestamp=ts)
        else:
            self.inner.put(key, value)

    # -- reads ----------------------------------------------------------------
    def get(self, key: bytes) -> Optional[bytes]:
        self._check_open()
        hit = self._dirty.get(check_key(key), _MISSING)
        if hit is not _MISSING:
            return hit[0]  # type: ignore[index]
        return self.inner.get(key)

    def range(self, from_key: Optional[bytes], to_key: Optional[bytes]) -> Iterator[Tuple[bytes, bytes]]:
        return self._merged(self.inner.range(from_key, to_key), from_key, to_key, False)

    def reverse_range(self, from_key: Optional[bytes], to_key: Optional[bytes]) -> Iterator[Tuple[bytes, bytes]]:
        return self._merged(self.inner.reverse_range(from_key, to_key), from_key, to_key, True)

    def all(self) -> Iterator[Tuple[bytes, bytes]]:
        return self._merged(self.inner.all(), None, None, False)

    def prefix_scan(self, prefix: bytes) -> Iterator[Tuple[bytes, bytes]]:
        prefix = check_key(prefix)
        stored = self.inner.prefix_scan(prefix)
        cached = sorted((k, v) for k, v in self._dirty.items() if k.startswith(prefix))
        return _merge(stored, cached, False)

    def approximate_num_entries(self) -> int:
        return self.inner.approximate_num_entries() + len(self._dirty)

    def _merged(self, stored: Iterator, lo: Optional[bytes], hi: Optional[bytes],
                reverse: bool) -> Iterator[Tuple[bytes, bytes]]:
        self._check_open()
        if lo is not None and hi is not None and lo > hi:
            return iter(())
        cached = sorted(((k, v) for k, v in self._dirty.items()
                         if (lo is None or k >= lo) and (hi is None or k <= hi)), reverse=reverse)
        return _merge(stored, cached, reverse)


def _merge(stored: Iterator[Tuple[bytes, bytes]], cached: list, reverse: bool) -> Iterator[Tuple[bytes, bytes]]:
    """Merge two key-sorted streams; a cached entry wins over the stored one and a
    cached deletion (value None) hides it."""
    tagged_stored = ((k, 1, v) for k, v in stored)
    tagged_cached = ((k, 0, entry[0]) for k, entry in cached)
    if reverse:
        merged = heapq.merge(tagged_cached, tagged_stored, key=lambda t: (_Rev(t[0]), t[1]))
    else:
        merged = heapq.merge(tagged_cached, tagged_stored, key=lambda t: (t[0], t[1]))
    last = None
    for key, source, value in merged:
        if key == last:
            continue  # the cached entry came first and wins
        last = key
        if value is not None:
            yield key, value


class _Rev:
    __slots__ = ("b",)

    def __init__(self, b: bytes) -> None:
        self.b = b

    def __lt__(self, other: "_Rev") -> bool:
        return self.b > other.b

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Rev) and self.b == other.b


class _CachingTimed(_Cache):
    """Write-back cache over a window or session store (Kafka's CachingWindowStore /
    CachingSessionStore).  It keeps its own stream time (the greatest of the wrapped
    store's and every cached put's) and applies the wrapped store's retention rule to
    it, so an entry expires at the same moment whether it is cached or stored."""

    def __init__(self, inner: Any, max_entries: int = DEFAULT_MAX_CACHE_ENTRIES) -> None:
        super().__init__(inner, max_entries)
        self._cache_time = -1

    @property
    def observed_stream_time(self) -> int:
        return max(self._cache_time, self.inner.observed_stream_time)

    def _min_live(self) -> int:
        return self.observed_stream_time - self.inner.retention_ms + self.inner.expiry_slack

    def _cache_put(self, entry: tuple, t: int, value: Optional[bytes]) -> None:
        self._cache_time = max(self._cache_time, t)
        if t >= self._min_live():  # else expired on arrival, as the wrapped store drops it
            self._remember(entry, value, t)

    def close(self) -> None:
        super().close()
        self._cache_time = -1

    def _overlay(self, stored: dict, wanted: Callable[[tuple], bool], t_of: Callable[[tuple], int]) -> list:
        """``stored`` (entry -> value) with the dirty entries laid over it, expired
        ones removed; sorted by the caller."""
        merged = dict(stored)
        for entry, (value, _) in self._dirty.items():
            if wanted(entry):
                if value is None:
                    merged.pop(entry, None)
                else:
                    merged[entry] = value
        min_live = self._min_live()
        return [(e, v) for e, v in merged.items() if t_of(e) >= min_live]


class CachingWindowStore(_CachingTimed):
    def put(self, key: bytes, value: Optional[bytes], window_start_ms: int) -> None:
        self._check_open()
        key = check_key(key)
        check_time(window_start_ms, "window_start_ms")
        self._cache_put((key, window_start_ms), window_start_ms, value)

    def _write_below(self, entry: tuple, value: Optional[bytes], ts: int) -> None:
        if self._logs:
            self.inner.put(entry[0], value, entry[1], timestamp=ts)
        else:
            self.inner.put(entry[0], value, entry[1])

    def _stored(self, entry: tuple) -> Optional[bytes]:
        return self.inner.fetch(entry[0], entry[1])

    def fetch(self, key: bytes, window_start_ms: int) -> Optional[bytes]:
        self._check_open()
        key = check_key(key)
        if check_time(window_start_ms, "window_start_ms") < self._min_live():
            return None
        hit = self._dirty.get((key, window_start_ms), _MISSING)
        return self.inner.fetch(key, window_start_ms) if hit is _MISSING else hit[0]  # type: ignore[index]

    def fetch_range(self, key: bytes, time_from: int, time_to: int) -> Iterator[Tuple[int, bytes]]:
        self._check_open()
        key = check_key(key)
        stored = {(key, t): v for t, v in self.inner.fetch_range(key, time_from, time_to)}
        got = self._overlay(stored, lambda e: e[0] == key and time_from <= e[1] <= time_to, lambda e: e[1])
        return iter([(e[1], v) for e, v in sorted(got)])

    def fetch_key_range(self, key_from: Optional[bytes], key_to: Optional[bytes], time_from: int,
                        time_to: int) -> Iterator[Tuple[Tuple[bytes, int], bytes]]:
        self._check_open()
        stored = dict(self.inner.fetch_key_range(key_from, key_to, time_from, time_to))
        if key_from is not None and key_to is not None and key_from > key_to:
            return iter(())
        got = self._overlay(stored, lambda e: ((key_from is None or e[0] >= key_from)
                                               and (key_to is None or e[0] <= key_to)
                                               and time_from <= e[1] <= time_to), lambda e: e[1])
        return iter(sorted(got, key=lambda ev: (ev[0][1], ev[0][0])))

    def fetch_all(self, time_from: int, time_to: int) -> Iterator[Tuple[Tuple[bytes, int], bytes]]:
        return self.fetch_key_range(None, None, time_from, time_to)

    def all(self) -> Iterator[Tuple[Tuple[bytes, int], bytes]]:
        return self.fetch_key_range(None, None, 0, INT64_MAX)


class CachingSessionStore(_CachingTimed):
    def put(self, session_key: Tuple[bytes, int, int], value: Optional[bytes]) -> None:
        self._check_open()
        key, start, end = _check_session(session_key)
        self._cache_put((key, start, end), end, value)

    def remove(self, session_key: Tuple[bytes, int, int]) -> None:
        self.put(session_key, None)

    def _write_below(self, entry: tuple, value: Optional[bytes], ts: int) -> None:
        if self._logs:
            self.inner.put(entry, value, timestamp=ts)
        else:
            self.inner.put(entry, value)

    def _stored(self, entry: tuple) -> Optional[bytes]:
        return self.inner.fetch_session(*entry)

    def fetch_session(self, key: bytes, start: int, end: int) -> Optional[bytes]:
        self._check_open()
        key, start, end = _check_session((key, start, end))
        if end < self._min_live():
            return None
        hit = self._dirty.get((key, start, end), _MISSING)
        return self.inner.fetch_session(key, start, end) if hit is _MISSING else hit[0]  # type: ignore[index]

    def find_sessions(self, key: bytes, earliest_session_end_time: int,
                      latest_session_start_time: int) -> Iterator[Tuple[Tuple[bytes, int, int], bytes]]:
        self._check_open()
        key = check_key(key)
        stored = dict(self.inner.find_sessions(key, earliest_session_end_time, latest_session_start_time))
        got = self._overlay(stored, lambda e: (e[0] == key and e[2] >= earliest_session_end_time
                                               and e[1] <= latest_session_start_time), lambda e: e[2])
        return iter(sorted(got, key=lambda ev: (ev[0][2], ev[0][1])))

    def fetch(self, key: bytes) -> Iterator[Tuple[Tuple[bytes, int, int], bytes]]:
        return self.find_sessions(key, 0, INT64_MAX)
