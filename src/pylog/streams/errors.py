"""Kafka Streams' exception handlers, the dead letter queue (KIP-1034), the uncaught
exception handler's responses and the app's states.

Three record-level handlers decide what happens to a record that fails, each chosen by
its config (Kafka 4.x names; the pre-4.0 ``default.`` names and snake_case are accepted
too) as ``"log_and_fail"``, ``"log_and_continue"``, a handler class, a handler object or
a plain function ``(context, record, exception) -> response``:

* ``deserialization.exception.handler``: the record's key or value does not
  deserialise (``record`` is the raw :class:`ConsumerRecord`);
* ``processing.exception.handler``: a processor raised (``record`` is the
  :class:`~pylog.streams.processor.Record` the processor was given);
* ``production.exception.handler``: the producer refused a record the app writes
  (``handle_error``: e.g. RecordTooLargeError) or a sink could not serialise one
  (``handle_serialization_error``).  Default: :class:`DefaultProductionExceptionHandler`,
  which fails.

A handler answers a :class:`Response`: ``Response.resume()`` (:data:`CONTINUE`: the
record is dropped, counted in ``dropped-records``, and processing goes on) or
``Response.fail()`` (:data:`FAIL`: the task fails with a StreamsError), either with
dead letter queue records to send first.  A production handler may also answer
``Response.retry()`` (:data:`RETRY`, Kafka's KIP-1065) for a retriable error (one whose
``retriable`` is true: a timeout, not enough replicas, a leader moving): the task is
then corrupted (:class:`TaskCorruptedError`), and the app closes its tasks dirty and
processes again from the last committed offsets (under exactly-once the transaction
is aborted first), so the record is produced again and nothing is lost.  RETRY for an
error that is not retriable is FAIL (Kafka's rule, logged), and the processing and
deserialization handlers cannot retry (RETRY is FAIL there too).  The default
production handler answers RETRY for a retriable error and FAIL otherwise (Kafka
4's ``DefaultProductionExceptionHandler``).

Production errors come two ways, as in Kafka's ``RecordCollectorImpl``: raised by the
producer's ``send`` (a record larger than the producer allows), or reported later by
the send's result (the broker refused the batch: record too large for the topic, not
enough replicas until the delivery timeout...).  The runtime's tasks send through a
:class:`DeliveryWatch`, which watches each send's result; a failure is handled on the
app's thread at the task's next send and at the next commit (after the producer is
flushed, before offsets are committed), so a record whose failure the handler does not
accept is never committed past: Kafka's ``checkForException``.  Errors no handler is
asked about, as Kafka's ``isFatalException``: authentication and authorization
failures, an invalid topic, an unknown server error, offset metadata too large and an
illegal state fail the task; a fenced producer (or its epoch, sequence or id refused)
is raised as it is, for the runtime's task-migration handling; an aborted
transaction's failures are ignored (the abort is being handled already).  With ``errors.dead.letter.queue.topic.name``
set, the built-in handlers send the failed record's raw source key and value there
(timestamp of the failed record, no partition given) with the headers Kafka's
``ExceptionHandlerUtils`` writes, every value a UTF-8 string:
``__streams.errors.exception`` (the exception's class and message),
``__streams.errors.message``, ``__streams.errors.stacktrace``,
``__streams.errors.topic``, ``__streams.errors.partition`` and
``__streams.errors.offset`` (of the source record).  The app does not create that topic.

The uncaught exception handler (:meth:`StreamsApp.set_uncaught_exception_handler`)
answers a :class:`StreamThreadExceptionResponse`.  Handlers run on the thread that
runs the app; they are called for one record at a time.
"""

from __future__ import annotations

import collections
import enum
import inspect
import logging
import traceback
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from pylog.errors import (IllegalStateError, InvalidProducerEpochError, InvalidProducerIdMappingError,
                          InvalidTopicError, OffsetMetadataTooLargeError, OutOfOrderSequenceError, ProducerFencedError,
                          PylogError, TransactionAbortedError, UnknownServerError)

__all__ = [
    "StreamsError", "TaskCorruptedError", "DeliveryWatch",
    "Result", "Response", "CONTINUE", "FAIL", "RETRY", "ErrorHandlerContext", "ConsumerRecord", "ProducerRecord",
    "LogAndContinueExceptionHandler", "LogAndFailExceptionHandler", "LogAndContinueProcessingExceptionHandler",
    "LogAndFailProcessingExceptionHandler", "DefaultProductionExceptionHandler", "StreamThreadExceptionResponse",
    "State", "build_dead_letter_queue_record", "DEAD_LETTER_QUEUE_TOPIC_CONFIG",
    "HEADER_ERRORS_EXCEPTION_NAME", "HEADER_ERRORS_EXCEPTION_MESSAGE_NAME", "HEADER_ERRORS_STACKTRACE_NAME",
    "HEADER_ERRORS_TOPIC_NAME", "HEADER_ERRORS_PARTITION_NAME", "HEADER_ERRORS_OFFSET_NAME",
]

log = logging.getLogger("pylog.streams")

#: Kafka's ``StreamsConfig.ERRORS_DEAD_LETTER_QUEUE_TOPIC_NAME_CONFIG``.
DEAD_LETTER_QUEUE_TOPIC_CONFIG = "errors.dead.letter.queue.topic.name"
HEADER_ERRORS_EXCEPTION_NAME = "__streams.errors.exception"
HEADER_ERRORS_STACKTRACE_NAME = "__streams.errors.stacktrace"
HEADER_ERRORS_EXCEPTION_MESSAGE_NAME = "__streams.errors.message"
HEADER_ERRORS_TOPIC_NAME = "__streams.errors.topic"
HEADER_ERRORS_PARTITION_NAME = "__streams.errors.partition"
HEADER_ERRORS_OFFSET_NAME = "__streams.errors.offset"


class StreamsError(PylogError, RuntimeError):
    """Processing failed (Kafka's ``StreamsException``): the message names the node and
    the record's topic, partition and offset."""


class TaskCorruptedError(StreamsError):
    """A production handler answered RETRY for a retriable error (Kafka's
    ``TaskCorruptedException``): the task's output since the last commit may be
    incomplete, so the app closes its tasks dirty and processes again from the last
    committed offsets.  ``task_ids``: the tasks concerned."""

    def __init__(self, message: str, task_ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.task_ids = list(task_ids)


class Result(enum.Enum):
    """What a handler wants done (Kafka's ``Response.Result``; ``CONTINUE`` is the
    pre-4.1 name of ``RESUME``)."""

    RESUME = 0
    FAIL = 1
    RETRY = 2           # production errors only: send the record again
    CONTINUE = 0        # alias of RESUME


class Response:
    """A handler's answer: a :class:`Result` and the dead letter queue records to send
    before it is acted on (Kafka 4.1's ``Response``)."""

    __slots__ = ("result", "dead_letter_queue_records")

    def __init__(self, result: Result, dead_letter_queue_records: Sequence["ProducerRecord"] = ()) -> None:
        self.result = result
        self.dead_letter_queue_records = list(dead_letter_queue_records)

    @classmethod
    def resume(cls, dead_letter_queue_records: Sequence["ProducerRecord"] = ()) -> "Response":
        return cls(Result.RESUME, dead_letter_queue_records)

    @classmethod
    def fail(cls, dead_letter_queue_records: Sequence["ProducerRecord"] = ()) -> "Response":
        return cls(Result.FAIL, dead_letter_queue_records)

    @classmethod
    def retry(cls) -> "Response":
        return cls(Result.RETRY)

    def __repr__(self) -> str:
        return f"Response({self.result.name}, {len(self.dead_letter_queue_records)} dead letter records)"


CONTINUE = Response.resume()
FAIL = Response.fail()
RETRY = Response.retry()


def as_response(answer: Any) -> Response:
    """A handler's answer as a Response: a Response, a Result, or ``"CONTINUE"`` /
    ``"RESUME"`` / ``"FAIL"`` / ``"RETRY"``."""
    if isinstance(answer, Response):
        return answer
    if isinstance(answer, Result):
        return Response(answer)
    if isinstance(answer, str) and answer.upper() in Result.__members__:
        return Response(Result[answer.upper()])
    raise TypeError(f"an exception handler returned {answer!r}: return Response.resume() (CONTINUE) or "
                    "Response.fail() (FAIL)")


class ErrorHandlerContext:
    """Where a record failed (Kafka's ``ErrorHandlerContext``): the source record's
    topic, partition, offset, headers, timestamp and raw key and value, the processor
    node and the task."""

    __slots__ = ("topic", "partition", "offset", "headers", "processor_node_id", "task_id", "timestamp",
                 "source_raw_key", "source_raw_value")

    def __init__(self, topic: Optional[str], partition: int, offset: int, headers: Any, processor_node_id: Optional[str],
                 task_id: str, timestamp: int, source_raw_key: Optional[bytes],
                 source_raw_value: Optional[bytes]) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.headers = headers
        self.processor_node_id = processor_node_id
        self.task_id = task_id
        self.timestamp = timestamp
        self.source_raw_key = source_raw_key
        self.source_raw_value = source_raw_value


class ConsumerRecord:
    """A record read from a source topic: its bytes as a deserialization handler is
    given them, or deserialised as a timestamp extractor sees them."""

    __slots__ = ("topic", "partition", "offset", "timestamp", "key", "value", "headers")

    def __init__(self, topic: str, partition: int, offset: int, timestamp: int, key: Optional[bytes],
                 value: Optional[bytes], headers: Any) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = headers


class ProducerRecord:
    """A record for the producer: a dead letter queue record, or the record a production
    handler is given (``partition`` None: the default partitioner picks)."""

    __slots__ = ("topic", "partition", "timestamp", "key", "value", "headers")

    def __init__(self, topic: str, partition: Optional[int], timestamp: int, key: Any, value: Any,
                 headers: Sequence[Tuple[str, Optional[bytes]]] = ()) -> None:
        self.topic = topic
        self.partition = partition
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = list(headers)

    def __repr__(self) -> str:
        return f"ProducerRecord({self.topic!r}, key={self.key!r}, value={self.value!r})"


def build_dead_letter_queue_record(topic: str, key: Optional[bytes], value: Optional[bytes],
                                   context: ErrorHandlerContext, exc: BaseException) -> ProducerRecord:
    """The record Kafka's ``ExceptionHandlerUtils.buildDeadLetterQueueRecord`` builds:
    ``key`` and ``value`` as given, the context's timestamp, no partition, and the six
    ``__streams.errors.*`` headers."""
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    message = str(exc)
    headers = [
        (HEADER_ERRORS_EXCEPTION_NAME, (f"{name}: {message}" if message else name).encode()),
        (HEADER_ERRORS_EXCEPTION_MESSAGE_NAME, message.encode()),
        (HEADER_ERRORS_STACKTRACE_NAME, trace.encode()),
        (HEADER_ERRORS_TOPIC_NAME, str(context.topic).encode()),
        (HEADER_ERRORS_PARTITION_NAME, str(context.partition).encode()),
        (HEADER_ERRORS_OFFSET_NAME, str(context.offset).encode()),
    ]
    return ProducerRecord(topic, None, context.timestamp, key, value, headers)


class _Handler:
    """Base of the built-in handlers: ``configure(config)`` reads the dead letter topic."""

    dead_letter_queue_topic: Optional[str] = None
    kind = "exception"

    def configure(self, config: Dict[str, Any]) -> None:
        self.dead_letter_queue_topic = _setting(config, DEAD_LETTER_QUEUE_TOPIC_CONFIG, None)

    def _dlq(self, context: ErrorHandlerContext, exc: BaseException) -> List[ProducerRecord]:
        if not self.dead_letter_queue_topic:
            return []
        return [build_dead_letter_queue_record(self.dead_letter_queue_topic, context.source_raw_key,
                                               context.source_raw_value, context, exc)]


class LogAndContinueExceptionHandler(_Handler):
    """Logs the failure and goes on (Kafka's ``LogAndContinueExceptionHandler``), after
    sending the record to the dead letter queue when one is configured."""

    def handle_error(self, context: ErrorHandlerContext, record: Any, exc: BaseException) -> Response:
        log.warning("skipping record of %s partition %d offset %d: %r (exception handler: log_and_continue)",
                    context.topic, context.partition, context.offset, exc)
        return Response.resume(self._dlq(context, exc))


class LogAndFailExceptionHandler(_Handler):
    """Logs the failure and fails the task (Kafka's ``LogAndFailExceptionHandler``), after
    sending the record to the dead letter queue when one is configured."""

    def handle_error(self, context: ErrorHandlerContext, record: Any, exc: BaseException) -> Response:
        log.error("record of %s partition %d offset %d failed: %r (exception handler: log_and_fail)",
                  context.topic, context.partition, context.offset, exc)
        return Response.fail(self._dlq(context, exc))


LogAndContinueProcessingExceptionHandler = LogAndContinueExceptionHandler
LogAndFailProcessingExceptionHandler = LogAndFailExceptionHandler


class DefaultProductionExceptionHandler(_Handler):
    """Kafka 4's default: RETRY for a retriable production error; FAIL for any other and
    for every serialization error, after sending the source record to the dead letter
    queue when one is configured."""

    def handle_error(self, context: ErrorHandlerContext, record: ProducerRecord, exc: BaseException) -> Response:
        if getattr(exc, "retriable", False):
            return Response.retry()
        return Response.fail(self._dlq(context, exc))

    def handle_serialization_error(self, context: ErrorHandlerContext, record: ProducerRecord, exc: BaseException,
                                   origin: str) -> Response:
        return Response.fail(self._dlq(context, exc))


_BUILT_IN = {"log_and_continue": LogAndContinueExceptionHandler, "log_and_fail": LogAndFailExceptionHandler,
             "default": DefaultProductionExceptionHandler}


def _setting(config: Dict[str, Any], name: str, default: Any) -> Any:
    if name in config:
        return config[name]
    return config.get(name.replace(".", "_"), default)


class ExceptionHandler:
    """A configured handler of one kind, called as Kafka Streams calls it."""

    def __init__(self, config: Dict[str, Any], names: Sequence[str], default: str) -> None:
        spec: Any = default
        for name in names:
            value = _setting(config, name, None)
            if value is not None:
                spec = value
                break
        self.spec = spec
        if isinstance(spec, str):
            cls = _BUILT_IN.get(spec.lower())
            if cls is None:
                raise ValueError(f"{names[0]} is 'log_and_fail', 'log_and_continue', a handler class, a handler "
                                 f"object or a function, got {spec!r}")
            spec = cls()
        elif inspect.isclass(spec):
            spec = spec()
        configure = getattr(spec, "configure", None)
        if configure is not None:
            configure(config)
        self.handler = spec
        self.fn: Callable[..., Any] = getattr(spec, "handle_error", None) or getattr(spec, "handle", None) or spec
        if not callable(self.fn):
            raise ValueError(f"{names[0]}: {spec!r} has no handle_error(context, record, exception)")
        self.continues = isinstance(spec, LogAndContinueExceptionHandler)

    def handle(self, context: ErrorHandlerContext, record: Any, exc: BaseException) -> Response:
        return as_response(self.fn(context, record, exc))

    def handle_serialization_error(self, context: ErrorHandlerContext, record: Any, exc: BaseException,
                                   origin: str) -> Response:
        fn = getattr(self.handler, "handle_serialization_error", None)
        if fn is None:      # Kafka's interface default: fail
            return FAIL
        return as_response(fn(context, record, exc, origin))


def deserialization_handler(config: Dict[str, Any]) -> ExceptionHandler:
    return ExceptionHandler(config, ("deserialization.exception.handler",
                                     "default.deserialization.exception.handler"), "log_and_fail")


def processing_handler(config: Dict[str, Any]) -> ExceptionHandler:
    return ExceptionHandler(config, ("processing.exception.handler",), "log_and_fail")


def production_handler(config: Dict[str, Any]) -> ExceptionHandler:
    return ExceptionHandler(config, ("production.exception.handler", "default.production.exception.handler"),
                            "default")


# ---- production errors: RETRY, and failures a send's result reports -----------------------

#: Kafka error codes no production handler is asked about (RecordCollectorImpl's
#: isFatalException): TOPIC_, GROUP_, CLUSTER_ and TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
#: SECURITY_DISABLED, SASL_AUTHENTICATION_FAILED ...
_FATAL_CODES = frozenset((29, 30, 31, 53, 54, 58))
#: ... and these errors (an invalid topic, an unknown server error, offset metadata too
#: large, an illegal state)
_FATAL = (InvalidTopicError, UnknownServerError, OffsetMetadataTooLargeError, IllegalStateError)
#: The producer was fenced or lost its epoch, sequence or id: Kafka's TaskMigratedException.
_MIGRATED = (ProducerFencedError, InvalidProducerEpochError, OutOfOrderSequenceError, InvalidProducerIdMappingError)


def act_on_production_error(task: Any, topic: str, response: Response, exc: BaseException,
                            ectx: ErrorHandlerContext) -> None:
    """Act on a production handler's answer for a record the producer refused (Kafka's
    ``recordSendError``): the dead letter queue records go first; then RETRY of a
    retriable error raises :class:`TaskCorruptedError`, RETRY of any other error is
    FAIL (logged), FAIL raises StreamsError and RESUME drops the record (counted in
    ``dropped-records``).  ``task`` is the :class:`~pylog.streams.task.StreamTask`,
``topic`` the record's."""
    if response.result is Result.RETRY:
        if getattr(exc, "retriable", False):
            for r in response.dead_letter_queue_records:
                task.collector.send(r.topic, r.key, r.value, r.timestamp, r.headers, None, r.partition)
            raise TaskCorruptedError(
                f"task {task.task_id}: a record for {topic} was not produced ({exc!r}) "
                "and the production exception handler answered RETRY: the task processes again from its last "
                "committed offsets", [task.task_id]) from exc
        log.warning("the production exception handler answered RETRY for %r, which is not retriable: FAIL", exc)
        response = Response(Result.FAIL, response.dead_letter_queue_records)
    task._act_on(response, "send", exc, ectx)


class DeliveryWatch:
    """A task's record collector in the runtime: sends through the app's collector
    (whose ``send`` returns the producer's future, and ``send_many`` a list of
    ``(future, start, stop)``: the future of records ``start .. stop - 1``, or a list
    of their futures, one per record) and watches each send's result, as Kafka's
    ``RecordCollectorImpl`` gives each send a callback.

    The futures of the sends are kept, in send order, until they resolve: at each send
    the watch takes the resolved ones from the front (two calls per future and no
    callback to register: a callback per record cost about a microsecond), and
    :meth:`check` (at each commit, after the producer is flushed, so every one has
    resolved) takes them all; each failure goes to the production handler (see the
    module docstring).  What is kept runs from the oldest unresolved send on, so the
    producer's ``buffer_memory`` and delivery timeout bound it.  The handler's context
    is where the task is when it handles the failure (source topic, offset, node,
    timestamp, headers), as Kafka's callback reads the task's context when it runs; no
    raw source key or value (Kafka frees them at send).  A ``send_batch`` future that
    fails reports each record of its batches that failed (with ``acks=0`` every
    record), with its partition when the records were sent to one (a store's
    changelog).

    Thread safety: one task thread.
    """

    def __init__(self, collector: Any) -> None:
        self.collector = collector
        #: the StreamTask sending (set once the task is built)
        self.task: Any = None
        # in send order: (future, record) for a send; [futures, one per record?, start,
        # stop, topic, keys, values, timestamps, next future, partition] for a
        # send_many's spans
        self._inflight: Deque[Any] = collections.deque()
        self._failed: Deque[Tuple[BaseException, tuple]] = collections.deque()
        self._checking = False

    def send(self, topic: str, key: Optional[bytes], value: Optional[bytes], timestamp: int, headers: Any,
             partitioner: Any, partition: Optional[int]) -> None:
        if self._inflight and not self._checking:
            self._check_resolved()
        future = self.collector.send(topic, key, value, timestamp, headers, partitioner, partition)
        if future is not None:
            self._inflight.append((future, (topic, partition, timestamp, key, value, headers)))

    def send_many(self, topic: str, keys: List[Optional[bytes]], values: List[Optional[bytes]],
                  timestamps: List[int], partitioner: Any, partition: Optional[int] = None) -> None:
        """Records without headers, in order (``partition``: all to that partition)."""
        if self._inflight and not self._checking:
            self._check_resolved()
        if partition is None:
            spans = self.collector.send_many(topic, keys, values, timestamps, partitioner)
        else:
            spans = self.collector.send_many(topic, keys, values, timestamps, partitioner, partition)
        for future, start, stop in spans or ():
            per_record = type(future) is list
            self._inflight.append([future if per_record else [future], per_record, start, stop, topic, keys, values,
                                   timestamps, 0, partition])

    def _collect(self) -> None:
        """Move the failures of the resolved futures at the front to ``_failed``."""
        inflight, failed = self._inflight, self._failed
        while inflight:
            entry = inflight[0]
            if type(entry) is tuple:        # a send
                future, record = entry
                if not future.done():
                    return
                inflight.popleft()
                exc = future.exception()
                if exc is not None:
                    failed.append((exc, record))
                continue
            # a send_many: futures of its records one by one, or of one send_batch
            futures, per_record, start, stop, topic, keys, values, timestamps, pos, partition = entry
            for pos in range(pos, len(futures)):
                future = futures[pos]
                if not future.done():
                    entry[8] = pos
                    return
                exc = future.exception()
                if exc is not None:
                    if per_record:
                        lost: Any = (start + pos,)
                    else:   # the records of the batches that failed (every one with acks=0)
                        lost = (start + int(j) for j in np.flatnonzero(future.record_offsets() < 0))
                    for i in lost:
                        failed.append((exc, (topic, partition, timestamps[i], keys[i], values[i], ())))
            inflight.popleft()

    def _check_resolved(self) -> None:
        self._collect()
        if self._failed:
            self.check()

    def check(self) -> None:
        """Hand the failures of the sends resolved so far to the production handler,
        in send order.  Raises StreamsError (FAIL, or an error no handler is asked
        about), TaskCorruptedError (RETRY) or the producer's fencing error; the failures
        after it wait for the next check."""
        self._checking = True
        try:
            self._collect()
            while self._failed:
                exc, record = self._failed.popleft()
                self._handle(exc, record)
        finally:
            self._checking = False

    def _handle(self, exc: BaseException, record: tuple) -> None:
        task = self.task
        topic, partition, timestamp, key, value, headers = record
        if isinstance(exc, TransactionAbortedError):
            return      # a follow-up of the abort that is being handled
        if isinstance(exc, _MIGRATED):
            raise exc
        log.error("task %s: a record for %s was not produced: %r", task.task_id, topic, exc)
        if isinstance(exc, _FATAL) or getattr(exc, "error_code", None) in _FATAL_CODES:
            raise StreamsError(f"task {task.task_id}: a record for {topic} was not produced: {exc!r}; no more "
                               "records are sent (an error no production exception handler is asked about)") from exc
        ctx = task.context
        ectx = ErrorHandlerContext(ctx.topic, task.partition, ctx.offset, ctx.headers, ctx.current_node, task.task_id,
                                   ctx.timestamp, None, None)
        producer_record = ProducerRecord(topic, partition, timestamp, key, value, headers or ())
        act_on_production_error(task, topic,
                                task._ask(task.production_handler, "production", exc, ectx, producer_record), exc, ectx)


class StreamThreadExceptionResponse(enum.Enum):
    """What the uncaught exception handler wants done with the stream thread (Kafka's
    ``StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse``)."""

    REPLACE_THREAD = 0
    SHUTDOWN_CLIENT = 1
    SHUTDOWN_APPLICATION = 2


class State(enum.Enum):
    """A streams app's state (Kafka's ``KafkaStreams.State``), with the transitions
    Kafka allows."""

    CREATED = 0
    REBALANCING = 1
    RUNNING = 2
    PENDING_SHUTDOWN = 3
    NOT_RUNNING = 4
    PENDING_ERROR = 5
    ERROR = 6

    def is_running_or_rebalancing(self) -> bool:
        return self in (State.RUNNING, State.REBALANCING)

    def is_valid_transition(self, new: "State") -> bool:
        return new in _TRANSITIONS[self]


_TRANSITIONS = {
    State.CREATED: {State.REBALANCING, State.PENDING_ERROR, State.PENDING_SHUTDOWN},
    State.REBALANCING: {State.RUNNING, State.PENDING_SHUTDOWN, State.PENDING_ERROR, State.REBALANCING},
    State.RUNNING: {State.REBALANCING, State.PENDING_SHUTDOWN, State.PENDING_ERROR},
    State.PENDING_SHUTDOWN: {State.NOT_RUNNING},
    State.NOT_RUNNING: {State.REBALANCING},        # run() again
    State.PENDING_ERROR: {State.ERROR},
    State.ERROR: {State.PENDING_SHUTDOWN, State.REBALANCING},   # run() again after an error
}
