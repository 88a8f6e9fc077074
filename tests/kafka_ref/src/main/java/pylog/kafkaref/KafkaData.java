package pylog.kafkaref;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Writes a partition for the test of Kafka-written data served by pylog (issue #16).
 *
 * <p>Usage: {@code KafkaData BOOTSTRAP TOPIC BASE_TIMESTAMP}.  Creates TOPIC (one partition,
 * the smallest segment.bytes Kafka 4 allows: 1 MiB) and produces, with the idempotent producer,
 * one run of records per codec (none, gzip, snappy, lz4, zstd): keys (every seventh null),
 * headers, values of incompressible pseudo-random bytes (every eleventh null) so the runs
 * fill several segments whatever the codec, and timestamps BASE_TIMESTAMP + 10 * i, i being
 * the record's index over all runs (so its offset).  Prints the number of records.
 */
public final class KafkaData {
    static final List<String> CODECS = List.of("none", "gzip", "snappy", "lz4", "zstd");
    static final int PER_CODEC = 900;

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        long base = Long.parseLong(args[2]);
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(ap)) {
            // retention.ms -1: the fixed 2023 timestamps are past the default 7 days, and the
            // broker's first retention check (30 s after it starts) would delete sealed segments.
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1)
                    .configs(Map.of("segment.bytes", "1048576", "retention.ms", "-1")))).all().get(30, TimeUnit.SECONDS);
        }
        Random rnd = new Random(16);
        int i = 0;
        for (String codec : CODECS) {
            Properties p = new Properties();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ProducerConfig.ACKS_CONFIG, "all");
            p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
            p.put(ProducerConfig.LINGER_MS_CONFIG, "20");
            p.put(ProducerConfig.BATCH_SIZE_CONFIG, "65536");
            try (KafkaProducer<byte[], byte[]> producer =
                         new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
                for (int j = 0; j < PER_CODEC; j++, i++) {
                    byte[] key = i % 7 == 0 ? null : ("k" + i).getBytes(StandardCharsets.UTF_8);
                    byte[] value = null;
                    if (i % 11 != 0) {
                        value = new byte[600 + rnd.nextInt(600)];
                        rnd.nextBytes(value);
                    }
                    ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, 0, base + 10L * i, key, value);
                    r.headers().add("codec", codec.getBytes(StandardCharsets.UTF_8));
                    r.headers().add("i", ByteBuffer.allocate(4).putInt(i).array());
                    if (i % 5 == 0) {
                        r.headers().add("null-header", null);
                    }
                    producer.send(r);
                }
                producer.flush();
            }
        }
        System.out.println(i);
    }
}
