"""``__consumer_offsets`` is created on first use, as Kafka creates it on the first
FindCoordinator for a group: a broker nobody runs a group on neither creates nor opens
its partitions (a faster cold start), and groups work as before once it exists, across a
restart too."""

from __future__ import annotations

import os

import pytest

import pylog
from pylog.broker.core import REGISTRY_FILE
from pylog.errors import KafkaStorageError
from pylog.protocol import messages as m
from tests.wire import BrokerConnection
from server.util import unique


def _offsets_dirs(data_dir: str) -> list[str]:
    return sorted(n for n in os.listdir(data_dir) if n.startswith("__consumer_offsets-"))


def _metadata_topics(conn: BrokerConnection) -> set[str]:
    md = conn.request(3, m.MetadataRequest(topics=None), version=12)
    return {t.name for t in md.topics}


def test_first_find_coordinator_creates_the_offsets_topic_and_groups_survive_restart(serve):
    server = serve()
    group, topic = unique("lazy-g"), unique("lazy-t")
    with BrokerConnection(server.host, server.port) as conn:
        assert "__consumer_offsets" not in _metadata_topics(conn)
        assert _offsets_dirs(server.data_dir) == []
        fc = conn.request(10, m.FindCoordinatorRequest(key=group, key_type=0), version=3)
        assert (fc.error_code, fc.node_id, fc.port) == (0, 0, server.port)
        assert "__consumer_offsets" in _metadata_topics(conn)
    # offsets.topic.num.partitions=4 in the tests' overrides
    assert _offsets_dirs(server.data_dir) == [f"__consumer_offsets-{i}" for i in range(4)]
    with pylog.connect(server.bootstrap) as client:
        client.create_topic(topic, 1)
        assert client.commit_offsets(group, {topic: {0: 42}}) == {topic: {0: 0}}
    server.stop()
    again = serve(data_dir=server.data_dir)
    with pylog.connect(again.bootstrap) as client:
        assert client.fetch_offsets(group, {topic: [0]}).topics[topic][0].offset == 42


def test_embedded_group_commit_creates_the_offsets_topic_and_it_reopens(tmp_path):
    with pylog.open(tmp_path / "d", offsets_topic_num_partitions=3) as client:
        client.create_topic("t", 1)
        assert not client.has_topic("__consumer_offsets")
        assert client.fetch_offsets("g", {"t": [0]}).topics["t"][0].offset == -1
        assert client.commit_offsets("g", {"t": {0: 7}}) == {"t": {0: 0}}
        assert client.num_partitions("__consumer_offsets") == 3
    with pylog.open(tmp_path / "d", offsets_topic_num_partitions=3) as client:
        assert client.fetch_offsets("g", {"t": [0]}).topics["t"][0].offset == 7


def test_a_lost_registry_is_refused_without_the_offsets_topic_too(tmp_path):
    # The registry holds what the logs cannot tell (topic configs, the producer id
    # block); a data dir with logs but no registry is refused even when no group ever
    # created __consumer_offsets.
    with pylog.open(tmp_path / "d") as client:
        client.create_topic("t", 1)
        assert not client.has_topic("__consumer_offsets")
    os.remove(tmp_path / "d" / REGISTRY_FILE)
    with pytest.raises(KafkaStorageError, match="is missing, but .* holds a broker's logs"):
        pylog.open(tmp_path / "d")
