"""A batch the broker refuses as MESSAGE_TOO_LARGE is split, as Kafka's producer does
(Sender.completeBatch / RecordAccumulator.splitAndReenqueue), on both transports.

The producer learns a topic's ``max.message.bytes`` with its metadata; these tests lower
it on the broker after that, so that the producer builds batches the broker refuses:

- a batch holding one record over the new limit among many small ones: the small records
  are appended once each, in send order, and only the big one fails, with
  RecordTooLargeError (idempotent and not);
- with ``max_in_flight`` 5 and the refused batch followed by batches already out (refused
  behind it as out of order): the split batches take the refused one's sequence range and
  the later ones go again after them, so the partition keeps the send order;
- a limit lowered while a producer runs (``send`` and ``send_batch``): every record
  arrives, and ``send_batch``'s offsets follow the records into the split batches;
- a transactional producer: the records of a split batch are committed once; a record
  too large alone makes the transaction abortable, and the next one commits;
- split batches keep each record's key, value, headers and timestamp (nulls included);
- closing the producer while split batches are out fails every handle (none hangs).
"""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from pylog.client.producer import Producer
from pylog.errors import RecordTooLargeError, RequestTimedOutError
from tests.client.helpers import read_to_end, records_of

LIMIT = 3000


def lower_limit(client, topic, limit=LIMIT):
    client.incremental_alter_configs(topic, [("max.message.bytes", "set", str(limit))])


def values_of(client, topic, partition=0):
    return [r.value for r in records_of(client, topic)[partition]]


@pytest.mark.parametrize("idempotent, compression, retries",
                         [(True, "none", 5), (False, "none", 5), (False, "none", 0), (True, "gzip", 5)],
                         ids=["idempotent", "plain", "plain-no-retries", "idempotent-gzip"])
def test_a_too_large_record_fails_alone_and_its_batch_mates_land_once_in_order(client, idempotent, compression,
                                                                               retries):
    """A split is not a retry (Kafka treats the split batches as never tried): it
    happens with ``retries=0`` too."""
    client.create_topic("t", 1)
    p = client.producer(linger_ms=60_000, enable_idempotence=idempotent, compression_type=compression,
                        retries=retries)
    try:
        first = p.send("t", b"first", partition=0)
        p.flush()
        assert first.result().offset == 0        # the producer knows the topic (and its old limit)
        lower_limit(client, "t")
        small = [b"small-%03d" % i for i in range(200)]
        before = [p.send("t", v, partition=0) for v in small[:100]]
        # (Incompressible: over the limit with gzip too.)
        big = p.send("t", random.Random(7).randbytes(LIMIT + 100), partition=0)
        after = [p.send("t", v, partition=0) for v in small[100:]]
        seen = []
        after[-1].add_callback(lambda md: seen.append(("ok", md.offset)))
        big.add_errback(lambda exc: seen.append(("error", type(exc))))
        p.flush()
        with pytest.raises(RecordTooLargeError):
            big.result()
        assert big.failed() and isinstance(big.exception(), RecordTooLargeError)
        offsets = [h.result().offset for h in before + after]
        assert offsets == list(range(1, 201))
        assert all(h.succeeded() and h.exception() is None for h in before + after)
        assert sorted(seen) == [("error", RecordTooLargeError), ("ok", 200)]
        assert p.batch_split_count >= 1
    finally:
        p.close()
    assert values_of(client, "t") == [b"first"] + small


@pytest.mark.parametrize("idempotent, in_flight", [(True, 5), (False, 1), (False, 5)],
                         ids=["idempotent-5", "plain-1", "plain-5"])
def test_a_refused_batch_with_later_batches_out_is_split_before_them(client, idempotent, in_flight):
    """batch_size 4000, limit 3000: A (12 records of 300 bytes, ~3.8 KB) is refused;
    B..E (one 2000-byte record each) went out with it (refused behind it as out of order,
    idempotent); F holds one record over the limit and the first of the 12 small records
    that follow (split again, that record fails alone).  Idempotent (or one request out): the partition holds every
    record but F's, in send order.  Without idempotence and 5 out, B..E may land before
    A's parts (as with Kafka's producer): every record once."""
    client.create_topic("t", 1)
    p = client.producer(linger_ms=60_000, batch_size=4000, enable_idempotence=idempotent,
                        max_in_flight=in_flight)
    try:
        p.send("t", b"warm-up", partition=0).result()
        lower_limit(client, "t")
        sent, handles = [], []

        def send(value):
            sent.append(value)
            handles.append(p.send("t", value, partition=0))

        for i in range(12):
            send(b"a%02d" % i + b"." * 297)
        for i in range(4):
            send(b"%c" % (ord("B") + i) + b"." * 1999)
        big = p.send("t", b"F" * (LIMIT + 500), partition=0)
        for i in range(12):
            send(b"g%02d" % i + b"." * 297)
        p.flush()
        with pytest.raises(RecordTooLargeError):
            big.result()
        assert all(h.succeeded() for h in handles)
        assert p.batch_split_count >= 2
    finally:
        p.close()
    got = values_of(client, "t")
    assert got[0] == b"warm-up"
    if idempotent or in_flight == 1:
        assert got[1:] == sent
        assert [h.result().offset for h in handles] == list(range(1, len(sent) + 1))
    else:
        assert sorted(got[1:]) == sorted(sent)
        assert sorted(h.result().offset for h in handles) == list(range(1, len(sent) + 1))


@pytest.mark.parametrize("idempotent, in_flight", [(True, 5), (False, 1), (False, 5)],
                         ids=["idempotent-5", "plain-1", "plain-5"])
def test_a_limit_lowered_while_producing_splits_batches_and_loses_nothing(client, idempotent, in_flight):
    """Without idempotence and with 5 requests out, batches after a refused one may land
    before its parts (as with Kafka's producer): every record once, in any order."""
    client.create_topic("t", 2)
    p = client.producer(linger_ms=5, enable_idempotence=idempotent, max_in_flight=in_flight)
    expected: dict[int, list[bytes]] = {0: [], 1: []}
    try:
        for i in range(300):
            v = b"early-%04d-" % i + b"x" * 90
            p.send("t", v, partition=i % 2)
            expected[i % 2].append(v)
        p.flush()
        lower_limit(client, "t")
        handles = []
        for i in range(600):
            v = b"late-%04d-" % i + b"y" * 90
            handles.append((p.send("t", v, partition=i % 2), i % 2, v))
            expected[i % 2].append(v)
        values = [b"bulk-%05d-" % i + b"z" * 90 for i in range(3000)]
        fut = p.send_batch("t", values, partition=1)
        expected[1].extend(values)
        p.flush()
        offsets = fut.result()
        assert all(h.succeeded() for h, _, _ in handles)
        assert p.batch_split_count >= 1
    finally:
        p.close()
    logged = records_of(client, "t")
    got = {part: [r.value for r in recs] for part, recs in logged.items()}
    if not idempotent and in_flight > 1:
        assert {part: sorted(v) for part, v in got.items()} == {part: sorted(v) for part, v in expected.items()}
    else:
        assert got == expected
    # Each handle, and each of send_batch's offsets, names its record's place, though
    # their batches were split.
    at = {part: {r.offset: r.value for r in recs} for part, recs in logged.items()}
    assert [at[1][o] for o in offsets.tolist()] == values
    assert [at[part][h.result().offset] for h, part, _ in handles] == [v for _, _, v in handles]


def test_a_transactional_producer_commits_a_split_batch_once(client):
    client.create_topic("t", 1)
    p = client.producer(transactional_id="tx-split", linger_ms=60_000)
    committed = []
    try:
        p.init_transactions()
        p.begin_transaction()
        p.send("t", b"before", partition=0)
        p.commit_transaction()
        committed.append(b"before")
        lower_limit(client, "t")
        p.begin_transaction()
        values = [b"txn-%04d-" % i + b"t" * 120 for i in range(400)]
        handles = [p.send("t", v, partition=0) for v in values]
        p.commit_transaction()
        committed.extend(values)
        assert all(h.succeeded() for h in handles)
        assert p.batch_split_count >= 1
    finally:
        p.close()
    assert read_to_end(client, "t", 1, "read_committed") == {0: committed}


@pytest.mark.parametrize("keyed", [False, True], ids=["keyless", "keyed"])
def test_send_batch_offsets_follow_their_records_into_split_batches(client, keyed):
    client.create_topic("t", 3)
    p = client.producer(linger_ms=60_000)
    try:
        p.send("t", b"warm-up", partition=0).result()
        lower_limit(client, "t")
        # An open batch send_batch tops up first (a span that starts inside a batch).
        opened = [p.send("t", b"open-%d" % i, partition=i % 3) for i in range(6)]
        values = [b"v-%05d-" % i + b"z" * 90 for i in range(2000)]
        keys = [b"k%d" % (i % 7) for i in range(len(values))] if keyed else None
        fut = p.send_batch("t", values, keys=keys)
        p.flush()
        offsets = fut.result()
        parts = fut.partitions
        assert all(h.succeeded() for h in opened)
        assert p.batch_split_count >= 1
    finally:
        p.close()
    logged = records_of(client, "t")
    at = {part: {r.offset: r.value for r in recs} for part, recs in logged.items()}
    assert [at[int(parts[i])][int(offsets[i])] for i in range(len(values))] == values
    assert [at[h.partition][h.result().offset] for h in opened] == [b"open-%d" % i for i in range(6)]
    for part, recs in logged.items():
        mine = [r.value for r in recs if r.value.startswith(b"v-")]
        assert mine == [v for v, q in zip(values, parts.tolist()) if q == part]     # input order, once


def test_a_too_large_record_in_a_transaction_makes_it_abortable_and_the_next_commits(client):
    """The record that fails alone fails the transaction (abortable, as Kafka's producer):
    its split batch mates are aborted with it; the next transaction commits."""
    client.create_topic("t", 1)
    p = client.producer(transactional_id="tx-split-big", linger_ms=60_000)
    try:
        p.init_transactions()
        p.begin_transaction()
        p.send("t", b"before", partition=0)
        p.commit_transaction()
        lower_limit(client, "t")
        p.begin_transaction()
        for i in range(50):
            p.send("t", b"lost-%d" % i, partition=0)
        big = p.send("t", random.Random(3).randbytes(LIMIT + 100), partition=0)
        with pytest.raises(RecordTooLargeError):
            p.commit_transaction()
        assert isinstance(big.exception(), RecordTooLargeError)
        p.abort_transaction()
        p.begin_transaction()
        values = [b"after-%03d" % i for i in range(100)]
        for v in values:
            p.send("t", v, partition=0)
        p.commit_transaction()
    finally:
        p.close()
    assert read_to_end(client, "t", 1, "read_committed") == {0: [b"before"] + values}


def test_split_batches_keep_keys_headers_timestamps_and_nulls(client):
    client.create_topic("t", 1)
    p = client.producer(linger_ms=60_000)
    base_ts = 1_700_000_000_000
    try:
        p.send("t", b"warm-up", partition=0).result()
        lower_limit(client, "t")
        sent = []
        for i in range(120):
            key = None if i % 5 == 0 else b"key-%d" % i
            value = None if i % 7 == 0 else b"value-%03d-" % i + b"v" * 40
            headers = [("h", b"%d" % i), ("null", None)] if i % 3 == 0 else []
            ts = base_ts + (i * 37) % 1000           # not in send order
            p.send("t", value, key=key, headers=headers, partition=0, timestamp_ms=ts)
            sent.append((key, value, tuple(headers), ts))
        p.flush()
        assert p.batch_split_count >= 1
    finally:
        p.close()
    got = [(r.key, r.value, tuple(r.headers), r.timestamp) for r in records_of(client, "t")[0][1:]]
    assert got == sent


class HoldAfterRefusal:
    """Delegates to a transport (through its one-call-at-a-time ``produce``); the first
    produce call after one answered MESSAGE_TOO_LARGE (the split batches') waits until
    ``release`` is set before it goes on."""

    def __init__(self, transport):
        self._t = transport
        self.refused = False
        self.held = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self._t, name)

    def produce(self, work, *, acks, **kw):
        if self.refused and not self.held.is_set():
            self.held.set()
            assert self.release.wait(30)
        results = self._t.produce(work, acks=acks, **kw)
        self.refused = self.refused or any(r.error_code == 10 for rs in results for r in rs)
        return results


def test_closing_while_split_batches_are_out_fails_every_handle(client):
    """close(timeout) gives up on a split batch whose parts are out: every handle (and
    send_batch's future) fails with the close's error; none is left waiting."""
    client.create_topic("t", 1)
    gated = HoldAfterRefusal(client.transport)
    p = Producer(gated, linger_ms=60_000)
    p.send("t", b"warm-up", partition=0).result()
    lower_limit(client, "t")
    handles = [p.send("t", b"r-%03d-" % i + b"x" * 60, partition=0) for i in range(100)]
    fut = p.send_batch("t", [b"b-%03d-" % i + b"y" * 60 for i in range(100)], partition=0)
    done = []

    def one_done(_):
        done.append(1)
        if len(done) == len(handles) + 1:
            gated.release.set()         # every handle failed: let the held parts go

    for h in handles:
        h.add_done_callback(one_done)
    fut.add_done_callback(one_done)
    p.close(timeout=0.2)
    assert gated.held.is_set() and p.batch_split_count >= 1
    assert all(isinstance(h.exception(), RequestTimedOutError) for h in handles)
    assert isinstance(fut.exception(), RequestTimedOutError)
