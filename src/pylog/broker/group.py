"""The group coordinator: consumer-group membership and committed offsets (classic protocol).

One implementation of Kafka's classic group protocol, called by the wire-protocol server's
JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, OffsetDelete,
DescribeGroups, ListGroups and DeleteGroups handlers, and directly by the embedded consumer.

Group states, as Kafka's::

    Empty ──join──► PreparingRebalance ──all joined / rebalance timeout──► CompletingRebalance
      ▲                 ▲   ▲                                                   │ leader's SyncGroup
      │ (no members)    │   └──── member joins / leaves / fails ◄──── Stable ◄──┘
      └─────────────────┘                                                  (any) ──delete──► Dead

- **Join**: a new dynamic member (JoinGroup v4+) first gets MEMBER_ID_REQUIRED with a
  member id ``<client_id>-<uuid>`` and joins again with it; older clients
  (``require_known_member_id=False``) and static members get their id at once.  The join
  phase ends when every known member has rejoined (and no member id handed out is still
  unused), or when the group's rebalance timeout (the largest ``rebalance_timeout_ms`` of
  its members: a consumer's ``max.poll.interval.ms``) expires; dynamic members that did
  not rejoin are then removed.  The first rebalance of an empty group also waits
  ``initial_rebalance_delay_ms`` (``group.initial.rebalance.delay.ms``), extended while new
  members keep arriving, so a group starting up rebalances once, not once per member.
  Kafka's default is 3000 ms; pylog's is 0, right for an embedded consumer that starts
  alone; a server facing many consumers starting together should set Kafka's value.
- **Protocol and leader**: the protocol is the one all members support that most members
  prefer (each votes for its first choice among those); the leader is the first member
  that joined, kept while it stays, replaced by a member that rejoined if it did not.  The
  leader gets every member's metadata in its JoinGroup response.
- **Sync**: the leader's SyncGroup carries every member's assignment; followers wait for
  it.  Members that do not send SyncGroup within the rebalance timeout are removed.
- **Heartbeat / session**: a member that sends nothing for ``session_timeout_ms`` is removed
  and the group rebalances; a heartbeat during a rebalance gets REBALANCE_IN_PROGRESS.
- **Static membership** (``group_instance_id``, KIP-345): a static member that restarts and
  joins with an empty member id takes its old place under a new member id; if the group is
  Stable and neither the selected protocol nor the member's subscription changed, there is
  no rebalance (Kafka rebalances only when the selected protocol would change; pylog also
  does when the member's subscription changed, so the leader sees it).  What a consumer
  reports of its own state (generation, owned partitions, assignor user data) differs after
  every restart and is not compared: Kafka's Java consumers rejoin with generation -1.
  A request with the instance id but an old member id gets FENCED_INSTANCE_ID.
- **Offsets**: commits are checked against the member and generation (generation -1 with
  no member id commits for a group without members, as admin tools and manual-assignment
  consumers do); a commit during CompletingRebalance gets REBALANCE_IN_PROGRESS.
- **Transactional offsets** (TxnOffsetCommit, KIP-98/KIP-447): appended as a transactional
  batch of the producer, they stay pending until the transaction's marker reaches the
  group's ``__consumer_offsets`` partition (:meth:`GroupCoordinator.complete_txn`):
  COMMIT makes them the committed offsets, ABORT drops them.  A plain commit of the same
  partition appended after them wins (Kafka keeps the later record).  OffsetFetch with
  ``require_stable`` answers UNSTABLE_OFFSET_COMMIT for a partition with a pending one.
  The replay after a restart applies the markers found in the log the same way; offsets
  of a transaction without a marker stay pending until the transaction coordinator ends it.
- **Pending commits** (a replicated store: a clustered broker's ``__consumer_offsets``):
  as Kafka's GroupMetadata does, a commit whose append is not replicated yet is held
  apart (the group's pending offset commits) and becomes the committed offset only once
  the store says the ISR has it; a commit the ISR does not take is dropped, and the
  offset committed before it stands.  OffsetFetch answers the committed offsets only, so
  no reader sees an offset a failover could take back; with ``require_stable`` a
  partition with a pending commit (plain or transactional) answers
  UNSTABLE_OFFSET_COMMIT.  A store whose append is durable as it returns (single node,
  embedded) has no pending commits: the offset is committed at once.

Driving it
----------
The coordinator is synchronous and does no I/O of its own besides :class:`OffsetStore`
appends.  Time comes from ``clock`` (milliseconds; inject a fake clock in tests) and timeouts
fire when :meth:`GroupCoordinator.tick` is called, and at the start of every request (so a
late tick never lets an expired member through).  :meth:`GroupCoordinator.next_deadline`
says when the next timeout is due.  JoinGroup and SyncGroup may have to wait for other
members; they return a :class:`PendingResponse` that is completed later, by another call
or by ``tick``.  An asyncio server wraps it with ``add_done_callback`` +
``loop.call_soon_threadsafe``; a threaded client calls ``wait(timeout)``.

Thread safety: every public method takes the coordinator's lock, so any number of threads
may call it.  Completion callbacks run after the lock is released, in the thread whose call
completed them; they may call back into the coordinator.

Persistence and crashes: offset commits and group metadata (generation, protocol, leader,
members and their assignments) are appended to ``__consumer_offsets`` through the
:class:`OffsetStore` before the request that caused them succeeds; if the append fails
the request fails and the in-memory state is unchanged.  After a restart, :meth:`load`
replays the records: committed offsets and the last stable generation come back; members
must heartbeat within their session timeout or are removed.  A rebalance in progress at
the crash is lost (its members rejoin).
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import threading
import time
from typing import Callable, Generic, Iterable, Mapping, Sequence, TypeVar

from pylog._uuid import random_uuid_str
from pylog._value import FrozenValue, Value, frozen_dataclass
from pylog.broker import group_offsets as _records
from pylog.broker.consumer_protocol import PROTOCOL_TYPE as CONSUMER_PROTOCOL_TYPE
from pylog.broker.consumer_protocol import decode_subscription
from pylog.broker.group_offsets import (
    GroupMetadataValue,
    MemberMetadata,
    OffsetCommitValue,
    OffsetStore,
    partition_for_group,
)
from pylog.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    CorruptRecordError,
    FencedInstanceIdError,
    GroupIdNotFoundError,
    GroupSubscribedToTopicError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    InvalidCommitOffsetSizeError,
    InvalidConfigError,
    InvalidGroupIdError,
    InvalidRequestError,
    InvalidSessionTimeoutError,
    KafkaStorageError,
    MemberIdRequiredError,
    NonEmptyGroupError,
    NotCoordinatorError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderError,
    OffsetMetadataTooLargeError,
    PylogError,
    RebalanceInProgressError,
    RecordBatchTooLargeError,
    RecordTooLargeError,
    RequestTimedOutError,
    UnknownMemberIdError,
    UnknownServerError,
    UnknownTopicOrPartitionError,
    UnstableOffsetCommitError,
    error_for_code,
)

__all__ = [
    "GroupState",
    "GroupCoordinatorConfig",
    "GroupCoordinator",
    "PendingResponse",
    "JoinGroupMember",
    "JoinGroupResult",
    "SyncGroupResult",
    "MemberIdentity",
    "LeaveGroupMemberResult",
    "LeaveGroupResult",
    "CommitOffset",
    "FetchedOffset",
    "OffsetFetchResult",
    "OffsetDeleteResult",
    "DescribedMember",
    "GroupDescription",
    "ListedGroup",
    "NONE",
    "UNKNOWN_MEMBER_ID",
    "NO_GENERATION",
]

_log = logging.getLogger("pylog.broker.group")

#: Error code of success.
NONE = 0
#: The member id of a member that has none yet.
UNKNOWN_MEMBER_ID = ""
#: Generation id of a commit from outside group management.
NO_GENERATION = -1

_E_UNKNOWN_MEMBER = UnknownMemberIdError.error_code
_E_ILLEGAL_GENERATION = IllegalGenerationError.error_code
_E_REBALANCE = RebalanceInProgressError.error_code
_E_INCONSISTENT = InconsistentGroupProtocolError.error_code
_E_NOT_AVAILABLE = CoordinatorNotAvailableError.error_code
_E_NOT_COORDINATOR = NotCoordinatorError.error_code
_E_LOADING = CoordinatorLoadInProgressError.error_code
_E_INVALID_GROUP = InvalidGroupIdError.error_code
_E_FENCED = FencedInstanceIdError.error_code
_E_PRODUCER_EPOCH = 47      # INVALID_PRODUCER_EPOCH
_E_PRODUCER_FENCED = 90     # PRODUCER_FENCED


def _same_subscription(protocol_type: str, old: bytes, new: bytes) -> bool:
    """Whether a restarted static member asks for what its previous incarnation asked for.

    Opaque metadata must be equal.  Consumer-protocol metadata compares by topics and rack
    only: its generation id and owned partitions are the consumer's state, which a restart
    resets (a Java consumer rejoins with generation -1 and no partitions), and so is the
    user data of the sticky assignors (their generation) and of Kafka Streams."""
    if old == new:
        return True
    if protocol_type != CONSUMER_PROTOCOL_TYPE:
        return False
    try:
        a, b = decode_subscription(old), decode_subscription(new)
    except InconsistentGroupProtocolError:
        return False
    return sorted(a.topics) == sorted(b.topics) and a.rack_id == b.rack_id


class GroupState(enum.Enum):
    """A classic group's state; ``value`` is Kafka's name (DescribeGroups, ListGroups)."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@frozen_dataclass
class GroupCoordinatorConfig:
    """Broker settings of the group coordinator (Kafka's names in the comments).

    ``initial_rebalance_delay_ms`` defaults to 0 (Kafka: 3000): see the module docstring.
    """

    min_session_timeout_ms: int = 6_000                 # group.min.session.timeout.ms
    max_session_timeout_ms: int = 1_800_000             # group.max.session.timeout.ms
    initial_rebalance_delay_ms: int = 0                 # group.initial.rebalance.delay.ms
    new_member_join_timeout_ms: int = 300_000           # (Kafka's fixed NewMemberJoinTimeoutMs)
    offset_metadata_max_bytes: int = 4096               # offset.metadata.max.bytes
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000    # offsets.retention.minutes
    offsets_retention_check_interval_ms: int = 600_000  # offsets.retention.check.interval.ms
    offsets_topic_num_partitions: int = 50              # offsets.topic.num.partitions

    def __post_init__(self) -> None:
        for name in ("min_session_timeout_ms", "max_session_timeout_ms",
                     "new_member_join_timeout_ms", "offsets_retention_ms",
                     "offsets_retention_check_interval_ms", "offsets_topic_num_partitions"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise InvalidConfigError(f"{name} must be a positive int, got {v!r}")
        for name in ("initial_rebalance_delay_ms", "offset_metadata_max_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise InvalidConfigError(f"{name} must be an int >= 0, got {v!r}")
        if self.min_session_timeout_ms > self.max_session_timeout_ms:
            raise InvalidConfigError("min_session_timeout_ms is larger than max_session_timeout_ms")


# ------------------------------------------------------------------------- responses

T = TypeVar("T")


class PendingResponse(Generic[T]):
    """A response the coordinator completes now or later (JoinGroup, SyncGroup).

    ``add_done_callback(fn)`` calls ``fn(self)`` once the result is there (at once if it
    already is); ``result()`` returns it or raises RequestTimedOutError if it is not there
    yet; ``wait(timeout)`` blocks the calling thread until it is.  Thread-safe.
    """

    __slots__ = ("_lock", "_event", "_result", "_callbacks")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._result: T | None = None
        self._callbacks: list[Callable[[PendingResponse[T]], object]] | None = []

    def done(self) -> bool:
        return self._event.is_set()

    def result(self) -> T:
        """The result; raises RequestTimedOutError if the response is not complete yet."""
        if not self._event.is_set():
            raise RequestTimedOutError(
                "the response is not complete yet; use wait() or add_done_callback()")
        return self._result  # type: ignore[return-value]

    def wait(self, timeout: float | None = None) -> T:
        """Block until the response is complete (at most ``timeout`` seconds) and return it.

        Raises
        ------
        RequestTimedOutError
            The response did not complete in time.
        """
        if not self._event.wait(timeout):
            raise RequestTimedOutError(f"no response within {timeout} s")
        return self._result  # type: ignore[return-value]

    def add_done_callback(self, fn: Callable[[PendingResponse[T]], object]) -> None:
        with self._lock:
            if self._callbacks is not None:
                self._callbacks.append(fn)
                return
        fn(self)

    def _set(self, result: T) -> list[Callable[[PendingResponse[T]], object]]:
        """Complete; returns the callbacks to run (the coordinator runs them unlocked)."""
        with self._lock:
            if self._callbacks is None:
                return []
            self._result = result
            callbacks, self._callbacks = self._callbacks, None
        self._event.set()
        return callbacks

    def __repr__(self) -> str:
        return f"PendingResponse({self._result!r})" if self.done() else "PendingResponse(<pending>)"


class _ResultMixin(Value):
    __slots__ = ()
    error_code: int

    @property
    def error(self) -> PylogError | None:
        """The error as an exception (None on success)."""
        return None if self.error_code == NONE else error_for_code(self.error_code)

    def raise_for_error(self) -> None:
        """Raise the error as an exception, if there is one."""
        if self.error_code != NONE:
            raise error_for_code(self.error_code)


class JoinGroupMember(Value):
    """One member as the leader sees it in its JoinGroup response."""

    _fields = ("member_id", "group_instance_id", "metadata")
    member_id: str
    group_instance_id: str | None
    metadata: bytes

    def __init__(self, member_id: str, group_instance_id: str | None, metadata: bytes) -> None:
        self.member_id = member_id
        self.group_instance_id = group_instance_id
        self.metadata = metadata


class JoinGroupResult(_ResultMixin):
    """JoinGroup response.  ``members`` is filled for the leader only; ``skip_assignment``
    (JoinGroup v9+) tells a static leader that rejoined a stable group to not reassign."""

    _fields = ("error_code", "member_id", "generation_id", "protocol_type", "protocol_name", "leader", "members",
               "skip_assignment")
    error_code: int
    member_id: str
    generation_id: int
    protocol_type: str | None
    protocol_name: str | None
    leader: str
    members: list[JoinGroupMember]
    skip_assignment: bool

    def __init__(self, error_code: int, member_id: str, generation_id: int = -1, protocol_type: str | None = None,
                 protocol_name: str | None = None, leader: str = "", members: list[JoinGroupMember] | None = None,
                 skip_assignment: bool = False) -> None:
        self.error_code = error_code
        self.member_id = member_id
        self.generation_id = generation_id
        self.protocol_type = protocol_type
        self.protocol_name = protocol_name
        self.leader = leader
        self.members = [] if members is None else members
        self.skip_assignment = skip_assignment

    @property
    def is_leader(self) -> bool:
        return self.error_code == NONE and self.leader == self.member_id


class SyncGroupResult(_ResultMixin):
    _fields = ("error_code", "protocol_type", "protocol_name", "assignment")
    error_code: int
    protocol_type: str | None
    protocol_name: str | None
    assignment: bytes

    def __init__(self, error_code: int, protocol_type: str | None = None, protocol_name: str | None = None,
                 assignment: bytes = b"") -> None:
        self.error_code = error_code
        self.protocol_type = protocol_type
        self.protocol_name = protocol_name
        self.assignment = assignment


class MemberIdentity(FrozenValue):
    """A member leaving (LeaveGroup v3+ lists several).  An empty ``member_id`` with a
    ``group_instance_id`` removes that static member, whatever its member id (admin use)."""

    __slots__ = _fields = ("member_id", "group_instance_id", "reason")
    member_id: str
    group_instance_id: str | None
    reason: str | None

    def __init__(self, member_id: str, group_instance_id: str | None = None, reason: str | None = None) -> None:
        set_ = object.__setattr__
        set_(self, "member_id", member_id)
        set_(self, "group_instance_id", group_instance_id)
        set_(self, "reason", reason)


class LeaveGroupMemberResult(Value):
    _fields = ("member_id", "group_instance_id", "error_code")
    member_id: str
    group_instance_id: str | None
    error_code: int

    def __init__(self, member_id: str, group_instance_id: str | None, error_code: int) -> None:
        self.member_id = member_id
        self.group_instance_id = group_instance_id
        self.error_code = error_code


class LeaveGroupResult(_ResultMixin):
    """LeaveGroup response: a group-level error and one result per member (v3+)."""

    _fields = ("error_code", "members")
    error_code: int
    members: list[LeaveGroupMemberResult]

    def __init__(self, error_code: int, members: list[LeaveGroupMemberResult] | None = None) -> None:
        self.error_code = error_code
        self.members = [] if members is None else members


class CommitOffset(FrozenValue):
    """One partition of an OffsetCommit request."""

    __slots__ = _fields = ("offset", "metadata", "leader_epoch")
    offset: int
    metadata: str | None
    leader_epoch: int

    def __init__(self, offset: int, metadata: str | None = "", leader_epoch: int = -1) -> None:
        set_ = object.__setattr__
        set_(self, "offset", offset)
        set_(self, "metadata", metadata)
        set_(self, "leader_epoch", leader_epoch)


class FetchedOffset(Value):
    """One partition of an OffsetFetch response; offset -1 means none committed."""

    _fields = ("offset", "leader_epoch", "metadata", "error_code")
    offset: int
    leader_epoch: int
    metadata: str
    error_code: int

    def __init__(self, offset: int = -1, leader_epoch: int = -1, metadata: str = "", error_code: int = NONE) -> None:
        self.offset = offset
        self.leader_epoch = leader_epoch
        self.metadata = metadata
        self.error_code = error_code


class OffsetFetchResult(_ResultMixin):
    _fields = ("error_code", "topics")
    error_code: int
    topics: dict[str, dict[int, FetchedOffset]]

    def __init__(self, error_code: int, topics: dict[str, dict[int, FetchedOffset]] | None = None) -> None:
        self.error_code = error_code
        self.topics = {} if topics is None else topics


class OffsetDeleteResult(_ResultMixin):
    """OffsetDelete response: a group-level error, else an error per partition."""

    _fields = ("error_code", "topics")
    error_code: int
    topics: dict[str, dict[int, int]]

    def __init__(self, error_code: int, topics: dict[str, dict[int, int]] | None = None) -> None:
        self.error_code = error_code
        self.topics = {} if topics is None else topics


class DescribedMember(Value):
    _fields = ("member_id", "group_instance_id", "client_id", "client_host", "metadata", "assignment")
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes

    def __init__(self, member_id: str, group_instance_id: str | None, client_id: str, client_host: str,
                 metadata: bytes, assignment: bytes) -> None:
        self.member_id = member_id
        self.group_instance_id = group_instance_id
        self.client_id = client_id
        self.client_host = client_host
        self.metadata = metadata
        self.assignment = assignment


class GroupDescription(_ResultMixin):
    """DescribeGroups entry.  Metadata and assignments are given in Stable only (as Kafka)."""

    _fields = ("group_id", "error_code", "state", "protocol_type", "protocol_data", "members")
    group_id: str
    error_code: int
    state: str
    protocol_type: str
    protocol_data: str
    members: list[DescribedMember]

    def __init__(self, group_id: str, error_code: int, state: str, protocol_type: str, protocol_data: str,
                 members: list[DescribedMember] | None = None) -> None:
        self.group_id = group_id
        self.error_code = error_code
        self.state = state
        self.protocol_type = protocol_type
        self.protocol_data = protocol_data
        self.members = [] if members is None else members


class ListedGroup(Value):
    """A group as ListGroups lists it.  ``group_type`` is KIP-848's group type: every
    group this coordinator runs speaks the classic (JoinGroup/SyncGroup) protocol."""

    _fields = ("group_id", "protocol_type", "state", "group_type")
    group_id: str
    protocol_type: str
    state: str
    group_type: str

    def __init__(self, group_id: str, protocol_type: str, state: str, group_type: str = "classic") -> None:
        self.group_id = group_id
        self.protocol_type = protocol_type
        self.state = state
        self.group_type = group_type


def _metadata_problem(value: _records.GroupMetadataValue) -> str | None:
    """Why a group's stored metadata cannot be loaded, or None."""
    if value.members and value.protocol is None:
        return "metadata lists members but no protocol"
    return None


# ------------------------------------------------------------------------- internal state

class _Member:
    __slots__ = ("member_id", "group_instance_id", "client_id", "client_host",
                 "rebalance_timeout_ms", "session_timeout_ms", "protocol_type", "protocols",
                 "assignment", "join_pending", "sync_pending", "is_new", "hb_token")

    def __init__(self, member_id: str, group_instance_id: str | None, client_id: str,
                 client_host: str, rebalance_timeout_ms: int, session_timeout_ms: int,
                 protocol_type: str, protocols: list[tuple[str, bytes]]) -> None:
        self.member_id = member_id
        self.group_instance_id = group_instance_id
        self.client_id = client_id
        self.client_host = client_host
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.session_timeout_ms = session_timeout_ms
        self.protocol_type = protocol_type
        self.protocols = protocols
        self.assignment = b""
        self.join_pending: PendingResponse[JoinGroupResult] | None = None
        self.sync_pending: PendingResponse[SyncGroupResult] | None = None
        self.is_new = False
        self.hb_token: int | None = None

    def metadata(self, protocol: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""

    def vote(self, candidates: set[str]) -> str:
        for name, _ in self.protocols:
            if name in candidates:
                return name
        raise InconsistentGroupProtocolError(  # unreachable: joins are checked first
            f"member {self.member_id} supports none of {sorted(candidates)}")


class _Group:
    def __init__(self, group_id: str, now: int) -> None:
        self.group_id = group_id
        self.state = GroupState.EMPTY
        self.state_timestamp = now
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, _Member] = {}
        self.static_members: dict[str, str] = {}       # group_instance_id -> member_id
        self.pending_members: dict[str, int] = {}      # member id handed out -> timer token
        self.pending_sync: set[str] = set()
        self.new_member_added = False
        self.offsets: dict[tuple[str, int], OffsetCommitValue] = {}
        # Plain commits appended to a replicated store and not replicated yet (Kafka's
        # pendingOffsetCommits): (topic, partition) -> the latest such commit.
        self.pending_offsets: dict[tuple[str, int], OffsetCommitValue] = {}
        # Transactional offset commits waiting for their transaction's marker:
        # producer id -> (topic, partition) -> offset.
        self.pending_txn: dict[int, dict[tuple[str, int], OffsetCommitValue]] = {}
        self.join_token: int | None = None
        self.join_initial = False
        self.join_remaining_ms = 0
        self.sync_token: int | None = None
        #: Offset-expiry tombstones written and not yet replicated (a clustered store).
        self.expiring = False

    @property
    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def candidate_protocols(self) -> set[str]:
        members = list(self.members.values())
        if not members:
            return set()
        names = {n for n, _ in members[0].protocols}
        for m in members[1:]:
            names &= {n for n, _ in m.protocols}
        return names

    def supports_protocols(self, protocol_type: str, protocols: list[tuple[str, bytes]]) -> bool:
        if not self.members:
            return bool(protocol_type) and bool(protocols)
        if protocol_type != self.protocol_type:
            return False
        candidates = self.candidate_protocols()
        return any(n in candidates for n, _ in protocols)

    def select_protocol(self) -> str:
        candidates = self.candidate_protocols()
        votes: dict[str, int] = {}
        for m in self.members.values():
            choice = m.vote(candidates)
            votes[choice] = votes.get(choice, 0) + 1
        best = max(votes.values())
        # Ties go to the leader's (else the first member's) preference order.
        first = self.members.get(self.leader_id or "") or next(iter(self.members.values()))
        for name, _ in first.protocols:
            if votes.get(name) == best:
                return name
        return min(n for n, c in votes.items() if c == best)

    def subscribed_topics(self) -> set[str] | None:
        """Topics a consumer group's members subscribe to; None when unknown (not a
        consumer group, or a member's metadata cannot be read)."""
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE or self.protocol_name is None:
            return None
        topics: set[str] = set()
        for m in self.members.values():
            try:
                topics.update(decode_subscription(m.metadata(self.protocol_name)).topics)
            except PylogError:
                return None
        return topics

    def is_subscribed_to(self, topic: str) -> bool:
        topics = self.subscribed_topics()
        return topics is None or topic in topics


_HEARTBEAT, _PENDING, _JOIN, _SYNC, _EXPIRE = range(5)

Record = tuple[bytes, "bytes | None"]


def _storage_error_code(exc: BaseException, *, for_commit: bool) -> int:
    """Kafka's translation of a failed ``__consumer_offsets`` append into the error a
    group or commit request returns."""
    if isinstance(exc, (UnknownTopicOrPartitionError, RequestTimedOutError, NotEnoughReplicasError,
                        NotEnoughReplicasAfterAppendError)):
        return _E_NOT_AVAILABLE
    if isinstance(exc, (NotLeaderError, KafkaStorageError)):
        return _E_NOT_COORDINATOR
    if isinstance(exc, (RecordTooLargeError, RecordBatchTooLargeError)):
        return InvalidCommitOffsetSizeError.error_code if for_commit else UnknownServerError.error_code
    if isinstance(exc, PylogError):
        return exc.error_code
    return UnknownServerError.error_code


def _normalize_commit(offsets) -> dict[str, dict[int, CommitOffset]]:
    """Check an OffsetCommit's shape before anything changes (bad input raises)."""
    out: dict[str, dict[int, CommitOffset]] = {}
    try:
        items = list(offsets.items())
        for topic, parts in items:
            if not isinstance(topic, str):
                raise InvalidRequestError(f"topic must be a str, not {type(topic).__name__}")
            out_parts = out[topic] = {}
            for partition, c in dict(parts).items():
                if isinstance(c, int) and not isinstance(c, bool):
                    c = CommitOffset(c)
                if not isinstance(c, CommitOffset) or not isinstance(partition, int) \
                        or isinstance(partition, bool):
                    raise InvalidRequestError(
                        f"offset of {topic!r}/{partition!r} must be a CommitOffset or an int")
                if c.metadata is not None and not isinstance(c.metadata, str):
                    raise InvalidRequestError(f"metadata of {topic!r}/{partition} must be a str")
                out_parts[partition] = c
    except (AttributeError, TypeError, ValueError) as exc:
        if isinstance(exc, InvalidRequestError):
            raise
        raise InvalidRequestError("offsets must map topic -> partition -> CommitOffset") from None
    return out


def _normalize_assignments(assignments) -> dict[str, bytes]:
    if assignments is None:
        return {}
    out = {}
    try:
        for member_id, value in dict(assignments).items():
            out[member_id] = b"" if value is None else memoryview(value).tobytes()
    except (TypeError, ValueError):
        raise InvalidRequestError("assignments must map member id -> bytes") from None
    return out


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _java_length(s: str) -> int:
    """Length of ``s`` as Java's ``String.length()`` counts it (UTF-16 units)."""
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


# ------------------------------------------------------------------------- coordinator

class GroupCoordinator:
    """Kafka's classic group coordinator (see the module docstring).

    Parameters
    ----------
    store : OffsetStore, optional
        Where commits and group metadata are persisted; None keeps them in memory only
        (an :class:`~pylog.broker.group_offsets.InMemoryOffsetStore`).
    config : GroupCoordinatorConfig, optional
    clock : callable returning int, optional
        Current time in milliseconds (default: wall clock).  Commit timestamps come from
        it too.  It may go backwards; the coordinator never does.
    member_id_suffix : callable returning str, optional
        Makes the unique part of new member ids (default: a random UUID).
    owned_partitions : iterable of int, optional
        ``__consumer_offsets`` partitions this coordinator serves (None: all).  Requests
        for a group in another partition get NOT_COORDINATOR.
    """

    def __init__(self, store: OffsetStore | None = None, config: GroupCoordinatorConfig | None = None,
                 *, clock: Callable[[], int] = _wall_clock_ms,
                 member_id_suffix: Callable[[], str] | None = None,
                 owned_partitions: Iterable[int] | None = None) -> None:
        self.config = config or GroupCoordinatorConfig()
        if store is None:
            store = _records.InMemoryOffsetStore(self.config.offsets_topic_num_partitions)
        self.store = store
        self._num_partitions = int(getattr(store, "num_partitions", self.config.offsets_topic_num_partitions))
        self._owned: set[int] | None = None if owned_partitions is None else set(owned_partitions)
        #: Partitions being loaded (:meth:`begin_load`): COORDINATOR_LOAD_IN_PROGRESS.
        self._loading: set[int] = set()
        self._clock = clock
        self._suffix = member_id_suffix or random_uuid_str
        self._lock = threading.Lock()
        self._groups: dict[str, _Group] = {}
        self._timers: list[tuple[int, int, int, str, str, int]] = []
        self._seq = itertools.count(1)
        self._deferred: list[Callable[[], object]] = []
        self._now = clock()
        self._expire_token = self._schedule(self._now + self.config.offsets_retention_check_interval_ms,
                                            _EXPIRE, "", "")

    # ---------------------------------------------------------------- plumbing

    class _Operation:
        __slots__ = ("coordinator", "now")

        def __init__(self, coordinator: GroupCoordinator, now: int | None) -> None:
            self.coordinator = coordinator
            self.now = now

        def __enter__(self) -> int:
            c = self.coordinator
            c._lock.acquire()
            try:
                t = c._clock() if self.now is None else self.now
                c._now = max(c._now, t)
                c._advance()
            except BaseException:
                self._release()
                raise
            return c._now

        def __exit__(self, exc_type, exc, tb) -> None:
            try:
                if exc_type is None:
                    self.coordinator._advance()   # timeouts the request made due (a 0 ms delay)
            finally:
                self._release()

        def _release(self) -> None:
            c = self.coordinator
            deferred, c._deferred = c._deferred, []
            c._lock.release()
            for fn in deferred:
                try:
                    fn()
                except Exception:  # noqa: BLE001 - a callback's failure is its own
                    _log.exception("a completion callback raised")

    def _op(self, now: int | None = None) -> GroupCoordinator._Operation:
        return GroupCoordinator._Operation(self, now)

    def _complete(self, pending: PendingResponse | None, result) -> None:
        if pending is None:
            return
        for cb in pending._set(result):
            self._deferred.append(lambda cb=cb, p=pending: cb(p))

    def _schedule(self, deadline: int, kind: int, group_id: str, member_id: str) -> int:
        token = next(self._seq)
        heapq.heappush(self._timers, (deadline, token, kind, group_id, member_id, token))
        return token

    def _advance(self) -> None:
        # Each timeout is handled as of its own deadline, as if it had fired on time: what
        # it schedules (the next delay, session deadlines) does not depend on how late
        # tick() was called.  Deadlines come out of the heap in order, so time only moves on.
        target = self._now
        timers = self._timers
        try:
            while timers and timers[0][0] <= target:
                self._now = timers[0][0]
                self._fire(*heapq.heappop(timers)[2:])
        finally:
            self._now = target

    def _fire(self, kind: int, group_id: str, member_id: str, token: int) -> None:
        now = self._now
        if kind == _EXPIRE:
            if token == self._expire_token:
                self._expire_offsets(now)
                self._expire_token = self._schedule(
                    now + self.config.offsets_retention_check_interval_ms, _EXPIRE, "", "")
            return
        group = self._groups.get(group_id)
        if group is None or group.state is GroupState.DEAD:
            return
        if kind == _HEARTBEAT:
            member = group.members.get(member_id)
            if member is not None and member.hb_token == token:
                self._on_heartbeat_expired(group, member)
        elif kind == _PENDING:
            if group.pending_members.get(member_id) == token:
                _log.info("group %s: pending member %s did not join within its session timeout",
                          group_id, member_id)
                del group.pending_members[member_id]
                if group.state is GroupState.PREPARING_REBALANCE:
                    self._try_complete_join(group)
        elif kind == _JOIN:
            if group.join_token == token and group.state is GroupState.PREPARING_REBALANCE:
                self._on_join_timer(group)
        elif kind == _SYNC:
            if group.sync_token == token:
                self._on_sync_expired(group)

    def _schedule_heartbeat(self, group: _Group, member: _Member, timeout_ms: int | None = None) -> None:
        if timeout_ms is None:
            timeout_ms = member.session_timeout_ms
        member.hb_token = self._schedule(self._now + timeout_ms, _HEARTBEAT, group.group_id,
                                         member.member_id)

    def _check_group_id(self, group_id, *, allow_empty: bool = False) -> int:
        if not isinstance(group_id, str) or (not group_id and not allow_empty):
            return _E_INVALID_GROUP
        if self._owned is not None:
            partition = partition_for_group(group_id, self._num_partitions)
            if partition not in self._owned:
                return _E_LOADING if partition in self._loading else _E_NOT_COORDINATOR
        return NONE

    def _append(self, group_id: str, records: Sequence[Record]):
        """The store's append; returns its replication handle (None: durable now)."""
        return self.store.append(partition_for_group(group_id, self._num_partitions), records)

    def _when_replicated(self, handle, fn: Callable[[BaseException | None], None]) -> None:
        """``fn(error)`` under the coordinator's lock once a clustered store says the
        records of ``handle`` are replicated (error None) or will not be (the
        PylogError); nothing for a store whose append was durable as it returned."""
        if handle is None:
            return

        def done(error: BaseException | None) -> None:
            with self._op():
                fn(error)

        handle.add_done_callback(done)

    def _group_record(self, group: _Group, assignments: Mapping[str, bytes] | None = None) -> Record:
        members = []
        for m in group.members.values():
            members.append(MemberMetadata(
                member_id=m.member_id, group_instance_id=m.group_instance_id,
                client_id=m.client_id, client_host=m.client_host,
                rebalance_timeout=m.rebalance_timeout_ms, session_timeout=m.session_timeout_ms,
                subscription=m.metadata(group.protocol_name),
                assignment=(assignments.get(m.member_id, b"") if assignments is not None
                            else m.assignment)))
        value = GroupMetadataValue(
            protocol_type=group.protocol_type or "", generation=group.generation_id,
            protocol=group.protocol_name, leader=group.leader_id,
            current_state_timestamp=group.state_timestamp, members=members)
        return _records.group_metadata_record(group.group_id, value)

    def _store_group(self, group: _Group, assignments: Mapping[str, bytes] | None = None,
                     on_replicated: Callable[[BaseException | None], None] | None = None) -> tuple[int, object]:
        """Append the group's metadata: (error code, the store's replication handle or
        None).  ``on_replicated(error)`` runs once a replicated store has the outcome."""
        try:
            handle = self._append(group.group_id, [self._group_record(group, assignments)])
        except Exception as exc:  # noqa: BLE001 - any store failure becomes an error code
            code = _storage_error_code(exc, for_commit=False)
            _log.warning("group %s: storing group metadata failed: %r", group.group_id, exc)
            return code, None
        if on_replicated is not None:
            self._when_replicated(handle, on_replicated)
        return NONE, handle

    # ---------------------------------------------------------------- membership helpers

    def _new_member_id(self, client_id: str, group_instance_id: str | None) -> str:
        return f"{group_instance_id if group_instance_id is not None else client_id}-{self._suffix()}"

    def _validate_member(self, group: _Group, member_id: str, group_instance_id: str | None) -> int:
        if group_instance_id is not None:
            current = group.static_members.get(group_instance_id)
            if current is None:
                return _E_UNKNOWN_MEMBER
            if current != member_id:
                _log.info("group %s: member %s of instance %s is fenced by %s",
                          group.group_id, member_id, group_instance_id, current)
                return _E_FENCED
            return NONE
        return NONE if member_id in group.members else _E_UNKNOWN_MEMBER

    def _add_member(self, group: _Group, member: _Member, pending: PendingResponse) -> None:
        if not group.members:
            group.protocol_type = member.protocol_type
        group.members[member.member_id] = member
        if group.leader_id is None:
            group.leader_id = member.member_id
        if member.group_instance_id is not None:
            group.static_members[member.group_instance_id] = member.member_id
        group.pending_members.pop(member.member_id, None)
        self._set_join_pending(member, pending)

    def _set_join_pending(self, member: _Member, pending: PendingResponse) -> None:
        if member.join_pending is not None and member.join_pending is not pending:
            # A member that joins again while its earlier JoinGroup waits: the earlier
            # request is answered with "rejoin" (its client has given up on it).
            self._complete(member.join_pending, JoinGroupResult(_E_REBALANCE, member.member_id))
        member.join_pending = pending

    def _remove_member(self, group: _Group, member: _Member, error: int = _E_UNKNOWN_MEMBER) -> None:
        self._complete(member.join_pending, JoinGroupResult(error, UNKNOWN_MEMBER_ID))
        self._complete(member.sync_pending, SyncGroupResult(error))
        member.join_pending = member.sync_pending = None
        member.hb_token = None
        del group.members[member.member_id]
        if member.group_instance_id is not None and \
                group.static_members.get(member.group_instance_id) == member.member_id:
            del group.static_members[member.group_instance_id]
        group.pending_sync.discard(member.member_id)
        if group.leader_id == member.member_id:
            group.leader_id = next(iter(group.members), None)

    def _remove_member_and_update(self, group: _Group, member: _Member, reason: str) -> None:
        _log.info("group %s: removing member %s (%s)", group.group_id, member.member_id, reason)
        self._remove_member(group, member)
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, reason)
        elif group.state is GroupState.PREPARING_REBALANCE:
            self._try_complete_join(group)

    def _maybe_prepare_rebalance(self, group: _Group, reason: str) -> None:
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY):
            self._prepare_rebalance(group, reason)

    def _prepare_rebalance(self, group: _Group, reason: str) -> None:
        if group.state is GroupState.COMPLETING_REBALANCE:
            self._reset_and_propagate_assignment_error(group, _E_REBALANCE)
        group.pending_sync.clear()
        group.sync_token = None
        if group.state is GroupState.EMPTY:
            delay = self.config.initial_rebalance_delay_ms
            group.join_initial = True
            group.join_remaining_ms = max(group.rebalance_timeout_ms - delay, 0)
        else:
            delay = group.rebalance_timeout_ms
            group.join_initial = False
        group.join_token = self._schedule(self._now + delay, _JOIN, group.group_id, "")
        group.state = GroupState.PREPARING_REBALANCE
        group.state_timestamp = self._now
        _log.info("group %s: preparing to rebalance from generation %d (%s)",
                  group.group_id, group.generation_id, reason)

    def _reset_and_propagate_assignment_error(self, group: _Group, error: int) -> None:
        for m in group.members.values():
            m.assignment = b""
            if m.sync_pending is not None:
                pending, m.sync_pending = m.sync_pending, None
                self._complete(pending, SyncGroupResult(error))
                self._schedule_heartbeat(group, m)

    def _has_all_members_joined(self, group: _Group) -> bool:
        return not group.pending_members and all(m.join_pending is not None for m in group.members.values())

    def _try_complete_join(self, group: _Group) -> None:
        # The initial delay is only ever ended by its timer.
        if group.state is GroupState.PREPARING_REBALANCE and not group.join_initial \
                and self._has_all_members_joined(group):
            self._complete_join(group)

    def _on_join_timer(self, group: _Group) -> None:
        if group.join_initial and group.new_member_added and group.join_remaining_ms > 0:
            group.new_member_added = False
            delay = min(self.config.initial_rebalance_delay_ms, group.join_remaining_ms)
            group.join_remaining_ms = max(group.join_remaining_ms - delay, 0)
            group.join_token = self._schedule(self._now + delay, _JOIN, group.group_id, "")
            return
        self._complete_join(group)

    def _complete_join(self, group: _Group) -> None:
        group.join_token = None
        group.join_initial = False
        for m in list(group.members.values()):
            if m.join_pending is None and m.group_instance_id is None:
                _log.info("group %s: member %s did not rejoin in time", group.group_id, m.member_id)
                self._remove_member(group, m)
        if group.leader_id is not None and group.members[group.leader_id].join_pending is None:
            group.leader_id = next((mid for mid, m in group.members.items()
                                    if m.join_pending is not None), group.leader_id)
        if group.members and all(m.join_pending is None for m in group.members.values()):
            # Only static members that have not rejoined are left: wait again for them to
            # rejoin or for their sessions to end.
            group.join_token = self._schedule(self._now + max(1, group.rebalance_timeout_ms),
                                              _JOIN, group.group_id, "")
            return
        group.generation_id += 1
        group.state_timestamp = self._now
        group.new_member_added = False
        if not group.members:
            group.protocol_name = None
            group.state = GroupState.EMPTY
            _log.info("group %s: generation %d is empty", group.group_id, group.generation_id)
            # A failure (here or in replication) is only logged, as Kafka does: no member
            # depends on it, and the group's offsets stay as they were.
            generation = group.generation_id
            self._store_group(group, on_replicated=lambda error: error is not None and _log.warning(
                "group %s: the empty generation %d was not replicated: %r", group.group_id, generation, error))
            return
        group.protocol_name = group.select_protocol()
        group.state = GroupState.COMPLETING_REBALANCE
        _log.info("group %s: generation %d with %d members, protocol %s, leader %s",
                  group.group_id, group.generation_id, len(group.members),
                  group.protocol_name, group.leader_id)
        leader_view = [JoinGroupMember(m.member_id, m.group_instance_id, m.metadata(group.protocol_name))
                       for m in group.members.values()]
        for m in group.members.values():
            if m.join_pending is not None:
                pending, m.join_pending = m.join_pending, None
                self._complete(pending, JoinGroupResult(
                    NONE, m.member_id, group.generation_id, group.protocol_type,
                    group.protocol_name, group.leader_id or "",
                    list(leader_view) if m.member_id == group.leader_id else []))
            self._schedule_heartbeat(group, m)
            m.is_new = False
        group.pending_sync = set(group.members)
        group.sync_token = self._schedule(self._now + group.rebalance_timeout_ms, _SYNC,
                                          group.group_id, "")

    def _on_sync_expired(self, group: _Group) -> None:
        group.sync_token = None
        if group.state not in (GroupState.COMPLETING_REBALANCE, GroupState.STABLE) or not group.pending_sync:
            return
        missing = sorted(group.pending_sync)
        for member_id in missing:
            member = group.members.get(member_id)
            if member is not None:
                self._remove_member(group, member)
        self._prepare_rebalance(group, f"members {missing} sent no SyncGroup in time")

    def _on_heartbeat_expired(self, group: _Group, member: _Member) -> None:
        if not member.is_new and (member.join_pending is not None or member.sync_pending is not None):
            # A member waiting in JoinGroup or SyncGroup is alive by definition.
            self._schedule_heartbeat(group, member)
            return
        self._remove_member_and_update(group, member, "session timeout expired")

    # ---------------------------------------------------------------- JoinGroup

    def join_group(self, group_id: str, member_id: str, protocol_type: str,
                   protocols: Sequence[tuple[str, bytes]], *, session_timeout_ms: int,
                   rebalance_timeout_ms: int = -1, client_id: str = "", client_host: str = "",
                   group_instance_id: str | None = None, require_known_member_id: bool = True,
                   supports_skip_assignment: bool = False,
                   reason: str | None = None) -> PendingResponse[JoinGroupResult]:
        """JoinGroup.  Returns a response that completes when the join phase ends (or at
        once for errors, MEMBER_ID_REQUIRED and answers from the current generation).

        ``rebalance_timeout_ms`` -1 (JoinGroup v0) means the session timeout.
        ``require_known_member_id`` is True for JoinGroup v4+; ``supports_skip_assignment``
        for v9+.
        """
        if not isinstance(member_id, str) or not isinstance(protocol_type, str) \
                or not (group_instance_id is None or isinstance(group_instance_id, str)):
            raise InvalidRequestError("member_id, protocol_type and group_instance_id must be str")
        protocols_ok = self._normalize_protocols(protocols)
        if protocols_ok is None:
            raise InvalidRequestError("protocols must be a sequence of (name: str, metadata: bytes)")
        pending: PendingResponse[JoinGroupResult] = PendingResponse()
        with self._op() as now:
            err = self._check_group_id(group_id)
            if err == NONE and not (isinstance(session_timeout_ms, int) and
                                    self.config.min_session_timeout_ms <= session_timeout_ms
                                    <= self.config.max_session_timeout_ms):
                err = InvalidSessionTimeoutError.error_code
            if err == NONE and not protocols_ok:
                err = _E_INCONSISTENT
            if err != NONE:
                self._complete(pending, JoinGroupResult(err, member_id))
                return pending
            if rebalance_timeout_ms is None or rebalance_timeout_ms < 0:
                rebalance_timeout_ms = session_timeout_ms
            args = (client_id or "", client_host or "", rebalance_timeout_ms, session_timeout_ms,
                    protocol_type, protocols_ok)
            group = self._groups.get(group_id)
            if member_id == UNKNOWN_MEMBER_ID:
                created = group is None
                if group is None:
                    group = self._groups[group_id] = _Group(group_id, now)
                self._join_new_member(group, pending, group_instance_id, require_known_member_id,
                                      supports_skip_assignment, args, reason)
                if created and not group.members and not group.pending_members:
                    del self._groups[group_id]   # the join failed: leave no trace
            elif group is None:
                self._complete(pending, JoinGroupResult(_E_UNKNOWN_MEMBER, member_id))
            else:
                self._join_current_member(group, pending, member_id, group_instance_id, args, reason)
            if group is not None and group.state is GroupState.PREPARING_REBALANCE:
                self._try_complete_join(group)
        return pending

    @staticmethod
    def _normalize_protocols(protocols) -> list[tuple[str, bytes]] | None:
        try:
            out = []
            for name, metadata in protocols:
                if not isinstance(name, str):
                    return None
                out.append((name, memoryview(metadata).tobytes()))
        except (TypeError, ValueError):
            return None
        return out

    def _join_new_member(self, group: _Group, pending, group_instance_id, require_known_member_id,
                         supports_skip_assignment, args, reason) -> None:
        client_id, client_host, rebalance_timeout_ms, session_timeout_ms, protocol_type, protocols = args
        if group.state is GroupState.DEAD:
            self._complete(pending, JoinGroupResult(_E_NOT_AVAILABLE, UNKNOWN_MEMBER_ID))
            return
        if not group.supports_protocols(protocol_type, protocols):
            self._complete(pending, JoinGroupResult(_E_INCONSISTENT, UNKNOWN_MEMBER_ID))
            return
        new_id = self._new_member_id(client_id, group_instance_id)
        if group_instance_id is not None:
            old_id = group.static_members.get(group_instance_id)
            if old_id is not None:
                self._replace_static_member(group, pending, group_instance_id, old_id, new_id,
                                            args, supports_skip_assignment, reason)
                return
        elif require_known_member_id:
            group.pending_members[new_id] = self._schedule(
                self._now + session_timeout_ms, _PENDING, group.group_id, new_id)
            self._complete(pending, JoinGroupResult(MemberIdRequiredError.error_code, new_id))
            return
        self._add_member_and_rebalance(group, pending, new_id, group_instance_id, args, reason)

    def _add_member_and_rebalance(self, group: _Group, pending, member_id, group_instance_id,
                                  args, reason) -> None:
        client_id, client_host, rebalance_timeout_ms, session_timeout_ms, protocol_type, protocols = args
        member = _Member(member_id, group_instance_id, client_id, client_host,
                         rebalance_timeout_ms, session_timeout_ms, protocol_type, protocols)
        member.is_new = True
        if group.state is GroupState.PREPARING_REBALANCE and group.generation_id == 0:
            group.new_member_added = True
        self._add_member(group, member, pending)
        # A new member cannot heartbeat until its JoinGroup is answered; if it is gone by
        # then, it is removed after this longer timeout.
        self._schedule_heartbeat(group, member, self.config.new_member_join_timeout_ms)
        self._maybe_prepare_rebalance(
            group, f"new member {member_id} joined" + (f" ({reason})" if reason else ""))

    def _replace_static_member(self, group: _Group, pending, instance_id, old_id, new_id, args,
                               supports_skip_assignment, reason) -> None:
        client_id, client_host, rebalance_timeout_ms, session_timeout_ms, protocol_type, protocols = args
        member = group.members[old_id]
        old_leader = group.leader_id
        saved = (member.protocols, member.rebalance_timeout_ms, member.session_timeout_ms,
                 member.client_id, member.client_host)
        old_selected_metadata = member.metadata(group.protocol_name)
        # Whoever still waits as the old member id is fenced.
        self._complete(member.join_pending, JoinGroupResult(_E_FENCED, old_id))
        self._complete(member.sync_pending, SyncGroupResult(_E_FENCED))
        member.join_pending = member.sync_pending = None
        self._rename_member(group, member, old_id, new_id)
        member.protocols = protocols
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.session_timeout_ms = session_timeout_ms
        member.client_id, member.client_host = client_id, client_host
        self._schedule_heartbeat(group, member)
        state = group.state
        if state is GroupState.STABLE:
            unchanged = (group.select_protocol() == group.protocol_name
                         and _same_subscription(protocol_type, old_selected_metadata,
                                                member.metadata(group.protocol_name)))
            if not unchanged:
                self._set_join_pending(member, pending)
                self._prepare_rebalance(group, f"static member {instance_id} rejoined with new metadata")
                return
            generation = group.generation_id

            def revert(err: int) -> None:
                (member.protocols, member.rebalance_timeout_ms, member.session_timeout_ms,
                 member.client_id, member.client_host) = saved
                self._rename_member(group, member, new_id, old_id)
                self._schedule_heartbeat(group, member)
                self._complete(pending, JoinGroupResult(
                    err, UNKNOWN_MEMBER_ID, group.generation_id, group.protocol_type,
                    group.protocol_name, old_leader or ""))

            def replicated(error: BaseException | None) -> None:
                # A clustered store: the rejoin is answered once the ISR has it; if it
                # did not take it, the member is the old one again, as when the append fails.
                if group.members.get(new_id) is not member or group.generation_id != generation \
                        or self._groups.get(group.group_id) is not group:
                    self._complete(pending, JoinGroupResult(_E_REBALANCE, new_id))
                elif error is not None:
                    revert(_storage_error_code(error, for_commit=False))
                else:
                    self._complete(pending, rejoined)

            err, handle = self._store_group(group, on_replicated=replicated)
            if err != NONE:
                revert(err)
                return
            _log.info("group %s: static member %s rejoined as %s without a rebalance",
                      group.group_id, instance_id, new_id)
            is_leader = group.leader_id == new_id
            if supports_skip_assignment:
                members = ([JoinGroupMember(m.member_id, m.group_instance_id, m.metadata(group.protocol_name))
                            for m in group.members.values()] if is_leader else [])
                result = JoinGroupResult(NONE, new_id, group.generation_id, group.protocol_type,
                                         group.protocol_name, group.leader_id or "", members,
                                         skip_assignment=is_leader)
            else:
                # Older clients would run the assignment if told they lead, and a stable
                # group would then ignore it: they are given the old leader id instead.
                result = JoinGroupResult(NONE, new_id, group.generation_id, group.protocol_type,
                                         group.protocol_name, old_leader or "")
            rejoined = result
            if handle is None:
                self._complete(pending, result)
        elif state is GroupState.COMPLETING_REBALANCE:
            # The leader may be assigning to the old member id: start over.
            self._set_join_pending(member, pending)
            self._prepare_rebalance(group, f"static member {instance_id} rejoined during sync")
        else:  # PreparingRebalance: answered when the join phase ends
            self._set_join_pending(member, pending)

    def _rename_member(self, group: _Group, member: _Member, old_id: str, new_id: str) -> None:
        # Keep the member's position (insertion order decides the next leader).
        group.members = {(new_id if k == old_id else k): v for k, v in group.members.items()}
        member.member_id = new_id
        if member.group_instance_id is not None:
            group.static_members[member.group_instance_id] = new_id
        if group.leader_id == old_id:
            group.leader_id = new_id
        if old_id in group.pending_sync:
            group.pending_sync.discard(old_id)
            group.pending_sync.add(new_id)

    def _join_current_member(self, group: _Group, pending, member_id, group_instance_id, args,
                             reason) -> None:
        client_id, client_host, rebalance_timeout_ms, session_timeout_ms, protocol_type, protocols = args
        if group.state is GroupState.DEAD:
            self._complete(pending, JoinGroupResult(_E_NOT_AVAILABLE, member_id))
            return
        if not group.supports_protocols(protocol_type, protocols):
            self._complete(pending, JoinGroupResult(_E_INCONSISTENT, member_id))
            return
        if group_instance_id is None and member_id in group.pending_members:
            self._add_member_and_rebalance(group, pending, member_id, None, args, reason)
            return
        err = self._validate_member(group, member_id, group_instance_id)
        if err != NONE:
            self._complete(pending, JoinGroupResult(err, member_id))
            return
        member = group.members[member_id]
        state = group.state
        same = member.protocols == protocols

        def update_and_rebalance(why: str) -> None:
            member.protocols = protocols
            member.rebalance_timeout_ms = rebalance_timeout_ms
            member.session_timeout_ms = session_timeout_ms
            self._set_join_pending(member, pending)
            self._maybe_prepare_rebalance(group, why + (f" ({reason})" if reason else ""))

        if state is GroupState.PREPARING_REBALANCE:
            update_and_rebalance(f"member {member_id} rejoined")
        elif state is GroupState.COMPLETING_REBALANCE:
            if same:
                # It lost its JoinGroup response: answer again from this generation.
                self._complete(pending, self._current_generation_result(group, member, with_members=True))
            else:
                update_and_rebalance(f"member {member_id} changed its metadata")
        elif state is GroupState.STABLE:
            if member_id == group.leader_id:
                # The leader rejoins to have the group reassigned (e.g. partitions were added).
                update_and_rebalance(f"leader {member_id} rejoined")
            elif not same:
                update_and_rebalance(f"member {member_id} changed its metadata")
            else:
                self._complete(pending, self._current_generation_result(group, member, with_members=False))
        else:  # Empty: a member id from an older life of the group
            self._complete(pending, JoinGroupResult(_E_UNKNOWN_MEMBER, member_id))

    def _current_generation_result(self, group: _Group, member: _Member, *, with_members: bool) -> JoinGroupResult:
        members = []
        if with_members and member.member_id == group.leader_id:
            members = [JoinGroupMember(m.member_id, m.group_instance_id, m.metadata(group.protocol_name))
                       for m in group.members.values()]
        return JoinGroupResult(NONE, member.member_id, group.generation_id, group.protocol_type,
                               group.protocol_name, group.leader_id or "", members)

    # ---------------------------------------------------------------- SyncGroup

    def sync_group(self, group_id: str, generation_id: int, member_id: str, *,
                   group_instance_id: str | None = None, protocol_type: str | None = None,
                   protocol_name: str | None = None,
                   assignments: Mapping[str, bytes] | None = None) -> PendingResponse[SyncGroupResult]:
        """SyncGroup.  The leader passes every member's assignment; followers pass none and
        wait for the leader's.  ``protocol_type``/``protocol_name`` (v5+) are checked when
        given."""
        full_assignments = _normalize_assignments(assignments)
        pending: PendingResponse[SyncGroupResult] = PendingResponse()
        with self._op():
            err = self._check_group_id(group_id)
            group = self._groups.get(group_id) if err == NONE else None
            if err == NONE:
                if group is None:
                    err = _E_UNKNOWN_MEMBER
                elif group.state is GroupState.DEAD:
                    err = _E_NOT_AVAILABLE
                else:
                    err = self._validate_member(group, member_id, group_instance_id)
                    if err == NONE and generation_id != group.generation_id:
                        err = _E_ILLEGAL_GENERATION
                    if err == NONE and ((protocol_type is not None and protocol_type != group.protocol_type)
                                        or (protocol_name is not None and protocol_name != group.protocol_name)):
                        err = _E_INCONSISTENT
            if err == NONE:
                assert group is not None
                if group.state is GroupState.EMPTY:
                    err = _E_UNKNOWN_MEMBER
                elif group.state is GroupState.PREPARING_REBALANCE:
                    err = _E_REBALANCE
            if err != NONE:
                self._complete(pending, SyncGroupResult(err))
                return pending
            assert group is not None
            member = group.members[member_id]
            if group.state is GroupState.STABLE:
                group.pending_sync.discard(member_id)
                self._complete(pending, SyncGroupResult(NONE, group.protocol_type, group.protocol_name,
                                                        member.assignment))
                self._schedule_heartbeat(group, member)
                return pending
            # CompletingRebalance
            if member.sync_pending is not None:
                self._complete(member.sync_pending, SyncGroupResult(_E_REBALANCE))
            member.sync_pending = pending
            group.pending_sync.discard(member_id)
            if member_id == group.leader_id:
                self._on_leader_assignment(group, full_assignments)
        return pending

    def _on_leader_assignment(self, group: _Group, assignments: Mapping[str, bytes]) -> None:
        full = {member_id: assignments.get(member_id, b"") for member_id in group.members}
        missing = [m for m in group.members if m not in assignments]
        if missing:
            _log.warning("group %s: leader gave no assignment to %s", group.group_id, missing)
        generation = group.generation_id
        err, _ = self._store_group(group, full, on_replicated=lambda error: self._assignment_replicated(
            group, generation, error))
        if err != NONE:
            self._reset_and_propagate_assignment_error(group, err)
            self._maybe_prepare_rebalance(group, "storing the group assignment failed")
            return
        for m in group.members.values():
            m.assignment = full[m.member_id]
            if m.sync_pending is not None:
                pending, m.sync_pending = m.sync_pending, None
                self._complete(pending, SyncGroupResult(NONE, group.protocol_type, group.protocol_name,
                                                        m.assignment))
                self._schedule_heartbeat(group, m)
        group.state = GroupState.STABLE
        group.state_timestamp = self._now
        _log.info("group %s: generation %d is stable", group.group_id, group.generation_id)

    def _assignment_replicated(self, group: _Group, generation: int, error: BaseException | None) -> None:
        """A clustered store's answer for the assignment a leader's SyncGroup stored: if
        the ISR did not take it, the group goes back to rebalancing as Kafka's does when
        storing the assignment fails (the SyncGroup answers carry the error: their
        handler waits for the same write)."""
        if error is None or self._groups.get(group.group_id) is not group or group.generation_id != generation \
                or group.state not in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            return
        _log.warning("group %s: the assignment of generation %d was not replicated (%r); rebalancing",
                     group.group_id, generation, error)
        self._reset_and_propagate_assignment_error(group, _storage_error_code(error, for_commit=False))
        self._prepare_rebalance(group, "the group assignment was not replicated")

    # ---------------------------------------------------------------- Heartbeat

    def heartbeat(self, group_id: str, generation_id: int, member_id: str, *,
                  group_instance_id: str | None = None) -> int:
        """Heartbeat; returns the response's error code (REBALANCE_IN_PROGRESS tells the
        member to rejoin)."""
        with self._op():
            err = self._check_group_id(group_id)
            if err != NONE:
                return err
            group = self._groups.get(group_id)
            if group is None:
                return _E_UNKNOWN_MEMBER
            if group.state is GroupState.DEAD:
                return _E_NOT_AVAILABLE
            err = self._validate_member(group, member_id, group_instance_id)
            if err != NONE:
                return err
            if generation_id != group.generation_id:
                return _E_ILLEGAL_GENERATION
            if group.state is GroupState.EMPTY:
                return _E_UNKNOWN_MEMBER
            self._schedule_heartbeat(group, group.members[member_id])
            return _E_REBALANCE if group.state is GroupState.PREPARING_REBALANCE else NONE

    # ---------------------------------------------------------------- LeaveGroup

    def leave_group(self, group_id: str, members: Iterable[MemberIdentity | str]) -> LeaveGroupResult:
        """LeaveGroup: v0-2 pass one member id, v3+ several identities."""
        identities = [m if isinstance(m, MemberIdentity) else MemberIdentity(m) for m in members]
        with self._op():
            err = self._check_group_id(group_id)
            if err != NONE:
                return LeaveGroupResult(err)
            group = self._groups.get(group_id)
            if group is None:
                return LeaveGroupResult(NONE, [LeaveGroupMemberResult(i.member_id, i.group_instance_id,
                                                                      _E_UNKNOWN_MEMBER) for i in identities])
            if group.state is GroupState.DEAD:
                return LeaveGroupResult(_E_NOT_AVAILABLE)
            results = []
            for ident in identities:
                results.append(LeaveGroupMemberResult(ident.member_id, ident.group_instance_id,
                                                      self._leave_one(group, ident)))
            return LeaveGroupResult(NONE, results)

    def _leave_one(self, group: _Group, ident: MemberIdentity) -> int:
        why = "left the group" + (f" ({ident.reason})" if ident.reason else "")
        if ident.member_id == UNKNOWN_MEMBER_ID:
            current = group.static_members.get(ident.group_instance_id) \
                if ident.group_instance_id is not None else None
            if current is None:
                return _E_UNKNOWN_MEMBER
            self._remove_member_and_update(group, group.members[current], why)
            return NONE
        if ident.member_id in group.pending_members:
            del group.pending_members[ident.member_id]
            if group.state is GroupState.PREPARING_REBALANCE:
                self._try_complete_join(group)
            return NONE
        err = self._validate_member(group, ident.member_id, ident.group_instance_id)
        if err != NONE:
            return err
        self._remove_member_and_update(group, group.members[ident.member_id], why)
        return NONE

    # ---------------------------------------------------------------- offsets

    def commit_offsets(self, group_id: str, offsets: Mapping[str, Mapping[int, CommitOffset | int]], *,
                       generation_id: int = NO_GENERATION, member_id: str = UNKNOWN_MEMBER_ID,
                       group_instance_id: str | None = None,
                       retention_time_ms: int = -1) -> dict[str, dict[int, int]]:
        """OffsetCommit; returns topic -> partition -> error code.

        ``retention_time_ms`` (OffsetCommit v2-v4; -1 for the broker default) makes the
        offsets expire that long after the commit, whatever the group's state.
        """
        requested = _normalize_commit(offsets)

        def all_with(code: int) -> dict[str, dict[int, int]]:
            return {t: {p: code for p in ps} for t, ps in requested.items()}

        with self._op() as now:
            err = self._check_group_id(group_id, allow_empty=True)
            if err != NONE:
                return all_with(err)
            group = self._groups.get(group_id)
            created = False
            if group is None:
                if generation_id >= 0:
                    return all_with(_E_ILLEGAL_GENERATION)
                group = self._groups[group_id] = _Group(group_id, now)
                created = True
            err = self._validate_commit(group, generation_id, member_id, group_instance_id)
            if err != NONE:
                return all_with(err)
            if group.state is GroupState.COMPLETING_REBALANCE:
                return all_with(_E_REBALANCE)
            if group.state in (GroupState.STABLE, GroupState.PREPARING_REBALANCE) and member_id in group.members:
                self._schedule_heartbeat(group, group.members[member_id])
            result = self._store_offsets(group, requested, now, retention_time_ms)
            if created and not group.offsets and not group.pending_offsets:
                del self._groups[group_id]
            return result

    def _validate_commit(self, group: _Group, generation_id: int, member_id: str,
                         group_instance_id: str | None) -> int:
        if group.state is GroupState.DEAD:
            return _E_NOT_AVAILABLE
        if generation_id < 0 and group.state is GroupState.EMPTY:
            return NONE   # admin tools and consumers that assign partitions themselves
        if generation_id >= 0 or member_id != UNKNOWN_MEMBER_ID or group_instance_id is not None:
            err = self._validate_member(group, member_id, group_instance_id)
            if err != NONE:
                return err
            return _E_ILLEGAL_GENERATION if generation_id != group.generation_id else NONE
        return _E_UNKNOWN_MEMBER   # a group with members takes commits from members only

    def _offset_records(self, group_id: str, requested: dict[str, dict[int, CommitOffset]], now: int,
                        expire: int = -1) -> tuple[dict[str, dict[int, int]], list[Record],
                                                   dict[tuple[str, int], OffsetCommitValue]]:
        """The records of a commit: (topic -> partition -> error code, the records of the
        partitions without error, their values)."""
        result: dict[str, dict[int, int]] = {}
        records: list[Record] = []
        values: dict[tuple[str, int], OffsetCommitValue] = {}
        for topic, parts in requested.items():
            out = result[topic] = {}
            for partition, c in parts.items():
                metadata = c.metadata if c.metadata is not None else ""
                if _java_length(metadata) > self.config.offset_metadata_max_bytes:
                    out[partition] = OffsetMetadataTooLargeError.error_code
                    continue
                value = OffsetCommitValue(offset=c.offset, metadata=metadata, commit_timestamp=now,
                                          leader_epoch=c.leader_epoch, expire_timestamp=expire)
                try:
                    records.append(_records.offset_commit_record(group_id, topic, partition, value))
                except InvalidRequestError:
                    out[partition] = InvalidRequestError.error_code
                    continue
                values[(topic, partition)] = value
                out[partition] = NONE
        return result, records, values

    def _store_offsets(self, group: _Group, requested: dict[str, dict[int, CommitOffset]],
                       now: int, retention_time_ms: int) -> dict[str, dict[int, int]]:
        expire = now + retention_time_ms if retention_time_ms is not None and retention_time_ms >= 0 else -1
        result, records, values = self._offset_records(group.group_id, requested, now, expire)
        if records:
            try:
                handle = self._append(group.group_id, records)
            except Exception as exc:  # noqa: BLE001 - any store failure becomes an error code
                code = _storage_error_code(exc, for_commit=True)
                _log.warning("group %s: storing offsets failed: %r", group.group_id, exc)
                for (topic, partition) in values:
                    result[topic][partition] = code
                return result
            if handle is None:
                self._offsets_committed(group, values)
            else:
                group.pending_offsets.update(values)
                # The transactional commits this one was appended after (it wins over them).
                earlier = [(pend, tp, pend[tp]) for pend in group.pending_txn.values() for tp in values if tp in pend]
                self._when_replicated(handle, lambda error: self._offsets_replicated(group, values, earlier, error))
        return result

    @staticmethod
    def _offsets_committed(group: _Group, values: Mapping[tuple[str, int], OffsetCommitValue],
                           earlier: Sequence[tuple[dict, tuple[str, int], OffsetCommitValue]] | None = None) -> None:
        """The append of ``values`` is durable: they are the committed offsets.  Being
        appended after the pending transactional commits of the same partitions
        (``earlier``: (producer's pending offsets, partition, value); None: every one
        pending now), they win over those when that transaction commits (Kafka keeps the
        later record); a transactional commit appended after them stays."""
        group.offsets.update(values)
        if earlier is None:
            earlier = [(pend, tp, pend[tp]) for pend in group.pending_txn.values() for tp in values if tp in pend]
        for pend, tp, value in earlier:
            if pend.get(tp) is value:
                del pend[tp]

    def _offsets_replicated(self, group: _Group, values: Mapping[tuple[str, int], OffsetCommitValue],
                            earlier: Sequence[tuple[dict, tuple[str, int], OffsetCommitValue]],
                            error: BaseException | None) -> None:
        """A replicated store's answer for a pending commit (Kafka's
        ``onOffsetCommitAppend`` / ``failPendingOffsetWrite``).  Replicated: each of its
        offsets becomes the committed one, unless the partition's pending commit is gone
        meanwhile (OffsetDelete, group deletion); appends of a partition are replicated in
        log order, so a later commit's completion follows and replaces it.  Not
        replicated: it is dropped, and the offset committed before it stands.  Either way
        the partition stops being pending once its latest pending commit has its answer."""
        if self._groups.get(group.group_id) is not group:
            return
        done = {tp: v for tp, v in values.items() if tp in group.pending_offsets}
        for tp, value in done.items():
            if group.pending_offsets[tp] is value:
                del group.pending_offsets[tp]
        if error is None:
            self._offsets_committed(group, done, earlier)
            return
        _log.warning("group %s: a commit of %d offsets was not replicated (%r); the earlier offsets stand",
                     group.group_id, len(values), error)
        if (not group.offsets and not group.pending_offsets and not group.pending_txn and not group.members
                and group.protocol_type is None and group.state is GroupState.EMPTY):
            del self._groups[group.group_id]     # it existed only for this commit

    def txn_commit_offsets(self, group_id: str, producer_id: int, producer_epoch: int,
                           offsets: Mapping[str, Mapping[int, CommitOffset | int]], *,
                           generation_id: int = NO_GENERATION, member_id: str = UNKNOWN_MEMBER_ID,
                           group_instance_id: str | None = None) -> dict[str, dict[int, int]]:
        """TxnOffsetCommit (KIP-98, KIP-447): topic -> partition -> error code.

        The offsets are appended to the group's ``__consumer_offsets`` partition as a
        transactional batch of ``producer_id`` / ``producer_epoch`` and stay pending:
        :meth:`fetch_offsets` does not return them until :meth:`complete_txn` sees the
        transaction's COMMIT marker, and an ABORT marker drops them.  A producer epoch
        older than one that already wrote to the partition gets INVALID_PRODUCER_EPOCH.
        The member checks are Kafka's for TxnOffsetCommit v3+ (generation -1 and no member
        id commit for any group: the producer is not a member)."""
        requested = _normalize_commit(offsets)

        def all_with(code: int) -> dict[str, dict[int, int]]:
            return {t: {p: code for p in ps} for t, ps in requested.items()}

        with self._op() as now:
            err = self._check_group_id(group_id)
            if err != NONE:
                return all_with(err)
            group = self._groups.get(group_id)
            created = group is None
            if group is None:
                group = self._groups[group_id] = _Group(group_id, now)
            if group.state is GroupState.DEAD:
                return all_with(_E_NOT_AVAILABLE)
            err = NONE
            if group_instance_id is not None and group.static_members.get(group_instance_id, member_id) != member_id:
                err = _E_FENCED
            elif member_id != UNKNOWN_MEMBER_ID and member_id not in group.members:
                err = _E_UNKNOWN_MEMBER
            elif generation_id >= 0 and generation_id != group.generation_id:
                err = _E_ILLEGAL_GENERATION
            if err != NONE:
                if created:
                    del self._groups[group_id]
                return all_with(err)
            result, records, values = self._offset_records(group_id, requested, now)
            if records:
                handle = None
                try:
                    handle = self.store.append(partition_for_group(group_id, self._num_partitions), records,
                                               producer_id=producer_id, producer_epoch=producer_epoch)
                except Exception as exc:  # noqa: BLE001 - any store failure becomes an error code
                    code = exc.error_code if isinstance(exc, PylogError) and exc.error_code in (
                        _E_PRODUCER_EPOCH, _E_PRODUCER_FENCED) else _storage_error_code(exc, for_commit=True)
                    _log.warning("group %s: storing transactional offsets failed: %r", group_id, exc)
                    for tp in values:
                        result[tp[0]][tp[1]] = code
                    values = {}
                group.pending_txn.setdefault(producer_id, {}).update(values)
                if values:
                    def replicated(error: BaseException | None, values=values) -> None:
                        if error is not None:
                            self._txn_offsets_failed(group, producer_id, values, error)
                    self._when_replicated(handle, replicated)
            if created and not group.offsets and not group.pending_txn:
                del self._groups[group_id]
            return result

    def _txn_offsets_failed(self, group: _Group, producer_id: int,
                            values: Mapping[tuple[str, int], OffsetCommitValue], error: BaseException) -> None:
        """The ISR did not take a transactional commit (Kafka's
        ``failPendingTxnOffsetCommit``): its offsets leave the producer's pending ones, so
        the transaction's COMMIT marker does not make them committed offsets."""
        pending = group.pending_txn.get(producer_id)
        if pending is None or self._groups.get(group.group_id) is not group:
            return
        for tp, value in values.items():
            if pending.get(tp) is value:
                del pending[tp]
        if not pending:
            del group.pending_txn[producer_id]
        _log.warning("group %s: a transactional commit of producer %d was not replicated (%r); dropped",
                     group.group_id, producer_id, error)

    def complete_txn(self, producer_id: int, partitions: Iterable[int], commit: bool) -> None:
        """The transaction marker of ``producer_id`` was written to these
        ``__consumer_offsets`` partitions: the producer's pending offsets of the groups
        there become committed offsets (``commit``) or are dropped.

        A replicated store (one with ``replicated(partition)``) settles them only once
        the marker is replicated, as Kafka does; until then they stay pending (OffsetFetch
        with ``require_stable`` answers UNSTABLE_OFFSET_COMMIT), and if the ISR does not
        take the marker they stay so until the transaction coordinator writes it again."""
        follow = getattr(self.store, "replicated", None)
        with self._op():
            now = set()
            for p in set(partitions):
                handle = None if follow is None else follow(p)
                if handle is None:
                    now.add(p)
                else:
                    self._when_replicated(handle, lambda error, p=p: self._settle_txn(producer_id, {p}, commit)
                                          if error is None else _log.info(
                                              "producer %d: its marker in __consumer_offsets-%d was not replicated "
                                              "(%r); its offsets stay pending", producer_id, p, error))
            self._settle_txn(producer_id, now, commit)

    def _settle_txn(self, producer_id: int, parts: set[int], commit: bool) -> None:
        for group in list(self._groups.values()):
            pending = group.pending_txn.get(producer_id)
            if pending is None or partition_for_group(group.group_id, self._num_partitions) not in parts:
                continue
            del group.pending_txn[producer_id]
            if commit and group.state is not GroupState.DEAD:
                group.offsets.update(pending)

    def fetch_offsets(self, group_id: str, partitions: Mapping[str, Iterable[int]] | None = None, *,
                      require_stable: bool = False) -> OffsetFetchResult:
        """OffsetFetch: the committed offset, leader epoch and metadata of each requested
        partition (-1 where none is committed), or of every partition with a commit when
        ``partitions`` is None.  A commit whose append a replicated store has not
        replicated yet is not committed: the offset before it is answered.  With
        ``require_stable`` (KIP-447) a partition with such a pending commit, or with a
        transactional commit whose transaction has not ended, gets UNSTABLE_OFFSET_COMMIT
        instead (the consumer retries; Kafka's rule, for named and for all partitions)."""
        with self._op():
            err = self._check_group_id(group_id, allow_empty=True)
            if err != NONE:
                return OffsetFetchResult(err)
            group = self._groups.get(group_id)
            if group is None or group.state is GroupState.DEAD:
                group = None
            offsets = group.offsets if group is not None else {}
            if partitions is None:
                wanted: Iterable[tuple[str, int]] = sorted(offsets)
            else:
                wanted = [(topic, p) for topic, parts in partitions.items() for p in parts]
            topics: dict[str, dict[int, FetchedOffset]] = {}
            if partitions is not None:
                for topic in partitions:
                    topics.setdefault(topic, {})
            for topic, p in wanted:
                out = topics.setdefault(topic, {})
                if require_stable and group is not None and (
                        (topic, p) in group.pending_offsets
                        or any((topic, p) in pend for pend in group.pending_txn.values())):
                    out[p] = FetchedOffset(error_code=UnstableOffsetCommitError.error_code)
                    continue
                v = offsets.get((topic, p))
                out[p] = FetchedOffset() if v is None else FetchedOffset(v.offset, v.leader_epoch, v.metadata)
            return OffsetFetchResult(NONE, topics)

    def delete_offsets(self, group_id: str, partitions: Mapping[str, Iterable[int]]) -> OffsetDeleteResult:
        """OffsetDelete (KIP-496): remove committed offsets.  Allowed for an empty group,
        and for a consumer group's topics none of its members subscribe to
        (GROUP_SUBSCRIBED_TO_TOPIC for the others)."""
        with self._op():
            err = self._check_group_id(group_id)
            if err != NONE:
                return OffsetDeleteResult(err)
            group = self._groups.get(group_id)
            if group is None or group.state is GroupState.DEAD:
                return OffsetDeleteResult(GroupIdNotFoundError.error_code)
            requested = [(t, p) for t, ps in partitions.items() for p in ps]
            result: dict[str, dict[int, int]] = {}
            if group.state is GroupState.EMPTY:
                eligible = requested
            elif group.protocol_type == CONSUMER_PROTOCOL_TYPE:
                eligible = []
                for t, p in requested:
                    if group.is_subscribed_to(t):
                        result.setdefault(t, {})[p] = GroupSubscribedToTopicError.error_code
                    else:
                        eligible.append((t, p))
            else:
                return OffsetDeleteResult(NonEmptyGroupError.error_code)
            present = [tp for tp in dict.fromkeys(eligible) if tp in group.offsets or tp in group.pending_offsets]
            if present:
                try:
                    self._append(group.group_id,
                                 [_records.offset_commit_tombstone(group.group_id, t, p) for t, p in present])
                except Exception as exc:  # noqa: BLE001
                    code = _storage_error_code(exc, for_commit=True)
                    _log.warning("group %s: deleting offsets failed: %r", group.group_id, exc)
                    return OffsetDeleteResult(code)
                for tp in present:
                    group.offsets.pop(tp, None)
                    group.pending_offsets.pop(tp, None)   # its commit, replicated later, stays deleted
            for t, p in eligible:
                result.setdefault(t, {})[p] = NONE
            return OffsetDeleteResult(NONE, result)

    def _expire_offsets(self, now: int) -> None:
        retention = self.config.offsets_retention_ms
        for group in list(self._groups.values()):
            if group.state is GroupState.DEAD or group.expiring:
                continue
            if group.protocol_type is None:
                base, keep_topics = None, set()            # commit timestamps
            elif group.state is GroupState.EMPTY:
                base, keep_topics = group.state_timestamp, set()
            elif group.state is GroupState.STABLE and group.protocol_type == CONSUMER_PROTOCOL_TYPE \
                    and (subscribed := group.subscribed_topics()) is not None:
                base, keep_topics = None, subscribed
            else:
                base, keep_topics = None, None
            expired = []
            if keep_topics is not None:
                for (topic, partition), v in group.offsets.items():
                    if topic in keep_topics or (topic, partition) in group.pending_offsets:
                        continue
                    if v.expire_timestamp != -1:
                        gone = now >= v.expire_timestamp
                    else:
                        gone = now - (v.commit_timestamp if base is None else base) >= retention
                    if gone:
                        expired.append((topic, partition))
            becomes_dead = (group.state is GroupState.EMPTY and not group.pending_members
                            and not group.pending_offsets and len(expired) == len(group.offsets))
            if not expired and not becomes_dead:
                continue
            records = [_records.offset_commit_tombstone(group.group_id, t, p) for t, p in expired]
            if becomes_dead:
                records.append(_records.group_metadata_tombstone(group.group_id))
            try:
                handle = self._append(group.group_id, records)
            except Exception as exc:  # noqa: BLE001 - retried at the next check
                _log.warning("group %s: writing expired offsets failed: %r", group.group_id, exc)
                continue
            values = {tp: group.offsets[tp] for tp in expired}
            if handle is None:
                self._expire(group, values, becomes_dead)
            else:
                # A clustered store: the offsets go once the ISR has the tombstones, so no
                # reader sees them gone while a failover could bring them back.
                group.expiring = True
                self._when_replicated(handle, lambda error, g=group, v=values, d=becomes_dead:
                                      self._expiry_replicated(g, v, d, error))

    def _expiry_replicated(self, group: _Group, values: Mapping[tuple[str, int], OffsetCommitValue],
                           becomes_dead: bool, error: BaseException | None) -> None:
        group.expiring = False
        if error is not None:
            _log.warning("group %s: the tombstones of %d expired offsets were not replicated (%r); retried at "
                         "the next check", group.group_id, len(values), error)
        elif self._groups.get(group.group_id) is group:
            self._expire(group, values, becomes_dead)

    def _expire(self, group: _Group, values: Mapping[tuple[str, int], OffsetCommitValue], becomes_dead: bool) -> None:
        """Forget expired offsets (each unless a commit replaced it since its tombstone
        was written), and the group itself when it was to go and still has nothing."""
        expired = [tp for tp, v in values.items() if group.offsets.get(tp) is v]
        for tp in expired:
            del group.offsets[tp]
        becomes_dead = becomes_dead and group.state is GroupState.EMPTY and not group.pending_members \
            and not group.offsets and not group.pending_offsets
        if becomes_dead:
            group.state = GroupState.DEAD
            del self._groups[group.group_id]
        _log.info("group %s: expired %d offsets%s", group.group_id, len(expired),
                  "; group removed" if becomes_dead else "")

    # ---------------------------------------------------------------- admin

    def delete_groups(self, group_ids: Iterable[str]) -> dict[str, int]:
        """DeleteGroups: group id -> error code.  Only empty groups are deleted
        (NON_EMPTY_GROUP otherwise); their offsets go with them.  A group named twice is
        deleted once and answered with that outcome (as Kafka takes the names as a set),
        never GROUP_ID_NOT_FOUND for a group the request deleted."""
        out: dict[str, int] = {}
        with self._op():
            for group_id in group_ids:
                if group_id in out:
                    continue
                err = self._check_group_id(group_id, allow_empty=True)
                if err != NONE:
                    out[group_id] = err
                    continue
                group = self._groups.get(group_id)
                if group is None or group.state is GroupState.DEAD:
                    out[group_id] = GroupIdNotFoundError.error_code
                elif group.state is not GroupState.EMPTY:
                    out[group_id] = NonEmptyGroupError.error_code
                else:
                    records = [_records.offset_commit_tombstone(group_id, t, p)
                               for t, p in dict.fromkeys([*group.offsets, *group.pending_offsets])]
                    records.append(_records.group_metadata_tombstone(group_id))
                    try:
                        self._append(group_id, records)
                    except Exception as exc:  # noqa: BLE001
                        out[group_id] = _storage_error_code(exc, for_commit=False)
                        continue
                    group.state = GroupState.DEAD
                    for mid in list(group.pending_members):
                        del group.pending_members[mid]
                    del self._groups[group_id]
                    out[group_id] = NONE
        return out

    def describe_groups(self, group_ids: Iterable[str], *,
                        not_found_error: bool = False) -> list[GroupDescription]:
        """DescribeGroups.  An unknown group is described as Dead; with ``not_found_error``
        (DescribeGroups v6+) it also carries GROUP_ID_NOT_FOUND."""
        out = []
        with self._op():
            for group_id in group_ids:
                err = self._check_group_id(group_id, allow_empty=True)
                if err != NONE:
                    out.append(GroupDescription(group_id, err, "", "", ""))
                    continue
                group = self._groups.get(group_id)
                if group is None:
                    out.append(GroupDescription(
                        group_id, GroupIdNotFoundError.error_code if not_found_error else NONE,
                        GroupState.DEAD.value, "", ""))
                    continue
                stable = group.state is GroupState.STABLE
                members = [DescribedMember(
                    m.member_id, m.group_instance_id, m.client_id, m.client_host,
                    m.metadata(group.protocol_name) if stable else b"",
                    m.assignment if stable else b"") for m in group.members.values()]
                out.append(GroupDescription(group_id, NONE, group.state.value,
                                            group.protocol_type or "",
                                            (group.protocol_name or "") if stable else "", members))
        return out

    def list_groups(self, states: Iterable[str] | None = None,
                    types: Iterable[str] | None = None) -> list[ListedGroup]:
        """ListGroups, filtered by state names (v4+) and group types (v5+: every group
        here is ``classic``, so a filter without it lists nothing); both filters are
        case-insensitive, as Kafka's, and an empty one lists everything."""
        state_filter = {s.lower() for s in states} if states else None
        type_filter = {t.lower() for t in types} if types else None
        with self._op():
            if type_filter is not None and "classic" not in type_filter:
                return []
            return [ListedGroup(g.group_id, g.protocol_type or "", g.state.value)
                    for g in self._groups.values()
                    if state_filter is None or g.state.value.lower() in state_filter]

    # ---------------------------------------------------------------- time, load, unload

    def tick(self, now_ms: int | None = None) -> int | None:
        """Fire every timeout due at ``now_ms`` (default: the clock); returns the next
        deadline (see :meth:`next_deadline`)."""
        with self._op(now_ms):
            pass
        return self.next_deadline()

    def next_deadline(self) -> int | None:
        """When the next timeout is due (ms), or None.  May be earlier than needed (a
        timer that was cancelled): calling :meth:`tick` then is harmless."""
        with self._lock:
            return self._timers[0][0] if self._timers else None

    def load(self, records: Iterable[Record], partition: int | None = None) -> int:
        """Rebuild groups and committed offsets from ``__consumer_offsets`` records (in log
        order), on startup or when taking over ``partition``.  Groups with members come
        back Stable in their last generation, and their members must heartbeat within
        their session timeout.  A group already in memory is replaced.  Returns the number
        of groups loaded.

        Raises
        ------
        CorruptRecordError
            A record cannot be decoded, or a group's metadata is inconsistent; nothing is
            loaded.
        """
        state = _records.replay(records)
        for group_id, value in state.groups.items():
            problem = _metadata_problem(value)
            if problem is not None:
                raise CorruptRecordError(f"group {group_id}: {problem}")
        return self.load_state(state, partition)

    def load_state(self, state: _records.ReplayState, partition: int | None = None) -> int:
        """:meth:`load` from records already replayed (the broker replays a partition
        batch by batch, skipping damaged batches).  A group whose metadata is
        inconsistent comes back without it (empty, offsets kept) and a WARN says so;
        every other group loads as :meth:`load` loads it.  Returns the number of groups
        loaded."""
        for group_id, value in list(state.groups.items()):
            problem = _metadata_problem(value)
            if problem is not None:
                _log.warning("group %s: its stored metadata is inconsistent (%s); it is loaded "
                             "without members, with its committed offsets", group_id, problem)
                del state.groups[group_id]
        with self._op() as now:
            if partition is not None and self._owned is not None:
                self._owned.add(partition)
                self._loading.discard(partition)
            loaded = 0
            for group_id, value in state.groups.items():
                group = _Group(group_id, now)
                group.generation_id = value.generation
                group.protocol_type = value.protocol_type or None
                group.protocol_name = value.protocol
                group.state_timestamp = value.current_state_timestamp if value.current_state_timestamp >= 0 else now
                for mm in value.members:
                    m = _Member(mm.member_id, mm.group_instance_id, mm.client_id, mm.client_host,
                                mm.rebalance_timeout if mm.rebalance_timeout >= 0 else mm.session_timeout,
                                mm.session_timeout, value.protocol_type,
                                [(value.protocol or "", mm.subscription)])
                    m.assignment = mm.assignment
                    group.members[m.member_id] = m
                    if m.group_instance_id is not None:
                        group.static_members[m.group_instance_id] = m.member_id
                group.leader_id = value.leader if value.leader in group.members else next(iter(group.members), None)
                group.state = GroupState.STABLE if group.members else GroupState.EMPTY
                group.offsets = dict(state.offsets.get(group_id, {}))
                self._replace_group(group)
                for m in group.members.values():
                    self._schedule_heartbeat(group, m)
                loaded += 1
            for group_id, offsets in state.offsets.items():
                if group_id in state.groups:
                    continue
                group = _Group(group_id, now)
                group.offsets = dict(offsets)
                self._replace_group(group)
                loaded += 1
            for producer_id, groups in state.pending.items():
                for group_id, offsets in groups.items():
                    group = self._groups.get(group_id)
                    if group is None:
                        group = _Group(group_id, now)
                        self._replace_group(group)
                        loaded += 1
                    group.pending_txn.setdefault(producer_id, {}).update(offsets)
            return loaded

    def _replace_group(self, group: _Group) -> None:
        old = self._groups.get(group.group_id)
        if old is not None:
            self._fence_group(old, _E_NOT_COORDINATOR)
        self._groups[group.group_id] = group

    def _fence_group(self, group: _Group, error: int) -> None:
        group.state = GroupState.DEAD
        for m in group.members.values():
            self._complete(m.join_pending, JoinGroupResult(error, m.member_id))
            self._complete(m.sync_pending, SyncGroupResult(error))
            m.join_pending = m.sync_pending = None

    @property
    def num_partitions(self) -> int:
        """The ``__consumer_offsets`` partition count groups are hashed over."""
        return self._num_partitions

    def set_num_partitions(self, num_partitions: int) -> int:
        """Hash groups over ``num_partitions`` from now on: a clustered broker takes the
        count of the cluster's ``__consumer_offsets`` topic (ZooKeeper's, as Kafka does),
        whatever its own ``offsets.topic.num.partitions`` says, so every broker names the
        same partition, and so the same coordinator, for a group.  Groups loaded under
        another count are unloaded first (their requests get NOT_COORDINATOR).  Returns
        the number of groups unloaded."""
        if isinstance(num_partitions, bool) or not isinstance(num_partitions, int) or num_partitions < 1:
            raise InvalidConfigError(f"__consumer_offsets needs at least one partition, got {num_partitions!r}")
        if num_partitions == self._num_partitions:
            return 0
        with self._op():
            gone = list(self._groups.values())
            for g in gone:
                self._fence_group(g, _E_NOT_COORDINATOR)
            self._groups.clear()
            _log.info("groups are hashed over %d __consumer_offsets partitions (was %d)%s", num_partitions,
                      self._num_partitions, f"; {len(gone)} unloaded" if gone else "")
            self._num_partitions = num_partitions
            if self._owned is not None:
                self._owned = {p for p in self._owned if p < num_partitions}
                self._loading = {p for p in self._loading if p < num_partitions}
            if hasattr(self.store, "num_partitions"):
                self.store.num_partitions = num_partitions
            return len(gone)

    def begin_load(self, partition: int) -> None:
        """This broker became the leader of ``partition`` and is reading it: requests
        for its groups get COORDINATOR_LOAD_IN_PROGRESS until :meth:`load_state` (with
        the partition) ends the load, or :meth:`unload` gives the partition up."""
        with self._op():
            if self._owned is None:
                self._owned = set(range(self._num_partitions))
            self._owned.discard(partition)
            self._loading.add(partition)

    def unload_all(self) -> int:
        """:meth:`unload` every partition: a clustered broker serves only the partitions
        it leads, and starts with none.  Returns the number of groups unloaded."""
        return sum(self.unload(p) for p in range(self._num_partitions))

    def unload(self, partition: int) -> int:
        """Stop serving the groups of a ``__consumer_offsets`` partition (another broker
        leads it now): their waiting requests get NOT_COORDINATOR and later requests for
        them too.  Returns the number of groups unloaded."""
        with self._op():
            if self._owned is None:
                self._owned = set(range(self._num_partitions))
            self._owned.discard(partition)
            self._loading.discard(partition)
            gone = [g for g in self._groups.values()
                    if partition_for_group(g.group_id, self._num_partitions) == partition]
            for g in gone:
                self._fence_group(g, _E_NOT_COORDINATOR)
                del self._groups[g.group_id]
            return len(gone)

    # ---------------------------------------------------------------- inspection

    def group_state(self, group_id: str) -> GroupState | None:
        """The group's state, or None if the coordinator has no such group."""
        with self._lock:
            g = self._groups.get(group_id)
            return None if g is None else g.state

    def group_generation(self, group_id: str) -> int | None:
        with self._lock:
            g = self._groups.get(group_id)
            return None if g is None else g.generation_id

    def group_leader(self, group_id: str) -> str | None:
        with self._lock:
            g = self._groups.get(group_id)
            return None if g is None else g.leader_id

    def group_members(self, group_id: str) -> list[str]:
        """Member ids of the group, in join order (empty for an unknown group)."""
        with self._lock:
            g = self._groups.get(group_id)
            return [] if g is None else list(g.members)
