"""Consumer-group partition assignors: ``range``, ``roundrobin``, ``cooperative-sticky``.

The group leader (a consumer) runs one of these over every member's
:class:`~pylog.broker.consumer_protocol.Subscription` and hands the result to the
coordinator in SyncGroup.  They give the same answers as Kafka's Java assignors of the same
name, so a group can mix pylog and Java consumers.

``assign(partitions_per_topic, subscriptions)`` takes topic -> partition count (the topics
the leader has metadata for; subscribed topics it does not know are skipped) and member_id
-> Subscription, and returns member_id -> {topic: sorted partitions} with an entry (maybe
empty) for every member.

Member order, as Kafka's ``MemberInfo``: static members (those with a
``group_instance_id``) first, by instance id, then dynamic members by member id; strings
compare as Java's ``String.compareTo`` does (UTF-16 code units).

Rack-aware assignment (KIP-881) is not done: ``rack_id`` is carried but not used.

All assignors are stateless and thread-safe.
"""

from __future__ import annotations

import abc
import struct
from collections import defaultdict
from typing import Mapping

from pylog.broker.consumer_protocol import Subscription
from pylog.errors import InvalidConfigError, InvalidRequestError

__all__ = [
    "EAGER",
    "COOPERATIVE",
    "ConsumerPartitionAssignor",
    "RangeAssignor",
    "RoundRobinAssignor",
    "CooperativeStickyAssignor",
    "assignor_for_name",
    "java_string_key",
]

#: Rebalance protocols (Kafka's ``RebalanceProtocol``): eager revokes everything before
#: rejoining; cooperative revokes only what moves, over two rebalances.
EAGER = "eager"
COOPERATIVE = "cooperative"

Assignment = dict[str, dict[str, list[int]]]


def java_string_key(s: str) -> bytes:
    """Sort key ordering strings as Java's ``String.compareTo`` (UTF-16 code units)."""
    return s.encode("utf-16-be", "surrogatepass")


def _member_order(subscriptions: Mapping[str, Subscription]) -> list[str]:
    def key(member_id: str):
        instance = subscriptions[member_id].group_instance_id
        if instance is not None:
            return (0, java_string_key(instance), java_string_key(member_id))
        return (1, java_string_key(member_id), b"")
    return sorted(subscriptions, key=key)


def _check_inputs(partitions_per_topic: Mapping[str, int],
                  subscriptions: Mapping[str, Subscription]) -> None:
    for topic, n in partitions_per_topic.items():
        if not isinstance(n, int) or n < 0:
            raise InvalidRequestError(f"topic {topic!r} has an invalid partition count {n!r}")
    for member_id, sub in subscriptions.items():
        if not isinstance(sub, Subscription):
            raise InvalidRequestError(
                f"subscription of member {member_id!r} must be a Subscription, "
                f"not {type(sub).__name__}")


def _finish(subscriptions: Mapping[str, Subscription],
            assignment: Mapping[str, Mapping[str, list[int]]]) -> Assignment:
    out: Assignment = {}
    for member_id in subscriptions:
        topics = assignment.get(member_id, {})
        out[member_id] = {t: sorted(ps) for t, ps in sorted(topics.items()) if ps}
    return out


class ConsumerPartitionAssignor(abc.ABC):
    """Interface of an assignor (Kafka's ``ConsumerPartitionAssignor``)."""

    #: Protocol name used in JoinGroup (``partition.assignment.strategy``).
    name: str = ""
    #: Rebalance protocols it supports, preferred first.
    supported_protocols: tuple[str, ...] = (EAGER,)

    def subscription_user_data(self, topics: list[str], generation_id: int = -1) -> bytes | None:
        """``user_data`` this assignor wants in the member's subscription (None: none)."""
        return None

    def assignment_user_data(self, assignment: Assignment,
                             subscriptions: Mapping[str, Subscription]) -> Mapping[str, bytes]:
        """member_id -> ``user_data`` of that member's assignment, once :meth:`assign`
        has made ``assignment`` (Kafka's assignors put it in the Assignment they
        return).  None by default."""
        return {}

    def on_assignment(self, assignment, generation_id: int) -> None:
        """Told this member's decoded assignment (``partitions`` and ``user_data``) after
        each SyncGroup, before the rebalance listener (Kafka's ``onAssignment``)."""

    @abc.abstractmethod
    def assign(self, partitions_per_topic: Mapping[str, int],
               subscriptions: Mapping[str, Subscription]) -> Assignment:
        """Assignment of every member; see the module docstring.

        Raises
        ------
        InvalidRequestError
            A partition count or subscription is malformed.
        """


class RangeAssignor(ConsumerPartitionAssignor):
    """Kafka's ``range``: per topic, the members subscribed to it (in member order) get
    contiguous ranges of partitions; the first ``num_partitions % num_members`` get one
    partition more.  Two topics with the same partition count are co-partitioned: member
    ``i`` gets the same partition numbers of both."""

    name = "range"

    def assign(self, partitions_per_topic, subscriptions):
        _check_inputs(partitions_per_topic, subscriptions)
        order = _member_order(subscriptions)
        result: dict[str, dict[str, list[int]]] = defaultdict(dict)
        topics = sorted({t for s in subscriptions.values() for t in s.topics
                         if t in partitions_per_topic}, key=java_string_key)
        for topic in topics:
            members = [m for m in order if topic in subscriptions[m].topics]
            n = partitions_per_topic[topic]
            per_member, extra = divmod(n, len(members))
            for i, member_id in enumerate(members):
                start = per_member * i + min(i, extra)
                length = per_member + (1 if i < extra else 0)
                if length:
                    result[member_id][topic] = list(range(start, start + length))
        return _finish(subscriptions, result)


class RoundRobinAssignor(ConsumerPartitionAssignor):
    """Kafka's ``roundrobin``: every partition of every subscribed topic, sorted by topic
    then partition, is dealt in turn over the members in member order; a member not
    subscribed to a partition's topic is passed over (and the turn moves on)."""

    name = "roundrobin"

    def assign(self, partitions_per_topic, subscriptions):
        _check_inputs(partitions_per_topic, subscriptions)
        order = _member_order(subscriptions)
        subscribed = {m: set(subscriptions[m].topics) for m in order}
        result: dict[str, dict[str, list[int]]] = defaultdict(dict)
        topics = sorted({t for s in subscriptions.values() for t in s.topics
                         if t in partitions_per_topic}, key=java_string_key)
        turn = 0
        for topic in topics:
            for partition in range(partitions_per_topic[topic]):
                # Some member is subscribed to every topic in `topics`, so this ends.
                while topic not in subscribed[order[turn % len(order)]]:
                    turn += 1
                member_id = order[turn % len(order)]
                turn += 1
                result[member_id].setdefault(topic, []).append(partition)
        return _finish(subscriptions, result)


_GENERATION = struct.Struct(">i")


class CooperativeStickyAssignor(ConsumerPartitionAssignor):
    """Kafka's ``cooperative-sticky``.

    Sticky: a member keeps the partitions it owns (``owned_partitions`` of its
    subscription) as long as the assignment stays balanced; only the surplus of members
    above their share moves.  Balanced: no member holds two or more partitions more than a
    member that could take one of them (with equal subscriptions: counts differ by at most
    one).

    Cooperative (KIP-429): a partition that moves from one member to another is first only
    taken away: it appears in nobody's assignment this rebalance, its old owner revokes it
    and rejoins, and the next rebalance gives it to its new owner.  So no partition is ever
    assigned to a member while another member of the same generation still owns it.

    When two members claim the same partition, the claim from the newer generation wins
    (a member that missed a rebalance still lists what it had); equal generations both lose
    the claim.  The generation comes from the subscription (v2+) or, for members that send
    older subscriptions, from the 4-byte ``user_data`` this assignor asks for, as Kafka's does.
    """

    name = "cooperative-sticky"
    supported_protocols = (COOPERATIVE, EAGER)

    def subscription_user_data(self, topics, generation_id=-1):
        return _GENERATION.pack(generation_id)

    @staticmethod
    def _generation(sub: Subscription) -> int:
        if sub.generation_id >= 0:
            return sub.generation_id
        if sub.user_data is not None and len(sub.user_data) == 4:
            return _GENERATION.unpack(sub.user_data)[0]
        return -1

    def assign(self, partitions_per_topic, subscriptions):
        _check_inputs(partitions_per_topic, subscriptions)
        target = self.sticky_assignment(partitions_per_topic, subscriptions)
        # Cooperative step: hold back a partition from its new owner while another member
        # may still own it: one that lists it and is not older than the new owner's claim.
        claims: dict[tuple[str, int], list[tuple[str, int]]] = defaultdict(list)
        for member_id, sub in subscriptions.items():
            gen = self._generation(sub)
            for topic, parts in sub.owned_partitions.items():
                for p in set(parts):
                    claims[(topic, p)].append((member_id, gen))
        result: dict[str, dict[str, list[int]]] = {}
        for member_id, topics in target.items():
            own_gen = self._generation(subscriptions[member_id])
            kept: dict[str, list[int]] = {}
            for topic, parts in topics.items():
                ok = []
                for p in parts:
                    others = [(m, g) for m, g in claims.get((topic, p), ()) if m != member_id]
                    claims_it = len(others) < len(claims.get((topic, p), ()))
                    if not others or (claims_it and all(g < own_gen for _, g in others)):
                        ok.append(p)
                if ok:
                    kept[topic] = ok
            result[member_id] = kept
        return _finish(subscriptions, result)

    def sticky_assignment(self, partitions_per_topic: Mapping[str, int],
                          subscriptions: Mapping[str, Subscription]) -> Assignment:
        """The balanced, sticky target assignment, before the cooperative hold-back (what
        an eager ``sticky`` assignor would hand out)."""
        _check_inputs(partitions_per_topic, subscriptions)
        order = _member_order(subscriptions)
        rank = {m: i for i, m in enumerate(order)}
        eligible_topics = {m: {t for t in subscriptions[m].topics if t in partitions_per_topic}
                           for m in order}
        subscribers: dict[str, list[str]] = defaultdict(list)
        for m in order:
            for t in eligible_topics[m]:
                subscribers[t].append(m)
        all_partitions = [(t, p) for t in sorted(subscribers, key=java_string_key)
                          for p in range(partitions_per_topic[t])]

        # 1. Valid claims: partition exists, claimant still subscribed; newest generation wins.
        best: dict[tuple[str, int], tuple[int, list[str]]] = {}
        for m in order:
            gen = self._generation(subscriptions[m])
            for topic, parts in subscriptions[m].owned_partitions.items():
                if topic not in eligible_topics[m]:
                    continue
                for p in set(parts):
                    if not 0 <= p < partitions_per_topic[topic]:
                        continue
                    cur = best.get((topic, p))
                    if cur is None or gen > cur[0]:
                        best[(topic, p)] = (gen, [m])
                    elif gen == cur[0]:
                        cur[1].append(m)
        owned: dict[str, set[tuple[str, int]]] = {m: set() for m in order}
        for tp, (_, claimants) in best.items():
            if len(claimants) == 1:
                owned[claimants[0]].add(tp)

        assigned = {m: set(owned[m]) for m in order}
        taken = set().union(*assigned.values()) if assigned else set()

        # 2. Unowned partitions go to the least loaded eligible member; partitions with
        #    the fewest possible owners are placed first so they are not squeezed out.
        free = [tp for tp in all_partitions if tp not in taken]
        free.sort(key=lambda tp: (len(subscribers[tp[0]]), java_string_key(tp[0]), tp[1]))
        for tp in free:
            m = min(subscribers[tp[0]], key=lambda c: (len(assigned[c]), rank[c]))
            assigned[m].add(tp)

        # 3. Balance: move partitions from a member to one that holds at least two fewer
        #    and may take them.  Each move lowers the sum of squared counts, so this ends.
        #    Partitions the donor did not own before move first (that costs no revocation).
        moved = True
        while moved:
            moved = False
            for donor in sorted(order, key=lambda c: (-len(assigned[c]), rank[c])):
                candidates = sorted(
                    assigned[donor],
                    key=lambda tp: (tp in owned[donor], java_string_key(tp[0]), -tp[1]))
                lightest: dict[str, str] = {}
                for tp in candidates:
                    topic = tp[0]
                    receiver = lightest.get(topic)
                    if receiver is None:
                        receiver = min(subscribers[topic], key=lambda c: (len(assigned[c]), rank[c]))
                        lightest[topic] = receiver
                    if len(assigned[donor]) > len(assigned[receiver]) + 1:
                        assigned[donor].discard(tp)
                        assigned[receiver].add(tp)
                        moved = True
                        break
                if moved:
                    break

        result: dict[str, dict[str, list[int]]] = defaultdict(dict)
        for m in order:
            for topic, p in assigned[m]:
                result[m].setdefault(topic, []).append(p)
        return _finish(subscriptions, result)


_ASSIGNORS = {a.name: a for a in (RangeAssignor, RoundRobinAssignor, CooperativeStickyAssignor)}


def assignor_for_name(name: str) -> ConsumerPartitionAssignor:
    """A new assignor for a protocol name (``range``, ``roundrobin``, ``cooperative-sticky``).

    Raises
    ------
    InvalidConfigError
        The name is not a known assignor.
    """
    cls = _ASSIGNORS.get(name)
    if cls is None:
        raise InvalidConfigError(
            f"unknown partition assignor {name!r}; pylog has {sorted(_ASSIGNORS)}")
    return cls()
