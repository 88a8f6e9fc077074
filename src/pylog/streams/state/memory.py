"""In-memory stores: sorted maps that live in the task's process.

Nothing is written to disk; after a crash or a task move the store is rebuilt from
its changelog topic (:meth:`restore_batch`).  Thread safety: one task thread.
Iterators walk a snapshot of the keys taken when they are created and look values
up as they go (a key deleted meanwhile is skipped), as Kafka's in-memory store does,
so writing to the store while iterating is allowed.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Tuple

from sortedcontainers import SortedDict

from ._base import StoreBase, check_key

__all__ = ["InMemoryKeyValueStore"]


class InMemoryKeyValueStore(StoreBase):
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

    def put_if_absent(self, key: bytes, value: Optional[bytes]) -> Optional[bytes]:
        self._check_open()
        old = self._map.get(check_key(key))
        if old is None:
            self.put(key, value)
        return old

    def put_all(self, entries: Iterable[Tuple[bytes, Optional[bytes]]]) -> None:
        for key, value in entries:
            self.put(key, value)

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
