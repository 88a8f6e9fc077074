"""AddPartitionsToTxn v4+ over the wire (KIP-890 part 1): the batched form brokers send,
several transactions in one request, each either adding its partitions or, with
``verify_only``, only asking whether they are in its ongoing transaction.  (Producers
send v0-v3; those are exercised by every transactional client test.)  And
DescribeProducers shows a producer's open transaction by its first offset."""

from __future__ import annotations

from pylog.protocol import messages as m
from pylog.records import RecordBatchBuilder
from tests.server.util import unique
from tests.wire import BrokerConnection, WireClient

INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49


def _init(c: BrokerConnection, transactional_id: str) -> tuple[int, int]:
    r = c.request(22, m.InitProducerIdRequest(transactional_id=transactional_id, transaction_timeout_ms=60000),
                   version=4)
    assert r.error_code == 0
    return r.producer_id, r.producer_epoch


def _batched(c: BrokerConnection, version: int, txns: list[tuple[str, int, int, bool, str, list[int]]]) -> dict:
    """AddPartitionsToTxn v4+; returns transactional id -> {partition: code}."""
    R = m.AddPartitionsToTxnRequest
    body = R(transactions=[R.AddPartitionsToTxnTransaction(
        transactional_id=tid, producer_id=pid, producer_epoch=epoch, verify_only=verify,
        topics=[R.AddPartitionsToTxnTopic(name=topic, partitions=parts)])
        for tid, pid, epoch, verify, topic, parts in txns])
    resp = c.request(24, body, version=version)
    assert resp.error_code == 0
    return {r.transactional_id: {p.partition_index: p.partition_error_code
                                 for t in r.topic_results for p in t.results_by_partition}
            for r in resp.results_by_transaction}


def test_batched_add_partitions_adds_and_verifies_each_transaction(module_server):
    topic = unique("v4t")
    a, b = unique("v4-a"), unique("v4-b")
    with WireClient(module_server.bootstrap) as client:
        client.create_topic(topic, 2)
        c = client.leader(topic, 0)         # (one node: the coordinator of every id too)
        pid, epoch = _init(c, a)
        # One request: transaction a adds partition 0; an id nobody initialised is refused.
        assert _batched(c, 4, [(a, pid, epoch, False, topic, [0]), (b, 1234, 0, True, topic, [0])]) == {
            a: {0: 0}, b: {0: INVALID_PRODUCER_ID_MAPPING}}
        # verify_only adds nothing: partition 1 is not in the transaction, before and after.
        for _ in range(2):
            assert _batched(c, 5, [(a, pid, epoch, True, topic, [0, 1])]) == {a: {0: 0, 1: INVALID_TXN_STATE}}
        # A transactional batch to partition 0: DescribeProducers shows the open transaction
        # from its first offset, until the commit marker ends it.
        b = RecordBatchBuilder(producer_id=pid, producer_epoch=epoch, base_sequence=0, is_transactional=True)
        for v in (b"x", b"y"):
            b.append(None, None, v)
        T = m.ProduceRequest
        resp = c.request(0, T(transactional_id=a, acks=-1, timeout_ms=30000, topic_data=[T.TopicProduceData(
            name=topic, partition_data=[T.PartitionProduceData(index=0, records=bytes(b.build()))])]), version=9)
        assert resp.responses[0].partition_responses[0].error_code == 0
        assert _producers(c, topic, 0) == [(pid, epoch, 1, 0)]
        end = c.request(26, m.EndTxnRequest(transactional_id=a, producer_id=pid, producer_epoch=epoch,
                                            committed=True), version=3)
        assert end.error_code == 0
        assert _producers(c, topic, 0) == [(pid, epoch, 1, -1)]
        # The transaction ended: nothing is in an ongoing transaction any more.
        assert _batched(c, 5, [(a, pid, epoch, True, topic, [0])]) == {a: {0: INVALID_TXN_STATE}}


def _producers(c: BrokerConnection, topic: str, partition: int) -> list[tuple[int, int, int, int]]:
    """DescribeProducers: (producer id, epoch, last sequence, current transaction's first
    offset) of the partition's producers."""
    R = m.DescribeProducersRequest
    resp = c.request(61, R(topics=[R.TopicRequest(name=topic, partition_indexes=[partition])]), version=0)
    [p] = resp.topics[0].partitions
    assert p.error_code == 0
    return [(s.producer_id, s.producer_epoch, s.last_sequence, s.current_txn_start_offset) for s in p.active_producers]
