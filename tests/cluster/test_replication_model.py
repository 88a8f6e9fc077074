"""Model-based test of the replication state machine (pylog.cluster.replication).

Hypothesis drives three replicas of one partition, each a :class:`Partition` over an
in-memory log, plus a small controller standing in for ZooKeeper (partition state
written by compare-and-set on its version, leader election from the ISR on broker loss,
unclean election only when the example enables it), through: acks=all and acks=1
produces (to whichever replica believes it leads, zombies included); leadership moved
to another ISR member (preferred-leader election, controlled shutdown); follower fetches
split into send and receive, in any order between followers, with OffsetForLeaderEpoch
or DivergingEpoch truncation; LeaderAndIsr messages delivered late and out of order;
AlterPartition requests in flight (the controller's compare-and-set runs when one
arrives, whatever happened to its sender and the replicas it names meanwhile, and
refuses a replica whose broker epoch changed); the clock moving (ISR shrink); crashes
that lose each log's unflushed tail (cut at a random batch boundary at or above the
flushed offset) and restarts from the high watermark checkpoint; a replica cut off from
the controller (its session expires: the controller moves leadership away while the
replica keeps running as a zombie) and back; and links between two replicas cut and
healed.

After every step:

- at most one replica ever leads a given epoch;
- a leader's high watermark never goes back within its epoch, and once a new leader's
  high watermark moves it is at or above every high watermark committed before it;
- every batch below any replica's high watermark is the committed batch at that offset,
  byte for byte, for the whole history (so committed data never changes, and no
  replica, follower or zombie, shows consumers a record that later vanishes); and the
  current leader and its live ISR agree byte for byte below its high watermark;
- every acks=all-acknowledged batch is on every live member of the stored ISR, at its
  offset.

Kafka promises durability while one ISR member stays alive: when the last live member of
the stored ISR crashes (more failures than the ISR could absorb, e.g. RF-1 failures
after the ISR had already shrunk) or an unclean election happens, the history checks
stop for the rest of that example; the per-epoch and leader-vs-ISR checks go on.  At
most RF-1 replicas are down at once.

At the end of every example (liveness): every replica restarted, every session and
link restored, and some rounds of fetching later, there is one leader, the ISR holds all
three replicas, and every log is the leader's, batch for batch and epoch for epoch.

Kafka's rules are also checked one at a time by the small examples at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pylog.cluster.replication import (NO_LEADER, AppendInfo, FetchRequest, LeaderAndIsr, Partition)
from pylog.errors import (FencedLeaderEpochError, IneligibleReplicaError, InvalidUpdateVersionError,
                          NotEnoughReplicasAfterAppendError, NotEnoughReplicasError, NotLeaderError,
                          OperationNotAttemptedError)
from pylog.storage.leader_epoch import LeaderEpochCache

REPLICAS = (0, 1, 2)
LAG_MS = 30_000


@dataclass(frozen=True)
class Batch:
    base_offset: int
    last_offset: int
    leader_epoch: int
    payload: bytes


class MemoryLog:
    """A :class:`~pylog.cluster.replication.ReplicaLog` in memory, with the real leader
    epoch cache, and a flushed offset below which a crash loses nothing."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.epochs = LeaderEpochCache(None)
        self.flushed = 0
        self.log_start_offset = 0

    @property
    def log_end_offset(self) -> int:
        return self.batches[-1].last_offset + 1 if self.batches else 0

    @property
    def latest_epoch(self) -> int:
        return self.epochs.latest_epoch

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        return self.epochs.end_offset_for(epoch, self.log_end_offset)

    def assign_epoch_start_offset(self, epoch: int, start_offset: int) -> None:
        self.epochs.assign(epoch, start_offset)

    def append_as_leader(self, payloads: list[bytes], leader_epoch: int) -> tuple[int, int]:
        base = self.log_end_offset
        batch = Batch(base, base + len(payloads) - 1, leader_epoch, b"|".join(payloads))
        self.batches.append(batch)
        self.epochs.assign(leader_epoch, base)
        return batch.base_offset, batch.last_offset

    def append_as_follower(self, batches: tuple[Batch, ...]) -> None:
        if batches[0].base_offset != self.log_end_offset:
            raise ValueError(f"follower append at {batches[0].base_offset}, log ends at {self.log_end_offset}")
        for b in batches:
            self.batches.append(b)
            self.epochs.assign(b.leader_epoch, b.base_offset)

    def truncate_to(self, offset: int) -> None:
        while self.batches and self.batches[-1].last_offset >= offset:
            self.batches.pop()
        self.epochs.truncate_from_end(self.log_end_offset)
        self.flushed = min(self.flushed, self.log_end_offset)

    def read(self, from_offset: int, max_bytes: int, max_offset: int | None = None) -> tuple[Batch, ...] | None:
        out, size = [], 0
        for b in self.batches:
            if b.last_offset < from_offset:
                continue
            if (max_offset is not None and b.last_offset >= max_offset) or (out and size + len(b.payload) > max_bytes):
                break
            out.append(b)
            size += len(b.payload)
        return tuple(out) or None

    def crash(self, keep_batches: int) -> None:
        """Lose the unflushed tail: keep ``keep_batches`` beyond the flushed ones at most."""
        flushed = sum(1 for b in self.batches if b.last_offset < self.flushed)
        del self.batches[flushed + keep_batches:]
        # leader-epoch-checkpoint is written on every change, so it survives; recovery
        # clips it to the log's end.
        self.epochs.truncate_from_end(self.log_end_offset)


class Replica:
    def __init__(self, rid: int, truncate_on_fetch: bool, min_isr: int) -> None:
        self.rid = rid
        self.log = MemoryLog()
        self.truncate_on_fetch = truncate_on_fetch
        self.min_isr = min_isr
        self.hw_checkpoint = 0
        self.alive = True
        self.connected = True          # to the controller (its ZooKeeper session)
        self.broker_epoch = 0          # a new one at each registration
        self.partition: Partition | None = None
        self.start()

    def start(self) -> None:
        self.partition = Partition(self.rid, self.log, high_watermark=self.hw_checkpoint,
                                   replica_lag_time_max_ms=LAG_MS, min_insync_replicas=self.min_isr,
                                   truncate_on_fetch=self.truncate_on_fetch, broker_epoch=self.broker_epoch)


class ReplicationMachine(RuleBasedStateMachine):
    @initialize(unclean=st.sampled_from([False, False, False, True]), min_isr=st.sampled_from([1, 2]),
                truncate_on_fetch=st.tuples(st.booleans(), st.booleans(), st.booleans()))
    def setup(self, unclean, min_isr, truncate_on_fetch):
        self.now = 0
        self.unclean = unclean
        self.replicas = [Replica(r, truncate_on_fetch[r], min_isr) for r in REPLICAS]
        self.zk = LeaderAndIsr(0, 0, REPLICAS, 0)
        self.messages: list[tuple[int, LeaderAndIsr]] = []      # LeaderAndIsr in flight
        self.in_flight: dict[int, tuple] = {}                   # follower -> (leader, request, response)
        self.alter_in_flight: dict[int, tuple] = {}             # leader -> (partition, AlterPartition)
        self.cut: set[frozenset] = set()
        self.counter = 0
        self.pending_acks: list[tuple[Partition, AppendInfo, Batch]] = []
        self.acked: list[Batch] = []
        self.history_valid = True
        self.committed: dict[int, Batch] = {}
        self.max_committed_hw = 0
        self.leader_of_epoch: dict[int, int] = {}
        self.leader_hw: dict[tuple[int, int], tuple[int, int, int]] = {}   # (rid, epoch) -> (floor, first, last)
        for r in REPLICAS:
            self._apply(r, self.zk)

    # -- the controller ---------------------------------------------------------------

    def _visible(self) -> list[int]:
        return [r.rid for r in self.replicas if r.alive and r.connected]

    def _write(self, leader: int, isr: tuple[int, ...]) -> None:
        self.zk = LeaderAndIsr(leader, self.zk.leader_epoch + 1, isr, self.zk.partition_epoch + 1)
        for r in REPLICAS:
            self.messages.append((r, self.zk))

    def _on_broker_change(self) -> None:
        """Kafka's controller on a broker registering or going away: elect from the live
        ISR, drop dead followers from the ISR (keeping the last member), unclean election
        only when enabled."""
        live = self._visible()
        zk = self.zk
        live_isr = tuple(r for r in zk.isr if r in live)
        if zk.leader != NO_LEADER and zk.leader in live:
            if live_isr != zk.isr:
                self._write(zk.leader, live_isr)
        elif live_isr:
            self._write(live_isr[0], live_isr)
        elif self.unclean and live:
            self.history_valid = False
            self._write(live[0], (live[0],))
        elif zk.leader != NO_LEADER:
            self._write(NO_LEADER, zk.isr)   # offline until an ISR member comes back

    def _apply(self, rid: int, state: LeaderAndIsr) -> None:
        p = self.replicas[rid].partition
        try:
            if state.leader == rid:
                p.become_leader(state, REPLICAS, self.now)
            else:
                p.become_follower(state, REPLICAS)
        except FencedLeaderEpochError:
            pass                           # a stale message: the replica knows newer state

    def _alter_partition(self, request) -> tuple:
        zk = self.zk
        if request.leader_epoch != zk.leader_epoch or request.broker_id != zk.leader:
            return None, FencedLeaderEpochError()
        if request.partition_epoch != zk.partition_epoch:
            return None, InvalidUpdateVersionError()
        for r, epoch in zip(request.new_isr, request.new_isr_broker_epochs, strict=True):
            rep = self.replicas[r]
            if not (rep.alive and rep.connected) or epoch not in (-1, rep.broker_epoch):
                return None, IneligibleReplicaError()
        self.zk = LeaderAndIsr(zk.leader, zk.leader_epoch, request.new_isr, zk.partition_epoch + 1)
        return self.zk, None

    # -- rules --------------------------------------------------------------------------

    def _linked(self, a: int, b: int) -> bool:
        return frozenset((a, b)) not in self.cut

    def _leaders(self) -> list[int]:
        return [r.rid for r in self.replicas if r.alive and r.partition.is_leader]

    @precondition(lambda self: self._leaders())
    @rule(data=st.data(), acks=st.sampled_from([-1, -1, 1]), n=st.integers(1, 3))
    def produce(self, data, acks, n):
        rep = self.replicas[data.draw(st.sampled_from(self._leaders()))]
        self.counter += 1
        payloads = [b"p%d.%d" % (self.counter, i) for i in range(n)]
        leo = rep.log.log_end_offset
        try:
            info = rep.partition.append_records_to_leader(payloads, acks, self.now)
        except NotEnoughReplicasError:
            assert rep.log.log_end_offset == leo and len(rep.partition.isr) < rep.min_isr
            return
        batch = rep.log.batches[-1]
        assert (batch.base_offset, batch.last_offset) == (info.base_offset, info.last_offset) == (leo, leo + n - 1)
        if acks == -1:
            self.pending_acks.append((rep.partition, info, batch))

    @rule(rid=st.sampled_from(REPLICAS))
    def fetch_send(self, rid):
        rep = self.replicas[rid]
        p = rep.partition
        if not rep.alive or rid in self.in_flight or p.is_leader or p.leader_id == NO_LEADER:
            return
        leader = self.replicas[p.leader_id]
        if not leader.alive or not self._linked(rid, p.leader_id):
            return
        request = p.fetch_request(max_bytes=12)
        if request is None:
            return
        if isinstance(request, FetchRequest):
            response = leader.partition.fetch_for_follower(request, self.now)
        else:
            response = leader.partition.offset_for_leader_epoch(request)
        self.in_flight[rid] = (p.leader_id, request, response)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def fetch_receive(self, data):
        self._fetch_receive(data.draw(st.sampled_from(sorted(self.in_flight))))

    def _fetch_receive(self, rid: int) -> None:
        if rid not in self.in_flight:
            return
        leader, request, response = self.in_flight.pop(rid)
        if not self._linked(rid, leader):
            return
        p = self.replicas[rid].partition
        if isinstance(request, FetchRequest):
            p.handle_fetch_response(request, response)
        else:
            p.handle_offset_for_leader_epoch(request, response)

    @rule(rid=st.sampled_from(REPLICAS), rounds=st.integers(1, 4))
    def fetch_rounds(self, rid, rounds):
        for _ in range(rounds):
            self.fetch_send(rid)
            self._fetch_receive(rid)

    @rule(data=st.data(), produce=st.sampled_from([None, -1, 1]))
    def replication_round(self, data, produce):
        """Everyone does what a running cluster does in a moment: a produce, messages
        delivered, each follower fetches (in a random order), the leader runs its timer
        and talks to the controller."""
        if produce is not None and self._leaders():
            self.produce(data, produce, 1)
        self.deliver_all_leader_and_isr()
        for rid in data.draw(st.permutations(REPLICAS)):
            self.fetch_rounds(rid, 2)
        for rid in REPLICAS:
            self.shrink_timer(rid)
            self.alter_partition_send(rid)
            if data.draw(st.booleans()):   # else the answer arrives in a later step
                self._alter_partition_answer(rid)

    @rule(ms=st.sampled_from([100, 5_000, LAG_MS // 2, LAG_MS + 1]))
    def advance_time(self, ms):
        self.now += ms

    @rule(rid=st.sampled_from(REPLICAS))
    def shrink_timer(self, rid):
        rep = self.replicas[rid]
        if rep.alive:
            rep.partition.maybe_shrink_isr(self.now)

    @rule(rid=st.sampled_from(REPLICAS))
    def alter_partition_send(self, rid):
        rep = self.replicas[rid]
        # A zombie (session expired) still tries: the conditional write must fence it.
        if not rep.alive or rid in self.alter_in_flight:
            return
        request = rep.partition.poll_alter_partition()
        if request is not None:
            self.alter_in_flight[rid] = (rep.partition, request)

    @precondition(lambda self: self.alter_in_flight)
    @rule(data=st.data())
    def alter_partition_answer(self, data):
        self._alter_partition_answer(data.draw(st.sampled_from(sorted(self.alter_in_flight))))

    def _alter_partition_answer(self, rid: int) -> None:
        """The controller takes the request off the wire (whatever happened to its sender
        and the replicas it names meanwhile) and answers."""
        if rid not in self.alter_in_flight:
            return
        p, request = self.alter_in_flight.pop(rid)
        state, error = self._alter_partition(request)
        if self.replicas[rid].alive and p is self.replicas[rid].partition:
            p.alter_partition_response(request, state, error)

    @precondition(lambda self: self.messages)
    @rule(data=st.data())
    def deliver_leader_and_isr(self, data):
        deliverable = [i for i, (r, _) in enumerate(self.messages)
                       if self.replicas[r].alive and self.replicas[r].connected]
        if not deliverable:
            return
        i = data.draw(st.sampled_from(deliverable))
        rid, state = self.messages.pop(i)
        self._apply(rid, state)

    @rule()
    def deliver_all_leader_and_isr(self):
        while True:
            before = len(self.messages)
            for i, (r, state) in enumerate(self.messages):
                if self.replicas[r].alive and self.replicas[r].connected:
                    del self.messages[i]
                    self._apply(r, state)
                    break
            if len(self.messages) == before:
                return

    @rule(rid=st.sampled_from(REPLICAS))
    def flush(self, rid):
        rep = self.replicas[rid]
        if rep.alive:
            rep.log.flushed = rep.log.log_end_offset
            rep.hw_checkpoint = rep.partition.high_watermark

    @rule(rid=st.sampled_from(REPLICAS), keep=st.integers(0, 4))
    def crash(self, rid, keep):
        rep = self.replicas[rid]
        if not rep.alive or sum(not r.alive for r in self.replicas) >= len(REPLICAS) - 1:
            return
        if rid in self.zk.isr and not any(self.replicas[r].alive for r in self.zk.isr if r != rid):
            # The last live ISR member loses its unflushed tail: Kafka promises nothing.
            self.history_valid = False
        rep.alive = False
        rep.partition = None
        rep.log.crash(keep)
        self._forget(rid)
        self._on_broker_change()

    def _forget(self, rid: int) -> None:
        self.messages = [(r, s) for r, s in self.messages if r != rid]
        self.in_flight = {f: v for f, v in self.in_flight.items() if f != rid and v[0] != rid}

    @rule(rid=st.sampled_from(REPLICAS))
    def restart(self, rid):
        rep = self.replicas[rid]
        if rep.alive:
            return
        rep.alive = True
        rep.broker_epoch += 1
        rep.start()
        self._on_broker_change()
        self.messages.append((rid, self.zk))

    def _other_leaders(self) -> list[int]:
        visible = self._visible()
        return [r for r in self.zk.isr if r in visible and r != self.zk.leader]

    @precondition(lambda self: self._other_leaders())
    @rule(data=st.data())
    def move_leadership(self, data):
        """A preferred-leader election or a controlled shutdown: leadership moves to
        another live ISR member while the old leader runs on (with whatever it appended
        that the new one lacks)."""
        self._write(data.draw(st.sampled_from(self._other_leaders())), self.zk.isr)

    @rule(rid=st.sampled_from(REPLICAS))
    def session_expires(self, rid):
        rep = self.replicas[rid]
        if not rep.alive or not rep.connected or len(self._visible()) <= 1:
            return
        rep.connected = False
        self.messages = [(r, s) for r, s in self.messages if r != rid]
        self._on_broker_change()

    @rule(rid=st.sampled_from(REPLICAS))
    def session_restored(self, rid):
        rep = self.replicas[rid]
        if not rep.alive or rep.connected:
            return
        rep.connected = True
        rep.broker_epoch += 1               # it registers again
        rep.partition.broker_epoch = rep.broker_epoch
        self._on_broker_change()
        self.messages.append((rid, self.zk))

    @rule(a=st.sampled_from(REPLICAS), b=st.sampled_from(REPLICAS), heal=st.booleans())
    def network_link(self, a, b, heal):
        if a != b:
            (self.cut.discard if heal else self.cut.add)(frozenset((a, b)))

    @rule(rid=st.sampled_from(REPLICAS), offset=st.integers(0, 40))
    def consume(self, rid, offset):
        rep = self.replicas[rid]
        if not rep.alive:
            return
        p = rep.partition
        response = p.read_for_consumer(FetchRequest(-1, -1, offset, max_bytes=64))
        if response.records is None:
            return
        for b in response.records:
            assert b.last_offset < p.high_watermark, f"consumer read {b} above the high watermark of {p}"
            if self.history_valid:
                assert self.committed.get(b.base_offset) == b, f"consumer read uncommitted {b} from {p}"

    # -- the checks ---------------------------------------------------------------------

    def _complete_produces(self) -> None:
        still = []
        for p, info, batch in self.pending_acks:
            rep = self.replicas[p.replica_id]
            if not rep.alive or rep.partition is not p:
                continue                   # the broker died: the request timed out
            try:
                done = p.check_enough_replicas_reach_offset(info)
            except (NotLeaderError, NotEnoughReplicasAfterAppendError):
                continue
            if done:
                self.acked.append(batch)
            else:
                still.append((p, info, batch))
        self.pending_acks = still

    @invariant()
    def replication_is_safe(self):
        if not hasattr(self, "zk"):
            return
        self._complete_produces()
        live = [r for r in self.replicas if r.alive]
        for rep in live:
            p = rep.partition
            assert p.high_watermark <= rep.log.log_end_offset, p
            if p.is_leader:
                self._check_leader(rep)
            if self.history_valid:
                for b in rep.log.batches:
                    if b.last_offset >= p.high_watermark:
                        break
                    assert self.committed.setdefault(b.base_offset, b) == b, (
                        f"{p} shows {b} below its high watermark; committed was {self.committed[b.base_offset]}")
        zk = self.zk
        leader = self.replicas[zk.leader] if zk.leader != NO_LEADER else None
        if leader is not None and leader.alive and leader.partition.is_leader \
                and leader.partition.leader_epoch == zk.leader_epoch:
            hw = leader.partition.high_watermark
            expected = [b for b in leader.log.batches if b.last_offset < hw]
            for r in zk.isr:
                rep = self.replicas[r]
                if rep.alive and rep.connected:
                    assert rep.log.batches[:len(expected)] == expected, (
                        f"ISR member {rep.partition} disagrees with leader {leader.partition} below hw {hw}")
        if self.history_valid:
            isr_logs = [{b.base_offset: b for b in self.replicas[r].log.batches} for r in zk.isr
                        if self.replicas[r].alive]
            for b in self.acked:
                assert self.committed.get(b.base_offset) == b, f"acknowledged {b} is not committed"
                for log in isr_logs:
                    assert log.get(b.base_offset) == b, f"acknowledged {b} missing from an ISR member {zk}"

    def teardown(self):
        """Liveness: with every replica up, every session and link restored and the
        clock moving, replication converges: one leader, every replica in its ISR, all
        logs equal up to a high watermark at the log end."""
        if not hasattr(self, "zk"):
            return
        self.cut.clear()
        for rep in self.replicas:
            if not rep.alive:
                self.restart(rep.rid)
            if not rep.connected:
                self.session_restored(rep.rid)
        # Each fetch brings a batch or two (max_bytes=12): enough rounds for the longest log.
        for _ in range(10 + max(r.log.log_end_offset for r in self.replicas)):
            self.now += 1_000
            self.deliver_all_leader_and_isr()
            for rid in REPLICAS:
                self.fetch_rounds(rid, 4)
                self.alter_partition_send(rid)
                self._alter_partition_answer(rid)
            self.replication_is_safe()
            if self._converged():
                break
        leader = self.replicas[self.zk.leader].partition
        assert leader.is_leader and self.zk.isr == REPLICAS == leader.isr, (self.zk, leader)
        assert leader.high_watermark == leader.log.log_end_offset, leader
        def epochs(log):   # epochs that hold records (a leader's new epoch may hold none yet)
            return tuple(e for e in log.epochs.entries if e.start_offset < log.log_end_offset)

        for rep in self.replicas:
            assert rep.log.batches == leader.log.batches, (rep.partition, leader)
            assert epochs(rep.log) == epochs(leader.log), (rep.partition, leader)

    def _converged(self) -> bool:
        if self.zk.leader == NO_LEADER or self.messages or self.alter_in_flight:
            return False
        leader = self.replicas[self.zk.leader].partition
        return (leader.is_leader and leader.isr == REPLICAS and leader.high_watermark == leader.log.log_end_offset
                and all(r.log.batches == leader.log.batches for r in self.replicas))

    def _check_leader(self, rep: Replica) -> None:
        p = rep.partition
        epoch, hw = p.leader_epoch, p.high_watermark
        assert self.leader_of_epoch.setdefault(epoch, rep.rid) == rep.rid, f"two leaders in epoch {epoch}"
        key = (rep.rid, epoch)
        if key not in self.leader_hw:
            self.leader_hw[key] = (self.max_committed_hw, hw, hw)
        floor, first, last = self.leader_hw[key]
        assert hw >= last, f"{p}: high watermark went back from {last} to {hw}"
        if self.history_valid and hw > first:
            assert hw >= floor, f"{p}: new leader's high watermark {hw} is below the committed {floor}"
        self.leader_hw[key] = (floor, first, hw)
        if self.history_valid:
            self.max_committed_hw = max(self.max_committed_hw, hw)


ReplicationMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
test_replication_model = ReplicationMachine.TestCase


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_replication_model_long():
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(ReplicationMachine, settings=settings(
        max_examples=3000, stateful_step_count=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]))


# -- Kafka's rules one at a time -------------------------------------------------------

def _cluster(isr=REPLICAS, min_isr=1, truncate_on_fetch=True, epoch=0, logs=None):
    logs = logs or {r: MemoryLog() for r in REPLICAS}
    parts = {r: Partition(r, logs[r], min_insync_replicas=min_isr, truncate_on_fetch=truncate_on_fetch,
                          replica_lag_time_max_ms=LAG_MS) for r in REPLICAS}
    state = LeaderAndIsr(0, epoch, tuple(isr), 0)
    parts[0].become_leader(state, REPLICAS, now_ms=0)
    for r in (1, 2):
        parts[r].become_follower(state, REPLICAS)
    return parts


def _fetch(follower: Partition, leader: Partition, now_ms=0, rounds=1):
    for _ in range(rounds):
        request = follower.fetch_request()
        if isinstance(request, FetchRequest):
            follower.handle_fetch_response(request, leader.fetch_for_follower(request, now_ms))
        else:
            follower.handle_offset_for_leader_epoch(request, leader.offset_for_leader_epoch(request))


def test_high_watermark_waits_for_every_isr_member_and_completes_acks_all():
    parts = _cluster(min_isr=2)
    leader = parts[0]
    info = leader.append_records_to_leader([b"a", b"b"], -1, now_ms=0)
    assert (info.base_offset, info.last_offset) == (0, 1) and leader.high_watermark == 0
    _fetch(parts[1], leader)
    assert leader.high_watermark == 0          # replica 2 has not fetched in this epoch
    assert not leader.check_enough_replicas_reach_offset(info)
    _fetch(parts[2], leader)
    assert leader.high_watermark == 0          # it has the batch, but the leader learns that on its next fetch
    _fetch(parts[1], leader)
    _fetch(parts[2], leader)
    assert leader.high_watermark == 2 and leader.check_enough_replicas_reach_offset(info)
    assert parts[1].high_watermark == parts[2].high_watermark == 0   # followers learn it on their next fetch
    _fetch(parts[2], leader)
    assert parts[2].high_watermark == 2


def test_min_insync_replicas_before_and_after_the_append():
    parts = _cluster(isr=(0,), min_isr=2)
    with pytest.raises(NotEnoughReplicasError):
        parts[0].append_records_to_leader([b"x"], -1, now_ms=0)
    assert parts[0].log.log_end_offset == 0
    parts[0].append_records_to_leader([b"x"], 1, now_ms=0)   # acks=1 does not care
    parts = _cluster(isr=(0, 1), min_isr=2)
    leader = parts[0]
    info = leader.append_records_to_leader([b"y"], -1, now_ms=0)
    shrink = leader.maybe_shrink_isr(now_ms=LAG_MS + 1)     # replica 1 never caught up
    assert shrink.new_isr == (0,) and leader.maximal_isr == (0, 1)
    assert leader.high_watermark == 0                        # the pending shrink still waits for 1
    leader.alter_partition_response(shrink, LeaderAndIsr(0, 0, (0,), 1))
    assert leader.isr == (0,) and leader.high_watermark == 1
    with pytest.raises(NotEnoughReplicasAfterAppendError):
        leader.check_enough_replicas_reach_offset(info)


def test_a_refused_isr_change_stays_pending_until_leader_and_isr():
    parts = _cluster()
    leader = parts[0]
    leader.append_records_to_leader([b"a"], 1, now_ms=0)
    _fetch(parts[1], leader, now_ms=0, rounds=2)
    shrink = leader.maybe_shrink_isr(now_ms=LAG_MS + 1)     # 2 never fetched; 1 was caught up at 0
    assert shrink.new_isr == (0, 1) and leader.poll_alter_partition() is shrink
    assert leader.poll_alter_partition() is None
    leader.alter_partition_response(shrink, error=InvalidUpdateVersionError())
    assert leader.isr == REPLICAS and leader.pending_alter_partition is shrink
    assert leader.maybe_shrink_isr(now_ms=10 * LAG_MS) is None   # frozen while in flight
    assert leader.high_watermark == 0                        # still waits for replica 2
    leader.become_leader(LeaderAndIsr(0, 1, (0, 1), 5), REPLICAS, now_ms=10 * LAG_MS)
    assert leader.pending_alter_partition is None and leader.isr == (0, 1)


def test_isr_expansion_needs_the_current_epoch_start_offset():
    logs = {r: MemoryLog() for r in REPLICAS}
    parts = _cluster(isr=(0,), logs=logs)
    leader = parts[0]
    leader.append_records_to_leader([b"a"], 1, now_ms=0)
    # Replica 0 leads again in epoch 1, starting at offset 1, with an ISR of itself.
    leader.become_leader(LeaderAndIsr(0, 1, (0,), 1), REPLICAS, now_ms=0)
    assert leader.high_watermark == 1
    parts[1].become_follower(LeaderAndIsr(0, 1, (0,), 1), REPLICAS)
    request = FetchRequest(1, 1, fetch_offset=1, last_fetched_epoch=0)
    logs[1].append_as_follower(logs[0].read(0, 100))
    parts[1].log.epochs.assign(0, 0)
    leader.fetch_for_follower(request, now_ms=0)
    assert leader.poll_alter_partition().new_isr == (0, 1)  # at the HW and the epoch start (1)
    # A new leader whose high watermark lags (0) behind its epoch start offset (2): a
    # follower at offset 1 is past the high watermark but may miss records the old
    # leader committed, so it must not join yet.
    log = MemoryLog()
    log.append_as_leader([b"a"], 0)
    log.append_as_leader([b"b"], 0)
    leader = Partition(0, log)
    leader.become_leader(LeaderAndIsr(0, 1, (0, 1), 1), REPLICAS, now_ms=0)
    assert leader.high_watermark == 0
    leader.fetch_for_follower(FetchRequest(2, 1, fetch_offset=1), now_ms=0)
    assert leader.follower_state(2).log_end_offset == 1 and leader.poll_alter_partition() is None
    leader.fetch_for_follower(FetchRequest(2, 1, fetch_offset=2), now_ms=0)
    assert leader.poll_alter_partition().new_isr == (0, 1, 2)


def test_a_replica_that_restarted_since_it_was_proposed_is_not_added():
    # Replica 1 fetched (broker epoch 5) up to the high watermark, then restarted with a
    # shorter log before the proposal reached the controller (KIP-903).
    parts = _cluster(isr=(0,))
    leader = parts[0]
    leader.fetch_for_follower(FetchRequest(1, 0, 0, replica_epoch=5), now_ms=0)
    proposal = leader.poll_alter_partition()
    assert proposal.new_isr == (0, 1) and proposal.new_isr_broker_epochs == (-1, 5)
    leader.alter_partition_response(proposal, error=IneligibleReplicaError())
    assert leader.pending_alter_partition is None and leader.isr == (0,)
    leader.fetch_for_follower(FetchRequest(1, 0, 0, replica_epoch=6), now_ms=0)
    assert leader.poll_alter_partition().new_isr_broker_epochs == (-1, 6)


@pytest.mark.parametrize("dropped", ["ineligible", "not attempted", "abandoned"])
def test_a_dropped_isr_expansion_releases_the_high_watermark_at_once(dropped):
    # Replica 2 (shutting down: the controller will refuse it) fetched up to the high
    # watermark, so the leader proposed it; while that is pending the high watermark
    # waits for it too.  Replica 1 is caught up and parked in a long poll: nothing but
    # the controller's answer happens before the acks=all produce must complete.
    parts = _cluster(isr=(0, 1), min_isr=2)
    leader = parts[0]
    _fetch(parts[2], leader)
    proposal = leader.poll_alter_partition()
    assert proposal.new_isr == REPLICAS
    info = leader.append_records_to_leader([b"a"], -1, now_ms=0)
    _fetch(parts[1], leader, rounds=2)
    assert leader.follower_state(1).log_end_offset == 1 and leader.high_watermark == 0   # held by 2
    if dropped == "abandoned":
        moved = leader.abandon_alter_partition(proposal)
    else:
        error = IneligibleReplicaError() if dropped == "ineligible" else OperationNotAttemptedError()
        moved = leader.alter_partition_response(proposal, error=error)
    assert moved and leader.high_watermark == 1 and leader.check_enough_replicas_reach_offset(info)
    assert leader.pending_alter_partition is None and leader.isr == (0, 1)


@pytest.mark.parametrize("truncate_on_fetch", [True, False])
def test_a_follower_truncates_its_divergent_tail(truncate_on_fetch):
    # Replica 1 led epoch 0 and appended two batches; only the first reached replica 0,
    # which then led epoch 1 and appended its own second batch.
    logs = {r: MemoryLog() for r in REPLICAS}
    logs[1].append_as_leader([b"a"], 0)
    logs[1].append_as_leader([b"lost"], 0)
    logs[0].append_as_follower(logs[1].read(0, 1, 1))
    parts = _cluster(isr=(0, 1), truncate_on_fetch=truncate_on_fetch, epoch=1, logs=logs)
    parts[0].append_records_to_leader([b"new"], 1, now_ms=0)
    assert logs[0].epochs.entries == ((0, 0), (1, 1))
    _fetch(parts[1], parts[0], rounds=3)
    assert logs[1].batches == logs[0].batches and logs[1].epochs.entries == logs[0].epochs.entries


def test_requests_from_another_epoch_are_refused():
    parts = _cluster(epoch=3)
    leader = parts[0]
    stale = leader.fetch_for_follower(FetchRequest(1, 2, 0), now_ms=0)
    newer = leader.fetch_for_follower(FetchRequest(1, 4, 0), now_ms=0)
    assert isinstance(stale.error, FencedLeaderEpochError)
    assert type(newer.error).__name__ == "UnknownLeaderEpochError"
    assert isinstance(parts[1].fetch_for_follower(FetchRequest(2, 3, 0), now_ms=0).error, NotLeaderError)
    with pytest.raises(FencedLeaderEpochError):
        parts[1].become_follower(LeaderAndIsr(0, 2, REPLICAS, 9), REPLICAS)   # a stale LeaderAndIsr
    with pytest.raises(NotLeaderError):
        parts[1].append_records_to_leader([b"x"], 1, now_ms=0)
