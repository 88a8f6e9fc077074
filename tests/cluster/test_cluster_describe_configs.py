"""DescribeConfigs of a topic asked of any broker of a cluster, as Kafka's broker in
ZooKeeper mode answers it: a broker that holds no replica of the topic answers from
ZooKeeper's ``/config/topics/<t>`` over its own defaults, the same configs and sources
as the broker that holds the replica; a topic that is not in ``/brokers/topics`` is
still UNKNOWN_TOPIC_OR_PARTITION.

Three ``pylog serve --zookeeper`` brokers; topic ``one`` has a single replica, on broker
1; each broker is asked alone over the wire (DescribeConfigs v4, synonyms)."""

from __future__ import annotations

import pytest

from cluster.test_cluster_replication import admin
from cluster.util import killed_at_exit
from pylog.broker.topic_config import ConfigSource
from pylog.cluster.local import LocalCluster
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey
from server.util import wait_for
from wire import WireClient

pytest.importorskip("confluent_kafka")

UNKNOWN_TOPIC_OR_PARTITION = 3


def describe_topic(bootstrap: str, node: int, topic: str):
    """The DescribeConfigs result of ``topic`` as broker ``node`` alone answers it."""
    D = m.DescribeConfigsRequest
    with WireClient(bootstrap) as w:
        return w.node(node).request(ApiKey.DESCRIBE_CONFIGS, D(resources=[D.DescribeConfigsResource(
            resource_type=2, resource_name=topic, configuration_keys=None)], include_synonyms=True)).results[0]


def entries(result) -> dict:
    return {e.name: (e.value, e.config_source, e.read_only, e.config_type,
                     [(s.name, s.value, s.source) for s in e.synonyms]) for e in result.configs}


def test_a_topic_is_described_by_every_broker_from_zookeeper(tmp_path, zk_connect):
    from confluent_kafka.admin import NewTopic

    with killed_at_exit(LocalCluster(tmp_path, 3, zookeeper=zk_connect,
                                     overrides=["log.retention.bytes=123456789"])) as cluster:
        a = admin(cluster.bootstrap)
        wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 3, "3 registered brokers in the metadata")
        fut = a.create_topics([NewTopic("one", num_partitions=1, replica_assignment=[[1]],
                                        config={"retention.ms": "4321000", "max.message.bytes": "2000"})],
                              operation_timeout=30)["one"]
        fut.result(60)
        on_replica = wait_for(lambda: (r := describe_topic(cluster.bootstrap, 1, "one")).error_code == 0 and r,
                              "broker 1 describes its topic")
        want = entries(on_replica)
        assert want["retention.ms"][:2] == ("4321000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
        assert want["max.message.bytes"][:2] == ("2000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
        assert want["retention.bytes"][:2] == ("123456789", ConfigSource.STATIC_BROKER_CONFIG)
        assert want["cleanup.policy"][:2] == ("delete", ConfigSource.DEFAULT_CONFIG)
        for other in (2, 3):
            r = describe_topic(cluster.bootstrap, other, "one")
            assert (r.error_code, r.error_message) == (0, None)
            assert entries(r) == want, f"broker {other}"
            assert [e.name for e in r.configs] == [e.name for e in on_replica.configs]

        missing = describe_topic(cluster.bootstrap, 2, "no-such-topic")
        assert missing.error_code == UNKNOWN_TOPIC_OR_PARTITION and missing.configs == []
