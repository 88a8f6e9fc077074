package pylog.kafkaref;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Kafka's Java clients against one bootstrap (pylog serve or Apache Kafka), for issue #16.
 *
 * <p>Usage: {@code Driver BOOTSTRAP PREFIX [SECTION...]} with sections admin, produce, groups
 * (all by default).  Every topic and group it makes is named PREFIX-something, so runs can
 * share a broker.  Each observation is printed as one JSON line {@code {"check": NAME, ...}}
 * on stdout; the Python test runs the driver against both servers and compares the lines.
 * What legitimately differs between two brokers (node ids, cluster id, timestamps the broker
 * sets, member ids) is never printed: the driver prints what follows from it instead (the
 * controller is one of the nodes, sizes of assignments, ...).  A check that fails in a way the
 * driver does not expect prints the exception's class as its result, so the comparison shows
 * it next to what the other broker answered.
 */
public final class Driver {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final long TIMEOUT_S = 30;
    private static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};

    private final String bootstrap;
    private final String prefix;
    private final Admin admin;

    private Driver(String bootstrap, String prefix) {
        this.bootstrap = bootstrap;
        this.prefix = prefix;
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, prefix + "-admin");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        this.admin = Admin.create(p);
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: Driver BOOTSTRAP PREFIX [admin|produce|groups ...]");
            System.exit(2);
        }
        List<String> sections = args.length > 2
                ? Arrays.asList(args).subList(2, args.length)
                : List.of("admin", "produce", "groups");
        Driver d = new Driver(args[0], args[1]);
        try {
            for (String s : sections) {
                switch (s) {
                    case "admin": d.admin(); break;
                    case "produce": d.produce(); break;
                    case "groups": d.groups(); break;
                    case "transactions": d.transactions(); break;
                    default: throw new IllegalArgumentException("unknown section " + s);
                }
            }
        } finally {
            d.admin.close(Duration.ofSeconds(10));
        }
        emit("done", Map.of());
        System.out.flush();
        System.exit(0);  // the clients' threads are closed; do not wait for JVM daemons
    }

    // ---- output --------------------------------------------------------------------------

    static void emit(String check, Map<String, ?> fields) throws Exception {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("check", check);
        m.putAll(fields);
        System.out.println(JSON.writeValueAsString(m));
        System.out.flush();
    }

    private String n(String name) {
        return prefix + "-" + name;
    }

    private String strip(String name) {
        return name.startsWith(prefix + "-") ? name.substring(prefix.length() + 1) : name;
    }

    /** The simple class name of what a future failed with, or "ok". */
    private static String outcome(Future<?> f) {
        try {
            f.get(TIMEOUT_S, TimeUnit.SECONDS);
            return "ok";
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName();
        } catch (Exception e) {
            return e.getClass().getSimpleName();
        }
    }

    private static <T> T get(Future<T> f) throws Exception {
        return f.get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    /** A read that may not see a change yet (Apache Kafka's brokers learn of topics and
     *  configs from the metadata log a moment after the controller commits them): read again
     *  until {@code done} holds or the time is up, and return the last value either way, so
     *  a change that never shows is printed and compared, not hidden. */
    private interface Read<T> {
        T get() throws Exception;
    }

    private static <T> T eventually(Read<T> read, java.util.function.Predicate<T> done) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        T value = read.get();
        while (!done.test(value) && System.nanoTime() < deadline) {
            Thread.sleep(20);
            value = read.get();
        }
        return value;
    }

    private static void waitFor(String what, BooleanSupplier cond) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
        while (!cond.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("timed out waiting for " + what);
            }
        }
    }

    // ---- admin ---------------------------------------------------------------------------

    private void admin() throws Exception {
        String a = n("adm-a");
        String b = n("adm-b");
        NewTopic ta = new NewTopic(a, 3, (short) 1);
        NewTopic tb = new NewTopic(b, 1, (short) 1)
                .configs(Map.of("cleanup.policy", "compact", "retention.ms", "3600000"));
        CreateTopicsResult created = admin.createTopics(List.of(ta, tb));
        Map<String, Object> res = new TreeMap<>();
        for (String t : List.of(a, b)) {
            res.put(strip(t), List.of(outcome(created.values().get(t)),
                    get(created.numPartitions(t)), get(created.replicationFactor(t))));
        }
        emit("create_topics", res);
        eventually(this::ownTopics, names -> names.containsAll(List.of(strip(a), strip(b))));

        emit("create_topics_errors", Map.of(
                "exists", outcome(admin.createTopics(List.of(new NewTopic(a, 1, (short) 1))).all()),
                "bad_config", outcome(admin.createTopics(List.of(new NewTopic(n("adm-bad"), 1, (short) 1)
                        .configs(Map.of("retention.ms", "not-a-number")))).all()),
                "unknown_config", outcome(admin.createTopics(List.of(new NewTopic(n("adm-bad2"), 1, (short) 1)
                        .configs(Map.of("no.such.config", "1")))).all()),
                "zero_partitions", outcome(admin.createTopics(List.of(new NewTopic(n("adm-bad3"), 0, (short) 1))).all()),
                "replication_3", outcome(admin.createTopics(List.of(new NewTopic(n("adm-bad4"), 1, (short) 3))).all()),
                "bad_name", outcome(admin.createTopics(List.of(new NewTopic("bad/name" + prefix, 1, (short) 1))).all())));

        emit("list_topics", Map.of("names", ownTopics()));
        emit("describe_topics", describe(List.of(a, b)));
        emit("describe_unknown_topic", Map.of("result",
                outcome(admin.describeTopics(List.of(n("adm-missing"))).allTopicNames())));

        emit("create_partitions", Map.of(
                "to5", outcome(admin.createPartitions(Map.of(a, NewPartitions.increaseTo(5))).all()),
                "to2", outcome(admin.createPartitions(Map.of(a, NewPartitions.increaseTo(2))).all()),
                "unknown", outcome(admin.createPartitions(
                        Map.of(n("adm-missing"), NewPartitions.increaseTo(2))).all()),
                "after", eventually(() -> describe(List.of(a)),
                        d -> d.toString().contains("[4, true"))));

        ConfigResource rb = new ConfigResource(ConfigResource.Type.TOPIC, b);
        emit("describe_configs", topicConfigs(rb));
        Collection<AlterConfigOp> ops = List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", "7200000"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("cleanup.policy", null), AlterConfigOp.OpType.DELETE),
                new AlterConfigOp(new ConfigEntry("max.message.bytes", "50000"), AlterConfigOp.OpType.SET));
        String altered = outcome(admin.incrementalAlterConfigs(Map.of(rb, ops)).all());
        emit("alter_configs", Map.of("result", altered, "after", eventually(() -> topicConfigs(rb),
                c -> c.get("retention.ms").toString().contains("7200000")
                        && c.get("cleanup.policy").toString().contains("delete"))));
        emit("alter_configs_errors", Map.of(
                "bad_value", outcome(admin.incrementalAlterConfigs(Map.of(rb, List.of(new AlterConfigOp(
                        new ConfigEntry("retention.ms", "abc"), AlterConfigOp.OpType.SET)))).all()),
                "unknown_name", outcome(admin.incrementalAlterConfigs(Map.of(rb, List.of(new AlterConfigOp(
                        new ConfigEntry("no.such.config", "1"), AlterConfigOp.OpType.SET)))).all()),
                "unknown_topic", outcome(admin.incrementalAlterConfigs(Map.of(
                        new ConfigResource(ConfigResource.Type.TOPIC, n("adm-missing")),
                        List.of(new AlterConfigOp(new ConfigEntry("retention.ms", "1"),
                                AlterConfigOp.OpType.SET)))).all()),
                "after", topicConfigs(rb)));

        DescribeClusterResult cluster = admin.describeCluster();
        Collection<Node> nodes = get(cluster.nodes());
        Node controller = get(cluster.controller());
        String clusterId = get(cluster.clusterId());
        emit("describe_cluster", Map.of(
                "nodes", nodes.size(),
                "controller_is_a_node", nodes.stream().anyMatch(x -> x.id() == controller.id()),
                "node_is_bootstrap", nodes.stream().allMatch(x -> bootstrap.equals(x.host() + ":" + x.port())),
                "has_cluster_id", clusterId != null && !clusterId.isEmpty()));
        ConfigResource broker = new ConfigResource(ConfigResource.Type.BROKER,
                String.valueOf(nodes.iterator().next().id()));
        Config bc = get(admin.describeConfigs(List.of(broker)).all()).get(broker);
        Map<String, Object> brokerKeys = new TreeMap<>();
        for (String k : List.of("num.partitions", "log.retention.hours", "message.max.bytes",
                "log.segment.bytes", "auto.create.topics.enable")) {
            ConfigEntry e = bc.get(k);
            brokerKeys.put(k, e == null ? null : e.value());
        }
        emit("describe_broker_configs", brokerKeys);

        emit("delete_topics", Map.of(
                "result", outcome(admin.deleteTopics(List.of(a)).all()),
                "unknown", outcome(admin.deleteTopics(List.of(n("adm-missing"))).all())));
        // Deletion completes asynchronously on Apache Kafka: the topic leaves the listing soon.
        waitFor("topic deletion", () -> {
            try {
                return !ownTopics().contains(strip(a));
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
        });
        emit("list_after_delete", Map.of("names", ownTopics()));
    }

    private List<String> ownTopics() throws Exception {
        List<String> out = new ArrayList<>();
        for (String t : get(admin.listTopics().names())) {
            if (t.startsWith(prefix + "-adm-")) {
                out.add(strip(t));
            }
        }
        Collections.sort(out);
        return out;
    }

    private Map<String, Object> describe(List<String> topics) throws Exception {
        Map<String, TopicDescription> ds = get(admin.describeTopics(topics).allTopicNames());
        Map<String, Object> out = new TreeMap<>();
        for (Map.Entry<String, TopicDescription> e : ds.entrySet()) {
            List<Object> parts = new ArrayList<>();
            for (TopicPartitionInfo p : e.getValue().partitions()) {
                parts.add(List.of(p.partition(), p.leader() != null, p.replicas().size(), p.isr().size()));
            }
            out.put(strip(e.getKey()), Map.of("internal", e.getValue().isInternal(), "partitions", parts,
                    "has_topic_id", e.getValue().topicId() != null));
        }
        return out;
    }

    private Map<String, Object> topicConfigs(ConfigResource r) throws Exception {
        Config c = get(admin.describeConfigs(List.of(r)).all()).get(r);
        Map<String, Object> out = new TreeMap<>();
        for (String k : List.of("cleanup.policy", "retention.ms", "segment.bytes", "max.message.bytes",
                "min.insync.replicas", "compression.type", "message.timestamp.type")) {
            ConfigEntry e = c.get(k);
            out.put(k, e == null ? null : List.of(String.valueOf(e.value()), e.source().name(),
                    e.isDefault(), e.isReadOnly(), e.isSensitive()));
        }
        return out;
    }

    // ---- produce -------------------------------------------------------------------------

    private static final int PRODUCE_COUNT = 400;

    private void produce() throws Exception {
        List<NewTopic> topics = new ArrayList<>();
        for (String codec : CODECS) {
            topics.add(new NewTopic(n("prd-" + codec), 2, (short) 1));
        }
        topics.add(new NewTopic(n("prd-small"), 1, (short) 1).configs(Map.of("max.message.bytes", "2000")));
        get(admin.createTopics(topics).all());
        for (String codec : CODECS) {
            produceCodec(codec);
        }
        produceTooLarge();
    }

    private KafkaProducer<byte[], byte[]> producer(String codec) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, prefix + "-producer-" + codec);
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, "4096");
        p.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "5");
        return new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
    }

    // ---- transactions (issue #14) ----------------------------------------------------------

    private KafkaProducer<byte[], byte[]> txnProducer(String tid) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, prefix + "-txn");
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, tid);
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        return new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
    }

    private static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    /** A transaction committed with offsets, one aborted, one committed after it, a zombie
     *  fenced by a second producer with the same transactional id; then what a
     *  read_committed consumer reads, the group's offsets and the transaction's state. */
    private void transactions() throws Exception {
        String topic = n("txn");
        String tid = n("tx");
        String group = n("txg");
        get(admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all());
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        String zombieOutcome;
        try (KafkaProducer<byte[], byte[]> prod = txnProducer(tid)) {
            prod.initTransactions();
            prod.beginTransaction();
            for (int i = 0; i < 10; i++) {
                prod.send(new ProducerRecord<>(topic, i % 2, null, b("c" + i)));
            }
            prod.sendOffsetsToTransaction(Map.of(p0, new OffsetAndMetadata(3), p1, new OffsetAndMetadata(4)),
                    new org.apache.kafka.clients.consumer.ConsumerGroupMetadata(group));
            prod.commitTransaction();
            prod.beginTransaction();
            for (int i = 0; i < 4; i++) {
                prod.send(new ProducerRecord<>(topic, i % 2, null, b("aborted" + i)));
            }
            prod.flush();
            prod.abortTransaction();
            prod.beginTransaction();
            prod.send(new ProducerRecord<>(topic, 0, null, b("last0")));
            prod.send(new ProducerRecord<>(topic, 1, null, b("last1")));
            prod.commitTransaction();
            prod.beginTransaction();
            prod.send(new ProducerRecord<>(topic, 0, null, b("zombie")));
            prod.flush();
            try (KafkaProducer<byte[], byte[]> fresh = txnProducer(tid)) {
                fresh.initTransactions();   // fences prod and aborts its open transaction
                try {
                    prod.send(new ProducerRecord<>(topic, 1, null, b("zombie2"))).get(TIMEOUT_S, TimeUnit.SECONDS);
                    prod.commitTransaction();
                    zombieOutcome = "ok";
                } catch (Exception e) {
                    Throwable t = e instanceof ExecutionException ? e.getCause() : e;
                    zombieOutcome = t.getClass().getSimpleName();
                }
                fresh.beginTransaction();
                fresh.send(new ProducerRecord<>(topic, 1, null, b("fresh")));
                fresh.commitTransaction();
            }
        }
        emit("txn_zombie", Map.of("outcome", zombieOutcome));
        Map<String, List<String>> read = new TreeMap<>();
        try (KafkaConsumer<byte[], byte[]> c = consumer(null, Map.of(ConsumerConfig.ISOLATION_LEVEL_CONFIG,
                "read_committed"))) {
            List<TopicPartition> tps = List.of(p0, p1);
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            waitFor("read_committed to the end", () -> {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(100))) {
                    read.computeIfAbsent(String.valueOf(r.partition()), k -> new ArrayList<>())
                            .add(new String(r.value(), StandardCharsets.UTF_8));
                }
                return c.position(p0) >= end.get(p0) && c.position(p1) >= end.get(p1);
            });
            emit("txn_read_committed", Map.of("values", read,
                    "end_offsets", Map.of("0", end.get(p0), "1", end.get(p1))));
        }
        Map<TopicPartition, OffsetAndMetadata> committed =
                get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        emit("txn_offsets", Map.of("0", committed.get(p0).offset(), "1", committed.get(p1).offset()));
        var described = get(admin.describeTransactions(List.of(tid)).description(tid));
        emit("txn_describe", Map.of("state", described.state().toString(),
                "timeout_ms", described.transactionTimeoutMs(),
                "topic_partitions", described.topicPartitions().size()));
    }

    private KafkaConsumer<byte[], byte[]> consumer(String group, Map<String, String> extra) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, prefix + "-consumer");
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
            p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "300");
            p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
        }
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.putAll(extra);
        return new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer());
    }

    private static byte[] value(int i) {
        if (i % 37 == 5) {
            return null;
        }
        StringBuilder sb = new StringBuilder();
        for (int j = 0; j < i % 23 + 1; j++) {
            sb.append("value-").append(i).append('-').append(j).append(';');
        }
        return sb.toString().getBytes(StandardCharsets.UTF_8);
    }

    private void produceCodec(String codec) throws Exception {
        String topic = n("prd-" + codec);
        long baseTs = 1_700_000_000_000L;
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> prod = producer(codec)) {
            for (int i = 0; i < PRODUCE_COUNT; i++) {
                byte[] key = i % 11 == 3 ? null : ("key-" + i).getBytes(StandardCharsets.UTF_8);
                ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, i % 2, baseTs + i, key, value(i));
                if (i % 5 == 0) {
                    r.headers().add("h" + i, ("hv" + i).getBytes(StandardCharsets.UTF_8));
                    r.headers().add("empty", null);
                }
                sent.add(prod.send(r));
                if (i == PRODUCE_COUNT / 2) {
                    prod.flush();  // a second wave of batches after the first answers
                }
            }
            prod.flush();
        }
        Map<Integer, List<Long>> offsets = new TreeMap<>();
        boolean timestampsAsSent = true;
        for (int i = 0; i < sent.size(); i++) {
            RecordMetadata md = get(sent.get(i));
            offsets.computeIfAbsent(md.partition(), k -> new ArrayList<>()).add(md.offset());
            timestampsAsSent &= md.timestamp() == baseTs + i;
        }
        Map<String, Object> spans = new TreeMap<>();
        for (Map.Entry<Integer, List<Long>> e : offsets.entrySet()) {
            List<Long> l = e.getValue();
            boolean consecutive = true;
            for (int j = 0; j < l.size(); j++) {
                consecutive &= l.get(j) == j;
            }
            spans.put(String.valueOf(e.getKey()), List.of(l.size(), consecutive));
        }
        emit("produce_acks", Map.of("codec", codec, "partitions", spans,
                "timestamps_as_sent", timestampsAsSent));

        List<TopicPartition> tps = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1));
        emit("produce_consumed", Map.of("codec", codec, "records", consumeDigest(tps, PRODUCE_COUNT)));
        emit("produce_list_offsets", Map.of("codec", codec, "offsets", listOffsets(tps)));

        // Delete records below offset 50 of partition 0: the low watermark moves there.
        TopicPartition p0 = tps.get(0);
        long low = get(admin.deleteRecords(Map.of(p0, RecordsToDelete.beforeOffset(50)))
                .lowWatermarks().get(p0)).lowWatermark();
        String beyond = outcome(admin.deleteRecords(Map.of(p0, RecordsToDelete.beforeOffset(10_000))).all());
        emit("delete_records", Map.of("codec", codec, "low_watermark", low, "beyond_end", beyond,
                "offsets", listOffsets(List.of(p0)),
                "consumed_after", consumeDigest(List.of(p0), PRODUCE_COUNT / 2 - 50)));
    }

    /** count, first and last offset per partition and a SHA-256 over every record read. */
    private Map<String, Object> consumeDigest(List<TopicPartition> tps, int expect) throws Exception {
        MessageDigest md = MessageDigest.getInstance("SHA-256");
        Map<String, Object> out = new TreeMap<>();
        Map<Integer, long[]> span = new TreeMap<>();
        List<ConsumerRecord<byte[], byte[]>> got = new ArrayList<>();
        try (KafkaConsumer<byte[], byte[]> c = consumer(null, Map.of())) {
            c.assign(tps);
            c.seekToBeginning(tps);
            waitFor(expect + " records", () -> {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(100))) {
                    got.add(r);
                }
                return got.size() >= expect;
            });
            // anything beyond what was produced would show in the count
            for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                got.add(r);
            }
        }
        got.sort((x, y) -> x.partition() != y.partition()
                ? Integer.compare(x.partition(), y.partition()) : Long.compare(x.offset(), y.offset()));
        for (ConsumerRecord<byte[], byte[]> r : got) {
            long[] s = span.computeIfAbsent(r.partition(), k -> new long[] {r.offset(), r.offset(), 0});
            s[1] = r.offset();
            s[2]++;
            md.update((r.partition() + "/" + r.offset() + "/" + r.timestamp() + "/" + r.timestampType()
                    + "/").getBytes(StandardCharsets.UTF_8));
            md.update(r.key() == null ? "null-key".getBytes(StandardCharsets.UTF_8) : r.key());
            md.update(r.value() == null ? "null-value".getBytes(StandardCharsets.UTF_8) : r.value());
            for (Header h : r.headers()) {
                md.update(h.key().getBytes(StandardCharsets.UTF_8));
                md.update(h.value() == null ? "null-header".getBytes(StandardCharsets.UTF_8) : h.value());
            }
        }
        for (Map.Entry<Integer, long[]> e : span.entrySet()) {
            out.put(String.valueOf(e.getKey()), List.of(e.getValue()[0], e.getValue()[1], e.getValue()[2]));
        }
        StringBuilder hex = new StringBuilder();
        for (byte x : md.digest()) {
            hex.append(String.format("%02x", x));
        }
        out.put("sha256", hex.toString());
        return out;
    }

    private Map<String, Object> listOffsets(List<TopicPartition> tps) throws Exception {
        Map<String, Object> out = new TreeMap<>();
        Map<String, OffsetSpec> specs = new LinkedHashMap<>();
        specs.put("earliest", OffsetSpec.earliest());
        specs.put("latest", OffsetSpec.latest());
        specs.put("max_timestamp", OffsetSpec.maxTimestamp());
        specs.put("for_timestamp", OffsetSpec.forTimestamp(1_700_000_000_000L + 100));
        specs.put("after_last_timestamp", OffsetSpec.forTimestamp(1_800_000_000_000L));
        for (Map.Entry<String, OffsetSpec> s : specs.entrySet()) {
            Map<TopicPartition, OffsetSpec> q = new HashMap<>();
            for (TopicPartition tp : tps) {
                q.put(tp, s.getValue());
            }
            Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> r = get(admin.listOffsets(q).all());
            Map<String, Object> per = new TreeMap<>();
            for (TopicPartition tp : tps) {
                ListOffsetsResult.ListOffsetsResultInfo info = r.get(tp);
                per.put(String.valueOf(tp.partition()), List.of(info.offset(), info.timestamp()));
            }
            out.put(s.getKey(), per);
        }
        return out;
    }

    private void produceTooLarge() throws Exception {
        String topic = n("prd-small");
        byte[] big = new byte[5000];
        Arrays.fill(big, (byte) 'x');
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "none");
        String big1;
        String small;
        try (KafkaProducer<byte[], byte[]> prod = new KafkaProducer<>(p, new ByteArraySerializer(),
                new ByteArraySerializer())) {
            big1 = outcome(prod.send(new ProducerRecord<>(topic, 0, null, big)));
            small = outcome(prod.send(new ProducerRecord<>(topic, 0, 1_700_000_000_000L, null,
                    "fits".getBytes(StandardCharsets.UTF_8))));
        }
        emit("produce_too_large", Map.of("big", big1, "small_after", small,
                "offsets", listOffsets(List.of(new TopicPartition(topic, 0)))));
    }

    // ---- groups --------------------------------------------------------------------------

    private static final int GROUP_PARTITIONS = 4;
    private static final int PER_PARTITION = 10;

    /** A consumer with the partitions it holds, kept up to date by its rebalance listener. */
    private final class Member implements ConsumerRebalanceListener {
        final KafkaConsumer<byte[], byte[]> consumer;
        final Set<TopicPartition> owned = new HashSet<>();
        int revoked;
        /** partition/offset of every record read: eager rebalances may deliver one twice. */
        final Set<String> seen = new HashSet<>();

        Member(String group, Map<String, String> extra, String topic) {
            consumer = consumer(group, extra);
            consumer.subscribe(List.of(topic), this);
        }

        @Override
        public void onPartitionsRevoked(Collection<TopicPartition> parts) {
            revoked += parts.size();
            owned.removeAll(parts);
        }

        @Override
        public void onPartitionsAssigned(Collection<TopicPartition> parts) {
            owned.addAll(parts);
        }

        @Override
        public void onPartitionsLost(Collection<TopicPartition> parts) {
            owned.removeAll(parts);
        }

        void poll() {
            for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(30))) {
                seen.add(r.partition() + "/" + r.offset());
            }
        }

        List<Integer> partitions() {
            List<Integer> out = new ArrayList<>();
            for (TopicPartition tp : owned) {
                out.add(tp.partition());
            }
            Collections.sort(out);
            return out;
        }
    }

    /** Poll every member until each holds a partition and together they hold them all once. */
    private static void settle(List<Member> members, List<Integer> sizes) {
        waitFor("assignment " + sizes, () -> {
            for (Member m : members) {
                m.poll();
            }
            List<Integer> got = new ArrayList<>();
            Set<TopicPartition> all = new HashSet<>();
            for (Member m : members) {
                got.add(m.owned.size());
                all.addAll(m.owned);
            }
            Collections.sort(got);
            return got.equals(sizes) && all.size() == GROUP_PARTITIONS;
        });
    }

    private static List<Integer> sizes(List<Member> members) {
        List<Integer> out = new ArrayList<>();
        for (Member m : members) {
            out.add(m.owned.size());
        }
        Collections.sort(out);
        return out;
    }

    private void groups() throws Exception {
        String topic = n("grp");
        get(admin.createTopics(List.of(new NewTopic(topic, GROUP_PARTITIONS, (short) 1))).all());
        try (KafkaProducer<byte[], byte[]> prod = producer("none")) {
            for (int p = 0; p < GROUP_PARTITIONS; p++) {
                for (int i = 0; i < PER_PARTITION; i++) {
                    prod.send(new ProducerRecord<>(topic, p, null, ("g" + p + "-" + i).getBytes(StandardCharsets.UTF_8)));
                }
            }
            prod.flush();
        }
        rangeGroup(topic);
        cooperativeGroup(topic);
        staticGroup(topic);
    }

    private Map<String, Object> describeGroup(String group) throws Exception {
        ConsumerGroupDescription d = get(admin.describeConsumerGroups(List.of(group)).all()).get(group);
        List<Object> members = new ArrayList<>();
        for (MemberDescription m : d.members()) {
            members.add(List.of(m.groupInstanceId().orElse(""), m.assignment().topicPartitions().size()));
        }
        members.sort((x, y) -> x.toString().compareTo(y.toString()));
        Map<String, Object> out = new TreeMap<>();
        out.put("state", d.groupState().toString());
        out.put("assignor", d.partitionAssignor());
        out.put("simple", d.isSimpleConsumerGroup());
        out.put("members", members);
        out.put("coordinator_known", d.coordinator() != null);
        return out;
    }

    private Map<String, Object> committed(String group) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> offs = get(
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        // Which member committed which partition depends on the member ids the broker made:
        // the offsets per partition, and the metadata strings as a sorted list.
        Map<String, Object> offsets = new TreeMap<>();
        List<String> metadata = new ArrayList<>();
        for (Map.Entry<TopicPartition, OffsetAndMetadata> e : offs.entrySet()) {
            OffsetAndMetadata om = e.getValue();
            offsets.put(strip(e.getKey().topic()) + "-" + e.getKey().partition(), om == null ? null : om.offset());
            metadata.add(om == null ? null : om.metadata());
        }
        metadata.sort(null);
        return Map.of("offsets", offsets, "metadata", metadata);
    }

    private Map<String, String> listedGroups() throws Exception {
        Map<String, String> out = new TreeMap<>();
        for (GroupListing g : get(admin.listGroups().all())) {
            if (g.groupId().startsWith(prefix + "-")) {
                out.put(strip(g.groupId()), g.groupState().map(Object::toString).orElse("?")
                        + "/" + g.type().map(Object::toString).orElse("?"));
            }
        }
        return out;
    }

    private static boolean atEnd(Member m) {
        for (TopicPartition tp : m.owned) {
            if (m.consumer.position(tp, Duration.ofSeconds(5)) < PER_PARTITION) {
                return false;
            }
        }
        return true;
    }

    private void rangeGroup(String topic) throws Exception {
        String group = n("range");
        Map<String, String> cfg = Map.of(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG,
                RangeAssignor.class.getName());
        Member c1 = new Member(group, cfg, topic);
        Member c2 = new Member(group, cfg, topic);
        List<Member> both = List.of(c1, c2);
        settle(both, List.of(2, 2));
        Set<String> seen = new HashSet<>();
        waitFor("all records", () -> {
            c1.poll();
            c2.poll();
            seen.addAll(c1.seen);
            seen.addAll(c2.seen);
            // c1 may have read everything before c2 joined: wait until each member is at
            // the end of the partitions it now holds, so both commit every partition.
            return seen.size() >= GROUP_PARTITIONS * PER_PARTITION && atEnd(c1) && atEnd(c2);
        });
        Map<TopicPartition, OffsetAndMetadata> half = new HashMap<>();
        for (TopicPartition tp : c1.owned) {
            half.put(tp, new OffsetAndMetadata(PER_PARTITION, "from-c1"));
        }
        c1.consumer.commitSync(half);
        c2.consumer.commitSync();
        Map<String, Object> stable = new TreeMap<>();
        stable.put("sizes", sizes(both));
        stable.put("consumed", seen.size());
        stable.put("describe", describeGroup(group));
        stable.put("committed", committed(group));
        stable.put("listed", listedGroups().get(strip(group)));
        stable.put("delete_while_active", outcome(admin.deleteConsumerGroups(List.of(group)).all()));
        Map<TopicPartition, OffsetAndMetadata> c1pos = new HashMap<>();
        for (TopicPartition tp : c1.owned) {
            c1pos.put(tp, c1.consumer.committed(Set.of(tp)).get(tp));
        }
        stable.put("c1_committed_metadata", c1pos.values().stream().map(OffsetAndMetadata::metadata)
                .distinct().toList());
        emit("group_range", stable);

        c2.consumer.close();  // leaves the group: c1 takes every partition
        settle(List.of(c1), List.of(GROUP_PARTITIONS));
        emit("group_range_after_leave", Map.of("partitions", c1.partitions(),
                "describe", describeGroup(group)));
        c1.consumer.close();
        Map<String, Object> empty = new TreeMap<>();
        empty.put("describe", describeGroup(group));
        empty.put("listed", listedGroups().get(strip(group)));
        empty.put("delete", outcome(admin.deleteConsumerGroups(List.of(group)).all()));
        empty.put("delete_again", outcome(admin.deleteConsumerGroups(List.of(group)).all()));
        empty.put("listed_after", listedGroups().containsKey(strip(group)));
        emit("group_range_empty", empty);
    }

    private void cooperativeGroup(String topic) throws Exception {
        String group = n("coop");
        Map<String, String> cfg = Map.of(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG,
                CooperativeStickyAssignor.class.getName());
        List<Member> members = new ArrayList<>();
        members.add(new Member(group, cfg, topic));
        settle(members, List.of(GROUP_PARTITIONS));
        List<Object> steps = new ArrayList<>();
        for (List<Integer> expect : List.of(List.of(2, 2), List.of(1, 1, 2))) {
            members.add(new Member(group, cfg, topic));
            settle(members, expect);
            int revoked = 0;
            for (Member m : members) {
                revoked += m.revoked;
            }
            steps.add(Map.of("sizes", sizes(members), "revoked_so_far", revoked));
        }
        Map<String, Object> out = new TreeMap<>();
        out.put("steps", steps);
        out.put("describe", describeGroup(group));
        for (Member m : members) {
            m.consumer.close();
        }
        emit("group_cooperative", out);
    }

    private void staticGroup(String topic) throws Exception {
        String group = n("static");
        // i2 first, alone, then i1: i2 rejoins for the second generation, so the metadata
        // the coordinator keeps for it carries a generation its restart below does not.
        Member i2 = new Member(group, Map.of(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "i2",
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, RangeAssignor.class.getName()), topic);
        settle(List.of(i2), List.of(GROUP_PARTITIONS));
        Member i1 = new Member(group, Map.of(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "i1",
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, RangeAssignor.class.getName()), topic);
        settle(List.of(i1, i2), List.of(2, 2));
        Map<String, Object> out = new TreeMap<>();
        // The range assignor orders static members by instance id: i1 takes 0-1, i2 2-3.
        out.put("first", List.of(i1.partitions(), i2.partitions()));
        out.put("describe", describeGroup(group));
        int revokedBefore = i1.revoked;
        i2.consumer.close();  // a static member does not leave on close
        Member again = new Member(group, Map.of(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "i2",
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, RangeAssignor.class.getName()), topic);
        settle(List.of(i1, again), List.of(2, 2));
        out.put("rejoined", List.of(i1.partitions(), again.partitions()));
        out.put("i1_revoked_by_rejoin", i1.revoked - revokedBefore);
        out.put("describe_after", describeGroup(group));
        i1.consumer.close();
        again.consumer.close();
        emit("group_static", out);

        // Static members stay after close until their session ends: an admin removes them,
        // then edits the empty group's offsets.
        Map<String, Object> admin2 = new TreeMap<>();
        admin2.put("remove_members", outcome(admin.removeMembersFromConsumerGroup(group,
                new org.apache.kafka.clients.admin.RemoveMembersFromConsumerGroupOptions()).all()));
        admin2.put("describe", describeGroup(group));
        Map<TopicPartition, OffsetAndMetadata> set = new HashMap<>();
        for (int p = 0; p < GROUP_PARTITIONS; p++) {
            set.put(new TopicPartition(topic, p), new OffsetAndMetadata(p + 1, "set-by-admin"));
        }
        admin2.put("alter_offsets", outcome(admin.alterConsumerGroupOffsets(group, set).all()));
        admin2.put("delete_offset", outcome(admin.deleteConsumerGroupOffsets(group,
                Set.of(new TopicPartition(topic, 0))).all()));
        admin2.put("committed", committed(group));
        admin2.put("delete", outcome(admin.deleteConsumerGroups(List.of(group)).all()));
        emit("group_admin_ops", admin2);
    }
}
