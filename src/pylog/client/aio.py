"""asyncio flavours of the producer and consumer, over any :class:`~pylog.client.transport.Transport`.

:class:`AIOProducer` wraps :class:`~pylog.client.producer.Producer`: ``send`` queues the
record at once (the per-record path is the same C code) and returns an awaitable handle,
so ``await producer.send(...)`` gives the :class:`~pylog.RecordMetadata`.
:class:`AIOConsumer` wraps :class:`~pylog.client.consumer.Consumer`: ``async for record in
consumer``, ``await consumer.getmany()`` and ``await consumer.getmany_batches()`` (zero-copy
batch views) never block the event loop; they poll without waiting and sleep on an
:class:`asyncio.Event` that the transport's data and wake listeners set (through
``loop.call_soon_threadsafe``) when one of the consumer's partitions gets data or its
group changes state.

Both must be used from one event loop.  When ``buffer_memory`` is full, ``send`` does not
block the loop: the record waits in the producer's backlog (in send order, and every later
``send`` behind it) until the sender has made room, for up to ``max_block_ms`` from its
``send``; awaiting what ``send`` returned gives its RecordMetadata or the error as usual.
``send_batch`` still waits for room in the calling thread (all of a call that fits
``buffer_memory`` before queuing any; a larger one as it goes).  Opening the producer
makes no request (its sender gets the producer id), but a first ``send`` to a topic
looks the topic up (one round trip over the network).
A transactional producer's calls are coroutines running their round trips in a worker
thread; records still in the backlog when the transaction aborts fail with
TransactionAbortedError.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import threading
import time
from typing import Any, AsyncIterator

from pylog.client.consumer import Consumer
from pylog.client.producer import Producer
from pylog.errors import TransactionAbortedError

__all__ = ["AIOProducer", "AIOConsumer"]

# The longest an idle consumer sleeps before re-checking heartbeats and timers by itself.
_RECHECK_S = 0.5


class _BufferFull(Exception):
    """Raised instead of waiting for buffer memory inside AIOProducer.send (never seen by users)."""

    def __init__(self, nbytes: int) -> None:
        super().__init__(nbytes)
        self.nbytes = nbytes


class _LoopProducer(Producer):
    """A Producer whose ``send`` on the event loop's thread raises _BufferFull where it
    would wait for buffer memory (before queueing anything), so that AIOProducer can wait
    without blocking the loop.  send_batch, and calls from other threads, wait as usual."""

    _loop_thread: int | None = None
    _in_batch = False

    def _wait_for_memory(self, nbytes: int) -> None:
        if not self._in_batch and threading.get_ident() == self._loop_thread:
            raise _BufferFull(nbytes)
        super()._wait_for_memory(nbytes)


class AIOProducer:
    """An asyncio producer over a transport; settings as
    :class:`~pylog.client.producer.Producer`.  Usually made with ``client.aio_producer()``.

    ``send`` / ``send_batch`` return awaitables; ``flush``, ``close`` and
    ``send_and_wait`` are coroutines.  Use ``async with``.
    """

    def __init__(self, transport, **config: Any) -> None:
        self._producer = _LoopProducer(transport, **config)
        self._send = self._producer.send             # the C send path, unchanged
        self._backlog: collections.deque = collections.deque()   # (args, deadline, future)
        self._drainer: asyncio.Task | None = None

    def send(self, topic: str, value=None, key=None, headers=None, partition=None, timestamp_ms=None):
        """Queue a record; returns an awaitable giving its RecordMetadata (the producer's
        handle, or an asyncio future while the record waits for buffer memory).  Bad
        input raises here, as with the synchronous producer."""
        if not self._backlog:
            self._producer._loop_thread = threading.get_ident()
            try:
                return self._send(topic, value, key, headers, partition, timestamp_ms)
            except _BufferFull:
                pass
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._backlog.append(((topic, value, key, headers, partition, timestamp_ms),
                              time.monotonic() + self._producer.max_block_ms / 1000, fut))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain_backlog())
        return fut

    async def _drain_backlog(self) -> None:
        """Send the backlog in order, waiting (in a worker thread) for buffer memory."""
        backlog = self._backlog
        try:
            while backlog:
                args, deadline, fut = backlog[0]
                if fut.done():          # cancelled, or its transaction aborted
                    backlog.popleft()
                    continue
                try:
                    handle = self._send(*args)
                except _BufferFull as full:
                    remaining = deadline - time.monotonic()
                    if remaining > 0:
                        await asyncio.to_thread(self._producer._wait_room, full.nbytes, remaining)
                        continue
                    backlog.popleft()
                    fut.set_exception(self._producer._buffer_full_error())
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
        """As the synchronous producer's (waits for buffer memory in this thread)."""
        p = self._producer
        p._in_batch = True
        try:
            return p.send_batch(topic, values, keys, partition, timestamp_ms)
        finally:
            p._in_batch = False

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
        for _args, _deadline, fut in self._backlog:     # (the drainer drops them)
            if not fut.done():
                fut.set_exception(TransactionAbortedError("the transaction was aborted before the record was sent"))
        await self._backlog_sent()
        await asyncio.to_thread(self._producer.abort_transaction, timeout)

    stop = close

    async def start(self) -> None:
        """Nothing to do (the producer is ready when made); for aiokafka-style code."""

    def partitions_for(self, topic: str) -> list[int]:
        return self._producer.partitions_for(topic)

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
    batch views (as ``Consumer.poll_batches``); ``commit`` is a coroutine; every
    other method of the synchronous consumer (``seek``, ``position``, ``assignment``,
    ``pause``, ``committed``, ...) is available as is: they do not block.
    """

    def __init__(self, transport, *topics: str, **config: Any) -> None:
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
        return getattr(self._consumer, name)

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
        return await self._wait_for(self._consumer.poll, timeout_ms, max_records)

    async def getmany_batches(self, timeout_ms: int = 0, max_records: int | None = None) -> list:
        """Fetched batches as zero-copy views (:class:`~pylog.client.consumer.ConsumerBatch`
        items, raw bytes, no deserializers), at most ``max_records`` records, waiting up to
        ``timeout_ms`` without blocking the loop: the asyncio face of
        :meth:`Consumer.poll_batches <pylog.client.consumer.Consumer.poll_batches>`, and
        it raises what that raises."""
        return await self._wait_for(self._consumer.poll_batches, timeout_ms, max_records)

    async def _wait_for(self, poll, timeout_ms: int, max_records: int | None) -> list:
        """``poll(0, max_records)`` until it returns something or ``timeout_ms`` passed,
        sleeping on the event the transport's listeners set."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
        assert self._event is not None
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            self._event.clear()
            records = poll(0, max_records)
            if records:
                return records
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            pending = self._pending_group_response()
            if pending is not None:
                pending.add_done_callback(lambda _p: self._wake())
            try:
                await asyncio.wait_for(self._event.wait(), min(remaining, _RECHECK_S))
            except asyncio.TimeoutError:
                pass

    def _pending_group_response(self):
        c = self._consumer
        for p in (c._join_pending, c._sync_pending):
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
            batch = await self.getmany(timeout_ms=1000)
            if c.closed:
                raise StopAsyncIteration
            c._held, c._held_idx = batch, 0

    # -- offsets and life cycle

    async def commit(self, offsets=None) -> None:
        """Commit offsets (default: the positions).  Raises as :meth:`Consumer.commit`."""
        self._consumer.commit(offsets)

    async def start(self) -> None:
        """Nothing to do (the consumer is ready when made); for aiokafka-style code."""

    async def close(self, autocommit: bool = True) -> None:
        self._transport.remove_data_listener(self._on_append)
        self._transport.remove_wake_listener(self._on_wake)
        await asyncio.to_thread(self._consumer.close, autocommit)

    stop = close

    async def __aenter__(self) -> "AIOConsumer":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
