"""KStream operators through the TopologyTestDriver, with Kafka Streams' semantics."""

from __future__ import annotations

import io
import re

import pytest

from pylog.streams import (Branched, Grouped, Printed, Produced, Repartitioned, Serdes, StreamsBuilder,
                           StreamsError, TestRecord, TopologyError, TopologyTestDriver)

from .conftest import CONFIG, L, S, driver_for


def run(builder, inputs, outputs, value_serdes=None):
    """Pipe ``inputs`` [(topic, key, value, ts)], return {topic: [TestRecord]}."""
    value_serdes = value_serdes or {}
    with driver_for(builder) as d:
        topics = {}
        for topic, k, v, ts in inputs:
            if topic not in topics:
                topics[topic] = d.create_input_topic(topic, S, S)
            topics[topic].pipe_input(k, v, ts)
        return {o: d.create_output_topic(o, S, value_serdes.get(o, S)).read_records_to_list() for o in outputs}


def test_stateless_chain(builder):
    s = builder.stream("in")
    (s.filter(lambda k, v: v != "")
      .filter_not(lambda k, v: v == "skip")
      .map_values(str.upper)
      .map_values(lambda k, v: f"{k}={v}")
      .to("out"))
    out = run(builder, [("in", "a", "x", 1), ("in", "b", "", 2), ("in", "c", "skip", 3), ("in", "d", "y", 4)], ["out"])
    assert out["out"] == [TestRecord("a", "a=X", 1), TestRecord("d", "d=Y", 4)]


def test_map_flat_map_select_key_flat_map_values(builder):
    s = builder.stream("in")
    s.map(lambda k, v: (v, k)).to("mapped")
    s.flat_map(lambda k, v: [(k + str(i), v) for i in range(2)]).to("flat")
    s.select_key(lambda k, v: v[0]).to("rekeyed")
    s.flat_map_values(lambda v: v.split()).to("words")
    out = run(builder, [("in", "k", "a b", 7)], ["mapped", "flat", "rekeyed", "words"])
    assert out["mapped"] == [TestRecord("a b", "k", 7)]
    assert [(r.key, r.value) for r in out["flat"]] == [("k0", "a b"), ("k1", "a b")]
    assert out["rekeyed"] == [TestRecord("a", "a b", 7)]
    assert [r.value for r in out["words"]] == ["a", "b"]


def test_peek_foreach_and_print(builder):
    seen, each = [], []
    buf = io.StringIO()
    s = builder.stream("in").peek(lambda k, v: seen.append((k, v)))
    s.foreach(lambda k, v: each.append(v))
    s.print(Printed(stream=buf).with_label("lbl"))
    run(builder, [("in", "a", "1", 0), ("in", "b", "2", 0)], [])
    assert seen == [("a", "1"), ("b", "2")] and each == ["1", "2"]
    assert buf.getvalue() == "[lbl]: a, 1\n[lbl]: b, 2\n"


def test_split_first_matching_branch_and_default(builder):
    branches = (builder.stream("in").split("s-")
                .branch(lambda k, v: v.startswith("a"), Branched.as_("a"))
                .branch(lambda k, v: v.startswith("ab"))   # never: "a" matched first
                .branch(lambda k, v: v.startswith("b"), Branched.with_function(lambda ks: ks.map_values(str.upper)))
                .default_branch())
    assert sorted(branches) == ["s-0", "s-2", "s-3", "s-a"]
    for name, ks in branches.items():
        ks.to(name)
    out = run(builder, [("in", "1", "abc", 0), ("in", "2", "bcd", 0), ("in", "3", "xyz", 0)],
              ["s-a", "s-2", "s-3", "s-0"])
    assert [r.value for r in out["s-a"]] == ["abc"]
    assert out["s-2"] == []
    assert [r.value for r in out["s-3"]] == ["BCD"]
    assert [r.value for r in out["s-0"]] == ["xyz"]


def test_merge_keeps_arrival_order(builder):
    builder.stream("a").merge(builder.stream("b")).to("out")
    out = run(builder, [("a", "1", "x", 5), ("b", "2", "y", 3), ("a", "3", "z", 9)], ["out"])
    assert [(r.key, r.timestamp) for r in out["out"]] == [("1", 5), ("2", 3), ("3", 9)]


def test_to_with_topic_name_extractor_and_serdes(builder):
    builder.stream("in").map_values(int).to(lambda k, v, ctx: f"out-{k}", Produced(value_serde=L))
    with driver_for(builder) as d:
        d.create_input_topic("in", S, S).pipe_key_value_list([("x", "1"), ("y", "2"), ("x", "3")], 10, 1)
        assert d.create_output_topic("out-x", S, L).read_key_values_to_list() == [("x", 1), ("x", 3)]
        assert d.create_output_topic("out-y", S, L).read_records_to_list() == [TestRecord("y", 2, 11)]


def test_to_with_a_topic_name_extractor_subclass(builder):
    from pylog.streams import TopicNameExtractor

    class ByKey(TopicNameExtractor):
        def extract(self, key, value, record_context):
            return f"by-{key}"

    class Incomplete(TopicNameExtractor):
        pass

    with pytest.raises(TypeError):
        Incomplete()   # an abstract base: extract must be defined
    builder.stream("in").to(ByKey())
    with driver_for(builder) as d:
        d.create_input_topic("in", S, S).pipe_key_value_list([("a", "1"), ("b", "2")], 10, 1)
        assert d.create_output_topic("by-a", S, S).read_key_values_to_list() == [("a", "1")]
        assert d.create_output_topic("by-b", S, S).read_key_values_to_list() == [("b", "2")]


def test_repartition_goes_through_an_internal_topic(builder):
    builder.stream("in").repartition(Repartitioned.as_("rp")).map_values(str.upper).to("out")
    with driver_for(builder) as d:
        d.create_input_topic("in", S, S).pipe_input("k", "v", 3)
        assert d.create_output_topic("app-rp-repartition", S, S).read_records_to_list() == [TestRecord("k", "v", 3)]
        assert d.create_output_topic("out", S, S).read_records_to_list() == [TestRecord("k", "V", 3)]


def test_group_by_repartitions_and_counts(builder):
    (builder.stream("in").flat_map_values(lambda v: v.split())
     .group_by(lambda k, w: w, Grouped.as_("by-word"))
     .count(materialized="counts").to_stream().to("out", value_serde=L))
    with driver_for(builder) as d:
        i = d.create_input_topic("in", S, S)
        i.pipe_input("l1", "a b a", 1)
        i.pipe_input("l2", "b", 2)
        out = d.create_output_topic("out", S, L)
        assert [(r.key, r.value, r.timestamp) for r in out.read_records_to_list()] == [
            ("a", 1, 1), ("b", 1, 1), ("a", 2, 1), ("b", 2, 2)]
        assert dict(d.get_key_value_store("counts").all()) == {"a": 2, "b": 2}
        assert d.create_output_topic("app-by-word-repartition", S, S).get_queue_size() == 4
        changelog = d.create_output_topic("app-counts-changelog", S, L).read_records_to_list()
        assert changelog[-1] == TestRecord("b", 2, 2)


def test_reduce_aggregate_timestamps_and_null_handling(builder):
    g = builder.stream("in").group_by_key()
    g.reduce(lambda a, v: a + v).to_stream().to("reduced")
    g.aggregate(lambda: 0, lambda k, v, agg: agg + len(v or "")).to_stream().to("agg", value_serde=Serdes.json())
    with driver_for(builder) as d:
        i = d.create_input_topic("in", S, S)
        i.pipe_input("k", "ab", 10)
        i.pipe_input("k", "c", 5)      # older: the aggregate keeps the newer timestamp
        i.pipe_input(None, "x", 20)    # null key: dropped
        i.pipe_input("k", None, 21)    # null value: dropped by reduce, counted by aggregate
        assert d.create_output_topic("reduced", S, S).read_records_to_list() == [
            TestRecord("k", "ab", 10), TestRecord("k", "abc", 10)]
        assert [(r.value, r.timestamp) for r in d.create_output_topic("agg", S, Serdes.json()).read_records_to_list()] \
            == [(2, 10), (3, 10), (3, 21)]
        assert d.metrics()["dropped-records"] == 3


def test_cogroup_shares_one_store(builder):
    ga = builder.stream("a").group_by_key()
    gb = builder.stream("b").group_by_key()
    (ga.cogroup(lambda k, v, agg: agg + int(v)).cogroup(gb, lambda k, v, agg: agg - int(v))
     .aggregate(lambda: 100, materialized="co").to_stream().to("out", value_serde=Serdes.json()))
    with driver_for(builder) as d:
        d.create_input_topic("a", S, S).pipe_input("k", "5", 1)
        d.create_input_topic("b", S, S).pipe_input("k", "2", 2)
        assert d.create_output_topic("out", S, Serdes.json()).read_key_values_to_list() == [("k", 105), ("k", 103)]
        assert d.get_key_value_store("co").get("k") == 103


def test_timestamp_extractor_and_invalid_timestamps():
    b = StreamsBuilder(CONFIG)
    b.stream("in", timestamp_extractor=lambda rec, partition_time: int(rec.value)).to("out")
    with driver_for(b) as d:
        i = d.create_input_topic("in", S, S)
        i.pipe_input("k", "42", 1)
        i.pipe_input("k", "-1", 2)
        assert d.create_output_topic("out", S, S).read_records_to_list() == [TestRecord("k", "42", 42)]
        assert d.metrics()["dropped-records"] == 1


def test_processing_errors_name_the_task_and_topic(builder):
    builder.stream("in").map_values(lambda v: 1 // 0).to("out")
    with driver_for(builder) as d:
        with pytest.raises(StreamsError, match=re.escape("task 0_0") + ".*topic=in, partition=0, offset=0"):
            d.create_input_topic("in", S, S).pipe_input("k", "v", 0)


def test_unknown_input_topic_is_rejected(builder):
    builder.stream("in").to("out")
    with driver_for(builder) as d, pytest.raises(ValueError, match="unknown topic 'nope'"):
        d.create_input_topic("nope", S, S).pipe_input("k", "v")


def test_pattern_source_reads_every_matching_topic():
    b = StreamsBuilder(CONFIG)
    b.stream(pattern="in-.*").map_values(str.upper).to("out")
    with driver_for(b) as d:
        d.create_input_topic("in-1", S, S).pipe_input("k", "a", 0)
        d.create_input_topic("in-2", S, S).pipe_input("k", "b", 0)
        assert d.create_output_topic("out", S, S).read_values_to_list() == ["A", "B"]


def test_input_topic_clock_and_output_topic_reads():
    b = StreamsBuilder(CONFIG)
    b.stream("in").to("out")
    with TopologyTestDriver(b.build(), CONFIG) as d:
        i = d.create_input_topic("in", S, S, start_timestamp_ms=1000, auto_advance_ms=10)
        i.pipe_value_list(["a", "b"])
        i.pipe_input("k", None)
        out = d.create_output_topic("out", S, S)
        assert out.get_queue_size() == 3
        assert out.read_record() == TestRecord(None, "a", 1000)
        assert out.read_value() == "b"
        assert out.read_key_value() == ("k", None)
        assert out.is_empty()
        with pytest.raises(LookupError):
            out.read_record()


def test_to_table_and_print_to_file(tmp_path, builder):
    path = tmp_path / "printed.txt"
    s = builder.stream("in")
    s.print(Printed.to_file(str(path)).with_key_value_mapper(lambda k, v: f"{k}={v}"))
    s.to_table(materialized="latest").to_stream().to("out")
    with driver_for(builder) as d:
        d.create_input_topic("in", S, S).pipe_key_value_list([("a", "1"), ("a", None), ("b", "2")], 0, 1)
        assert d.create_output_topic("out", S, S).read_key_values_to_list() == [("a", "1"), ("a", None), ("b", "2")]
        assert d.get_key_value_store("latest").all() == [("b", "2")]
    assert path.read_text() == "[]: a=1\n[]: a=None\n[]: b=2\n"


def test_build_errors_say_what_is_wrong(builder):
    s = builder.stream("in")
    with pytest.raises(TopologyError, match="outer_join is only defined between two KStreams"):
        s.outer_join(builder.table("t"), lambda a, b: a, None)
    with pytest.raises(TopologyError, match="needs JoinWindows"):
        s.join(builder.stream("other"), lambda a, b: a)
    with pytest.raises(TopologyError, match="key_selector"):
        s.join(builder.global_table("g"), lambda a, b: a)
    with pytest.raises(TypeError, match="windowed_by takes"):
        s.group_by_key().windowed_by(5)


@pytest.mark.parametrize("handler", ["log_and_fail", "log_and_continue"])
def test_exception_handlers(handler):
    config = dict(CONFIG, **{"default.deserialization.exception.handler": handler,
                             "processing.exception.handler": handler})
    b = StreamsBuilder(config)
    b.stream("in", value_serde=L).map_values(lambda v: 100 // v).to("out", value_serde=L)
    with TopologyTestDriver(b.build(), config) as d:
        i = d.create_input_topic("in", S, Serdes.bytes())
        i.pipe_input("a", L.serialize(5), 0)
        if handler == "log_and_fail":
            with pytest.raises(StreamsError, match="long needs 8 bytes"):
                i.pipe_input("b", b"xx", 1)
            with pytest.raises(StreamsError, match="ZeroDivisionError"):
                i.pipe_input("c", L.serialize(0), 2)
        else:
            i.pipe_input("b", b"xx", 1)
            i.pipe_input("c", L.serialize(0), 2)
            i.pipe_input("d", L.serialize(50), 3)
            assert d.metrics()["dropped-records"] == 2
        out = d.create_output_topic("out", S, L).read_key_values_to_list()
        assert out == ([("a", 20)] if handler == "log_and_fail" else [("a", 20), ("d", 2)])
