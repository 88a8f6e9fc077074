"""kafka-python, aiokafka and pylog's remote producer (``pylog.connect``) keep producing
through a SIGKILL of their partition's leader on a real 3-broker cluster (``pylog serve
--zookeeper`` subprocesses on the session's ZooKeeper): replication factor 3,
min.insync.replicas=2, acks=all, each client retrying for as long as it takes.

The three run at once, one thread each (kafka-python's drives a child process), on
three single-partition topics led by the same broker (not the controller), so one kill
and one ZooKeeper session expiry serve all three: each client sends its first half and
flushes it (all acknowledged), waits for the kill, sends the second half at once (to
the dead leader, until the metadata names the new one) and flushes. Then every record must have been acknowledged, and the partition
must hold exactly the records sent, each once, in the order sent, each at the offset its
acknowledgement gave (read back from the new leader with a librdkafka consumer).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from cluster.test_cluster_replication import admin
from cluster.util import killed_at_exit
from pylog.cluster.local import LocalCluster
from server.util import wait_for

confluent_kafka = pytest.importorskip("confluent_kafka")
pytest.importorskip("kafka")
aiokafka = pytest.importorskip("aiokafka")

SESSION_TIMEOUT_MS = 3000
OVERRIDES = [f"zookeeper.session.timeout.ms={SESSION_TIMEOUT_MS}", "replica.lag.time.max.ms=2000",
             "default.replication.factor=3", "min.insync.replicas=2"]
N = 200  # records per client; the leader dies after the first N // 2 are acknowledged
CLIENTS = ("kafka-python", "aiokafka", "pylog")


class Run:
    """One client's run: the offsets its acknowledgements gave, in the order sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.topic = f"failover-{name}"
        self.values = [f"{name}-{i}".encode() for i in range(N)]
        self.half_acked = threading.Event()
        self.offsets: list[int] = []
        self.error: BaseException | None = None


# kafka-python runs in a child process: it keeps the socket of every connection attempt
# the dead broker refuses (held by the exceptions it keeps) and drops them unclosed at
# exit, which the test process (filterwarnings = error) would report as ResourceWarnings
# in whichever test collects them.
KAFKA_PYTHON = """
import json, sys
from kafka import KafkaProducer
bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", enable_idempotence=True, linger_ms=5,
                  retry_backoff_ms=50, delivery_timeout_ms=120000, metadata_max_age_ms=1000)
futures = []
for i in range(n):
    if i == n // 2:
        p.flush()
        print("half acknowledged", flush=True)
        sys.stdin.readline()
    futures.append(p.send(topic, f"kafka-python-{i}".encode(), partition=0))
p.flush()
print(json.dumps([f.get(0).offset for f in futures]), flush=True)
p.close()
"""


def run_kafka_python(run: Run, bootstrap: str, killed: threading.Event) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KAFKA_PYTHON, bootstrap, run.topic, str(N)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line == "half acknowledged\n", f"kafka-python said {line!r}"
        run.half_acked.set()
        killed.wait()
        proc.stdin.write("go on\n")
        proc.stdin.flush()
        run.offsets = json.loads(proc.stdout.readline())
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def run_aiokafka(run: Run, bootstrap: str, killed: threading.Event) -> None:
    from aiokafka import AIOKafkaProducer

    async def main() -> list[int]:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                             retry_backoff_ms=50, request_timeout_ms=30000, metadata_max_age_ms=1000)
        await p.start()
        try:
            futures = []
            for i, v in enumerate(run.values):
                if i == N // 2:
                    await p.flush()
                    run.half_acked.set()
                    await asyncio.get_running_loop().run_in_executor(None, killed.wait)
                futures.append(await p.send(run.topic, v, partition=0))
            await p.flush()
            return [(await f).offset for f in futures]
        finally:
            await p.stop()

    run.offsets = asyncio.run(main())


def run_pylog(run: Run, bootstrap: str, killed: threading.Event) -> None:
    import pylog

    with pylog.connect(bootstrap, metadata_max_age_ms=1000, retry_backoff_ms=50) as c:
        p = c.producer(acks="all", linger_ms=5)
        futures = []
        for i, v in enumerate(run.values):
            if i == N // 2:
                p.flush()
                run.half_acked.set()
                killed.wait()
            futures.append(p.send(run.topic, v, partition=0))
        p.flush()
        run.offsets = [f.result(0).offset for f in futures]
        p.close()


RUNNERS = {"kafka-python": run_kafka_python, "aiokafka": run_aiokafka, "pylog": run_pylog}


def read_partition(bootstrap: str, topic: str, end: int) -> list[tuple[int, bytes]]:
    """(offset, value) of every record of partition 0 below ``end``."""
    from confluent_kafka import TopicPartition

    c = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}",
                                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        out: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == confluent_kafka.KafkaError._PARTITION_EOF and out and out[-1][0] >= end - 1:
                    break
                continue
            out.append((msg.offset(), msg.value()))
        return out
    finally:
        c.close()


def test_clients_produce_through_a_leader_sigkill(tmp_path, zk_connect):
    from confluent_kafka.admin import NewTopic

    with killed_at_exit(LocalCluster(tmp_path, 3, zookeeper=zk_connect, overrides=OVERRIDES)) as cluster:
        a = admin(cluster.bootstrap)
        wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 3, "3 registered brokers in the metadata")
        controller = wait_for(lambda: max(a.list_topics(timeout=5).controller_id, 0), "a controller")
        leader, *followers = [b for b in (1, 2, 3) if b != controller] + [controller]
        runs = [Run(name) for name in CLIENTS]
        created = a.create_topics([NewTopic(r.topic, num_partitions=1, replica_assignment=[[leader, *followers]]) for r in runs],
                                  operation_timeout=30)
        for fut in created.values():
            fut.result(60)

        def ready():
            md = a.list_topics(timeout=5)
            return all(r.topic in md.topics and md.topics[r.topic].partitions
                       and md.topics[r.topic].partitions[0].leader == leader
                       and len(md.topics[r.topic].partitions[0].isrs) == 3 for r in runs)

        wait_for(ready, "the topics led by one broker with full ISRs")
        killed = threading.Event()

        def drive(run: Run) -> None:
            try:
                RUNNERS[run.name](run, cluster.bootstrap, killed)
            except BaseException as exc:  # reported by the assertion below
                run.error = exc
                run.half_acked.set()

        threads = [threading.Thread(target=drive, args=(r,), name=f"client-{r.name}") for r in runs]
        for t in threads:
            t.start()
        try:
            for r in runs:
                assert r.half_acked.wait(60), f"{r.name}: first half not acknowledged"
            cluster.stop_broker(leader, signal.SIGKILL)
        finally:
            killed.set()
            for t in threads:
                t.join(180)
        alive = ",".join(f"127.0.0.1:{cluster.ports[b]}" for b in followers)
        for r in runs:
            assert r.error is None, f"{r.name}: {r.error!r}"
            # Every record acknowledged, at increasing offsets, the partition holding
            # exactly them: none lost, none written twice, in the order sent.
            assert len(r.offsets) == N and r.offsets == sorted(set(r.offsets)), r.name
            got = read_partition(alive, r.topic, r.offsets[-1] + 1)
            assert got == list(zip(r.offsets, r.values)), r.name
            md = a.list_topics(r.topic, timeout=5)
            assert md.topics[r.topic].partitions[0].leader in followers
