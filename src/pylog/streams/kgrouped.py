"""Grouped streams and their aggregations: ``KGroupedStream`` (count, reduce,
aggregate, cogroup, windowed_by) and ``CogroupedKStream`` — Kafka Streams'
``KGroupedStreamImpl``, ``GroupedStreamAggregateBuilder`` and ``CogroupedKStreamImpl``."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple, Union

from . import _processors as P
from .builder import name_of
from .options import Materialized, Named
from .serdes import Serdes
from .topology import TopologyError

__all__ = ["KGroupedStream", "CogroupedKStream"]


class KGroupedStream:
    """A stream grouped by key, ready to aggregate.  If the key may have changed
    upstream, the aggregation reads the records back through a repartition topic named
    after the grouping (``Grouped`` name) or else the store."""

    def __init__(self, stream: Any, grouped_name: Optional[str], key_serde: Any, value_serde: Any,
                 repartition_required: bool) -> None:
        self.stream = stream
        self.builder = stream.builder
        self.grouped_name = grouped_name
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.repartition_required = repartition_required

    def _source_for_aggregation(self, store_name: str) -> str:
        if not self.repartition_required:
            return self.stream.node
        return self.stream._repartition_through(self.grouped_name or store_name, self.key_serde, self.value_serde)

    def _aggregate(self, prefix: str, named: Any, materialized: Any, value_serde: Any,
                   make: Callable[[Any], Any]) -> Any:
        from .ktable import KTable
        m = Materialized.of(materialized)
        store_name = m.store_name or self.builder.new_store_name(prefix)
        name = name_of(named) or self.builder.new_processor_name(prefix)
        parent = self._source_for_aggregation(store_name)
        table = KTable(self.builder, name, m.key_serde or self.key_serde, m.value_serde or value_serde,
                       store_name=store_name, materialized=m)
        self.builder.topology.add_processor(name, lambda: make(table), parent)
        table.add_store(name)
        return table

    def count(self, named: Union[str, Named, None] = None, materialized: Any = None) -> Any:
        """The number of records per key, as a KTable of ints (stored as Kafka longs)."""
        return self._aggregate("KSTREAM-AGGREGATE-", named, materialized, Serdes.long(),
                               lambda t: P.StreamAggregate(t, lambda: 0, lambda k, v, a: a + 1, False))

    def reduce(self, reducer: Callable[[Any, Any], Any], named: Union[str, Named, None] = None,
               materialized: Any = None) -> Any:
        """``reducer(aggregate, value)``; the first value of a key is its first aggregate."""
        return self._aggregate("KSTREAM-REDUCE-", named, materialized, self.value_serde,
                               lambda t: P.StreamAggregate(t, None, reducer, True))

    def aggregate(self, initializer: Callable[[], Any], aggregator: Callable[[Any, Any, Any], Any],
                  named: Union[str, Named, None] = None, materialized: Any = None) -> Any:
        """``aggregator(key, value, aggregate)`` starting from ``initializer()``.  The
        store's values use the Materialized value serde, else JSON."""
        return self._aggregate("KSTREAM-AGGREGATE-", named, materialized, Serdes.json(),
                               lambda t: P.StreamAggregate(t, initializer, aggregator, False))

    def cogroup(self, aggregator: Callable[[Any, Any, Any], Any]) -> "CogroupedKStream":
        return CogroupedKStream(self.builder, [(self, aggregator)])

    def windowed_by(self, windows: Any) -> Any:
        from .windowed import SessionWindowedKStream, SlidingWindowedKStream, TimeWindowedKStream
        from .windows import SessionWindows, SlidingWindows, TimeWindows
        if isinstance(windows, TimeWindows):
            return TimeWindowedKStream(self, windows)
        if isinstance(windows, SessionWindows):
            return SessionWindowedKStream(self, windows)
        if isinstance(windows, SlidingWindows):
            return SlidingWindowedKStream(self, windows)
        raise TypeError(f"windowed_by takes TimeWindows, SlidingWindows or SessionWindows, got {windows!r}")


class CogroupedKStream:
    """Several grouped streams aggregated into one table, each with its own aggregator
    (Kafka's ``CogroupedKStream``)."""

    def __init__(self, builder: Any, groups: List[Tuple[KGroupedStream, Callable[[Any, Any, Any], Any]]]) -> None:
        self.builder = builder
        self.groups = groups

    def cogroup(self, grouped: KGroupedStream, aggregator: Callable[[Any, Any, Any], Any]) -> "CogroupedKStream":
        if grouped.builder is not self.builder:
            raise TopologyError("cogroup() needs grouped streams of the same StreamsBuilder")
        if any(g is grouped for g, _ in self.groups):
            raise TopologyError("this grouped stream is already part of the cogroup")
        return CogroupedKStream(self.builder, self.groups + [(grouped, aggregator)])

    def aggregate(self, initializer: Callable[[], Any], named: Union[str, Named, None] = None,
                  materialized: Any = None) -> Any:
        from .ktable import KTable
        b = self.builder
        m = Materialized.of(materialized)
        store_name = m.store_name or b.new_store_name("COGROUPKSTREAM-AGGREGATE-")
        first = self.groups[0][0]
        table = KTable(b, "", m.key_serde or first.key_serde, m.value_serde or Serdes.json(),
                       store_name=store_name, materialized=m)
        base = name_of(named)
        names = []
        for i, (g, agg) in enumerate(self.groups):
            pname = f"{base}-cogroup-agg-{i}" if base else b.new_processor_name("COGROUPKSTREAM-AGGREGATE-")
            parent = g._source_for_aggregation(g.grouped_name or f"{store_name}-{i}" if len(self.groups) > 1
                                               else store_name) if g.repartition_required else g.stream.node
            b.topology.add_processor(pname, lambda agg=agg: P.CogroupAggregate(table, initializer, agg), parent)
            names.append(pname)
        merge = f"{base}-cogroup-merge" if base else b.new_processor_name("COGROUPKSTREAM-MERGE-")
        b.topology.add_processor(merge, P.PassThrough, *names)
        table.node = merge
        table.add_store(*names)
        return table
