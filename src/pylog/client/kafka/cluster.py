"""What the client knows about the cluster: brokers, topics, leaders, coordinators.

:class:`ClusterMetadata` holds the answer of the last Metadata request and decides *when*
the next one is due; it does no I/O.  The :class:`~pylog.client.kafka.network.NetworkClient`
sends the requests from its I/O thread and feeds the answers in with :meth:`update`.

Threading
    Written only on the I/O thread; read from any thread.  Every update publishes a new
    immutable :class:`MetadataSnapshot` (one attribute assignment), so a reader sees one
    consistent answer without locking: take ``cluster.snapshot()`` once when several
    lookups must agree.  :meth:`request_update`, :meth:`add_topics` and the coordinator
    cache are safe from any thread (one lock); :meth:`wait_for_update` blocks a caller
    thread until the next update or failed attempt.

When metadata is refreshed (Kafka's ``Metadata`` rules)
    - at start (bootstrap: the brokers of ``bootstrap_servers`` stand in as pseudo-nodes
      with ids -1, -2, ... until the first answer names the real brokers);
    - every ``metadata_max_age_ms`` (300000) after the last successful update;
    - after :meth:`request_update`: the client calls it when a broker connection fails,
      and the layers above when a partition answers NOT_LEADER_OR_FOLLOWER,
      FENCED_LEADER_EPOCH, UNKNOWN_TOPIC_OR_PARTITION, ... (:meth:`handle_error_code`);
      never sooner than ``retry_backoff_ms`` (100) after the previous attempt.
    An update requested while a Metadata request is in flight stays requested if that
    request was built before it (a request version counter, as Kafka's).  A partition
    whose leader epoch goes backwards in an answer (a broker with stale metadata) keeps
    its newer cached entry, and another update is requested (KIP-320).

Topics
    The client asks for the topics it tracks (:meth:`add_topics`; none by default, which
    fetches brokers only) or for every topic (``track_all_topics``).  A partial answer
    replaces the entries of the topics it names; an all-topics answer replaces them all.

Coordinators
    FindCoordinator answers are cached per (key type, key).  A coordinator gets its own
    connection, under the node id ``2**31 - 1 - broker_id`` (as Kafka's consumer does), so
    a JoinGroup that blocks for a rebalance never holds up fetches on the broker's main
    connection; each group member's JoinGroup and SyncGroup go on an extra connection
    beside it (:func:`extra_connection_id` of the coordinator id), so they hold up no
    other member either.  The cache entry goes on NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE and
    when the coordinator's connection fails.
"""

from __future__ import annotations

import enum
import random
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from pylog.errors import InvalidConfigError

__all__ = [
    "ClusterMetadata",
    "CoordinatorType",
    "MetadataSnapshot",
    "Node",
    "PartitionMetadata",
    "TopicMetadata",
    "coordinator_node_id",
    "extra_connection_id",
    "parse_bootstrap_servers",
]

_NONE = 0
_UNKNOWN_TOPIC_OR_PARTITION = 3
_LEADER_NOT_AVAILABLE = 5
_NOT_LEADER_OR_FOLLOWER = 6
_NOT_COORDINATOR = 16
_COORDINATOR_NOT_AVAILABLE = 15
_KAFKA_STORAGE_ERROR = 56
_FENCED_LEADER_EPOCH = 74
_UNKNOWN_LEADER_EPOCH = 75
_UNKNOWN_TOPIC_ID = 100
_INCONSISTENT_TOPIC_ID = 103

#: Error codes after which the partition leaders may have moved: refresh metadata.
METADATA_ERRORS = frozenset({_UNKNOWN_TOPIC_OR_PARTITION, _LEADER_NOT_AVAILABLE,
                             _NOT_LEADER_OR_FOLLOWER, _KAFKA_STORAGE_ERROR, _FENCED_LEADER_EPOCH,
                             _UNKNOWN_LEADER_EPOCH, _UNKNOWN_TOPIC_ID, _INCONSISTENT_TOPIC_ID})
#: Error codes after which a cached coordinator is forgotten.
COORDINATOR_ERRORS = frozenset({_NOT_COORDINATOR, _COORDINATOR_NOT_AVAILABLE})

_COORDINATOR_BASE = 2**31 - 1
_EXTRA_MASK = 2**32 - 1


class CoordinatorType(enum.IntEnum):
    """FindCoordinator's key_type."""

    GROUP = 0
    TRANSACTION = 1


class Node(NamedTuple):
    node_id: int
    host: str
    port: int
    rack: str | None = None


class PartitionMetadata(NamedTuple):
    leader_id: int          # -1: no leader now
    leader_epoch: int       # -1: unknown (Metadata before v7)
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline: tuple[int, ...]
    error_code: int = 0


class TopicMetadata(NamedTuple):
    topic_id: uuid.UUID | None
    is_internal: bool
    partitions: Mapping[int, PartitionMetadata]
    error_code: int


def coordinator_node_id(broker_id: int) -> int:
    """The connection id under which the coordinator on broker ``broker_id`` is reached."""
    return _COORDINATOR_BASE - broker_id


def coordinator_broker_id(node_id: int) -> int:
    """The broker a coordinator connection id (:func:`coordinator_node_id`) reaches."""
    return _COORDINATOR_BASE - node_id


def extra_connection_id(broker_id: int, slot: int) -> int:
    """The connection id of extra connection ``slot`` (>= 1) to broker ``broker_id``.

    Kafka brokers handle one request of a connection at a time, so a Fetch long poll
    holds up everything behind it on its connection; the Kafka-protocol transport sends
    its fetches on connections of their own (as Kafka's separate producer and consumer
    clients do).  Ids above 2**32 never collide with broker ids (int32), coordinator
    connection ids or bootstrap pseudo-nodes.  ``broker_id`` may also be a coordinator
    connection id (:func:`coordinator_node_id`): the group members of one client each
    reach their coordinator on such a connection, so that a JoinGroup the coordinator
    holds for a rebalance holds up no other member."""
    return (slot << 32) | broker_id


def parse_bootstrap_servers(servers: str | Sequence[str]) -> list[tuple[str, int]]:
    """``host:port[,host:port...]`` (or a list of such strings) as ``[(host, port)]``.

    Accepts ``[v6addr]:port``, an unbracketed IPv6 address whose last colon starts the
    port (as Kafka does), a ``SCHEME://`` prefix (ignored), and a bare host (port 9092).

    Raises
    ------
    InvalidConfigError
        Empty, or an entry with an empty host, a non-numeric port or one outside 1-65535.
    """
    if isinstance(servers, str):
        parts = servers.split(",")
    elif isinstance(servers, (list, tuple)) and all(isinstance(s, str) for s in servers):
        parts = [p for s in servers for p in s.split(",")]
    else:
        raise InvalidConfigError(f"bootstrap_servers must be a string 'host:port,...' or a list of them, "
                                 f"not {type(servers).__name__}")
    out = []
    for raw in parts:
        part = raw.strip()
        if not part:
            continue
        if "://" in part:
            part = part.split("://", 1)[1]
        host, port_s = part, "9092"
        if part.startswith("["):
            host, close, rest = part[1:].partition("]")
            if not close or (rest and not rest.startswith(":")):
                raise InvalidConfigError(f"bootstrap server {raw.strip()!r}: expected [IPv6]:port")
            if rest:
                port_s = rest[1:]
        elif ":" in part:
            host, _, port_s = part.rpartition(":")
        if not host or any(c.isspace() for c in host) or "/" in host:
            raise InvalidConfigError(f"bootstrap server {raw.strip()!r}: no valid host; use host:port")
        if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
            raise InvalidConfigError(f"bootstrap server {raw.strip()!r}: port {port_s!r} is not a "
                                     "number from 1 to 65535; use host:port")
        out.append((host, int(port_s)))
    if not out:
        raise InvalidConfigError(f"no bootstrap server in {servers!r}; use host:port[,host:port...]")
    return out


class MetadataSnapshot:
    """One Metadata answer, immutable.  ``nodes`` are the real brokers (empty before the
    first answer), ``topics`` maps names to :class:`TopicMetadata`."""

    __slots__ = ("nodes", "topics", "cluster_id", "controller_id", "version", "_ids")

    def __init__(self, nodes: dict[int, Node], topics: dict[str, TopicMetadata],
                 cluster_id: str | None, controller_id: int, version: int) -> None:
        self.nodes = nodes
        self.topics = topics
        self.cluster_id = cluster_id
        self.controller_id = controller_id
        self.version = version
        self._ids: dict[uuid.UUID, str] | None = None

    def leader_for(self, topic: str, partition: int) -> int | None:
        """Node id of the partition's leader; None when unknown or leaderless."""
        t = self.topics.get(topic)
        if t is None:
            return None
        p = t.partitions.get(partition)
        if p is None or p.leader_id < 0:
            return None
        return p.leader_id

    def partitions_for(self, topic: str) -> list[int] | None:
        """The topic's partition numbers, ascending; None when the topic is not known."""
        t = self.topics.get(topic)
        if t is None or t.error_code:
            return None
        return sorted(t.partitions)

    def topic_name(self, topic_id: uuid.UUID) -> str | None:
        if self._ids is None:
            self._ids = {t.topic_id: name for name, t in self.topics.items() if t.topic_id is not None}
        return self._ids.get(topic_id)


_EMPTY = MetadataSnapshot({}, {}, None, -1, 0)


class ClusterMetadata:
    """Cluster metadata and its refresh policy (see the module docstring).

    Parameters
    ----------
    bootstrap_servers : str or list of str
    metadata_max_age_ms : int
    retry_backoff_ms : int
    """

    def __init__(self, bootstrap_servers: str | Sequence[str], *, metadata_max_age_ms: int = 300000,
                 retry_backoff_ms: int = 100) -> None:
        self.bootstrap_nodes = {-1 - i: Node(-1 - i, h, p)
                                for i, (h, p) in enumerate(parse_bootstrap_servers(bootstrap_servers))}
        self.metadata_max_age = metadata_max_age_ms / 1000
        self.retry_backoff = retry_backoff_ms / 1000
        self._snap = _EMPTY
        self._cond = threading.Condition()
        self._need_update = True
        self._request_version = 0
        self._attempts = 0                      # finished attempts, successful or not
        self._last_attempt = float("-inf")
        self._last_success = float("-inf")
        self._topics: set[str] = set()
        self.track_all_topics = False
        self._coordinators: dict[tuple[int, str], int] = {}
        self._coordinator_nodes: dict[int, Node] = {}
        self.closed = False
        self.last_error: BaseException | None = None
        #: Called (no arguments) when an update is requested, to wake the I/O thread.
        self.on_update_requested: Callable[[], None] | None = None

    # -- reading -------------------------------------------------------------------------

    def snapshot(self) -> MetadataSnapshot:
        return self._snap

    @property
    def nodes(self) -> dict[int, Node]:
        return self._snap.nodes

    @property
    def topics(self) -> dict[str, TopicMetadata]:
        return self._snap.topics

    @property
    def cluster_id(self) -> str | None:
        return self._snap.cluster_id

    @property
    def controller_id(self) -> int:
        return self._snap.controller_id

    @property
    def bootstrapped(self) -> bool:
        """True once a Metadata answer named the real brokers."""
        return bool(self._snap.nodes)

    def leader_for(self, topic: str, partition: int) -> int | None:
        return self._snap.leader_for(topic, partition)

    def partitions_for(self, topic: str) -> list[int] | None:
        return self._snap.partitions_for(topic)

    def node(self, node_id: int) -> Node | None:
        """The address of a broker, a bootstrap pseudo-node, a coordinator connection or
        an extra connection to a broker (:func:`extra_connection_id`)."""
        n = self._snap.nodes.get(node_id)
        if n is not None:
            return n
        if node_id < 0:
            return self.bootstrap_nodes.get(node_id)
        if node_id > _EXTRA_MASK:
            base = node_id & _EXTRA_MASK
            return self._snap.nodes.get(base) or self._coordinator_nodes.get(base)
        return self._coordinator_nodes.get(node_id)

    def candidate_nodes(self) -> list[int]:
        """Nodes a request for any broker may go to: the brokers, or the bootstrap servers
        before the first answer."""
        snap = self._snap
        return list(snap.nodes) if snap.nodes else list(self.bootstrap_nodes)

    # -- what to ask for and when --------------------------------------------------------

    def add_topics(self, topics: Iterable[str]) -> None:
        """Track ``topics`` (periodic refreshes ask for them); an update is requested if any
        is new or not yet known."""
        with self._cond:
            new = set(topics) - self._topics
            self._topics |= new
        snap = self._snap
        if new or any(t not in snap.topics for t in topics):
            self.request_update()

    def tracked_topics(self) -> list[str] | None:
        """Topics to ask for: None means every topic."""
        if self.track_all_topics:
            return None
        with self._cond:
            return sorted(self._topics)

    def request_update(self) -> None:
        """Ask for a Metadata refresh as soon as ``retry_backoff_ms`` allows."""
        with self._cond:
            self._need_update = True
            self._request_version += 1
        hook = self.on_update_requested
        if hook is not None:
            hook()

    def handle_error_code(self, error_code: int) -> bool:
        """Request an update if ``error_code`` means leaders may have moved; True if so."""
        if error_code in METADATA_ERRORS:
            self.request_update()
            return True
        return False

    @property
    def request_version(self) -> int:
        return self._request_version

    def time_to_next_update(self, now: float) -> float:
        """Seconds until a refresh is due (0: now)."""
        if self._need_update:
            due = self._last_attempt + self.retry_backoff
        else:
            due = self._last_success + self.metadata_max_age
        return max(0.0, due - now)

    def attempt_started(self, now: float) -> None:
        self._last_attempt = now

    def failed_update(self, now: float, error: BaseException | None = None) -> None:
        """A Metadata request failed: try again after ``retry_backoff_ms``."""
        with self._cond:
            self._last_attempt = now
            self._need_update = True
            self._attempts += 1
            self.last_error = error
            self._cond.notify_all()

    def update(self, response: Any, now: float, *, topics: Sequence[str] | None,
               request_version: int) -> MetadataSnapshot:
        """Apply a MetadataResponse to a request for ``topics`` (None: every topic) built
        at ``request_version``; returns the new snapshot."""
        with self._cond:
            return self._update(response, now, topics, request_version)

    def _update(self, response: Any, now: float, topics: Sequence[str] | None,
                request_version: int) -> MetadataSnapshot:
        old = self._snap
        nodes = {b.node_id: Node(b.node_id, b.host, b.port, b.rack) for b in response.brokers}
        stale = False
        new_topics = {} if topics is None else dict(old.topics)
        for t in response.topics:
            if t.name is None:
                continue
            prev = old.topics.get(t.name)
            topic_id = t.topic_id if t.topic_id is not None and t.topic_id.int else None
            parts = {}
            for p in t.partitions:
                pm = PartitionMetadata(p.leader_id, p.leader_epoch, tuple(p.replica_nodes),
                                       tuple(p.isr_nodes), tuple(p.offline_replicas or ()),
                                       p.error_code)
                if prev is not None and not t.error_code:
                    cached = prev.partitions.get(p.partition_index)
                    if cached is not None and 0 <= pm.leader_epoch < cached.leader_epoch \
                            and prev.topic_id == topic_id:
                        pm, stale = cached, True        # an answer older than what we know
                parts[p.partition_index] = pm
            new_topics[t.name] = TopicMetadata(topic_id, bool(t.is_internal), parts, t.error_code)
        cluster_id = getattr(response, "cluster_id", None)
        controller_id = getattr(response, "controller_id", -1)
        snap = MetadataSnapshot(nodes, new_topics, cluster_id,
                                controller_id if controller_id is not None else -1, old.version + 1)
        self._snap = snap
        self._last_attempt = self._last_success = now
        self._attempts += 1
        self.last_error = None
        if stale:
            self._need_update = True
        elif request_version == self._request_version:
            self._need_update = False
        self._cond.notify_all()
        return snap

    # -- waiting -------------------------------------------------------------------------

    @property
    def attempts(self) -> int:
        return self._attempts

    def wait_for_update(self, attempts_seen: int, timeout: float) -> bool:
        """Block until an update attempt after ``attempts_seen`` finishes (or the cluster is
        closed); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._attempts == attempts_seen and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    # -- coordinators --------------------------------------------------------------------

    def coordinator_for(self, key: str, key_type: int = CoordinatorType.GROUP) -> int | None:
        """The cached coordinator connection id for ``key``, or None."""
        return self._coordinators.get((int(key_type), key))

    def set_coordinator(self, key: str, key_type: int, broker_id: int, host: str, port: int) -> int:
        """Cache a FindCoordinator answer; returns the connection id to send to."""
        conn_id = coordinator_node_id(broker_id)
        with self._cond:
            self._coordinator_nodes[conn_id] = Node(conn_id, host, port)
            self._coordinators[(int(key_type), key)] = conn_id
        return conn_id

    def invalidate_coordinator(self, key: str, key_type: int = CoordinatorType.GROUP) -> None:
        with self._cond:
            self._coordinators.pop((int(key_type), key), None)

    def coordinator_error(self, key: str, key_type: int, error_code: int) -> bool:
        """Forget the coordinator of ``key`` if ``error_code`` says it moved; True if so."""
        if error_code in COORDINATOR_ERRORS:
            self.invalidate_coordinator(key, key_type)
            return True
        return False

    def invalidate_coordinators_on(self, conn_id: int) -> None:
        """Forget every coordinator reached through connection ``conn_id`` (or through
        the coordinator connection an extra connection ``conn_id`` stands beside)."""
        if conn_id > _EXTRA_MASK:
            conn_id &= _EXTRA_MASK
        with self._cond:
            for k in [k for k, v in self._coordinators.items() if v == conn_id]:
                del self._coordinators[k]

    def is_coordinator_connection(self, node_id: int) -> bool:
        """True for a coordinator connection and for an extra connection beside one (a
        group member's own connection to its coordinator)."""
        if node_id > _EXTRA_MASK:
            node_id &= _EXTRA_MASK
        return node_id in self._coordinator_nodes and node_id not in self._snap.nodes


def least_loaded(candidates: list[int], load: Callable[[int], tuple[int, float]],
                 rng: random.Random) -> int | None:
    """Kafka's least-loaded choice among ``candidates``: ``load(node)`` returns
    ``(rank, requests)`` where rank 0 = ready, 1 = connecting, 2 = may connect now,
    3 = backing off; the lowest (rank, requests) wins, ties broken by a random start."""
    if not candidates:
        return None
    start = rng.randrange(len(candidates))
    best: int | None = None
    best_load: tuple[int, float] = (4, 0.0)
    for i in range(len(candidates)):
        node = candidates[(start + i) % len(candidates)]
        lo = load(node)
        if lo == (0, 0):
            return node
        if lo < best_load:
            best, best_load = node, lo
    return best
