"""Read-only views of stores for interactive queries (Kafka's
``QueryableStoreTypes``: ReadOnlyKeyValueStore / ReadOnlyWindowStore /
ReadOnlySessionStore).

A view exposes the reads of the store it wraps and nothing else: no put, no
delete, no flush, no close, so a query can never change a task's state.  It reads
through the caching layer when there is one, so it sees uncommitted updates, as
Kafka's do.  Thread safety is the store's: call from the task's thread, or hold the
task's lock around queries.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Tuple

__all__ = ["ReadOnlyKeyValueStoreView", "ReadOnlyWindowStoreView", "ReadOnlySessionStoreView", "read_only"]


class _View:
    __slots__ = ("_store",)

    def __init__(self, store: Any) -> None:
        self._store = store

    @property
    def name(self) -> str:
        return self._store.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._store!r}>"


class ReadOnlyKeyValueStoreView(_View):
    __slots__ = ()

    def get(self, key: bytes) -> Optional[bytes]:
        return self._store.get(key)

    def range(self, from_key: Optional[bytes], to_key: Optional[bytes]) -> Iterator[Tuple[bytes, bytes]]:
        return self._store.range(from_key, to_key)

    def reverse_range(self, from_key: Optional[bytes], to_key: Optional[bytes]) -> Iterator[Tuple[bytes, bytes]]:
        return self._store.reverse_range(from_key, to_key)

    def all(self) -> Iterator[Tuple[bytes, bytes]]:
        return self._store.all()

    def prefix_scan(self, prefix: bytes) -> Iterator[Tuple[bytes, bytes]]:
        return self._store.prefix_scan(prefix)

    def approximate_num_entries(self) -> int:
        return self._store.approximate_num_entries()


class ReadOnlyWindowStoreView(_View):
    __slots__ = ()

    def fetch(self, key: bytes, window_start_ms: int) -> Optional[bytes]:
        return self._store.fetch(key, window_start_ms)

    def fetch_range(self, key: bytes, time_from: int, time_to: int) -> Iterator[Tuple[int, bytes]]:
        return self._store.fetch_range(key, time_from, time_to)

    def fetch_key_range(self, key_from: Optional[bytes], key_to: Optional[bytes], time_from: int,
                        time_to: int) -> Iterator[Tuple[Tuple[bytes, int], bytes]]:
        return self._store.fetch_key_range(key_from, key_to, time_from, time_to)

    def fetch_all(self, time_from: int, time_to: int) -> Iterator[Tuple[Tuple[bytes, int], bytes]]:
        return self._store.fetch_all(time_from, time_to)

    def all(self) -> Iterator[Tuple[Tuple[bytes, int], bytes]]:
        return self._store.all()


class ReadOnlySessionStoreView(_View):
    __slots__ = ()

    def find_sessions(self, key: bytes, earliest_session_end_time: int,
                      latest_session_start_time: int) -> Iterator[Tuple[Tuple[bytes, int, int], bytes]]:
        return self._store.find_sessions(key, earliest_session_end_time, latest_session_start_time)

    def fetch_session(self, key: bytes, start: int, end: int) -> Optional[bytes]:
        return self._store.fetch_session(key, start, end)

    def fetch(self, key: bytes) -> Iterator[Tuple[Tuple[bytes, int, int], bytes]]:
        return self._store.fetch(key)


def read_only(store: Any) -> _View:
    """The read-only view that fits ``store`` (key-value, window or session)."""
    if hasattr(store, "find_sessions"):
        return ReadOnlySessionStoreView(store)
    if hasattr(store, "fetch_key_range"):
        return ReadOnlyWindowStoreView(store)
    if hasattr(store, "prefix_scan"):
        return ReadOnlyKeyValueStoreView(store)
    raise TypeError(f"{store!r} is not a key-value, window or session store")
