"""Mixed consumer groups: a ``pylog.connect`` consumer and a confluent-kafka (librdkafka)
or kafka-python consumer in one group, over an 8-partition topic on ``pylog serve``.

Each test runs one group through three phases, every member polling in a thread of its
own (librdkafka and pylog both run parts of the group protocol inside ``poll``) and
committing synchronously after each poll that returned records:

1. the *first* member is alone: it gets all 8 partitions and reads what was written
   before anyone joined;
2. the *second* joins: the partitions split 4/4 with no overlap and nothing missing (the
   first member leads the group, so its assignor computes the split and the other
   client applies it), and records written now are read by the owner of their partition;
3. the first leaves: the second gets all 8 (now it leads) and reads the rest.

Across the phases every record is read exactly once by the two members together: no
record is lost, and none is read again by the member that takes a partition over,
because the one that gave it up had committed it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import pylog
from pylog.errors import CommitFailedError, RebalanceInProgressError
from tests.server.conftest import wait_until
from tests.server.util import unique

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")

PARTITIONS = 8
SESSION_MS = 6000
HEARTBEAT_MS = 100

TP = tuple[str, int]


class Member(threading.Thread):
    """A group member polling in its own thread until :meth:`leave`.

    ``records`` are ``(topic, partition, offset)`` in the order read, ``assignment`` the
    partitions it owned after its last poll, ``errors`` what its poll or commit raised.
    """

    kind = "?"
    client_id = "?"

    def __init__(self, bootstrap: str, group: str, topic: str, strategy: str) -> None:
        super().__init__(name=f"member-{self.kind}", daemon=True)
        self.bootstrap, self.group, self.topic, self.strategy = bootstrap, group, topic, strategy
        self.records: list[tuple[str, int, int]] = []
        self.assignment: frozenset[TP] = frozenset()
        self.errors: list[BaseException] = []
        self.commit_failures: list[BaseException] = []
        self._stop_polling = threading.Event()
        self._lock = threading.Lock()

    # Hooks of each client kind.
    def open(self) -> None: ...
    def poll_once(self) -> list[tuple[str, int, int]]: ...
    def commit(self) -> None: ...
    def commit_failed(self, exc: BaseException) -> bool: ...
    def owned(self) -> frozenset[TP]: ...
    def close(self) -> None: ...

    def run(self) -> None:
        try:
            self.open()
            while not self._stop_polling.is_set():
                got = self.poll_once()
                if got:
                    try:
                        self.commit()
                    except Exception as exc:  # noqa: BLE001 - sorted out by commit_failed
                        # A commit racing a rebalance is refused (the group moved on): every
                        # client reports it, the records are then read again by their next owner.
                        if not self.commit_failed(exc):
                            raise
                        self.commit_failures.append(exc)
                with self._lock:
                    self.records.extend(got)
                    self.assignment = self.owned()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
        finally:
            try:
                self.close()
            except BaseException as exc:  # noqa: BLE001
                self.errors.append(exc)

    def leave(self) -> None:
        self._stop_polling.set()
        self.join(30)
        assert not self.is_alive(), f"{self.kind} member did not stop"

    def seen(self) -> list[tuple[str, int, int]]:
        with self._lock:
            return list(self.records)


class PylogMember(Member):
    kind = "pylog"
    client_id = "mix-pylog"

    def open(self) -> None:
        self.client = pylog.connect(self.bootstrap, client_id="mix-pylog")
        self.consumer = self.client.consumer(
            self.topic, group_id=self.group, auto_offset_reset="earliest", enable_auto_commit=False,
            partition_assignment_strategy=(self.strategy,), session_timeout_ms=SESSION_MS,
            heartbeat_interval_ms=HEARTBEAT_MS, fetch_max_wait_ms=100)

    def poll_once(self):
        return [(r.topic, r.partition, r.offset) for r in self.consumer.poll(timeout_ms=100)]

    def commit(self) -> None:
        self.consumer.commit()

    def commit_failed(self, exc: BaseException) -> bool:
        return isinstance(exc, (CommitFailedError, RebalanceInProgressError))

    def owned(self):
        return frozenset((tp.topic, tp.partition) for tp in self.consumer.assignment())

    def close(self) -> None:
        if hasattr(self, "client"):
            self.client.close()


class ConfluentMember(Member):
    kind = "confluent-kafka"
    client_id = "mix-librdkafka"

    def open(self) -> None:
        self.consumer = confluent_kafka.Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": self.group, "client.id": "mix-librdkafka",
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "partition.assignment.strategy": self.strategy, "session.timeout.ms": SESSION_MS,
            "heartbeat.interval.ms": HEARTBEAT_MS, "fetch.wait.max.ms": 100})
        self.consumer.subscribe([self.topic])

    def poll_once(self):
        out = []
        for m in self.consumer.consume(num_messages=500, timeout=0.1):
            if m.error() is not None:
                raise confluent_kafka.KafkaException(m.error())
            out.append((m.topic(), m.partition(), m.offset()))
        return out

    def commit(self) -> None:
        self.consumer.commit(asynchronous=False)

    def commit_failed(self, exc: BaseException) -> bool:
        from confluent_kafka import KafkaError

        return isinstance(exc, confluent_kafka.KafkaException) and exc.args[0].code() in (
            KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS, KafkaError.UNKNOWN_MEMBER_ID)

    def owned(self):
        return frozenset((tp.topic, tp.partition) for tp in self.consumer.assignment())

    def close(self) -> None:
        if hasattr(self, "consumer"):
            self.consumer.close()


class KafkaPythonMember(Member):
    kind = "kafka-python"
    client_id = "mix-kafka-python"

    def open(self) -> None:
        from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
        from kafka.coordinator.assignors.range import RangePartitionAssignor
        from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

        assignor = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor,
                    "cooperative-sticky": CooperativeStickyAssignor}[self.strategy]
        self.consumer = kafka.KafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group, client_id="mix-kafka-python",
            auto_offset_reset="earliest", enable_auto_commit=False, partition_assignment_strategy=[assignor],
            session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS, fetch_max_wait_ms=100,
            request_timeout_ms=15000)
        # Know the topic's partitions before joining (see tests/server/test_python_clients.py).
        assert self.topic in self.consumer.topics()
        self.consumer.subscribe([self.topic])

    def poll_once(self):
        return [(r.topic, r.partition, r.offset)
                for records in self.consumer.poll(timeout_ms=100).values() for r in records]

    def commit(self) -> None:
        self.consumer.commit()

    def commit_failed(self, exc: BaseException) -> bool:
        from kafka.errors import CommitFailedError as KafkaPythonCommitFailed
        from kafka.errors import RebalanceInProgressError as KafkaPythonRebalancing

        return isinstance(exc, (KafkaPythonCommitFailed, KafkaPythonRebalancing))

    def owned(self):
        return frozenset((tp.topic, tp.partition) for tp in self.consumer.assignment())

    def close(self) -> None:
        if hasattr(self, "consumer"):
            self.consumer.close()


PEERS: dict[str, type[Member]] = {"confluent-kafka": ConfluentMember, "kafka-python": KafkaPythonMember}


def _produce(client: Any, topic: str, start: int, count: int) -> set[tuple[str, int, int]]:
    producer = client.producer(linger_ms=5)
    futs = [producer.send(topic, f"v{i}".encode(), key=f"k{i}".encode()) for i in range(start, start + count)]
    producer.flush(30)
    out = {(topic, md.partition, md.offset) for md in (f.get(10) for f in futs)}
    producer.close()
    return out


def _alive(*members: Member) -> None:
    for m in members:
        assert not m.errors, f"{m.kind} member failed: {m.errors!r}"


def _run_group(bootstrap: str, first_cls: type[Member], second_cls: type[Member], strategy: str) -> None:
    topic, group = unique("mix-topic"), unique("mix")
    everything = {(topic, p) for p in range(PARTITIONS)}
    with pylog.connect(bootstrap, client_id="mix-admin") as client:
        client.create_topic(topic, PARTITIONS)
        written = _produce(client, topic, 0, 200)
        first = first_cls(bootstrap, group, topic, strategy)
        second = second_cls(bootstrap, group, topic, strategy)
        members = (first, second)
        try:
            # 1. Alone: all partitions, everything written so far.
            first.start()
            wait_until(lambda: _alive(first) or (first.assignment == everything and
                                                   set(first.seen()) >= written),
                       timeout=30, what=f"{first.kind} alone to own all partitions and read 200 records")

            # 2. Together: a 4/4 split, no overlap, nothing missing.
            second.start()

            def split() -> bool:
                _alive(*members)
                a, b = first.assignment, second.assignment
                return len(a) == len(b) == PARTITIONS // 2 and a | b == everything

            wait_until(split, timeout=30, what=f"the partitions to split between {first.kind} and {second.kind}")
            assert not first.assignment & second.assignment
            desc = wait_until(lambda: next((d for d in client.describe_groups([group]) if d.state == "Stable"), None),
                              timeout=30, what="the group to be Stable")
            assert desc.protocol_type == "consumer" and desc.protocol_data == strategy
            assert sorted(m.client_id for m in desc.members) == sorted(m.client_id for m in members)
            before = (len(first.seen()), len(second.seen()))
            written |= (phase2 := _produce(client, topic, 200, 400))
            wait_until(lambda: _alive(*members) or set(first.seen()) | set(second.seen()) >= written,
                       timeout=30, what="both members to read the records written while they share the group")
            assert split(), "the group rebalanced while both members were in it"
            for m in members:
                new = set(m.seen()[before[members.index(m)]:]) & phase2
                assert new, f"{m.kind} read none of the records written while the group was split"
                assert {(t, p) for t, p, _ in new} <= m.assignment, f"{m.kind} read partitions it does not own"

            # 3. The first leaves: the second owns everything and reads the rest.
            first.leave()
            _alive(first)
            wait_until(lambda: _alive(second) or second.assignment == everything, timeout=30,
                       what=f"{second.kind} to own all partitions after {first.kind} left")
            written |= _produce(client, topic, 600, 200)
            wait_until(lambda: _alive(second) or set(first.seen()) | set(second.seen()) >= written,
                       timeout=30, what=f"{second.kind} to read the records written after {first.kind} left")
            second.leave()
            _alive(*members)
        finally:
            for m in members:
                if m.is_alive():
                    m.leave()

    seen = first.seen() + second.seen()
    dups = sorted({r for r in seen if seen.count(r) > 1})
    assert not dups, f"records read twice across the group: {dups[:10]}"
    assert set(seen) == written


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
@pytest.mark.parametrize("first", ["pylog", "confluent-kafka"])
def test_pylog_and_librdkafka_share_a_group(kafka_server, strategy, first):
    pair = [PylogMember, ConfluentMember]
    if first != "pylog":
        pair.reverse()
    _run_group(kafka_server.bootstrap, pair[0], pair[1], strategy)


@pytest.mark.parametrize("strategy, first", [("range", "pylog"), ("roundrobin", "kafka-python"),
                                             ("cooperative-sticky", "pylog"), ("cooperative-sticky", "kafka-python")])
def test_pylog_and_kafka_python_share_a_group(kafka_server, strategy, first):
    pair = [PylogMember, KafkaPythonMember]
    if first != "pylog":
        pair.reverse()
    _run_group(kafka_server.bootstrap, pair[0], pair[1], strategy)
