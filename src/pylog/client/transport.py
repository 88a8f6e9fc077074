"""What the client needs from a cluster: the :class:`Transport` protocol.

:class:`~pylog.client.producer.Producer`, :class:`~pylog.client.consumer.Consumer`, their
asyncio twins and :class:`~pylog.client.client.Client` (the admin surface) call nothing
but these operations.  Two implementations:

- :class:`~pylog.client.embedded.EmbeddedTransport` calls an in-process
  :class:`~pylog.broker.core.Broker` (``pylog.open``);
- a Kafka-protocol transport (``pylog.connect``) turns each call into requests to the
  partition leaders and the group coordinator.

Shapes
------
The operations are shaped like Kafka requests, so that a network transport sends one
request per leader (or coordinator) and an embedded one makes plain calls:

- :meth:`Transport.produce` takes the batches of MANY partitions at once (one Produce
  request per leader) and answers per batch; :meth:`Transport.produce_async` does the
  same without waiting, reporting each partition as its answer comes;
- :meth:`Transport.fetch` reads many partitions in one call and may wait for data
  (Fetch's ``max_wait_ms``/``min_bytes``/``max_bytes``); :meth:`Transport.prefetch`
  starts a fetch without waiting, for a later :meth:`Transport.fetch` to take;
- :meth:`Transport.list_offsets` takes many partitions; it and
  :meth:`Transport.fetch_offsets` have ``*_async`` twins answering with a
  :class:`concurrent.futures.Future`;
- JoinGroup and SyncGroup answer with a *pending handle* (``done()``, ``result()``,
  ``wait(timeout)``, ``add_done_callback(fn)``, as
  :class:`~pylog.broker.group.PendingResponse`), so the consumer drives the group protocol
  without blocking in ``poll``;
- readiness is pushed through listeners (:meth:`Transport.add_data_listener`,
  :meth:`Transport.add_wake_listener`) so the asyncio twins sleep on an event instead of
  polling.

Values
------
Results are the broker core's value types, re-exported here: :class:`ProduceResult`,
:class:`FetchResult`, :class:`ListOffsetsResult`, :class:`InitProducerIdResult`,
:class:`TopicDescription`, :class:`TopicResult`, ``ConfigEntry``, :class:`JoinGroupResult`,
:class:`SyncGroupResult`, :class:`LeaveGroupResult`, :class:`OffsetFetchResult`,
:class:`GroupDescription`, :class:`ListedGroup`.  They are plain dataclasses carrying
Kafka's error codes; a network transport builds them from responses.  Per-partition
results never raise: they carry ``error_code`` (and ``error`` / ``raise_for_error()``).
``FetchResult.records`` is None or an object with ``records`` (a buffer of whole v2
batches; a truncated last batch is allowed and ignored) and ``size`` (its length): the
storage's zero-copy :class:`~pylog.storage.ReadResult` embedded, a view of the response
network.

Errors
------
Every exception is a :class:`pylog.errors.PylogError`.  Calls documented as raising take
the error from the per-item code (``error_for_code``).  Beyond those, a network transport
raises retriable :class:`~pylog.errors.RequestTimedOutError` or
:class:`~pylog.errors.NetworkError` when the cluster cannot be reached, and :class:`~pylog.errors.LogClosedError` /
:class:`~pylog.errors.IllegalStateError` after :meth:`Transport.close`.

Threads
-------
Every operation may be called from any thread at the same time (the producer's sender
thread, a consumer's heartbeat thread and application threads share one transport).
Listeners are called from the transport's threads (embedded: the appending or waking
thread) and must be quick and must not raise.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Callable, Hashable, Iterable, Mapping, Protocol, Sequence, runtime_checkable

from pylog.broker.core import (FetchResult, InitProducerIdResult, ListOffsetsResult, NewTopic, ProduceResult,
                               TopicDescription, TopicResult)
from pylog.broker.group import (CommitOffset, GroupDescription, JoinGroupResult, LeaveGroupResult, ListedGroup,
                                MemberIdentity, OffsetFetchResult, PendingResponse, SyncGroupResult)
from pylog.broker.topic_config import ConfigEntry

__all__ = ["Transport", "ProduceWork", "FetchWanted", "ProduceResult", "FetchResult", "ListOffsetsResult",
           "InitProducerIdResult", "TopicDescription", "TopicResult", "NewTopic", "ConfigEntry", "CommitOffset",
           "JoinGroupResult", "SyncGroupResult", "LeaveGroupResult", "MemberIdentity", "OffsetFetchResult",
           "GroupDescription", "ListedGroup", "PendingResponse", "READ_UNCOMMITTED", "READ_COMMITTED",
           "EARLIEST_TIMESTAMP", "LATEST_TIMESTAMP", "DEFAULT_FETCH_MAX_BYTES"]

READ_UNCOMMITTED = 0
READ_COMMITTED = 1
LATEST_TIMESTAMP = -1     # ListOffsets: the high watermark
EARLIEST_TIMESTAMP = -2   # ListOffsets: the log start offset
DEFAULT_FETCH_MAX_BYTES = 52_428_800   # Kafka's fetch.max.bytes

#: One partition of a produce: ``(topic, partition, batches)``, the batches (v2 record
#: batches as bytes-like objects, numbered for the idempotent producer) in send order.
ProduceWork = tuple[str, int, Sequence[Any]]
#: One partition of a fetch: ``(topic, partition, offset, max_bytes)``.
FetchWanted = tuple[str, int, int, int]


@runtime_checkable
class Transport(Protocol):
    """The operations the client runs against a cluster (see the module docstring for
    value types, errors and thread safety)."""

    # ------------------------------------------------------------------ produce

    def produce(self, work: Sequence[ProduceWork], *, acks: int, transactional_id: str | None = None,
                timeout_ms: int | Sequence[int] | None = None) -> list[list[ProduceResult]]:
        """Append the batches of several partitions; one list of results per entry of
        ``work`` (in its order), one result per batch.

        Each batch succeeds or fails on its own, as separate requests would, in order
        within a partition (an idempotent producer's batches of one partition are
        appended in sequence; a failed batch appends nothing, and the later batches of its
        partition then fail with OUT_OF_ORDER_SEQUENCE).  ``acks`` is -1, 0 or 1; with 0
        the results carry offset -1 unless the transport learns better.  A retried batch
        of an idempotent producer that was appended before is answered with the original
        offsets (``duplicate``).  Never raises for a partition's problem (unknown
        partition, record too large, not enough replicas, a request timeout): the result
        carries the error code, and ``error.retriable`` says whether to retry.
        ``transactional_id``: a transactional producer's, sent with its batches (Produce
        v3+); the partitions must have been added to its transaction first.
        ``timeout_ms``: over the network, how long a Produce request may take (the
        request's timeout and the client's deadline for its answer; default the
        transport's ``request_timeout_ms``), one for all or one per entry of ``work`` (a
        request holding several takes the smallest); the embedded transport never waits.
        """
        ...

    def produce_async(self, work: Sequence[ProduceWork], *, acks: int,
                      on_done: Callable[[int, list[ProduceResult]], object],
                      transactional_id: str | None = None, timeout_ms: int | Sequence[int] | None = None) -> None:
        """:meth:`produce` without waiting: ``on_done(i, results)`` is called once per entry
        of ``work`` with its results, as they come, from any thread (the network
        transport's I/O thread; the embedded one completes before it returns).
        ``on_done`` must be quick and must not raise.  Raises only before any ``on_done``
        (a closed transport).

        What lets the producer keep other partitions (and more of one partition's
        batches) moving while a request is out.  A transport whose class does not define
        it is driven through :meth:`produce`, one call at a time.
        """
        ...

    def init_producer_id(self, *, producer_id: int = -1, producer_epoch: int = -1,
                         transactional_id: str | None = None,
                         transaction_timeout_ms: int = 60000) -> InitProducerIdResult:
        """InitProducerId for an idempotent producer: a new id at epoch 0, or (KIP-360)
        given the id and epoch it had, the same id at the next epoch.  With
        ``transactional_id``, asked of its transaction coordinator: the id the
        transactional id holds at a new epoch (fencing older producers of it, aborting
        their open transaction).  Never raises for a broker's refusal (the result
        carries the code; CONCURRENT_TRANSACTIONS and the coordinator's retriable errors
        are retried for up to the request timeout by a network transport)."""
        ...

    # ------------------------------------------------------------------ transactions

    def add_partitions_to_txn(self, transactional_id: str, producer_id: int, producer_epoch: int,
                              partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """AddPartitionsToTxn: ``(topic, partition)`` -> error code."""
        ...

    def add_offsets_to_txn(self, transactional_id: str, producer_id: int, producer_epoch: int,
                           group_id: str) -> int:
        """AddOffsetsToTxn (the group's offsets partition joins the transaction): an error
        code."""
        ...

    def txn_offset_commit(self, transactional_id: str, group_id: str, producer_id: int, producer_epoch: int,
                          offsets: Mapping[str, Mapping[int, CommitOffset]], *, member_id: str | None = None,
                          generation_id: int = -1,
                          group_instance_id: str | None = None) -> dict[str, dict[int, int]]:
        """TxnOffsetCommit to the group's coordinator: topic -> partition -> error code.
        The offsets count once the transaction commits."""
        ...

    def end_txn(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool) -> int:
        """EndTxn: commit or abort the producer's transaction; an error code."""
        ...

    # ------------------------------------------------------------------ fetch

    def fetch(self, wanted: Sequence[FetchWanted], *, max_wait_ms: float = 0, min_bytes: int = 1,
              max_bytes: int = DEFAULT_FETCH_MAX_BYTES, isolation_level: int = READ_UNCOMMITTED,
              stop: Callable[[], bool] | None = None, owner: Hashable | None = None,
              block: bool = True) -> list[FetchResult | None]:
        """Read several partitions, each from its offset, up to its ``max_bytes``; one
        entry per ``wanted`` (in its order): a :class:`FetchResult`, or None when the
        partition was not read this time (the response's ``max_bytes`` was used up by the
        partitions before it: ask again).

        When the partitions hold fewer than ``min_bytes`` new bytes, waits up to
        ``max_wait_ms`` for more (returning what is there then), unless ``stop()`` turns
        true or :meth:`wake` is called first (``stop`` is checked at every wake-up; it
        must be cheap).  With ``wanted`` empty it only waits.  ``max_wait_ms`` 0 reads
        without waiting.  Embedded: any new data ends the wait.  A partition's batches
        may begin below the offset asked for; skip those records.  Never raises for a
        partition's problem (OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION, ...).
        ``owner``: the caller of :meth:`prefetch` whose read-ahead answers this fetch may
        take (another owner's are left alone).  ``block=False`` (the asyncio consumer,
        after a :meth:`prefetch`): only answers already there are taken, nothing is sent
        and nothing waited for, so the call never waits on the network; the other
        partitions are None, and the data listeners announce their answers.  Embedded:
        the same as ``block=True`` with ``max_wait_ms`` 0 (a read of the logs).
        """
        ...

    def prefetch(self, wanted: Sequence[FetchWanted], *, max_wait_ms: float = 0, min_bytes: int = 1,
                 max_bytes: int = DEFAULT_FETCH_MAX_BYTES, isolation_level: int = READ_UNCOMMITTED,
                 owner: Hashable | None = None) -> None:
        """Start reading these partitions ahead of a :meth:`fetch`, without waiting (Kafka's
        consumer sends its next fetches before handing out what it has): the answers are
        kept, and a later :meth:`fetch` of a partition at the same offset and isolation
        level gets its kept answer without a round trip (or waits for the one in flight);
        at another offset the kept answers are dropped, so they are never delivered for a
        position that moved.  ``wanted`` is ``owner``'s whole prefetch set: what ``owner``
        prefetched for partitions left out (or at other offsets) is dropped, and
        ``prefetch([], owner=o)`` forgets it all.  A partition is read at most a few
        answers ahead (the Kafka transport: a chain of ``PREFETCH_DEPTH``, kept or in
        flight); kept bytes stay within about ``max_bytes`` (see the implementation).
        ``max_wait_ms``/``min_bytes`` are as for :meth:`fetch`, but nobody waits: a
        prefetch delays no other call.  Best effort: never raises, and does nothing on a
        closed transport.  Embedded: a no-op (a fetch is a zero-copy function call)."""
        ...

    def list_offsets(self, requests: Sequence[tuple[str, int, int]], *,
                     isolation_level: int = READ_UNCOMMITTED) -> list[ListOffsetsResult]:
        """ListOffsets of several ``(topic, partition, timestamp)``: ``-1`` the high
        watermark, ``-2`` the log start offset, ``-3`` the record with the largest
        timestamp, else the first record whose timestamp is >= it (offset -1 when none).
        One result per request, in order; never raises for a partition's problem."""
        ...

    def list_offsets_async(self, requests: Sequence[tuple[str, int, int]], *,
                           isolation_level: int = READ_UNCOMMITTED) -> Future:
        """:meth:`list_offsets` without waiting: a future of its results (or of its
        exception).  Embedded: completed when returned.  The consumer looks positions up
        with it, so that ``poll`` keeps to its timeout while a leader is slow."""
        ...

    # ------------------------------------------------------------------ metadata

    def topic_metadata(self, topic: str, *, create: bool = True, wait_ms: int = 0) -> tuple[int, int]:
        """``(partition count, max.message.bytes)`` of ``topic``, creating the topic when
        the cluster creates topics on first use (``auto.create.topics.enable``) and
        ``create`` is true (the producer's first send; a consumer passes False, so that
        reading a topic never creates it whichever transport it goes through).

        ``wait_ms``: a network transport waits up to this long for a topic the cluster
        does not know yet to appear in its metadata (a producer's first send passes its
        ``max_block_ms``, as Kafka's producer waits: a topic just created through another
        broker reaches each broker's metadata a moment later).  An embedded broker's
        answer is final, and it does not wait.

        Raises
        ------
        UnknownTopicOrPartitionError
            No such topic (and none created).
        InvalidTopicError
            ``topic`` is not a legal topic name.
        """
        ...

    def partition_counts(self, topics: Iterable[str], *, wait: bool = True) -> dict[str, int] | None:
        """Partition counts of the topics that exist, unknown ones left out (never
        creates a topic).  A network transport may answer from metadata at most
        ``metadata.max.age.ms`` old.  ``wait=False``: never waits on the network; a
        network transport that has no metadata of some of ``topics`` yet answers None
        and starts an update, calling the wake listeners when it ends."""
        ...

    # ------------------------------------------------------------------ groups

    def join_group(self, group_id: str, member_id: str, protocol_type: str,
                   protocols: Sequence[tuple[str, bytes]], *, session_timeout_ms: int,
                   rebalance_timeout_ms: int, client_id: str, group_instance_id: str | None = None,
                   reason: str | None = None,
                   member_key: Hashable | None = None) -> PendingResponse[JoinGroupResult]:
        """JoinGroup (v4+ semantics: a new member first gets MEMBER_ID_REQUIRED with its
        id).  Returns at once with a pending handle that completes when the join phase
        ends; its result carries the error code.  Raises InvalidRequestError for
        malformed arguments only.

        ``member_key`` (hashable, the same for the member's whole life, released with
        :meth:`release_member`) lets a network transport give each member of a client
        its own coordinator connection, so that a JoinGroup the coordinator holds for a
        rebalance holds up no other member; the embedded transport ignores it."""
        ...

    def sync_group(self, group_id: str, generation_id: int, member_id: str, *,
                   group_instance_id: str | None = None, protocol_type: str | None = None,
                   protocol_name: str | None = None, assignments: Mapping[str, bytes] | None = None,
                   member_key: Hashable | None = None) -> PendingResponse[SyncGroupResult]:
        """SyncGroup: the leader passes every member's assignment, followers none.
        Returns at once with a pending handle (as :meth:`join_group`, ``member_key``
        too)."""
        ...

    def heartbeat(self, group_id: str, generation_id: int, member_id: str, *,
                  group_instance_id: str | None = None) -> int:
        """Heartbeat; returns the response's error code (REBALANCE_IN_PROGRESS: rejoin).
        Blocks for the round trip (the consumer calls it from its heartbeat thread)."""
        ...

    def leave_group(self, group_id: str, members: Sequence[MemberIdentity]) -> LeaveGroupResult:
        """LeaveGroup; blocks for the answer."""
        ...

    def leave_group_async(self, group_id: str, members: Sequence[MemberIdentity]) -> Future:
        """:meth:`leave_group` without waiting: a future of its result (a consumer's
        bounded ``close``).  Embedded: completed when returned."""
        ...

    def release_member(self, member_key: Hashable) -> None:
        """The member ``member_key`` of :meth:`join_group` left its group or closed:
        release what the transport holds for it (a network transport: its coordinator
        connection; a JoinGroup/SyncGroup of it still waiting fails).  No-op for an
        unknown key and for the embedded transport."""
        ...

    def group_rebalancing(self, group_id: str) -> bool:
        """Whether the transport knows that ``group_id`` is preparing a rebalance, without
        a request: the embedded transport asks its coordinator, a network transport
        answers from the last heartbeat (False when it does not know).  Cheap: the
        consumer asks it while it waits for data, so that members notice a rebalance
        before their next heartbeat."""
        ...

    def commit_offsets(self, group_id: str, offsets: Mapping[str, Mapping[int, CommitOffset]], *,
                       generation_id: int = -1, member_id: str = "", group_instance_id: str | None = None,
                       retention_time_ms: int = -1) -> dict[str, dict[int, int]]:
        """OffsetCommit: topic -> partition -> error code (0: stored).  Raises
        InvalidRequestError for malformed offsets."""
        ...

    def commit_offsets_async(self, group_id: str, offsets: Mapping[str, Mapping[int, CommitOffset]], *,
                             generation_id: int = -1, member_id: str = "", group_instance_id: str | None = None,
                             retention_time_ms: int = -1) -> Future:
        """:meth:`commit_offsets` without waiting: a future of its codes (or of its
        exception); the consumer's auto-commit inside ``poll`` uses it.  Embedded:
        completed when returned."""
        ...

    def fetch_offsets(self, group_id: str, partitions: Mapping[str, Iterable[int]] | None = None, *,
                      require_stable: bool = False) -> OffsetFetchResult:
        """OffsetFetch: committed offsets (-1: none) of ``partitions`` (None: all the
        group has)."""
        ...

    def fetch_offsets_async(self, group_id: str, partitions: Mapping[str, Iterable[int]] | None = None, *,
                            require_stable: bool = False) -> Future:
        """:meth:`fetch_offsets` without waiting: a future of its result (or of its
        exception).  Embedded: completed when returned."""
        ...

    # ------------------------------------------------------------------ readiness

    def clock(self) -> int:
        """Milliseconds on the clock group sessions are measured with (the embedded
        broker's, which tests may fake; a network transport's wall clock)."""
        ...

    def wake(self) -> None:
        """Something other than data changed (a member joined or left, a consumer was
        asked to stop waiting): wake every :meth:`fetch` waiting in this transport so it
        re-checks its ``stop``, and call the wake listeners.  The embedded transport
        wakes every waiter of its broker, so in-process members of a group notice each
        other's rebalances at once."""
        ...

    def add_data_listener(self, fn: Callable[[str, int, int], object]) -> None:
        """Call ``fn(topic, partition, high_watermark)`` when ``topic``-``partition`` may
        have new data (embedded: after every append; network: when a fetch the transport
        runs on its own, e.g. a prefetch for a caller that found nothing, brings data;
        ``high_watermark`` -1 when unknown).  After a :meth:`fetch` found nothing for a
        partition, the transport must call the listeners once data arrives there, so an
        event-driven caller never busy-polls."""
        ...

    def remove_data_listener(self, fn: Callable[[str, int, int], object]) -> None:
        ...

    def add_wake_listener(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` whenever :meth:`wake` runs (and when a pending group response
        completes, for a network transport)."""
        ...

    def remove_wake_listener(self, fn: Callable[[], object]) -> None:
        ...

    # ------------------------------------------------------------------ admin

    def create_topic(self, name: str, partitions: int | None = None, replication_factor: int | None = None,
                     config: Mapping[str, Any] | None = None, *, validate_only: bool = False) -> TopicDescription:
        """CreateTopics of one topic.  Raises InvalidTopicError, TopicAlreadyExistsError,
        InvalidPartitionsError, InvalidReplicationFactorError, InvalidConfigError."""
        ...

    def create_topics(self, topics: Iterable[NewTopic | str], *, validate_only: bool = False) -> dict[str, TopicResult]:
        """CreateTopics: a result (with its error code) per topic; never raises per topic."""
        ...

    def delete_topic(self, name: str) -> None:
        """DeleteTopics of one topic.  Raises UnknownTopicOrPartitionError, InvalidTopicError."""
        ...

    def delete_topics(self, names: Iterable[str]) -> dict[str, TopicResult]:
        """DeleteTopics: a result per topic; never raises per topic."""
        ...

    def create_partitions(self, name: str, total: int, *, validate_only: bool = False) -> None:
        """CreatePartitions up to ``total``.  Raises UnknownTopicOrPartitionError,
        InvalidPartitionsError."""
        ...

    def describe_topic(self, name: str) -> TopicDescription:
        """Metadata of one topic.  Raises UnknownTopicOrPartitionError."""
        ...

    def describe_topics(self, names: Iterable[str] | None = None) -> dict[str, TopicDescription | TopicResult]:
        """Metadata of several topics (all non-internal ones when None): a description,
        or a TopicResult with the error of each unknown one."""
        ...

    def list_topics(self, *, internal: bool = False) -> list[str]:
        """Topic names, sorted."""
        ...

    def describe_configs(self, topic: str, names: Iterable[str] | None = None, *,
                         include_synonyms: bool = False, include_documentation: bool = False) -> list[ConfigEntry]:
        """DescribeConfigs of a topic.  Raises UnknownTopicOrPartitionError, InvalidConfigError."""
        ...

    def alter_configs(self, topic: str, configs: Mapping[str, Any], *, validate_only: bool = False) -> None:
        """AlterConfigs (replaces the overrides).  Raises UnknownTopicOrPartitionError,
        InvalidConfigError."""
        ...

    def incremental_alter_configs(self, topic: str, ops: Iterable[tuple[str, Any, Any]], *,
                                  validate_only: bool = False) -> None:
        """IncrementalAlterConfigs ``(name, op, value)``; all or nothing.  Raises
        UnknownTopicOrPartitionError, InvalidConfigError."""
        ...

    def delete_records(self, topic: str, partition: int, offset: int) -> int:
        """DeleteRecords before ``offset`` (-1: the high watermark); returns the new log
        start offset.  Raises UnknownTopicOrPartitionError, OffsetOutOfRangeError."""
        ...

    def list_groups(self, states: Iterable[str] | None = None,
                    types: Iterable[str] | None = None) -> list[ListedGroup]:
        """ListGroups (filtered by state and type names, case-insensitive)."""
        ...

    def describe_groups(self, group_ids: Iterable[str]) -> list[GroupDescription]:
        """DescribeGroups (an unknown group is described as Dead)."""
        ...

    def delete_groups(self, group_ids: Iterable[str]) -> dict[str, int]:
        """DeleteGroups: group id -> error code (only empty groups are deleted)."""
        ...

    # ------------------------------------------------------------------ life cycle

    @property
    def closed(self) -> bool:
        ...

    def close(self) -> None:
        """Release what the transport holds (the embedded transport closes its broker
        if it owns it; a network transport its connections).  Idempotent."""
        ...
