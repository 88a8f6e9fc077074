"""Restarts: topics, committed offsets, producer state and per-key order survive clean
shutdowns and a killed process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pylog
from pylog import _core
from pylog.broker.partitioner import partition_for_key
from tests.client.conftest import drain

KEYS = [b"customer-%d" % i for i in range(20)]


def test_order_per_key_across_partitions_and_restarts(tmp_path):
    path = tmp_path / "data"
    seq = {k: 0 for k in KEYS}
    for session in range(3):
        with pylog.open(path, offsets_topic_num_partitions=2) as client:
            if session == 0:
                client.create_topic("orders", 4)
            p = client.producer(linger_ms=2, batch_size=512, compression_type="lz4")
            for i in range(600):
                k = KEYS[(i * 7 + session) % len(KEYS)]
                p.send("orders", value=b"%d" % seq[k], key=k)
                seq[k] += 1
            # Closing the client closes (and so flushes) its producer.
    with pylog.open(path, offsets_topic_num_partitions=2) as client:
        c = client.consumer("orders", group_id="audit", auto_offset_reset="earliest")
        recs = drain(c, 1800)
        assert len(recs) == 1800
        by_key = {}
        for r in recs:
            assert r.partition == partition_for_key(r.key, 4)
            by_key.setdefault(r.key, []).append(int(r.value))
        assert by_key == {k: list(range(seq[k])) for k in KEYS}


def test_committed_offsets_and_metadata_survive_restart(tmp_path):
    path = tmp_path / "data"
    with pylog.open(path, offsets_topic_num_partitions=3) as client:
        client.create_topic("t", 2)
        p = client.producer()
        for i in range(10):
            p.send("t", b"%d" % i, partition=i % 2)
        p.flush()
        c = client.consumer("t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False)
        drain(c, 10)
        c.commit({("t", 0): pylog.OffsetAndMetadata(4, "checkpoint-a")})
    with pylog.open(path, offsets_topic_num_partitions=3) as client:
        c = client.consumer("t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False)
        assert c.committed(("t", 0)) == pylog.OffsetAndMetadata(4, "checkpoint-a", -1)
        assert c.committed(("t", 1)) is None
        recs = drain(c, 6)
        assert sorted((r.partition, r.offset) for r in recs) == [(0, 4)] + [(1, i) for i in range(5)]


CHILD = textwrap.dedent("""
    import os, sys
    import pylog
    from pylog import _core
    path, out = sys.argv[1], sys.argv[2]
    from pylog.broker.group import GroupCoordinatorConfig
    client = pylog.open(path, offsets_topic_num_partitions=2, background=False,
                        group=GroupCoordinatorConfig(min_session_timeout_ms=500))
    client.create_topic("t", 2, config={"retention.ms": 99999})
    p = client.producer(linger_ms=0)
    for i in range(500):
        p.send("t", b"%d" % i, key=b"k%d" % (i % 9))
    p.flush()
    # A short session: after the kill, the restarted client drops this member within 1 s
    # (the new member's join waits for that, as in Kafka).
    c = client.consumer("t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False,
                        session_timeout_ms=1000, heartbeat_interval_ms=200)
    got = 0
    while got < 500:
        got += len(c.poll(timeout_ms=1000))
    c.commit()
    pid = client.broker.init_producer_id().producer_id
    b = _core.RecordBatchBuilder(producer_id=pid, producer_epoch=0, base_sequence=0)
    b.append(None, b"raw", b"last")
    last = b.build()
    client.broker.append("t", 0, last)
    with open(out, "wb") as f:
        f.write(pid.to_bytes(8, "big") + last)
    print("ready", flush=True)
    sys.stdin.read()      # wait to be killed
""")


def test_killed_process_recovers_topics_offsets_and_producer_state(tmp_path):
    path, out = tmp_path / "data", tmp_path / "last"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(out)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=os.getcwd())
    try:
        assert proc.stdout.readline().strip() == b"ready"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
        proc.stdout.close()
    raw = out.read_bytes()
    pid, last = int.from_bytes(raw[:8], "big"), raw[8:]
    with pylog.open(path, offsets_topic_num_partitions=2) as client:
        assert not client.broker.had_clean_shutdown
        assert client.list_topics() == ["t"]
        assert client.describe_configs("t", ["retention.ms"])[0].value == "99999"
        hw = [client.high_watermark("t", p) for p in (0, 1)]
        assert sum(hw) == 501
        dup = client.broker.produce("t", 0, last)                 # rebuilt from the log: recognised
        assert dup.duplicate and dup.base_offset == hw[0] - 1
        assert client.broker.init_producer_id().producer_id > pid
        c = client.consumer("t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False)
        committed = {p: c.committed(("t", p)).offset for p in (0, 1)}
        assert committed[0] == hw[0] - 1 and committed[1] == hw[1]
        rest = drain(c, 1)
        assert [r.value for r in rest] == [b"last"]            # resumes at the committed offset
        res = client.broker.fetch("t", 1, 0)
        values = [r.value for b in _core.iter_batches(res.records.records) for r in b]
        assert len(values) == hw[1]
