"""Stream-stream joins against a brute-force model, on random out-of-order input with
late records (hypothesis).

The model keeps each side's records in a list and states Kafka Streams 3.x+ rules
directly: a record joins every record of the other side with the same key whose
timestamp is within the window (``[ts - before, ts + after]`` seen from the left) and
that the other side's store still holds (within ``before + after + grace`` of the
greatest timestamp it has stored), at the larger timestamp.  In left and outer joins a
record that found no partner waits, and is emitted with ``None`` for the missing side
once stream time has passed ``ts + after + grace`` (``ts + before + grace`` for a right
record), unless a partner arrives first; one whose window already ended when it arrived
is emitted at once.  Pending records are looked at when a record at the current stream
time arrives, in (timestamp, right before left, key) order.
"""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from pylog.streams import JoinWindows, StreamsBuilder, TopologyTestDriver

from .conftest import S

CFG = {"application.id": "app", "default.key.serde": S, "default.value.serde": S,
       "__emit.interval.ms.kstreams.outer.join.spurious.results.fix__": 0}

inputs_st = st.lists(st.tuples(st.sampled_from("lr"), st.sampled_from("ab"), st.integers(0, 80)), max_size=30)
windows_st = st.tuples(st.integers(0, 15), st.integers(0, 15), st.integers(0, 15))


def joiner(left, right):
    return f"{left}+{right}"


def run(kind, before, after, grace, inputs):
    b = StreamsBuilder(CFG)
    left, right = b.stream("l"), b.stream("r")
    w = JoinWindows.of_time_difference_and_grace(0, grace).before(before).after(after)
    {"inner": left.join, "left": left.left_join, "outer": left.outer_join}[kind](right, joiner, w).to("out")
    with TopologyTestDriver(b.build(), CFG, initial_wall_clock_time_ms=0) as d:
        topics = {"l": d.create_input_topic("l", S, S), "r": d.create_input_topic("r", S, S)}
        for i, (side, key, ts) in enumerate(inputs):
            topics[side].pipe_input(key, f"{side}{i}", ts)
        return [(r.key, r.value, r.timestamp) for r in d.create_output_topic("out", S, S).read_records_to_list()]


def model(kind, before, after, grace, inputs):
    retention = before + after + grace
    stored = {"l": [], "r": []}                 # (ts, seq, key, value)
    store_time = {"l": -1, "r": -1}
    pending = []                                # [ts, side byte (r=0, l=1), key, value]
    outer_sides = {"inner": (), "left": ("l",), "outer": ("l", "r")}[kind]
    stream_time, min_time = -1, None
    out = []
    for i, (side, key, ts) in enumerate(inputs):
        value = f"{side}{i}"
        other = "r" if side == "l" else "l"
        lo, hi = (ts - before, ts + after) if side == "l" else (ts - after, ts + before)
        stream_time = max(stream_time, ts)
        if kind != "inner" and ts == stream_time:
            lookahead = after if side == "l" else before      # this side's "after"
            if min_time is not None and min_time + lookahead + grace < stream_time:
                min_time = None
                for entry in sorted(pending, key=lambda e: (e[0], e[1], e[2])):
                    min_time = entry[0]
                    look = after if entry[1] == 1 else before
                    if entry[0] + look + grace < stream_time:
                        pending.remove(entry)
                        out.append((entry[2], joiner(entry[3], None) if entry[1] == 1 else joiner(None, entry[3]),
                                    entry[0]))
        partners = sorted((t, s, v) for t, s, k, v in stored[other]
                          if k == key and max(0, lo) <= t <= max(0, hi) and t > store_time[other] - retention)
        for t, _, v in partners:
            pending[:] = [e for e in pending if not (e[0] == t and e[1] == (1 if other == "l" else 0) and e[2] == key)]
            out.append((key, joiner(value, v) if side == "l" else joiner(v, value), max(ts, t)))
        if side in outer_sides and not partners:
            if max(0, hi) < stream_time:
                out.append((key, joiner(value, None) if side == "l" else joiner(None, value), ts))
            else:
                min_time = ts if min_time is None else min(min_time, ts)
                pending.append([ts, 1 if side == "l" else 0, key, value])
        store_time[side] = max(store_time[side], ts)
        if ts > store_time[side] - retention:
            stored[side].append((ts, i, key, value))
    return out


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["inner", "left", "outer"]), windows_st, inputs_st)
def test_stream_stream_joins_match_the_model(kind, window, inputs):
    before, after, grace = window
    assert run(kind, before, after, grace, inputs) == model(kind, before, after, grace, inputs)


def test_left_join_emits_unjoined_only_after_the_window_closes():
    out = run("left", 5, 5, 0, [("l", "k", 10), ("r", "k", 12), ("l", "k", 20), ("r", "j", 21), ("l", "z", 40)])
    assert out == [("k", "l0+r1", 12), ("k", "l2+None", 20)]
