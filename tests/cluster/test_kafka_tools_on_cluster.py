"""Apache Kafka's own operator tools, from the Maven-fetched jars, against a 3-broker
pylog cluster: what an operator of a Kafka cluster runs, unmodified.

- kafka-topics: create with replication factor 2, describe (replicas, ISR), and
  ``--under-replicated-partitions`` / ``--unavailable-partitions`` while a broker is down;
- kafka-reassign-partitions: ``--execute`` with ``--throttle`` moves a partition's
  replicas, ``--verify`` reports it complete and removes the throttles;
- kafka-leader-election: a preferred election puts the leadership on the first replica.

``long`` (about 30 s: nine JVM start-ups); the jars come from tests/kafka_ref/pom.xml.
"""

from __future__ import annotations

import json
import re
import signal

import pytest

from kafka_ref.conftest import kafka_jars  # noqa: F401  (fixture)
from pylog.cluster.local import LocalCluster
from server.util import wait_for

pytestmark = [pytest.mark.long, pytest.mark.timeout(900)]

TOPICS = "org.apache.kafka.tools.TopicCommand"
REASSIGN = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
ELECT = "org.apache.kafka.tools.LeaderElectionCommand"


def partitions(out: str) -> dict[int, tuple[int, list[int], list[int]]]:
    """kafka-topics --describe rows: partition -> (leader, replicas, isr)."""
    rows = re.findall(r"Partition: (\d+)\tLeader: (-?\d+|none)\tReplicas: ([\d,]+)\tIsr: ([\d,]*)", out)
    return {int(p): (-1 if lead == "none" else int(lead), [int(x) for x in reps.split(",")],
                     [int(x) for x in isr.split(",") if x]) for p, lead, reps, isr in rows}


def test_kafka_operator_tools_on_a_pylog_cluster(kafka_jars, tmp_path, zk_connect):  # noqa: F811
    jvm = kafka_jars
    with LocalCluster(tmp_path, 3, zookeeper=zk_connect) as cluster:
        b = cluster.bootstrap
        jvm.check(TOPICS, "--bootstrap-server", b, "--create", "--topic", "ops",
                  "--replica-assignment", "1:2,2:3")

        def describe(*extra: str) -> str:
            return jvm.check(TOPICS, "--bootstrap-server", b, "--describe", "--topic", "ops", *extra)

        wait_for(lambda: all(len(isr) == 2 for _, _, isr in partitions(describe()).values())
                 and len(partitions(describe())) == 2, "both partitions with full ISRs")
        assert {p: reps for p, (_, reps, _) in partitions(describe()).items()} == {0: [1, 2], 1: [2, 3]}

        # Move partition 0 from brokers 1,2 to 3,2, throttled as an operator would.
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"version": 1, "partitions": [
            {"topic": "ops", "partition": 0, "replicas": [3, 2], "log_dirs": ["any", "any"]}]}))
        out = jvm.check(REASSIGN, "--bootstrap-server", b, "--reassignment-json-file", str(plan),
                        "--execute", "--throttle", "10000000")
        assert "Successfully started partition reassignment" in out, out

        def verified() -> str | None:
            out = jvm.check(REASSIGN, "--bootstrap-server", b, "--reassignment-json-file", str(plan),
                            "--verify")
            return out if "Reassignment of partition ops-0 is completed" in out else None

        out = wait_for(verified, "the reassignment to complete", timeout=120)
        assert "Clearing broker-level throttles" in out and "Clearing topic-level throttles" in out, out
        row = partitions(describe())[0]
        assert row[1] == [3, 2] and sorted(row[2]) == [2, 3], row

        # A preferred election puts partition 0's leadership on broker 3.
        if row[0] != 3:
            out = jvm.check(ELECT, "--bootstrap-server", b, "--election-type", "PREFERRED",
                            "--topic", "ops", "--partition", "0")
            assert "Successfully completed leader election (PREFERRED) for partitions ops-0" in out, out
        wait_for(lambda: partitions(describe())[0][0] == 3, "broker 3 to lead ops-0")

        # Broker 2 holds a replica of both partitions: with it down both are under-replicated
        # but available; no partition is unavailable.
        cluster.stop_broker(2, signal.SIGKILL)
        out = wait_for(lambda: (lambda o: o if len(partitions(o)) == 2 else None)(
            describe("--under-replicated-partitions")), "both partitions under-replicated", timeout=60)
        assert all(2 not in isr for _, _, isr in partitions(out).values()), out
        assert partitions(describe("--unavailable-partitions")) == {}
