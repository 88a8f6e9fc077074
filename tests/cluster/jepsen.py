"""What the fault tests check after the faults (imported as ``cluster.jepsen``).

:func:`replica_log` reads one replica's partition straight from a broker's data directory
(Kafka's layout: ``<topic>-<partition>/<base offset>.log`` segments of v2 batches, a torn
tail and the active segment's preallocated zeros ignored), so replicas are compared record
by record, with the leader epoch each batch was written in, without asking any broker.

:func:`replica_logs` waits until every replica holds the records below the high
watermarks and returns their logs; :func:`produce_until` is the run's producer (an
idempotent acks=all librdkafka producer writing :func:`value_of` values to every
partition in turn) and :func:`read_back` what a fresh consumer reads afterwards.

:class:`History` is a Jepsen-style record of one run: what a producer sent and which
sends were acknowledged (with the offset the leader answered), and what consumers read
while the faults went on. :meth:`History.check` compares it with the final logs:

- **lost**: an acknowledged record that the final log does not hold at its offset;
- **duplicated**: a value held at more than one offset;
- **moved**: an acknowledged record held at another offset than it was acknowledged at
  (librdkafka acknowledges some records without an offset: counted, checked for presence);
- **reordered**: within a partition, two records of the producer in the opposite order
  of their sends (values carry the send sequence);
- **vanished reads**: a record a consumer read that the final log does not hold at that
  offset (a consumer saw something that was later truncated away);
- **unread**: an acknowledged record the consumer reading along never read (it reads
  on after the producer stopped, until it has them all or a deadline passes);
- **divergent offsets**: an offset below the high watermark that two replicas hold
  with different records.

Thread safety: :class:`History` methods may be called from librdkafka's callbacks and the
test thread alike (one lock).
"""

from __future__ import annotations

import os
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pylog.records import iter_batches
from server.util import wait_for

__all__ = ["History", "Report", "batches_at", "produce_until", "read_back", "replica_log", "replica_logs", "value_of", "parse_value"]


def value_of(partition: int, seq: int) -> bytes:
    """The value of the producer's ``seq``-th send to ``partition``."""
    return f"{partition}:{seq}".encode()


def parse_value(value: bytes) -> tuple[int, int]:
    p, s = value.decode().split(":")
    return int(p), int(s)


def produce_until(bootstrap: str, topic: str, partitions: int, history: History, stop: threading.Event) -> None:
    """Send to every partition of ``topic`` in turn (values :func:`value_of`) with an
    idempotent acks=all librdkafka producer, recording sends and delivery reports in
    ``history``, until ``stop`` is set; then wait for every answer (AssertionError if
    some are missing 90 s later)."""
    import confluent_kafka
    p = confluent_kafka.Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        "linger.ms": 5, "message.timeout.ms": 60000, "retry.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500, "topic.metadata.refresh.interval.ms": 1000})
    seq = [0] * partitions
    while not stop.is_set():
        for part in range(partitions):
            v = value_of(part, seq[part])
            seq[part] += 1
            history.on_send(v)
            p.produce(topic, v, partition=part, on_delivery=history.on_delivery)
        p.poll(0.01)
    left = p.flush(90)
    assert left == 0, f"{left} records still unanswered 90 s after the run"


def read_back(bootstrap: str, topic: str, partitions: int, timeout: float = 60.0) -> tuple[dict, dict]:
    """What a fresh librdkafka consumer reads of ``topic`` from offset 0 up to the high
    watermarks: (partition -> offset -> value, partition -> high watermark)."""
    import confluent_kafka
    from confluent_kafka import TopicPartition
    cons = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-read-back",
                                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        deadline = time.monotonic() + timeout
        hws = {p: _high_watermark(cons, TopicPartition(topic, p), deadline) for p in range(partitions)}
        cons.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        final: dict[int, dict[int, bytes]] = {p: {} for p in range(partitions)}
        total = sum(hws.values())
        while sum(len(v) for v in final.values()) < total and time.monotonic() < deadline:
            msg = cons.poll(0.2)
            if msg is not None and msg.error() is None:
                final[msg.partition()][msg.offset()] = msg.value()
    finally:
        cons.close()
    return final, hws


def _high_watermark(cons: Any, tp: Any, deadline: float) -> int:
    """``tp``'s high watermark, asked again while the answer is that leadership is moving
    (a healthy cluster may still move a leader, e.g. back to its preferred replica, and
    librdkafka does not retry this query itself) until ``deadline``."""
    from confluent_kafka import KafkaError, KafkaException
    moving = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE}
    while True:
        try:
            return cons.get_watermark_offsets(tp, timeout=10)[1]
        except KafkaException as exc:
            if exc.args[0].code() not in moving or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def replica_log(data_dir: Path, topic: str, partition: int, *, with_epochs: bool = False) -> dict[int, Any]:
    """offset -> value of every data record in one replica's log on disk (control
    batches left out; a torn tail, as a broker being killed leaves it, ignored); with
    ``with_epochs``, offset -> (the batch's partition leader epoch, value)."""
    out: dict[int, bytes] = {}
    pdir = Path(data_dir) / f"{topic}-{partition}"
    if not pdir.is_dir():
        return out
    for seg in sorted(pdir.glob("*.log")):
        try:
            batches = iter_batches(_valid_prefix(seg), check_crc=True)
            for batch in batches:
                if batch.is_control:
                    continue
                for r in batch.records():
                    out[r.offset] = (batch.partition_leader_epoch, bytes(r.value)) if with_epochs else bytes(r.value)
        except ValueError:
            # A batch written while we read, or a torn tail: the rest of the segment is
            # not stable yet; what came before it is.
            pass
    return out


def batches_at(data_dir: Path, topic: str, partition: int, offsets: Any) -> list[str]:
    """The headers of the batches of one replica's log on disk that hold any of
    ``offsets``: offsets, partition leader epoch, producer id, producer epoch and
    sequences, which tell a broker appending one producer batch twice (same producer
    epoch and sequences) from a client sending its records again (a new epoch or new
    sequences)."""
    wanted = set(offsets)
    out = []
    pdir = Path(data_dir) / f"{topic}-{partition}"
    for seg in sorted(pdir.glob("*.log")) if pdir.is_dir() else ():
        try:
            for b in iter_batches(_valid_prefix(seg), check_crc=True):
                if any(b.base_offset <= o <= b.last_offset for o in wanted):
                    out.append(f"offsets {b.base_offset}-{b.last_offset} leader epoch {b.partition_leader_epoch} "
                               f"producer {b.producer_id} epoch {b.producer_epoch} "
                               f"sequences {b.base_sequence}-{b.last_sequence}")
        except ValueError:
            pass   # a torn tail, as in replica_log
    return out


def replica_logs(data_dirs: dict, topic: str, partitions: int, high_watermarks: dict[int, int],
                 timeout: float = 60.0) -> dict[int, dict[int, dict[int, bytes]]]:
    """broker -> partition -> :func:`replica_log`, once every replica in ``data_dirs``
    (broker -> data directory) holds at least the records below the high watermarks
    (a follower's log may trail the leader's for a moment); AssertionError after
    ``timeout`` s."""
    def caught_up():
        logs = {i: {p: replica_log(d, topic, p) for p in range(partitions)} for i, d in data_dirs.items()}
        return all(len(logs[i][p]) >= high_watermarks[p] for i in data_dirs for p in range(partitions)) and logs
    return wait_for(caught_up, f"every replica of {topic} holding the records below the high watermarks "
                    f"{high_watermarks}", timeout=timeout)


def _valid_prefix(segment: Path) -> bytes:
    """The bytes of ``segment`` up to the end of its last batch header chain: the active
    segment is preallocated (zeros after the last batch), and reading all of it would
    read the preallocated size."""
    end = 0
    with open(segment, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while end + 12 <= size:
            f.seek(end + 8)
            (length,) = struct.unpack(">i", f.read(4))
            if length <= 0 or end + 12 + length > size:
                break
            end += 12 + length
        f.seek(0)
        return f.read(end)


@dataclass
class Report:
    """The figures of one checked run (all but ``acknowledged``/``faults`` must be 0)."""

    faults: int = 0
    sent: int = 0
    acknowledged: int = 0
    acknowledged_without_offset: int = 0
    failed: int = 0
    consumed: int = 0
    lost: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    moved: list = field(default_factory=list)
    reordered: list = field(default_factory=list)
    vanished_reads: list = field(default_factory=list)
    divergent: list = field(default_factory=list)
    unread: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.moved or self.reordered or self.vanished_reads
                    or self.divergent or self.unread)

    def figures(self) -> str:
        return (f"faults injected {self.faults}, sent {self.sent}, acknowledged {self.acknowledged} "
                f"({self.acknowledged_without_offset} without an offset), "
                f"failed {self.failed}, consumed during the run {self.consumed}, lost {len(self.lost)}, "
                f"duplicated {len(self.duplicated)}, moved {len(self.moved)}, reordered {len(self.reordered)}, "
                f"vanished reads {len(self.vanished_reads)}, divergent offsets {len(self.divergent)}, "
                f"acknowledged but never read {len(self.unread)}")

    def problems(self) -> str:
        return "; ".join(f"{name}: {getattr(self, name)[:5]}" for name in
                         ("lost", "duplicated", "moved", "reordered", "vanished_reads", "divergent", "unread")
                         if getattr(self, name))


class History:
    """Sends, acknowledgements and reads of one run (module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all_read = threading.Condition(self._lock)
        self.sent: set[bytes] = set()
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.failed: dict[bytes, str] = {}
        self.reads: list[tuple[int, int, bytes]] = []
        self._read_values: set[bytes] = set()
        self._unread: set[bytes] = set()        # acknowledged, not read yet
        self.faults: list[str] = []

    def on_send(self, value: bytes) -> None:
        with self._lock:
            self.sent.add(value)

    def on_delivery(self, err, msg) -> None:  # librdkafka's delivery report
        with self._lock:
            if err is None:
                self.acked[msg.value()] = (msg.partition(), msg.offset())
                if msg.value() not in self._read_values:
                    self._unread.add(msg.value())
            else:
                self.failed[msg.value()] = str(err)

    def on_read(self, partition: int, offset: int, value: bytes) -> None:
        with self._lock:
            self.reads.append((partition, offset, value))
            self._read_values.add(value)
            self._unread.discard(value)
            if not self._unread:
                self._all_read.notify_all()

    def wait_all_read(self, timeout: float) -> bool:
        """Whether the consumers read every acknowledged record within ``timeout`` s."""
        with self._all_read:
            return self._all_read.wait_for(lambda: not self._unread, timeout)

    def on_fault(self, what: str) -> None:
        with self._lock:
            self.faults.append(what)

    def check(self, final: dict[int, dict[int, bytes]], replicas: dict[int, dict[int, dict[int, bytes]]],
              high_watermarks: dict[int, int]) -> Report:
        """``final``: partition -> offset -> value as a consumer reads it back after the
        run; ``replicas``: broker -> partition -> offset -> value from each data dir;
        ``high_watermarks``: partition -> the high watermark after the run."""
        with self._lock:
            rep = Report(faults=len(self.faults), sent=len(self.sent), acknowledged=len(self.acked),
                         failed=len(self.failed), consumed=len(self.reads))
            where: dict[bytes, list[tuple[int, int]]] = {}
            for p, log in final.items():
                for off, v in log.items():
                    where.setdefault(v, []).append((p, off))
            for v, places in where.items():
                if len(places) > 1:
                    rep.duplicated.append((v, places))
            for v, (p, off) in self.acked.items():
                places = where.get(v)
                if not places:
                    rep.lost.append((v, p, off))
                elif off is None or off < 0:
                    # librdkafka's idempotent producer acknowledges a batch whose own
                    # answer was lost once a later batch of the partition is answered
                    # (the sequence proves it was written): no offset to check.
                    rep.acknowledged_without_offset += 1
                elif (p, off) not in places:
                    rep.moved.append((v, (p, off), places))
            for p, log in final.items():
                last = -1
                for off in sorted(log):
                    vp, seq = parse_value(log[off])
                    if vp == p:
                        if seq <= last:
                            rep.reordered.append((p, off, seq, last))
                        last = max(last, seq)
            rep.unread = sorted(self._unread)
            for p, off, v in self.reads:
                if final.get(p, {}).get(off) != v:
                    rep.vanished_reads.append((p, off, v, final.get(p, {}).get(off)))
            for p, hw in high_watermarks.items():
                for off in range(hw):
                    held = {b: logs.get(p, {}).get(off) for b, logs in replicas.items()}
                    values = {v for v in held.values() if v is not None}
                    if len(values) > 1:
                        rep.divergent.append((p, off, held))
            return rep
