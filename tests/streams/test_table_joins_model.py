"""Stream-table, stream-globaltable and table-table joins against brute-force models, on
random input with out-of-order timestamps and tombstones (hypothesis).

The model states Kafka Streams' rules for non-versioned tables directly: the table is
the latest value per key in the order its updates arrive (timestamps do not matter, a
``None`` deletes); a stream record joins the table's current value for its key (for a
global table: for the key ``key_selector(key, value)`` picks), the output keeps the
stream record's key and timestamp; an inner join emits nothing while the table has no
value, a left join emits the joiner's result with ``None``.

Table-table joins (KTableKTable{Inner,Left,Outer}Join over source tables): an update of
one side looks up the other side's current row; the result is at the larger of the two
timestamps (the update's alone when the other side has no row) and is the joiner's
value, or ``None`` (a tombstone) when the side that must have a row has none.  An inner
join needs both rows: nothing while the other side has none.  A left join's left
updates always produce a result, its right updates only while the left has a row.  An
outer join produces a result for every update.  Except: a side that sends old values
(the left of a left join, both of an outer join: Kafka's ``doJoin``) drops a
deletion of a row that did not exist when the other side has none either.  These joins
are also compared with Kafka itself in tests/streams/kafka_diff.
"""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from pylog.streams import StreamsBuilder, TopologyTestDriver

from .conftest import S

CFG = {"application.id": "app", "default.key.serde": S, "default.value.serde": S}

# (topic, key, value or None (a table tombstone), timestamp); stream values are never None
inputs_st = st.lists(st.tuples(st.sampled_from("st"), st.sampled_from("ab"), st.booleans(), st.integers(0, 50)),
                     max_size=30)


def joiner(left, right):
    return f"{left}+{right}"


def records(inputs):
    """The input as (topic, key, value, ts): stream values name their record and pick a
    global-table key by their first letter; a table value is None when asked."""
    out = []
    for i, (topic, key, flag, ts) in enumerate(inputs):
        if topic == "s":
            out.append(("s", key, f"{'ab'[i % 2]}{i}", ts))
        else:
            out.append(("t", key, f"t{i}" if flag else None, ts))
    return out


def run(kind, global_table, inputs):
    b = StreamsBuilder(CFG)
    stream = b.stream("s")
    if global_table:
        table = b.global_table("t")
        join = stream.join if kind == "inner" else stream.left_join
        join(table, joiner, key_selector=lambda k, v: v[0]).to("out")
    else:
        table = b.table("t")
        (stream.join if kind == "inner" else stream.left_join)(table, joiner).to("out")
    with TopologyTestDriver(b.build(), CFG, initial_wall_clock_time_ms=0) as d:
        topics = {"s": d.create_input_topic("s", S, S), "t": d.create_input_topic("t", S, S)}
        for topic, key, value, ts in records(inputs):
            topics[topic].pipe_input(key, value, ts)
        return [(r.key, r.value, r.timestamp) for r in d.create_output_topic("out", S, S).read_records_to_list()]


def model(kind, global_table, inputs):
    table = {}
    out = []
    for topic, key, value, ts in records(inputs):
        if topic == "t":
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
            continue
        found = table.get(value[0] if global_table else key)
        if found is not None or kind == "left":
            out.append((key, joiner(value, found), ts))
    return out


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["inner", "left"]), st.booleans(), inputs_st)
def test_stream_table_joins_match_the_model(kind, global_table, inputs):
    assert run(kind, global_table, inputs) == model(kind, global_table, inputs)


def run_tables(kind, inputs):
    b = StreamsBuilder(CFG)
    left, right = b.table("a"), b.table("b")
    {"inner": left.join, "left": left.left_join, "outer": left.outer_join}[kind](right, joiner).to_stream().to("out")
    with TopologyTestDriver(b.build(), CFG, initial_wall_clock_time_ms=0) as d:
        topics = {"a": d.create_input_topic("a", S, S), "b": d.create_input_topic("b", S, S)}
        for i, (topic, key, present, ts) in enumerate(inputs):
            topics[topic].pipe_input(key, f"{topic}{i}" if present else None, ts)
        return [(r.key, r.value, r.timestamp) for r in d.create_output_topic("out", S, S).read_records_to_list()]


def model_tables(kind, inputs):
    tables = {"a": {}, "b": {}}        # key -> (value, timestamp)
    out = []
    for i, (topic, key, present, ts) in enumerate(inputs):
        value = f"{topic}{i}" if present else None
        is_left = topic == "a"
        before = tables[topic].pop(key, None)
        if value is not None:
            tables[topic][key] = (value, ts)
        found = tables["b" if is_left else "a"].get(key)
        other = None if found is None else found[0]
        out_ts = ts if found is None else max(ts, found[1])
        sends_old = kind == "outer" or (kind == "left" and is_left)
        if kind == "inner" or (kind == "left" and not is_left):
            if other is None:
                continue
        elif other is None and value is None and (before is None or not sends_old):
            continue
        if value is None and (other is None or kind == "inner" or (kind == "left" and is_left)):
            new = None
        else:
            new = joiner(value, other) if is_left else joiner(other, value)
        out.append((key, new, out_ts))
    return out


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["inner", "left", "outer"]),
       st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from("xy"), st.booleans(), st.integers(0, 50)),
                max_size=30))
def test_table_table_joins_match_the_model(kind, inputs):
    assert run_tables(kind, inputs) == model_tables(kind, inputs)
