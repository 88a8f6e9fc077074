package pylog.kafkaref;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.File;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import static pylog.kafkaref.Driver.emit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.WindowStore;

/**
 * A Kafka Streams application run against one bootstrap (pylog serve or Apache Kafka), for
 * issue #16: the test runs it against both and compares what it prints.
 *
 * <p>Usage: {@code StreamsApp BOOTSTRAP APP_ID INPUT_JSON STATE_DIR}.  INPUT_JSON is written by
 * the test: {@code {"topics": {NAME: PARTITIONS, ...}, "records": [[NAME, KEY, VALUE, TS], ...]}};
 * every topic is named APP_ID-NAME.  The app creates the input topics, produces the records
 * with their fixed timestamps (so windows do not depend on the clock), then runs the topology:
 * <ul>
 *   <li>word count: {@code words} split into words, re-keyed by word (repartition topic),
 *       counted (key-value store, compacted changelog) into {@code word-counts};
 *   <li>a stream-table join and a windowed aggregation: {@code clicks} (user, amount) joined
 *       with the table {@code users} (user, region) into {@code enriched}, re-keyed by region
 *       (repartition topic) and summed over 10-second tumbling windows (window store,
 *       changelog with cleanup.policy=compact,delete) into {@code region-sums}, keyed
 *       REGION@WINDOW_START.
 * </ul>
 * It runs until the application's group has committed the end offset of every partition of
 * its source and repartition topics (at that point, at_least_once having flushed the producer
 * before each commit, every output record is written), closes, then reads the output topics
 * from the start and prints the group's committed offsets, one JSON line per record, one per
 * internal topic (its partition count and cleanup.policy), and {@code {"check": "done"}}.
 */
public final class StreamsApp {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final long RUN_TIMEOUT_S = 120;
    static final List<String> OUTPUTS = List.of("word-counts", "enriched", "region-sums");

    private final String bootstrap;
    private final String appId;
    private final Admin admin;

    private StreamsApp(String bootstrap, String appId) {
        this.bootstrap = bootstrap;
        this.appId = appId;
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, appId + "-test-admin");
        this.admin = Admin.create(p);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: StreamsApp BOOTSTRAP APP_ID INPUT_JSON STATE_DIR");
            System.exit(2);
        }
        StreamsApp app = new StreamsApp(args[0], args[1]);
        try {
            JsonNode input = JSON.readTree(new File(args[2]));
            app.createAndProduce(input);
            long t0 = System.nanoTime();
            app.runStreams(args[3], input);
            emit("ran", Map.of("seconds", (System.nanoTime() - t0) / 1e9));
            app.printCommitted();
            app.printOutputs();
            app.printInternalTopics();
        } finally {
            app.admin.close(Duration.ofSeconds(10));
        }
        emit("done", Map.of());
        System.out.flush();
        System.exit(0);
    }

    private String n(String name) {
        return appId + "-" + name;
    }

    // ---- input ---------------------------------------------------------------------------

    private void createAndProduce(JsonNode input) throws Exception {
        List<NewTopic> topics = new ArrayList<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = input.get("topics").fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            topics.add(new NewTopic(n(e.getKey()), e.getValue().asInt(), (short) 1));
        }
        // The outputs too, so the final read finds them however far the app got.
        for (String out : OUTPUTS) {
            topics.add(new NewTopic(n(out), 2, (short) 1));
        }
        admin.createTopics(topics).all().get(30, TimeUnit.SECONDS);

        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        try (KafkaProducer<String, String> producer =
                     new KafkaProducer<>(p, new StringSerializer(), new StringSerializer())) {
            for (JsonNode r : input.get("records")) {
                producer.send(new ProducerRecord<>(n(r.get(0).asText()), null, r.get(3).asLong(),
                        r.get(1).asText(), r.get(2).asText()));
                // The table's rows go first and are acknowledged before any click is sent.
                if (r.get(0).asText().equals("users")) {
                    producer.flush();
                }
            }
            producer.flush();
        }
    }

    // ---- the topology --------------------------------------------------------------------

    private Topology topology() {
        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, String> words = builder.stream(n("words"), Consumed.with(Serdes.String(), Serdes.String()));
        words.flatMapValues(line -> Arrays.asList(line.toLowerCase().split("\\W+")))
                .filter((k, w) -> !w.isEmpty())
                .groupBy((k, w) -> w, Grouped.with("by-word", Serdes.String(), Serdes.String()))
                .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("word-count-store"))
                .toStream()
                .to(n("word-counts"), Produced.with(Serdes.String(), Serdes.Long()));

        KTable<String, String> users = builder.table(n("users"), Consumed.with(Serdes.String(), Serdes.String()),
                Materialized.<String, String, KeyValueStore<Bytes, byte[]>>as("users-store"));
        KStream<String, String> enriched = builder
                .stream(n("clicks"), Consumed.with(Serdes.String(), Serdes.String()))
                .join(users, (amount, region) -> region + ":" + amount);
        enriched.to(n("enriched"), Produced.with(Serdes.String(), Serdes.String()));
        enriched.groupBy((user, v) -> v.substring(0, v.indexOf(':')),
                        Grouped.with("by-region", Serdes.String(), Serdes.String()))
                // A grace period far beyond the input's span: records of several upstream tasks
                // interleave in the repartition topic, and none may be dropped as late.
                .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofSeconds(10), Duration.ofHours(1)))
                .aggregate(() -> 0L, (region, v, sum) -> sum + Long.parseLong(v.substring(v.indexOf(':') + 1)),
                        Materialized.<String, Long, WindowStore<Bytes, byte[]>>as("region-sum-store")
                                .withValueSerde(Serdes.Long()))
                .toStream()
                .map((w, sum) -> KeyValue.pair(w.key() + "@" + w.window().start(), sum))
                .to(n("region-sums"), Produced.with(Serdes.String(), Serdes.Long()));
        return builder.build();
    }

    private Properties streamsConfig(String stateDir) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        // at_least_once: pylog has no transactions yet; exactly_once_v2 comes with issue #14.
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, "100");
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, "1");
        // Wait for the table's partition before joining when it has nothing buffered yet, so
        // every click meets its user's row (the rows were written first, with earlier times).
        p.put(StreamsConfig.MAX_TASK_IDLE_MS_CONFIG, "1000");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        return p;
    }

    private void runStreams(String stateDir, JsonNode input) throws Exception {
        Topology topology = topology();
        KafkaStreams streams = new KafkaStreams(topology, streamsConfig(stateDir));
        List<Throwable> failures = new ArrayList<>();
        streams.setUncaughtExceptionHandler(e -> {
            synchronized (failures) {
                failures.add(e);
            }
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
                    .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.start();
        try {
            Set<String> sources = new TreeSet<>();
            input.get("topics").fieldNames().forEachRemaining(t -> sources.add(n(t)));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(RUN_TIMEOUT_S);
            String lag = "";
            while (true) {
                synchronized (failures) {
                    if (!failures.isEmpty()) {
                        throw new IllegalStateException("the Streams thread died", failures.get(0));
                    }
                }
                if (streams.state() == KafkaStreams.State.ERROR
                        || streams.state() == KafkaStreams.State.NOT_RUNNING) {
                    throw new IllegalStateException("Kafka Streams is " + streams.state());
                }
                lag = lag(sources);
                if (lag.isEmpty()) {
                    break;
                }
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("Kafka Streams did not finish in " + RUN_TIMEOUT_S
                            + " s (state " + streams.state() + "); partitions behind: " + lag);
                }
                Thread.sleep(100);
            }
        } finally {
            streams.close(Duration.ofSeconds(30));
        }
    }

    /**
     * The source and repartition partitions whose committed offset is below their end offset
     * ("" once there are none).  The commits are read before the end offsets: a repartition
     * topic's end is final once every source partition is committed (at_least_once flushes
     * the producer before it commits), so commits equal to ends read after them are final.
     */
    private String lag(Set<String> sources) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets(appId)
                .partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
        Set<String> topics = new TreeSet<>(sources);
        for (String t : admin.listTopics().names().get(30, TimeUnit.SECONDS)) {
            if (t.startsWith(appId + "-") && t.endsWith("-repartition")) {
                topics.add(t);
            }
        }
        Map<TopicPartition, OffsetSpec> specs = new HashMap<>();
        for (TopicDescription d : admin.describeTopics(topics).allTopicNames().get(30, TimeUnit.SECONDS).values()) {
            d.partitions().forEach(p -> specs.put(new TopicPartition(d.name(), p.partition()), OffsetSpec.latest()));
        }
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> ends =
                admin.listOffsets(specs).all().get(30, TimeUnit.SECONDS);
        List<String> behind = new ArrayList<>();
        for (Map.Entry<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> e : ends.entrySet()) {
            OffsetAndMetadata c = committed.get(e.getKey());
            long at = c == null ? 0 : c.offset();
            if (at < e.getValue().offset()) {
                behind.add(e.getKey() + " at " + at + " of " + e.getValue().offset());
            }
        }
        behind.sort(null);
        return String.join(", ", behind);
    }

    // ---- what it wrote -------------------------------------------------------------------

    private void printOutputs() throws Exception {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        try (KafkaConsumer<byte[], byte[]> consumer =
                     new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<TopicPartition> parts = new ArrayList<>();
            for (String out : OUTPUTS) {
                consumer.partitionsFor(n(out)).forEach(i -> parts.add(new TopicPartition(i.topic(), i.partition())));
            }
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            Map<TopicPartition, Long> ends = consumer.endOffsets(parts);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (parts.stream().anyMatch(tp -> consumer.position(tp) < ends.get(tp))) {
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("could not read the outputs to their ends " + ends);
                }
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    String topic = r.topic().substring(appId.length() + 1);
                    Object value = topic.equals("enriched")
                            ? new String(r.value(), java.nio.charset.StandardCharsets.UTF_8)
                            : (Object) java.nio.ByteBuffer.wrap(r.value()).getLong();
                    Map<String, Object> m = new LinkedHashMap<>();
                    m.put("topic", topic);
                    m.put("key", new String(r.key(), java.nio.charset.StandardCharsets.UTF_8));
                    m.put("value", value);
                    emit("out", m);
                }
            }
        }
    }

    /** The group's committed offsets (source and repartition partitions): the same on both
     *  servers, as the same input makes the same number of records in each partition. */
    private void printCommitted() throws Exception {
        Map<String, Long> offsets = new java.util.TreeMap<>();
        admin.listConsumerGroupOffsets(appId).partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS)
                .forEach((tp, om) -> offsets.put(tp.topic().substring(appId.length() + 1) + "/" + tp.partition(),
                        om.offset()));
        emit("committed", Map.of("offsets", offsets));
    }

    private void printInternalTopics() throws Exception {
        List<String> internal = admin.listTopics().names().get(30, TimeUnit.SECONDS).stream()
                .filter(t -> t.startsWith(appId + "-")
                        && (t.endsWith("-repartition") || t.endsWith("-changelog")))
                .sorted().collect(Collectors.toList());
        Map<String, TopicDescription> described = admin.describeTopics(internal).allTopicNames()
                .get(30, TimeUnit.SECONDS);
        Collection<ConfigResource> resources = internal.stream()
                .map(t -> new ConfigResource(ConfigResource.Type.TOPIC, t)).collect(Collectors.toList());
        Map<ConfigResource, Config> configs = admin.describeConfigs(resources).all().get(30, TimeUnit.SECONDS);
        for (String t : internal) {
            Config c = configs.get(new ConfigResource(ConfigResource.Type.TOPIC, t));
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("name", t.substring(appId.length() + 1));
            m.put("partitions", described.get(t).partitions().size());
            m.put("cleanup.policy", c.get("cleanup.policy").value());
            emit("internal_topic", m);
        }
    }
}
