"""What only a real ZooKeeper can show: chroots, connection loss with the session kept,
start-up against a server that is not there, and the connect string."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from kazoo.client import KazooClient, KazooState

from cluster import zk
from cluster.test_coordination import Events
from pylog.cluster.coordination import BrokerRegistration, EndPoint, LeaderAndIsr, ReplicaAssignment, TopicAssignment
from pylog.cluster.zookeeper import connect, parse_connect_string
from pylog.errors import CoordinationError, InvalidConfigError
from server.util import wait_for

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


def test_writes_in_flight_across_a_connection_loss_land_once(zookeeper_server, zk_connect):
    # The requests reach a frozen ZooKeeper, kazoo drops the connection (4 s of silence),
    # ZooKeeper resumes and may still apply them from the dead socket; the retry on the
    # new connection then finds them applied and must report success, not NodeExists or
    # BadVersion.
    c = connect(zk_connect, session_timeout_ms=6000)
    try:
        c.create_topic(TopicAssignment("t", {0: ReplicaAssignment((1, 2))}))
        state = c.create_partition_state("t", 0, LeaderAndIsr(1, 0, (1, 2), 1), controller_epoch=None)
        suspended = threading.Event()
        c.store.client.add_listener(lambda s: suspended.set() if s == KazooState.SUSPENDED else None)
        results: dict = {}

        def write(name, fn):
            try:
                results[name] = fn()
            except Exception as e:  # reported by the assertion below
                results[name] = e
        threads = [
            threading.Thread(target=write, args=("isr", lambda: c.update_partition_state(
                "t", 0, dataclasses.replace(state, isr=(1,)), controller_epoch=None))),
            threading.Thread(target=write, args=("broker", lambda: c.register_broker(registration(5)))),
            threading.Thread(target=write, args=("seq", lambda: c.propagate_isr_changes([("t", 0)]))),
        ]
        with zookeeper_server.paused():
            for t in threads:
                t.start()
            assert suspended.wait(WAIT), "kazoo did not notice that ZooKeeper stopped answering"
        for t in threads:
            t.join(WAIT)
        assert not any(isinstance(v, Exception) for v in results.values()), results
        assert results["isr"].zk_version == 1 and c.get_partition_state("t", 0) == results["isr"]
        assert c.get_broker(5).broker_epoch == results["broker"]
        assert c.store.exists("/brokers/ids/5").ephemeral_owner == c.session_id
        # A sequential create cannot be recognised on retry: it may land twice (Kafka's
        # ISR notifications tolerate that: the controller re-reads the partitions).
        assert results["seq"] in c.get_isr_change_notifications()
    finally:
        c.close()


def test_a_broker_cut_off_from_zookeeper_loses_its_session_and_registers_again(zookeeper_server, zk_connect):
    proxy = zk.TcpProxy(("127.0.0.1", zookeeper_server.port))
    chroot = zk_connect.split("/", 1)[1]
    watcher = connect(zk_connect)
    # The shortest session ZooKeeper allows here (2 ticks of 500 ms is 1 s): expiry is quick.
    broker = connect(f"127.0.0.1:{proxy.port}/{chroot}", session_timeout_ms=2000)
    try:
        expired, renewed = threading.Event(), threading.Event()

        def reregister():
            broker.register_broker(registration(1))
            renewed.set()
        broker.add_session_listener(on_session_expired=expired.set, on_session_reestablished=reregister)
        seen = Events()
        watcher.watch_brokers(seen)
        first_epoch = broker.register_broker(registration(1))
        seen.wait_for(lambda ids: ids == [1], "broker 1 registered")
        old_session = broker.session_id

        proxy.cut()
        # ZooKeeper expires the silent session: its registration goes, for everyone else.
        seen.wait_for(lambda ids: ids == [], "the cut-off broker's registration expired")
        # The broker does not wait to reach ZooKeeper again to hear it (Kafka's broker
        # does): suspended past the session timeout counts as expired, still cut off.
        assert expired.wait(WAIT)
        assert not renewed.is_set()
        proxy.heal()
        assert renewed.wait(WAIT)
        assert broker.session_id != old_session
        seen.wait_for(lambda ids: ids == [1], "broker 1 registered again")
        assert watcher.get_broker(1).broker_epoch > first_epoch
    finally:
        broker.close()
        watcher.close()
        proxy.close()


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
    assert parse_connect_string("a,[::1]:2182") == ("a,[::1]:2182", "")     # ZooKeeper's port by default
    for bad in ("/chroot", "a:2181/x//y", "a:2181/x/../y", "a:x", "a:0", "a:2181,:2182", "a:70000"):
        with pytest.raises(InvalidConfigError, match="zookeeper.connect"):
            parse_connect_string(bad)


def test_a_session_found_alive_after_a_local_expiry_is_ended_for_a_new_one(zookeeper_server, zk_connect):
    """The store took its session for expired (SUSPENDED for a third of the session
    timeout) and the broker gave up what it held; kazoo then reconnects to the same
    session, still alive in ZooKeeper.  The store ends that session and opens a new one,
    so the broker registers again on a session whose ephemerals match what it holds.

    Driven step by step: the store's state listener is called as kazoo calls it
    (SUSPENDED, then CONNECTED), and its suspension timer's callback is called directly,
    so no step is left to timing (the real timer, a third of 30 s, finds a later state
    and does nothing)."""
    c = connect(zk_connect, session_timeout_ms=30000)
    watcher = connect(zk_connect)
    raw = KazooClient(hosts=zookeeper_server.hosts)
    raw.start(timeout=WAIT)
    events: list[str] = []
    changed = threading.Condition()

    def note(what: str) -> None:
        with changed:
            events.append(what)
            changed.notify_all()

    def reregister() -> None:
        c.register_broker(registration(1))
        note("reestablished")

    def wait_events(n: int) -> list[str]:
        with changed:
            assert changed.wait_for(lambda: len(events) >= n, WAIT), events
            return list(events)

    try:
        c.add_session_listener(on_session_expired=lambda: note("expired"), on_session_reestablished=reregister)
        first_epoch = c.register_broker(registration(1))
        c.store.create("/before", b"x", ephemeral=True)
        old = c.session_id
        store = c.store
        store._on_state(KazooState.SUSPENDED)            # a ping went unanswered
        store._suspended_too_long(store._suspensions)     # ... and no reconnect for timeout/3
        assert wait_events(1) == ["expired"]
        # ZooKeeper never expired it: kazoo is back on the same session.
        assert c.session_id == old
        store._on_state(KazooState.CONNECTED)
        assert wait_events(2) == ["expired", "reestablished"]
        new = c.session_id
        assert new not in (0, old)
        chroot = zk_connect.split("/", 1)[1]
        data, stat = raw.get(f"/{chroot}/brokers/ids/1")
        assert stat.ephemeralOwner == new                  # registered on the new session
        assert watcher.get_broker(1).broker_epoch > first_epoch
        # The old session is gone in ZooKeeper, not only here: its ephemerals with it.
        assert raw.exists(f"/{chroot}/before") is None
        # The store works on, and one expiry was reported, not two.
        c.store.create("/after", b"x", ephemeral=True)
        assert c.store.get("/after")[1].ephemeral_owner == new
        assert events == ["expired", "reestablished"]
    finally:
        raw.stop()
        raw.close()
        watcher.close()
        c.close()


def test_a_new_session_is_opened_even_when_zookeeper_is_out_of_reach_as_the_old_one_ends(
        zookeeper_server, zk_connect, caplog):
    """As above, but ZooKeeper is out of reach again when the store ends the old session:
    the first start of a new one fails (the connection timeout), and the store keeps
    trying until ZooKeeper is back (a kazoo client whose start failed stays stopped)."""
    proxy = zk.TcpProxy(("127.0.0.1", zookeeper_server.port))
    chroot = zk_connect.split("/", 1)[1]
    c = connect(f"127.0.0.1:{proxy.port}/{chroot}", session_timeout_ms=30000, connection_timeout_ms=1000)
    renewed = threading.Event()
    try:
        c.add_session_listener(on_session_reestablished=renewed.set)
        old = c.session_id
        store = c.store
        store._on_state(KazooState.SUSPENDED)
        store._suspended_too_long(store._suspensions)
        proxy.cut()
        store._on_state(KazooState.CONNECTED)        # the reconnect that found the session alive
        with caplog.at_level("WARNING", logger="pylog.cluster.zookeeper"):
            wait_for(lambda: any("no new ZooKeeper session yet" in r.getMessage() for r in caplog.records),
                     "a failed start of the new session", timeout=WAIT)
        assert not renewed.is_set()
        proxy.heal()
        assert renewed.wait(WAIT)
        assert c.session_id not in (0, old)
        c.store.create("/back", b"x", ephemeral=True)
    finally:
        c.close()
        proxy.close()
