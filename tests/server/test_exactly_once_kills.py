"""Exactly-once consume-transform-produce against ``pylog serve``, under SIGKILL.

A processor subprocess (tests/server/eos_processor.py: read_committed consumer in a
group, transactional producer, offsets in the transaction) turns an input topic of 3
partitions into an output topic; the test SIGKILLs it at moments drawn from a seeded RNG
(right after a commit, with records of an open transaction acknowledged, with the
offsets sent but not committed, a random delay after a commit, anywhere in start-up) and
restarts it, until the input is consumed.  Then the output topic read with
read_committed must be exactly the transform of the input: nothing lost, nothing twice,
each partition in order.  Variants: confluent-kafka's transactional API as the
processor; a dynamic group member; the SERVER killed while it ends a transaction
(``PYLOG_TEST_TXN_CRASH``) or at random moments; a stalled processor fenced by its
successor.  And a transaction left open by a killed producer is aborted by the
coordinator's timeout.

Seeds are in the test ids and the assertion messages; ``-s`` shows each run's tally
(records, lost, duplicated, kills by moment, run time).
"""

from __future__ import annotations

import collections
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

import pylog
from pylog.broker.core import TopicPartition
from server.util import unique, wait_for
from tests.client.helpers import read_to_end

sys.path.insert(0, os.path.dirname(__file__))
from eos_processor import INPUT_PARTITIONS, transform  # noqa: E402

PROCESSOR = os.path.join(os.path.dirname(__file__), "eos_processor.py")
#: Small layouts, and the coordinator's scan for timed-out transactions every 200 ms.
TXN_OVERRIDES = {"transaction.state.log.num.partitions": "4",
                 "transaction.abort.timed.out.transaction.cleanup.interval.ms": "200"}
#: Kill moments: the line of the processor at which it is killed ("delay": a random time
#: after its last commit, wherever it is then; "startup": a random time after it started).
KILL_KINDS = ("committed", "produced", "offsets", "delay", "startup")
LINE_WAIT_S = 60


class Processor:
    """One run of eos_processor.py (or another ``script`` speaking its line protocol, as
    tests/streams/eos_streams_app.py); its stdout lines are queued as they come."""

    def __init__(self, args: list[str], stderr_path: str, lockstep: bool = False, script: str = PROCESSOR) -> None:
        self._stderr = open(stderr_path, "ab")
        self.lockstep = lockstep
        self.proc = subprocess.Popen([sys.executable, script, *args, *(["--lockstep"] if lockstep else [])],
                                     stdin=subprocess.PIPE if lockstep else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._stderr,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.last = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode().strip())
        self.lines.put(None)

    def next_line(self, timeout: float = LINE_WAIT_S) -> str | None:
        """The next line; None once the process has ended."""
        line = self.lines.get(timeout=timeout)
        if line is not None:
            self.last = line
        return line

    def go_on(self, free: bool = False) -> None:
        """In lock-step, let the processor past the line it stopped at (``free``: and
        every later one)."""
        if self.lockstep:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"run\n" if free else b"\n")
            self.proc.stdin.flush()
            self.lockstep = not free

    def wait_for_line(self, prefix: str) -> bool:
        """Read lines up to one starting with ``prefix`` (True; in lock-step the processor
        waits there), or the end (False)."""
        while True:
            line = self.next_line()
            if line is None or line == "done":
                return False
            if line.startswith(prefix):
                return True
            self.go_on()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._release()

    def finish(self, timeout: float = 120) -> int:
        """Wait for the run to end by itself; its exit status (``last``: its last line)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            self._release()
            while self.next_line(0) is not None:
                pass

    def _release(self) -> None:
        self.proc.wait(30)
        self._reader.join(30)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        self._stderr.close()


class Loop:
    """An input topic of ``records`` records, the output topic, and the processor's
    settings: everything a run of the exactly-once loop needs."""

    def __init__(self, bootstrap: str, tmp_path, records: int, client: str = "pylog", max_records: int = 20,
                 static: bool = True) -> None:
        self.bootstrap = bootstrap
        self.input, self.output = unique("eos-in"), unique("eos-out")
        self.group, self.tid = unique("eos-group"), unique("eos-tx")
        self.client = client
        self.max_records = max_records
        # A dynamic member's successor waits for the killed member's session to expire.
        self.membership = [] if static else ["--instance", "", "--session-timeout-ms", "1000"]
        self.stderr_path = str(tmp_path / f"{self.input}.processor.log")
        self.expected: dict[int, list[bytes]] = {p: [] for p in range(INPUT_PARTITIONS)}
        with pylog.connect(bootstrap) as c:
            c.create_topic(self.input, INPUT_PARTITIONS)
            c.create_topic(self.output, INPUT_PARTITIONS)
            with c.producer(linger_ms=5) as p:
                for i in range(records):
                    part = i % INPUT_PARTITIONS
                    value = b"%d-%06d" % (part, i)
                    p.send(self.input, value, key=b"k%d" % i, partition=part)
                    self.expected[part].append(transform(value))
                p.flush()

    def start(self, lockstep: bool = False) -> Processor:
        return Processor(["process", "--bootstrap", self.bootstrap, "--client", self.client,
                          "--input", self.input, "--output", self.output, "--group", self.group,
                          "--transactional-id", self.tid, "--max-records", str(self.max_records),
                          *self.membership],
                         self.stderr_path, lockstep)

    def stderr(self) -> str:
        with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-5000:]

    def kill_randomly(self, rng: random.Random, kills: int) -> collections.Counter:
        """Start the processor ``kills`` times and SIGKILL each run at a moment drawn from
        ``rng``; returns how many kills of each kind were made."""
        kinds: collections.Counter = collections.Counter()
        for n in range(kills):
            proc = self.start(lockstep=True)
            try:
                kind = rng.choice(KILL_KINDS)
                kinds[kind] += 1
                if kind == "startup":
                    # Anywhere in start-up: InitProducerId, joining the group, the first fetch.
                    time.sleep(rng.uniform(0, 1.0))
                    continue
                assert proc.wait_for_line("ready"), f"run {n} ended before it was ready:\n{self.stderr()}"
                for _ in range(rng.randint(0, 2)):      # let it commit a little first
                    proc.go_on()
                    assert proc.wait_for_line("committed"), \
                        f"run {n}: the input was consumed after {n} kills (too few records):\n{self.stderr()}"
                proc.go_on(free=kind == "delay")
                if kind == "delay":
                    # A random moment (a transaction takes a few ms), not a synchronisation.
                    time.sleep(rng.uniform(0, 0.02))
                else:
                    assert proc.wait_for_line(kind), \
                        f"run {n}: ended before {kind!r} (last {proc.last!r}):\n{self.stderr()}"
            finally:
                proc.kill()
        return kinds

    def finish(self) -> None:
        """Run the processor until it has consumed the whole input."""
        proc = self.start()
        code = proc.finish()
        assert code == 0 and proc.last == "done", f"exit {code}, last line {proc.last!r}:\n{self.stderr()}"

    def finish_restarting(self, proc: Processor, restarts: int, limit: int = 8) -> int:
        """Wait for ``proc`` to consume the whole input, starting the processor again each
        time a run gives up (a server crash can outlast its request timeout); returns
        ``restarts`` plus the runs started here."""
        while True:
            code = proc.finish()
            if code == 0 and proc.last == "done":
                return restarts
            restarts += 1
            assert restarts <= limit, f"the processor failed {restarts} times:\n{self.stderr()}"
            proc = self.start()

    def check_output(self, what: str) -> dict[str, int]:
        """The output, read with read_committed, is exactly the transform of the input;
        returns the tally (records, lost, duplicated)."""
        with pylog.connect(self.bootstrap) as c:
            got = read_to_end(c, self.output, INPUT_PARTITIONS, "read_committed")
        want_all = collections.Counter(v for vs in self.expected.values() for v in vs)
        got_all = collections.Counter(v for vs in got.values() for v in vs)
        tally = {"records": sum(want_all.values()), "lost": sum((want_all - got_all).values()),
                 "duplicated": sum((got_all - want_all).values())}
        print(f"\n{what}: {tally}")
        assert tally["lost"] == 0 and tally["duplicated"] == 0, f"{what}: {tally}"
        for p in range(INPUT_PARTITIONS):
            assert got[p] == self.expected[p], f"{what}: partition {p} out of order"
        return tally


def run_kills(serve, tmp_path, *, seed: int, records: int, kills: int, client: str = "pylog",
              static: bool = True) -> None:
    sp = serve(TXN_OVERRIDES)
    loop = Loop(sp.bootstrap, tmp_path, records, client, static=static)
    start = time.monotonic()
    kinds = loop.kill_randomly(random.Random(seed), kills)
    loop.finish()
    loop.check_output(f"{client} processor ({'static' if static else 'dynamic'} member), seed {seed}, "
                      f"{kills} kills {dict(kinds)}, "
                      f"{time.monotonic() - start:.1f} s")


@pytest.mark.parametrize("seed", [1415])
def test_exactly_once_with_the_processor_killed_20_times(serve, tmp_path, seed):
    run_kills(serve, tmp_path, seed=seed, records=2000, kills=20)


@pytest.mark.long
@pytest.mark.parametrize("seed", [92653, 58979])
def test_exactly_once_with_the_processor_killed_100_times(serve, tmp_path, seed):
    run_kills(serve, tmp_path, seed=seed, records=20_000, kills=100)


@pytest.mark.parametrize("seed", [8462])
def test_exactly_once_with_a_dynamic_group_member_killed(serve, tmp_path, seed):
    """Without static membership the restarted processor is a new member: its first
    generation starts when the killed one's session has expired (KIP-447: the offsets go
    with the generation and member id)."""
    run_kills(serve, tmp_path, seed=seed, records=600, kills=5, static=False)


@pytest.mark.parametrize("seed", [3238])
def test_exactly_once_with_a_confluent_kafka_processor_killed(serve, tmp_path, seed):
    """librdkafka's transactional API as the processor.  Not run with the server killed:
    after a broker restart librdkafka's send_offsets_to_transaction can wait forever for
    its cached group coordinator, past its timeout, without sending TxnOffsetCommit
    (confluentinc/librdkafka#5456, #5511; seen here with the server answering
    FindCoordinator and the group Stable)."""
    pytest.importorskip("confluent_kafka")
    run_kills(serve, tmp_path, seed=seed, records=800, kills=8, client="confluent")


@pytest.mark.parametrize("point", ["after-prepare", "after-markers"])
def test_exactly_once_with_the_server_killed_while_ending_a_transaction(serve, tmp_path, monkeypatch, point):
    """Mid-loop, the server is restarted with ``PYLOG_TEST_TXN_CRASH=point``: it kills
    itself while ending the processor's next transaction (PrepareCommit durable and no
    marker written, or the markers written and CompleteCommit not).  It is started again;
    the processor (restarted if it gave up) finishes and the output is still exact."""
    sp = serve(TXN_OVERRIDES)
    loop = Loop(sp.bootstrap, tmp_path, 600)
    start = time.monotonic()
    proc = loop.start(lockstep=True)
    try:
        for _ in range(3):
            assert proc.wait_for_line("committed"), loop.stderr()
            proc.go_on()
        # Held between two transactions while the server is swapped, so the transaction
        # the server dies in is a commit (its first EndTxn), not an abort of one cut short.
        assert proc.wait_for_line("committed"), loop.stderr()
        assert sp.stop() == 0, sp.log_text()[-3000:]
        monkeypatch.setenv("PYLOG_TEST_TXN_CRASH", point)
        sp.start()
        monkeypatch.delenv("PYLOG_TEST_TXN_CRASH")
        proc.go_on(free=True)
        wait_for(lambda: sp.proc is None or sp.proc.poll() is not None, "the server to kill itself", LINE_WAIT_S)
        assert f"PYLOG_TEST_TXN_CRASH={point}" in sp.log_text()
        sp.kill()
        sp.start()
        restarts = loop.finish_restarting(proc, 0)
    finally:
        proc.kill()
    loop.check_output(f"server killed at {point}, processor restarted {restarts} times, "
                      f"{time.monotonic() - start:.1f} s")


def test_a_transaction_of_a_killed_producer_is_aborted_at_its_timeout(serve, tmp_path):
    """A producer SIGKILLed with a transaction open (transaction_timeout_ms=1000): the
    coordinator aborts it, the partition's last stable offset moves past it, a
    read_committed consumer reads the records committed after it, never its own."""
    sp = serve(TXN_OVERRIDES)
    topic, abandoned = unique("eos-timeout"), unique("eos-open")
    with pylog.connect(sp.bootstrap) as c:
        c.create_topic(topic, 1)
        proc = Processor(["open-txn", "--bootstrap", sp.bootstrap, "--output", topic,
                          "--transactional-id", abandoned, "--max-records", "5",
                          "--transaction-timeout-ms", "1000"], str(tmp_path / "open-txn.log"))
        try:
            assert proc.wait_for_line("open"), (tmp_path / "open-txn.log").read_text()
        finally:
            proc.kill()
        p = c.producer(transactional_id=unique("eos-after"), linger_ms=1)
        p.init_transactions()
        p.begin_transaction()
        for i in range(3):
            p.send(topic, b"after-%d" % i, partition=0)
        p.commit_transaction()
        p.close()
        tp = TopicPartition(topic, 0)
        consumer = c.consumer(isolation_level="read_committed")
        try:
            # 5 abandoned records, their abort marker, 3 committed ones and their marker:
            # the LSO is 10 once the coordinator has aborted the abandoned transaction.
            wait_for(lambda: consumer.end_offsets([tp])[tp] == 10,
                     "the last stable offset to move past the abandoned transaction")
            assert c.list_offsets(topic, 0, -1).offset == 10
        finally:
            consumer.close()
        assert read_to_end(c, topic, 1, "read_committed") == {0: [b"after-0", b"after-1", b"after-2"]}
        uncommitted = read_to_end(c, topic, 1, "read_uncommitted")[0]
        assert uncommitted == [b"abandoned-%d" % i for i in range(5)] + [b"after-0", b"after-1", b"after-2"]
    # The coordinator fenced the timed-out producer (epoch bumped) and ended it aborted.
    described = describe_transaction(sp.bootstrap, abandoned)
    assert (described["TransactionState"], described["ProducerEpoch"], described["TopicPartitions"]) == \
        ("CompleteAbort", "1", "")


def describe_transaction(bootstrap: str, transactional_id: str) -> dict[str, str]:
    """``pylog transactions describe``'s answer: column name -> value."""
    out = subprocess.run([sys.executable, "-m", "pylog.cli", "transactions", "describe", "--bootstrap-server",
                          bootstrap, "--transactional-id", transactional_id],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    header, row = out.splitlines()
    return dict(zip(header.split("\t"), row.split("\t")))


def test_transactions_describe_names_the_coordinator_broker(server):
    tid = unique("eos-describe")
    with pylog.connect(server.bootstrap) as c:
        c.create_topic(unique("eos-describe"), 1)
        broker_ids = {p.leader for t in c.describe_topics().values() for p in t.partitions}
        with c.producer(transactional_id=tid) as p:
            p.init_transactions()
    assert int(describe_transaction(server.bootstrap, tid)["CoordinatorId"]) in broker_ids


@pytest.mark.parametrize("stage", ["produced", "offsets"])
def test_a_zombie_processor_is_fenced_and_its_transaction_never_visible(serve, tmp_path, stage):
    """A processor stalls in a transaction (records acknowledged, or offsets sent too); a
    successor with the same transactional id takes over and makes progress; when the
    stalled one resumes it is fenced (it ends with ProducerFencedError) and the output
    stays exact."""
    sp = serve(TXN_OVERRIDES)
    loop = Loop(sp.bootstrap, tmp_path, 600)
    zombie = loop.start(lockstep=True)
    try:
        assert zombie.wait_for_line("committed"), loop.stderr()
        zombie.go_on()
        assert zombie.wait_for_line(stage), loop.stderr()
        successor = loop.start(lockstep=True)
        try:
            for _ in range(3):
                assert successor.wait_for_line("committed"), loop.stderr()
                successor.go_on()
            zombie.go_on(free=True)
            assert zombie.finish() == 1, loop.stderr()
            assert "ProducerFencedError" in loop.stderr()
            successor.go_on(free=True)
            assert successor.finish() == 0 and successor.last == "done", loop.stderr()
        finally:
            successor.kill()
    finally:
        zombie.kill()
    loop.check_output(f"zombie stalled at {stage!r}")


@pytest.mark.parametrize("seed", [2643])
def test_exactly_once_with_the_server_sigkilled_at_random_moments(serve, tmp_path, seed):
    """The SERVER is SIGKILLed 3 times at random moments of the loop (a random delay
    after one of the processor's commits) and started again on its data directory; the
    processor goes on (restarted when it gave up) and the output is still exact."""
    rng = random.Random(seed)
    sp = serve(TXN_OVERRIDES)
    loop = Loop(sp.bootstrap, tmp_path, 1500)
    start = time.monotonic()
    proc = loop.start()
    restarts = 0
    try:
        for _ in range(3):
            for _ in range(rng.randint(1, 3)):
                while not proc.wait_for_line("committed"):
                    assert proc.finish() != 0 or proc.last != "done", "the input was consumed too soon"
                    restarts += 1
                    assert restarts <= 8, f"the processor failed {restarts} times:\n{loop.stderr()}"
                    proc = loop.start()
            time.sleep(rng.uniform(0, 0.02))    # a random moment, not a synchronisation
            sp.kill()
            sp.start()
        restarts = loop.finish_restarting(proc, restarts)
    finally:
        proc.kill()
    loop.check_output(f"server SIGKILLed 3 times, seed {seed}, processor restarted {restarts} times, "
                      f"{time.monotonic() - start:.1f} s")
