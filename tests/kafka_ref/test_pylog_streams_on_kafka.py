"""pylog.streams on Apache Kafka: the word count of tests/streams/wordcount_app.py (a
repartition topic, a key-value count and a windowed count) runs through ``pylog.connect``
against the session's Kafka broker, at-least-once and exactly_once_v2, and writes the
exact counts; its internal topics have Kafka Streams' names and configs (as Kafka's
DescribeConfigs reports them), and the consumed repartition records are deleted
(DeleteRecords on Kafka)."""

from __future__ import annotations

import pytest

import pylog
from server.util import unique
from streams import wordcount_app

#: The first test of a session may run Maven's first download of Kafka's jars.
pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_pylog_streams_word_count_on_apache_kafka(kafka_broker, tmp_path, guarantee):
    app_id = unique(f"pyks-{guarantee.replace('_', '-')}")
    topics = {name: unique(f"pyks-{name}") for name in ("lines", "counts", "windowed")}
    lines = wordcount_app.make_lines(seed=15)
    with pylog.connect(kafka_broker.bootstrap) as client:
        wordcount_app.create_and_fill(client, topics, lines)
        app = wordcount_app.build(app_id, topics, tmp_path / "state", guarantee,
                                  **{"repartition.purge.interval.ms": 0})
        app.run(client, until_idle=True, idle_polls=10)
        wordcount_app.check(client, app_id, topics, lines)
        for name in ("counts-repartition", "windowed-repartition"):
            topic = f"{app_id}-{name}"
            offsets = [client.log_offsets(topic, p) for p in range(wordcount_app.PARTITIONS)]
            # every word went through; what was committed was deleted
            assert sum(end for _, end in offsets) >= sum(len(line.split()) for _, line, _ in lines)
            assert all(start > 0 for start, _ in offsets), (topic, offsets)
