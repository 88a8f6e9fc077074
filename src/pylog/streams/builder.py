"""``StreamsBuilder``: the entry point of the DSL (Kafka Streams' ``StreamsBuilder`` and
``InternalStreamsBuilder``).

Operators add nodes to a :class:`~pylog.streams.topology.Topology` as they are called,
and name them as Kafka Streams does: ``<PREFIX><index:010d>`` with one counter per
builder (``KSTREAM-SOURCE-0000000000``, ``KSTREAM-FILTER-0000000001``, stores
``KSTREAM-AGGREGATE-STATE-STORE-0000000002``), consuming the counter in the same order
Kafka does, so ``describe()`` and internal topic names are those of the same Kafka
Streams program.

A builder is used by one thread.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

from .options import Consumed, Materialized, Named
from .serdes import Serdes
from .topology import Topology, TopologyError

__all__ = ["StreamsBuilder"]

_GENERATED = re.compile(r"KSTREAM.*-[0-9]{10}")


def arity(fn: Callable[..., Any], default: int = 1) -> int:
    """How many positional arguments ``fn`` takes (to tell ``f(value)`` from
    ``f(key, value)``); ``default`` when Python cannot say."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return default
    n = 0
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            if p.default is p.empty:
                n += 1
        elif p.kind is p.VAR_POSITIONAL:
            return default
    return n


def name_of(named: Union[str, Named, None]) -> Optional[str]:
    if named is None or isinstance(named, str):
        return named
    if isinstance(named, Named):
        return named.name
    name = getattr(named, "name", None)
    if name is None or isinstance(name, str):
        return name
    raise TypeError(f"named= takes a string or Named, got {named!r}")


class StreamsBuilder:
    """Builds a topology with the DSL.

    Parameters
    ----------
    config
        Optional settings read at build time: ``default.key.serde`` /
        ``default.value.serde`` (or ``default_key_serde`` / ``default_value_serde``).
    """

    def __init__(self, config: Optional[Dict[str, Any]] = None) -> None:
        self.topology = Topology()
        self.config = dict(config or {})
        self._index = 0

    # -- naming (InternalStreamsBuilder)
    def new_processor_name(self, prefix: str) -> str:
        name = f"{prefix}{self._index:010d}"
        self._index += 1
        return name

    def new_store_name(self, prefix: str) -> str:
        name = f"{prefix}STATE-STORE-{self._index:010d}"
        self._index += 1
        return name

    # -- sources
    def stream(self, topics: Union[str, Iterable[str], None] = None, *, pattern: Union[str, re.Pattern, None] = None,
               key_serde: Any = None, value_serde: Any = None, consumed: Optional[Consumed] = None,
               timestamp_extractor: Any = None) -> "KStream":
        """A KStream of ``topics`` (a name or a list of names) or of every topic matching
        ``pattern``."""
        from .kstream import KStream
        c = consumed or Consumed()
        ks, vs = key_serde or c.key_serde, value_serde or c.value_serde
        if isinstance(topics, re.Pattern):
            pattern, topics = topics, None
        names: List[str] = [] if topics is None else [topics] if isinstance(topics, str) else list(topics)
        if not names and pattern is None:
            raise TopologyError("stream() needs a topic, a list of topics or pattern=")
        name = c.name or self.new_processor_name("KSTREAM-SOURCE-")
        if pattern is None:
            # Kafka merges DSL sources of the same topics into the first one
            for node in self.topology.nodes.values():
                if node.kind == "source" and not node.is_global and set(node.topics) == set(names):
                    return KStream(self, node.name, ks, vs, repartition_required=False)
        self.topology.add_source(name, *names, pattern=pattern, key_serde=ks, value_serde=vs,
                                 timestamp_extractor=timestamp_extractor or c.timestamp_extractor)
        return KStream(self, name, ks, vs, repartition_required=False)

    def table(self, topic: str, materialized: Union[str, Materialized, None] = None, *, key_serde: Any = None,
              value_serde: Any = None, consumed: Optional[Consumed] = None) -> "KTable":
        """A KTable of ``topic``'s changelog: the latest value per key, ``None`` values
        delete.  Materialised in a store when ``materialized`` names one, or when a
        join needs it."""
        from .ktable import KTable
        c = consumed or Consumed()
        m = Materialized.of(materialized)
        ks = key_serde or m.key_serde or c.key_serde
        vs = value_serde or m.value_serde or c.value_serde
        store_name = m.store_name or self.new_store_name(f"{topic}-")
        source = f"{c.name}-source" if c.name else self.new_processor_name("KSTREAM-SOURCE-")
        table_source = c.name or self.new_processor_name("KTABLE-SOURCE-")
        self.topology.add_source(source, topic, key_serde=ks, value_serde=vs,
                                 timestamp_extractor=c.timestamp_extractor)
        t = KTable(self, table_source, ks, vs, store_name=None, materialized=m)
        t.pending_store_name = store_name
        t.is_source = True
        from ._processors import TableSource
        self.topology.add_processor(table_source, lambda: TableSource(t), source)
        if m.store_name is not None:
            t.materialize()
        return t

    def global_table(self, topic: str, materialized: Union[str, Materialized, None] = None, *,
                     key_serde: Any = None, value_serde: Any = None, consumed: Optional[Consumed] = None) -> "GlobalKTable":
        """A GlobalKTable: every partition of ``topic`` in every task's reach."""
        from ._processors import TableSource
        from .ktable import GlobalKTable, KTable
        c = consumed or Consumed()
        m = Materialized.of(materialized)
        ks = key_serde or m.key_serde or c.key_serde
        vs = value_serde or m.value_serde or c.value_serde
        store_name = m.store_name or self.new_store_name(f"{topic}-")
        source = self.new_processor_name("KSTREAM-SOURCE-")
        proc = self.new_processor_name("KTABLE-SOURCE-")
        t = KTable(self, proc, ks, vs, store_name=store_name, materialized=m)
        sb = t.store_builder(store_name, logging=False)
        self.topology.add_global_store(sb, source, topic, proc, lambda: TableSource(t), key_serde=ks,
                                       value_serde=vs, timestamp_extractor=c.timestamp_extractor, timestamped=True)
        meta = self.topology.stores[store_name]
        meta.key_serde, meta.value_serde = t.store_key_serde(), t.store_value_serde()
        return GlobalKTable(t)

    def add_state_store(self, store_builder: Any, *, key_serde: Any = None, value_serde: Any = None) -> "StreamsBuilder":
        """Register a store for ``process(..., store_names)`` to use."""
        self.topology.add_state_store(store_builder, key_serde=key_serde, value_serde=value_serde)
        return self

    # -- defaults
    def default_key_serde(self) -> Any:
        return self.config.get("default.key.serde") or self.config.get("default_key_serde") or Serdes.bytes()

    def default_value_serde(self) -> Any:
        return self.config.get("default.value.serde") or self.config.get("default_value_serde") or Serdes.bytes()

    def build(self, application_id: Optional[str] = None, config: Optional[Dict[str, Any]] = None) -> Any:
        """The topology (Kafka's ``StreamsBuilder.build()``); with an
        ``application_id``, a :class:`~pylog.streams.runtime.StreamsApp` ready to
        ``run(pylog.open(...) | pylog.connect(...))``."""
        if application_id is None:
            return self.topology
        from .runtime import StreamsApp
        cfg = dict(self.config)
        cfg.update(config or {})
        return StreamsApp(self.topology, application_id, cfg)


from .kstream import KStream  # noqa: E402  (circular: KStream needs the builder's helpers)
from .ktable import GlobalKTable, KTable  # noqa: E402
