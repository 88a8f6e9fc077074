"""Choosing the partition of a produced record, exactly as Kafka's Java producer does.

A keyed record goes to ``toPositive(murmur2(key_bytes)) % num_partitions``, so the same key
lands in the same partition on pylog and on Apache Kafka (and in librdkafka with
``partitioner=murmur2_random``).  Keyless records follow the sticky partitioner of KIP-480:
one partition per topic until the producer closes the batch it fills for it.

The built-in partitioners are Cython classes (``pylog._core``): one call costs about as much
as a Python function call, which matters on ``producer.send``.  A custom partitioner
subclasses :class:`Partitioner`; the built-ins are registered as its virtual subclasses, so
``isinstance(p, Partitioner)`` holds for every partitioner.

Thread safety: the built-in partitioners may be shared between threads (every call is
atomic under the GIL).  Nothing about partitioning is persisted.
"""

from __future__ import annotations

import abc
from typing import Sequence

from pylog._core import (
    DefaultPartitioner,
    RoundRobinPartitioner,
    UniformStickyPartitioner,
    murmur2,
    partition_for_key,
    partition_keys,
)

__all__ = [
    "Partitioner",
    "DefaultPartitioner",
    "RoundRobinPartitioner",
    "UniformStickyPartitioner",
    "murmur2",
    "partition_for_key",
    "partition_keys",
    "to_positive",
    "partitioner_for_name",
]


def to_positive(value: int) -> int:
    """Kafka's ``Utils.toPositive``: the low 31 bits of a 32-bit int (not ``abs``)."""
    return value & 0x7FFFFFFF


class Partitioner(abc.ABC):
    """Interface of a producer partitioner (Kafka's ``Partitioner``).

    The producer calls :meth:`partition` once per record, and :meth:`on_new_batch` when it
    closes the batch it was filling for a partition (so a sticky partitioner can move on).
    """

    @abc.abstractmethod
    def partition(self, topic: str, key: object, key_bytes: bytes | None,
                  num_partitions: int,
                  available_partitions: Sequence[int] | None = None) -> int:
        """Return the partition (``0 <= p < num_partitions``) of one record.

        ``key`` is the key as the application gave it, ``key_bytes`` the serialized key
        (None for a keyless record), ``available_partitions`` the partitions that have a
        leader now (None or empty: unknown).
        """

    def on_new_batch(self, topic: str, prev_partition: int) -> None:
        """The batch being filled for ``prev_partition`` of ``topic`` was closed."""


Partitioner.register(DefaultPartitioner)
Partitioner.register(RoundRobinPartitioner)
Partitioner.register(UniformStickyPartitioner)

_BY_NAME = {
    # Kafka's partitioner.class values, and their short forms.
    "default": DefaultPartitioner,
    "org.apache.kafka.clients.producer.internals.DefaultPartitioner": DefaultPartitioner,
    "round_robin": RoundRobinPartitioner,
    "roundrobin": RoundRobinPartitioner,
    "org.apache.kafka.clients.producer.RoundRobinPartitioner": RoundRobinPartitioner,
    "uniform_sticky": UniformStickyPartitioner,
    "org.apache.kafka.clients.producer.UniformStickyPartitioner": UniformStickyPartitioner,
}


def partitioner_for_name(name: str) -> Partitioner:
    """A new partitioner for a ``partitioner.class`` value (Kafka's class names or the
    short names ``default``, ``round_robin``, ``uniform_sticky``).

    Raises
    ------
    InvalidConfigError
        The name is not a known partitioner.
    """
    from pylog.errors import InvalidConfigError

    cls = _BY_NAME.get(name)
    if cls is None:
        raise InvalidConfigError(
            f"unknown partitioner {name!r}; use one of {sorted(set(_BY_NAME))}, "
            "or pass a Partitioner instance")
    return cls()
