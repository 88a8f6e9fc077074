"""One contract for each store type, run against the in-memory and the persistent
(RocksDB) implementation: they must behave identically."""

from __future__ import annotations

import pytest

from pylog.errors import IllegalStateError
from pylog.streams.state import KeyValueStore, SessionStore, WindowStore, read_only

from .conftest import build_kv, build_session, build_window


# -- key-value ------------------------------------------------------------------

@pytest.fixture(params=[False, True], ids=["plain", "cached"])
def kv(request, impl, ctx, opened):
    return opened(build_kv(impl, caching=request.param), ctx)


def test_kv_is_a_key_value_store(kv):
    assert isinstance(kv, KeyValueStore)
    assert kv.name == "kv"


def test_kv_put_get_delete(kv):
    assert kv.get(b"a") is None
    kv.put(b"a", b"1")
    kv.put(b"b", b"2")
    kv.put(b"a", b"3")
    assert kv.get(b"a") == b"3"
    assert kv.delete(b"a") == b"3"
    assert kv.get(b"a") is None
    assert kv.delete(b"a") is None
    kv.put(b"b", None)  # None deletes
    assert kv.get(b"b") is None
    assert list(kv.all()) == []


def test_kv_put_if_absent_and_put_all(kv):
    assert kv.put_if_absent(b"k", b"1") is None
    assert kv.put_if_absent(b"k", b"2") == b"1"
    assert kv.get(b"k") == b"1"
    kv.put_all([(b"x", b"1"), (b"y", b"2"), (b"k", None)])
    assert list(kv.all()) == [(b"x", b"1"), (b"y", b"2")]


def test_kv_ranges_are_inclusive_and_lexicographic(kv):
    keys = [b"", b"a", b"a\x00", b"ab", b"b", b"\xff", b"\xff\x00"]
    for i, k in enumerate(keys):
        kv.put(k, b"%d" % i)
    expect = sorted((k, b"%d" % i) for i, k in enumerate(keys))
    assert list(kv.all()) == expect
    assert list(kv.range(None, None)) == expect
    assert list(kv.range(b"a", b"ab")) == [(b"a", b"1"), (b"a\x00", b"2"), (b"ab", b"3")]
    assert list(kv.range(b"a\x01", None)) == [e for e in expect if e[0] >= b"a\x01"]
    assert list(kv.range(None, b"a")) == [(b"", b"0"), (b"a", b"1")]
    assert list(kv.reverse_range(b"a", b"ab")) == [(b"ab", b"3"), (b"a\x00", b"2"), (b"a", b"1")]
    assert list(kv.reverse_range(None, None)) == expect[::-1]
    assert list(kv.range(b"b", b"a")) == []  # inverted: empty, as Kafka
    assert list(kv.prefix_scan(b"a")) == [(b"a", b"1"), (b"a\x00", b"2"), (b"ab", b"3")]
    assert list(kv.prefix_scan(b"\xff")) == [(b"\xff", b"5"), (b"\xff\x00", b"6")]
    assert list(kv.prefix_scan(b"zz")) == []
    assert kv.approximate_num_entries() >= 1


def test_kv_rejects_non_bytes_keys(kv):
    with pytest.raises(TypeError):
        kv.put("a", b"1")
    with pytest.raises(TypeError):
        kv.get(None)


def test_kv_closed_store_refuses(impl, ctx, opened):
    s = opened(build_kv(impl), ctx)
    s.close()
    assert not s.is_open()
    with pytest.raises(IllegalStateError):
        s.get(b"a")
    with pytest.raises(IllegalStateError):
        s.put(b"a", b"1")


def test_kv_logging_sends_every_write(impl, ctx, opened):
    s = opened(build_kv(impl), ctx)
    ctx.timestamp = 42
    s.put(b"a", b"1")
    s.put_all([(b"b", b"2")])
    s.put_if_absent(b"a", b"9")  # present: not written, not logged
    s.delete(b"b")
    assert [(k, v, ts) for _, k, v, ts in ctx.changelog] == [
        (b"a", b"1", 42), (b"b", b"2", 42), (b"b", None, 42)]


def test_kv_restore_batch_applies_tombstones(kv, ctx):
    kv.restore_batch([(b"a", b"1"), (b"b", b"2"), (b"a", None)])
    assert list(kv.all()) == [(b"b", b"2")]
    assert ctx.changelog == []  # restoring logs nothing


def test_kv_read_only_view(kv):
    kv.put(b"a", b"1")
    view = read_only(kv)
    assert view.get(b"a") == b"1"
    assert list(view.range(None, None)) == [(b"a", b"1")]
    for write in ("put", "delete", "put_all", "flush", "close", "init"):
        assert not hasattr(view, write)


# -- window ---------------------------------------------------------------------

@pytest.fixture(params=[False, True], ids=["plain", "cached"])
def win(request, impl, ctx, opened):
    return opened(build_window(impl, retention=120_000, size=1000, caching=request.param), ctx)


def test_window_is_a_window_store(win):
    assert isinstance(win, WindowStore)
    assert (win.retention_ms, win.window_size_ms, win.retain_duplicates) == (120_000, 1000, False)


def test_window_put_fetch(win):
    win.put(b"a", b"1", 0)
    win.put(b"a", b"2", 1000)
    win.put(b"b", b"3", 1000)
    win.put(b"a", b"4", 1000)  # overwrites
    assert win.fetch(b"a", 0) == b"1"
    assert win.fetch(b"a", 1000) == b"4"
    assert win.fetch(b"a", 2000) is None
    assert list(win.fetch_range(b"a", 0, 5000)) == [(0, b"1"), (1000, b"4")]
    assert list(win.fetch_range(b"a", 1, 1000)) == [(1000, b"4")]
    assert list(win.fetch_key_range(b"a", b"b", 1000, 1000)) == [((b"a", 1000), b"4"), ((b"b", 1000), b"3")]
    assert list(win.fetch_all(0, 999)) == [((b"a", 0), b"1")]
    assert list(win.all()) == [((b"a", 0), b"1"), ((b"a", 1000), b"4"), ((b"b", 1000), b"3")]
    win.put(b"a", None, 0)
    assert win.fetch(b"a", 0) is None
    assert list(win.fetch_key_range(b"b", b"a", 0, 5000)) == []


def test_window_keys_that_prefix_each_other(win):
    # The store key is not length-prefixed: keys that prefix each other must not mix.
    keys = [b"a", b"a\x00", b"a\x00\x00\x00", b"ab"]
    for i, k in enumerate(keys):
        for t in (0, 60_000, 61_000):
            win.put(k, b"%d-%d" % (i, t), t)
    for i, k in enumerate(keys):
        assert list(win.fetch_range(k, 0, 61_000)) == [(t, b"%d-%d" % (i, t)) for t in (0, 60_000, 61_000)]
    got = list(win.fetch_key_range(b"a", b"a\x00", 0, 61_000))
    assert got == [((k, t), b"%d-%d" % (i, t)) for t in (0, 60_000, 61_000) for i, k in enumerate(keys[:2])]


def test_window_retention_drops_by_stream_time(win):
    win.put(b"a", b"old", 0)
    win.put(b"a", b"mid", 60_000)
    win.put(b"b", b"new", 120_000)  # stream time 120000: min live 1
    assert win.fetch(b"a", 0) is None
    assert list(win.fetch_range(b"a", 0, 200_000)) == [(60_000, b"mid")]
    win.put(b"a", b"late", 0)  # expired on arrival: dropped
    assert win.fetch(b"a", 0) is None
    win.put(b"c", b"x", 180_000)  # min live 60001
    assert list(win.all()) == [((b"b", 120_000), b"new"), ((b"c", 180_000), b"x")]
    assert win.observed_stream_time == 180_000


def test_window_retain_duplicates(impl, ctx, opened):
    w = opened(build_window(impl, dups=True), ctx)
    w.put(b"a", b"1", 5)
    w.put(b"a", b"2", 5)
    w.put(b"a", b"1", 5)
    w.put(b"a", None, 5)  # deletes nothing with duplicates (but is logged, seqnum 4)
    assert list(w.fetch_range(b"a", 0, 10)) == [(5, b"1"), (5, b"2"), (5, b"1")]
    assert w.fetch(b"a", 5) == b"1"
    # Changelog keys: key + 8-byte start + 4-byte seqnum 1, 2, 3 (Kafka's WindowKeySchema).
    assert [(k, v) for _, k, v, _ in ctx.changelog] == [
        (b"a" + (5).to_bytes(8, "big") + (n).to_bytes(4, "big"), v)
        for n, v in ((1, b"1"), (2, b"2"), (3, b"1"), (4, None))]


def test_window_changelog_key_layout(impl, ctx, opened):
    w = opened(build_window(impl), ctx)
    w.put(b"key", b"v", 1_700_000_000_000)
    w.put(b"key", None, 1_700_000_000_000)
    (_, k1, v1, ts1), (_, k2, v2, _) = ctx.changelog
    assert k1 == k2 == b"key" + (1_700_000_000_000).to_bytes(8, "big") + bytes(4)
    assert (v1, v2) == (b"v", None)
    assert ts1 == 1_700_000_000_000  # no record timestamp in the context: the window start


def test_window_rejects_negative_times(win):
    with pytest.raises(ValueError):
        win.put(b"a", b"1", -1)
    with pytest.raises(ValueError):
        list(win.fetch_range(b"a", -5, 10))


def test_window_read_only_view(win):
    win.put(b"a", b"1", 0)
    view = read_only(win)
    assert view.fetch(b"a", 0) == b"1"
    assert list(view.all()) == [((b"a", 0), b"1")]
    assert not hasattr(view, "put")


# -- session --------------------------------------------------------------------

@pytest.fixture(params=[False, True], ids=["plain", "cached"])
def ses(request, impl, ctx, opened):
    return opened(build_session(impl, retention=120_000, caching=request.param), ctx)


def test_session_is_a_session_store(ses):
    assert isinstance(ses, SessionStore)


def test_session_put_find_remove(ses):
    ses.put((b"a", 0, 10), b"s1")
    ses.put((b"a", 20, 30), b"s2")
    ses.put((b"a", 5, 40), b"s3")
    ses.put((b"b", 0, 10), b"t1")
    assert list(ses.fetch(b"a")) == [((b"a", 0, 10), b"s1"), ((b"a", 20, 30), b"s2"), ((b"a", 5, 40), b"s3")]
    # sessions that end at or after 15 and start at or before 20
    assert list(ses.find_sessions(b"a", 15, 20)) == [((b"a", 20, 30), b"s2"), ((b"a", 5, 40), b"s3")]
    assert ses.fetch_session(b"a", 20, 30) == b"s2"
    assert ses.fetch_session(b"a", 20, 31) is None
    ses.remove((b"a", 20, 30))
    assert ses.fetch_session(b"a", 20, 30) is None
    assert [s for s, _ in ses.fetch(b"a")] == [(b"a", 0, 10), (b"a", 5, 40)]


def test_session_retention_by_end_time(ses):
    ses.put((b"a", 0, 10), b"old")
    ses.put((b"a", 100_000, 130_000), b"new")  # stream time 130000: min live 10001
    assert list(ses.fetch(b"a")) == [((b"a", 100_000, 130_000), b"new")]
    ses.put((b"a", 0, 10_000), b"late")
    assert ses.fetch_session(b"a", 0, 10_000) is None


def test_session_changelog_key_layout(impl, ctx, opened):
    s = opened(build_session(impl), ctx)
    s.put((b"k", 7, 9), b"v")
    (_, key, value, ts), = ctx.changelog
    assert key == b"k" + (9).to_bytes(8, "big") + (7).to_bytes(8, "big")  # end, then start
    assert (value, ts) == (b"v", 9)


def test_session_rejects_bad_sessions(ses):
    with pytest.raises(ValueError):
        ses.put((b"a", 10, 5), b"x")
    with pytest.raises(TypeError):
        ses.put((b"a", 10), b"x")


def test_session_read_only_view(ses):
    ses.put((b"a", 0, 1), b"x")
    view = read_only(ses)
    assert view.fetch_session(b"a", 0, 1) == b"x"
    assert not hasattr(view, "remove")


# -- persistence across close/init ----------------------------------------------

def test_persistent_stores_keep_data_across_reopen(ctx):
    kv, win, ses = build_kv("rocksdb"), build_window("rocksdb", dups=True), build_session("rocksdb")
    for s in (kv, win, ses):
        s.init(ctx)
    kv.put(b"a", b"1")
    win.put(b"a", b"w", 200_000)
    win.put(b"a", b"w2", 200_000)
    ses.put((b"a", 0, 5), b"s")
    for s in (kv, win, ses):
        s.close()
    for s in (kv, win, ses):
        s.init(ctx)
    try:
        assert kv.get(b"a") == b"1"
        assert list(win.fetch_range(b"a", 0, 10**6)) == [(200_000, b"w"), (200_000, b"w2")]
        assert win.observed_stream_time == 200_000
        win.put(b"a", b"w3", 200_000)  # the seqnum continues: no entry is overwritten
        assert [v for _, v in win.fetch_range(b"a", 0, 10**6)] == [b"w", b"w2", b"w3"]
        assert ses.fetch_session(b"a", 0, 5) == b"s"
    finally:
        for s in (kv, win, ses):
            s.close()


def test_persistent_layout_is_kafkas(ctx):
    import os

    win = build_window("rocksdb", retention=120_000)
    win.init(ctx)
    win.put(b"a", b"1", 61_000)
    win.put(b"a", b"1", 130_000)
    win.close()
    base = os.path.join(ctx.state_dir, "app", "0_0", "rocksdb", "win")
    assert sorted(os.listdir(base)) == ["win.120000", "win.60000"]


def test_window_put_window_runs_equals_puts_one_by_one(impl, ctx, opened):
    # runs of window starts (binary keys), the greatest start expiring the smallest,
    # keys that prefix each other, a run below the live range: the same reads and
    # stream time as the puts one by one; the changelog is not the store's to write
    import random
    import struct

    r = random.Random(5)
    one = opened(build_window(impl, name="one", retention=3_000, logging=False), ctx)
    runs_store = opened(build_window(impl, name="runs", retention=3_000, logging=False), ctx)
    for batch in range(30):
        runs: dict = {}
        for _ in range(r.randrange(1, 12)):
            start = r.randrange(0, 40) * 500 + batch * 200
            key = r.choice([b"a", b"a\x00", b"ab", b"b", b"\xff"])
            value = b"%d" % r.randrange(100)
            one.put(key, value, start)
            runs.setdefault(start, {})[key + struct.pack(">qi", start, 0)] = value
        runs_store.put_window_runs(runs)
        assert runs_store.observed_stream_time == one.observed_stream_time
        assert list(runs_store.fetch_all(0, 1 << 40)) == list(one.fetch_all(0, 1 << 40))
        if batch % 7 == 6:
            runs_store.flush()
    dups = opened(build_window(impl, name="dups", dups=True, logging=False), ctx)
    with pytest.raises(ValueError, match="retains duplicates"):
        dups.put_window_runs({0: {b"a" + struct.pack(">qi", 0, 0): b"1"}})


def test_a_segment_that_expires_between_flushes_never_reaches_the_disk(ctx, opened):
    # retention 2 s: 60 s segments; the puts at 1_000 and 61_000 expire before any
    # flush, so only the newest segment is created, on flush, with what is live.
    import os
    import struct

    from pylog.streams.state.persistent import store_directory

    win = opened(build_window("rocksdb", retention=2_000, logging=False), ctx)
    base = store_directory(ctx.state_dir, ctx.application_id, ctx.task_id, "win")
    win.put(b"a", b"1", 1_000)
    assert win.fetch(b"a", 1_000) == b"1"              # buffered, read before RocksDB
    win.put_window_runs({61_000: {b"a" + struct.pack(">qi", 61_000, 0): b"2",
                                  b"b" + struct.pack(">qi", 61_000, 0): b"3"}})
    win.put(b"b", None, 61_000)                        # a delete in a segment not on disk yet
    assert os.listdir(base) == []
    win.put(b"a", b"4", 125_000)                       # expires both
    assert (win.fetch(b"a", 1_000), win.fetch(b"a", 61_000)) == (None, None)
    win.flush()
    assert os.listdir(base) == ["win.120000"]
    assert list(win.fetch_all(0, 200_000)) == [((b"a", 125_000), b"4")]
    win.put(b"c", b"5", 125_500)
    win.put(b"c", None, 125_500)
    win.put(b"d", b"6", 190_000)
    win.put(b"d", None, 190_000)     # expires segment 120000; segment 180000 holds only a delete
    win.close()
    assert os.listdir(base) == ["win.180000"]           # created on close for the stream time alone
    win = opened(build_window("rocksdb", retention=2_000, logging=False), ctx)
    assert win.observed_stream_time == 190_000
    assert list(win.fetch_all(0, 200_000)) == []


@pytest.mark.parametrize("caching", [False, True])
def test_time_ordered_window_store_keeps_a_closing_window_1ms_longer(impl, ctx, opened, caching):
    # Kafka's time-ordered store (emit-on-window-close): retention = size + grace = 10;
    # at stream time 10 the window starting at 0 is still readable, at 11 it is gone.
    from pylog.streams.state import Stores

    b = (Stores.in_memory_window_store if impl == "memory" else Stores.persistent_window_store)(
        "win", 10, 10, time_ordered=True)
    w = opened((b.with_caching_enabled() if caching else b).build(), ctx)
    w.put(b"a", b"1", 0)
    w.put(b"b", b"2", 10)
    assert list(w.fetch_all(0, 10)) == [((b"a", 0), b"1"), ((b"b", 10), b"2")]
    w.put(b"b", b"3", 11)
    assert w.fetch(b"a", 0) is None
    plain = opened(build_window(impl, name="plain", retention=10, size=10), ctx)
    plain.put(b"a", b"1", 0)
    plain.put(b"b", b"2", 10)
    assert plain.fetch(b"a", 0) is None  # the ordinary store: gone at stream time 10


def test_kv_iterator_refuses_to_continue_after_close(impl, ctx):
    s = build_kv(impl, logging=False)
    s.init(ctx)
    s.put_all([(b"%02d" % i, b"v") for i in range(10)])
    it = s.range(None, None)
    assert next(it) == (b"00", b"v")
    s.close()
    with pytest.raises(IllegalStateError):
        next(it)


def test_a_segmented_store_ignores_entries_that_are_not_its_segments(ctx, caplog):
    # "win.²" passes str.isdigit() and fails int(): it must be ignored like "win.junk",
    # not stop the store from opening.
    import os

    from pylog.streams.state.persistent import store_directory

    win = build_window("rocksdb", logging=False)
    win.init(ctx)
    win.put(b"k", b"v", 5_000)
    win.close()
    path = store_directory(ctx.state_dir, ctx.application_id, ctx.task_id, "win")
    for stray in ("win.\u00b2", "win.junk", "win.\u0663"):
        os.mkdir(os.path.join(path, stray))
    win = build_window("rocksdb", logging=False)
    with caplog.at_level("WARNING"):
        win.init(ctx)
    try:
        assert list(win.fetch_range(b"k", 0, 10_000)) == [(5_000, b"v")]
        for stray in ("win.\u00b2", "win.junk", "win.\u0663"):
            assert f"ignoring {stray}" in caplog.text
    finally:
        win.close()
