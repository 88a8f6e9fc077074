"""pylog.cluster.coordinators without a cluster: a real broker core, and leadership of
its internal partitions changed by hand, as LeaderAndIsr and StopReplica change it.

The groups and transactional ids a broker finds in its logs at open are not served
until it leads their partition; then they are loaded from the log; when it stops
leading they are dropped; leading again in a new leader epoch reloads them.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pylog.broker.core import Broker
from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC, partition_for_group
from pylog.broker.txn_coordinator import TransactionCoordinatorConfig
from pylog.broker.txn_log import TRANSACTION_STATE_TOPIC, TransactionState, partition_for_transactional_id
from pylog.cluster.channel import MetadataCache
from pylog.cluster.coordinators import CoordinatorPartitions, no_txn_verification
from pylog.errors import NotCoordinatorError

PARTITIONS = 4


class Node:
    """What CoordinatorPartitions reads of a ClusterNode, for a broker with no peers."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.broker_id = 1
        self.metadata = MetadataCache()
        self.replica_manager = SimpleNamespace(replicas={})
        self._stopping = False


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
        assert broker.txn_verifier is no_txn_verification
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
