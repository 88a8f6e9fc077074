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
  ``partitions`` is the internal topic's partition count in ZooKeeper
  (:meth:`CoordinatorPartitions.partition_count`), the same for every broker, never a
  broker's own ``offsets.topic.num.partitions`` / ``transaction.state.log.num.partitions``
  (those only size the topic when a broker creates it): brokers configured differently
  still hash a group or transactional id to the same partition, so the same coordinator.
- **Moving with leadership** (:meth:`CoordinatorPartitions.leadership_changed`, called by
  LeaderAndIsr and StopReplica): a broker that becomes the leader of an offsets
  partition answers COORDINATOR_LOAD_IN_PROGRESS for its groups at once, then replays
  the partition's log (up to its end, as Kafka's loader does) on the loader thread and
  serves them; one that stops leading it drops them, and their requests get
  NOT_COORDINATOR.  Loads and unloads run in the order the leadership changed.
- **Every group write is followed to the high watermark**: the group coordinator's
  store is a :class:`ReplicatedOffsetStore`, whose appends return a replication handle
  (:meth:`CoordinatorPartitions.follow_append`); the coordinator acts on a write only
  once the ISR has it, whatever made it (a request or a timer: session expiry,
  rebalance completion, offset expiration): expired offsets go once their tombstones
  are replicated, an assignment the ISR did not take sends the group back to
  rebalancing, a commit it did not take is undone.  A write that failed because
  leadership moved makes the coordinator resign the partition at once (its groups get
  NOT_COORDINATOR) instead of serving from state the next leader does not have.
- **Commits are replicated before they are answered**: the coordinator appends to the
  leader's log; the clustered OffsetCommit (and SyncGroup) handler answers once the
  high watermark passed that append (:meth:`CoordinatorPartitions.wait_replicated`,
  Kafka's acks=-1 append of ``offsets.commit.required.acks``), and a commit the ISR did
  not take in ``offsets.commit.timeout.ms`` is answered COORDINATOR_NOT_AVAILABLE, one
  whose leader moved NOT_COORDINATOR: the consumer retries it on the new coordinator.
- **Transactions** (:class:`ClusterTxnIO`): the transaction coordinator of an id is the
  leader of its ``__transaction_state`` partition and moves the same way (a transaction
  found in PrepareCommit/PrepareAbort by the new leader has its markers written again).
  Each state change is answered once replicated (``transaction.state.log.min.isr``);
  markers go to each partition's leader, this broker's by a local append, the others' by
  WriteTxnMarkers, and count as written once replicated there; a partition without a
  leader keeps the transaction in its Prepare state, retried by the coordinator's tick.
  A partition's leader asks the coordinator (on whichever broker) before it appends a
  batch that opens a transaction there (KIP-890: :mod:`pylog.cluster.txn_verification`).

Crash behaviour: nothing here is stored; the state is the replicated logs.  A broker
killed while leading hands its partitions to an ISR member, which holds every commit
and transaction state that was answered and loads it.

Thread safety: :meth:`CoordinatorPartitions.leadership_changed` runs on the replica
thread, loads and unloads on one loader thread of their own,
:meth:`CoordinatorPartitions.wait_replicated` on the loop thread, and
:meth:`CoordinatorPartitions.await_replicated` (which blocks on the loop) and
:class:`ClusterTxnIO` anywhere else; the transaction coordinator holds its lock across
them, so no handler on the loop may take that lock (the clustered DescribeTransactions
and ListTransactions run in the I/O pool).  :meth:`CoordinatorPartitions.follow_append`
runs on the thread that appended (under the group coordinator's lock); the wait it
starts runs on the loop, which completes the :class:`Replication` handle there, so the
group coordinator acts on a replicated write on the loop thread, with no replica lock
held; a resignation goes to the replica thread.  :meth:`CoordinatorPartitions.partition_count`
may read ZooKeeper: never on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Iterable, Mapping, Sequence

from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC, partition_for_group
from pylog.broker.txn_log import TRANSACTION_STATE_TOPIC
from pylog.cluster import replication
from pylog.errors import (CoordinatorNotAvailableError, NotLeaderError, PylogError, RequestTimedOutError,
                          TopicAlreadyExistsError)

__all__ = ["CoordinatorPartitions", "INTERNAL_TOPICS", "ReplicatedOffsetStore", "Replication"]

_log = logging.getLogger("pylog.cluster.coordinators")

INTERNAL_TOPICS = (CONSUMER_OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC)

#: Kafka's offsets.commit.timeout.ms.
OFFSETS_COMMIT_TIMEOUT_MS = 5000
#: How long a WriteTxnMarkers to another broker may take (Kafka's request.timeout.ms).
MARKERS_TIMEOUT_MS = 30_000


class CoordinatorPartitions:
    """The coordinators' side of a :class:`~pylog.cluster.node.ClusterNode` (module docstring)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.broker = node.broker
        #: Internal partitions this broker leads and serves (or is loading), with the
        #: leader epoch it loaded them in.
        self._led: dict[tuple[str, int], int] = {}
        self._loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pylog-coordinator-loader")
        #: The internal topics' partition counts in the cluster (:meth:`partition_count`).
        self._counts: dict[str, int] = {}
        self.txn_io = ClusterTxnIO(node, self)
        #: How long a coordinator's write may wait for the ISR (offsets.commit.timeout.ms).
        config = getattr(node, "config", None)
        self.commit_timeout_ms = getattr(config, "offsets_commit_timeout_ms", OFFSETS_COMMIT_TIMEOUT_MS)

    def start(self) -> None:
        """Serve nothing until LeaderAndIsr says what this broker leads: the groups and
        transactional ids the broker core loaded from its local logs at open are
        dropped; the transaction coordinator writes through :class:`ClusterTxnIO`."""
        groups = self.broker.groups
        groups.unload_all()
        if not isinstance(groups.store, ReplicatedOffsetStore):
            groups.store = ReplicatedOffsetStore(groups.store, self)
        txns = self.broker.transactions
        txns.unload_all()
        txns.io = self.txn_io
        # KIP-890: a leader asks the coordinator of the producer's id, on any broker.
        from pylog.cluster.txn_verification import TxnVerification, txn_verifier
        self.txn_verification = TxnVerification.for_node(self.node, self.txn_io)
        self.broker.txn_verifier = txn_verifier(self.broker)
        # TxnOffsetCommit asks the id's coordinator too (server.cluster_handlers), not
        # this broker's own, which may not coordinate the id.
        self.broker.verify_txn_offsets = False

    def close(self) -> None:
        self._loader.shutdown(wait=True)
        self.txn_io.close()

    # -- creating the internal topics (off the loop) ------------------------------------

    def topic_settings(self, topic: str) -> tuple[int, int, dict[str, str]]:
        """(partitions, replication factor, topic configs) of an internal topic."""
        cfg = self.node.config
        if topic == CONSUMER_OFFSETS_TOPIC:
            return (cfg.offsets_topic_num_partitions, cfg.offsets_topic_replication_factor,
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

    def partition_count(self, topic: str) -> int | None:
        """The partition count of the internal ``topic`` as the cluster has it (its
        assignment in ZooKeeper, which Kafka's coordinators read too; the controller's
        metadata when no ZooKeeper session is at hand, else the local replicas), None while
        it is not created.
        Known once, kept: an internal topic's count does not change.  Blocking (a
        ZooKeeper read the first time): not on the loop."""
        n = self._counts.get(topic)
        if n is not None:
            return n
        coordination = self.node.coordination
        assignment = coordination.get_topic_assignment(topic) if coordination is not None else None
        if assignment is not None:
            n = len(assignment.partitions)
        else:
            n = len(self.node.metadata.partitions_of(topic)) or None
        if n is not None:
            self._counts[topic] = n
            return n
        # No session and no metadata yet: the local replicas, which LeaderAndIsr sized
        # from the assignment (not kept: a guess until the cluster answers).
        return self.broker.num_partitions(topic) if self.broker.has_topic(topic) else None

    def metadata_updated(self, topics: Iterable[str]) -> None:
        """(Any thread.)  UpdateMetadata named ``topics``: once ``__consumer_offsets``
        exists, every broker hashes groups over its count, not only the leaders of its
        partitions (a transaction coordinator adds a group's partition to a transaction
        by it).  The count is read on the replica thread, in order with LeaderAndIsr."""
        if CONSUMER_OFFSETS_TOPIC in topics and CONSUMER_OFFSETS_TOPIC not in self._counts \
                and not self.node.stopping:
            self.node.replica_thread.submit(self._adopt_offsets_count)

    def _adopt_offsets_count(self) -> None:
        try:
            count = self.partition_count(CONSUMER_OFFSETS_TOPIC)
        except PylogError as exc:
            _log.info("reading the partition count of %s: %s", CONSUMER_OFFSETS_TOPIC, exc)
            return
        if count is not None:
            self.broker.groups.set_num_partitions(count)

    # -- leadership (the replica thread) -------------------------------------------------

    def leadership_changed(self, topic: str, partition: int, leader: bool, leader_epoch: int = -1) -> None:
        """This broker now leads (or no longer leads) an internal partition.  Leading it
        in a new leader epoch without having heard of the one between (another broker led
        it meanwhile) reloads it: the log may hold what that leader wrote."""
        tp = (topic, partition)
        led = self._led.get(tp)
        if leader and led != leader_epoch:
            if led is not None:
                self._loader.submit(self._unload, topic, partition)
            self._led[tp] = leader_epoch
            if topic == CONSUMER_OFFSETS_TOPIC:
                # The cluster's count, before any group of it is served here.
                count = self.partition_count(topic)
                if count is not None:
                    self.broker.groups.set_num_partitions(count)
                # At once: a request for these groups must not meet the old owner's answer.
                self.broker.groups.begin_load(partition)
            self._loader.submit(self._load, topic, partition)
        elif not leader and led is not None:
            del self._led[tp]
            self._loader.submit(self._unload, topic, partition)

    def group_partition_led(self, group_id: str) -> int | None:
        """The ``__consumer_offsets`` partition of ``group_id`` when this broker leads it
        (its groups may still be loading), else None."""
        partition = partition_for_group(group_id, self.broker.groups.num_partitions)
        return partition if (CONSUMER_OFFSETS_TOPIC, partition) in self._led else None

    def _load(self, topic: str, partition: int) -> None:
        try:
            if topic == CONSUMER_OFFSETS_TOPIC:
                n = self.broker.load_group_partition(partition)
            else:
                # The transaction coordinator's lock may be held across marker writes:
                # taken here, not on the replica thread.
                self.broker.transactions.begin_load(partition)
                n = self.broker.load_txn_partition(partition)
        except Exception:  # noqa: BLE001 - the loader thread must survive; the partition stays unserved
            _log.exception("loading the coordinator state of %s-%d failed", topic, partition)
            return
        _log.info("%s-%d: this broker coordinates its %s now (%d loaded)", topic, partition,
                  "groups" if topic == CONSUMER_OFFSETS_TOPIC else "transactional ids", n)

    def _unload(self, topic: str, partition: int) -> None:
        if topic == CONSUMER_OFFSETS_TOPIC:
            n = self.broker.groups.unload(partition)
        else:
            n = self.broker.transactions.unload(partition)
        _log.info("%s-%d: no longer led here; %d unloaded", topic, partition, n)

    def _resign(self, topic: str, partition: int, leader_epoch: int) -> None:
        """(The replica thread.)  A write of the coordinator in ``leader_epoch`` failed
        because this broker no longer leads the partition: stop serving it now, unless a
        LeaderAndIsr already moved it to another epoch."""
        tp = (topic, partition)
        if self._led.get(tp) != leader_epoch:
            return
        _log.warning("%s-%d: a coordinator write failed because leadership moved; resigning it", topic, partition)
        del self._led[tp]
        self._loader.submit(self._unload, topic, partition)

    # -- replicated writes -----------------------------------------------------------------

    def follow_append(self, topic: str, partition: int) -> "Replication | None":
        """(Any thread, right after a coordinator appended to ``topic-partition``.)  A
        :class:`Replication` handle completed once the high watermark passes what the
        log holds now, or with the PylogError that says it will not (after
        :attr:`commit_timeout_ms`, or when leadership moves: then the coordinator
        resigns the partition, :meth:`_resign`); None when this broker holds no replica
        of the partition (a single-node write, durable as it returned)."""
        manager = self.node.replica_manager
        r = manager.replicas.get((topic, partition))
        if r is None:
            return None
        with r.lock:
            last = r.log.log_end_offset - 1
            append = replication.AppendInfo(last, last, r.state.leader_epoch)
        led_epoch = self._led.get((topic, partition))
        handle = Replication(self.node.call_in_loop)

        def outcome(error: PylogError | None) -> None:
            if isinstance(error, NotLeaderError) and led_epoch is not None and not self.node.stopping:
                self.node.replica_thread.submit(self._resign, topic, partition, led_epoch)
            handle.set_result(error)

        def start() -> None:
            manager.after_leader_append(topic, partition)
            waiting = manager.wait_for_acks(topic, partition, append, self.commit_timeout_ms)
            waiting.add_done_callback(lambda f: outcome(f.result()))

        self.node.call_in_loop(start)
        return handle

    def wait_replicated(self, topic: str, partition: int,
                        timeout_ms: int | None = None) -> asyncio.Future | None:
        """(Loop thread.)  A future of None once the high watermark of ``topic-partition``
        has passed everything its leader's log holds now (so the latest append of a
        coordinator), or of the PylogError that stopped it (after ``timeout_ms``, by
        default :attr:`commit_timeout_ms`); None when this broker holds no replica of the
        partition (nothing was appended here)."""
        if timeout_ms is None:
            timeout_ms = self.commit_timeout_ms
        manager = self.node.replica_manager
        r = manager.replicas.get((topic, partition))
        if r is None:
            return None
        manager.after_leader_append(topic, partition)     # an ISR of one moves the high watermark at once
        with r.lock:
            end = r.log.log_end_offset
            append = replication.AppendInfo(end - 1, end - 1, r.state.leader_epoch)
        return manager.wait_for_acks(topic, partition, append, timeout_ms)

    def wait_groups_replicated(self, group_ids: Iterable[str]) -> "asyncio.Future":
        """(Loop thread.)  :meth:`wait_group_replicated` for several groups: a future of
        group id -> the PylogError of those whose partition did not replicate."""
        waits = {g: self.wait_group_replicated(g) for g in group_ids}

        async def gather() -> dict[str, PylogError]:
            out = {}
            for g, w in waits.items():
                error = None if w is None else await w
                if error is not None:
                    out[g] = error
            return out

        return self.node.loop.create_task(gather())

    def wait_group_replicated(self, group_id: str) -> asyncio.Future | None:
        """:meth:`wait_replicated` for the group's ``__consumer_offsets`` partition."""
        n = self.broker.groups.num_partitions
        return self.wait_replicated(CONSUMER_OFFSETS_TOPIC, partition_for_group(group_id, n))

    def await_replicated(self, partitions: Iterable[tuple[str, int]],
                         timeout_ms: int = OFFSETS_COMMIT_TIMEOUT_MS) -> dict[tuple[str, int], PylogError]:
        """(Any thread but the loop's.)  :meth:`wait_replicated` for each partition,
        blocking; the partitions whose wait failed, with the error."""
        partitions = list(partitions)
        if self.node.stopping:
            # The loop may close before it runs the wait: the write stays unacknowledged
            # (the next leader's coordinator finishes what it depended on).
            return {tp: NotLeaderError("the broker is stopping") for tp in partitions}
        done: concurrent.futures.Future = concurrent.futures.Future()

        def start() -> None:
            waits = {tp: self.wait_replicated(*tp, timeout_ms=timeout_ms) for tp in partitions}

            async def gather() -> dict:
                return {tp: await w for tp, w in waits.items() if w is not None}

            task = self.node.loop.create_task(gather())
            task.add_done_callback(lambda t: done.set_exception(t.exception()) if t.exception()
                                   else done.set_result(t.result()))

        self.node.call_in_loop(start)
        try:
            results = done.result(timeout_ms / 1000 + 5)
        except concurrent.futures.TimeoutError:
            return {tp: RequestTimedOutError("the loop did not answer") for tp in partitions}
        return {tp: e for tp, e in results.items() if e is not None}


class Replication:
    """A replication handle of :class:`~pylog.broker.group_offsets.OffsetStore`: one
    outcome (None, or the PylogError); each callback runs once with it, always on the
    loop thread: the one that sets it, or, when it is already known, later through
    ``call_soon`` (never inline: the caller may hold the group coordinator's lock, which
    the callback takes).  Thread-safe."""

    __slots__ = ("_lock", "_callbacks", "_done", "_error", "_call_soon")

    def __init__(self, call_soon: Any) -> None:
        self._lock = threading.Lock()
        self._callbacks: list = []
        self._done = False
        self._error: PylogError | None = None
        self._call_soon = call_soon

    def add_done_callback(self, fn: Any) -> None:
        with self._lock:
            if not self._done:
                self._callbacks.append(fn)
                return
        self._call_soon(fn, self._error)

    def set_result(self, error: PylogError | None) -> None:
        with self._lock:
            if self._done:
                return
            self._done, self._error = True, error
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn(error)
            except Exception:  # noqa: BLE001 - one callback's failure is its own
                _log.exception("a replication callback raised")


class ReplicatedOffsetStore:
    """The group coordinator's store on a clustered broker: the broker core's
    ``__consumer_offsets`` appends, each followed until the ISR has it
    (:meth:`CoordinatorPartitions.follow_append`).  Callable under the coordinator's
    lock, as the store it wraps."""

    def __init__(self, inner: Any, partitions: CoordinatorPartitions) -> None:
        self.inner = inner
        self.partitions = partitions

    @property
    def num_partitions(self) -> int:
        return self.inner.num_partitions

    @num_partitions.setter
    def num_partitions(self, value: int) -> None:
        self.inner.num_partitions = value

    def append(self, partition: int, records: Sequence[tuple[bytes, bytes | None]], *, producer_id: int = -1,
               producer_epoch: int = -1) -> Replication | None:
        self.inner.append(partition, records, producer_id=producer_id, producer_epoch=producer_epoch)
        return self.partitions.follow_append(CONSUMER_OFFSETS_TOPIC, partition)

    def replicated(self, partition: int) -> Replication | None:
        """A handle for everything the partition holds now (a transaction marker the
        broker core appended, which the group coordinator settles offsets by)."""
        return self.partitions.follow_append(CONSUMER_OFFSETS_TOPIC, partition)


def commit_error_code(error: PylogError) -> int:
    """Kafka's translation of a failed replicated append of a coordinator into the error
    its request answers (GroupMetadataManager's and TransactionStateManager's)."""
    from pylog.broker.group import _storage_error_code
    return _storage_error_code(error, for_commit=True)


class ClusterTxnIO:
    """The transaction coordinator's :class:`~pylog.broker.txn_coordinator.TxnLogIO` on
    a clustered broker: ``__transaction_state`` is the cluster topic, each state change
    is answered once replicated, and markers go to their partitions' leaders (this
    broker's own by a local append, the others' by WriteTxnMarkers), each acknowledged
    once replicated.  Called with the coordinator's lock held, never on the loop."""

    def __init__(self, node: Any, partitions: CoordinatorPartitions) -> None:
        self.node = node
        self.broker = node.broker
        self.partitions = partitions
        self._clients: dict[int, tuple[tuple[str, int], Any]] = {}
        self._clients_lock = threading.Lock()

    def txn_log_partitions(self, create: bool) -> int:
        # The cluster's count, not this broker's transaction.state.log.num.partitions:
        # the controller's metadata, else ZooKeeper's assignment.
        n = len(self.node.metadata.partitions_of(TRANSACTION_STATE_TOPIC)) or \
            self.partitions.partition_count(TRANSACTION_STATE_TOPIC) or 0
        if not n and create:
            raise CoordinatorNotAvailableError(f"{TRANSACTION_STATE_TOPIC} is not created yet")
        return n

    def append_txn_log(self, partition: int, records: Sequence[tuple[bytes, bytes | None]]) -> None:
        from pylog import _core
        from pylog.errors import error_for_code
        builder = _core.RecordBatchBuilder()
        builder.append_many([v for _, v in records], keys=[k for k, _ in records])
        res = self.broker._append_internal(TRANSACTION_STATE_TOPIC, partition, builder.build())
        error = res.error if res.error_code else \
            self.partitions.await_replicated([(TRANSACTION_STATE_TOPIC, partition)]).get(
                (TRANSACTION_STATE_TOPIC, partition))
        if error is not None:
            raise error_for_code(commit_error_code(error), f"{TRANSACTION_STATE_TOPIC}-{partition}: {error}")

    def coordinator_epoch(self, partition: int) -> int:
        r = self.node.replica_manager.replicas.get((TRANSACTION_STATE_TOPIC, partition))
        return 0 if r is None else max(r.state.leader_epoch, 0)

    def allocate_producer_id(self) -> int:
        return self.broker._allocate_producer_id()

    def partition_exists(self, topic: str, partition: int) -> bool:
        return any(s.partition == partition for s in self.node.metadata.partitions_of(topic))

    def write_markers(self, markers: list) -> Mapping[tuple[str, int], int]:
        cache = self.node.metadata
        failed: dict[tuple[str, int], int] = {}
        by_leader: dict[int, list] = {}
        for pid, epoch, coordinator_epoch, commit, parts in markers:
            for tp in parts:
                leader = cache.leader(*tp)
                if leader is None:
                    failed[tp] = NotLeaderError.error_code       # retried once a leader is elected
                    continue
                by_leader.setdefault(leader.broker_id, []).append((pid, epoch, coordinator_epoch, commit, tp))
        sent = {}
        for broker_id, items in by_leader.items():
            if broker_id != self.node.broker_id:
                sent[broker_id] = self._send_markers(broker_id, items)
        local = by_leader.get(self.node.broker_id, [])
        if local:
            written = self.broker.write_txn_markers_and_complete(
                [(pid, epoch, ce, commit, [tp]) for pid, epoch, ce, commit, tp in local])
            failed.update(written)
            ok = [tp for *_, tp in local if tp not in written]
            for tp, error in self.partitions.await_replicated(ok).items():
                failed[tp] = error.error_code
        for broker_id, fut in sent.items():
            failed.update(self._markers_answer(fut, [tp for *_, tp in by_leader[broker_id]]))
        return failed

    def _send_markers(self, broker_id: int, items: list) -> concurrent.futures.Future:
        from pylog.protocol import messages as m
        from pylog.protocol.apis import ApiKey
        M: Any = m.WriteTxnMarkersRequest
        grouped: dict[tuple, dict[str, list[int]]] = {}
        for pid, epoch, ce, commit, (topic, p) in items:
            grouped.setdefault((pid, epoch, ce, commit), {}).setdefault(topic, []).append(p)
        body = M(markers=[M.WritableTxnMarker(
            producer_id=pid, producer_epoch=epoch, transaction_result=commit, coordinator_epoch=ce,
            topics=[M.WritableTxnMarkerTopic(name=t, partition_indexes=ps) for t, ps in topics.items()])
            for (pid, epoch, ce, commit), topics in grouped.items()])
        return self.send_request(broker_id, ApiKey.WRITE_TXN_MARKERS, body)

    def send_request(self, broker_id: int, api_key: int, body: Any, *, version: int | None = None,
                     timeout_ms: int = MARKERS_TIMEOUT_MS) -> concurrent.futures.Future:
        """Send a request to another broker (one client per broker, kept), without
        waiting: a future of the decoded response, or of the PylogError."""
        from pylog.client.kafka.network import NetworkClient
        broker = self.node.metadata.brokers.get(broker_id)
        fut: concurrent.futures.Future
        if broker is None:
            fut = concurrent.futures.Future()
            fut.set_exception(NotLeaderError(f"broker {broker_id} is not alive"))
            return fut
        ep = (broker.endpoints[0].host, broker.endpoints[0].port)
        with self._clients_lock:
            have = self._clients.get(broker_id)
            if have is None or have[0] != ep:
                if have is not None:
                    have[1].close(timeout=0)
                have = (ep, NetworkClient(f"{ep[0]}:{ep[1]}", client_id=f"pylog-broker-{self.node.broker_id}-txn"))
                self._clients[broker_id] = have
            client = have[1]
        node = broker_id if client.cluster.node(broker_id) is not None else -1
        try:
            return client.send(node, api_key, body, version=version, timeout_ms=timeout_ms)
        except PylogError as exc:
            fut = concurrent.futures.Future()
            fut.set_exception(exc)
            return fut

    @staticmethod
    def _markers_answer(fut: concurrent.futures.Future, partitions: list) -> dict[tuple[str, int], int]:
        try:
            resp = fut.result(MARKERS_TIMEOUT_MS / 1000 + 5)
        except (PylogError, concurrent.futures.TimeoutError, OSError) as exc:
            _log.info("WriteTxnMarkers to %s failed: %s; retried", partitions, exc)
            return {tp: RequestTimedOutError.error_code for tp in partitions}
        out = {}
        for mk in resp.markers:
            for t in mk.topics:
                for p in t.partitions:
                    if p.error_code:
                        out[(t.name, p.partition_index)] = p.error_code
        return out

    def close(self) -> None:
        with self._clients_lock:
            for _, client in self._clients.values():
                client.close(timeout=1.0)
            self._clients.clear()
