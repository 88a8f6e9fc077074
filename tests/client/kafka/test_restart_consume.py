"""A ``pylog.connect`` group consumer while ``pylog serve`` is stopped (SIGTERM) and
restarted on the same port mid-stream, then killed (SIGKILL) and restarted.

The consumer polls in a thread of its own and commits after every poll that returned
records; it is held at two points of the stream (a gate, not a sleep) while the server
goes down, then polls on while the server is away and after it came back.  What must
hold:

- every record written (before and after the restarts) is read;
- per partition the offsets read are contiguous, except that after a restart the
  consumer may go back, but never before the offset it last committed successfully:
  it resumes from its committed offsets, so what it reads twice is at most what it
  had not committed yet;
- nothing escapes ``poll`` or ``commit`` but retriable errors (and, from ``commit``, the
  documented CommitFailedError / RebalanceInProgressError of a group that moved on);
- what was committed before the server went away (SIGTERM or SIGKILL) is still
  committed after it came back.

A ``commit`` while the server is away blocks for ``request_timeout_ms`` (as Kafka's
``commitSync`` does), hence the short request timeout (1 s: a request that takes longer
on a loaded machine ends in a retriable error, which the checks allow for).
"""

from __future__ import annotations

import socket
import threading
from collections import defaultdict

import pylog
from pylog.errors import CommitFailedError, PylogError, RebalanceInProgressError
from tests.server.conftest import ServeProcess, _check_stopped, wait_until

PARTITIONS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _produce(bootstrap: str, start: int, count: int) -> None:
    with pylog.connect(bootstrap) as client:
        producer = client.producer(linger_ms=5)
        futs = [producer.send("t", b"%06d" % i, key=b"k%d" % i) for i in range(start, start + count)]
        producer.flush(60)
        for f in futs:
            f.get(10)


class GroupReader(threading.Thread):
    """Polls a group consumer and commits after each poll; stops at each threshold of
    ``gates`` (records read) until the test opens that gate."""

    def __init__(self, bootstrap: str, gates: list[int]) -> None:
        super().__init__(name="restart-reader", daemon=True)
        self.bootstrap = bootstrap
        self.gates = [(n, threading.Event(), threading.Event()) for n in gates]   # (at, arrived, open)
        self.records: list[tuple[int, int, bytes]] = []          # (partition, offset, value)
        self.committed_at: list[tuple[int, dict[int, int]]] = []  # (records read then, offsets committed)
        self.retriable: list[BaseException] = []
        self.fatal: list[BaseException] = []
        self.polls = 0
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with pylog.connect(self.bootstrap, client_id="restart-reader", reconnect_backoff_max_ms=200,
                               request_timeout_ms=1000) as client:
                consumer = client.consumer("t", group_id="g", auto_offset_reset="earliest",
                                           enable_auto_commit=False, session_timeout_ms=6000,
                                           heartbeat_interval_ms=300, max_poll_records=50,
                                           fetch_max_wait_ms=100)
                while not self.stop.is_set():
                    for at, arrived, gate in self.gates:
                        if len(self.records) >= at and not gate.is_set():
                            arrived.set()
                            assert gate.wait(60), "the test never opened the gate"
                    try:
                        got = consumer.poll(timeout_ms=100)
                    except PylogError as exc:
                        if not exc.retriable:
                            raise
                        self.retriable.append(exc)
                        continue
                    finally:
                        self.polls += 1
                    if not got:
                        continue
                    self.records.extend((r.partition, r.offset, r.value) for r in got)
                    offsets = {tp.partition: consumer.position(tp) for tp in consumer.assignment()}
                    try:
                        consumer.commit()
                    except (CommitFailedError, RebalanceInProgressError) as exc:
                        self.retriable.append(exc)
                    except PylogError as exc:
                        if not exc.retriable:
                            raise
                        self.retriable.append(exc)
                    else:
                        self.committed_at.append((len(self.records), offsets))
                consumer.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.fatal.append(exc)

    def check_alive(self) -> None:
        assert not self.fatal, f"the consumer failed: {self.fatal!r}"


def test_group_consumer_resumes_from_committed_offsets_across_server_restarts(tmp_path):
    sp = ServeProcess(str(tmp_path / "data"), port=_free_port())
    sp.start()
    reader = GroupReader(sp.bootstrap, gates=[800, 1600])
    try:
        with pylog.connect(sp.bootstrap) as admin:
            admin.create_topic("t", PARTITIONS)
        _produce(sp.bootstrap, 0, 3000)
        reader.start()

        for i, (_, arrived, gate) in enumerate(reader.gates):
            wait_until(lambda: reader.check_alive() or arrived.is_set(), timeout=60,
                       what=f"the consumer to reach gate {i}")
            # The reader waits at the gate: its last successful commit is final until it goes on.
            last_commit = dict(reader.committed_at[-1][1])
            if i == 0:
                assert sp.stop() == 0, sp.log_text()[-3000:]      # SIGTERM: a clean stop
            else:
                sp.kill()                                           # SIGKILL: a crash
            polls = reader.polls
            gate.set()
            # The consumer polls while the server is away.
            wait_until(lambda: reader.check_alive() or reader.polls >= polls + 3, timeout=30,
                       what="the consumer to poll while the server is down")
            sp.start()
            # What was committed before the server went away is still committed.
            with pylog.connect(sp.bootstrap) as admin:
                stored = admin.fetch_offsets("g", {"t": range(PARTITIONS)}).topics["t"]
                for p, off in last_commit.items():
                    assert stored[p].offset >= off, f"partition {p}: committed {off}, stored {stored[p].offset}"
            n = len(reader.records)
            wait_until(lambda: reader.check_alive() or len(reader.records) > n, timeout=60,
                       what="the consumer to read again after the restart")

        _produce(sp.bootstrap, 3000, 1000)
        wait_until(lambda: reader.check_alive() or len({v for _, _, v in reader.records}) >= 4000,
                   timeout=90, what="the consumer to read every record")
        reader.stop.set()
        reader.join(60)
        assert not reader.is_alive()
        reader.check_alive()
    finally:
        reader.stop.set()
        for _, _, gate in reader.gates:
            gate.set()
        if reader.is_alive():
            reader.join(30)
        _check_stopped(sp)

    values = {v for _, _, v in reader.records}
    assert values == {b"%06d" % i for i in range(4000)}, "records were lost"

    # Per partition: contiguous, and every step back lands at or after the last commit.
    next_offset: dict[int, int] = defaultdict(int)
    committed: dict[int, int] = defaultdict(int)
    commits = iter(reader.committed_at)
    pending = next(commits, None)
    for n, (p, offset, _) in enumerate(reader.records):
        while pending is not None and pending[0] <= n:
            committed.update(pending[1])
            pending = next(commits, None)
        if offset > next_offset[p]:
            raise AssertionError(f"partition {p}: offsets {next_offset[p]}..{offset - 1} were skipped")
        if offset < next_offset[p]:
            assert offset >= committed[p], (
                f"partition {p}: went back to {offset}, before its committed offset {committed[p]}")
        next_offset[p] = offset + 1
    # Commits failed while the server was away (the consumer saw retriable errors), yet
    # nothing was lost.  pylog's coordinator stores group metadata with the offsets, so
    # the member usually keeps its generation across a restart and does not go back at
    # all; when it does rejoin, the check above holds it to committed offsets.
    assert reader.retriable, "no retriable error while the server was down?"


def test_a_new_member_resumes_from_offsets_committed_before_a_crash(tmp_path):
    """A member commits, the server is SIGKILLed and restarted, and a new member of the
    group (another client: nothing of the first one's state carries over) takes the
    partitions (once the old member's session has expired, as in Kafka): per partition
    it reads exactly the offsets from the committed one to the
    end (not from ``earliest``, not skipping any), each once."""
    sp = ServeProcess(str(tmp_path / "data"), port=_free_port())
    sp.start()
    try:
        with pylog.connect(sp.bootstrap) as admin:
            admin.create_topic("t", PARTITIONS)
        _produce(sp.bootstrap, 0, 2000)
        # The session the new member waits out (3 s), beyond the restart.
        with pylog.connect(sp.bootstrap) as client:
            first = client.consumer("t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False,
                                    max_poll_records=137, session_timeout_ms=3000, heartbeat_interval_ms=1000)
            read = 0
            while read < 900:
                read += len(first.poll(timeout_ms=1000))
            first.commit()
            committed = {tp.partition: first.position(tp) for tp in first.assignment()}
            # No clean leave: the crash takes the server away under the member.
            sp.kill()
            first.close(autocommit=False, timeout=0)    # its LeaveGroup cannot arrive: not waited for
        assert len(committed) == PARTITIONS and sum(committed.values()) == read < 2000, (committed, read)
        sp.start()
        _produce(sp.bootstrap, 2000, 500)
        with pylog.connect(sp.bootstrap) as client:
            ends = client.consumer().end_offsets([("t", p) for p in range(PARTITIONS)])
            second = client.consumer("t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False,
                                     session_timeout_ms=6000)
            got: list = []
            wait_until(lambda: got.extend(second.poll(timeout_ms=200)) or len(got) >= 2500 - read,
                       timeout=60, what="the new member to read what was not committed")
            got.extend(second.poll(timeout_ms=300))
            second.close()
        for p in range(PARTITIONS):
            offsets = [r.offset for r in got if r.partition == p]
            end = next(v for tp, v in ends.items() if tp.partition == p)
            assert offsets == list(range(committed[p], end)), (
                f"partition {p}: read {offsets[:3]}..{offsets[-3:]}, committed {committed[p]}, end {end}")
    finally:
        _check_stopped(sp)
