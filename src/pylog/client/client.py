"""The client handle: producers, consumers and the admin surface over one transport.

:class:`Client` is what ``pylog.open(dir)`` returns (over an
:class:`~pylog.client.embedded.EmbeddedTransport` and the broker it owns) and what
``pylog.connect(bootstrap)`` returns (over the Kafka-protocol transport): application code
written against one runs on the other.

Threads: thread-safe.  Producers and consumers it made are closed by :meth:`Client.close`
(producers flush, consumers commit and leave their groups), before the transport.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from pylog.broker.core import ListOffsetsResult, NewTopic, TopicDescription, TopicResult
from pylog.broker.group import GroupDescription, ListedGroup, OffsetFetchResult
from pylog.broker.topic_config import ConfigEntry
from pylog.client.aio import AIOConsumer, AIOProducer
from pylog.client.consumer import Consumer
from pylog.client.producer import Producer
from pylog.errors import IllegalStateError

if TYPE_CHECKING:
    from pylog.broker.core import Broker
    from pylog.client.transport import Transport

__all__ = ["Client"]

_log = logging.getLogger("pylog.client")


class Client:
    """Producers, consumers and admin operations over a
    :class:`~pylog.client.transport.Transport`.

    Made by ``pylog.open(dir)`` (embedded) or ``pylog.connect(bootstrap)``; use it as a
    context manager, or call :meth:`close`.  The admin methods have the names, arguments,
    results and errors of the embedded :class:`~pylog.broker.core.Broker`'s.

    Parameters
    ----------
    transport : Transport
    owns_transport : bool
        Close the transport when the client closes (default).
    """

    def __init__(self, transport: "Transport", *, owns_transport: bool = True) -> None:
        self._transport = transport
        self._owns_transport = owns_transport
        self._lock = threading.Lock()
        self._clients: list[Any] = []
        self._closed = False

    @property
    def transport(self) -> "Transport":
        return self._transport

    @property
    def broker(self) -> "Broker":
        """The in-process broker of an embedded client (``pylog.open``), for low-level
        use (``tick()``, ``fetch()``, the group coordinator, ...).

        Raises
        ------
        IllegalStateError
            The client talks to a cluster over the network (``pylog.connect``).
        """
        broker = getattr(self._transport, "broker", None)
        if broker is None:
            raise IllegalStateError("this client is connected to a remote cluster: it has no in-process broker")
        return broker  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ producers and consumers

    def _track(self, c: Any) -> Any:
        with self._lock:
            if self._closed:
                c.close()
                raise IllegalStateError("the client is closed")
            self._clients.append(c)
        c._on_close = self._forget
        return c

    def _forget(self, c: Any) -> None:
        with self._lock:
            self._clients = [x for x in self._clients if x is not c]

    def _check_open(self) -> None:
        if self._closed:
            raise IllegalStateError("the client is closed")

    def producer(self, **config: Any) -> Producer:
        """A :class:`~pylog.client.producer.Producer` (settings as there), closed with
        this client.  Raises InvalidConfigError, CodecNotInstalledError."""
        self._check_open()
        return self._track(Producer(self._transport, **config))  # type: ignore[no-any-return]

    def consumer(self, *topics: str, **config: Any) -> Consumer:
        """A :class:`~pylog.client.consumer.Consumer` subscribed to ``topics`` (settings
        as there), closed with this client.  Raises InvalidConfigError."""
        self._check_open()
        c = Consumer(self._transport, **config)
        self._track(c)
        if topics:
            c.subscribe(list(topics))
        return c

    def aio_producer(self, **config: Any) -> AIOProducer:
        """An :class:`~pylog.client.aio.AIOProducer` (its producer is closed with this
        client)."""
        self._check_open()
        p = AIOProducer(self._transport, **config)
        self._track(p.producer)
        return p

    def aio_consumer(self, *topics: str, **config: Any) -> AIOConsumer:
        """An :class:`~pylog.client.aio.AIOConsumer` subscribed to ``topics`` (its
        consumer is closed with this client)."""
        self._check_open()
        c = AIOConsumer(self._transport, **config)
        self._track(c.consumer)
        if topics:
            c.consumer.subscribe(list(topics))
        return c

    # ------------------------------------------------------------------ topics

    def has_topic(self, name: str) -> bool:
        """Whether topic ``name`` exists (never creates it)."""
        return name in self._transport.partition_counts([name])

    def num_partitions(self, topic: str) -> int:
        """Partition count of ``topic`` (created if the cluster auto-creates topics).
        Raises UnknownTopicOrPartitionError."""
        return self._transport.topic_metadata(topic)[0]

    def create_topic(self, name: str, partitions: int | None = None, replication_factor: int | None = None,
                     config: Mapping[str, Any] | None = None, *, validate_only: bool = False) -> TopicDescription:
        """Create a topic (CreateTopics); see :meth:`pylog.broker.core.Broker.create_topic`.

        Raises
        ------
        InvalidTopicError, TopicAlreadyExistsError, InvalidPartitionsError,
        InvalidReplicationFactorError, InvalidConfigError
        """
        return self._transport.create_topic(name, partitions, replication_factor, config,
                                            validate_only=validate_only)

    def create_topics(self, topics: Iterable[NewTopic | str], *, validate_only: bool = False) -> dict[str, TopicResult]:
        """CreateTopics for several topics: a result with its error code per topic."""
        return self._transport.create_topics(topics, validate_only=validate_only)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data.  Raises UnknownTopicOrPartitionError,
        InvalidTopicError (an internal topic)."""
        self._transport.delete_topic(name)

    def delete_topics(self, names: Iterable[str]) -> dict[str, TopicResult]:
        return self._transport.delete_topics(names)

    def create_partitions(self, name: str, total: int, *, validate_only: bool = False) -> None:
        """Grow a topic to ``total`` partitions.  Raises UnknownTopicOrPartitionError,
        InvalidPartitionsError."""
        self._transport.create_partitions(name, total, validate_only=validate_only)

    def list_topics(self, *, internal: bool = False) -> list[str]:
        """Topic names, sorted (internal topics only with ``internal=True``)."""
        return self._transport.list_topics(internal=internal)

    def describe_topic(self, name: str) -> TopicDescription:
        """Partitions (leader, replicas, ISR, log start offset, high watermark) of a topic.
        Raises UnknownTopicOrPartitionError."""
        return self._transport.describe_topic(name)

    def describe_topics(self, names: Iterable[str] | None = None) -> dict[str, TopicDescription | TopicResult]:
        return self._transport.describe_topics(names)

    # ------------------------------------------------------------------ configs

    def describe_configs(self, topic: str, names: Iterable[str] | None = None, *,
                         include_synonyms: bool = False, include_documentation: bool = False) -> list[ConfigEntry]:
        """Every topic config (or ``names``) with value and source.  Raises
        UnknownTopicOrPartitionError, InvalidConfigError."""
        return self._transport.describe_configs(topic, names, include_synonyms=include_synonyms,
                                                include_documentation=include_documentation)

    def alter_configs(self, topic: str, configs: Mapping[str, Any], *, validate_only: bool = False) -> None:
        """Replace the topic's overrides (AlterConfigs).  Raises
        UnknownTopicOrPartitionError, InvalidConfigError."""
        self._transport.alter_configs(topic, configs, validate_only=validate_only)

    def incremental_alter_configs(self, topic: str, ops: Iterable[tuple[str, Any, Any]], *,
                                  validate_only: bool = False) -> None:
        """IncrementalAlterConfigs ``(name, op, value)``.  Raises
        UnknownTopicOrPartitionError, InvalidConfigError."""
        self._transport.incremental_alter_configs(topic, ops, validate_only=validate_only)

    # ------------------------------------------------------------------ offsets and records

    def list_offsets(self, topic: str, partition: int, timestamp: int, *,
                     isolation_level: int = 0) -> ListOffsetsResult:
        """ListOffsets of one partition (-1 latest, -2 earliest, -3 max timestamp, else
        the first offset at or after the timestamp); the result carries the error."""
        return self._transport.list_offsets([(topic, partition, timestamp)], isolation_level=isolation_level)[0]

    def log_offsets(self, topic: str, partition: int) -> tuple[int, int]:
        """``(log_start_offset, high_watermark)``.  Raises UnknownTopicOrPartitionError."""
        start, end = self._transport.list_offsets([(topic, partition, -2), (topic, partition, -1)])
        start.raise_for_error()
        end.raise_for_error()
        return start.offset, end.offset

    def high_watermark(self, topic: str, partition: int) -> int:
        """Raises UnknownTopicOrPartitionError."""
        res = self._transport.list_offsets([(topic, partition, -1)])[0]
        res.raise_for_error()
        return res.offset

    def log_start_offset(self, topic: str, partition: int) -> int:
        """Raises UnknownTopicOrPartitionError."""
        res = self._transport.list_offsets([(topic, partition, -2)])[0]
        res.raise_for_error()
        return res.offset

    def delete_records(self, topic: str, partition: int, offset: int) -> int:
        """Advance the log start offset to ``offset`` (-1: the high watermark); returns
        the new log start offset.  Raises UnknownTopicOrPartitionError,
        OffsetOutOfRangeError, InvalidTopicError."""
        return self._transport.delete_records(topic, partition, offset)

    # ------------------------------------------------------------------ groups

    def commit_offsets(self, group_id: str, offsets: Mapping[str, Mapping[int, Any]], *,
                       generation_id: int = -1, member_id: str = "", group_instance_id: str | None = None,
                       retention_time_ms: int = -1) -> dict[str, dict[int, int]]:
        """OffsetCommit: topic -> partition -> error code (offsets as ints,
        OffsetAndMetadata or CommitOffset)."""
        return self._transport.commit_offsets(group_id, offsets, generation_id=generation_id,
                                              member_id=member_id, group_instance_id=group_instance_id,
                                              retention_time_ms=retention_time_ms)

    def fetch_offsets(self, group_id: str, partitions: Mapping[str, Iterable[int]] | None = None, *,
                      require_stable: bool = False) -> OffsetFetchResult:
        """OffsetFetch: the committed offsets (-1: none) of ``partitions`` (None: all)."""
        return self._transport.fetch_offsets(group_id, partitions, require_stable=require_stable)

    def list_groups(self, states: Iterable[str] | None = None,
                    types: Iterable[str] | None = None) -> list[ListedGroup]:
        """ListGroups, filtered by state and type names (case-insensitive)."""
        return self._transport.list_groups(states, types)

    def describe_groups(self, group_ids: Iterable[str]) -> list[GroupDescription]:
        """DescribeGroups (an unknown group is described as Dead)."""
        return self._transport.describe_groups(group_ids)

    def delete_groups(self, group_ids: Iterable[str]) -> dict[str, int]:
        """DeleteGroups: group id -> error code (only empty groups are deleted)."""
        return self._transport.delete_groups(group_ids)

    # ------------------------------------------------------------------ life cycle

    def close(self, timeout: float | None = None) -> None:
        """Close the producers and consumers made here (producers flush, consumers commit
        and leave), then the transport (``pylog.open``'s: the broker, which flushes every
        log and marks a clean shutdown).  Idempotent.

        ``timeout`` (seconds; None: until sent) bounds the producers' flushes, shared
        among them as Kafka's ``KafkaProducer.close(Duration)`` bounds one: what is
        still unsent then fails with RequestTimedOutError.  Without it a producer open
        against a hung broker holds the close for its ``delivery_timeout_ms``.  Consumers
        get what is left of it for their final commit and LeaveGroup (without it, each
        its own default of 30 s, as :meth:`Consumer.close
        <pylog.client.consumer.Consumer.close>`)."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            clients = list(self._clients)
        for c in reversed(clients):
            try:
                left = None if deadline is None else max(deadline - time.monotonic(), 0)
                if isinstance(c, Producer):
                    c.close(left)
                else:
                    c.close(timeout=left)
            except Exception:  # noqa: BLE001 - close the rest anyway
                _log.exception("closing %r failed", c)
        if self._owns_transport:
            self._transport.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self._transport!r}{' closed' if self._closed else ''}>"

