"""Interactive queries: read the stores of a running app, and find the instance that
hosts a key (Kafka Streams' ``KafkaStreams#store``, ``StoreQueryParameters``,
``QueryableStoreTypes``, ``queryMetadataForKey``, ``metadataForAllStreamsClients``,
``streamsMetadataForStore``)::

    view = app.store(StoreQueryParameters.from_name_and_type("counts", QueryableStoreTypes.key_value_store()))
    view.get("x")                      # through the store's serdes
    meta = app.query_metadata_for_key("counts", "x", Serdes.string())
    meta.active_host                   # HostInfo(host, port): ask that instance

A view spans every local active task's store of that name (one per partition, or the
partition :meth:`StoreQueryParameters.with_partition` names; every stream thread's),
and with ``enable_stale_stores()`` the standby tasks' too (copies that may lag their
changelogs, as Kafka's stale stores), and holds nothing of its own: each call finds
the app's current tasks again, so after a rebalance it reads the stores the instance
has now.  ``get`` answers from the first task holding the key;
``range``, ``all`` and ``fetch`` chain the tasks' answers (sorted within a task, not
across tasks, as Kafka's composite stores do).  Answers are lists, read whole under the
app's query lock, so a query never sees a batch half processed.

:class:`InvalidStateStoreError` (Kafka's ``InvalidStateStoreException``, retriable) is
raised while the app is not running, while it restores stores from their changelogs
(unless ``enable_stale_stores()``), and when no local task holds the store: it may
have migrated to another instance; ask :meth:`StreamsApp.query_metadata_for_key`
again.

Routing: every instance's ``application.server`` (``host:port``) travels through the
consumer group (:mod:`.assignor`), so each instance knows which host holds each input
partition.  A key's partition is computed as the producer computes it (murmur2 of the
serialised key, or the given ``partitioner``) over the partitions of the source topic
of the store's sub-topology.  ``standby_hosts`` are the instances holding a standby of
the key's task (``num.standby.replicas``): with ``enable_stale_stores()`` they answer
too, while the active instance is gone or restoring.

Thread safety: views and metadata calls may be used from any thread.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Set, Tuple

from pylog import _core
from pylog.errors import PylogError

from .test_driver import KeyValueStoreFacade, SessionStoreFacade, WindowStoreFacade

__all__ = ["StoreQueryParameters", "QueryableStoreTypes", "QueryableStoreType", "InvalidStateStoreError",
           "HostInfo", "KeyQueryMetadata", "StreamsMetadata", "UNKNOWN_HOST", "ThreadMetadata", "TaskMetadata"]


class InvalidStateStoreError(PylogError, RuntimeError):
    """The store cannot be queried now (Kafka's InvalidStateStoreException): the app is
    not running, is restoring, or the store is not (or no longer) on this instance.
    Retriable: ask again, after looking the key's host up again."""

    retriable = True


class HostInfo(NamedTuple):
    """An instance's ``application.server``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


#: Kafka's ``HostInfo.unavailable()``.
UNKNOWN_HOST = HostInfo("unavailable", -1)


class KeyQueryMetadata(NamedTuple):
    """Where a key lives: the active instance, the standby instances, its partition."""

    active_host: HostInfo
    standby_hosts: FrozenSet[HostInfo]
    partition: int


#: Kafka's ``KeyQueryMetadata.NOT_AVAILABLE``: no instance is known to hold the key
#: (a rebalance is under way, or no instance set ``application.server``).
KeyQueryMetadata.NOT_AVAILABLE = KeyQueryMetadata(UNKNOWN_HOST, frozenset(), -1)  # type: ignore[attr-defined]


class StreamsMetadata(NamedTuple):
    """One instance of the app as the group sees it (Kafka's ``StreamsMetadata``)."""

    host_info: HostInfo
    state_store_names: FrozenSet[str]
    topic_partitions: FrozenSet[Tuple[str, int]]
    standby_state_store_names: FrozenSet[str] = frozenset()
    standby_topic_partitions: FrozenSet[Tuple[str, int]] = frozenset()

    @property
    def host(self) -> str:
        return self.host_info.host

    @property
    def port(self) -> int:
        return self.host_info.port


class TaskMetadata(NamedTuple):
    """One task of a stream thread (Kafka's ``TaskMetadata``): its id
    (``<subtopology>_<partition>``) and the partitions it reads (for a standby: the
    changelog partitions it follows)."""

    task_id: str
    topic_partitions: FrozenSet[Tuple[str, int]]


class ThreadMetadata(NamedTuple):
    """One stream thread of this instance (Kafka's ``ThreadMetadata``)."""

    thread_name: str
    thread_state: str
    consumer_client_id: str
    active_tasks: FrozenSet[TaskMetadata]
    standby_tasks: FrozenSet[TaskMetadata]


def local_threads(app: Any) -> List[ThreadMetadata]:
    """:meth:`StreamsApp.metadata_for_local_threads`."""
    out = []
    for thread in app.stream_threads():
        with app.iq_lock:
            active = frozenset(TaskMetadata(task.task_id, frozenset(
                (t, partition) for t in app.metadata.source_topics(app.metadata.nodes_of[gid])))
                for (gid, partition), task in thread.tasks.items())
            standby = frozenset(TaskMetadata(sb.task_id, frozenset((t, partition) for t in sb.changelogs.values()))
                                for (_gid, partition), sb in thread.standbys.items())
        consumer = thread.consumer
        out.append(ThreadMetadata(thread.name, thread.state.name,
                                  "" if consumer is None else consumer.client_id, active, standby))
    return out


class QueryableStoreType:
    """What kind of store a query expects (``key_value``, ``window`` or ``session``)."""

    __slots__ = ("kind", "timestamped")

    def __init__(self, kind: str, timestamped: bool = False) -> None:
        self.kind = kind
        self.timestamped = timestamped

    def __repr__(self) -> str:
        return f"QueryableStoreTypes.{'timestamped_' if self.timestamped else ''}{self.kind}_store()"


class QueryableStoreTypes:
    """Kafka's store types for :meth:`StoreQueryParameters.from_name_and_type`."""

    @staticmethod
    def key_value_store() -> QueryableStoreType:
        return QueryableStoreType("key_value")

    @staticmethod
    def timestamped_key_value_store() -> QueryableStoreType:
        """Values come back as ``(value, timestamp)``."""
        return QueryableStoreType("key_value", timestamped=True)

    @staticmethod
    def window_store() -> QueryableStoreType:
        return QueryableStoreType("window")

    @staticmethod
    def session_store() -> QueryableStoreType:
        return QueryableStoreType("session")


class StoreQueryParameters:
    """Which store to query, of which type; optionally one partition only, or stale
    stores (still restoring) too.  Immutable: the ``with_``/``enable_`` methods return
    new parameters, as Kafka's do."""

    __slots__ = ("store_name", "query_type", "partition", "stale_stores")

    def __init__(self, store_name: str, query_type: QueryableStoreType, partition: Optional[int] = None,
                 stale_stores: bool = False) -> None:
        self.store_name = store_name
        self.query_type = query_type
        self.partition = partition
        self.stale_stores = stale_stores

    @classmethod
    def from_name_and_type(cls, store_name: str, query_type: QueryableStoreType) -> "StoreQueryParameters":
        return cls(store_name, query_type)

    def with_partition(self, partition: int) -> "StoreQueryParameters":
        return StoreQueryParameters(self.store_name, self.query_type, partition, self.stale_stores)

    def enable_stale_stores(self) -> "StoreQueryParameters":
        return StoreQueryParameters(self.store_name, self.query_type, self.partition, True)


# ---- the views ----------------------------------------------------------------------------

class _CompositeView:
    """Reads of one store name over the app's local tasks; see the module docstring."""

    def __init__(self, app: Any, params: StoreQueryParameters, meta: Any) -> None:
        self._app = app
        self._params = params
        self._meta = meta
        self.name = params.store_name

    def _facades(self) -> List[Any]:
        """One facade per local task holding the store; call under the app's query lock."""
        app, params = self._app, self._params
        check_queryable(app, params.stale_stores, self.name)
        out = []
        tasks = []
        for thread in app.stream_threads():
            tasks += list(thread.tasks.items())
            if params.stale_stores:
                tasks += list(thread.standbys.items())
        for (_gid, partition), task in tasks:
            if params.partition is not None and partition != params.partition:
                continue
            store = task.stores.get(self.name)
            if store is None:
                continue
            if not store.is_open():
                raise InvalidStateStoreError(f"the state store {self.name!r} may have migrated to another "
                                             "instance (its task was closed)")
            out.append(self._facade(store, task))
        if not out and self._meta.is_global and app.global_task is not None:
            out.append(self._facade(app.global_task.stores[self.name], app.global_task))
        if not out:
            where = "" if params.partition is None else f" for partition {params.partition}"
            raise InvalidStateStoreError(f"the state store {self.name!r}{where} is not on this instance now: it "
                                         "may have migrated to another instance (find its host with "
                                         "query_metadata_for_key)")
        return out

    _facade_type: Any = None

    def _facade(self, store: Any, task: Any) -> Any:
        return self._facade_type(store, self._meta, task)

    def _each(self, call: Callable[[Any], Any]) -> List[Any]:
        with self._app.iq_lock:
            return [call(f) for f in self._facades()]

    def _chained(self, call: Callable[[Any], Iterable[Any]]) -> List[Any]:
        return [x for part in self._each(lambda f: list(call(f))) for x in part]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} of {self._app.application_id}>"


class ReadOnlyKeyValueStoreView(_CompositeView):
    """``get``, ``range``, ``all``, ``approximate_num_entries`` in the store's types."""

    def _facade(self, store: Any, task: Any) -> Any:
        return KeyValueStoreFacade(store, self._meta, task, self._params.query_type.timestamped)

    def get(self, key: Any) -> Any:
        with self._app.iq_lock:
            for f in self._facades():
                value = f.get(key)
                if value is not None:
                    return value
        return None

    def range(self, from_key: Any, to_key: Any) -> List[Tuple[Any, Any]]:
        """Entries with ``from_key <= key <= to_key`` (serialised order); None: open end."""
        return self._chained(lambda f: f.range(from_key, to_key))

    def all(self) -> List[Tuple[Any, Any]]:
        return self._chained(lambda f: f.all())

    def approximate_num_entries(self) -> int:
        return sum(self._each(lambda f: f.approximate_num_entries()))


class ReadOnlyWindowStoreView(_CompositeView):
    """``fetch(key, time)`` (one window), ``fetch(key, time_from, time_to)`` -> ``[(window
    start, value)]``, ``all()`` -> ``[(Windowed, value)]``."""

    _facade_type = WindowStoreFacade

    def fetch(self, key: Any, time_from: int, time_to: Optional[int] = None) -> Any:
        if time_to is None:
            for value in self._each(lambda f: f.fetch(key, time_from)):
                if value is not None:
                    return value
            return None
        return self._chained(lambda f: f.fetch_range(key, time_from, time_to))

    def all(self) -> List[Tuple[Any, Any]]:
        return self._chained(lambda f: f.all())


class ReadOnlySessionStoreView(_CompositeView):
    """``fetch(key)`` -> ``[(Windowed, value)]`` and ``fetch_session(key, start, end)``."""

    _facade_type = SessionStoreFacade

    def fetch(self, key: Any) -> List[Tuple[Any, Any]]:
        return self._chained(lambda f: f.fetch(key))

    def fetch_session(self, key: Any, start: int, end: int) -> Any:
        for value in self._each(lambda f: f.fetch_session(key, start, end)):
            if value is not None:
                return value
        return None


_VIEWS = {"key_value": ReadOnlyKeyValueStoreView, "window": ReadOnlyWindowStoreView,
          "session": ReadOnlySessionStoreView}


def check_queryable(app: Any, stale_stores: bool, store_name: str) -> None:
    """Raise InvalidStateStoreError unless ``app`` runs and (without stale stores) is
    not restoring."""
    consumer = app.consumer
    if consumer is None or consumer.closed:
        raise InvalidStateStoreError(f"{app.application_id} is not running: store {store_name!r} cannot be "
                                     "queried (start it with run())")
    if not stale_stores and any(t.restoring for t in app.stream_threads()):
        raise InvalidStateStoreError(f"{app.application_id} is restoring its stores from their changelogs: "
                                     f"store {store_name!r} cannot be queried yet (retry, or "
                                     "enable_stale_stores())")


def store_view(app: Any, params: StoreQueryParameters) -> _CompositeView:
    """The read-only view :meth:`StreamsApp.store` returns."""
    meta = app.topology.stores.get(params.store_name)
    if meta is None:
        raise InvalidStateStoreError(f"no store named {params.store_name!r} in the topology of "
                                     f"{app.application_id} (stores: {sorted(app.topology.stores)})")
    if meta.kind != params.query_type.kind:
        raise InvalidStateStoreError(f"store {params.store_name!r} is a {meta.kind} store, not the "
                                     f"{params.query_type.kind} store the query asks for")
    check_queryable(app, params.stale_stores, params.store_name)
    return _VIEWS[meta.kind](app, params, meta)


# ---- routing metadata -----------------------------------------------------------------------

def _host_info(endpoint: str) -> HostInfo:
    host, _, port = endpoint.rpartition(":")
    return HostInfo(host, int(port))


def store_source_topics(app: Any, store_name: str) -> List[str]:
    """The source topics (internal names resolved) of the sub-topology holding the store."""
    meta = app.topology.stores[store_name]
    for _gid, names in app.metadata.groups:
        if any(u in names for u in meta.users):
            return sorted(app.metadata.source_topics(names))
    return []


def _stores_by_topic(app: Any) -> Tuple[Dict[str, Set[str]], Set[str]]:
    by_topic: Dict[str, Set[str]] = {}
    global_stores = set()
    for name, meta in app.topology.stores.items():
        if meta.is_global:
            global_stores.add(name)
            continue
        for t in store_source_topics(app, name):
            by_topic.setdefault(t, set()).add(name)
    return by_topic, global_stores


def all_metadata(app: Any) -> List[StreamsMetadata]:
    """Every instance with an ``application.server``, as of the last rebalance."""
    assignor = app.partition_assignor
    if assignor is None:
        return []
    by_topic, global_stores = _stores_by_topic(app)
    active = assignor.partitions_by_host()
    standby = assignor.standby_partitions_by_host()
    out = []
    for endpoint in sorted(set(active) | set(standby)):
        tps = active.get(endpoint, set())
        standby_tps = standby.get(endpoint, set())
        stores = set(global_stores)
        for t, _p in tps:
            stores |= by_topic.get(t, set())
        standby_stores = set()
        for t, _p in standby_tps:
            standby_stores |= by_topic.get(t, set())
        out.append(StreamsMetadata(_host_info(endpoint), frozenset(stores), frozenset(tps),
                                   frozenset(standby_stores), frozenset(standby_tps)))
    return out


def metadata_for_key(app: Any, store_name: str, key: Any, key_serializer: Any,
                     partitioner: Optional[Callable[..., int]] = None) -> KeyQueryMetadata:
    """Where ``key`` of ``store_name`` lives; see :meth:`StreamsApp.query_metadata_for_key`."""
    meta = app.topology.stores.get(store_name)
    if meta is None:
        raise InvalidStateStoreError(f"no store named {store_name!r} in the topology of {app.application_id}")
    if meta.is_global:
        # every instance holds a global store: this one answers
        local = app.application_server
        return KeyQueryMetadata(_host_info(local) if local else UNKNOWN_HOST, frozenset(), -1)
    topics = store_source_topics(app, store_name)
    if not topics or app.partition_assignor is None:
        return KeyQueryMetadata.NOT_AVAILABLE  # type: ignore[attr-defined]
    serialize = getattr(key_serializer, "serialize", key_serializer)
    raw = serialize(key)
    n = app.partitions_of(topics[0])
    partition = partitioner(topics[0], key, None, n) if partitioner is not None else _core.partition_for_key(raw, n)
    standbys = frozenset(_host_info(endpoint)
                         for endpoint, tps in app.partition_assignor.standby_partitions_by_host().items()
                         if any((t, partition) in tps for t in topics))
    for endpoint, tps in app.partition_assignor.partitions_by_host().items():
        if any((t, partition) in tps for t in topics):
            return KeyQueryMetadata(_host_info(endpoint), standbys, partition)
    return KeyQueryMetadata(UNKNOWN_HOST, standbys, partition)
