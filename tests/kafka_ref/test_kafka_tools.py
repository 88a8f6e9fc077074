"""Apache Kafka's own command-line tools, from the Maven-fetched jars, against `pylog serve`.

Each tool runs as Kafka's scripts run it (its main class in a JVM of its own): kafka-topics,
the console producer and consumer, kafka-consumer-groups (describe with lag, reset
offsets), the producer and consumer perf tests, and kafka-dump-log over the files of a
pylog data directory, plus Kafka's checkpoint file readers over pylog's checkpoints.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from server.conftest import ServeProcess, _check_stopped
from server.util import unique

#: The first test of a session may run Maven's first download of Kafka's jars (~150 MB).
pytestmark = pytest.mark.timeout(900)

TOPICS = "org.apache.kafka.tools.TopicCommand"
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance"
DUMP_LOG = "org.apache.kafka.tools.DumpLogSegments"
CHECKPOINTS = "pylog.kafkaref.Checkpoints"


def table(out: str) -> list[dict[str, str]]:
    """The rows of a kafka-consumer-groups table (header line, then rows)."""
    lines = [x.split() for x in out.splitlines() if x.strip()]
    head = next(i for i, x in enumerate(lines) if x and x[0] == "GROUP")
    return [dict(zip(lines[head], row)) for row in lines[head + 1:] if len(row) == len(lines[head])]


def test_kafka_topics(kafka_jars, module_server):
    jvm, b = kafka_jars, module_server.bootstrap
    topic = unique("tools-topics")
    out = jvm.check(TOPICS, "--bootstrap-server", b, "--create", "--topic", topic, "--partitions", "3",
                    "--replication-factor", "1", "--config", "retention.ms=3600000")
    assert f"Created topic {topic}." in out
    assert topic in jvm.check(TOPICS, "--bootstrap-server", b, "--list").split()

    out = jvm.check(TOPICS, "--bootstrap-server", b, "--describe", "--topic", topic)
    assert re.search(rf"Topic: {topic}\tTopicId: \S+\tPartitionCount: 3\tReplicationFactor: 1\t"
                     r"Configs: retention.ms=3600000", out), out
    rows = re.findall(r"Partition: (\d+)\tLeader: (\d+)\tReplicas: (\d+)\tIsr: (\d+)", out)
    assert [int(r[0]) for r in rows] == [0, 1, 2], out
    assert all(r[1] == r[2] == r[3] for r in rows), out

    jvm.check(TOPICS, "--bootstrap-server", b, "--alter", "--topic", topic, "--partitions", "5")
    out = jvm.check(TOPICS, "--bootstrap-server", b, "--describe", "--topic", topic)
    assert "PartitionCount: 5" in out and len(re.findall(r"\tPartition: \d+", out)) == 5, out

    missing = jvm.run(TOPICS, "--bootstrap-server", b, "--describe", "--topic", topic + "-missing")
    assert missing.returncode == 1
    assert f"Topic '{topic}-missing' does not exist as expected" in missing.stdout + missing.stderr

    jvm.check(TOPICS, "--bootstrap-server", b, "--delete", "--topic", topic)
    assert topic not in jvm.check(TOPICS, "--bootstrap-server", b, "--list").split()


def test_console_tools_and_consumer_groups(kafka_jars, module_server):
    jvm, b = kafka_jars, module_server.bootstrap
    topic, group = unique("tools-console"), unique("tools-group")
    jvm.check(TOPICS, "--bootstrap-server", b, "--create", "--topic", topic, "--partitions", "1",
              "--replication-factor", "1")

    def produce(*records: str) -> None:
        jvm.check(CONSOLE_PRODUCER, "--bootstrap-server", b, "--topic", topic, "--compression-codec", "lz4",
                  "--reader-property", "parse.key=true", "--reader-property", "key.separator=:",
                  input="".join(f"{r}\n" for r in records))

    def consume(count: int) -> list[str]:
        out = jvm.check(CONSOLE_CONSUMER, "--bootstrap-server", b, "--topic", topic, "--group", group,
                        "--from-beginning", "--max-messages", str(count), "--timeout-ms", "30000",
                        "--formatter-property", "print.key=true", "--formatter-property", "print.offset=true",
                        "--formatter-property", "print.partition=true")
        return out.splitlines()

    def describe() -> dict[str, str]:
        (row,) = table(jvm.check(GROUPS, "--bootstrap-server", b, "--describe", "--group", group))
        return row

    produce("k0:v0", "k1:v1", "k2:v2", "k3:v3")
    assert consume(4) == [f"Partition:0\tOffset:{i}\tk{i}\tv{i}" for i in range(4)]
    produce("k4:v4", "k5:v5")

    assert group in jvm.check(GROUPS, "--bootstrap-server", b, "--list").split()
    row = describe()
    assert (row["TOPIC"], row["PARTITION"], row["CURRENT-OFFSET"], row["LOG-END-OFFSET"], row["LAG"]) == \
        (topic, "0", "4", "6", "2"), row
    assert row["CONSUMER-ID"] == "-"  # the console consumer has left

    (reset,) = table(jvm.check(GROUPS, "--bootstrap-server", b, "--reset-offsets", "--group", group,
                               "--topic", topic, "--to-earliest", "--execute"))
    assert reset["NEW-OFFSET"] == "0", reset
    row = describe()
    assert (row["CURRENT-OFFSET"], row["LOG-END-OFFSET"], row["LAG"]) == ("0", "6", "6"), row
    assert consume(6) == [f"Partition:0\tOffset:{i}\tk{i}\tv{i}" for i in range(6)]
    assert describe()["LAG"] == "0"


def test_perf_tools(kafka_jars, module_server):
    jvm, b = kafka_jars, module_server.bootstrap
    topic = unique("tools-perf")
    jvm.check(TOPICS, "--bootstrap-server", b, "--create", "--topic", topic, "--partitions", "2",
              "--replication-factor", "1")
    out = jvm.check(PRODUCER_PERF, "--topic", topic, "--num-records", "5000", "--record-size", "100",
                    "--throughput", "-1", "--command-property", f"bootstrap.servers={b}", "acks=all",
                    "compression.type=snappy")
    assert re.search(r"^5000 records sent, ", out, re.M), out
    out = jvm.check(CONSUMER_PERF, "--bootstrap-server", b, "--topic", topic, "--num-records", "5000",
                    "--timeout", "30000")
    header, line = out.strip().splitlines()[-2:]
    stats = dict(zip([x.strip() for x in header.split(",")], [x.strip() for x in line.split(",")]))
    assert stats["data.consumed.in.nMsg"] == "5000", out


def dump_problems(out: str) -> list[str]:
    """What kafka-dump-log reports as wrong in its output.

    kafka-dump-log reports "Non-consecutive offsets ... -1 is followed by N" for every
    segment but the first of a partition (it starts each file at -1; it says the same of
    Apache Kafka's own segments), so that one pair, with N the segment's base offset, is
    not a problem.
    """
    problems = []
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Non-consecutive offsets in "):
            base = int(Path(line.split()[-1]).stem)
            pairs = []
            for follow in lines[i + 1:]:
                if not follow.startswith("  "):
                    break
                pairs.append(follow.strip())
            if pairs != [f"-1 is followed by {base}"]:
                problems.append(line + " " + "; ".join(pairs))
        elif re.search(r"(?i)mismatch|out of order|corrupt|exception|error|isvalid: false", line):
            problems.append(line)
    return problems


def test_dump_log_and_checkpoints_over_pylog_files(kafka_jars, tmp_path):
    """kafka-dump-log --deep-iteration --index-sanity-check over every segment, index,
    time index and producer snapshot of partitions pylog serve wrote (compressed and not,
    several segments), then --deep-iteration again without the sanity check, which checks
    each index entry against the log; and Kafka's checkpoint readers over pylog's
    checkpoint files.  The server is stopped first: a running server's active segment has
    preallocated index files, which kafka-dump-log rejects on Apache Kafka's own too."""
    jvm = kafka_jars
    sp = ServeProcess(str(tmp_path / "data"))
    sp.start()
    try:
        b = sp.bootstrap
        jvm.check(TOPICS, "--bootstrap-server", b, "--create", "--topic", "dump", "--partitions", "1",
                  "--replication-factor", "1", "--config", "segment.bytes=1048576")
        jvm.check(PRODUCER_PERF, "--topic", "dump", "--num-records", "15000", "--record-size", "100",
                  "--throughput", "-1", "--command-property", f"bootstrap.servers={b}", "acks=all",
                  "compression.type=zstd", "linger.ms=5")
        jvm.check(PRODUCER_PERF, "--topic", "dump", "--num-records", "5000", "--record-size", "100",
                  "--throughput", "-1", "--command-property", f"bootstrap.servers={b}", "acks=1")
        jvm.check(CONSOLE_PRODUCER, "--bootstrap-server", b, "--topic", "keyed", "--compression-codec", "gzip",
                  "--reader-property", "parse.key=true", "--reader-property", "key.separator=:",
                  input="".join(f"k{i}:v{i}\n" for i in range(10)))
    finally:
        _check_stopped(sp)

    data = tmp_path / "data"
    files = sorted(p for d in ("dump-0", "keyed-0") for p in (data / d).iterdir()
                   if p.suffix in (".log", ".index", ".timeindex", ".snapshot"))
    logs = [p for p in files if p.suffix == ".log"]
    assert len([p for p in logs if p.parent.name == "dump-0"]) >= 2, files  # rolled at least once
    arg = ",".join(map(str, files))

    out = jvm.check(DUMP_LOG, "--deep-iteration", "--index-sanity-check", "--files", arg)
    assert not dump_problems(out), "\n".join(dump_problems(out))
    for p in files:
        if p.suffix in (".index", ".timeindex") and p.stat().st_size:
            assert f"{p} passed sanity check." in out, out[-3000:]

    out = jvm.check(DUMP_LOG, "--deep-iteration", "--files", arg)
    assert not dump_problems(out), "\n".join(dump_problems(out))
    records = re.findall(r"^\| offset: (\d+) ", out, re.M)
    assert len(records) == 20000 + 10
    batches = re.findall(r"^baseOffset: \d+ lastOffset: \d+ count: \d+ .* compresscodec: (\w+) ", out, re.M)
    assert {"zstd", "none", "gzip"} <= set(batches), set(batches)

    lines = [json.loads(x) for x in jvm.check(CHECKPOINTS, str(data)).splitlines()]
    by_file = {x["file"]: x["entries"] for x in lines}
    assert by_file["recovery-point-offset-checkpoint"]["dump-0"] == 20000
    assert by_file["recovery-point-offset-checkpoint"]["keyed-0"] == 10
    assert by_file["log-start-offset-checkpoint"]["dump-0"] == 0
    assert by_file["dump-0/leader-epoch-checkpoint"] == [[0, 0]]
    assert by_file["keyed-0/leader-epoch-checkpoint"] == [[0, 0]]
