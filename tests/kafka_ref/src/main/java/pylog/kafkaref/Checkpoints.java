package pylog.kafkaref;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.File;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.storage.internals.checkpoint.LeaderEpochCheckpointFile;
import org.apache.kafka.storage.internals.checkpoint.OffsetCheckpointFile;
import org.apache.kafka.storage.internals.log.EpochEntry;
import org.apache.kafka.storage.internals.log.LogDirFailureChannel;

/**
 * Reads a data directory's checkpoint files with Apache Kafka's own readers (issue #16):
 * {@code Checkpoints DATA_DIR} prints one JSON line per file, {@code {"file": ..., "entries":
 * ...}}; a file Kafka cannot parse fails the run (Kafka's reader throws).  Only files that
 * exist are opened, since Kafka's checkpoint classes create a missing file.
 */
public final class Checkpoints {
    public static void main(String[] args) throws Exception {
        ObjectMapper json = new ObjectMapper();
        File dir = new File(args[0]);
        LogDirFailureChannel failures = new LogDirFailureChannel(1);
        for (String name : List.of("recovery-point-offset-checkpoint", "log-start-offset-checkpoint",
                "cleaner-offset-checkpoint", "replication-offset-checkpoint")) {
            File f = new File(dir, name);
            if (!f.exists()) {
                continue;
            }
            Map<String, Long> entries = new TreeMap<>();
            for (Map.Entry<TopicPartition, Long> e : new OffsetCheckpointFile(f, failures).read().entrySet()) {
                entries.put(e.getKey().toString(), e.getValue());
            }
            print(json, name, entries);
        }
        File[] parts = dir.listFiles(File::isDirectory);
        for (File part : parts == null ? new File[0] : parts) {
            File f = new File(part, "leader-epoch-checkpoint");
            if (!f.exists()) {
                continue;
            }
            List<List<Long>> entries = new ArrayList<>();
            for (EpochEntry e : new LeaderEpochCheckpointFile(f, failures).read()) {
                entries.add(List.of((long) e.epoch(), e.startOffset()));
            }
            print(json, part.getName() + "/leader-epoch-checkpoint", entries);
        }
    }

    private static void print(ObjectMapper json, String file, Object entries) throws Exception {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("file", file);
        m.put("entries", entries);
        System.out.println(json.writeValueAsString(m));
    }
}
