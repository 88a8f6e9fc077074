"""SHUTDOWN_APPLICATION through the consumer group, as Kafka Streams signals it.

Kafka Streams' instance that answers SHUTDOWN_APPLICATION rejoins with error code
``SHUTDOWN_REQUESTED`` (4, Kafka's ``AssignorError``) in its ``SubscriptionInfo``; the
leader's ``StreamsPartitionAssignor`` then gives every member an ``AssignmentInfo``
with that error code, and every instance shuts down.  pylog's app assignor carries no
``SubscriptionInfo``, so :class:`ShutdownSignalAssignor` wraps whichever assignor the
app uses (same protocol name, same assignment) and adds the error code to the
``user_data`` of both the subscription and the assignment:

``int16 version (1) | int32 error_code | int8 has_inner | inner user_data``

(``has_inner`` 0: the wrapped assignor's user_data is None).  Data that does not start
with this header is handed to the wrapped assignor unchanged, with error code 0.

The requesting instance leaves the group and joins again with a fresh consumer whose
subscription carries the error code; its join makes every member rejoin, and the
leader (whoever it is) answers every member with the error code.  This needs a consumer
that asks its assignor for ``assignment_user_data`` and calls ``on_assignment`` (Kafka's
``ConsumerPartitionAssignor`` contract).

Thread safety: the consumer calls it on the app's thread; :attr:`shutdown_requested`
is a flag other threads may read.
"""

from __future__ import annotations

import struct
import threading
from typing import Any, Callable, Mapping, Optional, Tuple

from pylog.client.consumer import ConsumerPartitionAssignor

__all__ = ["ShutdownSignalAssignor", "SHUTDOWN_REQUESTED"]

#: Kafka Streams' ``AssignorError.SHUTDOWN_REQUESTED``.
SHUTDOWN_REQUESTED = 4
_HEADER = struct.Struct(">hib")
_VERSION = 1


def encode(error_code: int, inner: Optional[bytes]) -> bytes:
    return _HEADER.pack(_VERSION, error_code, 0 if inner is None else 1) + (inner or b"")


def decode(data: Optional[bytes]) -> Tuple[int, Optional[bytes]]:
    """(error code, the wrapped assignor's user_data)."""
    if data is None or len(data) < _HEADER.size:
        return 0, data
    version, code, has_inner = _HEADER.unpack_from(data)
    if version != _VERSION or has_inner not in (0, 1):
        return 0, data
    return code, bytes(data[_HEADER.size:]) if has_inner else None


class ShutdownSignalAssignor(ConsumerPartitionAssignor):
    """``inner``'s assignment, with Kafka Streams' shutdown request carried through the
    group (module docstring)."""

    def __init__(self, inner: ConsumerPartitionAssignor, on_assigned: Optional[Callable[[], None]] = None) -> None:
        self.inner = inner
        #: called after each assignment this member receives (a rebalance completed)
        self.on_assigned = on_assigned
        self.name = inner.name
        self.supported_protocols = inner.supported_protocols
        #: this member asks the group to shut down (set before it joins)
        self.error_code = 0
        #: an assignment said SHUTDOWN_REQUESTED
        self.shutdown_requested = threading.Event()

    def subscription_user_data(self, topics: Any, generation_id: int = -1) -> bytes:
        return encode(self.error_code, self.inner.subscription_user_data(topics, generation_id))

    def _unwrapped(self, subscriptions: Mapping[str, Any]) -> Tuple[int, dict]:
        code = 0
        subs = {}
        for member_id, sub in subscriptions.items():
            c, inner = decode(sub.user_data)
            code = code or (SHUTDOWN_REQUESTED if c == SHUTDOWN_REQUESTED else 0)
            subs[member_id] = sub._replace(user_data=inner)
        return code, subs

    def assign(self, partitions_per_topic: Mapping[str, int], subscriptions: Mapping[str, Any]) -> Any:
        return self.inner.assign(partitions_per_topic, self._unwrapped(subscriptions)[1])

    def assignment_user_data(self, assignment: Any, subscriptions: Mapping[str, Any]) -> Mapping[str, bytes]:
        code, subs = self._unwrapped(subscriptions)
        inner = getattr(self.inner, "assignment_user_data", None)
        data = {} if inner is None else dict(inner(assignment, subs) or {})
        return {member_id: encode(code, data.get(member_id)) for member_id in assignment}

    def on_assignment(self, assignment: Any, generation_id: int) -> None:
        code, inner_data = decode(assignment.user_data)
        if code == SHUTDOWN_REQUESTED:
            self.shutdown_requested.set()
        on_assignment = getattr(self.inner, "on_assignment", None)
        if on_assignment is not None:
            on_assignment(assignment._replace(user_data=inner_data), generation_id)
        if self.on_assigned is not None:
            self.on_assigned()
