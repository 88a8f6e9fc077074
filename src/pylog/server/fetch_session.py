"""Incremental fetch sessions (KIP-227): the broker's session cache, as Kafka's
``FetchSessionCache``.

A consumer or follower that fetches the same partitions again and again sends them once,
in a *full* fetch (session id 0, epoch 0); the answer carries a session id.  Its next
fetches are *incremental* (that id, epochs 1, 2, ...): they list only the partitions whose
fetch offset or settings changed (plus ``forgotten_topics_data`` to drop some), and the
answer lists only the partitions with news: records, a changed high watermark or log start
offset, or an error.  A fetch with epoch -1 is sessionless and closes the session it names.

Request metadata (session id, epoch) and what this module decides:

``(0, -1)``  sessionless full fetch; no session.
``(id, -1)`` closes session ``id``; sessionless full fetch.
``(x, 0)``   closes session ``x`` (if any); full fetch that creates a session when the
             cache has room (or can evict); the answer carries its id, or 0.
``(id, n)``  incremental: FETCH_SESSION_ID_NOT_FOUND for an unknown id,
             INVALID_FETCH_SESSION_EPOCH for an epoch other than the session's; a session
             left empty by ``forgotten_topics_data`` is closed (the answer is sessionless).

Bounds
    At most ``max_entries`` sessions (``max.incremental.fetch.session.cache.slots``,
    Kafka's default 1000; 0 disables sessions); each holds one small object per partition
    it fetches.  When the cache is full a new session may evict, as Kafka's ``tryEvict``:
    the least recently used session if it went unused for longer than ``eviction_ms``
    (Kafka's fixed 120 s, MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS); otherwise the
    smallest evictable session (ordered by privileged, then number of partitions, then id)
    when the new one is at least as valuable.  A session is evictable by anyone once it is
    older than ``eviction_ms`` (as of its last use); a follower's (privileged) request
    may also evict a younger consumer session.  Finding the smallest evictable session is
    a scan of the cache, done only when it is full and a full fetch asks for a session.

Thread safety
    None: the cache and its sessions are used from the server's event loop only (the Fetch
    handler and the long-poll waiters run there), so no locks are taken.

Topic ids: the sessions key partitions by ``(topic, partition)``, where ``topic`` is what
the request names a topic by.  ``pylog serve`` speaks Fetch up to v12, which names topics;
a v13+ request (topic ids) would key sessions by topic id, as Kafka's do.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

from pylog.protocol import messages as m

if TYPE_CHECKING:
    import random

__all__ = ["FetchSessionCache", "FetchSession", "CachedPartition", "FetchContext",
           "INVALID_SESSION_ID", "INITIAL_EPOCH", "FINAL_EPOCH", "next_epoch"]

INVALID_SESSION_ID = 0
INITIAL_EPOCH = 0
FINAL_EPOCH = -1
FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71
_INT32_MAX = 2**31 - 1


def next_epoch(epoch: int) -> int:
    """The epoch after ``epoch``: wraps from 2^31-1 to 1; a negative one stays final."""
    if epoch < 0:
        return FINAL_EPOCH
    return 1 if epoch == _INT32_MAX else epoch + 1


class CachedPartition:
    """One partition of a session: the fetcher's request parameters, and what the last
    answer told it (``high_watermark``, ``local_log_start_offset``; -1 before any)."""

    __slots__ = ("fetch_offset", "max_bytes", "current_leader_epoch", "log_start_offset",
                 "high_watermark", "local_log_start_offset")

    def __init__(self, fetch_offset: int, max_bytes: int, current_leader_epoch: int,
                 log_start_offset: int, high_watermark: int = -1, local_log_start_offset: int = -1) -> None:
        self.fetch_offset = fetch_offset
        self.max_bytes = max_bytes
        self.current_leader_epoch = current_leader_epoch
        self.log_start_offset = log_start_offset
        self.high_watermark = high_watermark
        self.local_log_start_offset = local_log_start_offset

    def must_respond(self, pd: Any) -> bool:
        """Whether the partition's answer ``pd`` (a FetchResponse PartitionData) goes into
        an incremental response, updating what the fetcher was last told, as Kafka's
        ``maybeUpdateResponseData``: records, a changed high watermark or log start offset,
        or an error (which also forgets the high watermark, so it is sent again once the
        error is gone)."""
        must = len(pd.records) > 0
        if self.high_watermark != pd.high_watermark:
            self.high_watermark = pd.high_watermark
            must = True
        if self.local_log_start_offset != pd.log_start_offset:
            self.local_log_start_offset = pd.log_start_offset
            must = True
        if pd.error_code:
            self.high_watermark = -1
            must = True
        return must


class FetchSession:
    """A session: its id, epoch (the one its next fetch must carry) and partitions, in
    fetch order (a partition that was answered moves to the end, so every partition gets
    its turn under a response byte budget)."""

    __slots__ = ("id", "privileged", "partitions", "created_ms", "last_used_ms", "epoch",
                 "cached_size", "by_all", "by_privileged")

    def __init__(self, session_id: int, privileged: bool, partitions: dict, now_ms: float) -> None:
        self.id = session_id
        self.privileged = privileged
        self.partitions: dict[tuple[Any, int], CachedPartition] = partitions
        self.created_ms = now_ms
        self.last_used_ms = now_ms
        self.epoch = next_epoch(INITIAL_EPOCH)
        self.cached_size = -1
        self.by_all = False           # evictable by any new session
        self.by_privileged = False    # evictable by a follower's new session

    def evictable_key(self) -> tuple[bool, int, int]:
        return (self.privileged, self.cached_size, self.id)

    def update(self, wanted: Iterable, forgotten: Iterable) -> None:
        """Apply an incremental request: add or update its partitions (``wanted`` as for
        :func:`~pylog.server.fetch.read_partitions`, plus each partition's fetcher log
        start offset), then drop the ``forgotten`` ``(topic, partition)`` pairs."""
        parts = self.partitions
        for topic, entries in wanted:
            for partition, offset, max_bytes, cle, log_start in entries:
                cp = parts.get((topic, partition))
                if cp is None:
                    parts[(topic, partition)] = CachedPartition(offset, max_bytes, cle, log_start)
                else:
                    cp.fetch_offset = offset
                    cp.max_bytes = max_bytes
                    cp.current_leader_epoch = cle
                    cp.log_start_offset = log_start
        for key in forgotten:
            parts.pop(key, None)

    def wanted(self, keys: Iterable | None = None) -> list:
        """The session's partitions (or those of ``keys`` still in it, in that order) as
        :func:`~pylog.server.fetch.read_partitions` takes them, consecutive partitions of
        a topic grouped."""
        parts = self.partitions
        items = parts.items() if keys is None else [(k, parts[k]) for k in keys if k in parts]
        out: list = []
        last = None
        entries: list = []
        for (topic, partition), cp in items:
            if topic != last or not out:
                entries = []
                out.append((topic, entries))
                last = topic
            entries.append((partition, cp.fetch_offset, cp.max_bytes, cp.current_leader_epoch))
        return out


class FetchContext:
    """What one Fetch request reads and how its answer is built (Kafka's FetchContext).

    ``error`` is a session error code (0: none); ``wanted`` the partitions to read;
    ``session`` the incremental session (None for full and sessionless fetches), whose
    partitions :func:`~pylog.server.fetch.read_partitions` may leave out of a read when
    they are caught up with nothing new to tell.  :meth:`respond` turns the partitions read
    into the FetchResponse, once, when the answer is sent.
    """

    __slots__ = ("cache", "error", "wanted", "session", "expected_epoch", "create", "privileged",
                 "request_data")

    def __init__(self, cache: FetchSessionCache, error: int = 0, wanted: list | None = None,
                 session: FetchSession | None = None, create: bool = False, privileged: bool = False,
                 request_data: dict | None = None) -> None:
        self.cache = cache
        self.error = error
        self.wanted = wanted or []
        self.session = session
        self.expected_epoch = session.epoch if session is not None else 0
        self.create = create
        self.privileged = privileged
        self.request_data = request_data

    def respond(self, responses: list) -> Any:
        R = m.FetchResponse
        if self.error:
            return R(throttle_time_ms=0, error_code=self.error, session_id=INVALID_SESSION_ID, responses=[])
        session = self.session
        if session is not None:
            return self._incremental(session, responses)
        session_id = INVALID_SESSION_ID
        if self.create:
            session_id = self.cache.maybe_create_session(self.privileged, self._cached_partitions(responses))
        return R(throttle_time_ms=0, error_code=0, session_id=session_id, responses=responses)

    def _cached_partitions(self, responses: list) -> Callable[[], dict]:
        def create() -> dict:
            req = self.request_data or {}
            parts: dict = {}
            for t in responses:
                topic = t.topic
                for pd in t.partitions:
                    key = (topic, pd.partition_index)
                    offset, max_bytes, cle, log_start = req[key]
                    parts[key] = CachedPartition(offset, max_bytes, cle, log_start,
                                                 pd.high_watermark, pd.log_start_offset)
            return parts
        return create

    def _incremental(self, session: FetchSession, responses: list) -> Any:
        R = m.FetchResponse
        if session.epoch != self.expected_epoch:
            # Another request of this session came in meanwhile (a duplicate request).
            return R(throttle_time_ms=0, error_code=INVALID_FETCH_SESSION_EPOCH, session_id=session.id,
                     responses=[])
        parts = session.partitions
        kept_topics = []
        for t in responses:
            topic = t.topic
            kept = []
            for pd in t.partitions:
                key = (topic, pd.partition_index)
                cp = parts.get(key)
                if cp is not None and cp.must_respond(pd):
                    kept.append(pd)
                    # Answered partitions go to the end of the fetch order (fairness).
                    del parts[key]
                    parts[key] = cp
            if kept:
                t.partitions = kept
                kept_topics.append(t)
        return R(throttle_time_ms=0, error_code=0, session_id=session.id, responses=kept_topics)


def _monotonic_ms() -> float:
    return time.monotonic() * 1000.0


class FetchSessionCache:
    """The broker's fetch sessions (see the module docstring for the rules and bounds).

    Parameters
    ----------
    max_entries : int
        ``max.incremental.fetch.session.cache.slots`` (0: no sessions).
    eviction_ms : int
        How long a session must go unused (or exist) before a new one may evict it.
    clock : callable, optional
        Milliseconds, monotonic (tests pass their own).
    """

    def __init__(self, max_entries: int = 1000, eviction_ms: int = 120_000,
                 clock: Callable[[], float] = _monotonic_ms, rng: random.Random | None = None) -> None:
        self.max_entries = max_entries
        self.eviction_ms = eviction_ms
        self.clock = clock
        self._rng = rng
        self.sessions: dict[int, FetchSession] = {}
        # Least recently used first (a touch moves a session to the end): Kafka's lastUsed.
        self._lru: dict[int, FetchSession] = {}
        self.total_partitions = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self.sessions)

    def get(self, session_id: int) -> FetchSession | None:
        return self.sessions.get(session_id)

    # -- the request's context (Kafka's FetchManager.newContext) ----------------------

    def new_context(self, session_id: int, epoch: int, wanted: list, forgotten: Iterable,
                    privileged: bool) -> FetchContext:
        """Decide what a Fetch request is: ``wanted`` lists the request's partitions as
        ``(topic, [(partition, fetch_offset, partition_max_bytes, current_leader_epoch,
        log_start_offset), ...])``; ``forgotten`` its ``(topic, partition)`` pairs to drop."""
        if epoch in (INITIAL_EPOCH, FINAL_EPOCH):
            if session_id != INVALID_SESSION_ID:
                self.remove(session_id)          # a full fetch closes the session it names
            read = [(topic, [e[:4] for e in entries]) for topic, entries in wanted]
            if epoch == FINAL_EPOCH or self.max_entries <= 0:
                return FetchContext(self, wanted=read)
            request_data = {(topic, e[0]): e[1:] for topic, entries in wanted for e in entries}
            return FetchContext(self, wanted=read, create=True, privileged=privileged,
                                request_data=request_data)
        session = self.sessions.get(session_id)
        if session is None:
            return FetchContext(self, error=FETCH_SESSION_ID_NOT_FOUND)
        if session.epoch != epoch:
            return FetchContext(self, error=INVALID_FETCH_SESSION_EPOCH)
        session.update(wanted, forgotten)
        if not session.partitions:
            self.remove(session_id)
            return FetchContext(self, wanted=[(topic, [e[:4] for e in entries]) for topic, entries in wanted])
        self.touch(session, self.clock())
        session.epoch = next_epoch(session.epoch)
        return FetchContext(self, wanted=session.wanted(), session=session)

    # -- the cache (Kafka's FetchSessionCache) ----------------------------------------

    def new_session_id(self) -> int:
        rng = self._rng
        if rng is None:
            import random  # imported on first use: not on the start-up path of `pylog serve` (#17)

            rng = self._rng = random.Random()
        while True:
            sid = rng.randint(1, _INT32_MAX - 1)
            if sid not in self.sessions:
                return sid

    def maybe_create_session(self, privileged: bool, create: Callable[[], dict]) -> int:
        """A new session of the partitions ``create()`` returns, if there is room or one
        can be evicted; returns its id, or 0."""
        if self.max_entries <= 0:
            return INVALID_SESSION_ID
        now = self.clock()
        partitions = create()
        if len(self.sessions) >= self.max_entries and \
                not self.try_evict(privileged, (privileged, len(partitions), 0), now):
            return INVALID_SESSION_ID
        session = FetchSession(self.new_session_id(), privileged, partitions, now)
        self.sessions[session.id] = session
        self.touch(session, now)
        return session.id

    def try_evict(self, privileged: bool, key: tuple[bool, int, int], now: float) -> bool:
        """Evict one session to make room for a new one whose evictable key is ``key``."""
        lru = next(iter(self._lru.values()), None)
        if lru is None:
            return False
        if now - lru.last_used_ms > self.eviction_ms:
            self.remove(lru.id)               # stale
            self.evictions += 1
            return True
        if privileged:
            candidates = [s for s in self.sessions.values() if s.by_privileged]
        else:
            candidates = [s for s in self.sessions.values() if s.by_all]
        if not candidates:
            return False
        victim = min(candidates, key=FetchSession.evictable_key)
        if key < victim.evictable_key():
            return False
        self.remove(victim.id)
        self.evictions += 1
        return True

    def remove(self, session_id: int) -> FetchSession | None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            self._lru.pop(session_id, None)
            if session.cached_size > 0:
                self.total_partitions -= session.cached_size
            session.cached_size = -1
        return session

    def touch(self, session: FetchSession, now: float) -> None:
        """Mark ``session`` used at ``now``: to the end of the LRU order, and its size and
        evictability recorded as of now (Kafka's ``touch``)."""
        self._lru.pop(session.id, None)
        self._lru[session.id] = session
        session.last_used_ms = now
        if session.cached_size > 0:
            self.total_partitions -= session.cached_size
        session.cached_size = len(session.partitions)
        self.total_partitions += session.cached_size
        old = now - session.created_ms > self.eviction_ms
        session.by_privileged = (not session.privileged) or old
        session.by_all = old
