"""Options of the DSL operators, as Kafka Streams' ``Consumed``, ``Produced``, ``Grouped``,
``Materialized``, ``Named``, ``Joined``, ``StreamJoined``, ``Repartitioned``, ``Printed``
and ``Branched``.

Each is a small value object with keyword construction and Kafka's factory names
(``Materialized.as_("store")`` since ``as`` is a Python keyword, ``Grouped.with_(k, v)``).
Where an operator takes one of them it also takes a plain string as the name.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Optional, TextIO

__all__ = ["Consumed", "Produced", "Grouped", "Materialized", "Named", "Joined", "StreamJoined",
           "Repartitioned", "Printed", "Branched"]


class _Options:
    _fields: tuple = ()

    def _copy(self, **changes: Any) -> Any:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields if getattr(self, f) is not None)
        return f"{type(self).__name__}({inner})"


class Named(_Options):
    """The name of one processor node (Kafka's ``Named``)."""
    _fields = ("name",)

    def __init__(self, name: Optional[str] = None) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"a name is a non-empty string, got {name!r}")
        self.name = name

    @staticmethod
    def as_(name: str) -> "Named":
        return Named(name)


class Consumed(_Options):
    """How a source reads: serdes, timestamp extractor, node name, offset reset."""
    _fields = ("key_serde", "value_serde", "timestamp_extractor", "name", "offset_reset")

    def __init__(self, key_serde: Any = None, value_serde: Any = None, timestamp_extractor: Any = None,
                 name: Optional[str] = None, offset_reset: Optional[str] = None) -> None:
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.timestamp_extractor = timestamp_extractor
        self.name = name
        self.offset_reset = offset_reset

    @staticmethod
    def with_(key_serde: Any = None, value_serde: Any = None) -> "Consumed":
        return Consumed(key_serde, value_serde)

    @staticmethod
    def as_(name: str) -> "Consumed":
        return Consumed(name=name)

    def with_timestamp_extractor(self, extractor: Any) -> "Consumed":
        return self._copy(timestamp_extractor=extractor)

    def with_name(self, name: str) -> "Consumed":
        return self._copy(name=name)


class Produced(_Options):
    """How a sink writes: serdes, partitioner (``fn(topic, key, value, num_partitions)
    -> partition``), node name."""
    _fields = ("key_serde", "value_serde", "partitioner", "name")

    def __init__(self, key_serde: Any = None, value_serde: Any = None, partitioner: Any = None,
                 name: Optional[str] = None) -> None:
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.partitioner = partitioner
        self.name = name

    @staticmethod
    def with_(key_serde: Any = None, value_serde: Any = None) -> "Produced":
        return Produced(key_serde, value_serde)

    @staticmethod
    def as_(name: str) -> "Produced":
        return Produced(name=name)


class Grouped(_Options):
    """How a grouping repartitions: the repartition topic's name and serdes."""
    _fields = ("name", "key_serde", "value_serde")

    def __init__(self, name: Optional[str] = None, key_serde: Any = None, value_serde: Any = None) -> None:
        self.name = name
        self.key_serde = key_serde
        self.value_serde = value_serde

    @staticmethod
    def with_(key_serde: Any = None, value_serde: Any = None, name: Optional[str] = None) -> "Grouped":
        return Grouped(name, key_serde, value_serde)

    @staticmethod
    def as_(name: str) -> "Grouped":
        return Grouped(name)


class Materialized(_Options):
    """How a KTable or aggregation is stored: store name (queryable), serdes, window
    retention, changelog logging (with topic configs), caching, and an explicit store
    builder (``store``) for a custom or persistent store."""
    _fields = ("store_name", "key_serde", "value_serde", "retention_ms", "logging_enabled", "caching_enabled",
               "store_type")

    def __init__(self, store_name: Optional[str] = None, key_serde: Any = None, value_serde: Any = None,
                 retention_ms: Optional[int] = None, logging_enabled: bool = True,
                 log_config: Optional[Dict[str, str]] = None, caching_enabled: bool = False,
                 store_type: str = "in_memory") -> None:
        self.store_name = store_name
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.retention_ms = retention_ms
        self.logging_enabled = logging_enabled
        self.log_config = dict(log_config or {})
        self.caching_enabled = caching_enabled
        if store_type not in ("in_memory", "persistent"):
            raise ValueError(f"store_type is 'in_memory' or 'persistent', got {store_type!r}")
        self.store_type = store_type

    @staticmethod
    def as_(store_name: str) -> "Materialized":
        return Materialized(store_name)

    @staticmethod
    def with_(key_serde: Any = None, value_serde: Any = None) -> "Materialized":
        return Materialized(key_serde=key_serde, value_serde=value_serde)

    def with_key_serde(self, serde: Any) -> "Materialized":
        return self._copy(key_serde=serde)

    def with_value_serde(self, serde: Any) -> "Materialized":
        return self._copy(value_serde=serde)

    def with_retention(self, retention: Any) -> "Materialized":
        from .processor import to_millis
        return self._copy(retention_ms=to_millis(retention))

    def with_logging_enabled(self, config: Optional[Dict[str, str]] = None) -> "Materialized":
        return self._copy(logging_enabled=True, log_config=dict(config or {}))

    def with_logging_disabled(self) -> "Materialized":
        return self._copy(logging_enabled=False, log_config={})

    def with_caching_enabled(self) -> "Materialized":
        return self._copy(caching_enabled=True)

    def with_caching_disabled(self) -> "Materialized":
        return self._copy(caching_enabled=False)

    @staticmethod
    def of(value: Any) -> "Materialized":
        if value is None:
            return Materialized()
        if isinstance(value, str):
            return Materialized(value)
        if isinstance(value, Materialized):
            return value
        raise TypeError(f"materialized= takes a store name or a Materialized, got {value!r}")


class Joined(_Options):
    """Serdes and name of a stream-table join."""
    _fields = ("key_serde", "value_serde", "other_value_serde", "name")

    def __init__(self, key_serde: Any = None, value_serde: Any = None, other_value_serde: Any = None,
                 name: Optional[str] = None) -> None:
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.other_value_serde = other_value_serde
        self.name = name

    @staticmethod
    def with_(key_serde: Any = None, value_serde: Any = None, other_value_serde: Any = None) -> "Joined":
        return Joined(key_serde, value_serde, other_value_serde)

    @staticmethod
    def as_(name: str) -> "Joined":
        return Joined(name=name)


class StreamJoined(_Options):
    """Serdes, processor name and store name of a stream-stream join."""
    _fields = ("key_serde", "value_serde", "other_value_serde", "name", "store_name", "logging_enabled")

    def __init__(self, key_serde: Any = None, value_serde: Any = None, other_value_serde: Any = None,
                 name: Optional[str] = None, store_name: Optional[str] = None, logging_enabled: bool = True) -> None:
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.other_value_serde = other_value_serde
        self.name = name
        self.store_name = store_name
        self.logging_enabled = logging_enabled

    @staticmethod
    def with_(key_serde: Any = None, value_serde: Any = None, other_value_serde: Any = None) -> "StreamJoined":
        return StreamJoined(key_serde, value_serde, other_value_serde)

    @staticmethod
    def as_(store_name: str) -> "StreamJoined":
        return StreamJoined(store_name=store_name)

    def with_name(self, name: str) -> "StreamJoined":
        return self._copy(name=name)


class Repartitioned(_Options):
    """Name, serdes, partition count and partitioner of an explicit ``repartition()``."""
    _fields = ("name", "key_serde", "value_serde", "num_partitions", "partitioner")

    def __init__(self, name: Optional[str] = None, key_serde: Any = None, value_serde: Any = None,
                 num_partitions: Optional[int] = None, partitioner: Any = None) -> None:
        self.name = name
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.num_partitions = num_partitions
        self.partitioner = partitioner

    @staticmethod
    def as_(name: str) -> "Repartitioned":
        return Repartitioned(name)

    @staticmethod
    def with_(key_serde: Any = None, value_serde: Any = None) -> "Repartitioned":
        return Repartitioned(None, key_serde, value_serde)

    def with_number_of_partitions(self, n: int) -> "Repartitioned":
        return self._copy(num_partitions=n)


class Printed(_Options):
    """Where ``KStream.print`` writes: ``[label]: key, value`` lines to stdout or a file,
    or what ``mapper(key, value)`` returns."""
    _fields = ("label", "name")

    def __init__(self, stream: Optional[TextIO] = None, label: Optional[str] = None,
                 mapper: Optional[Callable[[Any, Any], str]] = None, name: Optional[str] = None,
                 file_path: Optional[str] = None) -> None:
        self.stream = stream
        self.file_path = file_path
        self.label = label
        self.mapper = mapper
        self.name = name

    @staticmethod
    def to_sys_out() -> "Printed":
        return Printed()

    @staticmethod
    def to_file(path: str) -> "Printed":
        return Printed(file_path=path)

    def with_label(self, label: str) -> "Printed":
        return self._copy(label=label)

    def with_key_value_mapper(self, mapper: Callable[[Any, Any], str]) -> "Printed":
        return self._copy(mapper=mapper)

    def with_name(self, name: str) -> "Printed":
        return self._copy(name=name)

    def output(self) -> TextIO:
        if self.file_path is not None:
            return open(self.file_path, "a", encoding="utf-8")  # closed by the printer's close()
        return self.stream if self.stream is not None else sys.stdout


class Branched(_Options):
    """One branch of ``split()``: its name suffix, and a ``function(stream) -> stream``
    (the result goes in the returned dict) or a ``consumer(stream)`` (not in the dict)."""
    _fields = ("name",)

    def __init__(self, name: Optional[str] = None, function: Optional[Callable[[Any], Any]] = None,
                 consumer: Optional[Callable[[Any], None]] = None) -> None:
        self.name = name
        self.function = function
        self.consumer = consumer

    @staticmethod
    def as_(name: str) -> "Branched":
        return Branched(name)

    @staticmethod
    def with_function(function: Callable[[Any], Any], name: Optional[str] = None) -> "Branched":
        return Branched(name, function=function)

    @staticmethod
    def with_consumer(consumer: Callable[[Any], None], name: Optional[str] = None) -> "Branched":
        return Branched(name, consumer=consumer)
