"""In-memory stores: sorted maps that live in the task's process.

Nothing is written to disk; after a crash or a task move the store is rebuilt from
its changelog topic (:meth:`restore_batch`).  Thread safety: one task thread.
Iterators walk a snapshot of the keys taken when they are created and look values
up as they go (a key deleted meanwhile is skipped), as Kafka's in-memory store does,
so writing to the store while iterating is allowed.
"""

from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

from sortedcontainers import SortedDict

from ._base import KeyValueDefaults, StoreBase, check_key
from ._windows import Retention, SessionOps, WindowOps

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
            if not self._open:
                self._check_open()  # closed while iterating: Kafka's iterators refuse too
            v = m.get(k)
            if v is not None:
                yield k, v

    def close(self) -> None:
        self._map.clear()
        super().close()


class _TimeIndexed(Retention, StoreBase):
    """Entries ``(key, t, x) -> value`` as Kafka's in-memory window and session stores
    hold them: a sorted map from ``t`` (window start, or session end: the timestamp
    entries expire by) to a dict of keys, each a dict from ``x`` (seqnum, or session
    start) to the value.  Window starts are few (aligned to the window advance), so a
    put is a few dict operations; expiry pops whole ``t`` entries from the front.
    """

    persistent = False

    def __init__(self, name: str, retention_ms: int, time_ordered: bool = False) -> None:
        super().__init__(name)
        self._init_retention(retention_ms, time_ordered)
        self._by_t: SortedDict = SortedDict()

    def _store(self, key: bytes, t: int, x: int, value: Optional[bytes]) -> None:
        if value is None:
            keys = self._by_t.get(t)
            xs = None if keys is None else keys.get(key)
            if xs is not None and xs.pop(x, None) is not None and not xs:
                del keys[key]
                if not keys:
                    del self._by_t[t]
            return
        keys = self._by_t.get(t)
        if keys is None:
            keys = self._by_t[t] = {}
        xs = keys.get(key)
        if xs is None:
            keys[key] = {x: bytes(value)}
        else:
            xs[x] = bytes(value)

    def _lookup(self, key: bytes, t: int, x: int) -> Optional[bytes]:
        if t < self._min_live():
            return None
        xs = self._by_t.get(t, {}).get(key)
        return None if xs is None else xs.get(x)

    def _drop_expired(self, min_live: int) -> None:
        by_t = self._by_t
        while by_t and by_t.peekitem(0)[0] < min_live:
            by_t.popitem(0)

    def _key_entries(self, key: bytes, t_from: int, t_to: int) -> list:
        t_from = max(t_from, self._min_live())
        if t_from > t_to:
            return []
        by_t = self._by_t
        out: list = []
        for t in by_t.irange(t_from, t_to):
            xs = by_t[t].get(key)
            if xs:
                out.extend(((key, t, x), xs[x]) for x in sorted(xs))
        return out

    def _time_entries(self, key_from: Optional[bytes], key_to: Optional[bytes], t_from: int,
                      t_to: int) -> list:
        t_from = max(t_from, self._min_live())
        if t_from > t_to or (key_from is not None and key_to is not None and key_from > key_to):
            return []
        by_t = self._by_t
        out: list = []
        for t in by_t.irange(t_from, t_to):
            keys = by_t[t]
            for key in sorted(k for k in keys if (key_from is None or k >= key_from)
                              and (key_to is None or k <= key_to)):
                xs = keys[key]
                out.extend(((key, t, x), xs[x]) for x in sorted(xs))
        return out

    def close(self) -> None:
        # Everything is gone: a re-init'd store starts over and is restored.
        self._by_t.clear()
        self.observed_stream_time = -1
        super().close()


class InMemoryWindowStore(WindowOps, _TimeIndexed):
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

    def _store_runs(self, runs: Dict[int, Dict[bytes, bytes]]) -> None:
        # WindowOps.put_window_runs: without duplicates seqnum 0 is the only one there is
        by_t = self._by_t
        for t, run in runs.items():
            keys = by_t.get(t)
            if keys is None:
                keys = by_t[t] = {}
            keys.update({binary[:-12]: {0: value} for binary, value in run.items()})


class InMemorySessionStore(SessionOps, _TimeIndexed):
    """Session store in memory (Kafka's InMemorySessionStore): sessions expire by their
    end time, ``retention_ms`` behind the greatest session end put so far."""

    def __init__(self, name: str, retention_ms: int) -> None:
        _TimeIndexed.__init__(self, name, retention_ms)
