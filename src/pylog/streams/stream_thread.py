"""One stream thread of a streams app (Kafka Streams' ``StreamThread``): a member of
the app's consumer group with its own consumer and producer, the
poll / process / punctuate / commit loop, its tasks (through its
:class:`~.task_manager.TaskManager`) and the rebalance listener that hands them over.

The loop, as Kafka's ``runOnce``: poll the input (``poll_batches``, up to
``max.poll.records``, default 10000, so fetched batches are rarely cut); give each task
what the poll brought (a task with one polled partition takes it at once through
:meth:`StreamTask.process_batch`, batch by batch when a record has headers; a task with
several takes next the record with the smallest timestamp among its partitions, Kafka's
partition group without waiting for empty partitions: ``max.task.idle.ms`` is 0); feed
the standbys; (thread 1) apply the global topics' new records; punctuate on wall-clock
time; and every ``commit.interval.ms`` commit.

Commit, at-least-once: flush the stores, flush the producer (each task's failed sends go
to the production handler), then commit the consumed offsets.  Exactly-once (Kafka's
KIP-447 mode): the thread's transactional producer (``transactional.id``
``<application.id>-<process id>-<thread index>``; ``init_transactions`` fences an earlier
incarnation and aborts its open transaction before anything is restored) begins a
transaction with the first record a commit interval writes; a commit flushes the stores
(their changelog records join the transaction), sends the consumed offsets with the
consumer's group metadata (a member fenced by a rebalance cannot commit) and commits the
transaction.  When the group takes the partitions away (lost: UNKNOWN_MEMBER_ID,
ILLEGAL_GENERATION) or the producer is fenced (Kafka's TaskMigratedException) the open
transaction is aborted, every task closed dirty and the input rewound to the committed
offsets; tasks are rebuilt from their changelogs, up to the last committed transaction.
At-least-once does the same without the transaction, as Kafka's StreamThread does
under every guarantee: the member rejoins and what was processed after the last
commit is processed again.
After a commit under either guarantee, the consumed records of repartition topics
may be deleted (the task manager's purge, every ``repartition.purge.interval.ms``).

In a rebalance (:class:`StreamsRebalanceListener`, Kafka's eager protocol) the thread
commits and suspends its tasks, open; once the assignment is known the task manager
keeps, moves, closes and builds tasks (:mod:`.task_manager`).

Errors: an exception that escapes processing goes to the app's uncaught exception
handler (:mod:`._uncaught`): REPLACE_THREAD closes this thread's tasks dirty and joins
the group again as a new member; SHUTDOWN_CLIENT and SHUTDOWN_APPLICATION stop the
instance.  Without a handler the exception leaves :meth:`StreamThread.run`: thread 1
raises it from ``app.run``; an added thread hands it to thread 1, which raises it.

Crash behaviour: nothing is written here; see :mod:`.task_manager` for the checkpoints
and :mod:`.runtime` for what a restart restores.

Thread safety: a StreamThread is driven by its own thread only (thread 1 by the thread
that calls ``app.run``).  :meth:`StreamThread.stop` may be called from any thread; its
``tasks``, ``standbys``, ``state`` and ``consumer`` may be read by others under the
app's query lock (interactive queries, thread metadata).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np

from pylog.client import ConsumerRebalanceListener
from pylog.errors import (FencedInstanceIdError, IllegalGenerationError, InvalidProducerEpochError,
                          ProducerFencedError, PylogError, UnknownMemberIdError)

from ._shutdown import SHUTDOWN_REQUESTED, ShutdownSignalAssignor
from ._uncaught import final_states
from .assignor import StreamsPartitionAssignor, TaskId
from .config import now_ms, setting
from .errors import State, StreamThreadExceptionResponse, TaskCorruptedError
from .restore import RestoreSuspended
from .task import StandbyTask, StreamTask
from .task_manager import TaskManager

__all__ = ["StreamThread", "RecordCollector", "StreamsRebalanceListener", "records_of"]

log = logging.getLogger("pylog.streams")
# send_batch pays off (over a send per record) for calls of at least this many records
_MIN_RUN = 16
#: The group took the tasks away, or a newer producer holds the transactional id:
#: Kafka's TaskMigratedException.  The transaction is aborted and the tasks rebuilt.
TASK_MIGRATED = (ProducerFencedError, InvalidProducerEpochError, IllegalGenerationError, UnknownMemberIdError,
                 FencedInstanceIdError)


def records_of(batches: List[Any]) -> Any:
    """(topic, offset, key, value, timestamp, headers) of each record of ``batches``."""
    for b in batches:
        cols = b.columns()
        with_headers = cols.header_counts.any()
        for i, (offset, key, value, timestamp) in enumerate(zip(cols.offsets.tolist(), cols.keys(), cols.values(),
                                                                 cols.timestamps.tolist())):
            yield b.topic, offset, key, value, timestamp, cols.headers(i) if with_headers else ()


class RecordCollector:
    """Sends what the thread's tasks write through the thread's producer (beginning the
    transaction under exactly-once); Kafka's ``RecordCollectorImpl`` without the
    callbacks, which :class:`~.errors.DeliveryWatch` adds per task."""

    def __init__(self, thread: "StreamThread") -> None:
        self.thread = thread

    def send(self, topic: str, key: Optional[bytes], value: Optional[bytes], timestamp: int, headers: Any,
             partitioner: Any, partition: Optional[int]) -> Any:
        """The producer's future of the record (see :class:`~.errors.DeliveryWatch`)."""
        thread = self.thread
        if thread.exactly_once and not thread.in_transaction:
            thread.begin_transaction()
        if partition is None and partitioner is not None:
            partition = partitioner(topic, key, value, thread.app.partitions_of(topic))
        return thread.producer.send(topic, value=value, key=key, headers=list(headers) if headers else None,
                                    partition=partition, timestamp_ms=timestamp)

    def send_many(self, topic: str, keys: List[Optional[bytes]], values: List[Optional[bytes]],
                  timestamps: List[int], partitioner: Any, partition: Optional[int] = None) -> List[Tuple[Any, int, int]]:
        """Records without headers, in order, each with its own timestamp: one
        ``send_batch`` (per-record timestamps) for all of them when they go to one
        ``partition`` (a store's changelog records) or are all keyed with the default
        partitioner (``send_batch`` keeps each partition's records in input order), else
        one by one.  Returns ``(future, start, stop)`` for a ``send_batch`` and ``(list of
        futures, start, stop)`` for records sent one by one (see
        :class:`~.errors.DeliveryWatch`)."""
        thread = self.thread
        if thread.exactly_once and not thread.in_transaction:
            thread.begin_transaction()
        producer = thread.producer
        n = len(timestamps)
        sent = 0
        try:
            if n >= _MIN_RUN and (partition is not None or (partitioner is None and None not in keys)):
                return [(producer.send_batch(topic, values, keys, partition, timestamps), 0, n)]
            futures: List[Any] = []
            spans: List[Tuple[Any, int, int]] = [(futures, 0, n)]
            if partitioner is None or partition is not None:
                send = producer.send
                for k, v, t in zip(keys, values, timestamps):
                    futures.append(send(topic, v, k, None, partition, t))
                    sent += 1
                return spans
            for k, v, t in zip(keys, values, timestamps):
                futures.append(self.send(topic, k, v, t, (), partitioner, None))
                sent += 1
            return spans
        except PylogError as exc:
            # the caller hands the rest to the production handler
            exc.records_sent = sent  # type: ignore[attr-defined]
            raise


class StreamsRebalanceListener(ConsumerRebalanceListener):
    """Hands tasks over in a rebalance: before partitions go, what their tasks did is
    committed (stores, producer, offsets; under exactly-once the transaction, which
    holds every task's work) and the tasks are suspended, open (Kafka's eager
    rebalance).  Once the assignment is known, the task manager keeps, moves, closes
    and builds tasks.  Partitions lost (the member was dropped from the group) cannot
    be committed: their tasks are closed dirty (under exactly-once the transaction is
    aborted and every task closed dirty)."""

    def __init__(self, thread: "StreamThread") -> None:
        self.thread = thread

    def on_partitions_revoked(self, revoked: Set[Any]) -> None:
        if revoked:
            thread = self.thread
            if thread.failed:
                thread.task_manager.drop(revoked)
                return
            try:
                thread.commit()
            except TASK_MIGRATED as exc:
                thread.handle_task_migrated(exc)
                return
            thread.task_manager.suspend(revoked)

    def on_partitions_lost(self, lost: Set[Any]) -> None:
        thread = self.thread
        if thread.exactly_once and not thread.failed:
            thread.handle_task_migrated(UnknownMemberIdError("the group dropped this member: partitions lost"),
                                        rewind=False)
            return
        thread.task_manager.drop(lost)

    def on_partitions_assigned(self, assigned: Set[Any]) -> None:
        # Kafka Streams builds (and restores) a task when its partitions are assigned,
        # so its stores answer interactive queries before any new input arrives.
        if not self.thread.failed:
            self.thread.on_assignment()


class StreamThread:
    """A stream thread of ``app`` (a :class:`~.runtime.StreamsApp`; module docstring);
    ``thread_index`` 1 is the thread that calls ``app.run``, which also keeps the global
    stores up to date."""

    def __init__(self, app: Any, thread_index: int, stop: Optional[threading.Event] = None) -> None:
        self.app = app
        self.thread_index = thread_index
        self.exactly_once = app.exactly_once
        #: A transaction is open (exactly-once): records were sent since the last commit.
        self.in_transaction = False
        #: The thread is failing: a rebalance on the way out must not commit.
        self.failed = False
        self.producer: Any = None
        self.consumer: Any = None
        self.partition_assignor: Optional[StreamsPartitionAssignor] = None
        #: thread 1: the consumer of the global stores' topics
        self.global_consumer: Any = None
        self.collector = RecordCollector(self)
        self.task_manager = TaskManager(self)
        self._stop = stop if stop is not None else threading.Event()
        self._state = State.CREATED
        self._assigned = False
        self._signal_assignors: List[ShutdownSignalAssignor] = []
        self._thread: Optional[threading.Thread] = None

    # -- what others read
    @property
    def name(self) -> str:
        return self.app._thread_name(self.thread_index)

    @property
    def state(self) -> State:
        """The thread's state, in ``KafkaStreams.State``'s terms."""
        return self._state

    @property
    def tasks(self) -> Dict[TaskId, StreamTask]:
        return self.task_manager.tasks

    @property
    def standbys(self) -> Dict[TaskId, StandbyTask]:
        return self.task_manager.standbys

    @property
    def restoring(self) -> bool:
        return self.task_manager.restoring

    def transactional_id(self) -> str:
        """``<application.id>-<process id>-<thread index>``: Kafka Streams'
        transactional id of a stream thread under exactly_once_v2."""
        return f"{self.app.application_id}-{self.app.process_id()}-{self.thread_index}"

    def stop(self) -> None:
        """Ask the loop to commit and return (safe from any thread)."""
        self._stop.set()

    def _set_state(self, new: State) -> None:
        old = self._state
        if old is new or not old.is_valid_transition(new):
            return
        self._state = new
        self.app._thread_state_changed(self, new)

    # -- start
    def open_producer(self) -> None:
        linger_ms = int(setting(self.app.config, "linger.ms", 5))
        # Kafka's "producer."-prefixed configs (e.g. producer.delivery.timeout.ms)
        extra = {k[9:].replace(".", "_"): v for k, v in self.app.config.items() if k.startswith("producer.")}
        base = {"acks": "all", "linger_ms": linger_ms, "client_id": f"{self.name}-producer"}
        client = self.app.client
        if not self.exactly_once:
            self.producer = client.producer(**{**base, **extra})
            return
        self.producer = client.producer(**{**base, **extra}, transactional_id=self.transactional_id(),
                                        transaction_timeout_ms=self.app.transaction_timeout_ms)
        # fences an earlier producer of this instance and aborts its open transaction
        # before anything is restored or read
        self.producer.init_transactions()

    def join_group(self) -> None:
        """Subscribe to every source and repartition topic in the app's group, with the
        streams assignor (wrapped to carry shutdown requests, :mod:`._shutdown`)."""
        app = self.app
        config = app.config
        tm = self.task_manager
        self.partition_assignor = StreamsPartitionAssignor(
            app.process_id(), app.application_server, topic_group=app.metadata.topic_group,
            stateful_groups=app.metadata.stateful_groups(), num_standby_replicas=app.num_standby_replicas,
            task_state=tm.task_state, end_offset_sums=tm.end_offset_sums,
            acceptable_recovery_lag=int(setting(config, "acceptable.recovery.lag", 10_000)),
            max_warmup_replicas=int(setting(config, "max.warmup.replicas", 2)),
            probing_rebalance_interval_ms=int(setting(config, "probing.rebalance.interval.ms", 600_000)))
        self.consumer = app.client.consumer(group_id=app.application_id, auto_offset_reset="earliest",
                                            client_id=f"{self.name}-consumer", enable_auto_commit=False,
                                            isolation_level=app.isolation_level,
                                            partition_assignment_strategy=[self.partition_assignor],
                                            **self._member_config())
        self.consumer.subscribe(sorted(app.metadata.topic_group), StreamsRebalanceListener(self))
        self.consumer.assignors = self._signal_assignors = [
            a if isinstance(a, ShutdownSignalAssignor) else ShutdownSignalAssignor(a, self._on_assigned)
            for a in self.consumer.assignors]
        self._assigned = False
        self._set_state(State.REBALANCING)

    def _member_config(self) -> Dict[str, Any]:
        """The consumer's group settings the app config may set (Kafka's names)."""
        out: Dict[str, Any] = {}
        for name in ("group.instance.id", "session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms"):
            value = setting(self.app.config, name, None)
            if value is not None:
                out[name.replace(".", "_")] = value if name == "group.instance.id" else int(value)
        return out

    def _on_assigned(self) -> None:
        self._assigned = True
        self._set_state(State.REBALANCING)

    def on_assignment(self) -> None:
        """The member got its assignment: the task manager takes it."""
        topic_group = self.app.metadata.topic_group
        active = {(topic_group[tp[0]], tp[1]) for tp in self.consumer.assignment() if tp[0] in topic_group}
        assignor = self.partition_assignor
        self.task_manager.on_assignment(active, set(assignor.standby_tasks) if assignor is not None else set())

    # -- the loop
    def run(self, *, until_idle: bool = False, idle_polls: int = 3, poll_timeout_ms: int = 100) -> None:
        """Process until stopped (or, with ``until_idle``, until ``idle_polls`` polls in
        a row bring nothing), then commit and close the thread's clients.  The thread
        must have opened its producer and joined the group."""
        app = self.app
        main = self.thread_index == 1
        last_commit = now_ms()
        idle = 0
        try:
            if main:
                for _ in range(app.num_stream_threads - 1):
                    app.add_stream_thread()
            while not self._stop.is_set():
                if main:
                    app._raise_thread_error()
                try:
                    records = self.consumer.poll_batches(timeout_ms=poll_timeout_ms,
                                                         max_records=app.max_poll_records)
                    self._after_poll()
                    self._maybe_probe()
                    if records and not self._stop.is_set():
                        self.process_batches(records)
                    self.task_manager.update_standbys()
                    with app.iq_lock:  # global updates and punctuators write stores too
                        if self.global_consumer is not None:
                            for r in self.global_consumer.poll(timeout_ms=0):
                                app.global_task.process(r.topic, r.key, r.value,  # type: ignore[union-attr]
                                                        r.timestamp, r.headers, r.offset)
                        for task in list(self.tasks.values()):
                            task.punctuate_wall_clock()
                    now = now_ms()
                    if now - last_commit >= app.commit_interval_ms:
                        self.commit()
                        last_commit = now
                except TaskCorruptedError as exc:   # a production handler's RETRY
                    self.handle_task_migrated(exc)
                    records = []
                except TASK_MIGRATED as exc:
                    self.handle_task_migrated(exc)
                    records = []
                except Exception as exc:    # Kafka's StreamsUncaughtExceptionHandler
                    if not self._handle_uncaught(exc):
                        raise
                    records = []
                if until_idle:
                    idle = 0 if records else idle + 1
                    if idle >= idle_polls:
                        break
            if main:
                app._raise_thread_error()
            if not self.failed:
                try:
                    self.commit()
                except TaskCorruptedError as exc:
                    # a production handler's RETRY at the last commit: the input stays
                    # at the committed offsets, processed again by the next run
                    self.handle_task_migrated(exc, rewind=False)
        except BaseException:
            self.failed = True
            if self.exactly_once:
                self._abort_and_close_tasks()
            raise
        finally:
            if main:
                app._stop_added_threads()
            self.close()

    def _after_poll(self) -> None:
        if any(a.shutdown_requested.is_set() for a in self._signal_assignors):
            self.app._shutdown_requested_by_group()
        elif self._state is State.REBALANCING and self._assigned:
            self._set_state(State.RUNNING)
        elif self._state is State.RUNNING and self.app.state is State.REBALANCING:
            self.app._thread_state_changed(self, State.RUNNING)   # a thread left since

    def _maybe_probe(self) -> None:
        """A probing rebalance is due (tasks wait for their warm-up replicas to catch
        up): rejoin, reporting the warm-ups' lags, so the leader can move them."""
        assignor = self.partition_assignor
        probe = assignor.next_probing_rebalance_ms if assignor is not None else 0
        if probe and now_ms() >= probe:
            assignor.next_probing_rebalance_ms = 0      # type: ignore[union-attr]
            self.consumer.enforce_rebalance("probing rebalance: warm-up replicas may have caught up")

    def restore_suspended(self) -> bool:
        """A restore stops between fetches when the thread stops or its group rebalances
        (the task's state is kept as a standby and the restore resumes from there)."""
        if self._stop.is_set():
            return True
        consumer = self.consumer
        return consumer is not None and consumer.rebalance_in_progress()

    def process_batches(self, batches: List[Any]) -> None:
        """Give each task what a poll brought: a task with one polled partition takes
        its batches in one :meth:`StreamTask.process_batch` (one per batch when a
        record has headers); a task with several takes their records one at a time,
        always from the partition whose next record has the smallest timestamp (a
        task's partition group, as Kafka's).  Under the query lock: no query reads a
        store while a poll's records change it."""
        with self.app.iq_lock:
            self._process_batches_locked(batches)

    def _process_batches_locked(self, batches: List[Any]) -> None:
        topic_group = self.app.metadata.topic_group
        by_task: Dict[Tuple[int, int], Dict[Tuple[str, int], List[Any]]] = {}
        for b in batches:
            tid = (topic_group[b.topic], b.partition)
            by_task.setdefault(tid, {}).setdefault((b.topic, b.partition), []).append(b)
        offsets = self.task_manager.consumed
        for (gid, partition), queues in by_task.items():
            try:
                task = self.task_manager.task(gid, partition, wait=False)
            except RestoreSuspended:
                # stopping or rebalancing: the records stay unconsumed
                for (topic, p), bs in queues.items():
                    self.consumer.seek((topic, p), int(bs[0].columns().offsets[0]))
                continue
            if len(queues) == 1:
                bs = next(iter(queues.values()))
                all_cols = [b.columns() for b in bs]
                if len(bs) > 1 and not any(cols.header_counts.any() for cols in all_cols):
                    # The poll's batches of the partition in one call: the fused loop's
                    # and the collector's costs per call spread over up to
                    # max.poll.records records, not a fetched batch's (often ~100).
                    keys: List[Optional[bytes]] = []
                    values: List[Optional[bytes]] = []
                    for cols in all_cols:
                        keys += cols.keys()
                        values += cols.values()
                    task.process_batch(bs[0].topic, keys, values,
                                       np.concatenate([cols.timestamps for cols in all_cols]).tolist(),
                                       np.concatenate([cols.offsets for cols in all_cols]), None)
                    offsets[(bs[0].topic, bs[0].partition)] = bs[-1].next_offset
                    continue
                for b, cols in zip(bs, all_cols):
                    headers = None
                    if cols.header_counts.any():
                        headers = [cols.headers(i) for i in range(len(cols))]
                    task.process_batch(b.topic, cols.keys(), cols.values(), cols.timestamps.tolist(), cols.offsets,
                                       headers)
                    offsets[(b.topic, b.partition)] = b.next_offset
                continue
            for topic, offset, key, value, timestamp, headers in heapq.merge(
                    *(records_of(q) for q in queues.values()), key=lambda r: r[4]):
                task.process(topic, key, value, timestamp, headers, offset)
                offsets[(topic, partition)] = offset + 1

    # -- commit
    def commit(self) -> None:
        """Flush the stores, then at-least-once: flush the producer and commit the
        consumed offsets; exactly-once: send the consumed offsets to the transaction
        with the consumer's group metadata and commit it (a transaction with nothing
        consumed or written is not begun)."""
        tm = self.task_manager
        tm.flush()
        # Kafka's prepareCommit: what was sent is answered, and a failed send is
        # handled, before any offset is committed
        self.producer.flush()
        tm.check_deliveries()
        if not self.exactly_once:
            if tm.consumed:
                committed = dict(tm.consumed)
                self.consumer.commit(committed)
                tm.maybe_purge_committed_records(committed)
            return
        offsets = self._offsets_to_commit()
        if offsets:
            group = self.consumer.group_metadata()
            if group.generation_id < 0:
                # The member left the group (max.poll.interval.ms passed while a record
                # was processed) and others may have the partitions now: offsets sent
                # without a generation would not be fenced (KIP-447), so never send them.
                raise UnknownMemberIdError(f"{self.app.application_id}: this instance is no longer a member of its "
                                           "group; its transaction is aborted")
            if not self.in_transaction:
                self.begin_transaction()
            self.producer.send_offsets_to_transaction(offsets, group)
            tm.consumed.clear()
            tm.committed.update(offsets)
        if self.in_transaction:
            self.producer.commit_transaction()
            self.in_transaction = False
        if offsets:
            tm.maybe_purge_committed_records(offsets)

    def _offsets_to_commit(self) -> Dict[Tuple[str, int], int]:
        """Exactly-once: the consumed offsets, each moved up to the consumer's position
        where that is further (past the transaction markers that end a partition, as
        Kafka Streams commits them), so a caught-up app has no lag of 1 per marker."""
        tm = self.task_manager
        offsets = dict(tm.consumed)
        for tp in set(offsets).union(tm.committed):
            pos = self.consumer.position(tp)
            if pos > max(offsets.get(tp, -1), tm.committed.get(tp, -1)):
                offsets[tp] = pos
        return offsets

    # -- exactly-once
    def begin_transaction(self) -> None:
        self.producer.begin_transaction()
        self.in_transaction = True

    def handle_task_migrated(self, exc: BaseException, rewind: bool = True) -> None:
        """The group or a newer producer took this thread's work away (Kafka's
        TaskMigratedException, under either guarantee; at-least-once: a commit refused
        because the group moved on): abort the transaction, close every task dirty, and
        (``rewind``) put the input back at the committed offsets.  A fenced producer is
        replaced by a new one (which fences in turn, if this instance is the zombie)."""
        log.warning("%s: tasks migrated (%s): aborting the transaction and rebuilding the tasks from their "
                    "changelogs", self.app.application_id, exc)
        self._abort_and_close_tasks()
        if self.producer.transaction_state == "FATAL_ERROR":
            self.producer.close()
            self.open_producer()
        if rewind:
            self._rewind_to_committed()

    def _abort_and_close_tasks(self) -> None:
        if self.in_transaction:
            self.in_transaction = False
            try:
                self.producer.abort_transaction()
            except PylogError as exc:     # fenced: the coordinator aborts it for the newer producer
                log.warning("%s: abort_transaction failed: %s", self.app.application_id, exc)
        self.task_manager.close_dirty()

    def _rewind_to_committed(self) -> None:
        assigned = self.consumer.assignment()
        if not assigned:
            return
        committed = self.consumer.committed(assigned)
        for tp in assigned:
            oam = committed.get(tp)
            if oam is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, oam.offset)

    # -- errors no handler took
    def _handle_uncaught(self, exc: BaseException) -> bool:
        """Apply the app's uncaught exception handler's answer; False: there is none
        (the caller raises)."""
        app = self.app
        handler = app._uncaught_handler
        if handler is None:
            return False
        response = handler(exc)
        if not isinstance(response, StreamThreadExceptionResponse):
            raise TypeError(f"the uncaught exception handler returned {response!r}, not a "
                            "StreamThreadExceptionResponse") from exc
        log.error("%s: uncaught exception %r: %s", app.application_id, exc, response.name)
        self._close_tasks_dirty()
        if response is StreamThreadExceptionResponse.REPLACE_THREAD:
            self._assigned = False
            self._rejoin()
            self._set_state(State.REBALANCING)
            return True
        self.failed = True
        self._set_state(State.PENDING_ERROR)
        app._fail_client()
        if response is StreamThreadExceptionResponse.SHUTDOWN_APPLICATION:
            self._request_application_shutdown()
        app.stop()
        return True

    def _close_tasks_dirty(self) -> None:
        if self.exactly_once:
            self._abort_and_close_tasks()
        else:
            self.task_manager.close_dirty()

    def _rejoin(self) -> None:
        """Leave the group and join again as a new member (a replaced stream thread's
        new consumer); what is revoked meanwhile is dropped, not committed."""
        consumer = self.consumer
        was_failed, self.failed = self.failed, True
        try:
            consumer.unsubscribe()
        finally:
            self.failed = was_failed
        consumer.subscribe(sorted(self.app.metadata.topic_group), StreamsRebalanceListener(self))

    def _request_application_shutdown(self, timeout_s: float = 30.0) -> None:
        """Join again with SHUTDOWN_REQUESTED in the subscription and wait (polling, the
        records dropped) until the group's assignment carries it back to this member."""
        for a in self._signal_assignors:
            a.error_code = SHUTDOWN_REQUESTED
        consumer = self.consumer
        # stay a member (leaving would hand this instance's partitions to the others,
        # which would process them before they learn of the request)
        consumer.enforce_rebalance("SHUTDOWN_APPLICATION requested")
        deadline = time.monotonic() + timeout_s
        while not any(a.shutdown_requested.is_set() for a in self._signal_assignors):
            if time.monotonic() >= deadline:
                log.error("%s: the shutdown request did not come back through the group within %.0f s",
                          self.app.application_id, timeout_s)
                return
            consumer.poll(timeout_ms=100, max_records=1)

    # -- an added thread
    def start(self, poll_timeout_ms: int) -> None:
        """Run an added thread on a new (daemon) thread: open its producer, join the
        group, loop until stopped.  An error no handler took is handed to the app,
        which stops and raises it from thread 1."""
        self._thread = threading.Thread(target=self._run_added, args=(poll_timeout_ms,), name=self.name, daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> bool:
        """Wait for an added thread to end; True when it did."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    def _run_added(self, poll_timeout_ms: int) -> None:
        app = self.app
        try:
            try:
                self.open_producer()
                self.join_group()
            except BaseException:
                self.failed = True
                self.close()
                raise
            self.run(poll_timeout_ms=poll_timeout_ms)
        except BaseException as exc:    # handed to the thread that calls app.run
            log.error("%s: stream thread %d failed: %r", app.application_id, self.thread_index, exc)
            app._thread_failed(exc)
        finally:
            app._notify_released()

    # -- close
    def close(self) -> None:
        """Close the consumer first (leaving the group revokes its partitions, which
        commits and closes their tasks: the producer must still be open for that), then
        the tasks (dirty when the thread failed), standbys, the global stores (thread
        1) and the producer; the thread ends NOT_RUNNING, or ERROR when it failed."""
        app = self.app
        for c in (self.consumer, self.global_consumer):
            if c is not None:
                c.close(autocommit=False)
        self.task_manager.close(clean=not self.failed)
        if self.thread_index == 1 and app.global_task is not None:
            app.global_task.close()
        if self.producer is not None:
            self.producer.close()
        app._notify_released()
        for state in final_states(self.failed or app.state is State.PENDING_ERROR):
            self._set_state(state)
