"""Windowed aggregations and ``suppress``: ``TimeWindowedKStream``,
``SlidingWindowedKStream``, ``SessionWindowedKStream`` and the processors they compile to
(Kafka Streams' ``KStreamWindowAggregate``, ``KStreamSlidingWindowAggregate``,
``KStreamSessionWindowAggregate``, ``KTableSuppressProcessor``).

Semantics are Kafka's:

* each aggregation processor keeps its own observed stream time (the largest record
  timestamp it has seen); a window closes when ``stream time - grace`` reaches its end
  (``stream time - gap - grace`` passes a session's end), and a record for a closed
  window is dropped and counted in ``dropped-records``;
* with the default emit strategy every update is forwarded (the record caches are off);
  ``emit_strategy(EmitStrategy.on_window_close())`` forwards each window once, when it
  closes, in window-start then key order, at most once per
  ``__emit.interval.ms.kstreams.windowed.aggregation__`` ms of wall-clock time (default
  1000, as Kafka; tests set it to 0);
* forwarded records carry the aggregate's timestamp (the largest record timestamp in
  the window) for time and sliding windows, the session end for sessions;
* ``suppress(until_window_closes)`` buffers the latest update of each window and emits it
  when the window closes (a session's end plus gap plus grace); ``until_time_limit``
  emits a key's latest update once stream time has passed its first buffered update's
  timestamp by the limit; a bounded buffer emits its oldest early, or fails, when full
  (see :class:`SuppressProcessor`);
* a new window's first update carries the initializer's value as its old value (what
  a downstream subtractor or suppress buffer sees), as Kafka's aggregations send it.

Window stores hold Kafka's timestamped value layout (8-byte timestamp, then the value);
session stores hold plain values, as Kafka's do.
"""

from __future__ import annotations

import heapq
import struct
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _processors as P
from .builder import name_of
from .options import Materialized
from .processor import Change, Record
from .serdes import Serdes
from .topology import TopologyError
from .windows import EmitStrategy, Window, Windowed, WindowedSerdes

__all__ = ["TimeWindowedKStream", "SlidingWindowedKStream", "SessionWindowedKStream", "suppress"]

EMIT_INTERVAL_CONFIG = "__emit.interval.ms.kstreams.windowed.aggregation__"
_TS = struct.Struct(">q")
NO_TIMESTAMP = -1


def count_initializer() -> int:
    """count()'s initializer (named, so a fused loop can count without calling it)."""
    return 0


def count_aggregator(key: Any, value: Any, aggregate: int) -> int:
    """count()'s aggregator (named, as :func:`count_initializer`)."""
    return aggregate + 1


def emit_interval(context: Any, key: str) -> int:
    return int(context.app_config.get(key, 1000))


class _Throttle:
    """Kafka's TimeTracker emit throttle: at most one attempt per interval of wall clock."""

    __slots__ = ("interval", "next_time")

    def __init__(self, interval: int) -> None:
        self.interval = interval
        self.next_time = 0

    def allow(self, now: int) -> bool:
        if now < self.next_time:
            return False
        self.next_time = now + self.interval
        return True


class _WindowedBase(P._Base):
    def __init__(self, table: Any, initializer: Callable[[], Any], aggregator: Callable[[Any, Any, Any], Any],
                 windows: Any, emit: EmitStrategy, drop_null_values: bool) -> None:
        self.table = table
        self.initializer = initializer
        self.aggregator = aggregator
        self.windows = windows
        self.emit_final = emit.on_close
        self.drop_null_values = drop_null_values
        self.observed = NO_TIMESTAMP
        self.last_emit_close = NO_TIMESTAMP

    def init(self, context: Any) -> None:
        super().init(context)
        t = self.table
        self.store = context.get_state_store(t.store_name)
        ks, vs = t.store_key_serde(), t.store_value_serde()
        self.kser, self.kde = ks.serialize, ks.deserialize
        self.vser, self.vde = vs.serialize, vs.deserialize
        self.throttle = _Throttle(emit_interval(context, EMIT_INTERVAL_CONFIG))

    def _drop(self, record: Record) -> bool:
        if record.key is None or (self.drop_null_values and record.value is None):
            P._dropped(self.context, "null key or value in a windowed aggregation")
            return True
        return False

    def _fetch(self, kb: bytes, start: int) -> Optional[Tuple[Any, int]]:
        raw = self.store.fetch(kb, start)
        if raw is None:
            return None
        return self.vde(raw[8:]), _TS.unpack_from(raw)[0]

    def _put(self, kb: bytes, start: int, value: Any, ts: int) -> None:
        self.store.put(kb, _TS.pack(ts) + self.vser(value), start)

    def _forward_update(self, record: Record, window: Window, old: Any, new: Any, ts: int) -> None:
        if not self.emit_final:
            self.forward(Record(Windowed(record.key, window), Change(new, old if self.table.send_old_values else None),
                                ts, record.headers))

    def _maybe_emit_final(self, record: Record, close: int, size: int) -> None:
        if not self.emit_final:
            return
        if not self.throttle.allow(self.context.current_system_time_ms()):
            return
        if self.last_emit_close != NO_TIMESTAMP and self.last_emit_close >= close:
            return
        upper = close - size
        if upper < 0:
            return
        lower = 0 if self.last_emit_close == NO_TIMESTAMP else max(0, self.last_emit_close - size) + 1
        self._emit_windows(record, lower, upper, size)
        self.last_emit_close = close

    def _emit_windows(self, record: Record, lower: int, upper: int, size: int) -> None:
        """Forward every window starting in [lower, upper], by start then key."""
        if upper >= lower:
            for (kb, start), raw in list(self.store.fetch_all(lower, upper)):
                self.forward(Record(Windowed(self.kde(kb), Window(start, start + size)),
                                    Change(self.vde(raw[8:]), None), _TS.unpack_from(raw)[0], record.headers))


class TimeWindowAggregate(_WindowedBase):
    """Kafka's ``KStreamWindowAggregate``.  A task's fused loop may run it a batch at a
    time (:mod:`pylog.streams._fused`), keeping each window's aggregate in
    ``fused_cache`` and its timestamp in ``fused_cache_ts``, both ``{window start:
    {key bytes: ...}}``, in front of the store (everything in them is in the store too
    after each batch).  Dicts of bytes keys rather than one of ``(key, start)`` tuples:
    with a count the inner dicts hold no object the garbage collector tracks; and a
    window start the store has expired goes at once, so the dicts a record looks in
    hold only the live windows of one start.  This per-record path clears them before
    it reads the store, so the two never disagree."""

    #: ``fused_cache`` is cleared after a batch when it holds more windows than this.
    FUSED_CACHE_ENTRIES = 100_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fused_cache: Dict[int, Dict[bytes, Any]] = {}
        self.fused_cache_ts: Dict[int, Dict[bytes, int]] = {}
        #: windows starting here or later are in ``fused_cache`` when they exist
        self.fused_fresh_from = 0

    def clear_fused_cache(self) -> None:
        self.fused_cache.clear()
        self.fused_cache_ts.clear()

    def trim_fused_cache(self, min_live: int) -> None:
        """Forget the window starts below ``min_live`` (the store's: it reads them as
        absent), and everything when more than ``FUSED_CACHE_ENTRIES`` windows remain."""
        cache, cache_ts = self.fused_cache, self.fused_cache_ts
        for start in [s for s in cache if s < min_live]:
            del cache[start], cache_ts[start]
        if sum(map(len, cache.values())) > self.FUSED_CACHE_ENTRIES:
            self.clear_fused_cache()   # everything in it is in the store

    def process(self, record: Record) -> None:
        if self.fused_cache:
            self.clear_fused_cache()
        if self._drop(record):
            return
        ts = record.timestamp
        if ts > self.observed:
            self.observed = ts
        close = self.observed - self.windows.grace_ms
        kb = self.kser(record.key)
        for start, window in self.windows.windows_for(ts).items():
            if window.end > close:
                prev = self._fetch(kb, start)
                if prev is None:
                    # a new window's old value is the initializer's (Kafka's KStreamWindowAggregate)
                    old, new_ts = self.initializer(), ts
                    new = self.aggregator(record.key, record.value, old)
                else:
                    old, old_ts = prev
                    new_ts = ts if ts > old_ts else old_ts
                    new = self.aggregator(record.key, record.value, old)
                self._put(kb, start, new, new_ts)
                self._forward_update(record, window, old, new, new_ts)
            else:
                P._dropped(self.context, f"record at {ts} for window {window} closed at {close}")
        self._maybe_emit_final(record, close, self.windows.size_ms)


class SlidingWindowAggregate(_WindowedBase):
    """Kafka's sliding-window algorithm (the reverse-scan variant its stores use): each
    record owns a left window ``[ts - d, ts]`` and, when a later record exists within
    ``d``, a right window ``[ts + 1, ts + 1 + d]``; records before ``d`` share the window
    ``[0, d]``.  Windows are created and updated as records arrive, newest first."""

    def init(self, context: Any) -> None:
        super().init(context)
        self.d = self.windows.time_difference_ms

    def _update(self, record: Record, kb: bytes, start: int, base: Optional[Tuple[Any, int]], close: int) -> None:
        end = start + self.d
        if end < close:
            P._dropped(self.context, f"record at {record.timestamp} for window [{start},{end}] closed at {close}")
            return
        ts = record.timestamp
        old = None if base is None else base[0]
        new = self.aggregator(record.key, record.value, old)
        new_ts = ts if base is None else max(ts, base[1])
        self._put(kb, start, new, new_ts)
        self._forward_update(record, Window(start, end), old, new, new_ts)

    def _create_right_window(self, record: Record, kb: bytes, right: Tuple[Any, int]) -> None:
        start = record.timestamp + 1
        self._put(kb, start, right[0], right[1])
        self._forward_update(record, Window(start, start + self.d), None, right[0], right[1])

    def _entries(self, kb: bytes, time_from: int, time_to: int) -> List[Tuple[int, Tuple[Any, int]]]:
        return [(s, (self.vde(raw[8:]), _TS.unpack_from(raw)[0]))
                for s, raw in self.store.fetch_range(kb, time_from, time_to)]

    def process(self, record: Record) -> None:
        if self._drop(record):
            return
        ts = record.timestamp
        d = self.d
        if ts > self.observed:
            self.observed = ts
        close = self.observed - self.windows.grace_ms
        if ts + d < close:
            P._dropped(self.context, f"record at {ts} for window [{ts},{ts + d}] closed at {close}")
            return
        kb = self.kser(record.key)
        if ts < d:
            self._process_early(record, kb, close)
        else:
            self._process_reverse(record, kb, close)
        self._maybe_emit_final_sliding(record, close)

    def _process_reverse(self, record: Record, kb: bytes, close: int) -> None:
        ts, d = record.timestamp, self.d
        starts = set()
        left_agg = right_agg = None
        left_created = right_created = False
        previous: Optional[int] = None
        for s, vt in reversed(self._entries(kb, max(0, ts - 2 * d), ts + 1)):
            starts.add(s)
            end = s + d
            if s == ts + 1:
                right_created = True
            elif end > ts:
                if right_agg is None:
                    right_agg = vt
                self._update(record, kb, s, vt, close)
            elif end == ts:
                left_created = True
                self._update(record, kb, s, vt, close)
                if vt[1] < ts:
                    previous = vt[1]
                else:
                    return
            else:
                left_agg = vt
                previous = vt[1]
                break
        if previous is not None and previous + 1 not in starts and previous + 1 + d >= ts:
            self._update(record, kb, previous + 1, (self.initializer(), ts), close)
        if not left_created:
            if previous is not None and ts - d <= previous and left_agg is not None:
                base = (left_agg[0], ts)
            else:
                base = (self.initializer(), ts)
            self._update(record, kb, ts - d, base, close)
        if not right_created and right_agg is not None and right_agg[1] > ts:
            self._create_right_window(record, kb, right_agg)

    def _process_early(self, record: Record, kb: bytes, close: int) -> None:
        ts = record.timestamp
        combined: Optional[Tuple[Any, int]] = None
        right_agg: Optional[Tuple[Any, int]] = None
        right_created = False
        starts = set()
        previous: Optional[int] = None
        for s, vt in self._entries(kb, 0, ts + 1):
            starts.add(s)
            if s == 0:
                combined = vt
                if vt[1] < ts:
                    previous = vt[1]
            elif s <= ts:
                right_agg = vt
                self._update(record, kb, s, vt, close)
            elif s == ts + 1:
                right_created = True
        if right_agg is None and combined is not None and combined[1] > ts:
            right_agg = combined
        if not right_created and right_agg is not None and right_agg[1] > ts:
            self._create_right_window(record, kb, right_agg)
        if previous is not None and previous + 1 not in starts:
            self._update(record, kb, previous + 1, (self.initializer(), ts), close)
        self._update(record, kb, 0, (self.initializer(), ts) if combined is None else combined, close)

    def _maybe_emit_final_sliding(self, record: Record, close: int) -> None:
        if not self.emit_final or not self.throttle.allow(self.context.current_system_time_ms()):
            return
        if self.last_emit_close != NO_TIMESTAMP and self.last_emit_close >= close:
            return
        d = self.d
        upper = close - d - 1
        if upper < 0:
            return
        lower = 0 if self.last_emit_close == NO_TIMESTAMP else max(0, self.last_emit_close - d)
        self._emit_windows(record, lower, upper, d)
        self.last_emit_close = close


class SessionWindowAggregate(_WindowedBase):
    """Kafka's session merge: a record joins (and merges) every session of its key that
    ends within ``gap`` before it or starts within ``gap`` after it; merged-away
    sessions are retracted with a ``None`` value."""

    def __init__(self, table: Any, initializer: Callable[[], Any], aggregator: Callable[[Any, Any, Any], Any],
                 merger: Callable[[Any, Any, Any], Any], windows: Any, emit: EmitStrategy,
                 drop_null_values: bool) -> None:
        super().__init__(table, initializer, aggregator, windows, emit, drop_null_values)
        self.merger = merger
        self.store_observed = NO_TIMESTAMP  # the greatest session end put

    def _forward_session(self, key: Any, start: int, end: int, new: Any, old: Any, headers: Any) -> None:
        if not self.emit_final:
            self.forward(Record(Windowed(key, Window(start, end)),
                                Change(new, old if self.table.send_old_values else None), end, headers))

    def process(self, record: Record) -> None:
        if self._drop(record):
            return
        ts = record.timestamp
        gap = self.windows.gap_ms
        if ts > self.observed:
            self.observed = ts
        # a session stays open for the gap (it may still grow) plus the grace
        close = self.observed - self.windows.grace_ms - gap
        key = record.key
        kb = self.kser(key)
        agg = self.initializer()
        start = end = ts
        merged = []
        for (k, s, e), raw in list(self.store.find_sessions(kb, max(0, ts - gap), ts + gap)):
            if self.emit_final and e <= self.store_observed - self.windows.gap_ms - self.windows.grace_ms:
                continue  # kept only for emission (see SessionWindowedKStream): expired for merging
            value = self.vde(raw)
            merged.append((s, e, value))
            agg = self.merger(key, agg, value)
            start, end = min(start, s), max(end, e)
        if end < close:
            P._dropped(self.context, f"record at {ts} for session [{start},{end}] closed at {close}")
        else:
            if (start, end) != (ts, ts):
                for s, e, value in merged:
                    self.store.remove((kb, s, e))
                    self._forward_session(key, s, e, None, value, record.headers)
            agg = self.aggregator(key, record.value, agg)
            self.store.put((kb, start, end), self.vser(agg))
            if end > self.store_observed:
                self.store_observed = end
            self._forward_session(key, start, end, agg, None, record.headers)
        self._maybe_emit_final_sessions(record, close)

    def _maybe_emit_final_sessions(self, record: Record, close: int) -> None:
        if not self.emit_final or not self.throttle.allow(self.context.current_system_time_ms()):
            return
        if self.last_emit_close != NO_TIMESTAMP and self.last_emit_close >= close:
            return
        lower, upper = max(0, self.last_emit_close), close - 1
        if upper < lower:
            return
        # sessions of every key that ended in [lower, upper], by end then key
        for (kb, end, start), raw in list(self.store._time_entries(None, None, lower, upper)):
            self.forward(Record(Windowed(self.kde(kb), Window(start, end)), Change(self.vde(raw), None), end,
                                record.headers))
        self.last_emit_close = close


# ---- the DSL side --------------------------------------------------------------------------

def final_results_retention(retention_ms: int) -> int:
    """Emit-on-close aggregations keep their windows in Kafka's time-ordered store, which
    keeps a window while ``start >= observed - retention`` (the other stores: ``>``): one
    millisecond more, so a window that closes as the store's time reaches it is still
    there to be emitted."""
    return retention_ms + 1


class _WindowedStream:
    store_kind = "window"

    def __init__(self, grouped: Any, windows: Any) -> None:
        self.grouped = grouped
        self.builder = grouped.builder
        self.windows = windows
        self.emit = EmitStrategy.on_window_update()

    def emit_strategy(self, strategy: EmitStrategy) -> "_WindowedStream":
        self.emit = strategy
        return self

    def _build(self, prefix: str, named: Any, materialized: Any, value_serde: Any,
               make: Callable[[Any], Any]) -> Any:
        from .ktable import KTable
        b = self.builder
        m = Materialized.of(materialized)
        store_name = m.store_name or b.new_store_name(prefix)
        name = name_of(named) or b.new_processor_name(prefix)
        parent = self.grouped._source_for_aggregation(store_name)
        key_serde = m.key_serde or self.grouped.key_serde
        table = KTable(b, name, key_serde, m.value_serde or value_serde, store_name=store_name, materialized=m)
        table.windowed = True
        # how long after a window's end suppress(until_window_closes) waits (Kafka's
        # GraphGraceSearchUtil): the grace, and for a session the inactivity gap too,
        # since a session may still grow (and merge) until then
        table.grace_ms = self.windows.grace_ms + (self.windows.gap_ms if self.store_kind == "session" else 0)
        table.window_serde = self._window_serde(table.store_key_serde())
        b.topology.add_processor(name, lambda: make(table), parent)
        b.topology.add_state_store(self._store_builder(store_name, m), name, key_serde=table.store_key_serde(),
                                   value_serde=table.store_value_serde(), timestamped=self.store_kind == "window")
        return table

    def _logging(self, sb: Any, m: Materialized) -> Any:
        return sb.with_logging_enabled(m.log_config) if m.logging_enabled else sb.with_logging_disabled()


class TimeWindowedKStream(_WindowedStream):
    """``group_by_key().windowed_by(TimeWindows...)``: count, reduce, aggregate per window."""

    def _window_serde(self, key_serde: Any) -> Any:
        return WindowedSerdes.time_windowed(key_serde, self.windows.size_ms)

    def _retention(self, m: Materialized) -> int:
        need = self.windows.size_ms + self.windows.grace_ms
        if m.retention_ms is not None and m.retention_ms < need:
            raise TopologyError(f"the retention of store {m.store_name!r} ({m.retention_ms} ms) must be at least "
                                f"window size + grace ({need} ms)")
        return need if m.retention_ms is None else m.retention_ms

    def _store_builder(self, name: str, m: Materialized) -> Any:
        from .state import Stores
        factory = Stores.persistent_window_store if m.store_type == "persistent" else Stores.in_memory_window_store
        retention = self._retention(m)
        if self.emit.on_close:
            retention = final_results_retention(retention)
        return self._logging(factory(name, retention, self.windows.size_ms, False), m)

    def _make(self, initializer: Any, aggregator: Any, drop_null: bool) -> Callable[[Any], Any]:
        processor = SlidingWindowAggregate if isinstance(self, SlidingWindowedKStream) else TimeWindowAggregate
        return lambda t: processor(t, initializer, aggregator, self.windows, self.emit, drop_null)

    def count(self, named: Any = None, materialized: Any = None) -> Any:
        return self._build("KSTREAM-AGGREGATE-", named, materialized, Serdes.long(),
                           self._make(count_initializer, count_aggregator, False))

    def reduce(self, reducer: Callable[[Any, Any], Any], named: Any = None, materialized: Any = None) -> Any:
        return self._build("KSTREAM-REDUCE-", named, materialized, self.grouped.value_serde,
                           self._make(lambda: None, lambda k, v, a: v if a is None else reducer(a, v), True))

    def aggregate(self, initializer: Callable[[], Any], aggregator: Callable[[Any, Any, Any], Any],
                  named: Any = None, materialized: Any = None) -> Any:
        return self._build("KSTREAM-AGGREGATE-", named, materialized, Serdes.json(),
                           self._make(initializer, aggregator, False))


class SlidingWindowedKStream(TimeWindowedKStream):
    """``windowed_by(SlidingWindows...)``."""

    def _window_serde(self, key_serde: Any) -> Any:
        return WindowedSerdes.time_windowed(key_serde, self.windows.time_difference_ms)

    def _retention(self, m: Materialized) -> int:
        need = 2 * self.windows.time_difference_ms + self.windows.grace_ms
        return need if m.retention_ms is None else max(m.retention_ms, need)

    def _store_builder(self, name: str, m: Materialized) -> Any:
        from .state import Stores
        factory = Stores.persistent_window_store if m.store_type == "persistent" else Stores.in_memory_window_store
        retention = self._retention(m)
        if self.emit.on_close:
            # the store's time is the latest window start put: a window starting exactly
            # a retention before it is still there to be emitted (as for time windows)
            retention = final_results_retention(retention)
        return self._logging(factory(name, retention, max(1, self.windows.time_difference_ms), False), m)


class SessionWindowedKStream(_WindowedStream):
    """``windowed_by(SessionWindows...)``: aggregations need a ``merger`` to combine
    sessions that a record bridges."""

    store_kind = "session"

    def _window_serde(self, key_serde: Any) -> Any:
        return WindowedSerdes.session_windowed(key_serde)

    def _store_builder(self, name: str, m: Materialized) -> Any:
        from .state import Stores
        retention = self.windows.gap_ms + self.windows.grace_ms
        if m.retention_ms is not None:
            retention = max(retention, m.retention_ms)
        if self.emit.on_close:
            # Kafka's time-ordered session store drops whole segments (max(retention / 2,
            # 60 s) each) and reads do not filter by retention: a session stays readable
            # up to a segment interval past the retention (exact only within a segment)
            retention += max(retention // 2, 60_000)
        factory = Stores.persistent_session_store if m.store_type == "persistent" else Stores.in_memory_session_store
        return self._logging(factory(name, retention), m)

    def _make(self, initializer: Any, aggregator: Any, merger: Any, drop_null: bool) -> Callable[[Any], Any]:
        return lambda t: SessionWindowAggregate(t, initializer, aggregator, merger, self.windows, self.emit, drop_null)

    def count(self, named: Any = None, materialized: Any = None) -> Any:
        return self._build("KSTREAM-AGGREGATE-", named, materialized, Serdes.long(),
                           self._make(lambda: 0, lambda k, v, a: a + 1, lambda k, a, b: a + b, False))

    def reduce(self, reducer: Callable[[Any, Any], Any], named: Any = None, materialized: Any = None) -> Any:
        def agg(k: Any, v: Any, a: Any) -> Any:
            return v if a is None else reducer(a, v)
        return self._build("KSTREAM-REDUCE-", named, materialized, self.grouped.value_serde,
                           self._make(lambda: None, agg, lambda k, a, b: agg(k, b, a), True))

    def aggregate(self, initializer: Callable[[], Any], aggregator: Callable[[Any, Any, Any], Any],
                  merger: Callable[[Any, Any, Any], Any], named: Any = None, materialized: Any = None) -> Any:
        return self._build("KSTREAM-AGGREGATE-", named, materialized, Serdes.json(),
                           self._make(initializer, aggregator, merger, False))


# ---- suppress ------------------------------------------------------------------------------

class SuppressProcessor(P._Base):
    """Kafka's ``KTableSuppressProcessor`` over its ``InMemoryTimeOrderedKeyValueChangeBuffer``.

    The buffer holds each key's latest update, in order of buffer time then key bytes (a
    window's end for final results, else the timestamp of the key's first buffered
    update: a later update keeps the key's place).  Per record it is O(log n): a dict by
    key bytes and a heap of ``(buffer time, key bytes)``; a key keeps one heap entry
    while buffered (an entry whose key left, or came back with another time, is skipped
    when it reaches the top).  A key leaves as its latest update (``Change(new, old)``,
    timestamp, headers), as Kafka 4's buffer evicts it; the buffer also keeps the key's
    prior value (the old value of its first buffered update: what downstream saw before
    it was buffered), which counts in its size.

    Full when it holds more than ``max_records`` records or more than ``max_bytes``
    bytes of Kafka's size estimate: per record 8 (buffer time) + the key's bytes + the
    prior, old (unless equal to the prior) and new values' bytes + the record context
    (8 timestamp + 8 offset + the topic name's length + 4 partition + each header's
    key length and value bytes).  A full buffer emits its oldest records early, or
    raises :class:`~pylog.streams.task.StreamsError` (``should_shut_down_when_full``).

    The buffer is mirrored into the node's key-value store, one entry per buffered key
    (key bytes -> ``>qq`` buffer time and record timestamp, the topic, the headers, then
    prior, old and new value, each ``>i`` length (-1: none) and bytes), so it is logged
    and restored like any store and a restored key still emits its old value.  One
    instance per task; not thread safe (a task is processed by one thread)."""

    _ENTRY = struct.Struct(">qq")
    _LEN = struct.Struct(">i")

    def __init__(self, table: Any, suppressed: Any, key_serde: Any, value_serde: Any, store_name: str,
                 window_end_time: bool, suppress_ms: int) -> None:
        self.table = table
        self.suppressed = suppressed
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.store_name = store_name
        self.window_end_time = window_end_time
        self.suppress_ms = suppress_ms
        config = suppressed.buffer
        self.max_records = config.max_records
        self.max_bytes = config.max_bytes
        self.observed = NO_TIMESTAMP
        #: key bytes -> [buffer time, timestamp, key, latest change, prior value bytes, headers, size]
        self.buffer: Dict[bytes, List[Any]] = {}
        self.heap: List[Tuple[int, bytes]] = []
        self.size = 0

    def init(self, context: Any) -> None:
        super().init(context)
        self.store = context.get_state_store(self.store_name)
        self.kser = self.key_serde.serialize
        self.vser = self.value_serde.serialize
        self.loaded = False

    def _load(self) -> None:
        """Fill the buffer from the store: at the first record, since a task's processors
        are initialised before its stores restore."""
        self.loaded = True
        self.buffer.clear()
        self.heap.clear()
        self.size = 0
        for kb, raw in list(self.store.all()):
            t, ts, topic, headers, prior, old, new = self._unpack(raw)
            self._insert(kb, t, ts, self.key_serde.deserialize(kb), Change(self._de(new), self._de(old)), prior,
                         headers, self._record_size(kb, topic, headers, prior, old, new))
        heapq.heapify(self.heap)

    def _de(self, b: Optional[bytes]) -> Any:
        return None if b is None else self.value_serde.deserialize(b)

    def _ser(self, v: Any) -> Optional[bytes]:
        return None if v is None else self.vser(v)

    # -- the stored form
    def _pack(self, t: int, ts: int, topic: str, headers: Any, prior: Optional[bytes], old: Optional[bytes],
              new: Optional[bytes]) -> bytes:
        ln = self._LEN.pack
        out = [self._ENTRY.pack(t, ts)]
        tb = topic.encode()
        out += [ln(len(tb)), tb, ln(len(headers))]
        for hk, hv in list(headers) + [(None, prior), (None, old), (None, new)]:
            if hk is not None:
                hkb = hk.encode()
                out += [ln(len(hkb)), hkb]
            out += [ln(-1)] if hv is None else [ln(len(hv)), bytes(hv)]
        return b"".join(out)

    def _unpack(self, raw: bytes) -> Tuple[int, int, str, Tuple[Any, ...], Optional[bytes], Optional[bytes],
                                           Optional[bytes]]:
        t, ts = self._ENTRY.unpack_from(raw)
        pos = self._ENTRY.size

        def chunk() -> Optional[bytes]:
            nonlocal pos
            n = self._LEN.unpack_from(raw, pos)[0]
            pos += 4
            if n < 0:
                return None
            pos += n
            return raw[pos - n:pos]
        topic = (chunk() or b"").decode()
        n_headers = self._LEN.unpack_from(raw, pos)[0]
        pos += 4
        headers = []
        for _ in range(n_headers):
            hk = (chunk() or b"").decode()
            headers.append((hk, chunk()))
        prior, old, new = chunk(), chunk(), chunk()
        return t, ts, topic, tuple(headers), prior, old, new

    @staticmethod
    def _record_size(kb: bytes, topic: str, headers: Any, prior: Optional[bytes], old: Optional[bytes],
                     new: Optional[bytes]) -> int:
        """Kafka's estimate of a buffered record's size (see the class docstring)."""
        size = 8 + len(kb) + 8 + 8 + len(topic) + 4
        for hk, hv in headers:
            size += len(hk) + (0 if hv is None else len(hv))
        if prior is not None:
            size += len(prior)
        if old is not None and old != prior:
            size += len(old)
        if new is not None:
            size += len(new)
        return size

    def _insert(self, kb: bytes, t: int, ts: int, key: Any, change: Change, prior: Optional[bytes], headers: Any,
                size: int) -> None:
        self.buffer[kb] = [t, ts, key, change, prior, headers, size]
        self.heap.append((t, kb))
        self.size += size

    # -- processing
    def process(self, record: Record) -> None:
        if not self.loaded:
            self._load()
        ts = record.timestamp
        if ts > self.observed:
            self.observed = ts
        key, change = record.key, record.value
        kb = self.kser(key)
        topic = self.context.topic or ""
        new_b, old_b = self._ser(change.new_value), self._ser(change.old_value)
        entry = self.buffer.get(kb)
        if entry is None:
            t = key.window.end if self.window_end_time else ts
            prior_b = old_b
        else:   # non-resetting: the key keeps its place and its prior value
            t, prior_b = entry[0], entry[4]
        size = self._record_size(kb, topic, record.headers, prior_b, old_b, new_b)
        raw = self._pack(t, ts, topic, record.headers, prior_b, old_b, new_b)
        if entry is None:
            self._insert(kb, t, ts, key, change, prior_b, record.headers, size)
            heapq.heappush(self.heap, self.heap.pop())
        else:
            self.size += size - entry[6]
            entry[1:] = [ts, key, change, prior_b, record.headers, size]
        self.store.put(kb, raw)
        self._enforce()

    def _over_capacity(self) -> bool:
        return ((self.max_records is not None and len(self.buffer) > self.max_records)
                or (self.max_bytes is not None and self.size > self.max_bytes))

    def _pop_oldest(self, expiry: Optional[int]) -> bool:
        """Emit the buffer's oldest record (only if its buffer time is at most
        ``expiry``, when given); False when there is none to emit."""
        heap, buffer = self.heap, self.buffer
        while heap:
            t, kb = heap[0]
            if expiry is not None and t > expiry:
                return False
            heapq.heappop(heap)
            entry = buffer.get(kb)
            if entry is not None and entry[0] == t:
                self._emit(kb)
                return True
        return False

    def _enforce(self) -> None:
        expiry = self.observed - self.suppress_ms
        while self._pop_oldest(expiry):
            pass
        if self._over_capacity():
            if self.suppressed.buffer.shutdown_when_full:
                from .task import StreamsError
                raise StreamsError(f"suppress buffer of {self.store_name!r} exceeded its max capacity: "
                                   f"{len(self.buffer)}/{self.max_records} records, {self.size}/{self.max_bytes} "
                                   "bytes (BufferConfig.should_shut_down_when_full)")
            while self._over_capacity() and self._pop_oldest(None):
                pass

    def _emit(self, kb: bytes) -> None:
        t, ts, key, change, prior, headers, size = self.buffer.pop(kb)
        self.size -= size
        self.store.delete(kb)
        if change.new_value is None and self.suppressed.final_results:
            return  # final results drop tombstones
        self.forward(Record(key, change, ts, headers))


def suppress(table: Any, suppressed: Any) -> Any:
    from .ktable import KTable
    b = table.builder
    if suppressed.final_results and not getattr(table, "windowed", False):
        raise TopologyError("suppress(until_window_closes) needs a windowed table "
                            "(group_by_key().windowed_by(...) then an aggregation)")
    name = suppressed.name or b.new_processor_name("KTABLE-SUPPRESS-")
    store_name = f"{suppressed.name}-store" if suppressed.name else b.new_store_name("KTABLE-SUPPRESS-")
    windowed = getattr(table, "windowed", False)
    key_serde = table.window_serde if windowed else table.store_key_serde()
    value_serde = table.store_value_serde()
    grace = getattr(table, "grace_ms", 0)
    suppress_ms = grace if suppressed.final_results else suppressed.time_limit_ms
    out = KTable(b, name, table.key_serde, table.value_serde, store_name=None, parent=None)
    out.windowed = windowed
    out.window_serde = table.window_serde
    # the buffer keeps each key's old and prior values, so its parent sends old values (as Kafka's)
    table.enable_send_old_values()
    b.topology.add_processor(name, lambda: SuppressProcessor(out, suppressed, key_serde, value_serde, store_name,
                                                              suppressed.final_results, suppress_ms), table.node)
    from .state import Stores
    b.topology.add_state_store(Stores.in_memory_key_value_store(store_name), name)
    return out
