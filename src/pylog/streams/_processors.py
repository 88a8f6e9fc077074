"""The processors the DSL compiles to (Kafka Streams' ``KStreamFilter``, ``KStreamMap``,
``KTableSource``, ``KStreamAggregate``, ``KStreamKTableJoin`` ...).

Each is a Processor API processor; the user's function is the only Python called per
record beyond the forward itself.  KTable processors receive and forward
:class:`~pylog.streams.processor.Change` values.  Stores hold bytes: keys serialised with
the key serde, values as Kafka's timestamped stores hold them (8-byte big-endian
timestamp, then the serialised value).
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Callable, List, Optional, Tuple

from .processor import Change, Processor, Record

log = logging.getLogger("pylog.streams")

_TS = struct.Struct(">q")


class _Base(Processor):
    __slots__ = ("context", "forward")

    def init(self, context: Any) -> None:
        self.context = context
        self.forward = context.forward


def _dropped(ctx: Any, why: str) -> None:
    log.debug("dropping record: %s", why)
    ctx.metrics.record("dropped-records")


# ---- stateless KStream processors -------------------------------------------------------

class Filter(_Base):
    def __init__(self, predicate: Callable[[Any, Any], bool], negate: bool) -> None:
        self.predicate = predicate
        if negate:
            self.process = self._process_not  # type: ignore[method-assign]

    def process(self, record: Record) -> None:
        if self.predicate(record.key, record.value):
            self.forward(record)

    def _process_not(self, record: Record) -> None:
        if not self.predicate(record.key, record.value):
            self.forward(record)


class Map(_Base):
    def __init__(self, mapper: Callable[[Any, Any], Tuple[Any, Any]]) -> None:
        self.mapper = mapper

    def process(self, record: Record) -> None:
        k, v = self.mapper(record.key, record.value)
        self.forward(Record(k, v, record.timestamp, record.headers))


class MapValues(_Base):
    def __init__(self, mapper: Callable[..., Any], with_key: bool) -> None:
        self.mapper = mapper
        if with_key:
            self.process = self._process_with_key  # type: ignore[method-assign]

    def process(self, record: Record) -> None:
        self.forward(Record(record.key, self.mapper(record.value), record.timestamp, record.headers))

    def _process_with_key(self, record: Record) -> None:
        self.forward(Record(record.key, self.mapper(record.key, record.value), record.timestamp, record.headers))


class FlatMap(_Base):
    def __init__(self, mapper: Callable[[Any, Any], Any]) -> None:
        self.mapper = mapper

    def process(self, record: Record) -> None:
        ts, h = record.timestamp, record.headers
        for k, v in self.mapper(record.key, record.value):
            self.forward(Record(k, v, ts, h))


class FlatMapValues(_Base):
    def __init__(self, mapper: Callable[..., Any], with_key: bool) -> None:
        self.mapper = mapper
        self.with_key = with_key

    def process(self, record: Record) -> None:
        k, ts, h = record.key, record.timestamp, record.headers
        values = self.mapper(k, record.value) if self.with_key else self.mapper(record.value)
        for v in values:
            self.forward(Record(k, v, ts, h))


class SelectKey(_Base):
    def __init__(self, mapper: Callable[[Any, Any], Any]) -> None:
        self.mapper = mapper

    def process(self, record: Record) -> None:
        self.forward(Record(self.mapper(record.key, record.value), record.value, record.timestamp, record.headers))


class Peek(_Base):
    def __init__(self, action: Callable[[Any, Any], None], forward: bool) -> None:
        self.action = action
        self.do_forward = forward

    def process(self, record: Record) -> None:
        self.action(record.key, record.value)
        if self.do_forward:
            self.forward(record)


class Printer(_Base):
    def __init__(self, printed: Any) -> None:
        self.printed = printed
        self.out: Any = None

    def init(self, context: Any) -> None:
        super().init(context)
        self.out = self.printed.output()

    def process(self, record: Record) -> None:
        p = self.printed
        text = p.mapper(record.key, record.value) if p.mapper is not None else f"{record.key}, {record.value}"
        label = p.label if p.label is not None else ""
        print(f"[{label}]: {text}", file=self.out, flush=True)

    def close(self) -> None:
        if self.printed.file_path is not None and self.out is not None:
            self.out.close()


class Branch(_Base):
    """``split()``: the record goes to the first branch whose predicate holds (the
    default branch has ``None``)."""

    def __init__(self, predicates: List[Optional[Callable[[Any, Any], bool]]], children: List[str]) -> None:
        self.predicates = predicates
        self.children = children

    def process(self, record: Record) -> None:
        k, v = record.key, record.value
        for pred, child in zip(self.predicates, self.children):
            if pred is None or pred(k, v):
                self.forward(record, child)
                return


class PassThrough(_Base):
    def process(self, record: Record) -> None:
        self.forward(record)


class NullKeyFilter(_Base):
    """The filter in front of a repartition topic: records with a null key cannot be
    partitioned by key and are dropped."""

    def process(self, record: Record) -> None:
        if record.key is not None:
            self.forward(record)


class ToStream(_Base):
    def __init__(self, mapper: Optional[Callable[[Any, Any], Any]] = None) -> None:
        self.mapper = mapper

    def process(self, record: Record) -> None:
        v = record.value.new_value
        if self.mapper is None:
            self.forward(Record(record.key, v, record.timestamp, record.headers))
        else:
            self.forward(Record(self.mapper(record.key, v), v, record.timestamp, record.headers))


# ---- KTable processors -------------------------------------------------------------------

class TimestampedKV:
    """A timestamped key-value store seen through serdes: get -> (value, ts) | None."""

    __slots__ = ("store", "kser", "vser", "vde")

    def __init__(self, store: Any, key_serde: Any, value_serde: Any) -> None:
        self.store = store
        self.kser = key_serde.serialize
        self.vser = value_serde.serialize
        self.vde = value_serde.deserialize

    def get(self, key: Any) -> Optional[Tuple[Any, int]]:
        raw = self.store.get(self.kser(key))
        if raw is None:
            return None
        return self.vde(raw[8:]), _TS.unpack_from(raw)[0]

    def put(self, key: Any, value: Any, ts: int) -> None:
        if value is None:
            self.store.delete(self.kser(key))
        else:
            self.store.put(self.kser(key), _TS.pack(ts) + self.vser(value))


class _TableNode(_Base):
    """A KTable processor that keeps its table in a store when it is materialised."""

    table: Any
    kv: Optional[TimestampedKV] = None

    def init(self, context: Any) -> None:
        super().init(context)
        t = self.table
        if t.store_name is not None:
            self.kv = TimestampedKV(context.get_state_store(t.store_name), t.store_key_serde(), t.store_value_serde())


class TableSource(_TableNode):
    """Turns a changelog stream into table updates; with a store, keeps the table and
    sends the old value along."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def process(self, record: Record) -> None:
        key = record.key
        if key is None:
            _dropped(self.context, "null key for a table")
            return
        old = None
        if self.kv is not None:
            prev = self.kv.get(key)
            old = None if prev is None else prev[0]
            self.kv.put(key, record.value, record.timestamp)
        if not self.table.send_old_values:
            old = None
        self.forward(Record(key, Change(record.value, old), record.timestamp, record.headers))


class TableTransform(_TableNode):
    """KTable filter / filter_not / map_values: ``compute(key, value) -> value | None``."""

    def __init__(self, table: Any, compute: Callable[[Any, Any], Any], is_filter: bool) -> None:
        self.table = table
        self.compute = compute
        self.is_filter = is_filter

    def process(self, record: Record) -> None:
        key, change = record.key, record.value
        new = None if change.new_value is None else self.compute(key, change.new_value)
        send_old = self.table.send_old_values
        old = None
        if send_old and change.old_value is not None:
            old = self.compute(key, change.old_value)
        if self.is_filter and send_old and new is None and old is None:
            return
        if self.kv is not None:
            prev = self.kv.get(key)
            if self.is_filter and new is None and prev is None:
                return
            self.kv.put(key, new, record.timestamp)
        self.forward(Record(key, Change(new, old if send_old else None), record.timestamp, record.headers))


class StreamAggregate(_Base):
    """``count``/``reduce``/``aggregate`` of a grouped stream into a key-value store;
    emits every update (caching is off, as under Kafka's test driver)."""

    def __init__(self, table: Any, initializer: Optional[Callable[[], Any]],
                 aggregator: Callable[[Any, Any, Any], Any], is_reduce: bool) -> None:
        self.table = table
        self.initializer = initializer
        self.aggregator = aggregator
        self.is_reduce = is_reduce
        self.kv: Any = None

    def init(self, context: Any) -> None:
        super().init(context)
        t = self.table
        self.kv = TimestampedKV(context.get_state_store(t.store_name), t.store_key_serde(), t.store_value_serde())

    def process(self, record: Record) -> None:
        key, value = record.key, record.value
        if key is None or (self.is_reduce and value is None):
            _dropped(self.context, "null key or value in an aggregation")
            return
        prev = self.kv.get(key)
        ts = record.timestamp
        if prev is None:
            # a new key's old value is the initializer's (Kafka's KStreamAggregate), none for a reduce
            old = None if self.is_reduce else self.initializer()
            new = value if self.is_reduce else self.aggregator(key, value, old)
        else:
            old, old_ts = prev
            new = self.aggregator(old, value) if self.is_reduce else self.aggregator(key, value, old)
            if old_ts > ts:
                ts = old_ts
        self.kv.put(key, new, ts)
        self.forward(Record(key, Change(new, old if self.table.send_old_values else None), ts, record.headers))


class CogroupAggregate(StreamAggregate):
    """One input of a cogrouped aggregation: every input updates the same store."""

    def __init__(self, table: Any, initializer: Callable[[], Any], aggregator: Callable[[Any, Any, Any], Any]) -> None:
        StreamAggregate.__init__(self, table, initializer, aggregator, False)


# ---- joins with tables -------------------------------------------------------------------

class StreamTableJoin(_Base):
    """KStream-KTable (and KStream-GlobalKTable) join: each stream record looks the
    table up; table updates emit nothing."""

    def __init__(self, getter_factory: Callable[[Any], Callable[[Any], Any]], joiner: Callable[..., Any],
                 left: bool, key_mapper: Optional[Callable[[Any, Any], Any]] = None) -> None:
        self.getter_factory = getter_factory
        self.joiner = joiner
        self.left = left
        self.key_mapper = key_mapper
        self.get: Any = None

    def init(self, context: Any) -> None:
        super().init(context)
        self.get = self.getter_factory(context)

    def process(self, record: Record) -> None:
        key, value = record.key, record.value
        lookup = key if self.key_mapper is None else self.key_mapper(key, value)
        if value is None or lookup is None:
            if not self.left or value is None:
                _dropped(self.context, "null key or value in a stream-table join")
                return
            other = None
        else:
            found = self.get(lookup)
            other = None if found is None else found[0]
        if other is None and not self.left:
            return
        self.forward(Record(key, self.joiner(value, other), record.timestamp, record.headers))


class TableTableJoin(_Base):
    """One side of a KTable-KTable join (Kafka's ``KTableKTable{Inner,Left,Right,Outer}Join``):
    an update of this side looks the other side up.

    ``need_other``: no output while the other side has no value (inner joins, and the
    right side of a left join); ``this_may_be_null``: the joiner is called with this
    side's ``None`` when the other side has a value (outer joins, the right side of a
    left join).  ``flip`` puts this side's value second in the joiner's arguments.
    """

    def __init__(self, table: Any, getter_factory: Callable[[Any], Callable[[Any], Any]],
                 joiner: Callable[[Any, Any], Any], need_other: bool, this_may_be_null: bool, flip: bool) -> None:
        self.table = table
        self.getter_factory = getter_factory
        self.joiner = joiner
        self.need_other = need_other
        self.this_may_be_null = this_may_be_null
        self.flip = flip
        self.get: Any = None

    def init(self, context: Any) -> None:
        super().init(context)
        self.get = self.getter_factory(context)

    def _join(self, mine: Any, other: Any) -> Any:
        if mine is None and not (self.this_may_be_null and other is not None):
            return None
        return self.joiner(other, mine) if self.flip else self.joiner(mine, other)

    def process(self, record: Record) -> None:
        key, change = record.key, record.value
        if key is None:
            _dropped(self.context, "null key in a table-table join")
            return
        found = self.get(key)
        if found is None:
            if self.need_other or (change.new_value is None and change.old_value is None):
                return
            other, ts = None, record.timestamp
        else:
            other, ts = found[0], max(record.timestamp, found[1])
        new = self._join(change.new_value, other)
        old = self._join(change.old_value, other) if self.table.send_old_values else None
        self.forward(Record(key, Change(new, old), ts, record.headers))


# ---- KTable re-grouping ---------------------------------------------------------------------

class TableRepartitionMap(_Base):
    """``KTable.group_by``: maps each update's old and new rows to their new keys; the
    old row is retracted (``Change(None, old)``) under its new key and the new row added
    (``Change(new, None)``), in one update when both land on the same key."""

    def __init__(self, selector: Callable[[Any, Any], Tuple[Any, Any]]) -> None:
        self.selector = selector

    def process(self, record: Record) -> None:
        key, change = record.key, record.value
        if key is None:
            _dropped(self.context, "null key in KTable.group_by")
            return
        new = None if change.new_value is None else self.selector(key, change.new_value)
        old = None if change.old_value is None else self.selector(key, change.old_value)
        new_ok = new is not None and new[0] is not None and new[1] is not None
        old_ok = old is not None and old[0] is not None and old[1] is not None
        ts, h = record.timestamp, record.headers
        if new_ok and old_ok and new[0] == old[0]:
            self.forward(Record(new[0], Change(new[1], old[1]), ts, h))
            return
        if old_ok:
            self.forward(Record(old[0], Change(None, old[1]), ts, h))
        if new_ok:
            self.forward(Record(new[0], Change(new[1], None), ts, h))


class TableAggregate(_TableNode):
    """``KGroupedTable`` count/reduce/aggregate: subtract the old value, add the new."""

    def __init__(self, table: Any, initializer: Optional[Callable[[], Any]], adder: Callable[[Any, Any, Any], Any],
                 subtractor: Callable[[Any, Any, Any], Any]) -> None:
        self.table = table
        self.initializer = initializer
        self.adder = adder
        self.subtractor = subtractor

    def process(self, record: Record) -> None:
        key, change = record.key, record.value
        if key is None:
            _dropped(self.context, "null key in a KTable aggregation")
            return
        kv = self.kv
        prev = kv.get(key)
        old_agg, ts = (None, record.timestamp) if prev is None else (prev[0], max(record.timestamp, prev[1]))
        agg = old_agg
        if change.old_value is not None and agg is not None:
            agg = self.subtractor(key, change.old_value, agg)
        if change.new_value is not None:
            if agg is None:
                agg = change.new_value if self.initializer is None else self.adder(key, change.new_value,
                                                                                   self.initializer())
            else:
                agg = self.adder(key, change.new_value, agg)
        kv.put(key, agg, ts)
        self.forward(Record(key, Change(agg, old_agg if self.table.send_old_values else None), ts, record.headers))
