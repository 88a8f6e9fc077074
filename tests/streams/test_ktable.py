"""KTable: changelog semantics, tombstones, filter/map_values, stream-table,
stream-globaltable and table-table joins, through the TopologyTestDriver."""

from __future__ import annotations

from pylog.streams import Materialized, StreamsBuilder, TestRecord, TopologyTestDriver

from .conftest import CONFIG, L, S


def driver(b):
    return TopologyTestDriver(b.build(), CONFIG, initial_wall_clock_time_ms=0)


def test_table_source_keeps_latest_and_tombstones_delete():
    b = StreamsBuilder(CONFIG)
    b.table("t", "ts").to_stream().to("out")
    with driver(b) as d:
        i = d.create_input_topic("t", S, S)
        i.pipe_input("a", "1", 1)
        i.pipe_input("a", "2", 2)
        i.pipe_input("b", "3", 3)
        i.pipe_input("a", None, 4)
        out = d.create_output_topic("out", S, S)
        assert out.read_key_values_to_map() == {"b": "3"}
        assert d.get_key_value_store("ts").all() == [("b", "3")]
        assert d.get_timestamped_key_value_store("ts").get("b") == ("3", 3)


def test_filter_and_map_values_forward_tombstones_for_dropped_rows():
    b = StreamsBuilder(CONFIG)
    b.table("t").filter(lambda k, v: int(v) > 1).map_values(lambda v: v + "!").to_stream().to("out")
    with driver(b) as d:
        i = d.create_input_topic("t", S, S)
        i.pipe_input("a", "5", 1)
        i.pipe_input("a", "0", 2)   # filtered out: the row is deleted downstream
        assert d.create_output_topic("out", S, S).read_records_to_list() == [
            TestRecord("a", "5!", 1), TestRecord("a", None, 2)]


def test_materialized_filter_skips_rows_that_never_existed():
    b = StreamsBuilder(CONFIG)
    b.table("t").filter(lambda k, v: v != "x", materialized="f").to_stream().to("out")
    with driver(b) as d:
        i = d.create_input_topic("t", S, S)
        i.pipe_input("a", "x", 1)
        i.pipe_input("a", "y", 2)
        i.pipe_input("a", "x", 3)
        assert d.create_output_topic("out", S, S).read_key_values_to_list() == [("a", "y"), ("a", None)]
        assert d.get_key_value_store("f").all() == []


def test_stream_table_join_and_left_join():
    b = StreamsBuilder(CONFIG)
    users = b.table("users")
    clicks = b.stream("clicks")
    clicks.join(users, lambda c, u: f"{u}/{c}").to("inner")
    clicks.left_join(users, lambda c, u: f"{u}/{c}").to("left")
    with driver(b) as d:
        u = d.create_input_topic("users", S, S)
        c = d.create_input_topic("clicks", S, S)
        c.pipe_input("u1", "early", 1)        # no user yet
        u.pipe_input("u1", "north", 2)        # table updates emit nothing
        c.pipe_input("u1", "c1", 3)
        u.pipe_input("u1", None, 4)
        c.pipe_input("u1", "c2", 5)
        assert d.create_output_topic("inner", S, S).read_records_to_list() == [TestRecord("u1", "north/c1", 3)]
        assert d.create_output_topic("left", S, S).read_values_to_list() == ["None/early", "north/c1", "None/c2"]


def test_stream_table_join_through_a_derived_table():
    b = StreamsBuilder(CONFIG)
    users = b.table("users").map_values(str.upper)
    b.stream("clicks").join(users, lambda c, u: f"{u}/{c}").to("out")
    with driver(b) as d:
        d.create_input_topic("users", S, S).pipe_input("u1", "north", 1)
        d.create_input_topic("clicks", S, S).pipe_input("u1", "c", 2)
        assert d.create_output_topic("out", S, S).read_values_to_list() == ["NORTH/c"]


def test_stream_join_after_key_change_repartitions():
    b = StreamsBuilder(CONFIG)
    users = b.table("users")
    b.stream("clicks").select_key(lambda k, v: v).join(users, lambda c, u: f"{u}").to("out")
    with driver(b) as d:
        d.create_input_topic("users", S, S).pipe_input("u1", "north", 1)
        d.create_input_topic("clicks", S, S).pipe_input("x", "u1", 2)
        assert d.create_output_topic("out", S, S).read_records_to_list() == [TestRecord("u1", "north", 2)]
        assert d.create_output_topic("app-KSTREAM-KEY-SELECT-0000000004-repartition", S, S).get_queue_size() == 1


def test_global_table_join_with_key_selector():
    b = StreamsBuilder(CONFIG)
    regions = b.global_table("regions", "regions-store")
    s = b.stream("orders")
    s.join(regions, lambda o, r: f"{o}@{r}", key_selector=lambda k, v: v.split(":")[0]).to("inner")
    s.left_join(regions, lambda o, r: f"{o}@{r}", key_selector=lambda k, v: v.split(":")[0]).to("left")
    with driver(b) as d:
        d.create_input_topic("regions", S, S).pipe_input("eu", "Europe", 1)
        o = d.create_input_topic("orders", S, S)
        o.pipe_input("o1", "eu:5", 2)
        o.pipe_input("o2", "us:7", 3)
        assert d.create_output_topic("inner", S, S).read_key_values_to_list() == [("o1", "eu:5@Europe")]
        assert d.create_output_topic("left", S, S).read_values_to_list() == ["eu:5@Europe", "us:7@None"]


def table_join(kind):
    b = StreamsBuilder(CONFIG)
    a, c = b.table("a"), b.table("b")
    getattr(a, kind)(c, lambda x, y: f"{x}+{y}").to_stream().to("out")
    d = driver(b)
    ta, tb = d.create_input_topic("a", S, S), d.create_input_topic("b", S, S)
    ta.pipe_input("k", "a1", 1)
    tb.pipe_input("k", "b1", 5)
    ta.pipe_input("k", "a2", 3)
    tb.pipe_input("k", None, 6)
    ta.pipe_input("k", None, 7)
    out = [(r.value, r.timestamp) for r in d.create_output_topic("out", S, S).read_records_to_list()]
    d.close()
    return out


def test_table_table_joins():
    assert table_join("join") == [("a1+b1", 5), ("a2+b1", 5), (None, 6)]
    assert table_join("left_join") == [("a1+None", 1), ("a1+b1", 5), ("a2+b1", 5), ("a2+None", 6), (None, 7)]
    assert table_join("outer_join") == [("a1+None", 1), ("a1+b1", 5), ("a2+b1", 5), ("a2+None", 6), (None, 7)]


def test_an_inner_join_of_a_filtered_table_forwards_what_the_filter_drops():
    # as Kafka: an inner join's sides send no old values unless the result needs them, so
    # the filter forwards the updates it drops (absent before and after) and the join
    # turns each into a tombstone while the other side has a row
    b = StreamsBuilder(CONFIG)
    left = b.table("a").filter(lambda k, v: not v.endswith("1"))
    left.join(b.table("b").map_values(lambda v: v + "!"), lambda x, y: f"{x}+{y}").to_stream().to("out")
    with driver(b) as d:
        d.create_input_topic("b", S, S).pipe_input("a", "v0", 9)
        ta = d.create_input_topic("a", S, S)
        ta.pipe_input("a", "v1", 39)
        ta.pipe_input("a", None, 53)
        assert [(r.key, r.value, r.timestamp) for r in d.create_output_topic("out", S, S).read_records_to_list()] == [
            ("a", None, 39), ("a", None, 53)]


def test_a_join_result_grouped_again_makes_both_sides_send_old_values():
    # the result's subtractor needs the old joined value: both sides send old values
    b = StreamsBuilder(CONFIG)
    joined = b.table("a").join(b.table("b"), lambda x, y: f"{x}+{y}")
    (joined.group_by(lambda k, v: ("all", v)).aggregate(lambda: "", lambda k, v, a: a + "|" + v,
                                                         lambda k, v, a: a.replace("|" + v, "", 1),
                                                         materialized=Materialized.with_(S, S))
     .to_stream().to("out"))
    with driver(b) as d:
        d.create_input_topic("b", S, S).pipe_input("k", "b1", 1)
        ta = d.create_input_topic("a", S, S)
        ta.pipe_input("k", "a1", 2)
        ta.pipe_input("k", "a2", 3)
        assert d.create_output_topic("out", S, S).read_values_to_list()[-1] == "|a2+b1"


def test_outer_join_keeps_the_right_side_alone():
    b = StreamsBuilder(CONFIG)
    a, c = b.table("a"), b.table("b")
    a.outer_join(c, lambda x, y: f"{x}+{y}").to_stream().to("out")
    with driver(b) as d:
        d.create_input_topic("b", S, S).pipe_input("k", "b1", 1)
        d.create_input_topic("a", S, S).pipe_input("k", "a1", 2)
        d.create_input_topic("a", S, S).pipe_input("k", None, 3)
        assert d.create_output_topic("out", S, S).read_values_to_list() == ["None+b1", "a1+b1", "None+b1"]


def test_table_group_by_moves_rows_between_groups():
    b = StreamsBuilder(CONFIG)
    (b.table("users").group_by(lambda user, region: (region, user)).count(materialized="per-region")
     .to_stream().to("out", value_serde=L))
    with driver(b) as d:
        u = d.create_input_topic("users", S, S)
        u.pipe_input("ann", "eu", 1)
        u.pipe_input("bob", "eu", 2)
        u.pipe_input("ann", "us", 3)     # ann moves: eu loses one, us gains one
        u.pipe_input("bob", None, 4)     # bob leaves
        out = [(r.key, r.value, r.timestamp) for r in d.create_output_topic("out", S, L).read_records_to_list()]
        assert out == [("eu", 1, 1), ("eu", 2, 2), ("eu", 1, 3), ("us", 1, 3), ("eu", 0, 4)]
        assert dict(d.get_key_value_store("per-region").all()) == {"eu": 0, "us": 1}
