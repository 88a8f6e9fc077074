"""The consumer protocol: what Kafka consumers put in JoinGroup and SyncGroup metadata.

A consumer group's members join with ``protocol_type="consumer"`` and one protocol per
assignor they support (``range``, ``roundrobin``, ``cooperative-sticky``, ...).  The opaque
metadata of each protocol is a :class:`Subscription`; the opaque assignment the leader
hands out in SyncGroup is an :class:`Assignment`.  The broker itself never needs to look
inside (classic groups are protocol-agnostic), except to learn which topics a consumer
group is subscribed to (OffsetDelete, offset expiration).

Wire format (non-flexible, big-endian), each message preceded by its int16 version:

Subscription, versions 0-3::

    topics            [int32 count] string          v0+
    user_data         nullable bytes (int32 length) v0+
    owned_partitions  [int32 count] (topic string, [int32 count] int32)   v1+
    generation_id     int32, default -1             v2+
    rack_id           nullable string               v3+

Assignment, versions 0-3 (v2 and v3 only mark what the matching subscription carries)::

    assigned_partitions  [int32 count] (topic string, [int32 count] int32)
    user_data            nullable bytes

As Kafka's consumers do, a reader takes a version newer than it knows as the newest it
knows (later versions only add fields at the end) and ignores trailing bytes.  Decoding is
bounded: bad bytes raise :class:`~pylog.errors.InconsistentGroupProtocolError`, never
IndexError or struct.error.  Encoding bad values raises
:class:`~pylog.errors.InvalidRequestError`.  Everything here is pure and thread-safe.
"""

from __future__ import annotations

from pylog._value import Value
from pylog.broker._codec import Reader, Writer
from pylog.errors import InconsistentGroupProtocolError, InvalidRequestError

__all__ = [
    "PROTOCOL_TYPE",
    "SUBSCRIPTION_VERSION",
    "ASSIGNMENT_VERSION",
    "Subscription",
    "Assignment",
    "encode_subscription",
    "decode_subscription",
    "encode_assignment",
    "decode_assignment",
]

#: ``protocol_type`` of consumer groups in JoinGroup.
PROTOCOL_TYPE = "consumer"
#: Newest versions known (and written by default).
SUBSCRIPTION_VERSION = 3
ASSIGNMENT_VERSION = 3


class Subscription(Value):
    """A consumer's subscription, the metadata of each protocol it joins with.

    ``owned_partitions`` maps topic -> partitions the member holds now (v1+; used by
    cooperative assignors).  ``generation_id`` is the generation those were assigned in
    (v2+; -1 when unknown).  ``group_instance_id`` is not part of the bytes: the
    coordinator knows it from JoinGroup and the leader sets it before assigning (static
    members are ordered by it).
    """

    _fields = ("topics", "user_data", "owned_partitions", "generation_id", "rack_id", "group_instance_id")
    topics: list[str]
    user_data: bytes | None
    owned_partitions: dict[str, list[int]]
    generation_id: int
    rack_id: str | None
    group_instance_id: str | None

    def __init__(self, topics: list[str], user_data: bytes | None = None,
                 owned_partitions: dict[str, list[int]] | None = None, generation_id: int = -1,
                 rack_id: str | None = None, group_instance_id: str | None = None) -> None:
        self.topics = topics
        self.user_data = user_data
        self.owned_partitions = {} if owned_partitions is None else owned_partitions
        self.generation_id = generation_id
        self.rack_id = rack_id
        self.group_instance_id = group_instance_id


class Assignment(Value):
    """The partitions (topic -> partition list) the leader assigned to one member."""

    _fields = ("partitions", "user_data")
    partitions: dict[str, list[int]]
    user_data: bytes | None

    def __init__(self, partitions: dict[str, list[int]] | None = None, user_data: bytes | None = None) -> None:
        self.partitions = {} if partitions is None else partitions
        self.user_data = user_data


def _write_topic_partitions(w: Writer, tps: dict[str, list[int]], what: str) -> None:
    if not isinstance(tps, dict):
        raise InvalidRequestError(f"{what} must be a dict of topic -> partitions")
    w.array_length(len(tps))
    for topic, partitions in tps.items():
        w.string(topic, f"{what} topic")
        try:
            partitions = list(partitions)
        except TypeError:
            raise InvalidRequestError(f"{what}[{topic!r}] must be a list of partitions") from None
        w.int32_array(partitions, f"{what}[{topic!r}] partition")


def _read_topic_partitions(r: Reader) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for _ in range(r.array_length(6)):           # int16 topic length + int32 count
        topic = r.string()
        parts = [r.int32() for _ in range(r.array_length(4))]
        # The schema keys the array by topic; a repeated topic adds to the same entry.
        out.setdefault(topic, []).extend(parts)
    return out


def _check_version(version: int, newest: int, what: str) -> None:
    if not isinstance(version, int) or not 0 <= version <= newest:
        raise InvalidRequestError(f"{what} version must be 0..{newest}, got {version!r}")


def encode_subscription(sub: Subscription, version: int = SUBSCRIPTION_VERSION) -> bytes:
    """Bytes of ``sub`` at ``version`` (fields newer than ``version`` are left out).

    Raises
    ------
    InvalidRequestError
        A field has the wrong type or does not fit Kafka's encoding.
    """
    _check_version(version, SUBSCRIPTION_VERSION, "subscription")
    w = Writer()
    w.int16(version, "version")
    topics = sub.topics
    if isinstance(topics, (str, bytes)) or not hasattr(topics, "__iter__"):
        raise InvalidRequestError("subscription topics must be a list of topic names")
    topics = list(topics)
    w.array_length(len(topics))
    for t in topics:
        w.string(t, "subscription topic")
    w.bytes_(sub.user_data, "user_data", nullable=True)
    if version >= 1:
        _write_topic_partitions(w, sub.owned_partitions, "owned_partitions")
    if version >= 2:
        w.int32(sub.generation_id, "generation_id")
    if version >= 3:
        w.string(sub.rack_id, "rack_id", nullable=True)
    return w.getvalue()


def decode_subscription(data) -> Subscription:
    """Subscription from JoinGroup protocol metadata.

    Raises
    ------
    InconsistentGroupProtocolError
        The bytes are not a consumer-protocol subscription.
    """
    r = Reader(data, InconsistentGroupProtocolError, "consumer protocol subscription")
    version = r.int16()
    if version < 0:
        raise r.fail(f"unsupported subscription version {version}")
    topics = [r.string() for _ in range(r.array_length(2))]
    user_data = r.bytes_(nullable=True)
    sub = Subscription(topics=topics, user_data=user_data)
    if version >= 1:
        sub.owned_partitions = _read_topic_partitions(r)
    if version >= 2:
        sub.generation_id = r.int32()
    if version >= 3:
        sub.rack_id = r.string(nullable=True)
    return sub


def encode_assignment(assignment: Assignment, version: int = ASSIGNMENT_VERSION) -> bytes:
    """Bytes of ``assignment`` (SyncGroup assignment of one member).

    Raises
    ------
    InvalidRequestError
        A field has the wrong type or does not fit Kafka's encoding.
    """
    _check_version(version, ASSIGNMENT_VERSION, "assignment")
    w = Writer()
    w.int16(version, "version")
    _write_topic_partitions(w, assignment.partitions, "assigned_partitions")
    w.bytes_(assignment.user_data, "user_data", nullable=True)
    return w.getvalue()


def decode_assignment(data) -> Assignment:
    """Assignment from SyncGroup bytes.  Empty bytes (what the coordinator hands a member
    the leader gave nothing) decode as an empty assignment.

    Raises
    ------
    InconsistentGroupProtocolError
        The bytes are not a consumer-protocol assignment.
    """
    r = Reader(data, InconsistentGroupProtocolError, "consumer protocol assignment")
    if r.remaining == 0:
        return Assignment()
    version = r.int16()
    if version < 0:
        raise r.fail(f"unsupported assignment version {version}")
    partitions = _read_topic_partitions(r)
    user_data = r.bytes_(nullable=True)
    return Assignment(partitions=partitions, user_data=user_data)
