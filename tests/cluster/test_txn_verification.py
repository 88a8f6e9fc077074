"""KIP-890 verification on a 3-broker cluster (pylog.cluster.txn_verification): the
leader of a partition asks the transaction coordinator of the producer's id, on another
broker, before it appends a batch that opens a transaction there.

- librdkafka's transactional producer whose coordinator is broker A writes to the
  partitions led by the other brokers: committed transactions are read once with
  read_committed, aborted ones never.
- A hand-made transactional Produce to broker B for a partition never added to the
  transaction is refused INVALID_TXN_STATE (nothing appended); once AddPartitionsToTxn
  added it at A, the same batch is appended, and the abort hides it.
- TxnOffsetCommit on a group coordinator G that is not the transaction coordinator A:
  G asks A (a hand-made commit before AddOffsetsToTxn is refused INVALID_TXN_STATE, one
  after it is taken), and librdkafka's ``send_offsets_to_transaction`` commits and aborts
  through it; OffsetFetch (require_stable) reads the committed offset, never the aborted.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from cluster.test_cluster_replication import admin, create_topic, wait_metadata
from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC, partition_for_group
from pylog.broker.txn_log import TRANSACTION_STATE_TOPIC, partition_for_transactional_id
from pylog.cluster.local import LocalCluster
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey
from pylog.records import RecordBatchBuilder
from server.util import wait_for
from tests.wire import WireClient

confluent_kafka = pytest.importorskip("confluent_kafka")

TOPIC = "kip890"
TXN_PARTITIONS = 3
INVALID_TXN_STATE = 48
COORDINATOR_RETRIABLE = (14, 15, 16)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, zookeeper_server):
    c = LocalCluster(tmp_path_factory.mktemp("kip890"), 3,
                     zookeeper=f"{zookeeper_server.hosts}/pylog-kip890-{os.getpid()}", overrides=[
                         "zookeeper.session.timeout.ms=6000", "default.replication.factor=3",
                         f"transaction.state.log.num.partitions={TXN_PARTITIONS}", "offsets.topic.num.partitions=1"])
    with c:
        a = admin(c.bootstrap)
        wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 3, "3 registered brokers in the metadata")
        create_topic(c.bootstrap, TOPIC, partitions=3, rf=3)
        wait_metadata(c.bootstrap, TOPIC, lambda md, t: all(len(p.isrs) == 3 and p.leader > 0
                                                            for p in t.partitions.values()), "a full ISR")
        yield c
        # Nothing to keep: SIGKILL, not three controlled shutdowns one after the other.
        for i in sorted(c.procs):
            c.stop_broker(i, signal.SIGKILL)


def txn_coordinator(client: WireClient, tid: str, key_type: int = 1) -> int:
    """FindCoordinator(TRANSACTION, or GROUP for ``key_type`` 0) until the coordinator is
    there (the first one creates the internal topic); its broker id, which is the leader
    of the key's partition."""
    topic, partition_for = ((TRANSACTION_STATE_TOPIC, partition_for_transactional_id) if key_type
                            else (CONSUMER_OFFSETS_TOPIC, partition_for_group))
    deadline = time.monotonic() + 60
    while True:
        resp = client.bootstrap.request(ApiKey.FIND_COORDINATOR, m.FindCoordinatorRequest(key=tid, key_type=key_type),
                                        version=3)
        if resp.error_code == 0:
            leaders = client.partitions(topic)
            if leaders.get(partition_for(tid, len(leaders))) == resp.node_id:
                return resp.node_id
        else:
            assert resp.error_code in COORDINATOR_RETRIABLE, resp
        assert time.monotonic() < deadline, f"no transaction coordinator for {tid}"
        time.sleep(0.2)     # polled: the controller elects the new topic's leaders


def read_committed(bootstrap: str) -> list[bytes]:
    k = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "kip890-reader",
                                  "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        k.assign([confluent_kafka.TopicPartition(TOPIC, p, 0) for p in range(3)])
        got: list[bytes] = []
        eof: set[int] = set()

        def step() -> bool:
            msg = k.poll(0.2)
            if msg is not None:
                if msg.error() is None:
                    got.append(msg.value())
                    eof.discard(msg.partition())
                elif msg.error().code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    eof.add(msg.partition())
            return eof == {0, 1, 2}

        wait_for(step, "read_committed at the end of every partition", timeout=60)
        return got
    finally:
        k.close()


def test_kip890_on_a_cluster(cluster):
    with WireClient(cluster.bootstrap) as client:
        # librdkafka, coordinator A, partitions led by the others too.
        tid = "kip890-rdkafka"
        p = confluent_kafka.Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": tid,
                                      "linger.ms": 5})
        p.init_transactions(60)
        a = txn_coordinator(client, tid)
        leaders = client.partitions(TOPIC)
        assert any(leader != a for leader in leaders.values())
        outcomes = ["commit", "abort", "commit"]
        for n, outcome in enumerate(outcomes):
            p.begin_transaction()
            for i in range(9):
                p.produce(TOPIC, b"%s-%d-%d" % (outcome.encode(), n, i), partition=i % 3)
            p.flush(60)
            if outcome == "commit":
                p.commit_transaction(60)
            else:
                p.abort_transaction(60)
        del p

        # A hand-made producer of its own id: a partition led by B != its coordinator A.
        tid = "kip890-raw"
        a = txn_coordinator(client, tid)
        leaders = client.partitions(TOPIC)
        partition, b = next((q, leader) for q, leader in sorted(leaders.items()) if leader != a)
        coordinator, leader = client.node(a), client.node(b)
        init = coordinator.request(ApiKey.INIT_PRODUCER_ID, m.InitProducerIdRequest(
            transactional_id=tid, transaction_timeout_ms=60000), version=4)
        assert init.error_code == 0
        pid, epoch = init.producer_id, init.producer_epoch
        batch = RecordBatchBuilder(producer_id=pid, producer_epoch=epoch, base_sequence=0, is_transactional=True)
        batch.append(None, None, b"raw-aborted")
        records = bytes(batch.build())

        def produce() -> int:
            T = m.ProduceRequest
            resp = leader.request(ApiKey.PRODUCE, T(transactional_id=tid, acks=-1, timeout_ms=30000, topic_data=[
                T.TopicProduceData(name=TOPIC, partition_data=[T.PartitionProduceData(index=partition,
                                                                                      records=records)])]),
                version=9)
            return resp.responses[0].partition_responses[0].error_code

        # Not in the transaction (no AddPartitionsToTxn): refused at B, nothing appended.
        assert produce() == INVALID_TXN_STATE
        R = m.AddPartitionsToTxnRequest
        add = coordinator.request(ApiKey.ADD_PARTITIONS_TO_TXN, R(
            v3_and_below_transactional_id=tid, v3_and_below_producer_id=pid, v3_and_below_producer_epoch=epoch,
            v3_and_below_topics=[R.AddPartitionsToTxnTopic(name=TOPIC, partitions=[partition])]), version=3)
        assert [r.partition_error_code for t in add.results_by_topic_v3_and_below
                for r in t.results_by_partition] == [0]
        assert produce() == 0               # B asked A: the partition is in the transaction now
        end = coordinator.request(ApiKey.END_TXN, m.EndTxnRequest(
            transactional_id=tid, producer_id=pid, producer_epoch=epoch, committed=False), version=3)
        assert end.error_code == 0

    got = read_committed(cluster.bootstrap)
    expected = [b"commit-%d-%d" % (n, i) for n in (0, 2) for i in range(9)]
    assert sorted(got) == sorted(expected)


def test_txn_offset_commit_asks_the_transaction_coordinator_on_another_broker(cluster):
    group = "kip890-group"
    with WireClient(cluster.bootstrap) as client:
        g = txn_coordinator(client, group, key_type=0)
        txn_coordinator(client, "kip890-probe")           # __transaction_state is there
        leaders = client.partitions(TRANSACTION_STATE_TOPIC)
        tids = [t for t in (f"kip890-offsets-{i}" for i in range(64))
                if leaders[partition_for_transactional_id(t, len(leaders))] != g]
        assert len(tids) >= 2, (g, leaders)
        raw, rdkafka = tids[0], tids[1]

        # By hand: TxnOffsetCommit to G, whose broker asks A.
        a = txn_coordinator(client, raw)
        assert a != g
        coordinator, group_coordinator = client.node(a), client.node(g)
        init = coordinator.request(ApiKey.INIT_PRODUCER_ID, m.InitProducerIdRequest(
            transactional_id=raw, transaction_timeout_ms=60000), version=4)
        assert init.error_code == 0
        pid, epoch = init.producer_id, init.producer_epoch

        def commit_offset(offset: int) -> int:
            T = m.TxnOffsetCommitRequest
            resp = group_coordinator.request(ApiKey.TXN_OFFSET_COMMIT, T(
                transactional_id=raw, group_id=group, producer_id=pid, producer_epoch=epoch, topics=[
                    T.TxnOffsetCommitRequestTopic(name=TOPIC, partitions=[T.TxnOffsetCommitRequestPartition(
                        partition_index=0, committed_offset=offset, committed_metadata=None)])]), version=3)
            return resp.topics[0].partitions[0].error_code

        assert commit_offset(3) == INVALID_TXN_STATE        # no AddOffsetsToTxn: A said no
        add = coordinator.request(ApiKey.ADD_OFFSETS_TO_TXN, m.AddOffsetsToTxnRequest(
            transactional_id=raw, producer_id=pid, producer_epoch=epoch, group_id=group), version=3)
        assert add.error_code == 0
        assert commit_offset(4) == 0
        end = coordinator.request(ApiKey.END_TXN, m.EndTxnRequest(
            transactional_id=raw, producer_id=pid, producer_epoch=epoch, committed=True), version=3)
        assert end.error_code == 0

    # librdkafka: offsets of one transaction committed, of the next aborted.
    consumer = confluent_kafka.Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group,
                                         "enable.auto.commit": False})
    p = confluent_kafka.Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": rdkafka})
    try:
        p.init_transactions(60)
        for offset, outcome in ((7, "commit"), (9, "abort")):
            p.begin_transaction()
            p.send_offsets_to_transaction([confluent_kafka.TopicPartition(TOPIC, 0, offset)],
                                          consumer.consumer_group_metadata(), 60)
            if outcome == "commit":
                p.commit_transaction(60)
            else:
                p.abort_transaction(60)
            committed = consumer.committed([confluent_kafka.TopicPartition(TOPIC, 0)], timeout=60)
            assert committed[0].offset == 7, (outcome, committed)
    finally:
        consumer.close()
        del p
