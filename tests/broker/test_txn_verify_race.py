"""KIP-890 part 1 under the partition lock: a transactional batch whose transaction ends
between the coordinator's check (before the partition lock) and its append (under it)
is refused, so no transaction is left open with no marker to close it."""

from __future__ import annotations

from pylog.broker.core import READ_COMMITTED
from tests.broker.test_txn_coordinator import INVALID_TXN_STATE, Clock, Txn, open_broker


def test_a_transaction_that_ends_between_check_and_append_refuses_the_batch(tmp_path):
    broker = open_broker(tmp_path / "d", Clock())
    try:
        broker.create_topic("t", 1)
        p = Txn(broker, "race")
        assert p.add(("t", 0))[("t", 0)] == 0
        assert p.produce("t", 0, b"in the transaction").error_code == 0
        real = broker.txn_verifier
        calls = []

        def racing_verifier(topic, partition, pid, epoch, seq):
            """The first check (outside the lock) passes; before the batch reaches the
            lock the producer's EndTxn commits and writes its markers."""
            calls.append((topic, partition))
            if len(calls) == 1:
                answer = real(topic, partition, pid, epoch, seq)
                assert answer == 0
                assert p.end(True) == 0
                return answer
            return real(topic, partition, pid, epoch, seq)

        broker.txn_verifier = racing_verifier
        end_before = broker.log_offsets("t", 0)[1]
        res = p.produce("t", 0, b"after the commit")
        assert len(calls) == 2                      # checked again under the lock
        assert res.error_code == INVALID_TXN_STATE
        # Only the COMMIT marker was appended, nothing after it, and no transaction holds
        # the last stable offset back.
        assert broker.log_offsets("t", 0)[1] == end_before + 1
        assert broker.last_stable_offset("t", 0) == end_before + 1
        fetched = broker.fetch("t", 0, 0, isolation_level=READ_COMMITTED)
        fetched.raise_for_error()
    finally:
        broker.close()
