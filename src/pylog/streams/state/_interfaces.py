"""The state-store interface shared by the DSL, the Processor API and the stores.

Stores hold bytes: serdes are applied above them, as in Kafka Streams.  Every
store type has an in-memory and a persistent implementation behind the same
Protocol, and both behave identically (one contract test suite runs against
both).  Ranges are inclusive and in lexicographic byte order.

Thread safety: a store belongs to one stream task and is used by that task's
thread only; interactive queries read through the ``ReadOnly*`` views
(:mod:`pylog.streams.state.readonly`), which share the store's single-thread
rule unless the caller serialises access with the task.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional, Protocol, Tuple, runtime_checkable

__all__ = [
    "StateStoreContext",
    "StateStore",
    "KeyValueStore",
    "WindowStore",
    "SessionStore",
    "SessionKey",
    "StateRestoreListener",
    "ReadOnlyKeyValueStore",
    "ReadOnlyWindowStore",
    "ReadOnlySessionStore",
]

#: A session's identity: (key, session start ms, session end ms), both ends inclusive.
SessionKey = Tuple[bytes, int, int]


@runtime_checkable
class StateStoreContext(Protocol):
    """What a store reads from its task when :meth:`StateStore.init` is called.

    ``log_change`` sends one changelog record (``value=None`` is a tombstone).  A
    context may also carry ``timestamp`` (the timestamp of the record being
    processed); the logging wrappers stamp changelog records with it as Kafka
    does, or with the window start / session end when the context has none.
    """

    application_id: str
    task_id: str
    state_dir: str
    changelog_topic: Optional[str]
    partition: int

    def log_change(self, key: bytes, value: Optional[bytes], timestamp: int) -> None: ...


@runtime_checkable
class StateStore(Protocol):
    name: str
    persistent: bool

    def init(self, context: Any) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def is_open(self) -> bool: ...
    def restore_batch(self, records: Iterable[Tuple[bytes, Optional[bytes]]]) -> None: ...


@runtime_checkable
class ReadOnlyKeyValueStore(Protocol):
    name: str

    def get(self, key: bytes) -> Optional[bytes]: ...
    def range(self, from_key: Optional[bytes], to_key: Optional[bytes]) -> Iterator[Tuple[bytes, bytes]]: ...
    def reverse_range(self, from_key: Optional[bytes], to_key: Optional[bytes]) -> Iterator[Tuple[bytes, bytes]]: ...
    def all(self) -> Iterator[Tuple[bytes, bytes]]: ...
    def prefix_scan(self, prefix: bytes) -> Iterator[Tuple[bytes, bytes]]: ...
    def approximate_num_entries(self) -> int: ...


@runtime_checkable
class KeyValueStore(StateStore, ReadOnlyKeyValueStore, Protocol):
    def put(self, key: bytes, value: Optional[bytes]) -> None: ...
    def put_if_absent(self, key: bytes, value: Optional[bytes]) -> Optional[bytes]: ...
    def put_all(self, entries: Iterable[Tuple[bytes, Optional[bytes]]]) -> None: ...
    def delete(self, key: bytes) -> Optional[bytes]: ...


@runtime_checkable
class ReadOnlyWindowStore(Protocol):
    name: str

    def fetch(self, key: bytes, window_start_ms: int) -> Optional[bytes]: ...
    def fetch_range(self, key: bytes, time_from: int, time_to: int) -> Iterator[Tuple[int, bytes]]: ...
    def fetch_key_range(self, key_from: Optional[bytes], key_to: Optional[bytes], time_from: int,
                        time_to: int) -> Iterator[Tuple[Tuple[bytes, int], bytes]]: ...
    def fetch_all(self, time_from: int, time_to: int) -> Iterator[Tuple[Tuple[bytes, int], bytes]]: ...
    def all(self) -> Iterator[Tuple[Tuple[bytes, int], bytes]]: ...


@runtime_checkable
class WindowStore(StateStore, ReadOnlyWindowStore, Protocol):
    retention_ms: int
    window_size_ms: int
    retain_duplicates: bool

    def put(self, key: bytes, value: Optional[bytes], window_start_ms: int) -> None: ...


@runtime_checkable
class ReadOnlySessionStore(Protocol):
    name: str

    def find_sessions(self, key: bytes, earliest_session_end_time: int,
                      latest_session_start_time: int) -> Iterator[Tuple[SessionKey, bytes]]: ...
    def fetch_session(self, key: bytes, start: int, end: int) -> Optional[bytes]: ...
    def fetch(self, key: bytes) -> Iterator[Tuple[SessionKey, bytes]]: ...


@runtime_checkable
class SessionStore(StateStore, ReadOnlySessionStore, Protocol):
    retention_ms: int

    def put(self, session_key: SessionKey, value: Optional[bytes]) -> None: ...
    def remove(self, session_key: SessionKey) -> None: ...


@runtime_checkable
class StateRestoreListener(Protocol):
    """Told about each store's restoration from its changelog (Kafka's listener).

    ``topic_partition`` is ``(topic, partition)``; offsets are changelog offsets,
    ``end_offset`` exclusive.
    """

    def on_restore_start(self, topic_partition: Tuple[str, int], store_name: str,
                         start_offset: int, end_offset: int) -> None: ...
    def on_batch_restored(self, topic_partition: Tuple[str, int], store_name: str,
                          batch_end_offset: int, num_restored: int) -> None: ...
    def on_restore_end(self, topic_partition: Tuple[str, int], store_name: str,
                       total_restored: int) -> None: ...
