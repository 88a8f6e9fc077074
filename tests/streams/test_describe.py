"""describe() prints what Kafka Streams prints for the same topology, byte for byte.

Each expected text below is the output of Apache Kafka Streams 4.4's
``Topology.describe().toString()`` for the same program written in Java (the DSL calls
mirror these one for one), so node names, index use, sub-topology numbering, node order
and the order of successors and predecessors are all Kafka's.
"""

from __future__ import annotations

import pytest

from pylog.streams import (Branched, EmitStrategy, Grouped, JoinWindows, Named, Printed, Processor, Produced,
                           SessionWindows, SlidingWindows, StreamJoined, StreamsBuilder, Suppressed, TimeWindows,
                           Topology)
from pylog.streams.state import Stores

T = {}


def t(f):
    T[f.__name__] = f
    return f


@t
def stateless(b): b.stream("in").filter(lambda k,v: True).map_values(lambda v: v).to("out")

@t
def count(b): b.stream("in").group_by_key().count().to_stream().to("out")

@t
def groupby_count(b): b.stream("in").group_by(lambda k,v: v).count().to_stream().to("out")

@t
def wordcount_named(b): b.stream("in").flat_map_values(lambda v: v.split()).group_by(lambda k,v: v, Grouped.as_("by-word")).count(materialized="counts").to_stream().to("out")

@t
def groupby_count_store(b): b.stream("in").group_by(lambda k,v: v).count(materialized="counts").to_stream().to("out")

@t
def stream_table_join(b):
    tt = b.table("t"); b.stream("s").join(tt, lambda x,y: x).to("out")

@t
def stream_table_leftjoin_mat(b):
    tt = b.table("t", "tstore"); b.stream("s").left_join(tt, lambda x,y: x).to("out")

@t
def branch_merge(b):
    s = b.stream("in")
    br = s.split("sp-").branch(lambda k,v: True, Branched.as_("a")).branch(lambda k,v: True).default_branch()
    m = br["sp-a"].merge(br["sp-2"])
    m.peek(lambda k,v: None).select_key(lambda k,v: v).map(lambda k,v: (k,v)).flat_map(lambda k,v: [(k,v)]).filter_not(lambda k,v: False).to("out")
    br["sp-0"].foreach(lambda k,v: None)
    br["sp-0"].print(Printed.to_sys_out())

@t
def global_join(b):
    g = b.global_table("g"); b.stream("s").join(g, lambda x,y: x, key_selector=lambda k,v: k).to("out")

@t
def tt_join(b):
    a = b.table("ta"); c = b.table("tb"); a.join(c, lambda x,y: x).to_stream().to("out")

@t
def tt_leftjoin(b):
    a = b.table("ta"); c = b.table("tb"); a.left_join(c, lambda x,y: x).to_stream().to("out")

@t
def tt_outerjoin(b):
    a = b.table("ta"); c = b.table("tb"); a.outer_join(c, lambda x,y: x).to_stream().to("out")

@t
def table_ops(b): b.table("t").filter(lambda k,v: True).map_values(lambda v: v).filter_not(lambda k,v: False).to_stream().to("out")

@t
def table_ops_mat(b): b.table("t", "ts").filter(lambda k,v: True, materialized="fs").to_stream().to("out")

@t
def cogroup(b):
    g1 = b.stream("a").group_by_key(); g2 = b.stream("b").group_by_key()
    g1.cogroup(lambda k,v,a: a).cogroup(g2, lambda k,v,a: a).aggregate(lambda: 0).to_stream().to("out")

@t
def repartition(b): b.stream("in").repartition().to("out")

@t
def pattern(b):
    b.stream(pattern="in-.*").to("out"); b.stream(["a","b"]).to("out2")

@t
def reduce_aggregate(b):
    b.stream("in").group_by_key().reduce(lambda a,v: a).to_stream().to("out")
    b.stream("in2").group_by_key().aggregate(lambda: "", lambda k,v,a: a).to_stream().to("out2")

@t
def process(b):
    b.stream("in").process(Processor).to("out"); b.stream("in2").process_values(Processor).to("out2")

@t
def process_store(b):
    b.add_state_store(Stores.in_memory_key_value_store("my-store"))
    b.stream("in").process(Processor, "my-store").to("out")

@t
def two_groupby_global(b):
    b.stream("in").group_by(lambda k,v: v).count().to_stream().to("out")
    b.stream("in").group_by(lambda k,v: v).reduce(lambda a,v: a).to_stream().to("out")
    b.global_table("g", "gs")

@t
def named(b): b.stream("in").filter(lambda k,v: True, Named.as_("my-filter")).to("out", Produced.as_("my-sink"))

@t
def split_unnamed(b):
    br = b.stream("in").split().branch(lambda k,v: True).branch(lambda k,v: True).default_branch()
    br["KSTREAM-BRANCH-00000000011"].to("o1"); b.stream("in2").to("o2")

@t
def split_consumer(b):
    b.stream("in").split("x-").branch(lambda k,v: True, Branched.with_consumer(lambda ks: ks.to("c"))).no_default_branch()
    b.stream("in2").to("o2")

@t
def join_after_selectkey(b):
    tt = b.table("t"); b.stream("s").select_key(lambda k,v: v).join(tt, lambda x,y: x).to("out")

@t
def merge(b):
    b.stream("in").map_values(lambda v: v).merge(b.stream("in2")).to("out")

@t
def table_agg_filter(b):
    c = b.stream("in").group_by_key().count(); c.filter(lambda k,v: v > 1).to_stream().to("out"); c.to_stream().to("out2")

@t
def order_test(b):
    b.stream("in").peek(lambda k,v: None).to("out"); b.stream("in3").group_by_key().count()

@t
def papi(_):
    top = Topology()
    top.add_source("Source", "in").add_processor("Process", Processor, "Source")
    top.add_state_store(Stores.in_memory_key_value_store("Counts"), "Process")
    top.add_sink("Sink", "out", "Process").add_source("Source2", "in2").add_sink("Sink2", "out2", "Source2")
    return top


@t
def windowed_count_suppress(b): b.stream("in").group_by_key().windowed_by(TimeWindows.of_size_with_no_grace(300000)).count().suppress(Suppressed.until_window_closes()).to_stream().to("out")
@t
def windowed_emit_close(b): b.stream("in").group_by_key().windowed_by(TimeWindows.of_size_with_no_grace(300000)).emit_strategy(EmitStrategy.on_window_close()).count().to_stream().to("out")
@t
def session_count(b): b.stream("in").group_by_key().windowed_by(SessionWindows.of_inactivity_gap_with_no_grace(300000)).count().to_stream().to("out")
@t
def sliding_reduce(b): b.stream("in").group_by_key().windowed_by(SlidingWindows.of_time_difference_with_no_grace(300000)).reduce(lambda a,v: a).to_stream().to("out")
@t
def suppress_time(b): b.stream("in").group_by_key().count().suppress(Suppressed.until_time_limit(1000)).to_stream().to("out")
@t
def windowed_named(b): b.stream("in").group_by_key().windowed_by(TimeWindows.of_size_with_no_grace(300000)).count(materialized="wc").to_stream().to("out")
@t
def windowed_groupby(b): b.stream("in").group_by(lambda k,v: v).windowed_by(TimeWindows.of_size_with_no_grace(300000)).count().to_stream().to("out")
@t
def session_suppress(b): b.stream("in").group_by_key().windowed_by(SessionWindows.of_inactivity_gap_with_no_grace(300000)).count().suppress(Suppressed.until_window_closes().with_name("sup")).to_stream().to("out")
@t
def sliding_emit(b): b.stream("in").group_by_key().windowed_by(SlidingWindows.of_time_difference_with_no_grace(300000)).emit_strategy(EmitStrategy.on_window_close()).count().to_stream().to("out")
for kind in ("join", "left_join", "outer_join"):
    def f(b, kind=kind):
        l = b.stream("l"); r = b.stream("r")
        getattr(l, kind)(r, lambda x,y: x, JoinWindows.of_time_difference_with_no_grace(10000)).to("out")
    T[{"join": "ss_join", "left_join": "ss_leftjoin", "outer_join": "ss_outerjoin"}[kind]] = f
@t
def ss_self_named(b):
    l = b.stream("l"); l.join(l, lambda x,y: x, JoinWindows.of_time_difference_with_no_grace(10000), joined=StreamJoined.as_("sj")).to("out")



@t
def table_groupby(b):
    b.table("t").group_by(lambda k, v: (v, v)).count().to_stream().to("out")


EXPECTED = {
    'table_groupby': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000001 (topics: [t])
      --> KTABLE-SOURCE-0000000002
    Processor: KTABLE-SOURCE-0000000002 (stores: [t-STATE-STORE-0000000000])
      --> KTABLE-SELECT-0000000003
      <-- KSTREAM-SOURCE-0000000001
    Processor: KTABLE-SELECT-0000000003 (stores: [])
      --> KSTREAM-SINK-0000000005
      <-- KTABLE-SOURCE-0000000002
    Sink: KSTREAM-SINK-0000000005 (topic: KTABLE-AGGREGATE-STATE-STORE-0000000004-repartition)
      <-- KTABLE-SELECT-0000000003

  Sub-topology: 1
    Source: KSTREAM-SOURCE-0000000006 (topics: [KTABLE-AGGREGATE-STATE-STORE-0000000004-repartition])
      --> KTABLE-AGGREGATE-0000000007
    Processor: KTABLE-AGGREGATE-0000000007 (stores: [KTABLE-AGGREGATE-STATE-STORE-0000000004])
      --> KTABLE-TOSTREAM-0000000008
      <-- KSTREAM-SOURCE-0000000006
    Processor: KTABLE-TOSTREAM-0000000008 (stores: [])
      --> KSTREAM-SINK-0000000009
      <-- KTABLE-AGGREGATE-0000000007
    Sink: KSTREAM-SINK-0000000009 (topic: out)
      <-- KTABLE-TOSTREAM-0000000008

''',
    'stateless': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-FILTER-0000000001
    Processor: KSTREAM-FILTER-0000000001 (stores: [])
      --> KSTREAM-MAPVALUES-0000000002
      <-- KSTREAM-SOURCE-0000000000
    Processor: KSTREAM-MAPVALUES-0000000002 (stores: [])
      --> KSTREAM-SINK-0000000003
      <-- KSTREAM-FILTER-0000000001
    Sink: KSTREAM-SINK-0000000003 (topic: out)
      <-- KSTREAM-MAPVALUES-0000000002

''',
    'count': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-AGGREGATE-0000000002
    Processor: KSTREAM-AGGREGATE-0000000002 (stores: [KSTREAM-AGGREGATE-STATE-STORE-0000000001])
      --> KTABLE-TOSTREAM-0000000003
      <-- KSTREAM-SOURCE-0000000000
    Processor: KTABLE-TOSTREAM-0000000003 (stores: [])
      --> KSTREAM-SINK-0000000004
      <-- KSTREAM-AGGREGATE-0000000002
    Sink: KSTREAM-SINK-0000000004 (topic: out)
      <-- KTABLE-TOSTREAM-0000000003

''',
    'groupby_count': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-KEY-SELECT-0000000001
    Processor: KSTREAM-KEY-SELECT-0000000001 (stores: [])
      --> KSTREAM-FILTER-0000000005
      <-- KSTREAM-SOURCE-0000000000
    Processor: KSTREAM-FILTER-0000000005 (stores: [])
      --> KSTREAM-SINK-0000000004
      <-- KSTREAM-KEY-SELECT-0000000001
    Sink: KSTREAM-SINK-0000000004 (topic: KSTREAM-AGGREGATE-STATE-STORE-0000000002-repartition)
      <-- KSTREAM-FILTER-0000000005

  Sub-topology: 1
    Source: KSTREAM-SOURCE-0000000006 (topics: [KSTREAM-AGGREGATE-STATE-STORE-0000000002-repartition])
      --> KSTREAM-AGGREGATE-0000000003
    Processor: KSTREAM-AGGREGATE-0000000003 (stores: [KSTREAM-AGGREGATE-STATE-STORE-0000000002])
      --> KTABLE-TOSTREAM-0000000007
      <-- KSTREAM-SOURCE-0000000006
    Processor: KTABLE-TOSTREAM-0000000007 (stores: [])
      --> KSTREAM-SINK-0000000008
      <-- KSTREAM-AGGREGATE-0000000003
    Sink: KSTREAM-SINK-0000000008 (topic: out)
      <-- KTABLE-TOSTREAM-0000000007

''',
    'wordcount_named': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-FLATMAPVALUES-0000000001
    Processor: KSTREAM-FLATMAPVALUES-0000000001 (stores: [])
      --> by-word
      <-- KSTREAM-SOURCE-0000000000
    Processor: by-word (stores: [])
      --> by-word-repartition-filter
      <-- KSTREAM-FLATMAPVALUES-0000000001
    Processor: by-word-repartition-filter (stores: [])
      --> by-word-repartition-sink
      <-- by-word
    Sink: by-word-repartition-sink (topic: by-word-repartition)
      <-- by-word-repartition-filter

  Sub-topology: 1
    Source: by-word-repartition-source (topics: [by-word-repartition])
      --> KSTREAM-AGGREGATE-0000000003
    Processor: KSTREAM-AGGREGATE-0000000003 (stores: [counts])
      --> KTABLE-TOSTREAM-0000000007
      <-- by-word-repartition-source
    Processor: KTABLE-TOSTREAM-0000000007 (stores: [])
      --> KSTREAM-SINK-0000000008
      <-- KSTREAM-AGGREGATE-0000000003
    Sink: KSTREAM-SINK-0000000008 (topic: out)
      <-- KTABLE-TOSTREAM-0000000007

''',
    'groupby_count_store': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-KEY-SELECT-0000000001
    Processor: KSTREAM-KEY-SELECT-0000000001 (stores: [])
      --> counts-repartition-filter
      <-- KSTREAM-SOURCE-0000000000
    Processor: counts-repartition-filter (stores: [])
      --> counts-repartition-sink
      <-- KSTREAM-KEY-SELECT-0000000001
    Sink: counts-repartition-sink (topic: counts-repartition)
      <-- counts-repartition-filter

  Sub-topology: 1
    Source: counts-repartition-source (topics: [counts-repartition])
      --> KSTREAM-AGGREGATE-0000000002
    Processor: KSTREAM-AGGREGATE-0000000002 (stores: [counts])
      --> KTABLE-TOSTREAM-0000000006
      <-- counts-repartition-source
    Processor: KTABLE-TOSTREAM-0000000006 (stores: [])
      --> KSTREAM-SINK-0000000007
      <-- KSTREAM-AGGREGATE-0000000002
    Sink: KSTREAM-SINK-0000000007 (topic: out)
      <-- KTABLE-TOSTREAM-0000000006

''',
    'stream_table_join': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000003 (topics: [s])
      --> KSTREAM-JOIN-0000000004
    Processor: KSTREAM-JOIN-0000000004 (stores: [t-STATE-STORE-0000000000])
      --> KSTREAM-SINK-0000000005
      <-- KSTREAM-SOURCE-0000000003
    Source: KSTREAM-SOURCE-0000000001 (topics: [t])
      --> KTABLE-SOURCE-0000000002
    Sink: KSTREAM-SINK-0000000005 (topic: out)
      <-- KSTREAM-JOIN-0000000004
    Processor: KTABLE-SOURCE-0000000002 (stores: [t-STATE-STORE-0000000000])
      --> none
      <-- KSTREAM-SOURCE-0000000001

''',
    'stream_table_leftjoin_mat': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000002 (topics: [s])
      --> KSTREAM-LEFTJOIN-0000000003
    Processor: KSTREAM-LEFTJOIN-0000000003 (stores: [tstore])
      --> KSTREAM-SINK-0000000004
      <-- KSTREAM-SOURCE-0000000002
    Source: KSTREAM-SOURCE-0000000000 (topics: [t])
      --> KTABLE-SOURCE-0000000001
    Sink: KSTREAM-SINK-0000000004 (topic: out)
      <-- KSTREAM-LEFTJOIN-0000000003
    Processor: KTABLE-SOURCE-0000000001 (stores: [tstore])
      --> none
      <-- KSTREAM-SOURCE-0000000000

''',
    'branch_merge': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> sp-
    Processor: sp- (stores: [])
      --> sp-0, sp-2, sp-a
      <-- KSTREAM-SOURCE-0000000000
    Processor: sp-2 (stores: [])
      --> KSTREAM-MERGE-0000000005
      <-- sp-
    Processor: sp-a (stores: [])
      --> KSTREAM-MERGE-0000000005
      <-- sp-
    Processor: KSTREAM-MERGE-0000000005 (stores: [])
      --> KSTREAM-PEEK-0000000006
      <-- sp-a, sp-2
    Processor: KSTREAM-PEEK-0000000006 (stores: [])
      --> KSTREAM-KEY-SELECT-0000000007
      <-- KSTREAM-MERGE-0000000005
    Processor: KSTREAM-KEY-SELECT-0000000007 (stores: [])
      --> KSTREAM-MAP-0000000008
      <-- KSTREAM-PEEK-0000000006
    Processor: KSTREAM-MAP-0000000008 (stores: [])
      --> KSTREAM-FLATMAP-0000000009
      <-- KSTREAM-KEY-SELECT-0000000007
    Processor: KSTREAM-FLATMAP-0000000009 (stores: [])
      --> KSTREAM-FILTER-0000000010
      <-- KSTREAM-MAP-0000000008
    Processor: sp-0 (stores: [])
      --> KSTREAM-FOREACH-0000000012, KSTREAM-PRINTER-0000000013
      <-- sp-
    Processor: KSTREAM-FILTER-0000000010 (stores: [])
      --> KSTREAM-SINK-0000000011
      <-- KSTREAM-FLATMAP-0000000009
    Processor: KSTREAM-FOREACH-0000000012 (stores: [])
      --> none
      <-- sp-0
    Processor: KSTREAM-PRINTER-0000000013 (stores: [])
      --> none
      <-- sp-0
    Sink: KSTREAM-SINK-0000000011 (topic: out)
      <-- KSTREAM-FILTER-0000000010

''',
    'global_join': '''\
Topologies:
   Sub-topology: 0 for global store (will not generate tasks)
    Source: KSTREAM-SOURCE-0000000001 (topics: [g])
      --> KTABLE-SOURCE-0000000002
    Processor: KTABLE-SOURCE-0000000002 (stores: [g-STATE-STORE-0000000000])
      --> none
      <-- KSTREAM-SOURCE-0000000001
  Sub-topology: 1
    Source: KSTREAM-SOURCE-0000000003 (topics: [s])
      --> KSTREAM-LEFTJOIN-0000000004
    Processor: KSTREAM-LEFTJOIN-0000000004 (stores: [])
      --> KSTREAM-SINK-0000000005
      <-- KSTREAM-SOURCE-0000000003
    Sink: KSTREAM-SINK-0000000005 (topic: out)
      <-- KSTREAM-LEFTJOIN-0000000004

''',
    'tt_join': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000001 (topics: [ta])
      --> KTABLE-SOURCE-0000000002
    Source: KSTREAM-SOURCE-0000000004 (topics: [tb])
      --> KTABLE-SOURCE-0000000005
    Processor: KTABLE-SOURCE-0000000002 (stores: [ta-STATE-STORE-0000000000])
      --> KTABLE-JOINTHIS-0000000007
      <-- KSTREAM-SOURCE-0000000001
    Processor: KTABLE-SOURCE-0000000005 (stores: [tb-STATE-STORE-0000000003])
      --> KTABLE-JOINOTHER-0000000008
      <-- KSTREAM-SOURCE-0000000004
    Processor: KTABLE-JOINOTHER-0000000008 (stores: [ta-STATE-STORE-0000000000])
      --> KTABLE-MERGE-0000000006
      <-- KTABLE-SOURCE-0000000005
    Processor: KTABLE-JOINTHIS-0000000007 (stores: [tb-STATE-STORE-0000000003])
      --> KTABLE-MERGE-0000000006
      <-- KTABLE-SOURCE-0000000002
    Processor: KTABLE-MERGE-0000000006 (stores: [])
      --> KTABLE-TOSTREAM-0000000009
      <-- KTABLE-JOINTHIS-0000000007, KTABLE-JOINOTHER-0000000008
    Processor: KTABLE-TOSTREAM-0000000009 (stores: [])
      --> KSTREAM-SINK-0000000010
      <-- KTABLE-MERGE-0000000006
    Sink: KSTREAM-SINK-0000000010 (topic: out)
      <-- KTABLE-TOSTREAM-0000000009

''',
    'tt_leftjoin': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000001 (topics: [ta])
      --> KTABLE-SOURCE-0000000002
    Source: KSTREAM-SOURCE-0000000004 (topics: [tb])
      --> KTABLE-SOURCE-0000000005
    Processor: KTABLE-SOURCE-0000000002 (stores: [ta-STATE-STORE-0000000000])
      --> KTABLE-JOINTHIS-0000000007
      <-- KSTREAM-SOURCE-0000000001
    Processor: KTABLE-SOURCE-0000000005 (stores: [tb-STATE-STORE-0000000003])
      --> KTABLE-JOINOTHER-0000000008
      <-- KSTREAM-SOURCE-0000000004
    Processor: KTABLE-JOINOTHER-0000000008 (stores: [ta-STATE-STORE-0000000000])
      --> KTABLE-MERGE-0000000006
      <-- KTABLE-SOURCE-0000000005
    Processor: KTABLE-JOINTHIS-0000000007 (stores: [tb-STATE-STORE-0000000003])
      --> KTABLE-MERGE-0000000006
      <-- KTABLE-SOURCE-0000000002
    Processor: KTABLE-MERGE-0000000006 (stores: [])
      --> KTABLE-TOSTREAM-0000000009
      <-- KTABLE-JOINTHIS-0000000007, KTABLE-JOINOTHER-0000000008
    Processor: KTABLE-TOSTREAM-0000000009 (stores: [])
      --> KSTREAM-SINK-0000000010
      <-- KTABLE-MERGE-0000000006
    Sink: KSTREAM-SINK-0000000010 (topic: out)
      <-- KTABLE-TOSTREAM-0000000009

''',
    'tt_outerjoin': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000001 (topics: [ta])
      --> KTABLE-SOURCE-0000000002
    Source: KSTREAM-SOURCE-0000000004 (topics: [tb])
      --> KTABLE-SOURCE-0000000005
    Processor: KTABLE-SOURCE-0000000002 (stores: [ta-STATE-STORE-0000000000])
      --> KTABLE-JOINTHIS-0000000007
      <-- KSTREAM-SOURCE-0000000001
    Processor: KTABLE-SOURCE-0000000005 (stores: [tb-STATE-STORE-0000000003])
      --> KTABLE-JOINOTHER-0000000008
      <-- KSTREAM-SOURCE-0000000004
    Processor: KTABLE-JOINOTHER-0000000008 (stores: [ta-STATE-STORE-0000000000])
      --> KTABLE-MERGE-0000000006
      <-- KTABLE-SOURCE-0000000005
    Processor: KTABLE-JOINTHIS-0000000007 (stores: [tb-STATE-STORE-0000000003])
      --> KTABLE-MERGE-0000000006
      <-- KTABLE-SOURCE-0000000002
    Processor: KTABLE-MERGE-0000000006 (stores: [])
      --> KTABLE-TOSTREAM-0000000009
      <-- KTABLE-JOINTHIS-0000000007, KTABLE-JOINOTHER-0000000008
    Processor: KTABLE-TOSTREAM-0000000009 (stores: [])
      --> KSTREAM-SINK-0000000010
      <-- KTABLE-MERGE-0000000006
    Sink: KSTREAM-SINK-0000000010 (topic: out)
      <-- KTABLE-TOSTREAM-0000000009

''',
    'table_ops': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000001 (topics: [t])
      --> KTABLE-SOURCE-0000000002
    Processor: KTABLE-SOURCE-0000000002 (stores: [])
      --> KTABLE-FILTER-0000000003
      <-- KSTREAM-SOURCE-0000000001
    Processor: KTABLE-FILTER-0000000003 (stores: [])
      --> KTABLE-MAPVALUES-0000000004
      <-- KTABLE-SOURCE-0000000002
    Processor: KTABLE-MAPVALUES-0000000004 (stores: [])
      --> KTABLE-FILTER-0000000005
      <-- KTABLE-FILTER-0000000003
    Processor: KTABLE-FILTER-0000000005 (stores: [])
      --> KTABLE-TOSTREAM-0000000006
      <-- KTABLE-MAPVALUES-0000000004
    Processor: KTABLE-TOSTREAM-0000000006 (stores: [])
      --> KSTREAM-SINK-0000000007
      <-- KTABLE-FILTER-0000000005
    Sink: KSTREAM-SINK-0000000007 (topic: out)
      <-- KTABLE-TOSTREAM-0000000006

''',
    'table_ops_mat': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [t])
      --> KTABLE-SOURCE-0000000001
    Processor: KTABLE-SOURCE-0000000001 (stores: [ts])
      --> KTABLE-FILTER-0000000002
      <-- KSTREAM-SOURCE-0000000000
    Processor: KTABLE-FILTER-0000000002 (stores: [fs])
      --> KTABLE-TOSTREAM-0000000003
      <-- KTABLE-SOURCE-0000000001
    Processor: KTABLE-TOSTREAM-0000000003 (stores: [])
      --> KSTREAM-SINK-0000000004
      <-- KTABLE-FILTER-0000000002
    Sink: KSTREAM-SINK-0000000004 (topic: out)
      <-- KTABLE-TOSTREAM-0000000003

''',
    'cogroup': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [a])
      --> COGROUPKSTREAM-AGGREGATE-0000000003
    Source: KSTREAM-SOURCE-0000000001 (topics: [b])
      --> COGROUPKSTREAM-AGGREGATE-0000000004
    Processor: COGROUPKSTREAM-AGGREGATE-0000000003 (stores: [COGROUPKSTREAM-AGGREGATE-STATE-STORE-0000000002])
      --> COGROUPKSTREAM-MERGE-0000000005
      <-- KSTREAM-SOURCE-0000000000
    Processor: COGROUPKSTREAM-AGGREGATE-0000000004 (stores: [COGROUPKSTREAM-AGGREGATE-STATE-STORE-0000000002])
      --> COGROUPKSTREAM-MERGE-0000000005
      <-- KSTREAM-SOURCE-0000000001
    Processor: COGROUPKSTREAM-MERGE-0000000005 (stores: [])
      --> KTABLE-TOSTREAM-0000000006
      <-- COGROUPKSTREAM-AGGREGATE-0000000003, COGROUPKSTREAM-AGGREGATE-0000000004
    Processor: KTABLE-TOSTREAM-0000000006 (stores: [])
      --> KSTREAM-SINK-0000000007
      <-- COGROUPKSTREAM-MERGE-0000000005
    Sink: KSTREAM-SINK-0000000007 (topic: out)
      <-- KTABLE-TOSTREAM-0000000006

''',
    'repartition': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-FILTER-0000000003
    Processor: KSTREAM-FILTER-0000000003 (stores: [])
      --> KSTREAM-SINK-0000000002
      <-- KSTREAM-SOURCE-0000000000
    Sink: KSTREAM-SINK-0000000002 (topic: KSTREAM-REPARTITION-0000000001-repartition)
      <-- KSTREAM-FILTER-0000000003

  Sub-topology: 1
    Source: KSTREAM-SOURCE-0000000004 (topics: [KSTREAM-REPARTITION-0000000001-repartition])
      --> KSTREAM-SINK-0000000005
    Sink: KSTREAM-SINK-0000000005 (topic: out)
      <-- KSTREAM-SOURCE-0000000004

''',
    'pattern': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: in-.*)
      --> KSTREAM-SINK-0000000001
    Sink: KSTREAM-SINK-0000000001 (topic: out)
      <-- KSTREAM-SOURCE-0000000000

  Sub-topology: 1
    Source: KSTREAM-SOURCE-0000000002 (topics: [a, b])
      --> KSTREAM-SINK-0000000003
    Sink: KSTREAM-SINK-0000000003 (topic: out2)
      <-- KSTREAM-SOURCE-0000000002

''',
    'reduce_aggregate': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-REDUCE-0000000002
    Processor: KSTREAM-REDUCE-0000000002 (stores: [KSTREAM-REDUCE-STATE-STORE-0000000001])
      --> KTABLE-TOSTREAM-0000000003
      <-- KSTREAM-SOURCE-0000000000
    Processor: KTABLE-TOSTREAM-0000000003 (stores: [])
      --> KSTREAM-SINK-0000000004
      <-- KSTREAM-REDUCE-0000000002
    Sink: KSTREAM-SINK-0000000004 (topic: out)
      <-- KTABLE-TOSTREAM-0000000003

  Sub-topology: 1
    Source: KSTREAM-SOURCE-0000000005 (topics: [in2])
      --> KSTREAM-AGGREGATE-0000000007
    Processor: KSTREAM-AGGREGATE-0000000007 (stores: [KSTREAM-AGGREGATE-STATE-STORE-0000000006])
      --> KTABLE-TOSTREAM-0000000008
      <-- KSTREAM-SOURCE-0000000005
    Processor: KTABLE-TOSTREAM-0000000008 (stores: [])
      --> KSTREAM-SINK-0000000009
      <-- KSTREAM-AGGREGATE-0000000007
    Sink: KSTREAM-SINK-0000000009 (topic: out2)
      <-- KTABLE-TOSTREAM-0000000008

''',
    'process': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-PROCESSOR-0000000001
    Processor: KSTREAM-PROCESSOR-0000000001 (stores: [])
      --> KSTREAM-SINK-0000000002
      <-- KSTREAM-SOURCE-0000000000
    Sink: KSTREAM-SINK-0000000002 (topic: out)
      <-- KSTREAM-PROCESSOR-0000000001

  Sub-topology: 1
    Source: KSTREAM-SOURCE-0000000003 (topics: [in2])
      --> KSTREAM-PROCESSVALUES-0000000004
    Processor: KSTREAM-PROCESSVALUES-0000000004 (stores: [])
      --> KSTREAM-SINK-0000000005
      <-- KSTREAM-SOURCE-0000000003
    Sink: KSTREAM-SINK-0000000005 (topic: out2)
      <-- KSTREAM-PROCESSVALUES-0000000004

''',
    'process_store': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-PROCESSOR-0000000001
    Processor: KSTREAM-PROCESSOR-0000000001 (stores: [my-store])
      --> KSTREAM-SINK-0000000002
      <-- KSTREAM-SOURCE-0000000000
    Sink: KSTREAM-SINK-0000000002 (topic: out)
      <-- KSTREAM-PROCESSOR-0000000001

''',
    'two_groupby_global': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-KEY-SELECT-0000000001, KSTREAM-KEY-SELECT-0000000010
    Processor: KSTREAM-KEY-SELECT-0000000001 (stores: [])
      --> KSTREAM-FILTER-0000000005
      <-- KSTREAM-SOURCE-0000000000
    Processor: KSTREAM-KEY-SELECT-0000000010 (stores: [])
      --> KSTREAM-FILTER-0000000014
      <-- KSTREAM-SOURCE-0000000000
    Processor: KSTREAM-FILTER-0000000005 (stores: [])
      --> KSTREAM-SINK-0000000004
      <-- KSTREAM-KEY-SELECT-0000000001
    Processor: KSTREAM-FILTER-0000000014 (stores: [])
      --> KSTREAM-SINK-0000000013
      <-- KSTREAM-KEY-SELECT-0000000010
    Sink: KSTREAM-SINK-0000000004 (topic: KSTREAM-AGGREGATE-STATE-STORE-0000000002-repartition)
      <-- KSTREAM-FILTER-0000000005
    Sink: KSTREAM-SINK-0000000013 (topic: KSTREAM-REDUCE-STATE-STORE-0000000011-repartition)
      <-- KSTREAM-FILTER-0000000014

  Sub-topology: 1
    Source: KSTREAM-SOURCE-0000000006 (topics: [KSTREAM-AGGREGATE-STATE-STORE-0000000002-repartition])
      --> KSTREAM-AGGREGATE-0000000003
    Processor: KSTREAM-AGGREGATE-0000000003 (stores: [KSTREAM-AGGREGATE-STATE-STORE-0000000002])
      --> KTABLE-TOSTREAM-0000000007
      <-- KSTREAM-SOURCE-0000000006
    Processor: KTABLE-TOSTREAM-0000000007 (stores: [])
      --> KSTREAM-SINK-0000000008
      <-- KSTREAM-AGGREGATE-0000000003
    Sink: KSTREAM-SINK-0000000008 (topic: out)
      <-- KTABLE-TOSTREAM-0000000007

  Sub-topology: 2
    Source: KSTREAM-SOURCE-0000000015 (topics: [KSTREAM-REDUCE-STATE-STORE-0000000011-repartition])
      --> KSTREAM-REDUCE-0000000012
    Processor: KSTREAM-REDUCE-0000000012 (stores: [KSTREAM-REDUCE-STATE-STORE-0000000011])
      --> KTABLE-TOSTREAM-0000000016
      <-- KSTREAM-SOURCE-0000000015
    Processor: KTABLE-TOSTREAM-0000000016 (stores: [])
      --> KSTREAM-SINK-0000000017
      <-- KSTREAM-REDUCE-0000000012
    Sink: KSTREAM-SINK-0000000017 (topic: out)
      <-- KTABLE-TOSTREAM-0000000016

  Sub-topology: 3 for global store (will not generate tasks)
    Source: KSTREAM-SOURCE-0000000018 (topics: [g])
      --> KTABLE-SOURCE-0000000019
    Processor: KTABLE-SOURCE-0000000019 (stores: [gs])
      --> none
      <-- KSTREAM-SOURCE-0000000018
''',
    'named': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> my-filter
    Processor: my-filter (stores: [])
      --> my-sink
      <-- KSTREAM-SOURCE-0000000000
    Sink: my-sink (topic: out)
      <-- my-filter

''',
    'split_unnamed': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-BRANCH-0000000001
    Processor: KSTREAM-BRANCH-0000000001 (stores: [])
      --> KSTREAM-BRANCH-00000000011, KSTREAM-BRANCH-00000000010, KSTREAM-BRANCH-00000000012
      <-- KSTREAM-SOURCE-0000000000
    Processor: KSTREAM-BRANCH-00000000011 (stores: [])
      --> KSTREAM-SINK-0000000005
      <-- KSTREAM-BRANCH-0000000001
    Processor: KSTREAM-BRANCH-00000000010 (stores: [])
      --> none
      <-- KSTREAM-BRANCH-0000000001
    Processor: KSTREAM-BRANCH-00000000012 (stores: [])
      --> none
      <-- KSTREAM-BRANCH-0000000001
    Sink: KSTREAM-SINK-0000000005 (topic: o1)
      <-- KSTREAM-BRANCH-00000000011

  Sub-topology: 1
    Source: KSTREAM-SOURCE-0000000006 (topics: [in2])
      --> KSTREAM-SINK-0000000007
    Sink: KSTREAM-SINK-0000000007 (topic: o2)
      <-- KSTREAM-SOURCE-0000000006

''',
    'split_consumer': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> x-
    Processor: x- (stores: [])
      --> x-1
      <-- KSTREAM-SOURCE-0000000000
    Processor: x-1 (stores: [])
      --> KSTREAM-SINK-0000000003
      <-- x-
    Sink: KSTREAM-SINK-0000000003 (topic: c)
      <-- x-1

  Sub-topology: 1
    Source: KSTREAM-SOURCE-0000000004 (topics: [in2])
      --> KSTREAM-SINK-0000000005
    Sink: KSTREAM-SINK-0000000005 (topic: o2)
      <-- KSTREAM-SOURCE-0000000004

''',
    'join_after_selectkey': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000007 (topics: [KSTREAM-KEY-SELECT-0000000004-repartition])
      --> KSTREAM-JOIN-0000000008
    Processor: KSTREAM-JOIN-0000000008 (stores: [t-STATE-STORE-0000000000])
      --> KSTREAM-SINK-0000000009
      <-- KSTREAM-SOURCE-0000000007
    Source: KSTREAM-SOURCE-0000000001 (topics: [t])
      --> KTABLE-SOURCE-0000000002
    Sink: KSTREAM-SINK-0000000009 (topic: out)
      <-- KSTREAM-JOIN-0000000008
    Processor: KTABLE-SOURCE-0000000002 (stores: [t-STATE-STORE-0000000000])
      --> none
      <-- KSTREAM-SOURCE-0000000001

  Sub-topology: 1
    Source: KSTREAM-SOURCE-0000000003 (topics: [s])
      --> KSTREAM-KEY-SELECT-0000000004
    Processor: KSTREAM-KEY-SELECT-0000000004 (stores: [])
      --> KSTREAM-FILTER-0000000006
      <-- KSTREAM-SOURCE-0000000003
    Processor: KSTREAM-FILTER-0000000006 (stores: [])
      --> KSTREAM-SINK-0000000005
      <-- KSTREAM-KEY-SELECT-0000000004
    Sink: KSTREAM-SINK-0000000005 (topic: KSTREAM-KEY-SELECT-0000000004-repartition)
      <-- KSTREAM-FILTER-0000000006

''',
    'merge': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-MAPVALUES-0000000001
    Processor: KSTREAM-MAPVALUES-0000000001 (stores: [])
      --> KSTREAM-MERGE-0000000003
      <-- KSTREAM-SOURCE-0000000000
    Source: KSTREAM-SOURCE-0000000002 (topics: [in2])
      --> KSTREAM-MERGE-0000000003
    Processor: KSTREAM-MERGE-0000000003 (stores: [])
      --> KSTREAM-SINK-0000000004
      <-- KSTREAM-MAPVALUES-0000000001, KSTREAM-SOURCE-0000000002
    Sink: KSTREAM-SINK-0000000004 (topic: out)
      <-- KSTREAM-MERGE-0000000003

''',
    'table_agg_filter': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-AGGREGATE-0000000002
    Processor: KSTREAM-AGGREGATE-0000000002 (stores: [KSTREAM-AGGREGATE-STATE-STORE-0000000001])
      --> KTABLE-TOSTREAM-0000000006, KTABLE-FILTER-0000000003
      <-- KSTREAM-SOURCE-0000000000
    Processor: KTABLE-FILTER-0000000003 (stores: [])
      --> KTABLE-TOSTREAM-0000000004
      <-- KSTREAM-AGGREGATE-0000000002
    Processor: KTABLE-TOSTREAM-0000000004 (stores: [])
      --> KSTREAM-SINK-0000000005
      <-- KTABLE-FILTER-0000000003
    Processor: KTABLE-TOSTREAM-0000000006 (stores: [])
      --> KSTREAM-SINK-0000000007
      <-- KSTREAM-AGGREGATE-0000000002
    Sink: KSTREAM-SINK-0000000005 (topic: out)
      <-- KTABLE-TOSTREAM-0000000004
    Sink: KSTREAM-SINK-0000000007 (topic: out2)
      <-- KTABLE-TOSTREAM-0000000006

''',
    'order_test': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-PEEK-0000000001
    Processor: KSTREAM-PEEK-0000000001 (stores: [])
      --> KSTREAM-SINK-0000000002
      <-- KSTREAM-SOURCE-0000000000
    Sink: KSTREAM-SINK-0000000002 (topic: out)
      <-- KSTREAM-PEEK-0000000001

  Sub-topology: 1
    Source: KSTREAM-SOURCE-0000000003 (topics: [in3])
      --> KSTREAM-AGGREGATE-0000000005
    Processor: KSTREAM-AGGREGATE-0000000005 (stores: [KSTREAM-AGGREGATE-STATE-STORE-0000000004])
      --> none
      <-- KSTREAM-SOURCE-0000000003

''',
    'papi': '''\
Topologies:
   Sub-topology: 0
    Source: Source (topics: [in])
      --> Process
    Processor: Process (stores: [Counts])
      --> Sink
      <-- Source
    Sink: Sink (topic: out)
      <-- Process

  Sub-topology: 1
    Source: Source2 (topics: [in2])
      --> Sink2
    Sink: Sink2 (topic: out2)
      <-- Source2

''',
    'windowed_count_suppress': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-AGGREGATE-0000000002
    Processor: KSTREAM-AGGREGATE-0000000002 (stores: [KSTREAM-AGGREGATE-STATE-STORE-0000000001])
      --> KTABLE-SUPPRESS-0000000003
      <-- KSTREAM-SOURCE-0000000000
    Processor: KTABLE-SUPPRESS-0000000003 (stores: [KTABLE-SUPPRESS-STATE-STORE-0000000004])
      --> KTABLE-TOSTREAM-0000000005
      <-- KSTREAM-AGGREGATE-0000000002
    Processor: KTABLE-TOSTREAM-0000000005 (stores: [])
      --> KSTREAM-SINK-0000000006
      <-- KTABLE-SUPPRESS-0000000003
    Sink: KSTREAM-SINK-0000000006 (topic: out)
      <-- KTABLE-TOSTREAM-0000000005

''',
    'windowed_emit_close': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-AGGREGATE-0000000002
    Processor: KSTREAM-AGGREGATE-0000000002 (stores: [KSTREAM-AGGREGATE-STATE-STORE-0000000001])
      --> KTABLE-TOSTREAM-0000000003
      <-- KSTREAM-SOURCE-0000000000
    Processor: KTABLE-TOSTREAM-0000000003 (stores: [])
      --> KSTREAM-SINK-0000000004
      <-- KSTREAM-AGGREGATE-0000000002
    Sink: KSTREAM-SINK-0000000004 (topic: out)
      <-- KTABLE-TOSTREAM-0000000003

''',
    'session_count': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-AGGREGATE-0000000002
    Processor: KSTREAM-AGGREGATE-0000000002 (stores: [KSTREAM-AGGREGATE-STATE-STORE-0000000001])
      --> KTABLE-TOSTREAM-0000000003
      <-- KSTREAM-SOURCE-0000000000
    Processor: KTABLE-TOSTREAM-0000000003 (stores: [])
      --> KSTREAM-SINK-0000000004
      <-- KSTREAM-AGGREGATE-0000000002
    Sink: KSTREAM-SINK-0000000004 (topic: out)
      <-- KTABLE-TOSTREAM-0000000003

''',
    'sliding_reduce': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-REDUCE-0000000002
    Processor: KSTREAM-REDUCE-0000000002 (stores: [KSTREAM-REDUCE-STATE-STORE-0000000001])
      --> KTABLE-TOSTREAM-0000000003
      <-- KSTREAM-SOURCE-0000000000
    Processor: KTABLE-TOSTREAM-0000000003 (stores: [])
      --> KSTREAM-SINK-0000000004
      <-- KSTREAM-REDUCE-0000000002
    Sink: KSTREAM-SINK-0000000004 (topic: out)
      <-- KTABLE-TOSTREAM-0000000003

''',
    'suppress_time': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-AGGREGATE-0000000002
    Processor: KSTREAM-AGGREGATE-0000000002 (stores: [KSTREAM-AGGREGATE-STATE-STORE-0000000001])
      --> KTABLE-SUPPRESS-0000000003
      <-- KSTREAM-SOURCE-0000000000
    Processor: KTABLE-SUPPRESS-0000000003 (stores: [KTABLE-SUPPRESS-STATE-STORE-0000000004])
      --> KTABLE-TOSTREAM-0000000005
      <-- KSTREAM-AGGREGATE-0000000002
    Processor: KTABLE-TOSTREAM-0000000005 (stores: [])
      --> KSTREAM-SINK-0000000006
      <-- KTABLE-SUPPRESS-0000000003
    Sink: KSTREAM-SINK-0000000006 (topic: out)
      <-- KTABLE-TOSTREAM-0000000005

''',
    'windowed_named': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-AGGREGATE-0000000001
    Processor: KSTREAM-AGGREGATE-0000000001 (stores: [wc])
      --> KTABLE-TOSTREAM-0000000002
      <-- KSTREAM-SOURCE-0000000000
    Processor: KTABLE-TOSTREAM-0000000002 (stores: [])
      --> KSTREAM-SINK-0000000003
      <-- KSTREAM-AGGREGATE-0000000001
    Sink: KSTREAM-SINK-0000000003 (topic: out)
      <-- KTABLE-TOSTREAM-0000000002

''',
    'windowed_groupby': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-KEY-SELECT-0000000001
    Processor: KSTREAM-KEY-SELECT-0000000001 (stores: [])
      --> KSTREAM-FILTER-0000000005
      <-- KSTREAM-SOURCE-0000000000
    Processor: KSTREAM-FILTER-0000000005 (stores: [])
      --> KSTREAM-SINK-0000000004
      <-- KSTREAM-KEY-SELECT-0000000001
    Sink: KSTREAM-SINK-0000000004 (topic: KSTREAM-AGGREGATE-STATE-STORE-0000000002-repartition)
      <-- KSTREAM-FILTER-0000000005

  Sub-topology: 1
    Source: KSTREAM-SOURCE-0000000006 (topics: [KSTREAM-AGGREGATE-STATE-STORE-0000000002-repartition])
      --> KSTREAM-AGGREGATE-0000000003
    Processor: KSTREAM-AGGREGATE-0000000003 (stores: [KSTREAM-AGGREGATE-STATE-STORE-0000000002])
      --> KTABLE-TOSTREAM-0000000007
      <-- KSTREAM-SOURCE-0000000006
    Processor: KTABLE-TOSTREAM-0000000007 (stores: [])
      --> KSTREAM-SINK-0000000008
      <-- KSTREAM-AGGREGATE-0000000003
    Sink: KSTREAM-SINK-0000000008 (topic: out)
      <-- KTABLE-TOSTREAM-0000000007

''',
    'session_suppress': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-AGGREGATE-0000000002
    Processor: KSTREAM-AGGREGATE-0000000002 (stores: [KSTREAM-AGGREGATE-STATE-STORE-0000000001])
      --> sup
      <-- KSTREAM-SOURCE-0000000000
    Processor: sup (stores: [sup-store])
      --> KTABLE-TOSTREAM-0000000003
      <-- KSTREAM-AGGREGATE-0000000002
    Processor: KTABLE-TOSTREAM-0000000003 (stores: [])
      --> KSTREAM-SINK-0000000004
      <-- sup
    Sink: KSTREAM-SINK-0000000004 (topic: out)
      <-- KTABLE-TOSTREAM-0000000003

''',
    'sliding_emit': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [in])
      --> KSTREAM-AGGREGATE-0000000002
    Processor: KSTREAM-AGGREGATE-0000000002 (stores: [KSTREAM-AGGREGATE-STATE-STORE-0000000001])
      --> KTABLE-TOSTREAM-0000000003
      <-- KSTREAM-SOURCE-0000000000
    Processor: KTABLE-TOSTREAM-0000000003 (stores: [])
      --> KSTREAM-SINK-0000000004
      <-- KSTREAM-AGGREGATE-0000000002
    Sink: KSTREAM-SINK-0000000004 (topic: out)
      <-- KTABLE-TOSTREAM-0000000003

''',
    'ss_join': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [l])
      --> KSTREAM-WINDOWED-0000000002
    Source: KSTREAM-SOURCE-0000000001 (topics: [r])
      --> KSTREAM-WINDOWED-0000000003
    Processor: KSTREAM-WINDOWED-0000000002 (stores: [KSTREAM-JOINTHIS-0000000004-store])
      --> KSTREAM-JOINTHIS-0000000004
      <-- KSTREAM-SOURCE-0000000000
    Processor: KSTREAM-WINDOWED-0000000003 (stores: [KSTREAM-JOINOTHER-0000000005-store])
      --> KSTREAM-JOINOTHER-0000000005
      <-- KSTREAM-SOURCE-0000000001
    Processor: KSTREAM-JOINOTHER-0000000005 (stores: [KSTREAM-JOINTHIS-0000000004-store])
      --> KSTREAM-MERGE-0000000006
      <-- KSTREAM-WINDOWED-0000000003
    Processor: KSTREAM-JOINTHIS-0000000004 (stores: [KSTREAM-JOINOTHER-0000000005-store])
      --> KSTREAM-MERGE-0000000006
      <-- KSTREAM-WINDOWED-0000000002
    Processor: KSTREAM-MERGE-0000000006 (stores: [])
      --> KSTREAM-SINK-0000000007
      <-- KSTREAM-JOINTHIS-0000000004, KSTREAM-JOINOTHER-0000000005
    Sink: KSTREAM-SINK-0000000007 (topic: out)
      <-- KSTREAM-MERGE-0000000006

''',
    'ss_leftjoin': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [l])
      --> KSTREAM-WINDOWED-0000000002
    Source: KSTREAM-SOURCE-0000000001 (topics: [r])
      --> KSTREAM-WINDOWED-0000000003
    Processor: KSTREAM-WINDOWED-0000000002 (stores: [KSTREAM-JOINTHIS-0000000004-store])
      --> KSTREAM-JOINTHIS-0000000004
      <-- KSTREAM-SOURCE-0000000000
    Processor: KSTREAM-WINDOWED-0000000003 (stores: [KSTREAM-OUTEROTHER-0000000005-store])
      --> KSTREAM-OUTEROTHER-0000000005
      <-- KSTREAM-SOURCE-0000000001
    Processor: KSTREAM-JOINTHIS-0000000004 (stores: [KSTREAM-OUTEROTHER-0000000005-store, KSTREAM-OUTERSHARED-0000000004-store])
      --> KSTREAM-MERGE-0000000006
      <-- KSTREAM-WINDOWED-0000000002
    Processor: KSTREAM-OUTEROTHER-0000000005 (stores: [KSTREAM-JOINTHIS-0000000004-store, KSTREAM-OUTERSHARED-0000000004-store])
      --> KSTREAM-MERGE-0000000006
      <-- KSTREAM-WINDOWED-0000000003
    Processor: KSTREAM-MERGE-0000000006 (stores: [])
      --> KSTREAM-SINK-0000000007
      <-- KSTREAM-JOINTHIS-0000000004, KSTREAM-OUTEROTHER-0000000005
    Sink: KSTREAM-SINK-0000000007 (topic: out)
      <-- KSTREAM-MERGE-0000000006

''',
    'ss_outerjoin': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [l])
      --> KSTREAM-WINDOWED-0000000002
    Source: KSTREAM-SOURCE-0000000001 (topics: [r])
      --> KSTREAM-WINDOWED-0000000003
    Processor: KSTREAM-WINDOWED-0000000002 (stores: [KSTREAM-OUTERTHIS-0000000004-store])
      --> KSTREAM-OUTERTHIS-0000000004
      <-- KSTREAM-SOURCE-0000000000
    Processor: KSTREAM-WINDOWED-0000000003 (stores: [KSTREAM-OUTEROTHER-0000000005-store])
      --> KSTREAM-OUTEROTHER-0000000005
      <-- KSTREAM-SOURCE-0000000001
    Processor: KSTREAM-OUTEROTHER-0000000005 (stores: [KSTREAM-OUTERTHIS-0000000004-store, KSTREAM-OUTERSHARED-0000000004-store])
      --> KSTREAM-MERGE-0000000006
      <-- KSTREAM-WINDOWED-0000000003
    Processor: KSTREAM-OUTERTHIS-0000000004 (stores: [KSTREAM-OUTEROTHER-0000000005-store, KSTREAM-OUTERSHARED-0000000004-store])
      --> KSTREAM-MERGE-0000000006
      <-- KSTREAM-WINDOWED-0000000002
    Processor: KSTREAM-MERGE-0000000006 (stores: [])
      --> KSTREAM-SINK-0000000007
      <-- KSTREAM-OUTERTHIS-0000000004, KSTREAM-OUTEROTHER-0000000005
    Sink: KSTREAM-SINK-0000000007 (topic: out)
      <-- KSTREAM-MERGE-0000000006

''',
    'ss_self_named': '''\
Topologies:
   Sub-topology: 0
    Source: KSTREAM-SOURCE-0000000000 (topics: [l])
      --> KSTREAM-WINDOWED-0000000001, KSTREAM-WINDOWED-0000000002
    Processor: KSTREAM-WINDOWED-0000000001 (stores: [sj-this-join-store])
      --> KSTREAM-JOINTHIS-0000000003
      <-- KSTREAM-SOURCE-0000000000
    Processor: KSTREAM-WINDOWED-0000000002 (stores: [sj-other-join-store])
      --> KSTREAM-JOINOTHER-0000000004
      <-- KSTREAM-SOURCE-0000000000
    Processor: KSTREAM-JOINOTHER-0000000004 (stores: [sj-this-join-store])
      --> KSTREAM-MERGE-0000000005
      <-- KSTREAM-WINDOWED-0000000002
    Processor: KSTREAM-JOINTHIS-0000000003 (stores: [sj-other-join-store])
      --> KSTREAM-MERGE-0000000005
      <-- KSTREAM-WINDOWED-0000000001
    Processor: KSTREAM-MERGE-0000000005 (stores: [])
      --> KSTREAM-SINK-0000000006
      <-- KSTREAM-JOINTHIS-0000000003, KSTREAM-JOINOTHER-0000000004
    Sink: KSTREAM-SINK-0000000006 (topic: out)
      <-- KSTREAM-MERGE-0000000005

''',
}


@pytest.mark.parametrize("name", sorted(T))
def test_describe_matches_kafka(name):
    b = StreamsBuilder()
    topology = T[name](b) or b.build()
    assert str(topology.describe()) == EXPECTED[name]


def test_mermaid_draws_every_node_topic_and_store():
    b = StreamsBuilder()
    T["groupby_count_store"](b)
    text = b.build().describe().to_mermaid()
    assert text.startswith("flowchart TB\n")
    for name in ("KSTREAM-KEY-SELECT-0000000001", "counts-repartition-sink", "KSTREAM-AGGREGATE-0000000002"):
        assert f'"{name}"' in text
    assert '(["counts-repartition"])' in text and '[("counts")]' in text
    assert text.count("subgraph") == 2
