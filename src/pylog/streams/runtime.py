"""Running a topology against a cluster through pylog's client API (Kafka Streams'
``KafkaStreams``): ``StreamsApp(topology, application_id).run(pylog.open(dir))`` embedded,
or ``run(pylog.connect(bootstrap))`` against ``pylog serve``, a pylog cluster or Kafka.

What it does, as Kafka Streams does:

* creates the internal topics: ``<application.id>-<name>-repartition`` (as many
  partitions as the sub-topology writing it has tasks) and
  ``<application.id>-<store>-changelog`` (``cleanup.policy=compact``; window and session
  stores ``compact,delete``), one partition per task;
* checks co-partitioning: the source topics of a sub-topology that joins (has a store
  shared by two sources) must have the same partition count, else TopologyError;
* reads every source and repartition topic in one consumer group named after the
  application id; one :class:`~pylog.streams.task.StreamTask` per sub-topology and
  partition (``<subtopology>_<partition>``), created when its partition is assigned and
  restored first from its stores' changelogs (timestamped stores get their values'
  timestamps back from the changelog records); of what a poll brings, a task takes
  next the record with the smallest timestamp among its partitions (Kafka's partition
  group, without waiting for empty partitions: ``max.task.idle.ms`` is 0); input is
  read with ``poll_batches`` (``max.poll.records``, default 10000, so fetched batches are
  rarely cut), and a task with one polled partition takes what a poll brought of it at
  once (:meth:`StreamTask.process_batch`; batch by batch when a record has headers): a
  stateless chain runs as one fused loop and its output goes to the producer through
  ``send_batch``, each record with its own timestamp;
* bootstraps every global store from the beginning of its topic before processing,
  then keeps it up to date;
* at-least-once (``processing.guarantee`` / ``processing_guarantee`` ``"at_least_once"``,
  the default): every ``commit.interval.ms`` (default 30000; and on stop) it flushes the
  stores, flushes the producer, then commits the consumed offsets;
* exactly-once (``"exactly_once_v2"``, Kafka's KIP-447 mode): one transactional producer
  per instance, ``transactional.id`` ``<application.id>-<process id>-1`` (Kafka's
  ``<application.id>-<processId>-<thread index>``; the process id is a UUID kept in
  ``<state.dir>/<application.id>/kafka-streams-process-metadata``, so a restarted instance
  fences its predecessor and aborts its open transaction in ``init_transactions``).  A
  transaction begins with the first record a commit interval writes; every
  ``commit.interval.ms`` (default 100 under exactly-once) the stores are flushed (their
  changelog records join the transaction), the consumed offsets are sent with the
  consumer's group metadata (``send_offsets_to_transaction``: a member fenced by a
  rebalance cannot commit) and the transaction is committed.  Every consumer (input,
  restore, global) reads ``read_committed``.  When the group takes the partitions away
  (lost: UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION) or the producer is fenced, the open
  transaction is aborted, every task is closed dirty (its state may hold writes of the
  aborted transaction) and the input is rewound to the committed offsets; tasks are
  rebuilt from their changelogs, up to the last committed transaction.  A processing
  error aborts the transaction too, then fails ``run``.  Crash behaviour, Kafka's rule:
  a task closed cleanly (after a commit) writes ``<state.dir>/<application.id>/<task
  id>/.checkpoint`` (Kafka's OffsetCheckpoint format) with the changelog offset each
  persistent store holds; a task being created reads and deletes it, keeps those stores
  and restores them from the next offset.  Without a checkpoint (a crash, an abort) the
  task's directory is wiped and its stores restored from the beginning of their
  changelogs, since local state may hold writes of an aborted transaction.
  (At-least-once restores every store from the beginning and writes no checkpoint.)

Several instances with the same application id share the tasks through the group
(:mod:`.assignor`: sticky, by tasks per instance, lag-aware).  In a rebalance an
instance commits and suspends its tasks (open); once the assignment is known, tasks
that stay go on where they were, tasks given away close (or stay as standbys), and
new tasks are taken over from this instance's standby of them (restoring only the
changelog's tail) or rebuilt from their changelogs.  A restore stops between fetches
when the group rebalances or the app stops (the restore listener's
``on_restore_suspended``); what it restored is kept as a standby, and resumes from
there when the task comes back.

Standby replicas (``num.standby.replicas``, default 0; Kafka's ``StandbyTask``): the
logged stores of a task run elsewhere, kept on this instance by reading their
changelogs continuously (one consumer for all of them, polled without waiting between
input polls; ``read_committed`` under exactly-once).  A standby's persistent stores
write the task's ``.checkpoint`` when it closes (and at a commit once 10000 changelog
records came in since the last), so a new standby or a restart resumes there;
without a checkpoint its directory is wiped and it reads from the beginning.  Interactive
queries may read standbys with ``enable_stale_stores()``.

Stream threads (``num.stream.threads``, default 1; Kafka's ``StreamThread``): each
thread is one member of the group with its own consumer, producer (under exactly-once
its own transactional id), tasks, standbys and standby consumer; the assignor knows
the threads of one instance by their process id, splits the instance's tasks over
them and never puts a standby on the instance running its task.  ``run`` drives
thread 1 on the calling thread and starts the others; :meth:`StreamsApp.add_stream_thread`
and :meth:`StreamsApp.remove_stream_thread` add and remove threads while it runs.  The
global stores are bootstrapped and updated once per instance, by thread 1.  The threads
share one query lock (a query sees no thread's batch half processed); a task moving
between two threads of the instance is opened by the new one only once the old one has
let it go.  An error no handler takes in any thread stops the instance and ``run``
raises it.  :meth:`StreamsApp.stop` may be called from any thread.

Errors: a failing record goes to Kafka's deserialization, processing and production
exception handlers, with an optional dead letter queue (:mod:`pylog.streams.errors`);
what escapes them goes to the uncaught exception handler, and ``app.state`` follows
Kafka's ``KafkaStreams.State`` (:mod:`pylog.streams._uncaught`).
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import shutil
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np

from pylog.client import ConsumerRebalanceListener
from pylog.errors import (FencedInstanceIdError, IllegalGenerationError, InvalidProducerEpochError,
                          ProducerFencedError, PylogError, TopicAlreadyExistsError, UnknownMemberIdError)

from . import iq as _iq
from .assignor import LATEST_OFFSET, StreamsPartitionAssignor, TaskId, parse_task_id
from .errors import DeliveryWatch, TaskCorruptedError
from .restore import RestoreSuspended, changelog_records, restore_store, show_restore_progress
from .state.checkpoint import CHECKPOINT_FILE_NAME, read_checkpoint, write_checkpoint
from .state.persistent import store_directory
from ._uncaught import AppStateMixin
from .task import StandbyTask, StreamTask, logged_stores
from .topology import Topology, TopologyError

__all__ = ["StreamsApp", "AT_LEAST_ONCE", "EXACTLY_ONCE_V2"]

log = logging.getLogger("pylog.streams")
# send_batch pays off (over a send per record) for calls of at least this many records
_MIN_RUN = 16
#: A standby's checkpoint is rewritten at a commit once its stores moved this many
#: changelog records on (Kafka's OFFSET_DELTA_THRESHOLD_FOR_CHECKPOINT); always on close.
_CHECKPOINT_DELTA = 10_000
#: Past any changelog offset: a standby applies whatever it fetched.
_NO_END = 1 << 62


AT_LEAST_ONCE = "at_least_once"
EXACTLY_ONCE_V2 = "exactly_once_v2"
#: Kafka Streams' file of the instance's process id, in ``<state.dir>/<application.id>``.
PROCESS_FILE_NAME = "kafka-streams-process-metadata"
#: The group took the tasks away, or a newer producer holds the transactional id:
#: Kafka's TaskMigratedException.  The transaction is aborted and the tasks rebuilt.
_TASK_MIGRATED = (ProducerFencedError, InvalidProducerEpochError, IllegalGenerationError, UnknownMemberIdError,
                  FencedInstanceIdError)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _setting(config: Dict[str, Any], name: str, default: Any) -> Any:
    """A setting by Kafka's dotted name or its snake_case twin (``commit.interval.ms`` or
    ``commit_interval_ms``)."""
    if name in config:
        return config[name]
    return config.get(name.replace(".", "_"), default)


def _processing_guarantee(config: Dict[str, Any]) -> str:
    value = str(_setting(config, "processing.guarantee", AT_LEAST_ONCE)).lower()
    if value == "exactly_once_beta":       # Kafka's name of exactly_once_v2 before 3.0
        value = EXACTLY_ONCE_V2
    if value not in (AT_LEAST_ONCE, EXACTLY_ONCE_V2):
        raise ValueError(f"processing.guarantee is {AT_LEAST_ONCE!r} or {EXACTLY_ONCE_V2!r}, got {value!r} "
                         "(exactly-once v1, one producer per task, is not supported, as in Kafka 4.0)")
    return value


class _Collector:
    """Sends what the tasks write through the app's producer."""

    def __init__(self, app: "StreamsApp") -> None:
        self.app = app

    def send(self, topic: str, key: Optional[bytes], value: Optional[bytes], timestamp: int, headers: Any,
             partitioner: Any, partition: Optional[int]) -> Any:
        """The producer's future of the record (see :class:`~.errors.DeliveryWatch`)."""
        app = self.app
        if app.exactly_once and not app.in_transaction:
            app.begin_transaction()
        if partition is None and partitioner is not None:
            partition = partitioner(topic, key, value, app.partitions_of(topic))
        return app.producer.send(topic, value=value, key=key, headers=list(headers) if headers else None,
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
        app = self.app
        if app.exactly_once and not app.in_transaction:
            app.begin_transaction()
        producer = app.producer
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
            exc.records_sent = sent     # the caller hands the rest to the production handler
            raise


class _TaskMover(ConsumerRebalanceListener):
    """Hands tasks over in a rebalance: before partitions go, what their tasks did is
    committed (stores, producer, offsets; under exactly-once the transaction, which
    holds every task's work) and the tasks are suspended, open (Kafka's eager
    rebalance).  Once the assignment is known, a suspended task assigned again goes on
    as it was; one given away becomes a standby if the assignment says so, else it is
    closed; a task new here is taken over from its standby (only the changelog's tail
    is restored) or rebuilt from its changelogs.  Partitions lost (the member was
    dropped from the group) cannot be committed: their tasks are closed dirty (under
    exactly-once the transaction is aborted and every task closed dirty)."""

    def __init__(self, app: "StreamsApp") -> None:
        self.app = app

    def on_partitions_revoked(self, revoked: Set[Any]) -> None:
        if revoked:
            app = self.app
            if app.failed:
                app._drop_tasks(revoked)
                return
            try:
                app.commit()
            except _TASK_MIGRATED as exc:
                if not app.exactly_once:
                    raise
                app.handle_task_migrated(exc)
                return
            app._suspend_tasks(revoked)

    def on_partitions_lost(self, lost: Set[Any]) -> None:
        app = self.app
        if app.exactly_once and not app.failed:
            app.handle_task_migrated(UnknownMemberIdError("the group dropped this member: partitions lost"),
                                     rewind=False)
            return
        app._drop_tasks(lost)

    def on_partitions_assigned(self, assigned: Set[Any]) -> None:
        # Kafka Streams builds (and restores) a task when its partitions are assigned,
        # so its stores answer interactive queries before any new input arrives.
        if not self.app.failed:
            self.app._on_assignment()


class StreamsApp(AppStateMixin):
    """A topology running under one application id.

    Parameters
    ----------
    topology
        From :meth:`StreamsBuilder.build` or the Processor API.
    application_id
        The consumer group, and the prefix of internal topics.
    config
        ``processing.guarantee`` (``"at_least_once"``, the default, or
        ``"exactly_once_v2"``), ``commit.interval.ms`` (default 30000; 100 under
        exactly-once), ``transaction.timeout.ms`` (default 10000, Kafka Streams'),
        ``state.dir``, ``default.key.serde`` / ``default.value.serde``, the group
        member's ``group.instance.id`` (static membership), ``session.timeout.ms``,
        ``heartbeat.interval.ms`` and ``max.poll.interval.ms``,
        ``num.standby.replicas`` (default 0), ``acceptable.recovery.lag`` (default
        10000), ``max.warmup.replicas`` (default 2), ``probing.rebalance.interval.ms``
        (default 600000), ``num.stream.threads`` (default 1), ``application.server``,
        and any
        processor settings (``app_config``).  Each name may also be given in snake_case
        (``processing_guarantee``).
    """

    def __init__(self, topology: Topology, application_id: str, config: Optional[Dict[str, Any]] = None) -> None:
        if not application_id:
            raise ValueError("a streams app needs an application_id")
        self.topology = topology
        self.application_id = application_id
        self.config = dict(config or {})
        self.processing_guarantee = _processing_guarantee(self.config)
        self.exactly_once = self.processing_guarantee == EXACTLY_ONCE_V2
        self.commit_interval_ms = int(_setting(self.config, "commit.interval.ms",
                                               100 if self.exactly_once else 30_000))
        self.transaction_timeout_ms = int(_setting(self.config, "transaction.timeout.ms", 10_000))
        self.state_dir = str(_setting(self.config, "state.dir", ""))
        #: A transaction is open (exactly-once): records were sent since the last commit.
        self.in_transaction = False
        #: run() is failing: a rebalance on the way out must not commit.
        self.failed = False
        self._process_id: Optional[str] = None
        # records per poll: enough that a fetched batch (up to 1 MiB) is rarely cut in two
        self.max_poll_records = int(self.config.get("max.poll.records", 10_000))
        self.tasks: Dict[Tuple[int, int], StreamTask] = {}
        #: Standby replicas this instance keeps (Kafka's ``num.standby.replicas``).
        self.num_standby_replicas = int(_setting(self.config, "num.standby.replicas", 0))
        if self.num_standby_replicas < 0:
            raise ValueError(f"num.standby.replicas is at least 0, got {self.num_standby_replicas}")
        self.standbys: Dict[TaskId, StandbyTask] = {}
        #: Stream threads (Kafka's ``num.stream.threads``): this object is thread 1 and
        #: runs on the thread that calls run(); threads 2.. are StreamsApps of their own
        #: (``_parent`` set) sharing the topology, process id, global stores and query lock.
        self.num_stream_threads = int(_setting(self.config, "num.stream.threads", 1))
        if self.num_stream_threads < 1:
            raise ValueError(f"num.stream.threads is at least 1, got {self.num_stream_threads}")
        self.thread_index = 1
        self._parent: Optional["StreamsApp"] = None
        self._children: List["StreamsApp"] = []
        self._child_threads: Dict[int, threading.Thread] = {}
        self._child_error: Optional[BaseException] = None
        self._next_thread_index = 2
        self._threads_lock = threading.Lock()
        self._state_change_lock = threading.RLock()
        #: notified when a thread releases a task (another thread of this process may wait for it)
        self._released = threading.Condition()
        self._poll_timeout_ms = 100
        self._standby_consumer: Any = None
        #: (changelog topic, partition) -> (standby task, store) it feeds
        self._standby_feeds: Dict[Tuple[str, int], Tuple[TaskId, str]] = {}
        self._standby_checkpointed: Dict[TaskId, int] = {}
        self.global_task: Optional[StreamTask] = None
        self._stop = threading.Event()
        self._partition_counts: Dict[str, int] = {}
        self._offsets: Dict[Tuple[str, int], int] = {}
        #: Exactly-once: offsets committed by this instance, of the partitions it has.
        self._committed: Dict[Tuple[str, int], int] = {}
        groups = topology.node_groups()
        self._groups = [(gid, names) for gid, names in groups if not topology.is_global_group(names)]
        self._global_names = [n for _, names in groups if topology.is_global_group(names) for n in names]
        self._topic_group: Dict[str, int] = {}
        for gid, names in self._groups:
            for t in self._source_topics(names):
                self._topic_group[t] = gid
        self.client: Any = None
        self.producer: Any = None
        self.consumer: Any = None
        #: Interactive queries (:mod:`.iq`): this instance's ``application.server``
        #: (``host:port``), the group assignor that learns everyone's, and the lock a
        #: query holds while it reads stores (the run loop holds it while it processes).
        self.application_server: Optional[str] = _setting(self.config, "application.server", None)
        self.partition_assignor: Optional[StreamsPartitionAssignor] = None
        self.iq_lock = threading.RLock()
        #: A task's stores are being restored (queries raise InvalidStateStoreError).
        self.restoring = False
        self.restore_listener: Any = None
        #: Draw a restore progress bar (``restore_progress``; default: stderr is a terminal).
        self.restore_progress = show_restore_progress(_setting(self.config, "restore_progress", None))

    # -- topology facts
    def _internal(self, topic: str) -> str:
        return f"{self.application_id}-{topic}" if topic in self.topology.repartition_topics else topic

    def _source_topics(self, names: List[str]) -> List[str]:
        nodes = self.topology.nodes
        return [self._internal(t) for n in names if nodes[n].kind == "source" for t in nodes[n].topics]

    def _changelogs(self, names: List[str]) -> List[Tuple[str, str, Any]]:
        """(store, changelog topic, meta) of the logged stores of a group."""
        return [(sname, topic, self.topology.stores[sname])
                for sname, topic in logged_stores(self.topology, names, self.application_id).items()]

    def partitions_of(self, topic: str) -> int:
        n = self._partition_counts.get(topic)
        if n is None:
            n = self._partition_counts[topic] = self.client.num_partitions(topic)
        return n

    # -- set-up
    def _task_counts(self) -> Dict[int, int]:
        """Tasks per sub-topology; sizes repartition topics after their writers."""
        topo = self.topology
        counts: Dict[int, int] = {}
        pending = list(self._groups)
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
                            writer = self._writer_group(t)
                            sizes.append(fixed if fixed else counts.get(writer, -1))
                        else:
                            sizes.append(self.partitions_of(t))
                if -1 in sizes:
                    left.append((gid, names))
                    continue
                shares_store = any(len({self._source_of(u, names) for u in m.users}) > 1
                                   for m in topo.stores.values() if any(u in names for u in m.users))
                if shares_store and len(set(sizes)) > 1:
                    raise TopologyError(f"sub-topology {gid} joins topics with different partition counts "
                                        f"({dict(zip(self._source_topics(names), sizes))}): co-partition them "
                                        "(same partition count) or repartition one side")
                counts[gid] = max(sizes) if sizes else 1
            pending = left
            if not pending:
                return counts
        raise TopologyError("repartition topics feed each other in a cycle; their partition counts are unknown")

    def _writer_group(self, topic: str) -> int:
        for gid, names in self._groups:
            for n in names:
                node = self.topology.nodes[n]
                if node.kind == "sink" and node.topic == topic:
                    return gid
        return -1

    def _source_of(self, node_name: str, names: List[str]) -> Optional[str]:
        """The source a node descends from (the first, following first parents)."""
        nodes = self.topology.nodes
        while nodes[node_name].kind != "source":
            node_name = nodes[node_name].predecessors[0]
        return node_name

    def _create_internal_topics(self, counts: Dict[int, int]) -> None:
        topo = self.topology
        wanted: Dict[str, Tuple[int, Dict[str, str]]] = {}
        for t, fixed in topo.repartition_topics.items():
            reader = t in topo.copartitioned_topics
            n = fixed or counts[self._topic_group[self._internal(t)] if reader else self._writer_group(t)]
            wanted[self._internal(t)] = (n, {"cleanup.policy": "delete"})
        for gid, names in self._groups:
            for sname, topic, meta in self._changelogs(names):
                policy = "compact" if meta.kind == "key_value" else "compact,delete"
                cfg = {"cleanup.policy": policy}
                cfg.update(meta.builder.log_config)
                wanted[topic] = (counts[gid], cfg)
        for topic, (n, cfg) in wanted.items():
            try:
                self.client.create_topic(topic, n, config=cfg)
            except TopicAlreadyExistsError:
                have = self.client.num_partitions(topic)
                if have != n:
                    raise TopologyError(f"internal topic {topic!r} has {have} partitions, the app needs {n}: "
                                        "reset the application (`pylog streams reset --application-id "
                                        f"{self.application_id}`, which deletes its internal topics)") from None
            self._partition_counts[topic] = n

    # -- tasks
    def _task(self, gid: int, partition: int, wait: bool = True) -> StreamTask:
        task = self.tasks.get((gid, partition))
        if task is None:
            if self._parent is not None or self._children:
                # never waits holding the query lock: the other thread needs it to let go
                self._wait_for_siblings((gid, partition), 30.0 if wait else 0.0)
            names = dict(self._groups)[gid]
            task_id = f"{gid}_{partition}"
            checkpointed: Dict[str, int] = {}
            adopted = None
            standby = self.standbys.pop((gid, partition), None)
            if standby is not None:
                # the standby's stores become the task's: only the changelogs' tail is
                # restored, from where the standby stopped
                self._unfeed(gid, partition)
                adopted = standby.take_stores()
                checkpointed = {sname: pos - 1 for sname, pos in standby.positions.items()}
                self._delete_checkpoint(task_id)
                log.info("task %s of %s takes its state over from its standby", task_id, self.application_id)
            elif self.exactly_once:
                checkpointed = self._take_checkpoint(task_id, names, partition)
            else:
                self._delete_checkpoint(task_id)    # a standby's: stale once the task writes
            shared = {} if self.global_task is None else dict(self.global_task.stores)
            watch = DeliveryWatch(self._collector)     # the production handler sees failed sends
            task = StreamTask(self.topology, names, application_id=self.application_id,
                              task_id=task_id, config=self.config, collector=watch,
                              state_dir=self.state_dir, partition=partition,
                              wall_clock=_now_ms, shared_stores=shared,
                              default_key_serde=self.config.get("default.key.serde"),
                              default_value_serde=self.config.get("default.value.serde"),
                              adopted_stores=adopted)
            watch.task = task
            try:
                self._restore(task, names, partition, checkpointed)
            except RestoreSuspended as exc:
                # keep what was restored: the task's state waits as a standby, and
                # resumes from there when the task is assigned here again
                self._task_to_standby((gid, partition), task, getattr(exc, "positions", None))
                raise
            self.tasks[(gid, partition)] = task
        return task

    def _delete_checkpoint(self, task_id: str) -> None:
        path = os.path.join(self._task_dir(task_id), CHECKPOINT_FILE_NAME)
        if os.path.exists(path):
            os.remove(path)

    def _task_dir(self, task_id: str) -> str:
        return os.path.dirname(os.path.dirname(store_directory(self.state_dir, self.application_id, task_id, "-")))

    def _take_checkpoint(self, task_id: str, names: List[str], partition: int) -> Dict[str, int]:
        """Exactly-once, before a task is built: the stores' checkpointed changelog
        offsets (store -> last offset it holds), from the ``.checkpoint`` a clean close
        wrote.  The file is deleted at once, so a crash from here on leaves none.  A
        store without an offset may hold writes of an aborted (or never committed)
        transaction: its directory is wiped (all of the task's without a checkpoint)."""
        task_dir = self._task_dir(task_id)
        path = os.path.join(task_dir, CHECKPOINT_FILE_NAME)
        offsets = read_checkpoint(path) or {}
        if os.path.exists(path):
            os.remove(path)
        if not offsets:
            shutil.rmtree(task_dir, ignore_errors=True)
            return {}
        out = {}
        for sname, topic, _meta in self._changelogs(names):
            offset = offsets.get((topic, partition))
            if offset is None:
                shutil.rmtree(store_directory(self.state_dir, self.application_id, task_id, sname),
                              ignore_errors=True)
            else:
                out[sname] = offset
        return out

    def _write_checkpoint(self, task: StreamTask, gid: int) -> None:
        """Exactly-once, after a clean close (everything the task wrote is committed):
        for each persistent logged store, the last changelog offset it holds.  The last
        stable offset is used, so an offset is never past what the store holds (a
        commit marker still to come only makes the next restore re-read records)."""
        offsets = {}
        for sname, topic, _meta in self._changelogs(dict(self._groups)[gid]):
            if getattr(task.stores[sname], "persistent", False):
                lso = self.client.list_offsets(topic, task.partition, -1, isolation_level=1).offset
                if lso > 0:
                    offsets[(topic, task.partition)] = lso - 1
        if offsets:
            write_checkpoint(os.path.join(self._task_dir(task.task_id), CHECKPOINT_FILE_NAME), offsets)

    def _close_task(self, gid: int, task: StreamTask, clean: bool) -> None:
        task.close()
        if clean and self.exactly_once:
            self._write_checkpoint(task, gid)

    def _restore(self, task: StreamTask, names: List[str], partition: int,
                 checkpointed: Optional[Dict[str, int]] = None) -> None:
        """Each logged store from its changelog: from the offset after its checkpointed
        one, else from the beginning, telling the restore listener
        (:mod:`.restore`).  Raises RestoreSuspended when :meth:`stop` is asked meanwhile."""
        self.restoring = True
        # next offset each store needs: kept on the exception when the restore stops,
        # so the task's standby resumes there
        positions = {sname: (checkpointed or {}).get(sname, -1) + 1 for sname, _t, _m in self._changelogs(names)}
        try:
            for sname, topic, meta in self._changelogs(names):
                start = (checkpointed or {}).get(sname)
                c = self.client.consumer(enable_auto_commit=False, auto_offset_reset="earliest",
                                         isolation_level=self._isolation_level)
                try:
                    n = restore_store(c, (topic, partition), sname, task.stores[sname],
                                      start=None if start is None else start + 1, timestamped=meta.timestamped,
                                      listener=self.restore_listener, progress=self.restore_progress,
                                      suspend=self._restore_suspended)
                    positions[sname] = c.position((topic, partition))
                except RestoreSuspended as exc:
                    positions[sname] = max(exc.position, 0)
                    exc.positions = positions     # type: ignore[attr-defined]
                    raise
                finally:
                    c.close(autocommit=False)
                if n:
                    log.info("restored %d records of store %s (task %s) from %s", n, sname, task.task_id, topic)
        finally:
            self.restoring = False

    def _maybe_probe(self) -> None:
        """A probing rebalance is due (tasks wait for their warm-up replicas to catch
        up): rejoin, reporting the warm-ups' lags, so the leader can move them."""
        assignor = self.partition_assignor
        probe = assignor.next_probing_rebalance_ms if assignor is not None else 0
        if probe and _now_ms() >= probe:
            assignor.next_probing_rebalance_ms = 0      # type: ignore[union-attr]
            self.consumer.enforce_rebalance("probing rebalance: warm-up replicas may have caught up")

    def _restore_suspended(self) -> bool:
        """A restore stops between fetches when the app stops or its group rebalances
        (the task's state is kept as a standby and the restore resumes from there)."""
        if self._stop.is_set():
            return True
        consumer = self.consumer
        return consumer is not None and consumer.rebalance_in_progress()

    def _create_tasks(self, tasks: Set[TaskId]) -> None:
        """Build (and restore) the active ``tasks`` not built yet; a restore cut short
        by :meth:`stop` leaves its task unbuilt (its records stay unconsumed)."""
        for gid, partition in sorted(tasks):
            if (gid, partition) in self.tasks:
                continue
            try:
                self._task(gid, partition)
            except RestoreSuspended as exc:
                log.info("%s: %s", self.application_id, exc)
                return

    # -- rebalances: suspended tasks, standbys
    def _suspend_tasks(self, partitions: Set[Any]) -> None:
        """The partitions were revoked after a commit: their tasks stay open (and
        queryable) until :meth:`_on_assignment` knows whether they stay here."""
        with self.iq_lock:
            for tp in partitions:
                self._offsets.pop((tp[0], tp[1]), None)
                self._committed.pop((tp[0], tp[1]), None)

    def _assigned_tasks(self) -> Set[TaskId]:
        return {(self._topic_group[tp[0]], tp[1]) for tp in self.consumer.assignment() if tp[0] in self._topic_group}

    def _on_assignment(self) -> None:
        """The member got its assignment: tasks kept go on, tasks given away become
        standbys (when assigned as such) or close, standbys no longer wanted close (their
        checkpoints written), new standbys open, and the new active tasks are built,
        from their standbys where this instance has them."""
        active = self._assigned_tasks()
        assignor = self.partition_assignor
        stateful = self._stateful_groups()
        wanted = {t for t in (assignor.standby_tasks if assignor is not None else ())
                  if t[0] in stateful and t not in active}
        with self.iq_lock:
            for key in [k for k in self.tasks if k not in active]:
                task = self.tasks.pop(key)
                if key in wanted and key not in self.standbys:
                    self._task_to_standby(key, task)
                else:
                    self._close_task(key[0], task, clean=not self.failed)
                    log.info("task %s of %s moved away", task.task_id, self.application_id)
            for key in [k for k in self.standbys if k not in wanted and k not in active]:
                self._close_standby(key)
        self._notify_released()
        for key in sorted(wanted - set(self.standbys)):
            self._open_standby(key)
        self._create_tasks(active)

    def _stateful_groups(self) -> Set[int]:
        return {gid for gid, names in self._groups if self._changelogs(names)}

    def _task_to_standby(self, key: TaskId, task: StreamTask, positions: Optional[Dict[str, int]] = None) -> None:
        """An active task given away but kept as a standby: its logged stores stay open
        as they are (everything it wrote is committed: they hold their changelogs up to
        the end, or up to ``positions`` for a task whose restore was cut short), the
        rest closes."""
        gid, partition = key
        changelogs = {sname: topic for sname, topic, _ in self._changelogs(dict(self._groups)[gid])}
        kept = task.close(keep_stores=changelogs)
        if positions is None:
            ends = self._end_offsets([(topic, partition) for topic in changelogs.values()])
            positions = {sname: ends[(topic, partition)] for sname, topic in changelogs.items()}
        self.standbys[key] = StandbyTask(self.topology, dict(self._groups)[gid], application_id=self.application_id,
                                         task_id=task.task_id, config=self.config, state_dir=self.state_dir,
                                         partition=partition, default_key_serde=self.config.get("default.key.serde"),
                                         default_value_serde=self.config.get("default.value.serde"),
                                         adopted_stores=kept, positions=positions)
        self._feed(key)
        log.info("task %s of %s stays here as a standby", task.task_id, self.application_id)

    def _open_standby(self, key: TaskId) -> None:
        """A new standby: persistent stores keep what their checkpoint covers (a
        store's directory without one is wiped); the rest is read from the changelog
        as the standby catches up, between polls."""
        gid, partition = key
        names = dict(self._groups)[gid]
        task_id = f"{gid}_{partition}"
        if self._parent is not None or self._children:
            try:
                self._wait_for_siblings(key)
            except RestoreSuspended:
                log.warning("%s: standby %s not opened: another stream thread still holds the task",
                            self.application_id, task_id)
                return
        checkpointed = self._take_checkpoint(task_id, names, partition)
        standby = StandbyTask(self.topology, names, application_id=self.application_id, task_id=task_id,
                              config=self.config, state_dir=self.state_dir, partition=partition,
                              default_key_serde=self.config.get("default.key.serde"),
                              default_value_serde=self.config.get("default.value.serde"),
                              positions={sname: offset + 1 for sname, offset in checkpointed.items()})
        self.standbys[key] = standby
        self._standby_checkpointed[key] = sum(standby.positions.values())
        self._feed(key)
        log.info("standby task %s of %s opened", task_id, self.application_id)

    def _close_standby(self, key: TaskId) -> None:
        standby = self.standbys.pop(key)
        self._unfeed(*key)
        standby.flush()
        self._checkpoint_standby(key, standby)
        standby.close()
        self._standby_checkpointed.pop(key, None)
        log.info("standby task %s of %s closed", standby.task_id, self.application_id)

    def _checkpoint_standby(self, key: TaskId, standby: StandbyTask) -> None:
        """The last changelog offset each persistent store of the standby holds, in the
        task's ``.checkpoint`` (call after a flush)."""
        offsets = {(topic, key[1]): standby.positions[sname] - 1 for sname, topic in standby.changelogs.items()
                   if getattr(standby.stores.get(sname), "persistent", False) and standby.positions[sname] > 0}
        if offsets:
            write_checkpoint(os.path.join(self._task_dir(standby.task_id), CHECKPOINT_FILE_NAME), offsets)
            self._standby_checkpointed[key] = sum(standby.positions.values())

    def _feed(self, key: TaskId) -> None:
        """Read the standby's changelog partitions from its positions on."""
        standby = self.standbys[key]
        for sname, topic in standby.changelogs.items():
            self._standby_feeds[(topic, key[1])] = (key, sname)
        self._assign_standby_consumer()

    def _unfeed(self, gid: int, partition: int) -> None:
        self._standby_feeds = {tp: v for tp, v in self._standby_feeds.items() if v[0] != (gid, partition)}
        self._assign_standby_consumer()

    def _assign_standby_consumer(self) -> None:
        c = self._standby_consumer
        if c is None:
            if not self._standby_feeds:
                return
            c = self._standby_consumer = self.client.consumer(enable_auto_commit=False,
                                                              auto_offset_reset="earliest",
                                                              isolation_level=self._isolation_level)
        have = c.assignment()
        tps = sorted(self._standby_feeds)
        c.assign(tps)
        for tp in tps:
            if tp not in have:
                key, sname = self._standby_feeds[tp]
                c.seek(tp, self.standbys[key].positions[sname])

    def _update_standbys(self) -> None:
        """Apply what the standby consumer fetched (no waiting), under the query lock."""
        c = self._standby_consumer
        if c is None or not self._standby_feeds:
            return
        batches = c.poll_batches(timeout_ms=0)
        if not batches:
            return
        with self.iq_lock:
            for b in batches:
                feed = self._standby_feeds.get((b.topic, b.partition))
                if feed is None:
                    continue
                standby = self.standbys[feed[0]]
                records, _last = changelog_records(b, _NO_END, standby.timestamped[feed[1]])
                standby.restore_batch(feed[1], records, b.next_offset)

    def _end_offsets(self, tps: List[Tuple[str, int]]) -> Dict[Tuple[str, int], int]:
        """Changelog end offsets (the last stable offset under exactly-once)."""
        level = 1 if self.exactly_once else 0
        out = {}
        for topic, partition in tps:
            res = self.client.list_offsets(topic, partition, -1, isolation_level=level)
            res.raise_for_error()
            out[(topic, partition)] = res.offset
        return out

    def _task_state(self) -> Tuple[Set[TaskId], Set[TaskId], Dict[TaskId, int]]:
        """What this member reports when it joins (Kafka's SubscriptionInfo): its
        active tasks (suspended ones included), its standbys, and per task the sum of
        the changelog offsets its state holds: -2 (latest) for active tasks, the
        standbys' positions, and the ``.checkpoint`` of task directories on disk."""
        with self.iq_lock:
            active = set(self.tasks)
            standby = set(self.standbys)
            sums: Dict[TaskId, int] = {k: LATEST_OFFSET for k in active}
            for k, sb in self.standbys.items():
                sums[k] = sum(sb.positions.values())
        app_dir = os.path.dirname(self._task_dir("-"))
        try:
            entries = os.listdir(app_dir)
        except OSError:
            entries = []
        for entry in entries:
            try:
                key = parse_task_id(entry)
            except ValueError:
                continue
            if key in sums:
                continue
            offsets = read_checkpoint(os.path.join(app_dir, entry, CHECKPOINT_FILE_NAME))
            if offsets:
                sums[key] = sum(o + 1 for o in offsets.values())
        return active, standby, sums

    def _end_offset_sums(self, tasks: Set[TaskId]) -> Dict[TaskId, int]:
        """The leader's side of the lags: per task, the sum of its changelogs' end offsets."""
        out = {}
        groups = dict(self._groups)
        for gid, partition in tasks:
            names = groups.get(gid)
            if names is None:
                continue
            tps = [(topic, partition) for _s, topic, _m in self._changelogs(names)]
            try:
                out[(gid, partition)] = sum(self._end_offsets(tps).values())
            except PylogError as exc:   # a lag unknown only weakens stickiness
                log.warning("%s: end offsets of task %d_%d unknown: %s", self.application_id, gid, partition, exc)
        return out

    def set_global_state_restore_listener(self, listener: Any) -> None:
        """Tell ``listener`` (``on_restore_start``, ``on_batch_restored``,
        ``on_restore_end``, optionally ``on_restore_suspended``: :mod:`.restore`) about
        every store restored from its changelog.  Set it before :meth:`run`."""
        self.restore_listener = listener

    def _bootstrap_globals(self) -> List[Tuple[str, int]]:
        if not self._global_names:
            return []
        self.global_task = StreamTask(self.topology, self._global_names, application_id=self.application_id,
                                      task_id="global", config=self.config, collector=self._collector,
                                      wall_clock=_now_ms,
                                      default_key_serde=self.config.get("default.key.serde"),
                                      default_value_serde=self.config.get("default.value.serde"))
        gtask = self.global_task
        parts = [(t, p) for t in gtask.sources for p in range(self.partitions_of(t))]
        store_of = self._global_store_of_topic()

        def apply(b: Any, end: int) -> Tuple[int, int]:
            n = last = 0
            for _topic, offset, key, value, timestamp, headers in self._records_of([b]):
                if offset < end:
                    gtask.process(b.topic, key, value, timestamp, headers, offset)  # type: ignore[union-attr]
                    n, last = n + 1, offset
            return n, last
        for tp in parts:   # each global store from its topic, told to the restore listener
            c = self.client.consumer(enable_auto_commit=False, auto_offset_reset="earliest",
                                     isolation_level=self._isolation_level)
            try:
                restore_store(c, tp, store_of.get(tp[0], tp[0]), None, listener=self.restore_listener,
                              progress=self.restore_progress, apply=apply)
            finally:
                c.close(autocommit=False)
        return parts

    def _global_store_of_topic(self) -> Dict[str, str]:
        """Global source topic -> the global store its records go to."""
        out: Dict[str, str] = {}
        nodes = self.topology.nodes
        for sname, meta in self.topology.stores.items():
            if meta.is_global:
                for user in meta.users:
                    for t in nodes[self._source_of(user, self._global_names)].topics:
                        out[t] = sname
        return out

    # -- the loop
    def run(self, client: Any, *, until_idle: bool = False, idle_polls: int = 3, poll_timeout_ms: int = 100) -> None:
        """Process until :meth:`stop` (or, with ``until_idle``, until ``idle_polls``
        polls in a row bring nothing), then commit and close the app's clients."""
        self.client = client
        self._collector = _Collector(self)
        self.failed = False
        self.in_transaction = False
        self._poll_timeout_ms = poll_timeout_ms
        self.producer = self._make_producer()
        global_parts: List[Tuple[str, int]] = []
        if self._parent is None:
            counts = self._task_counts()
            self._create_internal_topics(counts)
            global_parts = self._bootstrap_globals()
        global_consumer = None
        if global_parts:
            global_consumer = client.consumer(enable_auto_commit=False, auto_offset_reset="latest",
                                              isolation_level=self._isolation_level)
            global_consumer.assign(global_parts)
            for tp in global_parts:
                global_consumer.seek_to_end(tp)
        topics = sorted(self._topic_group)
        self.partition_assignor = StreamsPartitionAssignor(
            self.process_id(), self.application_server, topic_group=self._topic_group,
            stateful_groups=self._stateful_groups(), num_standby_replicas=self.num_standby_replicas,
            task_state=self._task_state, end_offset_sums=self._end_offset_sums,
            acceptable_recovery_lag=int(_setting(self.config, "acceptable.recovery.lag", 10_000)),
            max_warmup_replicas=int(_setting(self.config, "max.warmup.replicas", 2)),
            probing_rebalance_interval_ms=int(_setting(self.config, "probing.rebalance.interval.ms", 600_000)))
        self.consumer = client.consumer(group_id=self.application_id, auto_offset_reset="earliest",
                                        client_id=f"{self._thread_name(self.thread_index)}-consumer",
                                        enable_auto_commit=False, isolation_level=self._isolation_level,
                                        partition_assignment_strategy=[self.partition_assignor],
                                        **self._member_config())
        self.consumer.subscribe(topics, _TaskMover(self))
        self._join_streams_group(self.consumer)
        last_commit = _now_ms()
        idle = 0
        try:
            if self._parent is None:
                for _ in range(self.num_stream_threads - 1):
                    self.add_stream_thread()
            while not self._stop.is_set():
                if self._child_error is not None:
                    raise self._child_error
                try:
                    records = self.consumer.poll_batches(timeout_ms=poll_timeout_ms,
                                                         max_records=self.max_poll_records)
                    self._after_poll()
                    self._maybe_probe()
                    if records and not self._stop.is_set():
                        self._process_batches(records)
                    self._update_standbys()
                    with self.iq_lock:  # global updates and punctuators write stores too
                        if global_consumer is not None:
                            for r in global_consumer.poll(timeout_ms=0):
                                self.global_task.process(r.topic, r.key, r.value,  # type: ignore[union-attr]
                                                         r.timestamp, r.headers, r.offset)
                        for task in list(self.tasks.values()):
                            task.punctuate_wall_clock()
                    now = _now_ms()
                    if now - last_commit >= self.commit_interval_ms:
                        self.commit()
                        last_commit = now
                except TaskCorruptedError as exc:   # a production handler's RETRY
                    self.handle_task_migrated(exc)
                    records = []
                except _TASK_MIGRATED as exc:
                    if not self.exactly_once:
                        raise
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
            if self._child_error is not None:
                raise self._child_error
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
            self._stop_children()
            self._close_clients(global_consumer)
            self._finish_state()

    # -- exactly-once
    @property
    def _isolation_level(self) -> str:
        return "read_committed" if self.exactly_once else "read_uncommitted"

    def _member_config(self) -> Dict[str, Any]:
        """The consumer's group settings the app config may set (Kafka's names)."""
        out: Dict[str, Any] = {}
        for name in ("group.instance.id", "session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms"):
            value = _setting(self.config, name, None)
            if value is not None:
                out[name.replace(".", "_")] = value if name == "group.instance.id" else int(value)
        return out

    def process_id(self) -> str:
        """This instance's process id: a UUID kept in
        ``<state.dir>/<application.id>/kafka-streams-process-metadata`` (JSON
        ``{"processId": ...}``, Kafka Streams' file), made on first use.  A file that does
        not parse is replaced (logged)."""
        if self._process_id is not None:
            return self._process_id
        if self._parent is not None:
            return self._parent.process_id()
        app_dir = os.path.dirname(os.path.dirname(os.path.dirname(
            store_directory(self.state_dir, self.application_id, "-", "-"))))
        path = os.path.join(app_dir, PROCESS_FILE_NAME)
        pid = None
        try:
            with open(path, encoding="utf-8") as f:
                pid = str(uuid.UUID(json.load(f)["processId"]))
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, OSError) as exc:
            log.warning("%s is damaged (%s): the instance takes a new process id", path, exc)
        if pid is None:
            pid = str(uuid.uuid4())
            os.makedirs(app_dir, exist_ok=True)
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"processId": pid}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        self._process_id = pid
        return pid

    def transactional_id(self) -> str:
        """``<application.id>-<process id>-<thread index>``: Kafka Streams'
        transactional id of a stream thread under exactly_once_v2 (1 for the thread
        that calls run)."""
        return f"{self.application_id}-{self.process_id()}-{self.thread_index}"

    def _make_producer(self) -> Any:
        linger_ms = int(_setting(self.config, "linger.ms", 5))
        # Kafka's "producer."-prefixed configs (e.g. producer.delivery.timeout.ms)
        extra = {k[9:].replace(".", "_"): v for k, v in self.config.items() if k.startswith("producer.")}
        base = {"acks": "all", "linger_ms": linger_ms, "client_id": f"{self._thread_name(self.thread_index)}-producer"}
        if not self.exactly_once:
            return self.client.producer(**{**base, **extra})
        producer = self.client.producer(**{**base, **extra},
                                        transactional_id=self.transactional_id(),
                                        transaction_timeout_ms=self.transaction_timeout_ms)
        # fences an earlier producer of this instance and aborts its open transaction
        # before anything is restored or read
        producer.init_transactions()
        return producer

    def begin_transaction(self) -> None:
        self.producer.begin_transaction()
        self.in_transaction = True

    def handle_task_migrated(self, exc: BaseException, rewind: bool = True) -> None:
        """The group or a newer producer took this instance's work away (Kafka's
        TaskMigratedException): abort the transaction, close every task dirty, and
        (``rewind``) put the input back at the committed offsets.  A fenced producer is
        replaced by a new one (which fences in turn, if this instance is the zombie)."""
        log.warning("%s: tasks migrated (%s): aborting the transaction and rebuilding the tasks from their "
                    "changelogs", self.application_id, exc)
        self._abort_and_close_tasks()
        if self.producer.transaction_state == "FATAL_ERROR":
            self.producer.close()
            self.producer = self._make_producer()
        if rewind:
            self._rewind_to_committed()

    def _abort_and_close_tasks(self) -> None:
        if self.in_transaction:
            self.in_transaction = False
            try:
                self.producer.abort_transaction()
            except PylogError as exc:     # fenced: the coordinator aborts it for the newer producer
                log.warning("%s: abort_transaction failed: %s", self.application_id, exc)
        with self.iq_lock:
            for task in self.tasks.values():
                task.close()
            self.tasks.clear()
        self._offsets.clear()
        self._committed.clear()

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

    def _process_batches(self, batches: List[Any]) -> None:
        with self.iq_lock:  # no query reads a store while a poll's records change it
            self._process_batches_locked(batches)

    def _process_batches_locked(self, batches: List[Any]) -> None:
        """Give each task what a poll brought: a task with one polled partition takes
        its batches in one :meth:`StreamTask.process_batch` (one per batch when a
        record has headers); a task with several takes
        their records one at a time, always from the partition whose next record has
        the smallest timestamp (a task's partition group, as Kafka's)."""
        by_task: Dict[Tuple[int, int], Dict[Tuple[str, int], List[Any]]] = {}
        for b in batches:
            tid = (self._topic_group[b.topic], b.partition)
            by_task.setdefault(tid, {}).setdefault((b.topic, b.partition), []).append(b)
        offsets = self._offsets
        for (gid, partition), queues in by_task.items():
            try:
                task = self._task(gid, partition, wait=False)
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
                    *(self._records_of(q) for q in queues.values()), key=lambda r: r[4]):
                task.process(topic, key, value, timestamp, headers, offset)
                offsets[(topic, partition)] = offset + 1

    @staticmethod
    def _records_of(batches: List[Any]) -> Any:
        """(topic, offset, key, value, timestamp, headers) of each record of ``batches``."""
        for b in batches:
            cols = b.columns()
            with_headers = cols.header_counts.any()
            for i, (offset, key, value, timestamp) in enumerate(zip(cols.offsets.tolist(), cols.keys(), cols.values(),
                                                                     cols.timestamps.tolist())):
                yield b.topic, offset, key, value, timestamp, cols.headers(i) if with_headers else ()

    def _drop_tasks(self, partitions: Set[Any], clean: bool = False) -> None:
        with self.iq_lock:
            self._drop_tasks_locked(partitions, clean)

    def _drop_tasks_locked(self, partitions: Set[Any], clean: bool = False) -> None:
        """Close the tasks of ``partitions``; ``clean``: what they did is committed (under
        exactly-once their checkpoints are written)."""
        for tp in partitions:
            topic, partition = tp[0], tp[1]
            self._offsets.pop((topic, partition), None)
            self._committed.pop((topic, partition), None)
            gid = self._topic_group.get(topic)
            task = self.tasks.pop((gid, partition), None) if gid is not None else None
            if gid is not None and task is not None:
                self._close_task(gid, task, clean)
                log.info("task %s of %s moved away", task.task_id, self.application_id)

    def commit(self) -> None:
        """Flush the stores, then at-least-once: flush the producer and commit the
        consumed offsets; exactly-once: send the consumed offsets to the transaction
        with the consumer's group metadata and commit it (a transaction with nothing
        consumed or written is not begun)."""
        with self.iq_lock:
            for task in self.tasks.values():
                task.flush()
            for key, standby in self.standbys.items():
                if sum(standby.positions.values()) - self._standby_checkpointed.get(key, 0) >= _CHECKPOINT_DELTA:
                    standby.flush()
                    self._checkpoint_standby(key, standby)
        # Kafka's prepareCommit: what was sent is answered, and a failed send is
        # handled, before any offset is committed
        self.producer.flush()
        for task in list(self.tasks.values()):
            task.collector.check()
        if not self.exactly_once:
            if self._offsets:
                self.consumer.commit(dict(self._offsets))
            return
        offsets = self._offsets_to_commit()
        if offsets:
            group = self.consumer.group_metadata()
            if group.generation_id < 0:
                # The member left the group (max.poll.interval.ms passed while a record
                # was processed) and others may have the partitions now: offsets sent
                # without a generation would not be fenced (KIP-447), so never send them.
                raise UnknownMemberIdError(f"{self.application_id}: this instance is no longer a member of its "
                                           "group; its transaction is aborted")
            if not self.in_transaction:
                self.begin_transaction()
            self.producer.send_offsets_to_transaction(offsets, group)
            self._offsets.clear()
            self._committed.update(offsets)
        if self.in_transaction:
            self.producer.commit_transaction()
            self.in_transaction = False

    def _offsets_to_commit(self) -> Dict[Tuple[str, int], int]:
        """Exactly-once: the consumed offsets, each moved up to the consumer's position
        where that is further (past the transaction markers that end a partition, as
        Kafka Streams commits them), so a caught-up app has no lag of 1 per marker."""
        offsets = dict(self._offsets)
        for tp in set(offsets).union(self._committed):
            pos = self.consumer.position(tp)
            if pos > max(offsets.get(tp, -1), self._committed.get(tp, -1)):
                offsets[tp] = pos
        return offsets

    def stop(self) -> None:
        """Ask :meth:`run` to commit and return (safe from another thread); every stream
        thread stops."""
        self._stop.set()
        for child in list(self._children):
            child._stop.set()

    # -- stream threads
    def _thread_name(self, index: int) -> str:
        return f"{self.application_id}-{self.process_id()}-StreamThread-{index}"

    def stream_threads(self) -> List["StreamsApp"]:
        """The running stream threads of this instance (this app first, then the
        threads added, oldest first)."""
        root = self._parent or self
        with root._threads_lock:
            return [root] + list(root._children)

    def add_stream_thread(self) -> Optional[str]:
        """Start one more stream thread (Kafka's ``KafkaStreams#addStreamThread``): a
        new member of the group, with its own consumer, producer (under exactly-once its
        transactional id ends with the thread's index), tasks and standbys; the group
        rebalances and the thread gets its share of the tasks.  Returns its name, or
        None when the app is not running (or stopping)."""
        if self._parent is not None:
            return self._parent.add_stream_thread()
        if self.client is None or self._stop.is_set() or self.consumer is None or self.consumer.closed:
            return None
        with self._threads_lock:
            index = self._next_thread_index
            self._next_thread_index += 1
            child = StreamsApp(self.topology, self.application_id, self.config)
            child._parent = self
            child.thread_index = index
            child.iq_lock = self.iq_lock
            child.global_task = self.global_task
            child._partition_counts = dict(self._partition_counts)
            child.restore_listener = self.restore_listener
            child.restore_progress = self.restore_progress
            child._uncaught_handler = self._uncaught_handler
            name = self._thread_name(index)
            thread = threading.Thread(target=child._run_as_thread, name=name, daemon=True)
            self._children.append(child)
            self._child_threads[index] = thread
        thread.start()
        log.info("%s: stream thread %s added", self.application_id, name)
        return name

    def remove_stream_thread(self, timeout_s: float = 60.0) -> Optional[str]:
        """Stop the most recently added stream thread (Kafka's
        ``KafkaStreams#removeStreamThread``): it commits, closes its tasks and leaves
        the group, whose other members take its tasks over.  Returns its name, or None
        when only the thread that runs :meth:`run` is left (it is not removed).

        Raises
        ------
        TimeoutError
            The thread did not finish within ``timeout_s``.
        """
        if self._parent is not None:
            return self._parent.remove_stream_thread(timeout_s)
        with self._threads_lock:
            if not self._children:
                return None
            child = self._children[-1]
            thread = self._child_threads[child.thread_index]
        child.stop()
        thread.join(timeout_s)
        if thread.is_alive():
            raise TimeoutError(f"stream thread {thread.name} did not stop within {timeout_s} s")
        self._forget_child(child)
        log.info("%s: stream thread %s removed", self.application_id, thread.name)
        return thread.name

    def _forget_child(self, child: "StreamsApp") -> None:
        with self._threads_lock:
            if child in self._children:
                self._children.remove(child)
            self._child_threads.pop(child.thread_index, None)
        with self._released:
            self._released.notify_all()

    def _run_as_thread(self) -> None:
        """A stream thread's body: run until stopped; an error no handler took stops
        the whole instance, and the thread calling run raises it."""
        parent = self._parent
        assert parent is not None
        try:
            self.run(parent.client, poll_timeout_ms=parent._poll_timeout_ms)
        except BaseException as exc:    # handed to the thread that calls run
            log.error("%s: stream thread %d failed: %r", self.application_id, self.thread_index, exc)
            parent._child_error = exc
            parent._stop.set()
        finally:
            if self.failed and self.state is self.State.ERROR and parent._child_error is None:
                # SHUTDOWN_CLIENT / SHUTDOWN_APPLICATION answered in this thread
                parent.failed = True
                parent._set_state(self.State.PENDING_ERROR)
                parent.stop()
            with parent._released:
                parent._released.notify_all()

    def _stop_children(self) -> None:
        for child in list(self._children):
            child.stop()
        for child in list(self._children):
            thread = self._child_threads.get(child.thread_index)
            if thread is not None:
                thread.join(60)
                if thread.is_alive():
                    log.error("%s: stream thread %s did not stop", self.application_id, thread.name)
                    continue
            self._forget_child(child)

    def _siblings(self) -> List["StreamsApp"]:
        return [t for t in self.stream_threads() if t is not self]

    def _wait_for_siblings(self, key: TaskId, timeout_s: float = 30.0) -> None:
        """A task moving between two threads of this process: wait until the thread
        that held it (suspended, or as a standby) has let it go, so the two never open
        the task's stores (and directory) at once.  Raises RestoreSuspended when it does
        not within ``timeout_s``, or this thread is stopping."""
        root = self._parent or self
        deadline = time.monotonic() + timeout_s
        with root._released:
            while any(key in t.tasks or key in t.standbys for t in self._siblings()):
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    exc = RestoreSuspended(f"task {key[0]}_{key[1]} is still held by another stream thread")
                    raise exc
                root._released.wait(min(left, 0.05))

    def _notify_released(self) -> None:
        root = self._parent or self
        with root._released:
            root._released.notify_all()

    def store(self, params: "_iq.StoreQueryParameters") -> Any:
        """Interactive queries: a read-only view (in the store's types) over every local
        task's store named by ``params`` (``StoreQueryParameters.from_name_and_type(name,
        QueryableStoreTypes.key_value_store())``, or ``window_store()`` /
        ``session_store()``); see :mod:`pylog.streams.iq`.  Safe from any thread.

        Raises
        ------
        InvalidStateStoreError
            The app is not running or is restoring, or the store is not of that type
            or not in the topology.
        """
        return _iq.store_view(self, params)

    def query_metadata_for_key(self, store_name: str, key: Any, key_serializer: Any,
                               partitioner: Any = None) -> "_iq.KeyQueryMetadata":
        """The instance (``application.server``) holding ``key`` of ``store_name``:
        ``KeyQueryMetadata(active_host, standby_hosts, partition)``, as of the last
        rebalance; ``KeyQueryMetadata.NOT_AVAILABLE`` before the first.  The key is
        serialised with ``key_serializer`` (a Serde or a callable) and placed as the
        producer places it, or by ``partitioner(topic, key, value, num_partitions)``."""
        return _iq.metadata_for_key(self, store_name, key, key_serializer, partitioner)

    def metadata_for_all_stream_clients(self) -> List["_iq.StreamsMetadata"]:
        """Every instance of the app that set ``application.server``: its host, stores
        and input partitions, as of the last rebalance."""
        return _iq.all_metadata(self)

    def metadata_for_local_threads(self) -> List["_iq.ThreadMetadata"]:
        """This instance's stream threads: name, state, consumer client id, active and
        standby tasks (Kafka's ``KafkaStreams#metadataForLocalThreads``)."""
        return _iq.local_threads(self)

    def streams_metadata_for_store(self, store_name: str) -> List["_iq.StreamsMetadata"]:
        """The instances holding a partition of ``store_name``, as active or standby."""
        return [m for m in _iq.all_metadata(self)
                if store_name in m.state_store_names or store_name in m.standby_state_store_names]

    def _close_clients(self, global_consumer: Any) -> None:
        # the consumer first: leaving the group revokes its partitions, which commits and
        # closes their tasks (the producer must still be open for that)
        for c in (self.consumer, global_consumer):
            if c is not None:
                c.close(autocommit=False)
        for (gid, _), task in self.tasks.items():
            self._close_task(gid, task, clean=not self.failed)
        self.tasks.clear()
        for key in list(self.standbys):
            self._close_standby(key)
        if self._standby_consumer is not None:
            self._standby_consumer.close(autocommit=False)
            self._standby_consumer = None
        if self.global_task is not None and self._parent is None:
            self.global_task.close()
        if self.producer is not None:
            self.producer.close()
        self._notify_released()

    def active_tasks(self) -> Set[str]:
        """The ids of the active tasks of every stream thread of this instance."""
        return {t.task_id for thread in self.stream_threads() for t in list(thread.tasks.values())}

    def standby_tasks(self) -> Set[str]:
        """The ids of the standby tasks of every stream thread of this instance."""
        return {t.task_id for thread in self.stream_threads() for t in list(thread.standbys.values())}

    def clean_up(self) -> List[str]:
        """Delete this application's local state under ``state.dir`` (Kafka Streams'
        ``KafkaStreams#cleanUp``): every task directory and the global stores', so the
        next :meth:`run` rebuilds its stores from the changelogs (or from nothing, after
        ``pylog streams reset``).  Returns the directories deleted.  Raises
        IllegalStateError while :meth:`run` is processing."""
        from pylog.errors import IllegalStateError

        from .reset import clean_up_state

        if any(t.tasks or (t.consumer is not None and not t.consumer.closed) for t in self.stream_threads()):
            raise IllegalStateError(f"{self.application_id}: clean_up() while the app runs: stop it first")
        return clean_up_state(self.state_dir, self.application_id)
