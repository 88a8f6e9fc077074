"""DescribeLogDirs (API 35), which Kafka's reassignment tool and admin clients call on
every broker: the log dir's path, each partition's size (Kafka's ``Log.size``), and the
file system's total and usable bytes (v4).  The cluster's answer (only the partitions a
broker holds a replica of) runs in tests/cluster/test_kafka_tools_on_cluster.py."""

from __future__ import annotations

import os
import warnings

import pytest

from pylog.protocol import messages as m
from server.util import unique
from tests.wire import WireClient

with warnings.catch_warnings():
    # kafka-python 3 reads its protocol schemas with importlib's deprecated open_text.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic


def _sizes(result) -> dict[tuple[str, int], int]:
    return {(t.name, p.partition_index): p.partition_size for t in result.topics for p in t.partitions}


def test_kafka_python_describe_log_dirs_reports_partition_sizes(serve):
    server = serve()
    topic = unique("dirs")
    admin = KafkaAdminClient(bootstrap_servers=server.bootstrap, request_timeout_ms=10000)
    try:
        admin.create_topics([NewTopic(topic, 2, 1)])
        producer = KafkaProducer(bootstrap_servers=server.bootstrap)
        for i in range(10):
            producer.send(topic, b"x" * 100, partition=0)
        producer.flush()
        producer.close()
        everything = admin.describe_log_dirs()
        named = admin.describe_log_dirs({topic: [0, 1, 7], "no-such-topic": [0]})
    finally:
        admin.close()
    assert server.stop() == 0
    (broker,) = everything
    (log_dir,) = broker["log_dirs"]
    assert log_dir["error_code"] == 0 and log_dir["log_dir"] == os.path.abspath(server.data_dir)
    assert log_dir["total_bytes"] >= log_dir["usable_bytes"] > 0
    on_disk = os.path.getsize(os.path.join(server.data_dir, f"{topic}-0", "00000000000000000000.log"))
    want = {(topic, 0): on_disk, (topic, 1): 0}
    got = {(t["name"], p["partition_index"]): (p["partition_size"], p["offset_lag"], p["is_future_key"])
           for t in log_dir["topics"] for p in t["partitions"]}
    assert on_disk > 1000 and got == {k: (v, 0, False) for k, v in want.items()}
    # Named: an unknown topic and a partition that does not exist are left out, as Kafka does.
    (named_dir,) = named[0]["log_dirs"]
    assert {(t["name"], p["partition_index"]) for t in named_dir["topics"] for p in t["partitions"]} == set(want)


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_describe_log_dirs_every_version(server, version):
    topic = unique("dirs-v")
    with WireClient(server.bootstrap) as c:
        c.create_topic(topic, 3)
        R = m.DescribeLogDirsRequest
        resp = c.bootstrap.request(35, R(topics=[R.DescribableLogDirTopic(topic=topic, partitions=[2, 0])]),
                                   version=version)
        empty = c.bootstrap.request(35, R(topics=[]), version=version)
    (result,) = resp.results
    assert result.error_code == 0 and _sizes(result) == {(topic, 0): 0, (topic, 2): 0}
    assert result.log_dir == os.path.abspath(server.data_dir)
    if version >= 4:
        assert result.total_bytes >= result.usable_bytes > 0
    assert [r.topics for r in empty.results] == [[]]
