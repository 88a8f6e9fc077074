"""The command-line tools against a running ``pylog serve``: topics, produce, consume,
groups (with lag and offset resets), dump-log and bench."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from server.util import unique


def pylog(*args, stdin=None, check=True, timeout=60):
    proc = subprocess.run([sys.executable, "-m", "pylog.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"pylog {' '.join(args)} failed:\n{proc.stderr}"
    return proc


def test_topics_lifecycle(module_server):
    b = ["--bootstrap-server", module_server.bootstrap]
    topic = unique("cli-topic")
    out = pylog("topics", "create", topic, "--partitions", "3", "--config", "retention.ms=123456", *b).stdout
    assert f"Created topic {topic}" in out
    again = pylog("topics", "create", topic, *b, check=False)
    # Kafka's tools print the error's message, not a class name: one line, exit 1.
    assert again.returncode == 1 and "already exists" in again.stderr
    assert again.stderr.startswith("pylog: ") and "Error" not in again.stderr and again.stderr.count("\n") == 1
    assert pylog("topics", "create", topic, "--if-not-exists", *b).returncode == 0
    assert topic in pylog("topics", "list", *b).stdout.split()
    desc = pylog("topics", "describe", topic, *b).stdout
    assert "PartitionCount: 3" in desc and "retention.ms=123456" in desc
    assert desc.count(f"Topic: {topic}\tPartition:") == 3
    pylog("topics", "alter", topic, "--partitions", "5", "--config", "cleanup.policy=compact",
          "--delete-config", "retention.ms", *b)
    desc = pylog("topics", "describe", topic, *b).stdout
    assert "PartitionCount: 5" in desc and "cleanup.policy=compact" in desc and "retention.ms" not in desc
    assert "retention.ms=604800000" in pylog("topics", "describe", topic, "--all-configs", *b).stdout
    pylog("topics", "delete", topic, *b)
    assert topic not in pylog("topics", "list", *b).stdout.split()
    missing = pylog("topics", "describe", topic, *b, check=False)
    assert missing.returncode == 1


def test_produce_consume_keys_headers_and_formats(module_server):
    b = ["--bootstrap-server", module_server.bootstrap]
    topic = unique("cli-data")
    pylog("topics", "create", topic, "--partitions", "2", *b)
    lines = "".join(f"key{i % 4}|value {i}\n" for i in range(40))
    err = pylog("produce", "--topic", topic, "--key-separator", "|", "--header", "origin=test",
                "--compression", "zstd", *b, stdin=lines).stderr
    assert "Produced 40 record(s)" in err
    js = "\n".join(json.dumps({"key": "j", "value": {"n": i}, "headers": {"h": str(i)}, "partition": 1})
                   for i in range(5)) + "\n"
    pylog("produce", "--topic", topic, "--format", "json", *b, stdin=js)
    out = pylog("consume", "--topic", topic, "--from-beginning", "--max-messages", "45", "--format", "json",
                "--timeout-ms", "5000", *b).stdout
    records = [json.loads(x) for x in out.splitlines()]
    assert len(records) == 45
    plain = [r for r in records if r["key"] != "j"]
    assert sorted(r["value"] for r in plain) == sorted(f"value {i}" for i in range(40))
    assert all(r["headers"] == {"origin": "test"} for r in plain)
    # Keyed records: one partition per key.
    parts: dict[str, set] = {}
    for r in plain:
        parts.setdefault(r["key"], set()).add(r["partition"])
    assert all(len(p) == 1 for p in parts.values())
    js_records = [r for r in records if r["key"] == "j"]
    assert [json.loads(r["value"])["n"] for r in js_records] == list(range(5))
    assert all(r["partition"] == 1 for r in js_records)
    # A single partition from an offset, key and offset printed.
    out = pylog("consume", "--topic", topic, "--partition", "1", "--offset", "0", "--print-key",
                "--print-offset", "--max-messages", "1", "--timeout-ms", "5000", *b).stdout
    assert out.startswith("1:0\t")


def test_consume_group_and_groups_tool(module_server):
    b = ["--bootstrap-server", module_server.bootstrap]
    topic = unique("cli-group")
    group = unique("cli-g")
    pylog("topics", "create", topic, "--partitions", "2", *b)
    pylog("produce", "--topic", topic, *b, stdin="".join(f"m{i}\n" for i in range(30)))
    # --max-messages ends the run at the 30th record; that no 31st one was there is what
    # the group's offsets below say (30 committed, no lag).  --timeout-ms only bounds a hang.
    proc = pylog("consume", "--topic", topic, "--group", group, "--from-beginning", "--max-messages", "30",
                 "--timeout-ms", "30000", *b, timeout=90)
    assert sorted(proc.stdout.split()) == sorted(f"m{i}" for i in range(30))
    assert group in pylog("groups", "list", *b).stdout.split()
    desc = pylog("groups", "describe", group, *b).stdout
    assert "State: Empty" in desc
    rows = [line.split() for line in desc.splitlines()[2:]]
    assert {r[1] for r in rows} == {topic}
    assert sum(int(r[3]) for r in rows) == 30 and all(r[5] == "0" for r in rows)   # no lag
    # More data: lag shows up.
    pylog("produce", "--topic", topic, "--partition", "0", *b, stdin="late1\nlate2\n")
    rows = [line.split() for line in pylog("groups", "describe", group, *b).stdout.splitlines()[2:]]
    assert sum(int(r[5]) for r in rows) == 2
    # Dry run changes nothing; --execute rewinds; a consumer then rereads everything.
    dry = pylog("groups", "reset-offsets", group, "--topic", topic, "--to-earliest", *b)
    assert "dry run" in dry.stderr
    rows = [line.split() for line in pylog("groups", "describe", group, *b).stdout.splitlines()[2:]]
    assert sum(int(r[5]) for r in rows) == 2
    pylog("groups", "reset-offsets", group, "--topic", topic, "--to-earliest", "--execute", *b)
    rows = [line.split() for line in pylog("groups", "describe", group, *b).stdout.splitlines()[2:]]
    assert sum(int(r[5]) for r in rows) == 32
    pylog("groups", "reset-offsets", group, "--topic", f"{topic}:0", "--shift-by", "2", "--execute", *b)
    rows = {int(r[2]): r for r in (line.split() for line in
                                   pylog("groups", "describe", group, *b).stdout.splitlines()[2:])}
    assert rows[0][3] == "2"
    proc = pylog("consume", "--topic", topic, "--group", group, "--max-messages", "30", "--timeout-ms", "30000",
                 *b, timeout=90)
    assert len(proc.stdout.split()) == 30
    # ... and those 30 were all there was from the reset offsets: the group is at the end.
    rows = [line.split() for line in pylog("groups", "describe", group, *b).stdout.splitlines()[2:]]
    assert sum(int(r[3]) for r in rows) == 32 and all(r[5] == "0" for r in rows)
    pylog("groups", "delete", group, *b)
    assert group not in pylog("groups", "list", *b).stdout.split()


def test_dump_log(module_server):
    b = ["--bootstrap-server", module_server.bootstrap]
    topic = unique("cli-dump")
    pylog("topics", "create", topic, "--partitions", "1", *b)
    pylog("produce", "--topic", topic, "--key-separator", "=", *b, stdin="a=1\nb=2\n")
    segment = glob.glob(os.path.join(module_server.data_dir, f"{topic}-0", "*.log"))[0]
    out = pylog("dump-log", "--print-data", segment).stdout
    assert "baseOffset: 0 lastOffset: 1 count: 2" in out
    assert "isvalid: true" in out
    assert "key: a payload: 1" in out and "key: b payload: 2" in out
    index = segment[:-4] + ".index"
    assert "offset: 0 position: 0" in pylog("dump-log", index).stdout


def test_dump_log_reports_corruption(tmp_path):
    from pylog.records import RecordBatchBuilder

    bb = RecordBatchBuilder()
    bb.append(None, b"k", b"v")
    one = bytes(bb.build())
    data = bytearray(one) * 3
    data[len(one) * 2 - 2] ^= 0x55          # a bad CRC in the middle batch
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(bytes(data))
    proc = pylog("dump-log", "--print-data", str(path), check=False)
    # As Kafka's DumpLogSegments: the bad batch shows isvalid: false and the dump goes on.
    assert proc.returncode == 1
    valid = [line.rsplit("isvalid: ", 1)[1] for line in proc.stdout.splitlines() if "isvalid:" in line]
    assert valid == ["true", "false", "true"]
    assert "1 of 3 batch(es) failed the CRC check" in proc.stderr
    assert "key: k payload: v" in proc.stdout
    # --no-crc-check does not compute the CRC (and never prints a Python object).
    unchecked = pylog("dump-log", "--no-crc-check", str(path)).stdout
    assert unchecked.count("isvalid: unchecked") == 3 and "<" not in unchecked
    # Broken framing (a truncated batch) ends the dump of that file, reported.
    path.write_bytes(bytes(data[:-5]))
    proc = pylog("dump-log", str(path), check=False)
    assert proc.returncode == 1 and "corrupt batch at byte 140" in proc.stderr
    assert proc.stdout.count("baseOffset:") == 2


def test_dump_log_null_key_and_broken_pipe(tmp_path):
    from pylog.records import RecordBatchBuilder

    bb = RecordBatchBuilder()
    for i in range(3):
        bb.append(None, None, b"v%d" % i)
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(bytes(bb.build()) * 2000)
    out = pylog("dump-log", "--print-data", str(path)).stdout
    assert "key: null payload: v0" in out and "None" not in out
    # | head: the reader goes away; no "Broken pipe", no traceback.
    proc = subprocess.Popen([sys.executable, "-m", "pylog.cli", "dump-log", "--print-data", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(60) == 0
    assert err == ""


@pytest.mark.bench
def test_bench_produce_and_consume_smoke(module_server):
    b = ["--bootstrap-server", module_server.bootstrap]
    topic = unique("cli-bench")
    out = pylog("bench", "produce", "--topic", topic, "--records", "20000", "--batch-records", "1000",
                "--json", "--no-progress", *b).stdout
    res = json.loads(out)
    assert res["records"] == 20000 and res["records_per_s"] > 0 and res["latency_ms"]["p99"] > 0
    out = pylog("bench", "consume", "--topic", topic, "--records", "20000", "--json", "--no-progress",
                "--verify", *b).stdout
    assert json.loads(out)["records"] == 20000
    out = pylog("bench", "produce", "--embedded", "--records", "10000", "--no-progress").stdout
    assert "records/s" in out
    out = pylog("bench", "consume", "--embedded", "--records", "10000", "--no-progress").stdout
    assert "10,000 records" in out
