"""The cluster controller: Kafka's ZooKeeper-era KafkaController, as deterministic code.

One broker at a time is the controller. Every broker runs a :class:`Controller`; it
competes for ``/controller`` (:meth:`Coordination.elect_controller`), and the winner
loads the cluster from ZooKeeper (live brokers, topics, assignments, partition states),
then reacts to changes: brokers coming and going, topics created, marked for deletion or
given partitions, reassignments and preferred-leader elections asked for. Its decisions
are ZooKeeper writes (each fenced by the controller epoch it won, so a zombie controller's
writes fail) and requests to brokers (LeaderAndIsr, UpdateMetadata, StopReplica) handed
to a :class:`~pylog.cluster.channel.ControllerChannel`. Brokers ask it for a controlled
shutdown, ISR changes (AlterPartition, KIP-497), leader elections (ElectLeaders) and
reassignments (AlterPartitionReassignments / ListPartitionReassignments, KIP-455).

The rules are Kafka 2.8/3.x's (``PartitionStateMachine``, ``ReplicaStateMachine``,
``PartitionLeaderElectionAlgorithms``):

- **Leader election** picks, in replica (preferred) order, the first replica that is
  live, not shutting down and in the ISR; the new ISR is the live part of the old one,
  and the leader epoch grows by one. With no such replica the partition goes offline
  (leader -1), unless ``unclean.leader.election.enable`` (topic config, else the
  controller's default): then the first live replica leads with an ISR of itself.
- **A replica that goes offline** (its broker died, or it shuts down) leaves the ISR,
  except that the ISR never becomes empty: its last member stays, so that replica can
  lead cleanly when it comes back. A leader that leaves makes the partition leaderless.
- **Controlled shutdown** moves every leadership with another live ISR member off the
  broker and takes it out of every ISR; the answer lists the partitions it still leads.
- **Preferred election** makes the first replica leader when it is live and in the ISR:
  on request, via ``/admin/preferred_replica_election``, and every
  ``leader.imbalance.check.interval.seconds`` for brokers whose share of partitions not
  led by their preferred replica is above ``leader.imbalance.per.broker.percentage``
  (when ``auto.leader.rebalance.enable``; driven by :meth:`Controller.tick`).
- **Reassignment** (KIP-455): the assignment becomes target + original replicas with
  ``adding_replicas``/``removing_replicas`` in ZooKeeper; once every target replica is in
  the ISR, a leader inside the target set is elected if needed, the removed replicas are
  stopped and deleted (StopReplica delete) and the assignment becomes the target.

Crash behaviour: nothing is kept outside ZooKeeper. A new controller rebuilds
everything from it, resumes reassignments (the topic znodes' adding/removing replicas)
and topic deletions (``/admin/delete_topics``), and re-sends LeaderAndIsr and
UpdateMetadata. A controller that loses its session, its ``/controller`` znode or a fenced
write stops acting at once (:meth:`Controller.is_active` turns False).

Embedding (what a broker process does)::

    coordination = pylog.cluster.zookeeper.connect(zookeeper_connect)
    coordination.register_broker(registration)      # again on_session_reestablished
    executor = ThreadPoolExecutor(1)                 # ZooKeeper calls block: keep them off the loop
    controller = Controller(coordination, broker_id, channel, ControllerConfig(...),
                            wakeup=lambda: executor.submit(controller.process_events))
    controller.start()                               # competes for /controller now and later
    # every few seconds: executor.submit(controller.tick, now_ms)
    # the channel hands broker answers to controller.handle_response
    # ControlledShutdown, AlterPartition, ElectLeaders, Alter/ListPartitionReassignments
    # arriving on the wire: executor.submit(answer_controlled_shutdown, controller, msg), ...
    # (NOT_CONTROLLER on a broker that is not the controller: the sender finds the right one)
    # on SIGTERM: ControlledShutdown to the active controller until nothing remains, then
    # controller.close(); coordination.close()

Thread safety: events (ZooKeeper watches, broker answers) are queued and processed one
at a time under one lock, on the thread that calls :meth:`Controller.process_events` —
by default the thread that queued them (the store's callback thread, or the test's
thread with the in-memory store); pass ``wakeup`` to process them elsewhere (a broker's
event loop: ``wakeup=lambda: loop.call_soon_threadsafe(controller.process_events)``).
Request methods (:meth:`Controller.alter_partition`, ...) take the same lock.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import logging
import random
import threading
import uuid
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from pylog.cluster import replication
from pylog.cluster.channel import (EPOCH_DURING_DELETE, ControllerChannel, ControllerRequest, ControllerResponse,
                                   LeaderAndIsrRequest, LiveBroker, PartitionState, StopReplicaPartition,
                                   StopReplicaRequest, UpdateMetadataRequest)
from pylog.cluster.coordination import (BrokerRegistration, ControllerEpoch, Coordination, LeaderAndIsr,
                                        NodeExistsError, ReplicaAssignment, TopicAssignment, TopicPartition, Watch)
from pylog.cluster.placement import assign_replicas_to_brokers
from pylog.errors import (BrokerNotAvailableError, ElectionNotNeededError, EligibleLeadersNotAvailableError,
                          FencedLeaderEpochError, IneligibleReplicaError, InvalidPartitionsError,
                          InvalidReplicaAssignmentError, InvalidReplicationFactorError, InvalidRequestError,
                          InvalidTopicError,
                          InvalidUpdateVersionError, NoReassignmentInProgressError, NotControllerError,
                          NotLeaderError, PreferredLeaderNotAvailableError, PylogError,
                          ReassignmentInProgressError, StaleBrokerEpochError, TopicAlreadyExistsError,
                          UnknownTopicOrPartitionError)

__all__ = ["Controller", "ControllerConfig", "ElectionType", "ZkAdmin", "NO_LEADER",
           "answer_alter_partition", "answer_controlled_shutdown", "answer_elect_leaders",
           "answer_alter_partition_reassignments", "answer_list_partition_reassignments",
           "LEADER_REPLICATION_THROTTLED_REPLICAS", "FOLLOWER_REPLICATION_THROTTLED_REPLICAS"]

log = logging.getLogger(__name__)

NO_LEADER = -1
UNCLEAN_LEADER_ELECTION_ENABLE = "unclean.leader.election.enable"
LEADER_REPLICATION_THROTTLED_REPLICAS = "leader.replication.throttled.replicas"
FOLLOWER_REPLICATION_THROTTLED_REPLICAS = "follower.replication.throttled.replicas"
LEADER_REPLICATION_THROTTLED_RATE = "leader.replication.throttled.rate"
FOLLOWER_REPLICATION_THROTTLED_RATE = "follower.replication.throttled.rate"
_LEGAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class ElectionType(IntEnum):
    """ElectLeaders' election type."""

    PREFERRED = 0
    UNCLEAN = 1


@dataclass(frozen=True)
class ControllerConfig:
    """The broker settings the controller reads (Kafka's names and defaults)."""

    #: ``unclean.leader.election.enable``: the default when a topic does not set it.
    unclean_leader_election_enable: bool = False
    #: ``auto.leader.rebalance.enable``
    auto_leader_rebalance_enable: bool = True
    #: ``leader.imbalance.check.interval.seconds``
    leader_imbalance_check_interval_seconds: int = 300
    #: ``leader.imbalance.per.broker.percentage``
    leader_imbalance_per_broker_percentage: int = 10
    #: ``delete.topic.enable``
    delete_topic_enable: bool = True


def _truthy(value: str | None) -> bool | None:
    return None if value is None else value.strip().lower() == "true"


def new_topic_id() -> str:
    """A topic id as Kafka writes it in ZooKeeper: a random UUID, URL-safe base64, no padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def validate_topic_name(topic: str) -> None:
    if not topic or len(topic) > 249 or topic in (".", "..") or not set(topic) <= _LEGAL_CHARS:
        raise InvalidTopicError(f"invalid topic name {topic!r}: use 1 to 249 characters of [a-zA-Z0-9._-], "
                                f"not '.' or '..'")


# ----------------------------------------------------------------------------- admin writes

class ZkAdmin:
    """What any broker does in ZooKeeper for CreateTopics, CreatePartitions and
    DeleteTopics in ZooKeeper mode (Kafka's ``AdminZkClient``): it writes the assignment
    or the deletion marker, and the controller, watching, does the rest.

    ``rng`` makes replica placement deterministic in tests.
    """

    def __init__(self, coordination: Coordination, rng: random.Random | None = None) -> None:
        self.coordination = coordination
        self.rng = rng if rng is not None else random.Random()

    def _live_racks(self) -> dict[int, str | None]:
        return {b: r.rack for b, r in self.coordination.get_live_brokers().items()}

    def create_topic(self, topic: str, partitions: int, replication_factor: int,
                     config: Mapping[str, str] | None = None,
                     assignment: Mapping[int, Sequence[int]] | None = None, *,
                     validate_only: bool = False) -> TopicAssignment:
        """Place and write a new topic (``validate_only``: check and place, write nothing).

        Raises
        ------
        InvalidTopicError, TopicAlreadyExistsError, InvalidPartitionsError,
        InvalidReplicationFactorError, InvalidReplicaAssignmentError
            As Kafka's CreateTopics answers them.
        """
        validate_topic_name(topic)
        if self.coordination.get_topic_assignment(topic) is not None:
            raise TopicAlreadyExistsError(f"topic {topic!r} already exists")
        racks = self._live_racks()
        if assignment is None:
            placed = assign_replicas_to_brokers(racks, partitions, replication_factor, rng=self.rng)
        else:
            placed = self._check_assignment(assignment, racks)
        created = TopicAssignment(topic, {p: ReplicaAssignment(tuple(r)) for p, r in placed.items()}, new_topic_id())
        if not validate_only:
            self.coordination.create_topic(created, config or {})
        return created

    @staticmethod
    def _check_assignment(assignment: Mapping[int, Sequence[int]], racks: Mapping[int, Any],
                          first_partition: int = 0) -> dict[int, tuple[int, ...]]:
        if sorted(assignment) != list(range(first_partition, first_partition + len(assignment))):
            raise InvalidReplicaAssignmentError(f"partitions must be numbered consecutively from "
                                                f"{first_partition}, not {sorted(assignment)}")
        sizes = {len(r) for r in assignment.values()}
        if len(sizes) > 1:
            raise InvalidReplicaAssignmentError("all partitions must have the same number of replicas")
        for p, replicas in assignment.items():
            if not replicas:
                raise InvalidReplicationFactorError(f"partition {p} has no replicas")
            if len(set(replicas)) != len(replicas):
                raise InvalidReplicaAssignmentError(f"partition {p} names a broker twice: {list(replicas)}")
            unknown = sorted(set(replicas) - set(racks))
            if unknown:
                raise InvalidReplicaAssignmentError(f"partition {p}: brokers {unknown} are not live")
        return {p: tuple(r) for p, r in assignment.items()}

    def create_partitions(self, topic: str, total: int, assignment: Mapping[int, Sequence[int]] | None = None,
                          *, validate_only: bool = False) -> dict[int, tuple[int, ...]]:
        """Grow ``topic`` to ``total`` partitions; returns the new partitions' replicas.
        The new ones continue the topic's placement (Kafka starts at the broker that holds
        partition 0's preferred replica). ``validate_only``: check and place, write nothing."""
        current = self.coordination.get_topic_assignment(topic)
        if current is None or topic in self.coordination.get_topic_deletions():
            raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
        existing = len(current.partitions)
        if total <= existing:
            raise InvalidPartitionsError(f"topic {topic!r} has {existing} partitions; {total} would not add any")
        if any(a.adding_replicas or a.removing_replicas for a in current.partitions.values()):
            raise ReassignmentInProgressError(f"a reassignment of {topic!r} is in progress")
        racks = self._live_racks()
        rf = len(current.partitions[0].replicas)
        if assignment is None:
            ordered = sorted(racks)
            first = current.partitions[0].replicas[0]
            start = ordered.index(first) if first in ordered else -1
            placed = assign_replicas_to_brokers(racks, total - existing, rf, start_partition=existing,
                                                fixed_start_index=start, rng=self.rng)
        else:
            placed = self._check_assignment(assignment, racks, existing)
            if {len(r) for r in placed.values()} != {rf}:
                raise InvalidReplicaAssignmentError(f"new partitions must have {rf} replicas, as the topic's")
        if validate_only:
            return placed
        partitions = dict(current.partitions)
        partitions.update({p: ReplicaAssignment(r) for p, r in placed.items()})
        self.coordination.set_topic_assignment(dataclasses.replace(current, partitions=partitions),
                                               controller_epoch=None)
        return placed

    def delete_topic(self, topic: str) -> None:
        """Mark ``topic`` for deletion (the controller deletes it once every replica did)."""
        if self.coordination.get_topic_assignment(topic) is None:
            raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
        self.coordination.mark_topic_for_deletion(topic)

    def set_reassignment_throttle(self, moves: Mapping[TopicPartition, Sequence[int]], rate_bytes: int) -> None:
        """Throttle the replication a reassignment causes, as Kafka's
        ``kafka-reassign-partitions --throttle`` does: per topic,
        ``leader.replication.throttled.replicas`` lists the current replicas of each moving
        partition and ``follower.replication.throttled.replicas`` the replicas being added
        (``"partition:broker,..."``); every involved broker gets
        ``leader.replication.throttled.rate`` and ``follower.replication.throttled.rate``.
        The brokers' replica fetchers apply them."""
        leaders: dict[str, list[str]] = {}
        followers: dict[str, list[str]] = {}
        brokers: set[int] = set()
        for (topic, p), target in sorted(moves.items()):
            current = self.coordination.get_topic_assignment(topic)
            if current is None or p not in current.partitions:
                raise UnknownTopicOrPartitionError(f"{topic}-{p} does not exist")
            existing = current.partitions[p].replicas
            leaders.setdefault(topic, []).extend(f"{p}:{b}" for b in existing)
            followers.setdefault(topic, []).extend(f"{p}:{b}" for b in target if b not in existing)
            brokers.update(existing)
            brokers.update(target)
        for topic in sorted(set(leaders) | set(followers)):
            config = self.coordination.get_entity_config("topics", topic)
            config[LEADER_REPLICATION_THROTTLED_REPLICAS] = ",".join(leaders.get(topic, []))
            config[FOLLOWER_REPLICATION_THROTTLED_REPLICAS] = ",".join(followers.get(topic, []))
            self.coordination.set_entity_config("topics", topic, config)
        for broker in sorted(brokers):
            config = self.coordination.get_entity_config("brokers", broker)
            config[LEADER_REPLICATION_THROTTLED_RATE] = str(rate_bytes)
            config[FOLLOWER_REPLICATION_THROTTLED_RATE] = str(rate_bytes)
            self.coordination.set_entity_config("brokers", broker, config)

    def clear_reassignment_throttle(self, topics: Iterable[str], brokers: Iterable[int]) -> None:
        """Remove what :meth:`set_reassignment_throttle` wrote (the tool's ``--verify``)."""
        for topic in topics:
            config = self.coordination.get_entity_config("topics", topic)
            for key in (LEADER_REPLICATION_THROTTLED_REPLICAS, FOLLOWER_REPLICATION_THROTTLED_REPLICAS):
                config.pop(key, None)
            self.coordination.set_entity_config("topics", topic, config)
        for broker in brokers:
            config = self.coordination.get_entity_config("brokers", broker)
            for key in (LEADER_REPLICATION_THROTTLED_RATE, FOLLOWER_REPLICATION_THROTTLED_RATE):
                config.pop(key, None)
            self.coordination.set_entity_config("brokers", broker, config)


# ----------------------------------------------------------------------------- the controller

class _Resigned(Exception):
    """Internal: a fenced write showed this controller is stale; abandon the event."""


class _Batch:
    """Requests collected while handling one event, sent together (Kafka's
    ControllerBrokerRequestBatch)."""

    def __init__(self) -> None:
        self.leader_and_isr: dict[int, dict[TopicPartition, bool]] = collections.defaultdict(dict)
        self.update_metadata: set[TopicPartition] = set()
        self.update_metadata_all = False
        self.stop_replica: dict[int, dict[TopicPartition, bool]] = collections.defaultdict(dict)
        self.deleted: set[TopicPartition] = set()


class Controller:
    """One broker's controller (active or not): see the module docstring.

    Parameters
    ----------
    coordination
        This broker's ZooKeeper session.
    broker_id
        This broker's ``broker.id``.
    channel
        Where requests to brokers go.
    config
        The broker settings the controller uses.
    wakeup
        Called (on any thread) when an event is queued; None: process it at once on
        the queuing thread.
    """

    def __init__(self, coordination: Coordination, broker_id: int, channel: ControllerChannel,
                 config: ControllerConfig = ControllerConfig(), *, wakeup: Callable[[], None] | None = None) -> None:
        self.coordination = coordination
        self.broker_id = broker_id
        self.channel = channel
        self.config = config
        self._wakeup = wakeup
        self._lock = threading.RLock()
        self._events: collections.deque[tuple[Any, ...]] = collections.deque()
        self._draining = False
        self._started = False
        self._closed = False
        self._controller_watch: Watch | None = None
        self.epoch: ControllerEpoch | None = None
        #: The active controller's id as last seen (None: none).
        self.active_controller_id: int | None = None
        #: Events whose handling raised (logged too): a bug, or ZooKeeper unreachable.
        self.event_failures: list[tuple[tuple[Any, ...], BaseException]] = []
        self._generation = 0  # bumped on every failover and resignation: stale watches ignore themselves
        self._reset()

    def _reset(self) -> None:
        self._watches: list[Watch] = []
        self._live: dict[int, BrokerRegistration] = {}
        self._shutting_down: set[int] = set()
        self._assignments: dict[str, TopicAssignment] = {}
        self._states: dict[TopicPartition, LeaderAndIsr] = {}
        self._topic_configs: dict[str, dict[str, str]] = {}
        self._deleting: dict[str, set[tuple[TopicPartition, int]]] = {}
        self._zk_reassignment: set[TopicPartition] = set()
        self._last_imbalance_check_ms: int | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Watch /controller and compete for it now and whenever it is free."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self.coordination.add_session_listener(
            on_session_expired=lambda: self._enqueue(("session_expired",)),
            on_session_reestablished=lambda: self._enqueue(("elect",)))
        self._controller_watch = self.coordination.watch_controller(
            lambda controller_id: self._enqueue(("controller_change", controller_id)))

    def close(self) -> None:
        """Stop: resign (delete /controller, fenced) if active; watches are cancelled."""
        with self._lock:
            self._closed = True
            if self._controller_watch is not None:
                self._controller_watch.cancel()
            if self.epoch is not None:
                epoch = self.epoch
                self._resign()
                try:
                    self.coordination.resign_controller(epoch)
                except (NotControllerError, PylogError) as e:
                    log.info("controller %d: resigning: %s", self.broker_id, e)
            self._events.clear()

    @property
    def is_active(self) -> bool:
        return self.epoch is not None

    # -- the event queue -----------------------------------------------------------------

    def _enqueue(self, event: tuple[Any, ...]) -> None:
        self._events.append(event)
        if self._wakeup is not None:
            self._wakeup()
        else:
            self.process_events()

    def _watch_callback(self, kind: str, *extra: Any) -> Callable[..., None]:
        generation = self._generation

        def queue_it(*_: Any) -> None:
            if generation == self._generation:
                self._enqueue((kind, *extra, generation))
        return queue_it

    def process_events(self) -> int:
        """Handle every queued event; returns how many. A re-entrant call (from inside an
        event, e.g. a watch the controller's own write fired) returns 0 at once: the outer
        call handles what it queued."""
        with self._lock:
            if self._draining:
                return 0
            self._draining = True
            done = 0
            try:
                while self._events:
                    event = self._events.popleft()
                    done += 1
                    if self._closed:
                        continue
                    try:
                        self._handle(event)
                    except _Resigned:
                        pass
                    except NotControllerError as e:
                        log.warning("controller %d: fenced (%s); resigning", self.broker_id, e)
                        self._resign()
                    except Exception as e:
                        log.exception("controller %d: event %r failed", self.broker_id, event[0])
                        self.event_failures.append((event, e))
            finally:
                self._draining = False
            return done

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "session_expired":
            self._resign()
            return
        if kind in ("elect", "controller_change"):
            if kind == "controller_change":
                self.active_controller_id = event[1]
                if event[1] != self.broker_id and self.is_active:
                    # /controller is gone or someone else's: this controller is stale (Kafka's
                    # maybeResign); with it gone, compete again (a new epoch).
                    self._resign()
                if event[1] is not None:
                    return
            self._try_to_become_controller()
            return
        # Everything else is a watch of the active controller, of one generation.
        if not self.is_active or event[-1] != self._generation:
            return
        handler = getattr(self, f"_on_{kind}")
        handler(*event[1:-1])

    def _try_to_become_controller(self) -> None:
        if self.is_active or self._closed:
            return
        epoch = self.coordination.elect_controller(self.broker_id)
        if epoch is None:
            self.active_controller_id = self.coordination.get_controller()
            return
        self.epoch = epoch
        self.active_controller_id = self.broker_id
        log.info("controller %d: elected at controller epoch %d", self.broker_id, epoch.epoch)
        try:
            self._on_failover()
        except NotControllerError:
            self._resign()

    def _resign(self) -> None:
        if self.epoch is not None:
            log.info("controller %d: resigning at epoch %d", self.broker_id, self.epoch.epoch)
        self.epoch = None
        self._generation += 1
        for w in self._watches:
            w.cancel()
        for b in list(self._live):
            self.channel.remove_broker(b)
        self._reset()

    @contextlib.contextmanager
    def _request(self) -> Iterator[None]:
        """A broker's request: under the lock, after the queued events, answered
        NOT_CONTROLLER when this controller turns out stale."""
        with self._lock:
            self.process_events()
            self._require_active()
            # Events queued meanwhile (answers the channel gives at once, watches our own
            # writes fire) wait until the request is done, as events wait for each other.
            draining, self._draining = self._draining, True
            try:
                yield
            except _Resigned:
                raise NotControllerError(f"broker {self.broker_id} is no longer the controller") from None
            finally:
                self._draining = draining
                self.process_events()

    def _require_active(self) -> ControllerEpoch:
        if self.epoch is None:
            raise NotControllerError(f"broker {self.broker_id} is not the controller "
                                     f"(the controller is {self.active_controller_id})")
        return self.epoch

    # -- ZooKeeper writes (fenced) -----------------------------------------------------

    def _write_state(self, tp: TopicPartition, state: LeaderAndIsr) -> LeaderAndIsr:
        epoch = self._require_active()
        state = dataclasses.replace(state, controller_epoch=epoch.epoch)
        try:
            written = self.coordination.update_partition_state(tp[0], tp[1], state, controller_epoch=epoch)
        except NotControllerError:
            self._resign()
            raise _Resigned() from None
        self._states[tp] = written
        return written

    def _write_assignment(self, topic: str, partitions: Mapping[int, ReplicaAssignment]) -> None:
        epoch = self._require_active()
        assignment = dataclasses.replace(self._assignments[topic], partitions=dict(partitions))
        try:
            self.coordination.set_topic_assignment(assignment, controller_epoch=epoch)
        except NotControllerError:
            self._resign()
            raise _Resigned() from None
        self._assignments[topic] = assignment

    def _fenced(self, fn: Callable[..., Any], *args: Any) -> Any:
        epoch = self._require_active()
        try:
            return fn(*args, controller_epoch=epoch)
        except NotControllerError:
            self._resign()
            raise _Resigned() from None

    # -- context -------------------------------------------------------------------------

    def _replicas(self, tp: TopicPartition) -> tuple[int, ...]:
        a = self._assignments.get(tp[0])
        return () if a is None or tp[1] not in a.partitions else a.partitions[tp[1]].replicas

    def _is_live(self, broker: int) -> bool:
        return broker in self._live and broker not in self._shutting_down

    def _all_partitions(self) -> list[TopicPartition]:
        return sorted((t, p) for t, a in self._assignments.items() for p in a.partitions)

    def _unclean_allowed(self, topic: str) -> bool:
        # Read when needed (elections without a live ISR member are rare), so a config
        # change applies without a watch on /config/changes.
        self._topic_configs[topic] = self.coordination.get_entity_config("topics", topic)
        value = _truthy(self._topic_configs[topic].get(UNCLEAN_LEADER_ELECTION_ENABLE))
        return self.config.unclean_leader_election_enable if value is None else value

    def _partition_state(self, tp: TopicPartition) -> PartitionState:
        state = self._states.get(tp)
        a = self._assignments[tp[0]].partitions[tp[1]]
        if state is None:
            state = LeaderAndIsr(NO_LEADER, -1, (), self.epoch.epoch if self.epoch else -1, -1)
        return PartitionState(tp[0], tp[1], state.controller_epoch, state.leader, state.leader_epoch,
                              tuple(state.isr), state.zk_version, a.replicas, a.adding_replicas,
                              a.removing_replicas, tuple(r for r in a.replicas if r not in self._live))

    def _live_brokers(self) -> tuple[LiveBroker, ...]:
        return tuple(LiveBroker(b, tuple(r.endpoints), r.rack) for b, r in sorted(self._live.items()))

    def metadata(self) -> UpdateMetadataRequest:
        """What UpdateMetadata would carry now for every partition (the cluster's view)."""
        with self._lock:
            epoch = self._require_active()
            return UpdateMetadataRequest(self.broker_id, epoch.epoch, -1,
                                         tuple(self._partition_state(tp) for tp in self._all_partitions()
                                               if tp in self._states and tp[0] not in self._deleting),
                                         self._live_brokers(),
                                         {t: a.topic_id for t, a in self._assignments.items()})

    def topic_name(self, topic_id: str | None) -> str | None:
        """The topic with ``topic_id`` (None: no such topic)."""
        with self._lock:
            return next((t for t, a in self._assignments.items() if topic_id and a.topic_id == topic_id), None)

    def partition_state(self, topic: str, partition: int) -> LeaderAndIsr | None:
        """The controller's cached state of a partition (None: unknown or not initialised)."""
        with self._lock:
            return self._states.get((topic, partition))

    # -- sending -------------------------------------------------------------------------

    def _send(self, batch: _Batch) -> None:
        epoch = self._require_active()
        topic_ids = {t: a.topic_id for t, a in self._assignments.items()}
        for broker, tps in sorted(batch.leader_and_isr.items()):
            reg = self._live.get(broker)
            if reg is None:
                continue
            # LeaderAndIsr carries no offline replicas (UpdateMetadata does).
            states = tuple(dataclasses.replace(self._partition_state(tp), is_new=new, offline_replicas=())
                           for tp, new in sorted(tps.items()) if tp in self._states)
            if not states:
                continue
            leaders = {s.leader for s in states}
            self.channel.send(broker, LeaderAndIsrRequest(
                self.broker_id, epoch.epoch, reg.broker_epoch, states,
                {s.topic: topic_ids.get(s.topic) for s in states},
                tuple(b for b in self._live_brokers() if b.broker_id in leaders)))
        for broker, tps in sorted(batch.stop_replica.items()):
            reg = self._live.get(broker)
            if reg is None:
                continue
            parts = tuple(StopReplicaPartition(t, p, EPOCH_DURING_DELETE if delete else
                                               self._states[(t, p)].leader_epoch if (t, p) in self._states else -1,
                                               delete)
                          for (t, p), delete in sorted(tps.items()))
            self.channel.send(broker, StopReplicaRequest(self.broker_id, epoch.epoch, reg.broker_epoch, parts))
        if batch.update_metadata or batch.update_metadata_all or batch.deleted:
            wanted = self._all_partitions() if batch.update_metadata_all else sorted(batch.update_metadata)
            states = tuple(self._partition_state(tp) for tp in wanted
                           if tp in self._states and tp[0] not in self._deleting)
            live = self._live_brokers()
            for broker, reg in sorted(self._live.items()):
                self.channel.send(broker, UpdateMetadataRequest(
                    self.broker_id, epoch.epoch, reg.broker_epoch, states, live,
                    {s.topic: topic_ids.get(s.topic) for s in states}, tuple(sorted(batch.deleted))))

    def _tell_replicas(self, batch: _Batch, tp: TopicPartition, new: bool = False) -> None:
        for r in self._replicas(tp):
            if r in self._live:
                batch.leader_and_isr[r][tp] = new
        batch.update_metadata.add(tp)

    # -- failover ------------------------------------------------------------------------

    def _on_failover(self) -> None:
        c = self.coordination
        gen = self._generation
        self._watches.append(c.watch_brokers(self._watch_callback("broker_change")))
        self._watches.append(c.watch_topics(self._watch_callback("topic_change")))
        self._watches.append(c.watch_topic_deletions(self._watch_callback("topic_deletion")))
        self._watches.append(c.watch_partition_reassignment(self._watch_callback("zk_reassignment")))
        self._watches.append(c.watch_preferred_replica_election(self._watch_callback("zk_preferred_election")))
        self._watches.append(c.watch_isr_change_notifications(self._watch_callback("isr_change")))
        self._live = c.get_live_brokers()
        for b in self._live.values():
            self.channel.add_broker(LiveBroker(b.broker_id, tuple(b.endpoints), b.rack))
        for topic in c.get_topics():
            self._load_topic(topic)
        batch = _Batch()
        self._initialize_new_partitions(batch)
        self._elect_offline(batch)
        # Replicas on brokers that are gone are offline: out of the ISR (as on a broker's loss).
        for tp in self._all_partitions():
            dead = {r for r in self._replicas(tp) if r not in self._live}
            if dead:
                self._remove_from_isr(tp, dead, batch)
            if tp in self._states:
                self._tell_replicas(batch, tp)
        batch.update_metadata_all = True
        self._send(batch)
        if gen != self._generation:
            return
        # Resume what the previous controller left: reassignments, deletions, elections.
        for tp in self._all_partitions():
            a = self._assignments[tp[0]].partitions[tp[1]]
            if a.adding_replicas or a.removing_replicas:
                self._maybe_complete_reassignment(tp)
        self._enqueue(("zk_reassignment", self._generation))
        self._enqueue(("topic_deletion", self._generation))
        self._enqueue(("zk_preferred_election", self._generation))

    def _load_topic(self, topic: str) -> None:
        c = self.coordination
        assignment = c.get_topic_assignment(topic)
        if assignment is None:
            return
        self._assignments[topic] = assignment
        self._topic_configs[topic] = c.get_entity_config("topics", topic)
        for p in assignment.partitions:
            state = c.get_partition_state(topic, p)
            if state is not None:
                self._states[(topic, p)] = state
        self._watches.append(c.watch_topic_assignment(topic, self._watch_callback("partition_modification", topic)))

    def _initialize_new_partitions(self, batch: _Batch) -> None:
        """NewPartition -> OnlinePartition: leader = first live replica, ISR = live replicas."""
        epoch = self._require_active()
        for tp in self._all_partitions():
            if tp in self._states or tp[0] in self._deleting:
                continue
            live = [r for r in self._replicas(tp) if self._is_live(r)]
            if not live:
                log.warning("controller %d: %s-%d has no live replica; it stays new", self.broker_id, *tp)
                continue
            state = LeaderAndIsr(live[0], 0, tuple(live), epoch.epoch)
            try:
                self._states[tp] = self._fenced(
                    lambda s, controller_epoch: self.coordination.create_partition_state(
                        tp[0], tp[1], s, controller_epoch=controller_epoch), state)
            except NodeExistsError:
                got = self.coordination.get_partition_state(*tp)
                if got is None:
                    continue
                self._states[tp] = got
            self._tell_replicas(batch, tp, new=True)

    # -- leader election -----------------------------------------------------------------

    def _choose(self, tp: TopicPartition, strategy: str, allow_unclean: bool = False
                ) -> tuple[int, tuple[int, ...]] | None:
        """(leader, isr) for ``strategy``, or None when no replica may lead."""
        state = self._states[tp]
        replicas = self._replicas(tp)
        if strategy == "reassign":
            a = self._assignments[tp[0]].partitions[tp[1]]
            replicas = tuple(r for r in a.replicas if r not in a.removing_replicas)
        isr = state.isr
        if strategy == "preferred":
            preferred = replicas[0]
            if self._is_live(preferred) and preferred in isr:
                return preferred, isr
            return None
        live_isr = tuple(r for r in isr if self._is_live(r))
        leader = next((r for r in replicas if self._is_live(r) and r in isr), None)
        if leader is not None:
            return leader, live_isr
        if allow_unclean:
            leader = next((r for r in replicas if self._is_live(r)), None)
            if leader is not None:
                log.warning("controller %d: unclean leader election for %s-%d: %d leads with no ISR member "
                            "alive; records acknowledged by the old ISR may be lost", self.broker_id, *tp, leader)
                return leader, (leader,)
        return None

    def _elect_leader(self, tp: TopicPartition, strategy: str, batch: _Batch,
                      allow_unclean: bool = False) -> PylogError | None:
        """Elect and write; None on success, else why not."""
        def elect(state: LeaderAndIsr) -> LeaderAndIsr | PylogError:
            chosen = self._choose(tp, strategy, allow_unclean)
            if chosen is None:
                if strategy == "preferred":
                    return PreferredLeaderNotAvailableError(
                        f"the preferred replica {self._replicas(tp)[0]} of {tp[0]}-{tp[1]} is not live and in the ISR")
                return EligibleLeadersNotAvailableError(f"no live replica of {tp[0]}-{tp[1]} may lead it")
            leader, isr = chosen
            return dataclasses.replace(state, leader=leader, isr=isr, leader_epoch=state.leader_epoch + 1)
        if tp not in self._states:
            return EligibleLeadersNotAvailableError(f"{tp[0]}-{tp[1]} is not initialised")
        return self._change_state(tp, elect, batch)

    def _change_state(self, tp: TopicPartition, change: Callable[[LeaderAndIsr], LeaderAndIsr | PylogError | None],
                      batch: _Batch) -> PylogError | None:
        """Compare-and-set ``change(current state)`` (None: nothing to change; an error:
        refused), deciding again on what is stored when a leader changed the ISR meanwhile;
        the partition's replicas are told on success."""
        for _ in range(3):
            state = self._states.get(tp)
            if state is None:
                return None
            new = change(state)
            if new is None or isinstance(new, PylogError):
                return new
            try:
                self._write_state(tp, new)
            except InvalidUpdateVersionError:
                got = self.coordination.get_partition_state(*tp)
                if got is not None:
                    self._states[tp] = got
                continue
            self._tell_replicas(batch, tp)
            return None
        return InvalidUpdateVersionError(f"{tp[0]}-{tp[1]}: the partition state kept changing")

    def _elect_offline(self, batch: _Batch, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Every partition without a live leader gets one if it can (OfflinePartition ->
        OnlinePartition), unclean only where allowed."""
        for tp in sorted(partitions if partitions is not None else self._states):
            state = self._states.get(tp)
            if state is None or tp[0] in self._deleting or self._is_live(state.leader):
                continue
            clean = self._choose(tp, "offline") is not None
            if self._elect_leader(tp, "offline", batch, not clean and self._unclean_allowed(tp[0])) is not None:
                log.info("controller %d: %s-%d stays offline: no live ISR member", self.broker_id, *tp)

    def _remove_from_isr(self, tp: TopicPartition, replicas: set[int], batch: _Batch) -> None:
        """Take ``replicas`` out of the ISR (never leaving it empty); a leader among them
        leaves the partition leaderless. Bumps the leader epoch."""
        def remove(state: LeaderAndIsr) -> LeaderAndIsr | None:
            if not (set(state.isr) & replicas or state.leader in replicas):
                return None
            isr = tuple(r for r in state.isr if r not in replicas) or tuple(state.isr[-1:])
            leader = NO_LEADER if state.leader in replicas else state.leader
            return dataclasses.replace(state, leader=leader, isr=isr, leader_epoch=state.leader_epoch + 1)
        self._change_state(tp, remove, batch)

    # -- brokers -------------------------------------------------------------------------

    def _on_broker_change(self) -> None:
        current = set(self.coordination.get_live_broker_ids())
        known = set(self._live)
        registrations: dict[int, BrokerRegistration] = {}
        for b in current:
            reg = self.coordination.get_broker(b)
            if reg is not None:
                registrations[b] = reg
        bounced = {b for b in current & known
                   if b in registrations and registrations[b].broker_epoch != self._live[b].broker_epoch}
        dead = (known - set(registrations)) | bounced
        new = (set(registrations) - known) | bounced
        if dead:
            self._on_broker_failure(dead)
        if new:
            self._on_broker_startup({b: registrations[b] for b in new})

    def _on_broker_failure(self, dead: set[int]) -> None:
        log.info("controller %d: brokers %s are gone", self.broker_id, sorted(dead))
        for b in dead:
            self._live.pop(b, None)
            self._shutting_down.discard(b)
            self.channel.remove_broker(b)
        batch = _Batch()
        self._elect_offline(batch, [tp for tp, s in self._states.items() if s.leader in dead])
        for tp in sorted(self._states):
            if set(self._replicas(tp)) & dead:
                self._remove_from_isr(tp, dead, batch)
                batch.update_metadata.add(tp)
        batch.update_metadata_all = True  # the live broker list changed
        self._send(batch)

    def _on_broker_startup(self, new: Mapping[int, BrokerRegistration]) -> None:
        log.info("controller %d: brokers %s are up", self.broker_id, sorted(new))
        self._live.update(new)
        for b, reg in new.items():
            self._shutting_down.discard(b)
            self.channel.add_broker(LiveBroker(b, tuple(reg.endpoints), reg.rack))
        batch = _Batch()
        batch.update_metadata_all = True
        for tp in self._all_partitions():
            if tp in self._states and tp[0] not in self._deleting:
                for r in self._replicas(tp):
                    if r in new:
                        batch.leader_and_isr[r][tp] = False
        self._initialize_new_partitions(batch)
        self._elect_offline(batch)
        self._send(batch)
        for tp in self._all_partitions():
            a = self._assignments[tp[0]].partitions[tp[1]]
            if a.adding_replicas or a.removing_replicas:
                self._maybe_complete_reassignment(tp)
        self._retry_deletions()

    # -- topics --------------------------------------------------------------------------

    def _on_topic_change(self) -> None:
        current = set(self.coordination.get_topics())
        for topic in sorted(current - set(self._assignments)):
            self._load_topic(topic)
        for topic in set(self._assignments) - current:
            self._forget_topic(topic)
        batch = _Batch()
        self._initialize_new_partitions(batch)
        self._send(batch)

    def _on_partition_modification(self, topic: str) -> None:
        if topic not in self._assignments or topic in self._deleting:
            return
        assignment = self.coordination.get_topic_assignment(topic)
        if assignment is None:
            return
        added = set(assignment.partitions) - set(self._assignments[topic].partitions)
        if not added:
            return
        partitions = dict(self._assignments[topic].partitions)
        partitions.update({p: assignment.partitions[p] for p in added})
        self._assignments[topic] = dataclasses.replace(self._assignments[topic], partitions=partitions)
        batch = _Batch()
        self._initialize_new_partitions(batch)
        self._send(batch)

    def _forget_topic(self, topic: str) -> None:
        self._assignments.pop(topic, None)
        self._topic_configs.pop(topic, None)
        self._deleting.pop(topic, None)
        for tp in [tp for tp in self._states if tp[0] == topic]:
            del self._states[tp]

    def _on_topic_deletion(self) -> None:
        marked = self.coordination.get_topic_deletions()
        batch = _Batch()
        for topic in marked:
            if topic in self._deleting:
                continue
            if topic not in self._assignments:
                # Kafka drops the marker of a topic that does not exist.
                self._fenced(lambda t, controller_epoch: self.coordination.delete_topic(
                    t, controller_epoch=controller_epoch), topic)
                continue
            if not self.config.delete_topic_enable:
                log.warning("controller %d: topic %s is marked for deletion but delete.topic.enable is false",
                            self.broker_id, topic)
                continue
            if any(a.adding_replicas or a.removing_replicas for a in self._assignments[topic].partitions.values()):
                continue  # ineligible while it moves; retried when the reassignment ends
            self._deleting[topic] = {((topic, p), r) for p, a in self._assignments[topic].partitions.items()
                                     for r in a.replicas}
            batch.deleted.update((topic, p) for p in self._assignments[topic].partitions)
        self._send(batch)
        self._retry_deletions()

    def _retry_deletions(self) -> None:
        batch = _Batch()
        for topic, pending in sorted(self._deleting.items()):
            for tp, r in sorted(pending):
                if r in self._live:
                    batch.stop_replica[r][tp] = True
        self._send(batch)
        for topic in [t for t, pending in self._deleting.items() if not pending]:
            self._complete_deletion(topic)

    def _complete_deletion(self, topic: str) -> None:
        self._fenced(lambda t, controller_epoch: self.coordination.delete_topic(t, controller_epoch=controller_epoch),
                     topic)
        log.info("controller %d: topic %s deleted", self.broker_id, topic)
        self._forget_topic(topic)

    def handle_response(self, broker_id: int, request: ControllerRequest, response: ControllerResponse) -> None:
        """A broker's answer to a request this controller sent (any thread)."""
        self._enqueue(("response", broker_id, request, response, self._generation))

    def _on_response(self, broker_id: int, request: ControllerRequest, response: ControllerResponse) -> None:
        if not isinstance(request, StopReplicaRequest) or request.controller_epoch != self._require_active().epoch:
            if response.error is not None:
                log.warning("controller %d: broker %d answered %s with %s", self.broker_id, broker_id,
                            type(request).__name__, response.error)
            return
        done_topics = set()
        for part in request.partitions:
            tp = (part.topic, part.partition)
            error = response.error or response.partition_errors.get(tp)
            if part.delete and part.topic in self._deleting and error is None:
                self._deleting[part.topic].discard((tp, broker_id))
                done_topics.add(part.topic)
        for topic in sorted(done_topics):
            if topic in self._deleting and not self._deleting[topic]:
                self._complete_deletion(topic)

    # -- ISR changes (AlterPartition, KIP-497; and Kafka 2.x leaders' notifications) ------

    def alter_partition(self, broker_id: int, broker_epoch: int, topic: str, partition: int,
                        request: replication.AlterPartition) -> replication.LeaderAndIsr:
        """A leader's ISR change: compare-and-set it and answer the stored state.

        Returns
        -------
        replication.LeaderAndIsr
            The stored state; ``partition_epoch`` is the state znode's new version.

        Raises
        ------
        NotControllerError, StaleBrokerEpochError, UnknownTopicOrPartitionError
        NotLeaderError
            ``broker_id`` does not lead the partition.
        FencedLeaderEpochError
            The request's leader epoch is not the current one.
        InvalidUpdateVersionError
            The request's partition epoch is not the current one (a newer state exists).
        IneligibleReplicaError
            The new ISR names a replica that is not assigned, not live or shutting down.
        """
        with self._request():
            reg = self._live.get(broker_id)
            if reg is None or (broker_epoch >= 0 and broker_epoch != reg.broker_epoch):
                raise StaleBrokerEpochError(f"broker {broker_id} epoch {broker_epoch} is not the live registration's")
            tp = (topic, partition)
            state = self._states.get(tp)
            if state is None or topic in self._deleting:
                raise UnknownTopicOrPartitionError(f"{topic}-{partition} is unknown to the controller")
            if state.leader != broker_id:
                raise NotLeaderError(f"broker {broker_id} does not lead {topic}-{partition} (leader {state.leader})")
            if request.leader_epoch != state.leader_epoch:
                raise FencedLeaderEpochError(f"{topic}-{partition}: leader epoch {request.leader_epoch} is not the "
                                             f"current {state.leader_epoch}")
            if request.partition_epoch != state.zk_version:
                if tuple(request.new_isr) == tuple(state.isr):
                    return self._replication_state(state)  # a retry of what is stored
                raise InvalidUpdateVersionError(f"{topic}-{partition}: partition epoch {request.partition_epoch} "
                                                f"is not the current {state.zk_version}")
            replicas = self._replicas(tp)
            bad = sorted(r for r in request.new_isr if r not in replicas or not self._is_live(r))
            if bad or broker_id not in request.new_isr:
                raise IneligibleReplicaError(f"{topic}-{partition}: ISR {list(request.new_isr)} names replicas {bad} "
                                             f"that are not live assigned replicas, or leaves out the leader")
            if tuple(request.new_isr) == tuple(state.isr):
                return self._replication_state(state)
            written = self._write_state(tp, dataclasses.replace(state, isr=tuple(request.new_isr)))
            batch = _Batch()
            batch.update_metadata.add(tp)
            self._send(batch)
            self._maybe_complete_reassignment(tp)
            return self._replication_state(written)

    @staticmethod
    def _replication_state(state: LeaderAndIsr) -> replication.LeaderAndIsr:
        return replication.LeaderAndIsr(state.leader, state.leader_epoch, tuple(state.isr), state.zk_version)

    def _on_isr_change(self) -> None:
        seqs = self.coordination.get_isr_change_notifications()
        if not seqs:
            return
        changed: set[TopicPartition] = set()
        for seq in seqs:
            changed |= self.coordination.read_isr_change_notification(seq) or set()
        batch = _Batch()
        for tp in sorted(changed):
            got = self.coordination.get_partition_state(*tp) if tp[0] in self._assignments else None
            if got is not None:
                self._states[tp] = got
                batch.update_metadata.add(tp)
        self._send(batch)
        self._fenced(lambda s, controller_epoch: self.coordination.delete_isr_change_notifications(
            s, controller_epoch=controller_epoch), seqs)
        for tp in sorted(changed):
            if tp in self._states:
                self._maybe_complete_reassignment(tp)

    # -- controlled shutdown -------------------------------------------------------------

    def controlled_shutdown(self, broker_id: int, broker_epoch: int = -1) -> list[TopicPartition]:
        """Move leadership off ``broker_id`` before it stops (Kafka's ControlledShutdown).

        Returns
        -------
        list
            The partitions (with more than one replica) it still leads: the broker asks
            again until this is empty (or gives up after ``controlled.shutdown.max.retries``).

        Raises
        ------
        NotControllerError, BrokerNotAvailableError, StaleBrokerEpochError
        """
        with self._request():
            reg = self._live.get(broker_id)
            if reg is None:
                raise BrokerNotAvailableError(f"broker {broker_id} is not live")
            if broker_epoch >= 0 and broker_epoch != reg.broker_epoch:
                raise StaleBrokerEpochError(f"broker {broker_id} epoch {broker_epoch} is not the live registration's")
            self._shutting_down.add(broker_id)
            batch = _Batch()
            for tp in self._all_partitions():
                state = self._states.get(tp)
                if state is None or broker_id not in self._replicas(tp) or tp[0] in self._deleting:
                    continue
                if state.leader == broker_id:
                    if len(self._replicas(tp)) > 1:
                        self._elect_leader(tp, "controlled_shutdown", batch)
                elif broker_id in state.isr:
                    self._remove_from_isr(tp, {broker_id}, batch)
                    batch.stop_replica[broker_id][tp] = False
            self._send(batch)
            return [tp for tp in self._all_partitions()
                    if tp in self._states and self._states[tp].leader == broker_id and len(self._replicas(tp)) > 1]

    # -- elections on request and automatic ----------------------------------------------

    def elect_leaders(self, election_type: ElectionType, partitions: Iterable[TopicPartition] | None = None
                      ) -> dict[TopicPartition, PylogError | None]:
        """ElectLeaders: per partition None (elected) or the error (ELECTION_NOT_NEEDED,
        PREFERRED_LEADER_NOT_AVAILABLE, ELIGIBLE_LEADERS_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION).
        ``partitions`` None: every partition."""
        with self._request():
            batch = _Batch()
            out = self._elect(election_type, partitions, batch)
            self._send(batch)
            return out

    def _elect(self, election_type: ElectionType, partitions: Iterable[TopicPartition] | None,
               batch: _Batch) -> dict[TopicPartition, PylogError | None]:
        out: dict[TopicPartition, PylogError | None] = {}
        for tp in sorted(partitions if partitions is not None else self._all_partitions()):
            tp = (tp[0], int(tp[1]))
            state = self._states.get(tp)
            if state is None:
                out[tp] = UnknownTopicOrPartitionError(f"{tp[0]}-{tp[1]} does not exist")
            elif tp[0] in self._deleting:     # Kafka's answer for a topic being deleted
                out[tp] = InvalidTopicError(f"topic {tp[0]!r} is being deleted")
            elif election_type == ElectionType.PREFERRED:
                if state.leader == self._replicas(tp)[0]:
                    out[tp] = ElectionNotNeededError(f"{tp[0]}-{tp[1]} is led by its preferred replica")
                else:
                    out[tp] = self._elect_leader(tp, "preferred", batch)
            else:
                if self._is_live(state.leader):
                    out[tp] = ElectionNotNeededError(f"{tp[0]}-{tp[1]} has a live leader")
                else:
                    out[tp] = self._elect_leader(tp, "offline", batch, allow_unclean=True)
        return out

    def _on_zk_preferred_election(self) -> None:
        requested = self.coordination.get_preferred_replica_election()
        if requested is None:
            return
        batch = _Batch()
        self._elect(ElectionType.PREFERRED, requested, batch)
        self._send(batch)
        self._fenced(lambda controller_epoch: self.coordination.delete_preferred_replica_election(
            controller_epoch=controller_epoch))

    def tick(self, now_ms: int) -> dict[TopicPartition, PylogError | None]:
        """The automatic preferred-leader rebalance: call it now and then with the time;
        every ``leader.imbalance.check.interval.seconds`` it elects preferred leaders for
        brokers whose imbalance ratio exceeds ``leader.imbalance.per.broker.percentage``.
        Returns the elections it made (partition -> None or error)."""
        with self._lock:
            self.process_events()
            if not self.is_active or not self.config.auto_leader_rebalance_enable:
                return {}
            if self._last_imbalance_check_ms is None:
                self._last_imbalance_check_ms = now_ms
                return {}
            if now_ms - self._last_imbalance_check_ms < self.config.leader_imbalance_check_interval_seconds * 1000:
                return {}
            self._last_imbalance_check_ms = now_ms
            try:
                with self._request():
                    return self._rebalance()
            except NotControllerError:
                return {}

    def _rebalance(self) -> dict[TopicPartition, PylogError | None]:
        by_preferred: dict[int, list[TopicPartition]] = collections.defaultdict(list)
        for tp in self._all_partitions():
            if tp in self._states and tp[0] not in self._deleting:
                a = self._assignments[tp[0]].partitions[tp[1]]
                if not (a.adding_replicas or a.removing_replicas):
                    by_preferred[a.replicas[0]].append(tp)
        todo = []
        for broker, tps in sorted(by_preferred.items()):
            not_led = [tp for tp in tps if self._states[tp].leader != broker]
            ratio = len(not_led) / len(tps)
            if ratio * 100 > self.config.leader_imbalance_per_broker_percentage and self._is_live(broker):
                todo += [tp for tp in not_led if broker in self._states[tp].isr]
        if not todo:
            return {}
        batch = _Batch()
        out = self._elect(ElectionType.PREFERRED, todo, batch)
        self._send(batch)
        return out

    # -- reassignment (KIP-455) ------------------------------------------------------------

    def alter_partition_reassignments(self, reassignments: Mapping[TopicPartition, Sequence[int] | None]
                                      ) -> dict[TopicPartition, PylogError | None]:
        """AlterPartitionReassignments: a target replica list starts (or replaces) a
        reassignment, None cancels one. Per partition None (accepted) or the error."""
        with self._request():
            out: dict[TopicPartition, PylogError | None] = {}
            for tp, target in sorted(reassignments.items(), key=lambda kv: kv[0]):
                tp = (tp[0], int(tp[1]))
                try:
                    self._start_reassignment(tp, target)
                    out[tp] = None
                except (UnknownTopicOrPartitionError, InvalidReplicaAssignmentError,
                        NoReassignmentInProgressError) as e:
                    out[tp] = e
            return out

    def _start_reassignment(self, tp: TopicPartition, target: Sequence[int] | None) -> None:
        topic, p = tp
        if topic not in self._assignments or p not in self._assignments[topic].partitions or \
                topic in self._deleting or tp not in self._states:
            raise UnknownTopicOrPartitionError(f"{topic}-{p} does not exist")
        current = self._assignments[topic].partitions[p]
        origin = tuple(r for r in current.replicas if r not in current.adding_replicas)
        if target is None:
            if not (current.adding_replicas or current.removing_replicas):
                raise NoReassignmentInProgressError(f"no reassignment of {topic}-{p} is in progress")
            target = origin
        target = tuple(int(r) for r in target)
        if not target or len(set(target)) != len(target):
            raise InvalidReplicaAssignmentError(f"{topic}-{p}: target replicas {list(target)} are empty or "
                                                f"name a broker twice")
        unknown = sorted(set(target) - set(self._live))
        if unknown:
            raise InvalidReplicaAssignmentError(f"{topic}-{p}: brokers {unknown} of the target are not live")
        replicas = tuple(dict.fromkeys(target + origin))
        moving = ReplicaAssignment(replicas, tuple(r for r in target if r not in origin),
                                   tuple(r for r in origin if r not in target))
        if not (moving.adding_replicas or moving.removing_replicas):
            moving = ReplicaAssignment(target)
        # Replicas a previous reassignment was adding that this one does not want (all of
        # them, on a cancel) are stopped and deleted at once, as Kafka does.
        unneeded = set(current.replicas) - set(moving.replicas)
        state = self._states[tp]
        if unneeded and not set(state.isr) - unneeded:
            raise InvalidReplicaAssignmentError(
                f"{topic}-{p}: dropping replicas {sorted(unneeded)} would leave no in-sync replica (ISR "
                f"{list(state.isr)}); wait until a replica of {list(target)} is in sync")
        partitions = dict(self._assignments[topic].partitions)
        partitions[p] = moving
        self._write_assignment(topic, partitions)
        batch = _Batch()
        if unneeded:
            if state.leader in unneeded:
                self._elect_leader(tp, "reassign", batch)
            self._remove_from_isr(tp, unneeded, batch)
            for r in unneeded:
                batch.stop_replica[r][tp] = True
        if moving.adding_replicas or moving.removing_replicas:
            # New replicas learn the partition (as followers), in a new leader epoch.
            state = self._states[tp]
            self._write_state(tp, dataclasses.replace(state, leader_epoch=state.leader_epoch + 1))
        self._tell_replicas(batch, tp)
        # A leaderless partition may have an eligible replica now.
        self._elect_offline(batch, [tp])
        self._send(batch)
        self._maybe_complete_reassignment(tp)

    def _maybe_complete_reassignment(self, tp: TopicPartition) -> None:
        topic, p = tp
        if topic not in self._assignments or p not in self._assignments[topic].partitions:
            return
        a = self._assignments[topic].partitions[p]
        if not (a.adding_replicas or a.removing_replicas):
            return
        target = tuple(r for r in a.replicas if r not in a.removing_replicas)
        state = self._states.get(tp)
        if state is None or not set(target) <= set(state.isr):
            return
        batch = _Batch()
        if state.leader not in target or not self._is_live(state.leader):
            if self._elect_leader(tp, "reassign", batch) is not None:
                return  # no target replica may lead yet; retried on the next ISR or broker change
        removing = set(a.removing_replicas)
        if removing:
            self._remove_from_isr(tp, removing, batch)
            for r in removing:
                batch.stop_replica[r][tp] = True
        else:
            state = self._states[tp]
            self._write_state(tp, dataclasses.replace(state, leader_epoch=state.leader_epoch + 1))
        partitions = dict(self._assignments[topic].partitions)
        partitions[p] = ReplicaAssignment(target)
        self._write_assignment(topic, partitions)
        self._tell_replicas(batch, tp)
        self._send(batch)
        log.info("controller %d: reassignment of %s-%d to %s complete", self.broker_id, topic, p, list(target))
        if tp in self._zk_reassignment:
            self._zk_reassignment.discard(tp)
            if not self._zk_reassignment:
                self._fenced(
                    lambda controller_epoch: self.coordination.delete_partition_reassignment(
                        controller_epoch=controller_epoch))
        if topic in self.coordination.get_topic_deletions():
            self._enqueue(("topic_deletion", self._generation))

    def _on_zk_reassignment(self) -> None:
        requested = self.coordination.get_partition_reassignment()
        if requested is None:
            return
        for tp, target in sorted(requested.items()):
            a = self._assignments.get(tp[0])
            if a is None or tp[1] not in a.partitions:
                continue
            current = a.partitions[tp[1]]
            current_target = tuple(r for r in current.replicas if r not in current.removing_replicas)
            if current_target == tuple(target) and not (current.adding_replicas or current.removing_replicas):
                continue
            self._zk_reassignment.add(tp)
            try:
                self._start_reassignment(tp, target)
            except (UnknownTopicOrPartitionError, InvalidReplicaAssignmentError) as e:
                log.warning("controller %d: reassignment of %s-%d in ZooKeeper refused: %s",
                            self.broker_id, *tp, e)
                self._zk_reassignment.discard(tp)
        if not self._zk_reassignment:
            self._fenced(lambda controller_epoch: self.coordination.delete_partition_reassignment(
                controller_epoch=controller_epoch))

    def list_partition_reassignments(self, partitions: Iterable[TopicPartition] | None = None
                                     ) -> dict[TopicPartition, ReplicaAssignment]:
        """ListPartitionReassignments: the partitions moving (of ``partitions``, or all),
        with their full replica list and the replicas being added and removed."""
        with self._request():
            wanted = None if partitions is None else {(t, int(p)) for t, p in partitions}
            return {tp: self._assignments[tp[0]].partitions[tp[1]] for tp in self._all_partitions()
                    if (wanted is None or tp in wanted)
                    and (self._assignments[tp[0]].partitions[tp[1]].adding_replicas
                         or self._assignments[tp[0]].partitions[tp[1]].removing_replicas)}


# ----------------------------------------------------------------------------- over the wire
# The controller's requests as a broker's server answers them: decoded messages in (any
# version pylog.protocol speaks), response messages out. A broker that is not the
# controller answers NOT_CONTROLLER, and the sender looks the controller up again.

def _code(error: PylogError | None) -> int:
    return 0 if error is None else error.error_code


def _message(error: PylogError | None) -> str | None:
    return None if error is None else str(error)


def answer_alter_partition(controller: Controller, msg: Any, version: int) -> Any:
    """AlterPartition v0-3 (topics by name up to v1, by id from v2)."""
    from pylog.protocol import messages as m
    from pylog.cluster.channel import topic_id_text
    R: Any = m.AlterPartitionResponse
    if not controller.is_active:
        return R(error_code=NotControllerError.error_code)
    topics = []
    for t in msg.topics:
        name = t.topic_name if version < 2 else controller.topic_name(topic_id_text(t.topic_id))
        partitions = []
        for p in t.partitions:
            new_isr = tuple(p.new_isr) if version < 3 else tuple(b.broker_id for b in p.new_isr_with_epochs)
            try:
                if name is None:
                    raise UnknownTopicOrPartitionError(f"no topic has id {t.topic_id}")
                got = controller.alter_partition(msg.broker_id, msg.broker_epoch, name, p.partition_index,
                                                 replication.AlterPartition(msg.broker_id, p.leader_epoch, new_isr,
                                                                            p.partition_epoch))
                partitions.append(R.PartitionData(partition_index=p.partition_index, leader_id=got.leader,
                                                  leader_epoch=got.leader_epoch, isr=list(got.isr),
                                                  partition_epoch=got.partition_epoch))
            except NotControllerError:
                return R(error_code=NotControllerError.error_code)
            except StaleBrokerEpochError as e:
                return R(error_code=e.error_code)
            except PylogError as e:
                partitions.append(R.PartitionData(partition_index=p.partition_index, error_code=e.error_code,
                                                  leader_id=-1, leader_epoch=-1, isr=[], partition_epoch=-1))
        topics.append(R.TopicData(topic_name=t.topic_name, topic_id=t.topic_id, partitions=partitions))
    return R(topics=topics)


def answer_controlled_shutdown(controller: Controller, msg: Any) -> Any:
    from pylog.protocol import messages as m
    R: Any = m.ControlledShutdownResponse
    try:
        remaining = controller.controlled_shutdown(msg.broker_id, msg.broker_epoch)
    except PylogError as e:
        return R(error_code=e.error_code)
    return R(remaining_partitions=[R.RemainingPartition(topic_name=t, partition_index=p) for t, p in remaining])


def answer_elect_leaders(controller: Controller, msg: Any) -> Any:
    from pylog.protocol import messages as m
    R: Any = m.ElectLeadersResponse
    wanted = None if msg.topic_partitions is None else [(t.topic, p) for t in msg.topic_partitions
                                                        for p in t.partitions]
    try:
        results = controller.elect_leaders(ElectionType(msg.election_type), wanted)
    except PylogError as e:
        return R(error_code=e.error_code)
    except ValueError:
        return R(error_code=InvalidRequestError.error_code)  # an election type Kafka does not have
    by_topic: dict[str, list[Any]] = {}
    for (t, p), error in sorted(results.items()):
        by_topic.setdefault(t, []).append(R.PartitionResult(partition_id=p, error_code=_code(error),
                                                            error_message=_message(error)))
    return R(replica_election_results=[R.ReplicaElectionResult(topic=t, partition_result=r)
                                       for t, r in by_topic.items()])


def answer_alter_partition_reassignments(controller: Controller, msg: Any) -> Any:
    from pylog.protocol import messages as m
    R: Any = m.AlterPartitionReassignmentsResponse
    wanted = {(t.name, p.partition_index): (None if p.replicas is None else list(p.replicas))
              for t in msg.topics for p in t.partitions}
    try:
        results = controller.alter_partition_reassignments(wanted)
    except PylogError as e:
        return R(error_code=e.error_code, error_message=str(e))
    by_topic: dict[str, list[Any]] = {}
    for (t, p), error in sorted(results.items()):
        by_topic.setdefault(t, []).append(R.ReassignablePartitionResponse(
            partition_index=p, error_code=_code(error), error_message=_message(error)))
    return R(responses=[R.ReassignableTopicResponse(name=t, partitions=ps) for t, ps in by_topic.items()])


def answer_list_partition_reassignments(controller: Controller, msg: Any) -> Any:
    from pylog.protocol import messages as m
    R: Any = m.ListPartitionReassignmentsResponse
    wanted = None if msg.topics is None else [(t.name, p) for t in msg.topics for p in t.partition_indexes]
    try:
        moving = controller.list_partition_reassignments(wanted)
    except PylogError as e:
        return R(error_code=e.error_code, error_message=str(e))
    by_topic: dict[str, list[Any]] = {}
    for (t, p), a in sorted(moving.items()):
        by_topic.setdefault(t, []).append(R.OngoingPartitionReassignment(
            partition_index=p, replicas=list(a.replicas), adding_replicas=list(a.adding_replicas),
            removing_replicas=list(a.removing_replicas)))
    return R(topics=[R.OngoingTopicReassignment(name=t, partitions=ps) for t, ps in by_topic.items()])
