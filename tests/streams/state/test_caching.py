"""The caching wrappers: one write per key per commit below the cache and in the
changelog, flush listener, reads that see the cache."""

from __future__ import annotations

import pytest

from .conftest import build_kv, build_session, build_window


def test_kv_cache_dedupes_writes_between_commits(impl, ctx, opened):
    s = opened(build_kv(impl, caching=True), ctx)
    seen = []
    s.set_flush_listener(lambda k, new, old, ts: seen.append((k, new, old, ts)), send_old_values=True)
    for i in range(10):
        ctx.timestamp = 100 + i
        s.put(b"a", b"%d" % i)
    s.put(b"b", b"x")
    s.delete(b"b")
    assert ctx.changelog == [] and seen == []  # nothing below the cache before the commit
    assert s.get(b"a") == b"9" and s.get(b"b") is None
    s.flush()
    # One record per key, stamped with the timestamp of its last write, in last-write order.
    assert [(k, v, ts) for _, k, v, ts in ctx.changelog] == [(b"a", b"9", 109), (b"b", None, 109)]
    assert seen == [(b"a", b"9", None, 109), (b"b", None, None, 109)]
    s.put(b"a", b"10")
    s.flush()
    assert seen[-1] == (b"a", b"10", b"9", 109)


def test_kv_cache_flushes_early_when_full(impl, ctx, opened):
    from pylog.streams.state import Stores

    b = (Stores.in_memory_key_value_store("kv") if impl == "memory" else Stores.persistent_key_value_store("kv"))
    s = opened(b.with_caching_enabled(max_entries=3).build(), ctx)
    for i in range(4):
        s.put(b"k%d" % i, b"v")
    assert len(ctx.changelog) == 4  # the fourth dirty key overflowed the cache
    assert [k for k, _ in s.all()] == [b"k0", b"k1", b"k2", b"k3"]


def test_kv_cache_merges_ranges(impl, ctx, opened):
    s = opened(build_kv(impl, caching=True), ctx)
    s.put_all([(b"a", b"1"), (b"c", b"3"), (b"e", b"5")])
    s.flush()
    s.put(b"b", b"2")
    s.delete(b"c")
    s.put(b"e", b"55")
    assert list(s.all()) == [(b"a", b"1"), (b"b", b"2"), (b"e", b"55")]
    assert list(s.reverse_range(b"b", None)) == [(b"e", b"55"), (b"b", b"2")]
    assert list(s.prefix_scan(b"c")) == []


def test_kv_cache_close_flushes(impl, ctx):
    s = build_kv(impl, caching=True)
    s.init(ctx)
    s.put(b"a", b"1")
    s.close()
    assert [(k, v) for _, k, v, _ in ctx.changelog] == [(b"a", b"1")]


def test_window_cache_dedupes_and_expires_like_the_store(impl, ctx, opened):
    s = opened(build_window(impl, retention=120_000, caching=True), ctx)
    for i in range(5):
        s.put(b"a", b"%d" % i, 1000)
    s.put(b"b", b"x", 2000)
    assert list(s.fetch_range(b"a", 0, 5000)) == [(1000, b"4")]
    s.flush()
    assert len(ctx.changelog) == 2
    s.put(b"c", b"y", 200_000)  # expires both windows, cached or not
    assert list(s.all()) == [((b"c", 200_000), b"y")]
    s.put(b"a", b"late", 1000)  # dropped, as the store drops it
    assert s.fetch(b"a", 1000) is None


def test_session_cache_dedupes(impl, ctx, opened):
    s = opened(build_session(impl, caching=True), ctx)
    for i in range(3):
        s.put((b"a", 0, 10), b"%d" % i)
    s.remove((b"a", 0, 10))
    s.put((b"a", 5, 20), b"z")
    assert list(s.fetch(b"a")) == [((b"a", 5, 20), b"z")]
    s.flush()
    assert [v for _, _, v, _ in ctx.changelog] == [None, b"z"]


@pytest.mark.parametrize("max_entries", [0, -1])
def test_cache_size_must_be_positive(impl, max_entries):
    from pylog.streams.state import Stores

    with pytest.raises(ValueError):
        Stores.in_memory_key_value_store("kv").with_caching_enabled(max_entries=max_entries).build()
