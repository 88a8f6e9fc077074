"""pylog.streams against Apache Kafka Streams itself: the same topologies, written once
here and once in Java (StreamsSemantics.java), run through pylog's TopologyTestDriver and
Kafka's own (``kafka-streams-test-utils``, record caches off, emit intervals 0) on the same
random out-of-order input with late records; outputs must match record for record,
timestamps and the ``dropped-records`` count included.

Covered: time windows (tumbling, hopping; emit on update, on window close, suppressed),
session windows (update, on close), sliding windows, stream-stream joins (inner, left,
outer; asymmetric windows, grace), table-table joins (inner, left, outer, tombstones),
suppress until a time limit, grouping through a repartition topic (count, reduce),
stream-table and stream-globaltable joins, KTable.group_by (count, aggregate with
adder and subtractor; reduce), joins of filtered and mapped tables (table-table,
stream-table), cogroup, windowed reduce and aggregate (time, session, sliding), session
and sliding windows with suppress or emit on close, to_table then filter, bounded
suppress buffers (records, Kafka's byte estimate, emitting early), the old values an
aggregation and a suppress buffer send a subtractor, foreign-key table-table joins (inner, left; foreign keys that
change, vanish and come back; a filtered left table, a mapped right one; named and
materialised; a join's result joined again), where
``describe()`` and the bytes on every internal topic and changelog are compared too.

Java and the jars come from the kafka_ref tests' Maven build (the ``kafka_jars`` fixture,
shared through this directory's conftest.py; its pom fetches ``kafka-streams-test-utils``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from pylog.streams import (BufferConfig, EmitStrategy, Grouped, JoinWindows, Materialized, Serdes, SessionWindows,
                           SlidingWindows, StreamsBuilder, Suppressed, TableJoined, TimeWindows, TopologyTestDriver)

HERE = Path(__file__).resolve().parent
TOPOLOGIES = ("tw", "session", "sliding", "ssjoin", "ttjoin", "suppress_time", "groupby", "stjoin", "global", "tablegroupby",
              "ttfilter", "cogroup", "twagg", "sessreduce", "sessfinal", "slidingagg", "tgreduce", "slidefinal",
              "slidesupp", "stfilter", "totable", "suppbound", "aggold")
SEED = int(os.environ.get("PYLOG_KAFKA_DIFF_SEED", "15"))

S = Serdes.string()
L = Serdes.long()
CFG = {"application.id": "app", "default.key.serde": S, "default.value.serde": S,
       "__emit.interval.ms.kstreams.windowed.aggregation__": 0,
       "__emit.interval.ms.kstreams.outer.join.spurious.results.fix__": 0}


def wk(w): return f"{w.key},{w.window.start},{w.window.end}"

def build(sc):
    p = sc["params"]
    b = StreamsBuilder(CFG)
    t = sc["topo"]
    long_out = True
    if t == "tw":
        ws = b.stream("in").group_by_key().windowed_by(TimeWindows.of_size_and_grace(p["size"], p["grace"]).advance_by(p["advance"]))
        if p["emit"] == "final": ws = ws.emit_strategy(EmitStrategy.on_window_close())
        tb = ws.count()
        if p["emit"] == "suppress": tb = tb.suppress(Suppressed.until_window_closes())
        tb.to_stream().map(lambda k, v: (wk(k), v)).to("out", value_serde=L)
    elif t == "session":
        ws = b.stream("in").group_by_key().windowed_by(SessionWindows.of_inactivity_gap_and_grace(p["gap"], p["grace"]))
        if p["emit"] == "final": ws = ws.emit_strategy(EmitStrategy.on_window_close())
        ws.count().to_stream().map(lambda k, v: (wk(k), v)).to("out", value_serde=L)
    elif t == "sliding":
        b.stream("in").group_by_key().windowed_by(SlidingWindows.of_time_difference_and_grace(p["d"], p["grace"])).count().to_stream().map(lambda k, v: (wk(k), v)).to("out", value_serde=L)
    elif t == "ssjoin":
        long_out = False
        w = JoinWindows.of_time_difference_and_grace(p["diff"], p["grace"])
        if "before" in p: w = w.before(p["before"])
        if "after" in p: w = w.after(p["after"])
        l = b.stream("l"); r = b.stream("r")
        j = lambda x, y: f"{x if x is not None else 'null'}+{y if y is not None else 'null'}"
        {"inner": l.join, "left": l.left_join, "outer": l.outer_join}[p["kind"]](r, j, w).to("out")
    elif t == "ttjoin":
        long_out = False
        ta = b.table("a"); tb = b.table("b")
        j = lambda x, y: f"{x if x is not None else 'null'}+{y if y is not None else 'null'}"
        {"inner": ta.join, "left": ta.left_join, "outer": ta.outer_join}[p["kind"]](tb, j).to_stream().to("out")
    elif t == "groupby":
        g = b.stream("in").flat_map_values(lambda v: v.split(" ")).group_by(lambda k, w: w)
        g.count().to_stream().to("out", value_serde=L)
        g.reduce(lambda x, y: x + y).to_stream().map_values(len).to("out", value_serde=L)
    elif t == "stjoin":
        long_out = False
        tb = b.table("t")
        st = b.stream("s")
        j = lambda x, y: f"{x if x is not None else 'null'}+{y if y is not None else 'null'}"
        (st.join if p["kind"] == "inner" else st.left_join)(tb, j).to("out")
    elif t == "global":
        long_out = False
        g = b.global_table("g")
        st = b.stream("s")
        j = lambda x, y: f"{x if x is not None else 'null'}+{y if y is not None else 'null'}"
        (st.join if p["kind"] == "inner" else st.left_join)(g, j, key_selector=lambda k, v: v[0]).to("out")
    elif t == "tablegroupby":
        g = b.table("t").group_by(lambda k, v: (v[0], v))
        g.count().to_stream().to("out", value_serde=L)
        g.aggregate(lambda: 0, lambda k, v, a: a + len(v), lambda k, v, a: a - len(v),
                    materialized=Materialized.with_(S, L)).to_stream().to("out", value_serde=L)
    elif t == "fkjoin":
        long_out = False
        lt = b.table("l"); rt = b.table("r")
        if "filter" in p: lt = lt.filter(lambda k, v: not v.endswith("7"))
        if "rmap" in p: rt = rt.map_values(lambda v: v + "!")
        j = lambda x, y: f"{x if x is not None else 'null'}+{y if y is not None else 'null'}"
        fk = (lambda k, v: None if v.startswith("-") else v[0]) if "bifunction" in p else \
            (lambda v: None if v.startswith("-") else v[0])
        tj = TableJoined.as_(p["name"]) if "name" in p else None
        m = Materialized.as_(p["store"]) if "store" in p else Materialized.with_(S, S)
        o = (lt.left_join if p["kind"] == "left" else lt.join)(rt, fk, j, table_joined=tj, materialized=m)
        if "chain" in p: o = o.left_join(rt, lambda v: None if v.startswith("-") else v[0], j)
        o.to_stream().to("out")
    elif t == "suppress_time":
        b.stream("in").group_by_key().count().suppress(Suppressed.until_time_limit(p["limit"])).to_stream().to("out", value_serde=L)
    elif t == "suppbound":
        # a bounded buffer that emits early when full (Kafka counts records and its own estimate of bytes)
        buf = BufferConfig.max_records_(p["records"]) if "records" in p else BufferConfig.max_bytes_(p["bytes"])
        if "both" in p: buf = buf.with_max_bytes(p["both"])
        g = b.stream("in").group_by_key()
        if "tw" in p: g = g.windowed_by(TimeWindows.of_size_and_grace(p["tw"], 5))
        if "sw" in p: g = g.windowed_by(SlidingWindows.of_time_difference_and_grace(p["sw"], 5))
        tb = g.count().suppress(Suppressed.until_time_limit(p["limit"], buf.emit_early_when_full())).to_stream()
        if "tw" in p or "sw" in p: tb = tb.map(lambda k, v: (wk(k), v))
        tb.to("out", value_serde=L)
    else:
        long_out = False
        j = lambda x, y: f"{x if x is not None else 'null'}+{y if y is not None else 'null'}"
        cat = lambda x, y: x + y
        if t == "ttfilter":
            # joins of filtered / mapped tables: tombstones of rows the filter drops go through
            ta = b.table("a"); tb = b.table("b")
            if "nolf" not in p: ta = ta.filter(lambda k, v: not v.endswith("1"))
            if "norm" not in p: tb = tb.map_values(lambda v: v + "!")
            {"inner": ta.join, "left": ta.left_join, "outer": ta.outer_join}[p["kind"]](tb, j).to_stream().to("out")
        elif t == "cogroup":
            g1 = b.stream("a").group_by_key(); g2 = b.stream("b").group_by_key()
            g1.cogroup(lambda k, v, a: a + "a" + v).cogroup(g2, lambda k, v, a: a + "b" + v) \
                .aggregate(lambda: "", materialized=Materialized.with_(S, S)).to_stream().to("out")
        elif t == "twagg":
            w = TimeWindows.of_size_and_grace(p["size"], p["grace"]).advance_by(p["advance"])
            b.stream("in").group_by_key().windowed_by(w).reduce(cat).to_stream().map(lambda k, v: (wk(k), v)).to("out")
        elif t in ("sessreduce", "sessfinal"):
            tb = b.stream("in").group_by_key().windowed_by(SessionWindows.of_inactivity_gap_and_grace(p["gap"], p["grace"])) \
                .reduce(cat)
            if t == "sessfinal": tb = tb.suppress(Suppressed.until_window_closes())
            tb.to_stream().map(lambda k, v: (wk(k), v)).to("out")
        elif t in ("slidingagg", "slidefinal", "slidesupp"):
            ws = b.stream("in").group_by_key().windowed_by(SlidingWindows.of_time_difference_and_grace(p["d"], p["grace"]))
            if t == "slidingagg":
                tb = ws.aggregate(lambda: "", lambda k, v, a: a + v, materialized=Materialized.with_(S, S))
            elif t == "slidefinal":
                tb = ws.emit_strategy(EmitStrategy.on_window_close()).reduce(cat)
            else:
                tb = ws.reduce(cat).suppress(Suppressed.until_window_closes())
            tb.to_stream().map(lambda k, v: (wk(k), v)).to("out")
        elif t == "tgreduce":
            b.table("t").group_by(lambda k, v: (v[0], k), Grouped.with_(S, S)) \
                .reduce(cat, lambda a, v: a.replace(v, "", 1), materialized=Materialized.with_(S, S)).to_stream().to("out")
        elif t == "stfilter":
            tt = b.table("t").filter(lambda k, v: not v.endswith("1")).map_values(lambda v: v + "!")
            st = b.stream("s")
            (st.join if p["kind"] == "inner" else st.left_join)(tt, j).to("out")
        elif t == "aggold":
            # the old values a count sends (the initializer's for a new key), seen by a subtractor, through suppress or not
            tb = b.stream("in").group_by_key().count()
            if "limit" in p: tb = tb.suppress(Suppressed.until_time_limit(p["limit"]))
            tb.group_by(lambda k, v: ("all", str(v)), Grouped.with_(S, S)) \
                .aggregate(lambda: "", lambda k, v, a: a + "+" + v, lambda k, v, a: a + "-" + v,
                           materialized=Materialized.with_(S, S)).to_stream().to("out")
        elif t == "totable":
            b.stream("in").map_values(lambda v: None if v.endswith("3") else v).to_table() \
                .filter(lambda k, v: not v.endswith("1")).to_stream().to("out")
    return b, long_out

def run_py(sc):
    b, long_out = build(sc)
    with TopologyTestDriver(b.build(), CFG, initial_wall_clock_time_ms=0) as d:
        tops = {}
        for topic, k, v, ts in sc["inputs"]:
            if topic not in tops: tops[topic] = d.create_input_topic(topic, S, S)
            tops[topic].pipe_input(k, v, ts)
        out = [[r.key, r.value, r.timestamp] for r in d.create_output_topic("out", S, L if long_out else S).read_records_to_list()]
        res = {"out": out}
        if "describe" in sc:
            res["describe"] = str(b.build().describe())
        if "internal" in sc:
            hx = lambda x: None if x is None else bytes(x).hex()
            res["topics"] = {t: [[hx(r.key), hx(r.value), r.timestamp] for r in d.create_output_topic(t).read_records_to_list()]
                             for t in d.producer_topic_names() if t != "out"}
        res["dropped"] = d.metrics().get("dropped-records", 0)
        return res

def gen(rnd, topo):
    n = rnd.randint(1, 25); keys = "abc"[:rnd.randint(1, 3)]
    span = rnd.choice([20, 60, 150])
    if topo == "groupby":
        words = "xyz"
        inputs = [["in", rnd.choice(keys), " ".join(rnd.choice(words) for _ in range(rnd.randint(1, 3))),
                   rnd.randint(0, span)] for _ in range(n)]
    elif topo in ("stjoin", "global"):
        table = "t" if topo == "stjoin" else "g"
        inputs = []
        for i in range(n):
            if rnd.random() < 0.4:
                inputs.append([table, rnd.choice(keys), rnd.choice([None, f"v{i}"]), rnd.randint(0, span)])
            else:
                inputs.append(["s", rnd.choice(keys), rnd.choice(keys) + f"{i}", rnd.randint(0, span)])
    elif topo == "tablegroupby":
        inputs = [["t", rnd.choice(keys), rnd.choice([None, rnd.choice("xyz") + "v" * rnd.randint(0, 3)]),
                   rnd.randint(0, span)] for _ in range(n)]
    elif topo == "fkjoin":
        # few keys on both sides, so foreign keys change, collide and go missing often
        inputs = []
        for i in range(n):
            if rnd.random() < 0.4:
                inputs.append(["r", rnd.choice("abc"), rnd.choice([None, f"R{i}", f"R{i}"]), rnd.randint(0, span)])
            else:
                inputs.append(["l", rnd.choice(["p0", "p1", "p2", "p3"][:len(keys) + 1]),
                               rnd.choice([None, f"{rnd.choice('abc-')}:{i}", f"{rnd.choice('ab')}:{i}"]),
                               rnd.randint(0, span)])
    elif topo in ("tw", "session", "sliding", "suppress_time", "suppbound", "aggold"):
        inputs = [["in", rnd.choice(keys), "v", rnd.randint(0, span)] for _ in range(n)]
    elif topo in ("ttfilter", "cogroup"):
        inputs = [[rnd.choice("ab"), rnd.choice(keys), rnd.choice([None, f"v{i}", f"v{i}"]) if topo == "ttfilter"
                   else f"v{i}", rnd.randint(0, span)] for i in range(n)]
    elif topo == "stfilter":
        inputs = [[rnd.choice("ts"), rnd.choice(keys), rnd.choice([None, f"v{i}", f"v{i}"]), rnd.randint(0, span)]
                  for i in range(n)]
    elif topo == "tgreduce":
        inputs = [["t", rnd.choice("pqrs"), rnd.choice([None, rnd.choice("xyz") + str(i)]), rnd.randint(0, span)]
                  for i in range(n)]
    elif topo in ("twagg", "sessreduce", "sessfinal", "slidingagg", "slidefinal", "slidesupp", "totable"):
        inputs = [["in", rnd.choice(keys), f"v{i}" if topo == "totable" else f"{i % 10}", rnd.randint(0, span)]
                  for i in range(n)]
    elif topo == "ssjoin":
        inputs = [[rnd.choice("lr"), rnd.choice(keys), f"v{i}", rnd.randint(0, span)] for i in range(n)]
    else:
        inputs = [[rnd.choice("ab"), rnd.choice(keys), rnd.choice([None, f"v{i}", f"v{i}"]), rnd.randint(0, span)] for i in range(n)]
    if topo == "tw":
        size = rnd.randint(1, 30); p = {"size": size, "advance": rnd.randint(1, size), "grace": rnd.randint(0, 20), "emit": rnd.choice(["update", "final", "suppress"])}
    elif topo == "session": p = {"gap": rnd.randint(1, 20), "grace": rnd.randint(0, 20), "emit": rnd.choice(["update", "final"])}
    elif topo in ("sliding", "slidingagg", "slidefinal", "slidesupp"): p = {"d": rnd.randint(1, 20), "grace": rnd.randint(0, 20)}
    elif topo in ("sessreduce", "sessfinal"): p = {"gap": rnd.randint(1, 20), "grace": rnd.randint(0, 20)}
    elif topo == "twagg":
        size = rnd.randint(1, 30); p = {"size": size, "advance": rnd.randint(1, size), "grace": rnd.randint(0, 20)}
    elif topo == "ttfilter":
        p = {"kind": rnd.choice(["inner", "left", "outer"])}
        if rnd.random() < 0.3: p["nolf"] = True
        if rnd.random() < 0.3: p["norm"] = True
    elif topo == "aggold":
        p = {"limit": rnd.randint(0, 30)} if rnd.random() < 0.6 else {}
    elif topo == "suppbound":
        p = {"limit": rnd.randint(0, 30)}
        if rnd.random() < 0.5: p["records"] = rnd.randint(0, 3)
        else: p["bytes"] = rnd.randint(1, 200)
        if rnd.random() < 0.2: p["both"] = rnd.randint(40, 200)
        # windowed counts: their keys carry the window, a new window's old value is 0
        if rnd.random() < 0.4: p[rnd.choice(["tw", "sw"])] = rnd.randint(1, 20)
    elif topo == "ssjoin":
        p = {"diff": rnd.randint(0, 15), "grace": rnd.randint(0, 15), "kind": rnd.choice(["inner", "left", "outer"])}
        if rnd.random() < 0.3: p["before"] = rnd.randint(0, 15)
        if rnd.random() < 0.3: p["after"] = rnd.randint(0, 15)
    elif topo == "ttjoin": p = {"kind": rnd.choice(["inner", "left", "outer"])}
    elif topo in ("stjoin", "global", "tablegroupby", "stfilter"): p = {"kind": rnd.choice(["inner", "left"])}
    elif topo == "fkjoin":
        p = {"kind": rnd.choice(["inner", "left"])}
        for opt, value in (("filter", True), ("bifunction", True), ("name", "fk"), ("store", "fk-store"),
                           ("rmap", True), ("chain", True)):
            if rnd.random() < 0.3:
                p[opt] = value
    elif topo in ("groupby", "tablegroupby", "cogroup", "tgreduce", "totable"): p = {}
    else: p = {"limit": rnd.randint(0, 30)}
    return {"topo": topo, "params": p, "inputs": inputs}


@pytest.fixture(scope="module")
def kafka_side(kafka_jars, tmp_path_factory):
    """The Java side: StreamsSemantics.java compiled against Kafka's jars (the kafka_ref
    tests' Maven build, which also fetches kafka-streams-test-utils)."""
    javac = shutil.which("javac")
    assert javac, "javac is not on PATH (the project's machines have Java 17 with its JDK)"
    out = tmp_path_factory.mktemp("kafka_diff")
    proc = subprocess.run([javac, "-nowarn", "-cp", kafka_jars.classpath, "-d", str(out),
                           str(HERE / "StreamsSemantics.java")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # Kafka Streams keeps its stores under java.io.tmpdir/kafka-streams/<application.id>:
    # a directory of this run's own, not /tmp/kafka-streams/app, whose RocksDB locks any
    # other run on the machine may hold.
    tmp = tmp_path_factory.mktemp("kafka_diff_state")
    return [kafka_jars.java, "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", f"-Djava.io.tmpdir={tmp}",
            "-cp", kafka_jars.classpath + os.pathsep + str(out), "StreamsSemantics"]


def kafka_run(cmd, scenarios):
    proc = subprocess.run(cmd, input="\n".join(json.dumps(s) for s in scenarios) + "\n", capture_output=True,
                          text=True, timeout=600)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(scenarios), proc.stderr[-4000:]
    return results


def check(cmd, n, seed, fk=False):
    """``n`` random scenarios of every topology; with ``fk``, of foreign-key joins, whose
    ``describe()`` and every record on the internal topics (subscriptions, responses,
    changelogs) are compared byte for byte too."""
    rnd = random.Random(seed)
    if fk:
        scenarios = [dict(gen(rnd, "fkjoin"), describe=True, internal=True) for _ in range(n)]
    else:
        scenarios = [gen(rnd, TOPOLOGIES[i % len(TOPOLOGIES)]) for i in range(n)]
    mismatches = [(sc, theirs, run_py(sc)) for sc, theirs in zip(scenarios, kafka_run(cmd, scenarios))
                  if run_py(sc) != theirs]
    assert not mismatches, (f"seed {seed}: {len(mismatches)} of {n} differ; first: {json.dumps(mismatches[0][0])}\n"
                            f"kafka: {mismatches[0][1]}\npylog: {mismatches[0][2]}")


def test_fk_join_same_as_kafka_streams(kafka_side):
    check(kafka_side, 25, SEED, fk=True)


@pytest.mark.long
@pytest.mark.timeout(1200)
def test_fk_join_same_as_kafka_streams_long(kafka_side):
    check(kafka_side, 400, SEED + 1, fk=True)


def test_same_output_as_kafka_streams(kafka_side):
    check(kafka_side, 5 * len(TOPOLOGIES), SEED)


@pytest.mark.long
@pytest.mark.timeout(1200)
def test_same_output_as_kafka_streams_long(kafka_side):
    check(kafka_side, 40 * len(TOPOLOGIES), SEED + 1)
