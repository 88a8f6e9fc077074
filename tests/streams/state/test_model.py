"""Model-based tests: hypothesis state machines drive an in-memory store (logging) and
a persistent one (logging under a cache, closed and reopened at random) with the same
operations and check every read against a plain model (a dict, with Kafka's retention
rule for window and session stores).  At the end each store's changelog is replayed
into a fresh store, which must equal the model: restore equals replay."""

from __future__ import annotations

import os
import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pylog.streams.state import InMemoryKeyValueStore, InMemorySessionStore, InMemoryWindowStore

from .conftest import RecordingContext, build_kv, build_session, build_window

KEYS = st.sampled_from([b"", b"a", b"a\x00", b"a\x00\x00", b"ab", b"b", b"\xff"])
VALUES = st.one_of(st.none(), st.binary(min_size=0, max_size=3))
RETENTION = 120_000  # segment interval 60 s: a few segments, rolled and dropped
TIMES = st.integers(0, 40).map(lambda i: i * 9_000)
# Each example opens RocksDBs (about 30 ms each, more when reopened): few examples,
# many steps.  Run with PYLOG_STATE_EXAMPLES=500 for a long search.
MACHINE_SETTINGS = settings(max_examples=int(os.environ.get("PYLOG_STATE_EXAMPLES", 10)),
                            stateful_step_count=30, deadline=None)


class _StoresMachine(RuleBasedStateMachine):
    cached = True
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="pylog-state-model-")
        self.mem_ctx = RecordingContext(self.dir, task_id="mem")
        self.disk_ctx = RecordingContext(self.dir, task_id="disk")
        self.mem = self.build("memory", logging=True, caching=False)
        self.disk = self.build("rocksdb", logging=True, caching=self.cached)
        self.mem.init(self.mem_ctx)
        self.disk.init(self.disk_ctx)
        self.replayed = []

    def stores(self):
        return (self.mem, self.disk)

    @rule()
    def flush(self):
        for s in self.stores():
            s.flush()

    @rule()
    def reopen_persistent(self):
        self.disk.close()  # flushes the cache: a clean close loses nothing
        self.disk.init(self.disk_ctx)

    def replay(self, ctx, fresh, batch=1000, init_ctx=None):
        fresh.init(init_ctx or ctx)
        records = [(k, v) for _, k, v in ctx.records()]
        for i in range(0, len(records), batch):
            fresh.restore_batch(records[i:i + batch])
        self.replayed.append(fresh)
        return fresh

    def fresh_persistent(self, name):
        """A RocksDB store of this machine's type in a new task directory (restored in
        small batches: Kafka's batch-wise restore must give the record-wise result)."""
        store = self.build("rocksdb", name=name, logging=False, caching=False)
        return self.replay(self.mem_ctx, store, batch=3, init_ctx=RecordingContext(self.dir, task_id=name))

    def teardown(self):
        try:
            self.disk.flush()
            self.check_replay()
        finally:
            for s in (*self.stores(), *self.replayed):
                if s.is_open():
                    s.close()
            shutil.rmtree(self.dir, ignore_errors=True)


class KeyValueMachine(_StoresMachine):
    def build(self, impl, **kw):
        return build_kv(impl, **kw)

    def __init__(self):
        super().__init__()
        self.model = {}

    @rule(key=KEYS, value=VALUES)
    def put(self, key, value):
        for s in self.stores():
            s.put(key, value)
        if value is None:
            self.model.pop(key, None)
        else:
            self.model[key] = value

    @rule(key=KEYS)
    def delete(self, key):
        old = self.model.pop(key, None)
        for s in self.stores():
            assert s.delete(key) == old

    @rule(key=KEYS, value=st.binary(max_size=2))
    def put_if_absent(self, key, value):
        old = self.model.get(key)
        for s in self.stores():
            assert s.put_if_absent(key, value) == old
        self.model.setdefault(key, value)

    @rule(entries=st.lists(st.tuples(KEYS, VALUES), max_size=4))
    def put_all(self, entries):
        for s in self.stores():
            s.put_all(entries)
        for k, v in entries:
            if v is None:
                self.model.pop(k, None)
            else:
                self.model[k] = v

    @rule(lo=st.one_of(st.none(), KEYS), hi=st.one_of(st.none(), KEYS))
    def ranges(self, lo, hi):
        want = sorted((k, v) for k, v in self.model.items() if (lo is None or k >= lo) and (hi is None or k <= hi))
        if lo is not None and hi is not None and lo > hi:
            want = []
        for s in self.stores():
            assert list(s.range(lo, hi)) == want
            assert list(s.reverse_range(lo, hi)) == want[::-1]

    @rule(prefix=st.sampled_from([b"", b"a", b"a\x00", b"\xff"]))
    def prefix_scan(self, prefix):
        want = sorted((k, v) for k, v in self.model.items() if k.startswith(prefix))
        for s in self.stores():
            assert list(s.prefix_scan(prefix)) == want

    @invariant()
    def gets_agree(self):
        for k in (b"", b"a", b"ab", b"\xff"):
            for s in self.stores():
                assert s.get(k) == self.model.get(k)

    def check_replay(self):
        want = sorted(self.model.items())
        for ctx in (self.mem_ctx, self.disk_ctx):
            fresh = self.replay(ctx, InMemoryKeyValueStore("replay"))
            assert list(fresh.all()) == want


class WindowMachine(_StoresMachine):
    dups = False

    def build(self, impl, **kw):
        return build_window(impl, retention=RETENTION, size=5_000, dups=self.dups, **kw)

    def __init__(self):
        super().__init__()
        self.entries = []  # (key, start, seq, value) in put order; dups: all kept
        self.stream_time = -1
        self.seq = 0

    def min_live(self):
        return self.stream_time - RETENTION + 1

    def visible(self):
        live = [e for e in self.entries if e[1] >= self.min_live()]
        return sorted(live, key=lambda e: (e[1], e[0], e[2]))

    @rule(key=KEYS, value=VALUES, start=TIMES)
    def put(self, key, value, start):
        for s in self.stores():
            s.put(key, value, start)
        self.stream_time = max(self.stream_time, start)
        if self.dups:
            if value is None:
                return
            self.seq += 1
            if start >= self.min_live():
                self.entries.append((key, start, self.seq, value))
            return
        if start < self.min_live():
            return
        self.entries = [e for e in self.entries if (e[0], e[1]) != (key, start)]
        if value is not None:
            self.entries.append((key, start, 0, value))

    @rule(key=KEYS, t1=TIMES, t2=TIMES)
    def fetch_range(self, key, t1, t2):
        want = [(e[1], e[3]) for e in sorted(self.visible(), key=lambda e: (e[1], e[2]))
                if e[0] == key and t1 <= e[1] <= t2]
        for s in self.stores():
            assert list(s.fetch_range(key, t1, t2)) == want

    @rule(k1=st.one_of(st.none(), KEYS), k2=st.one_of(st.none(), KEYS), t1=TIMES, t2=TIMES)
    def fetch_key_range(self, k1, k2, t1, t2):
        want = [((e[0], e[1]), e[3]) for e in self.visible()
                if (k1 is None or e[0] >= k1) and (k2 is None or e[0] <= k2) and t1 <= e[1] <= t2]
        if k1 is not None and k2 is not None and k1 > k2:
            want = []
        for s in self.stores():
            assert list(s.fetch_key_range(k1, k2, t1, t2)) == want

    @rule(key=KEYS, start=TIMES)
    def fetch(self, key, start):
        hits = [e[3] for e in sorted(self.visible(), key=lambda e: e[2]) if (e[0], e[1]) == (key, start)]
        for s in self.stores():
            assert s.fetch(key, start) == (hits[0] if hits else None)

    @invariant()
    def all_agree(self):
        want = [((e[0], e[1]), e[3]) for e in self.visible()]
        for s in self.stores():
            assert list(s.all()) == want
            assert s.observed_stream_time == self.stream_time

    def check_replay(self):
        want = [((e[0], e[1]), e[3]) for e in self.visible()]
        for ctx in (self.mem_ctx, self.disk_ctx):
            fresh = self.replay(ctx, InMemoryWindowStore("replay", RETENTION, 5_000, self.dups))
            assert list(fresh.all()) == want
        assert list(self.fresh_persistent("replay-disk").all()) == want


class WindowDuplicatesMachine(WindowMachine):
    # Stream-stream join stores: every put kept under its own seqnum (never cached).
    dups = True
    cached = False


class SessionMachine(_StoresMachine):
    def build(self, impl, **kw):
        return build_session(impl, retention=RETENTION, **kw)

    def __init__(self):
        super().__init__()
        self.model = {}  # (key, start, end) -> value
        self.stream_time = -1

    def visible(self):
        min_live = self.stream_time - RETENTION + 1
        return {s: v for s, v in self.model.items() if s[2] >= min_live}

    @rule(key=KEYS, start=TIMES, length=st.sampled_from([0, 1, 9_000, 70_000]), value=VALUES)
    def put(self, key, start, length, value):
        end = start + length
        for s in self.stores():
            s.put((key, start, end), value)
        self.stream_time = max(self.stream_time, end)
        if end < self.stream_time - RETENTION + 1:
            return
        if value is None:
            self.model.pop((key, start, end), None)
        else:
            self.model[(key, start, end)] = value

    @rule(key=KEYS, earliest_end=TIMES, latest_start=TIMES)
    def find_sessions(self, key, earliest_end, latest_start):
        want = sorted(((s, v) for s, v in self.visible().items()
                       if s[0] == key and s[2] >= earliest_end and s[1] <= latest_start),
                      key=lambda sv: (sv[0][2], sv[0][1]))
        for s in self.stores():
            assert list(s.find_sessions(key, earliest_end, latest_start)) == want

    @rule(key=KEYS, start=TIMES, length=st.sampled_from([0, 1, 9_000]))
    def fetch_session(self, key, start, length):
        want = self.visible().get((key, start, start + length))
        for s in self.stores():
            assert s.fetch_session(key, start, start + length) == want

    @invariant()
    def fetch_agrees(self):
        vis = self.visible()
        for key in (b"", b"a", b"\xff"):
            want = sorted(((s, v) for s, v in vis.items() if s[0] == key), key=lambda sv: (sv[0][2], sv[0][1]))
            for s in self.stores():
                assert list(s.fetch(key)) == want

    def check_replay(self):
        vis = self.visible()
        for ctx in (self.mem_ctx, self.disk_ctx):
            fresh = self.replay(ctx, InMemorySessionStore("replay", RETENTION))
            got = {}
            for key in {s[0] for s in self.model}:
                got.update(dict(fresh.fetch(key)))
            assert got == vis
        disk = self.fresh_persistent("replay-disk")
        got = {}
        for key in {s[0] for s in self.model}:
            got.update(dict(disk.fetch(key)))
        assert got == vis


TestKeyValueModel = KeyValueMachine.TestCase
TestWindowModel = WindowMachine.TestCase
TestWindowDuplicatesModel = WindowDuplicatesMachine.TestCase
TestSessionModel = SessionMachine.TestCase
for _case in (TestKeyValueModel, TestWindowModel, TestWindowDuplicatesModel, TestSessionModel):
    _case.settings = MACHINE_SETTINGS
del _case
