"""Group operations of the Kafka-protocol transport: JoinGroup, SyncGroup, Heartbeat,
LeaveGroup, OffsetCommit and OffsetFetch sent to the group's coordinator.

:class:`GroupOps` implements the group part of :class:`~pylog.client.transport.Transport`
over a :class:`~pylog.client.kafka.network.NetworkClient`, with the names, arguments and
result types of the protocol (and of the embedded transport, which calls the broker's
:class:`~pylog.broker.group.GroupCoordinator` directly).

Coordinator discovery and retries (Kafka's ``AbstractCoordinator`` rules)
    Every request goes to the group's coordinator, found with FindCoordinator and cached
    by the network client.  When the coordinator cannot be reached (a connection failure,
    a request timeout) or answers NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE or
    COORDINATOR_LOAD_IN_PROGRESS, the cached coordinator is forgotten, looked up again and
    the request repeated after ``retry_backoff_ms``, as long as ``request_timeout_ms`` from
    the call allows.  Then the last answer's error code is the result (a blocking call
    raises the last exception when there was no answer at all).  Any other error code is
    the result's, as the embedded transport gives it.

One connection per group member for JoinGroup and SyncGroup
    A broker handles one request of a connection at a time, and the coordinator holds a
    JoinGroup until the rebalance's join phase ends (and a follower's SyncGroup until the
    leader's): on one shared connection, one member's held JoinGroup would stall every
    other member of the client (their OffsetFetch, Heartbeat, SyncGroup, JoinGroup) until
    they time out.  Kafka's Java consumers each have their own network client; here the
    consumers of one client share one, so ``join_group``/``sync_group`` take a
    ``member_key`` (any hashable the consumer keeps for its life) and send on that
    member's own connection to the coordinator (``extra_connection_id(coordinator,
    slot)``, a slot per member), which follows the coordinator when it moves (the
    connection to the old one is released).  :meth:`GroupOps.release_member` (the
    consumer calls it when it leaves the group or closes) closes that connection and
    frees the slot; a JoinGroup/SyncGroup still waiting on it completes with
    NETWORK_EXCEPTION (retriable: a consumer that goes on rejoins).  Every other call
    (Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, and the admin calls) uses the
    coordinator connection shared by the client, on which nothing is held any longer;
    on the member's own connection they would queue behind that member's own held
    JoinGroup (a heartbeat racing the start of a rebalance, a LeaveGroup or commit
    during one), and one of them timing out there closes the connection and fails the
    JoinGroup too.  Without a ``member_key`` JoinGroup and SyncGroup go on the shared
    connection as well.

JoinGroup and SyncGroup do not block
    They return a :class:`~pylog.broker.group.PendingResponse` at once, completed on the
    network client's I/O thread (done callbacks run there: keep them short).  A JoinGroup
    may legitimately wait up to the group's rebalance timeout on the broker, so its request
    deadline is ``rebalance_timeout_ms`` + 5 s (at least ``request_timeout_ms``), as Kafka's
    consumer sets it; SyncGroup gets the same deadline (a follower waits for the leader's
    assignment).  A failure without an answer completes the handle with the exception's
    error code (NETWORK_EXCEPTION, REQUEST_TIMED_OUT: retriable, so the consumer rejoins).
    JoinGroup is sent at v4+ when the broker speaks it, so a new member gets
    MEMBER_ID_REQUIRED with its id and joins again with it (the consumer does that).
    ``reason`` travels in JoinGroup v8+ / LeaveGroup v5+ when pylog's codec and the broker
    speak them (pylog's codec stops at v7 / v4 today, so it is not sent).

``group_rebalancing``
    Answered from the last Heartbeat of the group (REBALANCE_IN_PROGRESS), with no request;
    a new JoinGroup or a successful SyncGroup clears it, and so does a heartbeat of an older
    generation answered after a newer one.

Threads: every method may be called from any thread.  Retries after a backoff run on one
small daemon timer thread that lives only while a retry is waiting; :meth:`GroupOps.close`
fails those at once (closing the network client fails them too, at their next attempt).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Hashable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any, Callable, Iterable, Mapping, Sequence

from pylog.broker.group import (CommitOffset, FetchedOffset, JoinGroupMember, JoinGroupResult, LeaveGroupMemberResult,
                                LeaveGroupResult, MemberIdentity, OffsetFetchResult, PendingResponse,
                                SyncGroupResult)
from pylog.client.kafka.cluster import CoordinatorType, extra_connection_id
from pylog.errors import (IllegalStateError, InvalidRequestError, NetworkError, PylogError, RequestTimedOutError,
                          UnknownServerError, UnsupportedVersionError, error_for_code)
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey

__all__ = ["GroupOps", "JOIN_GROUP_TIMEOUT_LAPSE_MS"]

_log = logging.getLogger("pylog.client.kafka.groups")

#: Added to the rebalance timeout for JoinGroup's request deadline (Kafka's consumer: 5 s).
JOIN_GROUP_TIMEOUT_LAPSE_MS = 5000

_NONE = 0
_UNKNOWN_TOPIC_OR_PARTITION = 3
_COORDINATOR_LOAD_IN_PROGRESS = 14
_COORDINATOR_NOT_AVAILABLE = 15
_NOT_COORDINATOR = 16
_INVALID_GROUP_ID = 24
_REBALANCE_IN_PROGRESS = 27
#: Answers after which the request goes to a (re)discovered coordinator.
COORDINATOR_RETRY_CODES = frozenset({_COORDINATOR_LOAD_IN_PROGRESS, _COORDINATOR_NOT_AVAILABLE, _NOT_COORDINATOR})
#: Of those, the ones that mean the cached coordinator is wrong.
_FORGET_CODES = frozenset({_COORDINATOR_NOT_AVAILABLE, _NOT_COORDINATOR})


# ----------------------------------------------------------------------------- plumbing

class _Timers:
    """Delayed calls on one daemon thread (retries after ``retry_backoff_ms``), running
    only while calls are due; after :meth:`close` the calls still waiting run at once
    (each then fails its request) and no more are taken."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_later(self, delay: float, fn: Callable[[], None]) -> bool:
        """Run ``fn`` after ``delay`` seconds; False (and nothing scheduled) when closed."""
        with self._cond:
            if self._closed:
                return False
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), fn))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if not self._heap:
                        self._thread = None     # idle: end; the next call_later starts another
                        return
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._closed:
                    pending, self._heap = self._heap, []
                    break
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:  # noqa: BLE001 - a timer thread must go on
                _log.exception("retry callback failed")
        for _, _, fn in pending:    # closed: let each waiter fail now
            try:
                fn()
            except Exception:  # noqa: BLE001
                _log.exception("retry callback failed at close")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)


class _Pending(PendingResponse):
    """A :class:`PendingResponse` completed by a network answer."""

    __slots__ = ()

    def complete(self, result: Any) -> None:
        for fn in self._set(result):
            try:
                fn(self)
            except Exception:  # noqa: BLE001 - one listener's bug must not stop the others
                _log.exception("pending group response callback failed")


def _retriable(exc: BaseException) -> bool:
    if isinstance(exc, PylogError):
        return exc.retriable or exc.error_code == _COORDINATOR_LOAD_IN_PROGRESS
    return False


def _code_of(exc: BaseException) -> int:
    """The Kafka error code a failure without an answer is reported with."""
    if isinstance(exc, PylogError):
        return exc.error_code
    return UnknownServerError.error_code


class _Member:
    """A group member's own coordinator connection: its slot, the connection ids it
    used (one, or more while the coordinator moves), and whether it was released."""

    __slots__ = ("key", "slot", "conns", "released", "_ops")

    def __init__(self, key: Hashable, slot: int, ops: GroupOps) -> None:
        self.key = key
        self.slot = slot
        self.conns: set[int] = set()
        self.released = False
        self._ops = ops

    def conn_for(self, coordinator: int) -> int:
        """The connection id to send to the coordinator ``coordinator`` on; releases the
        connection to a coordinator used before (it moved).  Raises NetworkError
        once the member was released."""
        return self._ops._member_conn(self, coordinator)


class _Caller:
    """Requests to a group's coordinator with Kafka's rediscover-and-retry loop, shared by
    :class:`GroupOps` and :class:`~pylog.client.kafka.admin_ops.AdminOps`."""

    def __init__(self, net: Any, *, request_timeout_ms: int, client_id: str, timer_name: str) -> None:
        if isinstance(request_timeout_ms, bool) or not isinstance(request_timeout_ms, int) or request_timeout_ms < 1:
            raise InvalidRequestError(f"request_timeout_ms must be an int >= 1, not {request_timeout_ms!r}")
        self.net = net
        self.request_timeout_ms = request_timeout_ms
        self.client_id = client_id
        self.retry_backoff = getattr(net.cluster, "retry_backoff", 0.1)
        self._timers = _Timers(timer_name)

    def close(self) -> None:
        """Stop retrying: requests waiting for a retry fail with IllegalStateError."""
        self._timers.close()

    # -- one request to a coordinator, retried (I/O-thread callbacks, never blocks) ------------

    def coordinator_call(self, key: str, api_key: int, body: Any, *, attempt_timeout_ms: int | None = None,
                         deadline: float | None = None, coordinator_code: Callable[[Any], int] | None = None,
                         key_type: int = CoordinatorType.GROUP, any_broker_if_invalid: bool = False,
                         version: int | None = None, member: _Member | None = None) -> Future:
        """Send ``body`` to the coordinator of ``key``; a future of the response.

        ``coordinator_code(response)`` says whether the answer is a coordinator error
        (NOT_COORDINATOR, ...): then the request is repeated at the rediscovered
        coordinator until ``deadline`` (monotonic seconds; default ``request_timeout_ms``
        from now), and the last answer is the result.  Without an answer the future fails
        with the last exception.  ``any_broker_if_invalid``: when FindCoordinator refuses
        the key (INVALID_GROUP_ID, an empty group id), ask any broker, which answers for
        the group as its coordinator would (pylog's admin calls allow the empty group).
        ``member``: send on that group member's own connection to the coordinator; once
        the member is released the call fails with NetworkError (no retry).
        """
        if deadline is None:
            deadline = time.monotonic() + self.request_timeout_ms / 1000
        attempt_timeout_ms = self.request_timeout_ms if attempt_timeout_ms is None else attempt_timeout_ms
        get_code = coordinator_code or (lambda r: getattr(r, "error_code", 0))
        outer: Future = Future()
        outer.set_running_or_notify_cancel()
        net = self.net

        def finish_exc(exc: BaseException) -> None:
            if not outer.done():
                outer.set_exception(exc)

        def retry_or_fail(exc: BaseException, last: Any = None) -> None:
            if (last is not None or _retriable(exc)) and time.monotonic() + self.retry_backoff < deadline and not net.closed:
                if self._timers.call_later(self.retry_backoff, attempt):
                    return
                exc = IllegalStateError("the client was closed while a request waited for its retry")
            if last is not None:
                outer.set_result(last)
            else:
                finish_exc(exc)

        def attempt() -> None:
            if self._timers.closed:
                finish_exc(IllegalStateError("the client was closed while a request waited for its retry"))
                return
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                finish_exc(RequestTimedOutError(f"no coordinator for {key!r} answered in time"))
                return
            try:
                f = net.find_coordinator(key, key_type, timeout_ms=min(self.request_timeout_ms, left_ms))
            except PylogError as exc:
                finish_exc(exc)
                return
            f.add_done_callback(found)

        def found(f: Future) -> None:
            exc = f.exception()
            if exc is not None:
                if any_broker_if_invalid and _code_of(exc) == _INVALID_GROUP_ID:
                    send(None)
                else:
                    retry_or_fail(exc)
                return
            send(f.result())

        def send(node: int | None) -> None:
            try:
                if node is None:
                    g = net.send_to_any(api_key, body, version=version, timeout_ms=attempt_timeout_ms)
                else:
                    target = node if member is None else member.conn_for(node)
                    g = net.send(target, api_key, body, version=version, timeout_ms=attempt_timeout_ms)
            except PylogError as exc:
                finish_exc(exc)
                return
            g.add_done_callback(lambda g: answered(node, g))

        def answered(node: int | None, g: Future) -> None:
            exc = g.exception()
            if exc is not None:
                if member is not None and member.released:   # its connection was closed on purpose
                    finish_exc(NetworkError(f"group member of {key!r} released while its request waited"))
                    return
                if node is not None and isinstance(exc, (NetworkError, RequestTimedOutError)):
                    net.cluster.invalidate_coordinator(key, key_type)
                retry_or_fail(exc)
                return
            resp = g.result()
            try:
                code = get_code(resp)
            except Exception as err:  # noqa: BLE001 - a parsing bug fails this call only
                finish_exc(err)
                return
            if code in COORDINATOR_RETRY_CODES:
                if code in _FORGET_CODES:
                    net.cluster.invalidate_coordinator(key, key_type)
                retry_or_fail(error_for_code(code, f"coordinator of {key!r}: {error_for_code(code).kafka_name}"),
                              last=resp)
                return
            outer.set_result(resp)

        attempt()
        return outer

    def wait(self, future: Future, deadline: float, attempt_timeout_ms: int | None = None) -> Any:
        """Block for ``future`` (a coordinator call that ends by itself); its result or
        its exception."""
        slack = (attempt_timeout_ms or self.request_timeout_ms) / 1000 + 5
        try:
            return future.result(max(0.0, deadline - time.monotonic()) + slack)
        except FutureTimeoutError:
            raise RequestTimedOutError("no answer in time (the network client is stuck?)") from None


def _versioned(build: Callable[[int], Any]) -> tuple[Callable[[int], Any], list[int]]:
    """``build`` as a body callable that records the version it was built for."""
    used = [-1]

    def body(version: int) -> Any:
        used[0] = version
        return build(version)
    return body, used


def _has_field(msg_cls: type, name: str) -> bool:
    return name in getattr(msg_cls, "_fields", ())


# ----------------------------------------------------------------------------- GroupOps

class GroupOps(_Caller):
    """The group operations of the Kafka-protocol transport (see the module docstring).

    Parameters
    ----------
    net : NetworkClient
    request_timeout_ms : int
        Deadline of each request, and of the retries of a call (JoinGroup: see above).
    client_id : str

    Attributes
    ----------
    on_pending_complete : callable or None
        Called (no arguments, on the I/O thread) after a JoinGroup/SyncGroup handle
        completed, so the transport can run its wake listeners.
    """

    def __init__(self, net: Any, *, request_timeout_ms: int, client_id: str) -> None:
        super().__init__(net, request_timeout_ms=request_timeout_ms, client_id=client_id,
                         timer_name=f"pylog-groups-{client_id}")
        self.on_pending_complete: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._rebalancing: dict[str, int] = {}        # group -> generation of the heartbeat that said so
        self._generation: dict[str, int] = {}         # group -> last generation joined
        self._rebalance_timeout: dict[str, int] = {}  # group -> last rebalance timeout asked for
        self._members: dict[Hashable, _Member] = {}   # member_key -> its own coordinator connection
        self._free_member_slots: list[int] = []
        self._member_slot_count = 0

    def _done(self, pending: _Pending, result: Any) -> None:
        pending.complete(result)
        hook = self.on_pending_complete
        if hook is not None:
            try:
                hook()
            except Exception:  # noqa: BLE001
                _log.exception("on_pending_complete failed")

    # ------------------------------------------------------------------ members' connections

    def _member(self, member_key: Hashable | None) -> _Member | None:
        if member_key is None:
            return None
        try:
            hash(member_key)
        except TypeError:
            raise InvalidRequestError(f"member_key must be hashable, not {type(member_key).__name__}") from None
        with self._lock:
            member = self._members.get(member_key)
            if member is None:
                if self._free_member_slots:
                    slot = heapq.heappop(self._free_member_slots)
                else:
                    self._member_slot_count += 1
                    slot = self._member_slot_count
                member = self._members[member_key] = _Member(member_key, slot, self)
            return member

    def _member_conn(self, member: _Member, coordinator: int) -> int:
        conn_id = extra_connection_id(coordinator, member.slot)
        with self._lock:
            if member.released:
                raise NetworkError("the group member's connection was released (its consumer left or closed)")
            moved = member.conns - {conn_id}
            member.conns = {conn_id}
            for old in moved:
                self.net.release(old)
        return conn_id

    def release_member(self, member_key: Hashable) -> None:
        """Close the coordinator connection of the member ``member_key`` and free its slot
        (its JoinGroup/SyncGroup still waiting fail); a later call with the key starts
        afresh.  No-op for an unknown key."""
        try:
            hash(member_key)
        except TypeError:
            return
        with self._lock:
            member = self._members.pop(member_key, None)
            if member is None:
                return
            member.released = True
            # Released before the slot is free: commands run in order on the I/O
            # thread, so the slot's next member gets a new connection.
            for conn_id in member.conns:
                self.net.release(conn_id)
            member.conns = set()
            heapq.heappush(self._free_member_slots, member.slot)

    def member_connections(self) -> dict[Hashable, set[int]]:
        """Member key -> the connection ids its JoinGroup/SyncGroup used (inspection)."""
        with self._lock:
            return {k: set(x.conns) for k, x in self._members.items()}

    # ------------------------------------------------------------------ JoinGroup

    def join_group(self, group_id: str, member_id: str, protocol_type: str,
                   protocols: Sequence[tuple[str, bytes]], *, session_timeout_ms: int,
                   rebalance_timeout_ms: int, client_id: str, group_instance_id: str | None = None,
                   reason: str | None = None,
                   member_key: Hashable | None = None) -> PendingResponse[JoinGroupResult]:
        """JoinGroup; returns at once with a pending handle (see the module docstring),
        sent on the connection of ``member_key`` when given.  Raises InvalidRequestError
        for malformed arguments only."""
        if not isinstance(group_id, str) or not isinstance(member_id, str) or not isinstance(protocol_type, str) \
                or not (group_instance_id is None or isinstance(group_instance_id, str)):
            raise InvalidRequestError("group_id, member_id, protocol_type and group_instance_id must be str")
        try:
            protos = [(name, memoryview(meta).tobytes()) for name, meta in protocols]
        except (TypeError, ValueError):
            raise InvalidRequestError("protocols must be a sequence of (name: str, metadata: bytes)") from None
        if not all(isinstance(name, str) for name, _ in protos):
            raise InvalidRequestError("protocols must be a sequence of (name: str, metadata: bytes)")
        for name, value in (("session_timeout_ms", session_timeout_ms), ("rebalance_timeout_ms", rebalance_timeout_ms)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidRequestError(f"{name} must be an int, not {value!r}")
        member = self._member(member_key)
        with self._lock:
            self._rebalancing.pop(group_id, None)     # this join is the answer to the hint
            self._rebalance_timeout[group_id] = rebalance_timeout_ms
        J: Any = m.JoinGroupRequest

        def build(version: int) -> Any:
            if group_instance_id is not None and version < 5:
                raise UnsupportedVersionError(
                    f"static membership (group_instance_id) needs JoinGroup v5+; the coordinator speaks v{version}")
            req = J(group_id=group_id, session_timeout_ms=session_timeout_ms, member_id=member_id,
                    protocol_type=protocol_type,
                    protocols=[J.JoinGroupRequestProtocol(name=n, metadata=md) for n, md in protos])
            if version >= 1:
                req.rebalance_timeout_ms = rebalance_timeout_ms
            if version >= 5:
                req.group_instance_id = group_instance_id
            if version >= 8 and reason is not None and _has_field(J, "reason"):
                req.reason = reason
            return req

        timeout_ms = max(self.request_timeout_ms, max(rebalance_timeout_ms, session_timeout_ms)
                         + JOIN_GROUP_TIMEOUT_LAPSE_MS)
        pending: _Pending = _Pending()

        def answered(f: Future) -> None:
            exc = f.exception()
            if exc is not None:
                self._done(pending, JoinGroupResult(_code_of(exc), member_id))
                return
            r = f.result()
            res = JoinGroupResult(
                r.error_code, r.member_id or (member_id if r.error_code else ""), r.generation_id,
                r.protocol_type, r.protocol_name, r.leader or "",
                [JoinGroupMember(x.member_id, x.group_instance_id, bytes(x.metadata)) for x in r.members],
                bool(getattr(r, "skip_assignment", False)))
            if res.error_code == _NONE:
                with self._lock:
                    self._generation[group_id] = res.generation_id
            self._done(pending, res)

        try:
            fut = self.coordinator_call(group_id, ApiKey.JOIN_GROUP, build, attempt_timeout_ms=timeout_ms,
                                        member=member)
        except PylogError as exc:
            self._done(pending, JoinGroupResult(_code_of(exc), member_id))
            return pending
        fut.add_done_callback(answered)
        return pending

    # ------------------------------------------------------------------ SyncGroup

    def sync_group(self, group_id: str, generation_id: int, member_id: str, *,
                   group_instance_id: str | None = None, protocol_type: str | None = None,
                   protocol_name: str | None = None, assignments: Mapping[str, bytes] | None = None,
                   member_key: Hashable | None = None) -> PendingResponse[SyncGroupResult]:
        """SyncGroup: the leader passes every member's assignment, followers none.  Returns
        at once with a pending handle; sent on the connection of ``member_key`` when
        given."""
        try:
            full = {} if assignments is None else {
                mid: b"" if v is None else memoryview(v).tobytes() for mid, v in dict(assignments).items()}
        except (TypeError, ValueError):
            raise InvalidRequestError("assignments must map member id -> bytes") from None
        member = self._member(member_key)
        S: Any = m.SyncGroupRequest

        def build(version: int) -> Any:
            if group_instance_id is not None and version < 3:
                raise UnsupportedVersionError(
                    f"static membership (group_instance_id) needs SyncGroup v3+; the coordinator speaks v{version}")
            req = S(group_id=group_id, generation_id=generation_id, member_id=member_id,
                    assignments=[S.SyncGroupRequestAssignment(member_id=k, assignment=v) for k, v in full.items()])
            if version >= 3:
                req.group_instance_id = group_instance_id
            if version >= 5:
                req.protocol_type = protocol_type
                req.protocol_name = protocol_name
            return req

        with self._lock:
            rebalance = self._rebalance_timeout.get(group_id, 0)
        timeout_ms = max(self.request_timeout_ms, rebalance + JOIN_GROUP_TIMEOUT_LAPSE_MS)
        pending: _Pending = _Pending()

        def answered(f: Future) -> None:
            exc = f.exception()
            if exc is not None:
                self._done(pending, SyncGroupResult(_code_of(exc)))
                return
            r = f.result()
            if r.error_code == _NONE:
                with self._lock:
                    gen = self._rebalancing.get(group_id)
                    if gen is not None and gen <= generation_id:
                        del self._rebalancing[group_id]
            self._done(pending, SyncGroupResult(r.error_code, r.protocol_type, r.protocol_name,
                                                bytes(r.assignment or b"")))

        try:
            fut = self.coordinator_call(group_id, ApiKey.SYNC_GROUP, build, attempt_timeout_ms=timeout_ms,
                                        member=member)
        except PylogError as exc:
            self._done(pending, SyncGroupResult(_code_of(exc)))
            return pending
        fut.add_done_callback(answered)
        return pending

    # ------------------------------------------------------------------ Heartbeat, LeaveGroup

    def heartbeat(self, group_id: str, generation_id: int, member_id: str, *,
                  group_instance_id: str | None = None) -> int:
        """Heartbeat; returns the answer's error code (blocks for the round trip).  A
        failure without an answer returns that failure's code (NETWORK_EXCEPTION,
        REQUEST_TIMED_OUT, COORDINATOR_NOT_AVAILABLE: all retriable)."""
        H: Any = m.HeartbeatRequest

        def build(version: int) -> Any:
            if group_instance_id is not None and version < 3:
                raise UnsupportedVersionError(
                    f"static membership (group_instance_id) needs Heartbeat v3+; the coordinator speaks v{version}")
            req = H(group_id=group_id, generation_id=generation_id, member_id=member_id)
            if version >= 3:
                req.group_instance_id = group_instance_id
            return req

        deadline = time.monotonic() + self.request_timeout_ms / 1000
        try:
            code = self.wait(self.coordinator_call(group_id, ApiKey.HEARTBEAT, build, deadline=deadline),
                             deadline).error_code
        except PylogError as exc:
            if isinstance(exc, IllegalStateError):
                raise
            code = _code_of(exc)
        with self._lock:
            latest = self._generation.get(group_id, -1)
            if code == _REBALANCE_IN_PROGRESS:
                if generation_id >= latest:
                    self._rebalancing[group_id] = generation_id
            elif code == _NONE:
                self._rebalancing.pop(group_id, None)
        return code

    def group_rebalancing(self, group_id: str) -> bool:
        """True when the last heartbeat of ``group_id`` was answered REBALANCE_IN_PROGRESS
        and no join has started since (no request)."""
        return group_id in self._rebalancing

    def leave_group(self, group_id: str, members: Sequence[MemberIdentity]) -> LeaveGroupResult:
        """LeaveGroup; blocks for the answer.  LeaveGroup v0-2 (old brokers) carry one
        dynamic member only."""
        deadline = time.monotonic() + self.request_timeout_ms / 1000
        try:
            return self.wait(self.leave_group_async(group_id, members), deadline)
        except RequestTimedOutError as exc:
            return LeaveGroupResult(_code_of(exc))

    def leave_group_async(self, group_id: str, members: Sequence[MemberIdentity]) -> Future:
        """:meth:`leave_group` without waiting: a future of its LeaveGroupResult (a
        failure without an answer is the result's code; IllegalStateError and
        UnsupportedVersionError are the future's exception), completed on the I/O
        thread.  A consumer's ``close(timeout=...)`` waits for it no longer than that."""
        idents = [x if isinstance(x, MemberIdentity) else MemberIdentity(x) for x in members]
        L: Any = m.LeaveGroupRequest
        body, used = _versioned(lambda version: _leave_body(L, group_id, idents, version))
        deadline = time.monotonic() + self.request_timeout_ms / 1000
        out: Future = Future()
        out.set_running_or_notify_cancel()

        def answered(f: Future) -> None:
            exc = f.exception()
            if exc is None:
                out.set_result(self._leave_result(f.result(), used[0], idents))
            elif isinstance(exc, (IllegalStateError, UnsupportedVersionError)):
                out.set_exception(exc)
            else:
                out.set_result(LeaveGroupResult(_code_of(exc)))

        self.coordinator_call(group_id, ApiKey.LEAVE_GROUP, body, deadline=deadline).add_done_callback(answered)
        return out

    @staticmethod
    def _leave_result(r: Any, version: int, idents: list[MemberIdentity]) -> LeaveGroupResult:
        if version >= 3:
            return LeaveGroupResult(r.error_code, [LeaveGroupMemberResult(x.member_id, x.group_instance_id, x.error_code)
                                                   for x in r.members])
        code = r.error_code
        if code in COORDINATOR_RETRY_CODES or code in (_INVALID_GROUP_ID, 30) or not idents:
            return LeaveGroupResult(code)
        return LeaveGroupResult(_NONE, [LeaveGroupMemberResult(idents[0].member_id, None, code)])

    # ------------------------------------------------------------------ offsets

    def commit_offsets(self, group_id: str, offsets: Mapping[str, Mapping[int, CommitOffset]], *,
                       generation_id: int = -1, member_id: str = "", group_instance_id: str | None = None,
                       retention_time_ms: int = -1) -> dict[str, dict[int, int]]:
        """OffsetCommit: topic -> partition -> error code (0: stored).  Raises the
        failure when no answer came (a network error past the retries); see
        :meth:`commit_offsets_async`."""
        deadline = time.monotonic() + self.request_timeout_ms / 1000
        return self.wait(self.commit_offsets_async(
            group_id, offsets, generation_id=generation_id, member_id=member_id,
            group_instance_id=group_instance_id, retention_time_ms=retention_time_ms), deadline)

    def commit_offsets_async(self, group_id: str, offsets: Mapping[str, Mapping[int, CommitOffset]], *,
                             generation_id: int = -1, member_id: str = "", group_instance_id: str | None = None,
                             retention_time_ms: int = -1) -> Future:
        """OffsetCommit without waiting: a future of topic -> partition -> error code (0:
        stored), completed on the I/O thread (with the failure when no answer came).  A partition that
        cannot be named on the wire (not an int) gets UNKNOWN_TOPIC_OR_PARTITION, as the
        embedded broker answers it.  ``retention_time_ms`` >= 0 is carried by OffsetCommit
        v2-4 only, so such a commit is sent at v4 (without ``group_instance_id``: a static
        member's commit with a retention is sent at the newest version, and the broker's
        retention applies).  Raises InvalidRequestError for malformed offsets (a negative
        or non-int offset, non-str metadata)."""
        request, out = _commit_request(offsets)
        done: Future = Future()
        done.set_running_or_notify_cancel()
        if not request:
            done.set_result(out)
            return done
        O: Any = m.OffsetCommitRequest
        pin_v4 = retention_time_ms is not None and retention_time_ms >= 0 and group_instance_id is None

        def build(version: int) -> Any:
            if group_instance_id is not None and version < 7:
                raise UnsupportedVersionError(
                    f"static membership (group_instance_id) needs OffsetCommit v7+; the coordinator speaks v{version}")
            req = O(group_id=group_id, topics=[O.OffsetCommitRequestTopic(name=t, partitions=[
                O.OffsetCommitRequestPartition(
                    partition_index=p, committed_offset=c.offset,
                    committed_leader_epoch=c.leader_epoch if version >= 6 else -1,
                    committed_metadata=c.metadata) for p, c in parts.items()]) for t, parts in request.items()])
            if version >= 1:
                req.generation_id_or_member_epoch = generation_id
                req.member_id = member_id
            if 2 <= version <= 4:
                req.retention_time_ms = retention_time_ms if retention_time_ms is not None else -1
            if version >= 7:
                req.group_instance_id = group_instance_id
            return req

        def coordinator_code(r: Any) -> int:
            for t in r.topics:
                for p in t.partitions:
                    if p.error_code in COORDINATOR_RETRY_CODES:
                        return p.error_code
            return _NONE

        version = None
        if pin_v4:
            version = self._pinned_version(group_id, ApiKey.OFFSET_COMMIT, 4)
        deadline = time.monotonic() + self.request_timeout_ms / 1000
        call = self.coordinator_call(group_id, ApiKey.OFFSET_COMMIT, build, deadline=deadline,
                                     coordinator_code=coordinator_code, any_broker_if_invalid=True, version=version)

        def answered(f: Future) -> None:
            exc = f.exception()
            if exc is not None:
                done.set_exception(exc)
                return
            for t in f.result().topics:
                dest = out.setdefault(t.name, {})
                for p in t.partitions:
                    dest[p.partition_index] = p.error_code
            done.set_result(out)

        call.add_done_callback(answered)
        return done

    def _pinned_version(self, group_id: str, api_key: int, wanted: int) -> int | None:
        """``wanted`` if the group's coordinator (when already connected) speaks it, else
        None (the newest)."""
        node = self.net.cluster.coordinator_for(group_id)
        versions = self.net.api_versions(node) if node is not None else None
        if versions is None:
            return wanted            # checked by the connection: UnsupportedVersionError if not
        lo, hi = versions.get(api_key, (0, -1))
        return wanted if lo <= wanted <= hi else None

    def fetch_offsets(self, group_id: str, partitions: Mapping[str, Iterable[int]] | None = None, *,
                      require_stable: bool = False) -> OffsetFetchResult:
        """OffsetFetch (v8+ with its groups array when the coordinator speaks it): the
        committed offsets (-1: none) of ``partitions`` (None: all the group has).  Raises
        the failure when no answer came (a network error past the retries)."""
        deadline = time.monotonic() + self.request_timeout_ms / 1000
        return self.wait(self.fetch_offsets_async(group_id, partitions, require_stable=require_stable), deadline)

    def fetch_offsets_async(self, group_id: str, partitions: Mapping[str, Iterable[int]] | None = None, *,
                            require_stable: bool = False) -> Future:
        """:meth:`fetch_offsets` without waiting: a future of its OffsetFetchResult,
        completed on the I/O thread (with the failure when no answer came)."""
        wanted = None if partitions is None else {t: [int(p) for p in ps] for t, ps in partitions.items()}
        F: Any = m.OffsetFetchRequest

        def build(version: int) -> Any:
            if version >= 8:
                return F(groups=[F.OffsetFetchRequestGroup(
                    group_id=group_id, topics=None if wanted is None else [
                        F.OffsetFetchRequestTopics(name=t, partition_indexes=ps) for t, ps in wanted.items()])],
                    require_stable=require_stable)
            if wanted is None and version < 2:
                raise UnsupportedVersionError("fetching all of a group's offsets needs OffsetFetch v2+")
            req = F(group_id=group_id, topics=None if wanted is None else [
                F.OffsetFetchRequestTopic(name=t, partition_indexes=ps) for t, ps in wanted.items()])
            if version >= 7:
                req.require_stable = require_stable
            return req

        body, used = _versioned(build)

        def group_code(r: Any) -> int:
            if used[0] >= 8:
                return r.groups[0].error_code if r.groups else _NONE
            if used[0] >= 2 and r.error_code:
                return r.error_code
            for t in r.topics:              # v0-1: the group's error is on every partition
                for p in t.partitions:
                    if p.error_code in COORDINATOR_RETRY_CODES:
                        return p.error_code
            return _NONE

        def result(r: Any) -> OffsetFetchResult:
            if used[0] >= 8:
                g = r.groups[0] if r.groups else None
                if g is None:
                    return OffsetFetchResult(UnknownServerError.error_code)
                return OffsetFetchResult(g.error_code, _fetched(g.topics))
            code = group_code(r)
            return OffsetFetchResult(code, {} if code else _fetched(r.topics))

        deadline = time.monotonic() + self.request_timeout_ms / 1000
        call = self.coordinator_call(group_id, ApiKey.OFFSET_FETCH, body, deadline=deadline,
                                     coordinator_code=group_code, any_broker_if_invalid=True)
        out: Future = Future()
        out.set_running_or_notify_cancel()

        def answered(f: Future) -> None:
            exc = f.exception()
            if exc is not None:
                out.set_exception(exc)
                return
            try:
                out.set_result(result(f.result()))
            except Exception as err:  # noqa: BLE001 - a parsing bug fails this call only
                out.set_exception(err)

        call.add_done_callback(answered)
        return out

    def close(self) -> None:
        super().close()
        with self._lock:
            keys = list(self._members)
        for key in keys:
            self.release_member(key)


def _leave_body(L: Any, group_id: str, idents: list[MemberIdentity], version: int) -> Any:
    if version >= 3:
        members = []
        for x in idents:
            mi = L.MemberIdentity(member_id=x.member_id, group_instance_id=x.group_instance_id)
            if version >= 5 and x.reason is not None and _has_field(L.MemberIdentity, "reason"):
                mi.reason = x.reason
            members.append(mi)
        return L(group_id=group_id, members=members)
    if len(idents) != 1 or idents[0].group_instance_id is not None:
        raise UnsupportedVersionError(
            f"LeaveGroup v{version} removes one dynamic member; several members or static ones need v3+")
    return L(group_id=group_id, member_id=idents[0].member_id)


def _fetched(topics: Any) -> dict[str, dict[int, FetchedOffset]]:
    out: dict[str, dict[int, FetchedOffset]] = {}
    for t in topics:
        dest = out.setdefault(t.name, {})
        for p in t.partitions:
            dest[p.partition_index] = FetchedOffset(
                p.committed_offset, getattr(p, "committed_leader_epoch", -1),
                (p.metadata or "") if p.committed_offset >= 0 else "", p.error_code)
    return out


def _commit_request(offsets: Any) -> tuple[dict[str, dict[int, CommitOffset]], dict[str, dict[int, int]]]:
    """The partitions to send, and those answered here (UNKNOWN_TOPIC_OR_PARTITION for a
    topic or partition that cannot be named); raises InvalidRequestError for malformed
    offsets, as the embedded broker does."""
    from pylog.broker.core import iter_commit_offsets

    request: dict[str, dict[int, CommitOffset]] = {}
    out: dict[str, dict[int, int]] = {}
    for topic, p, v in iter_commit_offsets(offsets):
        if not isinstance(topic, str) or isinstance(p, bool) or not isinstance(p, int) \
                or not -2**31 <= p < 2**31:
            out.setdefault(topic, {})[p] = _UNKNOWN_TOPIC_OR_PARTITION
            continue
        if not isinstance(v, CommitOffset):
            v = CommitOffset(v)
        off = v.offset
        if isinstance(off, bool) or not isinstance(off, int) or not 0 <= off < 2**63:
            raise InvalidRequestError(f"committed offset of {topic}-{p} must be an int >= 0, got {off!r}")
        if v.metadata is not None and not isinstance(v.metadata, str):
            raise InvalidRequestError(f"metadata of {topic!r}/{p} must be a str")
        if isinstance(v.leader_epoch, bool) or not isinstance(v.leader_epoch, int) \
                or not -2**31 <= v.leader_epoch < 2**31:
            raise InvalidRequestError(f"leader epoch of {topic!r}/{p} must be an int32")
        request.setdefault(topic, {})[p] = v
    return request, out
