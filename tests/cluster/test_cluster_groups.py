"""The group coordinator of a 3-broker cluster lives on the leader of its group's
``__consumer_offsets`` partition, a replicated cluster topic (pylog.cluster.coordinators).

A consumer group (pylog's remote client, and librdkafka) consumes and commits; the
coordinator's broker is SIGKILLed; ZooKeeper expires its session, the controller elects
another ISR member leader of the offsets partition, which loads the group from its
replica of the log; FindCoordinator names it; the same consumer goes on and commits
there, and a new member of the group starts exactly where the last commit left off: every
record is read once by the group, none twice, none lost.  The transaction coordinator
moves the same way with ``__transaction_state``: a transaction open when its
coordinator is killed ends whole, committed or aborted, and so does every other.

One cluster serves the module (``cluster``); a test that kills a broker starts it again
and the next one waits for full ISRs (``full``).  In the default run: the topic's
creation, transactions without a kill (librdkafka's and pylog's producers), and a
pylog consumer group through a SIGKILL of its coordinator; ``long``: the same with
librdkafka, with a SIGTERM, and the transaction coordinator's SIGKILL (both producers).
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time

import pytest

from cluster.test_cluster_replication import admin, create_topic, wait_metadata
from cluster.util import killed_at_exit
from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC, partition_for_group
from pylog.cluster.local import LocalCluster
from server.util import wait_for

confluent_kafka = pytest.importorskip("confluent_kafka")

SESSION_TIMEOUT_MS = 3000  # how long a SIGKILLed coordinator's broker stays registered
OFFSETS_PARTITIONS = 3
RECORDS = 200


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, zookeeper_server):
    """One 3-broker cluster for the module (each test kills a broker and brings it back),
    a topic ``t`` (2 partitions, replication factor 3) holding RECORDS records."""
    c = LocalCluster(tmp_path_factory.mktemp("groups"), 3,
                     zookeeper=f"{zookeeper_server.hosts}/pylog-groups-{os.getpid()}", overrides=[
                         f"zookeeper.session.timeout.ms={SESSION_TIMEOUT_MS}", "replica.lag.time.max.ms=3000",
                         "default.replication.factor=3", f"offsets.topic.num.partitions={OFFSETS_PARTITIONS}",
                         "group.initial.rebalance.delay.ms=0",
                         f"transaction.state.log.num.partitions={OFFSETS_PARTITIONS}"])
    with killed_at_exit(c):
        a = admin(c.bootstrap)
        wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 3, "3 registered brokers in the metadata")
        create_topic(c.bootstrap, "t", partitions=2, rf=3)
        wait_metadata(c.bootstrap, "t", lambda md, t: all(len(p.isrs) == 3 for p in t.partitions.values()),
                      "a full ISR")
        p = confluent_kafka.Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 5,
                                      "enable.idempotence": True})
        for i in range(RECORDS):
            p.produce("t", b"%d" % i, partition=i % 2)
        assert p.flush(60) == 0
        yield c


@pytest.fixture
def full(cluster):
    """The module's cluster with all three brokers up; a broker a test killed is started
    again afterwards, and the next test waits for it to be back in every ISR."""
    a = admin(cluster.bootstrap)

    def whole() -> bool:
        md = a.list_topics(timeout=5)
        return len(md.brokers) == 3 and all(len(p.isrs) == 3 for t in md.topics.values()
                                            for p in t.partitions.values())

    wait_for(whole, "3 brokers and full ISRs", timeout=60)
    yield cluster
    for i in (1, 2, 3):
        if i not in cluster.procs:
            cluster.start_broker(i)


#: What librdkafka's admin hands back as a group's DescribeGroups result where Kafka's Java
#: admin asks again (KAFKA-6789): the coordinator is still loading the group, or moved.
RETRIABLE_GROUP_ERRORS = {"COORDINATOR_LOAD_IN_PROGRESS", "COORDINATOR_NOT_AVAILABLE", "NOT_COORDINATOR"}


def coordinator_of(bootstrap: str, group: str, timeout: float = 60) -> int:
    """The coordinator FindCoordinator names (librdkafka's admin asks it, then DescribeGroups
    there), asked again until ``timeout``, each attempt by a new admin with a 5 s request
    timeout.  librdkafka retries a FindCoordinator answered COORDINATOR_NOT_AVAILABLE only
    twice, 100 ms apart (its default request retries), then waits for a broker connection
    to change state, which may not happen before the request times out (_TIMED_OUT, every
    request answered): while ``__consumer_offsets`` is created, or when the broker asked
    has not yet heard of the offsets partition's new leader.  And it returns the new
    coordinator's COORDINATOR_LOAD_IN_PROGRESS (loading the group after a failover) as the
    group's result instead of asking again."""
    def attempt() -> int | None:
        a = admin(bootstrap)        # (held: a collected client fails its futures with _DESTROY)
        try:
            described = a.describe_consumer_groups([group], request_timeout=5)[group].result(10)
        except concurrent.futures.TimeoutError:
            return None
        except confluent_kafka.KafkaException as exc:
            error = exc.args[0]
            if error.code() == confluent_kafka.KafkaError._TIMED_OUT or error.name() in RETRIABLE_GROUP_ERRORS:
                return None
            raise
        return described.coordinator.id

    return wait_for(attempt, f"the coordinator of group {group!r}", timeout=timeout, interval=0.1)


def offsets_leader(bootstrap: str, group: str) -> int:
    # Polled: the broker asked may learn the new topic's partitions a moment after another.
    _, t = wait_metadata(bootstrap, CONSUMER_OFFSETS_TOPIC, lambda md, t: True, "the offsets topic's partitions")
    return t.partitions[partition_for_group(group, len(t.partitions))].leader


def kill_coordinator(c: LocalCluster, group: str, sig: int = signal.SIGKILL) -> int:
    """Stop the group's coordinator with ``sig``; return (its id) once FindCoordinator
    names the new leader of the group's offsets partition."""
    old = coordinator_of(c.bootstrap, group)
    assert old == offsets_leader(c.bootstrap, group)
    c.stop_broker(old, sig)
    wait_metadata(c.bootstrap, CONSUMER_OFFSETS_TOPIC,
                  lambda md, t: t.partitions[partition_for_group(group, len(t.partitions))].leader not in (old, -1),
                  "a new leader of the group's offsets partition")
    new = coordinator_of(c.bootstrap, group)
    assert new not in (old, -1) and new == offsets_leader(c.bootstrap, group)
    return old


def test_offsets_topic_is_a_replicated_cluster_topic(full):
    """The first FindCoordinator creates __consumer_offsets through the controller, with
    replication factor 3, and names the leader of the group's partition."""
    coordinator = coordinator_of(full.bootstrap, "probe")
    md, t = wait_metadata(full.bootstrap, CONSUMER_OFFSETS_TOPIC,
                          lambda md, t: all(len(p.isrs) == 3 for p in t.partitions.values()), "a full ISR")
    assert len(t.partitions) == OFFSETS_PARTITIONS
    assert all(sorted(p.replicas) == [1, 2, 3] for p in t.partitions.values())
    assert coordinator == offsets_leader(full.bootstrap, "probe")


def run_transactions(c: LocalCluster, tid: str, topic: str, kill: bool) -> None:
    """Seven transactions of a librdkafka transactional producer, ten records each over
    two partitions; with ``kill`` the coordinator's broker is SIGKILLed while the fourth
    is open.  A read_committed consumer then sees each transaction whole or not at all,
    every committed one whole."""
    create_topic(c.bootstrap, topic, partitions=2, rf=3)
    wait_metadata(c.bootstrap, topic, lambda md, t: all(len(p.isrs) == 3 for p in t.partitions.values()),
                  "a full ISR")
    p = confluent_kafka.Producer({"bootstrap.servers": c.bootstrap, "transactional.id": tid,
                                  "transaction.timeout.ms": 60000, "linger.ms": 5})
    p.init_transactions(60)
    committed, aborted = [], []

    def run(i: int, kill: bool = False) -> None:
        p.begin_transaction()
        for j in range(10):
            p.produce(topic, b"%d-%d" % (i, j), partition=j % 2)
        p.flush(60)
        if kill:
            c.stop_broker(txn_coordinator_of(c.bootstrap, tid), signal.SIGKILL)
        deadline = time.monotonic() + 90
        while True:
            try:
                p.commit_transaction(30)
                committed.append(i)
                return
            except confluent_kafka.KafkaException as exc:
                err = exc.args[0]
                assert not err.fatal() and time.monotonic() < deadline, err
                if err.txn_requires_abort():
                    p.abort_transaction(60)
                    aborted.append(i)
                    return
                # retriable: the outcome is not known yet; committing again finds it

    for i in range(3):
        run(i)
    run(3, kill=kill)
    for i in range(4, 7):
        run(i)
    assert 3 in committed + aborted and len(committed) >= 6
    if not kill:
        assert committed == list(range(7))
    k = confluent_kafka.Consumer({"bootstrap.servers": c.bootstrap, "group.id": "tx-reader",
                                  "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                                  "enable.auto.commit": False})
    # Assigned, not subscribed: __consumer_offsets (replication factor 3) cannot be
    # created with a broker down, as in Kafka.
    k.assign([confluent_kafka.TopicPartition(topic, 0, 0), confluent_kafka.TopicPartition(topic, 1, 0)])
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(got) < 10 * len(committed) and time.monotonic() < deadline:
        msg = k.poll(0.2)
        if msg is not None and msg.error() is None:
            got.append(msg.value())
    assert k.poll(1.0) is None
    k.close()
    by_txn: dict[int, set] = {}
    for v in got:
        i, j = v.split(b"-")
        by_txn.setdefault(int(i), set()).add(int(j))
    assert len(got) == len(set(got))
    assert sorted(by_txn) == sorted(committed)
    assert all(js == set(range(10)) for js in by_txn.values())


def test_transactions_on_the_cluster(full):
    """Transactions through the coordinator of ``__transaction_state`` (created by the
    first FindCoordinator), with markers written by the partitions' leaders: librdkafka's
    producer, then pylog's (commits and aborts, read back read_committed)."""
    import pylog
    from pylog import TopicPartition
    run_transactions(full, "tx-plain", "tx-plain", kill=False)
    client = pylog.connect(full.bootstrap)
    try:
        p = client.producer(transactional_id="tx-pylog", linger_ms=0)
        committed: list[bytes] = []
        try:
            p.init_transactions()
            for n, outcome in enumerate(["commit", "abort", "commit"]):
                p.begin_transaction()
                values = [b"%s-%d-%d" % (outcome.encode(), n, i) for i in range(6)]
                for i, v in enumerate(values):
                    p.send("tx-plain", v, partition=i % 2)
                p.flush()
                if outcome == "commit":
                    p.commit_transaction()
                    committed += values
                else:
                    p.abort_transaction()
        finally:
            p.close()
        c = client.consumer(isolation_level="read_committed", auto_offset_reset="earliest")
        try:
            tps = [TopicPartition("tx-plain", 0), TopicPartition("tx-plain", 1)]
            c.assign(tps)
            ends = c.end_offsets(tps)
            got: list[bytes] = []
            wait_for(lambda: got.extend(r.value for r in c.poll(200)) or
                     all(c.position(tp) >= ends[tp] for tp in tps), "the partitions' ends", timeout=60)
        finally:
            c.close()
    finally:
        client.close()
    mine = [v for v in got if b"-" in v and not v[:1].isdigit()]
    assert sorted(mine) == sorted(committed)


def _values(records) -> list[bytes]:
    return [r.value for r in records]


@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.long)],
                         ids=["sigkill", "sigterm"])
def test_pylog_consumer_group_survives_a_coordinator_kill(full, sig):
    """SIGKILL: the controller elects from the ISR once ZooKeeper expires the session;
    SIGTERM: the controlled shutdown moves the offsets partition's leadership first."""
    import pylog
    c = full
    group = f"g-pylog-{signal.Signals(sig).name}"
    client = pylog.connect(c.bootstrap)
    try:
        first = client.consumer("t", group_id=group, auto_offset_reset="earliest", enable_auto_commit=False)
        seen: list[bytes] = []
        wait_for(lambda: seen.extend(_values(first.poll(timeout_ms=200, max_records=30))) or len(seen) >= 60,
                 "60 records", timeout=60)
        first.commit()
        kill_coordinator(c, group, sig)
        # The same member goes on: its next records, and a commit on the new coordinator.
        before = len(seen)
        wait_for(lambda: seen.extend(_values(first.poll(timeout_ms=200, max_records=20))) or
                 len(seen) >= before + 40, "40 more records", timeout=60)
        first.commit()
        first.close(autocommit=False)
        second = client.consumer("t", group_id=group, auto_offset_reset="earliest", enable_auto_commit=False)
        rest: list[bytes] = []
        wait_for(lambda: rest.extend(_values(second.poll(timeout_ms=200))) or len(seen) + len(rest) >= RECORDS,
                 "the rest of the records", timeout=60)
        second.close(autocommit=False)
    finally:
        client.close()
    got = seen + rest
    assert len(got) == len(set(got)) == RECORDS, (len(got), len(set(got)))


@pytest.mark.long
def test_librdkafka_group_survives_a_coordinator_kill(full):
    c = full
    group = "g-rdkafka"

    def consumer():
        k = confluent_kafka.Consumer({"bootstrap.servers": c.bootstrap, "group.id": group,
                                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                      "session.timeout.ms": 30000})
        k.subscribe(["t"])
        return k

    def take(k, count: int, into: list) -> None:
        want = len(into) + count
        deadline = time.monotonic() + 60
        while len(into) < want:
            assert time.monotonic() < deadline, f"only {len(into)} of {want} records"
            msg = k.poll(0.2)
            if msg is not None and msg.error() is None:
                into.append(msg.value())

    def commit(k) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                k.commit(asynchronous=False)
                return
            except confluent_kafka.KafkaException as exc:
                # librdkafka hands a commit that met the coordinator's move back to the app.
                assert exc.args[0].retriable() and time.monotonic() < deadline, exc

    first = consumer()
    seen: list[bytes] = []
    take(first, 60, seen)
    commit(first)
    kill_coordinator(c, group)
    take(first, 40, seen)
    commit(first)
    first.close()
    second = consumer()
    rest: list[bytes] = []
    take(second, RECORDS - len(seen), rest)
    assert second.poll(1.0) is None
    second.close()
    got = seen + rest
    assert len(got) == len(set(got)) == RECORDS


def txn_coordinator_of(bootstrap: str, transactional_id: str) -> int:
    """The leader of the id's ``__transaction_state`` partition (FindCoordinator's answer)."""
    from pylog.broker.txn_log import TRANSACTION_STATE_TOPIC, partition_for_transactional_id
    _, t = wait_metadata(bootstrap, TRANSACTION_STATE_TOPIC, lambda md, t: True, "the transaction log's partitions")
    return t.partitions[partition_for_transactional_id(transactional_id, len(t.partitions))].leader


@pytest.mark.long
def test_transactions_survive_a_coordinator_kill(full):
    """The coordinator's broker SIGKILLed with a transaction open: the new leader of the
    id's ``__transaction_state`` partition loads it, the producer goes on there, and every
    transaction ends whole."""
    run_transactions(full, "tx-kill", "tx-kill", kill=True)


@pytest.mark.long
def test_pylog_transactions_survive_a_coordinator_kill(full):
    """pylog's transactional producer: the coordinator's broker SIGKILLed with the third
    of six transactions open; its commit goes through on the new coordinator, and a
    read_committed consumer reads every transaction exactly once."""
    import pylog
    from pylog import TopicPartition
    c = full
    create_topic(c.bootstrap, "ptx", partitions=2, rf=3)
    wait_metadata(c.bootstrap, "ptx", lambda md, t: all(len(p.isrs) == 3 for p in t.partitions.values()),
                  "a full ISR")
    client = pylog.connect(c.bootstrap)
    try:
        p = client.producer(transactional_id="ptx", linger_ms=0)
        committed: list[bytes] = []
        try:
            p.init_transactions()
            for n in range(6):
                p.begin_transaction()
                values = [b"%d-%d" % (n, i) for i in range(6)]
                for i, v in enumerate(values):
                    p.send("ptx", v, partition=i % 2)
                p.flush()
                if n == 2:
                    c.stop_broker(txn_coordinator_of(c.bootstrap, "ptx"), signal.SIGKILL)
                p.commit_transaction()
                committed += values
        finally:
            p.close()
        k = client.consumer(isolation_level="read_committed", auto_offset_reset="earliest")
        try:
            tps = [TopicPartition("ptx", 0), TopicPartition("ptx", 1)]
            k.assign(tps)
            ends = k.end_offsets(tps)
            got: list[bytes] = []
            wait_for(lambda: got.extend(r.value for r in k.poll(200)) or
                     all(k.position(tp) >= ends[tp] for tp in tps), "the partitions' ends", timeout=60)
        finally:
            k.close()
    finally:
        client.close()
    assert sorted(got) == sorted(committed) and len(got) == len(set(got))
