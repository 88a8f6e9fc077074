"""``TopologyTestDriver``: runs a whole topology synchronously with no broker, as Kafka
Streams' ``kafka-streams-test-utils`` driver does.

Every topic has one partition; all the sub-topologies run in one task (``0_0``), the
global stores in a global task.  Piping a record processes it at once through the
topology, then processes what it wrote to repartition topics (and to any topic the
topology reads), one record at a time from the topic whose oldest queued record has
the smallest timestamp, as a task's partition group does (ties broken as Kafka's
``java.util.PriorityQueue`` breaks them).  Stream-time punctuators fire after each record;
wall-clock punctuators when :meth:`TopologyTestDriver.advance_wall_clock_time` moves
the driver's mock clock.  Record caches are off, so every update is emitted.

Everything written (output, repartition and changelog topics) is kept per topic for
:class:`TestOutputTopic` to read.  The driver is single-threaded.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Deque, Dict, Iterable, List, Optional, Tuple

from .processor import to_millis
from .serdes import Serde, Serdes
from .task import StreamTask
from .topology import Topology

__all__ = ["TopologyTestDriver", "TestInputTopic", "TestOutputTopic", "TestRecord"]

DEFAULT_APPLICATION_ID = "dummy-topology-test-driver-app-id"


class TestRecord:
    """A record read from an output topic, or piped into an input topic."""

    __slots__ = ("key", "value", "timestamp", "headers", "topic")
    __test__ = False  # not a pytest test class

    def __init__(self, key: Any, value: Any, timestamp: Optional[int] = None, headers: Any = (),
                 topic: Optional[str] = None) -> None:
        self.key = key
        self.value = value
        self.timestamp = timestamp
        self.headers = headers
        self.topic = topic

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, TestRecord) and self.key == other.key and self.value == other.value
                and self.timestamp == other.timestamp and tuple(self.headers) == tuple(other.headers))

    def __repr__(self) -> str:
        return f"TestRecord(key={self.key!r}, value={self.value!r}, timestamp={self.timestamp})"


class _Collector:
    def __init__(self, driver: "TopologyTestDriver") -> None:
        self.driver = driver

    def send(self, topic: str, key: Optional[bytes], value: Optional[bytes], timestamp: int, headers: Any,
             partitioner: Any, partition: Optional[int]) -> None:
        d = self.driver
        d._outputs[topic].append((key, value, timestamp, headers))
        if topic in d._loop_topics:
            d._queued.add((topic, key, value, timestamp, headers))


class _PartitionGroup:
    """What the topology wrote to topics it reads, waiting to be processed, as a Kafka
    task's ``PartitionGroup`` holds it: a FIFO queue per topic (one partition each) and
    the next record taken from the queue whose head has the smallest timestamp.  The
    queues are ordered by a binary heap that breaks ties as ``java.util.PriorityQueue``
    does (by the heap's shape, not by arrival), so records of equal timestamps on
    different topics come out in the order Kafka's driver processes them."""

    def __init__(self) -> None:
        self.queues: Dict[str, Deque[Tuple[Any, ...]]] = {}
        self.heap: List[Deque[Tuple[Any, ...]]] = []

    def __bool__(self) -> bool:
        return bool(self.heap)

    def add(self, record: Tuple[Any, ...]) -> None:
        q = self.queues.get(record[0])
        if q is None:
            q = self.queues[record[0]] = collections.deque()
        q.append(record)
        if len(q) == 1:
            self._offer(q)

    def poll(self) -> Tuple[Any, ...]:
        heap = self.heap
        q = heap[0]
        last = heap.pop()
        if heap:
            self._sift_down(last)
        record = q.popleft()
        if q:
            self._offer(q)
        return record

    def _offer(self, q: Deque[Tuple[Any, ...]]) -> None:
        heap = self.heap
        heap.append(q)
        k, ts = len(heap) - 1, q[0][3]
        while k > 0:
            parent = (k - 1) >> 1
            if ts >= heap[parent][0][3]:
                break
            heap[k] = heap[parent]
            k = parent
        heap[k] = q

    def _sift_down(self, q: Deque[Tuple[Any, ...]]) -> None:
        heap = self.heap
        n, k, ts = len(heap), 0, q[0][3]
        half = n >> 1
        while k < half:
            child = 2 * k + 1
            c = heap[child]
            if child + 1 < n and c[0][3] > heap[child + 1][0][3]:
                child += 1
                c = heap[child]
            if ts <= c[0][3]:
                break
            heap[k] = c
            k = child
        heap[k] = q


class TopologyTestDriver:
    """Drive ``topology`` with no broker.

    Parameters
    ----------
    topology
        A :class:`~pylog.streams.Topology` (``StreamsBuilder.build()``).
    config
        ``application.id`` (default ``dummy-topology-test-driver-app-id``),
        ``default.key.serde`` / ``default.value.serde`` (default bytes), ``state.dir``.
    initial_wall_clock_time_ms
        The mock clock's start (default: now).
    """

    def __init__(self, topology: Topology, config: Optional[Dict[str, Any]] = None,
                 initial_wall_clock_time_ms: Optional[int] = None) -> None:
        cfg = dict(config or {})
        self.config = cfg
        app_id = getattr(topology, "application_id", None)   # a StreamsApp runs here too
        topology = getattr(topology, "topology", topology)
        self.application_id = (cfg.get("application.id") or cfg.get("application_id") or app_id
                               or DEFAULT_APPLICATION_ID)
        self.topology = topology
        self._wall_clock = int(time.time() * 1000) if initial_wall_clock_time_ms is None else initial_wall_clock_time_ms
        self._outputs: Dict[str, Deque[Tuple[Any, ...]]] = collections.defaultdict(collections.deque)
        self._queued = _PartitionGroup()
        self._offsets: Dict[str, int] = collections.defaultdict(int)
        key_serde = cfg.get("default.key.serde") or cfg.get("default_key_serde") or Serdes.bytes()
        value_serde = cfg.get("default.value.serde") or cfg.get("default_value_serde") or Serdes.bytes()
        collector = _Collector(self)
        groups = topology.node_groups()
        global_nodes = [n for _, names in groups if topology.is_global_group(names) for n in names]
        task_nodes = [n for _, names in groups if not topology.is_global_group(names) for n in names]
        common = dict(application_id=self.application_id, config=cfg, collector=collector,
                      state_dir=str(cfg.get("state.dir", "")), wall_clock=lambda: self._wall_clock,
                      default_key_serde=key_serde, default_value_serde=value_serde)
        self.global_task = StreamTask(topology, global_nodes, task_id="global", **common) if global_nodes else None
        shared = {} if self.global_task is None else {n: s for n, s in self.global_task.stores.items()}
        self.task = StreamTask(topology, task_nodes, task_id="0_0", shared_stores=shared, **common)
        self._global_topics = set(self.global_task.sources) if self.global_task else set()
        self._loop_topics = set(self.task.sources) | self._global_topics
        self.closed = False

    # -- topics
    def create_input_topic(self, name: str, key_serde: Optional[Serde] = None, value_serde: Optional[Serde] = None,
                           start_timestamp_ms: Optional[int] = None, auto_advance_ms: Any = 0) -> "TestInputTopic":
        return TestInputTopic(self, name, key_serde or Serdes.bytes(), value_serde or Serdes.bytes(),
                              self._wall_clock if start_timestamp_ms is None else start_timestamp_ms,
                              to_millis(auto_advance_ms))

    def create_output_topic(self, name: str, key_serde: Optional[Serde] = None,
                            value_serde: Optional[Serde] = None) -> "TestOutputTopic":
        return TestOutputTopic(self, name, key_serde or Serdes.bytes(), value_serde or Serdes.bytes())

    def producer_topic_names(self) -> List[str]:
        return sorted(t for t, q in self._outputs.items())

    # -- processing
    def pipe_raw(self, topic: str, key: Optional[bytes], value: Optional[bytes], timestamp: int,
                 headers: Any = ()) -> None:
        """Process one serialised record of ``topic`` and everything it causes."""
        self._check_open()
        if topic not in self._loop_topics and self.task.source_for(topic) is None:
            known = sorted(self._loop_topics)
            raise ValueError(f"unknown topic {topic!r}: the topology reads {known}")
        self._process(topic, key, value, timestamp, headers)
        self._drain()

    def _drain(self) -> None:
        queued = self._queued
        while queued:
            self._process(*queued.poll())

    def _process(self, topic: str, key: Any, value: Any, timestamp: int, headers: Any) -> None:
        offset = self._offsets[topic]
        self._offsets[topic] = offset + 1
        if topic in self._global_topics:
            self.global_task.process(topic, key, value, timestamp, headers, offset)  # type: ignore[union-attr]
        else:
            self.task.process(topic, key, value, timestamp, headers, offset)

    def advance_wall_clock_time(self, advance: Any) -> None:
        """Move the mock wall clock and fire the wall-clock punctuators that are due."""
        self._check_open()
        ms = to_millis(advance)
        if ms < 0:
            raise ValueError(f"the wall clock only moves forward, got {ms} ms")
        self._wall_clock += ms
        self.task.punctuate_wall_clock()
        self._drain()

    # -- stores
    def _meta(self, name: str, kind: str) -> Any:
        meta = self.topology.stores.get(name)
        if meta is None:
            return None
        if meta.kind != kind:
            raise TypeError(f"store {name!r} is a {meta.kind} store, not a {kind} store")
        return meta

    def get_state_store(self, name: str) -> Any:
        """The store itself (bytes in, bytes out)."""
        return self.task.stores.get(name)

    def get_all_state_stores(self) -> Dict[str, Any]:
        return dict(self.task.stores)

    def get_key_value_store(self, name: str) -> Optional["KeyValueStoreFacade"]:
        meta = self._meta(name, "key_value")
        return None if meta is None else KeyValueStoreFacade(self.task.stores[name], meta, self.task)

    def get_timestamped_key_value_store(self, name: str) -> Optional["KeyValueStoreFacade"]:
        meta = self._meta(name, "key_value")
        return None if meta is None else KeyValueStoreFacade(self.task.stores[name], meta, self.task, True)

    def get_window_store(self, name: str) -> Optional["WindowStoreFacade"]:
        meta = self._meta(name, "window")
        return None if meta is None else WindowStoreFacade(self.task.stores[name], meta, self.task)

    def get_session_store(self, name: str) -> Optional["SessionStoreFacade"]:
        meta = self._meta(name, "session")
        return None if meta is None else SessionStoreFacade(self.task.stores[name], meta, self.task)

    def metrics(self) -> Dict[str, int]:
        """Task metrics by Kafka's names (``dropped-records`` ...)."""
        return dict(self.task.metrics.counts)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("the TopologyTestDriver is closed")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.task.close()
            if self.global_task is not None:
                self.global_task.close()

    def __enter__(self) -> "TopologyTestDriver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TestInputTopic:
    """Pipes records into one input topic (Kafka's ``TestInputTopic``): records with no
    timestamp get the topic's current time, which then advances by ``auto_advance_ms``."""

    __test__ = False

    def __init__(self, driver: TopologyTestDriver, name: str, key_serde: Serde, value_serde: Serde,
                 start_ms: int, auto_advance_ms: int) -> None:
        self.driver = driver
        self.name = name
        self.key_ser = key_serde.serialize
        self.value_ser = value_serde.serialize
        self.current_time_ms = start_ms
        self.auto_advance_ms = auto_advance_ms

    def _ts(self, timestamp: Optional[int]) -> int:
        if timestamp is None:
            timestamp = self.current_time_ms
            self.current_time_ms += self.auto_advance_ms
        return timestamp

    def pipe_input(self, key: Any = None, value: Any = None, timestamp: Any = None, headers: Any = ()) -> None:
        ts = self._ts(None if timestamp is None else to_millis(timestamp))
        self.driver.pipe_raw(self.name, self.key_ser(key), self.value_ser(value), ts, tuple(headers))

    def pipe_record(self, record: TestRecord) -> None:
        self.pipe_input(record.key, record.value, record.timestamp, record.headers)

    def pipe_value_list(self, values: Iterable[Any]) -> None:
        for v in values:
            self.pipe_input(None, v)

    def pipe_key_value_list(self, pairs: Iterable[Tuple[Any, Any]], start_timestamp_ms: Optional[int] = None,
                            advance_ms: int = 0) -> None:
        ts = start_timestamp_ms
        for k, v in pairs:
            self.pipe_input(k, v, ts)
            if ts is not None:
                ts += advance_ms

    def advance_time(self, advance: Any) -> None:
        self.current_time_ms += to_millis(advance)


class TestOutputTopic:
    """Reads what the topology wrote to one topic (Kafka's ``TestOutputTopic``); reading
    consumes."""

    __test__ = False

    def __init__(self, driver: TopologyTestDriver, name: str, key_serde: Serde, value_serde: Serde) -> None:
        self.driver = driver
        self.name = name
        self.key_de = key_serde.deserialize
        self.value_de = value_serde.deserialize

    def _queue(self) -> Deque[Tuple[Any, ...]]:
        return self.driver._outputs[self.name]

    def read_record(self) -> TestRecord:
        q = self._queue()
        if not q:
            raise LookupError(f"no more records in output topic {self.name!r}")
        k, v, ts, h = q.popleft()
        return TestRecord(self.key_de(k), self.value_de(v), ts, h, self.name)

    def read_key_value(self) -> Tuple[Any, Any]:
        r = self.read_record()
        return r.key, r.value

    def read_value(self) -> Any:
        return self.read_record().value

    def read_records_to_list(self) -> List[TestRecord]:
        out = []
        while self._queue():
            out.append(self.read_record())
        return out

    def read_key_values_to_list(self) -> List[Tuple[Any, Any]]:
        return [(r.key, r.value) for r in self.read_records_to_list()]

    def read_values_to_list(self) -> List[Any]:
        return [r.value for r in self.read_records_to_list()]

    def read_key_values_to_map(self) -> Dict[Any, Any]:
        """The last value per key; a ``None`` value removes the key (Kafka's behaviour)."""
        out: Dict[Any, Any] = {}
        for r in self.read_records_to_list():
            if r.key is None:
                raise ValueError(f"read_key_values_to_map: a record of {self.name!r} has a null key")
            if r.value is None:
                out.pop(r.key, None)
            else:
                out[r.key] = r.value
        return out

    def get_queue_size(self) -> int:
        return len(self._queue())

    def is_empty(self) -> bool:
        return not self._queue()


# ---- store facades: typed views of the byte stores -------------------------------------

def _serdes(meta: Any, task: StreamTask) -> Tuple[Serde, Serde]:
    return meta.key_serde or task.default_key_serde, meta.value_serde or task.default_value_serde


class KeyValueStoreFacade:
    """A key-value store seen through its serdes; values of timestamped stores come
    back without their timestamps (or as ``(value, timestamp)`` when asked)."""

    def __init__(self, store: Any, meta: Any, task: StreamTask, with_timestamps: bool = False) -> None:
        self.store = store
        self.kser, vs = _serdes(meta, task)
        self.vs = vs
        self.timestamped = meta.timestamped
        self.with_timestamps = with_timestamps
        self.name = meta.name

    def _value(self, raw: Optional[bytes]) -> Any:
        if raw is None:
            return None
        if self.timestamped:
            v = self.vs.deserialize(raw[8:])
            return (v, int.from_bytes(raw[:8], "big", signed=True)) if self.with_timestamps else v
        return self.vs.deserialize(raw)

    def get(self, key: Any) -> Any:
        return self._value(self.store.get(self.kser.serialize(key)))

    def all(self) -> List[Tuple[Any, Any]]:
        return [(self.kser.deserialize(k), self._value(v)) for k, v in self.store.all()]

    def range(self, from_key: Any, to_key: Any) -> List[Tuple[Any, Any]]:
        lo = None if from_key is None else self.kser.serialize(from_key)
        hi = None if to_key is None else self.kser.serialize(to_key)
        return [(self.kser.deserialize(k), self._value(v)) for k, v in self.store.range(lo, hi)]

    def approximate_num_entries(self) -> int:
        return self.store.approximate_num_entries()

    def put(self, key: Any, value: Any) -> None:
        if self.timestamped:
            raise TypeError(f"store {self.name!r} is timestamped; write it through the topology")
        self.store.put(self.kser.serialize(key), self.vs.serialize(value))


class WindowStoreFacade:
    """A window store seen through its serdes: ``fetch(key, start)``,
    ``fetch_range(key, time_from, time_to) -> [(start, value)]``, ``all() ->
    [(Windowed, value)]``."""

    def __init__(self, store: Any, meta: Any, task: StreamTask) -> None:
        self.store = store
        self.kser, self.vs = _serdes(meta, task)
        self.timestamped = meta.timestamped
        self.size = getattr(store, "window_size_ms", 0)

    def _value(self, raw: Optional[bytes]) -> Any:
        if raw is None:
            return None
        return self.vs.deserialize(raw[8:] if self.timestamped else raw)

    def fetch(self, key: Any, window_start_ms: int) -> Any:
        return self._value(self.store.fetch(self.kser.serialize(key), window_start_ms))

    def fetch_range(self, key: Any, time_from: int, time_to: int) -> List[Tuple[int, Any]]:
        return [(s, self._value(v)) for s, v in self.store.fetch_range(self.kser.serialize(key), time_from, time_to)]

    def all(self) -> List[Tuple[Any, Any]]:
        from .windows import Window, Windowed
        return [(Windowed(self.kser.deserialize(k), Window(s, s + self.size)), self._value(v))
                for (k, s), v in self.store.all()]


class SessionStoreFacade:
    """A session store seen through its serdes: ``fetch(key) -> [(Windowed, value)]``."""

    def __init__(self, store: Any, meta: Any, task: StreamTask) -> None:
        self.store = store
        self.kser, self.vs = _serdes(meta, task)

    def fetch(self, key: Any) -> List[Tuple[Any, Any]]:
        from .windows import Window, Windowed
        return [(Windowed(self.kser.deserialize(k), Window(s, e)), self.vs.deserialize(v))
                for (k, s, e), v in self.store.fetch(self.kser.serialize(key))]

    def fetch_session(self, key: Any, start: int, end: int) -> Any:
        raw = self.store.fetch_session(self.kser.serialize(key), start, end)
        return None if raw is None else self.vs.deserialize(raw)
