"""The streams app of the exactly-once kill tests (tests/streams/test_eos_kills.py), run
as a subprocess that the test SIGKILLs at random moments.

A stateful topology under ``processing.guarantee=exactly_once_v2`` against ``pylog
serve`` (``pylog.connect``)::

    input ─┬─ map_values(upper) ──────────────────────────────────────► <copy>
           └─ group_by(value) ─ repartition ─ count("counts") ─ "w=n" ► <counts>

so one transaction holds the copy, the repartition records, the store's changelog
records, the counts and the consumed offsets of both sub-topologies.  The store is
persistent (RocksDB), so a killed run leaves local state that a restart must not
trust.  The app is a static member of its group (``group.instance.id``) and keeps its
process id (hence its transactional id) in ``--state-dir`` across restarts.

Protocol with the test, as tests/server/eos_processor.py's (one flushed line per step,
and with ``--lockstep`` a wait for the test's go-ahead after each): ``ready`` (the
transactional producer initialised), then per commit ``produced`` (the transaction's
records acknowledged, offsets not sent), ``offsets`` (sent, not committed),
``committed``; ``done`` once the group's committed offsets of the input and
repartition topics are at their ends (the whole input processed and committed), before
exiting 0.  The lines come from wrapping the app's producer, not from hooks in the
runtime.  ``EOS_APP_LOG=INFO`` in the environment logs the app's steps on stderr.

With ``--guarantee at_least_once`` (tests/streams/test_alos_kills.py) the same app runs
without transactions and the same lines mean: ``ready`` the producer made, per commit
``produced`` (the producer flushed: every record sent is acknowledged), ``offsets`` (the
offsets about to be committed), ``committed``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "server"))
import eos_processor  # noqa: E402  (say(): the lock-step protocol)
from eos_processor import say  # noqa: E402

APP_ID = "eos-streams"


def build(a: argparse.Namespace):
    from pylog.streams import Materialized, Serdes, StreamsBuilder

    s = Serdes.string()
    b = StreamsBuilder({"default.key.serde": s, "default.value.serde": s})
    lines = b.stream(a.input)
    lines.map_values(str.upper).to(a.copy)
    (lines.group_by(lambda k, v: v).count(materialized=Materialized("counts", store_type="persistent"))
     .to_stream().map(lambda w, n: (w, f"{w}={n}")).to(a.counts))
    return b.build(APP_ID, {"processing.guarantee": a.guarantee, "state.dir": a.state_dir,
                            "commit.interval.ms": a.commit_interval_ms, "max.poll.records": a.max_records,
                            "group.instance.id": "eos-streams-1", "session.timeout.ms": 6000,
                            "heartbeat.interval.ms": 300})


def wrap_producer(producer):
    """Say the protocol's lines around the app's transaction calls."""
    init, send_offsets, commit = (producer.init_transactions, producer.send_offsets_to_transaction,
                                  producer.commit_transaction)

    def init_transactions():
        init()
        say("ready")

    def send_offsets_to_transaction(offsets, group_metadata):
        producer.flush()
        say("produced")
        send_offsets(offsets, group_metadata)
        say("offsets")

    def commit_transaction(timeout=None):
        commit(timeout)
        say("committed")

    producer.init_transactions = init_transactions
    producer.send_offsets_to_transaction = send_offsets_to_transaction
    producer.commit_transaction = commit_transaction
    return producer


def wrap_at_least_once(client) -> None:
    """At-least-once: the protocol's lines around the stream thread's producer flush and
    its group consumer's commit."""
    make_producer, make_consumer = client.producer, client.consumer

    def producer(**kw):
        p = make_producer(**kw)
        flush = p.flush

        def flushed(*args, **kwargs):
            flush(*args, **kwargs)
            say("produced")

        p.flush = flushed
        say("ready")
        return p

    def consumer(**kw):
        c = make_consumer(**kw)
        if kw.get("partition_assignment_strategy") is None:
            return c        # not the stream thread's (restore, completion watcher)
        commit = c.commit

        def committed(*args, **kwargs):
            say("offsets")
            commit(*args, **kwargs)
            say("committed")

        c.commit = committed
        return c

    client.producer, client.consumer = producer, consumer


def all_committed(client, a) -> bool:
    """The group's committed offsets of the input and repartition topics are at their
    (read_committed) ends.  Nothing is asked about the repartition topic before the app
    has created it (a metadata request would create it, with one partition)."""
    repartition = f"{APP_ID}-{a.repartition}"
    if repartition not in client.list_topics():
        return False
    tps = [(t, p) for t in (a.input, repartition) for p in range(client.num_partitions(t))]
    c = client.consumer(group_id=APP_ID, isolation_level="read_committed", enable_auto_commit=False)
    try:
        ends = c.end_offsets(tps)
        committed = c.committed(tps)
    finally:
        c.close(autocommit=False)
    return all(committed[tp] is not None and committed[tp].offset >= end for tp, end in ends.items())


def main(argv: list[str] | None = None) -> None:
    import pylog

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--copy", required=True)
    ap.add_argument("--counts", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--max-records", type=int, default=50)
    ap.add_argument("--commit-interval-ms", type=int, default=100)
    ap.add_argument("--lockstep", action="store_true")
    ap.add_argument("--guarantee", default="exactly_once_v2", choices=["exactly_once_v2", "at_least_once"])
    a = ap.parse_args(argv)
    logging.basicConfig(level=os.environ.get("EOS_APP_LOG", "WARNING"), format="%(asctime)s %(name)s %(message)s")
    eos_processor._lockstep = a.lockstep
    client = pylog.connect(a.bootstrap)
    if a.guarantee == "at_least_once":
        wrap_at_least_once(client)
    else:
        make_producer = client.producer
        client.producer = lambda **kw: wrap_producer(make_producer(**kw)) if kw.get("transactional_id") \
            else make_producer(**kw)
    app = build(a)
    a.repartition = next(iter(app.topology.repartition_topics))

    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(0.2):      # a polling interval, not a synchronisation
            if all_committed(client, a):
                app.stop()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    app.run(client)
    finished.set()
    watcher.join()
    say("done")
    client.close()


if __name__ == "__main__":
    main()
