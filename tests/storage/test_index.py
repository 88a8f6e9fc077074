"""Offset and time index: lookup against bisect on random data, append/truncate rules,
sanity checks, trimming."""

import bisect
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pylog.storage.index import CorruptIndexError, OffsetIndex, TimeIndex

BASE = 1000


def _offset_index(tmp_path, entries, max_bytes=1 << 16):
    idx = OffsetIndex(str(tmp_path / "x.index"), BASE, max_bytes, writable=True, fresh=True)
    for off, pos in entries:
        idx.append(off, pos)
    return idx


@st.composite
def increasing_pairs(draw, max_size=3000):
    n = draw(st.integers(0, max_size))
    rels = sorted(set(draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n))))
    poss = sorted(set(draw(st.lists(st.integers(0, 2**32 - 1), min_size=len(rels), max_size=len(rels)))))
    rels = rels[:len(poss)]
    return [(BASE + r, p) for r, p in zip(rels, poss)]


@settings(max_examples=60)
@given(entries=increasing_pairs(), targets=st.lists(st.integers(BASE - 5, BASE + 2**32 + 5), max_size=50))
def test_offset_lookup_matches_bisect(tmp_path_factory, entries, targets):
    idx = _offset_index(tmp_path_factory.mktemp("oi"), entries, max_bytes=max(8, len(entries) * 8))
    keys = [o for o, _ in entries]
    targets = targets + keys[:5] + [k + 1 for k in keys[-5:]] + [k - 1 for k in keys[-1500:-1490]]
    for t in targets:
        i = bisect.bisect_right(keys, t) - 1
        expected = entries[i] if i >= 0 else (BASE, 0)
        assert idx.lookup(t) == expected, t
    idx.close()


@settings(max_examples=60)
@given(n=st.integers(0, 2500), data=st.data())
def test_time_lookup_matches_bisect(tmp_path_factory, n, data):
    ts = sorted(set(data.draw(st.lists(st.integers(0, 2**62), min_size=n, max_size=n))))
    offs = sorted(data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=len(ts), max_size=len(ts))))
    idx = TimeIndex(str(tmp_path_factory.mktemp("ti") / "x.timeindex"), BASE, (len(ts) + 1) * 12,
                    writable=True, fresh=True)
    for t, o in zip(ts, offs):
        assert idx.maybe_append(t, BASE + o, skip_full_check=True)
    targets = data.draw(st.lists(st.integers(-1, 2**62 + 1), max_size=40)) + ts[:3] + ts[-3:]
    for target in targets:
        i = bisect.bisect_right(ts, target) - 1
        expected = (ts[i], BASE + offs[i]) if i >= 0 else (-1, BASE)
        assert idx.lookup(target) == expected
    idx.close()


def test_entries_are_numpy_views_in_kafka_format(tmp_path):
    idx = _offset_index(tmp_path, [(BASE + 3, 100), (BASE + 9, 5000)])
    e = idx.entries
    assert e.dtype.names == ("relative_offset", "position")
    assert list(e["relative_offset"]) == [3, 9] and list(e["position"]) == [100, 5000]
    assert not e.flags.writeable
    idx.trim()
    with open(idx.path, "rb") as f:
        assert f.read() == bytes.fromhex("00000003 00000064 00000009 00001388".replace(" ", ""))
    del e
    idx.close()


def test_append_rules_and_full(tmp_path):
    idx = _offset_index(tmp_path, [], max_bytes=24)
    assert idx.max_entries == 3
    idx.append(BASE + 1, 10)
    with pytest.raises(Exception):
        idx.append(BASE + 1, 20)  # offset not increasing
    with pytest.raises(Exception):
        idx.append(BASE + 2, 10)  # position not increasing
    idx.append(BASE + 2, 20)
    idx.append(BASE + 3, 30)
    assert idx.is_full
    with pytest.raises(Exception):
        idx.append(BASE + 4, 40)
    idx.close()


def test_time_index_reserves_last_slot_and_ignores_older(tmp_path):
    ti = TimeIndex(str(tmp_path / "x.timeindex"), BASE, 36, writable=True, fresh=True)
    assert ti.maybe_append(10, BASE)
    assert not ti.maybe_append(10, BASE + 1)  # not a larger timestamp
    assert ti.maybe_append(20, BASE + 2)
    assert ti.is_full  # the last slot is kept for the roll entry
    assert not ti.maybe_append(30, BASE + 3)
    assert ti.maybe_append(30, BASE + 3, skip_full_check=True)
    assert ti.last_entry == (30, BASE + 3)
    ti.close()


def test_truncate_to(tmp_path):
    idx = _offset_index(tmp_path, [(BASE + i * 10, i * 100) for i in range(1, 8)])
    idx.truncate_to(BASE + 35)
    assert [int(x) for x in idx.entries["relative_offset"]] == [10, 20, 30]
    idx.truncate_to(BASE + 30)
    assert len(idx) == 2
    ti = TimeIndex(str(tmp_path / "x.timeindex"), BASE, 1200, writable=True, fresh=True)
    for i in range(1, 8):
        ti.maybe_append(i * 1000, BASE + i * 10)
    ti.truncate_to(BASE + 41)
    assert ti.last_entry == (4000, BASE + 40)
    idx.close()
    ti.close()


@pytest.mark.parametrize("damage", ["decreasing", "beyond_segment", "beyond_offsets", "odd_size"])
def test_sanity_check_rejects(tmp_path, damage):
    idx = _offset_index(tmp_path, [(BASE + 5, 100), (BASE + 9, 200)])
    idx.trim()
    path = idx.path
    idx.close()
    data = bytearray(Path(path).read_bytes())
    if damage == "decreasing":
        data[8:12] = (1).to_bytes(4, "big")
    elif damage == "odd_size":
        data += b"\x01"
    with open(path, "wb") as f:
        f.write(data)
    if damage == "odd_size":
        with pytest.raises(CorruptIndexError):
            OffsetIndex(path, BASE, 1 << 10, writable=False)
        return
    idx = OffsetIndex(path, BASE, 1 << 10, writable=False)
    max_offset = BASE + (7 if damage == "beyond_offsets" else 100)
    size = 150 if damage == "beyond_segment" else 10_000
    with pytest.raises(CorruptIndexError):
        idx.sanity_check(max_offset, size)
    idx.close()


def test_preallocated_then_trimmed(tmp_path):
    idx = _offset_index(tmp_path, [(BASE + 1, 1)], max_bytes=800)
    assert os.path.getsize(idx.path) == 800
    idx.trim()
    assert os.path.getsize(idx.path) == 8
    assert idx.lookup(BASE + 50) == (BASE + 1, 1)
    idx.close()


def test_empty_index(tmp_path):
    idx = _offset_index(tmp_path, [])
    assert idx.lookup(BASE + 10) == (BASE, 0)
    idx.trim()
    assert os.path.getsize(idx.path) == 0
    assert idx.lookup(BASE + 10) == (BASE, 0)
    assert len(idx.entries) == 0 and isinstance(idx.entries, np.ndarray)
    idx.close()
