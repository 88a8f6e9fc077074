"""Stream-stream windowed joins (Kafka Streams' ``KStreamImplJoin``, ``KStreamJoinWindow``
and ``KStreamKStreamJoin`` with the spurious-result fix of Kafka 3.x).

Each side's records go into that side's window store (retaining duplicates) after
being forwarded to the side's join processor, which looks up the *other* side's store
for records within the join window and emits ``joiner(left, right)`` at the larger of
the two timestamps.  For left and outer joins a record that found no partner waits in
a shared "outer" store until its window has closed (stream time, shared by both sides,
past ``ts + after + grace`` for a left record, ``ts + before + grace`` for a right one)
and is then emitted with ``None`` for the missing side, at its own timestamp; a record
that arrives after its window's end is emitted unjoined at once.  The outer store is
scanned at most once per ``__emit.interval.ms.kstreams.outer.join.spurious.results.fix__``
ms of wall-clock time (default 1000 as in Kafka; tests set 0).

The outer store's keys are Kafka's ``TimestampedKeyAndJoinSide`` bytes (8-byte
timestamp, a side byte, 1 = left, then the key), so a scan goes in time order; its
values are lists of length-prefixed ``LeftOrRightValue`` entries (a side byte, then the
value).
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Dict, List, Optional

from . import _processors as P
from .builder import name_of
from .options import StreamJoined
from .processor import Record
from .topology import TopologyError

__all__ = ["stream_stream_join"]

OUTER_EMIT_INTERVAL_CONFIG = "__emit.interval.ms.kstreams.outer.join.spurious.results.fix__"
_Q = struct.Struct(">q")
_I = struct.Struct(">i")
_MAX = (1 << 63) - 1


class TimeTracker:
    """Stream time shared by the two sides of one join in one task."""

    __slots__ = ("stream_time", "min_time", "next_time_to_emit")

    def __init__(self) -> None:
        self.stream_time = -1
        self.min_time = _MAX
        self.next_time_to_emit = 0


class JoinWindowProcessor(P._Base):
    """Forward, then remember the record in this side's window store."""

    def __init__(self, store_name: str, key_serde: Any, value_serde: Any) -> None:
        self.store_name = store_name
        self.key_serde = key_serde
        self.value_serde = value_serde

    def init(self, context: Any) -> None:
        super().init(context)
        self.store = context.get_state_store(self.store_name)
        self.kser = self.key_serde.serialize
        self.vser = self.value_serde.serialize

    def process(self, record: Record) -> None:
        self.forward(record)
        if record.key is not None and record.value is not None:
            self.store.put(self.kser(record.key), self.vser(record.value), record.timestamp)


class StreamStreamJoin(P._Base):
    def __init__(self, *, is_left: bool, outer: bool, other_store: str, outer_store: Optional[str],
                 trackers: Dict[str, TimeTracker], before_ms: int, after_ms: int, windows: Any,
                 joiner: Callable[[Any, Any], Any], key_serde: Any, this_serde: Any, other_serde: Any) -> None:
        self.is_left = is_left
        self.outer = outer
        self.other_store_name = other_store
        self.outer_store_name = outer_store
        self.trackers = trackers
        self.before_ms = before_ms
        self.after_ms = after_ms
        self.windows = windows
        self.joiner = joiner
        self.key_serde = key_serde
        self.this_serde = this_serde
        self.other_serde = other_serde

    def init(self, context: Any) -> None:
        super().init(context)
        self.other = context.get_state_store(self.other_store_name)
        self.outer_store = None if self.outer_store_name is None else context.get_state_store(self.outer_store_name)
        self.tracker = self.trackers.setdefault(context.task_id, TimeTracker())
        self.interval = int(context.app_config.get(OUTER_EMIT_INTERVAL_CONFIG, 1000))
        self.kser, self.kde = self.key_serde.serialize, self.key_serde.deserialize
        self.other_de = self.other_serde.deserialize

    def _join(self, this: Any, other: Any) -> Any:
        return self.joiner(this, other) if self.is_left else self.joiner(other, this)

    def process(self, record: Record) -> None:
        ts = record.timestamp
        tracker = self.tracker
        if ts > tracker.stream_time:
            tracker.stream_time = ts
        key, value = record.key, record.value
        if self.outer and key is None and value is not None:
            self.forward(record.with_value(self._join(value, None)))
            return
        if key is None or value is None:
            P._dropped(self.context, "null key or value in a stream-stream join")
            return
        if ts == tracker.stream_time and self.outer_store is not None:
            self._emit_non_joined(record)
        kb = self.kser(key)
        time_from = max(0, ts - self.before_ms)
        time_to = max(0, ts + self.after_ms)
        matches = list(self.other.fetch_range(kb, time_from, time_to))
        for other_ts, raw in matches:
            if self.outer_store is not None:
                self.outer_store.delete(_outer_key(other_ts, not self.is_left, kb))
            self.forward(Record(key, self._join(value, self.other_de(raw)), max(ts, other_ts), record.headers))
        if self.outer and not matches:
            if self.outer_store is None or time_to < tracker.stream_time:
                self.forward(record.with_value(self._join(value, None)))
            else:
                if ts < tracker.min_time:
                    tracker.min_time = ts
                okey = _outer_key(ts, self.is_left, kb)
                entry = bytes([1 if self.is_left else 0]) + self.this_serde.serialize(value)
                self.outer_store.put(okey, (self.outer_store.get(okey) or b"") + _I.pack(len(entry)) + entry)

    def _emit_non_joined(self, record: Record) -> None:
        tracker = self.tracker
        grace = self.windows.grace_ms
        if tracker.min_time + self.after_ms + grace >= tracker.stream_time:
            return
        now = self.context.current_system_time_ms()
        if now < tracker.next_time_to_emit:
            return
        tracker.next_time_to_emit = now + self.interval
        tracker.min_time = _MAX
        store = self.outer_store
        emitted: List[bytes] = []
        for okey, packed in list(store.all()):
            ts = _Q.unpack_from(okey)[0]
            left_side = okey[8] == 1
            tracker.min_time = ts
            lookback = self.windows.after_ms if left_side else self.windows.before_ms
            if ts + lookback + grace >= tracker.stream_time:
                continue  # this side's window is still open
            key = self.kde(okey[9:])
            pos = 0
            while pos < len(packed):
                n = _I.unpack_from(packed, pos)[0]
                entry = packed[pos + 4:pos + 4 + n]
                pos += 4 + n
                if entry[0] == 1:
                    left, right = self._de_side(True, entry[1:]), None
                else:
                    left, right = None, self._de_side(False, entry[1:])
                self.forward(Record(key, self.joiner(left, right), ts, record.headers))
            emitted.append(okey)
        for okey in emitted:
            store.delete(okey)

    def _de_side(self, left: bool, raw: bytes) -> Any:
        serde = self.this_serde if left == self.is_left else self.other_serde
        return serde.deserialize(raw)


def _outer_key(ts: int, left: bool, kb: bytes) -> bytes:
    return _Q.pack(ts) + (b"\x01" if left else b"\x00") + kb


def stream_stream_join(this: Any, other: Any, joiner: Callable[[Any, Any], Any], windows: Any, joined: Any,
                       named: Any, kind: str) -> Any:
    from .kstream import KStream
    from .state import Stores
    from .windows import JoinWindows
    if not isinstance(windows, JoinWindows):
        raise TopologyError(f"a stream-stream join takes JoinWindows, got {windows!r}")
    if other.builder is not this.builder:
        raise TopologyError("join() needs two streams of the same StreamsBuilder")
    sj = joined if isinstance(joined, StreamJoined) else StreamJoined()
    b = this.builder
    t = b.topology
    base = name_of(named) or sj.name
    key_serde = sj.key_serde or this.key_serde or other.key_serde or b.default_key_serde()
    this_serde = sj.value_serde or this.value_serde or b.default_value_serde()
    other_serde = sj.other_value_serde or other.value_serde or b.default_value_serde()
    left = this._for_join(base, key_serde, this_serde)
    right = other._for_join(base, key_serde, other_serde) if other is not this else left
    this_windowed = f"{base}-this-windowed" if base else b.new_processor_name("KSTREAM-WINDOWED-")
    other_windowed = f"{base}-other-windowed" if base else b.new_processor_name("KSTREAM-WINDOWED-")
    this_prefix = "KSTREAM-OUTERTHIS-" if kind == "outer" else "KSTREAM-JOINTHIS-"
    other_prefix = "KSTREAM-JOINOTHER-" if kind == "inner" else "KSTREAM-OUTEROTHER-"
    this_join = f"{base}-{'outer' if kind == 'outer' else 'join'}-this-join" if base else b.new_processor_name(this_prefix)
    other_join = f"{base}-{'join' if kind == 'inner' else 'outer'}-other-join" if base \
        else b.new_processor_name(other_prefix)
    merge = f"{base}-merge" if base else b.new_processor_name("KSTREAM-MERGE-")
    if sj.store_name:
        this_store, other_store = f"{sj.store_name}-this-join-store", f"{sj.store_name}-other-join-store"
        shared_store = f"{sj.store_name}-outer-shared-join-store"
    else:
        this_store, other_store = f"{this_join}-store", f"{other_join}-store"
        shared_store = "KSTREAM-OUTERSHARED-" + this_join.rsplit("-", 1)[-1] + "-store" if not base \
            else f"{base}-outer-shared-join-store"
    # a zero-width window (before = after = 0) still needs a 1 ms store window
    size = max(1, windows.size_ms)
    retention = max(windows.size_ms + windows.grace_ms, size)

    def window_store(name: str) -> Any:
        sb = Stores.in_memory_window_store(name, retention, size, True)
        return sb.with_logging_enabled() if sj.logging_enabled else sb.with_logging_disabled()

    t.add_processor(this_windowed, lambda: JoinWindowProcessor(this_store, key_serde, this_serde), left.node)
    t.add_processor(other_windowed, lambda: JoinWindowProcessor(other_store, key_serde, other_serde), right.node)
    t.add_state_store(window_store(this_store), this_windowed, key_serde=key_serde, value_serde=this_serde)
    t.add_state_store(window_store(other_store), other_windowed, key_serde=key_serde, value_serde=other_serde)
    outer_name = None if kind == "inner" else shared_store
    trackers: Dict[str, TimeTracker] = {}
    common = dict(outer_store=outer_name, trackers=trackers, windows=windows, joiner=joiner, key_serde=key_serde)
    t.add_processor(this_join, lambda: StreamStreamJoin(
        is_left=True, outer=kind != "inner", other_store=other_store, before_ms=windows.before_ms,
        after_ms=windows.after_ms, this_serde=this_serde, other_serde=other_serde, **common), this_windowed)
    t.add_processor(other_join, lambda: StreamStreamJoin(
        is_left=False, outer=kind == "outer", other_store=this_store, before_ms=windows.after_ms,
        after_ms=windows.before_ms, this_serde=other_serde, other_serde=this_serde, **common), other_windowed)
    t.connect_processor_and_state_stores(this_join, other_store)
    t.connect_processor_and_state_stores(other_join, this_store)
    if outer_name is not None:
        sb = Stores.in_memory_key_value_store(outer_name)
        sb = sb.with_logging_enabled() if sj.logging_enabled else sb.with_logging_disabled()
        t.add_state_store(sb, this_join, other_join)
    t.add_processor(merge, P.PassThrough, this_join, other_join)
    return KStream(b, merge, key_serde, None, repartition_required=False)
