"""Transactions through the client API, on both transports (``pylog.open`` and
``pylog.connect`` to ``pylog serve``): the same calls, the same outcome.

- records of committed transactions are seen by read_committed consumers (``poll`` and
  ``poll_batches``), those of aborted ones only by read_uncommitted consumers;
- a read_committed consumer stops at the last stable offset while a transaction is
  open (its end offsets are the LSO) and reads the records once it commits;
- records still waiting in the producer when the transaction aborts fail with
  TransactionAbortedError and are never appended;
- ``send_offsets_to_transaction``: the group's offsets move with the commit only;
- a producer fenced by a newer one with the same transactional id ends in FATAL_ERROR
  and none of its records becomes visible;
- the state machine refuses calls out of order, as Kafka's producer does;
- over the network (where the sender does not wait for AddPartitionsToTxn): a partition
  refused retriably (CONCURRENT_TRANSACTIONS) is added again and the transaction commits;
  one refused for good makes the transaction abortable, and the next one commits; a
  partition joins the transaction as soon as its first record is queued.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from pylog.broker.core import TopicPartition
from pylog.errors import (IllegalStateError, InvalidConfigError, InvalidProducerEpochError, ProducerFencedError,
                          PylogError, TransactionAbortedError)
from tests.client.helpers import offsets_follow_the_transaction, read_to_end
from tests.server.util import wait_for

WAIT_S = 30


def test_read_committed_sees_committed_transactions_only(client):
    client.create_topic("t", 2)
    p = client.producer(transactional_id="tx", linger_ms=0)
    committed: dict[int, list[bytes]] = {0: [], 1: []}
    everything: dict[int, list[bytes]] = {0: [], 1: []}
    try:
        p.init_transactions()
        for n, outcome in enumerate(["commit", "abort", "commit", "abort", "abort", "commit"]):
            p.begin_transaction()
            for i in range(5):
                value = b"%s-%d-%d" % (outcome.encode(), n, i)
                p.send("t", value, partition=(n + i) % 2)
                everything[(n + i) % 2].append(value)
                if outcome == "commit":
                    committed[(n + i) % 2].append(value)
            if outcome == "commit":
                p.commit_transaction()
            else:
                p.flush()                 # appended before the abort: the marker hides them
                p.abort_transaction()
    finally:
        p.close()
    assert read_to_end(client, "t", 2, "read_committed") == committed
    assert read_to_end(client, "t", 2, "read_uncommitted") == everything


def test_poll_batches_of_a_read_committed_consumer_skip_aborted_batches(client):
    client.create_topic("t", 1)
    p = client.producer(transactional_id="tx", linger_ms=0, compression_type="gzip")
    try:
        p.init_transactions()
        for n in range(6):
            p.begin_transaction()
            p.send_batch("t", [b"%d-%d" % (n, i) for i in range(50)], partition=0).result(WAIT_S)
            if n % 2:
                p.abort_transaction()
            else:
                p.commit_transaction()
    finally:
        p.close()
    c = client.consumer(isolation_level="read_committed", auto_offset_reset="earliest")
    try:
        tp = TopicPartition("t", 0)
        c.assign([tp])
        end = c.end_offsets([tp])[tp]
        values: list[bytes] = []
        deadline = time.monotonic() + WAIT_S
        while c.position(tp) < end:
            assert time.monotonic() < deadline
            for batch in c.poll_batches(0.5):
                cols = batch.columns()
                values += cols.values()
    finally:
        c.close()
    assert values == [b"%d-%d" % (n, i) for n in (0, 2, 4) for i in range(50)]


def test_read_committed_stops_at_an_open_transaction(client):
    client.create_topic("t", 1)
    tp = TopicPartition("t", 0)
    with client.producer() as plain:
        plain.send("t", b"before", partition=0).result(WAIT_S)
    p = client.producer(transactional_id="tx", linger_ms=0)
    rc = client.consumer(isolation_level="read_committed", auto_offset_reset="earliest")
    ru = client.consumer(isolation_level="read_uncommitted", auto_offset_reset="earliest")
    try:
        p.init_transactions()
        p.begin_transaction()
        for i in range(3):
            p.send("t", b"open-%d" % i, partition=0)
        p.flush()
        rc.assign([tp])
        ru.assign([tp])
        assert rc.end_offsets([tp])[tp] == 1          # the last stable offset
        assert ru.end_offsets([tp])[tp] == 4          # the high watermark
        assert [r.value for r in rc.poll(0.5)] == [b"before"]
        assert rc.position(tp) == 1
        p.commit_transaction()
        got: list[bytes] = []
        deadline = time.monotonic() + WAIT_S
        while len(got) < 3:
            assert time.monotonic() < deadline
            got += [r.value for r in rc.poll(0.5)]
        assert got == [b"open-0", b"open-1", b"open-2"]
    finally:
        rc.close()
        ru.close()
        p.close()


def test_records_not_sent_when_the_transaction_aborts_fail_and_are_never_appended(client):
    client.create_topic("t", 1)
    p = client.producer(transactional_id="tx", linger_ms=60_000, batch_size=1 << 20)
    try:
        p.init_transactions()
        p.begin_transaction()
        handles = [p.send("t", b"%d" % i, partition=0) for i in range(10)]   # lingering, not sent
        p.abort_transaction()
        for h in handles:
            with pytest.raises(TransactionAbortedError):
                h.result(WAIT_S)
        # The producer goes on with the next transaction.
        p.begin_transaction()
        p.send("t", b"next", partition=0)
        p.commit_transaction()
    finally:
        p.close()
    assert read_to_end(client, "t", 1, "read_uncommitted") == {0: [b"next"]}


def test_send_offsets_to_transaction_commits_the_groups_offsets_with_the_transaction(client):
    offsets_follow_the_transaction(client, "in", "out", "g", "eos")


def test_a_fenced_producer_ends_fatally_and_none_of_its_records_is_visible(client):
    client.create_topic("t", 1)
    zombie = client.producer(transactional_id="tx", linger_ms=0)
    successor = client.producer(transactional_id="tx", linger_ms=0)
    try:
        zombie.init_transactions()
        zombie.begin_transaction()
        zombie.send("t", b"zombie-1", partition=0).result(WAIT_S)
        successor.init_transactions()          # fences the zombie, aborts its open transaction
        successor.begin_transaction()
        successor.send("t", b"successor", partition=0)
        successor.commit_transaction()
        zombie.send("t", b"zombie-2", partition=0)
        with pytest.raises((InvalidProducerEpochError, ProducerFencedError)):
            zombie.commit_transaction()
        if zombie.transaction_state != "FATAL_ERROR":
            with pytest.raises(ProducerFencedError):    # the abort meets the coordinator
                zombie.abort_transaction()
        assert zombie.transaction_state == "FATAL_ERROR"
        with pytest.raises(ProducerFencedError):
            zombie.begin_transaction()
    finally:
        zombie.close()
        successor.close()
    assert read_to_end(client, "t", 1, "read_committed") == {0: [b"successor"]}


def test_the_transaction_calls_are_refused_out_of_order(client):
    client.create_topic("t", 1)
    with pytest.raises(InvalidConfigError):
        client.producer(transactional_id="tx", enable_idempotence=False)
    plain = client.producer()
    p = client.producer(transactional_id="tx")
    try:
        with pytest.raises(IllegalStateError):
            plain.begin_transaction()                    # not transactional
        with pytest.raises(IllegalStateError):
            p.begin_transaction()                        # before init_transactions
        with pytest.raises(IllegalStateError):
            p.send("t", b"x")
        p.init_transactions()
        with pytest.raises(IllegalStateError):
            p.init_transactions()
        with pytest.raises(IllegalStateError):
            p.send("t", b"x")                            # outside a transaction
        with pytest.raises(IllegalStateError):
            p.send_batch("t", np.zeros((2, 4), dtype=np.uint8))
        with pytest.raises(IllegalStateError):
            p.commit_transaction()
        p.begin_transaction()
        with pytest.raises(IllegalStateError):
            p.begin_transaction()
        p.commit_transaction()                           # nothing added: nothing to end
        assert p.transaction_state == "READY"
    finally:
        p.close()
        plain.close()


def test_asyncio_producer_runs_transactions(client):
    client.create_topic("t", 1)

    async def run() -> None:
        async with client.aio_producer(transactional_id="aio-tx", linger_ms=0) as p:
            await p.init_transactions()
            await p.begin_transaction()
            committed = [p.send("t", b"c%d" % i, partition=0) for i in range(3)]
            await p.commit_transaction()
            assert [(await h).offset for h in committed] == [0, 1, 2]
            await p.begin_transaction()
            await p.send_and_wait("t", b"aborted", partition=0)
            await p.abort_transaction()

    asyncio.run(run())
    assert read_to_end(client, "t", 1, "read_committed") == {0: [b"c0", b"c1", b"c2"]}
    assert read_to_end(client, "t", 1, "read_uncommitted") == {0: [b"c0", b"c1", b"c2", b"aborted"]}


def _rewrite_add_answers(client, rewrite):
    """Over the network the producer sends AddPartitionsToTxn without waiting; make the
    client's transport pass each answer through ``rewrite(call_number, codes)`` (on the
    network I/O thread, where the real answers come)."""
    transport = client._transport
    real = transport.add_partitions_to_txn_async
    calls = []

    def add_async(transactional_id, producer_id, producer_epoch, partitions, on_done):
        calls.append(list(partitions))
        n = len(calls)
        real(transactional_id, producer_id, producer_epoch, partitions, lambda codes: on_done(rewrite(n, codes)))

    transport.add_partitions_to_txn_async = add_async
    return calls


def test_a_partition_the_coordinator_refuses_retriably_is_added_again(client):
    # Kafka's coordinator answers CONCURRENT_TRANSACTIONS to the first AddPartitionsToTxn
    # while the previous transaction's markers are being written: the sender tries again
    # after a short backoff, and the transaction commits as a whole.
    if not hasattr(client._transport, "add_partitions_to_txn_async"):
        pytest.skip("the embedded transport adds partitions in the sender's call")
    client.create_topic("t", 2)
    calls = _rewrite_add_answers(client, lambda n, codes: {tp: 51 for tp in codes} if n % 2 else codes)
    p = client.producer(transactional_id="tx", linger_ms=0)
    try:
        p.init_transactions()
        for n in range(3):
            p.begin_transaction()
            handles = [p.send("t", b"%d-%d" % (n, i), partition=i % 2) for i in range(4)]
            p.commit_transaction()
            assert all(h.result(WAIT_S).offset >= 0 for h in handles)
    finally:
        p.close()
    assert len(calls) >= 6          # every transaction asked at least twice
    assert read_to_end(client, "t", 2, "read_committed") == {
        0: [b"0-0", b"0-2", b"1-0", b"1-2", b"2-0", b"2-2"], 1: [b"0-1", b"0-3", b"1-1", b"1-3", b"2-1", b"2-3"]}


def test_a_partition_the_coordinator_refuses_for_good_makes_the_transaction_abortable(client):
    if not hasattr(client._transport, "add_partitions_to_txn_async"):
        pytest.skip("the embedded transport adds partitions in the sender's call")
    client.create_topic("t", 1)
    _rewrite_add_answers(client, lambda n, codes: {tp: -1 for tp in codes} if n == 1 else codes)
    p = client.producer(transactional_id="tx", linger_ms=0)
    try:
        p.init_transactions()
        p.begin_transaction()
        refused = p.send("t", b"refused", partition=0)
        with pytest.raises(PylogError):
            p.commit_transaction()
        assert p.transaction_state == "ABORTABLE_ERROR"
        with pytest.raises(PylogError):
            refused.result(WAIT_S)
        p.abort_transaction()
        p.begin_transaction()
        p.send("t", b"committed", partition=0)
        p.commit_transaction()
    finally:
        p.close()
    assert read_to_end(client, "t", 1, "read_committed") == {0: [b"committed"]}


def test_a_partition_joins_the_transaction_when_its_first_record_is_queued(client):
    # As Kafka's producer: AddPartitionsToTxn goes when the record is queued, not when its
    # batch is sent (here it lingers for a minute), so the coordinator already lists the
    # partition in the ongoing transaction.
    if not hasattr(client._transport, "add_partitions_to_txn_async"):
        pytest.skip("the embedded transport adds partitions when the sender drains them")
    client.create_topic("t", 2)
    p = client.producer(transactional_id="tx", linger_ms=60_000)
    try:
        p.init_transactions()
        p.begin_transaction()
        handle = p.send("t", b"lingering", partition=1)

        def listed():
            [d] = client.broker.describe_transactions(["tx"])
            return d.state == "Ongoing" and d.topics == {"t": [1]}

        wait_for(listed, "the partition in the coordinator's ongoing transaction", timeout=WAIT_S)
        assert not handle.done()
        p.commit_transaction()
        assert handle.result(WAIT_S).offset == 0
    finally:
        p.close()
    assert read_to_end(client, "t", 2, "read_committed") == {0: [], 1: [b"lingering"]}
