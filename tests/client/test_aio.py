"""asyncio producer and consumer."""

from __future__ import annotations

import asyncio

import pytest

from pylog.client.aio import AIOConsumer, AIOProducer
from pylog.errors import RecordTypeError, UnknownTopicOrPartitionError


def test_await_send_and_async_iteration(broker):
    broker.create_topic("t", 2)

    async def main():
        async with AIOProducer(broker, linger_ms=5) as p:
            meta = await p.send("t", b"first", key=b"k")
            assert meta.topic == "t" and meta.offset == 0
            consumer = AIOConsumer(broker, "t", group_id="g", auto_offset_reset="earliest")
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
            assert consumer.committed(("t", metas[0].partition)).offset == 21
            assert await consumer.getmany(timeout_ms=10) == []
            await consumer.close()

    asyncio.run(main())


def test_async_errors_and_getmany_wakes_on_append(broker):
    broker.create_topic("t", 1)

    async def main():
        p = AIOProducer(broker, linger_ms=0)
        with pytest.raises(UnknownTopicOrPartitionError):
            p.send("nope", b"x")
        with pytest.raises(RecordTypeError):
            await p.send_and_wait("t", "text")
        c = AIOConsumer(broker, auto_offset_reset="earliest")
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
