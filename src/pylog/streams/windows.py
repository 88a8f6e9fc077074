"""Windows and emission control: :class:`TimeWindows` (tumbling and hopping),
:class:`SlidingWindows`, :class:`SessionWindows`, :class:`JoinWindows`, the
:class:`Windowed` key aggregations emit, :class:`Suppressed` and :class:`EmitStrategy`
(Kafka Streams' ``kstream`` window classes).

Times are milliseconds; every factory also takes a ``timedelta``.  Window ends are
exclusive for time windows (``[start, end)``) and inclusive for sessions and sliding
windows, as in Kafka.  All objects here are immutable.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, Optional

from .processor import to_millis
from .serdes import Serde

__all__ = ["TimeWindows", "SlidingWindows", "SessionWindows", "JoinWindows", "Window", "Windowed",
           "Suppressed", "BufferConfig", "EmitStrategy", "WindowedSerdes"]

#: Kafka's default grace for the deprecated no-grace-given constructors (24 h).
DEFAULT_GRACE_MS = 24 * 3600 * 1000


class Window:
    """A window's bounds in ms (Kafka's ``Window``)."""

    __slots__ = ("start", "end")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Window) and self.start == other.start and self.end == other.end

    def __hash__(self) -> int:
        return hash((self.start, self.end))

    def __repr__(self) -> str:
        return f"Window(start={self.start}, end={self.end})"


class Windowed:
    """A key and its window: what windowed aggregations emit (Kafka's ``Windowed``)."""

    __slots__ = ("key", "window")

    def __init__(self, key: Any, window: Window) -> None:
        self.key = key
        self.window = window

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Windowed) and self.key == other.key and self.window == other.window

    def __hash__(self) -> int:
        return hash((self.key, self.window))

    def __repr__(self) -> str:
        return f"[{self.key!r}@{self.window.start}/{self.window.end}]"


def _check(ms: int, what: str, minimum: int = 0) -> int:
    if ms < minimum:
        raise ValueError(f"{what} must be at least {minimum} ms, got {ms}")
    return ms


class TimeWindows:
    """Fixed-size windows aligned to the epoch: tumbling, or hopping with
    :meth:`advance_by`.  A record at ``ts`` falls in every window with
    ``start <= ts < start + size``."""

    def __init__(self, size_ms: int, advance_ms: int, grace_ms: int) -> None:
        self.size_ms = _check(size_ms, "a window size", 1)
        if not 0 < advance_ms <= size_ms:
            raise ValueError(f"the advance must be in (0, size={size_ms}] ms, got {advance_ms}")
        self.advance_ms = advance_ms
        self.grace_ms = _check(grace_ms, "the grace period")

    @staticmethod
    def of_size_with_no_grace(size: Any) -> "TimeWindows":
        s = to_millis(size)
        return TimeWindows(s, s, 0)

    @staticmethod
    def of_size_and_grace(size: Any, grace: Any) -> "TimeWindows":
        s = to_millis(size)
        return TimeWindows(s, s, to_millis(grace))

    of_size_with_grace = of_size_and_grace

    def advance_by(self, advance: Any) -> "TimeWindows":
        return TimeWindows(self.size_ms, to_millis(advance), self.grace_ms)

    def windows_for(self, ts: int) -> Dict[int, Window]:
        size, adv = self.size_ms, self.advance_ms
        start = max(0, ts - size + adv) // adv * adv
        out = {}
        while start <= ts:
            out[start] = Window(start, start + size)
            start += adv
        return out

    def __repr__(self) -> str:
        return f"TimeWindows(size={self.size_ms}, advance={self.advance_ms}, grace={self.grace_ms})"


class SlidingWindows:
    """Windows of ``time_difference`` ms defined by the records themselves: two records
    are in a common window when their timestamps differ by at most the difference."""

    def __init__(self, time_difference_ms: int, grace_ms: int) -> None:
        self.time_difference_ms = _check(time_difference_ms, "the time difference")
        self.grace_ms = _check(grace_ms, "the grace period")

    @staticmethod
    def of_time_difference_with_no_grace(d: Any) -> "SlidingWindows":
        return SlidingWindows(to_millis(d), 0)

    @staticmethod
    def of_time_difference_and_grace(d: Any, grace: Any) -> "SlidingWindows":
        return SlidingWindows(to_millis(d), to_millis(grace))

    def __repr__(self) -> str:
        return f"SlidingWindows(difference={self.time_difference_ms}, grace={self.grace_ms})"


class SessionWindows:
    """Sessions: records of a key closer than ``gap`` ms belong to one session."""

    def __init__(self, gap_ms: int, grace_ms: int) -> None:
        self.gap_ms = _check(gap_ms, "the inactivity gap", 1)
        self.grace_ms = _check(grace_ms, "the grace period")

    @staticmethod
    def of_inactivity_gap_with_no_grace(gap: Any) -> "SessionWindows":
        return SessionWindows(to_millis(gap), 0)

    @staticmethod
    def of_inactivity_gap_and_grace(gap: Any, grace: Any) -> "SessionWindows":
        return SessionWindows(to_millis(gap), to_millis(grace))

    def __repr__(self) -> str:
        return f"SessionWindows(gap={self.gap_ms}, grace={self.grace_ms})"


class JoinWindows:
    """How far apart two records of a stream-stream join may be: the other side's
    record at ``t2`` joins this side's record at ``t1`` when
    ``t1 - before <= t2 <= t1 + after``."""

    def __init__(self, before_ms: int, after_ms: int, grace_ms: int) -> None:
        if before_ms + after_ms < 0:
            raise ValueError("a join window's before + after must be >= 0")
        self.before_ms = before_ms
        self.after_ms = after_ms
        self.grace_ms = _check(grace_ms, "the grace period")

    @staticmethod
    def of_time_difference_with_no_grace(d: Any) -> "JoinWindows":
        ms = to_millis(d)
        return JoinWindows(ms, ms, 0)

    @staticmethod
    def of_time_difference_and_grace(d: Any, grace: Any) -> "JoinWindows":
        ms = to_millis(d)
        return JoinWindows(ms, ms, to_millis(grace))

    def before(self, d: Any) -> "JoinWindows":
        return JoinWindows(to_millis(d), self.after_ms, self.grace_ms)

    def after(self, d: Any) -> "JoinWindows":
        return JoinWindows(self.before_ms, to_millis(d), self.grace_ms)

    @property
    def size_ms(self) -> int:
        return self.before_ms + self.after_ms

    def __repr__(self) -> str:
        return f"JoinWindows(before={self.before_ms}, after={self.after_ms}, grace={self.grace_ms})"


class BufferConfig:
    """How much ``suppress`` may buffer, and what happens when full: emit the oldest
    early, or fail (Kafka's ``Suppressed.BufferConfig``)."""

    def __init__(self, max_records: Optional[int] = None, max_bytes: Optional[int] = None,
                 shutdown_when_full: bool = False) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.shutdown_when_full = shutdown_when_full

    @staticmethod
    def unbounded() -> "BufferConfig":
        return BufferConfig()

    @staticmethod
    def max_records_(n: int) -> "BufferConfig":
        return BufferConfig(max_records=n)

    @staticmethod
    def max_bytes_(n: int) -> "BufferConfig":
        return BufferConfig(max_bytes=n)

    def with_max_records(self, n: int) -> "BufferConfig":
        """This buffer, holding at most ``n`` records too (Kafka's ``withMaxRecords``)."""
        return BufferConfig(n, self.max_bytes, self.shutdown_when_full)

    def with_max_bytes(self, n: int) -> "BufferConfig":
        """This buffer, holding at most ``n`` bytes too (Kafka's ``withMaxBytes``; the
        size is Kafka's estimate, see :class:`pylog.streams.windowed.SuppressProcessor`)."""
        return BufferConfig(self.max_records, n, self.shutdown_when_full)

    def should_shut_down_when_full(self) -> "BufferConfig":
        return BufferConfig(self.max_records, self.max_bytes, True)

    def emit_early_when_full(self) -> "BufferConfig":
        return BufferConfig(self.max_records, self.max_bytes, False)


class Suppressed:
    """Hold a KTable's updates back: until a window closes (final results), or until
    ``time_limit`` of stream time has passed since the key's first buffered update."""

    def __init__(self, final_results: bool, time_limit_ms: int, buffer: BufferConfig,
                 name: Optional[str] = None) -> None:
        self.final_results = final_results
        self.time_limit_ms = time_limit_ms
        self.buffer = buffer
        self.name = name

    @staticmethod
    def until_window_closes(buffer: Optional[BufferConfig] = None) -> "Suppressed":
        buffer = buffer or BufferConfig.unbounded()
        if buffer.max_records is not None or buffer.max_bytes is not None:
            if not buffer.shutdown_when_full:
                raise ValueError("until_window_closes needs a buffer that is unbounded or shuts down "
                                 "when full (emitting early would break final results)")
        return Suppressed(True, 0, buffer)

    @staticmethod
    def until_time_limit(time_limit: Any, buffer: Optional[BufferConfig] = None) -> "Suppressed":
        return Suppressed(False, to_millis(time_limit), buffer or BufferConfig.unbounded())

    def with_name(self, name: str) -> "Suppressed":
        return Suppressed(self.final_results, self.time_limit_ms, self.buffer, name)


class EmitStrategy:
    """When a windowed aggregation emits: on every update (the default) or once, when
    the window closes."""

    def __init__(self, on_close: bool) -> None:
        self.on_close = on_close

    @staticmethod
    def on_window_update() -> "EmitStrategy":
        return EmitStrategy(False)

    @staticmethod
    def on_window_close() -> "EmitStrategy":
        return EmitStrategy(True)


_Q = struct.Struct(">q")
_QQ = struct.Struct(">qq")


class WindowedSerdes:
    """Serdes of windowed keys as Kafka writes them: a time-windowed key is the inner
    key's bytes then the 8-byte window start; a session-windowed key is the inner key's
    bytes then the 8-byte end then the 8-byte start."""

    @staticmethod
    def time_windowed(inner: Serde, window_size_ms: int) -> Serde:
        def ser(w: Windowed) -> bytes:
            return inner.serialize(w.key) + _Q.pack(w.window.start)

        def de(b: bytes) -> Windowed:
            start = _Q.unpack_from(b, len(b) - 8)[0]
            return Windowed(inner.deserialize(b[:-8]), Window(start, start + window_size_ms))
        serde = Serde(ser, de, f"time_windowed({inner.name})")
        # what a fused windowed aggregation writes without building a Windowed (_fused)
        serde.serialize.time_windowed_inner = inner.serialize  # type: ignore[attr-defined]
        return serde

    @staticmethod
    def session_windowed(inner: Serde) -> Serde:
        def ser(w: Windowed) -> bytes:
            return inner.serialize(w.key) + _QQ.pack(w.window.end, w.window.start)

        def de(b: bytes) -> Windowed:
            end, start = _QQ.unpack_from(b, len(b) - 16)
            return Windowed(inner.deserialize(b[:-16]), Window(start, end))
        return Serde(ser, de, f"session_windowed({inner.name})")
