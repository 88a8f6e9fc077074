"""The public window-store and session-store operations, written once over a few
primitives that the in-memory and the persistent (segmented) stores each provide,
so the two behave identically:

* ``_store(key, t, x, value)`` writes (``None`` deletes) entry ``(key, t, x)``;
* ``_lookup(key, t, x)`` reads one live entry;
* ``_key_entries(key, t_from, t_to)`` lists one key's live entries with ``t`` in
  the range, in ``(t, x)`` order;
* ``_time_entries(key_from, key_to, t_from, t_to)`` lists live entries in a key
  and time range, in ``(t, key, x)`` order;
* ``_drop_expired(min_live)`` may drop entries with ``t < min_live``.

(A window store built with ``time_ordered=True``, Kafka's time-ordered store, keeps
entries while ``t >= observed - retention_ms``: 1 ms longer.)

``t`` is the segment timestamp (window start, or session end) and ``x`` the
seqnum (window) or session start.  Retention follows Kafka's segmented stores: the
observed stream time is the greatest ``t`` put or restored; an entry is live while
``t > observed - retention_ms``; a put of an entry that is not live is ignored, and
reads never return one.  Timestamps are non-negative int64 (Kafka's windows start
at or after the epoch); anything else raises ValueError before any change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, Optional, Tuple

from ._base import check_key
from .keys import session_key_from_binary, window_key_from_binary

__all__ = ["Retention", "WindowOps", "SessionOps", "check_time", "INT64_MAX", "segment_interval"]

INT64_MAX = (1 << 63) - 1
_SEQNUM_MASK = 0x7FFFFFFF


def check_time(t: Any, what: str) -> int:
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= INT64_MAX:
        raise ValueError(f"{what} must be an int in [0, 2**63), got {t!r}")
    return t


def segment_interval(retention_ms: int) -> int:
    """Kafka's segment interval for window and session stores: max(retention/2, 60 s)."""
    return max(retention_ms // 2, 60_000)


class Retention:
    """Kafka's retention rule over ``observed_stream_time``; subclasses provide
    ``_drop_expired``."""

    retention_ms: int
    observed_stream_time: int
    expiry_slack: int

    if TYPE_CHECKING:  # the primitives every store below provides (module docstring)
        def _check_open(self) -> None: ...
        def _store(self, key: bytes, t: int, x: int, value: Optional[bytes]) -> None: ...
        def _lookup(self, key: bytes, t: int, x: int) -> Optional[bytes]: ...
        def _key_entries(self, key: bytes, t_from: int, t_to: int) -> list: ...
        def _time_entries(self, key_from: Optional[bytes], key_to: Optional[bytes], t_from: int,
                          t_to: int) -> list: ...
        def _drop_expired(self, min_live: int) -> None: ...

    def _init_retention(self, retention_ms: int, time_ordered: bool = False) -> None:
        if isinstance(retention_ms, bool) or not isinstance(retention_ms, int) or retention_ms < 0:
            raise ValueError(f"retention_ms must be a non-negative int, got {retention_ms!r}")
        self.retention_ms = retention_ms
        self.time_ordered = bool(time_ordered)
        # Kafka's time-ordered window store (the one emit-on-window-close uses) keeps an
        # entry visible 1 ms longer, so a window whose retention is exactly its size
        # plus grace can still be read when it closes.
        self.expiry_slack = 0 if time_ordered else 1
        self.segment_interval_ms = segment_interval(retention_ms)
        #: Greatest segment timestamp seen; -1 (Kafka's NO_TIMESTAMP) before any.
        self.observed_stream_time = -1

    def _min_live(self) -> int:
        return self.observed_stream_time - self.retention_ms + self.expiry_slack

    def _observe(self, t: int) -> bool:
        """Advance stream time to ``t``; True when an entry at ``t`` is live."""
        if t > self.observed_stream_time:
            self.observed_stream_time = t
            self._drop_expired(self._min_live())
        return t >= self._min_live()


class WindowOps(Retention):
    if TYPE_CHECKING:  # and, for put_window_runs: _store(key, t, 0, value) for each live
        # t -> {binary key: value} (WindowKeySchema keys), a dict update per run if it can
        def _store_runs(self, runs: Dict[int, Dict[bytes, bytes]]) -> None: ...

    def _init_window(self, window_size_ms: int, retain_duplicates: bool) -> None:
        if isinstance(window_size_ms, bool) or not isinstance(window_size_ms, int) or window_size_ms <= 0:
            raise ValueError(f"window_size_ms must be a positive int, got {window_size_ms!r}")
        self.window_size_ms = window_size_ms
        self.retain_duplicates = bool(retain_duplicates)
        #: The seqnum of the last non-null put (retain_duplicates only).
        self.last_seqnum = 0

    def put(self, key: bytes, value: Optional[bytes], window_start_ms: int) -> None:
        self._check_open()
        key = check_key(key)
        check_time(window_start_ms, "window_start_ms")
        if self.retain_duplicates:
            # Every put takes a seqnum, a null or expired one too, so the changelog key
            # the logging wrapper writes is never a live entry's; a null put stores
            # nothing but still advances stream time (and is logged, so a restore does).
            self.last_seqnum = seq = (self.last_seqnum + 1) & _SEQNUM_MASK
            if value is None:
                self._observe(window_start_ms)
                return
        else:
            seq = 0
        if self._observe(window_start_ms):
            self._store(key, window_start_ms, seq, value)

    def put_window_runs(self, runs: Dict[int, Dict[bytes, bytes]]) -> None:
        """For each window start, ``put`` of each of its windows, given as
        ``{start: {binary key: value}}`` where the binary key is Kafka's
        WindowKeySchema (key, ``start`` int64 BE, seqnum 0 int32 BE; the changelog's
        key): the same visible result as the puts one by one, in any order.  What a
        fused aggregation writes after a batch (:mod:`pylog.streams._fused`): a run is
        handed to the store as a dict, not entry by entry.  Stores without duplicates
        only; values are not None; the caller builds the binary keys from bytes keys
        and hands the dicts over (the store may keep them)."""
        self._check_open()
        if self.retain_duplicates:
            raise ValueError("put_window_runs writes seqnum 0: not for a window store that retains duplicates")
        if not runs:
            return
        top = -1
        for start in runs:
            if type(start) is not int or start < 0:
                check_time(start, "window_start_ms")
            if start > top:
                top = start
        # One advance of stream time to the greatest start drops what the puts one by
        # one would have dropped; what it expires would have been dropped after its put.
        self._observe(top)
        min_live = self._min_live()
        self._store_runs({start: run for start, run in runs.items() if start >= min_live})

    def restore_batch(self, records: Iterable[Tuple[bytes, Optional[bytes]]]) -> None:
        self._check_open()
        for binary, value in records:
            key, start, seq = window_key_from_binary(binary)
            if self.retain_duplicates:
                self.last_seqnum = seq
                if value is None:
                    self._observe(start)
                    continue
            else:
                seq = 0
            if self._observe(start):
                self._store(key, start, seq, value)

    def fetch(self, key: bytes, window_start_ms: int) -> Optional[bytes]:
        """The value of ``key``'s window at ``window_start_ms`` (with duplicates: the
        first one put that is still stored)."""
        self._check_open()
        key = check_key(key)
        check_time(window_start_ms, "window_start_ms")
        if not self.retain_duplicates:
            return self._lookup(key, window_start_ms, 0)
        entries = self._key_entries(key, window_start_ms, window_start_ms)
        return entries[0][1] if entries else None

    def fetch_range(self, key: bytes, time_from: int, time_to: int) -> Iterator[Tuple[int, bytes]]:
        """``(window_start, value)`` of ``key``'s windows starting in [time_from, time_to]."""
        self._check_open()
        key = check_key(key)
        entries = self._key_entries(key, check_time(time_from, "time_from"),
                                    check_time(time_to, "time_to"))
        return iter([(k[1], v) for k, v in entries])

    def fetch_key_range(self, key_from: Optional[bytes], key_to: Optional[bytes], time_from: int,
                        time_to: int) -> Iterator[Tuple[Tuple[bytes, int], bytes]]:
        """``((key, window_start), value)`` for keys in [key_from, key_to] (None: open)
        and window starts in [time_from, time_to], by window start, then key."""
        self._check_open()
        key_from = None if key_from is None else check_key(key_from)
        key_to = None if key_to is None else check_key(key_to)
        entries = self._time_entries(key_from, key_to, check_time(time_from, "time_from"),
                                     check_time(time_to, "time_to"))
        return iter([((k[0], k[1]), v) for k, v in entries])

    def fetch_all(self, time_from: int, time_to: int) -> Iterator[Tuple[Tuple[bytes, int], bytes]]:
        return self.fetch_key_range(None, None, time_from, time_to)

    def all(self) -> Iterator[Tuple[Tuple[bytes, int], bytes]]:
        return self.fetch_key_range(None, None, 0, INT64_MAX)


class SessionOps(Retention):
    def put(self, session_key: Tuple[bytes, int, int], value: Optional[bytes]) -> None:
        self._check_open()
        key, start, end = _check_session(session_key)
        if self._observe(end):
            self._store(key, end, start, value)

    def remove(self, session_key: Tuple[bytes, int, int]) -> None:
        self.put(session_key, None)

    def restore_batch(self, records: Iterable[Tuple[bytes, Optional[bytes]]]) -> None:
        self._check_open()
        for binary, value in records:
            key, start, end = session_key_from_binary(binary)
            if self._observe(end):
                self._store(key, end, start, value)

    def find_sessions(self, key: bytes, earliest_session_end_time: int,
                      latest_session_start_time: int) -> Iterator[Tuple[Tuple[bytes, int, int], bytes]]:
        """Sessions of ``key`` that end at or after ``earliest_session_end_time`` and
        start at or before ``latest_session_start_time``, by end then start."""
        self._check_open()
        key = check_key(key)
        check_time(earliest_session_end_time, "earliest_session_end_time")
        check_time(latest_session_start_time, "latest_session_start_time")
        entries = self._key_entries(key, earliest_session_end_time, INT64_MAX)
        return iter([((k[0], k[2], k[1]), v) for k, v in entries if k[2] <= latest_session_start_time])

    def fetch_session(self, key: bytes, start: int, end: int) -> Optional[bytes]:
        self._check_open()
        key, start, end = _check_session((key, start, end))
        return self._lookup(key, end, start)

    def fetch(self, key: bytes) -> Iterator[Tuple[Tuple[bytes, int, int], bytes]]:
        """Every live session of ``key``."""
        return self.find_sessions(key, 0, INT64_MAX)


def _check_session(session_key: Tuple[bytes, int, int]) -> Tuple[bytes, int, int]:
    try:
        key, start, end = session_key
    except (TypeError, ValueError):
        raise TypeError(f"a session key is (key, start, end), got {session_key!r}") from None
    check_time(start, "session start")
    check_time(end, "session end")
    if start > end:
        raise ValueError(f"session start {start} is after its end {end}")
    return check_key(key), start, end
