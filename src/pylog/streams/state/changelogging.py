"""Logging wrappers: every write to the wrapped store is also sent to the store's
changelog topic through ``context.log_change`` (Kafka's ChangeLogging*BytesStore).

The changelog is a compacted topic whose keys identify one entry of the store:

* key-value store: the key itself;
* window store: ``key + window start (int64 BE) + seqnum (int32 BE)``, Kafka's
  ``WindowKeySchema.toStoreKeyBinary`` (seqnum is 0 unless the store retains
  duplicates; then it counts puts, wrapping at 2**31);
* session store: ``key + session end (int64 BE) + session start (int64 BE)``,
  Kafka's ``SessionKeySchema.toBinary``.

A deletion is logged as a tombstone (value ``None``).  Restoring a store from its
changelog (:meth:`restore_batch`) writes to the wrapped store directly and logs
nothing.  Records are stamped with the context's current record timestamp when
it has one, else with the window start / session end (0 for key-value stores).
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Tuple

from ._base import context_timestamp
from .keys import session_key_to_binary, window_key_to_binary

__all__ = ["WrappedStore", "ChangeLoggingKeyValueStore", "ChangeLoggingWindowStore",
           "ChangeLoggingSessionStore"]


class WrappedStore:
    """A store wrapping another one: life cycle and reads go to the wrapped store."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.context: Any = None

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def persistent(self) -> bool:
        return self.inner.persistent

    def init(self, context: Any) -> None:
        self.context = context
        self.inner.init(context)

    def flush(self) -> None:
        self.inner.flush()

    def flush_cache(self) -> None:
        self.inner.flush_cache()

    def close(self) -> None:
        self.inner.close()

    def is_open(self) -> bool:
        return self.inner.is_open()

    def restore_batch(self, records: Iterable[Tuple[bytes, Optional[bytes]]]) -> None:
        self.inner.restore_batch(records)

    def wrapped(self) -> Any:
        """The innermost store (the one holding the data)."""
        s = self.inner
        while isinstance(s, WrappedStore):
            s = s.inner
        return s

    def __getattr__(self, attr: str) -> Any:
        # Reads (get, range, fetch, ...) and store attributes (retention_ms, ...).
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.inner!r}>"


class ChangeLoggingKeyValueStore(WrappedStore):
    def _log(self, key: bytes, value: Optional[bytes], timestamp: Optional[int]) -> None:
        self.context.log_change(key, value, context_timestamp(self.context, 0) if timestamp is None else timestamp)

    def put(self, key: bytes, value: Optional[bytes], *, timestamp: Optional[int] = None) -> None:
        self.inner.put(key, value)
        self._log(bytes(key), None if value is None else bytes(value), timestamp)

    def put_if_absent(self, key: bytes, value: Optional[bytes], *, timestamp: Optional[int] = None) -> Optional[bytes]:
        old = self.inner.put_if_absent(key, value)
        if old is None:
            self._log(bytes(key), None if value is None else bytes(value), timestamp)
        return old

    def put_all(self, entries: Iterable[Tuple[bytes, Optional[bytes]]], *,
                timestamp: Optional[int] = None) -> None:
        entries = list(entries)
        self.inner.put_all(entries)
        for key, value in entries:
            self._log(bytes(key), None if value is None else bytes(value), timestamp)

    def delete(self, key: bytes, *, timestamp: Optional[int] = None) -> Optional[bytes]:
        old = self.inner.delete(key)
        self._log(bytes(key), None, timestamp)
        return old


class ChangeLoggingWindowStore(WrappedStore):
    """Logs ``key + window start + seqnum``; with ``retain_duplicates`` every put gets
    the next seqnum, so duplicates stay distinct records in the changelog."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self._seqnum = 0

    def put(self, key: bytes, value: Optional[bytes], window_start_ms: int, *,
            timestamp: Optional[int] = None) -> None:
        self.inner.put(key, value, window_start_ms)
        # With duplicates every put, a null one too, has its own seqnum (Kafka's
        # maybeUpdateSeqnumForDups); otherwise the seqnum is 0.
        seqnum = self.inner.last_seqnum if self.inner.retain_duplicates else 0
        ts = context_timestamp(self.context, window_start_ms) if timestamp is None else timestamp
        self.context.log_change(window_key_to_binary(bytes(key), window_start_ms, seqnum),
                                None if value is None else bytes(value), ts)


class ChangeLoggingSessionStore(WrappedStore):
    def put(self, session_key: Tuple[bytes, int, int], value: Optional[bytes], *,
            timestamp: Optional[int] = None) -> None:
        self.inner.put(session_key, value)
        key, start, end = session_key
        ts = context_timestamp(self.context, end) if timestamp is None else timestamp
        self.context.log_change(session_key_to_binary(bytes(key), start, end),
                                None if value is None else bytes(value), ts)

    def remove(self, session_key: Tuple[bytes, int, int], *, timestamp: Optional[int] = None) -> None:
        self.put(session_key, None, timestamp=timestamp)
