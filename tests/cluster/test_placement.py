"""Replica placement (Kafka's AdminUtils.assignReplicasToBrokers): layout, balance, racks, errors."""

from __future__ import annotations

import collections
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog.cluster.placement import assign_replicas_to_brokers, rack_alternated_brokers
from pylog.errors import InvalidPartitionsError, InvalidReplicaAssignmentError, InvalidReplicationFactorError


def test_rack_unaware_layout_is_kafkas():
    # Kafka's own expected layout for 5 brokers, 10 partitions, RF 3, fixed start index 0.
    assert assign_replicas_to_brokers(range(5), 10, 3, fixed_start_index=0) == {
        0: (0, 1, 2), 1: (1, 2, 3), 2: (2, 3, 4), 3: (3, 4, 0), 4: (4, 0, 1),
        5: (0, 2, 3), 6: (1, 3, 4), 7: (2, 4, 0), 8: (3, 0, 1), 9: (4, 1, 2)}


def test_rack_alternated_order():
    racks = {0: "r1", 1: "r2", 2: "r2", 3: "r3", 4: "r3", 5: "r1", 6: "r3"}
    assert rack_alternated_brokers(racks) == [0, 1, 3, 5, 2, 4, 6]


def test_same_seed_same_layout_and_start_partition_continues():
    a = assign_replicas_to_brokers([1, 2, 3, 4], 8, 2, rng=random.Random(7))
    assert a == assign_replicas_to_brokers([1, 2, 3, 4], 8, 2, rng=random.Random(7))
    more = assign_replicas_to_brokers([1, 2, 3, 4], 2, 2, start_partition=8, fixed_start_index=1)
    assert sorted(more) == [8, 9]


@settings(max_examples=60, deadline=None)
@given(brokers=st.integers(1, 9), partitions=st.integers(1, 40), seed=st.integers(0, 2**32),
       data=st.data())
def test_rack_unaware_spreads_evenly(brokers, partitions, seed, data):
    rf = data.draw(st.integers(1, brokers))
    ids = [10 + 3 * i for i in range(brokers)]
    got = assign_replicas_to_brokers(ids, partitions, rf, rng=random.Random(seed))
    assert sorted(got) == list(range(partitions))
    leaders = collections.Counter(r[0] for r in got.values())
    replicas = collections.Counter(b for r in got.values() for b in r)
    for r in got.values():
        assert len(r) == rf and len(set(r)) == rf and set(r) <= set(ids)
    # Leaders: consecutive partitions walk the brokers, so counts differ by at most one.
    assert max(leaders.values()) - min(leaders.get(b, 0) for b in ids) <= 1
    assert max(replicas.values()) - min(replicas.get(b, 0) for b in ids) <= rf


@settings(max_examples=60, deadline=None)
@given(racks=st.lists(st.integers(0, 3), min_size=1, max_size=9), partitions=st.integers(1, 30),
       seed=st.integers(0, 2**32), data=st.data())
def test_rack_aware_uses_as_many_racks_as_it_can(racks, partitions, seed, data):
    rack_of = {b: f"rack-{r}" for b, r in enumerate(racks)}
    rf = data.draw(st.integers(1, len(rack_of)))
    got = assign_replicas_to_brokers(rack_of, partitions, rf, rng=random.Random(seed))
    num_racks = len(set(rack_of.values()))
    for replicas in got.values():
        assert len(set(replicas)) == rf
        assert len({rack_of[b] for b in replicas}) == min(rf, num_racks)


def test_rack_aware_balances_leaders_over_brokers():
    rack_of = {1: "a", 2: "a", 3: "b", 4: "b", 5: "c", 6: "c"}
    got = assign_replicas_to_brokers(rack_of, 12, 3, fixed_start_index=0)
    assert collections.Counter(r[0] for r in got.values()) == {b: 2 for b in rack_of}
    assert collections.Counter(b for r in got.values() for b in r) == {b: 6 for b in rack_of}


def test_errors_are_kafkas():
    with pytest.raises(InvalidReplicationFactorError, match="larger than available brokers: 2"):
        assign_replicas_to_brokers([1, 2], 1, 3)
    with pytest.raises(InvalidReplicationFactorError):
        assign_replicas_to_brokers([1, 2], 1, 0)
    with pytest.raises(InvalidPartitionsError):
        assign_replicas_to_brokers([1, 2], 0, 1)
    with pytest.raises(InvalidReplicaAssignmentError, match=r"brokers \[2\] have no broker.rack"):
        assign_replicas_to_brokers({1: "a", 2: None}, 1, 1)
    assert InvalidReplicationFactorError.error_code == 38
