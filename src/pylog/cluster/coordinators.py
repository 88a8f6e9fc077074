"""The group and transaction coordinators of a clustered broker, on the leaders of the
partitions of ``__consumer_offsets`` and ``__transaction_state`` (Kafka's design).

- **The internal topics** are cluster topics: placed and led like any other, replicated,
  compacted.  The first FindCoordinator that needs one creates it through ZooKeeper
  (:meth:`CoordinatorPartitions.ensure_topic`) with ``offsets.topic.num.partitions`` /
  ``offsets.topic.replication.factor`` (``transaction.state.log.*`` for the other), and,
  as Kafka does, refuses with COORDINATOR_NOT_AVAILABLE while fewer brokers are alive
  than the replication factor asks for.
- **Who coordinates**: the group ``g`` lives in partition ``abs(hash(g)) % partitions``
  (:func:`~pylog.broker.group_offsets.partition_for_group`), and its coordinator is that
  partition's leader, which FindCoordinator names (from the controller's metadata).
- **Moving with leadership** (:meth:`CoordinatorPartitions.leadership_changed`, called by
  LeaderAndIsr and StopReplica): a broker that becomes the leader of an offsets
  partition answers COORDINATOR_LOAD_IN_PROGRESS for its groups at once, then replays
  the partition's log (up to its end, as Kafka's loader does) on the loader thread and
  serves them; one that stops leading it drops them, and their requests get
  NOT_COORDINATOR.  Loads and unloads run in the order the leadership changed.
- **Commits are replicated before they are answered**: the coordinator appends to the
  leader's log; the clustered OffsetCommit (and SyncGroup) handler answers once the
  high watermark passed that append (:meth:`CoordinatorPartitions.wait_replicated`,
  Kafka's acks=-1 append of ``offsets.commit.required.acks``), and a commit the ISR did
  not take in ``offsets.commit.timeout.ms`` is answered COORDINATOR_NOT_AVAILABLE, one
  whose leader moved NOT_COORDINATOR: the consumer retries it on the new coordinator.

Crash behaviour: nothing here is stored; the state is the replicated logs.  A broker
killed while leading hands its partitions to an ISR member, which holds every commit
that was answered and loads it.

Thread safety: :meth:`leadership_changed` runs on the replica thread, loads and unloads
on one loader thread of their own, :meth:`wait_replicated` on the loop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC, partition_for_group
from pylog.broker.txn_log import TRANSACTION_STATE_TOPIC
from pylog.cluster import replication
from pylog.errors import CoordinatorNotAvailableError, PylogError, TopicAlreadyExistsError

__all__ = ["CoordinatorPartitions", "INTERNAL_TOPICS"]

_log = logging.getLogger("pylog.cluster.coordinators")

INTERNAL_TOPICS = (CONSUMER_OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC)

#: Kafka's offsets.commit.timeout.ms.
OFFSETS_COMMIT_TIMEOUT_MS = 5000


class CoordinatorPartitions:
    """The coordinators' side of a :class:`~pylog.cluster.node.ClusterNode` (module docstring)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.broker = node.broker
        #: Internal partitions this broker leads and serves (or is loading).
        self._led: set[tuple[str, int]] = set()
        self._loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pylog-coordinator-loader")

    def start(self) -> None:
        """Serve nothing until LeaderAndIsr says what this broker leads: the groups the
        broker core loaded from its local logs at open are dropped."""
        self.broker.groups.unload_all()

    def close(self) -> None:
        self._loader.shutdown(wait=True)

    # -- creating the internal topics (off the loop) ------------------------------------

    def topic_settings(self, topic: str) -> tuple[int, int, dict[str, str]]:
        """(partitions, replication factor, topic configs) of an internal topic."""
        cfg = self.node.config
        if topic == CONSUMER_OFFSETS_TOPIC:
            # The broker core's own count, which its group coordinator hashes groups over.
            return (self.broker.num_partitions(CONSUMER_OFFSETS_TOPIC), cfg.offsets_topic_replication_factor,
                    {"cleanup.policy": "compact", "segment.bytes": str(cfg.offsets_topic_segment_bytes),
                     "compression.type": "producer"})
        return (cfg.transaction_state_log_num_partitions, cfg.transaction_state_log_replication_factor,
                {"cleanup.policy": "compact", "segment.bytes": str(cfg.transaction_state_log_segment_bytes),
                 "compression.type": "uncompressed",
                 "min.insync.replicas": str(cfg.transaction_state_log_min_isr)})

    def ensure_topic(self, topic: str) -> None:
        """Create the internal ``topic`` in ZooKeeper unless it exists (the controller
        then places its leaders).

        Raises
        ------
        CoordinatorNotAvailableError
            Fewer live brokers than its replication factor (Kafka's answer while a
            cluster starts; lower ``offsets.topic.replication.factor`` for a smaller one).
        """
        from pylog.cluster.controller import ZkAdmin
        coordination = self.node.coordination
        if coordination.get_topic_assignment(topic) is not None:
            return
        partitions, rf, configs = self.topic_settings(topic)
        live = len(coordination.get_live_broker_ids())
        if live < rf:
            raise CoordinatorNotAvailableError(
                f"{live} live broker(s) do not meet the replication factor {rf} of {topic} (offsets.topic."
                f"replication.factor / transaction.state.log.replication.factor); it is created once "
                f"enough brokers are up")
        try:
            ZkAdmin(coordination).create_topic(topic, partitions, rf, configs)
            _log.info("created %s: %d partitions, replication factor %d", topic, partitions, rf)
        except TopicAlreadyExistsError:
            pass

    # -- leadership (the replica thread) -------------------------------------------------

    def leadership_changed(self, topic: str, partition: int, leader: bool) -> None:
        """This broker now leads (or no longer leads) an internal partition."""
        if topic != CONSUMER_OFFSETS_TOPIC:
            return
        tp = (topic, partition)
        if leader and tp not in self._led:
            self._led.add(tp)
            self.broker.groups.begin_load(partition)
            self._loader.submit(self._load_groups, partition)
        elif not leader and tp in self._led:
            self._led.discard(tp)
            self._loader.submit(self._unload_groups, partition)

    def _load_groups(self, partition: int) -> None:
        try:
            n = self.broker.load_group_partition(partition)
        except Exception:  # noqa: BLE001 - the loader thread must survive; the groups stay unserved
            _log.exception("loading the groups of %s-%d failed", CONSUMER_OFFSETS_TOPIC, partition)
            return
        _log.info("%s-%d: this broker coordinates its groups now (%d loaded)", CONSUMER_OFFSETS_TOPIC,
                  partition, n)

    def _unload_groups(self, partition: int) -> None:
        n = self.broker.groups.unload(partition)
        _log.info("%s-%d: no longer led here; %d group(s) unloaded", CONSUMER_OFFSETS_TOPIC, partition, n)

    # -- replicated commits (the loop thread) ------------------------------------------

    def wait_replicated(self, group_id: str, timeout_ms: int = OFFSETS_COMMIT_TIMEOUT_MS) -> asyncio.Future | None:
        """A future of None once the high watermark of the group's offsets partition has
        passed everything its leader's log holds now (so the coordinator's latest append
        for the group), or of the PylogError that stopped it; None when this broker holds
        no replica of the partition (nothing was appended here)."""
        manager = self.node.replica_manager
        n = self.broker.num_partitions(CONSUMER_OFFSETS_TOPIC)
        tp = (CONSUMER_OFFSETS_TOPIC, partition_for_group(group_id, n))
        r = manager.replicas.get(tp)
        if r is None:
            return None
        manager.after_leader_append(*tp)     # an ISR of one moves the high watermark at once
        with r.lock:
            end = r.log.log_end_offset
            append = replication.AppendInfo(end - 1, end - 1, r.state.leader_epoch)
        return manager.wait_for_acks(tp[0], tp[1], append, timeout_ms)


def commit_error_code(error: PylogError) -> int:
    """Kafka's translation of a failed replicated append of the coordinator into the
    error its request answers (GroupMetadataManager's)."""
    from pylog.broker.group import _storage_error_code
    return _storage_error_code(error, for_commit=True)
