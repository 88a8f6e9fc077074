"""Produce throughput of a replicated pylog cluster: RF=3 with acks=all against RF=1 with
acks=1 on one broker, in the same run (issue 13, "Speed").

A local ZooKeeper and three ``pylog serve --zookeeper`` brokers (:class:`pylog.cluster.
local.LocalCluster`) hold two one-partition topics whose leader is the same broker:
``rf3`` (replicas on all three brokers, ``min.insync.replicas=2``) and ``rf1`` (its one
replica on that leader).  A librdkafka (confluent-kafka) producer sends 100-byte records
(:func:`benches.bench_server.confluent_produce`: no compression, linger 5 ms, batches of
up to 10,000 records), acks=all to ``rf3`` and acks=1 to ``rf1``; the rounds alternate
(rf1, rf3, rf1, rf3, ...) after one warm-up round of each, so both figures share the
machine's load.  Each figure is the median of its rounds; the ratio is rf3 / rf1.  Kafka's
2014 figures were 421k records/s 3x synchronous against 821k unreplicated (0.51) on
6-core machines; issue 13's goals on 2 cores: at least 250k records/s and a ratio of at
least 0.35.

``python -m benches.bench_cluster_throughput [--records 500000] [--rounds 3]`` prints
the figures, the three brokers' CPU time per record in each mode (what replication
costs the cluster, whatever the producer's own speed) and the load average; the asv
class :class:`ClusterProduce` tracks them.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benches.bench_cluster_failover import wait_for_metadata
from benches.bench_server import confluent_produce, process_cpu_seconds

RF3, RF1 = "rf3", "rf1"


class ThroughputRig:
    """ZooKeeper (unless ``zookeeper`` is given), three brokers and the two topics
    (module docstring)."""

    def __init__(self, base_dir: Path, zookeeper: str | None = None) -> None:
        from pylog.cluster.local import LocalCluster

        self.cluster = LocalCluster(base_dir, 3, zookeeper=zookeeper, overrides=[
            "default.replication.factor=3", "min.insync.replicas=2"])

    def __enter__(self) -> "ThroughputRig":
        from confluent_kafka.admin import AdminClient, NewTopic

        self.cluster.start()
        try:
            self.admin = AdminClient({"bootstrap.servers": self.cluster.bootstrap})
            self._wait(lambda md: len(md.brokers) == 3, "3 brokers")
            self.admin.create_topics([NewTopic(RF3, 1, 3, config={"min.insync.replicas": "2"})],
                                     operation_timeout=30)[RF3].result(60)
            self.leader = self._wait_full_isr(RF3, 3)
            self.admin.create_topics([NewTopic(RF1, 1, replica_assignment=[[self.leader]])],
                                     operation_timeout=30)[RF1].result(60)
            self._wait_full_isr(RF1, 1)
        except BaseException:
            self.cluster.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        del self.admin  # before the brokers go, or it logs their departure
        # The data is thrown away: no controlled shutdowns (a second or two each), and
        # the brokers' ZooKeeper sessions die with ZooKeeper or the test's chroot.
        for i in list(self.cluster.procs):
            self.cluster.stop_broker(i, signal.SIGKILL)
        self.cluster.stop()

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap

    def _wait(self, pred: Any, what: str, timeout: float = 120.0) -> Any:
        return wait_for_metadata(self.admin, pred, what, timeout)

    def _wait_full_isr(self, topic: str, rf: int) -> int:
        def full(md: Any) -> bool:
            t = md.topics.get(topic)
            return (t is not None and not t.error and 0 in t.partitions and t.partitions[0].leader > 0
                    and len(t.partitions[0].isrs) == rf)
        return self._wait(full, f"{topic}'s ISR of {rf}").topics[topic].partitions[0].leader

    def broker_pids(self) -> dict[int, int]:
        return {i: p.pid for i, p in self.cluster.procs.items()}

    def high_watermark(self, topic: str) -> int:
        """The partition's high watermark as its leader answers ListOffsets (latest)."""
        from confluent_kafka import Consumer, TopicPartition

        from confluent_kafka import KafkaError, KafkaException

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "bench-cluster-throughput"})
        deadline = time.monotonic() + 30
        try:
            while True:
                try:
                    return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)[1]
                except KafkaException as exc:
                    # A broker that has not yet had the controller's UpdateMetadata (or
                    # LeaderAndIsr) for a new topic does not know it yet; the one the
                    # metadata names as leader may not have become it yet.
                    if exc.args[0].code() not in (KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                  KafkaError.NOT_LEADER_FOR_PARTITION,
                                                  KafkaError.LEADER_NOT_AVAILABLE) \
                            or time.monotonic() > deadline:
                        raise
                time.sleep(0.05)
        finally:
            c.close()

    def isr(self, topic: str) -> list[int]:
        return sorted(self.admin.list_topics(topic, timeout=10).topics[topic].partitions[0].isrs)

    def brokers_cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(p.pid) for p in self.cluster.procs.values())

    def produce(self, topic: str, records: int, acks: str) -> tuple[float, float, float]:
        """Records/s of one producer run, once the high watermark shows every record
        acknowledged (``confluent_produce`` does not look at delivery errors), then the
        three brokers' and the producer's (this process: the Python loop and
        librdkafka's threads) CPU microseconds per record in that run."""
        before = self.high_watermark(topic)
        cpu0, own0 = self.brokers_cpu_seconds(), time.process_time()
        rate = confluent_produce(self.bootstrap, topic, records, acks=acks)
        cpu, own = self.brokers_cpu_seconds() - cpu0, time.process_time() - own0
        after = self.high_watermark(topic)
        if after - before != records:
            raise RuntimeError(f"{topic}: the high watermark moved by {after - before}, not {records}")
        return rate, cpu * 1e6 / records, own * 1e6 / records


def measure_rig(rig: ThroughputRig, records: int, rounds: int) -> dict[str, Any]:
    """Alternating rounds on a started rig: the figures of the module docstring."""
    runs: dict[str, list[tuple[float, float, float]]] = {RF1: [], RF3: []}
    warm = max(1, records // 5)
    rig.produce(RF1, warm, acks="1")
    rig.produce(RF3, warm, acks="all")
    for _ in range(rounds):
        runs[RF1].append(rig.produce(RF1, records, acks="1"))
        runs[RF3].append(rig.produce(RF3, records, acks="all"))
    rf1, rf3 = [r[0] for r in runs[RF1]], [r[0] for r in runs[RF3]]
    m1, m3 = statistics.median(rf1), statistics.median(rf3)
    # acks=all waits for the ISR only: a follower that fell out during the run would make
    # the figure one of RF=2; say so.
    return {"records": records, "rounds": rounds, "rf1_rounds": rf1, "rf3_rounds": rf3,
            "rf1_acks1_records_per_s": m1, "rf3_acksall_records_per_s": m3, "ratio": m3 / m1,
            "rf1_brokers_cpu_us_per_record": statistics.median(r[1] for r in runs[RF1]),
            "rf3_brokers_cpu_us_per_record": statistics.median(r[1] for r in runs[RF3]),
            "rf1_producer_cpu_us_per_record": statistics.median(r[2] for r in runs[RF1]),
            "rf3_producer_cpu_us_per_record": statistics.median(r[2] for r in runs[RF3]),
            "rf3_isr_after": rig.isr(RF3)}


def measure(records: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pylog-cluster-throughput-") as d, ThroughputRig(Path(d)) as rig:
        return measure_rig(rig, records, rounds)


class ClusterProduce:
    """asv: RF=3 acks=all records/s, RF=1 acks=1 records/s, and their ratio, from one run."""

    timeout = 900
    number = 1
    repeat = 1

    def setup_cache(self) -> dict[str, Any]:
        return measure(records=500_000, rounds=3)

    def track_rf3_acksall_records_per_s(self, figures: dict[str, Any]) -> float:
        return figures["rf3_acksall_records_per_s"]

    track_rf3_acksall_records_per_s.unit = "records/s"

    def track_rf1_acks1_records_per_s(self, figures: dict[str, Any]) -> float:
        return figures["rf1_acks1_records_per_s"]

    track_rf1_acks1_records_per_s.unit = "records/s"

    def track_rf3_to_rf1_ratio(self, figures: dict[str, Any]) -> float:
        return figures["ratio"]

    track_rf3_to_rf1_ratio.unit = "ratio"

    def track_rf3_brokers_cpu_us_per_record(self, figures: dict[str, Any]) -> float:
        return figures["rf3_brokers_cpu_us_per_record"]

    track_rf3_brokers_cpu_us_per_record.unit = "us"

    def track_rf1_brokers_cpu_us_per_record(self, figures: dict[str, Any]) -> float:
        return figures["rf1_brokers_cpu_us_per_record"]

    track_rf1_brokers_cpu_us_per_record.unit = "us"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    load = os.getloadavg()
    f = measure(args.records, args.rounds)
    print(f"3 brokers + ZooKeeper on {os.cpu_count()} cores, a librdkafka producer, 100-byte records, "
          f"{f['records']} records a round, {f['rounds']} alternating rounds each; "
          f"load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"RF=3 acks=all min.insync.replicas=2: {f['rf3_acksall_records_per_s']:,.0f} records/s "
          f"(rounds: {', '.join(f'{x:,.0f}' for x in f['rf3_rounds'])}; goal >= 250,000)")
    print(f"RF=1 acks=1, same leader broker:    {f['rf1_acks1_records_per_s']:,.0f} records/s "
          f"(rounds: {', '.join(f'{x:,.0f}' for x in f['rf1_rounds'])})")
    print(f"ratio RF=3 acks=all / RF=1 acks=1: {f['ratio']:.2f} (goal >= 0.35); "
          f"rf3's ISR after the run: {f['rf3_isr_after']}")
    print(f"the three brokers' CPU per record: RF=3 acks=all {f['rf3_brokers_cpu_us_per_record']:.2f} us, "
          f"RF=1 acks=1 {f['rf1_brokers_cpu_us_per_record']:.2f} us; the producer's: "
          f"{f['rf3_producer_cpu_us_per_record']:.2f} us and {f['rf1_producer_cpu_us_per_record']:.2f} us")


if __name__ == "__main__":
    main()
