"""Kafka's Java clients against `pylog serve` and against Apache Kafka, side by side.

The Java driver (src/main/java/pylog/kafkaref/Driver.java) runs one section of checks
(AdminClient; the idempotent producer with every codec; classic consumer groups with the
range and cooperative-sticky assignors and static membership, and the admin's group
operations) against both servers at once, printing one JSON line per observation.  Both
runs must print the same lines.  The driver prints no node id, cluster id, member id or broker-set timestamp; what still differs
for a reason is listed in :func:`normalise`, each entry with the reason.
"""

from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from server.util import unique

#: The first test of a session may run Maven's first download of Kafka's jars (~150 MB).
pytestmark = pytest.mark.timeout(900)

DRIVER = "pylog.kafkaref.Driver"

#: The compression codecs besides "none" the producer section runs with.
COMPRESSED = ("gzip", "snappy", "lz4", "zstd")


def run_driver(jvm, bootstrap: str, prefix: str, section: str) -> list[dict]:
    proc = jvm.run(DRIVER, bootstrap, prefix, section, timeout=240)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines or lines[-1] != {"check": "done"}:
        pytest.fail(f"the Java driver ({section}) against {bootstrap} exited with "
                    f"{proc.returncode}:\n--- stdout\n{proc.stdout[-4000:]}\n"
                    f"--- stderr\n{proc.stderr[-6000:]}")
    return lines


def key(line: dict) -> str:
    return line["check"] + (f"/{line['codec']}" if "codec" in line else "")


def normalise(line: dict) -> dict:
    """``line`` without what legitimately differs between Apache Kafka and pylog."""
    line = copy.deepcopy(line)
    check = key(line)
    if check in ("describe_configs", "alter_configs", "alter_configs_errors"):
        # `kafka-storage format` of Kafka 4 writes min.insync.replicas=1 as a cluster-wide
        # dynamic config (for eligible leader replicas, KIP-966), so Kafka's source is
        # DYNAMIC_DEFAULT_BROKER_CONFIG where pylog's is DEFAULT_CONFIG: compare the value.
        configs = line.get("after", line)
        configs["min.insync.replicas"] = configs["min.insync.replicas"][0]
    if check == "txn_zombie" and line["outcome"] in ("ProducerFencedException", "InvalidProducerEpochException"):
        # Apache Kafka 4 finalizes transaction.version 2 (KIP-890 part 2): the client adds
        # partitions with the produce itself, and the zombie's produce fails with
        # INVALID_PRODUCER_EPOCH.  pylog speaks transaction version 1: the zombie's
        # AddPartitionsToTxn gets PRODUCER_FENCED.  Either way the zombie is fenced.
        line["outcome"] = "fenced"
    return line


def compare(kafka: list[dict], pylog: list[dict]) -> list[str]:
    diffs = []
    kk = [key(x) for x in kafka]
    pk = [key(x) for x in pylog]
    if kk != pk:
        diffs.append(f"different checks: Apache Kafka {kk}, pylog {pk}")
    pylog_by_key = {key(x): x for x in pylog}
    for line in kafka:
        other = pylog_by_key.get(key(line))
        if other is None:
            continue
        a, b = normalise(line), normalise(other)
        if a != b:
            diffs.append(f"{key(line)}:\n  Apache Kafka: {json.dumps(a, sort_keys=True)}\n"
                         f"  pylog:        {json.dumps(b, sort_keys=True)}")
    return diffs


@pytest.mark.parametrize("section", ["admin", "produce", "groups", "transactions"])
def test_java_clients_same_as_apache_kafka(kafka_jars, kafka_broker, module_server, section):
    prefix = unique(section)
    with ThreadPoolExecutor(2) as pool:
        on_kafka = pool.submit(run_driver, kafka_jars, kafka_broker.bootstrap, prefix, section)
        on_pylog = pool.submit(run_driver, kafka_jars, module_server.bootstrap, prefix, section)
        kafka, pylog = on_kafka.result(), on_pylog.result()
    diffs = compare(kafka, pylog)
    assert not diffs, "pylog serve answered Kafka's Java clients unlike Apache Kafka:\n" + "\n".join(diffs)
    # The comparison is only worth something when the checks ran: every section reports
    # a success of the main operation on both servers.
    by_key = {key(x): x for x in pylog}
    if section == "admin":
        assert by_key["create_topics"]["adm-a"][0] == "ok"
        assert by_key["list_after_delete"]["names"] == ["adm-b"]
    elif section == "produce":
        for codec in ("none", *COMPRESSED):
            assert by_key[f"produce_consumed/{codec}"]["records"]["0"] == [0, 199, 200]
        assert by_key["produce_too_large"]["big"] == "RecordTooLargeException"
    elif section == "transactions":
        assert by_key["txn_read_committed"]["values"] == {
            "0": ["c0", "c2", "c4", "c6", "c8", "last0"], "1": ["c1", "c3", "c5", "c7", "c9", "last1", "fresh"]}
        assert by_key["txn_offsets"] == {"check": "txn_offsets", "0": 3, "1": 4}
    else:
        assert by_key["group_range"]["consumed"] == 40
        assert by_key["group_static"]["rejoined"] == [[0, 1], [2, 3]]
        assert by_key["group_admin_ops"]["committed"]["offsets"] == {"grp-1": 2, "grp-2": 3, "grp-3": 4}
