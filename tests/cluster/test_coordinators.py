"""pylog.cluster.coordinators without a cluster: a real broker core, and leadership of
its internal partitions changed by hand, as LeaderAndIsr and StopReplica change it.

The groups and transactional ids a broker finds in its logs at open are not served
until it leads their partition; then they are loaded from the log; when it stops
leading they are dropped; leading again in a new leader epoch reloads them.
"""

from __future__ import annotations

import concurrent.futures
from types import SimpleNamespace

import pytest

from pylog.broker.core import Broker
from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC, partition_for_group
from pylog.broker.txn_coordinator import TransactionCoordinatorConfig
from pylog.broker.txn_log import TRANSACTION_STATE_TOPIC, TransactionState, partition_for_transactional_id
from pylog.cluster.channel import MetadataCache
from pylog.cluster.coordinators import CoordinatorPartitions
from pylog.errors import NotCoordinatorError

PARTITIONS = 4


class Node:
    """What CoordinatorPartitions reads of a ClusterNode, for a broker with no peers."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.broker_id = 1
        self.metadata = MetadataCache()
        self.replica_manager = SimpleNamespace(replicas={})
        self.stopping = False
        self.coordination = None
        self.replica_thread = concurrent.futures.ThreadPoolExecutor(1)


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "d", background=False, offsets_topic_num_partitions=PARTITIONS,
               txn=TransactionCoordinatorConfig(transaction_state_log_num_partitions=PARTITIONS))
    b.create_topic("t", 1)
    yield b
    b.close()


def settle(cp: CoordinatorPartitions) -> None:
    """Wait for the loads and unloads queued so far (one loader thread, in order)."""
    cp._loader.submit(lambda: None).result(30)


def test_groups_are_served_only_while_their_partition_is_led(broker):
    assert broker.commit_offsets("g", {"t": {0: 7}}) == {"t": {0: 0}}
    part = partition_for_group("g", PARTITIONS)
    cp = CoordinatorPartitions(Node(broker))
    try:
        cp.start()
        assert broker.groups.fetch_offsets("g").error_code == NotCoordinatorError.error_code
        cp.leadership_changed(CONSUMER_OFFSETS_TOPIC, part, True, 0)
        settle(cp)
        assert broker.groups.fetch_offsets("g").topics["t"][0].offset == 7
        assert broker.commit_offsets("g", {"t": {0: 9}}) == {"t": {0: 0}}
        cp.leadership_changed(CONSUMER_OFFSETS_TOPIC, part, False)
        settle(cp)
        assert broker.groups.fetch_offsets("g").error_code == NotCoordinatorError.error_code
        cp.leadership_changed(CONSUMER_OFFSETS_TOPIC, part, True, 3)
        settle(cp)
        assert broker.groups.fetch_offsets("g").topics["t"][0].offset == 9     # read back from the log
        other = next(g for g in (f"o{i}" for i in range(100)) if partition_for_group(g, PARTITIONS) != part)
        assert broker.groups.fetch_offsets(other).error_code == NotCoordinatorError.error_code
    finally:
        cp.close()


def test_transactional_ids_are_served_only_while_their_partition_is_led(broker):
    res = broker.init_producer_id("tx", 60000)
    assert res.error_code == 0
    assert broker.add_partitions_to_txn("tx", res.producer_id, res.producer_epoch, [("t", 0)]) == {("t", 0): 0}
    part = partition_for_transactional_id("tx", broker.num_partitions(TRANSACTION_STATE_TOPIC))
    cp = CoordinatorPartitions(Node(broker))
    try:
        cp.start()
        assert broker.txn_verifier is not None     # KIP-890: pylog.cluster.txn_verification
        assert broker.transactions.metadata("tx") is None
        assert broker.init_producer_id("tx", 60000).error_code == NotCoordinatorError.error_code
        cp.leadership_changed(TRANSACTION_STATE_TOPIC, part, True, 0)
        settle(cp)
        assert broker.transactions.metadata("tx").state is TransactionState.ONGOING
        cp.leadership_changed(TRANSACTION_STATE_TOPIC, part, False)
        settle(cp)
        assert broker.transactions.metadata("tx") is None
        assert broker.end_txn("tx", res.producer_id, res.producer_epoch, True) == NotCoordinatorError.error_code
    finally:
        cp.close()


def test_brokers_configured_with_other_partition_counts_agree_on_the_coordinator(tmp_path):
    """Broker 1 (offsets.topic.num.partitions=3) creates ``__consumer_offsets`` in
    ZooKeeper; broker 2 (configured with 5) leads one of its partitions: it hashes
    groups over the topic's 3 partitions, as FindCoordinator does, never over its own 5;
    broker 3 (7) leads none and learns the count from UpdateMetadata (its transaction
    coordinator adds a group's partition to a transaction by it)."""
    from pylog.cluster.coordination import BrokerRegistration, Coordination, EndPoint
    from pylog.cluster.coordination_memory import MemoryZooKeeper
    from pylog.errors import NotCoordinatorError

    ensemble = MemoryZooKeeper()
    brokers, nodes, parts = [], [], []
    try:
        for broker_id, count in ((1, 3), (2, 5), (3, 7)):
            b = Broker(tmp_path / str(broker_id), background=False, offsets_topic_num_partitions=count)
            b.create_topic("t", 1)
            brokers.append(b)
            node = Node(b)
            node.broker_id = broker_id
            node.coordination = Coordination(ensemble.connect())
            node.coordination.register_broker(BrokerRegistration(broker_id, (EndPoint("PLAINTEXT", "127.0.0.1", 9),)))
            node.config = SimpleNamespace(offsets_topic_num_partitions=count, offsets_topic_replication_factor=1,
                                          offsets_topic_segment_bytes=1 << 20)
            nodes.append(node)
            parts.append(CoordinatorPartitions(node))
        for cp in parts:
            cp.start()
        parts[0].ensure_topic(CONSUMER_OFFSETS_TOPIC)
        assert len(nodes[1].coordination.get_topic_assignment(CONSUMER_OFFSETS_TOPIC).partitions) == 3
        # Groups whose partition differs between 3 and 5 partitions, both led by broker 2.
        led = 1
        here = next(g for g in (f"g{i}" for i in range(1000))
                    if partition_for_group(g, 3) == led and partition_for_group(g, 5) != led)
        elsewhere = next(g for g in (f"h{i}" for i in range(1000))
                         if partition_for_group(g, 3) != led and partition_for_group(g, 5) == led)
        b2 = brokers[1]
        # LeaderAndIsr first makes the local replicas as the assignment sizes them.
        b2.create_topic(CONSUMER_OFFSETS_TOPIC, 3, config={"cleanup.policy": "compact"})
        parts[1].leadership_changed(CONSUMER_OFFSETS_TOPIC, led, True, 0)
        settle(parts[1])
        assert b2.groups.num_partitions == 3 == parts[1].partition_count(CONSUMER_OFFSETS_TOPIC)
        assert b2.commit_offsets(here, {"t": {0: 5}}) == {"t": {0: 0}}
        assert b2.commit_offsets(elsewhere, {"t": {0: 5}}) == {"t": {0: NotCoordinatorError.error_code}}
        assert b2.log_offsets(CONSUMER_OFFSETS_TOPIC, led)[1] == 1      # the commit is in the group's partition
        # Broker 1 agrees on every group's partition (its own count happens to be the topic's).
        parts[0].leadership_changed(CONSUMER_OFFSETS_TOPIC, 0, True, 0)
        settle(parts[0])
        for g in (f"k{i}" for i in range(200)):
            assert partition_for_group(g, brokers[0].groups.num_partitions) == \
                partition_for_group(g, b2.groups.num_partitions)
        assert brokers[2].groups.num_partitions == 7
        parts[2].metadata_updated({CONSUMER_OFFSETS_TOPIC, "t"})
        nodes[2].replica_thread.submit(lambda: None).result(10)
        assert brokers[2].groups.num_partitions == 3
    finally:
        for cp in parts:
            cp.close()
        for node in nodes:
            node.coordination.close()
            node.replica_thread.shutdown()
        for b in brokers:
            b.close()
