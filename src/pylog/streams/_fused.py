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

A chain may also hold one windowed aggregation over time windows (tumbling or
hopping; Kafka's ``KStreamWindowAggregate``: ``count``, ``reduce``, ``aggregate``)
followed by ``to_stream()`` and the sink, when it emits every update (the default
emit strategy) into a window store without duplicates, change-logged or not.  Per
record the loop then assigns the windows (arithmetic, inline), reads and writes the
aggregate and its timestamp in the processor's ``fused_cache`` and ``fused_cache_ts``
(per window start, by key bytes; in front of the store; a window past the store's
stream time when the cache was last empty is read from the cache alone), builds the
window's binary key (the store's and the changelog's), its stored value, and the
changelog and sink records; the only Python it calls per record is the user's
initializer/aggregator and the non-bytes serdes, and a count allocates no object the
garbage collector tracks.  After the batch (and after a record the exception handlers
skip), the windows the batch changed go to the store below the logging layer as one
dict per window start (:meth:`WindowOps.put_window_runs`, a dict update per run in
the RocksDB store's write buffer), and the changelog records go to the record
collector as the logging store would have sent them, one per update.  Output,
changelog, store contents, stream time and metrics equal the per-record path's;
only the interleaving of changelog and sink records within a batch differs (each
topic keeps its order).  When the chain is exactly source, ``count()``,
``to_stream()`` and sink, over bytes keys and values, long counts and windowed bytes
keys out, no user code runs per record at all and the same statements run in C
(:func:`pylog._core.window_count_batch`) instead of a generated loop.  The cache is the processor's, so the per-record path
(:meth:`TimeWindowAggregate.process`) clears it before touching the store.

Each line of the generated loop belongs to one node; when a user function raises, the
line of the loop's frame names the node and the loop's locals give the record index
and stream time, so the task applies Kafka's exception handlers exactly as on the
per-record path (see :meth:`StreamTask.process_batch`).

Pure functions of the topology, apart from a fused windowed aggregation's cache
(above), which lives in its processor.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Dict, List, Optional, Tuple

from ._processors import Filter, Map, MapValues, NullKeyFilter, PassThrough, Peek, SelectKey, ToStream, _dropped
from .errors import DeliveryWatch
from .processor import Record
from .serdes import Serdes, _bytes_deserialize, _bytes_serialize
from .state._base import check_key
from .state._windows import WindowOps
from .state.changelogging import ChangeLoggingWindowStore
from .windowed import TimeWindowAggregate, count_aggregator, count_initializer
from .windows import TimeWindows, Window, Windowed

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

    __slots__ = ("run", "code", "owners", "source", "sink_topic", "partitioner", "text", "native")

    def __init__(self, run: Callable[..., int], owners: Dict[int, str], source: str, sink_topic: Optional[str],
                 partitioner: Any, text: str, code: Any = None, native: bool = False) -> None:
        self.run = run
        self.code = run.__code__ if code is None else code
        self.owners = owners
        self.source = source
        self.sink_topic = sink_topic
        self.partitioner = partitioner
        self.text = text
        #: True when the loop is pylog._core.window_count_batch (no generated code)
        self.native = native


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
        if type(proc) is TimeWindowAggregate and getattr(node.process, "__self__", None) is proc:
            # a windowed aggregation, then to_stream() straight into the sink
            if not _fusable_window_aggregate(proc) or any(type(n.processor) is TimeWindowAggregate for n in nodes):
                return None
            nodes.append(node)
            if len(node.children) != 1:
                return None
            node = node.children[0]
            if type(node.processor) is not ToStream or node.processor.mapper is not None \
                    or getattr(node.process, "__self__", None) is not node.processor:
                return None
            nodes.append(node)
            if len(node.children) != 1 or type(node.children[0].processor) is not sink_type \
                    or getattr(node.children[0].processor, "topic", None) is None:
                return None
            nodes.append(node.children[0])
            return nodes
        if type(proc) not in _STATELESS or getattr(node.process, "__self__", None) is not proc:
            return None
        nodes.append(node)
        if type(proc) is Peek and not proc.do_forward:
            return nodes


def _fusable_window_aggregate(proc: Any) -> bool:
    """A time-window aggregation the loop can run: emit on update, over a window store
    without duplicates that is not logged or change-logged by the logging wrapper as a
    timestamped store (the plain value, stamped with the aggregate's timestamp)."""
    store: Any = getattr(proc, "store", None)
    logged = type(store) is ChangeLoggingWindowStore
    inner = store.inner if logged else store
    return (not proc.emit_final and isinstance(proc.windows, TimeWindows) and isinstance(inner, WindowOps)
            and not inner.retain_duplicates and (not logged or getattr(store.context, "_timestamped", False)))


_Q = struct.Struct(">q")
_SEQNUM_0 = b"\x00\x00\x00\x00"
_MISSING = object()


class _WindowAggregateState:
    """What a fused loop needs of one TimeWindowAggregate beyond its functions: where
    the batch's window updates go (the store below the logging layer) and where its
    changelog records go (the record collector)."""

    def __init__(self, proc: Any, task: Any) -> None:
        self.proc = proc
        store = proc.store
        logged = type(store) is ChangeLoggingWindowStore
        self.inner = store.inner if logged else store
        self.changelog_topic = store.context.changelog_topic if logged else None
        self.collector = task.collector
        self.partition = task.partition

    def batch_runner(self, loop: Callable[..., int]) -> Callable[..., int]:
        """``run(keys, values, tss, i0, st, out_k, out_v, out_t) -> stream time`` over
        ``loop``, which takes the batch's changelog lists and dirty window runs too;
        the batch is finished (:meth:`finish`) however the loop ends."""
        finish = self.finish

        def run(keys: Any, values: Any, tss: Any, i0: int, st: int, out_k: List[Any], out_v: List[Any],
                out_t: List[int]) -> int:
            cl_k: List[Optional[bytes]] = []
            cl_v: List[Optional[bytes]] = []
            cl_t: List[int] = []
            dirty: Dict[int, Dict[bytes, bytes]] = {}
            try:
                return loop(keys, values, tss, i0, st, out_k, out_v, out_t, cl_k, cl_v, cl_t, dirty)
            finally:
                finish(cl_k, cl_v, cl_t, dirty)
        return run

    def finish(self, cl_k: List[Optional[bytes]], cl_v: List[Optional[bytes]], cl_t: List[int],
               dirty: Dict[int, Dict[bytes, bytes]]) -> None:
        """The batch's updates to the store (the latest stored value of each window,
        ``{start: {binary key: value}}``, a dict per window start) and its changelog
        records to the collector."""
        if dirty:
            inner = self.inner
            inner.put_window_runs(dirty)
            self.proc.trim_fused_cache(inner.observed_stream_time - inner.retention_ms + inner.expiry_slack)
        topic = self.changelog_topic
        if topic is not None and cl_t:
            if type(self.collector) is DeliveryWatch:   # the runtime's: the batch at once
                self.collector.send_many(topic, cl_k, cl_v, cl_t, None, self.partition)
                return
            send, partition = self.collector.send, self.partition
            for k, v, t in zip(cl_k, cl_v, cl_t):
                send(topic, k, v, t, (), None, partition)


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

    window_node = next((n for n in nodes if type(n.processor) is TimeWindowAggregate), None)
    if window_node is nodes[0] and _native_count_fits(sp, nodes):
        return _native_count_chain(source, nodes, bad_timestamp)
    if window_node is None:
        emit("def fused(keys, values, tss, i0, st, out_k, out_v, out_t):", src)
    else:
        emit("def fused(keys, values, tss, i0, st, out_k, out_v, out_t, cl_k, cl_v, cl_t, dirty):", src)
        emit("    obs = W.observed", window_node.name)
        # the store's own stream time: a window it has expired reads as absent (after a
        # restart the store's can be ahead of the processor's)
        emit("    sobs = W_store.observed_stream_time", window_node.name)
        emit("    sml = sobs - W_store.retention_ms + W_store.expiry_slack", window_node.name)
        # windows from `fresh` on are all in the cache when they exist at all: nothing
        # past the store's stream time is stored, and from then on every write of the
        # processor went through the cache (the per-record path empties it)
        emit("    if not W_cache:", window_node.name)
        emit("        W.fused_fresh_from = sobs + 1", window_node.name)
        emit("    fresh = W.fused_fresh_from", window_node.name)
        emit("    sst = -1", window_node.name)     # the window start sb/sbz were packed for
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
    window: Optional[_WindowAggregateState] = None
    for n, node in enumerate(nodes):
        proc = node.processor
        name = node.name
        f = f"f{n}"
        t = type(proc)
        if t is TimeWindowAggregate:
            window = _WindowAggregateState(proc, sp.task)
            sink = nodes[n + 2].processor
            sink_topic, partitioner = sink.topic, sink.partitioner
            _emit_window_aggregate(emit, env, proc, node.name, nodes[n + 2].name, sink)
            break
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
    fused = env["fused"]
    if window is None:
        return FusedChain(fused, owners, src, sink_topic, partitioner, text)
    return FusedChain(window.batch_runner(fused), owners, src, sink_topic, partitioner, text, code=fused.__code__)


#: The code object of a native chain: nothing runs it, so an exception from the native
#: loop is never attributed to a record and node (StreamTask._fused_failed re-raises it).
_NATIVE_CODE = compile("", "<pylog.streams native windowed count>", "exec")


def _native_count_fits(sp: Any, nodes: List[Any]) -> bool:
    """``source -> count() -> to_stream() -> sink`` over bytes keys and long counts,
    calling no user code per record: :func:`pylog._core.window_count_batch` runs it."""
    proc, sink = nodes[0].processor, nodes[2].processor
    long_ser = Serdes.long().serialize
    return (len(nodes) == 3 and sp.key_de is _bytes_deserialize and sp.value_de is _bytes_deserialize
            and proc.kser is _bytes_serialize and proc.vser is long_ser
            and proc.aggregator is count_aggregator and proc.initializer is count_initializer
            and getattr(sink.key_ser, "time_windowed_inner", None) is proc.kser and sink.value_ser is long_ser)


def _native_count_chain(source: Any, nodes: List[Any], bad_timestamp: Callable[[int, int], None]) -> FusedChain:
    """The chain run by :func:`pylog._core.window_count_batch`: the same statements as
    the generated loop of :func:`_emit_window_aggregate` for a count, in C.  Nothing
    it calls per record can fail but the store read of a window the cache does not
    hold; such a failure fails the task (the generated loop would hand it to the
    processing-exception handler)."""
    from pylog._core import window_count_batch

    sp, proc, sink = source.processor, nodes[0].processor, nodes[2].processor
    window = _WindowAggregateState(proc, sp.task)
    store, w = window.inner, proc.windows
    size, advance, grace = w.size_ms, w.advance_ms, w.grace_ms
    drop_null_values, ctx, load = proc.drop_null_values, proc.context, proc._fetch

    def loop(keys: Any, values: Any, tss: Any, i0: int, st: int, out_k: List[Any], out_v: List[Any],
             out_t: List[int], cl_k: List[Optional[bytes]], cl_v: List[Optional[bytes]], cl_t: List[int],
             dirty: Dict[int, Dict[bytes, bytes]]) -> int:
        sobs = store.observed_stream_time
        if not proc.fused_cache:    # as the generated loop: see compile_chain
            proc.fused_fresh_from = sobs + 1
        return window_count_batch(keys, values, tss, i0, st, proc, proc.fused_cache, proc.fused_cache_ts, dirty,
                                  cl_k, cl_v, cl_t, out_k, out_v, out_t, size, advance, grace, drop_null_values,
                                  sobs, store.retention_ms - store.expiry_slack, proc.fused_fresh_from,
                                  bad_timestamp, _dropped, ctx, load)
    text = (f"pylog._core.window_count_batch: {source.name} -> {nodes[0].name} (count, {size} ms windows every "
            f"{advance} ms, grace {grace} ms) -> {nodes[1].name} -> {nodes[2].name} ({sink.topic})\n")
    return FusedChain(window.batch_runner(loop), {}, source.name, sink.topic, sink.partitioner, text,
                      code=_NATIVE_CODE, native=True)


def _ser_line(side: str, value: str, ser: Any, env: Dict[str, Any], var: str) -> str:
    """``<side> = ser(<value>)``, inlining the bytes serde's check."""
    env[var] = ser
    if ser is _bytes_serialize:
        return f"{side} = {value} if {value} is None or type({value}) is bytes else {var}({value})"
    return f"{side} = {var}({value})"


def _emit_window_aggregate(emit: Callable[[str, str], None], env: Dict[str, Any], proc: Any, name: str,
                           sink_name: str, sink: Any) -> None:
    """The loop's lines for ``TimeWindowAggregate.process`` then ``to_stream()`` then the
    sink, statement for statement (see that method)."""
    w = proc.windows
    size, adv, grace = w.size_ms, w.advance_ms, w.grace_ms
    store = proc.store
    env.update(W=proc, W_store=store.inner if type(store) is ChangeLoggingWindowStore else store,
               W_cache=proc.fused_cache, W_cts=proc.fused_cache_ts, W_missing=_MISSING, W_load=proc._fetch,
               W_init=proc.initializer, W_agg=proc.aggregator, W_pack=_Q.pack, W_seq0=_SEQNUM_0,
               W_ctx=proc.context, W_dropped=_dropped, W_check_key=check_key, Windowed=Windowed, Window=Window)
    null = "k is None or v is None" if proc.drop_null_values else "k is None"
    emit(f"        if {null}:", name)
    emit("            W_dropped(W_ctx, 'null key or value in a windowed aggregation')", name)
    emit("            continue", name)
    emit("        if ts > obs:", name)
    emit("            obs = ts", name)
    emit("            W.observed = ts", name)
    emit(f"        close = obs - {grace}", name)
    emit("        " + _ser_line("kb", "k", proc.kser, env, "W_kser"), name)
    # the store's key: bytes, as the store's own check makes it (kb itself stays what
    # the serde gave, for the sink)
    skb = "kb"
    if proc.kser is not _bytes_serialize:
        skb = "skb"
        emit("        skb = kb if type(kb) is bytes else W_check_key(kb)", name)
    if adv == size:     # tumbling: the one window holding ts
        emit(f"        start = ts - ts % {size}", name)
        ind = "        "
    else:               # hopping: windows_for(ts), in start order
        emit(f"        for start in range(max(0, ts - {size - adv}) // {adv} * {adv}, ts + 1, {adv}):", name)
        ind = "            "
    emit(f"{ind}if start + {size} > close:", name)
    # sb/sbz, the start's dirty run and its cache follow the window start (a run of
    # records shares it)
    emit(f"{ind}    if start != sst:", name)
    emit(f"{ind}        sst = start", name)
    emit(f"{ind}        sb = W_pack(start)", name)
    emit(f"{ind}        sbz = sb + W_seq0", name)
    emit(f"{ind}        run = dirty.get(start)", name)
    emit(f"{ind}        if run is None:", name)
    emit(f"{ind}            run = dirty[start] = {{}}", name)
    emit(f"{ind}        wc = W_cache.get(start)", name)
    emit(f"{ind}        if wc is None:", name)
    emit(f"{ind}            wc = W_cache[start] = {{}}", name)
    emit(f"{ind}            wcts = W_cts[start] = {{}}", name)
    emit(f"{ind}        else:", name)
    emit(f"{ind}            wcts = W_cts[start]", name)
    emit(f"{ind}    ck = {skb} + sbz", name)         # the store's and the changelog's key
    emit(f"{ind}    if start < sml:", name)
    emit(f"{ind}        e = W_missing", name)
    emit(f"{ind}    else:", name)
    emit(f"{ind}        e = wc.get({skb}, W_missing)", name)
    emit(f"{ind}        if e is W_missing:", name)
    emit(f"{ind}            if start < fresh:", name)
    emit(f"{ind}                loaded = W_load({skb}, start)", name)
    emit(f"{ind}                if loaded is not None:", name)
    emit(f"{ind}                    e, ets = loaded", name)
    emit(f"{ind}        else:", name)
    emit(f"{ind}            ets = wcts[{skb}]", name)
    # count() is 0, then +1 per record: no calls for it (a long fits any count)
    counting = proc.aggregator is count_aggregator and proc.initializer is count_initializer
    emit(f"{ind}    if e is W_missing:", name)
    emit(f"{ind}        nts = ts", name)
    emit(f"{ind}        new = {'1' if counting else 'W_agg(k, v, W_init())'}", name)
    emit(f"{ind}    else:", name)
    emit(f"{ind}        nts = ts if ts > ets else ets", name)
    emit(f"{ind}        new = {'e + 1' if counting else 'W_agg(k, v, e)'}", name)
    if counting and proc.vser is Serdes.long().serialize:
        emit(f"{ind}    nb = W_pack(new)", name)
    else:
        emit(f"{ind}    " + _ser_line("nb", "new", proc.vser, env, "W_vser"), name)
    emit(f"{ind}    wc[{skb}] = new", name)
    emit(f"{ind}    wcts[{skb}] = nts", name)
    emit(f"{ind}    run[ck] = W_pack(nts) + nb", name)     # the timestamped store's value
    emit(f"{ind}    if start > sobs:", name)
    emit(f"{ind}        sobs = start", name)
    emit(f"{ind}        sml = start - W_store.retention_ms + W_store.expiry_slack", name)
    emit(f"{ind}    cl_k.append(ck)", name)
    emit(f"{ind}    cl_v.append(nb)", name)
    emit(f"{ind}    cl_t.append(nts)", name)
    # to_stream() forwards the new value under the windowed key; the sink serialises
    # both (a serde that fails there is told the record the sink was given, as on the
    # per-record path; "kb2"/"vb2" say which side failed)
    inner = getattr(sink.key_ser, "time_windowed_inner", None)
    def given(exc: BaseException, k: Any, new: Any, start: int, nts: int) -> None:
        if not hasattr(exc, "_pylog_input"):    # as StreamTask's forward notes it
            try:
                exc._pylog_input = Record(Windowed(k, Window(start, start + size)), new, nts, ())  # type: ignore
            except AttributeError:
                pass
    env["S_given"] = given
    emit(f"{ind}    try:", sink_name)
    if inner is not None and inner is proc.kser:
        emit(f"{ind}        kb2 = kb + sb", sink_name)
    elif inner is not None:
        emit(f"{ind}        " + _ser_line("kb2", "k", inner, env, "S_kinner"), sink_name)
        emit(f"{ind}        kb2 = kb2 + sb", sink_name)
    else:
        env["S_kser"] = sink.key_ser
        emit(f"{ind}        kb2 = S_kser(Windowed(k, Window(start, start + {size})))", sink_name)
    if sink.value_ser is proc.vser:
        emit(f"{ind}        vb2 = nb", sink_name)
    else:
        emit(f"{ind}        " + _ser_line("vb2", "new", sink.value_ser, env, "S_vser"), sink_name)
    emit(f"{ind}    except Exception as exc:", sink_name)
    emit(f"{ind}        S_given(exc, k, new, start, nts)", sink_name)
    emit(f"{ind}        raise", sink_name)
    emit(f"{ind}    out_k.append(kb2)", sink_name)
    emit(f"{ind}    out_v.append(vb2)", sink_name)
    emit(f"{ind}    out_t.append(nts)", sink_name)
    emit(f"{ind}else:", name)
    emit(f"{ind}    W_dropped(W_ctx, 'record for a closed window')", name)
