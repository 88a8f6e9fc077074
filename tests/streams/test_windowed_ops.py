"""Windowed reduce/aggregate of every window kind, the window and session store
getters of the driver, named suppression, windowed keys on output topics."""

from __future__ import annotations

from pylog.streams import (Materialized, Serdes, SessionWindows, SlidingWindows, StreamsBuilder, Suppressed,
                           TimeWindows, TopologyTestDriver, Window, Windowed, WindowedSerdes)

from .conftest import S

CFG = {"application.id": "app", "default.key.serde": S, "default.value.serde": S}
J = Serdes.json()


def pipe(b, records, topic="in"):
    d = TopologyTestDriver(b.build(), CFG, initial_wall_clock_time_ms=0)
    i = d.create_input_topic(topic, S, S)
    for k, v, ts in records:
        i.pipe_input(k, v, ts)
    return d


def test_time_window_reduce_and_aggregate_with_the_store_getter():
    b = StreamsBuilder(CFG)
    g = b.stream("in").group_by_key().windowed_by(TimeWindows.of_size_and_grace(10, 100))
    g.reduce(lambda a, v: a + v, materialized="r")
    g.aggregate(lambda: [], lambda k, v, agg: agg + [v], materialized=Materialized.as_("agg").with_value_serde(J))
    with pipe(b, [("k", "a", 1), ("k", "b", 12), ("k", "c", 5)]) as d:
        r = d.get_window_store("r")
        assert r.fetch("k", 0) == "ac" and r.fetch("k", 10) == "b"
        assert r.fetch_range("k", 0, 100) == [(0, "ac"), (10, "b")]
        assert d.get_window_store("agg").all() == [(Windowed("k", Window(0, 10)), ["a", "c"]),
                                                   (Windowed("k", Window(10, 20)), ["b"])]


def test_session_reduce_and_aggregate_merge_with_the_merger():
    b = StreamsBuilder(CFG)
    g = b.stream("in").group_by_key().windowed_by(SessionWindows.of_inactivity_gap_and_grace(5, 100))
    g.reduce(lambda a, v: a + v, materialized="r")
    g.aggregate(lambda: 0, lambda k, v, agg: agg + len(v), lambda k, a, c: a + c,
                materialized=Materialized.as_("agg").with_value_serde(Serdes.long()))
    with pipe(b, [("k", "aa", 1), ("k", "b", 20), ("k", "ccc", 10), ("k", "d", 15)]) as d:
        # 10 is 9 after 1: its own session; 15 bridges [10,10] and [20,20] into [10,20]:
        # the sessions merge in store order, then the new value is added
        assert d.get_session_store("r").fetch("k") == [(Windowed("k", Window(1, 1)), "aa"),
                                                       (Windowed("k", Window(10, 20)), "cccbd")]
        assert d.get_session_store("agg").fetch_session("k", 10, 20) == 5


def test_sliding_window_aggregate():
    b = StreamsBuilder(CFG)
    (b.stream("in").group_by_key().windowed_by(SlidingWindows.of_time_difference_and_grace(10, 100))
     .aggregate(lambda: "", lambda k, v, agg: agg + v, materialized="s"))
    with pipe(b, [("k", "a", 20), ("k", "b", 25)]) as d:
        assert dict(((w.window.start, w.window.end), v) for w, v in d.get_window_store("s").all()) == {
            (10, 20): "a", (15, 25): "ab", (21, 31): "b"}


def test_named_suppression_and_windowed_keys_on_an_output_topic():
    b = StreamsBuilder(CFG)
    (b.stream("in").group_by_key().windowed_by(TimeWindows.of_size_with_no_grace(10)).count()
     .suppress(Suppressed.until_window_closes().with_name("final")).to_stream().to("out"))
    with pipe(b, [("k", "a", 1), ("k", "b", 3), ("j", "c", 12)]) as d:
        out = d.create_output_topic("out", WindowedSerdes.time_windowed(S, 10), Serdes.long())
        assert out.read_key_values_to_list() == [(Windowed("k", Window(0, 10)), 2)]
        changelog = d.create_output_topic("app-final-store-changelog", Serdes.bytes(), Serdes.bytes())
        assert changelog.get_queue_size() == 4   # three buffered updates, one eviction


def test_sliding_final_results_survive_a_jump_in_stream_time():
    # a@19 closes [1,7] and puts [13,19]: the store's time (13) is exactly a retention
    # (2d + grace) past [1,7], which Kafka's time-ordered store still holds and emits
    from pylog.streams import EmitStrategy
    cfg = dict(CFG, **{"__emit.interval.ms.kstreams.windowed.aggregation__": 0})
    b = StreamsBuilder(cfg)
    (b.stream("in").group_by_key().windowed_by(SlidingWindows.of_time_difference_and_grace(6, 0))
     .emit_strategy(EmitStrategy.on_window_close()).count()
     .to_stream().map(lambda k, v: (f"{k.key}@{k.window.start}/{k.window.end}", v)).to("out", value_serde=Serdes.long()))
    with TopologyTestDriver(b.build(), cfg, initial_wall_clock_time_ms=0) as d:
        i = d.create_input_topic("in", S, S)
        i.pipe_input("a", "v", 7)
        i.pipe_input("a", "v", 19)
        assert [(r.key, r.value, r.timestamp) for r in
                d.create_output_topic("out", S, Serdes.long()).read_records_to_list()] == [("a@1/7", 1, 7)]
