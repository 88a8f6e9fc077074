"""pylog.cluster.txn_verification without a cluster: the AddPartitionsToTxnManager's
batching per coordinator broker (one request out per broker, the rest gathered per
transactional id, epochs fencing), its answers in the form a produce gets them, and the
verification guard that a marker removes between the coordinator's answer and the
append (Kafka's VerificationGuard), and a TxnOffsetCommit's verification of the group's
offsets partition, answered in the group coordinator's forms."""

from __future__ import annotations

import concurrent.futures
from types import SimpleNamespace

import pytest

from pylog.broker.core import Broker
from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC
from pylog.cluster.txn_verification import (COORDINATOR_NOT_AVAILABLE, INVALID_PRODUCER_EPOCH, INVALID_TXN_STATE,
                                            NETWORK_EXCEPTION, NOT_ENOUGH_REPLICAS, AddPartitionsToTxnManager,
                                            TxnVerification, VerificationGuard, _first_transactional,
                                            txn_verifier)
from pylog.errors import NetworkError, UnsupportedVersionError
from pylog.records import RecordBatchBuilder


class FakeCoordinators:
    """``send`` of the manager: records each request, answered by the test."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, object, concurrent.futures.Future]] = []
        self.where = {"a": 1, "b": 1, "c": 2}

    def coordinator_of(self, tid: str) -> tuple[int, int]:
        return (15, -1) if tid not in self.where else (0, self.where[tid])

    def send(self, broker_id: int, body) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self.sent.append((broker_id, body, fut))
        return fut


def _asked(body) -> dict:
    return {t.transactional_id: (t.producer_id, t.producer_epoch, t.verify_only,
                                 sorted((x.name, p) for x in t.topics for p in x.partitions))
            for t in body.transactions}


def _answer(body, refused: dict | None = None):
    """A v4 response to ``body``: every partition NONE but those in ``refused``."""
    refused = refused or {}
    return SimpleNamespace(error_code=0, results_by_transaction=[SimpleNamespace(
        transactional_id=t.transactional_id, topic_results=[SimpleNamespace(name=x.name, results_by_partition=[
            SimpleNamespace(partition_index=p, partition_error_code=refused.get((t.transactional_id, x.name, p), 0))
            for p in x.partitions]) for x in t.topics]) for t in body.transactions])


def test_one_request_out_per_coordinator_the_rest_batched_per_transactional_id():
    c = FakeCoordinators()
    mgr = AddPartitionsToTxnManager(c.coordinator_of, c.send)
    got: dict[str, list] = {}

    def cb(name):
        return lambda refused: got.setdefault(name, []).append(refused)

    mgr.verify("a", 10, 0, [("t", 0)], cb("a1"))
    mgr.verify("c", 30, 0, [("t", 0)], cb("c1"))          # another coordinator: its own request
    assert [(b, _asked(body)) for b, body, _ in c.sent] == [
        (1, {"a": (10, 0, True, [("t", 0)])}), (2, {"c": (30, 0, True, [("t", 0)])})]
    # While broker 1's request is out: a's same epoch joins, b waits with it.
    mgr.verify("a", 10, 0, [("t", 1)], cb("a2"))
    mgr.verify("b", 20, 3, [("u", 0)], cb("b1"))
    mgr.verify("a", 10, 0, [("t", 2)], cb("a3"))
    assert len(c.sent) == 2
    first = c.sent[0]
    first[2].set_result(_answer(first[1]))
    assert got == {"a1": [{}]}
    assert len(c.sent) == 3 and c.sent[2][0] == 1
    assert _asked(c.sent[2][1]) == {"a": (10, 0, True, [("t", 1), ("t", 2)]), "b": (20, 3, True, [("u", 0)])}
    c.sent[2][2].set_result(_answer(c.sent[2][1], {("a", "t", 2): 48, ("b", "u", 0): 90}))
    # The refusals in the form a produce answers them: PRODUCER_FENCED is INVALID_PRODUCER_EPOCH.
    assert got["a2"] == got["a3"] == [{("t", 2): INVALID_TXN_STATE}]
    assert got["b1"] == [{("u", 0): INVALID_PRODUCER_EPOCH}]


def test_epochs_fence_and_failures_map_to_produce_errors():
    c = FakeCoordinators()
    mgr = AddPartitionsToTxnManager(c.coordinator_of, c.send)
    got: list = []
    mgr.verify("a", 10, 0, [("t", 0)], got.append)          # out
    mgr.verify("a", 10, 1, [("t", 1)], got.append)          # waits
    mgr.verify("a", 10, 2, [("t", 2)], got.append)          # a newer epoch fences the waiting one
    mgr.verify("a", 10, 1, [("t", 3)], got.append)          # an older one is fenced at once
    assert got == [{("t", 1): INVALID_PRODUCER_EPOCH}, {("t", 3): INVALID_PRODUCER_EPOCH}]
    got.clear()
    c.sent[0][2].set_exception(NetworkError("connection reset"))
    assert got == [{("t", 0): NETWORK_EXCEPTION}]
    assert _asked(c.sent[1][1]) == {"a": (10, 2, True, [("t", 2)])}
    c.sent[1][2].set_result(SimpleNamespace(error_code=51, results_by_transaction=[]))   # CONCURRENT_TRANSACTIONS
    assert got[1] == {("t", 2): NOT_ENOUGH_REPLICAS}
    # No coordinator: NOT_ENOUGH_REPLICAS (retriable) at once; a coordinator without v4:
    # not verified, the append goes on as in Kafka.
    mgr.verify("nobody", 1, 0, [("t", 0)], got.append)
    assert got[2] == {("t", 0): NOT_ENOUGH_REPLICAS}
    mgr.verify("c", 30, 0, [("t", 0)], got.append)
    c.sent[2][2].set_exception(UnsupportedVersionError("AddPartitionsToTxn v4"))
    assert got[3] == {}


def test_txn_offset_commit_verification_answers_in_the_group_coordinators_forms():
    import asyncio

    c = FakeCoordinators()
    loop = asyncio.new_event_loop()
    verification = TxnVerification(None, None, AddPartitionsToTxnManager(c.coordinator_of, c.send), lambda: loop)
    # (id, the coordinator's partition error, or the request's failure) -> the commit's error.
    cases = [("a", 0, 0), ("c", INVALID_TXN_STATE, INVALID_TXN_STATE),
             ("b", 51, COORDINATOR_NOT_AVAILABLE),                       # CONCURRENT_TRANSACTIONS
             ("a", NetworkError("gone"), COORDINATOR_NOT_AVAILABLE),
             ("nowhere", None, COORDINATOR_NOT_AVAILABLE)]               # no coordinator to ask
    try:
        for tid, answer, expected in cases:
            fut = verification.start_offset_commit(tid, 7, 1, 2)
            if answer is not None:
                _, body, sent = c.sent[-1]
                assert _asked(body) == {tid: (7, 1, True, [(CONSUMER_OFFSETS_TOPIC, 2)])}
                if isinstance(answer, Exception):
                    sent.set_exception(answer)
                else:
                    sent.set_result(_answer(body, {(tid, CONSUMER_OFFSETS_TOPIC, 2): answer}))
            assert loop.run_until_complete(fut) == expected, tid
    finally:
        loop.close()


def test_a_marker_between_the_answer_and_the_append_removes_the_guard(tmp_path):
    b = Broker(tmp_path / "d", background=False)
    try:
        b.create_topic("t", 2)
        b.txn_verifier = verify = txn_verifier(b)

        def batch(seq: int) -> bytes:
            rb = RecordBatchBuilder(producer_id=77, producer_epoch=0, base_sequence=seq, is_transactional=True)
            rb.append(None, None, b"v%d" % seq)
            return bytes(rb.build())

        assert _first_transactional(batch(0)) == (77, 0)
        assert b.produce("t", 0, batch(0)).error_code == INVALID_TXN_STATE      # never verified
        guards0 = b._partition("t", 0).producers.verification_guards
        guards0[77] = g = VerificationGuard(0)
        assert b.produce("t", 0, batch(0)).error_code == INVALID_TXN_STATE      # asked, not answered yet
        g.verified = True
        assert verify("t", 0, 77, 1) == INVALID_TXN_STATE                        # another epoch
        assert b.produce("t", 0, batch(0)).error_code == 0
        assert 77 not in guards0                        # the transaction is open here: no guard needed
        assert b.produce("t", 0, batch(1)).error_code == 0
        # Partition 1: verified, then the transaction ends (its marker) before the append.
        guards1 = b._partition("t", 1).producers.verification_guards
        guards1[77] = g1 = VerificationGuard(0)
        g1.verified = True
        b.write_txn_markers([(77, 0, 0, False, [("t", 0), ("t", 1)])])
        assert 77 not in guards1
        assert b.produce("t", 1, batch(0)).error_code == INVALID_TXN_STATE
    finally:
        b.close()


@pytest.mark.parametrize("records", [None, b"", b"\0" * 70])
def test_first_transactional_reads_only_a_v2_transactional_header(records):
    assert _first_transactional(records) is None
