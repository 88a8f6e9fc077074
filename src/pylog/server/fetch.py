"""Fetch: reading partitions into a zero-copy response, and long polls.

Reading
    A partition fetched at its high watermark (a caught-up consumer's poll) is answered
    from its offsets, without a read, with the same PartitionData object as long as its
    high watermark and log start offset stay the same (:class:`CaughtUpAnswers`: a
    sessionless consumer of 1000 partitions polls with 1000 such answers a round).  Any other is read with the broker core's
    ``fetch`` (whole batches from the one holding the fetch offset, up to the
    partition's and the response's byte budget; the first partition with data may
    exceed the budget by one batch, as Kafka's KIP-74).
    The records field of the response is a :class:`~pylog.protocol.segments.FileRegion`
    over the segment file, which the connection writes with ``os.sendfile`` (with
    ``PYLOG_FETCH_COPY_LOOPBACK`` the region also carries the read's view of the segment's
    mapping, which goes to a loopback peer with ``sendmsg``: :mod:`pylog.server.connection`);
    either way record bytes never pass through Python.  The region holds the segment's
    open file handle (and the view its mapping), so the bytes stay readable until written
    even if the segment is rolled, released or deleted meanwhile (the storage never
    shrinks a file under a live view).

read_committed (isolation level 1)
    The same, with the last stable offset in place of the high watermark: a partition
    fetched at its LSO is caught up (the records between the LSO and the high watermark
    belong to open transactions: nothing can be returned yet), and each partition's
    answer carries the aborted transactions overlapping its records (the broker core
    reads them from the ``.txnindex`` files), as Fetch v4+ does.

Long polls
    A Fetch that finds fewer than ``min_bytes`` waits up to ``max_wait_ms``; one whose
    partitions are all caught up (:func:`caught_up`) waits without building an answer
    first, so an empty poll costs one pass over its partitions, when it expires.
    An incremental fetch (:mod:`pylog.server.fetch_session`) waits on every partition of
    its session, and its answer is built by its session context when the wait ends.  If
    every session partition was caught up when it began to wait, an append re-reads only
    the partitions appended to since: the others have no records and no new high
    watermark, so they would be left out of the answer anyway (the expiry reads all).  It is
    registered under each partition it asked for; the broker's append listener calls
    :meth:`FetchWaiters.on_append`, which adds the appended bytes to each waiter on that
    partition and answers those that reached ``min_bytes`` by reading again.  Waiting
    costs one timer and one set entry per partition: no polling, no busy loop.  The
    answer is sent by the append that woke it (on the loop, within the Produce), to the
    waiting connection directly, before the Produce is answered: not through the
    future's callback on a later turn of the loop, behind the Produce's answer, whose
    send may hand the CPU to the producer first (#17).

Used from the event loop's thread only.
"""

from __future__ import annotations

from typing import Any

from pylog.errors import PylogError
from pylog.protocol import messages as m
from pylog.protocol.segments import FileRegion
from pylog.server import connection

__all__ = ["CaughtUpAnswers", "FetchWaiters", "caught_up", "read_partitions"]

_UNKNOWN_TOPIC_OR_PARTITION = 3
_FENCED_LEADER_EPOCH = 74
_UNKNOWN_LEADER_EPOCH = 75
_EMPTY = b""


class CaughtUpAnswers:
    """The answer of each partition fetched at its high watermark, by isolation level,
    reused while the partition's offsets stay the same.  Response objects are never
    changed once built (the encoder and the session filter only read them), so one
    object may sit in several responses.  One entry per partition polled; a topic's are
    dropped when it changes (:meth:`forget_topic`)."""

    __slots__ = ("by_isolation",)

    def __init__(self) -> None:
        self.by_isolation: tuple[dict, dict] = ({}, {})

    def get(self, isolation_level: int, topic: str, partition: int, start: int, hw: int,
            lso: int | None = None) -> Any:
        answers = self.by_isolation[1 if isolation_level == 1 else 0]
        pd = answers.get((topic, partition))
        lso = hw if lso is None else lso
        if pd is None or pd.high_watermark != hw or pd.log_start_offset != start or pd.last_stable_offset != lso:
            pd = m.FetchResponse.PartitionData(
                partition_index=partition, error_code=0, high_watermark=hw, last_stable_offset=lso,
                log_start_offset=start, aborted_transactions=[] if isolation_level == 1 else None,
                records=_EMPTY)
            answers[(topic, partition)] = pd
        return pd

    def forget_topic(self, topic: str) -> None:
        for answers in self.by_isolation:
            for key in [k for k in answers if k[0] == topic]:
                del answers[key]


def caught_up(st: Any, wanted: list, isolation_level: int = 0) -> bool:
    """Whether every wanted partition (as for :func:`read_partitions`) exists, passes its
    leader epoch check and is fetched at its high watermark (read_committed: its last
    stable offset): nothing to read yet."""
    committed = isolation_level == 1
    log_offsets = st.broker.stable_offsets if committed else st.broker.log_offsets
    end = 2 if committed else 1
    for topic, parts in wanted:
        for partition, offset, _part_max, cle in parts:
            if cle >= 0 and cle != st.leader_epoch(topic, partition):
                return False
            try:
                if log_offsets(topic, partition)[end] != offset:
                    return False
            except PylogError:
                return False
    return True


def read_partitions(st: Any, wanted: list, max_bytes: int, isolation_level: int,
                    session: Any = None) -> tuple[list, int, bool]:
    """Read every wanted partition: ``wanted`` is ``[(topic, [(partition, fetch_offset,
    partition_max_bytes, current_leader_epoch), ...]), ...]``.

    ``max_bytes`` bounds the records of the whole response: the first partition with
    records gets at least its first batch (KIP-74: progress even if that batch is larger
    than ``max_bytes`` or its partition's limit), each later one only what still fits.
    With an incremental fetch ``session``, a caught-up partition whose high watermark and
    log start offset the fetcher already knows is left out (it has nothing to tell).

    Returns ``(responses, total_bytes, any_error)`` where responses are FetchResponse
    topic entries whose records are FileRegions.
    """
    cached = session.partitions if session is not None else None
    answer_caught_up = st.caught_up_answers.get
    broker = st.broker
    committed = isolation_level == 1
    log_offsets = broker.stable_offsets if committed else broker.log_offsets
    R = m.FetchResponse
    PD = R.PartitionData
    AT = R.AbortedTransaction
    TR = R.FetchableTopicResponse
    responses = []
    total = 0
    any_error = False
    for topic, parts in wanted:
        out = []
        for partition, offset, part_max, cle in parts:
            if cle >= 0:
                epoch = st.leader_epoch(topic, partition)
                code = (_UNKNOWN_TOPIC_OR_PARTITION if epoch is None else
                        _FENCED_LEADER_EPOCH if cle < epoch else
                        _UNKNOWN_LEADER_EPOCH if cle > epoch else 0)
                if code:
                    out.append(PD(partition_index=partition, error_code=code, high_watermark=-1,
                                  last_stable_offset=-1, log_start_offset=-1, records=_EMPTY))
                    any_error = True
                    continue
            # A caught-up partition (the usual long poll) has nothing to read: answer
            # from its offsets alone, without opening a read of the log.
            try:
                if committed:
                    start, hw, lso = log_offsets(topic, partition)
                else:
                    (start, hw), lso = log_offsets(topic, partition), None
            except PylogError:
                start, hw, lso = -1, None, None     # the fetch below reports the error
            if offset == (hw if lso is None else lso):
                if cached is not None:
                    cp = cached.get((topic, partition))
                    if cp is not None and cp.high_watermark == hw and cp.local_log_start_offset == start:
                        continue
                out.append(answer_caught_up(isolation_level, topic, partition, start, hw, lso))
                continue
            budget = max_bytes - total
            limit = part_max if part_max < budget else budget
            # The response is full: still report the partition's offsets, with no records.
            res = broker.fetch(topic, partition, offset, limit if limit > 0 else 0,
                               isolation_level=isolation_level)
            if res.error_code:
                # As Kafka answers a partition its log read failed for: no offsets, and
                # (OFFSET_OUT_OF_RANGE) a null aborted-transactions list.
                out.append(PD(partition_index=partition, error_code=res.error_code,
                              high_watermark=-1, last_stable_offset=-1, log_start_offset=-1,
                              aborted_transactions=None if res.error_code == 1 else [], records=_EMPTY))
                any_error = True
                continue
            read = res.records
            records: Any = _EMPTY
            if read is not None:
                size = read.size
                # KIP-74: the first partition with data may return one batch over the
                # budget; later ones only what fits.
                if size and limit > 0 and (size <= limit or total == 0):
                    if connection.COPY_TO_LOOPBACK:
                        records = FileRegion(read.file, read.position, size, read.records)
                    else:
                        records = FileRegion(read.file, read.position, size)
                        read.release()
                    total += size
                else:
                    read.release()
            aborted = res.aborted_transactions
            if aborted is not None and records is not _EMPTY:
                aborted = [AT(producer_id=pid, first_offset=first) for pid, first in aborted]
            elif aborted is not None:
                aborted = []
            out.append(PD(partition_index=partition, error_code=0, high_watermark=res.high_watermark,
                          last_stable_offset=res.last_stable_offset, log_start_offset=res.log_start_offset,
                          aborted_transactions=aborted, records=records))
        if out or cached is None:
            responses.append(TR(topic=topic, partitions=out))
    return responses, total, any_error


class _Waiter:
    __slots__ = ("future", "keys", "context", "wanted", "max_bytes", "isolation", "min_bytes", "timer",
                 "touched", "conn")

    def __init__(self, future: Any, context: Any, max_bytes: int, isolation: int, min_bytes: int,
                 conn: Any) -> None:
        self.future = future
        self.context = context
        #: The connection waiting for the answer (None: it gets it through the future).
        self.conn = conn
        #: Partitions appended to during the wait, when only those can have news (see
        #: the module docstring); None: every wake reads every partition.
        self.touched: list | None = None
        self.wanted = wanted = context.wanted
        self.keys = [(topic, p[0]) for topic, parts in wanted for p in parts]
        self.max_bytes = max_bytes
        self.isolation = isolation
        self.min_bytes = min_bytes
        self.timer: Any = None


class FetchWaiters:
    """Fetch requests waiting for ``min_bytes`` (see the module docstring)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.by_partition: dict[tuple[str, int], set[_Waiter]] = {}
        #: Appends seen so far, counted by :meth:`count_append` in the appending thread.
        #: A fetch reads it before it looks at its partitions and :meth:`wait` compares
        #: it after registering: an append that ran in another thread in between (the
        #: server appends off the loop when an append may fsync) was not seen by the
        #: fetch and found no waiter to wake, so the waiter looks again itself.
        self.appends = 0

    def __len__(self) -> int:
        return len({w for ws in self.by_partition.values() for w in ws})

    def count_append(self) -> None:
        """Count an append (any thread), before looking for its waiters (see ``appends``)."""
        self.appends += 1

    def wait(self, context: Any, max_bytes: int, isolation: int, min_bytes: int, max_wait_ms: int,
             all_caught_up: bool = False, appends_seen: int | None = None, conn: Any = None) -> Any:
        """A future of the answer to the fetch of ``context`` (a
        :class:`~pylog.server.fetch_session.FetchContext`: what to read, and how the
        answer is built), once ``min_bytes`` are there or ``max_wait_ms`` passed.
        ``all_caught_up``: :func:`caught_up` was true for its partitions.
        ``appends_seen``: ``appends`` before the fetch looked at its partitions; if it
        moved since, the partitions are read again now that the waiter is registered.
        ``conn``: the connection the fetch came on; when given, the answer is sent by
        whatever completes the wait, at once (:meth:`Connection.answer_now`)."""
        loop = self.state.loop
        fut = loop.create_future()
        w = _Waiter(fut, context, max_bytes, isolation, min_bytes, conn)
        if all_caught_up and context.session is not None:
            w.touched = None if appends_seen is not None and appends_seen != self.appends else []
        for key in w.keys:
            self.by_partition.setdefault(key, set()).add(w)
        w.timer = loop.call_later(max_wait_ms / 1000.0, self._expire, w)
        fut.add_done_callback(lambda _f: self._forget(w))
        if appends_seen is not None and appends_seen != self.appends:
            responses, total, error = read_partitions(self.state, w.wanted, w.max_bytes, w.isolation,
                                                      w.context.session)
            if total >= w.min_bytes or error:
                self._answer(w, responses)
        return fut

    def _forget(self, w: _Waiter) -> None:
        if w.timer is not None:
            w.timer.cancel()
            w.timer = None
        for key in w.keys:
            s = self.by_partition.get(key)
            if s is not None:
                s.discard(w)
                if not s:
                    del self.by_partition[key]

    def _answer(self, w: _Waiter, responses: list) -> None:
        fut = w.future
        if not fut.done():
            fut.set_result(w.context.respond(responses))
            if w.conn is not None:
                # Unregistered now, not by the future's callback on the loop's next turn:
                # the client may have the answer, and ask again, before that.
                self._forget(w)
                w.conn.answer_now(fut)

    def _expire(self, w: _Waiter) -> None:
        w.timer = None
        if not w.future.done():
            responses, _total, _error = read_partitions(self.state, w.wanted, w.max_bytes, w.isolation,
                                                        w.context.session)
            self._answer(w, responses)

    def on_append(self, topic: str, partition: int, high_watermark: int) -> None:
        waiters = self.by_partition.get((topic, partition))
        if not waiters:
            return
        key = (topic, partition)
        for w in list(waiters):
            if w.future.done():
                continue
            wanted = w.wanted
            touched = w.touched
            if touched is not None:
                if key not in touched:
                    touched.append(key)
                wanted = w.context.session.wanted(touched)
            responses, total, error = read_partitions(self.state, wanted, w.max_bytes, w.isolation,
                                                      w.context.session)
            if total >= w.min_bytes or error:
                self._answer(w, responses)

    def on_topic_change(self, topic: str) -> None:
        """A topic was created, deleted or grown: answer its waiters now."""
        for (t, _p), waiters in list(self.by_partition.items()):
            if t == topic:
                for w in list(waiters):
                    self._expire(w)

    def cancel_all(self) -> None:
        """Answer every waiter now (shutdown)."""
        for waiters in list(self.by_partition.values()):
            for w in list(waiters):
                self._expire(w)
