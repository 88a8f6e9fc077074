"""The controller's :class:`~pylog.cluster.channel.ControllerChannel` over the Kafka protocol.

Kafka's ControllerChannelManager: one queue and one sending thread per live broker, so
requests to a broker keep their order; each request is sent (LeaderAndIsr v7,
UpdateMetadata v8, StopReplica v4, as :mod:`pylog.cluster.channel` encodes them) through a
:class:`pylog.client.kafka.network.NetworkClient` to the broker's first endpoint, and
retried after a network error until it is answered or the broker is removed.  The answer
goes to ``on_response`` (the controller's ``handle_response``) on the sending thread.

Crash behaviour: nothing is kept; a new controller re-sends everything.

Thread safety: ``add_broker``, ``remove_broker``, ``send`` and ``close`` may be called from
any thread and never block on the network.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable

from pylog.cluster.channel import (ControllerRequest, ControllerResponse, LeaderAndIsrRequest, LiveBroker,
                                   StopReplicaRequest, UpdateMetadataRequest, leader_and_isr_to_wire,
                                   stop_replica_to_wire, update_metadata_to_wire)
from pylog.errors import PylogError, error_for_code
from pylog.protocol.apis import ApiKey

__all__ = ["WireChannel"]

_log = logging.getLogger("pylog.cluster.wire_channel")

_RETRY_BACKOFF_S = 0.1


def _to_wire(request: ControllerRequest) -> tuple[int, Any]:
    if isinstance(request, LeaderAndIsrRequest):
        return ApiKey.LEADER_AND_ISR, leader_and_isr_to_wire(request)
    if isinstance(request, UpdateMetadataRequest):
        return ApiKey.UPDATE_METADATA, update_metadata_to_wire(request)
    return ApiKey.STOP_REPLICA, stop_replica_to_wire(request)


def _from_wire(request: ControllerRequest, resp: Any) -> ControllerResponse:
    error = error_for_code(resp.error_code, None) if resp.error_code else None
    errors: dict = {}
    if isinstance(request, StopReplicaRequest):
        for p in resp.partition_errors:
            errors[(p.topic_name, p.partition_index)] = error_for_code(p.error_code, None) if p.error_code else None
        for p in request.partitions:
            errors.setdefault((p.topic, p.partition), None)
    return ControllerResponse(error, errors)


class _BrokerQueue:
    def __init__(self, channel: "WireChannel", broker: LiveBroker) -> None:
        from pylog.client.kafka.network import NetworkClient
        self.channel = channel
        self.broker = broker
        ep = broker.endpoints[0]
        self.client = NetworkClient(f"{ep.host}:{ep.port}",
                                    client_id=f"pylog-controller-{channel.controller_id}-to-{broker.broker_id}")
        self.queue: collections.deque[ControllerRequest] = collections.deque()
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"pylog-controller-send-{broker.broker_id}")
        self.thread.start()

    def put(self, request: ControllerRequest) -> None:
        with self.cond:
            self.queue.append(request)
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()
        self.client.close(timeout=0.5)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.closed:
                    self.cond.wait()
                if self.closed:
                    return
                request = self.queue[0]
            api_key, body = _to_wire(request)
            try:
                bid = self.broker.broker_id
                node = bid if self.client.cluster.node(bid) is not None else -1
                resp = self.client.send(node, api_key, body, timeout_ms=30_000).result()
            except PylogError as exc:
                _log.debug("controller request to broker %d: %s; retrying", self.broker.broker_id, exc)
                with self.cond:
                    self.cond.wait(_RETRY_BACKOFF_S)
                continue
            with self.cond:
                if self.queue and self.queue[0] is request:
                    self.queue.popleft()
            callback = self.channel.on_response
            if callback is not None:
                try:
                    callback(self.broker.broker_id, request, _from_wire(request, resp))
                except Exception:  # noqa: BLE001 - the sender must survive a handler bug
                    _log.exception("controller response handler failed")


class WireChannel:
    """A ControllerChannel that sends over the Kafka protocol (module docstring)."""

    def __init__(self, controller_id: int) -> None:
        self.controller_id = controller_id
        self.on_response: Callable[[int, ControllerRequest, ControllerResponse], None] | None = None
        self._lock = threading.Lock()
        self._queues: dict[int, _BrokerQueue] = {}

    def add_broker(self, broker: LiveBroker) -> None:
        with self._lock:
            old = self._queues.get(broker.broker_id)
            if old is not None and old.broker == broker:
                return
            self._queues[broker.broker_id] = _BrokerQueue(self, broker)
        if old is not None:
            old.close()

    def remove_broker(self, broker_id: int) -> None:
        with self._lock:
            old = self._queues.pop(broker_id, None)
        if old is not None:
            old.close()

    def send(self, broker_id: int, request: ControllerRequest) -> None:
        with self._lock:
            q = self._queues.get(broker_id)
        if q is not None:
            q.put(request)

    def close(self) -> None:
        with self._lock:
            queues = list(self._queues.values())
            self._queues.clear()
        for q in queues:
            q.close()
