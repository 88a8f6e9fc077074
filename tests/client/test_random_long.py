"""Long randomized run (``-m long``): producers, group members that commit or crash, and
client restarts in a random order.  Invariants: every produced record is consumed
(at-least-once), each key's records arrive in production order within each session, and
committed progress never goes backwards."""

from __future__ import annotations

import pytest

import pylog
from pylog.broker.group import GroupCoordinatorConfig

pytestmark = pytest.mark.long


def test_random_produce_consume_crash_restart(tmp_path, rng):
    path = tmp_path / "data"
    keys = [b"k%d" % i for i in range(12)]
    next_seq = {k: 0 for k in keys}
    consumed: dict[bytes, set[int]] = {k: set() for k in keys}
    settings = dict(offsets_topic_num_partitions=3, group=GroupCoordinatorConfig(min_session_timeout_ms=200))
    client = pylog.open(path, **settings)
    client.create_topic("t", 4)
    last_committed: dict = {}
    try:
        for step in range(60):
            action = rng.choice(["produce", "produce", "consume", "consume", "restart"])
            if action == "produce":
                p = client.producer(linger_ms=rng.choice([0, 2]), batch_size=rng.choice([512, 16384]))
                for _ in range(rng.randrange(1, 200)):
                    k = rng.choice(keys)
                    p.send("t", b"%d" % next_seq[k], key=k)
                    next_seq[k] += 1
                p.close()
            elif action == "consume":
                c = client.consumer("t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False,
                                    session_timeout_ms=300, heartbeat_interval_ms=50)
                last_seen: dict = {}
                for _ in range(rng.randrange(1, 20)):
                    for r in c.poll(timeout_ms=200):
                        v = int(r.value)
                        # Within a session a key's records come in production order.
                        assert v > last_seen.get(r.key, -1), (r.key, v, last_seen.get(r.key))
                        last_seen[r.key] = v
                        consumed[r.key].add(v)
                    if rng.random() < 0.5:
                        c.commit()
                for tp in c.assignment():
                    got = c.committed(tp)
                    if got is not None:
                        assert got.offset >= last_committed.get(tp, 0)
                        last_committed[tp] = got.offset
                if rng.random() < 0.3:
                    c._abandon()             # crash: no commit, no leave
                else:
                    c.close()
            else:
                client.close()
                client = pylog.open(path, **settings)
        # Drain what is left with one member.
        c = client.consumer("t", group_id="g", auto_offset_reset="earliest")
        idle = 0
        while idle < 3:
            recs = c.poll(timeout_ms=1500)
            idle = 0 if recs else idle + 1
            for r in recs:
                consumed[r.key].add(int(r.value))
        assert {k: sorted(v) for k, v in consumed.items()} == {k: list(range(n)) for k, n in next_seq.items()}
    finally:
        client.close()
