"""The transactional producer against the idempotent producer, same data, same server,
same run (issue #14's target: >= 0.8x the records/s).

Both are librdkafka (confluent-kafka) producers sending the same 100-byte records
(benches/_data.py) to a 4-partition topic on ``pylog serve`` (started per benchmark as
a subprocess, benches/bench_server.py's ServeProcess).  The transactional one commits
every 100 ms, so each second costs it about ten AddPartitionsToTxn/EndTxn round trips,
the coordinator's log appends and a marker per partition; the idempotent one only
produces.  ``TxnRatio`` alternates the two in rounds in one process and returns the
best transactional rate over the best idempotent rate.  ``PYLOG_BENCH_SMALL=1`` shrinks
the sizes for the smoke test.
"""

import os
import time

from benches._data import values
from benches.bench_server import ServeProcess, _create_topic

SMALL = os.environ.get("PYLOG_BENCH_SMALL", "") not in ("", "0")
RECORDS = 20_000 if SMALL else 400_000
PARTITIONS = 4
COMMIT_INTERVAL_S = 0.1
_VALUES = values(1000)


def _producer(bootstrap, transactional_id=None):
    from confluent_kafka import Producer

    cfg = {"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10000,
           "queue.buffering.max.messages": 200_000, "enable.idempotence": True}
    if transactional_id is not None:
        cfg["transactional.id"] = transactional_id
    return Producer(cfg)


def _send(p, topic, records, transactional):
    """Produce ``records`` records (committing every 100 ms when ``transactional``);
    returns records/s including the final flush or commit."""
    vals = _VALUES
    n = len(vals)
    produce = p.produce
    t0 = time.perf_counter()
    next_commit = t0 + COMMIT_INTERVAL_S
    if transactional:
        p.begin_transaction()
    for i in range(records):
        while True:
            try:
                produce(topic, vals[i % n], partition=i % PARTITIONS)
                break
            except BufferError:
                p.poll(0.001)
        if transactional and (i & 255) == 0 and time.perf_counter() >= next_commit:
            p.commit_transaction(30)
            p.begin_transaction()
            next_commit = time.perf_counter() + COMMIT_INTERVAL_S
    if transactional:
        p.commit_transaction(30)
    else:
        p.flush(30)
    return records / (time.perf_counter() - t0)


class _Bench:
    timeout = 600

    def setup(self):
        self.server = ServeProcess(**{"transaction.state.log.num.partitions": "4",
                                      "offsets.topic.num.partitions": "4"})
        self.topic = "bench-txn"
        _create_topic(self.server.bootstrap, self.topic, PARTITIONS)
        self.idem = _producer(self.server.bootstrap)
        self.txn = _producer(self.server.bootstrap, "bench-txn-producer")
        self.txn.init_transactions(30)
        _send(self.idem, self.topic, 1000, False)       # connections and metadata warm
        _send(self.txn, self.topic, 1000, True)

    def teardown(self):
        self.server.stop()


class Produce(_Bench):
    """Records/s of each producer over the same records."""

    def track_idempotent_records_per_s(self):
        return _send(self.idem, self.topic, RECORDS, False)

    track_idempotent_records_per_s.unit = "records/s"

    def track_transactional_records_per_s(self):
        return _send(self.txn, self.topic, RECORDS, True)

    track_transactional_records_per_s.unit = "records/s"


class TxnRatio(_Bench):
    """Transactional (commit every 100 ms) over idempotent records/s, best round of
    each, alternating.  Target >= 0.8."""

    ROUNDS = 1 if SMALL else 5

    def track_transactional_vs_idempotent(self):
        best_idem = best_txn = 0.0
        for _ in range(self.ROUNDS):
            best_idem = max(best_idem, _send(self.idem, self.topic, RECORDS, False))
            best_txn = max(best_txn, _send(self.txn, self.topic, RECORDS, True))
        return best_txn / best_idem

    track_transactional_vs_idempotent.unit = "x idempotent"


if __name__ == "__main__":
    b = TxnRatio()
    b.setup()
    try:
        print(f"transactional / idempotent records/s: {b.track_transactional_vs_idempotent():.3f}")
    finally:
        b.teardown()
