"""Incremental fetch sessions (KIP-227) and the request-level ``max_bytes`` of Fetch.

Protocol-level tests send Fetch v12 with pylog's own network layer
(:class:`pylog.client.kafka.network.NetworkClient`) to an in-process server; real-client
tests run librdkafka (confluent-kafka) and kafka-python consumers, both of which fetch
with sessions, over many partitions.  The session cache's eviction rules are checked
against a model of Kafka's ``FetchSessionCache`` driven by hypothesis.
"""

from __future__ import annotations

import contextlib
import random
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pylog.client.kafka.network import NetworkClient
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey
from pylog.records import RecordBatchBuilder, iter_batches
from pylog.server.fetch_session import (
    FETCH_SESSION_ID_NOT_FOUND,
    INVALID_FETCH_SESSION_EPOCH,
    CachedPartition,
    FetchSessionCache,
    next_epoch,
)
from server.util import unique, wait_for

with warnings.catch_warnings():
    # kafka-python 3 reads its protocol schemas with importlib's deprecated open_text.
    warnings.simplefilter("ignore", DeprecationWarning)
    kafka = pytest.importorskip("kafka")

F = m.FetchRequest
NODE = 0


def batch(values):
    b = RecordBatchBuilder()
    for v in values:
        b.append(None, None, v)
    return b.build()


def values_of(pd):
    return [r.value for b in iter_batches(memoryview(pd.records)) for r in b]


@contextlib.contextmanager
def client(inproc):
    host, port = inproc.address
    c = NetworkClient(f"{host}:{port}")
    try:
        c.wait_for_metadata([], timeout=30)
        yield c
    finally:
        c.close()


def fetch(c, parts, *, session_id=0, epoch=-1, forgotten=(), max_wait_ms=0, max_bytes=1 << 20,
          part_max=1 << 20, timeout=30):
    """Fetch v12; ``parts`` is ``{(topic, partition): fetch_offset}``."""
    by_topic: dict = {}
    for (topic, p), offset in parts.items():
        by_topic.setdefault(topic, []).append(F.FetchPartition(partition=p, fetch_offset=offset,
                                                               partition_max_bytes=part_max))
    gone: dict = {}
    for topic, p in forgotten:
        gone.setdefault(topic, []).append(p)
    body = F(replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=1, max_bytes=max_bytes, isolation_level=0,
             session_id=session_id, session_epoch=epoch,
             topics=[F.FetchTopic(topic=t, partitions=ps) for t, ps in by_topic.items()],
             forgotten_topics_data=[F.ForgottenTopic(topic=t, partitions=ps) for t, ps in gone.items()],
             rack_id="")
    return c.send(NODE, ApiKey.FETCH, body, version=12).result(timeout)


def send_long_poll(c, session_id, epoch, min_bytes=1):
    """An incremental Fetch naming no partition, waiting up to 60 s: its future."""
    return c.send(NODE, ApiKey.FETCH, F(
        replica_id=-1, max_wait_ms=60_000, min_bytes=min_bytes, max_bytes=1 << 20, isolation_level=0,
        session_id=session_id, session_epoch=epoch, topics=[], forgotten_topics_data=[], rack_id=""),
        version=12, timeout_ms=120_000)


def listed(resp):
    """``{(topic, partition): PartitionData}`` of a response."""
    return {(t.topic, p.partition_index): p for t in resp.responses for p in t.partitions}


def make_topic(inproc, partitions, records_per_partition=0, prefix="fs"):
    topic = unique(prefix)
    broker = inproc.server.broker
    broker.create_topic(topic, partitions)
    for p in range(partitions):
        if records_per_partition:
            broker.append(topic, p, batch([b"%d-%d" % (p, i) for i in range(records_per_partition)]))
    return topic


def sessions(inproc):
    return inproc.server.state.fetch_sessions


# -- session lifecycle -------------------------------------------------------------------


def test_full_fetch_creates_a_session_and_incremental_fetches_carry_only_news(inproc):
    topic = make_topic(inproc, 3, records_per_partition=2)
    with client(inproc) as c:
        parts = {(topic, p): 0 for p in range(3)}
        full = fetch(c, parts, epoch=0)
        assert full.error_code == 0 and full.session_id != 0
        got = listed(full)
        assert set(got) == set(parts)
        assert all(values_of(pd) == [b"%d-0" % p, b"%d-1" % p] for (_t, p), pd in got.items())
        assert sessions(inproc).get(full.session_id).epoch == 1

        # The fetcher moves every partition to offset 2: nothing new anywhere, so the
        # incremental answer lists no partition at all.
        inc = fetch(c, {k: 2 for k in parts}, session_id=full.session_id, epoch=1)
        assert inc.error_code == 0 and inc.session_id == full.session_id
        assert listed(inc) == {}

        # Data on one partition: only it is answered, though the request names none
        # (the session remembers every partition's fetch offset).
        inproc.server.broker.append(topic, 1, batch([b"new"]))
        inc = fetch(c, {}, session_id=full.session_id, epoch=2)
        got = listed(inc)
        assert list(got) == [(topic, 1)]
        assert values_of(got[(topic, 1)]) == [b"new"] and got[(topic, 1)].high_watermark == 3
        assert sessions(inproc).get(full.session_id).epoch == 3


def test_a_changed_high_watermark_or_log_start_offset_is_news_without_records(inproc):
    topic = make_topic(inproc, 2, records_per_partition=3)
    broker = inproc.server.broker
    with client(inproc) as c:
        # Both partitions caught up (offset 3 = high watermark).
        full = fetch(c, {(topic, 0): 3, (topic, 1): 3}, epoch=0)
        sid = full.session_id
        assert listed(full)[(topic, 0)].high_watermark == 3
        broker.delete_records(topic, 0, 2)
        inc = fetch(c, {}, session_id=sid, epoch=1)
        got = listed(inc)
        assert list(got) == [(topic, 0)]
        assert got[(topic, 0)].log_start_offset == 2 and len(got[(topic, 0)].records) == 0
        # Nothing changed since: an empty answer.
        assert listed(fetch(c, {}, session_id=sid, epoch=2)) == {}


def test_unknown_session_id_and_wrong_epoch_are_errors(inproc):
    topic = make_topic(inproc, 1, records_per_partition=1)
    with client(inproc) as c:
        full = fetch(c, {(topic, 0): 0}, epoch=0)
        sid = full.session_id
        bad = fetch(c, {(topic, 0): 1}, session_id=sid, epoch=5)
        assert (bad.error_code, bad.session_id, bad.responses) == (INVALID_FETCH_SESSION_EPOCH, 0, [])
        # The failed request did not advance the session: epoch 1 is still expected.
        assert sessions(inproc).get(sid).epoch == 1
        unknown = sid + 1 if sid < 2**31 - 2 else sid - 1
        miss = fetch(c, {(topic, 0): 1}, session_id=unknown, epoch=1)
        assert (miss.error_code, miss.session_id, miss.responses) == (FETCH_SESSION_ID_NOT_FOUND, 0, [])
        ok = fetch(c, {(topic, 0): 1}, session_id=sid, epoch=1)
        assert ok.error_code == 0 and ok.session_id == sid


def test_final_epoch_closes_the_session_and_fetches_sessionless(inproc):
    topic = make_topic(inproc, 2, records_per_partition=1)
    with client(inproc) as c:
        parts = {(topic, 0): 0, (topic, 1): 0}
        sid = fetch(c, parts, epoch=0).session_id
        assert sessions(inproc).get(sid) is not None
        closing = fetch(c, parts, session_id=sid, epoch=-1)
        assert closing.error_code == 0 and closing.session_id == 0
        assert set(listed(closing)) == set(parts)          # a full answer
        assert sessions(inproc).get(sid) is None
        again = fetch(c, parts, session_id=sid, epoch=1)
        assert again.error_code == FETCH_SESSION_ID_NOT_FOUND
        # A sessionless fetch (0, -1) creates nothing.
        before = len(sessions(inproc))
        assert fetch(c, parts).session_id == 0 and len(sessions(inproc)) == before


def test_fetch_before_v7_is_sessionless(inproc):
    topic = make_topic(inproc, 2, records_per_partition=1)
    with client(inproc) as c:
        for version in (4, 6):
            body = F(replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, isolation_level=0,
                     topics=[F.FetchTopic(topic=topic, partitions=[
                         F.FetchPartition(partition=p, fetch_offset=0, partition_max_bytes=1 << 20)
                         for p in range(2)])])
            resp = c.send(NODE, ApiKey.FETCH, body, version=version).result(30)
            assert [values_of(pd) for pd in listed(resp).values()] == [[b"0-0"], [b"1-0"]]
    assert len(sessions(inproc)) == 0


def test_a_new_full_fetch_naming_a_session_replaces_it(inproc):
    topic = make_topic(inproc, 1, records_per_partition=1)
    with client(inproc) as c:
        sid = fetch(c, {(topic, 0): 0}, epoch=0).session_id
        sid2 = fetch(c, {(topic, 0): 0}, session_id=sid, epoch=0).session_id
        assert sid2 not in (0, sid)
        assert sessions(inproc).get(sid) is None and sessions(inproc).get(sid2) is not None


def test_incremental_fetch_adds_and_forgets_partitions(inproc):
    topic = make_topic(inproc, 3, records_per_partition=1)
    with client(inproc) as c:
        sid = fetch(c, {(topic, 0): 1}, epoch=0).session_id
        # A partition added by an incremental fetch is answered (the fetcher knows nothing of it).
        inc = fetch(c, {(topic, 2): 0}, session_id=sid, epoch=1)
        assert list(listed(inc)) == [(topic, 2)] and values_of(listed(inc)[(topic, 2)]) == [b"2-0"]
        session = sessions(inproc).get(sid)
        assert set(session.partitions) == {(topic, 0), (topic, 2)}
        # Forget partition 0; data on it is then not answered.
        inproc.server.broker.append(topic, 0, batch([b"x"]))
        inc = fetch(c, {(topic, 2): 1}, session_id=sid, epoch=2, forgotten=[(topic, 0)])
        assert listed(inc) == {} and set(session.partitions) == {(topic, 2)}
        # Forgetting the last partition closes the session: the answer is sessionless.
        inc = fetch(c, {}, session_id=sid, epoch=3, forgotten=[(topic, 2)])
        assert inc.error_code == 0 and inc.session_id == 0
        assert sessions(inproc).get(sid) is None


def test_incremental_long_poll_is_answered_by_data_on_any_session_partition(inproc):
    topic = make_topic(inproc, 4, records_per_partition=1)
    with client(inproc) as c:
        parts = {(topic, p): 1 for p in range(4)}
        sid = fetch(c, parts, epoch=0).session_id
        body_future = send_long_poll(c, sid, 1)
        waiters = inproc.server.state.fetch_waiters
        wait_for(lambda: (topic, 3) in waiters.by_partition, "the incremental fetch to wait")
        inproc.server.broker.append(topic, 3, batch([b"late"]))
        resp = body_future.result(60)
        got = listed(resp)
        assert resp.session_id == sid and list(got) == [(topic, 3)]
        assert values_of(got[(topic, 3)]) == [b"late"]


def test_incremental_long_poll_sums_appends_until_min_bytes(inproc):
    topic = make_topic(inproc, 4, records_per_partition=1)
    broker = inproc.server.broker
    with client(inproc) as c:
        sid = fetch(c, {(topic, p): 1 for p in range(4)}, epoch=0).session_id
        pending = send_long_poll(c, sid, 1, min_bytes=500)
        waiters = inproc.server.state.fetch_waiters
        wait_for(lambda: (topic, 0) in waiters.by_partition, "the incremental fetch to wait")
        broker.append(topic, 1, batch([b"a" * 300]))
        # A round trip through the server's loop (on another connection: this one waits
        # for its fetch): the append's wake-up ran before it.
        with client(inproc) as other:
            fetch(other, {(topic, 0): 1})
        assert not pending.done()
        broker.append(topic, 2, batch([b"b" * 300]))
        got = listed(pending.result(60))
        assert sorted(got) == [(topic, 1), (topic, 2)]
        assert values_of(got[(topic, 1)]) == [b"a" * 300] and values_of(got[(topic, 2)]) == [b"b" * 300]


def test_no_session_when_the_cache_has_no_slots(inproc):
    topic = make_topic(inproc, 1, records_per_partition=1)
    inproc.server.state.fetch_sessions = FetchSessionCache(0)
    with client(inproc) as c:
        resp = fetch(c, {(topic, 0): 0}, epoch=0)
        assert resp.error_code == 0 and resp.session_id == 0 and values_of(listed(resp)[(topic, 0)]) == [b"0-0"]


def test_a_full_cache_evicts_a_stale_session_over_the_wire(inproc):
    topic = make_topic(inproc, 2, records_per_partition=1)
    now = [1_000_000.0]
    inproc.server.state.fetch_sessions = FetchSessionCache(1, eviction_ms=120_000, clock=lambda: now[0])
    with client(inproc) as c:
        a = fetch(c, {(topic, 0): 0}, epoch=0).session_id
        assert a != 0
        # The cache is full and A is young: B gets no session.
        assert fetch(c, {(topic, 0): 0, (topic, 1): 0}, epoch=0).session_id == 0
        now[0] += 120_001
        b = fetch(c, {(topic, 1): 0}, epoch=0).session_id
        assert b not in (0, a)
        assert fetch(c, {}, session_id=a, epoch=1).error_code == FETCH_SESSION_ID_NOT_FOUND
        assert sessions(inproc).evictions == 1


# -- fairness and the response's max_bytes -----------------------------------------------


def test_answered_partitions_move_to_the_end_of_the_session(inproc):
    topic = unique("fair")
    broker = inproc.server.broker
    broker.create_topic(topic, 2)
    payload = b"v" * 400
    for i in range(3):
        broker.append(topic, 0, batch([payload + b"%d" % i]))
    broker.append(topic, 1, batch([payload + b"p1"]))
    with client(inproc) as c:
        # Room for one batch per response.
        full = fetch(c, {(topic, 0): 0, (topic, 1): 0}, epoch=0, max_bytes=600)
        got = listed(full)
        assert values_of(got[(topic, 0)]) == [payload + b"0"] and len(got[(topic, 1)].records) == 0
        sid = full.session_id
        inc = fetch(c, {(topic, 0): 1}, session_id=sid, epoch=1, max_bytes=600)
        assert list(listed(inc)) == [(topic, 0)]
        # Partition 0 was answered last, so partition 1 is read first now, although
        # partition 0 still has a batch.
        inc = fetch(c, {(topic, 0): 2}, session_id=sid, epoch=2, max_bytes=600)
        got = listed(inc)
        assert values_of(got[(topic, 1)]) == [payload + b"p1"]
        assert (topic, 0) not in got or len(got[(topic, 0)].records) == 0


def test_max_bytes_bounds_the_whole_response(inproc):
    topic = unique("maxb")
    broker = inproc.server.broker
    broker.create_topic(topic, 3)
    for p in range(3):
        broker.append(topic, p, batch([b"x" * 1000]))
    with client(inproc) as c:
        parts = {(topic, p): 0 for p in range(3)}
        got = listed(fetch(c, parts, max_bytes=1500))
        sizes = [len(got[(topic, p)].records) for p in range(3)]
        assert sizes[0] > 1000 and sizes[1:] == [0, 0]
        assert all(got[(topic, p)].high_watermark == 1 for p in range(3))
        # Two batches fit in 2 * batch size: the third partition gets nothing.
        two = 2 * sizes[0]
        got = listed(fetch(c, parts, max_bytes=two))
        assert [len(got[(topic, p)].records) > 0 for p in range(3)] == [True, True, False]


def test_first_batch_is_returned_even_if_larger_than_max_bytes(inproc):
    topic = unique("big")
    broker = inproc.server.broker
    broker.create_topic(topic, 2)
    broker.append(topic, 0, batch([b"y" * 5000]))
    broker.append(topic, 1, batch([b"z" * 10]))
    with client(inproc) as c:
        got = listed(fetch(c, {(topic, 0): 0, (topic, 1): 0}, max_bytes=100, part_max=100))
        assert values_of(got[(topic, 0)]) == [b"y" * 5000]
        assert len(got[(topic, 1)].records) == 0       # the response is already over budget


# -- real clients ------------------------------------------------------------------------


def test_librdkafka_consumer_of_many_partitions_gets_everything(inproc):
    """librdkafka (2.16) fetches sessionless (session id 0, epoch -1 on every Fetch): the
    sessionless path keeps serving it, and it creates no session."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    n_parts, per = 200, 5
    topic = make_topic(inproc, n_parts, records_per_partition=per, prefix="rdk")
    host, port = inproc.address
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": f"{host}:{port}", "group.id": unique("g"), "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, p) for p in range(n_parts)])
        got = set()
        broker = inproc.server.broker

        def poll_some():
            for msg in consumer.consume(500, 0.2):
                assert msg.error() is None or msg.error().code() == confluent_kafka.KafkaError._PARTITION_EOF
                if msg.error() is None:
                    got.add(msg.value())
            return len(got) == n_parts * per

        wait_for(poll_some, "every record of the first round", timeout=60)
        assert len(sessions(inproc)) == 0
        # Records appended now reach the consumer through its incremental fetches.
        for p in range(0, n_parts, 7):
            broker.append(topic, p, batch([b"late-%d" % p]))
        late = {b"late-%d" % p for p in range(0, n_parts, 7)}
        wait_for(lambda: poll_some() or late <= got, "the records appended later", timeout=60)
        assert late <= got
        assert {b"%d-%d" % (p, i) for p in range(n_parts) for i in range(per)} <= got
    finally:
        consumer.close()


def test_kafka_python_consumer_of_many_partitions_uses_a_session_and_gets_everything(inproc):
    n_parts, per = 100, 3
    topic = make_topic(inproc, n_parts, records_per_partition=per, prefix="kp")
    host, port = inproc.address
    consumer = kafka.KafkaConsumer(bootstrap_servers=f"{host}:{port}", auto_offset_reset="earliest",
                                   enable_auto_commit=False, fetch_max_wait_ms=100, group_id=None)
    try:
        consumer.assign([kafka.TopicPartition(topic, p) for p in range(n_parts)])
        got = set()

        def poll_some():
            for records in consumer.poll(timeout_ms=200).values():
                got.update(r.value for r in records)
            return got

        wait_for(lambda: len(poll_some()) == n_parts * per, "every record", timeout=60)
        assert len(sessions(inproc)) >= 1
        inproc.server.broker.append(topic, 42, batch([b"after"]))
        wait_for(lambda: b"after" in poll_some(), "the record appended later", timeout=60)
    finally:
        consumer.close()


# -- the cache against a model of Kafka's FetchSessionCache ------------------------------


def _parts(n):
    return lambda: {("t", i): CachedPartition(0, 100, -1, -1) for i in range(n)}


def test_epochs_wrap_as_kafka():
    assert next_epoch(0) == 1 and next_epoch(5) == 6
    assert next_epoch(2**31 - 1) == 1 and next_epoch(-1) == -1


def test_stale_session_is_evicted_first():
    now = [0.0]
    cache = FetchSessionCache(2, eviction_ms=100, clock=lambda: now[0])
    a = cache.maybe_create_session(False, _parts(5))
    now[0] = 10
    b = cache.maybe_create_session(False, _parts(1))
    now[0] = 50
    assert cache.maybe_create_session(False, _parts(9)) == 0      # nobody stale or old yet
    now[0] = 111
    c = cache.maybe_create_session(False, _parts(1))
    assert c and cache.get(a) is None and cache.get(b) is not None   # a: unused > 100 ms


def test_privileged_session_evicts_a_young_consumer_session():
    now = [0.0]
    cache = FetchSessionCache(1, eviction_ms=1000, clock=lambda: now[0])
    a = cache.maybe_create_session(False, _parts(50))
    now[0] = 1
    assert cache.maybe_create_session(False, _parts(100)) == 0       # young: not evictable by all
    f = cache.maybe_create_session(True, _parts(1))                  # a follower may
    assert f and cache.get(a) is None
    now[0] = 2
    assert cache.maybe_create_session(True, _parts(1)) == 0          # a young privileged one is safe


class CacheModel(RuleBasedStateMachine):
    """Random create / use / close / time steps against a plain model of Kafka's rules."""

    def __init__(self):
        super().__init__()
        self.now = 0.0
        self.max_entries = 3
        self.eviction_ms = 100
        self.cache = FetchSessionCache(self.max_entries, self.eviction_ms, clock=lambda: self.now,
                                       rng=random.Random(7))
        # id -> dict(privileged, size, created, last_used, seq, by_all, by_priv)
        self.model: dict[int, dict] = {}
        self.seq = 0

    def _model_touch(self, sid, size):
        s = self.model[sid]
        s["last_used"] = self.now
        self.seq += 1
        s["seq"] = self.seq      # least recently used: earliest touch (Kafka: earliest time, then id)
        s["size"] = size
        old = self.now - s["created"] > self.eviction_ms
        s["by_all"] = old
        s["by_priv"] = (not s["privileged"]) or old

    def _expected_victim(self, privileged, size):
        """None: no room; 0: room without eviction; else the id Kafka would evict."""
        if len(self.model) < self.max_entries:
            return 0
        lru = min(self.model, key=lambda i: self.model[i]["seq"])
        if self.now - self.model[lru]["last_used"] > self.eviction_ms:
            return lru
        flag = "by_priv" if privileged else "by_all"
        cands = [i for i, s in self.model.items() if s[flag]]
        if not cands:
            return None
        victim = min(cands, key=lambda i: (self.model[i]["privileged"], self.model[i]["size"], i))
        v = self.model[victim]
        if (privileged, size, 0) < (v["privileged"], v["size"], victim):
            return None
        return victim

    @rule(privileged=st.booleans(), size=st.integers(0, 6))
    def create(self, privileged, size):
        expected = self._expected_victim(privileged, size)
        sid = self.cache.maybe_create_session(privileged, _parts(size))
        if expected is None:
            assert sid == 0
            return
        assert sid != 0 and sid not in self.model
        if expected:
            assert self.cache.get(expected) is None
            del self.model[expected]
        self.model[sid] = dict(privileged=privileged, size=size, created=self.now)
        self._model_touch(sid, size)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), grow=st.integers(0, 3))
    def use(self, data, grow):
        sid = data.draw(st.sampled_from(sorted(self.model)))
        s = self.cache.get(sid)
        epoch = s.epoch
        wanted = [("u", [(i, 0, 100, -1, -1) for i in range(grow)])]
        ctx = self.cache.new_context(sid, epoch, wanted, (), privileged=False)
        assert ctx.error == 0
        if not s.partitions:
            # Left empty: closed, and the fetch is sessionless (Kafka's rule).
            assert ctx.session is None and self.cache.get(sid) is None
            del self.model[sid]
            return
        assert ctx.session is s and s.epoch == next_epoch(epoch)
        self._model_touch(sid, len(s.partitions))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def close(self, data):
        sid = data.draw(st.sampled_from(sorted(self.model)))
        ctx = self.cache.new_context(sid, -1, [], (), privileged=False)
        assert ctx.session is None and self.cache.get(sid) is None
        del self.model[sid]

    @rule(ms=st.sampled_from([0, 1, 30, 101]))
    def tick(self, ms):
        self.now += ms

    @invariant()
    def agrees(self):
        assert set(self.cache.sessions) == set(self.model)
        assert len(self.cache) <= self.max_entries
        assert self.cache.total_partitions == sum(s["size"] for s in self.model.values())


TestCacheModel = CacheModel.TestCase
TestCacheModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


@pytest.mark.bench
def test_fetch_session_bench_runs():
    """Smoke run of benches/bench_fetch_sessions.py on a small topic, so it cannot rot."""
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
    from benches import bench_fetch_sessions

    on = bench_fetch_sessions.fetch_round_cost("kafka-python", 20, 0.5, sessions=True)
    off = bench_fetch_sessions.fetch_round_cost("kafka-python", 20, 0.5, sessions=False)
    assert on["rounds"] > 1 and off["rounds"] > 1
    # What sessions are for: an incremental request is smaller than a full one.
    assert on["request_bytes_per_round"] < off["request_bytes_per_round"]


# -- incremental answers against sessionless ones, over the wire -------------------------


@pytest.fixture(scope="module")
def module_inproc(tmp_path_factory):
    from pylog.server.config import ServerConfig
    from pylog.server.server import ServerThread

    st_ = ServerThread(ServerConfig(log_dirs=str(tmp_path_factory.mktemp("sessions") / "data"),
                                    listeners="127.0.0.1:0"))
    st_.start()
    try:
        yield st_
    finally:
        st_.stop()


_OPS = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 3), st.integers(1, 3)),
    st.tuples(st.just("advance"), st.integers(0, 3)),
    st.tuples(st.just("forget"), st.integers(0, 3)),
    st.tuples(st.just("add"), st.integers(0, 3)),
    st.tuples(st.just("delete"), st.integers(0, 3)),
    st.tuples(st.just("fetch"))), max_size=25)


@settings(max_examples=25, deadline=None)
@given(ops=_OPS)
def test_incremental_answers_agree_with_sessionless_ones(module_inproc, ops):
    """A fetcher keeping the view an incremental session gives it (each partition's high
    watermark and log start offset, records as they come) sees what sessionless fetches
    at the same offsets show, whatever the appends, deletions, adds and forgets between."""
    topic = make_topic(module_inproc, 4, records_per_partition=1)
    broker = module_inproc.server.broker
    with client(module_inproc) as c:
        offsets = {0: 0, 1: 0}
        full = fetch(c, {(topic, p): o for p, o in offsets.items()}, epoch=0)
        sid, epoch = full.session_id, 1
        known = {p: (pd.high_watermark, pd.log_start_offset) for (_t, p), pd in listed(full).items()}
        changed: set = set()
        gone: set = set()
        for op in ops + [("fetch",)]:
            kind, p = op[0], (op[1] if len(op) > 1 else None)
            if kind == "append":
                broker.append(topic, p, batch([b"x"] * op[2]))
            elif kind == "advance" and p in offsets:
                offsets[p] = known[p][0] if known[p][0] >= 0 else offsets[p]
                changed.add(p)
            elif kind == "forget" and p in offsets and len(offsets) > 1:
                del offsets[p]
                known.pop(p, None)
                changed.discard(p)
                gone.add(p)
            elif kind == "add" and p not in offsets:
                offsets[p] = 0
                known[p] = (-1, -1)
                changed.add(p)
                gone.discard(p)
            elif kind == "delete":
                broker.delete_records(topic, p, min(offsets.get(p, 0), broker.high_watermark(topic, p)))
            elif kind == "fetch":
                inc = fetch(c, {(topic, q): offsets[q] for q in changed}, session_id=sid, epoch=epoch,
                            forgotten=[(topic, q) for q in gone])
                assert inc.error_code == 0 and inc.session_id == sid
                epoch = next_epoch(epoch)
                changed, gone = set(), set()
                oracle = listed(fetch(c, {(topic, q): o for q, o in offsets.items()}))
                got = listed(inc)
                assert {q for (_t, q) in got} <= set(offsets)
                for q in offsets:
                    want = oracle[(topic, q)]
                    have = got.get((topic, q))
                    if have is None:
                        assert len(want.records) == 0 and want.error_code == 0
                        assert known[q] == (want.high_watermark, want.log_start_offset)
                    else:
                        assert (have.error_code, have.high_watermark, have.log_start_offset) == \
                            (want.error_code, want.high_watermark, want.log_start_offset)
                        assert values_of(have) == values_of(want)
                        known[q] = (have.high_watermark if not have.error_code else -1,
                                    have.log_start_offset)
        fetch(c, {}, session_id=sid, epoch=-1)          # close it
