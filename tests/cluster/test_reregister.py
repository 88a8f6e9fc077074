"""A broker whose first registration on a new ZooKeeper session fails (ZooKeeper out of
reach again just after the session opened) keeps trying until it is registered: the
session survives a short disconnection, so no new session would come to retry it, and
an unregistered broker is left out of every ISR while it runs."""

from __future__ import annotations

import threading

from pylog.cluster.coordination import NodeExistsError
from pylog.cluster.node import ClusterNode
from pylog.errors import CoordinationError
from server.util import wait_for


class FlakyCoordination:
    def __init__(self, failures: list[BaseException], epoch: int = 42) -> None:
        self.failures = list(failures)
        self.epoch = epoch
        self.calls = 0
        self.lock = threading.Lock()

    def register_broker(self, registration) -> int:
        with self.lock:
            self.calls += 1
            if self.failures:
                raise self.failures.pop(0)
            return self.epoch


def node_with(coordination: FlakyCoordination) -> ClusterNode:
    node = ClusterNode.__new__(ClusterNode)       # only what re-registration reads
    node.coordination = coordination
    node.broker_id = 7
    node.broker_epoch = 1
    node._stopping = False
    node.registration = lambda: "registration of broker 7"
    return node


def test_a_failed_registration_on_a_new_session_is_retried_until_it_is_made():
    c = FlakyCoordination([CoordinationError("connection lost"), CoordinationError("connection lost")])
    node = node_with(c)
    node._reregister()
    wait_for(lambda: node.broker_epoch == 42, "broker 7 registered again")
    assert c.calls == 3


def test_an_id_held_by_another_live_broker_is_not_retried():
    c = FlakyCoordination([NodeExistsError("/brokers/ids/7 is held by session 0x2")])
    node = node_with(c)
    node._reregister()
    assert c.calls == 1 and node.broker_epoch == 1


def test_a_stopping_broker_stops_retrying():
    c = FlakyCoordination([CoordinationError("connection lost")] * 1000)
    node = node_with(c)
    node._reregister()
    wait_for(lambda: c.calls >= 2, "a retry")
    node._stopping = True
    calls = c.calls
    wait_for(lambda: not any(t.name == "pylog-zk-reregister" for t in threading.enumerate()),
             "the retry thread to end")
    assert c.calls <= calls + 1 and node.broker_epoch == 1
