"""Fused stateless chains: a source, a run of stateless DSL processors and a sink (or a
``foreach``), compiled into one Python loop over a batch of records.

A :class:`~pylog.streams.task.StreamTask` asks :func:`compile_chain` for its source
node once; when every node below the source is one of Kafka's stateless one-in,
at-most-one-out processors (filter, filter_not, map, map_values, select_key, peek,
the repartition null-key filter, pass-through) with exactly one child, and the chain
ends in a sink to a fixed topic or in a ``foreach``, the chain becomes one generated
function.  Per record it calls only the user's functions and the serdes that are not the
built-in bytes serde (which is the identity on the bytes a batch decodes to); there is
no :class:`~pylog.streams.processor.Record`, no ``context.forward`` and no context
bookkeeping, because nothing in such a chain can see the context.  Sink output is
gathered per batch (keys, values, timestamps) for the record collector.

Each line of the generated loop belongs to one node; when a user function raises, the
line of the loop's frame names the node and the loop's locals give the record index
and stream time, so the task applies Kafka's exception handlers exactly as on the
per-record path (see :meth:`StreamTask.process_batch`).

Pure functions of the topology; nothing here holds state between batches.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from ._processors import Filter, Map, MapValues, NullKeyFilter, PassThrough, Peek, SelectKey
from .serdes import _bytes_deserialize, _bytes_serialize

__all__ = ["FusedChain", "compile_chain"]

_STATELESS = (Filter, Map, MapValues, NullKeyFilter, PassThrough, Peek, SelectKey)


class FusedChain:
    """A compiled chain: ``run(keys, values, timestamps, start, stream_time, out_keys,
    out_values, out_timestamps) -> stream_time``.

    Attributes
    ----------
    code
        The generated loop's code object (to find its frame in a traceback).
    owners
        Line number -> name of the node that line runs.
    source
        Name of the source node.
    sink_topic, partitioner
        Where the output goes; ``sink_topic`` is None for a chain ending in ``foreach``.
    """

    __slots__ = ("run", "code", "owners", "source", "sink_topic", "partitioner", "text")

    def __init__(self, run: Callable[..., int], owners: Dict[int, str], source: str, sink_topic: Optional[str],
                 partitioner: Any, text: str) -> None:
        self.run = run
        self.code = run.__code__
        self.owners = owners
        self.source = source
        self.sink_topic = sink_topic
        self.partitioner = partitioner
        self.text = text


def _chain(source: Any, sink_type: type) -> Optional[List[Any]]:
    """The nodes below ``source`` down to its sink (or foreach), when they form a
    fusable chain."""
    nodes: List[Any] = []
    node = source
    while True:
        if len(node.children) != 1:
            return None
        node = node.children[0]
        proc: Any = node.processor
        if type(proc) is sink_type:
            if getattr(proc, "topic", None) is None:     # a TopicNameExtractor sees the record context
                return None
            nodes.append(node)
            return nodes
        if type(proc) not in _STATELESS or getattr(node.process, "__self__", None) is not proc:
            return None
        nodes.append(node)
        if type(proc) is Peek and not proc.do_forward:
            return nodes


def compile_chain(source: Any, sink_type: type, bad_timestamp: Callable[[int, int], None]) -> Optional[FusedChain]:
    """The fused loop for ``source``'s chain, or None when it is not fusable.

    ``source`` is a task's source node (its processor has ``key_de``, ``value_de`` and
    ``extractor``); ``sink_type`` is the task's sink processor class;
    ``bad_timestamp(index, timestamp)`` is called for a record with a negative
    timestamp, which is then skipped.
    """
    sp = source.processor
    if getattr(sp, "extractor", None) is not None:
        return None
    nodes = _chain(source, sink_type)
    if nodes is None:
        return None
    env: Dict[str, Any] = {}
    lines: List[Tuple[str, str]] = []      # (code, owner)
    src = source.name

    def emit(code: str, owner: str) -> None:
        lines.append((code, owner))

    emit("def fused(keys, values, tss, i0, st, out_k, out_v, out_t):", src)
    emit("    for i in range(i0, len(tss)):", src)
    emit("        k = keys[i]", src)
    emit("        v = values[i]", src)
    emit("        ts = tss[i]", src)
    if sp.key_de is not _bytes_deserialize:
        env["kde"] = sp.key_de
        emit("        k = kde(k)", src)
    if sp.value_de is not _bytes_deserialize:
        env["vde"] = sp.value_de
        emit("        v = vde(v)", src)
    emit("        if ts < 0:", src)
    emit("            bad_ts(i, ts)", src)
    emit("            continue", src)
    emit("        if ts > st:", src)
    emit("            st = ts", src)
    sink_topic = None
    partitioner = None
    for n, node in enumerate(nodes):
        proc = node.processor
        name = node.name
        f = f"f{n}"
        t = type(proc)
        if t is Filter:
            env[f] = proc.predicate
            negate = proc.process.__func__ is Filter._process_not
            emit(f"        if {'' if negate else 'not '}{f}(k, v):", name)
            emit("            continue", name)
        elif t is MapValues:
            env[f] = proc.mapper
            with_key = proc.process.__func__ is MapValues._process_with_key
            emit(f"        v = {f}({'k, v' if with_key else 'v'})", name)
        elif t is Map:
            env[f] = proc.mapper
            emit(f"        k, v = {f}(k, v)", name)
        elif t is SelectKey:
            env[f] = proc.mapper
            emit(f"        k = {f}(k, v)", name)
        elif t is Peek:
            env[f] = proc.action
            emit(f"        {f}(k, v)", name)
        elif t is NullKeyFilter:
            emit("        if k is None:", name)
            emit("            continue", name)
        elif t is PassThrough:
            pass
        else:   # the sink
            sink_topic = proc.topic
            partitioner = proc.partitioner
            for side, ser in (("k", proc.key_ser), ("v", proc.value_ser)):
                if ser is _bytes_serialize:
                    # the bytes serde's own check, inline: bytes and None pass as they are
                    emit(f"        {side}b = {side} if {side} is None or type({side}) is bytes else {side}ser({side})",
                         name)
                else:
                    emit(f"        {side}b = {side}ser({side})", name)
                env[f"{side}ser"] = ser
            emit("        out_k.append(kb)", name)
            emit("        out_v.append(vb)", name)
            emit("        out_t.append(ts)", name)
    emit("    return st", src)
    text = "\n".join(code for code, _ in lines) + "\n"
    env["bad_ts"] = bad_timestamp
    filename = f"<pylog.streams fused chain of {src}>"
    exec(compile(text, filename, "exec"), env)
    owners = {lineno: owner for lineno, (_, owner) in enumerate(lines, start=1)}
    return FusedChain(env["fused"], owners, src, sink_topic, partitioner, text)
