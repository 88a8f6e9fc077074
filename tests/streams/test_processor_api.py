"""The Processor API: init/process/close, forward to named children, punctuation on
stream time and wall-clock time, state stores, through the TopologyTestDriver."""

from __future__ import annotations

import pytest

from pylog.streams import (Processor, PunctuationType, Record, StreamsBuilder, StreamsError, TestRecord, Topology,
                           TopologyError, TopologyTestDriver)
from pylog.streams.state import Stores

from .conftest import CONFIG, L, S


class CountProcessor(Processor):
    """Counts per key in store "counts"; forwards each new count to child "counts-sink",
    every value to "echo"; emits all counts on each punctuation."""

    def __init__(self, log):
        self.log = log

    def init(self, context):
        super().init(context)
        self.store = context.get_state_store("counts")
        self.log.append(("init", context.task_id, context.application_id))
        context.schedule(10, PunctuationType.STREAM_TIME, self.on_stream_time)
        context.schedule(1000, PunctuationType.WALL_CLOCK_TIME, self.on_wall_clock)

    def process(self, record):
        key = record.key.encode()
        n = int.from_bytes(self.store.get(key) or b"\0", "big") + 1
        self.store.put(key, n.to_bytes(8, "big"))
        md = self.context.record_metadata()
        self.context.forward(record.with_value(n), "counts-sink")
        self.context.forward(record.with_value(f"{record.value}@{md.topic}/{md.offset}"), "echo")

    def on_stream_time(self, ts):
        self.log.append(("stream", ts, self.context.current_stream_time_ms()))

    def on_wall_clock(self, ts):
        self.log.append(("wall", ts))
        for k, v in self.store.all():
            self.context.forward(Record(k.decode(), int.from_bytes(v, "big"), ts), "counts-sink")

    def close(self):
        self.log.append(("close",))


def topology(log):
    t = Topology()
    t.add_source("src", "in", key_serde=S, value_serde=S)
    t.add_processor("count", lambda: CountProcessor(log), "src")
    t.add_state_store(Stores.in_memory_key_value_store("counts"), "count")
    t.add_sink("counts-sink", "counts", "count", key_serde=S, value_serde=L)
    t.add_sink("echo", "echo", "count", key_serde=S, value_serde=S)
    return t


def test_processor_lifecycle_forward_to_children_and_punctuation():
    log = []
    d = TopologyTestDriver(topology(log), CONFIG, initial_wall_clock_time_ms=0)
    i = d.create_input_topic("in", S, S)
    i.pipe_input("a", "x", 5)     # stream time 5: the first punctuation (aligned to 0)
    i.pipe_input("a", "y", 7)     # not yet 10
    i.pipe_input("b", "z", 31)    # 31: one punctuation, the missed ones skipped
    counts = d.create_output_topic("counts", S, L)
    assert counts.read_records_to_list() == [TestRecord("a", 1, 5), TestRecord("a", 2, 7), TestRecord("b", 1, 31)]
    assert d.create_output_topic("echo", S, S).read_values_to_list() == ["x@in/0", "y@in/1", "z@in/2"]
    d.advance_wall_clock_time(999)
    assert counts.is_empty()
    d.advance_wall_clock_time(1)
    assert counts.read_key_values_to_list() == [("a", 2), ("b", 1)]
    d.close()
    assert log == [("init", "0_0", "app"), ("stream", 5, 5), ("stream", 31, 31), ("wall", 1000), ("close",)]
    assert d.get_state_store("counts").is_open() is False


def test_cancelled_punctuator_stops():
    fired = []

    class P(Processor):
        def init(self, context):
            self.c = context.schedule(5, PunctuationType.STREAM_TIME, self.tick)

        def tick(self, ts):
            fired.append(ts)
            if len(fired) == 2:
                self.c.cancel()

        def process(self, record):
            pass

    t = Topology().add_source("s", "in").add_processor("p", P, "s")
    with TopologyTestDriver(t, CONFIG) as d:
        i = d.create_input_topic("in", S, S)
        for ts in (0, 5, 10, 15):
            i.pipe_input("k", "v", ts)
    assert fired == [0, 5]


def test_store_access_is_checked_and_forward_to_unknown_child_fails():
    class Bad(Processor):
        def process(self, record):
            self.context.forward(record, "nope")

    t = Topology().add_source("s", "in").add_processor("p", Bad, "s")
    with TopologyTestDriver(t, CONFIG) as d, pytest.raises(StreamsError, match="no child named 'nope'"):
        d.create_input_topic("in", S, S).pipe_input("k", "v", 0)

    class Peeker(Processor):
        def init(self, context):
            context.get_state_store("other")

    t = Topology().add_source("s", "in").add_processor("p", Peeker, "s").add_processor("q", Processor, "s")
    t.add_state_store(Stores.in_memory_key_value_store("other"), "q")
    with pytest.raises(StreamsError, match="not connected to state store 'other'"):
        TopologyTestDriver(t, CONFIG)


def test_topology_validation():
    t = Topology().add_source("s", "in")
    with pytest.raises(TopologyError, match="already in the topology"):
        t.add_source("s", "other")
    with pytest.raises(TopologyError, match="already read by source 's'"):
        t.add_source("s2", "in")
    with pytest.raises(TopologyError, match="parent node 'missing'"):
        t.add_processor("p", Processor, "missing")
    t.add_sink("k", "out", "s")
    with pytest.raises(TopologyError, match="sink 'k' cannot be the parent"):
        t.add_processor("p", Processor, "k")
    with pytest.raises(TopologyError, match="not in the topology"):
        t.connect_processor_and_state_stores("k", "nostore")


def test_dsl_process_with_a_builder_store_and_process_values():
    class Dedup(Processor):
        def init(self, context):
            super().init(context)
            self.seen = context.get_state_store("seen")

        def process(self, record):
            if self.seen.get(record.value.encode()) is None:
                self.seen.put(record.value.encode(), b"1")
                self.context.forward(record.with_key(record.value))

    class Upper(Processor):
        def process(self, record):
            self.context.forward(record.with_value(record.value.upper()))

    b = StreamsBuilder(CONFIG)
    b.add_state_store(Stores.in_memory_key_value_store("seen"))
    b.stream("in").process(Dedup, "seen").process_values(Upper).to("out")
    with TopologyTestDriver(b.build(), CONFIG) as d:
        d.create_input_topic("in", S, S).pipe_key_value_list([("1", "a"), ("2", "b"), ("3", "a")], 0, 1)
        assert d.create_output_topic("out", S, S).read_key_values_to_list() == [("a", "A"), ("b", "B")]
        assert sorted(k for k, _ in d.get_state_store("seen").all()) == [b"a", b"b"]
