"""In-memory stores: sorted maps that live in the task's process.

Nothing is written to disk; after a crash or a task move the store is rebuilt from
its changelog topic (:meth:`restore_batch`).  Thread safety: one task thread.
Iterators walk a snapshot of the keys taken when they are created and look values
up as they go (a key deleted meanwhile is skipped), as Kafka's in-memory store does,
so writing to the store while iterating is allowed.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Tuple

from sortedcontainers import SortedDict, SortedList

from ._base import KeyValueDefaults, StoreBase, check_key
from ._windows import TimeIndexedMixin, check_time
from .keys import session_key_from_binary, window_key_from_binary

__all__ = ["InMemoryKeyValueStore", "InMemoryWindowStore", "InMemorySessionStore"]


class InMemoryKeyValueStore(KeyValueDefaults, StoreBase):
    """Key-value store over a sorted dict (Kafka's InMemoryKeyValueStore, a TreeMap)."""

    persistent = False

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._map: SortedDict = SortedDict()

    # -- writes ---------------------------------------------------------------
    def put(self, key: bytes, value: Optional[bytes]) -> None:
        self._check_open()
        key = check_key(key)
        if value is None:
            self._map.pop(key, None)
        else:
            self._map[key] = bytes(value)

    def delete(self, key: bytes) -> Optional[bytes]:
        self._check_open()
        return self._map.pop(check_key(key), None)

    def restore_batch(self, records: Iterable[Tuple[bytes, Optional[bytes]]]) -> None:
        self.put_all(records)

    # -- reads ----------------------------------------------------------------
    def get(self, key: bytes) -> Optional[bytes]:
        self._check_open()
        return self._map.get(check_key(key))

    def range(self, from_key: Optional[bytes], to_key: Optional[bytes]) -> Iterator[Tuple[bytes, bytes]]:
        return self._range(from_key, to_key, False)

    def reverse_range(self, from_key: Optional[bytes], to_key: Optional[bytes]) -> Iterator[Tuple[bytes, bytes]]:
        return self._range(from_key, to_key, True)

    def all(self) -> Iterator[Tuple[bytes, bytes]]:
        return self._range(None, None, False)

    def reverse_all(self) -> Iterator[Tuple[bytes, bytes]]:
        return self._range(None, None, True)

    def prefix_scan(self, prefix: bytes) -> Iterator[Tuple[bytes, bytes]]:
        self._check_open()
        prefix = check_key(prefix)
        keys = []
        for k in self._map.irange(minimum=prefix):
            if not k.startswith(prefix):
                break
            keys.append(k)
        return self._values(keys)

    def approximate_num_entries(self) -> int:
        self._check_open()
        return len(self._map)

    def _range(self, lo: Optional[bytes], hi: Optional[bytes], reverse: bool) -> Iterator[Tuple[bytes, bytes]]:
        self._check_open()
        if lo is not None and hi is not None and lo > hi:
            # Kafka returns an empty iterator (and logs) for an inverted range.
            return iter(())
        keys = list(self._map.irange(lo, hi, reverse=reverse))
        return self._values(keys)

    def _values(self, keys: list) -> Iterator[Tuple[bytes, bytes]]:
        m = self._map
        for k in keys:
            v = m.get(k)
            if v is not None:
                yield k, v

    def close(self) -> None:
        self._map.clear()
        super().close()


class _TimeIndexed(StoreBase):
    """Entries ``(key, t, x) -> value`` in two sorted orders: by key (for one key's
    time range) and by time ``(t, key, x)`` (for time ranges over all keys, and to
    drop expired entries from the front).  ``t`` is the window start of a window
    store and the session end of a session store: the segment timestamp Kafka's
    segmented stores expire by.
    """

    persistent = False

    def __init__(self, name: str, retention_ms: int, time_ordered: bool = False) -> None:
        super().__init__(name)
        self._init_retention(retention_ms, time_ordered)
        self._by_key: SortedDict = SortedDict()
        self._by_time: SortedList = SortedList()

    def _store(self, key: bytes, t: int, x: int, value: Optional[bytes]) -> None:
        k = (key, t, x)
        if value is None:
            if self._by_key.pop(k, None) is not None:
                self._by_time.remove((t, key, x))
        else:
            if k not in self._by_key:
                self._by_time.add((t, key, x))
            self._by_key[k] = bytes(value)

    def _lookup(self, key: bytes, t: int, x: int) -> Optional[bytes]:
        return self._by_key.get((key, t, x)) if t >= self._min_live() else None

    def _drop_expired(self, min_live: int) -> None:
        by_time, by_key = self._by_time, self._by_key
        n = by_time.bisect_left((min_live,))
        for t, key, x in by_time[:n]:
            del by_key[(key, t, x)]
        del by_time[:n]

    def _key_entries(self, key: bytes, t_from: int, t_to: int) -> list:
        t_from = max(t_from, self._min_live())
        if t_from > t_to:
            return []
        by_key = self._by_key
        return [(k, by_key[k]) for k in by_key.irange((key, t_from), (key, t_to + 1), inclusive=(True, False))]

    def _time_entries(self, key_from: Optional[bytes], key_to: Optional[bytes], t_from: int,
                      t_to: int) -> list:
        t_from = max(t_from, self._min_live())
        if t_from > t_to or (key_from is not None and key_to is not None and key_from > key_to):
            return []
        by_key = self._by_key
        out = []
        for t, key, x in self._by_time.irange((t_from,), (t_to + 1,), inclusive=(True, False)):
            if (key_from is None or key >= key_from) and (key_to is None or key <= key_to):
                out.append(((key, t, x), by_key[(key, t, x)]))
        return out

    def close(self) -> None:
        # Everything is gone: a re-init'd store starts over and is restored.
        self._by_key.clear()
        self._by_time.clear()
        self.observed_stream_time = -1
        super().close()


class InMemoryWindowStore(TimeIndexedMixin.Window, _TimeIndexed):
    """Window store in memory (Kafka's InMemoryWindowStore).

    Entries older than the retention period behind the observed stream time (the
    greatest window start put so far, restores included) are invisible and dropped;
    a put of such a window is ignored, as Kafka's.  With ``retain_duplicates`` every
    non-null put is kept under its own seqnum and a null put is a no-op.
    """

    def __init__(self, name: str, retention_ms: int, window_size_ms: int, retain_duplicates: bool = False,
                 time_ordered: bool = False) -> None:
        _TimeIndexed.__init__(self, name, retention_ms, time_ordered)
        self._init_window(window_size_ms, retain_duplicates)


class InMemorySessionStore(TimeIndexedMixin.Session, _TimeIndexed):
    """Session store in memory (Kafka's InMemorySessionStore): sessions expire by their
    end time, ``retention_ms`` behind the greatest session end put so far."""

    def __init__(self, name: str, retention_ms: int) -> None:
        _TimeIndexed.__init__(self, name, retention_ms)
