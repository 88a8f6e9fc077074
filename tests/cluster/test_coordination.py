"""The coordination interface on both stores: a real ZooKeeper (kazoo) and the in-memory one.

Every test here that takes ``ensemble`` runs twice, once per store, so the in-memory
store used by the controller's model tests keeps ZooKeeper's semantics: ephemeral
registrations, controller election and epoch fencing, compare-and-set of partition
state, Kafka's znode layouts, watches and session expiry.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading

import pytest

from pylog.cluster.coordination import (BrokerRegistration, ControllerEpoch, EndPoint, LeaderAndIsr, NodeExistsError,
                                        ReplicaAssignment, TopicAssignment)
from pylog.errors import (CoordinationError, CorruptCoordinationDataError, InvalidUpdateVersionError,
                          NotControllerError, TopicAlreadyExistsError)

WAIT = 20.0  # seconds a watch may take to fire on a loaded 2-core machine


class Events:
    """Watch callback values, handed from the store's thread to the test's."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()

    def __call__(self, *value) -> None:
        self.queue.put(value[0] if len(value) == 1 else value)

    def wait_for(self, predicate, what: str):
        """The first value (from now on) for which ``predicate`` holds."""
        while True:
            try:
                value = self.queue.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"no watch event with {what} within {WAIT} s") from None
            if predicate(value):
                return value


def registration(broker_id: int, rack: str | None = None) -> BrokerRegistration:
    return BrokerRegistration(broker_id, (EndPoint("PLAINTEXT", "127.0.0.1", 9090 + broker_id),
                                          EndPoint("REPLICATION", "::1", 9190 + broker_id, "SSL")),
                              rack=rack, features={"metadata.version": (1, 7)})


def new_topic(coordination, topic: str = "t", partitions: int = 2, replicas=(1, 2, 3)) -> TopicAssignment:
    assignment = TopicAssignment(topic, {p: ReplicaAssignment(tuple(replicas)) for p in range(partitions)},
                                 topic_id="AAAAAAAAAAAAAAAAAAAAAQ")
    coordination.create_topic(assignment, {"cleanup.policy": "compact"})
    return assignment


# ----------------------------------------------------------------------------- brokers

def test_registration_is_kafkas_ephemeral_broker_znode(ensemble):
    a, watcher = ensemble.connect(), ensemble.connect()
    seen = Events()
    watcher.watch_brokers(seen)
    seen.wait_for(lambda ids: ids == [], "no broker")
    epoch = a.register_broker(registration(1, rack="rack-a"))
    seen.wait_for(lambda ids: ids == [1], "broker 1 registered")

    got = watcher.get_broker(1)
    assert got == dataclasses.replace(registration(1, rack="rack-a"), timestamp_ms=got.timestamp_ms,
                                      broker_epoch=epoch)
    assert got.endpoint("REPLICATION") == EndPoint("REPLICATION", "::1", 9191, "SSL")
    data, stat = watcher.store.get("/brokers/ids/1")
    assert stat.ephemeral_owner == a.session_id
    raw = json.loads(data)
    assert raw["version"] == 5 and raw["host"] == "127.0.0.1" and raw["port"] == 9091
    assert raw["endpoints"] == ["PLAINTEXT://127.0.0.1:9091", "REPLICATION://[::1]:9191"]
    assert raw["listener_security_protocol_map"] == {"PLAINTEXT": "PLAINTEXT", "REPLICATION": "SSL"}
    assert raw["rack"] == "rack-a" and raw["jmx_port"] == -1 and isinstance(raw["timestamp"], str)
    assert raw["features"] == {"metadata.version": {"min_version": 1, "max_version": 7}}

    a.close()  # the session ends: the registration vanishes and watchers see it
    seen.wait_for(lambda ids: ids == [], "broker 1 gone after its session closed")
    assert watcher.get_broker(1) is None and watcher.get_live_brokers() == {}


def test_registration_vanishes_on_expiry_and_the_broker_registers_again(ensemble):
    a, watcher = ensemble.connect(), ensemble.connect()
    seen, changes, own = Events(), Events(), Events()
    watcher.watch_brokers(seen)
    watcher.watch_broker(1, changes)
    a.watch_topics(own)
    first_epoch = a.register_broker(registration(1))
    seen.wait_for(lambda ids: ids == [1], "broker 1 registered")
    changes.wait_for(lambda reg: reg is not None and reg.broker_epoch == first_epoch, "the first registration")

    # What the broker layer does: stop leading on expiry, register again on a new session.
    expired, renewed = threading.Event(), threading.Event()

    def reregister() -> None:
        a.register_broker(registration(1))
        renewed.set()
    a.add_session_listener(on_session_expired=expired.set, on_session_reestablished=reregister)
    old_session = a.session_id
    ensemble.expire(a)
    assert expired.wait(WAIT) and renewed.wait(WAIT)
    assert a.session_id != old_session
    # Watchers saw the old registration go and the new one (a larger broker epoch) come.
    changes.wait_for(lambda reg: reg is None, "registration gone")
    again = changes.wait_for(lambda reg: reg is not None, "registration back")
    assert again.broker_epoch > first_epoch
    assert watcher.store.exists("/brokers/ids/1").ephemeral_owner == a.session_id
    # The expired session's own watches were re-armed on the new session.
    watcher.create_topic(TopicAssignment("after", {0: ReplicaAssignment((1,))}))
    own.wait_for(lambda names: names == ["after"], "a topic created after the expiry")


def test_a_second_broker_with_the_same_id_is_refused(ensemble):
    a, b = ensemble.connect(), ensemble.connect()
    epoch = a.register_broker(registration(1))
    assert a.register_broker(registration(1)) == epoch  # our own registration: idempotent
    with pytest.raises(NodeExistsError, match="broker.id 1 is already registered"):
        b.register_broker(registration(1))
    assert b.get_broker(1).broker_epoch == epoch


# ----------------------------------------------------------------------------- controller

def test_one_controller_wins_and_the_next_wins_with_a_higher_epoch(ensemble):
    brokers = [ensemble.connect() for _ in range(3)]
    results: dict[int, ControllerEpoch | None] = {}
    barrier = threading.Barrier(3)

    def elect(broker_id: int) -> None:
        barrier.wait()
        results[broker_id] = brokers[broker_id].elect_controller(broker_id)
    threads = [threading.Thread(target=elect, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in results.items() if won is not None]
    assert len(winners) == 1, results
    winner = winners[0]
    assert results[winner].epoch == 1
    assert all(c.get_controller() == winner for c in brokers)
    assert brokers[0].get_controller_epoch() == results[winner]
    assert brokers[0].store.get("/controller_epoch")[0] == b"1"
    raw = json.loads(brokers[0].store.get("/controller")[0])
    assert raw["version"] == 1 and raw["brokerid"] == winner and isinstance(raw["timestamp"], str)
    assert brokers[winner].elect_controller(winner) == results[winner]  # asking again: same epoch

    loser = next(i for i in range(3) if i != winner)
    seen = Events()
    brokers[loser].watch_controller(seen)
    seen.wait_for(lambda cid: cid == winner, "the winner seen by a loser")
    brokers[winner].close()  # the controller dies: /controller goes with its session
    seen.wait_for(lambda cid: cid is None, "no controller")
    second = brokers[loser].elect_controller(loser)
    assert second is not None and second.epoch == 2
    seen.wait_for(lambda cid: cid == loser, "the new controller")
    third = next(i for i in range(3) if i not in (winner, loser))
    assert brokers[third].elect_controller(third) is None


def test_a_zombie_controller_cannot_write_after_a_new_one_was_elected(ensemble):
    old, new = ensemble.connect(), ensemble.connect()
    old_epoch = old.elect_controller(1)
    new_topic(old)
    state = old.create_partition_state("t", 0, LeaderAndIsr(1, 0, (1, 2, 3), old_epoch.epoch),
                                       controller_epoch=old_epoch)
    # The old controller's session expires (a long GC pause, a partition) and the other
    # broker takes over; the old one wakes up still holding its epoch.
    ensemble.expire(old)
    new_epoch = new.elect_controller(2)
    assert new_epoch == ControllerEpoch(2, old_epoch.zk_version + 1)

    zombie_write = dataclasses.replace(state, leader=2, leader_epoch=1, isr=(2, 3))
    with pytest.raises(NotControllerError, match="controller epoch 1"):
        old.update_partition_state("t", 0, zombie_write, controller_epoch=old_epoch)
    with pytest.raises(NotControllerError):
        old.set_topic_assignment(TopicAssignment("t", {0: ReplicaAssignment((9,))}), controller_epoch=old_epoch)
    with pytest.raises(NotControllerError):
        old.delete_topic("t", controller_epoch=old_epoch)
    with pytest.raises(NotControllerError):
        old.resign_controller(old_epoch)
    assert new.get_partition_state("t", 0) == state and new.get_controller() == 2
    assert new.get_topic_assignment("t").partitions[0].replicas == (1, 2, 3)

    # The live controller's write goes through, fenced by its own epoch.
    updated = new.update_partition_state("t", 0, dataclasses.replace(state, controller_epoch=2, leader_epoch=1),
                                         controller_epoch=new_epoch)
    assert updated.zk_version == state.zk_version + 1
    new.resign_controller(new_epoch)
    assert new.get_controller() is None


# ----------------------------------------------------------------------------- partition state

def test_partition_state_is_compare_and_set_on_its_zk_version(ensemble):
    controller, leader = ensemble.connect(), ensemble.connect()
    epoch = controller.elect_controller(1)
    new_topic(controller)
    created = controller.create_partition_state("t", 1, LeaderAndIsr(2, 5, (2, 3), epoch.epoch),
                                                controller_epoch=epoch)
    assert created.zk_version == 0
    raw = json.loads(controller.store.get("/brokers/topics/t/partitions/1/state")[0])
    assert raw == {"controller_epoch": 1, "leader": 2, "version": 1, "leader_epoch": 5, "isr": [2, 3]}
    with pytest.raises(NodeExistsError):
        controller.create_partition_state("t", 1, created, controller_epoch=epoch)

    # The leader shrinks the ISR (no controller epoch: Kafka 2.x leaders write directly).
    read = leader.get_partition_state("t", 1)
    assert read == created
    shrunk = leader.update_partition_state("t", 1, dataclasses.replace(read, isr=(2,)), controller_epoch=None)
    assert shrunk.zk_version == 1 and leader.get_partition_state("t", 1) == shrunk

    # The controller still holds version 0: its leader change must not clobber the shrink.
    with pytest.raises(InvalidUpdateVersionError, match="zkVersion 1, not 0"):
        controller.update_partition_state("t", 1, dataclasses.replace(read, leader=3, leader_epoch=6),
                                          controller_epoch=epoch)
    assert controller.get_partition_state("t", 1) == shrunk
    # Re-read, decide again, write.
    fresh = controller.get_partition_state("t", 1)
    moved = controller.update_partition_state("t", 1, dataclasses.replace(fresh, leader=3, leader_epoch=6, isr=(3,)),
                                              controller_epoch=epoch)
    assert (moved.leader, moved.leader_epoch, moved.isr, moved.zk_version) == (3, 6, (3,), 2)


# ----------------------------------------------------------------------------- topics and admin paths

def test_topic_assignment_layout_watch_and_deletion(ensemble):
    controller, broker = ensemble.connect(), ensemble.connect()
    epoch = controller.elect_controller(1)
    topics = Events()
    broker.watch_topics(topics)
    assignment = new_topic(controller, partitions=2)
    topics.wait_for(lambda names: names == ["t"], "topic t created")
    raw = json.loads(controller.store.get("/brokers/topics/t")[0])
    assert raw == {"version": 3, "topic_id": "AAAAAAAAAAAAAAAAAAAAAQ", "partitions": {"0": [1, 2, 3], "1": [1, 2, 3]},
                   "adding_replicas": {}, "removing_replicas": {}}
    assert broker.get_topic_assignment("t") == assignment and broker.get_topics() == ["t"]
    assert broker.get_entity_config("topics", "t") == {"cleanup.policy": "compact"}
    with pytest.raises(TopicAlreadyExistsError):
        new_topic(broker)

    changes = Events()
    broker.watch_topic_assignment("t", changes)
    moving = TopicAssignment("t", {0: ReplicaAssignment((1, 2, 3, 4), adding_replicas=(4,)),
                                   1: ReplicaAssignment((1, 2, 3))}, topic_id=assignment.topic_id)
    controller.set_topic_assignment(moving, controller_epoch=epoch)
    assert changes.wait_for(lambda a: a is not None and a.partitions[0].adding_replicas, "reassignment") == moving
    assert json.loads(controller.store.get("/brokers/topics/t")[0])["adding_replicas"] == {"0": [4]}

    controller.create_partition_state("t", 0, LeaderAndIsr(1, 0, (1, 2, 3), 1), controller_epoch=epoch)
    deletions = Events()
    controller.watch_topic_deletions(deletions)
    broker.mark_topic_for_deletion("t")
    deletions.wait_for(lambda names: names == ["t"], "deletion marker")
    controller.delete_topic("t", controller_epoch=epoch)
    topics.wait_for(lambda names: names == [], "topic t deleted")
    deletions.wait_for(lambda names: names == [], "deletion marker removed")
    assert broker.get_topic_assignment("t") is None and broker.get_partition_state("t", 0) is None
    assert broker.get_entity_config("topics", "t") == {}


def test_reassignment_preferred_election_and_isr_change_notifications(ensemble):
    controller, leader = ensemble.connect(), ensemble.connect()
    epoch = controller.elect_controller(1)

    reassignments = Events()
    controller.watch_partition_reassignment(reassignments)
    leader.create_partition_reassignment({("t", 0): [2, 3], ("u", 1): [1]})
    with pytest.raises(NodeExistsError, match="in progress"):
        leader.create_partition_reassignment({("t", 1): [1]})
    expected = {("t", 0): (2, 3), ("u", 1): (1,)}
    assert reassignments.wait_for(lambda v: v is not None, "reassignment") == expected
    assert json.loads(controller.store.get("/admin/reassign_partitions")[0]) == {
        "version": 1, "partitions": [{"topic": "t", "partition": 0, "replicas": [2, 3]},
                                     {"topic": "u", "partition": 1, "replicas": [1]}]}
    controller.delete_partition_reassignment(controller_epoch=epoch)
    reassignments.wait_for(lambda v: v is None, "reassignment done")

    leader.create_preferred_replica_election([("t", 0), ("t", 1)])
    assert controller.get_preferred_replica_election() == {("t", 0), ("t", 1)}
    controller.delete_preferred_replica_election(controller_epoch=epoch)
    assert controller.get_preferred_replica_election() is None

    notifications = Events()
    controller.watch_isr_change_notifications(notifications)
    first = leader.propagate_isr_changes([("t", 0), ("t", 1)])
    second = leader.propagate_isr_changes([("u", 1)])
    assert len(first) == 10 and first.isdigit() and second > first
    notifications.wait_for(lambda seqs: seqs == [first, second], "two notifications in order")
    assert json.loads(controller.store.get(f"/isr_change_notification/isr_change_{first}")[0]) == {
        "version": 1, "partitions": [{"topic": "t", "partition": 0}, {"topic": "t", "partition": 1}]}
    assert controller.read_isr_change_notification(second) == {("u", 1)}
    controller.delete_isr_change_notifications([first, second], controller_epoch=epoch)
    notifications.wait_for(lambda seqs: seqs == [], "notifications consumed")


def test_cluster_id_and_broker_config(ensemble):
    a, b = ensemble.connect(), ensemble.connect()
    assert a.get_or_create_cluster_id("first") == "first"
    assert b.get_or_create_cluster_id("second") == "first"
    assert json.loads(a.store.get("/cluster/id")[0]) == {"version": "1", "id": "first"}
    a.set_entity_config("brokers", 1, {"log.retention.ms": "1000"})
    a.set_entity_config("brokers", 1, {"log.retention.ms": "2000"})
    assert b.get_entity_config("brokers", 1) == {"log.retention.ms": "2000"}
    assert json.loads(a.store.get("/config/brokers/1")[0]) == {"version": 1, "config": {"log.retention.ms": "2000"}}


def test_entity_config_watch(ensemble):
    """A broker's dynamic configs (replication throttles) change without a restart."""
    admin, broker = ensemble.connect(), ensemble.connect()
    changes = Events()
    broker.watch_entity_config("brokers", 2, changes)
    changes.wait_for(lambda c: c == {}, "no config yet")
    admin.set_entity_config("brokers", 2, {"leader.replication.throttled.rate": "1000"})
    changes.wait_for(lambda c: c == {"leader.replication.throttled.rate": "1000"}, "the rate set")
    admin.set_entity_config("brokers", 2, {})
    changes.wait_for(lambda c: c == {}, "the rate removed")


# ----------------------------------------------------------------------------- hostile data

@pytest.mark.parametrize("path, read", [
    ("/brokers/ids/3", lambda c: c.get_broker(3)),
    ("/brokers/topics/bad", lambda c: c.get_topic_assignment("bad")),
    ("/brokers/topics/t/partitions/0/state", lambda c: c.get_partition_state("t", 0)),
    ("/controller", lambda c: c.get_controller()),
    ("/controller_epoch", lambda c: c.get_controller_epoch()),
    ("/config/topics/bad", lambda c: c.get_entity_config("topics", "bad")),
    ("/admin/reassign_partitions", lambda c: c.get_partition_reassignment()),
])
@pytest.mark.parametrize("garbage", [b"{not json", b"[1,2]", b'{"version":99}', b"\xff\xfe", b""])
def test_malformed_znode_data_is_a_clear_pylog_error(ensemble, path, read, garbage):
    c = ensemble.connect()
    c.store.create(path, garbage, makepath=True)
    with pytest.raises(CorruptCoordinationDataError, match=f"znode {path} holds data pylog cannot use") as info:
        read(c)
    assert isinstance(info.value, CoordinationError) and not info.value.retriable


def test_malformed_fields_and_watches_on_bad_data(ensemble, caplog):
    c = ensemble.connect()
    bad_fields = {
        "/brokers/ids/4": b'{"version":5,"endpoints":["nonsense"],"jmx_port":-1}',
        "/brokers/topics/x": b'{"version":3,"partitions":{"zero":[1]}}',
        "/brokers/topics/y": b'{"version":3,"partitions":{"0":[1,"2"]}}',
        # Digits str.isdigit() takes and int() refuses (superscript two), or that are not ASCII.
        "/brokers/topics/z": b'{"version":3,"partitions":{"\\u00b2":[1]}}',
        "/brokers/topics/v": b'{"version":"\\u00b2","partitions":{}}',
        "/brokers/topics/w": b'{"version":3,"partitions":{"\\u0663":[1]}}',
        "/brokers/ids/5": b'{"version":5,"endpoints":["PLAINTEXT://h:\\u00b2"],"jmx_port":-1}',
        "/brokers/topics/t/partitions/0/state": b'{"version":1,"leader":true,"leader_epoch":0,'
                                                b'"isr":[1],"controller_epoch":1}',
    }
    for path, data in bad_fields.items():
        c.store.create(path, data, makepath=True)
    for read in (lambda: c.get_broker(4), lambda: c.get_topic_assignment("x"), lambda: c.get_topic_assignment("y"),
                 lambda: c.get_topic_assignment("z"), lambda: c.get_topic_assignment("v"),
                 lambda: c.get_topic_assignment("w"), lambda: c.get_broker(5),
                 lambda: c.get_partition_state("t", 0)):
        with pytest.raises(CorruptCoordinationDataError):
            read()
    # A watch skips (and logs) a value it cannot decode, and keeps watching.
    seen = Events()
    with caplog.at_level(logging.ERROR, logger="pylog.cluster.coordination"):
        c.watch_topic_assignment("x", seen)
        c.store.set("/brokers/topics/x", b'{"version":3,"partitions":{"0":[7]}}')
        good = seen.wait_for(lambda a: a is not None, "a decodable assignment")
    assert good.partitions[0].replicas == (7,)
    assert "/brokers/topics/x" in caplog.text


def test_a_failing_callback_does_not_kill_the_watch(ensemble, caplog):
    a, b = ensemble.connect(), ensemble.connect()
    seen = Events()

    def callback(ids):
        seen(ids)
        if ids == [1]:
            raise RuntimeError("bug in a callback")
    with caplog.at_level(logging.ERROR, logger="pylog.cluster.coordination"):
        b.watch_brokers(callback)
        a.register_broker(registration(1))
        seen.wait_for(lambda ids: ids == [1], "broker 1")
        a.register_broker(registration(2))
        seen.wait_for(lambda ids: ids == [1, 2], "broker 2 after a failing callback")
    assert "bug in a callback" in caplog.text


def test_names_that_would_escape_their_znode_are_refused(ensemble):
    c = ensemble.connect()
    for name in ("", "a/b", "..", "."):
        with pytest.raises(ValueError):
            c.get_topic_assignment(name)
