"""The embedded store under pylog.streams' persistent state stores, chosen by measurement.

Candidates, side by side in one run: RocksDB through ``rocksdict`` (what Kafka Streams
uses), LMDB through ``lmdb`` (py-lmdb), LevelDB through ``plyvel``, and ``sqlite3`` (the
standard library).  Each is used the way a state store uses it: no per-write fsync (the
changelog topic is the source of truth, as Kafka Streams runs RocksDB without its WAL),
writes batched per commit, and ``flush()`` making a commit survive a killed process.

* ``time_put``: PUTS random puts of 100-byte values, committed in batches of BATCH;
* ``time_get``: GETS random gets from a store of N keys;
* ``time_range``: RANGES range scans of 100 consecutive keys each;
* ``time_restore``: N changelog records (5% tombstones) applied in batches of 10,000,
  as a restore from the changelog does, then flushed;
* ``time_open``: opening a store of N keys (and reading one key);
* ``track_disk_bytes``: bytes on disk for N keys after flush.

N is 1,000,000 (``PYLOG_BENCH_SMALL=1``: 20,000, for the smoke test).  A candidate
that is not installed is skipped (asv's NotImplementedError protocol).
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import sqlite3
import tempfile

from benches._data import values

SMALL = os.environ.get("PYLOG_BENCH_SMALL", "") not in ("", "0")
N = 20_000 if SMALL else 1_000_000
PUTS = 10_000 if SMALL else 200_000
BATCH = 1_000
GETS = 10_000 if SMALL else 100_000
RANGES = 1_000 if SMALL else 10_000
RESTORE_BATCH = 10_000
CANDIDATES = ["rocksdict", "lmdb", "plyvel", "sqlite3"]


def key(i: int) -> bytes:
    return b"key-%012d" % i


class _Rocks:
    def __init__(self, path):
        import rocksdict

        from pylog.streams.state.persistent import rocksdb_options

        opts = rocksdb_options()  # the options pylog's stores run with (Kafka Streams')
        self._wo = rocksdict.WriteOptions()
        self._wo.disable_wal = True
        self._rocksdict = rocksdict
        self.db = rocksdict.Rdict(path, options=opts)

    def write(self, batch):
        wb = self._rocksdict.WriteBatch(raw_mode=True)
        for k, v in batch:
            if v is None:
                wb.delete(k)
            else:
                wb.put(k, v)
        self.db.write(wb, self._wo)

    def get(self, k):
        return self.db.get(k)

    def range(self, lo, n):
        return list(itertools.islice(self.db.items(from_key=lo), n))

    def flush(self):
        self.db.flush(True)

    def close(self):
        self.db.close()


class _Lmdb:
    def __init__(self, path):
        import lmdb

        os.makedirs(path, exist_ok=True)
        # No writemap: with it, a system crash between two syncs can corrupt the file
        # (LMDB's docs); without it LMDB keeps its integrity and only loses durability.
        self.env = lmdb.open(path, map_size=1 << 34, sync=False, metasync=False, writemap=False,
                             readahead=False, max_dbs=1)

    def write(self, batch):
        with self.env.begin(write=True) as txn:
            for k, v in batch:
                if v is None:
                    txn.delete(k)
                else:
                    txn.put(k, v)

    def get(self, k):
        with self.env.begin(buffers=False) as txn:
            return txn.get(k)

    def range(self, lo, n):
        out = []
        with self.env.begin() as txn:
            cur = txn.cursor()
            if cur.set_range(lo):
                for kv in cur:
                    out.append(kv)
                    if len(out) >= n:
                        break
        return out

    def flush(self):
        self.env.sync(True)

    def close(self):
        self.env.close()


class _Plyvel:
    def __init__(self, path):
        import plyvel

        self.db = plyvel.DB(path, create_if_missing=True)

    def write(self, batch):
        with self.db.write_batch() as wb:
            for k, v in batch:
                if v is None:
                    wb.delete(k)
                else:
                    wb.put(k, v)

    def get(self, k):
        return self.db.get(k)

    def range(self, lo, n):
        out = []
        for kv in self.db.iterator(start=lo):
            out.append(kv)
            if len(out) >= n:
                break
        return out

    def flush(self):
        pass  # LevelDB writes its log (no fsync) on every batch: a killed process loses nothing

    def close(self):
        self.db.close()


class _Sqlite:
    def __init__(self, path):
        os.makedirs(path, exist_ok=True)
        self.db = sqlite3.connect(os.path.join(path, "store.db"), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")

    def write(self, batch):
        last = dict(batch)  # the batch's outcome: its last write per key
        db = self.db
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", [(k, v) for k, v in last.items() if v is not None])
        db.executemany("DELETE FROM kv WHERE k = ?", [(k,) for k, v in last.items() if v is None])
        db.execute("COMMIT")

    def get(self, k):
        row = self.db.execute("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()
        return None if row is None else row[0]

    def range(self, lo, n):
        return self.db.execute("SELECT k, v FROM kv WHERE k >= ? ORDER BY k LIMIT ?", (lo, n)).fetchall()

    def flush(self):
        pass  # committed transactions are in the WAL file: a killed process loses nothing

    def close(self):
        self.db.close()


_OPEN = {"rocksdict": _Rocks, "lmdb": _Lmdb, "plyvel": _Plyvel, "sqlite3": _Sqlite}


def open_store(name: str, path: str):
    try:
        return _OPEN[name](path)
    except ImportError:
        raise NotImplementedError(f"{name} is not installed") from None


def changelog(n: int, seed: int = 7):
    """``n`` changelog records over ``n // 2`` keys in random order, 5% tombstones."""
    r = random.Random(seed)
    vals = values(1024)
    return [(key(r.randrange(n // 2)), None if r.random() < 0.05 else vals[i % 1024]) for i in range(n)]


def load(store, n: int) -> None:
    vals = values(1024)
    order = list(range(n))
    random.Random(3).shuffle(order)
    for i in range(0, n, RESTORE_BATCH):
        store.write([(key(j), vals[j % 1024]) for j in order[i:i + RESTORE_BATCH]])
    store.flush()


def disk_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


class _Loaded:
    """A store of N keys, made once per candidate."""

    params = CANDIDATES
    param_names = ["store"]
    timeout = 1200

    def setup_cache(self):
        root = os.path.abspath("bench-streams-stores")
        shutil.rmtree(root, ignore_errors=True)
        for name in CANDIDATES:
            try:
                s = open_store(name, os.path.join(root, name))
            except NotImplementedError:
                continue
            load(s, N)
            s.close()
        return root

    def setup(self, root, name):
        if not os.path.exists(os.path.join(root, name)):
            raise NotImplementedError(f"{name} is not installed")
        self.path = os.path.join(root, name)
        self.store = open_store(name, self.path)
        r = random.Random(11)
        self.get_keys = [key(r.randrange(N)) for _ in range(GETS)]
        self.range_keys = [key(r.randrange(N)) for _ in range(RANGES)]

    def teardown(self, root, name):
        self.store.close()


class Reads(_Loaded):
    def time_get(self, root, name):
        get = self.store.get
        for k in self.get_keys:
            get(k)

    def time_range(self, root, name):
        rng = self.store.range
        for k in self.range_keys:
            rng(k, 100)

    def track_disk_bytes(self, root, name):
        return disk_bytes(self.path)

    track_disk_bytes.unit = "bytes"


class Open(_Loaded):
    def setup(self, root, name):
        if not os.path.exists(os.path.join(root, name)):
            raise NotImplementedError(f"{name} is not installed")
        self.path = os.path.join(root, name)

    def teardown(self, root, name):
        pass

    def time_open(self, root, name):
        s = open_store(name, self.path)
        s.get(key(1))
        s.close()


class Writes:
    params = CANDIDATES
    param_names = ["store"]
    timeout = 1200

    def setup(self, name):
        self.dir = tempfile.mkdtemp(prefix="bench-streams-stores-", dir=os.getcwd())
        self.store = open_store(name, os.path.join(self.dir, name))
        vals = values(1024)
        r = random.Random(5)
        puts = [(key(r.randrange(N)), vals[i % 1024]) for i in range(PUTS)]
        self.put_batches = [puts[i:i + BATCH] for i in range(0, PUTS, BATCH)]
        self.records = changelog(N)

    def teardown(self, name):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def time_put(self, name):
        write = self.store.write
        for batch in self.put_batches:
            write(batch)
        self.store.flush()

    def time_restore(self, name):
        write, recs = self.store.write, self.records
        for i in range(0, len(recs), RESTORE_BATCH):
            write(recs[i:i + RESTORE_BATCH])
        self.store.flush()


class _Context:
    application_id, task_id, partition, changelog_topic = "bench", "0_0", 0, None

    def __init__(self, state_dir):
        self.state_dir = state_dir

    def log_change(self, key, value, timestamp):
        pass


class WindowStores:
    """pylog's own window stores through their API (the windowed-aggregation path:
    fetch the current aggregate, put the new one), in memory and on RocksDB, and a
    restore of RESTORE_RECORDS changelog records."""

    params = ["in_memory", "persistent"]
    param_names = ["store"]
    timeout = 600
    OPS = 2_000 if SMALL else 50_000
    RESTORE_RECORDS = 20_000 if SMALL else 200_000

    def setup(self, kind):
        from pylog.streams.state import Stores
        from pylog.streams.state.keys import window_key_to_binary

        self.dir = tempfile.mkdtemp(prefix="bench-streams-window-", dir=os.getcwd())
        self.store = getattr(Stores, f"{kind}_window_store")("w", 3_600_000, 1000).with_logging_disabled().build()
        self.store.init(_Context(self.dir))
        r = random.Random(9)
        vals = values(64)
        self.ops = [(b"key-%d" % r.randrange(5000), (i // 100) * 1000) for i in range(self.OPS)]
        self.changelog = [(window_key_to_binary(b"key-%d" % r.randrange(5000), (i // 100) * 1000, 0), vals[i % 64])
                          for i in range(self.RESTORE_RECORDS)]

    def teardown(self, kind):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def time_fetch_put(self, kind):
        fetch, put, v = self.store.fetch, self.store.put, b"x" * 100
        for key, start in self.ops:
            fetch(key, start)
            put(key, v, start)
        self.store.flush()

    def time_restore(self, kind):
        restore, recs = self.store.restore_batch, self.changelog
        for i in range(0, len(recs), RESTORE_BATCH):
            restore(recs[i:i + RESTORE_BATCH])
        self.store.flush()
