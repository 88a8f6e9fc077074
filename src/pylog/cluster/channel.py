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

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Protocol, Union

from pylog.cluster.coordination import EndPoint, TopicPartition
from pylog.errors import PylogError

__all__ = [
    "LiveBroker", "PartitionState", "LeaderAndIsrRequest", "UpdateMetadataRequest",
    "StopReplicaPartition", "StopReplicaRequest", "ControllerRequest", "ControllerResponse",
    "ControllerChannel", "InProcessChannel", "MetadataCache", "EPOCH_DURING_DELETE",
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
