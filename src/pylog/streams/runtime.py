"""Running a topology against a cluster through pylog's client API (Kafka Streams'
``KafkaStreams``): ``StreamsApp(topology, application_id).run(pylog.open(dir))`` embedded,
or ``run(pylog.connect(bootstrap))`` against ``pylog serve``, a pylog cluster or Kafka.

The application object; the work is done by its parts, as in Kafka Streams:

* :mod:`.topology_metadata`: the sub-topologies and the internal topics ``run``
  creates: ``<application.id>-<name>-repartition`` (as many partitions as the
  sub-topology writing it has tasks) and ``<application.id>-<store>-changelog``
  (``cleanup.policy=compact``; window and session stores ``compact,delete``), one
  partition per task; co-partitioning is checked (TopologyError);
* :mod:`.stream_thread`: each stream thread (``num.stream.threads``, default 1; Kafka's
  ``StreamThread``) is one member of the consumer group named after the application
  id, with its own consumer, producer (under exactly-once its own transactional id
  ``<application.id>-<process id>-<thread index>``), poll / process / punctuate /
  commit loop (at-least-once: every ``commit.interval.ms``, default 30000; exactly-once
  ``"exactly_once_v2"``, Kafka's KIP-447 mode: default 100) and rebalance listener;
* :mod:`.task_manager`: a thread's active and standby tasks (``num.standby.replicas``,
  default 0), built, restored from their changelogs (:mod:`.restore`), handed over in
  rebalances and checkpointed;
* :mod:`.state_directory`: ``<state.dir>/<application.id>``: the process id file
  (``kafka-streams-process-metadata``; a restarted instance keeps its id, so under
  exactly-once it fences its predecessor), the task directories and ``.checkpoint``
  files;
* :mod:`.assignor`: several instances with the same application id share the tasks
  through the group (sticky, by tasks per instance, lag-aware); the assignor knows the
  threads of one instance by their process id, splits the instance's tasks over them
  and never puts a standby on the instance running its task.

What the app itself does: its state (Kafka's ``KafkaStreams.State``) with the state
listener and the uncaught exception handler (:mod:`._uncaught`); ``run`` creates the
internal topics, bootstraps every global store from the beginning of its topic (told to
the restore listener) and runs thread 1 on the calling thread, which starts the others
and keeps the global stores up to date; :meth:`StreamsApp.add_stream_thread` and
:meth:`StreamsApp.remove_stream_thread` add and remove threads while it runs.  The
threads share one query lock (a query sees no thread's batch half processed); a task
moving between two threads of the instance is opened by the new one only once the old
one has let it go.  Interactive queries (:mod:`.iq`) read every thread's stores; the
metadata routes a key to the instance that hosts it.

Errors: a failing record goes to Kafka's deserialization, processing and production
exception handlers, with an optional dead letter queue (:mod:`pylog.streams.errors`);
what escapes them goes to the uncaught exception handler.  An error no handler takes
in any thread stops the instance and ``run`` raises it.

Crash behaviour: under exactly-once a task closed cleanly writes its ``.checkpoint``
and a task without one is rebuilt from the beginning of its changelogs (local state
may hold writes of an aborted transaction); at-least-once restores every active task's
stores from the beginning (:mod:`.task_manager`).  Nothing the app writes itself but
the process id file.

Thread safety: :meth:`StreamsApp.stop`, :meth:`StreamsApp.add_stream_thread`,
:meth:`StreamsApp.remove_stream_thread`, the interactive queries and the metadata
calls may be called from any thread; :meth:`StreamsApp.run` from one at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from . import iq as _iq
from ._uncaught import AppStateMixin
from .assignor import StreamsPartitionAssignor, TaskId
from .config import AT_LEAST_ONCE, EXACTLY_ONCE_V2, now_ms, processing_guarantee, setting
from .restore import RestoreSuspended, restore_store, show_restore_progress
from .state_directory import PROCESS_FILE_NAME, StateDirectory
from .stream_thread import StreamThread, records_of
from .task import StandbyTask, StreamTask
from .topology import Topology
from .topology_metadata import TopologyMetadata, create_internal_topics

__all__ = ["StreamsApp", "AT_LEAST_ONCE", "EXACTLY_ONCE_V2", "PROCESS_FILE_NAME"]

log = logging.getLogger("pylog.streams")


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
        self._init_state()
        self.topology = topology
        self.application_id = application_id
        self.config = dict(config or {})
        self.processing_guarantee = processing_guarantee(self.config)
        self.exactly_once = self.processing_guarantee == EXACTLY_ONCE_V2
        self.commit_interval_ms = int(setting(self.config, "commit.interval.ms",
                                              100 if self.exactly_once else 30_000))
        self.transaction_timeout_ms = int(setting(self.config, "transaction.timeout.ms", 10_000))
        self.state_dir = str(setting(self.config, "state.dir", ""))
        self.state_directory = StateDirectory(self.state_dir, application_id)
        self.metadata = TopologyMetadata(topology, application_id)
        # records per poll: enough that a fetched batch (up to 1 MiB) is rarely cut in two
        self.max_poll_records = int(self.config.get("max.poll.records", 10_000))
        #: Standby replicas this instance keeps (Kafka's ``num.standby.replicas``).
        self.num_standby_replicas = int(setting(self.config, "num.standby.replicas", 0))
        if self.num_standby_replicas < 0:
            raise ValueError(f"num.standby.replicas is at least 0, got {self.num_standby_replicas}")
        #: Stream threads (Kafka's ``num.stream.threads``): thread 1 runs on the thread
        #: that calls run(); the others on threads of their own.
        self.num_stream_threads = int(setting(self.config, "num.stream.threads", 1))
        if self.num_stream_threads < 1:
            raise ValueError(f"num.stream.threads is at least 1, got {self.num_stream_threads}")
        self._stop = threading.Event()
        self._threads_lock = threading.Lock()
        self._threads: List[StreamThread] = [StreamThread(self, 1, self._stop)]
        self._next_thread_index = 2
        self._thread_error: Optional[BaseException] = None
        #: notified when a thread releases a task (another thread of this process may wait for it)
        self._released = threading.Condition()
        self._poll_timeout_ms = 100
        self.global_task: Optional[StreamTask] = None
        self._partition_counts: Dict[str, int] = {}
        self.client: Any = None
        #: Interactive queries (:mod:`.iq`): this instance's ``application.server``
        #: (``host:port``) and the lock a query holds while it reads stores (the stream
        #: threads hold it while they process).
        self.application_server: Optional[str] = setting(self.config, "application.server", None)
        self.iq_lock = threading.RLock()
        self.restore_listener: Any = None
        #: Draw a restore progress bar (``restore_progress``; default: stderr is a terminal).
        self.restore_progress = show_restore_progress(setting(self.config, "restore_progress", None))

    # -- facts
    @property
    def isolation_level(self) -> str:
        """Every consumer's (input, restore, global): ``read_committed`` under exactly-once."""
        return "read_committed" if self.exactly_once else "read_uncommitted"

    def partitions_of(self, topic: str) -> int:
        n = self._partition_counts.get(topic)
        if n is None:
            n = self._partition_counts[topic] = self.client.num_partitions(topic)
        return n

    def process_id(self) -> str:
        """This instance's process id: a UUID kept in
        ``<state.dir>/<application.id>/kafka-streams-process-metadata`` (JSON
        ``{"processId": ...}``, Kafka Streams' file), made on first use.  A file that does
        not parse is replaced (logged)."""
        return self.state_directory.process_id()

    def transactional_id(self) -> str:
        """``<application.id>-<process id>-1``: Kafka Streams' transactional id of
        thread 1 (the one that calls run) under exactly_once_v2; each stream thread's is
        :meth:`StreamThread.transactional_id`."""
        return f"{self.application_id}-{self.process_id()}-1"

    @property
    def _main(self) -> StreamThread:
        return self._threads[0]

    # thread 1's, for the callers that knew the app as its only thread
    @property
    def consumer(self) -> Any:
        """Thread 1's consumer (None before :meth:`run`)."""
        return self._main.consumer

    @property
    def producer(self) -> Any:
        """Thread 1's producer (None before :meth:`run`)."""
        return self._main.producer

    @property
    def tasks(self) -> Dict[TaskId, StreamTask]:
        """Thread 1's active tasks, by (sub-topology, partition); :meth:`active_tasks`
        names every thread's."""
        return self._main.tasks

    @property
    def standbys(self) -> Dict[TaskId, StandbyTask]:
        """Thread 1's standby tasks; :meth:`standby_tasks` names every thread's."""
        return self._main.standbys

    @property
    def partition_assignor(self) -> Optional[StreamsPartitionAssignor]:
        """Thread 1's group assignor: it learns every instance's ``application.server``."""
        return self._main.partition_assignor

    def set_global_state_restore_listener(self, listener: Any) -> None:
        """Tell ``listener`` (``on_restore_start``, ``on_batch_restored``,
        ``on_restore_end``, optionally ``on_restore_suspended``: :mod:`.restore`) about
        every store restored from its changelog.  Set it before :meth:`run`."""
        self.restore_listener = listener

    # -- run
    def run(self, client: Any, *, until_idle: bool = False, idle_polls: int = 3, poll_timeout_ms: int = 100) -> None:
        """Process until :meth:`stop` (or, with ``until_idle``, until ``idle_polls``
        polls in a row bring nothing), then commit and close the app's clients.

        Raises
        ------
        TopologyError
            The topology cannot run on these topics (co-partitioning, an internal
            topic with another partition count).
        Exception
            What no handler took, in any stream thread.  The app's clients are closed
            and its state is ERROR.
        """
        self.client = client
        self.failed = False
        self._thread_error = None
        self._poll_timeout_ms = poll_timeout_ms
        main = StreamThread(self, 1, self._stop)
        with self._threads_lock:
            self._threads = [main]
            self._next_thread_index = 2
        try:
            main.open_producer()
            create_internal_topics(client, self.metadata, self.metadata.task_counts(self.partitions_of),
                                   self._partition_counts, self.config)
            main.global_consumer = self._bootstrap_globals(main)
            main.join_group()
        except BaseException:
            # nothing processed yet: close what was opened, and end in ERROR as a failed run does
            self.failed = main.failed = True
            main.close()
            self._finish_state()
            raise
        try:
            main.run(until_idle=until_idle, idle_polls=idle_polls, poll_timeout_ms=poll_timeout_ms)
        except BaseException:
            self.failed = True
            raise
        finally:
            self._finish_state()

    def stop(self) -> None:
        """Ask :meth:`run` to commit and return (safe from any thread); every stream
        thread stops."""
        self._stop.set()
        for thread in self.stream_threads():
            thread.stop()

    def _bootstrap_globals(self, main: StreamThread) -> Any:
        """Build the global stores' task and fill its stores from the beginning of their
        topics (told to the restore listener); returns the consumer that keeps them up
        to date from there (None: no global stores)."""
        names = self.metadata.global_names
        if not names:
            return None
        self.global_task = StreamTask(self.topology, names, application_id=self.application_id,
                                      task_id="global", config=self.config, collector=main.collector,
                                      wall_clock=now_ms,
                                      default_key_serde=self.config.get("default.key.serde"),
                                      default_value_serde=self.config.get("default.value.serde"))
        gtask = self.global_task
        parts = [(t, p) for t in gtask.sources for p in range(self.partitions_of(t))]
        store_of = self.metadata.global_store_of_topic()

        def apply(b: Any, end: int) -> Tuple[int, int]:
            n = last = 0
            for _topic, offset, key, value, timestamp, headers in records_of([b]):
                if offset < end:
                    gtask.process(b.topic, key, value, timestamp, headers, offset)
                    n, last = n + 1, offset
            return n, last
        for tp in parts:   # each global store from its topic, told to the restore listener
            c = self.client.consumer(enable_auto_commit=False, auto_offset_reset="earliest",
                                     isolation_level=self.isolation_level)
            try:
                restore_store(c, tp, store_of.get(tp[0], tp[0]), None, listener=self.restore_listener,
                              progress=self.restore_progress, apply=apply)
            finally:
                c.close(autocommit=False)
        if not parts:
            return None
        consumer = self.client.consumer(enable_auto_commit=False, auto_offset_reset="latest",
                                        isolation_level=self.isolation_level)
        consumer.assign(parts)
        for tp in parts:
            consumer.seek_to_end(tp)
        return consumer

    # -- stream threads
    def _thread_name(self, index: int) -> str:
        return f"{self.application_id}-{self.process_id()}-StreamThread-{index}"

    def stream_threads(self) -> List[StreamThread]:
        """This instance's stream threads (thread 1 first, then the threads added,
        oldest first)."""
        with self._threads_lock:
            return list(self._threads)

    def has_sibling_threads(self) -> bool:
        return len(self._threads) > 1

    def add_stream_thread(self) -> Optional[str]:
        """Start one more stream thread (Kafka's ``KafkaStreams#addStreamThread``): a
        new member of the group, with its own consumer, producer (under exactly-once its
        transactional id ends with the thread's index), tasks and standbys; the group
        rebalances and the thread gets its share of the tasks.  Returns its name, or
        None when the app is not running (or stopping)."""
        consumer = self.consumer
        if self.client is None or self._stop.is_set() or consumer is None or consumer.closed:
            return None
        with self._threads_lock:
            thread = StreamThread(self, self._next_thread_index)
            self._next_thread_index += 1
            self._threads.append(thread)
        thread.start(self._poll_timeout_ms)
        log.info("%s: stream thread %s added", self.application_id, thread.name)
        return thread.name

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
        with self._threads_lock:
            if len(self._threads) < 2:
                return None
            thread = self._threads[-1]
        thread.stop()
        if not thread.join(timeout_s):
            raise TimeoutError(f"stream thread {thread.name} did not stop within {timeout_s} s")
        self._forget_thread(thread)
        log.info("%s: stream thread %s removed", self.application_id, thread.name)
        return thread.name

    def _forget_thread(self, thread: StreamThread) -> None:
        with self._threads_lock:
            if thread in self._threads:
                self._threads.remove(thread)
        self._notify_released()

    def _stop_added_threads(self) -> None:
        """Thread 1 is leaving: every added thread stops (committing) and is forgotten."""
        added = self.stream_threads()[1:]
        for thread in added:
            thread.stop()
        for thread in added:
            if not thread.join(60):
                log.error("%s: stream thread %s did not stop", self.application_id, thread.name)
                continue
            self._forget_thread(thread)

    def _thread_failed(self, exc: BaseException) -> None:
        """An added thread raised what no handler took: thread 1 raises it from run."""
        if self._thread_error is None:
            self._thread_error = exc
        self._stop.set()

    def _raise_thread_error(self) -> None:
        if self._thread_error is not None:
            raise self._thread_error

    def _wait_for_siblings(self, thread: StreamThread, key: TaskId, timeout_s: float = 30.0) -> None:
        """A task moving between two threads of this process: wait until the thread
        that held it (suspended, or as a standby) has let it go, so the two never open
        the task's stores (and directory) at once.  Raises RestoreSuspended when it does
        not within ``timeout_s``, or ``thread`` is stopping."""
        deadline = time.monotonic() + timeout_s
        with self._released:
            while any(key in t.tasks or key in t.standbys for t in self.stream_threads() if t is not thread):
                left = deadline - time.monotonic()
                if left <= 0 or thread._stop.is_set():
                    raise RestoreSuspended(f"task {key[0]}_{key[1]} is still held by another stream thread")
                self._released.wait(min(left, 0.05))

    def _notify_released(self) -> None:
        with self._released:
            self._released.notify_all()

    # -- interactive queries and metadata
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

    def active_tasks(self) -> Set[str]:
        """The ids of the active tasks of every stream thread of this instance."""
        return {t.task_id for thread in self.stream_threads() for t in list(thread.tasks.values())}

    def standby_tasks(self) -> Set[str]:
        """The ids of the standby tasks of every stream thread of this instance."""
        return {t.task_id for thread in self.stream_threads() for t in list(thread.standbys.values())}

    # -- local state
    def clean_up(self) -> List[str]:
        """Delete this application's local state under ``state.dir`` (Kafka Streams'
        ``KafkaStreams#cleanUp``): every task directory and the global stores', so the
        next :meth:`run` rebuilds its stores from the changelogs (or from nothing, after
        ``pylog streams reset``).  Returns the directories deleted.  Raises
        IllegalStateError while :meth:`run` is processing."""
        from pylog.errors import IllegalStateError

        if any(t.tasks or (t.consumer is not None and not t.consumer.closed) for t in self.stream_threads()):
            raise IllegalStateError(f"{self.application_id}: clean_up() while the app runs: stop it first")
        return self.state_directory.clean_up()
