"""pylog's broker core: the semantics both front doors share.

The embedded client calls these directly; the wire-protocol server translates Kafka
requests into the same calls.  Modules:

- :mod:`~pylog.broker.core`              the broker: topics, partitions, produce and fetch
- :mod:`~pylog.broker.topic_config`      topic configuration
- :mod:`~pylog.broker.partitioner`       which partition a produced record goes to (murmur2)
- :mod:`~pylog.broker.consumer_protocol` consumer subscription/assignment bytes (JoinGroup/SyncGroup)
- :mod:`~pylog.broker.assignors`         range, roundrobin and cooperative-sticky assignors
- :mod:`~pylog.broker.group`             the group coordinator (membership, rebalances, offsets)
- :mod:`~pylog.broker.group_offsets`     the ``__consumer_offsets`` records and their replay
- :mod:`~pylog.broker.producer_state`    idempotent-producer state per partition
"""

from typing import Any as _Any

# The names below are imported on first use (PEP 562), not with the package: every
# module of pylog.broker imports this one first, and the broker core needs neither the
# client-side assignors nor the partitioners (#17: `pylog serve` start-up).
_LAZY = {
    "ConsumerPartitionAssignor": "assignors", "CooperativeStickyAssignor": "assignors",
    "RangeAssignor": "assignors", "RoundRobinAssignor": "assignors", "assignor_for_name": "assignors",
    "Assignment": "consumer_protocol", "Subscription": "consumer_protocol",
    "decode_assignment": "consumer_protocol", "decode_subscription": "consumer_protocol",
    "encode_assignment": "consumer_protocol", "encode_subscription": "consumer_protocol",
    "CommitOffset": "group", "GroupCoordinator": "group", "GroupCoordinatorConfig": "group",
    "GroupState": "group", "MemberIdentity": "group", "PendingResponse": "group",
    "InMemoryOffsetStore": "group_offsets", "OffsetStore": "group_offsets",
    "partition_for_group": "group_offsets",
    "DefaultPartitioner": "partitioner", "Partitioner": "partitioner", "RoundRobinPartitioner": "partitioner",
    "UniformStickyPartitioner": "partitioner", "murmur2": "partitioner", "partition_keys": "partitioner",
}


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pylog.broker' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"pylog.broker.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Assignment",
    "CommitOffset",
    "ConsumerPartitionAssignor",
    "CooperativeStickyAssignor",
    "DefaultPartitioner",
    "GroupCoordinator",
    "GroupCoordinatorConfig",
    "GroupState",
    "InMemoryOffsetStore",
    "MemberIdentity",
    "OffsetStore",
    "Partitioner",
    "PendingResponse",
    "RangeAssignor",
    "RoundRobinAssignor",
    "Subscription",
    "UniformStickyPartitioner",
    "RoundRobinPartitioner",
    "assignor_for_name",
    "decode_assignment",
    "decode_subscription",
    "encode_assignment",
    "encode_subscription",
    "murmur2",
    "partition_for_group",
    "partition_keys",
]
