"""murmur2 partitioning against kafka-python's independent implementation, and the
behaviour of the default, sticky and round-robin partitioners."""

import pathlib
import sys
from collections import Counter

import numpy as np
import pytest
from _kafka_python import murmur2 as kafka_python_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog.broker.partitioner import (
    DefaultPartitioner,
    Partitioner,
    RoundRobinPartitioner,
    UniformStickyPartitioner,
    murmur2,
    partition_for_key,
    partition_keys,
    partitioner_for_name,
    to_positive,
)
from pylog.errors import InvalidConfigError, InvalidPartitionsError, InvalidRequestError

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from benches import _data  # noqa: E402


def oracle_partition(key: bytes, n: int) -> int:
    return (kafka_python_murmur2(key) & 0x7FFFFFFF) % n


# Values from Kafka's own unit test of Utils.murmur2 (the Java client is the reference).
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize("key,expected", KAFKA_VECTORS)
def test_murmur2_matches_kafka_java_vectors(key, expected):
    assert murmur2(key) == expected


@given(st.binary(max_size=300))
def test_murmur2_matches_kafka_python(key):
    assert murmur2(key) & 0xFFFFFFFF == kafka_python_murmur2(key)
    assert -(2**31) <= murmur2(key) < 2**31


@given(st.binary(max_size=200), st.integers(1, 10_000))
def test_partition_for_key_matches_kafka_python(key, n):
    assert partition_for_key(key, n) == oracle_partition(key, n)
    assert DefaultPartitioner().partition("t", None, key, n) == oracle_partition(key, n)


def test_murmur2_accepts_any_bytes_like():
    key = b"some-key-123"
    assert murmur2(bytearray(key)) == murmur2(key) == murmur2(memoryview(key))
    assert murmur2(memoryview(b"xx" + key)[2:]) == murmur2(key)


def test_bad_key_types_raise_invalid_request():
    with pytest.raises(InvalidRequestError):
        murmur2("text")
    with pytest.raises(InvalidRequestError):
        DefaultPartitioner().partition("t", None, 42, 3)
    with pytest.raises(InvalidRequestError):
        partition_keys([b"a", "b"], 3)


@pytest.mark.parametrize("n", [0, -1, 2**31])
def test_bad_partition_counts_raise(n):
    with pytest.raises(InvalidPartitionsError):
        partition_for_key(b"k", n)
    with pytest.raises(InvalidPartitionsError):
        DefaultPartitioner().partition("t", None, b"k", n)
    with pytest.raises(InvalidPartitionsError):
        DefaultPartitioner().partition("t", None, None, n)
    with pytest.raises(InvalidPartitionsError):
        RoundRobinPartitioner().partition("t", None, None, n)
    with pytest.raises(InvalidPartitionsError):
        partition_keys([b"k"], n)


def test_to_positive_is_not_abs():
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(2**31)) == 0
    assert to_positive(5) == 5


# --------------------------------------------------------------------------- bulk

@given(st.lists(st.one_of(st.none(), st.binary(max_size=64)), max_size=50), st.integers(1, 500))
def test_partition_keys_list_form(keys, n):
    out = partition_keys(keys, n)
    assert out.dtype == np.int32 and out.shape == (len(keys),)
    assert out.tolist() == [-1 if k is None else oracle_partition(k, n) for k in keys]


@given(st.lists(st.binary(max_size=64), max_size=50), st.integers(1, 500))
def test_partition_keys_buffer_form(keys, n):
    buf = b"".join(keys)
    offsets = np.cumsum([0] + [len(k) for k in keys]).astype(np.int64)
    expected = [oracle_partition(k, n) for k in keys]
    assert partition_keys(buf, n, offsets).tolist() == expected
    assert partition_keys(bytearray(buf), n, offsets.astype(np.int32)).tolist() == expected


@given(st.lists(st.one_of(st.none(), st.binary(max_size=32)), max_size=40), st.integers(1, 100))
def test_partition_keys_offsets_and_lengths_with_null_keys(keys, n):
    buf = bytearray()
    offsets, lengths = [], []
    for k in keys:
        offsets.append(len(buf))
        if k is None:
            lengths.append(-1)
        else:
            lengths.append(len(k))
            buf += k + b"#"          # padding between keys must not matter
    out = partition_keys(bytes(buf), n, offsets, lengths)
    assert out.tolist() == [-1 if k is None else oracle_partition(k, n) for k in keys]


def test_partition_keys_large_batch_releases_gil_and_agrees():
    keys = _data.keys(20_000, cardinality=5000)
    buf = b"".join(keys)
    offsets = np.cumsum([0] + [len(k) for k in keys])
    expected = [oracle_partition(k, 24) for k in keys[:2000]]
    assert partition_keys(buf, 24, offsets)[:2000].tolist() == expected
    assert np.array_equal(partition_keys(buf, 24, offsets), partition_keys(keys, 24))


@pytest.mark.parametrize("offsets,lengths", [
    ([0, 5, 3], None),          # descending
    ([0, 4, 99], None),         # past the end
    ([-1, 2], None),            # negative start
    ([0], [99]),                # length past the end
    ([0], [-2]),                # negative length other than -1
    ([], None),                 # no boundaries at all
])
def test_partition_keys_rejects_ranges_outside_the_buffer(offsets, lengths):
    with pytest.raises(InvalidRequestError):
        partition_keys(b"abcdefgh", 4, offsets, lengths)


def test_partition_keys_shape_errors():
    with pytest.raises(InvalidRequestError):
        partition_keys(b"abc", 4, [0, 1], [1])       # lengths length differs
    with pytest.raises(InvalidRequestError):
        partition_keys(b"abc", 4, None, [1])         # lengths without offsets
    with pytest.raises(InvalidRequestError):
        partition_keys(12345, 4, [0, 1])             # not a buffer


# --------------------------------------------------------------------------- distribution

def test_keyed_distribution_is_even():
    keys = [b"user-%d" % i for i in range(120_000)]
    counts = np.bincount(partition_keys(keys, 12), minlength=12)
    expected = len(keys) / 12
    assert counts.sum() == len(keys)
    # murmur2 spreads sequential keys evenly: every partition within 3% of its share.
    assert np.all(np.abs(counts - expected) < 0.03 * expected), counts


def test_same_key_always_same_partition():
    p = DefaultPartitioner()
    assert len({p.partition("t", None, b"order-17", 30, [1, 2]) for _ in range(100)}) == 1


# --------------------------------------------------------------------------- sticky

def test_keyless_records_stick_until_new_batch():
    p = DefaultPartitioner()
    p.seed(7)
    available = [0, 2, 4, 6]
    first = p.partition("t", None, None, 8, available)
    assert first in available
    assert all(p.partition("t", None, None, 8, available) == first for _ in range(500))
    p.on_new_batch("t", first)
    second = p.partition("t", None, None, 8, available)
    assert second in available and second != first
    assert p.sticky_partition("t") == second


def test_stale_new_batch_notification_changes_nothing():
    p = DefaultPartitioner()
    current = p.partition("t", None, None, 5, [0, 1, 2, 3, 4])
    p.on_new_batch("t", (current + 1) % 5)
    assert p.partition("t", None, None, 5, [0, 1, 2, 3, 4]) == current
    p.on_new_batch("other-topic", 0)
    assert p.sticky_partition("other-topic") is None


def test_sticky_partition_is_per_topic_and_keyed_records_do_not_move_it():
    p = DefaultPartitioner()
    p.seed(3)
    a = p.partition("a", None, None, 50, list(range(50)))
    b = p.partition("b", None, None, 50, list(range(50)))
    for i in range(100):
        p.partition("a", None, b"k%d" % i, 50, list(range(50)))
    assert p.partition("a", None, None, 50, list(range(50))) == a
    assert p.partition("b", None, None, 50, list(range(50))) == b


def test_sticky_choice_single_or_no_available_partition():
    p = DefaultPartitioner()
    assert p.partition("t", None, None, 6, [4]) == 4
    p.on_new_batch("t", 4)
    assert p.partition("t", None, None, 6, [4]) == 4         # the only one left
    q = DefaultPartitioner()
    q.seed(11)
    seen = set()
    for _ in range(300):
        part = q.partition("t", None, None, 6, [])            # none known available: any
        seen.add(part)
        q.on_new_batch("t", part)
    assert seen == set(range(6))


def test_sticky_choices_spread_over_available_partitions():
    p = DefaultPartitioner()
    p.seed(2024)
    available = [1, 3, 5, 7, 9]
    picks = Counter()
    for _ in range(5000):
        part = p.partition("t", None, None, 10, available)
        picks[part] += 1
        p.on_new_batch("t", part)
    assert set(picks) == set(available)
    assert min(picks.values()) > 5000 / 5 * 0.8


def test_sticky_partition_reset_when_partition_count_shrinks():
    p = DefaultPartitioner()
    p.seed(5)
    for _ in range(50):
        p.on_new_batch("t", p.partition("t", None, None, 100, list(range(50, 100))))
    assert p.partition("t", None, None, 10, list(range(10))) < 10


def test_available_partition_out_of_range_is_rejected():
    with pytest.raises(InvalidPartitionsError):
        DefaultPartitioner().partition("t", None, None, 3, [7])
    with pytest.raises(InvalidPartitionsError):
        RoundRobinPartitioner().partition("t", None, None, 3, [7])


def test_seeded_partitioners_choose_the_same_sequence():
    def run(seed):
        p = DefaultPartitioner()
        p.seed(seed)
        out = []
        for _ in range(50):
            out.append(p.partition("t", None, None, 16, list(range(16))))
            p.on_new_batch("t", out[-1])
        return out
    assert run(99) == run(99)
    assert run(99) != run(100)


def test_ignore_keys_partitions_keyed_records_as_keyless():
    p = DefaultPartitioner(ignore_keys=True)
    assert p.ignore_keys
    parts = {p.partition("t", None, b"k%d" % i, 20, list(range(20))) for i in range(200)}
    assert len(parts) == 1


def test_uniform_sticky_ignores_keys():
    p = UniformStickyPartitioner()
    p.seed(1)
    first = p.partition("t", None, b"key-a", 20, list(range(20)))
    assert all(p.partition("t", None, b"key-%d" % i, 20, list(range(20))) == first for i in range(100))
    p.on_new_batch("t", first)
    assert p.partition("t", None, b"key-a", 20, list(range(20))) != first


# --------------------------------------------------------------------------- round robin

def test_round_robin_cycles_available_partitions_per_topic():
    p = RoundRobinPartitioner()
    assert [p.partition("t", None, b"k", 6, [0, 2, 4]) for _ in range(7)] == [0, 2, 4, 0, 2, 4, 0]
    assert [p.partition("u", None, None, 3) for _ in range(4)] == [0, 1, 2, 0]
    p.on_new_batch("t", 0)   # no per-batch state: the rotation goes on
    assert p.partition("t", None, None, 6, [0, 2, 4]) == 2


# --------------------------------------------------------------------------- interface

def test_builtins_are_partitioners_and_custom_ones_plug_in():
    for cls in (DefaultPartitioner, RoundRobinPartitioner, UniformStickyPartitioner):
        assert isinstance(cls(), Partitioner)

    class ByFirstByte(Partitioner):
        def partition(self, topic, key, key_bytes, num_partitions, available_partitions=None):
            return key_bytes[0] % num_partitions

    custom = ByFirstByte()
    assert isinstance(custom, Partitioner)
    assert custom.partition("t", None, b"\x07", 4) == 3
    assert custom.on_new_batch("t", 0) is None

    with pytest.raises(TypeError):
        Partitioner()


def test_partitioner_for_name():
    assert isinstance(partitioner_for_name("default"), DefaultPartitioner)
    assert isinstance(partitioner_for_name("org.apache.kafka.clients.producer.RoundRobinPartitioner"),
                      RoundRobinPartitioner)
    assert isinstance(partitioner_for_name("uniform_sticky"), UniformStickyPartitioner)
    with pytest.raises(InvalidConfigError):
        partitioner_for_name("nope")


@settings(max_examples=30)
@given(st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=30), st.integers(1, 64))
def test_bulk_agrees_with_per_record_partitioner(keys, n):
    p = DefaultPartitioner()
    assert partition_keys(keys, n).tolist() == [p.partition("t", None, k, n) for k in keys]
