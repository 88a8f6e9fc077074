"""asyncio consumers in a group: the group protocol runs inside getmany's non-waiting
poll rounds (JoinGroup/SyncGroup answers awaited through the transport's wake
listeners, the commit before an eager revoke sent and awaited before rejoining)."""

from __future__ import annotations

import asyncio

from pylog import TopicPartition


async def poll_both(a, b, until, rounds: int = 200) -> dict:
    """getmany on both members side by side until ``until()``; the records each got."""
    got: dict = {a: [], b: []}
    for _ in range(rounds):
        ra, rb = await asyncio.gather(a.getmany(timeout_ms=100), b.getmany(timeout_ms=100))
        got[a] += ra
        got[b] += rb
        if until():
            return got
    raise AssertionError(f"not reached in {rounds} rounds: {a.assignment()} {b.assignment()}")


def test_asyncio_members_rebalance_eagerly_committing_before_revoking(client):
    client.create_topic("t", 4)
    tps = {TopicPartition("t", p) for p in range(4)}
    with client.producer() as p:
        for i in range(40):
            p.send("t", b"%d" % i, partition=i % 4)

    async def main():
        cfg = dict(group_id="g", auto_offset_reset="earliest", partition_assignment_strategy=["range"],
                   auto_commit_interval_ms=60_000, heartbeat_interval_ms=200)
        a = client.aio_consumer("t", **cfg)
        first = []
        while len(first) < 40:
            first += await a.getmany(timeout_ms=5000)
        assert a.assignment() == tps
        b = client.aio_consumer("t", **cfg)
        await poll_both(a, b, lambda: a.assignment() and b.assignment()
                        and a.assignment() | b.assignment() == tps)
        assert not a.assignment() & b.assignment()
        # a's positions were committed before it gave its partitions up, and b starts there.
        committed = await b.committed(list(tps))
        assert {tp: om.offset for tp, om in committed.items()} == {tp: 10 for tp in tps}
        with client.producer() as p:
            for i in range(40, 80):
                p.send("t", b"%d" % i, partition=i % 4)
        got = {a: [], b: []}

        def all_read() -> bool:
            return len(got[a]) + len(got[b]) >= 40

        while not all_read():
            more = await poll_both(a, b, lambda: True)
            got[a] += more[a]
            got[b] += more[b]
        values = sorted(int(r.value) for r in got[a] + got[b])
        assert values == list(range(40, 80))           # nothing lost, nothing twice
        await a.close()
        await b.close()

    asyncio.run(main())


def test_asyncio_unsubscribe_commits_and_leaves(client):
    client.create_topic("t", 2)
    with client.producer() as p:
        for i in range(10):
            p.send("t", b"%d" % i, partition=i % 2)

    async def main():
        c = client.aio_consumer("t", group_id="g", auto_offset_reset="earliest", auto_commit_interval_ms=60_000)
        got = []
        while len(got) < 10:
            got += await c.getmany(timeout_ms=5000)
        await c.unsubscribe()
        assert c.assignment() == set() and c.subscription() == set()
        committed = await c.committed([("t", 0), ("t", 1)])
        assert {tp.partition: om.offset for tp, om in committed.items()} == {0: 5, 1: 5}
        for _ in range(100):                    # the LeaveGroup was sent, not waited for
            if client.describe_groups(["g"])[0].members == []:
                break
            await asyncio.sleep(0.05)
        assert client.describe_groups(["g"])[0].members == []
        await c.close()

    asyncio.run(main())
