"""What the runtime derives from a topology under one application id (Kafka Streams'
``TopologyMetadata`` and ``InternalTopicManager``): the sub-topologies that make tasks,
their source topics with internal names, their logged stores and changelog topics, how
many tasks each sub-topology has, and the creation of the internal topics.

Internal topics, Kafka Streams' names and settings (its ``RepartitionTopicConfig``,
``UnwindowedUnversionedChangelogTopicConfig``, ``WindowedChangelogTopicConfig``):
``<application.id>-<name>-repartition`` (``cleanup.policy=delete``, ``retention.ms=-1``,
``segment.bytes=52428800``; as many partitions as the sub-topology writing it has tasks,
or its fixed count) and ``<application.id>-<store>-changelog`` (``compact``; window and
session stores ``compact,delete`` with ``retention.ms`` the store's retention plus
``windowstore.changelog.additional.retention.ms``, one day by default; one partition per
task).  Every internal topic has ``message.timestamp.type=CreateTime``.  The app's
``topic.``-prefixed settings override these defaults, a store's ``with_logging_enabled``
configs override both (a window changelog's ``retention.ms`` only from there), and
``replication.factor`` (default -1: the broker's default) applies to all.  Consumed
records of repartition topics are deleted after commits
(:meth:`~.task_manager.TaskManager.maybe_purge_committed_records`).  Co-partitioning is checked
when the task counts are worked out: the source topics of a sub-topology that joins
(has a store shared by two sources) must have the same partition count, else
:class:`~.topology.TopologyError`.

Crash behaviour: topics are created one by one; a run that stops half way leaves some
created, and the next run creates the rest (an existing topic with the right partition
count is kept).

Thread safety: immutable after construction; :meth:`TopologyMetadata.task_counts` and
:func:`create_internal_topics` ask the cluster and are called once per run, before the
stream threads start.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from pylog.errors import TopicAlreadyExistsError

from .config import setting
from .task import logged_stores
from .topology import Topology, TopologyError

__all__ = ["TopologyMetadata", "create_internal_topics", "internal_topic_configs"]

#: Kafka Streams' defaults of every internal topic (InternalTopicConfig), of repartition
#: topics (RepartitionTopicConfig) and of changelogs (by store kind).
_INTERNAL = {"message.timestamp.type": "CreateTime"}
_REPARTITION = {**_INTERNAL, "cleanup.policy": "delete", "segment.bytes": "52428800", "retention.ms": "-1"}
_CHANGELOG = {"key_value": {**_INTERNAL, "cleanup.policy": "compact"},
              "window": {**_INTERNAL, "cleanup.policy": "compact,delete"},
              "session": {**_INTERNAL, "cleanup.policy": "compact,delete"}}
#: ``windowstore.changelog.additional.retention.ms``'s default: one day.
ADDITIONAL_RETENTION_MS = 86_400_000
_MAX_LONG = (1 << 63) - 1


class TopologyMetadata:
    """The sub-topologies of ``topology`` as ``application_id`` runs them."""

    def __init__(self, topology: Topology, application_id: str) -> None:
        self.topology = topology
        self.application_id = application_id
        groups = topology.node_groups()
        #: (sub-topology id, its node names) of every sub-topology that makes tasks
        self.groups: List[Tuple[int, List[str]]] = [(gid, names) for gid, names in groups
                                                    if not topology.is_global_group(names)]
        self.nodes_of: Dict[int, List[str]] = dict(self.groups)
        #: the nodes of the global stores' sub-topologies
        self.global_names: List[str] = [n for _, names in groups if topology.is_global_group(names) for n in names]
        #: source topic (internal name) -> its sub-topology
        self.topic_group: Dict[str, int] = {}
        for gid, names in self.groups:
            for t in self.source_topics(names):
                self.topic_group[t] = gid
        self._changelogs = {gid: [(sname, topic, topology.stores[sname])
                                  for sname, topic in logged_stores(topology, names, application_id).items()]
                            for gid, names in self.groups}

    @property
    def repartition_topics(self) -> Set[str]:
        """The repartition topics' names on the cluster."""
        return {self.internal(t) for t in self.topology.repartition_topics}

    def internal(self, topic: str) -> str:
        """A repartition topic's name on the cluster (prefixed with the application id)."""
        return f"{self.application_id}-{topic}" if topic in self.topology.repartition_topics else topic

    def source_topics(self, names: List[str]) -> List[str]:
        nodes = self.topology.nodes
        return [self.internal(t) for n in names if nodes[n].kind == "source" for t in nodes[n].topics]

    def changelogs(self, gid: int) -> List[Tuple[str, str, Any]]:
        """(store, changelog topic, store meta) of the logged stores of sub-topology ``gid``."""
        return self._changelogs[gid]

    def stateful_groups(self) -> Set[int]:
        """The sub-topologies with logged stores (their tasks get standbys)."""
        return {gid for gid, logged in self._changelogs.items() if logged}

    def source_of(self, node_name: str) -> str:
        """The source a node descends from (the first, following first parents)."""
        nodes = self.topology.nodes
        while nodes[node_name].kind != "source":
            node_name = nodes[node_name].predecessors[0]
        return node_name

    def writer_group(self, topic: str) -> int:
        """The sub-topology whose sink writes ``topic``; -1: none."""
        for gid, names in self.groups:
            for n in names:
                node = self.topology.nodes[n]
                if node.kind == "sink" and node.topic == topic:
                    return gid
        return -1

    def global_store_of_topic(self) -> Dict[str, str]:
        """Global source topic -> the global store its records go to."""
        out: Dict[str, str] = {}
        nodes = self.topology.nodes
        for sname, meta in self.topology.stores.items():
            if meta.is_global:
                for user in meta.users:
                    for t in nodes[self.source_of(user)].topics:
                        out[t] = sname
        return out

    def task_counts(self, partitions_of: Callable[[str], int]) -> Dict[int, int]:
        """Tasks per sub-topology; sizes repartition topics after their writers and
        checks co-partitioning (module docstring).

        Raises
        ------
        TopologyError
            A joining sub-topology's sources differ in partition count, or repartition
            topics feed each other in a cycle.
        """
        topo = self.topology
        counts: Dict[int, int] = {}
        pending = list(self.groups)
        for _ in range(len(pending) + 1):
            left = []
            for gid, names in pending:
                sizes = []
                for n in names:
                    node = topo.nodes[n]
                    if node.kind != "source":
                        continue
                    for t in node.topics:
                        if t in topo.copartitioned_topics:
                            continue  # sized like this sub-topology's other sources (FK joins)
                        if t in topo.repartition_topics:
                            fixed = topo.repartition_topics[t]
                            sizes.append(fixed if fixed else counts.get(self.writer_group(t), -1))
                        else:
                            sizes.append(partitions_of(t))
                if -1 in sizes:
                    left.append((gid, names))
                    continue
                shares_store = any(len({self.source_of(u) for u in m.users}) > 1
                                   for m in topo.stores.values() if any(u in names for u in m.users))
                if shares_store and len(set(sizes)) > 1:
                    raise TopologyError(f"sub-topology {gid} joins topics with different partition counts "
                                        f"({dict(zip(self.source_topics(names), sizes))}): co-partition them "
                                        "(same partition count) or repartition one side")
                counts[gid] = max(sizes) if sizes else 1
            pending = left
            if not pending:
                return counts
        raise TopologyError("repartition topics feed each other in a cycle; their partition counts are unknown")


def internal_topic_configs(config: Dict[str, Any], kind: str, store_meta: Any = None) -> Dict[str, str]:
    """The configs Kafka Streams creates an internal topic with: ``kind``
    ``"repartition"`` or ``"changelog"`` (of the store ``store_meta``); see the module
    docstring for the order of the defaults and overrides."""
    user = {k[len("topic."):]: str(v) for k, v in config.items() if k.startswith("topic.")}
    if kind == "repartition":
        return {**_REPARTITION, **user}
    builder = store_meta.builder
    log_config = {k: str(v) for k, v in builder.log_config.items()}
    out = {**_CHANGELOG[builder.kind], **user, **log_config}
    retention = getattr(builder.supplier, "retention_ms", None)
    if builder.kind != "key_value" and "retention.ms" not in log_config and retention is not None:
        extra = int(setting(config, "windowstore.changelog.additional.retention.ms", ADDITIONAL_RETENTION_MS))
        out["retention.ms"] = str(min(int(retention) + extra, _MAX_LONG))
    return out


def create_internal_topics(client: Any, metadata: TopologyMetadata, counts: Dict[int, int],
                           partition_counts: Optional[Dict[str, int]] = None,
                           config: Optional[Dict[str, Any]] = None) -> None:
    """Create the repartition and changelog topics ``counts`` (tasks per sub-topology)
    sizes, with the app's ``config`` (:func:`internal_topic_configs`,
    ``replication.factor``); an existing one must have the partition count the app
    needs (its configs are left as they are).  Each topic's count is put in
    ``partition_counts``.

    Raises
    ------
    TopologyError
        An internal topic exists with another partition count (reset the application).
    """
    config = config or {}
    topo = metadata.topology
    rf = int(setting(config, "replication.factor", -1))
    wanted: Dict[str, Tuple[int, Dict[str, str]]] = {}
    for t, fixed in topo.repartition_topics.items():
        reader = t in topo.copartitioned_topics
        n = fixed or counts[metadata.topic_group[metadata.internal(t)] if reader else metadata.writer_group(t)]
        wanted[metadata.internal(t)] = (n, internal_topic_configs(config, "repartition"))
    for gid, _names in metadata.groups:
        for _sname, topic, meta in metadata.changelogs(gid):
            wanted[topic] = (counts[gid], internal_topic_configs(config, "changelog", meta))
    for topic, (n, cfg) in wanted.items():
        try:
            client.create_topic(topic, n, None if rf < 0 else rf, config=cfg)
        except TopicAlreadyExistsError:
            have = client.num_partitions(topic)
            if have != n:
                raise TopologyError(f"internal topic {topic!r} has {have} partitions, the app needs {n}: "
                                    "reset the application (`pylog streams reset --application-id "
                                    f"{metadata.application_id}`, which deletes its internal topics)") from None
        if partition_counts is not None:
            partition_counts[topic] = n
