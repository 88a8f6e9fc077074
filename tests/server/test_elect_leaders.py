"""ElectLeaders (KIP-460) on a single node: each partition's one replica is its preferred
and live leader, so Kafka's answers are ELECTION_NOT_NEEDED (named partitions) or
nothing (null partitions); a partition that does not exist is UNKNOWN_TOPIC_OR_PARTITION.
The client is confluent-kafka's AdminClient (librdkafka)."""

from __future__ import annotations

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import ElectionType, KafkaError, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


def test_elect_leaders_on_one_node(inproc):
    host, port = inproc.address[:2]
    a = AdminClient({"bootstrap.servers": f"{host}:{port}"})
    a.create_topics([NewTopic("el", 2, 1)], operation_timeout=30)["el"].result(30)
    wanted = [TopicPartition("el", 0), TopicPartition("el", 1), TopicPartition("el", 5),
              TopicPartition("missing", 0)]
    for kind in (ElectionType.PREFERRED, ElectionType.UNCLEAN):
        got = a.elect_leaders(kind, wanted).result(30)
        assert {(tp.topic, tp.partition): err.code() for tp, err in got.items()} == {
            ("el", 0): KafkaError.ELECTION_NOT_NEEDED, ("el", 1): KafkaError.ELECTION_NOT_NEEDED,
            ("el", 5): KafkaError.UNKNOWN_TOPIC_OR_PART, ("missing", 0): KafkaError.UNKNOWN_TOPIC_OR_PART}
    assert a.elect_leaders(ElectionType.PREFERRED, None).result(30) == {}
