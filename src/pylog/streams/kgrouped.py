"""Grouped streams and their aggregations: ``KGroupedStream`` (count, reduce,
aggregate, cogroup, windowed_by) and ``CogroupedKStream`` — Kafka Streams'
``KGroupedStreamImpl``, ``GroupedStreamAggregateBuilder`` and ``CogroupedKStreamImpl``."""

from __future__ import annotations

import struct
from typing import Any, Callable, List, Optional, Tuple, Union

from . import _processors as P
from .builder import name_of
from .options import Materialized, Named
from .processor import Change
from .serdes import Serde, Serdes
from .topology import TopologyError

__all__ = ["KGroupedStream", "CogroupedKStream", "KGroupedTable", "ChangeSerde"]


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


_LEN = struct.Struct(">i")


def ChangeSerde(inner: Any) -> Serde:
    """How a table update crosses a repartition topic: the new value's length (4 bytes,
    -1 for none), the new value, then the old value (absent for none)."""
    def ser(change: Change) -> bytes:
        new = inner.serialize(change.new_value)
        old = inner.serialize(change.old_value)
        return (_LEN.pack(-1) if new is None else _LEN.pack(len(new)) + new) + (b"" if old is None else b"\x01" + old)

    def de(data: bytes) -> Change:
        n = _LEN.unpack_from(data)[0]
        pos = 4 + max(n, 0)
        new = None if n < 0 else inner.deserialize(data[4:pos])
        old = inner.deserialize(data[pos + 1:]) if len(data) > pos else None
        return Change(new, old)
    return Serde(ser, de, f"change({inner.name})")


class KGroupedTable:
    """A table re-keyed by ``KTable.group_by``, ready to aggregate: every update of the
    source table retracts the old row from its group and adds the new one, through a
    repartition topic (Kafka's ``KGroupedTable``)."""

    def __init__(self, table: Any, selector: Callable[[Any, Any], Tuple[Any, Any]], grouped: Any) -> None:
        from .options import Grouped
        g = grouped or Grouped()
        self.builder = table.builder
        self.table = table
        self.grouped_name = g.name
        self.key_serde = g.key_serde
        self.value_serde = g.value_serde
        table.enable_send_old_values()
        b = self.builder
        self.select = g.name or b.new_processor_name("KTABLE-SELECT-")
        b.topology.add_processor(self.select, lambda: P.TableRepartitionMap(selector), table.node)

    def _aggregate(self, named: Any, materialized: Any, value_serde: Any, make: Callable[[Any], Any]) -> Any:
        from .ktable import KTable
        b = self.builder
        m = Materialized.of(materialized)
        store_name = m.store_name or b.new_store_name("KTABLE-AGGREGATE-")
        topic = f"{self.grouped_name or store_name}-repartition"
        sink = b.new_processor_name("KSTREAM-SINK-")
        source = b.new_processor_name("KSTREAM-SOURCE-")
        if self.grouped_name:
            sink, source = f"{topic}-sink", f"{topic}-source"
        name = name_of(named) or b.new_processor_name("KTABLE-AGGREGATE-")
        ks = self.key_serde or b.default_key_serde()
        change_serde = ChangeSerde(self.value_serde or b.default_value_serde())
        t = b.topology
        t.add_sink(sink, topic, self.select, key_serde=ks, value_serde=change_serde)
        t.add_source(source, topic, key_serde=ks, value_serde=change_serde)
        t.repartition_topics[topic] = None
        table = KTable(b, name, m.key_serde or ks, m.value_serde or value_serde, store_name=store_name, materialized=m)
        t.add_processor(name, lambda: make(table), source)
        table.add_store(name)
        return table

    def count(self, named: Any = None, materialized: Any = None) -> Any:
        return self._aggregate(named, materialized, Serdes.long(), lambda t: P.TableAggregate(
            t, lambda: 0, lambda k, v, a: a + 1, lambda k, v, a: a - 1))

    def reduce(self, adder: Callable[[Any, Any], Any], subtractor: Callable[[Any, Any], Any], named: Any = None,
               materialized: Any = None) -> Any:
        return self._aggregate(named, materialized, self.value_serde, lambda t: P.TableAggregate(
            t, None, lambda k, v, a: adder(a, v), lambda k, v, a: subtractor(a, v)))

    def aggregate(self, initializer: Callable[[], Any], adder: Callable[[Any, Any, Any], Any],
                  subtractor: Callable[[Any, Any, Any], Any], named: Any = None, materialized: Any = None) -> Any:
        return self._aggregate(named, materialized, Serdes.json(), lambda t: P.TableAggregate(
            t, initializer, adder, subtractor))
