"""Replication of one partition on one broker, as an I/O-free state machine.

Kafka's ``Partition`` (the leader's high watermark, ISR and follower bookkeeping) and the
per-partition half of its replica fetcher (a follower's truncation and fetch state), in
one class, :class:`Partition`.  Events go in as method calls (a follower's Fetch arrived,
the ISR-shrink timer fired, the controller answered an AlterPartition, a LeaderAndIsr
arrived, a Fetch response came back); decisions come out as return values (the Fetch
response to send, the AlterPartition to write through the controller, whether an acks=all
produce is complete).  No sockets, threads, clocks or files: the caller passes the time
(``now_ms``) and owns the log, so a deterministic test can drive thousands of fault
schedules (tests/cluster/test_replication_model.py).

The rules are Kafka's:

- **High watermark** (leader): the smallest log end offset over the *maximal* ISR (the
  committed ISR plus a proposed expansion, KIP-497's "maximal ISR" while an AlterPartition
  is in flight), never moved back.  A new leader forgets its followers' positions, so its
  high watermark moves only after every ISR member has fetched in the new epoch.
- **ISR expansion**: a follower joins when its log end offset reaches the high watermark
  and the start offset of the current leader epoch.  **ISR shrink**: an ISR follower that
  has not been caught up (fetched up to the leader's log end offset) for
  ``replica.lag.time.max.ms`` leaves.  Both are *proposed* (:meth:`Partition.poll_alter_partition`)
  and applied only when the controller confirms the conditional write
  (:meth:`Partition.alter_partition_response`); one change is in flight at a time.  The
  proposal names each member's broker epoch as last seen in its fetches, so the
  controller can refuse one that restarted since, with a shorter log (KIP-903).
- **acks=all**: NOT_ENOUGH_REPLICAS before the append when the ISR is smaller than
  ``min.insync.replicas``; complete when the high watermark passes the batch, with
  NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below the minimum meanwhile, and
  NOT_LEADER_OR_FOLLOWER if leadership moved.
- **Divergence** (KIP-101, KIP-279, KIP-320): a follower fetches with its last fetched
  epoch; when that epoch's end on the leader lies before the follower's fetch offset the
  leader answers with a DivergingEpoch instead of records (Fetch v12+) and the follower
  truncates to the divergence point.  Followers that cannot use that (``truncate_on_fetch
  =False``) ask OffsetForLeaderEpoch first.
- **Leader epochs**: :meth:`Partition.become_leader` records where the new epoch starts in
  the log's epoch cache; requests carrying an older ``current_leader_epoch`` get
  FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH.

Crash behaviour: nothing here is durable.  The caller checkpoints :attr:`Partition.high_watermark`
(``replication-offset-checkpoint``) and passes it back on restart (it is clamped to the
log end offset); leader epochs are in the log's ``leader-epoch-checkpoint``.

Thread safety: none; the caller serialises calls per partition (Kafka uses one lock per
partition for the same reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pylog.errors import (FencedLeaderEpochError, IneligibleReplicaError, NotEnoughReplicasAfterAppendError,
                          NotEnoughReplicasError, NotLeaderError, OffsetOutOfRangeError,
                          OperationNotAttemptedError, PylogError, UnknownLeaderEpochError)
from pylog.storage.leader_epoch import UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET

__all__ = [
    "AlterPartition", "AppendInfo", "EpochEndOffset", "FetchRequest", "FetchResponse", "LeaderAndIsr",
    "NO_LEADER", "OffsetForLeaderEpochRequest", "Partition", "ReplicaLog", "ReplicaState",
    "REPLICA_LAG_TIME_MAX_MS", "UNKNOWN_OFFSET",
]

#: Kafka's default ``replica.lag.time.max.ms``.
REPLICA_LAG_TIME_MAX_MS = 30_000
#: A follower's log end offset before it has fetched in this leader epoch.
UNKNOWN_OFFSET = -1
#: ``LeaderAndIsr.leader`` of a partition with no leader (offline).
NO_LEADER = -1


class ReplicaLog(Protocol):
    """What the state machine needs of a partition's log (:class:`pylog.storage.Log`
    behind a thin adapter, or an in-memory log in tests).  Records are opaque here:
    whatever :meth:`read` returns goes unchanged to a follower's :meth:`append_as_follower`."""

    @property
    def log_start_offset(self) -> int: ...

    @property
    def log_end_offset(self) -> int: ...

    @property
    def latest_epoch(self) -> int:
        """The newest epoch in the leader epoch cache, UNDEFINED_EPOCH when empty."""

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch on this log (LeaderEpochCache.end_offset_for semantics)."""

    def assign_epoch_start_offset(self, epoch: int, start_offset: int) -> None:
        """Record in the epoch cache that ``epoch`` starts at ``start_offset``."""

    def append_as_leader(self, records: Any, leader_epoch: int) -> tuple[int, int]:
        """Assign offsets, stamp ``leader_epoch`` into the batches, append; return the
        first and last offsets."""

    def append_as_follower(self, records: Any) -> None:
        """Append batches as the leader numbered and stamped them (the first one starts
        at the log end offset); learn their epochs."""

    def truncate_to(self, offset: int) -> None:
        """Remove everything at or above ``offset``, and the epoch cache entries starting
        at or after the new log end offset (even when no record was removed: a leader
        that never appended in its epoch leaves such an entry)."""

    def read(self, from_offset: int, max_bytes: int, max_offset: int | None = None) -> Any:
        """Batches from the one holding ``from_offset``, up to ``max_bytes`` (at least one
        batch), none at or past ``max_offset``; None when there is nothing to read."""


@dataclass(frozen=True, slots=True)
class LeaderAndIsr:
    """A partition's state as the controller stores it (``/brokers/topics/<t>/partitions/
    <p>/state``): ``partition_epoch`` is the znode's version, the compare-and-set key."""

    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    partition_epoch: int


@dataclass(frozen=True, slots=True)
class AlterPartition:
    """A leader's proposed ISR change (Kafka's AlterPartition, one partition): the
    controller applies it only if ``leader_epoch`` and ``partition_epoch`` are still the
    stored ones, then answers with the new :class:`LeaderAndIsr`."""

    broker_id: int
    leader_epoch: int
    new_isr: tuple[int, ...]
    partition_epoch: int
    #: The broker epoch of each ``new_isr`` member as this leader last saw it (-1:
    #: unknown), for the controller to refuse a replica that restarted since (KIP-903).
    new_isr_broker_epochs: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class EpochEndOffset:
    """OffsetForLeaderEpoch's answer, and Fetch's DivergingEpoch."""

    leader_epoch: int
    end_offset: int
    error: PylogError | None = None


@dataclass(frozen=True, slots=True)
class OffsetForLeaderEpochRequest:
    replica_id: int
    current_leader_epoch: int
    leader_epoch: int


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """One partition of a Fetch.  ``replica_id`` -1 is a consumer; ``last_fetched_epoch``
    -1 skips the divergence check (an empty follower log, or Fetch < v12)."""

    replica_id: int
    current_leader_epoch: int
    fetch_offset: int
    last_fetched_epoch: int = UNDEFINED_EPOCH
    max_bytes: int = 1 << 20
    #: The follower's broker epoch (Fetch v15 ReplicaState.ReplicaEpoch), -1 unknown.
    replica_epoch: int = -1


@dataclass(frozen=True, slots=True)
class FetchResponse:
    error: PylogError | None = None
    high_watermark: int = -1
    log_start_offset: int = -1
    records: Any = None
    diverging_epoch: EpochEndOffset | None = None


@dataclass(frozen=True, slots=True)
class AppendInfo:
    """Where a leader append went, to ask :meth:`Partition.check_enough_replicas_reach_offset`
    about (acks=all)."""

    base_offset: int
    last_offset: int
    leader_epoch: int


@dataclass(slots=True)
class ReplicaState:
    """What a leader knows of one follower (Kafka's ``ReplicaState``)."""

    replica_id: int
    log_end_offset: int = UNKNOWN_OFFSET
    last_caught_up_time_ms: int = 0
    last_fetch_time_ms: int = 0
    #: The leader's log end offset when this follower last fetched.
    last_fetch_leader_log_end_offset: int = UNKNOWN_OFFSET
    #: The broker epoch the follower last fetched with.
    broker_epoch: int = -1

    def is_caught_up(self, leader_log_end_offset: int, now_ms: int, max_lag_ms: int) -> bool:
        return (self.log_end_offset == leader_log_end_offset
                or now_ms - self.last_caught_up_time_ms <= max_lag_ms)


@dataclass(slots=True)
class _FetchState:
    """A follower's position in its fetch from the leader (Kafka's PartitionFetchState)."""

    fetch_offset: int
    last_fetched_epoch: int
    truncating: bool = field(default=False)


class Partition:
    """One replica of one partition: the leader's or a follower's half of replication.

    Parameters
    ----------
    replica_id : int
        This broker's id.
    log : ReplicaLog
        The partition's local log.
    high_watermark : int
        From ``replication-offset-checkpoint`` on restart (clamped to the log end offset).
    replica_lag_time_max_ms, min_insync_replicas : int
        Kafka's ``replica.lag.time.max.ms`` and ``min.insync.replicas``.
    truncate_on_fetch : bool
        Follower side: find divergence through Fetch's DivergingEpoch (Fetch v12+, KIP-595's
        truncation on fetch) rather than an OffsetForLeaderEpoch round trip first.
    broker_epoch : int
        This broker's epoch (its registration's, in ZooKeeper the znode's czxid), sent
        with its fetches; set :attr:`broker_epoch` again when it re-registers.
    """

    def __init__(self, replica_id: int, log: ReplicaLog, *, high_watermark: int = 0,
                 replica_lag_time_max_ms: int = REPLICA_LAG_TIME_MAX_MS, min_insync_replicas: int = 1,
                 truncate_on_fetch: bool = True, broker_epoch: int = -1) -> None:
        self.replica_id = replica_id
        self.broker_epoch = broker_epoch
        self.log = log
        self.replica_lag_time_max_ms = replica_lag_time_max_ms
        self.min_insync_replicas = min_insync_replicas
        self.truncate_on_fetch = truncate_on_fetch
        self.high_watermark = max(min(high_watermark, log.log_end_offset), log.log_start_offset)
        self.leader_id = NO_LEADER
        self.leader_epoch = UNDEFINED_EPOCH
        self.partition_epoch = -1
        self.assigned_replicas: tuple[int, ...] = ()
        #: The committed ISR (what the controller stored).
        self.isr: tuple[int, ...] = ()
        self._pending: AlterPartition | None = None
        self._unsent: AlterPartition | None = None
        self._followers: dict[int, ReplicaState] = {}
        self._leader_epoch_start_offset: int | None = None
        self._fetch: _FetchState | None = None

    # -- state -------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.leader_id == self.replica_id

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        """The ISR the high watermark waits for: the committed one, plus the replica a
        pending expansion adds (a pending shrink still waits for the replicas it drops)."""
        if self._pending is None:
            return self.isr
        return tuple(sorted(set(self.isr) | set(self._pending.new_isr)))

    @property
    def pending_alter_partition(self) -> AlterPartition | None:
        """The ISR change in flight, if any."""
        return self._pending

    def follower_state(self, replica_id: int) -> ReplicaState:
        return self._followers[replica_id]

    def _check_epoch(self, current_leader_epoch: int) -> PylogError | None:
        if current_leader_epoch < 0 or current_leader_epoch == self.leader_epoch:
            return None
        if current_leader_epoch < self.leader_epoch:
            return FencedLeaderEpochError(f"request epoch {current_leader_epoch} is older than this "
                                          f"replica's leader epoch {self.leader_epoch}")
        return UnknownLeaderEpochError(f"request epoch {current_leader_epoch} is newer than this "
                                       f"replica's leader epoch {self.leader_epoch}")

    def _check_state(self, state: LeaderAndIsr) -> bool:
        """Whether a LeaderAndIsr is news; an older epoch is refused (a stale controller
        message must not undo a newer one)."""
        if state.leader_epoch < self.leader_epoch:
            raise FencedLeaderEpochError(f"LeaderAndIsr epoch {state.leader_epoch} is older than "
                                         f"this replica's {self.leader_epoch}")
        return state.leader_epoch > self.leader_epoch or state.partition_epoch > self.partition_epoch

    # -- becoming leader or follower (LeaderAndIsr) ---------------------------------------

    def become_leader(self, state: LeaderAndIsr, replicas: tuple[int, ...], now_ms: int) -> bool:
        """This replica leads ``state.leader_epoch``.  A new epoch starts at the log end
        offset (recorded in the epoch cache); a replica that was not leader forgets what it
        knew of the followers, so the high watermark waits for every ISR member's fetch.
        Returns False for a state already applied.

        Raises
        ------
        FencedLeaderEpochError
            ``state`` is older than the epoch this replica knows.
        """
        if state.leader != self.replica_id:
            raise ValueError(f"become_leader on replica {self.replica_id} for leader {state.leader}")
        if not self._check_state(state):
            return False
        new_leader = not self.is_leader
        new_epoch = state.leader_epoch > self.leader_epoch
        self._set_state(state, replicas)
        self._fetch = None
        if new_epoch:
            start = self.log.log_end_offset
            self.log.assign_epoch_start_offset(state.leader_epoch, start)
            self._leader_epoch_start_offset = start
        for r in replicas:
            if r == self.replica_id:
                continue
            old = self._followers.get(r)
            # An ISR follower counts as caught up now, others not at all, so neither the
            # shrink timer nor the high watermark waits on stale knowledge.
            caught_up = now_ms if r in state.isr else 0
            if new_leader or old is None:
                self._followers[r] = ReplicaState(r, last_caught_up_time_ms=caught_up)
            elif new_epoch:
                old.last_caught_up_time_ms = caught_up
                old.last_fetch_leader_log_end_offset = self._leader_epoch_start_offset
        for r in [r for r in self._followers if r not in replicas]:
            del self._followers[r]
        self.maybe_increment_high_watermark()
        return True

    def become_follower(self, state: LeaderAndIsr, replicas: tuple[int, ...]) -> bool:
        """Follow ``state.leader`` (or nobody: NO_LEADER) in ``state.leader_epoch``.  On a
        new leader or epoch the fetch restarts from the log end offset with the divergence
        check first (DivergingEpoch, or OffsetForLeaderEpoch when ``truncate_on_fetch`` is
        off).  Pending acks=all produces of a former leadership fail.  Returns False for a
        state already applied.

        Raises
        ------
        FencedLeaderEpochError
            ``state`` is older than the epoch this replica knows.
        """
        if state.leader == self.replica_id:
            raise ValueError(f"become_follower on replica {self.replica_id} naming itself leader")
        if not self._check_state(state):
            return False
        changed = state.leader != self.leader_id or state.leader_epoch != self.leader_epoch
        self._set_state(state, replicas)
        self._followers.clear()
        self._leader_epoch_start_offset = None
        if state.leader == NO_LEADER:
            self._fetch = None
        elif changed or self._fetch is None:
            self._restart_fetch()
        return True

    def resign(self) -> bool:
        """Stop leading without a LeaderAndIsr: this broker's ZooKeeper session expired,
        so the controller has taken (or will take) the leadership elsewhere, and a leader
        that carried on would serve and accept writes on a stale epoch.  Produce and
        follower fetches answer NOT_LEADER_OR_FOLLOWER and pending acks=all produces fail
        from now on; consumers are refused too.  The epoch is kept, and the next
        LeaderAndIsr applies even when it repeats the current epoch.  Returns whether this
        replica was leading."""
        if not self.is_leader:
            return False
        self.leader_id = NO_LEADER
        self.partition_epoch = -1
        self._pending = self._unsent = None
        self._followers.clear()
        self._leader_epoch_start_offset = None
        self._fetch = None
        return True

    def _set_state(self, state: LeaderAndIsr, replicas: tuple[int, ...]) -> None:
        self.leader_id = state.leader
        self.leader_epoch = state.leader_epoch
        self.partition_epoch = state.partition_epoch
        self.isr = tuple(state.isr)
        self.assigned_replicas = tuple(replicas)
        self._pending = self._unsent = None

    # -- leader: produce ---------------------------------------------------------------

    def append_records_to_leader(self, records: Any, required_acks: int, now_ms: int) -> AppendInfo:
        """Append a producer's batches.  For acks=all, ask
        :meth:`check_enough_replicas_reach_offset` until it is complete.

        Raises
        ------
        NotLeaderError
            This replica does not lead the partition.
        NotEnoughReplicasError
            acks=all and the ISR is smaller than ``min.insync.replicas`` (nothing appended).
        """
        if not self.is_leader:
            raise NotLeaderError(f"replica {self.replica_id} is not the leader (leader {self.leader_id}, "
                                 f"epoch {self.leader_epoch})")
        if required_acks == -1 and len(self.isr) < self.min_insync_replicas:
            raise NotEnoughReplicasError(f"the ISR {list(self.isr)} has fewer than min.insync.replicas="
                                         f"{self.min_insync_replicas} replicas")
        base, last = self.log.append_as_leader(records, self.leader_epoch)
        self.maybe_increment_high_watermark()
        return AppendInfo(base, last, self.leader_epoch)

    def check_enough_replicas_reach_offset(self, append: AppendInfo) -> bool:
        """acks=all: True once the high watermark has passed the append, False while it
        waits.

        Raises
        ------
        NotLeaderError
            Leadership moved (or changed epoch) since the append: it may be lost.
        NotEnoughReplicasAfterAppendError
            Committed, but the ISR shrank below ``min.insync.replicas`` meanwhile.
        """
        if not self.is_leader or self.leader_epoch != append.leader_epoch:
            raise NotLeaderError(f"replica {self.replica_id} no longer leads epoch {append.leader_epoch}")
        if self.high_watermark <= append.last_offset:
            return False
        if len(self.maximal_isr) < self.min_insync_replicas:
            raise NotEnoughReplicasAfterAppendError(
                f"offsets {append.base_offset}..{append.last_offset} were replicated to the ISR "
                f"{list(self.maximal_isr)}, fewer than min.insync.replicas={self.min_insync_replicas}")
        return True

    # -- leader: follower fetches, ISR and high watermark --------------------------------

    def fetch_for_follower(self, request: FetchRequest, now_ms: int, throttled: bool = False) -> FetchResponse:
        """A follower's Fetch: records from its fetch offset (or the DivergingEpoch it
        must truncate to), and its new position folded into the ISR and the high
        watermark.  An ISR expansion this causes waits in :meth:`poll_alter_partition`.
        ``throttled`` (the leader's replication quota says so, :mod:`pylog.cluster.quota`):
        no records this time; the position still counts."""
        log = self.log
        error = None if self.is_leader else NotLeaderError(f"replica {self.replica_id} is not the leader")
        error = error or self._check_epoch(request.current_leader_epoch)
        follower = self._followers.get(request.replica_id)
        if error is None and follower is None:
            error = NotLeaderError(f"replica {request.replica_id} is not assigned to this partition")
        if error is not None:
            return FetchResponse(error=error)
        if request.last_fetched_epoch >= 0:
            epoch, end = log.end_offset_for_epoch(request.last_fetched_epoch)
            if epoch < request.last_fetched_epoch or end < request.fetch_offset:
                # The follower's log holds records this one does not: no records and no
                # position update until it has truncated.
                return FetchResponse(high_watermark=self.high_watermark, log_start_offset=log.log_start_offset,
                                     diverging_epoch=EpochEndOffset(epoch, end))
        leader_end = log.log_end_offset
        if not log.log_start_offset <= request.fetch_offset <= leader_end:
            return FetchResponse(error=OffsetOutOfRangeError(
                f"fetch offset {request.fetch_offset} is outside {log.log_start_offset}..{leader_end}"),
                high_watermark=self.high_watermark, log_start_offset=log.log_start_offset)
        records = log.read(request.fetch_offset, request.max_bytes) \
            if request.fetch_offset < leader_end and not throttled else None
        # The answer carries the high watermark as it was when the records were read
        # (as Kafka's does): a follower learns an advance on its next fetch.
        response = FetchResponse(high_watermark=self.high_watermark, log_start_offset=log.log_start_offset,
                                 records=records)
        self._update_follower_fetch_state(follower, request.fetch_offset, leader_end, now_ms)
        follower.broker_epoch = request.replica_epoch
        self._maybe_expand_isr(follower)
        self.maybe_increment_high_watermark()
        return response

    def offset_for_leader_epoch(self, request: OffsetForLeaderEpochRequest) -> EpochEndOffset:
        """Where ``request.leader_epoch`` ends in this (leader's) log."""
        error = None if self.is_leader else NotLeaderError(f"replica {self.replica_id} is not the leader")
        error = error or self._check_epoch(request.current_leader_epoch)
        if error is not None:
            return EpochEndOffset(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET, error)
        epoch, end = self.log.end_offset_for_epoch(request.leader_epoch)
        return EpochEndOffset(epoch, end)

    def read_for_consumer(self, request: FetchRequest) -> FetchResponse:
        """A consumer's Fetch (from the leader, or a follower as KIP-392 allows): records
        below the high watermark only."""
        log = self.log
        error = None if self.is_leader or self.leader_id != NO_LEADER else NotLeaderError(
            f"partition has no leader (epoch {self.leader_epoch})")
        error = error or self._check_epoch(request.current_leader_epoch)
        if error is None and not log.log_start_offset <= request.fetch_offset <= log.log_end_offset:
            error = OffsetOutOfRangeError(f"fetch offset {request.fetch_offset} is outside "
                                          f"{log.log_start_offset}..{log.log_end_offset}")
        if error is not None:
            return FetchResponse(error=error, high_watermark=self.high_watermark)
        hw = self.high_watermark
        records = log.read(request.fetch_offset, request.max_bytes, hw) if request.fetch_offset < hw else None
        return FetchResponse(high_watermark=hw, log_start_offset=log.log_start_offset, records=records)

    def _update_follower_fetch_state(self, follower: ReplicaState, fetch_offset: int, leader_end: int,
                                     now_ms: int) -> None:
        # Caught up now if it asked for everything; caught up as of its previous fetch if
        # it asked for at least what the leader had then.
        if fetch_offset >= leader_end:
            follower.last_caught_up_time_ms = max(follower.last_caught_up_time_ms, now_ms)
        elif fetch_offset >= follower.last_fetch_leader_log_end_offset >= 0:
            follower.last_caught_up_time_ms = max(follower.last_caught_up_time_ms, follower.last_fetch_time_ms)
        follower.log_end_offset = fetch_offset
        follower.last_fetch_leader_log_end_offset = leader_end
        follower.last_fetch_time_ms = now_ms

    def _maybe_expand_isr(self, follower: ReplicaState) -> None:
        rid = follower.replica_id
        if (self._pending is None and rid not in self.isr and rid in self.assigned_replicas
                and follower.log_end_offset >= self.high_watermark
                and self._leader_epoch_start_offset is not None
                and follower.log_end_offset >= self._leader_epoch_start_offset):
            self._propose(tuple(sorted(self.isr + (rid,))))

    def maybe_shrink_isr(self, now_ms: int) -> AlterPartition | None:
        """The ISR-shrink timer: propose dropping the ISR followers not caught up for
        ``replica.lag.time.max.ms``.  Returns the proposal (also in :meth:`poll_alter_partition`)."""
        if not self.is_leader or self._pending is not None:
            return None
        leader_end = self.log.log_end_offset
        out = {r for r in self.isr if r != self.replica_id
               and not self._follower(r).is_caught_up(leader_end, now_ms, self.replica_lag_time_max_ms)}
        if not out:
            return None
        return self._propose(tuple(r for r in self.isr if r not in out))

    def _follower(self, replica_id: int) -> ReplicaState:
        state = self._followers.get(replica_id)
        return state if state is not None else ReplicaState(replica_id)

    def _propose(self, new_isr: tuple[int, ...]) -> AlterPartition:
        epochs = tuple(self.broker_epoch if r == self.replica_id else self._follower(r).broker_epoch
                       for r in new_isr)
        self._pending = self._unsent = AlterPartition(self.replica_id, self.leader_epoch, new_isr,
                                                      self.partition_epoch, epochs)
        return self._pending

    def poll_alter_partition(self) -> AlterPartition | None:
        """The ISR change to send to the controller, once (None when nothing new)."""
        request, self._unsent = self._unsent, None
        return request

    def alter_partition_response(self, request: AlterPartition, state: LeaderAndIsr | None = None,
                                 error: PylogError | None = None) -> bool:
        """The controller's answer to ``request``.  Success applies the stored ``state``'s
        ISR; OPERATION_NOT_ATTEMPTED drops the proposal; any other error (a stale version
        or epoch: this leader was superseded) keeps it pending, so the ISR stays frozen at
        its maximal value until a LeaderAndIsr brings the current state; INELIGIBLE_REPLICA
        drops it too (the replica is re-proposed when it fetches again, with its new
        broker epoch and position).  A dropped expansion no longer holds the high
        watermark back (the maximal ISR shrank): it is recomputed at once, since the
        ISR followers may all be parked in a long poll with nothing new to fetch.
        Returns whether the high watermark moved."""
        if request is not self._pending:
            return False
        if error is None and state is not None:
            if state.leader_epoch != self.leader_epoch or state.leader != self.replica_id:
                return False
            self.isr = tuple(state.isr)
            self.partition_epoch = state.partition_epoch
            self._pending = None
            return self.maybe_increment_high_watermark()
        if error is None:
            raise ValueError("alter_partition_response needs the stored state or an error")
        if isinstance(error, (OperationNotAttemptedError, IneligibleReplicaError)):
            self._pending = None
            return self.maybe_increment_high_watermark()
        return False

    def abandon_alter_partition(self, request: AlterPartition) -> bool:
        """``request`` never reached the controller (none elected, a network error):
        forget it, so the next fetch or ISR-shrink check proposes the change again.
        Returns whether the high watermark moved (a dropped expansion no longer holds
        it back)."""
        if request is not self._pending:
            return False
        self._pending = None
        return self.maybe_increment_high_watermark()

    def maybe_increment_high_watermark(self) -> bool:
        """Leader: move the high watermark to the smallest log end offset of the maximal
        ISR if that is higher (after a leader append: with an ISR of one it moves at
        once).  Returns whether it moved."""
        if not self.is_leader:
            return False
        new_hw = self.log.log_end_offset
        for r in self.maximal_isr:
            if r != self.replica_id:
                new_hw = min(new_hw, self._follower(r).log_end_offset)
        if new_hw > self.high_watermark:
            self.high_watermark = new_hw
            return True
        return False

    # -- follower: fetching and truncation -----------------------------------------------

    def _restart_fetch(self) -> None:
        log = self.log
        epoch = log.latest_epoch
        self._fetch = _FetchState(log.log_end_offset, epoch, truncating=not self.truncate_on_fetch)

    def fetch_request(self, max_bytes: int = 1 << 20) -> FetchRequest | OffsetForLeaderEpochRequest | None:
        """The next request this follower sends its leader: OffsetForLeaderEpoch while it
        must still find the divergence point, else a Fetch.  None when not following."""
        state = self._fetch
        if state is None or self.is_leader or self.leader_id == NO_LEADER:
            return None
        if state.truncating:
            epoch = self.log.latest_epoch
            if epoch < 0:
                # No epochs to compare (an empty log, or one written without them): the
                # high watermark is the last offset known to be committed.
                self._truncate(self.high_watermark)
                self._fetched_to_end()
            else:
                return OffsetForLeaderEpochRequest(self.replica_id, self.leader_epoch, epoch)
        # Before Fetch v12 there is no last fetched epoch: the OffsetForLeaderEpoch
        # exchange after each leader change is then the only divergence check.
        last_epoch = state.last_fetched_epoch if self.truncate_on_fetch else UNDEFINED_EPOCH
        return FetchRequest(self.replica_id, self.leader_epoch, state.fetch_offset, last_epoch, max_bytes,
                            self.broker_epoch)

    def _stale(self, request: FetchRequest | OffsetForLeaderEpochRequest) -> bool:
        """A response to a request sent before a leader change, a truncation or a fetch
        that has since moved on: ignored, as Kafka's fetcher does."""
        state = self._fetch
        if state is None or request.current_leader_epoch != self.leader_epoch or self.is_leader:
            return True
        if isinstance(request, OffsetForLeaderEpochRequest):
            return not state.truncating or request.leader_epoch != self.log.latest_epoch
        return state.truncating or request.fetch_offset != state.fetch_offset

    def handle_offset_for_leader_epoch(self, request: OffsetForLeaderEpochRequest,
                                       response: EpochEndOffset) -> None:
        """Truncate to what the leader's answer shows; fetch once the follower's latest
        epoch is one the leader knows (else ask again with the now older latest epoch)."""
        if self._stale(request) or response.error is not None:
            return
        if self._truncate_to_divergence(response):
            self._fetched_to_end()

    def handle_fetch_response(self, request: FetchRequest, response: FetchResponse) -> None:
        """Append the leader's records (or truncate to its DivergingEpoch) and take its
        high watermark, capped at this log's end.  Errors wait for a LeaderAndIsr
        (FENCED_LEADER_EPOCH, NOT_LEADER_OR_FOLLOWER) or a retry (UNKNOWN_LEADER_EPOCH);
        OFFSET_OUT_OF_RANGE sends the follower back to OffsetForLeaderEpoch."""
        if self._stale(request):
            return
        if response.error is not None:
            if isinstance(response.error, OffsetOutOfRangeError):
                self._fetch.truncating = True
            return
        if response.diverging_epoch is not None:
            self._truncate_to_divergence(response.diverging_epoch)
            self._fetched_to_end()
            return
        if response.records is not None:
            self.log.append_as_follower(response.records)
        self._fetched_to_end()
        self.high_watermark = min(response.high_watermark, self.log.log_end_offset)

    def _fetched_to_end(self) -> None:
        state = self._fetch
        state.fetch_offset = self.log.log_end_offset
        state.last_fetched_epoch = self.log.latest_epoch
        state.truncating = False

    def _truncate_to_divergence(self, leader: EpochEndOffset) -> bool:
        """Truncate where this log stops agreeing with the leader's answer for an epoch
        (KIP-279).  Returns whether the divergence point is final."""
        log = self.log
        if leader.end_offset == UNDEFINED_EPOCH_OFFSET:
            # The leader knows no such epoch: keep only what is known to be committed.
            self._truncate(self.high_watermark)
            return True
        if leader.leader_epoch == UNDEFINED_EPOCH:
            self._truncate(min(leader.end_offset, log.log_end_offset))
            return True
        epoch, end = log.end_offset_for_epoch(leader.leader_epoch)
        if epoch == UNDEFINED_EPOCH:
            offset, final = leader.end_offset, True
        elif epoch != leader.leader_epoch:
            # This log never saw the leader's epoch: cut back to the end of the largest
            # epoch below it and ask again.
            offset, final = end, False
        else:
            offset, final = min(leader.end_offset, end), True
        self._truncate(min(offset, log.log_end_offset))
        return final

    def _truncate(self, offset: int) -> None:
        self.log.truncate_to(offset)
        self.high_watermark = min(self.high_watermark, self.log.log_end_offset)

    def __repr__(self) -> str:
        role = "leader" if self.is_leader else f"follower of {self.leader_id}"
        return (f"<Partition replica {self.replica_id} {role} epoch {self.leader_epoch} isr {list(self.isr)} "
                f"hw {self.high_watermark} leo {self.log.log_end_offset}>")
