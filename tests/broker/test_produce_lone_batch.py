"""``Broker.produce_one``'s path for a lone batch (the server's usual Produce request):
``_core.lone_batch_header`` reads exactly the header fields the checks need, and the
produce answers as the general path (``produce_partitions``) does, for every kind of
batch that path treats differently: an idempotent producer's retry and sequence gap,
timestamps out of bounds, a compacted topic's null keys, a transactional batch, and
several batches in one request."""

from __future__ import annotations

import time

import pytest

from pylog import _core
from pylog.broker.core import Broker


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "data", background=False, offsets_topic_num_partitions=1)
    b.create_topic("fast", 1)
    b.create_topic("general", 1)
    yield b
    b.close()


def batch(values, *, pid=-1, epoch=-1, seq=-1, ts=None, keys=None, txn=False):
    b = _core.RecordBatchBuilder(producer_id=pid, producer_epoch=epoch, base_sequence=seq, is_transactional=txn)
    now = int(time.time() * 1000) if ts is None else ts
    for i, v in enumerate(values):
        b.append(now, None if keys is None else keys[i], v)
    return bytes(b.build())


def test_header_fields_are_the_record_batchs():
    raw = batch([b"a", b"b", b"c"], pid=7, epoch=2, seq=40, ts=1_700_000_000_000)
    rb = _core.RecordBatch(raw)
    assert _core.lone_batch_header(raw) == (rb.attributes, 7, 2, 40, 3, 2, rb.base_timestamp, rb.max_timestamp)
    assert _core.lone_batch_header(memoryview(raw)) == _core.lone_batch_header(raw)


@pytest.mark.parametrize("records", [
    b"", b"\x00" * 60,                                   # nothing, or a header cut short
    None, "a str", 12,                                   # not bytes-like
])
def test_header_of_what_is_not_one_batch_is_none(records):
    assert _core.lone_batch_header(records) is None


def test_header_of_two_batches_a_cut_one_or_a_bad_magic_is_none():
    raw = batch([b"a"])
    assert _core.lone_batch_header(raw + raw) is None
    assert _core.lone_batch_header(raw[:-1]) is None
    assert _core.lone_batch_header(raw + b"\x00") is None
    bad_magic = raw[:16] + b"\x01" + raw[17:]
    assert _core.lone_batch_header(bad_magic) is None


def answers(broker, records_list, **create):
    """Each records of ``records_list`` produced one request at a time through the lone
    batch path (topic "fast", produce_one) and through the general path (topic "general",
    produce_partitions): the (error code, base offset, duplicate) of each."""
    out = {}
    for topic, call in (("fast", lambda r: broker.produce_one("fast", 0, r, 1)),
                        ("general", lambda r: broker.produce_partitions("general", [(0, r)], acks=1)[0])):
        out[topic] = [(res.error_code, res.base_offset, res.duplicate) for res in map(call, records_list)]
    return out


def test_idempotent_retry_and_gap_answer_as_the_general_path(broker):
    first = batch([b"a", b"b"], pid=5, epoch=0, seq=0)
    second = batch([b"c"], pid=5, epoch=0, seq=2)
    gap = batch([b"d"], pid=5, epoch=0, seq=9)
    got = answers(broker, [first, second, first, gap, batch([b"e"])])
    assert got["fast"] == got["general"]
    assert got["fast"][2] == (0, 0, True)                     # the retry: the original's offset
    assert got["fast"][3][0] == 45                            # OUT_OF_ORDER_SEQUENCE_NUMBER
    assert got["fast"][4] == (0, 3, False)


def test_timestamps_out_of_bounds_answer_as_the_general_path(broker):
    ahead = batch([b"x"], ts=int(time.time() * 1000) + 10 * 3600 * 1000)
    got = answers(broker, [ahead, batch([b"y"])])
    assert got["fast"] == got["general"]
    assert got["fast"][0][0] == 32                            # INVALID_TIMESTAMP


def test_compacted_transactional_and_several_batches_take_the_general_path(tmp_path):
    b = Broker(tmp_path / "data", background=False, offsets_topic_num_partitions=1)
    try:
        for name in ("fast", "general"):
            b.create_topic(name, 1, config={"cleanup.policy": "compact"})
        got = answers(b, [batch([b"v"], keys=[None]), batch([b"v"], keys=[b"k"]),
                          batch([b"t"], pid=3, epoch=0, seq=0, txn=True),
                          batch([b"1"], keys=[b"k"]) + batch([b"2"], keys=[b"k"])])
        assert got["fast"] == got["general"]
        # INVALID_RECORD (a null key), INVALID_TXN_STATE (no transaction begun).
        assert [code for code, *_ in got["fast"]] == [87, 0, 48, 0]
    finally:
        b.close()


def test_a_plain_batch_takes_the_lone_batch_path(broker, monkeypatch):
    def general(*_args, **_kw):
        raise AssertionError("the general path was taken")

    monkeypatch.setattr(broker, "_produce_to", general)
    res = broker.produce_one("fast", 0, batch([b"a", b"b"]), 1)
    assert (res.error_code, res.base_offset) == (0, 0)
    res = broker.produce_one("fast", 0, batch([b"c"], pid=1, epoch=0, seq=0), -1)
    assert (res.error_code, res.base_offset) == (0, 2)
    assert broker.produce_one("fast", 0, batch([b"c"], pid=1, epoch=0, seq=0), -1).duplicate
