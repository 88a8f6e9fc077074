"""Process and network faults on a real 3-broker cluster (``pylog serve --zookeeper``
subprocesses on the test's ZooKeeper), every link through :mod:`cluster.proxy`:

- a leader frozen with SIGSTOP until it has been replaced, then woken with SIGCONT: the
  zombie does not acknowledge the acks=all produce that waited in its socket, it learns
  the new epoch, truncates what it appended alone, and its log ends up identical to the
  other replicas', batch by batch with the epochs they were written in;
- a leader cut off from ZooKeeper (its ZooKeeper proxy holds every byte): the controller
  elects another leader when the session expires, the cut-off broker acknowledges
  nothing meanwhile, and when the link heals it finds its session expired, stops
  leading, registers again (a new broker epoch) and rejoins the ISR;
- a broker cut off from its peers but not from clients or ZooKeeper: the ISR shrinks
  without it, acks=all with min.insync.replicas=2 goes on with two replicas and is
  refused (NOT_ENOUGH_REPLICAS) when only the leader is left; it catches up when healed;
- one-way loss (the leader's answers to one follower are discarded): that follower
  leaves the ISR, produce goes on, and it comes back once the link heals;
- a leader SIGKILLed and started again at once, before ZooKeeper expired its previous
  session: it waits for its old registration to go, registers and rejoins the ISR.

Each test ends by comparing the replicas' log files (:mod:`cluster.jepsen`). (Their
``leader-epoch-checkpoint`` files are not compared: a new epoch reaches the file at the
next flush, so a live replica's file may lag its memory.)
"""

from __future__ import annotations

import os
import signal
import socket

import pytest

from cluster.jepsen import replica_log
from cluster.proxy import ProxiedCluster
from cluster.test_cluster_replication import admin, create_topic, wait_metadata
from pylog.protocol import messages as m
from pylog.protocol.codec import decode_response, encode_request
from pylog.protocol.segments import segments_to_bytes
from pylog.records import RecordBatchBuilder
from server.util import read_frame, wait_for

confluent_kafka = pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.long  # 10-20 s each with the cluster start: session expiries, ISR timeouts

SESSION_TIMEOUT_MS = 4000
OVERRIDES = [f"zookeeper.session.timeout.ms={SESSION_TIMEOUT_MS}", "replica.lag.time.max.ms=2000",
             "default.replication.factor=3"]


@pytest.fixture
def cluster(tmp_path, zk_connect):
    with ProxiedCluster(tmp_path, zk_connect, 3, OVERRIDES) as c:
        a = admin(c.bootstrap)
        wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 3, "3 registered brokers in the metadata")
        yield c


def producer(bootstrap: str, **conf):
    return confluent_kafka.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                     "linger.ms": 2, "message.timeout.ms": 60000, **conf})


def produce_acked(bootstrap: str, topic: str, values: list[bytes], **conf) -> list:
    """Send ``values`` to partition 0; the delivery reports' errors (None: acknowledged)."""
    errors = []
    p = producer(bootstrap, **conf)
    for v in values:
        p.produce(topic, v, partition=0, on_delivery=lambda err, msg: errors.append(err))
    p.flush(90)
    return errors


def full_isr(c: ProxiedCluster, topic: str):
    """Partition 0 of ``topic`` once it has a leader and a full ISR in every broker's
    own metadata (each asked directly, past the proxies).  The cluster's answer alone is
    not enough: the ISR is full from the topic's creation, before the controller's
    LeaderAndIsr and UpdateMetadata reached every broker, and a broker cut off before
    its UpdateMetadata arrived answers clients LEADER_NOT_AVAILABLE with no partitions
    (as Kafka's broker does for a topic missing from its metadata cache), so a producer
    that asks it drops the partition and its records time out."""
    part = wait_metadata(c.bootstrap, topic, lambda md, t: len(t.partitions[0].isrs) == 3 and t.partitions[0].leader
                         in c.ids, "a leader and a full ISR")[1].partitions[0]

    def everywhere() -> bool:
        for i in c.ids:
            p = partition_or_none(c.cluster.ports[i], topic)
            if p is None or p.leader_id not in c.ids or len(p.isr_nodes) != 3:
                return False
        return True
    wait_for(everywhere, f"{topic}-0 led with a full ISR in every broker's metadata", timeout=40)
    return part


def replicas_agree(c: ProxiedCluster, topic: str, must_hold: list[bytes]) -> None:
    """Wait until every replica's log on disk holds the same records in the same leader
    epochs (``must_hold`` among them, each once)."""
    dirs = {i: c.cluster.base_dir / f"broker-{i}" for i in c.ids}
    last: dict = {}

    def same():
        logs = {i: replica_log(d, topic, 0, with_epochs=True) for i, d in dirs.items()}
        last.update({i: (min(log, default=None), max(log, default=None), len(log),
                         sorted({e for e, _ in log.values()})) for i, log in logs.items()})
        first = logs[c.ids[0]]
        values = [v for _, v in first.values()]
        return all(log == first for log in logs.values()) and set(must_hold) <= set(values) \
            and len(set(values)) == len(values)
    try:
        wait_for(same, "identical replicas holding every acknowledged record", timeout=40)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: replicas (first offset, last offset, records, epochs) {last}") from None


def raw_produce(port: int, topic: str, value: bytes) -> socket.socket:
    """Send one acks=all Produce (v9) to 127.0.0.1:port and return the socket; the answer
    is read with :func:`produce_answer` (the broker may be frozen meanwhile)."""
    b = RecordBatchBuilder(compression="none", batch_size=1 << 20)
    b.append_many([value])
    T = m.ProduceRequest
    frame = segments_to_bytes(encode_request(0, 9, 1, "zombie-test", T(acks=-1, timeout_ms=3000, topic_data=[
        T.TopicProduceData(name=topic, partition_data=[T.PartitionProduceData(index=0, records=bytes(b.build()))])])))
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(frame)
    return s


def produce_answer(s: socket.socket) -> int:
    with s:
        frame = read_frame(s)
    _, resp = decode_response(0, 9, frame)
    return resp.responses[0].partition_responses[0].error_code


def partition_or_none(port: int, topic: str):
    """:func:`partition_at`, or None while the broker does not know the partition."""
    R = m.MetadataRequest
    frame = segments_to_bytes(encode_request(3, 9, 1, "fault-test", R(
        topics=[R.MetadataRequestTopic(name=topic)], allow_auto_topic_creation=False)))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(frame)
        _, resp = decode_response(3, 9, read_frame(s))
    t = resp.topics[0]
    return t.partitions[0] if t.error_code == 0 and t.partitions else None


def partition_at(port: int, topic: str):
    """Partition 0 of ``topic`` as the broker at 127.0.0.1:port describes it (Metadata v9
    asked of that broker alone: a broker cut off from the controller keeps a stale view,
    so asking any broker would not tell what the leader knows)."""
    p = partition_or_none(port, topic)
    assert p is not None, f"the broker at {port} does not know {topic}-0"
    return p


def led_topic_with_records(c: ProxiedCluster, topic: str) -> tuple[int, list[bytes]]:
    """``topic`` (RF=3, min.insync.replicas=2) with a full ISR and 50 acknowledged
    records; returns its leader and the records."""
    create_topic(c.bootstrap, topic, rf=3, **{"min.insync.replicas": "2"})
    leader = full_isr(c, topic).leader
    before = [f"before-{i}".encode() for i in range(50)]
    assert produce_acked(c.bootstrap, topic, before) == [None] * 50
    return leader, before


def test_zombie_leader_is_fenced_after_sigstop(cluster):
    c = cluster
    leader, before = led_topic_with_records(c, "zombie")
    pid = c.cluster.procs[leader].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        # The produce waits in the frozen leader's socket for it to wake up.
        s = raw_produce(c.cluster.ports[leader], "zombie", b"zombie-write")
        wait_metadata(c.bootstrap, "zombie", lambda md, t: t.partitions[0].leader not in (leader, -1)
                      and leader not in t.partitions[0].isrs, "a new leader without the frozen one", timeout=60)
        after = [f"after-{i}".encode() for i in range(50)]
        assert produce_acked(c.bootstrap, "zombie", after) == [None] * 50
    finally:
        os.kill(pid, signal.SIGCONT)
    code = produce_answer(s)
    # NOT_LEADER_OR_FOLLOWER (it resigned, or the new LeaderAndIsr came first) or
    # REQUEST_TIMED_OUT (appended alone, no follower fetches from it any more): never 0.
    assert code in (6, 7), code
    full_isr(c, "zombie")
    replicas_agree(c, "zombie", before + after)
    for i in c.ids:
        assert b"zombie-write" not in replica_log(c.cluster.base_dir / f"broker-{i}", "zombie", 0).values()


def test_leader_cut_off_from_zookeeper_stops_leading_and_registers_again(cluster):
    c = cluster
    leader, before = led_topic_with_records(c, "zkcut")
    c.isolate_from_zookeeper(leader)
    try:
        # Asked of another broker: the cut-off one hears no UpdateMetadata meanwhile.
        other = c.cluster.ports[next(i for i in c.ids if i != leader)]
        wait_for(lambda: partition_at(other, "zkcut").leader_id not in (leader, -1)
                 and leader not in partition_at(other, "zkcut").isr_nodes,
                 "a new leader once the cut-off broker's session expired", timeout=60)
        # Still running, still reachable by clients, but it acknowledges nothing now.
        s = raw_produce(c.cluster.ports[leader], "zkcut", b"cut-off-write")
        assert produce_answer(s) in (6, 7)
        after = [f"after-{i}".encode() for i in range(50)]
        assert produce_acked(c.bootstrap, "zkcut", after) == [None] * 50
    finally:
        c.network.heal(leader, "zk")
    # It finds its session expired, registers again and follows the new leader.
    wait_metadata(c.bootstrap, "zkcut", lambda md, t: leader in md.brokers and len(t.partitions[0].isrs) == 3,
                  "the broker back in the cluster and the ISR", timeout=60)
    replicas_agree(c, "zkcut", before + after)
    for i in c.ids:
        assert b"cut-off-write" not in replica_log(c.cluster.base_dir / f"broker-{i}", "zkcut", 0).values()


def test_broker_cut_off_from_peers_leaves_the_isr_and_min_insync_replicas_holds(cluster):
    c = cluster
    from confluent_kafka.admin import NewTopic
    # The leader is the controller: the ISR shrinks through AlterPartition, which must
    # reach the controller, so the brokers cut off are the two others.
    a = admin(c.bootstrap)
    controller = a.list_topics(timeout=5).controller_id
    followers = [i for i in c.ids if i != controller]
    fut = a.create_topics([NewTopic("peers", num_partitions=1, replica_assignment=[[controller, *followers]],
                                                     config={"min.insync.replicas": "2"})])["peers"]
    fut.result(60)
    leader = full_isr(c, "peers").leader
    assert leader == controller
    port = c.cluster.ports[leader]
    c.isolate_from_peers(followers[0])
    # As in Kafka, a follower lags only once the leader has records it lacks: these
    # acks=all sends wait for the ISR to shrink after replica.lag.time.max.ms.
    two = [f"two-{i}".encode() for i in range(50)]
    assert produce_acked(c.bootstrap, "peers", two) == [None] * 50
    assert sorted(partition_at(port, "peers").isr_nodes) == sorted([leader, followers[1]])
    c.isolate_from_peers(followers[1])
    assert produce_acked(c.bootstrap, "peers", [b"acks-1"], acks="1", **{"enable.idempotence": False}) == [None]
    wait_for(lambda: partition_at(port, "peers").isr_nodes == [leader], "an ISR of the leader alone")
    errors = produce_acked(c.bootstrap, "peers", [b"refused"], **{"enable.idempotence": False, "retries": 0})
    assert errors[0] is not None and errors[0].code() == confluent_kafka.KafkaError.NOT_ENOUGH_REPLICAS
    c.network.heal()
    full_isr(c, "peers")
    assert produce_acked(c.bootstrap, "peers", [b"healed"]) == [None]
    replicas_agree(c, "peers", two + [b"acks-1", b"healed"])


def test_one_way_loss_from_leader_to_follower(cluster):
    c = cluster
    create_topic(c.bootstrap, "oneway", rf=3, **{"min.insync.replicas": "2"})
    leader = full_isr(c, "oneway").leader
    victim = next(i for i in c.ids if i != leader)
    # The follower's fetches reach the leader; the leader's answers never come back.
    c.network.blackhole(victim, leader, directions=("back",))
    first = [f"first-{i}".encode() for i in range(50)]
    assert produce_acked(c.bootstrap, "oneway", first) == [None] * 50
    wait_metadata(c.bootstrap, "oneway", lambda md, t: victim not in t.partitions[0].isrs,
                  "the follower that hears nothing out of the ISR")
    second = [f"second-{i}".encode() for i in range(50)]
    assert produce_acked(c.bootstrap, "oneway", second) == [None] * 50
    assert c.network.dropped_bytes > 0
    c.network.heal(victim, leader)
    full_isr(c, "oneway")
    replicas_agree(c, "oneway", first + second)


def test_leader_killed_and_restarted_at_once_waits_out_its_old_session(cluster):
    """Started again before ZooKeeper expired its previous session, the broker finds its
    old registration still there: it waits for the expiry, registers and rejoins."""
    c = cluster
    leader, before = led_topic_with_records(c, "restart")
    c.cluster.stop_broker(leader, signal.SIGKILL)
    c.cluster.start_broker(leader)
    # (When the killed leader was also the controller, the next controller may find it
    # registered again before it saw it go, and leave it leading: either way it is back.)
    wait_metadata(c.bootstrap, "restart", lambda md, t: leader in md.brokers and len(t.partitions[0].isrs) == 3,
                  "the restarted broker back in the ISR", timeout=60)
    assert c.cluster.procs[leader].poll() is None
    after = [f"after-{i}".encode() for i in range(50)]
    assert produce_acked(c.bootstrap, "restart", after) == [None] * 50
    replicas_agree(c, "restart", before + after)
