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

from pylog.broker.assignors import (
    ConsumerPartitionAssignor,
    CooperativeStickyAssignor,
    RangeAssignor,
    RoundRobinAssignor,
    assignor_for_name,
)
from pylog.broker.consumer_protocol import (
    Assignment,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from pylog.broker.group import (
    CommitOffset,
    GroupCoordinator,
    GroupCoordinatorConfig,
    GroupState,
    MemberIdentity,
    PendingResponse,
)
from pylog.broker.group_offsets import InMemoryOffsetStore, OffsetStore, partition_for_group
from pylog.broker.partitioner import (
    DefaultPartitioner,
    Partitioner,
    RoundRobinPartitioner,
    UniformStickyPartitioner,
    murmur2,
    partition_keys,
)

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
