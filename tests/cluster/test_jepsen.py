"""A Jepsen-style run on a real 3-broker cluster: an idempotent librdkafka producer
(acks=all) writes to a topic with replication factor 3, min.insync.replicas=2 and three
partitions, and a consumer reads along, while a schedule of random faults drawn from a
seeded RNG hits one broker at a time: SIGKILL and restart, SIGSTOP/SIGCONT, cut off from
its peers, cut off from ZooKeeper, one-way loss (every byte one peer sends it, requests
and answers, discarded while it still reaches that peer; every link through
:mod:`cluster.proxy`). Afterwards
:meth:`cluster.jepsen.History.check` compares what was acknowledged and read with the
final logs and the replicas' files: nothing acknowledged lost or moved, nothing
duplicated or reordered, nothing read that later vanished, no offset holding two
different records on two replicas, and every acknowledged record read by the consumer
reading along (it reads on after the producer stops until it has them all).

The default run is a short schedule (``JEPSEN_SHORT_S``, 2 s of faults: one fault);
``-m long`` runs 120 s of them. The figures (faults, acknowledged, lost, duplicated, ...)
are printed (``-s`` shows them); the seed is printed and ``JEPSEN_SEED=<n>`` replays a
schedule; ``JEPSEN_DEBUG=consumer,fetch`` turns on the reader's librdkafka debug log.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from cluster.jepsen import History, batches_at, produce_until, read_back, replica_logs
from cluster.proxy import ProxiedCluster
from cluster.test_cluster_replication import admin
from cluster.util import killed_at_exit
from server.util import wait_for

confluent_kafka = pytest.importorskip("confluent_kafka")

TOPIC = "jepsen"
PARTITIONS = 3
SESSION_TIMEOUT_MS = 4000  # also the time a restarted broker has to reach ZooKeeper
OVERRIDES = [f"zookeeper.session.timeout.ms={SESSION_TIMEOUT_MS}", "replica.lag.time.max.ms=1500",
             "default.replication.factor=3", "min.insync.replicas=2"]
FAULTS = ("kill", "stop", "peers", "zookeeper", "oneway")
#: How long the reader may take, after the producer stopped, to read every acknowledged record.
READ_ALL_TIMEOUT_S = 60


class Run:
    """One run: the cluster, the producer and consumer threads, the fault schedule."""

    def __init__(self, c: ProxiedCluster, seed: int) -> None:
        self.c = c
        self.rng = random.Random(seed)
        self.history = History()
        self.stop = threading.Event()          # the producer stops
        self.stop_reading = threading.Event()  # the reader stops (after it read every acknowledged record)
        self.threads = [threading.Thread(target=self._produce, name="jepsen-producer", daemon=True),
                        threading.Thread(target=self._consume, name="jepsen-consumer", daemon=True)]
        self.errors: list[BaseException] = []

    def _produce(self) -> None:
        try:
            produce_until(self.c.bootstrap, TOPIC, PARTITIONS, self.history, self.stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            self.errors.append(exc)

    def _consume(self) -> None:
        from confluent_kafka import TopicPartition
        try:
            cons = confluent_kafka.Consumer({"bootstrap.servers": self.c.bootstrap, "group.id": "jepsen-reader",
                                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                             "topic.metadata.refresh.interval.ms": 1000,
                                             **({"debug": os.environ["JEPSEN_DEBUG"]} if "JEPSEN_DEBUG" in os.environ else {})})
            cons.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
            while not self.stop_reading.is_set():
                msg = cons.poll(0.1)
                if msg is not None and msg.error() is None:
                    self.history.on_read(msg.partition(), msg.offset(), msg.value())
            cons.close()
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(exc)

    def wait_healthy(self) -> None:
        a = admin(self.c.bootstrap)

        seen: list[str] = []

        def healthy():
            md = a.list_topics(TOPIC, timeout=5)
            t = md.topics.get(TOPIC)
            seen[:] = [f"brokers {sorted(md.brokers)} controller {md.controller_id}; " + (
                "no topic" if t is None else ", ".join(f"p{p.id} leader {p.leader} isr {sorted(p.isrs)}"
                                                       for p in t.partitions.values()))]
            return (len(md.brokers) == 3 and t is not None and len(t.partitions) == PARTITIONS
                    and all(len(p.isrs) == 3 and p.leader in self.c.ids for p in t.partitions.values()))
        def alive_and_healthy():
            for i, proc in self.c.cluster.procs.items():
                if proc.poll() is not None:
                    log = (self.c.cluster.base_dir / f"broker-{i}.log").read_text(errors="replace")
                    raise AssertionError(f"broker {i} exited with {proc.returncode}: {log[-1500:]}")
            return healthy()
        try:
            wait_for(alive_and_healthy, "every partition led with a full ISR", timeout=90)
        except AssertionError as exc:
            # What the cluster looked like, and what each broker last warned about: the
            # basetemp holding the logs is often rotated away before anyone reads it.
            notes = []
            for i in self.c.ids:
                lines = (self.c.cluster.base_dir / f"broker-{i}.log").read_text(errors="replace").splitlines()
                notes.append(f"--- broker {i}\n" + "\n".join(
                    [x for x in lines if " WARNING " in x or " ERROR " in x][-15:] + lines[-5:]))
            raise AssertionError(f"{exc}\nlast metadata: {seen[0] if seen else '-'}\nfaults: "
                                 f"{self.history.faults[-3:]}\n" + "\n".join(notes)) from None

    def inject(self, kind: str, broker: int, hold: float) -> None:
        c = self.c
        self.history.on_fault(f"{kind} broker {broker} for {hold:.1f} s ({len(self.history.reads)} reads before)")
        if kind == "kill":
            c.cluster.stop_broker(broker, signal.SIGKILL)
            time.sleep(hold)  # the fault's length: what the schedule is made of
            c.cluster.start_broker(broker)
        elif kind == "stop":
            pid = c.cluster.procs[broker].pid
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(hold)
            finally:
                os.kill(pid, signal.SIGCONT)
        elif kind == "peers":
            c.isolate_from_peers(broker)
            time.sleep(hold)
            c.network.heal()
        elif kind == "oneway":
            peer = self.rng.choice([i for i in c.ids if i != broker])
            dropped = c.network.dropped_bytes
            c.network.blackhole(broker, peer, directions=("back",))  # peer's answers to broker
            c.network.blackhole(peer, broker, directions=("out",))   # peer's requests to broker
            time.sleep(hold)
            c.network.heal()
            self.history.faults[-1] += f" (from broker {peer}: {c.network.dropped_bytes - dropped} bytes lost)"
        else:
            c.isolate_from_zookeeper(broker)
            time.sleep(hold)
            c.network.heal()

    def run(self, duration: float) -> None:
        for t in self.threads:
            t.start()
        deadline = time.monotonic() + duration
        try:
            while time.monotonic() < deadline and not self.errors:
                kind = self.rng.choice(FAULTS)
                broker = self.rng.choice(self.c.ids)
                # Shorter and longer than the session timeout: pauses that end in time,
                # and ones after which the broker's session has expired.
                hold = self.rng.uniform(0.5, 2.0 * SESSION_TIMEOUT_MS / 1000)
                self.inject(kind, broker, hold)
                # One broker at a time: with RF=3 and min.insync.replicas=2 the cluster
                # must keep acknowledging through any single fault.
                healed = time.monotonic()
                self.wait_healthy()
                self.history.faults[-1] += f", full ISRs again {time.monotonic() - healed:.1f} s after"
        finally:
            self.c.network.heal()
            self.stop.set()
            producer, reader = self.threads
            producer.join(120)
            # The reader reads on until it has every acknowledged record (the check
            # counts any it never read), or gives up after READ_ALL_TIMEOUT_S.
            if reader.is_alive():
                self.history.wait_all_read(READ_ALL_TIMEOUT_S)
            self.stop_reading.set()
            reader.join(120)
        assert not self.errors, self.errors

    def final_logs(self) -> tuple[dict, dict, dict]:
        """What a consumer reads back, each replica's files, the high watermarks."""
        self.wait_healthy()
        final, hws = read_back(self.c.bootstrap, TOPIC, PARTITIONS)
        replicas = replica_logs({i: self.c.cluster.base_dir / f"broker-{i}" for i in self.c.ids}, TOPIC,
                                PARTITIONS, hws)
        return final, replicas, hws


@pytest.fixture
def cluster(tmp_path, zk_connect):
    with killed_at_exit(ProxiedCluster(tmp_path, zk_connect, 3, OVERRIDES)) as c:
        from confluent_kafka.admin import NewTopic
        a = admin(c.bootstrap)
        wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 3, "3 registered brokers in the metadata")
        a.create_topics([NewTopic(TOPIC, PARTITIONS, 3)], operation_timeout=30)[TOPIC].result(60)
        yield c


def _jepsen(cluster, duration: float) -> None:
    seed = int(os.environ.get("JEPSEN_SEED", random.randrange(1 << 30)))
    print(f"\njepsen seed {seed} (JEPSEN_SEED={seed} replays the schedule)")
    run = Run(cluster, seed)
    run.wait_healthy()
    run.run(duration)
    final, replicas, hws = run.final_logs()
    report = run.history.check(final, replicas, hws)
    print(f"jepsen seed {seed}: {report.figures()}")
    print("faults: " + "; ".join(run.history.faults))
    assert report.faults > 0 and report.acknowledged > 0
    assert report.ok, f"seed {seed}: {report.problems()}" + _duplicate_batches(cluster, report)


def _duplicate_batches(c: ProxiedCluster, report) -> str:
    """For the first duplicated record: the batches holding its copies on each replica."""
    if not report.duplicated:
        return ""
    value, places = report.duplicated[0]
    p = places[0][0]
    lines = [f"broker {i}: " + "; ".join(batches_at(c.cluster.base_dir / f"broker-{i}", TOPIC, p,
                                                    [off for _, off in places])) for i in c.ids]
    return f"\nbatches holding {value!r} on partition {p}:\n" + "\n".join(lines)


def test_jepsen_short(cluster):
    _jepsen(cluster, duration=float(os.environ.get("JEPSEN_SHORT_S", "2")))


@pytest.mark.long
@pytest.mark.timeout(900)
def test_jepsen_long(cluster):
    _jepsen(cluster, duration=120.0)
