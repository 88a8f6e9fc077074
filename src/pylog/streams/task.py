"""A stream task: one instance of a set of sub-topologies, with its processors, its
state stores, its stream time and its punctuators (Kafka Streams' ``StreamTask``).

The same task runs under the :class:`~pylog.streams.TopologyTestDriver` and under the
runtime: records come in as bytes through :meth:`StreamTask.process`, go through the
processors synchronously (``context.forward`` calls the children directly), and leave
through a *record collector* (``send(topic, key, value, timestamp, headers,
partitioner)``) that the driver records and the runtime gives to a producer.  Stream
time is the largest timestamp the task has processed; STREAM_TIME punctuators fire when
it passes their next time (aligned to 0, first at the first record), WALL_CLOCK_TIME
punctuators when :meth:`punctuate_wall_clock` is called with a time past theirs.
:meth:`StreamTask.process_batch` takes many records of one topic at once, with the same
results; a source heading a stateless chain runs them through one fused loop
(:mod:`pylog.streams._fused`).

Errors go to Kafka's exception handlers (:mod:`pylog.streams.errors`): a record whose
key or value does not deserialise to ``deserialization.exception.handler``, a processor
or punctuator that raises to ``processing.exception.handler`` (with the record the
processor was given; none for a punctuator), a record a sink cannot serialise or the
producer refuses (e.g. RecordTooLargeError raised by ``send``) to
``production.exception.handler``.  A handler's dead letter queue records are sent
through the collector first; then RESUME drops the record (counted in
``dropped-records``) and FAIL fails the task with :class:`StreamsError` naming the
node, topic, partition and offset (the default of all three, Kafka's ``log_and_fail``
and ``DefaultProductionExceptionHandler``).  Records a fused batch wrote that the
producer refuses are handed to the production handler one by one, with no source raw
key or value in their context.

A task is driven by one thread at a time; nothing in it is locked.
"""

from __future__ import annotations

import heapq
import logging
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from pylog.errors import IllegalStateError, PylogError

from .errors import (ConsumerRecord, ErrorHandlerContext, ProducerRecord, Response, Result, StreamsError,
                     act_on_production_error, deserialization_handler, processing_handler, production_handler)
from .processor import Cancellable, PunctuationType, Record, RecordMetadata, to_millis
from .serdes import SerializationError, Serdes

__all__ = ["StreamTask", "StandbyTask", "ProcessorContext", "StreamsError", "TaskMetrics", "SourceRecord",
           "logged_stores"]

log = logging.getLogger("pylog.streams")


#: What a timestamp extractor sees: the deserialised record and where it came from
#: (the same fields as the raw record a deserialization handler is given).
SourceRecord = ConsumerRecord


class TaskMetrics:
    """Counters of one task, by Kafka's metric names (``dropped-records`` ...)."""

    def __init__(self) -> None:
        self.counts: Dict[str, int] = {}

    def record(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def get(self, name: str) -> int:
        return self.counts.get(name, 0)


class _Node:
    """A node at run time: its processor and its children."""

    __slots__ = ("name", "processor", "children", "by_name", "process", "factory")

    def __init__(self, name: str, processor: Any, factory: Any) -> None:
        self.name = name
        self.processor = processor
        self.factory = factory
        self.children: List["_Node"] = []
        self.by_name: Dict[str, "_Node"] = {}
        self.process = processor.process


def _note_input(exc: BaseException, record: Record) -> None:
    """Remember on ``exc`` the record given to the processor that raised it (the
    innermost forward sees it first), for the exception handlers."""
    if not hasattr(exc, "_pylog_input"):
        try:
            exc._pylog_input = record   # type: ignore[attr-defined]
        except AttributeError:          # an exception type without a __dict__
            pass


def _node_forward(ctx: "ProcessorContext", node: _Node) -> Callable[..., None]:
    """``context.forward`` specialised for ``node``'s children: the per-record path of
    the DSL processors (the generic one looks the children up on every call)."""
    children = tuple(node.children)
    generic = ctx.forward

    if len(children) == 1:
        child = children[0]
        process = child.process

        def forward_one(record: Record, child_name: Optional[str] = None) -> None:
            if child_name is not None:
                generic(record, child_name)
                return
            ctx.timestamp = record.timestamp
            ctx._node = child
            try:
                process(record)
            except Exception as exc:
                _note_input(exc, record)
                raise
            ctx._node = node
        return forward_one

    def forward_all(record: Record, child_name: Optional[str] = None) -> None:
        if child_name is not None:
            generic(record, child_name)
            return
        ctx.timestamp = record.timestamp
        try:
            for child in children:
                ctx._node = child
                child.process(record)
        except Exception as exc:
            _note_input(exc, record)
            raise
        ctx._node = node
    return forward_all


class _Punctuator:
    __slots__ = ("node", "interval", "callback", "cancellable", "next_time")

    def __init__(self, node: _Node, interval: int, callback: Callable[[int], None], next_time: int) -> None:
        self.node = node
        self.interval = interval
        self.callback = callback
        self.cancellable = Cancellable()
        self.next_time = next_time

    def advance(self, now: int) -> None:
        nxt = self.next_time + self.interval
        if now >= nxt:  # missed some: skip them rather than fire in a burst
            nxt = self.next_time + ((now - self.next_time) // self.interval + 1) * self.interval
        self.next_time = nxt


class ProcessorContext:
    """What a processor sees of its task (Kafka's ``api.ProcessorContext``)."""

    def __init__(self, task: "StreamTask") -> None:
        self._task = task
        self._node: Optional[_Node] = None
        self.application_id = task.application_id
        self.task_id = task.task_id
        self.app_config = task.config
        self.state_dir = task.state_dir
        self.partition = task.partition
        self.metrics = task.metrics
        #: the record being processed: timestamp, headers, and where it came from
        self.timestamp = 0
        self.headers: Any = ()
        self.topic: Optional[str] = None
        self.offset = -1
        #: the source record's key and value as they were read (for the exception handlers)
        self.raw_key: Optional[bytes] = None
        self.raw_value: Optional[bytes] = None

    # -- the API
    def forward(self, record: Record, child_name: Optional[str] = None) -> None:
        parent = self._node
        self.timestamp = record.timestamp
        if child_name is None:
            children = parent.children
        else:
            child = parent.by_name.get(child_name)
            if child is None:
                raise StreamsError(f"{parent.name!r} has no child named {child_name!r} "
                                   f"(children: {sorted(parent.by_name)})")
            children = (child,)
        try:
            for child in children:
                self._node = child
                child.process(record)
        except Exception as exc:
            _note_input(exc, record)
            raise
        finally:
            self._node = parent

    def schedule(self, interval: Any, punctuation_type: PunctuationType,
                 callback: Callable[[int], None]) -> Cancellable:
        ms = to_millis(interval)
        if ms < 1:
            raise ValueError(f"a punctuation interval is at least 1 ms, got {ms}")
        return self._task._schedule(self._node, ms, punctuation_type, callback)

    def get_state_store(self, name: str) -> Any:
        node = self._node
        store = self._task.stores.get(name)
        if store is None:
            raise StreamsError(f"state store {name!r} is not in this task (stores: {sorted(self._task.stores)})")
        if node is not None and node.factory is not None and name not in node.factory.stores \
                and not self._task.is_global_store(name):
            raise StreamsError(f"processor {node.name!r} is not connected to state store {name!r}: "
                               "connect it with add_state_store/connect_processor_and_state_stores or name it "
                               "in process(..., store_names)")
        return store

    def record_metadata(self) -> Optional[RecordMetadata]:
        if self.topic is None:
            return None
        return RecordMetadata(self.topic, self.partition, self.offset)

    def current_stream_time_ms(self) -> int:
        return self._task.stream_time

    def current_system_time_ms(self) -> int:
        return self._task.wall_clock_ms()

    def commit(self) -> None:
        self._task.commit_requested = True

    @property
    def current_node(self) -> Optional[str]:
        return None if self._node is None else self._node.name


class _StoreContext:
    """What a state store gets in ``init``: ids, the changelog topic, ``log_change``."""

    def __init__(self, task: "StreamTask | StandbyTask", store_name: str, changelog_topic: Optional[str],
                 timestamped: bool = False) -> None:
        self._task = task
        self._timestamped = timestamped
        self.application_id = task.application_id
        self.task_id = task.task_id
        self.state_dir = task.state_dir
        self.partition = task.partition
        self.changelog_topic = changelog_topic
        self.store_name = store_name

    @property
    def timestamp(self) -> int:
        return self._task.context.timestamp

    def log_change(self, key: bytes, value: Optional[bytes], timestamp: int) -> None:
        if self.changelog_topic is not None:
            if self._timestamped and value is not None:
                # Kafka's timestamped stores log the plain value, stamped with its timestamp
                timestamp = int.from_bytes(value[:8], "big", signed=True)
                value = value[8:]
            self._task.collector.send(self.changelog_topic, key, value, timestamp, (), None, self._task.partition)


class StreamTask:
    """One task over ``node_names`` of ``topology``.

    Parameters
    ----------
    topology
        The :class:`~pylog.streams.topology.Topology`.
    node_names
        The nodes of the sub-topologies this task runs.
    collector
        ``send(topic, key_bytes, value_bytes, timestamp, headers, partitioner, partition)``.
    shared_stores
        Stores owned elsewhere that this task may read (global stores).
    """

    def __init__(self, topology: Any, node_names: Iterable[str], *, application_id: str, task_id: str,
                 config: Dict[str, Any], collector: Any, state_dir: str = "", partition: int = 0,
                 wall_clock: Callable[[], int] = lambda: 0, shared_stores: Optional[Dict[str, Any]] = None,
                 default_key_serde: Any = None, default_value_serde: Any = None,
                 adopted_stores: Optional[Dict[str, Tuple[Any, Any]]] = None) -> None:
        self.topology = topology
        self.application_id = application_id
        self.task_id = task_id
        self.config = config
        self.collector = collector
        self.state_dir = state_dir
        self.partition = partition
        self.wall_clock_ms = wall_clock
        self.metrics = TaskMetrics()
        self.stream_time = -1
        self.commit_requested = False
        # Kafka's exception handlers (pylog.streams.errors); log_and_fail by default
        self.deserialization_handler = deserialization_handler(config)
        self.processing_handler = processing_handler(config)
        self.production_handler = production_handler(config)
        self.default_key_serde = default_key_serde or Serdes.bytes()
        self.default_value_serde = default_value_serde or Serdes.bytes()
        self._stream_puncts: List[Tuple[int, int, _Punctuator]] = []
        self._wall_puncts: List[Tuple[int, int, _Punctuator]] = []
        self._punct_seq = 0
        self.context = ProcessorContext(self)
        names = [n for n in topology.nodes if n in set(node_names)]
        self.stores: Dict[str, Any] = dict(shared_stores or {})
        self._owned_stores: List[str] = []
        self._store_contexts: Dict[str, _StoreContext] = {}
        for sname, meta in topology.stores.items():
            if any(u in names for u in meta.users):
                if adopted_stores and sname in adopted_stores:
                    # a standby's (or this instance's earlier) store: open, filled, kept
                    store, sctx = adopted_stores[sname]
                    sctx._task = self
                else:
                    store = meta.builder.build()
                    changelog = None
                    if meta.builder.logging_enabled and not meta.is_global:
                        changelog = f"{application_id}-{sname}-changelog"
                    sctx = _StoreContext(self, sname, changelog, meta.timestamped)
                    store.init(sctx)
                self.stores[sname] = store
                self._store_contexts[sname] = sctx
                self._owned_stores.append(sname)
        self.nodes: Dict[str, _Node] = {}
        self.sources: Dict[str, _Node] = {}      # by topic
        self.pattern_sources: List[Tuple[Any, _Node]] = []
        for name in names:
            f = topology.nodes[name]
            if f.kind == "source":
                proc: Any = _SourceProcessor(f, self)
            elif f.kind == "sink":
                proc = _SinkProcessor(f, self)
            else:
                proc = f.supplier()
                if not hasattr(proc, "process"):
                    raise StreamsError(f"the supplier of processor {name!r} returned {proc!r}, "
                                       "which has no process(record) method")
            node = _Node(name, proc, f if f.kind == "processor" else None)
            self.nodes[name] = node
            for p in f.predecessors:
                parent = self.nodes[p]
                parent.children.append(node)
                parent.by_name[name] = node
            if f.kind == "source":
                for t in f.topics:
                    self.sources[t] = node
                    if t in topology.repartition_topics:
                        self.sources[f"{application_id}-{t}"] = node
                if f.pattern is not None:
                    self.pattern_sources.append((f.pattern, node))
        ctx = self.context
        for node in self.nodes.values():
            ctx._node = node
            init = getattr(node.processor, "init", None)
            if init is not None:
                init(ctx)
            if getattr(node.processor, "forward", None) == ctx.forward and not isinstance(node.processor, _SinkProcessor):
                # a DSL processor forwards through a function made for its node
                node.processor.forward = _node_forward(ctx, node)
        ctx._node = None
        self.closed = False
        self._fused: Dict[str, Any] = {}     # source topic -> FusedChain, or None: not fusable
        self._batch_offsets: Any = ()

    def is_global_store(self, name: str) -> bool:
        meta = self.topology.stores.get(name)
        return meta is not None and meta.is_global

    def source_for(self, topic: str) -> Optional[_Node]:
        node = self.sources.get(topic)
        if node is None:
            for pattern, pnode in self.pattern_sources:
                if pattern.fullmatch(topic):
                    self.sources[topic] = pnode
                    return pnode
        return node

    # -- processing
    def process(self, topic: str, key: Optional[bytes], value: Optional[bytes], timestamp: int,
                headers: Any = (), offset: int = -1) -> None:
        """Process one record of ``topic`` through its source node, then fire the
        stream-time punctuators that are due."""
        node = self.sources.get(topic) or self.source_for(topic)
        if node is None:
            raise StreamsError(f"task {self.task_id} has no source for topic {topic!r}")
        ctx = self.context
        ctx.topic = topic
        ctx.offset = offset
        ctx.headers = headers
        ctx.raw_key = key
        ctx.raw_value = value
        ctx._node = node
        try:
            node.processor.ingest(key, value, timestamp, headers, topic, offset)
        except (StreamsError, IllegalStateError):
            raise
        except Exception as exc:
            self._skip_or_fail(exc, topic, offset, ctx.current_node, key, value, timestamp, headers)
            return
        finally:
            ctx._node = None
        if self._stream_puncts:
            self._punctuate_stream_time()

    def process_batch(self, topic: str, keys: List[Optional[bytes]], values: List[Optional[bytes]],
                      timestamps: List[int], offsets: Any, headers: Optional[List[Any]] = None) -> None:
        """Process records ``0 .. len(timestamps) - 1`` of ``topic`` in order, as
        :meth:`process` one at a time would: same output, stream time, punctuation,
        metrics and exception handling.

        When the topic's source heads a fused stateless chain (see
        :mod:`pylog.streams._fused`) and no stream-time punctuator is scheduled, the
        batch runs through one loop and the sink's output goes to the collector's
        ``send_many(topic, keys, values, timestamps, partitioner)`` (when it has one)
        once per batch; otherwise record by record.  ``headers`` is None when no record
        has headers (else one tuple per record: such batches go record by record).
        """
        chain = self._fused.get(topic, False)
        if chain is False:
            chain = self._fuse(topic)
        if chain is None or headers is not None or self._stream_puncts:
            process = self.process
            for i in range(len(timestamps)):
                process(topic, keys[i], values[i], timestamps[i], () if headers is None else headers[i],
                        int(offsets[i]))
            return
        ctx = self.context
        ctx.topic = topic
        ctx.headers = ()
        out_k: List[Any] = []
        out_v: List[Any] = []
        out_t: List[int] = []
        self._batch_offsets = offsets
        start = 0
        try:
            while True:
                try:
                    self.stream_time = chain.run(keys, values, timestamps, start, self.stream_time, out_k, out_v,
                                                 out_t)
                    break
                except Exception as exc:
                    start = self._fused_failed(chain, exc, topic, offsets, keys, values, timestamps) + 1
        finally:
            if timestamps:
                ctx.offset = int(offsets[len(timestamps) - 1])
            if out_t:
                ctx.timestamp = out_t[-1]
                send_many = getattr(self.collector, "send_many", None)
                unsent = 0
                if send_many is not None:
                    try:
                        send_many(chain.sink_topic, out_k, out_v, out_t, chain.partitioner)
                        unsent = len(out_t)
                    except (StreamsError, IllegalStateError):
                        raise
                    except PylogError as exc:
                        # the rest one by one, so the production handler sees the record
                        # refused (a collector that does not say how many it sent gets
                        # them all again: at-least-once)
                        unsent = getattr(exc, "records_sent", 0)
                        log.warning("task %s: the producer refused a record of %s (%r): sending the rest one by one",
                                    self.task_id, chain.sink_topic, exc)
                if unsent < len(out_t):
                    ctx.raw_key = ctx.raw_value = None
                    for k, v, t in zip(out_k[unsent:], out_v[unsent:], out_t[unsent:]):
                        self.send(chain.sink_topic, k, v, t, (), chain.partitioner)

    def _fuse(self, topic: str) -> Any:
        node = self.sources.get(topic) or self.source_for(topic)
        if node is None:
            raise StreamsError(f"task {self.task_id} has no source for topic {topic!r}")
        from ._fused import compile_chain

        def bad_timestamp(i: int, timestamp: int) -> None:
            log.warning("skipping record of %s offset %d with invalid timestamp %d", topic,
                        int(self._batch_offsets[i]), timestamp)
            self.metrics.record("dropped-records")

        chain = self._fused[topic] = compile_chain(node, _SinkProcessor, bad_timestamp)
        return chain

    def _fused_failed(self, chain: Any, exc: Exception, topic: str, offsets: Any, keys: List[Optional[bytes]],
                      values: List[Optional[bytes]], timestamps: List[int]) -> int:
        """A user function or serde raised in a fused loop: find the record and node
        from the loop's frame, then apply the exception handlers as :meth:`process`
        does.  Returns the index of the record skipped; raises otherwise."""
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code is not chain.code:
            tb = tb.tb_next
        if tb is None:      # not raised inside the loop: nothing to attribute it to
            raise exc
        frame_locals = tb.tb_frame.f_locals
        i = frame_locals["i"]
        self.stream_time = frame_locals["st"]
        node = chain.owners.get(tb.tb_lineno, chain.source)
        offset = int(offsets[i])
        if isinstance(exc, (StreamsError, IllegalStateError)):
            raise exc
        key, value, timestamp = keys[i], values[i], timestamps[i]
        if node != chain.source and not hasattr(exc, "_pylog_input"):
            _note_input(exc, Record(frame_locals.get("k"), frame_locals.get("v"), timestamp, ()))
            if isinstance(exc, SerializationError) and not hasattr(exc, "origin"):
                # the sink's lines of the fused loop: "kb = ..." then "vb = ..."
                line = chain.text.splitlines()[tb.tb_lineno - 1].lstrip()
                exc.origin = "KEY" if line.startswith("kb") else "VALUE"
        if isinstance(exc, SerializationError) and node == chain.source:
            self.on_deserialization_error(exc, topic, offset, key, value, timestamp, ())
        else:
            self._skip_or_fail(exc, topic, offset, node, key, value, timestamp, ())
        return i

    # -- exception handlers
    def _error_context(self, topic: Optional[str], offset: int, node: Optional[str], key: Optional[bytes],
                       value: Optional[bytes], timestamp: int, headers: Any) -> ErrorHandlerContext:
        return ErrorHandlerContext(topic, self.partition, offset, headers, node, self.task_id, timestamp, key, value)

    def _act_on(self, response: Any, kind: str, exc: BaseException, ectx: ErrorHandlerContext) -> None:
        """Send the response's dead letter queue records, then resume (the record is
        dropped and counted) or fail the task."""
        for r in response.dead_letter_queue_records:
            self.collector.send(r.topic, r.key, r.value, r.timestamp, r.headers, None, r.partition)
        if response.result is Result.RESUME:
            self.metrics.record("dropped-records")
            return
        raise StreamsError(f"exception caught in {kind}, task {self.task_id}, processor {ectx.processor_node_id!r}, "
                           f"topic={ectx.topic}, partition={self.partition}, offset={ectx.offset}: {exc!r}") from exc

    def _ask(self, handler: Any, kind: str, exc: BaseException, ectx: ErrorHandlerContext, record: Any,
             origin: Optional[str] = None) -> Any:
        try:
            if origin is None:
                return handler.handle(ectx, record, exc)
            return handler.handle_serialization_error(ectx, record, exc, origin)
        except Exception as hexc:
            raise StreamsError(f"the {kind} exception handler raised {hexc!r} handling {exc!r} (task "
                               f"{self.task_id}, topic={ectx.topic}, offset={ectx.offset})") from exc

    def on_deserialization_error(self, exc: Exception, topic: str, offset: int, key: Optional[bytes],
                                 value: Optional[bytes], timestamp: int, headers: Any) -> None:
        """A source record did not deserialise: ``deserialization.exception.handler``."""
        node = self.sources.get(topic)
        ectx = self._error_context(topic, offset, None if node is None else node.name, key, value, timestamp,
                                   headers)
        record = ConsumerRecord(topic, self.partition, offset, timestamp, key, value, headers)
        self._act_on(self._ask(self.deserialization_handler, "deserialization", exc, ectx, record),
                     "deserialization", exc, ectx)

    def _skip_or_fail(self, exc: Exception, topic: str, offset: int, node: Optional[str], key: Optional[bytes],
                      value: Optional[bytes], timestamp: int, headers: Any) -> None:
        """``exc`` was raised processing a record at ``node``: a sink that could not
        serialise goes to the production handler, anything else to the processing
        handler (a SerializationError elsewhere always fails, as Kafka's)."""
        ectx = self._error_context(topic, offset, node, key, value, timestamp, headers)
        is_sink = node is not None and node in self.nodes and isinstance(self.nodes[node].processor, _SinkProcessor)
        if isinstance(exc, SerializationError):
            if not is_sink:
                self._act_on(Response.fail(), "process", exc, ectx)
            given = getattr(exc, "_pylog_input", None)
            sink = self.nodes[node].processor  # type: ignore[index]
            record = ProducerRecord(sink.topic or str(topic), None, timestamp,
                                    None if given is None else given.key, None if given is None else given.value,
                                    headers)
            self._act_on(self._ask(self.production_handler, "production", exc, ectx, record,
                                   getattr(exc, "origin", "VALUE")), "serialization", exc, ectx)
            return
        record = getattr(exc, "_pylog_input", None)
        if record is None:
            record = Record(key, value, timestamp, headers)
        self._act_on(self._ask(self.processing_handler, "processing", exc, ectx, record), "process", exc, ectx)

    def send(self, topic: str, key: Optional[bytes], value: Optional[bytes], timestamp: int, headers: Any,
             partitioner: Any) -> None:
        """A sink's record to the collector; one the producer refuses goes to
        ``production.exception.handler``."""
        try:
            self.collector.send(topic, key, value, timestamp, headers, partitioner, None)
        except (StreamsError, IllegalStateError):
            raise
        except PylogError as exc:
            ctx = self.context
            ectx = self._error_context(ctx.topic, ctx.offset, ctx.current_node, ctx.raw_key, ctx.raw_value,
                                       ctx.timestamp, ctx.headers)
            record = ProducerRecord(topic, None, timestamp, key, value, headers or ())
            act_on_production_error(self, topic, self._ask(self.production_handler, "production", exc, ectx, record),
                                    exc, ectx)

    def advance_stream_time(self, timestamp: int) -> None:
        if timestamp > self.stream_time:
            self.stream_time = timestamp

    def _schedule(self, node: Optional[_Node], interval: int, ptype: PunctuationType,
                  callback: Callable[[int], None]) -> Cancellable:
        if node is None:
            raise IllegalStateError("schedule() is only allowed from a processor's init, process or punctuator")
        if ptype is PunctuationType.STREAM_TIME:
            p = _Punctuator(node, interval, callback, 0)
            queue = self._stream_puncts
        elif ptype is PunctuationType.WALL_CLOCK_TIME:
            p = _Punctuator(node, interval, callback, self.wall_clock_ms() + interval)
            queue = self._wall_puncts
        else:
            raise TypeError(f"unknown punctuation type {ptype!r}")
        self._punct_seq += 1
        heapq.heappush(queue, (p.next_time, self._punct_seq, p))
        return p.cancellable

    def _run_due(self, queue: List[Tuple[int, int, _Punctuator]], now: int) -> bool:
        fired = False
        ctx = self.context
        while queue and queue[0][0] <= now:
            _, seq, p = heapq.heappop(queue)
            if p.cancellable.cancelled:
                continue
            ctx._node = p.node
            ctx.topic = None
            ctx.timestamp = now
            try:
                p.callback(now)
            except (StreamsError, IllegalStateError):
                raise
            except Exception as exc:    # Kafka's processing handler sees punctuation errors too (no record)
                ectx = self._error_context(None, -1, ctx.current_node or p.node.name, None, None, now, ())
                self._act_on(self._ask(self.processing_handler, "processing", exc, ectx,
                                       getattr(exc, "_pylog_input", None)), "punctuate", exc, ectx)
            finally:
                ctx._node = None
            fired = True
            if not p.cancellable.cancelled:
                p.advance(now)
                heapq.heappush(queue, (p.next_time, seq, p))
        return fired

    def _punctuate_stream_time(self) -> bool:
        if self._stream_puncts and self.stream_time >= 0:
            return self._run_due(self._stream_puncts, self.stream_time)
        return False

    def punctuate_wall_clock(self) -> bool:
        return self._run_due(self._wall_puncts, self.wall_clock_ms())

    def flush(self) -> None:
        for name in self._owned_stores:
            self.stores[name].flush()

    def close(self, keep_stores: Iterable[str] = ()) -> Dict[str, Tuple[Any, Any]]:
        """Close the processors and the task's stores, except ``keep_stores``, which are
        returned open as ``{name: (store, store context)}`` for a
        :class:`StandbyTask` (or a later task) to adopt (Kafka recycles a task's state
        this way when it turns from active to standby)."""
        if self.closed:
            return {}
        self.closed = True
        ctx = self.context
        try:
            for node in self.nodes.values():
                ctx._node = node
                close = getattr(node.processor, "close", None)
                if close is not None:
                    close()
        finally:
            ctx._node = None
            kept = {}
            for name in self._owned_stores:
                if name in keep_stores:
                    kept[name] = (self.stores[name], self._store_contexts[name])
                else:
                    self.stores[name].close()
        return kept


def logged_stores(topology: Any, node_names: Iterable[str], application_id: str) -> Dict[str, str]:
    """Store -> changelog topic of the logged (non-global) stores ``node_names`` use."""
    names = set(node_names)
    return {sname: f"{application_id}-{sname}-changelog" for sname, meta in topology.stores.items()
            if not meta.is_global and meta.builder.logging_enabled and any(u in names for u in meta.users)}


class _NoCollector:
    """A standby task writes nothing: its stores change only through restore_batch."""

    def send(self, *args: Any) -> None:
        raise IllegalStateError("a standby task's store was written to: standby stores are read-only copies "
                                "of their changelogs")


class _NoRecord:
    timestamp = 0


class StandbyTask:
    """A standby replica of a task (Kafka's ``StandbyTask``): the task's logged stores,
    kept as copies of their changelog partitions on an instance that does not run the
    task.  No processors; the owner feeds changelog records to :meth:`restore_batch`
    and keeps :attr:`positions` (store -> next changelog offset to apply).  When the
    task becomes active here, the new :class:`StreamTask` adopts the stores
    (:meth:`take_stores`) and restores only the changelog's tail from
    :attr:`positions`.  Persistent stores live in the task's own directory
    (``<state.dir>/<application.id>/<task id>/``), the same one the active task uses.

    Driven by one thread at a time; nothing in it is locked.
    """

    def __init__(self, topology: Any, node_names: Iterable[str], *, application_id: str, task_id: str,
                 config: Dict[str, Any], state_dir: str = "", partition: int = 0,
                 default_key_serde: Any = None, default_value_serde: Any = None,
                 adopted_stores: Optional[Dict[str, Tuple[Any, Any]]] = None,
                 positions: Optional[Dict[str, int]] = None) -> None:
        self.topology = topology
        self.application_id = application_id
        self.task_id = task_id
        self.config = config
        self.state_dir = state_dir
        self.partition = partition
        self.default_key_serde = default_key_serde or Serdes.bytes()
        self.default_value_serde = default_value_serde or Serdes.bytes()
        self.collector = _NoCollector()
        self.context = _NoRecord()
        #: store -> changelog topic
        self.changelogs = logged_stores(topology, node_names, application_id)
        self.stores: Dict[str, Any] = {}
        self._store_contexts: Dict[str, _StoreContext] = {}
        #: store -> the next changelog offset to apply (0: none applied yet)
        self.positions: Dict[str, int] = {sname: 0 for sname in self.changelogs}
        self.positions.update(positions or {})
        self.timestamped = {sname: topology.stores[sname].timestamped for sname in self.changelogs}
        for sname, changelog in self.changelogs.items():
            if adopted_stores and sname in adopted_stores:
                store, sctx = adopted_stores[sname]
                sctx._task = self
            else:
                store = topology.stores[sname].builder.build()
                sctx = _StoreContext(self, sname, changelog, self.timestamped[sname])
                store.init(sctx)
            self.stores[sname] = store
            self._store_contexts[sname] = sctx
        self.closed = False

    def is_global_store(self, name: str) -> bool:
        return False

    def restore_batch(self, store_name: str, records: List[Tuple[bytes, Optional[bytes]]], next_offset: int) -> None:
        """Apply changelog records of ``store_name`` up to (not including) ``next_offset``."""
        if records:
            self.stores[store_name].restore_batch(records)
        if next_offset > self.positions[store_name]:
            self.positions[store_name] = next_offset

    def take_stores(self) -> Dict[str, Tuple[Any, Any]]:
        """Hand the open stores over (``{name: (store, store context)}``); the standby
        is closed without closing them."""
        self.closed = True
        out = {sname: (self.stores[sname], self._store_contexts[sname]) for sname in self.stores}
        self.stores = {}
        return out

    def flush(self) -> None:
        for store in self.stores.values():
            store.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for store in self.stores.values():
            store.close()


class _SourceProcessor:
    """Deserialises a record, extracts its timestamp and forwards it."""

    def __init__(self, factory: Any, task: StreamTask) -> None:
        self.name = factory.name
        self.task = task
        self.key_de = (factory.key_serde or task.default_key_serde).deserialize
        self.value_de = (factory.value_serde or task.default_value_serde).deserialize
        self.extractor = factory.timestamp_extractor
        self.ctx = task.context
        self.forward = task.context.forward   # replaced by the node's own once wired

    def ingest(self, key: Optional[bytes], value: Optional[bytes], timestamp: int, headers: Any,
               topic: str, offset: int) -> None:
        try:
            k = self.key_de(key)
            v = self.value_de(value)
        except SerializationError as exc:
            self.task.on_deserialization_error(exc, topic, offset, key, value, timestamp, headers)
            return
        if self.extractor is not None:
            ex = self.extractor
            src = SourceRecord(topic, self.task.partition, offset, timestamp, k, v, headers)
            timestamp = ex.extract(src, self.task.stream_time) if hasattr(ex, "extract") else ex(src, self.task.stream_time)
        task = self.task
        if timestamp < 0:
            log.warning("skipping record of %s offset %d with invalid timestamp %d", topic, offset, timestamp)
            task.metrics.record("dropped-records")
            return
        if timestamp > task.stream_time:
            task.stream_time = timestamp
        self.forward(Record(k, v, timestamp, headers))

    def process(self, record: Record) -> None:  # a source has no parent
        raise StreamsError(f"source {self.name!r} cannot be forwarded to")


class _SinkProcessor:
    """Serialises a record and hands it to the record collector."""

    def __init__(self, factory: Any, task: StreamTask) -> None:
        self.task = task
        self.collector = task.collector
        self.key_ser = (factory.key_serde or task.default_key_serde).serialize
        self.value_ser = (factory.value_serde or task.default_value_serde).serialize
        self.partitioner = factory.partitioner
        topic = factory.topic
        if isinstance(topic, str):
            self.topic: Optional[str] = topic
            self.extractor = None
            if topic in task.topology.repartition_topics:
                self.topic = f"{task.application_id}-{topic}"
        else:
            self.topic = None
            self.extractor = topic.extract if hasattr(topic, "extract") else topic
        self.ctx = task.context

    def process(self, record: Record) -> None:
        topic = self.topic
        if topic is None:
            topic = self.extractor(record.key, record.value, self.ctx)
            if not topic:
                raise StreamsError(f"the topic name extractor returned {topic!r}")
        try:
            kb = self.key_ser(record.key)
        except SerializationError as exc:
            exc.origin = "KEY"      # Kafka's SerializationExceptionOrigin
            raise
        try:
            vb = self.value_ser(record.value)
        except SerializationError as exc:
            exc.origin = "VALUE"
            raise
        self.task.send(topic, kb, vb, record.timestamp, record.headers, self.partitioner)
