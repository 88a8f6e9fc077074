"""The embedded transport: the client's operations as calls into an in-process broker core.

:class:`EmbeddedTransport` implements :class:`~pylog.client.transport.Transport` over a
:class:`~pylog.broker.core.Broker`: produce is the broker's ``produce_batches`` (the code
path the wire server's Produce uses), fetch is ``Broker.fetch`` (zero-copy
:class:`~pylog.storage.ReadResult` views) plus ``Broker.wait_for_data`` for the wait,
group calls go to the broker's group coordinator.  No copies, no threads of its own.

Thread-safe, as the broker is.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Callable, Iterable, Mapping, Sequence

from pylog.broker.core import Broker, FetchResult, ListOffsetsResult, ProduceResult
from pylog.broker.group import GroupState
from pylog.client.transport import DEFAULT_FETCH_MAX_BYTES, READ_UNCOMMITTED
from pylog.errors import UnknownTopicOrPartitionError

__all__ = ["EmbeddedTransport"]


def _completed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """A future already holding ``fn(*args, **kwargs)``'s result or exception."""
    fut: Future = Future()
    try:
        fut.set_result(fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
        fut.set_exception(exc)
    return fut

_E_UNKNOWN_TOPIC = UnknownTopicOrPartitionError.error_code


class EmbeddedTransport:
    """A :class:`~pylog.client.transport.Transport` over ``broker``.

    Parameters
    ----------
    broker : Broker
    owns_broker : bool
        Close the broker when the transport is closed (``pylog.open`` does).
    """

    def __init__(self, broker: Broker, *, owns_broker: bool = False) -> None:
        self.broker = broker
        self._owns_broker = owns_broker
        self._closed = False
        groups = broker.groups
        # Straight to the broker's own methods: the hot paths pay no extra call.
        self.clock = broker.clock
        self.wake = broker.wake_waiters
        self.add_data_listener = broker.add_append_listener
        self.remove_data_listener = broker.remove_append_listener
        self.add_wake_listener = broker.add_wake_listener
        self.remove_wake_listener = broker.remove_wake_listener
        self.heartbeat = groups.heartbeat
        self.leave_group = groups.leave_group
        self.commit_offsets = broker.commit_offsets
        self.fetch_offsets = broker.fetch_offsets
        self.create_topic = broker.create_topic
        self.create_topics = broker.create_topics
        self.delete_topic = broker.delete_topic
        self.delete_topics = broker.delete_topics
        self.create_partitions = broker.create_partitions
        self.describe_topic = broker.describe_topic
        self.describe_topics = broker.describe_topics
        self.list_topics = broker.list_topics
        self.describe_configs = broker.describe_configs
        self.alter_configs = broker.alter_configs
        self.incremental_alter_configs = broker.incremental_alter_configs
        self.delete_records = broker.delete_records
        self.list_groups = groups.list_groups
        self.delete_groups = groups.delete_groups
        # Transactions: the broker's transaction coordinator, as the wire server calls it.
        self.init_producer_id = broker.init_producer_id
        self.add_partitions_to_txn = broker.add_partitions_to_txn
        self.add_offsets_to_txn = broker.add_offsets_to_txn
        self.txn_offset_commit = broker.txn_offset_commit
        self.end_txn = broker.end_txn
        self._groups = groups

    # ------------------------------------------------------------------ produce

    def produce(self, work: Sequence[tuple[str, int, Sequence[Any]]], *, acks: int,
                transactional_id: str | None = None,
                timeout_ms: int | Sequence[int] | None = None) -> list[list[ProduceResult]]:
        produce_batches = self.broker.produce_batches
        return [produce_batches(topic, partition, batches, acks=acks) for topic, partition, batches in work]

    def produce_async(self, work: Sequence[tuple[str, int, Sequence[Any]]], *, acks: int,
                      on_done: Callable[[int, list[ProduceResult]], object],
                      transactional_id: str | None = None, timeout_ms: int | Sequence[int] | None = None) -> None:
        # An append is a function call (no timeout applies): every answer is there before this returns.  The
        # consecutive entries of one partition (the producer gives each batch its own)
        # are appended in one call.
        produce_batches = self.broker.produce_batches
        i, n = 0, len(work)
        while i < n:
            topic, partition, batches = work[i]
            j = i + 1
            while j < n and work[j][0] == topic and work[j][1] == partition:
                j += 1
            if j == i + 1:
                on_done(i, produce_batches(topic, partition, batches, acks=acks))
            else:
                results = produce_batches(topic, partition, [b for e in work[i:j] for b in e[2]], acks=acks)
                k = 0
                for e in range(i, j):
                    count = len(work[e][2])
                    on_done(e, results[k:k + count])
                    k += count
            i = j

    # ------------------------------------------------------------------ fetch

    def fetch(self, wanted: Sequence[tuple[str, int, int, int]], *, max_wait_ms: float = 0, min_bytes: int = 1,
              max_bytes: int = DEFAULT_FETCH_MAX_BYTES, isolation_level: int = READ_UNCOMMITTED,
              stop: Callable[[], bool] | None = None, owner: Any = None,
              block: bool = True) -> list[FetchResult | None]:
        out = self._read(wanted, max_bytes, isolation_level)
        if max_wait_ms <= 0:
            return out
        total = 0
        for res in out:
            if res is None:
                return out                       # the response is full
            if res.error_code and res.error_code != _E_UNKNOWN_TOPIC:
                return out                       # an error answers at once (Kafka's leaders do)
            if res.records is not None:
                total += res.records.size
        if total >= max(min_bytes, 1):
            return out
        # Unknown partitions may appear (auto-creation, CreatePartitions): wait on the rest.
        positions = {(t, p): off for (t, p, off, _), res in zip(wanted, out)
                     if res is not None and res.error_code == 0}
        if self.broker.wait_for_data(positions, max_wait_ms / 1000, stop=stop):
            return self._read(wanted, max_bytes, isolation_level)
        return out

    def prefetch(self, wanted: Sequence[tuple[str, int, int, int]], *, max_wait_ms: float = 0, min_bytes: int = 1,
                 max_bytes: int = DEFAULT_FETCH_MAX_BYTES, isolation_level: int = READ_UNCOMMITTED,
                 owner: Any = None) -> None:
        """Nothing to do: a fetch here is a zero-copy call into the partition logs."""

    def _read(self, wanted: Sequence[tuple[str, int, int, int]], max_bytes: int,
              isolation_level: int) -> list[FetchResult | None]:
        fetch = self.broker.fetch
        if len(wanted) == 1:   # a consumer of one partition: the common case
            topic, partition, offset, part_max = wanted[0]
            return [fetch(topic, partition, offset, part_max, isolation_level=isolation_level)]
        out: list[FetchResult | None] = []
        total = 0
        for topic, partition, offset, part_max in wanted:
            if total >= max_bytes:
                out.append(None)
                continue
            res = fetch(topic, partition, offset, part_max, isolation_level=isolation_level)
            if res.records is not None:
                total += res.records.size
            out.append(res)
        return out

    def list_offsets(self, requests: Sequence[tuple[str, int, int]], *,
                     isolation_level: int = READ_UNCOMMITTED) -> list[ListOffsetsResult]:
        list_offsets = self.broker.list_offsets
        return [list_offsets(t, p, ts, isolation_level=isolation_level) for t, p, ts in requests]

    def list_offsets_async(self, requests: Sequence[tuple[str, int, int]], *,
                           isolation_level: int = READ_UNCOMMITTED) -> Future:
        """:meth:`list_offsets`, as a future completed when returned."""
        return _completed(self.list_offsets, requests, isolation_level=isolation_level)

    def leave_group_async(self, group_id: str, members: Sequence[Any]) -> Future:
        """The coordinator's LeaveGroup, as a future completed when returned."""
        return _completed(self._groups.leave_group, group_id, members)

    def commit_offsets_async(self, group_id: str, offsets: Mapping[str, Mapping[int, Any]], **kw: Any) -> Future:
        """The broker's OffsetCommit, as a future completed when returned."""
        return _completed(self.broker.commit_offsets, group_id, offsets, **kw)

    def fetch_offsets_async(self, group_id: str, partitions: Mapping[str, Iterable[int]] | None = None, *,
                            require_stable: bool = False) -> Future:
        """The broker's OffsetFetch, as a future completed when returned."""
        return _completed(self.broker.fetch_offsets, group_id, partitions, require_stable=require_stable)

    # ------------------------------------------------------------------ metadata

    def topic_metadata(self, topic: str, *, create: bool = True, wait_ms: int = 0) -> tuple[int, int]:
        b = self.broker
        if not create and not b.has_topic(topic):
            raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
        n = b.num_partitions(topic)          # auto-creates as the broker is configured to
        return n, int(b.topic_config(topic)["max.message.bytes"])

    def partition_counts(self, topics: Iterable[str], *, wait: bool = True) -> dict[str, int]:
        b = self.broker
        out = {}
        for t in topics:
            if b.has_topic(t):
                try:
                    out[t] = b.num_partitions(t)
                except UnknownTopicOrPartitionError:   # deleted meanwhile
                    pass
        return out

    # ------------------------------------------------------------------ groups

    def join_group(self, group_id: str, member_id: str, protocol_type: str,
                   protocols: Sequence[tuple[str, bytes]], *, session_timeout_ms: int,
                   rebalance_timeout_ms: int, client_id: str, group_instance_id: str | None = None,
                   reason: str | None = None, member_key: Any = None):
        return self._groups.join_group(
            group_id, member_id, protocol_type, protocols, session_timeout_ms=session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms, client_id=client_id, client_host="localhost",
            group_instance_id=group_instance_id, require_known_member_id=True, reason=reason)

    def sync_group(self, group_id: str, generation_id: int, member_id: str, *, member_key: Any = None,
                   **kwargs: Any):
        return self._groups.sync_group(group_id, generation_id, member_id, **kwargs)

    def release_member(self, member_key: Any) -> None:
        """Nothing to release: members call the coordinator directly."""

    def group_rebalancing(self, group_id: str) -> bool:
        return self._groups.group_state(group_id) is GroupState.PREPARING_REBALANCE

    def describe_groups(self, group_ids: Iterable[str]):
        return self._groups.describe_groups(group_ids)

    # ------------------------------------------------------------------ life cycle

    @property
    def closed(self) -> bool:
        return self._closed or self.broker.closed

    def close(self) -> None:
        self._closed = True
        if self._owns_broker:
            self.broker.close()

    def __repr__(self) -> str:
        return f"<EmbeddedTransport {self.broker!r}>"
