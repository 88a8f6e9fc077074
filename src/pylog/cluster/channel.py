"""What the controller tells brokers, and the narrow channel it says it through.

Kafka's controller talks to brokers with three requests (``ControllerChannelManager``):

- **LeaderAndIsr**: "you lead / follow these partitions, in this leader epoch, with this
  ISR and these replicas" (sent to a partition's replicas);
- **UpdateMetadata**: the live brokers (endpoints, racks) and every partition's leader,
  leader epoch, ISR, replicas and offline replicas (sent to every live broker; the
  broker answers client Metadata requests from it: :class:`MetadataCache`);
- **StopReplica**: "stop fetching/serving this partition" and, with ``delete``, "delete
  its log" (sent for topic deletion and reassignment).

The controller produces these as the plain dataclasses below and hands them to a
:class:`ControllerChannel`. A broker process implements the channel over the wire
(encoding them as Kafka's LeaderAndIsr v7 / UpdateMetadata v8 / StopReplica v4 from
``pylog.protocol.schemas``, to each broker's inter-broker listener) and passes each
answer back with :meth:`pylog.cluster.controller.Controller.handle_response`. Tests use
:class:`InProcessChannel`, which records what every broker was told.

Thread safety: the dataclasses are immutable; :class:`InProcessChannel` and
:class:`MetadataCache` are not thread-safe (one caller at a time). Nothing here is durable.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Protocol, Union

from pylog.cluster.coordination import EndPoint, TopicPartition
from pylog.errors import PylogError

__all__ = [
    "LiveBroker", "PartitionState", "LeaderAndIsrRequest", "UpdateMetadataRequest",
    "StopReplicaPartition", "StopReplicaRequest", "ControllerRequest", "ControllerResponse",
    "ControllerChannel", "InProcessChannel", "MetadataCache", "EPOCH_DURING_DELETE", "LEADER_DURING_DELETE",
    "answer_all_ok", "leader_and_isr_to_wire", "leader_and_isr_from_wire", "update_metadata_to_wire",
    "update_metadata_from_wire", "stop_replica_to_wire", "stop_replica_from_wire",
]

#: StopReplica's leader epoch for a partition being deleted (Kafka's EpochDuringDelete):
#: the broker deletes whatever epoch it has.
EPOCH_DURING_DELETE = -2


@dataclass(frozen=True)
class LiveBroker:
    broker_id: int
    endpoints: tuple[EndPoint, ...]
    rack: str | None = None


@dataclass(frozen=True)
class PartitionState:
    """One partition as LeaderAndIsr and UpdateMetadata carry it.

    ``zk_version`` is the state znode's version (Kafka's ``zkVersion``, KIP-497's partition
    epoch): a leader's AlterPartition must name it. ``offline_replicas`` are assigned
    replicas on brokers that are not live.
    """

    topic: str
    partition: int
    controller_epoch: int
    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    zk_version: int
    replicas: tuple[int, ...]
    adding_replicas: tuple[int, ...] = ()
    removing_replicas: tuple[int, ...] = ()
    offline_replicas: tuple[int, ...] = ()
    is_new: bool = False

    @property
    def topic_partition(self) -> TopicPartition:
        return (self.topic, self.partition)


@dataclass(frozen=True)
class LeaderAndIsrRequest:
    controller_id: int
    controller_epoch: int
    broker_epoch: int
    partition_states: tuple[PartitionState, ...]
    topic_ids: Mapping[str, str | None]
    #: The live brokers leading any of the partitions (so followers can reach them).
    live_leaders: tuple[LiveBroker, ...]


@dataclass(frozen=True)
class UpdateMetadataRequest:
    controller_id: int
    controller_epoch: int
    broker_epoch: int
    partition_states: tuple[PartitionState, ...]
    live_brokers: tuple[LiveBroker, ...]
    topic_ids: Mapping[str, str | None]
    #: Partitions whose topic is being deleted: brokers forget them.
    deleted: tuple[TopicPartition, ...] = ()


@dataclass(frozen=True)
class StopReplicaPartition:
    topic: str
    partition: int
    leader_epoch: int
    delete: bool


@dataclass(frozen=True)
class StopReplicaRequest:
    controller_id: int
    controller_epoch: int
    broker_epoch: int
    partitions: tuple[StopReplicaPartition, ...]


ControllerRequest = Union[LeaderAndIsrRequest, UpdateMetadataRequest, StopReplicaRequest]


@dataclass(frozen=True)
class ControllerResponse:
    """A broker's answer: a request-level error, and per-partition errors (None: done)."""

    error: PylogError | None = None
    partition_errors: Mapping[TopicPartition, PylogError | None] = field(default_factory=dict)


class ControllerChannel(Protocol):
    """How the controller reaches brokers (Kafka's ControllerChannelManager).

    ``send`` must not block and must keep per-broker order (one queue per broker, as
    Kafka's RequestSendThread); requests to a broker that is gone are dropped. Answers go
    back to :meth:`Controller.handle_response` on any thread.
    """

    def add_broker(self, broker: LiveBroker) -> None: ...

    def remove_broker(self, broker_id: int) -> None: ...

    def send(self, broker_id: int, request: ControllerRequest) -> None: ...


class InProcessChannel:
    """A :class:`ControllerChannel` for tests: records every request per broker and, when
    ``answer`` is set (``answer(broker_id, request) -> ControllerResponse | None``), hands
    its answers to ``on_response`` (the controller's ``handle_response``) at once."""

    def __init__(self, answer: Callable[[int, ControllerRequest], ControllerResponse | None] | None = None) -> None:
        self.brokers: dict[int, LiveBroker] = {}
        self.sent: dict[int, list[ControllerRequest]] = {}
        self.answer = answer
        self.on_response: Callable[[int, ControllerRequest, ControllerResponse], None] | None = None

    def add_broker(self, broker: LiveBroker) -> None:
        self.brokers[broker.broker_id] = broker

    def remove_broker(self, broker_id: int) -> None:
        self.brokers.pop(broker_id, None)

    def send(self, broker_id: int, request: ControllerRequest) -> None:
        if broker_id not in self.brokers:
            return
        self.sent.setdefault(broker_id, []).append(request)
        if self.answer is not None and self.on_response is not None:
            response = self.answer(broker_id, request)
            if response is not None:
                self.on_response(broker_id, request, response)

    def requests(self, broker_id: int, kind: type | None = None) -> list[ControllerRequest]:
        return [r for r in self.sent.get(broker_id, []) if kind is None or isinstance(r, kind)]

    def clear(self) -> None:
        self.sent.clear()


def answer_all_ok(broker_id: int, request: ControllerRequest) -> ControllerResponse:
    """An ``answer`` for :class:`InProcessChannel`: every partition done."""
    if isinstance(request, StopReplicaRequest):
        return ControllerResponse(None, {(p.topic, p.partition): None for p in request.partitions})
    return ControllerResponse()


class MetadataCache:
    """A broker's view of the cluster, from the UpdateMetadata requests it was sent
    (Kafka's ``MetadataCache``): what the Metadata handler answers clients from.

    A request from an older controller epoch than one already applied is ignored.
    """

    def __init__(self) -> None:
        self.controller_id: int | None = None
        self.controller_epoch = -1
        self.brokers: dict[int, LiveBroker] = {}
        self.partitions: dict[TopicPartition, PartitionState] = {}
        self.topic_ids: dict[str, str | None] = {}

    def update(self, request: UpdateMetadataRequest) -> bool:
        """Apply ``request``; False when it is from a stale controller."""
        if request.controller_epoch < self.controller_epoch:
            return False
        self.controller_id, self.controller_epoch = request.controller_id, request.controller_epoch
        self.brokers = {b.broker_id: b for b in request.live_brokers}
        for tp in request.deleted:
            self.partitions.pop(tp, None)
        for state in request.partition_states:
            self.partitions[state.topic_partition] = state
        self.topic_ids.update(request.topic_ids)
        live_topics = {t for t, _ in self.partitions}
        self.topic_ids = {t: i for t, i in self.topic_ids.items() if t in live_topics}
        return True

    def apply_leader_and_isr(self, request: LeaderAndIsrRequest) -> bool:
        """Take the leader, leader epoch and ISR a LeaderAndIsr names for each partition
        already known, where newer (by leader epoch, then zkVersion) than what is held.
        The UpdateMetadata the controller sends next repeats them; taking them now means
        a broker giving a leadership up names the new leader in its Metadata answers
        from the moment it answers NOT_LEADER_OR_FOLLOWER, so a client that refreshes its
        metadata at once (librdkafka asks the broker that refused it) is not sent back
        to it for another round.  Returns whether anything changed."""
        if request.controller_epoch < self.controller_epoch:
            return False
        changed = False
        for state in request.partition_states:
            old = self.partitions.get(state.topic_partition)
            if old is None or (state.leader_epoch, state.zk_version) <= (old.leader_epoch, old.zk_version):
                continue
            # LeaderAndIsr carries no offline replicas: those of the last UpdateMetadata.
            self.partitions[state.topic_partition] = replace(state, offline_replicas=old.offline_replicas,
                                                             is_new=False)
            changed = True
        return changed

    def topics(self) -> list[str]:
        return sorted({t for t, _ in self.partitions})

    def partitions_of(self, topic: str) -> list[PartitionState]:
        return sorted((s for (t, _), s in self.partitions.items() if t == topic), key=lambda s: s.partition)

    def leader(self, topic: str, partition: int) -> LiveBroker | None:
        """The partition's leader, None when it has none (offline) or is unknown."""
        state = self.partitions.get((topic, partition))
        return None if state is None else self.brokers.get(state.leader)

    def under_replicated(self) -> list[TopicPartition]:
        return sorted(tp for tp, s in self.partitions.items() if len(s.isr) < len(s.replicas))

    def offline(self) -> list[TopicPartition]:
        return sorted(tp for tp, s in self.partitions.items() if s.leader not in self.brokers)


def live_brokers_of(registrations: Iterable) -> tuple[LiveBroker, ...]:
    """LiveBroker entries of BrokerRegistrations, by broker id."""
    return tuple(LiveBroker(r.broker_id, tuple(r.endpoints), r.rack)
                 for r in sorted(registrations, key=lambda r: r.broker_id))


# ----------------------------------------------------------------------------- over the wire

#: UpdateMetadata's leader of a partition whose topic is being deleted (Kafka's LeaderDuringDelete).
LEADER_DURING_DELETE = -2
#: Kafka's SecurityProtocol ids, as UpdateMetadata carries them.
SECURITY_PROTOCOL_IDS = {"PLAINTEXT": 0, "SSL": 1, "SASL_PLAINTEXT": 2, "SASL_SSL": 3}
_SECURITY_PROTOCOL_NAMES = {v: k for k, v in SECURITY_PROTOCOL_IDS.items()}


def topic_uuid(topic_id: str | None) -> uuid.UUID:
    """ZooKeeper's topic id (URL-safe base64, no padding) as the wire's UUID (zero: none)."""
    if not topic_id:
        return uuid.UUID(int=0)
    return uuid.UUID(bytes=base64.urlsafe_b64decode(topic_id + "=" * (-len(topic_id) % 4)))


def topic_id_text(value: uuid.UUID) -> str | None:
    if value.int == 0:
        return None
    return base64.urlsafe_b64encode(value.bytes).decode().rstrip("=")


def _grouped(states: Iterable[PartitionState]) -> dict[str, list[PartitionState]]:
    out: dict[str, list[PartitionState]] = {}
    for s in states:
        out.setdefault(s.topic, []).append(s)
    return out


def leader_and_isr_to_wire(request: LeaderAndIsrRequest) -> Any:
    """The LeaderAndIsr v7 message (v2+ layout) of ``request``."""
    from pylog.protocol import messages as m
    M: Any = m.LeaderAndIsrRequest
    return M(controller_id=request.controller_id, controller_epoch=request.controller_epoch,
             broker_epoch=request.broker_epoch, type=0,
             topic_states=[M.LeaderAndIsrTopicState(
                 topic_name=topic, topic_id=topic_uuid(request.topic_ids.get(topic)),
                 partition_states=[M.LeaderAndIsrPartitionState(
                     topic_name=topic, partition_index=s.partition, controller_epoch=s.controller_epoch,
                     leader=s.leader, leader_epoch=s.leader_epoch, isr=list(s.isr), partition_epoch=s.zk_version,
                     replicas=list(s.replicas), adding_replicas=list(s.adding_replicas),
                     removing_replicas=list(s.removing_replicas), is_new=s.is_new) for s in states])
                 for topic, states in _grouped(request.partition_states).items()],
             live_leaders=[M.LeaderAndIsrLiveLeader(broker_id=b.broker_id, host_name=b.endpoints[0].host,
                                                    port=b.endpoints[0].port)
                           for b in request.live_leaders if b.endpoints])


def leader_and_isr_from_wire(msg: Any) -> LeaderAndIsrRequest:
    """A decoded LeaderAndIsr (v2+) as the broker's replica manager takes it."""
    states, ids = [], {}
    for t in msg.topic_states:
        ids[t.topic_name] = topic_id_text(t.topic_id)
        for p in t.partition_states:
            states.append(PartitionState(t.topic_name, p.partition_index, p.controller_epoch, p.leader,
                                         p.leader_epoch, tuple(p.isr), p.partition_epoch, tuple(p.replicas),
                                         tuple(p.adding_replicas), tuple(p.removing_replicas), (), p.is_new))
    leaders = tuple(LiveBroker(b.broker_id, (EndPoint("PLAINTEXT", b.host_name, b.port),)) for b in msg.live_leaders)
    return LeaderAndIsrRequest(msg.controller_id, msg.controller_epoch, msg.broker_epoch, tuple(states), ids, leaders)


def update_metadata_to_wire(request: UpdateMetadataRequest) -> Any:
    """The UpdateMetadata v8 message (v5+ layout); deleted partitions carry leader -2."""
    from pylog.protocol import messages as m
    M: Any = m.UpdateMetadataRequest
    topics: dict[str, list[Any]] = {}
    for s in request.partition_states:
        topics.setdefault(s.topic, []).append(M.UpdateMetadataPartitionState(
            topic_name=s.topic, partition_index=s.partition, controller_epoch=s.controller_epoch, leader=s.leader,
            leader_epoch=s.leader_epoch, isr=list(s.isr), zk_version=s.zk_version, replicas=list(s.replicas),
            offline_replicas=list(s.offline_replicas)))
    for topic, partition in request.deleted:
        topics.setdefault(topic, []).append(M.UpdateMetadataPartitionState(
            topic_name=topic, partition_index=partition, controller_epoch=request.controller_epoch,
            leader=LEADER_DURING_DELETE, leader_epoch=-1, isr=[], zk_version=-1, replicas=[], offline_replicas=[]))
    return M(controller_id=request.controller_id, controller_epoch=request.controller_epoch,
             broker_epoch=request.broker_epoch,
             topic_states=[M.UpdateMetadataTopicState(topic_name=t, topic_id=topic_uuid(request.topic_ids.get(t)),
                                                      partition_states=ps) for t, ps in topics.items()],
             live_brokers=[M.UpdateMetadataBroker(
                 id=b.broker_id, rack=b.rack,
                 endpoints=[M.UpdateMetadataEndpoint(port=e.port, host=e.host, listener=e.listener_name,
                                                     security_protocol=SECURITY_PROTOCOL_IDS.get(e.security_protocol, 0))
                            for e in b.endpoints]) for b in request.live_brokers])


def update_metadata_from_wire(msg: Any) -> UpdateMetadataRequest:
    states, deleted, ids = [], [], {}
    for t in msg.topic_states:
        ids[t.topic_name] = topic_id_text(t.topic_id)
        for p in t.partition_states:
            if p.leader == LEADER_DURING_DELETE:
                deleted.append((t.topic_name, p.partition_index))
                continue
            states.append(PartitionState(t.topic_name, p.partition_index, p.controller_epoch, p.leader,
                                         p.leader_epoch, tuple(p.isr), p.zk_version, tuple(p.replicas),
                                         offline_replicas=tuple(p.offline_replicas)))
    brokers = tuple(LiveBroker(b.id, tuple(EndPoint(e.listener, e.host, e.port,
                                                    _SECURITY_PROTOCOL_NAMES.get(e.security_protocol, "PLAINTEXT"))
                                           for e in b.endpoints), b.rack) for b in msg.live_brokers)
    live_ids = {t: i for t, i in ids.items() if any(s.topic == t for s in states)}
    return UpdateMetadataRequest(msg.controller_id, msg.controller_epoch, msg.broker_epoch, tuple(states), brokers,
                                 live_ids, tuple(deleted))


def stop_replica_to_wire(request: StopReplicaRequest) -> Any:
    """The StopReplica v4 message (v3+ layout: a leader epoch and a delete flag per partition)."""
    from pylog.protocol import messages as m
    M: Any = m.StopReplicaRequest
    topics: dict[str, list[Any]] = {}
    for p in request.partitions:
        topics.setdefault(p.topic, []).append(M.StopReplicaPartitionState(
            partition_index=p.partition, leader_epoch=p.leader_epoch, delete_partition=p.delete))
    return M(controller_id=request.controller_id, controller_epoch=request.controller_epoch,
             broker_epoch=request.broker_epoch,
             topic_states=[M.StopReplicaTopicState(topic_name=t, partition_states=ps) for t, ps in topics.items()])


def stop_replica_from_wire(msg: Any) -> StopReplicaRequest:
    return StopReplicaRequest(msg.controller_id, msg.controller_epoch, msg.broker_epoch, tuple(
        StopReplicaPartition(t.topic_name, p.partition_index, p.leader_epoch, p.delete_partition)
        for t in msg.topic_states for p in t.partition_states))
