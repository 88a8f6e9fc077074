"""The asyncio twins never block their event loop on the network (#12): a ticker task
measures the longest stall of the loop while one call runs against a broker that stops
answering the requests that call needs (a :class:`RewritingProxy` holding them).

The assertion is on the stall being far below the request timeout (request_timeout_ms
2000, stall under 1 s), not on how long anything takes, so a loaded machine does not
make these flaky: a blocking call stalls the loop for the whole request timeout."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import pylog
from pylog import TopicPartition
from pylog.errors import InvalidRequestError, RequestTimedOutError
from pylog.protocol.apis import ApiKey
from tests.client.helpers import topic_with
from tests.client.kafka.rewriting_proxy import HOLD, RewritingProxy
from tests.server.util import unique

REQUEST_TIMEOUT_MS = 2000
#: A loop that never waits on the network stalls for milliseconds; one that does, for
#: REQUEST_TIMEOUT_MS.
MAX_STALL_S = 1.0


class Hold:
    """The proxy's rewrite: answers of the API keys in ``keys`` are never given."""

    def __init__(self) -> None:
        self.keys: set[int] = set()

    def __call__(self, api_key, version, request, resp):
        return HOLD if api_key in self.keys else None


@pytest.fixture
def hung():
    return Hold()


@pytest.fixture
def client(server_thread, hung):
    px = RewritingProxy(server_thread.address[1], hung)
    c = pylog.connect(px.bootstrap, client_id="aio-stalls", request_timeout_ms=REQUEST_TIMEOUT_MS)
    yield c
    hung.keys.clear()
    c.close()
    px.stop()


async def stall_of(awaitable, *, within: float | None = None):
    """Run ``awaitable`` while a ticker measures the loop's longest stall; returns
    ``(outcome, stall_seconds)``: its result or exception, or None when ``within``
    seconds passed first (it is cancelled then)."""
    worst = 0.0
    stop = False

    async def ticker():
        nonlocal worst
        last = time.monotonic()
        while not stop:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            worst = max(worst, now - last)
            last = now

    t = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    try:
        outcome = await asyncio.wait_for(awaitable, within) if within is not None else await awaitable
    except asyncio.TimeoutError:
        outcome = None
    except Exception as exc:  # noqa: BLE001 - the outcome is what the test looks at
        outcome = exc
    stop = True
    await t
    return outcome, worst


async def read(consumer, n: int) -> list:
    got: list = []
    while len(got) < n:
        got += await consumer.getmany(timeout_ms=5000)
    return got


def filled_topic(client, n: int = 3) -> str:
    return topic_with(client, n, "stall")


def test_getmany_with_a_hung_fetch_keeps_the_loop_running(client, hung):
    topic = filled_topic(client)

    async def main():
        c = client.aio_consumer(group_id=None, auto_offset_reset="earliest")
        c.assign([(topic, 0)])
        assert [r.value for r in await read(c, 3)] == [b"0", b"1", b"2"]
        hung.keys.add(ApiKey.FETCH)
        c.seek((topic, 0), 1)      # no answer read ahead at this offset: a Fetch is needed
        outcome, stall = await stall_of(c.getmany(timeout_ms=300))
        assert outcome == [] and stall < MAX_STALL_S
        outcome, stall = await stall_of(c.getmany_batches(timeout_ms=300))
        assert outcome == [] and stall < MAX_STALL_S
        await c.close(timeout=0)

    asyncio.run(main())


@pytest.mark.parametrize("held", [ApiKey.LIST_OFFSETS, ApiKey.OFFSET_FETCH])
def test_getmany_looking_a_position_up_keeps_the_loop_running(client, hung, held):
    topic = filled_topic(client)

    async def main():
        group = unique("g") if held == ApiKey.OFFSET_FETCH else None
        c = client.aio_consumer(group_id=group, auto_offset_reset="earliest", enable_auto_commit=False)
        c.assign([(topic, 0)])
        hung.keys.add(held)
        outcome, stall = await stall_of(c.getmany(timeout_ms=300))
        assert outcome == [] and stall < MAX_STALL_S
        # The position is not known, and looking it up must not stall the loop either.
        outcome, stall = await stall_of(c.position((topic, 0)), within=0.5)
        assert outcome is None and stall < MAX_STALL_S
        await c.close(timeout=0)

    asyncio.run(main())


def test_commit_to_a_hung_coordinator_keeps_the_loop_running(client, hung):
    topic = filled_topic(client)

    async def main():
        c = client.aio_consumer(group_id=unique("g"), auto_offset_reset="earliest", enable_auto_commit=False)
        c.assign([(topic, 0)])
        await read(c, 3)
        await c.commit()
        assert (await c.committed((topic, 0))).offset == 3
        hung.keys.add(ApiKey.OFFSET_COMMIT)
        c.seek((topic, 0), 1)
        # The loop runs while the commit waits; one that gets no answer raises as the
        # synchronous one does.
        outcome, stall = await stall_of(c.commit())
        assert isinstance(outcome, RequestTimedOutError) and stall < MAX_STALL_S
        await c.close(timeout=0)

    asyncio.run(main())


def test_first_send_to_a_topic_looks_it_up_off_the_loop_and_keeps_send_order(client, hung):
    known = filled_topic(client, 1)
    new = unique("stall-new")
    client.create_topic(new, partitions=1)

    async def main():
        p = client.aio_producer(linger_ms=0)
        await p.send_and_wait(known, b"warm", partition=0)
        hung.keys.add(ApiKey.DESCRIBE_CONFIGS)      # the new topic's max.message.bytes

        async def first_sends():
            return p.send(new, b"a"), p.send(known, b"b", partition=0)

        (first, second), stall = await stall_of(first_sends())
        assert stall < MAX_STALL_S
        # The record behind the one waiting for its topic waits too (send order).
        assert isinstance(second, asyncio.Future) and not second.done()
        outcome, stall = await stall_of(asyncio.shield(first), within=0.5)
        assert outcome is None and stall < MAX_STALL_S and not second.done()
        hung.keys.clear()
        # DescribeConfigs times out: the topic's max.message.bytes falls back to Kafka's default.
        meta_a = await asyncio.wait_for(first, REQUEST_TIMEOUT_MS / 1000 + 20)
        meta_b = await asyncio.wait_for(second, 20)
        assert (meta_a.topic, meta_a.offset) == (new, 0)
        assert (meta_b.topic, meta_b.offset) == (known, 2)   # after "0" and "warm"
        await p.close()

    asyncio.run(main())


def test_send_batch_waits_in_the_backlog_not_on_the_loop(client, hung):
    """A send_batch to a topic not sent to before, and one that finds buffer_memory
    full, go to the backlog (in order with send) instead of waiting on the loop."""
    known = filled_topic(client, 1)
    new = unique("stall-batch")
    client.create_topic(new, partitions=1)

    async def main():
        p = client.aio_producer(linger_ms=0, buffer_memory=64 * 1024)
        await p.send_and_wait(known, b"warm", partition=0)
        hung.keys.add(ApiKey.DESCRIBE_CONFIGS)      # the new topic's max.message.bytes

        async def first_calls():
            return p.send_batch(new, [b"a", b"b"]), p.send(known, b"c", partition=0)

        (first, second), stall = await stall_of(first_calls())
        assert stall < MAX_STALL_S
        assert isinstance(first, asyncio.Future) and not second.done()
        hung.keys.clear()
        assert list(await asyncio.wait_for(first, REQUEST_TIMEOUT_MS / 1000 + 20)) == [0, 1]
        assert (await asyncio.wait_for(second, 20)).offset == 2

        # Produce answers held: the first call's bytes stay buffered, so a second call
        # larger than what is left waits for room in the backlog, and one larger than
        # buffer_memory itself queues beyond it rather than wait on the loop.
        hung.keys.add(ApiKey.PRODUCE)

        async def full_calls():
            a = p.send_batch(new, [b"x" * 1000] * 40)
            b = p.send_batch(new, [b"y" * 1000] * 40)
            return a, b

        (a, b), stall = await stall_of(full_calls())
        assert stall < MAX_STALL_S
        assert isinstance(b, asyncio.Future) and not b.done()
        hung.keys.clear()                           # held requests time out and are retried
        first_offsets = list(await asyncio.wait_for(a, REQUEST_TIMEOUT_MS / 1000 + 30))
        second_offsets = list(await asyncio.wait_for(b, REQUEST_TIMEOUT_MS / 1000 + 30))
        assert first_offsets == list(range(2, 42)) and second_offsets == list(range(42, 82))
        await p.close()

    asyncio.run(main())


def test_a_send_batch_larger_than_buffer_memory_does_not_wait_on_the_loop(client, hung):
    topic = filled_topic(client, 1)

    async def main():
        p = client.aio_producer(linger_ms=0, buffer_memory=64 * 1024, batch_size=16 * 1024)
        await p.send_and_wait(topic, b"warm", partition=0)
        hung.keys.add(ApiKey.PRODUCE)               # nothing is ever acknowledged: no room comes

        async def big_call():
            return p.send_batch(topic, [b"z" * 1000] * 200, partition=0)   # ~200 KB

        handle, stall = await stall_of(big_call())
        assert stall < MAX_STALL_S and not isinstance(handle, asyncio.Future)
        hung.keys.clear()
        offsets = list(await asyncio.wait_for(handle, REQUEST_TIMEOUT_MS / 1000 + 30))
        assert offsets == list(range(2, 202))
        await p.close()

    asyncio.run(main())


def test_close_with_a_dead_coordinator_is_bounded_by_its_timeout(client, hung):
    topic = filled_topic(client)

    async def main():
        c = client.aio_consumer(topic, group_id=unique("g"), auto_offset_reset="earliest",
                                session_timeout_ms=6000, heartbeat_interval_ms=500)
        await read(c, 3)

        async def iterate():            # another task still reading while close runs
            async for _ in c:
                pass

        reader = asyncio.create_task(iterate())
        await asyncio.sleep(0.05)
        hung.keys.update({ApiKey.OFFSET_COMMIT, ApiKey.LEAVE_GROUP, ApiKey.HEARTBEAT})
        t0 = time.monotonic()
        outcome, stall = await stall_of(c.close(timeout=1.0))
        took = time.monotonic() - t0
        assert outcome is None and stall < MAX_STALL_S
        # Not the request timeouts of the commit and the LeaveGroup one after the other.
        assert took < 2 * REQUEST_TIMEOUT_MS / 1000 - 1
        assert c.consumer.closed
        await asyncio.wait_for(reader, 10)          # the iteration ended with the close

    asyncio.run(main())


def test_sync_consumer_close_timeout_bounds_commit_and_leave(client, hung):
    topic = filled_topic(client)
    k = client.consumer(topic, group_id=unique("g"), auto_offset_reset="earliest",
                        session_timeout_ms=6000, heartbeat_interval_ms=500)
    got = []
    for _ in range(40):
        got += k.poll(timeout_ms=500)
        if len(got) >= 3:
            break
    assert len(got) == 3
    hung.keys.update({ApiKey.OFFSET_COMMIT, ApiKey.LEAVE_GROUP, ApiKey.HEARTBEAT})
    t0 = time.monotonic()
    k.close(timeout=0.5)
    assert time.monotonic() - t0 < REQUEST_TIMEOUT_MS / 1000
    assert k.closed
    with pytest.raises(InvalidRequestError):
        client.consumer(group_id=None).close(timeout=-1)


def test_client_close_timeout_bounds_its_consumers_close(client, hung):
    topic = filled_topic(client)
    k = client.consumer(topic, group_id=unique("g"), auto_offset_reset="earliest",
                        session_timeout_ms=6000, heartbeat_interval_ms=500)
    got = []
    while len(got) < 3:
        got += k.poll(timeout_ms=500)
    hung.keys.update({ApiKey.OFFSET_COMMIT, ApiKey.LEAVE_GROUP, ApiKey.HEARTBEAT})
    t0 = time.monotonic()
    client.close(timeout=0.5)
    assert time.monotonic() - t0 < REQUEST_TIMEOUT_MS / 1000
    assert k.closed and client.closed


def test_blocking_calls_are_not_passed_through_to_the_loop(client):
    topic = filled_topic(client, 1)

    async def main():
        c = client.aio_consumer(group_id=unique("g"), auto_offset_reset="earliest")
        c.assign([(topic, 0)])
        tp = TopicPartition(topic, 0)
        assert await c.position(tp) == 0
        assert await c.end_offsets([tp]) == {tp: 1}
        assert await c.beginning_offsets([tp]) == {tp: 0}
        assert await c.partitions_for_topic(topic) == {0}
        await c.seek_to_end(tp)
        assert await c.position(tp) == 1
        for name in ("poll", "poll_batches"):
            with pytest.raises(AttributeError, match="would wait"):
                getattr(c, name)
        assert c.assignment() == {tp}          # what does not wait is passed through
        for bad in (dict(max_records=0), dict(timeout_ms=-1)):
            with pytest.raises(InvalidRequestError):
                await c.getmany(**bad)
        await c.close()

    asyncio.run(main())


def test_an_asyncio_leader_assigns_a_topic_it_had_no_metadata_for(server_thread):
    # The leader's poll round does not wait for the metadata of another member's topic:
    # it asks for it in the background and assigns once it came.
    boot = f"127.0.0.1:{server_thread.address[1]}"
    ca, cb = pylog.connect(boot), pylog.connect(boot)
    t1, t2 = unique("lead-a"), unique("lead-b")
    ca.create_topic(t1, partitions=1)
    cb.create_topic(t2, partitions=2)
    group = unique("g")

    async def main():
        a = ca.aio_consumer(t1, group_id=group, session_timeout_ms=6000, heartbeat_interval_ms=100)
        while not a.assignment():
            await a.getmany(timeout_ms=100)
        assert t2 not in ca.transport.cluster.snapshot().topics
        b = cb.aio_consumer(t2, group_id=group, session_timeout_ms=6000, heartbeat_interval_ms=100)
        for _ in range(200):
            await asyncio.gather(a.getmany(timeout_ms=100), b.getmany(timeout_ms=100))
            if b.assignment() and a.assignment():
                break
        assert b.assignment() == {TopicPartition(t2, 0), TopicPartition(t2, 1)}
        assert a.assignment() == {TopicPartition(t1, 0)}
        assert t2 in ca.transport.cluster.snapshot().topics     # looked up by the leader
        await a.close()
        await b.close()

    try:
        asyncio.run(main())
    finally:
        ca.close()
        cb.close()


def test_a_dead_letter_produce_to_a_hung_broker_keeps_the_loop_running(client, hung):
    topic = unique("stall-dlq")
    client.create_topic(topic, partitions=1)
    client.create_topic(topic + ".DLQ", partitions=1)
    with client.producer() as p:
        for v in (b"1", b"bad", b"3"):
            p.send(topic, v)

    async def main():
        c = client.aio_consumer(auto_offset_reset="earliest", value_deserializer=int,
                                on_deserialization_error="dead_letter")
        c.assign([(topic, 0)])
        hung.keys.add(ApiKey.PRODUCE)
        outcome, stall = await stall_of(c.getmany(timeout_ms=5000), within=1.0)
        # The record before the poisoned one is handed out; the poisoned one's dead-letter
        # produce then hangs in a worker thread, not on the loop.
        assert [r.value for r in outcome] == [1] and stall < MAX_STALL_S
        outcome, stall = await stall_of(c.getmany(timeout_ms=300), within=1.0)
        assert outcome in (None, []) and stall < MAX_STALL_S
        await c.close(timeout=0)

    asyncio.run(main())


def test_a_non_blocking_fetch_sends_nothing_and_takes_what_a_prefetch_brought(client):
    topic = filled_topic(client)
    t = client.transport
    owner = object()
    wanted = [(topic, 0, 0, 1 << 20)]
    sent = t.requests_sent.get(ApiKey.FETCH, 0)
    assert t.fetch(wanted, owner=owner, block=False) == [None]
    assert t.requests_sent.get(ApiKey.FETCH, 0) == sent
    came = threading.Event()

    def listener(topic_, partition, hw):
        came.set()

    t.add_data_listener(listener)
    try:
        t.prefetch(wanted, owner=owner)
        assert came.wait(10)            # the data listener announces the answer ...
        [res] = t.fetch(wanted, owner=owner, block=False)     # ... which is then taken as is
        assert res is not None and res.records.size > 0
    finally:
        t.remove_data_listener(listener)
