"""SIGKILL of ``pylog serve`` while its transaction coordinator appends a state record to
``__transaction_state`` (``PYLOG_TEST_TXN_CRASH``, see pylog.broker.txn_coordinator):

- ``torn-prepare``: the first half of the PrepareCommit / PrepareAbort batch is in the
  segment when the process dies.  Recovery cuts the torn batch, the transaction is
  Ongoing again, and the coordinator aborts it at its timeout: nothing of it is visible,
  whether the client was committing or aborting.
- ``after-prepare`` while aborting: PrepareAbort is durable, no marker written; the
  restart finishes the abort.
- ``torn-complete``: the markers are written and half of CompleteCommit is; the restart
  finds PrepareCommit and writes the markers again: the transaction is visible once.

Real clients throughout: librdkafka's transactional producer and read_committed consumer.
Each case also checks that a transaction committed before the crash is read exactly once
and that the partitions' last stable offset moves past the crashed transaction (a
transaction committed after the restart is readable with read_committed).
"""

from __future__ import annotations

import glob
import os

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaException, TopicPartition  # noqa: E402

from pylog.broker.txn_log import TRANSACTION_STATE_TOPIC, partition_for_transactional_id  # noqa: E402
from server.test_transactions_clients import (COMMON, TXN_OVERRIDES, commit_sentinel, create_topic,  # noqa: E402
                                              lso_passes, txn_producer)
from server.util import unique, wait_for  # noqa: E402

#: (crash point, the client's call that dies with the server, the outcome after the restart)
#: The default run keeps the torn PrepareCommit; the others are ``long`` (the abort cases
#: take the same paths but for the marker).
CASES = [
    ("torn-prepare", "commit", "aborted"),
    pytest.param("torn-prepare", "abort", "aborted", marks=pytest.mark.long),
    pytest.param("after-prepare", "abort", "aborted", marks=pytest.mark.long),
    pytest.param("torn-complete", "commit", "committed", marks=pytest.mark.long),
]


def _txn_state_segment(data_dir: str, tid: str) -> str:
    n = int(TXN_OVERRIDES["transaction.state.log.num.partitions"])
    d = os.path.join(data_dir, f"{TRANSACTION_STATE_TOPIC}-{partition_for_transactional_id(tid, n)}")
    return sorted(glob.glob(os.path.join(d, "*.log")))[-1]


@pytest.mark.parametrize("point,call,outcome", CASES,
                         ids=["torn-prepare-commit", "torn-prepare-abort", "after-prepare-abort", "torn-complete-commit"])
def test_sigkill_during_the_coordinators_state_append(serve, monkeypatch, point, call, outcome):
    sp = serve(TXN_OVERRIDES)
    bs = sp.bootstrap
    topic = unique("tornt")
    create_topic(bs, topic, 2)
    tps = [(topic, 0), (topic, 1)]
    group = unique("torng")
    tid = unique("torntx")
    p = txn_producer(bs, tid, **{"message.timeout.ms": 2000, "transaction.timeout.ms": 2000,
                                    "socket.timeout.ms": 2000})
    p.init_transactions(10)
    consumer = Consumer({"bootstrap.servers": bs, "group.id": group, **COMMON})
    # A transaction committed before the crash (its state records whole) stays committed,
    # once.  Then the server restarts armed with the crash point.
    p.begin_transaction()
    p.produce(topic, b"before0", partition=0)
    p.produce(topic, b"before1", partition=1)
    p.commit_transaction(10)
    assert sp.stop() == 0
    monkeypatch.setenv("PYLOG_TEST_TXN_CRASH", point)
    sp.start()
    monkeypatch.delenv("PYLOG_TEST_TXN_CRASH")

    p.begin_transaction()
    p.produce(topic, b"r0", partition=0)
    p.produce(topic, b"r1", partition=1)
    p.send_offsets_to_transaction([TopicPartition(topic, 0, 5)], consumer.consumer_group_metadata(), 10)
    p.flush(10)
    with pytest.raises(KafkaException):
        if call == "commit":
            p.commit_transaction(1)        # the server dies in the state append
        else:
            p.abort_transaction(1)
    wait_for(lambda: sp.proc is None or sp.proc.poll() is not None, "the server to die")
    # (Its last lines may still be on their way from the pipe.)
    wait_for(lambda: any(f"PYLOG_TEST_TXN_CRASH={point}" in line for line in sp.lines),
             "the server's log to say it died at the crash point")
    segment = _txn_state_segment(sp.data_dir, tid)
    sp.kill()

    sp.start()
    del p     # librdkafka's destroy of a producer that lost its transaction: with a server to talk to
    if point.startswith("torn"):
        # The torn batch was really on disk: recovery cut it from this segment.
        assert any("truncated" in line and os.path.basename(segment) in line and TRANSACTION_STATE_TOPIC in line
                   for line in sp.lines), "\n".join(sp.lines[-30:])
    commit_sentinel(sp.bootstrap, tps, b"after-restart")
    got = lso_passes(sp.bootstrap, tps, b"after-restart")
    before = [[b"before0"], [b"before1"]]
    if outcome == "committed":
        expected = {tps[0]: before[0] + [b"r0", b"after-restart"], tps[1]: before[1] + [b"r1", b"after-restart"]}
    else:
        expected = {tps[0]: before[0] + [b"after-restart"], tps[1]: before[1] + [b"after-restart"]}
    assert got == expected
    committed = consumer.committed([TopicPartition(topic, 0)], 10)[0].offset
    assert committed == (5 if outcome == "committed" else -1001)   # -1001: no committed offset
    consumer.close()
