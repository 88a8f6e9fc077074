"""DescribeConfigs on a cluster shows the replication throttles kept in ZooKeeper, as a
Kafka 3.x broker in ZooKeeper mode shows them.

Two ``pylog serve --zookeeper`` brokers; confluent-kafka's AdminClient sets the rates
per broker (``/config/brokers/<id>``) and the throttled replicas of a topic
(``/config/topics/<t>``), and describes them; the cluster default
(``/config/brokers/<default>``, the resource named ``""``, which confluent-kafka refuses
to name) is set and described with the tests' wire client:

- broker ``N``: a rate set for it is DYNAMIC_BROKER_CONFIG, one set only as the default
  DYNAMIC_DEFAULT_BROKER_CONFIG; its synonyms are the layers that hold it, highest first;
  a rate set nowhere is not listed (Kafka has no static default for them).  Kafka
  reports them read-only (they are not among its reconfigurable broker configs).
- broker ``""`` (the cluster default): only the defaults, DYNAMIC_DEFAULT_BROKER_CONFIG.
- the topic: ``*.replication.throttled.replicas`` are DYNAMIC_TOPIC_CONFIG, on every
  broker.
"""

from __future__ import annotations

import pytest

from cluster.test_cluster_replication import admin, create_topic
from cluster.util import killed_at_exit
from pylog.cluster.local import LocalCluster
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey
from server.util import wait_for
from wire import WireClient

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,  # noqa: E402
                                   ResourceType)

LEADER_RATE = "leader.replication.throttled.rate"
FOLLOWER_RATE = "follower.replication.throttled.rate"
LEADER_REPLICAS = "leader.replication.throttled.replicas"
FOLLOWER_REPLICAS = "follower.replication.throttled.replicas"


def alter(a, resource_type, name: str, **configs: str | None) -> None:
    """IncrementalAlterConfigs: SET each value given, DELETE each None."""
    entries = [ConfigEntry(k.replace("_", "."), v, incremental_operation=AlterConfigOpType.DELETE if v is None
                           else AlterConfigOpType.SET) for k, v in configs.items()]
    res = ConfigResource(resource_type, name, incremental_configs=entries)
    for fut in a.incremental_alter_configs([res]).values():
        fut.result(30)


def describe(a, resource_type, name: str) -> dict:
    """name -> (value, source, read_only), as confluent-kafka reports them."""
    res = ConfigResource(resource_type, name)
    (fut,) = a.describe_configs([res], request_timeout=30).values()
    return {key: (e.value, ConfigSource(e.source), e.is_read_only) for key, e in fut.result(30).items()}


def synonyms(bootstrap: str, name: str) -> dict:
    """name -> [(synonym value, source)...] of broker resource ``name`` (``""``: the
    cluster default), over the wire: confluent-kafka keys synonyms by name, so the
    layers of one config would collapse into one."""
    D = m.DescribeConfigsRequest
    with WireClient(bootstrap) as w:
        conn = w.bootstrap if name == "" else w.node(int(name))
        r = conn.request(ApiKey.DESCRIBE_CONFIGS, D(resources=[D.DescribeConfigsResource(
            resource_type=4, resource_name=name, configuration_keys=[LEADER_RATE, FOLLOWER_RATE])],
            include_synonyms=True)).results[0]
    assert r.error_code == 0, r.error_message
    return {e.name: [(s.value, ConfigSource(s.source)) for s in e.synonyms] for e in r.configs}


def test_describe_configs_shows_the_throttles_kept_in_zookeeper(tmp_path, zk_connect):
    with killed_at_exit(LocalCluster(tmp_path, 2, zookeeper=zk_connect)) as c:
        a = admin(c.bootstrap)
        wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 2, "2 registered brokers")
        create_topic(c.bootstrap, "thr", partitions=2, rf=2)
        # Nothing set yet: no rate is listed.
        assert LEADER_RATE not in describe(a, ResourceType.BROKER, "1")

        alter(a, ResourceType.BROKER, "1", leader_replication_throttled_rate="1000")
        with WireClient(c.bootstrap) as w:
            w.incremental_alter_configs(4, "", [(LEADER_RATE, 0, "5000"), (FOLLOWER_RATE, 0, "2000")])
        alter(a, ResourceType.TOPIC, "thr", leader_replication_throttled_replicas="0:1,1:2",
              follower_replication_throttled_replicas="*")

        one = describe(a, ResourceType.BROKER, "1")
        dyn, dyn_default = ConfigSource.DYNAMIC_BROKER_CONFIG, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG
        assert one[LEADER_RATE] == ("1000", dyn, True)
        assert one[FOLLOWER_RATE] == ("2000", dyn_default, True)
        assert synonyms(c.bootstrap, "1") == {LEADER_RATE: [("1000", dyn), ("5000", dyn_default)],
                                              FOLLOWER_RATE: [("2000", dyn_default)]}
        assert describe(a, ResourceType.BROKER, "2")[LEADER_RATE] == ("5000", dyn_default, True)
        assert synonyms(c.bootstrap, "2") == {LEADER_RATE: [("5000", dyn_default)],
                                              FOLLOWER_RATE: [("2000", dyn_default)]}
        assert synonyms(c.bootstrap, "") == {LEADER_RATE: [("5000", dyn_default)],
                                             FOLLOWER_RATE: [("2000", dyn_default)]}

        topic = ConfigSource.DYNAMIC_TOPIC_CONFIG

        def topic_configs():
            got = describe(a, ResourceType.TOPIC, "thr")
            return got if got[LEADER_REPLICAS][1] is topic else None

        got = wait_for(topic_configs, "the topic's configs from ZooKeeper")
        assert got[LEADER_REPLICAS][:2] == ("0:1,1:2", topic)
        assert got[FOLLOWER_REPLICAS][:2] == ("*", topic)

        # A rate deleted from a broker falls back to the default.
        alter(a, ResourceType.BROKER, "1", leader_replication_throttled_rate=None)
        assert describe(a, ResourceType.BROKER, "1")[LEADER_RATE][:2] == ("5000", dyn_default)


def test_a_brokers_own_rate_wins_over_the_default_and_both_are_described():
    from pylog.broker.topic_config import ConfigSource as Source
    from pylog.cluster.quota import describe_rates, effective_rate
    assert effective_rate(LEADER_RATE, {LEADER_RATE: "10"}, {LEADER_RATE: "20"}) == "10"
    assert effective_rate(LEADER_RATE, {}, {LEADER_RATE: "20"}) == "20"
    assert effective_rate(LEADER_RATE, {}, {}) is None
    (entry,) = describe_rates({LEADER_RATE: "10"}, {LEADER_RATE: "20"}, [LEADER_RATE])
    assert (entry.value, entry.source, entry.synonyms) == (
        "10", Source.DYNAMIC_BROKER_CONFIG,
        ((LEADER_RATE, "10", Source.DYNAMIC_BROKER_CONFIG), (LEADER_RATE, "20", Source.DYNAMIC_DEFAULT_BROKER_CONFIG)))
    # The cluster default lists its own layer only; a rate set nowhere is not listed.
    assert [(e.name, e.value, e.source) for e in describe_rates(None, {FOLLOWER_RATE: "5"})] == [
        (FOLLOWER_RATE, "5", Source.DYNAMIC_DEFAULT_BROKER_CONFIG)]
    assert describe_rates({}, {}) == []
