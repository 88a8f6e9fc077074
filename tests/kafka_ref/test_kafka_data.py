"""Partition directories written by Apache Kafka, opened and served by pylog, batch for batch.

A throwaway Apache Kafka broker (not the session one: its files must be those of a clean
shutdown, indexes trimmed and checkpoints written) takes one partition of records in every
codec, with keys, headers and fixed timestamps, over several 1 MiB segments
(KafkaData.java); the test asks it ListOffsets for a set of timestamps, then stops it.  The
partition's directory, every file of it (segments, indexes, time indexes, producer
snapshots, leader-epoch-checkpoint, partition.metadata), replaces the files of the same
partition in a pylog data directory where the topic was created first (pylog keeps its own
topic registry), and then:

- ``pylog.open`` reads every batch, from the start and from the middle of each batch, and
  each is byte for byte the batch in Kafka's files; ``pylog serve`` over the same
  directory serves the same bytes over Fetch;
- both answer ListOffsets (earliest, latest, max timestamp, and by timestamp on records
  inside batches of every codec) as Apache Kafka did, and so does the embedded consumer's
  ``offsets_for_times``;
- Kafka's sealed segments' indexes pass pylog's checks as they are (opening the log leaves
  them byte for byte unchanged);
- files pylog does not write (partition.metadata) are tolerated, at most with a WARN;
- pylog appends after Kafka's last batch, into Kafka's active segment.

A second test copies the same kind of partition from the session's running Kafka broker,
which is what a crash leaves behind: the same batches and answers, the active segment's
preallocated indexes rebuilt with a WARN.
"""

from __future__ import annotations

import logging
import shutil
import struct
import time
from pathlib import Path

import pytest

import pylog
from pylog import _core
from server.conftest import ServeProcess, _check_stopped
from server.util import unique
from tests.wire import WireClient

from .conftest import KafkaBroker

#: The first test of a session may run Maven's first download of Kafka's jars (~150 MB).
pytestmark = pytest.mark.timeout(900)

TOPIC = "kafka-written"
BASE_TS = 1_700_000_000_000
#: What KafkaData.java writes: 900 records in each of 5 codecs, record i at BASE_TS + 10 * i.
RECORDS = 5 * 900
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
ALLOWED_WARNING = "producer_id_block_end 0 is not above producer id"


def batches(buf: bytes) -> list[tuple[int, int, bytes]]:
    """(base offset, last offset, bytes) of each whole batch in ``buf``; a batch cut short
    at the end (a fetch answer may end inside one) is left out."""
    out, pos = [], 0
    while pos + 61 <= len(buf):
        base, length = struct.unpack_from(">qi", buf, pos)
        end = pos + 12 + length
        if end > len(buf):
            break
        (delta,) = struct.unpack_from(">i", buf, pos + 23)
        out.append((base, base + delta, bytes(buf[pos:end])))
        pos = end
    return out


def kafka_batches(partition_dir: Path) -> list[tuple[int, int, bytes]]:
    out = []
    for seg in sorted(partition_dir.glob("*.log")):
        data = seg.read_bytes()
        found = batches(data)
        assert sum(len(b) for _, _, b in found) == len(data), f"{seg}: not whole batches"
        out.extend(found)
    return out


def timestamps_to_ask() -> list[int]:
    """ListOffsets timestamps: before the first record, on records in the middle of
    batches of every codec, between two records, on the last, after the last."""
    ts = [BASE_TS - 1, BASE_TS, BASE_TS + 10 * (RECORDS - 1), BASE_TS + 10 * RECORDS]
    for run in range(5):
        for i in (run * 900 + 3, run * 900 + 457):
            ts += [BASE_TS + 10 * i, BASE_TS + 10 * i - 4]
    return ts


def read_all(fetch) -> list[tuple[int, int, bytes]]:
    """Every batch of the partition through ``fetch(offset) -> bytes``, read as a consumer
    reads (from the offset after the last batch received)."""
    out, offset = [], 0
    while offset < RECORDS:
        got = batches(fetch(offset))
        assert got and got[0][0] <= offset <= got[0][1], (offset, [b[:2] for b in got])
        out.extend(got)
        offset = got[-1][1] + 1
    return out


def check_batch_for_batch(kafka: list, fetch) -> None:
    assert read_all(fetch) == kafka
    for base, last, data in kafka:
        middle = (base + last + 1) // 2
        first = batches(fetch(middle))[0]
        assert first == (base, last, data), f"fetch at {middle}: batch {first[:2]}, Kafka's {(base, last)}"


def write_with_kafka(jvm, kafka: KafkaBroker, topic: str) -> dict[int, tuple[int, int]]:
    """Write the partition (KafkaData.java) and return Apache Kafka's ListOffsets answers
    (special timestamps and :func:`timestamps_to_ask`): timestamp -> (offset, timestamp)."""
    out = jvm.check("pylog.kafkaref.KafkaData", kafka.bootstrap, topic, str(BASE_TS))
    assert int(out) == RECORDS
    with WireClient(kafka.bootstrap) as wc:
        answers = {t: wc.list_offset(topic, 0, t) for t in (-1, -2, -3, *timestamps_to_ask())}
    # Kafka answers by record (record i has timestamp BASE_TS + 10 * i), compressed or not.
    assert all(answers[BASE_TS + 10 * i - d] == (i, BASE_TS + 10 * i)
               for i in range(3, RECORDS, 900) for d in (0, 4)), answers
    assert answers[-3] == (RECORDS - 1, BASE_TS + 10 * (RECORDS - 1)), answers
    assert answers[-1][0] == RECORDS and answers[BASE_TS + 10 * RECORDS][0] == -1, answers
    return answers


def into_pylog(kafka_dir: Path, data: Path, topic: str) -> tuple[list, dict[str, bytes]]:
    """Kafka's batches and files of ``kafka_dir``, now also the partition's files in the
    pylog data dir ``data``: the topic in pylog's registry first, then Kafka's files in its
    partition directory, while pylog is stopped."""
    written = kafka_batches(kafka_dir)
    assert len(list(kafka_dir.glob("*.log"))) >= 3, sorted(p.name for p in kafka_dir.iterdir())
    assert written[-1][1] == RECORDS - 1
    assert {(b[2][22] & 7) for b in written} == set(CODECS), "every codec, in Kafka's own batches"
    kafka_files = {p.name: p.read_bytes() for p in kafka_dir.iterdir()}
    assert any(n.endswith(".snapshot") for n in kafka_files) and "leader-epoch-checkpoint" in kafka_files \
        and "partition.metadata" in kafka_files, sorted(kafka_files)
    with pylog.open(data) as client:
        client.create_topic(topic, 1, config={"segment.bytes": 1048576, "retention.ms": -1})
    pdir = data / f"{topic}-0"
    for p in pdir.iterdir():
        p.unlink()
    for name in kafka_files:
        shutil.copy2(kafka_dir / name, pdir / name)
    return written, kafka_files


def check_pylog_serves(data: Path, topic: str, written: list, answers: dict, caplog) -> list[str]:
    """``pylog.open`` and ``pylog serve`` over ``data`` return Kafka's batches byte for
    byte and Kafka's ListOffsets answers; returns the WARNs pylog.open logged."""
    caplog.set_level(logging.WARNING)
    with pylog.open(data) as client:
        broker = client.broker
        check_batch_for_batch(written, lambda off: bytes(broker.fetch(topic, 0, off, 1 << 20).records.records))
        assert client.log_offsets(topic, 0) == (0, RECORDS)
        embedded = {}
        for t in answers:
            res = client.list_offsets(topic, 0, t)
            res.raise_for_error()
            embedded[t] = (res.offset, res.timestamp)
        assert embedded == answers
        consumer = client.consumer()
        for t, (offset, ts) in answers.items():
            if t >= 0:
                (hit,) = consumer.offsets_for_times({pylog.TopicPartition(topic, 0): t}).values()
                if offset < 0:
                    assert hit is None, t
                else:
                    assert (hit.offset, hit.timestamp) == (offset, ts), t
    said = [r.getMessage() for r in caplog.records]
    caplog.clear()

    sp = ServeProcess(str(data))
    sp.start()
    try:
        with WireClient(sp.bootstrap) as wc:
            check_batch_for_batch(written, lambda off: wc.fetch(topic, 0, off).records or b"")
            assert {t: wc.list_offset(topic, 0, t) for t in answers} == answers
    finally:
        _check_stopped(sp)
    return said


def test_kafka_written_partition_opened_and_served_by_pylog(kafka_jars, tmp_path, caplog):
    t0 = time.monotonic()
    (tmp_path / "kafka").mkdir()
    kafka = KafkaBroker(kafka_jars, tmp_path / "kafka").start()
    try:
        answers = write_with_kafka(kafka_jars, kafka, TOPIC)
    finally:
        code = kafka.stop()
    # 143: the JVM's exit status after SIGTERM, once Kafka's shutdown hook has finished.
    assert code in (0, 143), kafka.log_text()[-3000:]
    kafka_s = time.monotonic() - t0
    kafka_dir = tmp_path / "kafka" / "data" / f"{TOPIC}-0"
    assert (kafka_dir.parent / ".kafka_cleanshutdown").exists(), kafka.log_text()[-3000:]

    data = tmp_path / "pylog"
    written, kafka_files = into_pylog(kafka_dir, data, TOPIC)
    said = check_pylog_serves(data, TOPIC, written, answers, caplog)
    # The one thing to say: pylog's registry had handed out no producer ids, and Kafka's
    # producers' ids are in the logs (their snapshots read), so pylog skips past them.
    assert all(ALLOWED_WARNING in m for m in said), said
    print(f"\n[kafka_ref] pylog.open over Kafka's files logged: {said or 'nothing'}")
    # Kafka's sealed segments' indexes passed pylog's sanity checks and were used as they
    # are: an index that fails them is rebuilt, with a WARN (none above).
    pdir = data / f"{TOPIC}-0"
    sealed = sorted(n for n in kafka_files if n.endswith(".log"))[:-1]
    for log_name in sealed:
        for suffix in (".index", ".timeindex"):
            name = log_name[:-4] + suffix
            assert (pdir / name).read_bytes() == kafka_files[name], name

    # pylog appends after Kafka's last batch, to Kafka's active segment, and reads it back
    # after a reopen.
    with pylog.open(data) as client:
        b = _core.RecordBatchBuilder(compression="lz4")
        b.append(BASE_TS + 10 * RECORDS, b"after", b"kafka")
        res = client.broker.produce(TOPIC, 0, bytes(b.build()))
        res.raise_for_error()
        assert res.base_offset == RECORDS
    with pylog.open(data) as client:
        assert client.log_offsets(TOPIC, 0) == (0, RECORDS + 1)
        got = batches(bytes(client.broker.fetch(TOPIC, 0, RECORDS - 1, 1 << 20).records.records))
        assert [x[:2] for x in got] == [written[-1][:2], (RECORDS, RECORDS)]
        assert got[0][2] == written[-1][2]
    print(f"[kafka_ref] Kafka-written data: Kafka broker run {kafka_s:.1f} s, "
          f"total {time.monotonic() - t0:.1f} s")


def test_partition_copied_from_a_running_kafka(kafka_jars, kafka_broker, tmp_path, caplog):
    """The session's Apache Kafka, running: its partition directory copied as it is, which
    is what a crash leaves (the active segment's indexes preallocated and mapped, no
    clean-shutdown state for it).  pylog takes it as it finds it: what fails its index
    sanity checks is rebuilt from the log, with a WARN, and every batch is served."""
    t0 = time.monotonic()
    topic = unique("kafka-live")
    answers = write_with_kafka(kafka_jars, kafka_broker, topic)
    kafka_dir = kafka_broker.dir / "data" / f"{topic}-0"
    data = tmp_path / "pylog"
    written, kafka_files = into_pylog(kafka_dir, data, topic)
    active = sorted(n for n in kafka_files if n.endswith(".log"))[-1][:-4]
    assert len(kafka_files[active + ".index"]) > 1 << 20, "Kafka preallocates the active segment's index"
    said = check_pylog_serves(data, topic, written, answers, caplog)
    print(f"\n[kafka_ref] pylog.open over a running Kafka's files logged: {said}")
    # Said: the active segment's preallocated index (zeros after its entries) fails the
    # sanity check and is rebuilt; and the producer ids, as for a clean copy.  Nothing else.
    rebuilt = [m for m in said if f"indexes of segment {int(active)} are unusable" in m]
    assert len(rebuilt) == 1 and "rebuilding them from the log" in rebuilt[0], said
    assert all(m in rebuilt or ALLOWED_WARNING in m for m in said), said
    print(f"[kafka_ref] a running Kafka's partition: {time.monotonic() - t0:.1f} s")
