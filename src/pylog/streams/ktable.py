"""``KTable`` (a changelog: the latest value per key) and ``GlobalKTable`` — Kafka
Streams' ``KTableImpl`` with its value getters, send-old-values and materialisation
rules."""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, Union

from . import _processors as P
from .builder import arity, name_of
from .options import Materialized, Named
from .topology import TopologyError

__all__ = ["KTable", "GlobalKTable"]


class KTable:
    """A table: updates flow downstream as ``Change(new, old)``; ``to_stream()`` turns
    them back into records (a ``None`` value is a deletion)."""

    def __init__(self, builder: Any, node: str, key_serde: Any, value_serde: Any, *, store_name: Optional[str],
                 materialized: Optional[Materialized] = None, parent: Optional["KTable"] = None,
                 compute: Optional[Callable[[Any, Any], Any]] = None) -> None:
        self.builder = builder
        self.node = node
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.store_name = store_name
        self.materialized = materialized or Materialized()
        self.parent = parent
        self.compute = compute
        self.send_old_values = False
        self.is_source = False
        self.pending_store_name: Optional[str] = None
        self.window_serde: Any = None   # set for windowed tables (keys are Windowed)
        self.windowed = False           # a windowed aggregation's table (or its suppress)
        #: a windowed table's wait past a window's end before it is final (suppress)
        self.grace_ms = 0
        #: a table-table join's result: the two joined tables
        self.join_parents: Tuple["KTable", ...] = ()

    # -- stores
    def store_key_serde(self) -> Any:
        return self.key_serde or self.builder.default_key_serde()

    def store_value_serde(self) -> Any:
        return self.value_serde or self.builder.default_value_serde()

    def store_builder(self, name: str, logging: bool = True) -> Any:
        from .state import Stores
        m = self.materialized
        if m.store_type == "persistent" and hasattr(Stores, "persistent_key_value_store"):
            sb = Stores.persistent_key_value_store(name)
        else:
            sb = Stores.in_memory_key_value_store(name)
        if logging and m.logging_enabled:
            sb.with_logging_enabled(m.log_config)
        else:
            sb.with_logging_disabled()
        return sb

    def add_store(self, *processors: str) -> None:
        self.builder.topology.add_state_store(self.store_builder(self.store_name), *processors,
                                              key_serde=self.store_key_serde(), value_serde=self.store_value_serde(),
                                              timestamped=True)

    def materialize(self) -> None:
        """Give a source table its store (Kafka materialises source tables only when
        named or when a join or grouping needs them)."""
        if self.store_name is None:
            self.store_name = self.pending_store_name
            self.add_store(self.node)

    def value_getter_factory(self) -> Callable[[Any], Callable[[Any], Any]]:
        """``factory(context) -> get(key) -> (value, timestamp) | None``: reads the
        store, or computes through non-materialised filters and map_values."""
        if self.store_name is None and self.is_source:
            self.materialize()
        if self.store_name is not None:
            name, ks, vs = self.store_name, self.store_key_serde(), self.store_value_serde()

            def factory(ctx: Any) -> Callable[[Any], Any]:
                return P.TimestampedKV(ctx.get_state_store(name), ks, vs).get
            return factory
        if self.parent is None or self.compute is None:
            raise TopologyError(f"table {self.node!r} has no store to look values up in; materialize it")
        parent_factory = self.parent.value_getter_factory()
        compute = self.compute

        def derived(ctx: Any) -> Callable[[Any], Any]:
            get = parent_factory(ctx)

            def lookup(key: Any) -> Any:
                found = get(key)
                if found is None:
                    return None
                v = compute(key, found[0])
                return None if v is None else (v, found[1])
            return lookup
        return derived

    def getter_stores(self) -> list:
        t: Optional[KTable] = self
        while t is not None:
            if t.store_name is not None:
                return [t.store_name]
            t = t.parent
        return []

    def connect_getter_stores(self, processor: str) -> None:
        stores = self.getter_stores()
        if stores:
            self.builder.topology.connect_processor_and_state_stores(processor, *stores)

    def enable_send_old_values(self) -> None:
        """Forward ``Change(new, old)`` with the old value: only when a downstream node
        needs it (a table-table join's result, a grouping, suppress; Kafka's
        ``enableSendingOldValues``): a filter that sends old values drops the updates
        that are absent before and after, which it forwards otherwise."""
        if self.send_old_values:
            return
        self.send_old_values = True
        if self.join_parents:
            # a join computes its old result from both sides' old values (Kafka's
            # KTableKTableJoinMerger), materialised or not
            for parent in self.join_parents:
                parent.enable_send_old_values()
        elif self.is_source:
            self.materialize()
        elif self.store_name is None and self.parent is not None:
            self.parent.enable_send_old_values()

    # -- operators
    def _derive(self, prefix: str, named: Any, materialized: Any, compute: Callable[[Any, Any], Any],
                is_filter: bool, value_serde: Any) -> "KTable":
        b = self.builder
        m = Materialized.of(materialized) if materialized is not None else None
        name = name_of(named) or b.new_processor_name(prefix)
        store_name = None
        if m is not None:
            store_name = m.store_name or b.new_store_name(prefix)
        t = KTable(b, name, (m.key_serde if m else None) or self.key_serde,
                   (m.value_serde if m else None) or value_serde, store_name=store_name, materialized=m,
                   parent=self, compute=compute)
        t.window_serde = self.window_serde
        b.topology.add_processor(name, lambda: P.TableTransform(t, compute, is_filter), self.node)
        if store_name is not None:
            t.add_store(name)
        return t

    def filter(self, predicate: Callable[[Any, Any], bool], named: Union[str, Named, None] = None,
               materialized: Any = None) -> "KTable":
        return self._derive("KTABLE-FILTER-", named, materialized,
                            lambda k, v: v if predicate(k, v) else None, True, self.value_serde)

    def filter_not(self, predicate: Callable[[Any, Any], bool], named: Union[str, Named, None] = None,
                   materialized: Any = None) -> "KTable":
        return self._derive("KTABLE-FILTER-", named, materialized,
                            lambda k, v: None if predicate(k, v) else v, True, self.value_serde)

    def map_values(self, mapper: Callable[..., Any], named: Union[str, Named, None] = None,
                   materialized: Any = None) -> "KTable":
        fn = mapper if arity(mapper) >= 2 else (lambda k, v: mapper(v))
        return self._derive("KTABLE-MAPVALUES-", named, materialized, fn, False, None)

    def to_stream(self, mapper: Optional[Callable[[Any, Any], Any]] = None,
                  named: Union[str, Named, None] = None) -> Any:
        """The table's updates as a stream (``mapper(key, value)`` may give a new key)."""
        from .kstream import KStream
        b = self.builder
        name = name_of(named) or b.new_processor_name("KTABLE-TOSTREAM-")
        b.topology.add_processor(name, lambda: P.ToStream(mapper), self.node)
        ks = self.window_serde or self.key_serde
        return KStream(b, name, None if mapper else ks, self.value_serde, repartition_required=mapper is not None)

    def group_by(self, selector: Callable[[Any, Any], Any], grouped: Any = None) -> Any:
        """Re-key the table: ``selector(key, value) -> (new_key, new_value)``; aggregate
        the groups with count/reduce/aggregate (adder and subtractor)."""
        from .kgrouped import KGroupedTable
        return KGroupedTable(self, selector, grouped)

    def suppress(self, suppressed: Any) -> "KTable":
        from .windowed import suppress
        return suppress(self, suppressed)

    def suppress_until_window_closes(self) -> "KTable":
        from .windows import Suppressed
        return self.suppress(Suppressed.until_window_closes())

    # -- table-table joins
    def join(self, other: "KTable", *args: Any, named: Union[str, Named, None] = None, materialized: Any = None,
             table_joined: Any = None) -> "KTable":
        """``join(other, joiner)`` on equal keys, or ``join(other, foreign_key_extractor,
        joiner)``: each row joins the row of ``other`` whose key
        ``foreign_key_extractor(value)`` (or ``(key, value)``) gives (a foreign-key join,
        see :mod:`pylog.streams.fk_join`; ``table_joined`` names it)."""
        return self._join_dispatch(other, args, named, materialized, table_joined, "inner")

    def left_join(self, other: "KTable", *args: Any, named: Union[str, Named, None] = None,
                  materialized: Any = None, table_joined: Any = None) -> "KTable":
        """As :meth:`join`, keeping left rows without a match (the joiner gets ``None``)."""
        return self._join_dispatch(other, args, named, materialized, table_joined, "left")

    def _join_dispatch(self, other: "KTable", args: Tuple[Any, ...], named: Any, materialized: Any,
                       table_joined: Any, kind: str) -> "KTable":
        from .fk_join import foreign_key_join, is_foreign_key_join
        fk = is_foreign_key_join(args)
        fixed = 2 if fk else 1
        if len(args) < fixed or len(args) > fixed + 2:
            raise TypeError(f"{kind} join takes (other, joiner[, named[, materialized]]) or "
                            f"(other, foreign_key_extractor, joiner[, named[, materialized]]), got {len(args)} "
                            "arguments after other")
        rest = list(args[fixed:]) + [None, None]
        named = rest[0] if rest[0] is not None else named
        materialized = rest[1] if rest[1] is not None else materialized
        if fk:
            return foreign_key_join(self, other, args[0], args[1], named, materialized, table_joined, kind == "left")
        return self._join(other, args[0], named, materialized, kind)

    def outer_join(self, other: "KTable", joiner: Callable[[Any, Any], Any], named: Union[str, Named, None] = None,
                   materialized: Any = None) -> "KTable":
        return self._join(other, joiner, named, materialized, "outer")

    def _join(self, other: "KTable", joiner: Callable[[Any, Any], Any], named: Any, materialized: Any,
              kind: str) -> "KTable":
        if not isinstance(other, KTable):
            raise TypeError(f"a KTable joins a KTable, got {other!r}")
        b = self.builder
        base = name_of(named)
        this_prefix, other_prefix = {"inner": ("KTABLE-JOINTHIS-", "KTABLE-JOINOTHER-"),
                                     "left": ("KTABLE-JOINTHIS-", "KTABLE-JOINOTHER-"),
                                     "outer": ("KTABLE-JOINTHIS-", "KTABLE-JOINOTHER-")}[kind]
        merge = base or b.new_processor_name("KTABLE-MERGE-")
        this_name = f"{base}-join-this" if base else b.new_processor_name(this_prefix)
        other_name = f"{base}-join-other" if base else b.new_processor_name(other_prefix)
        m = Materialized.of(materialized) if materialized is not None else None
        store_name = (m.store_name or b.new_store_name(merge)) if m is not None else None
        result = KTable(b, merge, self.key_serde, (m.value_serde if m else None), store_name=store_name,
                        materialized=m)
        # an outer side sends old values (Kafka's KTableImpl.doJoin: the left side of a left
        # join, both of an outer join: an update absent before and after is dropped
        # there); both do when the result must (enable_send_old_values); an inner
        # join's sides otherwise do not, and forward such updates as they are
        if kind in ("left", "outer"):
            self.enable_send_old_values()
        if kind == "outer":
            other.enable_send_old_values()
        result.join_parents = (self, other)
        this_get = other.value_getter_factory()
        other_get = self.value_getter_factory()
        need_other_this = kind == "inner"
        may_null_this = kind == "outer"
        need_other_other = kind in ("inner", "left")
        may_null_other = kind in ("left", "outer")
        t = b.topology
        t.add_processor(this_name, lambda: P.TableTableJoin(result, this_get, joiner, need_other_this,
                                                            may_null_this, False), self.node)
        t.add_processor(other_name, lambda: P.TableTableJoin(result, other_get, joiner, need_other_other,
                                                             may_null_other, True), other.node)
        other.connect_getter_stores(this_name)
        self.connect_getter_stores(other_name)
        if store_name is not None:
            t.add_processor(merge, lambda: P.TableTransform(result, lambda k, v: v, False), this_name, other_name)
            result.add_store(merge)
        else:
            t.add_processor(merge, P.PassThrough, this_name, other_name)
        return result

    def __repr__(self) -> str:
        return f"<KTable {self.node} store={self.store_name}>"


class GlobalKTable:
    """A table every task can read whole (all partitions of its topic), for
    ``KStream.join(global_table, key_selector, joiner)``."""

    def __init__(self, table: KTable) -> None:
        self.table = table

    @property
    def store_name(self) -> Optional[str]:
        return self.table.store_name

    def __repr__(self) -> str:
        return f"<GlobalKTable store={self.table.store_name}>"


def table_from_stream(stream: Any, named: Any, materialized: Any) -> KTable:
    """``KStream.to_table()``: each record is an upsert (``None`` deletes)."""
    b = stream.builder
    m = Materialized.of(materialized)
    name = name_of(named) or b.new_processor_name("KSTREAM-TOTABLE-")
    store_name = m.store_name or b.new_store_name("KSTREAM-TOTABLE-")
    t = KTable(b, name, m.key_serde or stream.key_serde, m.value_serde or stream.value_serde, store_name=store_name,
               materialized=m)
    t.is_source = True
    b.topology.add_processor(name, lambda: P.TableSource(t), stream.node)
    t.add_store(name)
    return t


__all__ += ["table_from_stream"]
