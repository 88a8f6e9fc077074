"""send_batch with a timestamp per record: each record keeps its own through the broker
(embedded and over the wire), every batch's base timestamp is its first record's and its
max timestamp the largest (records may be out of timestamp order), on each of
send_batch's paths (open batches topped up, batches of its own, the interleaved keyed
pass), and wrong timestamps are refused before anything is queued."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pylog import _core
from pylog.errors import InvalidTimestampError
from tests.client.conftest import drain
from tests.client.helpers import fetch_partition

T0 = 1_700_000_000_000


def _batches(client, topic, partition):
    res = fetch_partition(client, topic, partition, 0, 1 << 30)
    out = list(_core.iter_batches(res.records.records))
    for b in out:
        b.validate()
    return out


def _check_batch_timestamps(client, topic, partitions):
    """Every batch's base timestamp is its first record's, its max the largest."""
    for p in range(partitions):
        for b in _batches(client, topic, p):
            ts = [r.timestamp for r in b]
            assert b.base_timestamp == ts[0]
            assert b.max_timestamp == max(ts)


def test_per_record_timestamps_reach_the_consumer(client):
    client.create_topic("t", 1)
    p = client.producer(linger_ms=0)
    # Out of order: the max timestamp is not the last record's, and one record is
    # earlier than the first (a negative delta).
    stamps = [T0 + 5, T0 + 900_000, T0 - 3, T0 + 17, T0 + 2]
    fut = p.send_batch("t", [b"v%d" % i for i in range(5)], keys=[b"k%d" % i for i in range(5)], partition=0,
                       timestamp_ms=stamps)
    assert fut.result(timeout=30).tolist() == [0, 1, 2, 3, 4]
    assert fut.timestamp == -1
    c = client.consumer(auto_offset_reset="earliest")
    c.assign([("t", 0)])
    recs = drain(c, 5)
    assert [(r.value, r.timestamp) for r in recs] == [(b"v%d" % i, t) for i, t in enumerate(stamps)]
    c.close()
    (batch,) = _batches(client, "t", 0)
    assert batch.base_timestamp == T0 + 5
    assert batch.max_timestamp == T0 + 900_000
    p.close()


@pytest.mark.parametrize("form", ["list", "numpy"])
def test_per_record_timestamps_on_every_send_batch_path(client, form):
    # Small batches so that open batches are topped up, several batches of its own are
    # filled per partition and the keyed records of several partitions go through the
    # interleaved pass.
    client.create_topic("t", 4, config={"max.message.bytes": 4000})
    p = client.producer(batch_size=1000, linger_ms=60_000)
    early = [p.send("t", b"early", key=b"k%d" % i, timestamp_ms=T0 + 10**6 + i) for i in range(8)]
    rnd = random.Random(5)
    n = 3000
    keys = [b"k%d" % (i % 29) for i in range(n)]
    values = [b"value-%05d" % i for i in range(n)]
    stamps = [T0 + rnd.randrange(-50_000, 50_000) for _ in range(n)]
    fut = p.send_batch("t", values, keys=keys,
                       timestamp_ms=np.array(stamps, dtype=np.int64) if form == "numpy" else stamps)
    offsets = fut.result(timeout=30)
    # One partition's keyless run, and a run to a fixed partition.
    fut2 = p.send_batch("t", values[:700], timestamp_ms=stamps[:700])
    fut3 = p.send_batch("t", values[:900], partition=3, timestamp_ms=stamps[::-1][:900])
    p.flush()
    got = {}
    for part in range(4):
        for b in _batches(client, "t", part):
            for r in b:
                got[part, r.offset] = (r.value, r.timestamp)
    for i in range(n):
        assert got[int(fut.partitions[i]), int(offsets[i])] == (values[i], stamps[i])
    for f, ts in ((fut2, stamps[:700]), (fut3, stamps[::-1][:900])):
        for i, off in enumerate(f.result(timeout=30)):
            assert got[int(f.partitions[i]), int(off)] == (values[i], ts[i])
    for h in early:
        md = h.result(timeout=30)
        assert got[md.partition, md.offset][1] == md.timestamp
    _check_batch_timestamps(client, "t", 4)
    p.close()


def test_wrong_timestamps_are_refused_and_nothing_is_queued(client):
    client.create_topic("t", 1)
    p = client.producer(linger_ms=0)
    values = [b"a", b"b", b"c"]
    with pytest.raises(ValueError, match="2 timestamps for 3 values"):
        p.send_batch("t", values, timestamp_ms=[T0, T0])
    with pytest.raises(ValueError, match="4 timestamps for 3 values"):
        p.send_batch("t", values, timestamp_ms=np.full(4, T0, dtype=np.int64))
    with pytest.raises(InvalidTimestampError, match=">= 0"):
        p.send_batch("t", values, timestamp_ms=[T0, -1, T0])
    with pytest.raises(InvalidTimestampError, match="float64"):
        p.send_batch("t", values, timestamp_ms=[T0, 1.5, T0])
    with pytest.raises(InvalidTimestampError, match="bool"):
        p.send_batch("t", values, timestamp_ms=[True, False, True])
    with pytest.raises(InvalidTimestampError, match="more than an int64"):
        p.send_batch("t", values, timestamp_ms=np.array([1, 2, 2**63], dtype=np.uint64))
    with pytest.raises(InvalidTimestampError, match="more than an int64"):
        p.send_batch("t", values, timestamp_ms=[T0, 2**63, T0])
    with pytest.raises(InvalidTimestampError, match="2-D"):
        p.send_batch("t", values, timestamp_ms=np.full((3, 1), T0))
    with pytest.raises(InvalidTimestampError):
        p.send_batch("t", values, timestamp_ms="abc")
    # An empty call takes an empty sequence; then a good one goes through alone.
    assert len(p.send_batch("t", [], timestamp_ms=[]).result(timeout=30)) == 0
    fut = p.send_batch("t", values, timestamp_ms=(T0, T0 + 1, T0 + 2))
    assert fut.result(timeout=30).tolist() == [0, 1, 2]
    # Any integer dtype: a uint32 array of seconds-sized numbers is taken as it is.
    fut = p.send_batch("t", values, timestamp_ms=np.array([7, 9, 8], dtype=np.uint32))
    assert fut.result(timeout=30).tolist() == [3, 4, 5]
    assert [[r.timestamp for r in b] for b in _batches(client, "t", 0)] == [[T0, T0 + 1, T0 + 2], [7, 9, 8]]
    p.close()
