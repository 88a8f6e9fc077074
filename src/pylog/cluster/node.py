"""A broker's cluster side: Kafka's KafkaServer in ZooKeeper mode plus its ReplicaManager.

:class:`ClusterNode` is what ``pylog serve --zookeeper HOST:PORT[/chroot]`` adds to a
:class:`~pylog.server.server.Server`:

- **Registration**: an ephemeral ``/brokers/ids/<broker.id>`` with the advertised endpoint
  and ``broker.rack``; registered again when ZooKeeper expires the session and a new one
  is up (the broker epoch, the znode's czxid, changes with it).  When the session
  expires the broker stops leading every partition at once (the controller is electing
  other leaders), and waits for the LeaderAndIsr its new registration brings.
- **Controller**: every broker runs a :class:`~pylog.cluster.controller.Controller`, which
  competes for ``/controller``; its requests to brokers go over the Kafka protocol
  (:class:`~pylog.cluster.wire_channel.WireChannel`), its ZooKeeper work runs on one thread
  of its own.
- **Replica manager** (:class:`ReplicaManager`): for each partition this broker holds a
  replica of, a :class:`pylog.cluster.replication.Partition` over the broker core's log.
  LeaderAndIsr makes it leader or follower; followers fetch through
  :class:`~pylog.cluster.replica_fetcher.ReplicaFetcher` threads (one per leader broker);
  the leader answers their Fetches (:meth:`ReplicaManager.fetch_for_follower`, records as
  file regions: the server's zero-copy path), moves the high watermark, proposes ISR
  changes to the controller (AlterPartition) and completes acks=all produces once the
  high watermark passes them.  The broker core asks it (``Broker.replication``) whether a
  produce may append here, which leader epoch to stamp, and where consumer reads stop.
- **Configs in ZooKeeper**, watched and applied at once (as Kafka's config handlers):
  a topic's ``/config/topics/<t>`` becomes its local topic's configs and its replicas'
  ``min.insync.replicas``; replication throttles (:mod:`pylog.cluster.quota`) come from
  ``leader.replication.throttled.rate`` and ``follower.replication.throttled.rate`` in
  ``/config/brokers/<id>`` (else the cluster default's ``/config/brokers/<default>``)
  and each topic's ``*.replication.throttled.replicas``: the
  leader sends a throttled replica out of the ISR no records while its quota is
  exceeded, the follower leaves such a partition out of its Fetch.
- **Coordinators** (:class:`~pylog.cluster.coordinators.CoordinatorPartitions`): the
  group and transaction coordinators serve the groups and transactional ids of the
  ``__consumer_offsets`` / ``__transaction_state`` partitions this broker leads, loaded
  from their replicated logs when LeaderAndIsr makes it leader, dropped when it stops.
- **Metadata**: a :class:`~pylog.cluster.channel.MetadataCache` fed by UpdateMetadata
  (and by the newer leaders and ISRs of each LeaderAndIsr as it arrives, so a broker
  that answers NOT_LEADER_OR_FOLLOWER already names the new leader), which the
  cluster's Metadata, FindCoordinator and DescribeCluster answers come from.
- **Controlled shutdown**, in Kafka's order: :meth:`ClusterNode.leave_leadership` asks
  the controller to move leadership away (ControlledShutdown, retried until nothing
  remains or a deadline) and then waits, at most :data:`PEER_METADATA_WAIT_S`, until
  this broker's metadata and every other live broker's Metadata answer name the new
  leaders, while the server still answers clients (moved partitions with
  NOT_LEADER_OR_FOLLOWER), so a client that refreshes its metadata is sent to the new
  leader rather than back here; the server then closes its listener and connections,
  and :meth:`ClusterNode.stop` closes the controller and, last, the ZooKeeper session
  (the broker's deregistration).

Crash behaviour: besides the logs (leader epochs in their ``leader-epoch-checkpoint``),
each replica's high watermark goes to ``<data dir>/replication-offset-checkpoint``
(Kafka's file and format: version 0, the entry count, one ``topic partition offset``
line per partition, written atomically by :class:`~pylog.storage.checkpoint.CheckpointFile`)
every ``replica.high.watermark.checkpoint.interval.ms`` and when the broker stops.  A
restarted broker starts each partition's high watermark there (never past its log end
offset), so as a new leader it serves consumers what was committed before, not only
what its followers have fetched since.  A checkpoint at most one interval old is only
lower than the truth, which is safe.  A damaged file (cut short, garbage, a bad count)
is logged as an ERROR naming it and what is wrong, and ignored: every high watermark
starts at its log start offset and is learned again from the ISR, as before the file
existed; nothing in the logs is truncated for it.

Thread safety: each replica has one lock (:attr:`Replica.lock`) around every call into
its replication state machine; the server's loop thread, the replica fetcher threads and
the LeaderAndIsr thread all take it.  A leadership change (LeaderAndIsr, a resignation
on session expiry) also holds the partition's lock in the broker core, which every
append takes, so a leader append reads a leadership that stays true until it is done
(:meth:`ReplicaManager.append_epoch`; Kafka's leader-ISR lock).  Lock order: the
replica's lock, then the partition's, then the Log's.  Acks=all waiters and follower
long polls live on the loop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import threading
import time
from typing import Any, Callable

from pylog.cluster import replication
from pylog.cluster.channel import (LeaderAndIsrRequest, MetadataCache, StopReplicaRequest, UpdateMetadataRequest)
from pylog.cluster.coordination import BrokerRegistration, EndPoint
from pylog.cluster.coordinators import INTERNAL_TOPICS
from pylog.cluster.quota import DEFAULT_ENTITY, ReplicationQuota, effective_rate
from pylog.errors import (FencedLeaderEpochError, KafkaStorageError, NotControllerError, NotEnoughReplicasError,
                          NotLeaderError, PylogError, RequestTimedOutError, UnknownTopicOrPartitionError,
                          error_for_code)
from pylog.protocol.apis import ApiKey
from pylog.storage.checkpoint import CheckpointFile

__all__ = ["ClusterNode", "ReplicaManager", "Replica", "CoreReplicaLog"]

_log = logging.getLogger("pylog.cluster.node")

#: Kafka's znode of the last producer id block handed out, and its block size.
PRODUCER_ID_BLOCK_PATH = "/latest_producer_id_block"
PRODUCER_ID_BLOCK_SIZE = 1000
#: Kafka's file of the replicas' high watermarks, in the data directory.
HIGH_WATERMARK_CHECKPOINT = "replication-offset-checkpoint"
#: After a controlled shutdown, how long a stopping broker waits at most for the other
#: live brokers' metadata to name the new leaders of what it led (Kafka has no such wait:
#: its slower shutdown leaves the UpdateMetadata time to arrive).
PEER_METADATA_WAIT_S = 1.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class CoreReplicaLog:
    """:class:`pylog.cluster.replication.ReplicaLog` over one partition of the broker core.

    Leader appends do not come through here: producers append through the broker core
    (validation, idempotence, transactions), which stamps the leader epoch it gets from
    :meth:`ReplicaManager.leader_epoch`.  Follower appends keep the leader's offsets and
    epochs and replay the batches' producer state, so a follower that becomes leader
    knows every idempotent producer's sequence."""

    def __init__(self, broker: Any, topic: str, partition: int) -> None:
        self.broker = broker
        self.topic = topic
        self.partition = partition
        #: The partition's Log (UnknownTopicOrPartitionError now, not later); a
        #: partition keeps its Log object for its life, so it is looked up once.
        self.log = broker.partition_log(topic, partition)

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    @property
    def latest_epoch(self) -> int:
        return self.log.latest_epoch

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        return self.log.end_offset_for_epoch(epoch)

    def assign_epoch_start_offset(self, epoch: int, start_offset: int) -> None:
        self.log.assign_epoch(epoch, start_offset)

    def append_as_follower(self, records: Any) -> None:
        self.broker.append_as_follower(self.topic, self.partition, records)

    def truncate_to(self, offset: int) -> None:
        self.broker.truncate_partition(self.topic, self.partition, offset)

    def read(self, from_offset: int, max_bytes: int, max_offset: int | None = None) -> Any:
        rr = self.log.read(from_offset, max_bytes, max_offset=max_offset)
        if not rr.size:
            rr.release()
            return None
        return rr


def records_size(records: Any) -> int:
    """Bytes of a replica fetch's records (a log read's file region, or bytes)."""
    size = getattr(records, "size", None)
    return len(records) if size is None else int(size)


class Replica:
    """One partition replica on this broker: its state machine and its lock."""

    __slots__ = ("topic", "partition", "state", "lock", "log")

    def __init__(self, topic: str, partition: int, state: replication.Partition, log: CoreReplicaLog) -> None:
        self.topic = topic
        self.partition = partition
        self.state = state
        self.log = log
        self.lock = threading.Lock()


class _ProduceWaiter:
    __slots__ = ("replica", "append", "future", "timer")

    def __init__(self, replica: Replica, append: replication.AppendInfo, future: asyncio.Future) -> None:
        self.replica = replica
        self.append = append
        self.future = future
        self.timer: Any = None


class ReplicaManager:
    """The replicas of one broker (see the module docstring); ``Broker.replication``."""

    def __init__(self, node: "ClusterNode") -> None:
        self.node = node
        self.broker = node.broker
        self.broker_id = node.broker_id
        self.replicas: dict[tuple[str, int], Replica] = {}
        #: Wall clock in ms (a test's fake one drives the replication quota).
        self.clock: Callable[[], int] = _now_ms
        self._produce_waiters: list[_ProduceWaiter] = []
        self._pid_lock = threading.Lock()
        self._next_pid = self._pid_block_end = 0
        self._hw_file = CheckpointFile(os.path.join(self.broker.data_dir, HIGH_WATERMARK_CHECKPOINT))
        self._hw_lock = threading.Lock()
        #: High watermarks read at start, of partitions no LeaderAndIsr has named since.
        self._restart_hw = self._read_high_watermarks()
        self._hw_written_at = time.monotonic()

    # -- replication-offset-checkpoint --------------------------------------------------

    def _read_high_watermarks(self) -> dict[tuple[str, int], int]:
        try:
            return self._hw_file.read()
        except KafkaStorageError as exc:     # CorruptCheckpointError included
            _log.error("%s; ignored: every partition's high watermark starts at its log start offset and is "
                       "learned again from the ISR (the logs keep every record)", exc)
            return {}

    def restart_high_watermark(self, topic: str, partition: int, log_start_offset: int) -> int:
        """The high watermark a replica made after a restart starts from: the
        checkpoint's (the caller bounds it by the log end offset), else the log start
        offset.  Taken once: later replicas of the partition carry their own."""
        with self._hw_lock:
            hw = self._restart_hw.pop((topic, partition), None)
        return log_start_offset if hw is None else max(hw, log_start_offset)

    def checkpoint_high_watermarks(self) -> None:
        """Write every replica's high watermark to ``replication-offset-checkpoint``
        (with the checkpointed ones of local partitions no LeaderAndIsr named yet, so a
        restart before they are named loses nothing).  Blocking (an fsync): off the loop.
        Thread-safe; writes are serialised.

        Raises
        ------
        KafkaStorageError
            The file could not be written (the previous one stays).
        """
        with self._hw_lock:
            entries = {}
            for tp, r in list(self.replicas.items()):
                with r.lock:
                    entries[tp] = r.state.high_watermark
            for (topic, partition), hw in self._restart_hw.items():
                if (topic, partition) not in entries and self.broker.has_topic(topic) \
                        and partition < self.broker.num_partitions(topic):
                    entries[(topic, partition)] = hw
            self._hw_file.write(entries)
            self._hw_written_at = time.monotonic()

    def maybe_checkpoint_high_watermarks(self, interval_ms: int) -> bool:
        """(The node's tick.)  Hand a checkpoint to the replica thread when the last
        one is ``interval_ms`` old; True when it did."""
        if (time.monotonic() - self._hw_written_at) * 1000 < interval_ms:
            return False
        self._hw_written_at = time.monotonic()      # one in flight at a time
        self.node.replica_thread.submit(self._checkpoint_logged)
        return True

    def _checkpoint_logged(self) -> None:
        try:
            self.checkpoint_high_watermarks()
        except (KafkaStorageError, OSError, ValueError) as exc:
            _log.error("writing %s failed: %s; retried at the next interval", self._hw_file.path, exc)

    # -- the broker core's questions (any thread) ----------------------------------------

    def allocate_producer_id(self) -> int:
        """A producer id unique in the cluster: from a block this broker claimed in
        ``/latest_producer_id_block`` (Kafka's ZooKeeper-mode ProducerIdManager)."""
        with self._pid_lock:
            if self._next_pid >= self._pid_block_end:
                self._next_pid, self._pid_block_end = self.node.claim_producer_id_block()
            pid = self._next_pid
            self._next_pid += 1
            return pid

    def _local_only(self, topic: str, partition: int) -> bool:
        """A partition the cluster does not know (the group coordinator's local
        ``__consumer_offsets``, created by the broker core): served as on a single node."""
        return (topic, partition) not in self.replicas and (topic, partition) not in self.node.metadata.partitions

    def check_produce(self, topic: str, partition: int, acks: int) -> PylogError | None:
        r = self.replicas.get((topic, partition))
        if r is None and self._local_only(topic, partition):
            return self.broker.single_node_acks_error(topic, partition, acks)
        if r is None:
            return NotLeaderError(f"broker {self.broker_id} holds no replica of {topic}-{partition}")
        s = r.state
        if not s.is_leader:
            return NotLeaderError(f"broker {self.broker_id} is not the leader of {topic}-{partition} "
                                  f"(leader {s.leader_id}, epoch {s.leader_epoch})")
        if acks == -1 and len(s.isr) < s.min_insync_replicas:
            return NotEnoughReplicasError(f"{topic}-{partition}: the ISR {list(s.isr)} has fewer than "
                                          f"min.insync.replicas={s.min_insync_replicas} replicas")
        return None

    def leader_epoch(self, topic: str, partition: int) -> int:
        r = self.replicas.get((topic, partition))
        if r is None and self._local_only(topic, partition):
            return self.broker.topic_leader_epoch(topic)
        return 0 if r is None else max(r.state.leader_epoch, 0)

    def append_epoch(self, topic: str, partition: int) -> int:
        """The leader epoch a leader append stamps into its batches, asked under the
        partition's lock (:meth:`Broker.partition_lock`), which every leadership change
        here holds too, so the answer holds until the append is done (Kafka's Partition
        holds its leader-ISR lock over the check and the append alike).

        Raises
        ------
        NotLeaderError
            This replica no longer leads the partition (a LeaderAndIsr or a session
            expiry since the produce's :meth:`check_produce`).
        """
        r = self.replicas.get((topic, partition))
        if r is None and self._local_only(topic, partition):
            return self.broker.topic_leader_epoch(topic)
        if r is None or not r.state.is_leader:
            now = "no replica here" if r is None else f"leader {r.state.leader_id}, epoch {r.state.leader_epoch}"
            raise NotLeaderError(f"broker {self.broker_id} stopped leading {topic}-{partition} before the "
                                 f"append ({now}); nothing was appended")
        return r.state.leader_epoch

    def leadership_change(self, topic: str, partition: int) -> Any:
        """What a leadership change holds besides the replica's lock: the partition's
        lock in the broker core (see :meth:`append_epoch`), or nothing when the broker
        no longer has the partition (deleted: nothing appends to it)."""
        try:
            return self.broker.partition_lock(topic, partition)
        except UnknownTopicOrPartitionError:
            return contextlib.nullcontext()

    def check_fetch(self, topic: str, partition: int) -> PylogError | None:
        r = self.replicas.get((topic, partition))
        if r is None and self._local_only(topic, partition):
            return None
        if r is None or not r.state.is_leader:
            return NotLeaderError(f"broker {self.broker_id} does not lead {topic}-{partition}")
        return None

    def high_watermark(self, topic: str, partition: int) -> int:
        r = self.replicas.get((topic, partition))
        if r is None and self._local_only(topic, partition):
            return self.broker.partition_log(topic, partition).log_end_offset
        return 0 if r is None else r.state.high_watermark

    def current_leader_epoch(self, topic: str, partition: int) -> int | None:
        r = self.replicas.get((topic, partition))
        return None if r is None else r.state.leader_epoch

    # -- LeaderAndIsr / StopReplica (the node's replica thread) -----------------------------

    def _ensure_local(self, topic: str, partition: int) -> None:
        broker = self.broker
        assignment = self.node.coordination.get_topic_assignment(topic)
        count = max(partition + 1, len(assignment.partitions) if assignment is not None else 0)
        if not broker.has_topic(topic):
            # The topic's config overrides (min.insync.replicas, ...) as ZooKeeper holds them.
            broker.create_topic(topic, count, config=self.node.coordination.get_entity_config("topics", topic))
        elif broker.num_partitions(topic) < count:
            broker.create_partitions(topic, count)
        self.node.server.state.topic_changed(topic)

    def _min_insync(self, topic: str) -> int:
        return int(self.broker.topic_config(topic)["min.insync.replicas"])

    def become(self, request: LeaderAndIsrRequest) -> dict[tuple[str, int], PylogError | None]:
        """Apply a LeaderAndIsr: each partition's replica leads or follows.  Followed
        partitions go to their leaders' fetchers at once (all of them in one step); a
        stopping broker (a controlled shutdown moved its leaderships away) follows
        nobody: it would fetch once, be proposed to the ISR the controller refuses it,
        and hold the new leader's high watermark meanwhile.  Fetches parked on a
        leadership given up here are answered at once (NOT_LEADER_OR_FOLLOWER)."""
        out: dict[tuple[str, int], PylogError | None] = {}
        now = _now_ms()
        follow: list[tuple[tuple[str, int], int]] = []
        lost: list[Replica] = []
        for s in request.partition_states:
            tp = (s.topic, s.partition)
            if self.broker_id not in s.replicas:
                continue
            try:
                r = self.replicas.get(tp)
                if r is None:
                    self._ensure_local(*tp)
                    log = CoreReplicaLog(self.broker, *tp)
                    state = replication.Partition(
                        self.broker_id, log, high_watermark=self.restart_high_watermark(*tp, log.log_start_offset),
                        replica_lag_time_max_ms=self.node.config.replica_lag_time_max_ms,
                        min_insync_replicas=self._min_insync(s.topic), broker_epoch=self.node.broker_epoch)
                    r = Replica(s.topic, s.partition, state, log)
                    self.replicas[tp] = r
                    self.node.watch_topic_configs(s.topic)
                lai = replication.LeaderAndIsr(s.leader, s.leader_epoch, tuple(s.isr), s.zk_version)
                with r.lock, self.leadership_change(*tp):
                    r.state.broker_epoch = self.node.broker_epoch
                    was_leader = r.state.is_leader
                    if s.leader == self.broker_id:
                        changed = r.state.become_leader(lai, tuple(s.replicas), now)
                    else:
                        changed = r.state.become_follower(lai, tuple(s.replicas))
                if changed:
                    _log.info("%s-%d: %s", s.topic, s.partition, r.state)
                if was_leader and s.leader != self.broker_id:
                    lost.append(r)
                if s.leader == self.broker_id or s.leader < 0 or self.node.stopping:
                    self.node.fetchers.remove_partition(tp)
                else:
                    follow.append((tp, s.leader))
                if s.topic in INTERNAL_TOPICS:
                    self.node.coordinators.leadership_changed(s.topic, s.partition, s.leader == self.broker_id,
                                                              s.leader_epoch)
                out[tp] = None
            except FencedLeaderEpochError as exc:
                out[tp] = exc
            except PylogError as exc:
                _log.warning("LeaderAndIsr for %s-%d failed: %s", s.topic, s.partition, exc)
                out[tp] = exc
        self.node.fetchers.add_partitions(follow, request.live_leaders)
        self.leaderships_lost(lost)
        self.node.call_in_loop(self.check_waiters)
        return out

    def leaderships_lost(self, replicas: list[Replica]) -> None:
        """These replicas stopped leading here: wake the fetches parked on them (a
        follower's long poll, a consumer's), which answer NOT_LEADER_OR_FOLLOWER for them
        now rather than at their ``max_wait_ms`` (Kafka completes its delayed fetches on
        a leadership change too).  Any thread."""
        for r in replicas:
            self.broker.notify_high_watermark(r.topic, r.partition, r.state.high_watermark)

    def stop(self, request: StopReplicaRequest) -> dict[tuple[str, int], PylogError | None]:
        out: dict[tuple[str, int], PylogError | None] = {}
        deleted_topics = set()
        lost = []
        for p in request.partitions:
            tp = (p.topic, p.partition)
            self.node.fetchers.remove_partition(tp)
            # Produce and fetch now answer NOT_LEADER_OR_FOLLOWER; acks=all waiters fail.
            r = self.replicas.pop(tp, None)
            if r is not None and r.state.is_leader:
                lost.append(r)
            if p.topic in INTERNAL_TOPICS:
                self.node.coordinators.leadership_changed(p.topic, p.partition, False)
            if p.delete:
                deleted_topics.add(p.topic)
            out[tp] = None
        for topic in deleted_topics:
            if not any(t == topic for t, _ in self.replicas) and self.broker.has_topic(topic):
                try:
                    self.broker.delete_topic(topic)
                    self.node.server.state.topic_changed(topic)
                except UnknownTopicOrPartitionError:
                    pass
        self.leaderships_lost(lost)
        self.node.call_in_loop(self.check_waiters)
        return out

    # -- the leader's side of replication (loop thread) -----------------------------------

    def fetch_for_follower(self, topic: str, partition: int, request: replication.FetchRequest
                           ) -> replication.FetchResponse:
        r = self.replicas.get((topic, partition))
        if r is None:
            return replication.FetchResponse(error=NotLeaderError(
                f"broker {self.broker_id} holds no replica of {topic}-{partition}"))
        now = self.clock()
        quota = self.node.leader_quota
        throttled = quota.is_throttled(topic, partition)
        with r.lock:
            hw = r.state.high_watermark
            response = r.state.fetch_for_follower(request, now, throttled=throttled and quota.should_throttle(
                topic, partition, request.replica_id in r.state.isr, now))
            alter = r.state.poll_alter_partition()
            moved = r.state.high_watermark != hw
        if throttled and response.records is not None:
            quota.record(records_size(response.records), now)
        if alter is not None:
            self.node.send_alter_partition(r, alter)
        if moved:
            self.high_watermark_moved(r)
        return response

    def after_leader_append(self, topic: str, partition: int) -> None:
        """A produce appended: with an ISR of one the high watermark moves at once."""
        r = self.replicas.get((topic, partition))
        if r is None:
            return
        with r.lock:
            moved = r.state.maybe_increment_high_watermark()
        if moved:
            self.high_watermark_moved(r)

    def high_watermark_moved(self, r: Replica) -> None:
        self.broker.notify_high_watermark(r.topic, r.partition, r.state.high_watermark)
        self.node.call_in_loop(self.check_waiters)

    def wait_for_acks(self, topic: str, partition: int, append: replication.AppendInfo,
                      timeout_ms: int) -> asyncio.Future:
        """A future of the acks=all outcome of ``append`` (None, or the PylogError)."""
        loop = self.node.loop
        fut = loop.create_future()
        r = self.replicas.get((topic, partition))
        if r is None:
            fut.set_result(NotLeaderError(f"{topic}-{partition} is no longer led here"))
            return fut
        w = _ProduceWaiter(r, append, fut)
        self._produce_waiters.append(w)
        w.timer = loop.call_later(timeout_ms / 1000, self._expire, w)
        self.check_waiters()
        return fut

    def _expire(self, w: _ProduceWaiter) -> None:
        if w in self._produce_waiters:
            self._produce_waiters.remove(w)
            if not w.future.done():
                w.future.set_result(RequestTimedOutError(
                    f"the ISR did not replicate offsets up to {w.append.last_offset} in time"))

    def check_waiters(self) -> None:
        """Complete acks=all produces whose batches the high watermark passed (loop thread)."""
        keep = []
        for w in self._produce_waiters:
            r = w.replica
            try:
                with r.lock:
                    if self.replicas.get((r.topic, r.partition)) is not r:
                        raise NotLeaderError(f"{r.topic}-{r.partition} is no longer a replica here")
                    done = r.state.check_enough_replicas_reach_offset(w.append)
            except PylogError as exc:
                done, result = True, exc
            else:
                result = None
            if done:
                if w.timer is not None:
                    w.timer.cancel()
                if not w.future.done():
                    w.future.set_result(result)
            else:
                keep.append(w)
        self._produce_waiters = keep

    def shrink_isrs(self) -> None:
        now = _now_ms()
        for r in list(self.replicas.values()):
            with r.lock:
                r.state.maybe_shrink_isr(now)
                alter = r.state.poll_alter_partition()
            if alter is not None:
                self.node.send_alter_partition(r, alter)

    def fail_all_waiters(self) -> None:
        for w in self._produce_waiters:
            if w.timer is not None:
                w.timer.cancel()
            if not w.future.done():
                w.future.set_result(NotLeaderError("the broker is shutting down"))
        self._produce_waiters = []


class ClusterNode:
    """A broker's membership of a ZooKeeper-coordinated cluster (module docstring).

    Built by the server when ``zookeeper.connect`` is set; :meth:`start` after the
    listener is bound (the registration carries the advertised address), :meth:`stop`
    before the connections close.
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.config = server.config
        self.broker = server.broker
        self.broker_id = self.config.node_id
        self.loop: asyncio.AbstractEventLoop = server.loop
        self.metadata = MetadataCache()
        self.metadata_changed = threading.Condition()
        self.coordination: Any = None
        self.controller: Any = None
        self.channel: Any = None
        self.broker_epoch = -1
        self.replica_manager = ReplicaManager(self)
        from pylog.cluster.coordinators import CoordinatorPartitions
        #: The group and transaction coordinators' partitions (pylog.cluster.coordinators).
        self.coordinators = CoordinatorPartitions(self)
        from pylog.cluster.replica_fetcher import FetcherManager
        self.fetchers = FetcherManager(self)
        #: LeaderAndIsr and StopReplica run here, one at a time, in arrival order.
        self.replica_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pylog-replica")
        #: The controller's ZooKeeper work.
        self.controller_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pylog-controller")
        self._controller_client: Any = None
        self._controller_client_for: tuple[int, str, int] | None = None
        self._client_lock = threading.Lock()
        self._stopping = False
        self._left_leadership = False
        #: Replication throttling (pylog.cluster.quota): what this broker sends as a
        #: leader and fetches as a follower for throttled replicas, from its dynamic
        #: broker config and its topics' configs in ZooKeeper (watched).
        self.leader_quota = ReplicationQuota("leader")
        self.follower_quota = ReplicationQuota("follower")
        self._config_watches: dict[tuple[str, str], Any] = {}
        self._config_lock = threading.Lock()
        #: This broker's and the cluster default's dynamic configs in ZooKeeper, as
        #: last seen by their watches (entity name -> config).
        self._broker_layers: dict[str, dict[str, str]] = {}
        self._rates_lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` began: no new work is handed to the loop or the
        replica thread (they are about to close)."""
        return self._stopping

    # -- lifecycle ---------------------------------------------------------------------

    def registration(self) -> BrokerRegistration:
        host, port = self.server.advertised
        return BrokerRegistration(self.broker_id, (EndPoint("PLAINTEXT", host, port),), self.config.broker_rack,
                                  timestamp_ms=_now_ms())

    def start(self) -> None:
        """Connect to ZooKeeper, register, and start competing for the controller
        (blocking: call it off the loop)."""
        from pylog.cluster import zookeeper
        from pylog.cluster.controller import Controller, ControllerConfig
        from pylog.cluster.wire_channel import WireChannel

        self.broker.replication = self.replica_manager
        self.coordinators.start()
        self.coordination = zookeeper.connect(self.config.zookeeper_connect,
                                              session_timeout_ms=self.config.zookeeper_session_timeout_ms)
        # One cluster id for every broker: the first to start proposes its own.
        self.server.state.cluster_id = self.coordination.get_or_create_cluster_id(self.broker.cluster_id)
        self.broker_epoch = self._register_first()
        for entity in (DEFAULT_ENTITY, str(self.broker_id)):
            self._watch_config("brokers", entity, lambda config, e=entity: self._broker_config_changed(e, config))
        self.coordination.add_session_listener(on_session_expired=self._on_session_expired,
                                               on_session_reestablished=self._reregister)
        self.channel = WireChannel(self.broker_id)
        ctl = Controller(self.coordination, self.broker_id, self.channel, ControllerConfig(
            unclean_leader_election_enable=self.config.unclean_leader_election_enable,
            auto_leader_rebalance_enable=self.config.auto_leader_rebalance_enable,
            leader_imbalance_check_interval_seconds=self.config.leader_imbalance_check_interval_seconds,
            leader_imbalance_per_broker_percentage=self.config.leader_imbalance_per_broker_percentage,
            delete_topic_enable=self.config.delete_topic_enable),
            wakeup=lambda: self.controller_thread.submit(self._process_controller_events))
        self.controller = ctl
        self.channel.on_response = ctl.handle_response
        ctl.start()
        _log.info("broker %d registered in ZooKeeper %s (broker epoch %d)", self.broker_id,
                  self.config.zookeeper_connect, self.broker_epoch)

    def _register_first(self) -> int:
        """Register, waiting out this broker's previous session: a broker killed and
        started again within ``zookeeper.session.timeout.ms`` finds its old ephemeral
        registration still there until ZooKeeper expires that session (a watch on the
        znode says when it is gone).  Another live broker with this id is still an error
        after one session timeout."""
        from pylog.cluster.coordination import NodeExistsError
        deadline = time.monotonic() + self.config.zookeeper_session_timeout_ms / 1000 + 2.0
        gone = threading.Event()
        watch = None
        try:
            while True:
                try:
                    return self.coordination.register_broker(self.registration())
                except NodeExistsError:
                    if time.monotonic() > deadline:
                        raise
                    if watch is None:
                        _log.warning("broker %d: a previous session still holds its registration; waiting for "
                                     "ZooKeeper to expire it", self.broker_id)
                        watch = self.coordination.watch_broker(self.broker_id, lambda reg: reg is None and gone.set())
                gone.wait(max(0.0, min(1.0, deadline - time.monotonic())))
                gone.clear()
        finally:
            if watch is not None:
                watch.cancel()

    # -- dynamic configs: replication throttles --------------------------------------

    def _watch_config(self, entity_type: str, name: str, callback: Callable[[dict], None]) -> None:
        with self._config_lock:
            if self._stopping or (entity_type, name) in self._config_watches:
                return
            self._config_watches[(entity_type, name)] = None
        watch = self.coordination.watch_entity_config(entity_type, name, callback)
        with self._config_lock:
            self._config_watches[(entity_type, name)] = watch

    def _broker_config_changed(self, entity: str, config: dict) -> None:
        """/config/brokers/<entity> changed (this broker's or ``<default>``): the rates in
        force are this broker's own values, else the cluster default's."""
        from pylog.cluster.controller import FOLLOWER_REPLICATION_THROTTLED_RATE, LEADER_REPLICATION_THROTTLED_RATE
        with self._rates_lock:
            self._broker_layers[entity] = dict(config)
            mine = self._broker_layers.get(str(self.broker_id), {})
            default = self._broker_layers.get(DEFAULT_ENTITY, {})
            for quota, key in ((self.leader_quota, LEADER_REPLICATION_THROTTLED_RATE),
                               (self.follower_quota, FOLLOWER_REPLICATION_THROTTLED_RATE)):
                value = effective_rate(key, mine, default)
                try:
                    quota.set_rate_config(value)
                except PylogError as exc:
                    _log.error("broker %d: %s=%r ignored: %s", self.broker_id, key, value, exc)

    def watch_topic_configs(self, topic: str) -> None:
        """Apply ``topic``'s configs in ZooKeeper (``/config/topics/<t>``) now and
        whenever they change: the replication throttles, the local topic's configs and
        the replicas' ``min.insync.replicas`` (once per topic; any thread but kazoo's)."""
        if self.coordination is not None:
            self._watch_config("topics", topic, lambda config: self._topic_config_changed(topic, config))

    def _topic_config_changed(self, topic: str, config: dict) -> None:
        from pylog.cluster.controller import (FOLLOWER_REPLICATION_THROTTLED_REPLICAS,
                                              LEADER_REPLICATION_THROTTLED_REPLICAS)
        for quota, key in ((self.leader_quota, LEADER_REPLICATION_THROTTLED_REPLICAS),
                           (self.follower_quota, FOLLOWER_REPLICATION_THROTTLED_REPLICAS)):
            try:
                quota.apply_topic_config(topic, config, key, self.broker_id)
            except PylogError as exc:
                _log.error("topic %s: %s=%r ignored: %s", topic, key, config.get(key), exc)
        if not self._stopping:
            try:
                # Off kazoo's thread, in order with LeaderAndIsr.
                self.replica_thread.submit(self._apply_topic_config, topic, config)
            except RuntimeError:    # the broker is stopping
                pass

    def _apply_topic_config(self, topic: str, config: dict) -> None:
        """(The replica thread.)  The topic's configs in ZooKeeper are this broker's too
        (Kafka's TopicConfigHandler): its local topic takes them (segment, retention,
        cleanup settings...) and its replicas their ``min.insync.replicas``.  A config
        this broker refuses is logged and the topic keeps its previous ones."""
        from pylog.broker.topic_config import normalize_all
        broker = self.broker
        if not broker.has_topic(topic):
            return
        try:
            if dict(broker.topic_config(topic).overrides) != normalize_all(config):
                broker.alter_configs(topic, config)
                _log.info("topic %s: configs from ZooKeeper applied: %s", topic,
                          ", ".join(f"{k}={v}" for k, v in sorted(config.items())) or "(defaults)")
            min_insync = int(broker.topic_config(topic)["min.insync.replicas"])
        except PylogError as exc:
            _log.error("topic %s: the configs in ZooKeeper (%s) are refused here: %s", topic, config, exc)
            return
        for (t, _p), r in list(self.replica_manager.replicas.items()):
            if t == topic:
                with r.lock:
                    r.state.min_insync_replicas = min_insync
        self.server.state.topic_changed(topic)

    def _process_controller_events(self) -> None:
        try:
            self.controller.process_events()
        except Exception:  # noqa: BLE001 - the controller thread must survive a bug
            _log.exception("controller event processing failed")

    def _on_session_expired(self) -> None:
        # On kazoo's callback thread, or the store's timer thread when the broker is cut
        # off (pylog.cluster.zookeeper.KazooZNodeStore): never block there.  The replica thread runs it in
        # order with LeaderAndIsr, so the state of the re-registration comes after it.
        self.replica_thread.submit(self._resign_leaderships)

    def _resign_leaderships(self) -> None:
        """The session expired: the controller saw this broker die and elects other
        leaders, so stop leading every partition now rather than when its LeaderAndIsr
        arrives (a zombie leader would refuse nothing meanwhile)."""
        resigned = []
        for r in list(self.replica_manager.replicas.values()):
            with r.lock, self.replica_manager.leadership_change(r.topic, r.partition):
                if r.state.resign():
                    resigned.append(r)
            if r.topic in INTERNAL_TOPICS:
                # Its groups / transactional ids too: NOT_COORDINATOR until a LeaderAndIsr.
                self.coordinators.leadership_changed(r.topic, r.partition, False)
        if resigned:
            _log.warning("broker %d: ZooKeeper session expired; no longer leading %s", self.broker_id,
                         ", ".join(f"{r.topic}-{r.partition}" for r in resigned))
        self.replica_manager.leaderships_lost(resigned)
        self.call_in_loop(self.replica_manager.check_waiters)

    def _reregister(self) -> None:
        """(kazoo's callback thread, on a new session.)  Register again.  ZooKeeper may be
        out of reach again just after the session opened: then a thread of its own retries
        (backing off up to 1 s) until the registration is made, the broker stops, or the
        id is refused for good (another live broker holds it).  Without the retry the
        broker would stay alive but unregistered, out of every ISR, until it restarts:
        the session survives a short disconnection, so no new session comes to retry."""
        if not self._try_reregister():
            threading.Thread(target=self._reregister_until_done, name="pylog-zk-reregister",
                             daemon=True).start()

    def _try_reregister(self) -> bool:
        """One registration attempt; False when it should be tried again."""
        try:
            epoch = self.coordination.register_broker(self.registration())
        except PylogError as exc:
            if exc.retriable and not self._stopping:
                _log.warning("broker %d could not register again yet (%s); retrying", self.broker_id, exc)
                return False
            _log.error("broker %d could not register again: %s", self.broker_id, exc)
            return True
        self.broker_epoch = epoch
        _log.info("broker %d registered again after a session expiry (broker epoch %d)", self.broker_id, epoch)
        return True

    def _reregister_until_done(self) -> None:
        delay = 0.05
        while not self._stopping:
            time.sleep(delay)
            if self._try_reregister():
                return
            delay = min(delay * 2, 1.0)

    def tick(self) -> None:
        """Periodic work on the loop: the ISR-shrink check; the controller's timers."""
        self.replica_manager.shrink_isrs()
        if not self._stopping:
            self.replica_manager.maybe_checkpoint_high_watermarks(
                self.config.replica_high_watermark_checkpoint_interval_ms)
        if self.controller is not None and self.controller.is_active:
            self.controller_thread.submit(self._controller_tick)

    def _controller_tick(self) -> None:
        try:
            self.controller.tick(_now_ms())
        except PylogError as exc:
            _log.info("controller tick: %s", exc)

    def leave_leadership(self, timeout: float = 30.0) -> None:
        """The first step of a stop (blocking: call it off the loop, while the server
        still answers clients): the controlled shutdown, then a wait (at most
        :data:`PEER_METADATA_WAIT_S`) until the metadata of this broker and of every
        other live broker name new leaders for the partitions this broker led."""
        self._stopping = True
        if self.coordination is None or self._left_leadership:
            return
        self._left_leadership = True
        led = {tp for tp, s in list(self.metadata.partitions.items()) if s.leader == self.broker_id and len(s.replicas) > 1}
        if self.controlled_shutdown(timeout) and led:
            t0 = time.monotonic()
            known = self._wait_leaders_moved(led, PEER_METADATA_WAIT_S)
            _log.info("controlled shutdown: the new leaders of %d partition(s) %s in %.0f ms", len(led),
                      "are known to every live broker" if known else "are not yet known everywhere; stopping anyway",
                      (time.monotonic() - t0) * 1000)

    def _wait_leaders_moved(self, moved: set[tuple[str, int]], bound: float) -> bool:
        """Poll until neither this broker's metadata nor any other live broker's Metadata
        answer names this broker the leader of a partition in ``moved``; False after
        ``bound`` seconds.  A peer that cannot be reached is not waited for."""
        from pylog.client.kafka.network import NetworkClient
        from pylog.protocol import messages as m
        M: Any = m.MetadataRequest
        body = M(topics=[M.MetadataRequestTopic(name=t) for t in sorted({t for t, _ in moved})],
                 allow_auto_topic_creation=False)
        peers = {b.broker_id: b.endpoints[0] for b in list(self.metadata.brokers.values())
                 if b.broker_id != self.broker_id and b.endpoints}
        clients: dict[int, Any] = {}
        deadline = time.monotonic() + bound

        def still_here(topics: Any) -> bool:
            return any(p.leader_id == self.broker_id for t in topics for p in t.partitions
                       if (t.name, p.partition_index) in moved)

        try:
            while True:
                asked = {}
                for bid, ep in peers.items():
                    if bid not in clients:
                        clients[bid] = NetworkClient(f"{ep.host}:{ep.port}", reconnect_backoff_ms=10,
                                                     client_id=f"pylog-broker-{self.broker_id}-shutdown")
                    asked[bid] = clients[bid].send(-1, ApiKey.METADATA, body, version=9,
                                                   timeout_ms=max(10, int((deadline - time.monotonic()) * 1000)))
                for bid, fut in asked.items():
                    try:
                        resp = fut.result(timeout=max(0.01, deadline - time.monotonic()))
                    except concurrent.futures.TimeoutError:
                        continue
                    except (PylogError, OSError) as exc:
                        _log.info("controlled shutdown: broker %d not asked for its metadata: %s", bid, exc)
                        del peers[bid]
                        continue
                    if not still_here(resp.topics):
                        del peers[bid]
                mine = [s for tp, s in list(self.metadata.partitions.items()) if tp in moved and s.leader == self.broker_id]
                if not peers and not mine:
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.01)
        finally:
            for c in clients.values():
                c.close(timeout=0)

    def stop(self, timeout: float = 30.0) -> None:
        """Leave the cluster (blocking: call it off the loop): :meth:`leave_leadership`
        if the server has not yet, then the replica fetchers, the controller, the
        high-watermark checkpoint, and last the ZooKeeper session."""
        self.leave_leadership(timeout)
        with self._config_lock:
            watches = [w for w in self._config_watches.values() if w is not None]
            self._config_watches.clear()
        for w in watches:
            w.cancel()
        self.fetchers.close()
        if self.controller is not None:
            self.controller_thread.submit(self.controller.close).result()
        self.controller_thread.shutdown(wait=True)
        self.replica_thread.shutdown(wait=True)
        try:
            # The high watermarks as the broker leaves (Kafka's checkpoint at shutdown).
            self.replica_manager.checkpoint_high_watermarks()
        except (PylogError, OSError, ValueError) as exc:
            _log.error("writing the high watermarks at shutdown failed: %s", exc)
        self.coordinators.close()
        if self.channel is not None:
            self.channel.close()
        with self._client_lock:
            if self._controller_client is not None:
                self._controller_client.close(timeout=1.0)
                self._controller_client = None
        if self.coordination is not None:
            self.coordination.close()
        self.broker.replication = None

    def controlled_shutdown(self, timeout: float) -> bool:
        """Ask the controller to move every leadership off this broker (Kafka's
        ControlledShutdown, retried until it answers with nothing remaining)."""
        from pylog.protocol import messages as m
        deadline = time.monotonic() + timeout
        answered = 0
        # Kafka's controlled.shutdown.max.retries (3): partitions the controller cannot move
        # (no other live ISR member) stay led here; the broker then stops anyway.
        while time.monotonic() < deadline and answered < 3:
            try:
                fut = self.send_to_controller(ApiKey.CONTROLLED_SHUTDOWN, m.ControlledShutdownRequest(
                    broker_id=self.broker_id, broker_epoch=self.broker_epoch))
                resp = fut.result(timeout=max(0.1, deadline - time.monotonic()))
            except (PylogError, concurrent.futures.TimeoutError) as exc:
                _log.info("controlled shutdown: %s; retrying", exc)
                self._wait_metadata(0.5)
                continue
            if resp.error_code == 0 and not resp.remaining_partitions:
                _log.info("controlled shutdown of broker %d done: it leads no partition", self.broker_id)
                return True
            if resp.error_code == 0:
                answered += 1
                _log.info("controlled shutdown: broker %d still leads %d partition(s)", self.broker_id,
                          len(resp.remaining_partitions))
            self._wait_metadata(0.5)
        _log.warning("controlled shutdown of broker %d did not finish; stopping anyway", self.broker_id)
        return False

    def _wait_metadata(self, seconds: float) -> None:
        with self.metadata_changed:
            self.metadata_changed.wait(seconds)

    def claim_producer_id_block(self) -> tuple[int, int]:
        """Claim the next PRODUCER_ID_BLOCK_SIZE producer ids: a conditional update of
        ``/latest_producer_id_block`` (JSON ``{"version": 1, "broker": id, "block_start":
        first, "block_end": last}``, Kafka's layout), retried when another broker won."""
        from pylog.cluster.coordination import BadVersionError, NodeExistsError
        store = self.coordination.store
        while True:
            got = store.get(PRODUCER_ID_BLOCK_PATH)
            if got is None:
                start = 0
            else:
                start = int(json.loads(got[0])["block_end"]) + 1
            data = json.dumps({"version": 1, "broker": self.broker_id, "block_start": str(start),
                               "block_end": str(start + PRODUCER_ID_BLOCK_SIZE - 1)}).encode()
            try:
                if got is None:
                    store.create(PRODUCER_ID_BLOCK_PATH, data)
                else:
                    store.set(PRODUCER_ID_BLOCK_PATH, data, version=got[1].version)
            except (BadVersionError, NodeExistsError):
                continue
            return start, start + PRODUCER_ID_BLOCK_SIZE

    # -- talking to the controller -------------------------------------------------------

    def send_to_controller(self, api_key: int, body: Any, version: int | None = None) -> concurrent.futures.Future:
        """Send to the active controller, as the latest UpdateMetadata (or ZooKeeper) names it."""
        from pylog.client.kafka.network import NetworkClient
        controller_id = self.metadata.controller_id
        if controller_id is None or controller_id not in self.metadata.brokers:
            controller_id = self.coordination.get_controller()
        if controller_id is None:
            raise NotControllerError("no controller is elected yet")
        broker = self.metadata.brokers.get(controller_id)
        if broker is None:
            reg = self.coordination.get_broker(controller_id)
            if reg is None:
                raise NotControllerError(f"controller {controller_id} is not registered")
            ep = reg.endpoints[0]
        else:
            ep = broker.endpoints[0]
        key = (controller_id, ep.host, ep.port)
        with self._client_lock:
            if self._controller_client_for != key:
                if self._controller_client is not None:
                    self._controller_client.close(timeout=0)
                self._controller_client = NetworkClient(f"{ep.host}:{ep.port}",
                                                        client_id=f"pylog-broker-{self.broker_id}-controller")
                self._controller_client_for = key
            client = self._controller_client
        node = controller_id if client.cluster.node(controller_id) is not None else -1
        return client.send(node, api_key, body, version=version, timeout_ms=10_000)

    def send_alter_partition(self, r: Replica, alter: replication.AlterPartition, attempt: int = 0) -> None:
        """Propose an ISR change to the controller; its answer goes back to the replica.
        A request that may have reached the controller but got no answer (the connection
        broke, it timed out) is sent again as it was, backing off up to 1 s, until an
        answer comes or the proposal is no longer pending: the controller may have
        stored it, and only its answer (to the retry: the stored state) tells this
        leader its new partition epoch and ISR.  Proposing anew instead could leave the
        leader's ISR different from the stored one for good (a shrink stored, its
        answer lost, the followers caught up again: nothing to propose)."""
        from pylog.protocol import messages as m
        M: Any = m.AlterPartitionRequest
        body = M(broker_id=self.broker_id, broker_epoch=self.broker_epoch, topics=[M.TopicData(
            topic_name=r.topic, partitions=[M.PartitionData(
                partition_index=r.partition, leader_epoch=alter.leader_epoch, new_isr=list(alter.new_isr),
                partition_epoch=alter.partition_epoch)])])
        try:
            # v1: topics by name, ISR members by id (v2 names topics by id, v3 adds the
            # members' broker epochs, KIP-903).
            fut = self.send_to_controller(ApiKey.ALTER_PARTITION, body, version=1)
        except PylogError as exc:
            self._alter_done(r, alter, None, exc)
            return
        fut.add_done_callback(lambda f: self._on_alter_partition(r, alter, f, attempt))

    def _on_alter_partition(self, r: Replica, alter: replication.AlterPartition, f: Any, attempt: int = 0) -> None:
        exc = f.exception()
        if exc is not None:
            error = exc if isinstance(exc, PylogError) else PylogError(str(exc))
            if error.retriable and not self._stopping:
                with r.lock:
                    pending = r.state.pending_alter_partition is alter
                if pending:
                    _log.info("AlterPartition of %s-%d to ISR %s: %s; sending it again", r.topic, r.partition,
                              list(alter.new_isr), error)
                    timer = threading.Timer(min(0.05 * 2 ** attempt, 1.0), self.send_alter_partition,
                                            (r, alter, attempt + 1))
                    timer.daemon = True
                    timer.start()
                    return
            self._alter_done(r, alter, None, error)
            return
        resp = f.result()
        if resp.error_code:
            self._alter_done(r, alter, None, error_for_code(resp.error_code, None))
            return
        for t in resp.topics:
            for p in t.partitions:
                if p.error_code:
                    self._alter_done(r, alter, None, error_for_code(p.error_code, None))
                else:
                    self._alter_done(r, alter, replication.LeaderAndIsr(p.leader_id, p.leader_epoch, tuple(p.isr),
                                                                        p.partition_epoch), None)

    def _alter_done(self, r: Replica, alter: replication.AlterPartition, state: Any, error: Any) -> None:
        if error is not None:
            _log.info("AlterPartition of %s-%d to ISR %s: %s", r.topic, r.partition, list(alter.new_isr), error)
        with r.lock:
            moved = r.state.alter_partition_response(alter, state, error)
            if error is not None and not isinstance(error, FencedLeaderEpochError):
                # Not attempted (no controller, a network error): propose it again.
                moved = r.state.abandon_alter_partition(alter) or moved
        if moved:
            self.replica_manager.high_watermark_moved(r)
        else:
            self.call_in_loop(self.replica_manager.check_waiters)

    # -- controller requests arriving here ---------------------------------------------

    def update_metadata(self, request: UpdateMetadataRequest) -> None:
        with self.metadata_changed:
            self.metadata.update(request)
            self.metadata_changed.notify_all()
        topics = {s.topic for s in request.partition_states}
        self.coordinators.metadata_updated(topics)
        for t in topics | {t for t, _ in request.deleted}:
            self.server.state.topic_changed(t)

    def leader_and_isr_metadata(self, request: LeaderAndIsrRequest) -> bool:
        """(The loop thread, as a LeaderAndIsr arrives.)  Its leaders and ISRs go into the
        metadata cache at once
        (:meth:`~pylog.cluster.channel.MetadataCache.apply_leader_and_isr`); returns
        whether anything changed."""
        with self.metadata_changed:
            changed = self.metadata.apply_leader_and_isr(request)
            if changed:
                self.metadata_changed.notify_all()
        return changed

    def call_in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._stopping and self.loop.is_closed():
            return
        self.server.call_in_loop(fn, *args)
