"""SIGKILL of the controller on a real 3-broker cluster (``pylog serve --zookeeper``
subprocesses, :class:`pylog.cluster.local.LocalCluster`) while an idempotent librdkafka
producer (acks=all) writes to a topic with replication factor 3, min.insync.replicas=2
and three partitions, one of them led by the controller broker:

- when ZooKeeper expires the dead broker's session its ephemeral ``/controller`` goes, a
  surviving broker wins the election and ``/controller_epoch`` is higher than before
  (the epoch that fences the dead controller's writes);
- the new controller elects a leader from the ISR for every partition the dead broker
  led (``/brokers/topics/<t>/partitions/<p>/state``: a survivor of the old ISR, a higher
  leader epoch, the dead broker out of the ISR), and Metadata shows the same leaders;
- the producer goes on being acknowledged, and afterwards every acknowledged record is
  read back exactly once, at the offset it was acknowledged at, in send order per
  partition, and the two live replicas agree offset by offset
  (:meth:`cluster.jepsen.History.check`);
- the new controller acts: a topic created after the failover (replication factor 2) is
  placed on the two live brokers and led, and when the other survivor is SIGKILLed too
  the new controller elects itself leader of the partitions that broker led.
"""

from __future__ import annotations

import signal
import threading

import pytest

from cluster.jepsen import History, produce_until, read_back, replica_logs
from cluster.test_cluster_replication import admin, create_topic, wait_metadata
from cluster.util import killed_at_exit
from pylog.cluster.local import LocalCluster
from server.util import wait_for

confluent_kafka = pytest.importorskip("confluent_kafka")

SESSION_TIMEOUT_MS = 3000  # the time ZooKeeper takes to notice the killed controller
TOPIC = "ctl"
PARTITIONS = 3


def _produce(bootstrap: str, history: History, stop: threading.Event, errors: list) -> None:
    try:
        produce_until(bootstrap, TOPIC, PARTITIONS, history, stop)
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


def test_controller_sigkill_elects_a_new_controller_and_new_leaders(tmp_path, zk_connect):
    from pylog.cluster.zookeeper import connect

    cluster = LocalCluster(tmp_path, 3, zookeeper=zk_connect, overrides=[
        f"zookeeper.session.timeout.ms={SESSION_TIMEOUT_MS}", "replica.lag.time.max.ms=3000",
        "default.replication.factor=3"])
    zk = connect(zk_connect)
    history, stop, errors = History(), threading.Event(), []
    producer: threading.Thread | None = None
    try:
        with killed_at_exit(cluster):
            a = admin(cluster.bootstrap)
            wait_for(lambda: len(a.list_topics(timeout=5).brokers) == 3, "3 registered brokers in the metadata")
            create_topic(cluster.bootstrap, TOPIC, partitions=PARTITIONS, rf=3, **{"min.insync.replicas": "2"})
            wait_metadata(cluster.bootstrap, TOPIC, lambda md, t: len(t.partitions) == PARTITIONS and all(
                len(p.isrs) == 3 for p in t.partitions.values()), "every partition with a full ISR")
            controller = zk.get_controller()
            epoch = zk.get_controller_epoch().epoch
            before = {p: zk.get_partition_state(TOPIC, p) for p in range(PARTITIONS)}
            led = [p for p, s in before.items() if s.leader == controller]
            # Three partitions over three brokers: the preferred leaders are all different.
            assert led, f"no partition led by the controller {controller}: {before}"

            producer = threading.Thread(target=_produce, args=(cluster.bootstrap, history, stop, errors),
                                        name="controller-kill-producer", daemon=True)
            producer.start()
            wait_for(lambda: len(history.acked) >= 300 or errors, "the producer acknowledged before the kill")
            cluster.stop_broker(controller, signal.SIGKILL)
            history.on_fault(f"SIGKILL controller {controller}")
            acked_at_kill = len(history.acked)

            new_controller = wait_for(lambda: zk.get_controller() not in (None, controller) and zk.get_controller(),
                                      "a new controller", timeout=60)
            assert new_controller in cluster.procs
            assert zk.get_controller_epoch().epoch > epoch

            def moved():
                states = {p: zk.get_partition_state(TOPIC, p) for p in led}
                return all(s.leader not in (controller, -1) and controller not in s.isr for s in states.values()) \
                    and states
            after = wait_for(moved, "new leaders for the dead controller's partitions", timeout=60)
            for p, s in after.items():
                assert s.leader in before[p].isr and s.leader_epoch > before[p].leader_epoch, (before[p], s)
                assert s.controller_epoch > epoch
            wait_metadata(cluster.bootstrap, TOPIC, lambda md, t: all(
                t.partitions[p].leader == after[p].leader for p in led), "the new leaders in the metadata")
            # Acknowledged after the failover too, on every partition.
            wait_for(lambda: len(history.acked) >= acked_at_kill + 300 or errors, "acks after the failover",
                     timeout=60)
            stop.set()
            producer.join(120)
            assert not errors, errors

            # The new controller acts: it places and leads a topic created now.
            create_topic(cluster.bootstrap, "after", partitions=2, rf=2)
            _, t = wait_metadata(cluster.bootstrap, "after", lambda md, t: len(t.partitions) == 2 and all(
                p.leader in cluster.procs and len(p.isrs) == 2 for p in t.partitions.values()),
                "the new topic led with a full ISR")
            assert all(set(p.replicas) <= set(cluster.procs) for p in t.partitions.values())

            final, hws = read_back(cluster.bootstrap, TOPIC, PARTITIONS)
            for p, log in final.items():  # no consumer read along: the read-back is the read
                for off, v in log.items():
                    history.on_read(p, off, v)
            replicas = replica_logs({i: cluster.base_dir / f"broker-{i}" for i in cluster.procs}, TOPIC,
                                    PARTITIONS, hws)
            report = history.check(final, replicas, hws)
            print(f"\ncontroller {controller} killed (epoch {epoch}), controller {new_controller} now: "
                  f"{report.figures()}")
            # Every send answered, none failed: the dead controller's partitions too.
            assert report.acknowledged == report.sent >= acked_at_kill + 300 and not report.failed
            assert report.ok, report.problems()

            # And it elects leaders: the other survivor killed, the partition of "after"
            # it led moves to the controller, the one replica left in its ISR.
            other = next(i for i in cluster.procs if i != new_controller)
            other_led = [p for p, part in t.partitions.items() if part.leader == other]
            assert other_led, f"broker {other} leads no partition of 'after': {t.partitions}"
            cluster.stop_broker(other, signal.SIGKILL)
            history.on_fault(f"SIGKILL broker {other}")
            wait_for(lambda: all(zk.get_partition_state("after", p).leader == new_controller for p in other_led),
                     f"controller {new_controller} electing itself leader of {other_led}", timeout=60)
    finally:
        stop.set()
        if producer is not None and producer.is_alive():
            producer.join(120)
        zk.close()
