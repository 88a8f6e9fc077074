"""Internal topics as Kafka Streams creates them (RepartitionTopicConfig,
UnwindowedUnversionedChangelogTopicConfig, WindowedChangelogTopicConfig), embedded and
on `pylog serve`: their configs as DescribeConfigs answers, the app's ``topic.``
overrides, and the repartition purge (consumed records deleted after commits, Kafka's
``maybePurgeCommittedRecords``)."""

from __future__ import annotations

import pytest

import pylog
from pylog.streams import Serdes, StreamsBuilder, TimeWindows
from server.conftest import module_server  # noqa: F401  (one `pylog serve` for this module)
from server.util import unique

S = Serdes.string()
SIZE_MS, GRACE_MS = 10_000, 5_000
DAY_MS = 86_400_000


def counting_app(app_id: str, state_dir, **config):
    """Words re-keyed through a repartition topic into a count (key-value changelog) and
    a tumbling-window count (window changelog)."""
    b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
    words = b.stream("lines").flat_map_values(lambda v: v.split()).group_by(lambda k, w: w)
    words.count(materialized="counts").to_stream().to("counts", value_serde=Serdes.long())
    (words.windowed_by(TimeWindows.of_size_with_grace(SIZE_MS, GRACE_MS))
     .count(materialized="windowed").to_stream().map(lambda k, v: (k.key, str(v))).to("windowed-counts"))
    return b.build(application_id=app_id, config={"commit.interval.ms": 50, "state.dir": str(state_dir),
                                                  **config})


def configs(client, topic: str) -> dict:
    return {e.name: e.value for e in client.describe_configs(topic)}


@pytest.fixture(params=["embedded", "pylog serve"])
def client(request, tmp_path):
    if request.param == "embedded":
        with pylog.open(tmp_path / "data") as c:
            yield c
    else:
        server = request.getfixturevalue("module_server")
        with pylog.connect(server.bootstrap) as c:
            yield c


def test_internal_topics_have_kafka_streams_configs_and_consumed_repartition_records_are_deleted(client, tmp_path):
    app_id = unique("cfg")
    for topic in ("lines", "counts", "windowed-counts"):
        if not client.has_topic(topic):
            client.create_topic(topic, 2)
    p = client.producer()
    lines = ["a b a", "b c", "a c c", "d"] * 25
    for i, line in enumerate(lines):
        p.send("lines", key=f"k{i}".encode(), value=line.encode(), timestamp_ms=1_000 + i)
    p.flush()
    p.close()
    app = counting_app(app_id, tmp_path / "state", **{"repartition.purge.interval.ms": 0,
                                                      "topic.max.message.bytes": "2000000"})
    app.run(client, until_idle=True, idle_polls=5)

    # one repartition topic per aggregation (Kafka's, without topology optimization)
    repartitions = [f"{app_id}-counts-repartition", f"{app_id}-windowed-repartition"]
    for repartition in repartitions:
        cfg = configs(client, repartition)
        assert (cfg["cleanup.policy"], cfg["retention.ms"], cfg["segment.bytes"], cfg["message.timestamp.type"]) \
            == ("delete", "-1", "52428800", "CreateTime")
        assert cfg["max.message.bytes"] == "2000000"          # the app's topic.* setting
    cfg = configs(client, f"{app_id}-counts-changelog")
    assert (cfg["cleanup.policy"], cfg["message.timestamp.type"], cfg["max.message.bytes"]) == \
        ("compact", "CreateTime", "2000000")
    cfg = configs(client, f"{app_id}-windowed-changelog")
    assert cfg["cleanup.policy"] == "compact,delete"
    # the store's retention (window size + grace) plus windowstore.changelog.additional.retention.ms
    assert cfg["retention.ms"] == str(SIZE_MS + GRACE_MS + DAY_MS)

    # every word went through both repartition topics, was processed and committed:
    # the purge deleted every record of them
    for repartition in repartitions:
        total = 0
        for partition in range(client.num_partitions(repartition)):
            start, end = client.log_offsets(repartition, partition)
            total += end
            assert start == end, (repartition, partition, start, end)
        assert total == sum(len(line.split()) for line in lines)


def test_store_log_config_and_additional_retention_override_the_defaults(tmp_path):
    from pylog.streams.topology_metadata import TopologyMetadata, internal_topic_configs

    app = counting_app("ovr", tmp_path / "state")
    metadata = TopologyMetadata(app.topology, "ovr")
    metas = {topic: meta for gid, _ in metadata.groups for _s, topic, meta in metadata.changelogs(gid)}
    windowed = metas["ovr-windowed-changelog"]
    config = {"windowstore.changelog.additional.retention.ms": 7, "topic.retention.ms": "1"}
    # a topic.retention.ms does not win over the computed one (Kafka's order)
    assert internal_topic_configs(config, "changelog", windowed)["retention.ms"] == str(SIZE_MS + GRACE_MS + 7)
    windowed.builder.log_config = {"retention.ms": "123", "segment.ms": "1000"}
    cfg = internal_topic_configs(config, "changelog", windowed)
    assert (cfg["retention.ms"], cfg["segment.ms"], cfg["cleanup.policy"]) == ("123", "1000", "compact,delete")
    assert internal_topic_configs({"topic.cleanup.policy": "compact"}, "repartition")["cleanup.policy"] == "compact"
