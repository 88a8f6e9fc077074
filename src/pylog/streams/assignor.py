"""The streams app's group assignor: tasks placed stickily over the app's instances, with
standby replicas, plus where every instance is, so interactive queries can route a key
to its host (Kafka Streams' ``StreamsPartitionAssignor`` with its sticky task assignor).

A *task* is one sub-topology over one partition number (``<subtopology>_<partition>``,
Kafka's ``TaskId``); it holds partition ``p`` of every source topic of its
sub-topology, so co-partitioned topics stay together.  A *client* is one instance of
the app (one process id, Kafka's ``ClientState``); each of its stream threads is one
member of the group, and a client's capacity is its number of members.

Each member subscribes with ``user_data`` naming its process id, its
``application.server`` (``host:port``, or none), the tasks it ran as active and as
standby before this rebalance, and per task the sum of the changelog offsets its local
state holds (Kafka's ``SubscriptionInfo`` v7+ ``taskOffsetSums``: -2, Kafka's
``Task.LATEST_OFFSET``, for a task it runs as active).  The leader (:meth:`assign`):

1. groups members into clients by process id; a client's previous tasks and offset sums
   are the union of its members';
2. keeps each active task on the client that ran it, up to the client's share
   (``tasks * capacity / total capacity`` rounded down, or up for as many clients as
   the rounding leaves tasks over, first those that had more: clients end within one
   task of balance per thread);
3. places every other active task on the client under its share whose state is freshest
   (lag = end offset sum of the task's changelogs minus the client's offset sum; the
   instance that ran it, then the one holding its standby), else on the least loaded
   client: a join moves only the tasks the newcomer needs for balance.  A task whose
   instance is gone goes to a client whose state of it is caught up (lag at most
   ``acceptable.recovery.lag``; one with state of it first: its standby) even past
   that client's share, so a leaver's tasks go where their standbys are, at once; the
   client balance would have chosen then warms a replica up, and a probing rebalance
   (step 4) hands the task back to balance;
4. (Kafka's high-availability task movements) leaves a stateful task whose new client
   is more than ``acceptable.recovery.lag`` behind on a client that is caught up (the
   one that ran it), and gives the new client a *warm-up replica* of it (a standby
   beyond ``num.standby.replicas``; at most ``max.warmup.replicas`` in the group); the
   assignment then asks for a *probing rebalance* after
   ``probing.rebalance.interval.ms``, where the warmed-up client, caught up now, gets
   the task.  With small changelogs (at most ``acceptable.recovery.lag`` records) every
   client is caught up and tasks move at once;
5. places ``num.standby.replicas`` standbys of each stateful task (one with logged
   stores), never on the client running it nor twice on one client, preferring
   clients that held the task before, then the least loaded;
6. splits each client's active and standby tasks over its members the same way (sticky
   to the member that ran them, balanced), and gives each member the partitions of its
   active tasks.

Source topics the app does not know (another version of the topology) are placed by
Kafka's range assignor.

Every member's assignment ``user_data`` carries its active and standby tasks (warm-ups
among them), the whole map host -> partitions (active and standby) and when the next
probing rebalance is due, as Kafka Streams' ``AssignmentInfo`` (``activeTasks``,
``standbyTasks``, ``partitionsByHost``, ``standbyPartitionByHost``,
``nextRebalanceMs``).

Bytes (pylog's own, not Kafka Streams' ``SubscriptionInfo``/``AssignmentInfo``): UTF-8
JSON objects with a ``"version"`` (2).  Subscription: ``{"version": 2, "process_id":
str, "endpoint": "host:port" | null, "active_tasks": ["0_1", ...], "standby_tasks":
[...], "task_offset_sums": {"0_1": int, ...}}``.  Assignment: ``{"version": 2,
"active_tasks": [...], "standby_tasks": [...], "next_probing_rebalance_ms": int (0:
none), "partitions_by_host": [["host:port", [[topic, partition], ...]], ...],
"standby_partitions_by_host": [...]}``, only hosts with an endpoint.  A version 1
subscription (process id and endpoint only) is read as one with no previous tasks.
The protocol is named ``pylog-stream``, not Kafka Streams' ``stream``: a Java
instance joining the same group gets INCONSISTENT_GROUP_PROTOCOL instead of
undecodable user data.  A member whose user data
does not parse is a client of its own with no previous tasks and no endpoint.

Thread safety: the consumer calls it on the thread that polls; what
:meth:`on_assignment` learns (the host maps, this member's tasks) is replaced whole,
so a reader on another thread sees the old value or the new one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Set, Tuple

from pylog.client.consumer import ConsumerPartitionAssignor, assignor_for_name

__all__ = ["StreamsPartitionAssignor", "PROTOCOL_NAME", "parse_endpoint", "TaskId", "task_id_str", "parse_task_id",
           "LATEST_OFFSET", "assign_tasks", "ClientState"]

log = logging.getLogger("pylog.streams")

PROTOCOL_NAME = "pylog-stream"
_VERSION = 2
#: Kafka's ``Task.LATEST_OFFSET``: the offset sum a member reports for a task it runs as
#: active (its state is as fresh as it gets).
LATEST_OFFSET = -2
#: Kafka Streams' default ``acceptable.recovery.lag``.
ACCEPTABLE_RECOVERY_LAG = 10_000
#: Kafka Streams' default ``max.warmup.replicas``.
MAX_WARMUP_REPLICAS = 2
#: Kafka Streams' default ``probing.rebalance.interval.ms``.
PROBING_REBALANCE_INTERVAL_MS = 600_000

#: (sub-topology id, partition): Kafka's ``TaskId``.
TaskId = Tuple[int, int]


def task_id_str(task: TaskId) -> str:
    return f"{task[0]}_{task[1]}"


def parse_task_id(text: Any) -> TaskId:
    """``"<subtopology>_<partition>"`` as a TaskId; ValueError when it is not one."""
    gid, sep, partition = str(text).partition("_")
    if not sep:
        raise ValueError(f"not a task id: {text!r}")
    return int(gid), int(partition)


def parse_endpoint(endpoint: str) -> Tuple[str, int]:
    """``host:port`` (``application.server``) as ``(host, port)``; ValueError when it is
    not one."""
    host, sep, port = str(endpoint).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"application.server must be host:port, got {endpoint!r}")
    return host, int(port)


def _decode(data: Optional[bytes]) -> Dict[str, Any]:
    if not data:
        return {}
    try:
        out = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def _tasks_of(values: Any) -> Set[TaskId]:
    out = set()
    for v in values or ():
        try:
            out.add(parse_task_id(v))
        except ValueError:
            log.warning("ignoring a malformed task id in streams user data: %r", v)
    return out


class ClientState:
    """One instance of the app as the leader sees it: its members (stream threads),
    what it ran before, the offset sums of its local state, and what it gets now
    (Kafka's ``ClientState``)."""

    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        self.members: List[str] = []
        self.endpoint: Optional[str] = None
        self.prev_active_by_member: Dict[str, Set[TaskId]] = {}
        self.prev_standby_by_member: Dict[str, Set[TaskId]] = {}
        self.offset_sums: Dict[TaskId, int] = {}
        self.active: Set[TaskId] = set()
        self.standby: Set[TaskId] = set()
        #: the standbys that are warm-up replicas (of a task meant to move here)
        self.warmup: Set[TaskId] = set()

    @property
    def capacity(self) -> int:
        return max(1, len(self.members))

    @property
    def prev_active(self) -> Set[TaskId]:
        return set().union(*self.prev_active_by_member.values()) if self.prev_active_by_member else set()

    @property
    def prev_standby(self) -> Set[TaskId]:
        return set().union(*self.prev_standby_by_member.values()) if self.prev_standby_by_member else set()

    def load(self) -> float:
        return (len(self.active) + len(self.standby)) / self.capacity

    def add_member(self, member_id: str, info: Mapping[str, Any]) -> None:
        self.members.append(member_id)
        endpoint = info.get("endpoint")
        if isinstance(endpoint, str) and self.endpoint is None:
            self.endpoint = endpoint
        self.prev_active_by_member[member_id] = _tasks_of(info.get("active_tasks"))
        self.prev_standby_by_member[member_id] = _tasks_of(info.get("standby_tasks"))
        sums = info.get("task_offset_sums") or {}
        if isinstance(sums, dict):
            for text, value in sums.items():
                try:
                    task, value = parse_task_id(text), int(value)
                except (TypeError, ValueError):
                    continue
                old = self.offset_sums.get(task)
                if old is None or value == LATEST_OFFSET or (old != LATEST_OFFSET and value > old):
                    self.offset_sums[task] = value

    def has_state(self, task: TaskId) -> bool:
        return task in self.prev_active or task in self.offset_sums

    def lag(self, task: TaskId, end_sums: Mapping[TaskId, int]) -> float:
        """How far this client's state of ``task`` is behind its changelogs' end
        (0: it runs the task; with no state, the whole changelog, or infinity when the
        end is unknown)."""
        if task in self.prev_active:
            return 0
        value = self.offset_sums.get(task)
        end = end_sums.get(task)
        if value is None:
            return math.inf if end is None else end
        if value == LATEST_OFFSET:
            return 0
        # without the end, the highest sum is the freshest (the end is the same for all)
        return max(0, end - value) if end is not None else -value


def assign_tasks(clients: Mapping[str, ClientState], tasks: Iterable[TaskId], stateful: Set[TaskId],
                 num_standby_replicas: int = 0, end_sums: Optional[Mapping[TaskId, int]] = None,
                 acceptable_recovery_lag: int = ACCEPTABLE_RECOVERY_LAG,
                 max_warmup_replicas: int = MAX_WARMUP_REPLICAS) -> int:
    """Fill each client's ``active``, ``standby`` and ``warmup`` (steps 2-5 of the
    module docstring).  Returns how many task moves were put off until their
    destination is caught up (a probing rebalance is due when more than 0).
    Deterministic: the same inputs give the same placement on whichever member leads."""
    end_sums = end_sums or {}
    tasks = sorted(tasks)
    order = sorted(clients)
    if not order:
        return
    quota = _targets(len(tasks), {c: clients[c].capacity for c in order},
                     {c: len(clients[c].prev_active & set(tasks)) for c in order})
    unplaced = []
    for task in tasks:
        owner = next((c for c in order if task in clients[c].prev_active and len(clients[c].active) < quota[c]), None)
        if owner is None:
            unplaced.append(task)
        else:
            clients[owner].active.add(task)
    # tasks some client has state of first, so those clients still have room for them
    unplaced.sort(key=lambda t: (min(clients[c].lag(t, end_sums) for c in order), t))
    # (task, the client balance would have given it) of tasks placed elsewhere for now
    deferred: List[Tuple[TaskId, str]] = []
    for task in unplaced:
        room = [c for c in order if len(clients[c].active) < quota[c]]
        if not any(task in clients[c].prev_active for c in order):
            # its instance is gone: availability first, as Kafka's high-availability
            # assignor: a caught-up state (a standby) takes it even past its share
            caught = [c for c in order if clients[c].lag(task, end_sums) <= acceptable_recovery_lag]
            if caught:
                best = min(caught, key=lambda c: (not clients[c].has_state(task), c not in room,
                                                  clients[c].lag(task, end_sums),
                                                  len(clients[c].active) / clients[c].capacity, c))
                clients[best].active.add(task)
                if best not in room and room:
                    # past its share: a probing rebalance gives it back to balance later
                    deferred.append((task, min(room, key=lambda c: (len(clients[c].active) / clients[c].capacity,
                                                                    c))))
                continue
        best = min(room or order, key=lambda c: (clients[c].lag(task, end_sums), len(clients[c].active)
                                                / clients[c].capacity, c))
        clients[best].active.add(task)
    # a stateful task placed where its state is far behind stays where it is caught up,
    # and its destination warms a replica up (Kafka's task movements)
    for task in sorted(stateful & set(tasks)):
        dest = next(c for c in order if task in clients[c].active)
        if task not in end_sums or clients[dest].lag(task, end_sums) <= acceptable_recovery_lag:
            continue
        sources = [c for c in order if c != dest and clients[c].lag(task, end_sums) <= acceptable_recovery_lag]
        if not sources:
            continue
        src = min(sources, key=lambda c: (clients[c].lag(task, end_sums), clients[c].load(), c))
        clients[dest].active.discard(task)
        clients[src].active.add(task)
        deferred.append((task, dest))
    for task in sorted(stateful & set(tasks)):
        for _ in range(num_standby_replicas):
            room = [c for c in order if task not in clients[c].active and task not in clients[c].standby]
            if not room:
                break   # fewer clients than replicas: Kafka logs it and places what it can
            best = min(room, key=lambda c: (0 if task in clients[c].prev_standby or task in clients[c].prev_active
                                            else 1, clients[c].lag(task, end_sums), clients[c].load(), c))
            clients[best].standby.add(task)
    warmups = 0
    for task, dest in deferred:
        if task in clients[dest].active or task in clients[dest].standby:
            continue    # its standby there catches up anyway
        if warmups >= max_warmup_replicas:
            break
        clients[dest].standby.add(task)
        clients[dest].warmup.add(task)
        warmups += 1
    return len(deferred)


def _targets(n: int, capacity: Mapping[str, int], had: Mapping[str, int]) -> Dict[str, int]:
    """How many of ``n`` tasks each holder gets: its share by capacity, rounded down,
    and one more for as many as the rounding left over, given first to those that had
    the most beyond their share (so fewer tasks move).  Sums to ``n``."""
    total = sum(capacity.values())
    out = {c: n * capacity[c] // total for c in capacity}
    left = n - sum(out.values())
    for c in sorted(capacity, key=lambda c: (-(had.get(c, 0) - out[c]), -capacity[c], c))[:left]:
        out[c] += 1
    return out


def _split_over_members(tasks: Set[TaskId], members: List[str],
                        previous: Mapping[str, Set[TaskId]]) -> Dict[str, Set[TaskId]]:
    """A client's tasks over its members: each keeps what it had, up to its share."""
    out: Dict[str, Set[TaskId]] = {m: set() for m in members}
    if not members:
        return out
    share = _targets(len(tasks), {m: 1 for m in members}, {m: len(previous.get(m, set()) & tasks) for m in members})
    rest = []
    for task in sorted(tasks):
        owner = next((m for m in members if task in previous.get(m, ()) and len(out[m]) < share[m]), None)
        if owner is None:
            rest.append(task)
        else:
            out[owner].add(task)
    for task in rest:
        out[min(members, key=lambda m: (len(out[m]) >= share[m], len(out[m]), m))].add(task)
    return out


class StreamsPartitionAssignor(ConsumerPartitionAssignor):
    """Sticky task assignment with standby replicas, and every instance's
    ``application.server`` carried through the group; see the module docstring.

    Parameters
    ----------
    process_id, endpoint
        This instance's process id and ``application.server`` (or None).
    topic_group
        Source topic -> sub-topology id (internal topics by their full names).
    stateful_groups
        The sub-topologies with logged stores (they get standbys).
    num_standby_replicas
        Kafka's ``num.standby.replicas``.
    task_state
        ``() -> (active tasks, standby tasks, {task: offset sum})`` of this member, asked
        when it joins.
    end_offset_sums
        ``(tasks) -> {task: sum of its changelogs' end offsets}``, asked by the leader
        (None: lags are ranked by offset sums alone, and any state counts as caught up).
    acceptable_recovery_lag
        Kafka's ``acceptable.recovery.lag`` (default 10000): a state at most this far
        behind is caught up.
    max_warmup_replicas, probing_rebalance_interval_ms
        Kafka's ``max.warmup.replicas`` (default 2) and
        ``probing.rebalance.interval.ms`` (default 600000).
    """

    name = PROTOCOL_NAME

    def __init__(self, process_id: str, endpoint: Optional[str], *, topic_group: Optional[Mapping[str, int]] = None,
                 stateful_groups: Iterable[int] = (), num_standby_replicas: int = 0,
                 task_state: Optional[Callable[[], Tuple[Set[TaskId], Set[TaskId], Dict[TaskId, int]]]] = None,
                 end_offset_sums: Optional[Callable[[Set[TaskId]], Mapping[TaskId, int]]] = None,
                 acceptable_recovery_lag: int = ACCEPTABLE_RECOVERY_LAG,
                 max_warmup_replicas: int = MAX_WARMUP_REPLICAS,
                 probing_rebalance_interval_ms: int = PROBING_REBALANCE_INTERVAL_MS,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        if endpoint is not None:
            parse_endpoint(endpoint)
        if num_standby_replicas < 0:
            raise ValueError(f"num.standby.replicas is at least 0, got {num_standby_replicas}")
        self.process_id = process_id
        self.endpoint = endpoint
        self.topic_group = dict(topic_group or {})
        self.stateful_groups = set(stateful_groups)
        self.num_standby_replicas = num_standby_replicas
        self.task_state = task_state
        self.end_offset_sums = end_offset_sums
        self.acceptable_recovery_lag = acceptable_recovery_lag
        if max_warmup_replicas < 1:
            raise ValueError(f"max.warmup.replicas is at least 1, got {max_warmup_replicas}")
        self.max_warmup_replicas = max_warmup_replicas
        self.probing_rebalance_interval_ms = probing_rebalance_interval_ms
        self.clock_ms = clock_ms
        #: Wall-clock ms at which this member should rejoin so that tasks waiting for
        #: their warm-up replicas can move (a probing rebalance); 0: none due.
        self.next_probing_rebalance_ms = 0
        self._next_probe = 0
        self._range = assignor_for_name("range")
        self._by_host: Dict[str, Set[Tuple[str, int]]] = {}
        self._standby_by_host: Dict[str, Set[Tuple[str, int]]] = {}
        #: This member's tasks in the last assignment received.
        self.active_tasks: FrozenSet[TaskId] = frozenset()
        self.standby_tasks: FrozenSet[TaskId] = frozenset()
        #: Generation of the last assignment received (-1: none yet).
        self.generation_id = -1

    # -- the member's side
    def subscription_user_data(self, topics: Any, generation_id: int = -1) -> bytes:
        active: Set[TaskId] = set()
        standby: Set[TaskId] = set()
        sums: Dict[TaskId, int] = {}
        if self.task_state is not None:
            active, standby, sums = self.task_state()
        return json.dumps({"version": _VERSION, "process_id": self.process_id, "endpoint": self.endpoint,
                           "active_tasks": sorted(map(task_id_str, active)),
                           "standby_tasks": sorted(map(task_id_str, standby)),
                           "task_offset_sums": {task_id_str(t): int(v) for t, v in sorted(sums.items())}}
                          ).encode("utf-8")

    def on_assignment(self, assignment: Any, generation_id: int) -> None:
        info = _decode(assignment.user_data)
        self._by_host = self._host_map(info.get("partitions_by_host", ()))
        self._standby_by_host = self._host_map(info.get("standby_partitions_by_host", ()))
        self.active_tasks = frozenset(_tasks_of(info.get("active_tasks")))
        self.standby_tasks = frozenset(_tasks_of(info.get("standby_tasks")))
        probe = info.get("next_probing_rebalance_ms", 0)
        self.next_probing_rebalance_ms = probe if isinstance(probe, int) and probe > 0 else 0
        self.generation_id = generation_id

    @staticmethod
    def _host_map(entries: Any) -> Dict[str, Set[Tuple[str, int]]]:
        by_host: Dict[str, Set[Tuple[str, int]]] = {}
        for entry in entries or ():
            try:
                host, tps = entry
                by_host[str(host)] = {(str(t), int(p)) for t, p in tps}
            except (TypeError, ValueError):
                log.warning("ignoring a malformed host entry in the assignment: %r", entry)
        return by_host

    def partitions_by_host(self) -> Dict[str, Set[Tuple[str, int]]]:
        """``host:port`` -> the (topic, partition)s it holds as active, as of the last
        rebalance."""
        return self._by_host

    def standby_partitions_by_host(self) -> Dict[str, Set[Tuple[str, int]]]:
        """``host:port`` -> the source (topic, partition)s of the standby tasks it holds."""
        return self._standby_by_host

    # -- the leader's side
    def _tasks(self, partitions_per_topic: Mapping[str, int]) -> Dict[TaskId, List[Tuple[str, int]]]:
        """Every task and its source partitions, from the topics' partition counts."""
        counts: Dict[int, int] = {}
        for topic, gid in self.topic_group.items():
            if topic in partitions_per_topic:
                counts[gid] = max(counts.get(gid, 0), partitions_per_topic[topic])
        tasks: Dict[TaskId, List[Tuple[str, int]]] = {(gid, p): [] for gid, n in counts.items() for p in range(n)}
        for topic, gid in sorted(self.topic_group.items()):
            for p in range(partitions_per_topic.get(topic, 0)):
                tasks[(gid, p)].append((topic, p))
        return tasks

    def assign(self, partitions_per_topic: Mapping[str, int], subscriptions: Mapping[str, Any]) -> Any:
        infos = {m: _decode(s.user_data) for m, s in subscriptions.items()}
        clients: Dict[str, ClientState] = {}
        for member_id in sorted(subscriptions):
            info = infos[member_id]
            pid = info.get("process_id")
            pid = pid if isinstance(pid, str) else f"member:{member_id}"
            clients.setdefault(pid, ClientState(pid)).add_member(member_id, info)
        tasks = self._tasks(partitions_per_topic)
        stateful = {t for t in tasks if t[0] in self.stateful_groups}
        end_sums: Mapping[TaskId, int] = {}
        if stateful and self.end_offset_sums is not None:
            end_sums = self.end_offset_sums(stateful)
        deferred = assign_tasks(clients, tasks, stateful, self.num_standby_replicas, end_sums,
                                self.acceptable_recovery_lag, self.max_warmup_replicas)
        log.info("streams assignment: %s; %d task moves wait for warm-up replicas",
                 "; ".join(f"{pid}: active {sorted(map(task_id_str, c.active))} standby "
                           f"{sorted(map(task_id_str, c.standby))} (warm-up {sorted(map(task_id_str, c.warmup))})"
                           for pid, c in sorted(clients.items())), deferred)
        log.debug("streams assignment inputs: end offset sums %s; offset sums %s", end_sums,
                  {pid: c.offset_sums for pid, c in clients.items()})
        self._next_probe = self.clock_ms() + self.probing_rebalance_interval_ms if deferred else 0
        self._member_tasks: Dict[str, Tuple[Set[TaskId], Set[TaskId]]] = {}
        out: Dict[str, Dict[str, List[int]]] = {m: {} for m in subscriptions}
        for c in clients.values():
            actives = _split_over_members(c.active, c.members, c.prev_active_by_member)
            standbys = _split_over_members(c.standby, c.members, {m: c.prev_standby_by_member.get(m, set())
                                                                  | c.prev_active_by_member.get(m, set())
                                                                  for m in c.members})
            for m in c.members:
                self._member_tasks[m] = (actives[m], standbys[m])
                for task in actives[m]:
                    for topic, p in tasks[task]:
                        out[m].setdefault(topic, []).append(p)
        known = set(self.topic_group)
        unknown = {t: n for t, n in partitions_per_topic.items() if t not in known}
        if unknown:
            for m, parts in self._range.assign(unknown, subscriptions).items():
                for topic, ps in parts.items():
                    out[m].setdefault(topic, []).extend(ps)
        self._tasks_partitions = tasks
        self._clients = clients
        return {m: {t: sorted(ps) for t, ps in sorted(parts.items()) if ps} for m, parts in out.items()}

    def assignment_user_data(self, assignment: Any, subscriptions: Mapping[str, Any]) -> Mapping[str, bytes]:
        by_host: Dict[str, list] = {}
        standby_by_host: Dict[str, list] = {}
        infos = {m: _decode(s.user_data) for m, s in subscriptions.items()}
        member_tasks = getattr(self, "_member_tasks", {})
        tasks = getattr(self, "_tasks_partitions", {})
        for member_id, parts in assignment.items():
            endpoint = infos[member_id].get("endpoint")
            if not isinstance(endpoint, str):
                continue
            by_host.setdefault(endpoint, []).extend([t, p] for t, ps in sorted(parts.items()) for p in ps)
            for task in sorted(member_tasks.get(member_id, (set(), set()))[1]):
                standby_by_host.setdefault(endpoint, []).extend([t, p] for t, p in tasks.get(task, ()))
        out = {}
        for member_id in assignment:
            active, standby = member_tasks.get(member_id, (set(), set()))
            out[member_id] = json.dumps({"version": _VERSION, "active_tasks": sorted(map(task_id_str, active)),
                                         "standby_tasks": sorted(map(task_id_str, standby)),
                                         "next_probing_rebalance_ms": getattr(self, "_next_probe", 0),
                                         "partitions_by_host": sorted(by_host.items()),
                                         "standby_partitions_by_host": sorted(standby_by_host.items())}
                                        ).encode("utf-8")
        return out
