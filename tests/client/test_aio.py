"""asyncio producer and consumer."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pylog import _core
from pylog.client.aio import AIOProducer
from pylog.errors import RecordTypeError, RequestTimedOutError, UnknownTopicOrPartitionError
from tests.client.helpers import fetch_partition


def test_await_send_and_async_iteration(client):
    client.create_topic("t", 2)

    async def main():
        async with client.aio_producer(linger_ms=5) as p:
            meta = await p.send("t", b"first", key=b"k")
            assert meta.topic == "t" and meta.offset == 0
            consumer = client.aio_consumer("t", group_id="g", auto_offset_reset="earliest")
            got = []
            ready = asyncio.Event()

            async def consume():
                async for record in consumer:
                    got.append(record.value)
                    ready.set()
                    if len(got) == 21:
                        return

            task = asyncio.create_task(consume())
            await asyncio.wait_for(ready.wait(), 10)           # joined and read the first record
            metas = [await p.send("t", b"%d" % i, key=b"k") for i in range(10)]
            assert [m.offset for m in metas] == list(range(1, 11))
            fut = p.send_batch("t", [b"b%d" % i for i in range(10)], keys=[b"k"] * 10)
            offsets = await fut
            assert list(offsets) == list(range(11, 21))
            await asyncio.wait_for(task, 10)
            assert got == [b"first"] + [b"%d" % i for i in range(10)] + [b"b%d" % i for i in range(10)]
            await consumer.commit()
            assert (await consumer.committed(("t", metas[0].partition))).offset == 21
            assert await consumer.getmany(timeout_ms=10) == []
            await consumer.close()

    asyncio.run(main())


def test_async_errors_and_getmany_wakes_on_append(client):
    client.create_topic("t", 1)

    async def main():
        # (Over the network a missing topic is waited for up to max_block_ms.)
        p = client.aio_producer(linger_ms=0, max_block_ms=300)
        with pytest.raises(UnknownTopicOrPartitionError):
            await p.send("nope", b"x")       # (looked up off the loop: the error comes with the await)
        with pytest.raises(RecordTypeError):
            await p.send_and_wait("t", "text")
        c = client.aio_consumer(auto_offset_reset="earliest")
        c.assign([("t", 0)])
        loop = asyncio.get_running_loop()
        waiter = asyncio.create_task(c.getmany(timeout_ms=20_000))
        await asyncio.sleep(0)
        loop.call_soon(p.send, "t", b"hello")
        records = await asyncio.wait_for(waiter, 20)
        assert [r.value for r in records] == [b"hello"]
        await p.flush()
        await p.close()
        await c.close()

    asyncio.run(main())


class GatedTransport:
    """Delegates to a transport; produce waits until ``gate`` is set (a slow sender)."""

    def __init__(self, transport):
        self._t = transport
        self.gate = threading.Event()

    def __getattr__(self, name):
        return getattr(self._t, name)

    def produce(self, work, *, acks):
        self.gate.wait(30)
        return self._t.produce(work, acks=acks)


def test_send_awaits_buffer_memory_without_blocking_the_loop(client):
    client.create_topic("t", 1)
    gated = GatedTransport(client.transport)

    async def main():
        p = AIOProducer(gated, buffer_memory=4096, batch_size=512, linger_ms=0, max_block_ms=10_000)
        loop = asyncio.get_running_loop()
        # Opened only by a loop callback: were send blocking the loop while the buffer is
        # full, this could not run, and the sends would time out.
        loop.call_later(0.05, gated.gate.set)
        handles = [p.send("t", b"%04d" % i + b"." * 200, partition=0) for i in range(100)]
        assert any(isinstance(h, asyncio.Future) for h in handles)   # some wait in the backlog
        metas = [await h for h in handles]
        assert [m.offset for m in metas] == list(range(100))          # in send order
        await p.flush()
        records = fetch_partition(client, "t", 0, 0, 1 << 20).records
        values = [r.value[:4] for b in _core.iter_batches(records.records) for r in b]
        assert values == [b"%04d" % i for i in range(100)]
        await p.close()

    asyncio.run(main())


def test_a_send_waiting_for_memory_longer_than_max_block_ms_fails_alone(client):
    client.create_topic("t", 1)
    gated = GatedTransport(client.transport)

    async def main():
        p = AIOProducer(gated, buffer_memory=2048, batch_size=512, linger_ms=0, max_block_ms=200)
        first = [p.send("t", b"x" * 300, partition=0) for _ in range(8)]
        late = first[-1]
        assert isinstance(late, asyncio.Future)
        with pytest.raises(RequestTimedOutError, match="max_block_ms=200"):
            await late
        gated.gate.set()
        # What was queued before it is appended; the producer goes on.
        sent = [h for h in first if not isinstance(h, asyncio.Future) or not h.done() or not h.exception()]
        for h in sent:
            await h
        meta = await p.send_and_wait("t", b"after", partition=0)
        assert meta.offset == len(sent)
        await p.close()

    asyncio.run(main())


def test_async_poison_pill_goes_to_the_dead_letter_topic_from_a_worker_thread(client):
    client.create_topic("t", 1)
    with client.producer() as p:
        for v in (b"1", b"bad", b"3"):
            p.send("t", v, partition=0)

    async def main():
        c = client.aio_consumer(auto_offset_reset="earliest", value_deserializer=int,
                                on_deserialization_error="dead_letter", dead_letter_topic="t.dlq")
        c.assign([("t", 0)])
        got = []
        while len(got) < 2:
            got += await c.getmany(timeout_ms=5000)
        assert [r.value for r in got] == [1, 3]
        dlq = client.aio_consumer(auto_offset_reset="earliest")
        dlq.assign([("t.dlq", 0)])
        dead = []
        while not dead:
            dead += await dlq.getmany(timeout_ms=5000)
        assert [r.value for r in dead] == [b"bad"]
        assert dict(dead[0].headers)["pylog.dlq.original.offset"] == b"1"
        await c.close()
        await dlq.close()

    asyncio.run(main())
