"""Coordination of the pylog cluster: Kafka's ZooKeeper data model behind one narrow interface.

The cluster code (controller, replica manager, broker start-up) talks only to
:class:`Coordination`, the counterpart of Kafka's ``KafkaZkClient``: it knows the znode
paths and JSON layouts and the fencing rules. It sits on a :class:`ZNodeStore`, the small
ZooKeeper primitive (create/get/set/delete/children, multi-op, watches, session events)
with two implementations: :class:`pylog.cluster.zookeeper.KazooZNodeStore` (production,
a real ZooKeeper through kazoo) and :class:`pylog.cluster.coordination_memory.MemoryZooKeeper`
(in memory, for deterministic model tests). Kafka's rules live here once, so the two
stores cannot drift on them; one shared test suite runs on both stores.

Znode layout (Kafka 2.8/3.x ``ZkData.scala``; JSON in UTF-8, ``"ms"`` timestamps as strings)::

    /cluster/id                              {"version":"1","id":"<cluster id>"}
    /controller                  ephemeral   {"version":1,"brokerid":1,"timestamp":"<ms>"}
    /controller_epoch                        "<epoch>" (plain decimal); bumped by conditional set
    /brokers/ids/<id>            ephemeral   {"version":5,"host","port","jmx_port","timestamp",
                                              "endpoints":["PLAINTEXT://h:9092",...],
                                              "listener_security_protocol_map":{"PLAINTEXT":"PLAINTEXT"},
                                              "rack"(if set),"features":{"f":{"min_version","max_version"}}}
                                             broker epoch = the znode's czxid
    /brokers/topics/<t>                      {"version":3,"topic_id":"<base64 uuid>","partitions":{"0":[1,2,3]},
                                              "adding_replicas":{},"removing_replicas":{}}
    /brokers/topics/<t>/partitions/<p>/state {"controller_epoch":1,"leader":1,"version":1,
                                              "leader_epoch":0,"isr":[1,2,3]}  (CAS on zkVersion)
    /admin/delete_topics/<t>                 empty: topic marked for deletion
    /admin/reassign_partitions               {"version":1,"partitions":[{"topic","partition","replicas"}]}
    /admin/preferred_replica_election        {"version":1,"partitions":[{"topic","partition"}]}
    /isr_change_notification/isr_change_<seq> sequential {"version":1,"partitions":[{"topic","partition"}]}
    /config/topics/<t>, /config/brokers/<id> {"version":1,"config":{"k":"v"}}

Fencing: every controller write is a multi-op that first checks ``/controller_epoch``'s
zkVersion against the one the controller won (:class:`ControllerEpoch`), as Kafka 2.2+
does; once another broker is elected the check fails and the write raises
:class:`~pylog.errors.NotControllerError`. Partition state is only ever replaced by a
conditional set on the zkVersion it was read with (``LeaderAndIsr.zk_version``); a stale
version raises :class:`~pylog.errors.InvalidUpdateVersionError`, so a zombie controller
or leader cannot overwrite newer state. Malformed data in a znode raises
:class:`~pylog.errors.CorruptCoordinationDataError` naming the path and the bytes.

Crash behaviour: everything a broker owns in ZooKeeper is ephemeral (its registration,
``/controller``) and vanishes when its session ends: on close, or when ZooKeeper expires
it (``zookeeper.session.timeout.ms`` without a heartbeat: the process died, paused, or
was cut off). The session listener's ``on_session_expired`` then fires; the broker must
stop acting as controller and leader (its epoch and zkVersions are stale from that
moment, and the fencing above refuses its writes anyway), and on
``on_session_reestablished`` (a new session) register again. Persistent znodes survive
everything; a multi-op is all or nothing.

Thread safety: a :class:`Coordination` may be called from any thread; each call is one
ZooKeeper request (or one multi-op) and blocks until answered. Watch and session
callbacks run on the store's own thread (kazoo's callback thread, or a thread kazoo
spawns to re-read after a reconnect; the in-memory store calls them on the thread that
made the change, after the change). They must not block for long: hand the event to
your event loop (``loop.call_soon_threadsafe``) or a ``queue.Queue``. A callback may
call the Coordination (re-register on ``on_session_reestablished``, say): the call
blocks that thread, and the callbacks queued behind it wait; but it must never
``close()`` the Coordination (kazoo would join the thread it runs on). Watches are
level-triggered: a callback gets the value current when it runs, may see a value twice
and may skip intermediate values, exactly as kazoo's ``DataWatch``/``ChildrenWatch``;
they are re-armed after a session expiry. An exception raised by a callback is logged
and swallowed so that it cannot kill the watch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, TypeVar, Union

from pylog.errors import (CoordinationError, CorruptCoordinationDataError, InvalidUpdateVersionError,
                          NotControllerError, TopicAlreadyExistsError)

__all__ = [
    "ANY_VERSION",
    "TopicPartition",
    "EndPoint",
    "BrokerRegistration",
    "ControllerEpoch",
    "ReplicaAssignment",
    "TopicAssignment",
    "LeaderAndIsr",
    "ZNodeStat",
    "CheckOp",
    "CreateOp",
    "SetDataOp",
    "DeleteOp",
    "Op",
    "Watch",
    "SessionListener",
    "ZNodeStore",
    "ZNodeError",
    "NoNodeError",
    "NodeExistsError",
    "BadVersionError",
    "NotEmptyError",
    "NoChildrenForEphemeralsError",
    "Coordination",
]

log = logging.getLogger(__name__)

#: A conditional write's version that matches any version (ZooKeeper's -1).
ANY_VERSION = -1

#: (topic, partition); pylog.broker.core.TopicPartition (a NamedTuple) is one too.
TopicPartition = tuple[str, int]

# Kafka's initial /controller_epoch value: the first controller wins epoch 1.
INITIAL_CONTROLLER_EPOCH = 0

CONTROLLER_PATH = "/controller"
CONTROLLER_EPOCH_PATH = "/controller_epoch"
CLUSTER_ID_PATH = "/cluster/id"
BROKER_IDS_PATH = "/brokers/ids"
TOPICS_PATH = "/brokers/topics"
DELETE_TOPICS_PATH = "/admin/delete_topics"
REASSIGN_PARTITIONS_PATH = "/admin/reassign_partitions"
PREFERRED_REPLICA_ELECTION_PATH = "/admin/preferred_replica_election"
ISR_CHANGE_NOTIFICATION_PATH = "/isr_change_notification"
ISR_CHANGE_PREFIX = "isr_change_"
CONFIG_PATH = "/config"
CONFIG_ENTITY_TYPES = ("topics", "brokers")

# The persistent paths a Kafka broker creates at start-up (KafkaZkClient.createTopLevelPaths,
# the part pylog uses), so watches on them can be set before anything else exists.
TOP_LEVEL_PATHS = (BROKER_IDS_PATH, TOPICS_PATH, DELETE_TOPICS_PATH, ISR_CHANGE_NOTIFICATION_PATH,
                   *(f"{CONFIG_PATH}/{t}" for t in CONFIG_ENTITY_TYPES))


def broker_path(broker_id: int) -> str:
    return f"{BROKER_IDS_PATH}/{broker_id}"


def topic_path(topic: str) -> str:
    return f"{TOPICS_PATH}/{_check_name(topic)}"


def partition_state_path(topic: str, partition: int) -> str:
    return f"{topic_path(topic)}/partitions/{int(partition)}/state"


def config_path(entity_type: str, name: str) -> str:
    if entity_type not in CONFIG_ENTITY_TYPES:
        raise ValueError(f"config entity type must be one of {CONFIG_ENTITY_TYPES}, not {entity_type!r}")
    return f"{CONFIG_PATH}/{entity_type}/{_check_name(str(name))}"


def _check_name(name: str) -> str:
    # A topic name becomes a path component: refuse anything that would escape it.
    if not name or "/" in name or name in (".", "..") or "\x00" in name:
        raise ValueError(f"{name!r} cannot be a znode name")
    return name


# ----------------------------------------------------------------------------- store errors

class ZNodeError(CoordinationError):
    """A ZooKeeper operation failed on a znode's state (not on the connection)."""

    retriable = False

    def __init__(self, message: str, *, path: str | None = None, op_index: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        #: In a multi-op: the index of the operation that failed.
        self.op_index = op_index


class NoNodeError(ZNodeError):
    """The znode (or, for a create, its parent) does not exist."""


class NodeExistsError(ZNodeError):
    """The znode to create exists already."""


class BadVersionError(ZNodeError):
    """A conditional write named a version that is not the znode's current one."""


class NotEmptyError(ZNodeError):
    """A znode with children cannot be deleted (non-recursively)."""


class NoChildrenForEphemeralsError(ZNodeError):
    """Ephemeral znodes cannot have children."""


# ----------------------------------------------------------------------------- store primitive

@dataclass(frozen=True)
class ZNodeStat:
    """The part of ZooKeeper's ``Stat`` pylog uses."""

    version: int  # data version (zkVersion), bumped by every set
    czxid: int  # zxid of the create: Kafka's broker epoch for /brokers/ids/<id>
    mzxid: int  # zxid of the last modification
    ephemeral_owner: int  # session id of the owner, 0 for persistent znodes
    num_children: int


@dataclass(frozen=True)
class CheckOp:
    path: str
    version: int


@dataclass(frozen=True)
class CreateOp:
    path: str
    data: bytes = b""
    ephemeral: bool = False
    sequential: bool = False


@dataclass(frozen=True)
class SetDataOp:
    path: str
    data: bytes
    version: int = ANY_VERSION


@dataclass(frozen=True)
class DeleteOp:
    path: str
    version: int = ANY_VERSION


Op = Union[CheckOp, CreateOp, SetDataOp, DeleteOp]


class Watch(Protocol):
    def cancel(self) -> None:
        """Stop calling the callback (it may still run once if already under way)."""


@dataclass(frozen=True)
class SessionListener:
    """Session lifecycle callbacks (see the module docstring for the thread they run on).

    ``on_session_expired``: the session is gone, and with it every ephemeral znode it
    owned; the broker must stop acting as controller/leader. ``on_session_reestablished``:
    a new session is up (ephemerals must be created again: re-register).
    """

    on_session_expired: Callable[[], None] | None = None
    on_session_reestablished: Callable[[], None] | None = None


class ZNodeStore(Protocol):
    """ZooKeeper's primitives, as :class:`Coordination` needs them.

    Paths are absolute inside the store's chroot. Errors: :class:`ZNodeError` subclasses
    for the znode's state, :class:`~pylog.errors.CoordinationError` for the connection
    and session. A write interrupted by a connection loss is retried and, when the retry
    finds it already applied (its own ephemeral, the data it wrote), reported as done.
    """

    @property
    def session_id(self) -> int: ...

    def create(self, path: str, data: bytes = b"", *, ephemeral: bool = False,
               sequential: bool = False, makepath: bool = False) -> tuple[str, ZNodeStat]: ...

    def get(self, path: str) -> tuple[bytes, ZNodeStat] | None: ...

    def exists(self, path: str) -> ZNodeStat | None: ...

    def set(self, path: str, data: bytes, version: int = ANY_VERSION) -> ZNodeStat: ...

    def delete(self, path: str, version: int = ANY_VERSION, *, recursive: bool = False) -> None: ...

    def get_children(self, path: str) -> list[str]: ...

    def multi(self, ops: Sequence[Op]) -> list[Any]:
        """All of ``ops`` or none. Results: the created path for a CreateOp, a ZNodeStat
        for a SetDataOp, None otherwise. Raises the failing op's error with ``op_index``."""
        ...

    def watch_data(self, path: str, callback: Callable[[bytes | None, ZNodeStat | None], None]) -> Watch:
        """Call ``callback(data, stat)`` now and whenever the znode is created, changed or
        deleted (``(None, None)`` while it does not exist)."""
        ...

    def watch_children(self, path: str, callback: Callable[[list[str]], None]) -> Watch:
        """Call ``callback(children)`` now and whenever the children change; stops
        silently when ``path`` is deleted (it must exist when the watch is set)."""
        ...

    def add_session_listener(self, listener: SessionListener) -> None: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------- Kafka's data

@dataclass(frozen=True)
class EndPoint:
    """One advertised listener: ``PLAINTEXT://host:9092`` plus its security protocol."""

    listener_name: str
    host: str
    port: int
    security_protocol: str = "PLAINTEXT"

    def connection_string(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.listener_name}://{host}:{self.port}"


@dataclass(frozen=True)
class BrokerRegistration:
    """A live broker as /brokers/ids/<id> describes it (Kafka's BrokerInfo).

    ``features`` maps a feature name to its supported (min_version, max_version).
    ``broker_epoch`` is the registration znode's czxid (-1 before it is registered):
    Kafka's broker epoch, larger for every new registration of the same id.
    """

    broker_id: int
    endpoints: tuple[EndPoint, ...]
    rack: str | None = None
    features: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    jmx_port: int = -1
    timestamp_ms: int = 0
    broker_epoch: int = -1

    def endpoint(self, listener_name: str) -> EndPoint | None:
        return next((e for e in self.endpoints if e.listener_name == listener_name), None)


@dataclass(frozen=True)
class ControllerEpoch:
    """The controller epoch a controller won and the zkVersion of /controller_epoch that
    every one of its writes checks (Kafka's epoch and epochZkVersion)."""

    epoch: int
    zk_version: int


@dataclass(frozen=True)
class ReplicaAssignment:
    """A partition's replicas (preferred leader first) and any reassignment in flight."""

    replicas: tuple[int, ...]
    adding_replicas: tuple[int, ...] = ()
    removing_replicas: tuple[int, ...] = ()


@dataclass(frozen=True)
class TopicAssignment:
    """/brokers/topics/<t>: the topic's id and each partition's replicas."""

    topic: str
    partitions: Mapping[int, ReplicaAssignment]
    topic_id: str | None = None


@dataclass(frozen=True)
class LeaderAndIsr:
    """A partition's state (Kafka's LeaderIsrAndControllerEpoch).

    ``zk_version`` is the state znode's version this value was read with (-1: not read
    from ZooKeeper); an update is a compare-and-set on it, so derive the new state from
    the one you read (``dataclasses.replace``) and it carries the right version.
    ``leader`` is -1 when the partition has no leader.
    """

    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    controller_epoch: int
    zk_version: int = -1


# ----------------------------------------------------------------------------- JSON codecs

def _encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _corrupt(path: str, data: bytes | None, why: str) -> CorruptCoordinationDataError:
    shown = data if data is None or len(data) <= 300 else data[:300] + b"..."
    return CorruptCoordinationDataError(
        f"znode {path} holds data pylog cannot use ({why}): {shown!r}; it is not what Kafka or "
        f"pylog writes there: repair or delete the znode")


def _decode_object(path: str, data: bytes | None) -> dict[str, Any]:
    if not data:
        raise _corrupt(path, data, "empty, expected a JSON object")
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise _corrupt(path, data, f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise _corrupt(path, data, "not a JSON object")
    return value


_T = TypeVar("_T")


def _field(path: str, data: bytes, obj: Mapping[str, Any], key: str, kind: type[_T] | tuple[type, ...],
           default: Any = ...) -> Any:
    if key not in obj:
        if default is ...:
            raise _corrupt(path, data, f"no {key!r}")
        return default
    value = obj[key]
    # bool is an int in Python; JSON true is no broker id.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _corrupt(path, data, f"{key!r} is {type(value).__name__}, not {getattr(kind, '__name__', kind)}")
    return value


def _int_list(path: str, data: bytes, value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        raise _corrupt(path, data, f"{what} is not a list of integers")
    return tuple(value)


def _is_decimal(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes "²", which int() refuses, and "٣",
    which no ZooKeeper writer of Kafka's puts there."""
    return text.isascii() and text.isdigit()


def _version(path: str, data: bytes, obj: Mapping[str, Any], supported: range) -> int:
    version = obj.get("version")
    if isinstance(version, str) and _is_decimal(version):  # /cluster/id writes "1"
        version = int(version)
    if not isinstance(version, int) or isinstance(version, bool) or version not in supported:
        raise _corrupt(path, data, f"version {version!r} is not one of {list(supported)}")
    return version


def encode_broker(reg: BrokerRegistration) -> bytes:
    # Kafka keeps a top-level host/port for old clients: the first PLAINTEXT endpoint.
    plaintext = next((e for e in reg.endpoints if e.security_protocol == "PLAINTEXT"), None)
    obj: dict[str, Any] = {
        "version": 5,
        "host": plaintext.host if plaintext else None,
        "port": plaintext.port if plaintext else -1,
        "jmx_port": reg.jmx_port,
        "timestamp": str(reg.timestamp_ms or int(time.time() * 1000)),
        "endpoints": [e.connection_string() for e in reg.endpoints],
        "listener_security_protocol_map": {e.listener_name: e.security_protocol for e in reg.endpoints},
        "features": {name: {"min_version": lo, "max_version": hi} for name, (lo, hi) in reg.features.items()},
    }
    if reg.rack is not None:
        obj["rack"] = reg.rack
    return _encode(obj)


def _parse_endpoint(path: str, data: bytes, text: Any, protocols: Mapping[str, str]) -> EndPoint:
    if not isinstance(text, str) or "://" not in text:
        raise _corrupt(path, data, f"endpoint {text!r} is not LISTENER://host:port")
    listener, _, address = text.partition("://")
    host, sep, port = address.rpartition(":")
    if not sep or not _is_decimal(port.lstrip("-")):
        raise _corrupt(path, data, f"endpoint {text!r} has no port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    # Without a map (old registrations) the listener name is the security protocol.
    return EndPoint(listener, host, int(port), protocols.get(listener, listener))


def decode_broker(broker_id: int, path: str, data: bytes, stat: ZNodeStat) -> BrokerRegistration:
    obj = _decode_object(path, data)
    version = _version(path, data, obj, range(1, 6))
    if version == 1:
        endpoints: tuple[EndPoint, ...] = (EndPoint("PLAINTEXT", _field(path, data, obj, "host", str),
                                                    _field(path, data, obj, "port", int)),)
    else:
        protocols = _field(path, data, obj, "listener_security_protocol_map", dict, {})
        endpoints = tuple(_parse_endpoint(path, data, e, protocols)
                          for e in _field(path, data, obj, "endpoints", list))
    features: dict[str, tuple[int, int]] = {}
    for name, ranges in _field(path, data, obj, "features", dict, {}).items():
        if not isinstance(ranges, dict):
            raise _corrupt(path, data, f"feature {name!r} is not an object")
        features[name] = (_field(path, data, ranges, "min_version", int),
                          _field(path, data, ranges, "max_version", int))
    timestamp = _field(path, data, obj, "timestamp", str, "0")
    return BrokerRegistration(
        broker_id=broker_id, endpoints=endpoints, rack=_field(path, data, obj, "rack", (str, type(None)), None),
        features=features, jmx_port=_field(path, data, obj, "jmx_port", int, -1),
        timestamp_ms=int(timestamp) if _is_decimal(timestamp) else 0, broker_epoch=stat.czxid)


def encode_topic(assignment: TopicAssignment) -> bytes:
    obj: dict[str, Any] = {
        "version": 3,
        "partitions": {str(p): list(a.replicas) for p, a in sorted(assignment.partitions.items())},
        "adding_replicas": {str(p): list(a.adding_replicas)
                            for p, a in sorted(assignment.partitions.items()) if a.adding_replicas},
        "removing_replicas": {str(p): list(a.removing_replicas)
                              for p, a in sorted(assignment.partitions.items()) if a.removing_replicas},
    }
    if assignment.topic_id is not None:
        obj["topic_id"] = assignment.topic_id
    return _encode(obj)


def decode_topic(topic: str, path: str, data: bytes) -> TopicAssignment:
    obj = _decode_object(path, data)
    _version(path, data, obj, range(1, 4))
    maps = {key: _field(path, data, obj, key, dict, {})
            for key in ("partitions", "adding_replicas", "removing_replicas")}
    partitions = {}
    for key, replicas in maps["partitions"].items():
        if not _is_decimal(key):
            raise _corrupt(path, data, f"partition {key!r} is not a number")
        partitions[int(key)] = ReplicaAssignment(
            _int_list(path, data, replicas, f"partition {key}'s replicas"),
            _int_list(path, data, maps["adding_replicas"].get(key, []), f"partition {key}'s adding_replicas"),
            _int_list(path, data, maps["removing_replicas"].get(key, []), f"partition {key}'s removing_replicas"))
    return TopicAssignment(topic, partitions, _field(path, data, obj, "topic_id", str, None))


def encode_leader_and_isr(state: LeaderAndIsr) -> bytes:
    return _encode({"controller_epoch": state.controller_epoch, "leader": state.leader, "version": 1,
                    "leader_epoch": state.leader_epoch, "isr": list(state.isr)})


def decode_leader_and_isr(path: str, data: bytes, stat: ZNodeStat) -> LeaderAndIsr:
    obj = _decode_object(path, data)
    _version(path, data, obj, range(1, 2))
    return LeaderAndIsr(leader=_field(path, data, obj, "leader", int),
                        leader_epoch=_field(path, data, obj, "leader_epoch", int),
                        isr=_int_list(path, data, _field(path, data, obj, "isr", list), "isr"),
                        controller_epoch=_field(path, data, obj, "controller_epoch", int),
                        zk_version=stat.version)


def _encode_partitions(partitions: Iterable[TopicPartition], extra: Mapping[TopicPartition, Any] | None = None,
                       key: str = "") -> bytes:
    entries = []
    for topic, partition in sorted(partitions):
        entry: dict[str, Any] = {"topic": topic, "partition": int(partition)}
        if extra is not None:
            entry[key] = list(extra[(topic, partition)])
        entries.append(entry)
    return _encode({"version": 1, "partitions": entries})


def _decode_partitions(path: str, data: bytes, key: str | None = None) -> dict[TopicPartition, Any]:
    obj = _decode_object(path, data)
    _version(path, data, obj, range(1, 2))
    out: dict[TopicPartition, Any] = {}
    for entry in _field(path, data, obj, "partitions", list):
        if not isinstance(entry, dict):
            raise _corrupt(path, data, "a partition entry is not an object")
        tp = (_field(path, data, entry, "topic", str), _field(path, data, entry, "partition", int))
        out[tp] = _int_list(path, data, _field(path, data, entry, key, list), key) if key else None
    return out


def _decode_controller(path: str, data: bytes) -> int:
    obj = _decode_object(path, data)
    _version(path, data, obj, range(1, 2))
    return _field(path, data, obj, "brokerid", int)


def _decode_controller_epoch(path: str, data: bytes, stat: ZNodeStat) -> ControllerEpoch:
    text = data.decode("ascii", "replace").strip()
    if not _is_decimal(text.lstrip("-")):
        raise _corrupt(path, data, "not a decimal epoch")
    return ControllerEpoch(int(text), stat.version)


def _guarded(callback: Callable[..., None]) -> Callable[..., None]:
    def run(*args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("coordination callback %r failed", callback)
    return run


# ----------------------------------------------------------------------------- the interface

class Coordination:
    """Kafka's ZooKeeper operations (KafkaZkClient's) on a :class:`ZNodeStore`.

    Creates the top-level persistent paths on construction (idempotent). See the module
    docstring for the znode layout, crash behaviour and thread safety.
    """

    def __init__(self, store: ZNodeStore) -> None:
        self._store = store
        for path in TOP_LEVEL_PATHS:
            self._ensure_path(path)

    @property
    def store(self) -> ZNodeStore:
        return self._store

    @property
    def session_id(self) -> int:
        return self._store.session_id

    def close(self) -> None:
        """End the session: this broker's ephemeral znodes vanish at once."""
        self._store.close()

    def add_session_listener(self, on_session_expired: Callable[[], None] | None = None,
                             on_session_reestablished: Callable[[], None] | None = None) -> None:
        """Be told when the session expires and when a new one is up (see SessionListener)."""
        self._store.add_session_listener(SessionListener(
            _guarded(on_session_expired) if on_session_expired else None,
            _guarded(on_session_reestablished) if on_session_reestablished else None))

    # -- helpers

    def _ensure_path(self, path: str) -> None:
        if self._store.exists(path) is None:
            try:
                self._store.create(path, b"", makepath=True)
            except NodeExistsError:
                pass

    def _get(self, path: str) -> tuple[bytes, ZNodeStat] | None:
        return self._store.get(path)

    def _fenced(self, controller_epoch: ControllerEpoch | None, ops: Sequence[Op]) -> list[Any]:
        """Run ``ops`` in one multi-op, behind a check of /controller_epoch's zkVersion when
        written by a controller; results without the check's."""
        if controller_epoch is None:
            return self._store.multi(ops)
        try:
            return self._store.multi([CheckOp(CONTROLLER_EPOCH_PATH, controller_epoch.zk_version), *ops])[1:]
        except ZNodeError as e:
            if e.op_index == 0:  # the check: BadVersion (a newer epoch) or NoNode
                raise NotControllerError(
                    f"controller epoch {controller_epoch.epoch} (zkVersion {controller_epoch.zk_version}) is "
                    f"stale: another controller was elected since; this broker must resign") from None
            if e.op_index is not None:
                e.op_index -= 1
            raise

    # -- cluster id

    def get_or_create_cluster_id(self, proposed: str) -> str:
        """The cluster id in /cluster/id, writing ``proposed`` if there is none yet."""
        got = self._get(CLUSTER_ID_PATH)
        if got is None:
            try:
                self._store.create(CLUSTER_ID_PATH, _encode({"version": "1", "id": proposed}), makepath=True)
                return proposed
            except NodeExistsError:
                got = self._get(CLUSTER_ID_PATH)
                if got is None:
                    raise CoordinationError(f"{CLUSTER_ID_PATH} vanished right after it was created") from None
        obj = _decode_object(CLUSTER_ID_PATH, got[0])
        _version(CLUSTER_ID_PATH, got[0], obj, range(1, 2))
        return _field(CLUSTER_ID_PATH, got[0], obj, "id", str)

    # -- brokers

    def register_broker(self, registration: BrokerRegistration) -> int:
        """Create this broker's ephemeral /brokers/ids/<id> (idempotent within a session).

        Returns
        -------
        int
            The broker epoch: the registration znode's czxid, larger for every new session.

        Raises
        ------
        NodeExistsError
            Another live session holds the id: another broker runs with the same
            ``broker.id``, or this broker's previous session has not expired yet (retry
            after ``zookeeper.session.timeout.ms``).
        CoordinationError
            ZooKeeper is unreachable for the session timeout, or the session expired.
        """
        path = broker_path(registration.broker_id)
        try:
            _, stat = self._store.create(path, encode_broker(registration), ephemeral=True)
            return stat.czxid
        except NodeExistsError:
            holder = self._store.exists(path)
            if holder is not None and holder.ephemeral_owner == self._store.session_id:
                return holder.czxid
            owner = f"0x{holder.ephemeral_owner:x}" if holder else "?"
            raise NodeExistsError(
                f"broker.id {registration.broker_id} is already registered at {path} by another live "
                f"ZooKeeper session ({owner}, this one is 0x{self._store.session_id:x}): another broker runs "
                f"with this broker.id, or this broker's previous session has not expired yet", path=path) from None

    def get_broker(self, broker_id: int) -> BrokerRegistration | None:
        path = broker_path(broker_id)
        got = self._get(path)
        return None if got is None else decode_broker(broker_id, path, got[0], got[1])

    def get_live_broker_ids(self) -> list[int]:
        return _broker_ids(self._store.get_children(BROKER_IDS_PATH))

    def get_live_brokers(self) -> dict[int, BrokerRegistration]:
        """Every registered broker (one read per broker; a broker that leaves meanwhile is skipped)."""
        out = {}
        for broker_id in self.get_live_broker_ids():
            reg = self.get_broker(broker_id)
            if reg is not None:
                out[broker_id] = reg
        return out

    def watch_brokers(self, callback: Callable[[list[int]], None]) -> Watch:
        """``callback(sorted live broker ids)`` now and on every registration change."""
        guarded = _guarded(callback)
        return self._store.watch_children(BROKER_IDS_PATH, lambda children: guarded(_broker_ids(children)))

    def watch_broker(self, broker_id: int, callback: Callable[[BrokerRegistration | None], None]) -> Watch:
        """``callback(registration or None)`` now and whenever /brokers/ids/<id> changes
        (Kafka's BrokerModificationsHandler). Malformed data is logged and skipped."""
        path = broker_path(broker_id)
        return self._watch_decoded(path, callback, lambda data, stat: decode_broker(broker_id, path, data, stat))

    def _watch_decoded(self, path: str, callback: Callable[[Any], None],
                       decode: Callable[[bytes, ZNodeStat], Any]) -> Watch:
        guarded = _guarded(callback)

        def on_data(data: bytes | None, stat: ZNodeStat | None) -> None:
            if stat is None:
                guarded(None)
                return
            try:
                value = decode(data or b"", stat)
            except CorruptCoordinationDataError as e:
                log.error("ignoring a change of %s: %s", path, e)
                return
            guarded(value)
        return self._store.watch_data(path, on_data)

    # -- controller

    def elect_controller(self, broker_id: int) -> ControllerEpoch | None:
        """Try to become the controller (Kafka's registerControllerAndIncrementControllerEpoch).

        Creates the ephemeral /controller and bumps /controller_epoch in one multi-op
        conditional on the epoch's zkVersion, so two brokers can never win the same epoch.

        Returns
        -------
        ControllerEpoch or None
            The epoch won (or held already, when this session owns /controller), which
            every controller write must pass as ``controller_epoch``; None when another
            broker is the controller (:meth:`get_controller` names it; watch /controller
            with :meth:`watch_controller` and try again when it is gone).
        """
        for _ in range(8):
            holder = self._store.exists(CONTROLLER_PATH)
            if holder is not None:
                # Our own /controller (asked twice): we are the controller at the current epoch.
                if holder.ephemeral_owner == self._store.session_id and self.get_controller() == broker_id:
                    return self.get_controller_epoch()
                return None
            current = self.get_controller_epoch()
            if current is None:
                try:
                    self._store.create(CONTROLLER_EPOCH_PATH, str(INITIAL_CONTROLLER_EPOCH).encode())
                    current = ControllerEpoch(INITIAL_CONTROLLER_EPOCH, 0)
                except NodeExistsError:
                    continue
            new_epoch = current.epoch + 1
            data = _encode({"version": 1, "brokerid": broker_id, "timestamp": str(int(time.time() * 1000))})
            try:
                results = self._store.multi([
                    CreateOp(CONTROLLER_PATH, data, ephemeral=True),
                    SetDataOp(CONTROLLER_EPOCH_PATH, str(new_epoch).encode(), current.zk_version)])
                return ControllerEpoch(new_epoch, results[1].version)
            except (NodeExistsError, BadVersionError):
                # Another broker won meanwhile, or a retry after a connection loss finds our own win.
                stat = self._store.exists(CONTROLLER_PATH)
                epoch = self.get_controller_epoch()
                if (stat is not None and stat.ephemeral_owner == self._store.session_id
                        and epoch is not None and epoch.epoch == new_epoch):
                    return epoch
        return None

    def get_controller(self) -> int | None:
        """The controller's broker id, or None when there is no controller."""
        got = self._get(CONTROLLER_PATH)
        return None if got is None else _decode_controller(CONTROLLER_PATH, got[0])

    def get_controller_epoch(self) -> ControllerEpoch | None:
        got = self._get(CONTROLLER_EPOCH_PATH)
        return None if got is None else _decode_controller_epoch(CONTROLLER_EPOCH_PATH, got[0], got[1])

    def watch_controller(self, callback: Callable[[int | None], None]) -> Watch:
        """``callback(controller broker id or None)`` now and on every change of /controller."""
        return self._watch_decoded(CONTROLLER_PATH, callback,
                                   lambda data, stat: _decode_controller(CONTROLLER_PATH, data))

    def resign_controller(self, controller_epoch: ControllerEpoch) -> None:
        """Delete /controller, fenced by ``controller_epoch`` (raises NotControllerError
        when another controller was elected since; gone already is fine)."""
        try:
            self._fenced(controller_epoch, [DeleteOp(CONTROLLER_PATH)])
        except NoNodeError:
            pass

    # -- topics

    def create_topic(self, assignment: TopicAssignment, config: Mapping[str, str] | None = None) -> None:
        """Write the topic's config then its assignment (Kafka's AdminZkClient order, so a
        broker that sees the topic sees its config). TopicAlreadyExistsError if it exists."""
        path = topic_path(assignment.topic)
        if self._store.exists(path) is not None:
            raise TopicAlreadyExistsError(f"topic {assignment.topic!r} already exists")
        self.set_entity_config("topics", assignment.topic, config or {})
        try:
            self._store.create(path, encode_topic(assignment))
        except NodeExistsError:
            raise TopicAlreadyExistsError(f"topic {assignment.topic!r} already exists") from None

    def get_topics(self) -> list[str]:
        return sorted(self._store.get_children(TOPICS_PATH))

    def get_topic_assignment(self, topic: str) -> TopicAssignment | None:
        path = topic_path(topic)
        got = self._get(path)
        return None if got is None else decode_topic(topic, path, got[0])

    def set_topic_assignment(self, assignment: TopicAssignment, *,
                             controller_epoch: ControllerEpoch | None) -> None:
        """Replace a topic's assignment (partitions added, reassignment progress)."""
        self._fenced(controller_epoch, [SetDataOp(topic_path(assignment.topic), encode_topic(assignment))])

    def watch_topics(self, callback: Callable[[list[str]], None]) -> Watch:
        """``callback(sorted topic names)`` now and whenever a topic is created or deleted."""
        guarded = _guarded(callback)
        return self._store.watch_children(TOPICS_PATH, lambda children: guarded(sorted(children)))

    def watch_topic_assignment(self, topic: str, callback: Callable[[TopicAssignment | None], None]) -> Watch:
        """``callback(assignment or None)`` now and on every change (Kafka's PartitionModificationsHandler)."""
        path = topic_path(topic)
        return self._watch_decoded(path, callback, lambda data, stat: decode_topic(topic, path, data))

    def delete_topic(self, topic: str, *, controller_epoch: ControllerEpoch | None) -> None:
        """Remove the topic's znodes (assignment, partition states, config) and its
        deletion marker in one fenced multi-op. The controller calls this once every
        replica has deleted the partition's log."""
        ops: list[Op] = []
        path = topic_path(topic)
        if self._store.exists(path) is not None:
            ops += [DeleteOp(p) for p in self._subtree_leaves_first(path)]
        for extra in (config_path("topics", topic), f"{DELETE_TOPICS_PATH}/{topic}"):
            if self._store.exists(extra) is not None:
                ops.append(DeleteOp(extra))
        if ops:
            self._fenced(controller_epoch, ops)

    def _subtree_leaves_first(self, path: str) -> list[str]:
        out = []
        for child in self._store.get_children(path):
            out += self._subtree_leaves_first(f"{path}/{child}")
        out.append(path)
        return out

    def mark_topic_for_deletion(self, topic: str) -> None:
        """Create /admin/delete_topics/<t> (what DeleteTopics does in ZooKeeper mode)."""
        try:
            self._store.create(f"{DELETE_TOPICS_PATH}/{_check_name(topic)}", b"")
        except NodeExistsError:
            pass

    def get_topic_deletions(self) -> list[str]:
        return sorted(self._store.get_children(DELETE_TOPICS_PATH))

    def watch_topic_deletions(self, callback: Callable[[list[str]], None]) -> Watch:
        guarded = _guarded(callback)
        return self._store.watch_children(DELETE_TOPICS_PATH, lambda children: guarded(sorted(children)))

    # -- partition state

    def create_partition_state(self, topic: str, partition: int, state: LeaderAndIsr, *,
                               controller_epoch: ControllerEpoch | None) -> LeaderAndIsr:
        """Create a new partition's state znode (NodeExistsError if it has one)."""
        path = partition_state_path(topic, partition)
        partition_path = path.rsplit("/", 1)[0]
        for parent in (partition_path.rsplit("/", 1)[0], partition_path):
            self._ensure_path(parent)
        self._fenced(controller_epoch, [CreateOp(path, encode_leader_and_isr(state))])
        return LeaderAndIsr(state.leader, state.leader_epoch, tuple(state.isr), state.controller_epoch, 0)

    def get_partition_state(self, topic: str, partition: int) -> LeaderAndIsr | None:
        path = partition_state_path(topic, partition)
        got = self._get(path)
        return None if got is None else decode_leader_and_isr(path, got[0], got[1])

    def update_partition_state(self, topic: str, partition: int, state: LeaderAndIsr, *,
                               controller_epoch: ControllerEpoch | None) -> LeaderAndIsr:
        """Compare-and-set the partition's state on ``state.zk_version``.

        Parameters
        ----------
        state
            The new state, derived from the one read (its ``zk_version`` is the version
            the write is conditional on).
        controller_epoch
            The controller's epoch when the controller writes (the write is fenced); None
            when a leader changes its ISR (Kafka 2.x leaders write directly).

        Returns
        -------
        LeaderAndIsr
            ``state`` with the znode's new zk_version.

        Raises
        ------
        InvalidUpdateVersionError
            The znode is no longer at ``state.zk_version``: newer state was written (by
            another controller or leader). Re-read and decide again.
        NotControllerError
            ``controller_epoch`` is stale: another controller was elected since.
        """
        path = partition_state_path(topic, partition)
        try:
            results = self._fenced(controller_epoch, [SetDataOp(path, encode_leader_and_isr(state), state.zk_version)])
        except BadVersionError:
            current = self._store.exists(path)
            raise InvalidUpdateVersionError(
                f"partition state of {topic}-{partition} is at zkVersion "
                f"{current.version if current else '?'}, not {state.zk_version}: newer state was written "
                f"(by another controller or leader); re-read it") from None
        return LeaderAndIsr(state.leader, state.leader_epoch, tuple(state.isr), state.controller_epoch,
                            results[0].version)

    # -- reassignment and preferred replica election (the ZooKeeper-mode admin paths)

    def create_partition_reassignment(self, reassignment: Mapping[TopicPartition, Sequence[int]]) -> None:
        """Write /admin/reassign_partitions; NodeExistsError while one is in progress."""
        try:
            self._store.create(REASSIGN_PARTITIONS_PATH, _encode_partitions(reassignment, reassignment, "replicas"),
                               makepath=True)
        except NodeExistsError:
            raise NodeExistsError("a partition reassignment is in progress already",
                                  path=REASSIGN_PARTITIONS_PATH) from None

    def get_partition_reassignment(self) -> dict[TopicPartition, tuple[int, ...]] | None:
        got = self._get(REASSIGN_PARTITIONS_PATH)
        return None if got is None else _decode_partitions(REASSIGN_PARTITIONS_PATH, got[0], "replicas")

    def watch_partition_reassignment(
            self, callback: Callable[[dict[TopicPartition, tuple[int, ...]] | None], None]) -> Watch:
        return self._watch_decoded(REASSIGN_PARTITIONS_PATH, callback,
                                   lambda data, stat: _decode_partitions(REASSIGN_PARTITIONS_PATH, data, "replicas"))

    def delete_partition_reassignment(self, *, controller_epoch: ControllerEpoch | None) -> None:
        self._delete_if_exists(REASSIGN_PARTITIONS_PATH, controller_epoch)

    def create_preferred_replica_election(self, partitions: Iterable[TopicPartition]) -> None:
        """Write /admin/preferred_replica_election; NodeExistsError while one is in progress."""
        try:
            self._store.create(PREFERRED_REPLICA_ELECTION_PATH, _encode_partitions(partitions), makepath=True)
        except NodeExistsError:
            raise NodeExistsError("a preferred replica election is in progress already",
                                  path=PREFERRED_REPLICA_ELECTION_PATH) from None

    def get_preferred_replica_election(self) -> set[TopicPartition] | None:
        got = self._get(PREFERRED_REPLICA_ELECTION_PATH)
        return None if got is None else set(_decode_partitions(PREFERRED_REPLICA_ELECTION_PATH, got[0]))

    def watch_preferred_replica_election(self, callback: Callable[[set[TopicPartition] | None], None]) -> Watch:
        return self._watch_decoded(PREFERRED_REPLICA_ELECTION_PATH, callback,
                                   lambda data, stat: set(_decode_partitions(PREFERRED_REPLICA_ELECTION_PATH, data)))

    def delete_preferred_replica_election(self, *, controller_epoch: ControllerEpoch | None) -> None:
        self._delete_if_exists(PREFERRED_REPLICA_ELECTION_PATH, controller_epoch)

    def _delete_if_exists(self, path: str, controller_epoch: ControllerEpoch | None) -> None:
        try:
            self._fenced(controller_epoch, [DeleteOp(path)])
        except NoNodeError as e:
            if e.op_index is None:
                raise

    # -- ISR change notifications (Kafka 2.x: a leader tells the controller its ISR changed)

    def propagate_isr_changes(self, partitions: Iterable[TopicPartition]) -> str:
        """Create a sequential /isr_change_notification/isr_change_<seq>; return its sequence number."""
        path, _ = self._store.create(f"{ISR_CHANGE_NOTIFICATION_PATH}/{ISR_CHANGE_PREFIX}",
                                     _encode_partitions(set(partitions)), sequential=True)
        return path.rsplit("/", 1)[1][len(ISR_CHANGE_PREFIX):]

    def get_isr_change_notifications(self) -> list[str]:
        """Sequence numbers of the pending notifications, oldest first."""
        return _sequence_numbers(self._store.get_children(ISR_CHANGE_NOTIFICATION_PATH))

    def read_isr_change_notification(self, sequence_number: str) -> set[TopicPartition] | None:
        path = f"{ISR_CHANGE_NOTIFICATION_PATH}/{ISR_CHANGE_PREFIX}{sequence_number}"
        got = self._get(path)
        return None if got is None else set(_decode_partitions(path, got[0]))

    def delete_isr_change_notifications(self, sequence_numbers: Iterable[str], *,
                                        controller_epoch: ControllerEpoch | None) -> None:
        for seq in sequence_numbers:
            self._delete_if_exists(f"{ISR_CHANGE_NOTIFICATION_PATH}/{ISR_CHANGE_PREFIX}{seq}", controller_epoch)

    def watch_isr_change_notifications(self, callback: Callable[[list[str]], None]) -> Watch:
        guarded = _guarded(callback)
        return self._store.watch_children(ISR_CHANGE_NOTIFICATION_PATH,
                                          lambda children: guarded(_sequence_numbers(children)))

    # -- dynamic config

    def set_entity_config(self, entity_type: str, name: str | int, config: Mapping[str, str]) -> None:
        """Write /config/<topics|brokers>/<name> (created if absent)."""
        path = config_path(entity_type, str(name))
        data = _encode({"version": 1, "config": {str(k): str(v) for k, v in config.items()}})
        try:
            self._store.set(path, data)
        except NoNodeError:
            try:
                self._store.create(path, data, makepath=True)
            except NodeExistsError:
                self._store.set(path, data)

    def get_entity_config(self, entity_type: str, name: str | int) -> dict[str, str]:
        path = config_path(entity_type, str(name))
        got = self._get(path)
        return {} if got is None else _decode_entity_config(path, got[0])

    def watch_entity_config(self, entity_type: str, name: str | int,
                            callback: Callable[[dict[str, str]], None]) -> Watch:
        """``callback(config)`` now and whenever /config/<entity_type>/<name> changes
        (``{}`` when it is absent; malformed data is logged and skipped): a broker's
        dynamic configs take effect without a restart, as Kafka's config change
        notifications make them."""
        path = config_path(entity_type, str(name))
        return self._watch_decoded(path, lambda config: callback({} if config is None else config),
                                   lambda data, stat: _decode_entity_config(path, data))


def _decode_entity_config(path: str, data: bytes) -> dict[str, str]:
    obj = _decode_object(path, data)
    _version(path, data, obj, range(1, 2))
    config = _field(path, data, obj, "config", dict, {})
    if not all(isinstance(v, str) for v in config.values()):
        raise _corrupt(path, data, "a config value is not a string")
    return dict(config)


def _broker_ids(children: Iterable[str]) -> list[int]:
    # Anything that is not a number under /brokers/ids is not a broker: ignore it.
    return sorted(int(c) for c in children if _is_decimal(c))


def _sequence_numbers(children: Iterable[str]) -> list[str]:
    return sorted(c[len(ISR_CHANGE_PREFIX):] for c in children if c.startswith(ISR_CHANGE_PREFIX))
