"""The processor of the exactly-once tests (tests/server/test_exactly_once_kills.py), run
as a subprocess that the test SIGKILLs at random moments.

``process``: consume-transform-produce with offsets in the transaction.  A read_committed
consumer in a group (by default a static member: a restarted processor takes its predecessor's
place in the group at once, without waiting for its session to expire) and a
transactional producer; for every polled batch: begin, produce :func:`transform` of each
record to the same partition of the output topic, send the consumer's positions with its
group metadata, commit.  ``--client pylog`` uses pylog's remote client
(``pylog.connect``), ``--client confluent`` librdkafka's transactional API.

``open-txn``: opens a transaction holding a few records on one partition, all
acknowledged, prints ``open`` and waits to be killed.

Protocol with the test, one line on stdout per step, flushed: ``ready`` (transactions
initialised, consumer made), then per transaction ``produced <n>`` (the records are
acknowledged, the transaction still open), ``offsets`` (offsets sent, not committed) and
``committed <n>``; ``done`` (every assigned partition consumed to its end, all
committed) before exiting 0.  Any error ends the process with a traceback and exit 1.
With ``--lockstep`` it waits after each line until the test lets it go on, so a kill
lands exactly at that step.

Crash behaviour is the point: a kill at any line leaves an open transaction that the
next processor's ``init_transactions`` aborts (same transactional id).
"""

from __future__ import annotations

import argparse
import sys
import time

INPUT_PARTITIONS = 3


def transform(value: bytes) -> bytes:
    """What the processor makes of an input value (the test checks the same function)."""
    return b"out:" + value[::-1]


_lockstep = False


def say(line: str) -> None:
    """Print ``line``; in lock-step, wait for the test's go-ahead (a line on stdin: empty
    to go on, ``run`` to go on without waiting from then on)."""
    global _lockstep
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if _lockstep and line != "done":
        if sys.stdin.readline().strip() == "run":
            _lockstep = False


def run_pylog(a: argparse.Namespace) -> None:
    import pylog
    from pylog.broker.core import TopicPartition

    client = pylog.connect(a.bootstrap, request_timeout_ms=a.request_timeout_ms)
    producer = client.producer(transactional_id=a.transactional_id, linger_ms=1,
                               transaction_timeout_ms=a.transaction_timeout_ms)
    producer.init_transactions()
    consumer = client.consumer(group_id=a.group, group_instance_id=a.instance or None,
                               isolation_level="read_committed", auto_offset_reset="earliest",
                               enable_auto_commit=False, session_timeout_ms=a.session_timeout_ms,
                               heartbeat_interval_ms=300)
    consumer.subscribe([a.input])
    say("ready")
    tps = [TopicPartition(a.input, p) for p in range(INPUT_PARTITIONS)]
    while True:
        records = consumer.poll(timeout_ms=200, max_records=a.max_records)
        if not records:
            assigned = consumer.assignment()
            if len(assigned) == INPUT_PARTITIONS:
                ends = consumer.end_offsets(tps)
                if all(consumer.position(tp) >= ends[tp] for tp in tps):
                    committed = consumer.committed(set(tps))
                    if all(committed.get(tp) is not None and committed[tp].offset >= ends[tp] for tp in tps):
                        say("done")
                        break
            continue
        producer.begin_transaction()
        for r in records:
            producer.send(a.output, transform(r.value), key=r.key, partition=r.partition)
        producer.flush()
        say(f"produced {len(records)}")
        positions = {tp: consumer.position(tp) for tp in consumer.assignment()}
        producer.send_offsets_to_transaction(positions, consumer.group_metadata())
        say("offsets")
        producer.commit_transaction()
        say(f"committed {len(records)}")
    consumer.close(autocommit=False)
    producer.close()
    client.close()


def run_confluent(a: argparse.Namespace) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    common = {"bootstrap.servers": a.bootstrap, "socket.timeout.ms": 10000, "reconnect.backoff.max.ms": 500,
              "topic.metadata.refresh.interval.ms": 2000}
    producer = Producer({**common, "transactional.id": a.transactional_id, "linger.ms": 1,
                         "transaction.timeout.ms": a.transaction_timeout_ms})
    producer.init_transactions(30)
    static = {"group.instance.id": a.instance} if a.instance else {}
    consumer = Consumer({**common, **static, "group.id": a.group, "isolation.level": "read_committed",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": a.session_timeout_ms, "heartbeat.interval.ms": 300,
                         "fetch.wait.max.ms": 100})
    consumer.subscribe([a.input])
    say("ready")
    while True:
        msgs = consumer.consume(a.max_records, 0.2)
        for m in msgs:
            if m.error():
                raise RuntimeError(f"consumer error: {m.error()}")
        if not msgs:
            assigned = consumer.assignment()
            if len(assigned) == INPUT_PARTITIONS:
                positions = consumer.position(assigned)
                ends = [consumer.get_watermark_offsets(tp, 10)[1] for tp in positions]
                if all(tp.offset >= end for tp, end in zip(positions, ends)):
                    committed = consumer.committed(assigned, 10)
                    if all(c.offset >= end for c, end in zip(committed, ends)):
                        say("done")
                        break
            continue
        producer.begin_transaction()
        for m in msgs:
            producer.produce(a.output, transform(m.value()), key=m.key(), partition=m.partition())
        producer.flush(30)
        say(f"produced {len(msgs)}")
        # Positions of partitions not fetched from yet are invalid (negative): not sent.
        positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
        say("offsets")
        producer.commit_transaction(30)
        say(f"committed {len(msgs)}")
    consumer.close()


def open_txn(a: argparse.Namespace) -> None:
    import pylog

    client = pylog.connect(a.bootstrap)
    producer = client.producer(transactional_id=a.transactional_id, linger_ms=1,
                               transaction_timeout_ms=a.transaction_timeout_ms)
    producer.init_transactions()
    producer.begin_transaction()
    for i in range(a.max_records):
        producer.send(a.output, b"abandoned-%d" % i, partition=0)
    producer.flush()
    say("open")
    while True:                 # killed by the test
        time.sleep(60)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["process", "open-txn"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--client", choices=["pylog", "confluent"], default="pylog")
    ap.add_argument("--input")
    ap.add_argument("--output", required=True)
    ap.add_argument("--group")
    ap.add_argument("--instance", default="eos-processor",
                    help="group.instance.id (static membership); empty: a dynamic member")
    ap.add_argument("--session-timeout-ms", type=int, default=6000)
    ap.add_argument("--transactional-id", required=True)
    ap.add_argument("--max-records", type=int, default=20)
    ap.add_argument("--transaction-timeout-ms", type=int, default=10_000)
    ap.add_argument("--request-timeout-ms", type=int, default=30_000)
    ap.add_argument("--lockstep", action="store_true")
    a = ap.parse_args(argv)
    global _lockstep
    _lockstep = a.lockstep
    if a.mode == "open-txn":
        open_txn(a)
    elif a.client == "pylog":
        run_pylog(a)
    else:
        run_confluent(a)


if __name__ == "__main__":
    main()
