"""A topology: the graph of source, processor and sink nodes and the state stores they
use (Kafka Streams' ``Topology`` / ``InternalTopologyBuilder``).

The DSL (:class:`~pylog.streams.StreamsBuilder`) compiles to this graph; the Processor API
builds it directly with :meth:`Topology.add_source`, :meth:`add_processor`,
:meth:`add_sink` and :meth:`add_state_store`.  One runtime
(:mod:`pylog.streams.task`) runs both.

Sub-topologies are the connected parts of the graph, where nodes that share a state
store are connected too; they are numbered as Kafka numbers them (by the sorted names of
their source nodes), so a sub-topology id, a task id (``<subtopology>_<partition>``) and
the text of :meth:`Topology.describe` are those Kafka Streams gives the same topology.
``describe()`` reproduces Kafka's text exactly, including the order in which Kafka lists
a node's successors and predecessors (which follows the iteration order of Java hash sets
and the insertion order of tree sets, emulated here).

A topology is built by one thread, then only read.
"""

from __future__ import annotations

import abc
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from pylog.errors import PylogError

__all__ = ["Topology", "TopologyDescription", "TopologyError", "TopicNameExtractor"]


class TopologyError(PylogError, ValueError):
    """The topology is not valid (Kafka's ``TopologyException``): the message says which
    node or store is wrong and why."""


class TopicNameExtractor(abc.ABC):
    """Chooses a sink's topic per record: ``extract(key, value, record_context) -> str``.
    A plain function of the same three arguments works too.  An abstract base class: a
    subclass that does not define ``extract`` cannot be instantiated."""

    @abc.abstractmethod
    def extract(self, key: Any, value: Any, record_context: Any) -> str:
        """The topic this record goes to."""


# ---- node factories -------------------------------------------------------------------

class SourceNode:
    kind = "source"

    def __init__(self, name: str, topics: Sequence[str], pattern: Optional[re.Pattern],
                 key_serde: Any, value_serde: Any, timestamp_extractor: Any, is_global: bool = False) -> None:
        self.name = name
        self.topics = list(topics)
        self.pattern = pattern
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.timestamp_extractor = timestamp_extractor
        self.predecessors: List[str] = []
        self.is_global = is_global


class ProcessorNode:
    kind = "processor"

    def __init__(self, name: str, supplier: Callable[[], Any], predecessors: Sequence[str]) -> None:
        self.name = name
        self.supplier = supplier
        self.predecessors = list(predecessors)
        self.stores: List[str] = []


class SinkNode:
    kind = "sink"

    def __init__(self, name: str, topic: Union[str, Any], predecessors: Sequence[str],
                 key_serde: Any, value_serde: Any, partitioner: Any) -> None:
        self.name = name
        self.topic = topic
        self.predecessors = list(predecessors)
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.partitioner = partitioner


class StoreMeta:
    """What the test driver and interactive queries need to read a store: its kind and
    the serdes of its keys and values; ``timestamped`` stores prefix each value with its
    8-byte big-endian timestamp, as Kafka's timestamped stores do."""

    def __init__(self, builder: Any, key_serde: Any = None, value_serde: Any = None,
                 timestamped: bool = False, is_global: bool = False) -> None:
        self.builder = builder
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.timestamped = timestamped
        self.is_global = is_global
        self.users: List[str] = []

    @property
    def name(self) -> str:
        return self.builder.name

    @property
    def kind(self) -> str:
        return self.builder.kind


# ---- the topology ---------------------------------------------------------------------

class Topology:
    """A processing graph (Kafka's ``Topology``).  Build it with the Processor API, or get
    one from :meth:`StreamsBuilder.build`."""

    def __init__(self) -> None:
        self.nodes: Dict[str, Any] = {}
        self.stores: Dict[str, StoreMeta] = {}
        #: repartition topics, by their name without the application id prefix
        self.repartition_topics: Dict[str, Optional[int]] = {}
        #: internal topics that take the partition count of the sub-topology reading
        #: them, not writing them (Kafka's co-partition groups of a foreign-key join)
        self.copartitioned_topics: Set[str] = set()
        self._parents: Dict[str, str] = {}  # union-find over node names (Kafka's QuickUnion)

    # -- union-find
    def _root(self, name: str) -> str:
        parents = self._parents
        while parents[name] != name:
            parents[name] = parents[parents[name]]
            name = parents[name]
        return name

    def _unite(self, a: str, b: str) -> None:
        ra, rb = self._root(a), self._root(b)
        if ra != rb:
            self._parents[rb] = ra

    def _add_node(self, node: Any) -> None:
        if not node.name or not isinstance(node.name, str):
            raise TopologyError(f"a node needs a non-empty name, got {node.name!r}")
        if node.name in self.nodes:
            raise TopologyError(f"a node named {node.name!r} is already in the topology")
        for p in node.predecessors:
            if p == node.name:
                raise TopologyError(f"node {node.name!r} cannot be its own parent")
            parent = self.nodes.get(p)
            if parent is None:
                raise TopologyError(f"parent node {p!r} of {node.name!r} is not in the topology "
                                    "(add parents before children)")
            if parent.kind == "sink":
                raise TopologyError(f"sink {p!r} cannot be the parent of {node.name!r}")
        self.nodes[node.name] = node
        self._parents[node.name] = node.name
        for p in node.predecessors:
            self._unite(p, node.name)

    # -- Processor API
    def add_source(self, name: str, *topics: str, pattern: Union[str, re.Pattern, None] = None,
                   key_serde: Any = None, value_serde: Any = None, timestamp_extractor: Any = None) -> "Topology":
        """A source node reading ``topics`` (or every topic matching ``pattern``)."""
        if bool(topics) == (pattern is not None):
            raise TopologyError(f"source {name!r} needs topics or a pattern, not both, not neither")
        for t in topics:
            for node in self.nodes.values():
                if node.kind == "source" and t in node.topics:
                    raise TopologyError(f"topic {t!r} is already read by source {node.name!r}")
        pat = re.compile(pattern) if isinstance(pattern, str) else pattern
        self._add_node(SourceNode(name, topics, pat, key_serde, value_serde, timestamp_extractor))
        return self

    def add_processor(self, name: str, supplier: Callable[[], Any], *parent_names: str) -> "Topology":
        """A processor node; ``supplier()`` makes one processor per task."""
        if not parent_names:
            raise TopologyError(f"processor {name!r} needs at least one parent")
        if not callable(supplier):
            raise TopologyError(f"the supplier of processor {name!r} must be callable "
                                "(a Processor class or a function returning a new Processor)")
        self._add_node(ProcessorNode(name, supplier, parent_names))
        return self

    def add_sink(self, name: str, topic: Union[str, Any], *parent_names: str, key_serde: Any = None,
                 value_serde: Any = None, partitioner: Any = None) -> "Topology":
        """A sink node writing to ``topic``, or to the topic a
        :class:`TopicNameExtractor` (or function) names per record."""
        if not parent_names:
            raise TopologyError(f"sink {name!r} needs at least one parent")
        self._add_node(SinkNode(name, topic, parent_names, key_serde, value_serde, partitioner))
        return self

    def add_state_store(self, store_builder: Any, *processor_names: str, key_serde: Any = None,
                        value_serde: Any = None, timestamped: bool = False) -> "Topology":
        """Register a store (a :class:`~pylog.streams.state.StoreBuilder`) and connect it
        to the named processors."""
        name = store_builder.name
        if name in self.stores:
            raise TopologyError(f"a state store named {name!r} is already in the topology")
        self.stores[name] = StoreMeta(store_builder, key_serde, value_serde, timestamped)
        self.connect_processor_and_state_stores_list(processor_names, [name])
        return self

    def add_global_store(self, store_builder: Any, source_name: str, topic: str, processor_name: str,
                         supplier: Callable[[], Any], key_serde: Any = None, value_serde: Any = None,
                         timestamp_extractor: Any = None, timestamped: bool = False) -> "Topology":
        """A global store: every instance reads every partition of ``topic`` through the
        processor ``supplier()`` that fills the store.  The store's logging must be off:
        the topic is its changelog."""
        if store_builder.logging_enabled:
            raise TopologyError(f"global store {store_builder.name!r} must have logging disabled "
                                "(its source topic is its changelog)")
        self.add_source(source_name, topic, key_serde=key_serde, value_serde=value_serde,
                        timestamp_extractor=timestamp_extractor)
        self.nodes[source_name].is_global = True
        self.add_processor(processor_name, supplier, source_name)
        if store_builder.name in self.stores:
            raise TopologyError(f"a state store named {store_builder.name!r} is already in the topology")
        meta = StoreMeta(store_builder, key_serde, value_serde, timestamped, is_global=True)
        self.stores[store_builder.name] = meta
        self.connect_processor_and_state_stores(processor_name, store_builder.name)
        return self

    def connect_processor_and_state_stores(self, processor_name: str, *store_names: str) -> "Topology":
        return self.connect_processor_and_state_stores_list([processor_name], store_names)

    def connect_processor_and_state_stores_list(self, processor_names: Iterable[str],
                                                store_names: Iterable[str]) -> "Topology":
        for store_name in store_names:
            meta = self.stores.get(store_name)
            if meta is None:
                raise TopologyError(f"state store {store_name!r} is not in the topology (add_state_store first)")
            for pname in processor_names:
                node = self.nodes.get(pname)
                if node is None or node.kind != "processor":
                    raise TopologyError(f"{pname!r} is not a processor of the topology; "
                                        f"only processors can use state store {store_name!r}")
                if store_name not in node.stores:
                    node.stores.append(store_name)
                if pname not in meta.users:
                    if meta.users:
                        self._unite(meta.users[0], pname)
                    meta.users.append(pname)
        return self

    # -- structure
    def node_groups(self) -> List[Tuple[int, List[str]]]:
        """Sub-topologies as Kafka numbers them: ``[(id, [node names in Kafka's insertion
        order])]``; ids follow the sorted names of source nodes, then of the others."""
        groups: Dict[str, List[str]] = {}
        order: List[Tuple[int, List[str]]] = []
        sources = sorted(n for n, node in self.nodes.items() if node.kind == "source")
        others = sorted(n for n, node in self.nodes.items() if node.kind != "source")
        for name in sources + others:
            root = self._root(name)
            group = groups.get(root)
            if group is None:
                group = groups[root] = []
                order.append((len(order), group))
            group.append(name)
        return order

    def is_global_group(self, names: Sequence[str]) -> bool:
        return any(self.nodes[n].kind == "source" and self.nodes[n].is_global for n in names)

    def source_topics(self) -> Set[str]:
        return {t for n in self.nodes.values() if n.kind == "source" for t in n.topics}

    def describe(self) -> "TopologyDescription":
        """The topology as Kafka Streams' ``TopologyDescription`` (``str()`` of it is
        Kafka's text; :meth:`TopologyDescription.to_mermaid` draws it)."""
        return TopologyDescription(self)

    def __repr__(self) -> str:
        return f"<Topology {len(self.nodes)} nodes, {len(self.stores)} stores>"


# ---- describe(): Kafka's text, byte for byte --------------------------------------------

def _java_string_hash(s: str) -> int:
    h = 0
    for unit in s.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(unit, 16)) & 0xFFFFFFFF
    return h


def _java_hash_order(names: Sequence[str], capacity: int = 16) -> List[str]:
    """The iteration order of a ``java.util.HashSet`` filled with ``names`` in order:
    by bucket (spread hash masked by the table size, which doubles past 3/4 full), then
    insertion order within a bucket."""
    while len(names) > capacity * 3 // 4:
        capacity *= 2
    mask = capacity - 1
    indexed = []
    for i, n in enumerate(names):
        h = _java_string_hash(n)
        indexed.append(((h ^ (h >> 16)) & mask, i, n))
    indexed.sort()
    return [n for _, _, n in indexed]


class _DescNode:
    __slots__ = ("name", "factory", "size", "preds", "succs")

    def __init__(self, name: str, factory: Any) -> None:
        self.name = name
        self.factory = factory
        self.size = 1
        self.preds = _TreeSet()
        self.succs = _TreeSet()


def _compare(a: _DescNode, b: _DescNode) -> int:
    """Kafka's NODE_COMPARATOR: bigger sub-tree first, then by name."""
    if a is b:
        return 0
    if a.size != b.size:
        return b.size - a.size
    return (a.name > b.name) - (a.name < b.name)


class _TreeSet:
    """``java.util.TreeSet`` with a comparator that reads live node sizes: a red-black
    tree whose shape, fixed at insertion, decides the iteration order when sizes change
    after insertion (as they do while Kafka connects a sub-topology's nodes)."""

    __slots__ = ("root",)

    class _E:
        __slots__ = ("item", "left", "right", "parent", "black")

        def __init__(self, item: Any, parent: Any) -> None:
            self.item = item
            self.left = self.right = None
            self.parent = parent
            self.black = True

    def __init__(self) -> None:
        self.root = None

    def add(self, item: Any) -> None:
        t = self.root
        if t is None:
            self.root = self._E(item, None)
            return
        while True:
            c = _compare(item, t.item)
            if c == 0:
                return
            nxt = t.left if c < 0 else t.right
            if nxt is None:
                e = self._E(item, t)
                if c < 0:
                    t.left = e
                else:
                    t.right = e
                self._fix(e)
                return
            t = nxt

    @staticmethod
    def _black(e: Any) -> bool:
        return e is None or e.black

    def _rotate_left(self, p: Any) -> None:
        r = p.right
        p.right = r.left
        if r.left is not None:
            r.left.parent = p
        r.parent = p.parent
        if p.parent is None:
            self.root = r
        elif p.parent.left is p:
            p.parent.left = r
        else:
            p.parent.right = r
        r.left = p
        p.parent = r

    def _rotate_right(self, p: Any) -> None:
        left = p.left
        p.left = left.right
        if left.right is not None:
            left.right.parent = p
        left.parent = p.parent
        if p.parent is None:
            self.root = left
        elif p.parent.right is p:
            p.parent.right = left
        else:
            p.parent.left = left
        left.right = p
        p.parent = left

    def _fix(self, x: Any) -> None:
        x.black = False
        while x is not None and x is not self.root and not x.parent.black:
            parent = x.parent
            grand = parent.parent
            if parent is grand.left:
                y = grand.right
                if not self._black(y):
                    parent.black = True
                    y.black = True
                    grand.black = False
                    x = grand
                else:
                    if x is parent.right:
                        x = parent
                        self._rotate_left(x)
                    x.parent.black = True
                    x.parent.parent.black = False
                    self._rotate_right(x.parent.parent)
            else:
                y = grand.left
                if not self._black(y):
                    parent.black = True
                    y.black = True
                    grand.black = False
                    x = grand
                else:
                    if x is parent.left:
                        x = parent
                        self._rotate_right(x)
                    x.parent.black = True
                    x.parent.parent.black = False
                    self._rotate_left(x.parent.parent)
        self.root.black = True

    def __iter__(self) -> Any:
        stack: List[Any] = []
        e = self.root
        while stack or e is not None:
            while e is not None:
                stack.append(e)
                e = e.left
            e = stack.pop()
            yield e.item
            e = e.right


def _update_size(node: _DescNode, delta: int) -> None:
    node.size += delta
    for p in node.preds:
        _update_size(p, delta)


def _names(nodes: Iterable[_DescNode]) -> str:
    names = [n.name for n in nodes]
    return ", ".join(names) if names else "none"


def _java_set_str(items: Sequence[str]) -> str:
    return "[" + ", ".join(_java_hash_order(list(items))) + "]"


class TopologyDescription:
    """Kafka Streams' ``TopologyDescription``: ``subtopologies`` (id, nodes) and
    ``global_stores``; ``str()`` is Kafka's text; :meth:`to_mermaid` a Mermaid flowchart."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.subtopologies: List[Tuple[int, List[_DescNode]]] = []
        self.global_stores: List[Tuple[int, List[_DescNode]]] = []
        for gid, names in topology.node_groups():
            nodes = self._connect(names)
            ordered = sorted(nodes, key=lambda n: (-n.size, n.name))
            (self.global_stores if topology.is_global_group(names) else self.subtopologies).append((gid, ordered))

    def _connect(self, names: List[str]) -> List[_DescNode]:
        order = _java_hash_order(names)
        by_name = {n: _DescNode(n, self.topology.nodes[n]) for n in order}
        for name in order:
            node = by_name[name]
            for pred_name in node.factory.predecessors:
                pred = by_name[pred_name]
                node.preds.add(pred)
                pred.succs.add(node)
                _update_size(pred, node.size)
        return list(by_name.values())

    @staticmethod
    def _node_text(n: _DescNode) -> str:
        f = n.factory
        if f.kind == "source":
            topics = f.pattern.pattern if f.pattern is not None else "[" + ", ".join(f.topics) + "]"
            return f"Source: {n.name} (topics: {topics})\n      --> {_names(n.succs)}"
        if f.kind == "processor":
            return (f"Processor: {n.name} (stores: {_java_set_str(f.stores)})\n"
                    f"      --> {_names(n.succs)}\n      <-- {_names(n.preds)}")
        if isinstance(f.topic, str):
            target = f"topic: {f.topic}"
        else:
            target = f"extractor class: {getattr(f.topic, '__qualname__', type(f.topic).__qualname__)}"
        return f"Sink: {n.name} ({target})\n      <-- {_names(n.preds)}"

    def __str__(self) -> str:
        parts = ["Topologies:\n "]
        entries = sorted([(gid, False, nodes) for gid, nodes in self.subtopologies]
                         + [(gid, True, nodes) for gid, nodes in self.global_stores], key=lambda e: e[0])
        for gid, is_global, nodes in entries:
            parts.append("  ")
            if is_global:
                source = next(n for n in nodes if n.factory.kind == "source")
                proc = next(n for n in nodes if n.factory.kind == "processor")
                parts.append(f"Sub-topology: {gid} for global store (will not generate tasks)\n"
                             f"    {self._node_text(source)}\n    {self._node_text(proc)}\n")
            else:
                parts.append(f"Sub-topology: {gid}\n")
                for n in nodes:
                    parts.append(f"    {self._node_text(n)}\n")
                parts.append("\n")
        return "".join(parts)

    __repr__ = __str__

    def to_mermaid(self) -> str:
        """A Mermaid ``flowchart TB``: one subgraph per sub-topology, topics as stadium
        shapes, stores as cylinders."""
        out = ["flowchart TB"]
        ids: Dict[str, str] = {}

        def nid(kind: str, name: str) -> str:
            key = f"{kind}:{name}"
            if key not in ids:
                ids[key] = f"{kind[0]}{len(ids)}"
            return ids[key]

        def q(s: str) -> str:
            return '"' + s.replace('"', "#quot;") + '"'

        edges: List[str] = []
        for gid, nodes in sorted(self.subtopologies + self.global_stores, key=lambda e: e[0]):
            title = f"Sub-topology: {gid}" + (" (global store)" if (gid, nodes) in self.global_stores else "")
            out.append(f"  subgraph sub{gid} [{q(title)}]")
            for n in nodes:
                f = n.factory
                me = nid("node", n.name)
                out.append(f"    {me}[{q(n.name)}]")
                for s in n.succs:
                    edges.append(f"  {me} --> {nid('node', s.name)}")
                if f.kind == "source":
                    for t in ([f.pattern.pattern] if f.pattern is not None else f.topics):
                        edges.append(f"  {nid('topic', t)}([{q(t)}]) --> {me}")
                elif f.kind == "sink":
                    t = f.topic if isinstance(f.topic, str) else "(extractor)"
                    edges.append(f"  {me} --> {nid('topic', t)}([{q(t)}])")
                else:
                    for s in f.stores:
                        edges.append(f"  {me} -.- {nid('store', s)}[({q(s)})]")
            out.append("  end")
        return "\n".join(out + edges) + "\n"
