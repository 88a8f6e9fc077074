"""Broker core: topics, configs, produce (idempotence, validation), fetch, offsets, producer ids.

Each bad input gets its Kafka error code and leaves the broker as it was.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from pylog import _core
from pylog.broker.core import REGISTRY_FILE, Broker, NewTopic
from pylog.broker.topic_config import TOPIC_CONFIGS, ConfigSource
from pylog.errors import (InvalidConfigError, InvalidPartitionsError, InvalidReplicationFactorError,
                          InvalidTopicError, KafkaStorageError, OffsetOutOfRangeError, TopicAlreadyExistsError,
                          UnknownTopicOrPartitionError)
from pylog.records import build_control_batch


class Clock:
    """A hand-driven clock that starts at the wall clock's now, so batches stamped with the
    real time are within the topic's message.timestamp.after.max.ms (one hour)."""

    def __init__(self, t: int | None = None) -> None:
        self.t = int(time.time() * 1000) if t is None else t

    def __call__(self) -> int:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def broker(tmp_path, clock):
    b = Broker(tmp_path / "data", clock=clock, background=False, offsets_topic_num_partitions=2)
    yield b
    b.close()


def batch(values, *, pid=-1, epoch=-1, seq=-1, keys=None, ts=None, compression="none"):
    b = _core.RecordBatchBuilder(producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                                 compression=compression)
    for i, v in enumerate(values):
        b.append(ts, None if keys is None else keys[i], v)
    return b.build()


def read_values(broker, topic, partition, start=0):
    out = []
    offset = start
    while True:
        res = broker.fetch(topic, partition, offset)
        res.raise_for_error()
        if res.records.size == 0:
            return out
        for b in _core.iter_batches(res.records.records):
            if b.is_control:
                continue
            out.extend((r.offset, r.value) for r in b if r.offset >= offset)
        offset = res.records.next_offset


# ------------------------------------------------------------------------------ topics

def test_topics_create_list_describe_delete(broker):
    d = broker.create_topic("orders", 3, config={"retention.ms": 1000})
    assert d.num_partitions == 3 and not d.is_internal and len(d.topic_id) == 22
    assert broker.list_topics() == ["orders"]
    # Created on first use (the first group), as Kafka creates it on FindCoordinator.
    assert "__consumer_offsets" not in broker.list_topics(internal=True)
    broker.ensure_offsets_topic()
    assert "__consumer_offsets" in broker.list_topics(internal=True)
    assert [p.partition for p in broker.describe_topic("orders").partitions] == [0, 1, 2]
    broker.create_partitions("orders", 5)
    assert broker.num_partitions("orders") == 5
    broker.delete_topic("orders")
    assert broker.list_topics() == []
    assert not os.path.exists(os.path.join(broker.data_dir, "orders-0"))
    with pytest.raises(UnknownTopicOrPartitionError):
        broker.describe_topic("orders")


@pytest.mark.parametrize("call, error, code", [
    (lambda b: b.create_topic("bad name"), InvalidTopicError, 17),
    (lambda b: b.create_topic("x" * 250), InvalidTopicError, 17),
    (lambda b: b.create_topic(".."), InvalidTopicError, 17),
    (lambda b: b.create_topic("t", 0), InvalidPartitionsError, 37),
    (lambda b: b.create_topic("t", 2, 3), InvalidReplicationFactorError, 38),
    (lambda b: b.create_topic("t", config={"retention.ms": "soon"}), InvalidConfigError, 40),
    (lambda b: b.create_topic("t", config={"nope": 1}), InvalidConfigError, 40),
    (lambda b: b.create_topic("t", config={"segment.bytes": 5}), InvalidConfigError, 40),
    (lambda b: b.create_topic("existing"), TopicAlreadyExistsError, 36),
    (lambda b: b.create_topic("exist_ing"), InvalidTopicError, 17),     # collides with exist.ing
    (lambda b: b.create_partitions("existing", 1), InvalidPartitionsError, 37),
    (lambda b: b.create_partitions("nope", 4), UnknownTopicOrPartitionError, 3),
    (lambda b: b.delete_topic("__consumer_offsets"), InvalidTopicError, 17),
    (lambda b: b.delete_topic("nope"), UnknownTopicOrPartitionError, 3),
])
def test_bad_topic_requests_change_nothing(broker, call, error, code):
    broker.ensure_offsets_topic()
    broker.create_topic("existing")
    broker.create_topic("exist.ing")
    registry = os.path.join(broker.data_dir, REGISTRY_FILE)
    before = (broker.list_topics(internal=True), sorted(os.listdir(broker.data_dir)), _read(registry))
    with pytest.raises(error) as ei:
        call(broker)
    assert ei.value.error_code == code
    assert (broker.list_topics(internal=True), sorted(os.listdir(broker.data_dir)), _read(registry)) == before


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_create_topics_batch_reports_per_topic_codes(broker):
    res = broker.create_topics([NewTopic("a", 2), NewTopic("b b"), "c"])
    assert res["a"].error_code == 0 and res["a"].num_partitions == 2
    assert res["b b"].error_code == 17 and "invalid topic name" in res["b b"].error_message
    assert res["c"].error_code == 0
    assert broker.create_topics([NewTopic("d", 1)], validate_only=True)["d"].error_code == 0
    assert not broker.has_topic("d")
    dels = broker.delete_topics(["a", "zz"])
    assert dels["a"].error_code == 0 and dels["zz"].error_code == 3


# ------------------------------------------------------------------------------ configs

def test_describe_configs_lists_every_default(broker):
    broker.create_topic("t", config={"retention.ms": 5000, "cleanup.policy": "compact,delete"})
    entries = {e.name: e for e in broker.describe_configs("t")}
    assert set(entries) == set(TOPIC_CONFIGS)
    assert entries["retention.ms"].value == "5000"
    assert entries["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG and not entries["retention.ms"].is_default
    assert entries["cleanup.policy"].value == "compact,delete"
    assert entries["segment.bytes"].value == str(1024**3) and entries["segment.bytes"].is_default
    assert entries["min.insync.replicas"].value == "1"
    syn = broker.describe_configs("t", ["retention.ms"], include_synonyms=True)[0].synonyms
    assert ("log.retention.ms", str(7 * 24 * 3600 * 1000), ConfigSource.DEFAULT_CONFIG) in syn


def test_broker_topic_defaults_show_as_static_broker_config(tmp_path, clock):
    with Broker(tmp_path, clock=clock, background=False, offsets_topic_num_partitions=1,
                topic_defaults={"retention.ms": 60000}) as b:
        b.create_topic("t")
        e = b.describe_configs("t", ["retention.ms"])[0]
        assert (e.value, e.source) == ("60000", ConfigSource.STATIC_BROKER_CONFIG)
        assert b.topic_config("t").log_config().retention_ms == 60000


def test_alter_configs_apply_to_logs_and_bad_values_change_nothing(broker):
    broker.create_topic("t", config={"retention.ms": 5000})
    broker.append("t", 0, batch([b"first"]))
    broker.incremental_alter_configs("t", [("segment.bytes", "set", 200), ("retention.ms", "delete", None)])
    entries = {e.name: e.value for e in broker.describe_configs("t")}
    assert entries["segment.bytes"] == "200" and entries["retention.ms"] == str(7 * 24 * 3600 * 1000)
    # The new segment.bytes is live: appends roll segments of about 200 bytes.
    for i in range(4):
        broker.append("t", 0, batch([b"x" * 60]))
    assert len(broker.logs.get_log("t", 0).segments) >= 3
    before = broker.describe_configs("t")
    for bad in ([("segment.bytes", "set", "big")], [("nope", "set", 1)], [("retention.ms", "append", "1")],
                [("retention.ms", "explode", 1)]):
        with pytest.raises(InvalidConfigError) as ei:
            broker.incremental_alter_configs("t", bad)
        assert ei.value.error_code == 40
    with pytest.raises(InvalidConfigError):
        broker.alter_configs("t", {"max.message.bytes": -5})
    assert broker.describe_configs("t") == before
    broker.alter_configs("t", {"segment.bytes": 200, "max.message.bytes": 100})
    assert broker.produce("t", 0, batch([b"z" * 150])).error_code == 10      # live at once
    broker.incremental_alter_configs("t", [("cleanup.policy", "append", "compact")])
    assert broker.describe_configs("t", ["cleanup.policy"])[0].value == "delete,compact"
    broker.alter_configs("t", {"retention.bytes": 10})
    assert {e.name for e in broker.describe_configs("t") if not e.is_default} == {"retention.bytes"}


# ------------------------------------------------------------------------------ produce

def test_produce_fetch_and_offsets(broker, clock):
    broker.create_topic("t", 2)
    r1 = broker.produce("t", 0, batch([b"a", b"b"], ts=clock.t - 10))
    r2 = broker.produce("t", 0, batch([b"c"], ts=clock.t))
    assert (r1.error_code, r1.base_offset, r2.base_offset) == (0, 0, 2)
    assert read_values(broker, "t", 0) == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert broker.list_offsets("t", 0, -1).offset == 3
    assert broker.list_offsets("t", 0, -2).offset == 0
    assert broker.list_offsets("t", 0, clock.t).offset == 2
    assert broker.list_offsets("t", 0, clock.t + 1).offset == -1
    assert broker.list_offsets("t", 0, -3).offset == 2
    # The fetch result is also a file range, for sendfile.
    res = broker.fetch("t", 0, 0)
    rr = res.records
    assert os.pread(rr.fileno(), rr.size, rr.position) == bytes(rr.records)
    assert res.high_watermark == 3 and res.log_start_offset == 0


def test_produce_errors_carry_codes_and_change_nothing(broker, clock):
    broker.ensure_offsets_topic()
    broker.create_topic("t", 1, config={"max.message.bytes": 200, "message.timestamp.after.max.ms": 1000})
    broker.create_topic("strict", 1, config={"min.insync.replicas": 2})
    broker.append("t", 0, batch([b"ok"], ts=clock.t))
    good = batch([b"x"], ts=clock.t)
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF
    cases = [
        (lambda: broker.produce("nope", 0, good), 3),
        (lambda: broker.produce("t", 5, good), 3),
        (lambda: broker.produce("t", 0, bytes(corrupt)), 2),
        (lambda: broker.produce("t", 0, good[:-3]), 2),
        (lambda: broker.produce("t", 0, "not bytes"), 2),
        (lambda: broker.produce("t", 0, batch([b"y" * 300], ts=clock.t)), 10),
        (lambda: broker.produce("t", 0, good, acks=2), 21),
        (lambda: broker.produce("t", 0, batch([b"late"], ts=clock.t + 5000)), 32),
        (lambda: broker.produce("strict", 0, good, acks=-1), 19),
        (lambda: broker.produce("__consumer_offsets", 0, good), 17),
        (lambda: broker.produce("t", 0, build_control_batch("commit", 5, 0)), 87),
    ]
    for call, code in cases:
        res = call()
        assert res.error_code == code, (res, code)
        assert res.error is not None and res.error.error_code == code
    assert read_values(broker, "t", 0) == [(0, b"ok")]
    assert broker.high_watermark("strict", 0) == 0
    assert broker.produce("strict", 0, good, acks=1).error_code == 0   # acks=1 does not need the ISR


def test_log_append_time_and_recompression(broker, clock):
    broker.create_topic("lat", config={"message.timestamp.type": "LogAppendTime"})
    res = broker.append("lat", 0, batch([b"v"], ts=5))
    assert res.log_append_time == clock.t
    rec = next(iter(next(_core.iter_batches(broker.fetch("lat", 0, 0).records.records))))
    assert rec.timestamp == clock.t
    broker.create_topic("gz", config={"compression.type": "gzip"})
    broker.append("gz", 0, batch([b"a" * 50, b"b" * 50], compression="lz4"))
    stored = next(_core.iter_batches(broker.fetch("gz", 0, 0).records.records))
    assert stored.compression == "gzip"
    assert [r.value for r in stored] == [b"a" * 50, b"b" * 50]
    stored.validate()


def test_idempotent_duplicates_gaps_and_fencing(broker):
    broker.create_topic("t")
    pid = broker.init_producer_id().producer_id
    b0 = batch([b"a", b"b"], pid=pid, epoch=0, seq=0)
    assert broker.produce("t", 0, b0).base_offset == 0
    dup = broker.produce("t", 0, b0)
    assert (dup.error_code, dup.base_offset, dup.duplicate) == (0, 0, True)
    gap = broker.produce("t", 0, batch([b"c"], pid=pid, epoch=0, seq=5))
    assert gap.error_code == 45                      # OUT_OF_ORDER_SEQUENCE_NUMBER
    assert broker.produce("t", 0, batch([b"c"], pid=pid, epoch=0, seq=2)).base_offset == 2
    bumped = broker.init_producer_id(producer_id=pid, producer_epoch=0)
    assert (bumped.producer_id, bumped.producer_epoch) == (pid, 1)
    assert broker.produce("t", 0, batch([b"d"], pid=pid, epoch=1, seq=0)).error_code == 0
    assert broker.produce("t", 0, batch([b"e"], pid=pid, epoch=0, seq=3)).error_code == 47   # fenced
    assert [v for _, v in read_values(broker, "t", 0)] == [b"a", b"b", b"c", b"d"]
    [info] = broker.describe_producers("t", 0)
    assert (info.producer_id, info.producer_epoch, info.last_sequence) == (pid, 1, 0)


def test_produce_batches_coalesces_and_attributes_errors(broker):
    broker.create_topic("t")
    pid = broker.init_producer_id().producer_id
    bs = [batch([b"%d" % i], pid=pid, epoch=0, seq=i) for i in range(4)]
    res = broker.produce_batches("t", 0, bs[:3])
    assert [r.base_offset for r in res] == [0, 1, 2] and not any(r.duplicate for r in res)
    # A retried run that starts with a duplicate: the duplicate is recognised, the rest appended.
    res = broker.produce_batches("t", 0, [bs[2], bs[3]])
    assert [(r.base_offset, r.duplicate) for r in res] == [(2, True), (3, False)]
    # A gap inside a run: the batches before it land, the rest get the error.
    later = [batch([b"x"], pid=pid, epoch=0, seq=4), batch([b"y"], pid=pid, epoch=0, seq=9),
             batch([b"z"], pid=pid, epoch=0, seq=10)]
    res = broker.produce_batches("t", 0, later)
    assert [r.error_code for r in res] == [0, 45, 45]
    assert [v for _, v in read_values(broker, "t", 0)] == [b"0", b"1", b"2", b"3", b"x"]


def test_delete_records_and_out_of_range(broker):
    broker.create_topic("t")
    for i in range(5):
        broker.append("t", 0, batch([b"%d" % i]))
    assert broker.delete_records("t", 0, 3) == 3
    res = broker.fetch("t", 0, 1)
    assert res.error_code == 1 and res.log_start_offset == 3
    assert read_values(broker, "t", 0, 3) == [(3, b"3"), (4, b"4")]
    with pytest.raises(OffsetOutOfRangeError):
        broker.delete_records("t", 0, 99)
    assert broker.delete_records("t", 0, -1) == 5
    with pytest.raises(UnknownTopicOrPartitionError):   # not created yet: Kafka's answer too
        broker.delete_records("__consumer_offsets", 0, 0)
    broker.ensure_offsets_topic()
    with pytest.raises(InvalidTopicError):
        broker.delete_records("__consumer_offsets", 0, 0)


def test_retention_runs_on_tick(broker, clock):
    broker.create_topic("t", config={"segment.bytes": 150, "retention.ms": 1000})
    for i in range(6):
        broker.append("t", 0, batch([b"v" * 40], ts=clock.t))
    segments = len(broker.logs.get_log("t", 0).segments)
    assert segments > 2
    clock.t += 5000
    broker.tick(clock.t + broker.config.log_retention_check_interval_ms)
    assert len(broker.logs.get_log("t", 0).segments) == 1
    assert broker.log_start_offset("t", 0) > 0


def test_commit_offsets_through_broker_checks_partitions(broker):
    broker.create_topic("t", 2)
    res = broker.commit_offsets("g", {"t": {0: 5, 7: 1}, "nope": {0: 1}})
    assert res == {"t": {0: 0, 7: 3}, "nope": {0: 3}}
    fetched = broker.fetch_offsets("g", {"t": [0, 1]})
    assert fetched.topics["t"][0].offset == 5 and fetched.topics["t"][1].offset == -1


# ------------------------------------------------------------------------------ restarts

def test_restart_keeps_topics_configs_producer_state_and_ids(tmp_path, clock):
    path = tmp_path / "d"
    with Broker(path, clock=clock, background=False, offsets_topic_num_partitions=1) as b:
        b.create_topic("t", 2, config={"retention.ms": 1234})
        pid = b.init_producer_id().producer_id
        last = batch([b"a"], pid=pid, epoch=0, seq=0)
        b.append("t", 1, last)
        b.commit_offsets("g", {"t": {1: 1}})
    with Broker(path, clock=clock, background=False, offsets_topic_num_partitions=1) as b:
        assert b.had_clean_shutdown
        assert b.num_partitions("t") == 2
        assert b.describe_configs("t", ["retention.ms"])[0].value == "1234"
        dup = b.produce("t", 1, last)
        assert dup.duplicate and dup.base_offset == 0
        assert b.produce("t", 1, batch([b"b"], pid=pid, epoch=0, seq=5)).error_code == 45
        assert b.init_producer_id().producer_id > pid
        assert b.fetch_offsets("g", {"t": [1]}).topics["t"][1].offset == 1


def test_unclean_restart_rebuilds_producer_state_from_the_log(tmp_path, clock):
    path = tmp_path / "d"
    b = Broker(path, clock=clock, background=False, offsets_topic_num_partitions=1)
    b.create_topic("t")
    pid = b.init_producer_id().producer_id
    batches = [batch([b"%d" % i], pid=pid, epoch=0, seq=i) for i in range(3)]
    for x in batches:
        b.append("t", 0, x)
    b.logs.flush()
    # A crash: no close (so no producer snapshot and no clean-shutdown marker); the
    # directory's lock goes as a dead process's would.
    b._bg_stop.set()
    b.logs._dir_lock.release()
    for t in b._topics.values():
        for p in t.partitions:
            assert p.producers.list_snapshots() == []
    b2 = Broker(path, clock=clock, background=False, offsets_topic_num_partitions=1)
    try:
        assert not b2.had_clean_shutdown
        assert b2.produce("t", 0, batches[2]).duplicate
        assert b2.produce("t", 0, batch([b"3"], pid=pid, epoch=0, seq=3)).base_offset == 3
    finally:
        b2.close()


def test_registry_is_authoritative_after_a_crash(tmp_path, clock):
    path = tmp_path / "d"
    with Broker(path, clock=clock, background=False, offsets_topic_num_partitions=1) as b:
        b.create_topic("gone", 2)
        b.create_topic("grow", 1)
    reg_path = path / REGISTRY_FILE
    reg = json.loads(reg_path.read_text())
    # As if a delete crashed after the registry write, and a create after it.
    del reg["topics"]["gone"]
    reg["topics"]["grow"]["partitions"] = 3
    reg_path.write_text(json.dumps(reg))
    with Broker(path, clock=clock, background=False, offsets_topic_num_partitions=1) as b:
        assert not b.has_topic("gone")
        assert not (path / "gone-0").exists()
        assert b.num_partitions("grow") == 3 and (path / "grow-2").is_dir()


def test_corrupt_registry_is_a_loud_error(tmp_path, clock):
    path = tmp_path / "d"
    Broker(path, clock=clock, background=False, offsets_topic_num_partitions=1).close()
    (path / REGISTRY_FILE).write_text("{not json")
    with pytest.raises(KafkaStorageError, match="not a valid pylog topic registry"):
        Broker(path, clock=clock, background=False)


def test_compacted_topics_are_cleaned_on_tick(broker, clock):
    broker.create_topic("c", config={"cleanup.policy": "compact", "segment.bytes": 300,
                                     "min.cleanable.dirty.ratio": 0.01})
    for round_ in range(6):
        for k in (b"a", b"b"):
            broker.append("c", 0, batch([b"%s-%d" % (k, round_)], keys=[k], ts=clock.t))
    before = read_values(broker, "c", 0)
    assert len(before) == 12
    clock.t += broker.config.log_cleaner_backoff_ms
    broker.tick()
    after = read_values(broker, "c", 0)
    assert len(after) < len(before)
    latest = {}
    for _, v in after:
        latest[v[:1]] = v
    assert latest == {b"a": b"a-5", b"b": b"b-5"}          # the newest value of each key survives
    assert [o for o, _ in after] == sorted(o for o, _ in after)


def test_deleting_a_topic_drops_its_committed_offsets(broker):
    broker.create_topic("t", 2)
    assert broker.commit_offsets("g", {"t": {0: 7, 1: 3}}) == {"t": {0: 0, 1: 0}}
    broker.delete_topic("t")
    broker.create_topic("t", 2)
    fetched = broker.fetch_offsets("g", {"t": [0, 1]}).topics["t"]
    assert (fetched[0].offset, fetched[1].offset) == (-1, -1)


def test_idle_producer_state_expires(broker, clock):
    broker.create_topic("t")
    pid = broker.init_producer_id().producer_id
    broker.append("t", 0, batch([b"a"], pid=pid, epoch=0, seq=0, ts=clock.t))
    assert [p.producer_id for p in broker.describe_producers("t", 0)] == [pid]
    clock.t += broker.config.producer_id_expiration_ms // 2
    broker.tick(clock.t + broker.config.producer_id_expiration_check_interval_ms)
    assert [p.producer_id for p in broker.describe_producers("t", 0)] == [pid]    # not idle long enough
    clock.t += broker.config.producer_id_expiration_ms
    broker.tick(clock.t + 2 * broker.config.producer_id_expiration_check_interval_ms)
    assert broker.describe_producers("t", 0) == []
    # Forgotten: its next batch is accepted as from a new producer (any sequence).
    assert broker.produce("t", 0, batch([b"b"], pid=pid, epoch=0, seq=1, ts=clock.t)).error_code == 0


def test_offset_for_leader_epoch_follows_the_epoch_cache(tmp_path, clock):
    path = tmp_path / "d"
    with Broker(path, clock=clock, background=False, offsets_topic_num_partitions=1) as b:
        b.create_topic("t")

        def ask(epoch, current=-1, partition=0):
            r = b.offset_for_leader_epoch("t", partition, epoch, current)
            return r.error_code, r.leader_epoch, r.end_offset

        # The current epoch (0) has begun at the log end offset, even with no record yet.
        assert ask(0) == (0, 0, 0)
        assert ask(1) == (0, -1, -1) and ask(-1) == (0, -1, -1)
        assert ask(0, current=1)[0] == 75       # UNKNOWN_LEADER_EPOCH: the client is ahead
        assert ask(0, partition=1)[0] == 3      # UNKNOWN_TOPIC_OR_PARTITION
        assert b.offset_for_leader_epoch("nope", 0, 0).error_code == 3
        assert b.offset_for_leader_epoch("t", 0, "0").error_code == 42   # INVALID_REQUEST
        b.append("t", 0, batch([b"a", b"b", b"c"]))
        assert ask(0) == (0, 0, 3) and ask(0, current=0) == (0, 0, 3)
    # A leader change as the registry records it: the topic is now in epoch 2.
    reg_path = path / REGISTRY_FILE
    reg = json.loads(reg_path.read_text())
    reg["topics"]["t"]["leader_epoch"] = 2
    reg_path.write_text(json.dumps(reg))
    with Broker(path, clock=clock, background=False, offsets_topic_num_partitions=1) as b:

        def ask(epoch, current=-1):
            r = b.offset_for_leader_epoch("t", 0, epoch, current)
            return r.error_code, r.leader_epoch, r.end_offset

        assert ask(0, current=1)[0] == 74       # FENCED_LEADER_EPOCH: the client is behind
        assert ask(0, current=3)[0] == 75
        # Epoch 2 began at offset 3 with no record yet; 1 never held a record, so its
        # answer is epoch 0, which lasted until the current one began.
        assert ask(2, current=2) == (0, 2, 3)
        assert ask(1) == (0, 0, 3) and ask(0) == (0, 0, 3)
        assert ask(3) == (0, -1, -1)
        b.append("t", 0, batch([b"d", b"e"]))
        assert [tuple(e) for e in b.logs.get_log("t", 0).leader_epochs] == [(0, 0), (2, 3)]
        assert ask(2) == (0, 2, 5) and ask(1) == (0, 0, 3) and ask(0) == (0, 0, 3)
        # Records of epoch 0 deleted: an epoch older than every known one ends where
        # the oldest known begins.
        b.delete_records("t", 0, 4)
        assert ask(0) == (0, 0, 4) and ask(2) == (0, 2, 5)
