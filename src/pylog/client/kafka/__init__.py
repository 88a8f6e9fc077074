"""pylog's Kafka-protocol client transport: the network layer ``pylog.connect`` stands on.

- :mod:`~pylog.client.kafka.connection` :class:`BrokerConnection`, one pipelined
  non-blocking connection to a broker (ApiVersions negotiation, framing, correlation ids).
- :mod:`~pylog.client.kafka.network`    :class:`NetworkClient`, one I/O thread, one
  connection per broker, reconnects with backoff, request timeouts, futures.
- :mod:`~pylog.client.kafka.cluster`    :class:`ClusterMetadata`, brokers, topics, leaders
  and coordinators, and when to refresh them.

Everything here speaks through :mod:`pylog.protocol`, pylog's one codec.
"""

from pylog.client.kafka.cluster import (
    ClusterMetadata,
    CoordinatorType,
    MetadataSnapshot,
    Node,
    PartitionMetadata,
    TopicMetadata,
    parse_bootstrap_servers,
)
from pylog.client.kafka.connection import BrokerConnection, ConnectionState
from pylog.client.kafka.network import NetworkClient

__all__ = ["BrokerConnection", "ClusterMetadata", "ConnectionState", "CoordinatorType",
           "MetadataSnapshot", "NetworkClient", "Node", "PartitionMetadata", "TopicMetadata",
           "parse_bootstrap_servers"]
