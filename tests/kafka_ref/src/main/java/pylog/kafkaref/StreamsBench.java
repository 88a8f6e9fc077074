package pylog.kafkaref;

import java.io.InputStream;
import java.time.Duration;
import java.util.Arrays;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.WindowedSerdes;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The Kafka Streams side of benches/bench_streams_peers.py (issue #15's speed section): the
 * same two jobs pylog.streams and Quix Streams run against the same server.
 *
 * <p>Usage: {@code StreamsBench BOOTSTRAP APP_ID JOB INPUT OUTPUT STATE_DIR}, JOB being
 * <ul>
 *   <li>{@code stateless}: filter (first value byte non-zero) + mapValues (first 50 bytes)
 *       over byte-array records, to OUTPUT;
 *   <li>{@code windowed}: groupByKey + 1-second tumbling windows (no grace) + count in the
 *       default persistent (RocksDB) window store with its changelog, record cache off so every
 *       update is emitted (as pylog and Quix emit them), to OUTPUT with the time-windowed key.
 * </ul>
 * One stream thread, at_least_once, a 1-second commit interval (what the Python side uses).
 * It prints {@code {"check": "starting"}} just before {@code KafkaStreams.start()} (the bench
 * times from there until OUTPUT holds every result), then runs until its standard input is
 * closed, closes Kafka Streams and prints {@code {"check": "done"}}.  A dead stream thread
 * shuts the client down and makes the exit status 1.
 */
public final class StreamsBench {
    private StreamsBench() {
    }

    static Topology topology(String job, String input, String output) {
        StreamsBuilder builder = new StreamsBuilder();
        var in = builder.stream(input, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()));
        switch (job) {
            case "stateless":
                in.filter((k, v) -> v[0] != 0)
                        .mapValues(v -> Arrays.copyOf(v, 50))
                        .to(output, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
                break;
            case "windowed":
                in.groupByKey()
                        .windowedBy(TimeWindows.ofSizeWithNoGrace(Duration.ofSeconds(1)))
                        .count(Materialized.<byte[], Long, WindowStore<Bytes, byte[]>>as("counts"))
                        .toStream()
                        .to(output, Produced.with(
                                WindowedSerdes.timeWindowedSerdeFrom(byte[].class, 1000L), Serdes.Long()));
                break;
            default:
                throw new IllegalArgumentException("JOB is stateless or windowed, not " + job);
        }
        return builder.build();
    }

    static Properties config(String bootstrap, String appId, String stateDir) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, "1");
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, "1000");
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, "0");
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        return p;
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 6) {
            System.err.println("usage: StreamsBench BOOTSTRAP APP_ID JOB INPUT OUTPUT STATE_DIR");
            System.exit(2);
        }
        KafkaStreams streams = new KafkaStreams(topology(args[2], args[3], args[4]),
                config(args[0], args[1], args[5]));
        boolean[] failed = {false};
        streams.setUncaughtExceptionHandler(e -> {
            e.printStackTrace();
            failed[0] = true;
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        System.out.println("{\"check\": \"starting\"}");
        System.out.flush();
        streams.start();
        InputStream stdin = System.in;
        byte[] buf = new byte[256];
        while (stdin.read(buf) >= 0) {
            // the bench closes our standard input to stop us
        }
        streams.close(Duration.ofSeconds(30));
        System.out.println("{\"check\": \"done\"}");
        System.out.flush();
        System.exit(failed[0] ? 1 : 0);
    }
}
