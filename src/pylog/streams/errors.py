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
dead letter queue records to send first.  With ``errors.dead.letter.queue.topic.name``
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

import enum
import inspect
import logging
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = [
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
    """Fails on every production and serialization error (Kafka's default), after
    sending the source record to the dead letter queue when one is configured."""

    def handle_error(self, context: ErrorHandlerContext, record: ProducerRecord, exc: BaseException) -> Response:
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
