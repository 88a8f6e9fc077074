import com.fasterxml.jackson.databind.*;
import com.fasterxml.jackson.databind.node.*;
import java.io.*;
import java.time.*;
import java.util.*;
import java.util.function.*;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.common.serialization.*;
import org.apache.kafka.common.*;
import org.apache.kafka.streams.*;
import org.apache.kafka.streams.kstream.*;
import org.apache.kafka.streams.test.*;

/**
 * Runs one topology per input line through Apache Kafka Streams' own TopologyTestDriver (record
 * caches off) and prints what it wrote, as JSON: the reference side of test_kafka_diff.py.
 * Input lines: {"topo": NAME, "params": {...}, "inputs": [[TOPIC, KEY, VALUE, TS], ...]}.
 */
public class StreamsSemantics {
  static final ObjectMapper M = new ObjectMapper();
  public static void main(String[] a) throws Exception {
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
    String line;
    while ((line = in.readLine()) != null) {
      JsonNode sc = M.readTree(line);
      System.out.println(M.writeValueAsString(run(sc)));
      System.out.flush();
    }
  }
  static String hex(byte[] b) {
    if (b == null) return null;
    StringBuilder s = new StringBuilder();
    for (byte x : b) s.append(String.format("%02x", x));
    return s.toString();
  }
  static String wk(Windowed<String> w) { return w.key() + "," + w.window().start() + "," + w.window().end(); }
  static JsonNode run(JsonNode sc) {
    String topo = sc.get("topo").asText();
    JsonNode p = sc.get("params");
    StreamsBuilder b = new StreamsBuilder();
    boolean longOut = true;
    Consumed<String,String> c = Consumed.with(Serdes.String(), Serdes.String());
    switch (topo) {
      case "tw": {
        TimeWindows w = TimeWindows.ofSizeAndGrace(Duration.ofMillis(p.get("size").asLong()), Duration.ofMillis(p.get("grace").asLong())).advanceBy(Duration.ofMillis(p.get("advance").asLong()));
        TimeWindowedKStream<String,String> ws = b.stream("in", c).groupByKey().windowedBy(w);
        String emit = p.get("emit").asText();
        if (emit.equals("final")) ws = ws.emitStrategy(EmitStrategy.onWindowClose());
        KTable<Windowed<String>,Long> t = ws.count();
        if (emit.equals("suppress")) t = t.suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()));
        t.toStream().map((k, v) -> KeyValue.pair(wk(k), v)).to("out", Produced.with(Serdes.String(), Serdes.Long()));
        break; }
      case "session": {
        SessionWindows w = SessionWindows.ofInactivityGapAndGrace(Duration.ofMillis(p.get("gap").asLong()), Duration.ofMillis(p.get("grace").asLong()));
        SessionWindowedKStream<String,String> ws = b.stream("in", c).groupByKey().windowedBy(w);
        String emit = p.get("emit").asText();
        if (emit.equals("final")) ws = ws.emitStrategy(EmitStrategy.onWindowClose());
        ws.count().toStream().map((k, v) -> KeyValue.pair(wk(k), v)).to("out", Produced.with(Serdes.String(), Serdes.Long()));
        break; }
      case "sliding": {
        SlidingWindows w = SlidingWindows.ofTimeDifferenceAndGrace(Duration.ofMillis(p.get("d").asLong()), Duration.ofMillis(p.get("grace").asLong()));
        b.stream("in", c).groupByKey().windowedBy(w).count().toStream().map((k, v) -> KeyValue.pair(wk(k), v)).to("out", Produced.with(Serdes.String(), Serdes.Long()));
        break; }
      case "ssjoin": {
        longOut = false;
        JoinWindows w = JoinWindows.ofTimeDifferenceAndGrace(Duration.ofMillis(p.get("diff").asLong()), Duration.ofMillis(p.get("grace").asLong()));
        if (p.has("before")) w = w.before(Duration.ofMillis(p.get("before").asLong()));
        if (p.has("after")) w = w.after(Duration.ofMillis(p.get("after").asLong()));
        KStream<String,String> l = b.stream("l", c), r = b.stream("r", c);
        ValueJoiner<String,String,String> j = (x, y) -> x + "+" + y;
        StreamJoined<String,String,String> sj = StreamJoined.with(Serdes.String(), Serdes.String(), Serdes.String());
        String kind = p.get("kind").asText();
        KStream<String,String> o = kind.equals("inner") ? l.join(r, j, w, sj) : kind.equals("left") ? l.leftJoin(r, j, w, sj) : l.outerJoin(r, j, w, sj);
        o.to("out", Produced.with(Serdes.String(), Serdes.String()));
        break; }
      case "ttjoin":
      case "ttfilter": {
        // ttfilter: the left table filtered, the right one mapped (unless nolf / norm)
        longOut = false;
        KTable<String,String> ta = b.table("a", c), tb = b.table("b", c);
        if (topo.equals("ttfilter") && !p.has("nolf")) ta = ta.filter((k, v) -> !v.endsWith("1"));
        if (topo.equals("ttfilter") && !p.has("norm")) tb = tb.mapValues(v -> v + "!");
        ValueJoiner<String,String,String> j = (x, y) -> x + "+" + y;
        String kind = p.get("kind").asText();
        KTable<String,String> o = kind.equals("inner") ? ta.join(tb, j) : kind.equals("left") ? ta.leftJoin(tb, j) : ta.outerJoin(tb, j);
        o.toStream().to("out", Produced.with(Serdes.String(), Serdes.String()));
        break; }
      case "suppress_time": {
        b.stream("in", c).groupByKey().count().suppress(Suppressed.untilTimeLimit(Duration.ofMillis(p.get("limit").asLong()), Suppressed.BufferConfig.unbounded())).toStream().to("out", Produced.with(Serdes.String(), Serdes.Long()));
        break; }
      case "groupby": {
        // words re-keyed through a repartition topic, counted and concatenated
        KGroupedStream<String,String> g = b.stream("in", c).flatMapValues(v -> Arrays.asList(v.split(" ")))
            .groupBy((k, w) -> w, Grouped.with(Serdes.String(), Serdes.String()));
        g.count().toStream().to("out", Produced.with(Serdes.String(), Serdes.Long()));
        g.reduce((x, y) -> x + y).toStream().mapValues(v -> (long) v.length()).to("out", Produced.with(Serdes.String(), Serdes.Long()));
        break; }
      case "stjoin": {
        longOut = false;
        KTable<String,String> t = b.table("t", c);
        KStream<String,String> st = b.stream("s", c);
        ValueJoiner<String,String,String> j = (x, y) -> x + "+" + y;
        if (p.get("kind").asText().equals("inner")) st.join(t, j).to("out", Produced.with(Serdes.String(), Serdes.String()));
        else st.leftJoin(t, j).to("out", Produced.with(Serdes.String(), Serdes.String()));
        break; }
      case "global": {
        longOut = false;
        GlobalKTable<String,String> g = b.globalTable("g", c);
        KStream<String,String> st = b.stream("s", c);
        ValueJoiner<String,String,String> j = (x, y) -> x + "+" + y;
        KeyValueMapper<String,String,String> sel = (k, v) -> v.substring(0, 1);
        if (p.get("kind").asText().equals("inner")) st.join(g, sel, j).to("out", Produced.with(Serdes.String(), Serdes.String()));
        else st.leftJoin(g, sel, j).to("out", Produced.with(Serdes.String(), Serdes.String()));
        break; }
      case "tablegroupby": {
        // rows re-grouped by their value's first letter: counted, and their lengths summed
        KGroupedTable<String,String> g = b.table("t", c).groupBy((k, v) -> KeyValue.pair(v.substring(0, 1), v),
            Grouped.with(Serdes.String(), Serdes.String()));
        g.count().toStream().to("out", Produced.with(Serdes.String(), Serdes.Long()));
        g.aggregate(() -> 0L, (k, v, a) -> a + v.length(), (k, v, a) -> a - v.length(), Materialized.with(Serdes.String(), Serdes.Long()))
            .toStream().to("out", Produced.with(Serdes.String(), Serdes.Long()));
        break; }
      case "fkjoin": {
        // foreign-key join (KIP-213): left rows "<fk>:<n>" ("-" = no foreign key) join right rows
        longOut = false;
        KTable<String,String> lt = b.table("l", c), rt = b.table("r", c);
        if (p.has("filter")) lt = lt.filter((k, v) -> !v.endsWith("7"));
        if (p.has("rmap")) rt = rt.mapValues(v -> v + "!");
        ValueJoiner<String,String,String> j = (x, y) -> x + "+" + y;
        boolean left = p.get("kind").asText().equals("left");
        TableJoined<String,String> tj = p.has("name") ? TableJoined.as(p.get("name").asText()) : TableJoined.with(null, null);
        Materialized<String,String,KeyValueStore<Bytes,byte[]>> m = p.has("store")
            ? Materialized.<String,String,KeyValueStore<Bytes,byte[]>>as(p.get("store").asText()).withKeySerde(Serdes.String()).withValueSerde(Serdes.String()) : Materialized.with(Serdes.String(), Serdes.String());
        KTable<String,String> o;
        if (p.has("bifunction")) {
          BiFunction<String,String,String> fk = (k, v) -> v.startsWith("-") ? null : v.substring(0, 1);
          o = left ? lt.leftJoin(rt, fk, j, tj, m) : lt.join(rt, fk, j, tj, m);
        } else {
          Function<String,String> fk = v -> v.startsWith("-") ? null : v.substring(0, 1);
          o = left ? lt.leftJoin(rt, fk, j, tj, m) : lt.join(rt, fk, j, tj, m);
        }
        if (p.has("chain")) {
          // the result joined again: it must be materialised (under the name it took) and send old values
          Function<String,String> fk2 = v -> v.startsWith("-") ? null : v.substring(0, 1);
          o = o.leftJoin(rt, fk2, j);
        }
        o.toStream().to("out", Produced.with(Serdes.String(), Serdes.String()));
        break; }
      case "cogroup": {
        longOut = false;
        KGroupedStream<String,String> g1 = b.stream("a", c).groupByKey();
        KGroupedStream<String,String> g2 = b.stream("b", c).groupByKey();
        g1.<String>cogroup((k, v, a) -> a + "a" + v).cogroup(g2, (k, v, a) -> a + "b" + v)
          .aggregate(() -> "", Materialized.with(Serdes.String(), Serdes.String())).toStream().to("out", Produced.with(Serdes.String(), Serdes.String()));
        break; }
      case "twagg": {
        longOut = false;
        TimeWindows w = TimeWindows.ofSizeAndGrace(Duration.ofMillis(p.get("size").asLong()), Duration.ofMillis(p.get("grace").asLong())).advanceBy(Duration.ofMillis(p.get("advance").asLong()));
        b.stream("in", c).groupByKey().windowedBy(w).reduce((x, y) -> x + y).toStream().map((k, v) -> KeyValue.pair(wk(k), v)).to("out", Produced.with(Serdes.String(), Serdes.String()));
        break; }
      case "sessreduce":
      case "sessfinal": {
        longOut = false;
        SessionWindows w = SessionWindows.ofInactivityGapAndGrace(Duration.ofMillis(p.get("gap").asLong()), Duration.ofMillis(p.get("grace").asLong()));
        KTable<Windowed<String>,String> t = b.stream("in", c).groupByKey().windowedBy(w).reduce((x, y) -> x + y);
        if (topo.equals("sessfinal")) t = t.suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()));
        t.toStream().map((k, v) -> KeyValue.pair(wk(k), v)).to("out", Produced.with(Serdes.String(), Serdes.String()));
        break; }
      case "slidingagg":
      case "slidefinal":
      case "slidesupp": {
        longOut = false;
        SlidingWindows w = SlidingWindows.ofTimeDifferenceAndGrace(Duration.ofMillis(p.get("d").asLong()), Duration.ofMillis(p.get("grace").asLong()));
        TimeWindowedKStream<String,String> ws = b.stream("in", c).groupByKey().windowedBy(w);
        KTable<Windowed<String>,String> t;
        if (topo.equals("slidingagg")) t = ws.aggregate(() -> "", (k, v, a) -> a + v, Materialized.with(Serdes.String(), Serdes.String()));
        else if (topo.equals("slidefinal")) t = ws.emitStrategy(EmitStrategy.onWindowClose()).reduce((x, y) -> x + y);
        else t = ws.reduce((x, y) -> x + y).suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()));
        t.toStream().map((k, v) -> KeyValue.pair(wk(k), v)).to("out", Produced.with(Serdes.String(), Serdes.String()));
        break; }
      case "tgreduce": {
        longOut = false;
        b.table("t", c).groupBy((k, v) -> KeyValue.pair(v.substring(0, 1), k), Grouped.with(Serdes.String(), Serdes.String()))
          .reduce((a, v) -> a + v, (a, v) -> a.replaceFirst(v, ""), Materialized.with(Serdes.String(), Serdes.String())).toStream().to("out", Produced.with(Serdes.String(), Serdes.String()));
        break; }
      case "stfilter": {
        longOut = false;
        KTable<String,String> t = b.table("t", c).filter((k, v) -> !v.endsWith("1")).mapValues(v -> v + "!");
        ValueJoiner<String,String,String> j = (x, y) -> x + "+" + y;
        KStream<String,String> st = b.stream("s", c);
        if (p.get("kind").asText().equals("inner")) st.join(t, j).to("out", Produced.with(Serdes.String(), Serdes.String()));
        else st.leftJoin(t, j).to("out", Produced.with(Serdes.String(), Serdes.String()));
        break; }
      case "totable": {
        longOut = false;
        b.stream("in", c).mapValues(v -> v.endsWith("3") ? null : v).toTable().filter((k, v) -> !v.endsWith("1")).toStream().to("out", Produced.with(Serdes.String(), Serdes.String()));
        break; }
      case "suppbound": {
        // a bounded suppress buffer that emits early when full
        Suppressed.EagerBufferConfig buf = p.has("records") ? Suppressed.BufferConfig.maxRecords(p.get("records").asLong())
            : Suppressed.BufferConfig.maxBytes(p.get("bytes").asLong());
        if (p.has("both")) buf = buf.withMaxBytes(p.get("both").asLong());
        Suppressed<Object> sup = Suppressed.untilTimeLimit(Duration.ofMillis(p.get("limit").asLong()), buf.emitEarlyWhenFull());
        KGroupedStream<String,String> g = b.stream("in", c).groupByKey();
        if (p.has("tw") || p.has("sw")) {
          // windowed counts: their keys carry the window, a new window's old value is 0
          KTable<Windowed<String>,Long> t = p.has("tw")
              ? g.windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMillis(p.get("tw").asLong()), Duration.ofMillis(5))).count()
              : g.windowedBy(SlidingWindows.ofTimeDifferenceAndGrace(Duration.ofMillis(p.get("sw").asLong()), Duration.ofMillis(5))).count();
          t.suppress(sup).toStream().map((k, v) -> KeyValue.pair(wk(k), v)).to("out", Produced.with(Serdes.String(), Serdes.Long()));
        } else {
          g.count().suppress(sup).toStream().to("out", Produced.with(Serdes.String(), Serdes.Long()));
        }
        break; }
      case "aggold": {
        // the old values a count sends (the initializer's for a new key), seen by a subtractor, through suppress or not
        longOut = false;
        KTable<String,Long> t = b.stream("in", c).groupByKey().count();
        if (p.has("limit")) t = t.suppress(Suppressed.untilTimeLimit(Duration.ofMillis(p.get("limit").asLong()), Suppressed.BufferConfig.unbounded()));
        t.groupBy((k, v) -> KeyValue.pair("all", String.valueOf(v)), Grouped.with(Serdes.String(), Serdes.String()))
          .aggregate(() -> "", (k, v, a) -> a + "+" + v, (k, v, a) -> a + "-" + v, Materialized.with(Serdes.String(), Serdes.String()))
          .toStream().to("out", Produced.with(Serdes.String(), Serdes.String()));
        break; }
      default: throw new RuntimeException(topo);
    }
    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, "app");
    if (topo.equals("fkjoin")) {
      // mapValues drops the value serde: the pylog side's defaults are strings too
      props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
      props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
    }
    props.put("__emit.interval.ms.kstreams.windowed.aggregation__", 0L);
    props.put("statestore.cache.max.bytes", sc.has("cache") ? sc.get("cache").asLong() : 0L);
    props.put("__emit.interval.ms.kstreams.outer.join.spurious.results.fix__", 0L);
    if (sc.has("store") && sc.get("store").asText().equals("in_memory")) props.put(StreamsConfig.DSL_STORE_SUPPLIERS_CLASS_CONFIG, org.apache.kafka.streams.state.BuiltInDslStoreSuppliers.InMemoryDslStoreSuppliers.class);
    ObjectNode res = M.createObjectNode();
    ArrayNode out = res.putArray("out");
    Topology topology = b.build();
    if (sc.has("describe")) res.put("describe", topology.describe().toString());
    try (TopologyTestDriver d = new TopologyTestDriver(topology, props, Instant.ofEpochMilli(0))) {
      Map<String, TestInputTopic<String,String>> tops = new HashMap<>();
      for (JsonNode r : sc.get("inputs")) {
        String t = r.get(0).asText();
        TestInputTopic<String,String> ti = tops.computeIfAbsent(t, x -> d.createInputTopic(x, new StringSerializer(), new StringSerializer()));
        ti.pipeInput(r.get(1).isNull() ? null : r.get(1).asText(), r.get(2).isNull() ? null : r.get(2).asText(), r.get(3).asLong());
      }
      if (longOut) {
        for (TestRecord<String,Long> r : d.createOutputTopic("out", new StringDeserializer(), new LongDeserializer()).readRecordsToList()) {
          ArrayNode x = out.addArray(); x.add(r.key()); if (r.value() == null) x.addNull(); else x.add(r.value()); x.add(r.timestamp());
        }
      } else {
        for (TestRecord<String,String> r : d.createOutputTopic("out", new StringDeserializer(), new StringDeserializer()).readRecordsToList()) {
          ArrayNode x = out.addArray(); x.add(r.key()); x.add(r.value()); x.add(r.timestamp());
        }
      }
      if (sc.has("internal")) {
        // every other topic written (internal topics, changelogs): keys and values as hex
        ObjectNode topics = res.putObject("topics");
        for (String topic : new TreeSet<>(d.producedTopicNames())) {
          if (topic.equals("out")) continue;
          ArrayNode recs = topics.putArray(topic);
          for (TestRecord<byte[],byte[]> r : d.createOutputTopic(topic, new ByteArrayDeserializer(), new ByteArrayDeserializer()).readRecordsToList()) {
            ArrayNode x = recs.addArray(); x.add(hex(r.key())); x.add(hex(r.value())); x.add(r.timestamp());
          }
        }
      }
      double dropped = 0;
      for (Map.Entry<MetricName, ? extends Metric> e : d.metrics().entrySet()) {
        if (e.getKey().name().equals("dropped-records-total")) dropped += ((Number) e.getValue().metricValue()).doubleValue();
      }
      res.put("dropped", (long) dropped);
    }
    return res;
  }
}
