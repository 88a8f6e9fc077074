"""Damage to a ``__consumer_offsets`` partition costs only the damaged batch.

Each batch of the offsets topic is one group's atomic write, so on restart the broker
skips a batch it cannot trust (bad CRC, undecodable records, unreadable header), says so
in a WARN naming the partition, the offsets and the reason, and replays every other
batch: groups whose records are intact keep their committed offsets, and a group whose
latest commit was damaged falls back to its previous one.  (It used to log an ERROR and
start every group of the partition empty: committed offsets -1001.)
"""

from __future__ import annotations

import logging
import struct

import pytest

from pylog import _core
from pylog.broker.core import Broker
from pylog.broker.group_offsets import (CONSUMER_OFFSETS_TOPIC, OffsetCommitValue, encode_offset_commit_key,
                                        offset_commit_record)


class Clock:
    def __init__(self, t: int = 1_700_000_000_000) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def open_broker(path, clock):
    # One offsets partition with small segments: every group lives in partition 0 and
    # its batches spread over several sealed segments.
    return Broker(path, clock=clock, background=False, offsets_topic_num_partitions=1,
                  offsets_topic_segment_bytes=1024)


def committed(broker, group):
    return broker.fetch_offsets(group, {"t": [0]}).topics["t"][0].offset


def commit(broker, group, offset):
    """Commit and return the offsets-topic offset of the batch written."""
    broker.ensure_offsets_topic()
    log = broker._topics[CONSUMER_OFFSETS_TOPIC].partitions[0].log
    at = log.log_end_offset
    assert broker.commit_offsets(group, {"t": {0: offset}}) == {"t": {0: 0}}
    assert log.log_end_offset == at + 1
    return at


def batch_location(broker, offset):
    """(segment file path, byte position, size) of the offsets-topic batch at ``offset``,
    which must lie in a sealed segment (below the recovery point, so nothing rescans it)."""
    log = broker._topics[CONSUMER_OFFSETS_TOPIC].partitions[0].log
    assert offset < log.active_segment.base_offset, "the batch must be in a sealed segment"
    rr = log.read(offset, max_bytes=1)
    b = next(iter(_core.iter_batches(rr.records)))
    assert b.base_offset == offset
    return rr.path, rr.position, b.size


def flip(path, position):
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)
        f.seek(position)
        f.write(bytes([byte[0] ^ 0x5A]))


class Committed:
    """What the fixture wrote: per group its committed offset and the offsets-topic offset
    of its (last) commit batch; g2's second commit, and the segment bases."""

    def __init__(self) -> None:
        self.expected: dict[str, int] = {}
        self.batch_of: dict[str, int] = {}
        self.second = -1
        self.bases: list[int] = []


@pytest.fixture
def setup(tmp_path):
    """Groups g0..g11 committed once each and g2 a second time (after g5), all in
    partition 0 of the offsets topic, spread over several segments; the broker closed
    cleanly.  Returns (clock, data dir, Committed, location of g2's second batch)."""
    clock = Clock()
    path = tmp_path / "data"
    broker = open_broker(path, clock)
    broker.create_topic("t")
    broker.ensure_offsets_topic()
    c = Committed()
    log = broker._topics[CONSUMER_OFFSETS_TOPIC].partitions[0].log
    for i in range(12):
        g = f"g{i}"
        if i == 6:
            # g2's second commit starts a segment of its own (what a damaged header costs
            # is then exactly the rest of that segment) ...
            log.roll()
            c.second = commit(broker, "g2", 99)
        if i == 9:
            log.roll()   # ... which is sealed, with more segments after it
        c.batch_of[g] = commit(broker, g, 10 + i)
        c.expected[g] = 10 + i
    c.bases = [s.base_offset for s in log.segments]
    assert c.second in c.bases and c.bases[-1] > c.second
    where = batch_location(broker, c.second)
    broker.close()
    return clock, path, c, where


def test_a_corrupt_commit_batch_costs_only_that_batch(setup, caplog):
    clock, path, c, (seg_path, position, size) = setup
    flip(seg_path, position + 61 + (size - 61) // 2)   # inside the records: the CRC no longer matches
    caplog.set_level(logging.WARNING, logger="pylog")
    with open_broker(path, clock) as broker:
        got = {g: committed(broker, g) for g in c.expected}
    # g2's second commit (99) was in the damaged batch: it falls back to its first (12).
    assert got == c.expected
    warnings = [r for r in caplog.records if "skipped the damaged batch" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    msg = warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING
    assert f"{CONSUMER_OFFSETS_TOPIC}-0" in msg and f"offsets {c.second}..{c.second}" in msg and "CRC" in msg
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_an_unreadable_batch_header_costs_only_the_rest_of_its_segment(setup, caplog):
    """A damaged length field hides where the next batch starts: what follows it in its
    segment is lost (the storage cuts the segment there, or the replay resumes at the
    next segment), and the groups committed in later segments keep their offsets."""
    clock, path, c, (seg_path, position, size) = setup
    resume = next(b for b in c.bases if b > c.second)
    with open(seg_path, "r+b") as f:
        f.seek(position + 8)
        f.write(struct.pack(">i", 7))              # batchLength below any batch's
    caplog.set_level(logging.WARNING, logger="pylog")
    with open_broker(path, clock) as broker:
        got = {g: committed(broker, g) for g in c.expected}
    want = {g: (-1 if c.second <= c.batch_of[g] < resume else off) for g, off in c.expected.items()}
    assert c.batch_of["g2"] < c.second and want["g2"] == 12   # g2 falls back to its first commit
    assert got == want
    assert [g for g, v in want.items() if v == -1] == ["g6", "g7", "g8"]
    # Said either by the storage (which may cut a damaged sealed segment when it opens the
    # log) or by the group replay (which skips to the next segment); never silent.
    warned = [r for r in caplog.records if r.levelno == logging.WARNING
              and f"{CONSUMER_OFFSETS_TOPIC}-0" in r.getMessage()]
    assert warned, caplog.text


def test_an_undecodable_record_skips_its_whole_batch_only(tmp_path, caplog):
    """A batch whose CRC is right but whose value cannot be decoded (written by a newer or
    broken coordinator) is skipped whole, with the groups of other batches kept."""
    clock = Clock()
    path = tmp_path / "data"
    with open_broker(path, clock) as broker:
        broker.create_topic("t")
        commit(broker, "before", 5)
        good_key, good_value = offset_commit_record("mixed", "t", 0, OffsetCommitValue(7))
        b = _core.RecordBatchBuilder()
        b.append_many([good_value, b"\x00\x03\xff"], keys=[good_key, encode_offset_commit_key("bad", "t", 0)])
        broker._append_internal(CONSUMER_OFFSETS_TOPIC, 0, b.build()).raise_for_error()
        commit(broker, "after", 9)
    caplog.set_level(logging.WARNING, logger="pylog")
    with open_broker(path, clock) as broker:
        assert committed(broker, "before") == 5
        assert committed(broker, "after") == 9
        # All or nothing per batch: the intact record of the damaged batch is not applied.
        assert committed(broker, "mixed") == -1
        assert committed(broker, "bad") == -1
    assert "skipped the damaged batch at offsets 1..2" in caplog.text


@pytest.mark.parametrize("clean", [True, False], ids=["clean", "crashed"])
def test_a_corrupt_commit_in_the_active_segment_costs_only_that_batch(tmp_path, caplog, clean):
    """The usual case (offsets segments are 100 MiB): every commit is in the active
    segment.  After a clean shutdown the open-time check of the active segment's tail
    finds the CRC failure among whole batches and keeps them all (the group replay skips
    the bad one); the commits written after the damaged batch survive.  After a crash,
    recovery cuts at the first bad batch, as Kafka's does (a torn write is
    indistinguishable there), and says so."""
    clock = Clock()
    path = tmp_path / "data"
    broker = Broker(path, clock=clock, background=False, offsets_topic_num_partitions=1)
    broker.create_topic("t")
    at = {g: commit(broker, g, off) for g, off in [("g0", 100), ("g1", 200), ("g2", 300), ("g3", 400)]}
    log = broker._topics[CONSUMER_OFFSETS_TOPIC].partitions[0].log
    assert len(log.segments) == 1
    rr = log.read(at["g1"], max_bytes=1)
    b = next(iter(_core.iter_batches(rr.records)))
    seg_path, position, size = rr.path, rr.position, b.size
    if clean:
        broker.close()
    else:
        broker.logs.flush()
        # As if killed: no close, so no clean-shutdown marker; the directory's lock goes
        # as a dead process's would.
        broker._bg_stop.set()
        broker.logs._dir_lock.release()
    flip(seg_path, position + 61 + (size - 61) // 2)
    caplog.set_level(logging.WARNING, logger="pylog")
    with open_broker(path, clock) as broker:
        got = {g: committed(broker, g) for g in at}
    if clean:
        assert got == {"g0": 100, "g1": -1, "g2": 300, "g3": 400}
        assert any(r.levelno == logging.ERROR and "fails its CRC32C" in r.getMessage()
                   and f"offsets {at['g1']}..{at['g1']}" in r.getMessage() for r in caplog.records), caplog.text
        assert "skipped the damaged batch" in caplog.text
    else:
        assert got == {"g0": 100, "g1": -1, "g2": -1, "g3": -1}
        assert "truncated from" in caplog.text and "dropped 3 record(s)" in caplog.text
