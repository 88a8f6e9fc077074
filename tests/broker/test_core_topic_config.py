"""The topic config table: every Kafka topic config parses, validates and reaches LogConfig."""

import pytest

from pylog.broker.topic_config import (LONG_MAX, TOPIC_CONFIGS, ConfigSource, ConfigType, TopicConfig, normalize,
                                       normalize_all)
from pylog.errors import InvalidConfigError
from pylog.storage import LogConfig


def test_every_default_parses_and_gives_kafkas_log_config():
    tc = TopicConfig()
    lc = tc.log_config()
    assert lc == LogConfig(preallocate=False)          # Kafka's defaults are LogConfig's (but preallocate)
    for name, d in TOPIC_CONFIGS.items():
        assert normalize(name, d.default) == d.default, name
    assert len(TOPIC_CONFIGS) >= 30 and "min.insync.replicas" in TOPIC_CONFIGS


@pytest.mark.parametrize("name, raw, canonical", [
    ("retention.ms", 5, "5"), ("retention.ms", " -1 ", "-1"), ("segment.bytes", "1048576", "1048576"),
    ("preallocate", True, "true"), ("preallocate", "FALSE", "false"),
    ("min.cleanable.dirty.ratio", 1, "1.0"), ("min.cleanable.dirty.ratio", "0.25", "0.25"),
    ("cleanup.policy", ["compact", "delete"], "compact,delete"), ("cleanup.policy", "delete, compact", "delete,compact"),
    ("compression.type", "zstd", "zstd"), ("message.timestamp.type", "LogAppendTime", "LogAppendTime"),
    ("leader.replication.throttled.replicas", "0:1,1:2", "0:1,1:2"),
    ("flush.messages", LONG_MAX, str(LONG_MAX)),
])
def test_normalize_gives_canonical_strings(name, raw, canonical):
    assert normalize(name, raw) == canonical


@pytest.mark.parametrize("name, raw", [
    ("retention.ms", "soon"), ("retention.ms", True), ("retention.ms", -2), ("retention.ms", 2**63),
    ("segment.bytes", 13), ("segment.bytes", 2**31), ("preallocate", "yes"), ("preallocate", 1),
    ("min.cleanable.dirty.ratio", 1.5), ("cleanup.policy", "forever"), ("cleanup.policy", "delete,forever"),
    ("compression.type", "brotli"), ("message.timestamp.type", "Now"), ("min.insync.replicas", 0),
    ("leader.replication.throttled.replicas", "broker-1"), ("remote.storage.enable", "true"),
    ("unknown.config", 1), ("retention_ms", 1), ("retention.ms", None), (5, 1),
])
def test_bad_values_are_invalid_config(name, raw):
    with pytest.raises(InvalidConfigError) as ei:
        normalize(name, raw)
    assert ei.value.error_code == 40


def test_inconsistent_settings_are_caught_together():
    with pytest.raises(InvalidConfigError):
        normalize_all({"segment.index.bytes": 4})         # Kafka allows 4, the log needs 12


def test_describe_sources_types_and_synonyms():
    tc = TopicConfig({"retention.ms": "10"}, {"segment.bytes": "2048"})
    by = {e.name: e for e in tc.describe(include_synonyms=True, include_documentation=True)}
    assert by["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG and by["retention.ms"].type == ConfigType.LONG
    assert by["segment.bytes"].source == ConfigSource.STATIC_BROKER_CONFIG and by["segment.bytes"].value == "2048"
    assert by["cleanup.policy"].type == ConfigType.LIST and by["cleanup.policy"].is_default
    assert by["preallocate"].type == ConfigType.BOOLEAN and by["preallocate"].documentation
    assert by["segment.bytes"].synonyms[0] == ("log.segment.bytes", "2048", ConfigSource.STATIC_BROKER_CONFIG)
    assert tc.log_config().segment_bytes == 2048 and tc["retention.ms"] == 10
    # As Kafka: a name that is not a topic config is left out.
    assert [e.name for e in tc.describe(["nope", "retention.ms"])] == ["retention.ms"]
    assert tc.as_dict()["retention.ms"] == "10"
