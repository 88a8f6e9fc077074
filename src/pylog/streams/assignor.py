"""The streams app's group assignor: partitions as the range assignor places them, plus
where every instance is, so interactive queries can route a key to its host (the part
of Kafka Streams' ``StreamsPartitionAssignor`` that carries ``application.server``).

Each instance subscribes with ``user_data`` naming its process id and its
``application.server`` (``host:port``, or none); the leader assigns the partitions with
Kafka's range assignor (co-partitioned topics keep equal partition numbers on one
instance, which the runtime's tasks rely on) and sends every member the whole map,
host -> partitions, in its assignment's ``user_data``.  Every instance thus learns
after each rebalance who holds which partition, as Kafka Streams' ``AssignmentInfo``
``partitionsByHost`` tells it.

Bytes (pylog's own, not Kafka Streams' ``SubscriptionInfo``/``AssignmentInfo``): UTF-8
JSON objects with a ``"version"`` (1).  Subscription: ``{"version": 1, "process_id":
str, "endpoint": "host:port" | null}``.  Assignment: ``{"version": 1,
"partitions_by_host": [["host:port", [[topic, partition], ...]], ...]}``, only hosts
with an endpoint.  The protocol is named ``pylog-stream``, not Kafka Streams'
``stream``: a Java instance joining the same group gets INCONSISTENT_GROUP_PROTOCOL
instead of undecodable user data.  A member whose user data does not parse is assigned
partitions as usual and has no endpoint.

Thread safety: the consumer calls it on the app's thread; :meth:`partitions_by_host`
returns the map last received, replaced whole (a reader on another thread sees the old
map or the new one).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, Mapping, Optional, Set, Tuple

from pylog.client.consumer import ConsumerPartitionAssignor, assignor_for_name

__all__ = ["StreamsPartitionAssignor", "PROTOCOL_NAME", "parse_endpoint"]

log = logging.getLogger("pylog.streams")

PROTOCOL_NAME = "pylog-stream"
_VERSION = 1


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


class StreamsPartitionAssignor(ConsumerPartitionAssignor):
    """Range assignment, with every instance's ``application.server`` carried through the
    group; see the module docstring."""

    name = PROTOCOL_NAME

    def __init__(self, process_id: str, endpoint: Optional[str]) -> None:
        if endpoint is not None:
            parse_endpoint(endpoint)
        self.process_id = process_id
        self.endpoint = endpoint
        self._range = assignor_for_name("range")
        self._by_host: Dict[str, Set[Tuple[str, int]]] = {}
        #: Generation of the last assignment received (-1: none yet).
        self.generation_id = -1

    def subscription_user_data(self, topics: Any, generation_id: int = -1) -> bytes:
        return json.dumps({"version": _VERSION, "process_id": self.process_id,
                           "endpoint": self.endpoint}).encode("utf-8")

    def assign(self, partitions_per_topic: Mapping[str, int], subscriptions: Mapping[str, Any]) -> Any:
        return self._range.assign(partitions_per_topic, subscriptions)

    def assignment_user_data(self, assignment: Any, subscriptions: Mapping[str, Any]) -> Mapping[str, bytes]:
        by_host: Dict[str, list] = {}
        for member_id, parts in assignment.items():
            endpoint = _decode(subscriptions[member_id].user_data).get("endpoint")
            if not isinstance(endpoint, str):
                continue
            tps = by_host.setdefault(endpoint, [])
            tps.extend([t, p] for t, ps in sorted(parts.items()) for p in ps)
        data = json.dumps({"version": _VERSION, "partitions_by_host": sorted(by_host.items())}).encode("utf-8")
        return {member_id: data for member_id in assignment}

    def on_assignment(self, assignment: Any, generation_id: int) -> None:
        info = _decode(assignment.user_data)
        by_host: Dict[str, Set[Tuple[str, int]]] = {}
        for entry in info.get("partitions_by_host", ()):
            try:
                host, tps = entry
                by_host[str(host)] = {(str(t), int(p)) for t, p in tps}
            except (TypeError, ValueError):
                log.warning("ignoring a malformed partitions_by_host entry in the assignment: %r", entry)
        self._by_host = by_host
        self.generation_id = generation_id

    def partitions_by_host(self) -> Dict[str, Set[Tuple[str, int]]]:
        """``host:port`` -> the (topic, partition)s it holds, as of the last rebalance."""
        return self._by_host
