"""asyncio flavours of the producer and consumer, over any :class:`~pylog.client.transport.Transport`.

No call on the event loop's thread waits on the network: what needs a round trip is
either sent and awaited (its answer completes a future on the transport's I/O thread,
which wakes the loop through ``loop.call_soon_threadsafe``) or run in a worker thread.

:class:`AIOProducer` wraps :class:`~pylog.client.producer.Producer`: ``send`` queues the
record at once (the per-record path is the same C code) and returns an awaitable handle,
so ``await producer.send(...)`` gives the :class:`~pylog.RecordMetadata`.  When the
record cannot be queued without waiting, it goes to the producer's backlog instead and
``send`` returns an asyncio future: when ``buffer_memory`` is full (it waits until the
sender has made room, for up to ``max_block_ms`` from its ``send``), and for the first
record to a topic not sent to before (its metadata, Metadata + DescribeConfigs, is
looked up in a worker thread; a topic that does not exist fails that record's future,
over the network once ``max_block_ms`` passed without it appearing).
Every later ``send`` queues behind a backlogged record, so records keep their send
order.  Awaiting what ``send`` returned gives its RecordMetadata or the error as usual;
bad input (a wrong type, a record too large) raises from ``send`` itself unless the
record went to the backlog, where its future carries the error.  Opening the producer
makes no request (its sender gets the producer id).  ``flush``, ``close``,
``partitions_for`` and a transactional producer's calls are coroutines running their
waits in a worker thread; records still in the backlog when the transaction aborts fail
with TransactionAbortedError.  ``send_batch`` goes the same way: a call queues at once,
or (buffer memory short for the whole call, or a topic not sent to before) waits in the
backlog as a whole, in order with ``send``; a call larger than ``buffer_memory`` itself,
which the synchronous producer feeds in as room comes, queues its records beyond
``buffer_memory`` on the loop instead of waiting (by at most its own size, which the
caller holds anyway).

:class:`AIOConsumer` wraps :class:`~pylog.client.consumer.Consumer`: ``async for record in
consumer``, ``await consumer.getmany()`` and ``await consumer.getmany_batches()`` (zero-copy
batch views) run poll rounds that never wait on the network
(:meth:`Consumer._poll_nowait <pylog.client.consumer.Consumer._poll_nowait>`): fetches go
out as prefetches and only answers already there are taken; position lookups (OffsetFetch,
ListOffsets) and the group protocol (JoinGroup, SyncGroup; the commit before revoking
partitions is sent and the next JoinGroup waits for it) advance as their answers come;
heartbeats run on the consumer's heartbeat thread.  Between rounds the consumer sleeps on an
:class:`asyncio.Event` that the transport's data and wake listeners set when one of its
partitions gets data, a lookup or group answer comes, or its group changes state (and
every 0.5 s at most, for timers).  ``commit`` sends the OffsetCommit and awaits its answer
(commits are sent, and answered, in call order); ``position`` awaits a lookup the same
way; ``committed``, ``seek_to_beginning``/``seek_to_end``, ``offsets_for_times``,
``beginning_offsets``, ``end_offsets``, ``lag``, ``partitions_for_topic`` and ``topics``
are coroutines whose round trips run in a worker thread; ``unsubscribe`` awaits its
commit and sends the LeaveGroup without waiting for it; ``close(timeout=...)`` runs the
bounded :meth:`Consumer.close <pylog.client.consumer.Consumer.close>` in a worker thread.
``assign`` checks partitions against the metadata the client already has (a topic it has
none of is looked up in the background, not waited for).  The synchronous consumer's
other methods reach the AIOConsumer only when they never wait (``seek``, ``pause``,
``resume``, ``assignment``, ``subscribe``, ...); ``poll`` and ``poll_batches`` do not.
With ``on_deserialization_error="dead_letter"`` a poisoned record is produced to the
dead-letter topic from a worker thread.  A rebalance listener's callbacks run on the
loop, as the application wrote them.

Both must be used from one event loop.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import threading
import time
from typing import Any, AsyncIterator

from pylog.client.consumer import _STABLE, Consumer, _tp
from pylog.client.producer import Producer
from pylog.errors import (IllegalStateError, InvalidConfigError, InvalidRequestError, PylogError,
                          RequestTimedOutError, TransactionAbortedError, UnknownTopicOrPartitionError)

__all__ = ["AIOProducer", "AIOConsumer"]

_log = logging.getLogger("pylog.client.aio")

# The longest an idle consumer sleeps before re-checking heartbeats and timers by itself.
_RECHECK_S = 0.5
# ... and ``position`` before asking again for a lookup that failed (its backoff).
_LOOKUP_RECHECK_S = 0.1
# How often a coroutine asks again for the consumer's lock another thread holds.
_LOCK_RETRY_S = 0.005
#: The synchronous consumer's methods AIOConsumer passes through: none waits on the network.
_PASSED = frozenset({"seek", "pause", "resume", "paused", "assignment", "subscribe", "subscription",
                     "group_metadata", "member_id", "generation", "wakeup", "enforce_rebalance",
                     "rebalance_in_progress"})


class _BufferFull(Exception):
    """Raised instead of waiting for buffer memory inside AIOProducer.send (never seen by users)."""

    def __init__(self, nbytes: int) -> None:
        super().__init__(nbytes)
        self.nbytes = nbytes


class _NeedsMetadata(Exception):
    """Raised instead of looking a topic up inside AIOProducer.send (never seen by users)."""

    def __init__(self, topic: str) -> None:
        super().__init__(topic)
        self.topic = topic


class _LoopProducer(Producer):
    """A Producer whose ``send`` on the event loop's thread raises _BufferFull where it
    would wait for buffer memory, and _NeedsMetadata where it would look a topic up (both
    before queueing anything), so that AIOProducer can wait without blocking the loop.
    send_batch, and calls from other threads, wait as usual."""

    _loop_thread: int | None = None

    def __init__(self, transport, **config: Any) -> None:
        super().__init__(transport, **config)
        # topic -> its metadata, looked up in a worker thread for the next send to it.
        self._looked_up: dict[str, tuple[int, int]] = {}

    def _on_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _wait_for_memory(self, nbytes: int) -> None:
        if self._on_loop():
            raise _BufferFull(nbytes)
        super()._wait_for_memory(nbytes)

    def _wait_for_memory_streaming(self, nbytes: int) -> bool:
        # A send_batch call larger than buffer_memory, part of it queued: on the loop it
        # cannot wait, and raising would leave that part sent; "no room came" makes the
        # call queue the rest beyond buffer_memory.
        if self._on_loop():
            return False
        return super()._wait_for_memory_streaming(nbytes)

    def _topic_metadata(self, topic: str, wait: bool = True) -> tuple[int, int]:
        looked = self._looked_up.pop(topic, None)
        if looked is not None:
            return looked
        if self._on_loop():
            raise _NeedsMetadata(topic)
        return super()._topic_metadata(topic, wait)

    def _look_up(self, topic: str) -> None:
        """(A worker thread.)  The metadata of ``topic`` for the next send on the loop."""
        self._looked_up[topic] = super()._topic_metadata(topic)


class AIOProducer:
    """An asyncio producer over a transport; settings as
    :class:`~pylog.client.producer.Producer`.  Usually made with ``client.aio_producer()``.

    ``send`` / ``send_batch`` return awaitables; ``flush``, ``close`` and
    ``send_and_wait`` are coroutines.  Use ``async with``.
    """

    def __init__(self, transport, **config: Any) -> None:
        self._producer = _LoopProducer(transport, **config)
        self._send = self._producer.send             # the C send path, unchanged
        # (send or send_batch, its arguments, deadline, future), in call order.
        self._backlog: collections.deque = collections.deque()
        self._drainer: asyncio.Task | None = None

    def send(self, topic: str, value=None, key=None, headers=None, partition=None, timestamp_ms=None):
        """Queue a record; returns an awaitable giving its RecordMetadata (the producer's
        handle, or an asyncio future while the record waits in the backlog for buffer
        memory or for its topic's metadata).  Bad input raises here, as with the
        synchronous producer, unless the record went to the backlog (its future has the
        error then)."""
        return self._queue(self._send, (topic, value, key, headers, partition, timestamp_ms))

    def _queue(self, send, args: tuple):
        """``send(*args)`` now if nothing waits before it and it need not wait, else a
        future of its outcome, the call waiting in the backlog."""
        if not self._backlog:
            self._producer._loop_thread = threading.get_ident()
            try:
                return send(*args)
            except (_BufferFull, _NeedsMetadata):
                pass
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._backlog.append((send, args, time.monotonic() + self._producer.max_block_ms / 1000, fut))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain_backlog())
        return fut

    async def _drain_backlog(self) -> None:
        """Send the backlog in order, waiting (in a worker thread) for buffer memory and
        for the metadata of a topic not sent to before."""
        backlog = self._backlog
        try:
            while backlog:
                send, args, deadline, fut = backlog[0]
                if fut.done():          # cancelled, or its transaction aborted
                    backlog.popleft()
                    continue
                try:
                    handle = send(*args)
                except _BufferFull as full:
                    remaining = deadline - time.monotonic()
                    if remaining > 0:
                        await asyncio.to_thread(self._producer._wait_room, full.nbytes, remaining)
                        continue
                    backlog.popleft()
                    fut.set_exception(self._producer._buffer_full_error())
                    continue
                except _NeedsMetadata as need:
                    try:
                        await asyncio.to_thread(self._producer._look_up, need.topic)
                    except BaseException as exc:  # noqa: BLE001 - handed to the record's future
                        backlog.popleft()
                        fut.set_exception(exc)
                    continue
                except BaseException as exc:  # noqa: BLE001 - handed to the record's future
                    backlog.popleft()
                    fut.set_exception(exc)
                    continue
                backlog.popleft()
                asyncio.ensure_future(handle).add_done_callback(functools.partial(_settle, fut))
        finally:
            self._drainer = None

    def send_batch(self, topic, values, keys=None, partition=None, timestamp_ms=None):
        """As the synchronous producer's, without waiting on the loop: returns an
        awaitable giving the records' offsets (the producer's handle, or an asyncio
        future while the call waits in the backlog, see the module docstring)."""
        return self._queue(self._producer.send_batch, (topic, values, keys, partition, timestamp_ms))

    async def _backlog_sent(self) -> None:
        while self._drainer is not None:
            await asyncio.shield(self._drainer)

    @property
    def producer(self) -> Producer:
        """The underlying synchronous producer."""
        return self._producer

    async def send_and_wait(self, topic: str, value=None, key=None, headers=None, partition=None,
                            timestamp_ms=None):
        """Send one record and return its RecordMetadata once appended."""
        return await self.send(topic, value, key, headers, partition, timestamp_ms)

    async def flush(self, timeout: float | None = None) -> None:
        """Send everything queued (the backlog first) and wait for it (in a worker thread)."""
        await self._backlog_sent()
        await asyncio.to_thread(self._producer.flush, timeout)

    async def close(self, timeout: float | None = None) -> None:
        await self._backlog_sent()
        await asyncio.to_thread(self._producer.close, timeout)

    # Transactions (a producer made with transactional_id): the round trips run in a
    # worker thread; records still in the backlog belong to the transaction.

    async def init_transactions(self) -> None:
        await asyncio.to_thread(self._producer.init_transactions)

    async def begin_transaction(self) -> None:
        self._producer.begin_transaction()

    async def send_offsets_to_transaction(self, offsets: Any, group_metadata: Any) -> None:
        await asyncio.to_thread(self._producer.send_offsets_to_transaction, offsets, group_metadata)

    async def commit_transaction(self, timeout: float | None = None) -> None:
        await self._backlog_sent()
        await asyncio.to_thread(self._producer.commit_transaction, timeout)

    async def abort_transaction(self, timeout: float | None = None) -> None:
        for _send, _args, _deadline, fut in self._backlog:     # (the drainer drops them)
            if not fut.done():
                fut.set_exception(TransactionAbortedError("the transaction was aborted before the record was sent"))
        await self._backlog_sent()
        await asyncio.to_thread(self._producer.abort_transaction, timeout)

    stop = close

    async def start(self) -> None:
        """Nothing to do (the producer is ready when made); for aiokafka-style code."""

    async def partitions_for(self, topic: str) -> list[int]:
        """The topic's partition ids (its metadata looked up in a worker thread if new)."""
        return await asyncio.to_thread(self._producer.partitions_for, topic)

    async def __aenter__(self) -> "AIOProducer":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def _settle(fut: asyncio.Future, done: asyncio.Future) -> None:
    """Hand a sent record's outcome to the future send returned for it."""
    if fut.cancelled():
        return
    exc = done.exception()
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(done.result())


class AIOConsumer:
    """An asyncio consumer over a transport; settings as
    :class:`~pylog.client.consumer.Consumer`.  Usually made with ``client.aio_consumer()``.

    ``getmany`` / ``getone`` / ``async for`` read records, ``getmany_batches`` zero-copy
    batch views (as ``Consumer.poll_batches``).  What may need a round trip is a
    coroutine (``commit``, ``committed``, ``position``, ``seek_to_beginning``,
    ``seek_to_end``, ``offsets_for_times``, ``beginning_offsets``, ``end_offsets``,
    ``lag``, ``partitions_for_topic``, ``topics``, ``unsubscribe``, ``close``); the
    synchronous consumer's methods that never wait (``assign``, ``seek``, ``pause``,
    ``resume``, ``paused``, ``assignment``, ``subscribe``, ``subscription``, ...) are
    passed through.  The synchronous ``poll`` / ``poll_batches`` are not (they wait):
    ``consumer.consumer`` is the synchronous consumer, for use from another thread.
    ``heartbeat_thread=False`` is refused (the heartbeat is a round trip).
    """

    def __init__(self, transport, *topics: str, **config: Any) -> None:
        if config.get("heartbeat_thread", True) is False:
            raise InvalidConfigError("an AIOConsumer heartbeats from its thread: heartbeat_thread=False would "
                                     "make each getmany wait for a Heartbeat round trip on the event loop")
        self._transport = transport
        self._consumer = Consumer(transport, *topics, **config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._scheduled = False
        transport.add_data_listener(self._on_append)
        transport.add_wake_listener(self._on_wake)

    @property
    def consumer(self) -> Consumer:
        """The underlying synchronous consumer."""
        return self._consumer

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._consumer, name)
        if name in _PASSED or name.startswith("_") or not callable(value):
            return value
        raise AttributeError(f"AIOConsumer.{name}: Consumer.{name} would wait on the network on the event loop; "
                             f"call it on .consumer from another thread")

    # -- wake-ups from other threads

    def _set_event(self) -> None:
        self._scheduled = False
        if self._event is not None:
            self._event.set()

    def _wake(self) -> None:
        loop = self._loop
        if loop is None or self._scheduled:
            return
        self._scheduled = True
        try:
            loop.call_soon_threadsafe(self._set_event)
        except RuntimeError:
            self._scheduled = False   # the loop is closed

    def _on_append(self, topic: str, partition: int, hw: int) -> None:
        if (topic, partition) in self._consumer._assignment:
            self._wake()

    def _on_wake(self) -> None:
        self._wake()

    def _bind(self) -> asyncio.Event:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
        assert self._event is not None
        return self._event

    async def _acquire(self) -> None:
        """Take the consumer's lock without blocking the loop (a close in a worker thread
        holds it while it waits for its commit and LeaveGroup); release it on the loop."""
        lock = self._consumer._lock
        while not lock.acquire(blocking=False):
            await asyncio.sleep(_LOCK_RETRY_S)

    async def _sleep(self, event: asyncio.Event, seconds: float) -> None:
        """Until the transport's listeners set ``event``, or ``seconds`` passed."""
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # -- reading

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> list:
        """Records (at most ``max_records``), waiting up to ``timeout_ms`` without blocking
        the loop.  Raises what :meth:`Consumer.poll` raises."""
        c = self._consumer
        if c._held_idx < len(c._held):
            # Records __anext__ took and has not yielded: they come first.
            n = max_records or len(c._held)
            out = c._held[c._held_idx:c._held_idx + n]
            c._held_idx += len(out)
            return out
        return await self._wait_for(False, timeout_ms, max_records)

    async def getmany_batches(self, timeout_ms: int = 0, max_records: int | None = None) -> list:
        """Fetched batches as zero-copy views (:class:`~pylog.client.consumer.ConsumerBatch`
        items, raw bytes, no deserializers), at most ``max_records`` records, waiting up to
        ``timeout_ms`` without blocking the loop: the asyncio face of
        :meth:`Consumer.poll_batches <pylog.client.consumer.Consumer.poll_batches>`, and
        it raises what that raises."""
        return await self._wait_for(True, timeout_ms, max_records)

    async def _wait_for(self, batches: bool, timeout_ms: int, max_records: int | None) -> list:
        """Poll rounds that never wait on the network (``Consumer._poll_nowait``) until
        one returns something or ``timeout_ms`` passed, sleeping on the event the
        transport's listeners set in between."""
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, (int, float)) or timeout_ms < 0:
            raise InvalidRequestError(f"timeout_ms must be a number >= 0, got {timeout_ms!r}")
        event = self._bind()
        poll = self._consumer._poll_nowait
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            event.clear()
            records = poll(max_records, batches)
            if records:
                return records
            if self._consumer._dead_letter_due:
                await asyncio.to_thread(self._consumer._settle_poison)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            pending = self._pending_group_response()
            if pending is not None:
                pending.add_done_callback(lambda _p: self._wake())
            await self._sleep(event, min(remaining, _RECHECK_S))

    def _pending_group_response(self):
        c = self._consumer
        for p in (c._join_pending, c._sync_pending, c._join_after):
            if p is not None and not p.done():
                return p
        return None

    async def getone(self):
        """The next record, waiting as long as it takes."""
        while True:
            records = await self.getmany(timeout_ms=1000, max_records=1)
            if records:
                return records[0]

    def __aiter__(self) -> AsyncIterator:
        return self

    async def __anext__(self):
        if self._consumer.closed:
            raise StopAsyncIteration
        c = self._consumer
        while True:
            rec = c._next_held()
            if rec is not None:
                return rec
            try:
                batch = await self.getmany(timeout_ms=1000)
            except IllegalStateError:
                if c.closed:            # closed by another task meanwhile
                    raise StopAsyncIteration from None
                raise
            if c.closed:
                raise StopAsyncIteration
            c._held, c._held_idx = batch, 0

    # -- partitions

    def assign(self, partitions: Any) -> None:
        """As :meth:`Consumer.assign`, without waiting: partitions are checked against
        the metadata this client has; a topic it has none of yet is looked up in the
        background and not checked (as Kafka's ``assign``, which checks nothing: a
        partition that does not exist is never read)."""
        c = self._consumer
        tps = [_tp(p) for p in partitions]
        counts = self._transport.partition_counts({tp.topic for tp in tps}, wait=False)
        if counts is not None:
            for tp in tps:
                if not 0 <= tp.partition < counts.get(tp.topic, 0):
                    raise UnknownTopicOrPartitionError(f"{tp.topic} has no partition {tp.partition}")
        c._assign(tps)

    async def unsubscribe(self) -> None:
        """As :meth:`Consumer.unsubscribe`: the commit before revoking is awaited, the
        LeaveGroup is sent without waiting for its answer."""
        c = self._consumer
        if c._subscription is not None and c.enable_auto_commit and c._assignment and c._state == _STABLE:
            try:
                await self.commit()
            except PylogError as exc:
                _log.warning("group %s: commit before unsubscribing failed: %s", c.group_id, exc)
        await self._acquire()
        try:
            c._nonblocking = True
            try:
                c.unsubscribe()
            finally:
                c._nonblocking = False
        finally:
            c._lock.release()

    # -- offsets

    async def commit(self, offsets=None) -> None:
        """Commit offsets (default: the positions) and wait, without blocking the loop,
        for them to be stored.  Commits are sent in call order.  Raises as
        :meth:`Consumer.commit`."""
        c = self._consumer
        await self._acquire()
        try:
            sent = c._commit_nowait(offsets)
        finally:
            c._lock.release()
        if sent is not None:
            c._commit_result(await asyncio.wrap_future(sent))

    async def committed(self, partitions: Any) -> Any:
        """As :meth:`Consumer.committed` (OffsetFetch, in a worker thread)."""
        return await asyncio.to_thread(self._consumer.committed, partitions)

    async def position(self, partition: Any) -> int:
        """As :meth:`Consumer.position`: a position not known yet is looked up without
        blocking the loop, for up to ``default_api_timeout_ms``."""
        c = self._consumer
        event = self._bind()
        deadline = time.monotonic() + c.default_api_timeout_ms / 1000
        while True:
            event.clear()
            await self._acquire()
            try:
                tp, st = c._state_of(partition)
                if st.position is None:
                    c._resolve_positions([tp])
                if st.position is not None:
                    return st.position
            finally:
                c._lock.release()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RequestTimedOutError(f"the position of {tp.topic}-{tp.partition} could not be looked up "
                                           f"within default_api_timeout_ms={c.default_api_timeout_ms}")
            await self._sleep(event, min(remaining, _LOOKUP_RECHECK_S))

    async def seek_to_beginning(self, *partitions: Any) -> None:
        await self._seek_special(partitions, -2)

    async def seek_to_end(self, *partitions: Any) -> None:
        await self._seek_special(partitions, -1)

    async def _seek_special(self, partitions: tuple, ts: int) -> None:
        c = self._consumer
        states = c._seek_states(partitions)
        results = await asyncio.to_thread(c._transport.list_offsets, [(tp.topic, tp.partition, ts) for tp, _ in states],
                                          isolation_level=c.isolation_level)
        c._seek_to(states, results)

    async def offsets_for_times(self, timestamps: Any) -> dict:
        return await asyncio.to_thread(self._consumer.offsets_for_times, timestamps)

    async def beginning_offsets(self, partitions: Any) -> dict:
        return await asyncio.to_thread(self._consumer.beginning_offsets, partitions)

    async def end_offsets(self, partitions: Any) -> dict:
        return await asyncio.to_thread(self._consumer.end_offsets, partitions)

    async def lag(self, partition: Any) -> int:
        """Records between the position and the high watermark of an assigned partition."""
        position = await self.position(partition)
        tp = _tp(partition)
        return max((await self.end_offsets([tp]))[tp] - position, 0)

    async def partitions_for_topic(self, topic: str) -> set[int]:
        return await asyncio.to_thread(self._consumer.partitions_for_topic, topic)

    async def topics(self) -> set[str]:
        return await asyncio.to_thread(self._consumer.topics)

    # -- life cycle

    async def start(self) -> None:
        """Nothing to do (the consumer is ready when made); for aiokafka-style code."""

    async def close(self, autocommit: bool = True, timeout: float | None = None) -> None:
        """As :meth:`Consumer.close` (in a worker thread), bounded by ``timeout``
        seconds (default 30, Kafka's)."""
        self._transport.remove_data_listener(self._on_append)
        self._transport.remove_wake_listener(self._on_wake)
        await asyncio.to_thread(self._consumer.close, autocommit, timeout)

    stop = close

    async def __aenter__(self) -> "AIOConsumer":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
