"""pylog's transactional producer and read_committed consumer against Apache Kafka itself.

The ``kafka_broker`` fixture (tests/kafka_ref/conftest.py) is a real single-node KRaft
Kafka on loopback: its transaction coordinator answers pylog's InitProducerId,
AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and EndTxn, its partitions hold the
markers.  Checked:

- committed and aborted transactions over two partitions: a pylog read_committed consumer
  and a confluent-kafka (librdkafka) read_committed consumer see exactly the committed
  records, in order per partition; a read_uncommitted consumer sees the aborted ones too;
  end offsets at read_committed are the last stable offsets;
- ``send_offsets_to_transaction``: a consumer group's offsets move with the transaction
  that commits, not with the one that aborts;
- a zombie: a second producer with the same transactional id fences the first; the first
  one's next record is refused (its commit raises INVALID_PRODUCER_EPOCH), its abort
  raises ProducerFencedError, and none of its records becomes visible.
"""

from __future__ import annotations

import time

import pytest

import pylog
from pylog.errors import InvalidProducerEpochError, ProducerFencedError
from tests.client.helpers import offsets_follow_the_transaction, read_to_end
from tests.kafka_ref.conftest import kafka_broker, kafka_jars  # noqa: F401
from tests.server.util import unique

confluent_kafka = pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.timeout(600)
WAIT_S = 30


@pytest.fixture
def client(kafka_broker):  # noqa: F811
    c = pylog.connect(kafka_broker.bootstrap)
    yield c
    c.close()


def _confluent_read_committed(bootstrap: str, topic: str, expected: int) -> dict[int, list[bytes]]:
    c = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": unique("rc-group"),
                                  "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                                  "enable.auto.commit": False, "enable.partition.eof": True})
    out: dict[int, list[bytes]] = {}
    try:
        # Both partitions assigned from the start, not subscribed: no join and rebalance
        # to wait for (Apache Kafka holds a new group's first JoinGroup for its
        # group.initial.rebalance.delay.ms), and what is checked here is what a
        # read_committed consumer is given, not group membership.
        c.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in (0, 1)])
        got, eof = 0, set()
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and (got < expected or len(eof) < 2):
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                raise AssertionError(m.error())
            out.setdefault(m.partition(), []).append(m.value())
            got += 1
    finally:
        c.close()
    return out


def test_committed_and_aborted_transactions_as_read_committed_consumers_see_them(client, kafka_broker):  # noqa: F811
    topic = unique("txn-ref")
    client.create_topic(topic, 2)
    p = client.producer(transactional_id=unique("txn-ref-id"), linger_ms=0)
    try:
        p.init_transactions()
        committed: dict[int, list[bytes]] = {0: [], 1: []}
        everything: dict[int, list[bytes]] = {0: [], 1: []}
        for n, outcome in enumerate(["commit", "abort", "commit", "abort", "commit"]):
            p.begin_transaction()
            for i in range(7):
                value = b"%s-%d-%d" % (outcome.encode(), n, i)
                part = i % 2
                p.send(topic, value, partition=part)
                everything[part].append(value)
                if outcome == "commit":
                    committed[part].append(value)
            if outcome == "commit":
                p.commit_transaction()
            else:
                p.flush()              # appended, then aborted: the markers must hide them
                p.abort_transaction()
        assert p.transaction_state == "READY"
    finally:
        p.close()
    assert read_to_end(client, topic, 2, "read_committed") == committed
    assert read_to_end(client, topic, 2, "read_uncommitted") == everything
    assert _confluent_read_committed(kafka_broker.bootstrap, topic, 21) == committed


def test_send_offsets_to_transaction_moves_the_groups_offsets_with_the_commit(client):
    offsets_follow_the_transaction(client, unique("txn-src"), unique("txn-sink"), unique("txn-group"),
                                   unique("txn-eos"))


def test_a_zombie_producer_is_fenced_and_none_of_its_records_is_visible(client):
    topic = unique("txn-zombie")
    client.create_topic(topic, 1)
    tid = unique("txn-zombie-id")
    zombie = client.producer(transactional_id=tid, linger_ms=0)
    successor = client.producer(transactional_id=tid, linger_ms=0)
    try:
        zombie.init_transactions()
        zombie.begin_transaction()
        zombie.send(topic, b"zombie-1", partition=0).result(WAIT_S)   # appended, in an open transaction
        successor.init_transactions()          # fences the zombie; its open transaction is aborted
        successor.begin_transaction()
        successor.send(topic, b"successor", partition=0)
        successor.commit_transaction()
        zombie.send(topic, b"zombie-2", partition=0)
        # The leader refuses the zombie's old epoch (INVALID_PRODUCER_EPOCH, abortable as
        # in Kafka's producer since KIP-588); its abort then meets the coordinator, which
        # knows the newer producer: fenced, for good.
        with pytest.raises(InvalidProducerEpochError):
            zombie.commit_transaction()
        with pytest.raises(ProducerFencedError):
            zombie.abort_transaction()
        assert zombie.transaction_state == "FATAL_ERROR"
        with pytest.raises(ProducerFencedError):
            zombie.begin_transaction()
    finally:
        zombie.close()
        successor.close()
    assert read_to_end(client, topic, 1, "read_committed") == {0: [b"successor"]}
