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
  rarely cut), and a task with one polled partition takes a batch at a time
  (:meth:`StreamTask.process_batch`: a stateless chain runs as one fused loop and its
  output goes to the producer through ``send_batch``, a run of equal timestamps at a
  time);
* bootstraps every global store from the beginning of its topic before processing,
  then keeps it up to date;
* at-least-once: every ``commit.interval.ms`` (default 30000; and on stop) it flushes the
  stores, flushes the producer, then commits the consumed offsets.

Several instances with the same application id share the partitions through the
group: in a rebalance an instance commits, then closes the tasks of the partitions it
gives up; whoever gets them rebuilds the tasks from their changelogs.  Not yet: sticky
task assignment (the consumer's assignor places partitions; co-partitioned topics stay
together because the range assignor gives equal partition numbers to one member),
standby replicas, exactly-once, threads per instance.  One ``run`` drives everything on the calling
thread; :meth:`StreamsApp.stop` may be called from another thread.
"""

from __future__ import annotations

import heapq
import logging
import struct
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np

from pylog.client import ConsumerRebalanceListener
from pylog.errors import TopicAlreadyExistsError

from .task import StreamTask
from .topology import Topology, TopologyError

__all__ = ["StreamsApp"]

log = logging.getLogger("pylog.streams")
_TS = struct.Struct(">q")
# send_batch pays off for runs of records with one timestamp at least this long on average
_MIN_RUN = 16


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Collector:
    """Sends what the tasks write through the app's producer."""

    def __init__(self, app: "StreamsApp") -> None:
        self.app = app

    def send(self, topic: str, key: Optional[bytes], value: Optional[bytes], timestamp: int, headers: Any,
             partitioner: Any, partition: Optional[int]) -> None:
        app = self.app
        if partition is None and partitioner is not None:
            partition = partitioner(topic, key, value, app.partitions_of(topic))
        app.producer.send(topic, value=value, key=key, headers=list(headers) if headers else None,
                          partition=partition, timestamp_ms=timestamp)

    def send_many(self, topic: str, keys: List[Optional[bytes]], values: List[Optional[bytes]],
                  timestamps: List[int], partitioner: Any) -> None:
        """Records without headers, in order: keyed records with the default
        partitioner go through ``send_batch`` a run of equal timestamps at a time (what a
        batch's records mostly share); the rest one by one."""
        producer = self.app.producer
        n = len(timestamps)
        if partitioner is None and n >= _MIN_RUN and None not in keys:
            ts = np.fromiter(timestamps, dtype=np.int64, count=n)
            cuts = np.flatnonzero(ts[1:] != ts[:-1]) + 1
            if len(cuts) * _MIN_RUN <= n:
                send_batch = producer.send_batch
                start = 0
                for stop in cuts.tolist() + [n]:
                    send_batch(topic, values[start:stop], keys[start:stop], None, timestamps[start])
                    start = stop
                return
        if partitioner is None:
            send = producer.send
            for k, v, t in zip(keys, values, timestamps):
                send(topic, v, k, None, None, t)
            return
        for k, v, t in zip(keys, values, timestamps):
            self.send(topic, k, v, t, (), partitioner, None)


class _TaskMover(ConsumerRebalanceListener):
    """Hands tasks over in a rebalance: before partitions go, what their tasks did is
    committed (stores, producer, offsets) and the tasks are closed; a task that comes
    back (here or on another instance) is rebuilt from its changelogs."""

    def __init__(self, app: "StreamsApp") -> None:
        self.app = app

    def on_partitions_revoked(self, revoked: Set[Any]) -> None:
        if revoked:
            self.app.commit()
            self.app._drop_tasks(revoked)

    def on_partitions_lost(self, lost: Set[Any]) -> None:
        self.app._drop_tasks(lost)

    def on_partitions_assigned(self, assigned: Set[Any]) -> None:
        pass


class StreamsApp:
    """A topology running under one application id.

    Parameters
    ----------
    topology
        From :meth:`StreamsBuilder.build` or the Processor API.
    application_id
        The consumer group, and the prefix of internal topics.
    config
        ``commit.interval.ms`` (default 30000), ``state.dir``, ``default.key.serde`` /
        ``default.value.serde``, and any processor settings (``app_config``).
    """

    def __init__(self, topology: Topology, application_id: str, config: Optional[Dict[str, Any]] = None) -> None:
        if not application_id:
            raise ValueError("a streams app needs an application_id")
        self.topology = topology
        self.application_id = application_id
        self.config = dict(config or {})
        self.commit_interval_ms = int(self.config.get("commit.interval.ms", 30_000))
        # records per poll: enough that a fetched batch (up to 1 MiB) is rarely cut in two
        self.max_poll_records = int(self.config.get("max.poll.records", 10_000))
        self.tasks: Dict[Tuple[int, int], StreamTask] = {}
        self.global_task: Optional[StreamTask] = None
        self._stop = threading.Event()
        self._partition_counts: Dict[str, int] = {}
        self._offsets: Dict[Tuple[str, int], int] = {}
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

    # -- topology facts
    def _internal(self, topic: str) -> str:
        return f"{self.application_id}-{topic}" if topic in self.topology.repartition_topics else topic

    def _source_topics(self, names: List[str]) -> List[str]:
        nodes = self.topology.nodes
        return [self._internal(t) for n in names if nodes[n].kind == "source" for t in nodes[n].topics]

    def _changelogs(self, names: List[str]) -> List[Tuple[str, str, Any]]:
        """(store, changelog topic, meta) of the logged stores of a group."""
        out = []
        for sname, meta in self.topology.stores.items():
            if not meta.is_global and meta.builder.logging_enabled and any(u in names for u in meta.users):
                out.append((sname, f"{self.application_id}-{sname}-changelog", meta))
        return out

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
                                        "reset the application (delete its internal topics)") from None
            self._partition_counts[topic] = n

    # -- tasks
    def _task(self, gid: int, partition: int) -> StreamTask:
        task = self.tasks.get((gid, partition))
        if task is None:
            names = dict(self._groups)[gid]
            shared = {} if self.global_task is None else dict(self.global_task.stores)
            task = StreamTask(self.topology, names, application_id=self.application_id,
                              task_id=f"{gid}_{partition}", config=self.config, collector=self._collector,
                              state_dir=str(self.config.get("state.dir", "")), partition=partition,
                              wall_clock=_now_ms, shared_stores=shared,
                              default_key_serde=self.config.get("default.key.serde"),
                              default_value_serde=self.config.get("default.value.serde"))
            self._restore(task, names, partition)
            self.tasks[(gid, partition)] = task
        return task

    def _read_to_end(self, partitions: List[Tuple[str, int]], on_record: Any) -> None:
        if not partitions:
            return
        c = self.client.consumer(enable_auto_commit=False, auto_offset_reset="earliest")
        try:
            c.assign(partitions)
            c.seek_to_beginning(*partitions)
            ends = c.end_offsets(partitions)
            todo = {tp for tp, end in ends.items() if end > 0}
            while todo:
                for r in c.poll(timeout_ms=200):
                    on_record(r)
                todo = {tp for tp in todo if c.position(tp) < ends[tp]}
        finally:
            c.close(autocommit=False)

    def _restore(self, task: StreamTask, names: List[str], partition: int) -> None:
        for sname, topic, meta in self._changelogs(names):
            store = task.stores[sname]
            batch: List[Tuple[bytes, Optional[bytes]]] = []

            def add(r: Any, batch: List[Any] = batch, ts_prefix: bool = meta.timestamped) -> None:
                value = r.value
                if ts_prefix and value is not None:
                    value = _TS.pack(r.timestamp) + bytes(value)
                batch.append((bytes(r.key), value))
            self._read_to_end([(topic, partition)], add)
            if batch:
                store.restore_batch(batch)
                log.info("restored %d records of store %s (task %s) from %s", len(batch), sname, task.task_id, topic)

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
        self._read_to_end(parts, lambda r: gtask.process(r.topic, r.key, r.value, r.timestamp, r.headers, r.offset))
        return parts

    # -- the loop
    def run(self, client: Any, *, until_idle: bool = False, idle_polls: int = 3, poll_timeout_ms: int = 100) -> None:
        """Process until :meth:`stop` (or, with ``until_idle``, until ``idle_polls``
        polls in a row bring nothing), then commit and close the app's clients."""
        self.client = client
        self._collector = _Collector(self)
        self.producer = client.producer(acks="all", linger_ms=int(self.config.get("linger.ms", 5)))
        counts = self._task_counts()
        self._create_internal_topics(counts)
        global_parts = self._bootstrap_globals()
        global_consumer = None
        if global_parts:
            global_consumer = client.consumer(enable_auto_commit=False, auto_offset_reset="latest")
            global_consumer.assign(global_parts)
            for tp in global_parts:
                global_consumer.seek_to_end(tp)
        topics = sorted(self._topic_group)
        self.consumer = client.consumer(group_id=self.application_id, auto_offset_reset="earliest",
                                        enable_auto_commit=False)
        self.consumer.subscribe(topics, _TaskMover(self))
        last_commit = _now_ms()
        idle = 0
        try:
            while not self._stop.is_set():
                records = self.consumer.poll_batches(timeout_ms=poll_timeout_ms, max_records=self.max_poll_records)
                if records:
                    self._process_batches(records)
                if global_consumer is not None:
                    for r in global_consumer.poll(timeout_ms=0):
                        self.global_task.process(r.topic, r.key, r.value, r.timestamp,  # type: ignore[union-attr]
                                                 r.headers, r.offset)
                for task in list(self.tasks.values()):
                    task.punctuate_wall_clock()
                now = _now_ms()
                if now - last_commit >= self.commit_interval_ms:
                    self.commit()
                    last_commit = now
                if until_idle:
                    idle = 0 if records else idle + 1
                    if idle >= idle_polls:
                        break
            self.commit()
        finally:
            self._close_clients(global_consumer)

    def _process_batches(self, batches: List[Any]) -> None:
        """Give each task what a poll brought: a task with one polled partition takes
        each batch whole (:meth:`StreamTask.process_batch`); a task with several takes
        their records one at a time, always from the partition whose next record has
        the smallest timestamp (a task's partition group, as Kafka's)."""
        by_task: Dict[Tuple[int, int], Dict[Tuple[str, int], List[Any]]] = {}
        for b in batches:
            tid = (self._topic_group[b.topic], b.partition)
            by_task.setdefault(tid, {}).setdefault((b.topic, b.partition), []).append(b)
        offsets = self._offsets
        for (gid, partition), queues in by_task.items():
            task = self._task(gid, partition)
            if len(queues) == 1:
                for b in next(iter(queues.values())):
                    cols = b.columns()
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

    def _drop_tasks(self, partitions: Set[Any]) -> None:
        for tp in partitions:
            topic, partition = tp[0], tp[1]
            self._offsets.pop((topic, partition), None)
            gid = self._topic_group.get(topic)
            task = self.tasks.pop((gid, partition), None) if gid is not None else None
            if task is not None:
                task.close()
                log.info("task %s of %s moved away", task.task_id, self.application_id)

    def commit(self) -> None:
        """Flush stores and producer, then commit the consumed offsets (at-least-once)."""
        for task in self.tasks.values():
            task.flush()
        self.producer.flush()
        if self._offsets:
            self.consumer.commit(dict(self._offsets))

    def stop(self) -> None:
        """Ask :meth:`run` to commit and return (safe from another thread)."""
        self._stop.set()

    def store(self, name: str, partition: int = 0) -> Any:
        """A store of a local task (interactive queries): bytes in, bytes out."""
        for (gid, p), task in self.tasks.items():
            if p == partition and name in task.stores:
                return task.stores[name]
        if self.global_task is not None and name in self.global_task.stores:
            return self.global_task.stores[name]
        raise KeyError(f"no local task holds store {name!r} for partition {partition}")

    def _close_clients(self, global_consumer: Any) -> None:
        # the consumer first: leaving the group revokes its partitions, which commits and
        # closes their tasks (the producer must still be open for that)
        for c in (self.consumer, global_consumer):
            if c is not None:
                c.close(autocommit=False)
        for task in self.tasks.values():
            task.close()
        self.tasks.clear()
        if self.global_task is not None:
            self.global_task.close()
        if self.producer is not None:
            self.producer.close()

    def active_tasks(self) -> Set[str]:
        return {t.task_id for t in self.tasks.values()}
