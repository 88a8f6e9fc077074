"""Windowed aggregations against brute-force models, on random out-of-order input with
late records (hypothesis).

The models hold every record in plain lists and recompute each window from them; they
state Kafka Streams' rules directly: a record updates each window that contains it
unless ``stream time - grace`` has reached the window's end (then it is dropped and
counted once per window); updates carry the largest timestamp in the window; final
results (suppress, emit strategy) come out once per window when it closes.
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings, strategies as st

from pylog.streams import (EmitStrategy, SessionWindows, SlidingWindows, StreamsBuilder, Suppressed, TimeWindows,
                           TopologyTestDriver)

from .conftest import L, S

CFG = {"application.id": "app", "default.key.serde": S, "default.value.serde": S,
       "__emit.interval.ms.kstreams.windowed.aggregation__": 0}

records = st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 120)), max_size=40)


def to_out(table):
    table.to_stream().map(lambda w, v: (f"{w.key},{w.window.start},{w.window.end}", v)).to("out", value_serde=L)


def run_windows(make_table, inputs):
    b = StreamsBuilder(CFG)
    to_out(make_table(b.stream("in").group_by_key()))
    with TopologyTestDriver(b.build(), CFG, initial_wall_clock_time_ms=0) as d:
        i = d.create_input_topic("in", S, S)
        for k, ts in inputs:
            i.pipe_input(k, "v", ts)
        out = []
        for r in d.create_output_topic("out", S, L).read_records_to_list():
            key, start, end = r.key.split(",")
            out.append((key, int(start), int(end), r.value, r.timestamp))
        return out, d.metrics().get("dropped-records", 0)


def model_time_windows(inputs, size, advance, grace):
    """Emit-on-update output, the final windows, and the drop count."""
    observed, dropped = -1, 0
    windows = defaultdict(list)           # (key, start) -> accepted timestamps
    updates = []
    for key, ts in inputs:
        observed = max(observed, ts)
        close = observed - grace
        for start in range(0, ts + 1, advance):
            if start <= ts < start + size:
                if start + size > close:
                    windows[(key, start)].append(ts)
                    w = windows[(key, start)]
                    updates.append((key, start, start + size, len(w), max(w)))
                else:
                    dropped += 1
    return updates, windows, dropped


sizes = st.integers(1, 40).flatmap(lambda size: st.tuples(st.just(size), st.integers(1, size), st.integers(0, 30)))


@settings(max_examples=60, deadline=None)
@given(records, sizes)
def test_time_windows_emit_every_update(inputs, params):
    size, advance, grace = params
    got, dropped = run_windows(
        lambda g: g.windowed_by(TimeWindows.of_size_and_grace(size, grace).advance_by(advance)).count(), inputs)
    updates, _, model_dropped = model_time_windows(inputs, size, advance, grace)
    assert got == updates
    assert dropped == model_dropped


def final_results(inputs, size, advance, grace, order, store_retention=None):
    """Each window once, when stream time - grace reaches its end.  With a
    ``store_retention``, a window is read back from the window store to be emitted, and
    is lost if the store no longer holds it (its start more than the retention behind
    the greatest window start stored, as Kafka's emit-on-close store keeps them)."""
    observed, store_observed = -1, -1
    windows = defaultdict(list)
    emitted, out = set(), []
    for key, ts in inputs:
        observed = max(observed, ts)
        close = observed - grace
        for start in range(0, ts + 1, advance):
            if start <= ts < start + size and start + size > close:
                windows[(key, start)].append(ts)
                store_observed = max(store_observed, start)
        due = [w for w in windows if w not in emitted and w[1] + size <= close]
        for key_, start in sorted(due, key=order):
            emitted.add((key_, start))
            if store_retention is not None and start < store_observed - store_retention:
                continue
            out.append((key_, start, start + size, len(windows[(key_, start)]), max(windows[(key_, start)])))
    return out


@settings(max_examples=60, deadline=None)
@given(records, sizes)
def test_suppress_until_window_closes_emits_each_final_result_once(inputs, params):
    size, advance, grace = params
    got, _ = run_windows(lambda g: g.windowed_by(TimeWindows.of_size_and_grace(size, grace).advance_by(advance))
                         .count().suppress(Suppressed.until_window_closes()), inputs)
    # the suppress buffer emits by window end, then by the windowed key's bytes
    assert got == final_results(inputs, size, advance, grace,
                                lambda w: (w[1] + size, w[0].encode() + w[1].to_bytes(8, "big")))


@settings(max_examples=60, deadline=None)
@given(records, sizes)
def test_emit_strategy_on_window_close(inputs, params):
    size, advance, grace = params
    got, _ = run_windows(lambda g: g.windowed_by(TimeWindows.of_size_and_grace(size, grace).advance_by(advance))
                         .emit_strategy(EmitStrategy.on_window_close()).count(), inputs)
    # the window store is scanned by window start, then key
    assert got == final_results(inputs, size, advance, grace, lambda w: (w[1], w[0].encode()),
                                store_retention=size + grace)


def model_sessions(inputs, gap, grace):
    """Sessions as Kafka keeps them: a session closes once stream time - gap - grace
    passes its end; the store forgets a session whose end is gap + grace behind the
    greatest session end stored; a record that bridges or extends sessions retracts
    each of them (a None update at its end) before the merged session's update."""
    observed, store_observed, dropped = -1, -1, 0
    sessions = defaultdict(list)   # key -> [start, end, count]
    out = []
    for key, ts in inputs:
        observed = max(observed, ts)
        close = observed - grace - gap
        live = [s for s in sessions[key] if s[1] > store_observed - (gap + grace)]
        near = sorted((s for s in live if s[1] >= ts - gap and s[0] <= ts + gap), key=lambda s: (s[1], s[0]))
        start = min([ts] + [s[0] for s in near])
        end = max([ts] + [s[1] for s in near])
        if end < close:
            dropped += 1
            continue
        for s in near:
            sessions[key].remove(s)
            if (start, end) != (ts, ts):
                out.append((key, s[0], s[1], None, s[1]))
        sessions[key].append([start, end, sum(s[2] for s in near) + 1])
        store_observed = max(store_observed, end)
        out.append((key, start, end, sessions[key][-1][2], end))
    return out, dropped


@settings(max_examples=80, deadline=None)
@given(records, st.integers(1, 30), st.integers(0, 30))
def test_session_windows_merge_and_retract(inputs, gap, grace):
    got, dropped = run_windows(
        lambda g: g.windowed_by(SessionWindows.of_inactivity_gap_and_grace(gap, grace)).count(), inputs)
    assert (got, dropped) == model_sessions(inputs, gap, grace)


@settings(max_examples=60, deadline=None)
@given(records, st.integers(1, 30))
def test_sliding_windows_hold_every_record_within_the_difference(inputs, d):
    # a grace longer than the input's span: nothing is late, every window is kept
    b = StreamsBuilder(CFG)
    b.stream("in").group_by_key().windowed_by(SlidingWindows.of_time_difference_and_grace(d, 1000)).count(
        materialized="sliding")
    with TopologyTestDriver(b.build(), CFG, initial_wall_clock_time_ms=0) as drv:
        i = drv.create_input_topic("in", S, S)
        for k, ts in inputs:
            i.pipe_input(k, "v", ts)
        stored = {(w.key, w.window.start): v for w, v in drv.get_window_store("sliding").all()}
    by_key = defaultdict(list)
    for k, ts in inputs:
        by_key[k].append(ts)
    expected = {}
    for k, stamps in by_key.items():
        for ts in stamps:
            start = max(0, ts - d)
            expected[(k, start)] = sum(start <= t <= start + d for t in stamps)
            if any(ts < t <= ts + d for t in stamps):
                expected[(k, ts + 1)] = sum(ts + 1 <= t <= ts + 1 + d for t in stamps)
    assert stored == expected


def test_windowed_store_and_dropped_metric():
    b = StreamsBuilder(CFG)
    to_out(b.stream("in").group_by_key().windowed_by(TimeWindows.of_size_and_grace(10, 5)).count(materialized="c"))
    with TopologyTestDriver(b.build(), CFG, initial_wall_clock_time_ms=0) as d:
        i = d.create_input_topic("in", S, S)
        for ts in (1, 12, 3, 25, 4):
            i.pipe_input("a", "v", ts)
        assert d.metrics()["dropped-records"] == 1
        assert d.get_window_store("c").fetch("a", 20) == 1
        assert d.get_window_store("c").fetch_range("a", 0, 100) == [(10, 1), (20, 1)]


def test_suppress_until_time_limit_keeps_the_first_buffer_time():
    b = StreamsBuilder(CFG)
    (b.stream("in").group_by_key().count().suppress(Suppressed.until_time_limit(10))
     .to_stream().to("out", value_serde=L))
    with TopologyTestDriver(b.build(), CFG, initial_wall_clock_time_ms=0) as d:
        i = d.create_input_topic("in", S, S)
        for k, ts in (("a", 1), ("a", 5), ("b", 6), ("c", 11), ("c", 16), ("d", 30)):
            i.pipe_input(k, "v", ts)
        out = [(r.key, r.value, r.timestamp) for r in d.create_output_topic("out", S, L).read_records_to_list()]
    # a buffered at 1 (latest update at 5): out when stream time reaches 11; b (6) at 16;
    # c (first buffered at 11, updated at 16) at 30, with its latest value and timestamp
    assert out == [("a", 2, 5), ("b", 1, 6), ("c", 2, 16)]
