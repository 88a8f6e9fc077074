"""The embedded consumer without group rebalances: assignment, positions, offsets, replay,
poison pills and the dead-letter topic, bad input."""

from __future__ import annotations

import json

import pytest

from pylog.broker.core import OffsetAndMetadata, TopicPartition
from pylog.errors import (CommitFailedError, IllegalStateError, InvalidGroupIdError, InvalidRequestError,
                          NoOffsetForPartitionError, RecordDeserializationError, UnknownTopicOrPartitionError)
from pylog.records import build_control_batch
from tests.client.conftest import drain

TP0 = TopicPartition("t", 0)
TP1 = TopicPartition("t", 1)


def produce(client, topic, values, partition=0, **kw):
    p = client.producer(**kw)
    hs = [p.send(topic, v, partition=partition) for v in values]
    p.flush()
    p.close()
    return [h.result() for h in hs]


def test_assign_poll_in_order_and_positions(client):
    client.create_topic("t", 2)
    produce(client, "t", [b"a%d" % i for i in range(30)], 0)
    produce(client, "t", [b"b%d" % i for i in range(5)], 1)
    c = client.consumer(auto_offset_reset="earliest")
    c.assign([TP0, ("t", 1)])
    recs = drain(c, 35)
    assert [r.value for r in recs if r.partition == 0] == [b"a%d" % i for i in range(30)]
    assert [r.offset for r in recs if r.partition == 1] == list(range(5))
    assert c.position(TP0) == 30 and c.position(TP1) == 5 and c.lag(TP0) == 0
    assert c.poll(timeout_ms=0) == []
    assert c.end_offsets([TP0, TP1]) == {TP0: 30, TP1: 5}
    assert c.beginning_offsets([TP0]) == {TP0: 0}
    c.seek(TP0, 25)
    assert [r.offset for r in drain(c, 5)] == [25, 26, 27, 28, 29]
    c.seek_to_beginning(TP1)
    assert c.position(TP1) == 0
    c.seek_to_end()
    assert (c.position(TP0), c.position(TP1)) == (30, 5)
    c.close()


def test_max_records_pause_resume_and_wait_for_data(client):
    client.create_topic("t", 2)
    produce(client, "t", [b"%d" % i for i in range(10)], 0)
    produce(client, "t", [b"%d" % i for i in range(10)], 1)
    c = client.consumer(auto_offset_reset="earliest")
    c.assign([TP0, TP1])
    c.pause(TP1)
    assert c.paused() == {TP1}
    first = c.poll(timeout_ms=1000, max_records=4)
    assert [(r.partition, r.offset) for r in first] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    rest = drain(c, 6)
    assert all(r.partition == 0 for r in rest)
    assert c.poll(timeout_ms=0) == []
    c.resume(TP1)
    assert {r.partition for r in drain(c, 10)} == {1}
    # A poll that waits is woken by an append.
    import threading
    p = client.producer(linger_ms=0)
    t = threading.Timer(0.05, lambda: p.send("t", b"late", partition=0))
    t.start()
    got = c.poll(timeout_ms=10_000)
    t.join()
    assert [r.value for r in got] == [b"late"]
    p.close()
    c.close()


def test_auto_offset_reset_policies_and_out_of_range(client):
    client.create_topic("t", 1)
    produce(client, "t", [b"old"])
    latest = client.consumer(group_id="g1")
    latest.assign([TP0])
    assert latest.position(TP0) == 1
    none = client.consumer(group_id="g2", auto_offset_reset="none")
    none.assign([TP0])
    with pytest.raises(NoOffsetForPartitionError) as ei:
        none.poll()
    assert ei.value.error_code == 1
    none.seek(TP0, 0)
    assert [r.value for r in drain(none, 1)] == [b"old"]
    # Records deleted under the position: reset by the policy.
    produce(client, "t", [b"a", b"b", b"c"])
    early = client.consumer(auto_offset_reset="earliest")
    early.assign([TP0])
    early.seek(TP0, 1)
    client.delete_records("t", 0, 3)
    assert [r.value for r in drain(early, 1)] == [b"c"]
    for c in (latest, none, early):
        c.close()


def test_commits_with_metadata_survive_and_new_groups_replay(client):
    client.create_topic("t", 1)
    produce(client, "t", [b"%d" % i for i in range(10)])
    c = client.consumer(group_id="g", auto_offset_reset="earliest", enable_auto_commit=False)
    c.assign([TP0])
    assert len(drain(c, 10, max_rounds=20)) == 10
    c.commit({TP0: OffsetAndMetadata(7, "note")})
    assert c.committed(TP0) == OffsetAndMetadata(7, "note", -1)
    results = []
    c.commit_async(callback=lambda offsets, exc: results.append((dict(offsets), exc)))
    assert results[0][1] is None and c.committed(TP0).offset == 10
    c.close()
    again = client.consumer(group_id="g", auto_offset_reset="earliest")
    again.assign([TP0])
    assert again.position(TP0) == 10
    replay = client.consumer(group_id="fresh", auto_offset_reset="earliest")
    replay.assign([TP0])
    assert [r.value for r in drain(replay, 10)] == [b"%d" % i for i in range(10)]
    found = replay.offsets_for_times({TP0: 0})
    assert found[TP0].offset == 0
    assert replay.offsets_for_times({TP0: 2**62})[TP0] is None
    again.close()
    replay.close()


def test_iteration_never_commits_past_unyielded_records(client):
    client.create_topic("t", 1)
    produce(client, "t", [b"%d" % i for i in range(20)])
    c = client.consumer(group_id="it", auto_offset_reset="earliest", enable_auto_commit=False)
    c.assign([TP0])
    it = iter(c)
    got = [next(it) for _ in range(5)]
    assert [r.offset for r in got] == [0, 1, 2, 3, 4]
    c.commit()
    assert c.committed(TP0).offset == 5
    c.close()


def test_control_batches_and_compressed_batches_are_read(client):
    client.create_topic("t", 1)
    produce(client, "t", [b"a"])
    client.broker._append_internal("t", 0, build_control_batch("commit", 1, 0)).raise_for_error()
    produce(client, "t", [b"b" * 100, b"c" * 100], compression_type="zstd")
    c = client.consumer(auto_offset_reset="earliest")
    c.assign([TP0])
    recs = drain(c, 3)
    assert [(r.offset, r.value[:1]) for r in recs] == [(0, b"a"), (2, b"b"), (3, b"c")]
    c.close()


def test_deserializers_and_poison_pill_raises_with_its_location(client):
    client.create_topic("t", 1)
    produce(client, "t", [b'{"n": 1}', b"not json", b'{"n": 3}'])
    c = client.consumer(group_id="g", auto_offset_reset="earliest", value_deserializer=json.loads,
                        key_deserializer=lambda k: k)
    c.assign([TP0])
    first = c.poll(timeout_ms=1000)
    assert [r.value for r in first] == [{"n": 1}]         # the records before the bad one first
    with pytest.raises(RecordDeserializationError) as ei:
        c.poll(timeout_ms=1000)
    err = ei.value
    assert (err.topic, err.partition, err.offset, err.error_code) == ("t", 0, 1, 87)
    assert c.position(TP0) == 1
    with pytest.raises(RecordDeserializationError):        # it stays there
        c.poll(timeout_ms=0)
    c.seek(TP0, 2)
    assert [r.value for r in c.poll(timeout_ms=1000)] == [{"n": 3}]
    c.close()


def test_poison_pill_skip(client):
    client.create_topic("t", 1)
    produce(client, "t", [b"1", b"x", b"3"])
    c = client.consumer(auto_offset_reset="earliest", value_deserializer=int, on_deserialization_error="skip")
    c.assign([TP0])
    assert [r.value for r in drain(c, 2)] == [1, 3]
    assert c.position(TP0) == 3
    c.close()


def test_poison_pill_goes_to_the_dead_letter_topic(client):
    client.create_topic("t", 2)
    produce(client, "t", [b"1", b"bad", b"3"], partition=1)
    c = client.consumer(group_id="billing", auto_offset_reset="earliest", value_deserializer=int,
                        on_deserialization_error="dead_letter", dead_letter_topic="t.dlq")
    c.assign([TP1])
    assert [r.value for r in drain(c, 2)] == [1, 3]
    dlq = client.consumer(auto_offset_reset="earliest")
    dlq.assign([("t.dlq", 1)])
    [dead] = drain(dlq, 1)
    assert dead.value == b"bad"
    h = dict(dead.headers)
    assert h["pylog.dlq.original.topic"] == b"t"
    assert h["pylog.dlq.original.partition"] == b"1"
    assert h["pylog.dlq.original.offset"] == b"1"
    assert h["pylog.dlq.group.id"] == b"billing"
    assert h["pylog.dlq.exception.class"] == b"ValueError"
    assert b"invalid literal" in h["pylog.dlq.exception.message"]
    c.close()
    dlq.close()


def test_bad_consumer_calls(client):
    client.create_topic("t", 1)
    c = client.consumer()
    with pytest.raises(IllegalStateError):
        c.poll()
    with pytest.raises(InvalidGroupIdError):
        c.subscribe(["t"])
    with pytest.raises(UnknownTopicOrPartitionError) as ei:
        c.assign([("t", 3)])
    assert ei.value.error_code == 3
    with pytest.raises(UnknownTopicOrPartitionError):
        c.assign([("nope", 0)])
    c.assign([TP0])
    with pytest.raises(InvalidRequestError):
        c.seek(TP0, -1)
    with pytest.raises(IllegalStateError):
        c.seek(("t", 9), 0)
    with pytest.raises(InvalidGroupIdError):
        c.commit({TP0: 1})
    with pytest.raises(InvalidRequestError):
        c.poll(timeout_ms=-1)
    c.close()
    with pytest.raises(IllegalStateError):
        c.poll()
    g = client.consumer("t", group_id="g", auto_offset_reset="earliest")
    with pytest.raises(IllegalStateError):
        g.assign([TP0])
    g.poll(timeout_ms=1000)
    assert g.assignment() == {TP0}
    with pytest.raises(CommitFailedError) as ei:
        g.commit({("other", 0): 5})
    assert ei.value.error_code == 22
    with pytest.raises(InvalidRequestError):
        g.commit({TP0: -3})
    assert g.committed(TP0) is None                       # nothing was committed
    g.close()
