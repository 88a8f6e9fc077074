"""``suppress``: final results of session windows (the gap counts as grace), bounded
buffers (records and Kafka's byte estimate; emit early or shut down when full), the old
value a buffered key leaves with, and the buffer's changelog keeping prior/old/new
across a restore.  Kafka Streams' ``KTableSuppressProcessor`` over its
``InMemoryTimeOrderedKeyValueChangeBuffer``; the kafka_diff tests compare the same
topologies with Kafka itself."""

from __future__ import annotations

import pytest

import pylog

from pylog.streams import (BufferConfig, Grouped, Materialized, SessionWindows, StreamsBuilder, Suppressed,
                           TopologyTestDriver)
from pylog.streams.task import StreamsError

from .conftest import L, S

CFG = {"application.id": "app", "default.key.serde": S, "default.value.serde": S}


def run(b, records, out_serde=L, cfg=CFG):
    with TopologyTestDriver(b.build(), cfg, initial_wall_clock_time_ms=0) as d:
        i = d.create_input_topic("in", S, S)
        for k, v, ts in records:
            i.pipe_input(k, v, ts)
        return [(r.key, r.value, r.timestamp) for r in d.create_output_topic("out", S, out_serde).read_records_to_list()]


def wk(w):
    return f"{w.key}@{w.window.start}/{w.window.end}"


def test_session_final_results_wait_for_gap_plus_grace():
    # Kafka (GraphGraceSearchUtil): a session's final result waits grace + inactivity gap
    # past its end, since a later record within the gap still extends it
    b = StreamsBuilder(CFG)
    (b.stream("in").group_by_key().windowed_by(SessionWindows.of_inactivity_gap_and_grace(10, 0)).count()
     .suppress(Suppressed.until_window_closes()).to_stream().map(lambda k, v: (wk(k), v)).to("out", value_serde=L))
    assert run(b, [("a", "v", 0), ("a", "v", 5), ("a", "v", 12), ("a", "v", 40)]) == [("a@0/12", 3, 12)]


def counts(buffer, limit=1000):
    b = StreamsBuilder(CFG)
    (b.stream("in").group_by_key().count().suppress(Suppressed.until_time_limit(limit, buffer))
     .to_stream().to("out", value_serde=L))
    return b


def test_max_records_emits_the_oldest_early():
    b = counts(BufferConfig.max_records_(1).emit_early_when_full())
    # b enters: two records buffered, a (buffered first) goes early; c pushes b out
    assert run(b, [("a", "v", 1), ("a", "v", 2), ("b", "v", 3), ("c", "v", 4)]) == [("a", 2, 2), ("b", 1, 3)]


def test_max_bytes_counts_kafkas_record_size_estimate():
    # one buffered count of key "a" from topic "in": 8 (buffer time) + 1 (key) + 8 (the
    # prior value: the old value of the first update, the initializer's 0) + 8 (new
    # value) + the record context (8 timestamp + 8 offset + 2 topic + 4 partition) = 47
    # bytes; its next update adds an old value (1) that differs from the prior: 55
    assert run(counts(BufferConfig.max_bytes_(47).emit_early_when_full()), [("a", "v", 1)]) == []
    assert run(counts(BufferConfig.max_bytes_(46).emit_early_when_full()), [("a", "v", 1)]) == [("a", 1, 1)]
    assert run(counts(BufferConfig.max_bytes_(55).emit_early_when_full()), [("a", "v", 1), ("a", "v", 2)]) == []
    assert run(counts(BufferConfig.max_bytes_(54).emit_early_when_full()),
               [("a", "v", 1), ("a", "v", 2)]) == [("a", 2, 2)]
    # max_bytes of 1: every update is emitted at once
    assert run(counts(BufferConfig.max_bytes_(1).emit_early_when_full()),
               [("a", "v", 1), ("b", "v", 2), ("a", "v", 3)]) == [("a", 1, 1), ("b", 1, 2), ("a", 2, 3)]


@pytest.mark.parametrize("buffer", [BufferConfig.max_records_(1), BufferConfig.max_bytes_(60)])
def test_shut_down_when_full(buffer):
    b = counts(buffer.should_shut_down_when_full())
    with pytest.raises(StreamsError, match="exceeded its max capacity"):
        run(b, [("a", "v", 1), ("b", "v", 2)])


def test_a_buffered_key_leaves_with_its_latest_old_value():
    # a count (whose first old value is the initializer's 0), suppressed, grouped again:
    # the subtractor sees each emitted update's own old value (Kafka 4's buffer evicts
    # Change(new, old) of the latest update)
    b = StreamsBuilder(CFG)
    (b.stream("in").group_by_key().count().suppress(Suppressed.until_time_limit(17))
     .group_by(lambda k, v: ("all", str(v)), Grouped.with_(S, S))
     .aggregate(lambda: "", lambda k, v, a: a + "+" + v, lambda k, v, a: a + "-" + v,
                materialized=Materialized.with_(S, S))
     .to_stream().to("out", value_serde=S))
    assert run(b, [("a", "v", 1), ("b", "v", 17), ("b", "v", 68), ("b", "v", 118)], out_serde=S) == [
        ("all", "+1", 1), ("all", "+1-1+2", 68)]


def prior_app(state_dir):
    b = StreamsBuilder(CFG)
    (b.table("in").group_by(lambda k, v: (v, k), Grouped.with_(S, S)).count()
     .suppress(Suppressed.until_time_limit(10).with_name("sup"))
     .group_by(lambda k, v: ("all", str(v)), Grouped.with_(S, S))
     .aggregate(lambda: "", lambda k, v, a: a + "+" + v, lambda k, v, a: a + "-" + v,
                materialized=Materialized.with_(S, S))
     .to_stream().to("out", value_serde=S))
    return b.build(application_id="sp", config={"commit.interval.ms": 50, "state.dir": str(state_dir)})


def test_a_restored_buffer_keeps_the_prior_value(tmp_path):
    # the buffer's changelog keeps prior, old and new value (as Kafka's): after a restart
    # the buffered key still retracts the value it had before it entered the buffer
    with pylog.open(tmp_path / "data") as client:
        for topic in ("in", "out"):
            client.create_topic(topic, 1)

        def produce(*records):
            p = client.producer()
            for k, v, ts in records:
                p.send("in", key=k.encode(), value=v.encode(), timestamp_ms=ts)
            p.flush()
            p.close()
        # x counts 1 (emitted at stream time 10), then 2: buffered with prior 1
        produce(("a", "x", 0), ("z", "z", 10), ("b", "x", 11))
        prior_app(tmp_path / "state").run(client, until_idle=True)
        produce(("c", "c", 30))    # the in-memory buffer restores; z and x leave it
        prior_app(tmp_path / "state").run(client, until_idle=True)
        c = client.consumer(auto_offset_reset="earliest", enable_auto_commit=False)
        c.assign([("out", 0)])
        end = c.end_offsets([("out", 0)])[("out", 0)]
        out = []
        while c.position(("out", 0)) < end:
            out += [r.value.decode() for r in c.poll(timeout_ms=200)]
        c.close(autocommit=False)
    assert out[0] == "+1" and out[-1] == "+1+1-1+2", out


@pytest.mark.bench
def test_suppress_benchmark_runs(monkeypatch):
    # the asv bench at a small size: nothing closes, so nothing is emitted
    import importlib

    monkeypatch.setenv("PYLOG_BENCH_SMALL", "1")
    from benches import bench_streams_suppress

    mod = importlib.reload(bench_streams_suppress)
    s = mod.Suppress()
    s.setup(100)
    try:
        assert s._run() == 0
        assert s.track_records_per_s(100) > 0
    finally:
        s.teardown(100)
