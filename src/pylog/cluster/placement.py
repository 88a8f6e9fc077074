"""Replica placement: which brokers hold a new partition's replicas (Kafka's
``AdminUtils.assignReplicasToBrokers``).

Two modes, chosen by the brokers' ``broker.rack``:

- **rack-unaware** (no broker has a rack): over the broker ids sorted, partition *p*'s
  first replica is broker ``(p + start_index) % n``; the others follow it at a distance
  of ``1 + (shift + j) % (n - 1)``, and the shift grows by one every ``n`` partitions, so
  leaders and followers both spread evenly.
- **rack-aware** (every broker has a rack): the same walk over a rack-alternating list
  (one broker of each rack in turn, racks sorted, brokers sorted within a rack); a
  follower is skipped while some rack, or some broker, holds none of the partition's
  replicas yet, so replicas land on as many racks as there are.

``start_index`` and ``shift`` are random in Kafka (so that topics do not all put their
partition 0 on the same broker); here they come from the ``rng`` passed in, or are fixed,
so tests are deterministic. Pure functions: no I/O, no state, thread-safe.
"""

from __future__ import annotations

import random
from typing import Mapping, Sequence

from pylog.errors import InvalidPartitionsError, InvalidReplicaAssignmentError, InvalidReplicationFactorError

__all__ = ["assign_replicas_to_brokers", "rack_alternated_brokers"]


def _replica_index(first_index: int, shift: int, j: int, n: int) -> int:
    return (first_index + 1 + (shift + j) % (n - 1)) % n


def rack_alternated_brokers(broker_racks: Mapping[int, str]) -> list[int]:
    """Brokers in rack-alternating order: the first broker of each rack (racks sorted),
    then the second of each, ... (Kafka's getRackAlternatedBrokerList)."""
    by_rack: dict[str, list[int]] = {}
    for broker, rack in broker_racks.items():
        by_rack.setdefault(rack, []).append(broker)
    queues = [sorted(by_rack[r]) for r in sorted(by_rack)]
    out: list[int] = []
    depth = 0
    while len(out) < len(broker_racks):
        out.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return out


def assign_replicas_to_brokers(
        brokers: Mapping[int, str | None] | Sequence[int], partitions: int, replication_factor: int, *,
        start_partition: int = 0, fixed_start_index: int = -1,
        rng: random.Random | None = None) -> dict[int, tuple[int, ...]]:
    """Place ``partitions`` partitions (numbered from ``start_partition``) of
    ``replication_factor`` replicas each.

    Parameters
    ----------
    brokers
        Live broker ids, or broker id -> rack (None: no ``broker.rack``).
    fixed_start_index
        Kafka's fixedStartIndex: with a value >= 0 both the start index and the shift
        are that value (the way Kafka's own tests pin the layout); otherwise both are
        drawn from ``rng`` (a fresh ``random.Random()`` when None).

    Returns
    -------
    dict
        partition -> replicas, preferred leader first.

    Raises
    ------
    InvalidPartitionsError
        ``partitions`` < 1.
    InvalidReplicationFactorError
        ``replication_factor`` < 1, or more than there are brokers.
    InvalidReplicaAssignmentError
        Some brokers have a rack and others do not.
    """
    racks: dict[int, str | None] = (dict(brokers) if isinstance(brokers, Mapping)
                                    else {int(b): None for b in brokers})
    if partitions <= 0:
        raise InvalidPartitionsError(f"number of partitions must be larger than 0, not {partitions}")
    if replication_factor <= 0:
        raise InvalidReplicationFactorError(f"replication factor must be larger than 0, not {replication_factor}")
    if replication_factor > len(racks):
        raise InvalidReplicationFactorError(
            f"replication factor: {replication_factor} larger than available brokers: {len(racks)}")
    with_rack = {b: r for b, r in racks.items() if r is not None}
    if with_rack and len(with_rack) != len(racks):
        missing = sorted(b for b, r in racks.items() if r is None)
        raise InvalidReplicaAssignmentError(
            f"not all brokers have rack information for replica rack aware assignment: brokers {missing} "
            f"have no broker.rack; set it on every broker or on none")
    rng = rng if rng is not None else random.Random()
    ordered = rack_alternated_brokers(with_rack) if with_rack else sorted(racks)
    n = len(ordered)
    start_index = fixed_start_index if fixed_start_index >= 0 else rng.randrange(n)
    shift = fixed_start_index if fixed_start_index >= 0 else rng.randrange(n)
    num_racks = len(set(with_rack.values()))
    out: dict[int, tuple[int, ...]] = {}
    partition = max(0, start_partition)
    for _ in range(partitions):
        if partition > 0 and partition % n == 0:
            shift += 1
        first = (partition + start_index) % n
        replicas = [ordered[first]]
        if not with_rack:
            replicas += [ordered[_replica_index(first, shift, j, n)] for j in range(replication_factor - 1)]
        else:
            used_racks = {with_rack[ordered[first]]}
            used = {ordered[first]}
            k = 0
            while len(replicas) < replication_factor:
                broker = ordered[_replica_index(first, shift * num_racks, k, n)]
                rack = with_rack[broker]
                k += 1
                # Skip a broker whose rack already holds a replica while another rack holds
                # none, and a broker that holds one while another broker holds none.
                if (rack not in used_racks or len(used_racks) == num_racks) and \
                        (broker not in used or len(used) == n):
                    replicas.append(broker)
                    used_racks.add(rack)
                    used.add(broker)
        out[partition] = tuple(replicas)
        partition += 1
    return out
