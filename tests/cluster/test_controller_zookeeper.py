"""The controller on a real ZooKeeper (kazoo): election, topic creation, and a failover
through a real session expiry, after which the old controller's writes are fenced."""

from __future__ import annotations

import dataclasses
import queue

import pytest

from cluster.conftest import Ensemble
from pylog.cluster.channel import InProcessChannel, UpdateMetadataRequest, answer_all_ok
from pylog.cluster.controller import Controller, ZkAdmin
from pylog.cluster.coordination import BrokerRegistration, EndPoint
from pylog.errors import NotControllerError

WAIT = 20.0  # seconds a watch may take on a loaded 2-core machine


class Brokers:
    """Three brokers' sessions and controllers; their events are handled on the test's
    thread (``pump``), which waits on the queue the controllers' ``wakeup`` fills."""

    def __init__(self, ensemble: Ensemble) -> None:
        self.ensemble = ensemble
        self.events: queue.Queue = queue.Queue()
        self.sessions, self.controllers = {}, {}
        for b in (1, 2, 3):
            session = ensemble.connect(session_timeout_ms=6000)
            reg = BrokerRegistration(b, (EndPoint("PLAINTEXT", "127.0.0.1", 9090 + b),))
            session.register_broker(reg)
            session.add_session_listener(on_session_reestablished=lambda s=session, r=reg: s.register_broker(r))
            channel = InProcessChannel(answer_all_ok)
            controller = Controller(session, b, channel, wakeup=lambda: self.events.put(None))
            channel.on_response = controller.handle_response
            self.sessions[b], self.controllers[b] = session, controller
        for controller in self.controllers.values():
            controller.start()
        self.admin_session = ensemble.connect()

    def pump(self, until, what: str, paused=()) -> None:
        """Handle events (not those of the ``paused`` controllers) until ``until()``."""
        while True:
            for controller in self.controllers.values():
                if controller not in paused:
                    controller.process_events()
            if until():
                return
            try:
                self.events.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"no controller event within {WAIT} s while waiting for {what}") from None

    def active(self) -> list[Controller]:
        return [c for c in self.controllers.values() if c.is_active]

    def close(self) -> None:
        for controller in self.controllers.values():
            assert controller.event_failures == []
            controller.close()


@pytest.fixture
def brokers(zookeeper_server, zk_connect):
    ens = Ensemble("zookeeper", zk_connect, zookeeper_server)
    b = Brokers(ens)
    try:
        yield b
    finally:
        b.close()
        ens.close()


def test_failover_through_a_real_session_expiry_fences_the_old_controller(brokers):
    b = brokers
    b.pump(lambda: len(b.active()) == 1, "a controller")
    (first,) = b.active()
    zk = b.admin_session
    assert zk.get_controller() == first.broker_id and zk.get_controller_epoch().epoch == first.epoch.epoch
    ZkAdmin(zk).create_topic("t", 2, 3, assignment={0: [1, 2, 3], 1: [2, 3, 1]})
    b.pump(lambda: all(zk.get_partition_state("t", p) is not None for p in (0, 1)), "the topic's partition states")
    assert (zk.get_partition_state("t", 0).leader, zk.get_partition_state("t", 0).isr) == (1, (1, 2, 3))
    b.pump(lambda: first.partition_state("t", 1) is not None, "the controller to know the topic")
    old_epoch = first.epoch

    b.ensemble.expire(b.sessions[first.broker_id])
    # The old controller stalls (else it could win the next epoch itself, as Kafka allows).
    b.pump(lambda: len(b.active()) == 2, "another controller", paused=(first,))
    (second,) = [c for c in b.active() if c is not first]
    b.pump(lambda: not first.is_active, "the old controller to resign")
    assert zk.get_controller_epoch().epoch == old_epoch.epoch + 1 == second.epoch.epoch
    b.pump(lambda: len(zk.get_live_broker_ids()) == 3 and all(
        second.partition_state("t", p) == zk.get_partition_state("t", p) for p in (0, 1)), "the new controller's view")
    for p in (0, 1):
        state = zk.get_partition_state("t", p)
        assert state.leader in state.isr and set(state.isr) <= {1, 2, 3}
    # The new controller told the brokers who leads, in its epoch.
    ums = second.channel.requests(second.broker_id, UpdateMetadataRequest)
    assert ums and ums[0].controller_epoch == second.epoch.epoch and {s.partition for s in ums[0].partition_states} \
        == {0, 1}
    # The old controller's epoch no longer writes anything.
    stale = zk.get_partition_state("t", 0)
    with pytest.raises(NotControllerError):
        b.sessions[first.broker_id].update_partition_state(
            "t", 0, dataclasses.replace(stale, leader_epoch=stale.leader_epoch + 1), controller_epoch=old_epoch)
    assert zk.get_partition_state("t", 0) == stale


def test_broker_loss_and_controlled_shutdown_on_zookeeper(brokers):
    b = brokers
    b.pump(lambda: len(b.active()) == 1, "a controller")
    (controller,) = b.active()
    others = sorted(set(b.controllers) - {controller.broker_id})
    zk = b.admin_session
    ZkAdmin(zk).create_topic("t", 2, 2, assignment={0: [others[0], others[1]], 1: [others[1], controller.broker_id]})
    b.pump(lambda: controller.partition_state("t", 1) is not None, "the topic")
    # Controlled shutdown of others[1]: both partitions it leads or follows move off it.
    assert controller.controlled_shutdown(others[1]) == []
    assert zk.get_partition_state("t", 0).isr == (others[0],)
    assert zk.get_partition_state("t", 1).leader == controller.broker_id
    # The broker stops: its session closes, the controller sees it go; nothing goes offline.
    stopped = b.controllers.pop(others[1])
    stopped.close()
    b.sessions.pop(others[1]).close()
    b.pump(lambda: [x.broker_id for x in controller.metadata().live_brokers] == sorted(b.controllers),
           "the broker loss")
    for p in (0, 1):
        state = zk.get_partition_state("t", p)
        assert state.leader in b.controllers and others[1] not in state.isr
