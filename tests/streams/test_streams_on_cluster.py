"""pylog.streams on a 3-broker pylog cluster (ZooKeeper, LocalCluster): the word count of
tests/streams/wordcount_app.py (at-least-once, and exactly_once_v2: transactional
offset commits whose group and transactional ids may be coordinated on different
brokers) through ``pylog.connect``, with ``replication.factor=3``: exact counts, Kafka
Streams' internal topics, each replicated on the three brokers with a full ISR."""

from __future__ import annotations

import os

import pytest

import pylog
from cluster.conftest import zookeeper_server  # noqa: F401  (one ZooKeeper for the session)
from cluster.util import killed_at_exit
from pylog.cluster.local import LocalCluster
from pylog.errors import InvalidReplicationFactorError
from server.util import wait_for
from streams import wordcount_app


def created(client, topic: str) -> bool:
    try:
        client.create_topic(topic, 1, 3)
    except InvalidReplicationFactorError:
        return False
    return True


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_word_count_on_a_three_broker_cluster_with_replicated_internal_topics(tmp_path, zookeeper_server,  # noqa: F811
                                                                              guarantee):
    cluster = LocalCluster(tmp_path / "cluster", 3,
                           zookeeper=f"{zookeeper_server.hosts}/pylog-streams-{guarantee}-{os.getpid()}",
                           overrides=["offsets.topic.num.partitions=3", "transaction.state.log.num.partitions=3",
                                      "offsets.topic.replication.factor=3", "group.initial.rebalance.delay.ms=0"])
    topics = {name: f"cl-{name}" for name in ("lines", "counts", "windowed")}
    lines = wordcount_app.make_lines(seed=13)
    # Nothing here is about how brokers stop: SIGKILLed at the end, not three controlled
    # shutdowns one after the other (1.5-3 s; see cluster.util.killed_at_exit).
    with killed_at_exit(cluster), pylog.connect(cluster.bootstrap) as client:
        wait_for(lambda: created(client, "cl-probe"), "3 registered brokers (a topic of replication factor 3)")
        wordcount_app.create_and_fill(client, topics, lines, rf=3)
        app = wordcount_app.build("cl-wc", topics, tmp_path / "state", guarantee,
                                  **{"replication.factor": 3})
        app.run(client, until_idle=True, idle_polls=10)
        for topic in wordcount_app.check(client, "cl-wc", topics, lines):
            for p in client.describe_topic(topic).partitions:
                assert len(p.replicas) == 3 and len(p.isr) == 3, (topic, p)
