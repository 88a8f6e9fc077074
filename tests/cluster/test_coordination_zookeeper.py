"""What only a real ZooKeeper can show: chroots, connection loss with the session kept,
start-up against a server that is not there, and the connect string."""

from __future__ import annotations

import threading

import pytest
from kazoo.client import KazooClient, KazooState

from cluster import zk
from pylog.cluster.coordination import BrokerRegistration, EndPoint, ReplicaAssignment, TopicAssignment
from pylog.cluster.zookeeper import connect, parse_connect_string
from pylog.errors import CoordinationError

WAIT = 20.0


def registration(broker_id: int) -> BrokerRegistration:
    return BrokerRegistration(broker_id, (EndPoint("PLAINTEXT", "127.0.0.1", 9092),))


def test_chroots_isolate_clusters_and_are_created(zookeeper_server, zk_connect):
    one = connect(zk_connect + "/one")
    two = connect(zk_connect + "/two")
    raw = KazooClient(hosts=zookeeper_server.hosts)
    raw.start(timeout=WAIT)
    try:
        one.register_broker(registration(1))
        one.create_topic(TopicAssignment("t", {0: ReplicaAssignment((1,))}))
        assert one.elect_controller(1) is not None
        # The other chroot is another cluster: no broker, topic or controller of the first.
        assert two.get_live_broker_ids() == [] and two.get_topics() == [] and two.get_controller() is None
        assert two.elect_controller(7) is not None
        chroot = zk_connect.split("/", 1)[1]
        assert raw.exists(f"/{chroot}/one/brokers/ids/1") is not None
        assert raw.exists(f"/{chroot}/one/brokers/topics/t") is not None
        assert raw.get_children(f"/{chroot}/two/brokers/ids") == []
        assert raw.exists("/brokers") is None  # nothing escaped to the root
    finally:
        raw.stop()
        raw.close()
        one.close()
        two.close()


def test_a_short_zookeeper_pause_keeps_the_session(zookeeper_server, zk_connect):
    # 6 s session: kazoo notices the silence after 2/3 of it (4 s) and must be back
    # before ZooKeeper's clock reaches the full timeout.
    c = connect(zk_connect, session_timeout_ms=6000)
    try:
        c.register_broker(registration(1))
        session = c.session_id
        expired = threading.Event()
        c.add_session_listener(on_session_expired=expired.set)
        suspended, reconnected = threading.Event(), threading.Event()

        def on_state(state):
            if state == KazooState.SUSPENDED:
                suspended.set()
            elif state == KazooState.CONNECTED and suspended.is_set():
                reconnected.set()
        c.store.client.add_listener(on_state)
        with zookeeper_server.paused():
            assert suspended.wait(WAIT), "kazoo did not notice that ZooKeeper stopped answering"
        assert reconnected.wait(WAIT), "kazoo did not reconnect after ZooKeeper resumed"
        assert c.session_id == session and not expired.is_set()
        stat = c.store.exists("/brokers/ids/1")
        assert stat is not None and stat.ephemeral_owner == session
    finally:
        c.close()


def test_requests_during_a_pause_complete_after_it(zookeeper_server, zk_connect):
    c = connect(zk_connect, session_timeout_ms=10000)
    try:
        done = threading.Event()
        result = {}

        def register():
            result["epoch"] = c.register_broker(registration(2))
            done.set()
        with zookeeper_server.paused():
            worker = threading.Thread(target=register)
            worker.start()
            # ZooKeeper is frozen: the request cannot have been answered.
            assert not done.is_set()
        worker.join(WAIT)
        assert done.is_set() and c.get_broker(2).broker_epoch == result["epoch"]
    finally:
        c.close()


def test_no_zookeeper_is_a_clear_error_within_the_connection_timeout():
    with pytest.raises(CoordinationError, match="could not connect to ZooKeeper.*zookeeper.connection.timeout.ms"):
        connect(f"127.0.0.1:{zk.free_port()}", connection_timeout_ms=300)


def test_connect_string():
    assert parse_connect_string("a:2181,b:2181/kafka/prod") == ("a:2181,b:2181", "/kafka/prod")
    assert parse_connect_string("a:2181") == ("a:2181", "")
    assert parse_connect_string("a:2181/") == ("a:2181", "")
    for bad in ("/chroot", "a:2181/x//y", "a:2181/x/../y"):
        with pytest.raises(ValueError):
            parse_connect_string(bad)
