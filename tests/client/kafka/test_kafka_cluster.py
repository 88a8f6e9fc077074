"""ClusterMetadata and BrokerConnection policies without sockets: bootstrap parsing,
metadata merging, stale leader epochs, refresh timing, reconnect backoff."""

from __future__ import annotations

import random
import selectors
import uuid

import pytest

from pylog.client.kafka import ClusterMetadata, NetworkClient, parse_bootstrap_servers
from pylog.client.kafka.cluster import METADATA_ERRORS, least_loaded
from pylog.client.kafka.connection import BrokerConnection
from pylog.errors import InvalidConfigError, NetworkError
from pylog.protocol import messages as m

R = m.MetadataResponse


@pytest.mark.parametrize("text, expected", [
    ("localhost:9092", [("localhost", 9092)]),
    ("a:1, b:2,,", [("a", 1), ("b", 2)]),
    ("[::1]:9093", [("::1", 9093)]),
    ("::1:9094", [("::1", 9094)]),
    ("PLAINTEXT://h:5", [("h", 5)]),
    ("host", [("host", 9092)]),
    ("[fe80::1]", [("fe80::1", 9092)]),
    (["a:1,b:2", "c:3"], [("a", 1), ("b", 2), ("c", 3)]),
])
def test_parse_bootstrap_servers(text, expected):
    assert parse_bootstrap_servers(text) == expected


@pytest.mark.parametrize("text", ["", " , ", "host:", "host:x", "host:0", "host:70000", ":9092",
                                  "[::1:9092", "[::1]x", "a b:1", 42, [1]])
def test_bad_bootstrap_servers_are_invalid_config(text):
    with pytest.raises(InvalidConfigError):
        parse_bootstrap_servers(text)


@pytest.mark.parametrize("kw", [{"request_timeout_ms": 0}, {"max_in_flight": 0}, {"max_in_flight": True},
                                {"retry_backoff_ms": -1}, {"max_response_size": 4}])
def test_bad_client_config_is_invalid_config(kw):
    with pytest.raises(InvalidConfigError):
        NetworkClient("127.0.0.1:1", **kw)


def response(*topics, brokers=((0, "h0", 1), (1, "h1", 2))):
    return R(brokers=[R.MetadataResponseBroker(node_id=i, host=h, port=p) for i, h, p in brokers],
             cluster_id="c1", controller_id=1, topics=list(topics))


def topic(name, leaders, epoch=0, error=0, tid=None):
    return R.MetadataResponseTopic(error_code=error, name=name, topic_id=tid or uuid.UUID(int=7), partitions=[
        R.MetadataResponsePartition(partition_index=p, leader_id=ldr, leader_epoch=epoch,
                                    replica_nodes=[0, 1], isr_nodes=[0, 1])
        for p, ldr in enumerate(leaders)])


def test_update_replaces_bootstrap_nodes_and_merges_partial_answers():
    c = ClusterMetadata("b1:1,b2:2")
    assert c.candidate_nodes() == [-1, -2] and not c.bootstrapped
    assert c.node(-2).host == "b2"
    v = c.request_version
    c.update(response(topic("a", [0, 1]), topic("b", [1])), 10.0, topics=None, request_version=v)
    assert c.bootstrapped and sorted(c.candidate_nodes()) == [0, 1]
    assert (c.cluster_id, c.controller_id) == ("c1", 1)
    assert c.leader_for("a", 1) == 1 and c.partitions_for("b") == [0]
    c.update(response(topic("a", [1, 1], epoch=1)), 11.0, topics=["a"], request_version=v)
    assert c.leader_for("a", 0) == 1 and c.partitions_for("b") == [0]   # b kept
    c.update(response(topic("a", [1, 1], epoch=1)), 12.0, topics=None, request_version=v)
    assert c.partitions_for("b") is None                                  # all-topics answer: gone
    c.update(response(topic("gone", [], error=3)), 13.0, topics=["gone"], request_version=v)
    assert c.partitions_for("gone") is None and c.topics["gone"].error_code == 3


def test_a_stale_leader_epoch_is_ignored_and_another_update_requested():
    c = ClusterMetadata("b:1", retry_backoff_ms=100)
    c.update(response(topic("a", [0], epoch=5)), 1.0, topics=["a"], request_version=c.request_version)
    assert c.time_to_next_update(1.0) > 1
    c.update(response(topic("a", [1], epoch=4)), 2.0, topics=["a"], request_version=c.request_version)
    assert c.leader_for("a", 0) == 0                    # epoch 4 < 5: the old answer stands
    assert c.time_to_next_update(2.0) == pytest.approx(0.1)
    # A recreated topic (new topic id) starts over at a low epoch: accepted.
    c.update(response(topic("a", [1], epoch=0, tid=uuid.UUID(int=8))), 3.0, topics=["a"],
             request_version=c.request_version)
    assert c.leader_for("a", 0) == 1


def test_refresh_timing_backoff_max_age_and_request_versions():
    c = ClusterMetadata("b:1", metadata_max_age_ms=1000, retry_backoff_ms=100)
    assert c.time_to_next_update(0.0) == 0              # bootstrap is due at once
    c.attempt_started(0.0)
    c.failed_update(0.0, NetworkError("x"))
    assert c.time_to_next_update(0.05) == pytest.approx(0.05)
    v = c.request_version
    c.request_update()                                  # while the request (at v) is in flight
    c.update(response(), 0.2, topics=[], request_version=v)
    assert c.time_to_next_update(0.2) == pytest.approx(0.1)    # still due: asked after it was built
    c.update(response(), 0.3, topics=[], request_version=c.request_version)
    assert c.time_to_next_update(0.3) == pytest.approx(1.0)    # now only by age
    assert c.handle_error_code(6) and 74 in METADATA_ERRORS and not c.handle_error_code(0)
    assert c.time_to_next_update(0.35) == pytest.approx(0.05)


def test_least_loaded_prefers_ready_then_connecting_then_connectable():
    rng = random.Random(1)
    loads = {1: (3, 5.0), 2: (2, 0), 3: (1, 0), 4: (0, 3), 5: (0, 1)}
    assert least_loaded(list(loads), loads.__getitem__, rng) == 5
    del loads[4], loads[5]
    assert least_loaded(list(loads), loads.__getitem__, rng) == 3
    del loads[3]
    assert least_loaded(list(loads), loads.__getitem__, rng) == 2
    del loads[2]
    assert least_loaded(list(loads), loads.__getitem__, rng) == 1
    assert least_loaded([], loads.__getitem__, rng) is None


def test_reconnect_backoff_doubles_with_jitter_up_to_the_max():
    with selectors.DefaultSelector() as sel:
        conn = BrokerConnection(0, "127.0.0.1", 1, sel, reconnect_backoff_ms=50,
                                reconnect_backoff_max_ms=1000, rng=random.Random(3))
        waits = []
        for i in range(8):
            conn.close(NetworkError("refused"), 100.0)
            waits.append(conn.next_connect_at - 100.0)
        for i, w in enumerate(waits):
            base = min(0.05 * 2 ** i, 1.0)
            assert 0.8 * base <= w <= 1.2 * base, (i, w)
        assert conn.failures == 8
