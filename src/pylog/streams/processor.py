"""The Processor API (Kafka Streams' ``org.apache.kafka.streams.processor.api``).

A :class:`Processor` receives :class:`Record` objects one at a time in ``process`` and
passes results on with ``context.forward(record, child_name=None)``.  ``init(context)`` is
called once per task before the first record, ``close()`` when the task closes.  The
context gives the task's state stores (``context.get_state_store(name)``), punctuation
(``context.schedule(interval, PunctuationType.STREAM_TIME | WALL_CLOCK_TIME, callback)``)
and the metadata of the record being processed.

A processor instance belongs to one task and is only ever called from that task's
thread: no locking is needed inside it.
"""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import Any, Iterable, Optional, Tuple, Union

__all__ = ["Record", "Change", "Processor", "FixedKeyProcessor", "PunctuationType", "Cancellable",
           "RecordMetadata", "to_millis"]

Headers = Tuple[Tuple[str, Optional[bytes]], ...]


def to_millis(d: Union[int, float, timedelta]) -> int:
    """Milliseconds from an int (already ms) or a ``timedelta``."""
    if isinstance(d, timedelta):
        return int(d.total_seconds() * 1000)
    if isinstance(d, bool) or not isinstance(d, (int, float)):
        raise TypeError(f"a duration is a timedelta or milliseconds, got {d!r}")
    return int(d)


class Record:
    """One record as processors see it: key, value, timestamp (ms) and headers.

    Records are immutable by convention; ``with_key``/``with_value``/``with_timestamp``/
    ``with_headers`` return modified copies (Kafka's ``Record.withKey`` ...).
    """

    __slots__ = ("key", "value", "timestamp", "headers")

    def __init__(self, key: Any, value: Any, timestamp: int, headers: Headers = ()) -> None:
        self.key = key
        self.value = value
        self.timestamp = timestamp
        self.headers = headers

    def with_key(self, key: Any) -> "Record":
        return Record(key, self.value, self.timestamp, self.headers)

    def with_value(self, value: Any) -> "Record":
        return Record(self.key, value, self.timestamp, self.headers)

    def with_timestamp(self, timestamp: int) -> "Record":
        if timestamp < 0:
            raise ValueError(f"a record timestamp is >= 0, got {timestamp}")
        return Record(self.key, self.value, timestamp, self.headers)

    def with_headers(self, headers: Iterable[Tuple[str, Optional[bytes]]]) -> "Record":
        return Record(self.key, self.value, self.timestamp, tuple(headers))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Record) and self.key == other.key and self.value == other.value
                and self.timestamp == other.timestamp and self.headers == other.headers)

    def __repr__(self) -> str:
        return f"Record(key={self.key!r}, value={self.value!r}, timestamp={self.timestamp})"


class Change:
    """A KTable update as it flows between table processors: the new value and, when
    the downstream asked for it (``send_old_values``), the old one.  ``None`` new value
    is a deletion."""

    __slots__ = ("new_value", "old_value")

    def __init__(self, new_value: Any, old_value: Any = None) -> None:
        self.new_value = new_value
        self.old_value = old_value

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Change) and self.new_value == other.new_value
                and self.old_value == other.old_value)

    def __repr__(self) -> str:
        return f"Change(new={self.new_value!r}, old={self.old_value!r})"


class RecordMetadata:
    """Where the record being processed came from (Kafka's ``RecordMetadata``)."""

    __slots__ = ("topic", "partition", "offset")

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset

    def __repr__(self) -> str:
        return f"RecordMetadata({self.topic!r}, {self.partition}, {self.offset})"


class PunctuationType(enum.Enum):
    """What drives a punctuator: the task's stream time (record timestamps) or the
    wall clock."""

    STREAM_TIME = "stream_time"
    WALL_CLOCK_TIME = "wall_clock_time"


class Cancellable:
    """Returned by ``context.schedule``; ``cancel()`` stops the punctuator."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Processor:
    """Base class of a processor (Kafka's ``api.Processor``).  Subclasses override
    :meth:`process`; the default :meth:`init` keeps the context as ``self.context``."""

    context: Any = None

    def init(self, context: Any) -> None:
        self.context = context

    def process(self, record: Record) -> None:  # pragma: no cover - overridden
        raise TypeError(f"{type(self).__name__} must override process(record)")

    def close(self) -> None:
        pass


class FixedKeyProcessor(Processor):
    """A processor that may change values but never keys (Kafka's
    ``FixedKeyProcessor``); ``process_values`` checks that forwarded keys are unchanged,
    so downstream operators know no repartition is needed."""
