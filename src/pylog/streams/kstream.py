"""``KStream``: a record stream, and ``BranchedKStream`` (``split()``) — Kafka Streams'
``KStreamImpl`` and ``BranchedKStreamImpl`` with their semantics and node names."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from . import _processors as P
from .builder import arity, name_of
from .options import Branched, Grouped, Joined, Named, Printed, Produced, Repartitioned, StreamJoined
from .topology import TopologyError

__all__ = ["KStream", "BranchedKStream"]

NamedArg = Union[str, Named, None]


class KStream:
    """A stream of records.  Operators return new streams; nothing runs until the
    topology is run by a task."""

    def __init__(self, builder: Any, node: str, key_serde: Any, value_serde: Any, repartition_required: bool) -> None:
        self.builder = builder
        self.node = node
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.repartition_required = repartition_required

    # -- helpers
    def _add(self, prefix: str, named: NamedArg, supplier: Callable[[], Any], *, key_serde: Any = "same",
             value_serde: Any = "same", repartition: Optional[bool] = None, parents: Optional[List[str]] = None) -> "KStream":
        name = name_of(named) or self.builder.new_processor_name(prefix)
        self.builder.topology.add_processor(name, supplier, *(parents or [self.node]))
        return KStream(self.builder, name,
                       self.key_serde if key_serde == "same" else key_serde,
                       self.value_serde if value_serde == "same" else value_serde,
                       self.repartition_required if repartition is None else repartition)

    # -- stateless
    def filter(self, predicate: Callable[[Any, Any], bool], named: NamedArg = None) -> "KStream":
        return self._add("KSTREAM-FILTER-", named, lambda: P.Filter(predicate, False))

    def filter_not(self, predicate: Callable[[Any, Any], bool], named: NamedArg = None) -> "KStream":
        return self._add("KSTREAM-FILTER-", named, lambda: P.Filter(predicate, True))

    def map(self, mapper: Callable[[Any, Any], Tuple[Any, Any]], named: NamedArg = None) -> "KStream":
        """``mapper(key, value) -> (key, value)``; the key may change, so a later
        grouping or join repartitions."""
        return self._add("KSTREAM-MAP-", named, lambda: P.Map(mapper), key_serde=None, value_serde=None,
                         repartition=True)

    def map_values(self, mapper: Callable[..., Any], named: NamedArg = None) -> "KStream":
        """``mapper(value)`` or ``mapper(key, value)`` -> new value."""
        with_key = arity(mapper) >= 2
        return self._add("KSTREAM-MAPVALUES-", named, lambda: P.MapValues(mapper, with_key), value_serde=None)

    def flat_map(self, mapper: Callable[[Any, Any], Iterable[Tuple[Any, Any]]], named: NamedArg = None) -> "KStream":
        return self._add("KSTREAM-FLATMAP-", named, lambda: P.FlatMap(mapper), key_serde=None, value_serde=None,
                         repartition=True)

    def flat_map_values(self, mapper: Callable[..., Iterable[Any]], named: NamedArg = None) -> "KStream":
        with_key = arity(mapper) >= 2
        return self._add("KSTREAM-FLATMAPVALUES-", named, lambda: P.FlatMapValues(mapper, with_key), value_serde=None)

    def select_key(self, mapper: Callable[[Any, Any], Any], named: NamedArg = None) -> "KStream":
        return self._add("KSTREAM-KEY-SELECT-", named, lambda: P.SelectKey(mapper), key_serde=None, repartition=True)

    def peek(self, action: Callable[[Any, Any], None], named: NamedArg = None) -> "KStream":
        return self._add("KSTREAM-PEEK-", named, lambda: P.Peek(action, True))

    def foreach(self, action: Callable[[Any, Any], None], named: NamedArg = None) -> None:
        self._add("KSTREAM-FOREACH-", named, lambda: P.Peek(action, False))

    def print(self, printed: Optional[Printed] = None) -> None:
        p = printed or Printed.to_sys_out()
        self._add("KSTREAM-PRINTER-", p.name, lambda: P.Printer(p))

    def merge(self, other: "KStream", named: NamedArg = None) -> "KStream":
        if other.builder is not self.builder:
            raise TopologyError("merge() needs two streams of the same StreamsBuilder")
        same_k = self.key_serde if self.key_serde is other.key_serde else None
        same_v = self.value_serde if self.value_serde is other.value_serde else None
        return self._add("KSTREAM-MERGE-", named, P.PassThrough, key_serde=same_k, value_serde=same_v,
                         repartition=self.repartition_required or other.repartition_required,
                         parents=[self.node, other.node])

    def split(self, named: NamedArg = None) -> "BranchedKStream":
        """Branches: ``split().branch(pred, Branched.as_("x")).default_branch()``."""
        return BranchedKStream(self, name_of(named))

    # -- Processor API
    def process(self, supplier: Callable[[], Any], *store_names: str, named: NamedArg = None) -> "KStream":
        """Run a :class:`~pylog.streams.processor.Processor` (``supplier()`` makes one per
        task) connected to ``store_names``; it may change keys."""
        s = self._add("KSTREAM-PROCESSOR-", named, supplier, key_serde=None, value_serde=None, repartition=True)
        if store_names:
            self.builder.topology.connect_processor_and_state_stores(s.node, *store_names)
        return s

    def process_values(self, supplier: Callable[[], Any], *store_names: str, named: NamedArg = None) -> "KStream":
        """Like :meth:`process` for a processor that keeps keys (no repartition after)."""
        s = self._add("KSTREAM-PROCESSVALUES-", named, supplier, value_serde=None)
        if store_names:
            self.builder.topology.connect_processor_and_state_stores(s.node, *store_names)
        return s

    # -- sinks and repartitioning
    def to(self, topic: Any, produced: Optional[Produced] = None, *, key_serde: Any = None,
           value_serde: Any = None) -> None:
        """Write to ``topic``, or to the topic a TopicNameExtractor / ``fn(key, value,
        record_context)`` names per record."""
        p = produced or Produced()
        name = p.name or self.builder.new_processor_name("KSTREAM-SINK-")
        self.builder.topology.add_sink(name, topic, self.node, key_serde=key_serde or p.key_serde or self.key_serde,
                                       value_serde=value_serde or p.value_serde or self.value_serde,
                                       partitioner=p.partitioner)

    def _repartition_through(self, prefix: str, key_serde: Any, value_serde: Any,
                             num_partitions: Optional[int] = None, partitioner: Any = None) -> str:
        """Sink, null-key filter and source around a repartition topic; returns the
        source's name (Kafka's ``createRepartitionedSource``)."""
        b = self.builder
        topic = prefix if prefix.endswith("-repartition") else f"{prefix}-repartition"
        gen_sink = b.new_processor_name("KSTREAM-SINK-")
        gen_filter = b.new_processor_name("KSTREAM-FILTER-")
        gen_source = b.new_processor_name("KSTREAM-SOURCE-")
        if _generated(prefix):
            sink, filt, source = gen_sink, gen_filter, gen_source
        else:
            sink, filt, source = f"{topic}-sink", f"{topic}-filter", f"{topic}-source"
        t = b.topology
        t.add_processor(filt, P.NullKeyFilter, self.node)
        t.add_sink(sink, topic, filt, key_serde=key_serde, value_serde=value_serde, partitioner=partitioner)
        t.add_source(source, topic, key_serde=key_serde, value_serde=value_serde)
        t.repartition_topics[topic] = num_partitions
        return source

    def repartition(self, repartitioned: Optional[Repartitioned] = None) -> "KStream":
        """Write through a repartition topic (``<application.id>-<name>-repartition``)."""
        r = repartitioned or Repartitioned()
        ks, vs = r.key_serde or self.key_serde, r.value_serde or self.value_serde
        prefix = r.name or self.builder.new_processor_name("KSTREAM-REPARTITION-")
        source = self._repartition_through(prefix, ks, vs, r.num_partitions, r.partitioner)
        return KStream(self.builder, source, ks, vs, repartition_required=False)

    # -- grouping
    def group_by_key(self, grouped: Optional[Grouped] = None, *, key_serde: Any = None,
                     value_serde: Any = None) -> "KGroupedStream":
        from .kgrouped import KGroupedStream
        g = grouped or Grouped()
        return KGroupedStream(self, g.name, key_serde or g.key_serde or self.key_serde,
                              value_serde or g.value_serde or self.value_serde, self.repartition_required)

    def group_by(self, selector: Callable[[Any, Any], Any], grouped: Optional[Grouped] = None, *,
                 key_serde: Any = None, value_serde: Any = None) -> "KGroupedStream":
        """Group by a new key: ``selector(key, value)``; the aggregation reads it back
        through a repartition topic."""
        from .kgrouped import KGroupedStream
        g = grouped or Grouped()
        if g.name is not None:
            self.builder.new_processor_name("KSTREAM-KEY-SELECT-")  # Kafka spends the index anyway
        selected = self._add("KSTREAM-KEY-SELECT-", g.name, lambda: P.SelectKey(selector), key_serde=None,
                             repartition=True)
        return KGroupedStream(selected, g.name, key_serde or g.key_serde, value_serde or g.value_serde or self.value_serde,
                              True)

    # -- joins
    def _for_join(self, joined_name: Optional[str], key_serde: Any, value_serde: Any) -> "KStream":
        if not self.repartition_required:
            return self
        prefix = joined_name or self.node
        source = self._repartition_through(prefix, key_serde, value_serde)
        return KStream(self.builder, source, key_serde, value_serde, False)

    def join(self, other: Any, joiner: Callable[[Any, Any], Any], windows: Any = None, *,
             joined: Union[Joined, StreamJoined, None] = None, key_selector: Optional[Callable[[Any, Any], Any]] = None,
             named: NamedArg = None) -> "KStream":
        """Inner join with a KStream (``windows``: :class:`JoinWindows`), a KTable, or a
        GlobalKTable (``key_selector(key, value)`` gives the table key)."""
        return self._join(other, joiner, windows, joined, key_selector, named, "inner")

    def left_join(self, other: Any, joiner: Callable[[Any, Any], Any], windows: Any = None, *,
                  joined: Union[Joined, StreamJoined, None] = None,
                  key_selector: Optional[Callable[[Any, Any], Any]] = None, named: NamedArg = None) -> "KStream":
        return self._join(other, joiner, windows, joined, key_selector, named, "left")

    def outer_join(self, other: "KStream", joiner: Callable[[Any, Any], Any], windows: Any, *,
                   joined: Optional[StreamJoined] = None, named: NamedArg = None) -> "KStream":
        return self._join(other, joiner, windows, joined, None, named, "outer")

    def _join(self, other: Any, joiner: Callable[[Any, Any], Any], windows: Any, joined: Any,
              key_selector: Any, named: NamedArg, kind: str) -> "KStream":
        from .ktable import GlobalKTable, KTable
        if isinstance(other, KStream):
            from .joins import stream_stream_join
            if windows is None:
                raise TopologyError("a stream-stream join needs JoinWindows")
            return stream_stream_join(self, other, joiner, windows, joined, named, kind)
        if kind == "outer":
            raise TopologyError("outer_join is only defined between two KStreams")
        name = name_of(named) or name_of(joined)
        if isinstance(other, GlobalKTable):
            if key_selector is None:
                raise TopologyError("a stream-globaltable join needs key_selector=(key, value) -> table key")
            table = other.table
            getter = table.value_getter_factory()
            return self._add("KSTREAM-LEFTJOIN-", name,
                             lambda: P.StreamTableJoin(getter, joiner, kind == "left", key_selector), value_serde=None)
        if isinstance(other, KTable):
            j = joined if isinstance(joined, Joined) else Joined()
            stream = self._for_join(j.name, j.key_serde or self.key_serde, j.value_serde or self.value_serde)
            getter = other.value_getter_factory()
            prefix = "KSTREAM-JOIN-" if kind == "inner" else "KSTREAM-LEFTJOIN-"
            s = stream._add(prefix, name, lambda: P.StreamTableJoin(getter, joiner, kind == "left"), value_serde=None)
            other.connect_getter_stores(s.node)
            return s
        raise TypeError(f"cannot join a KStream with {other!r}")

    def to_table(self, named: NamedArg = None, materialized: Any = None) -> "KTable":
        from .ktable import table_from_stream
        return table_from_stream(self, named, materialized)

    def __repr__(self) -> str:
        return f"<KStream {self.node}>"


def _generated(prefix: str) -> bool:
    from .builder import _GENERATED
    return bool(_GENERATED.fullmatch(prefix))


class BranchedKStream:
    """``split()``: add branches with :meth:`branch`, finish with :meth:`default_branch`
    or :meth:`no_default_branch`, which return ``{name: KStream}`` (Kafka's
    ``BranchedKStream``).  A branch is named ``<split name><branch name or position>``;
    the default branch's position is 0."""

    def __init__(self, stream: KStream, name: Optional[str]) -> None:
        self.stream = stream
        b = stream.builder
        generated = b.new_processor_name("KSTREAM-BRANCH-")
        self.split_name = name or generated
        self.predicates: List[Optional[Callable[[Any, Any], bool]]] = []
        self.children: List[str] = []
        self.result: Dict[str, KStream] = {}
        preds, children = self.predicates, self.children
        b.topology.add_processor(self.split_name, lambda: P.Branch(list(preds), list(children)), stream.node)

    def _add(self, predicate: Optional[Callable[[Any, Any], bool]], branched: Optional[Branched], position: int) -> None:
        br = branched or Branched()
        child = self.split_name + (br.name if br.name is not None else str(position))
        b = self.stream.builder
        b.new_processor_name("KSTREAM-BRANCHCHILD-")  # Kafka spends one index per branch
        b.topology.add_processor(child, P.PassThrough, self.split_name)
        self.predicates.append(predicate)
        self.children.append(child)
        s = KStream(b, child, self.stream.key_serde, self.stream.value_serde, self.stream.repartition_required)
        if br.function is not None:
            out = br.function(s)
            if out is not None:
                self.result[child] = out
        elif br.consumer is not None:
            br.consumer(s)
        else:
            self.result[child] = s

    def branch(self, predicate: Callable[[Any, Any], bool], branched: Optional[Branched] = None) -> "BranchedKStream":
        self._add(predicate, branched, len(self.children) + 1)
        return self

    def default_branch(self, branched: Optional[Branched] = None) -> Dict[str, KStream]:
        self._add(None, branched, 0)
        return self.result

    def no_default_branch(self) -> Dict[str, KStream]:
        return self.result
