"""Pieces every store implementation and wrapper shares: the open/closed life cycle
and the timestamp a changelog record is stamped with."""

from __future__ import annotations

from typing import Any, Iterable, Optional, Tuple

from pylog.errors import IllegalStateError

__all__ = ["StoreBase", "KeyValueDefaults", "context_timestamp", "check_key"]


class StoreBase:
    """Life cycle of a store: created closed, opened by :meth:`init`, closed by
    :meth:`close`.  Every data operation on a closed store raises
    :class:`~pylog.errors.IllegalStateError` (Kafka's InvalidStateStoreException)."""

    persistent = False

    def __init__(self, name: str) -> None:
        if not name or not isinstance(name, str):
            raise ValueError(f"a state store needs a non-empty name, got {name!r}")
        self.name = name
        self.context: Any = None
        self._open = False

    def init(self, context: Any) -> None:
        self.context = context
        self._open = True

    def is_open(self) -> bool:
        return self._open

    def flush(self) -> None:
        self._check_open()

    def flush_cache(self) -> None:
        """Write cached writes below (only caching wrappers hold any)."""

    def close(self) -> None:
        self._open = False

    def _check_open(self) -> None:
        if not self._open:
            raise IllegalStateError(
                f"state store {self.name!r} is not open (call init() first, or it was closed)")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {'open' if self._open else 'closed'}>"


def context_timestamp(context: Any, default: int) -> int:
    """The timestamp to stamp a changelog record with: the context's current record
    timestamp when it has one (attribute or method ``timestamp``), else ``default``."""
    ts = getattr(context, "timestamp", None)
    if callable(ts):
        ts = ts()
    return default if ts is None else int(ts)


def check_key(key: Optional[bytes]) -> bytes:
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise TypeError(f"state store keys are bytes (serialise above the store), got {type(key).__name__}")
    return bytes(key)


class KeyValueDefaults:
    """The key-value writes that follow from ``get`` and ``put``."""

    def put_if_absent(self, key: bytes, value: Optional[bytes]) -> Optional[bytes]:
        old = self.get(key)  # type: ignore[attr-defined]
        if old is None:
            self.put(key, value)  # type: ignore[attr-defined]
        return old

    def put_all(self, entries: Iterable[Tuple[bytes, Optional[bytes]]]) -> None:
        for key, value in entries:
            self.put(key, value)  # type: ignore[attr-defined]

    def restore_batch(self, records: Iterable[Tuple[bytes, Optional[bytes]]]) -> None:
        """Apply changelog records: the changelog key is the store key."""
        self.put_all(records)

    def delete(self, key: bytes) -> Optional[bytes]:
        old = self.get(key)  # type: ignore[attr-defined]
        if old is not None:
            self.put(key, None)  # type: ignore[attr-defined]
        return old
