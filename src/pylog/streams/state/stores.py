"""Store builders, as Kafka Streams' ``Stores`` factory and ``StoreBuilder``.

``Stores.in_memory_key_value_store("counts")`` returns a :class:`StoreBuilder`;
its ``build()`` gives the store wrapped as Kafka wraps it: caching (when enabled)
over change-logging (the default) over the store that holds the data.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Callable, Dict, Optional

from .caching import CachingKeyValueStore, CachingSessionStore, CachingWindowStore
from .changelogging import ChangeLoggingKeyValueStore, ChangeLoggingSessionStore, ChangeLoggingWindowStore
from .memory import InMemoryKeyValueStore, InMemorySessionStore, InMemoryWindowStore
from .persistent import RocksDBKeyValueStore, RocksDBSessionStore, RocksDBWindowStore

__all__ = ["Stores", "StoreBuilder"]

log = logging.getLogger(__name__)

_LOGGERS = {"key_value": ChangeLoggingKeyValueStore, "window": ChangeLoggingWindowStore,
            "session": ChangeLoggingSessionStore}


class StoreBuilder:
    """Builds one store: ``kind`` is ``"key_value"``, ``"window"`` or ``"session"``.

    Logging is enabled by default with no extra topic configs; ``log_config`` holds
    the configs the changelog topic is created with (Kafka's ``withLoggingEnabled``).
    """

    def __init__(self, name: str, kind: str, supplier: Callable[[], Any]) -> None:
        if kind not in _LOGGERS:
            raise ValueError(f"unknown store kind {kind!r}")
        self.name = name
        self.kind = kind
        self.supplier = supplier
        self.logging_enabled = True
        self.log_config: Dict[str, str] = {}
        self.caching_enabled = False
        self.cache_max_entries: Optional[int] = None

    def with_logging_enabled(self, config: Optional[Dict[str, str]] = None) -> "StoreBuilder":
        self.logging_enabled = True
        self.log_config = dict(config or {})
        return self

    def with_logging_disabled(self) -> "StoreBuilder":
        self.logging_enabled = False
        self.log_config = {}
        return self

    def with_caching_enabled(self, max_entries: Optional[int] = None) -> "StoreBuilder":
        self.caching_enabled = True
        self.cache_max_entries = max_entries
        return self

    def with_caching_disabled(self) -> "StoreBuilder":
        self.caching_enabled = False
        return self

    @property
    def persistent(self) -> bool:
        return bool(getattr(self.supplier, "persistent", False))

    def build(self) -> Any:
        store = self.supplier()
        if self.logging_enabled:
            store = _LOGGERS[self.kind](store)
        if self.caching_enabled and getattr(store, "retain_duplicates", False):
            # Kafka's rule: a cache keeps one value per key, which would drop duplicates.
            log.warning("store %r retains duplicates: caching disabled", self.name)
        elif self.caching_enabled:
            store = _CACHES[self.kind](store, **({} if self.cache_max_entries is None
                                                else {"max_entries": self.cache_max_entries}))
        return store

    def __repr__(self) -> str:
        return (f"<StoreBuilder {self.kind} {self.name!r} logging={self.logging_enabled} "
                f"caching={self.caching_enabled}>")


def _supplier(factory: Callable[[], Any], persistent: bool, retention_ms: Optional[int] = None) -> Callable[[], Any]:
    factory.persistent = persistent  # type: ignore[attr-defined]
    if retention_ms is not None:   # a window or session store's (its changelog's retention.ms)
        factory.retention_ms = retention_ms  # type: ignore[attr-defined]
    return factory


class Stores:
    """Factory of store builders (Kafka's ``Stores``)."""

    @staticmethod
    def in_memory_key_value_store(name: str) -> StoreBuilder:
        return StoreBuilder(name, "key_value", _supplier(lambda: InMemoryKeyValueStore(name), False))

    @staticmethod
    def persistent_key_value_store(name: str) -> StoreBuilder:
        """A RocksDB key-value store under ``<state_dir>/<app>/<task>/rocksdb/<name>``."""
        return StoreBuilder(name, "key_value", _supplier(lambda: RocksDBKeyValueStore(name), True))

    @staticmethod
    def in_memory_window_store(name: str, retention: Any, window_size: Any,
                               retain_duplicates: bool = False, time_ordered: bool = False) -> StoreBuilder:
        """``retention`` and ``window_size`` in ms (ints) or as ``timedelta``.

        ``time_ordered``: Kafka's time-ordered store, the one emit-on-window-close
        aggregations use; it keeps an entry readable 1 ms longer (``t >= stream time -
        retention``), so a window retained for exactly its size plus grace can be read
        when it closes."""
        return _window_builder(InMemoryWindowStore, name, retention, window_size, retain_duplicates, time_ordered)

    @staticmethod
    def persistent_window_store(name: str, retention: Any, window_size: Any,
                                retain_duplicates: bool = False, time_ordered: bool = False) -> StoreBuilder:
        """A segmented RocksDB window store (segments of max(retention/2, 60 s))."""
        return _window_builder(RocksDBWindowStore, name, retention, window_size, retain_duplicates, time_ordered)

    @staticmethod
    def in_memory_session_store(name: str, retention: Any) -> StoreBuilder:
        return _session_builder(InMemorySessionStore, name, retention)

    @staticmethod
    def persistent_session_store(name: str, retention: Any) -> StoreBuilder:
        return _session_builder(RocksDBSessionStore, name, retention)


def _window_builder(cls: Any, name: str, retention: Any, window_size: Any, retain_duplicates: bool,
                    time_ordered: bool) -> StoreBuilder:
    retention_ms, window_ms = _ms(retention), _ms(window_size)
    # Kafka's Stores.windowStoreBuilder check: a window must fit in the retention period.
    if window_ms > retention_ms:
        raise ValueError(f"window store {name!r}: the retention period ({retention_ms} ms) must be "
                         f"no smaller than the window size ({window_ms} ms)")
    return StoreBuilder(name, "window", _supplier(
        lambda: cls(name, retention_ms, window_ms, retain_duplicates, time_ordered), cls.persistent, retention_ms))


def _session_builder(cls: Any, name: str, retention: Any) -> StoreBuilder:
    retention_ms = _ms(retention)
    return StoreBuilder(name, "session", _supplier(lambda: cls(name, retention_ms), cls.persistent, retention_ms))


def _ms(d: Any) -> int:
    if isinstance(d, timedelta):
        return int(d.total_seconds() * 1000)
    if isinstance(d, bool) or not isinstance(d, int):
        raise TypeError(f"expected milliseconds as an int or a timedelta, got {d!r}")
    return d


_CACHES: Dict[str, Callable[..., Any]] = {"key_value": CachingKeyValueStore, "window": CachingWindowStore,
                                          "session": CachingSessionStore}
