"""State stores for pylog.streams: key-value, window and session stores, in memory
and persistent, made fault-tolerant by changelog topics (Kafka Streams' state
package).

Stores hold bytes; serdes are applied above them.  Build them with :class:`Stores`::

    store = Stores.in_memory_key_value_store("counts").with_caching_enabled().build()
    store.init(context)          # context: application_id, task_id, state_dir,
                                 # changelog_topic, partition, log_change(k, v, ts)

Where things are:

* ``_interfaces``: the Protocols (StateStore, KeyValueStore, WindowStore, SessionStore,
  StateRestoreListener, the ReadOnly* query interfaces);
* ``memory`` / ``persistent``: the in-memory stores and the RocksDB ones (the module
  docstring of ``persistent`` says why RocksDB, with the measurements), one
  behaviour for both (``_windows`` holds the window/session logic they share);
* ``changelogging`` / ``caching``: Kafka's logging and caching wrappers; ``keys``:
  the changelog key layouts (Kafka's WindowKeySchema / SessionKeySchema);
* ``manager``: one task's stores, ``.checkpoint`` (``checkpoint``), restore, and the
  crash rule; ``readonly``: views for interactive queries; ``stores``: builders.
"""

from __future__ import annotations

from ._interfaces import (KeyValueStore, ReadOnlyKeyValueStore, ReadOnlySessionStore, ReadOnlyWindowStore,
                          SessionKey, SessionStore, StateRestoreListener, StateStore, StateStoreContext,
                          WindowStore)
from .caching import CachingKeyValueStore, CachingSessionStore, CachingWindowStore
from .changelogging import ChangeLoggingKeyValueStore, ChangeLoggingSessionStore, ChangeLoggingWindowStore
from .memory import InMemoryKeyValueStore, InMemorySessionStore, InMemoryWindowStore
from .persistent import RocksDBKeyValueStore, RocksDBSessionStore, RocksDBWindowStore
from .checkpoint import read_checkpoint, write_checkpoint
from .manager import ProcessorStateManager
from .readonly import ReadOnlyKeyValueStoreView, ReadOnlySessionStoreView, ReadOnlyWindowStoreView, read_only
from .stores import StoreBuilder, Stores

__all__ = [
    "StateStore", "KeyValueStore", "WindowStore", "SessionStore", "SessionKey", "StateStoreContext",
    "StateRestoreListener", "ReadOnlyKeyValueStore", "ReadOnlyWindowStore", "ReadOnlySessionStore",
    "Stores", "StoreBuilder",
    "InMemoryKeyValueStore", "InMemoryWindowStore", "InMemorySessionStore",
    "RocksDBKeyValueStore", "RocksDBWindowStore", "RocksDBSessionStore",
    "ChangeLoggingKeyValueStore", "ChangeLoggingWindowStore", "ChangeLoggingSessionStore",
    "CachingKeyValueStore", "CachingWindowStore", "CachingSessionStore",
    "ProcessorStateManager", "read_checkpoint", "write_checkpoint",
    "read_only", "ReadOnlyKeyValueStoreView", "ReadOnlyWindowStoreView", "ReadOnlySessionStoreView",
]
