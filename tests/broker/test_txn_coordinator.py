"""The transaction coordinator in the embedded broker (no network): Kafka's state machine,
its records in __transaction_state, fencing, timeouts, expiry, TxnOffsetCommit, and
recovery of transactions a crash left in PrepareCommit / PrepareAbort."""

from __future__ import annotations

import time

import pytest

from pylog import _core
from pylog.broker.core import READ_COMMITTED, Broker, OffsetAndMetadata
from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC, java_string_hash, partition_for_group
from pylog.broker.txn_coordinator import TransactionCoordinatorConfig
from pylog.broker.txn_log import (TRANSACTION_STATE_TOPIC, TransactionLogValue, TransactionState, decode_key,
                                  decode_value, encode_key, encode_value, partition_for_transactional_id)
from pylog.errors import CorruptRecordError, InvalidRequestError, KafkaStorageError
from pylog.records import RecordBatchBuilder

NONE = 0
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
INVALID_TRANSACTION_TIMEOUT = 50
CONCURRENT_TRANSACTIONS = 51
UNKNOWN_TOPIC_OR_PARTITION = 3
OPERATION_NOT_ATTEMPTED = 55
UNSTABLE_OFFSET_COMMIT = 88
PRODUCER_FENCED = 90
TRANSACTIONAL_ID_NOT_FOUND = 105


class Clock:
    """Hand-driven; starts at the wall clock so batches stamped now are in range."""

    def __init__(self) -> None:
        self.t = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.t


def open_broker(path, clock, **txn) -> Broker:
    cfg = TransactionCoordinatorConfig(transaction_state_log_num_partitions=4, **txn)
    return Broker(path, background=False, clock=clock, offsets_topic_num_partitions=4, txn=cfg)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def broker(tmp_path, clock):
    b = open_broker(tmp_path / "d", clock)
    b.create_topic("t", 2)
    b.create_topic("u", 1)
    yield b
    b.close()


class Txn:
    """A transactional producer driven by hand: its id, epoch and sequences."""

    def __init__(self, broker: Broker, tid: str, timeout_ms: int = 60000) -> None:
        self.broker = broker
        self.tid = tid
        self.timeout_ms = timeout_ms
        self.seq: dict[tuple[str, int], int] = {}
        self.init()

    def init(self):
        res = self.broker.init_producer_id(self.tid, self.timeout_ms)
        res.raise_for_error()
        self.pid, self.epoch = res.producer_id, res.producer_epoch
        self.seq.clear()
        return res

    def add(self, *partitions):
        return self.broker.add_partitions_to_txn(self.tid, self.pid, self.epoch, list(partitions))

    def produce(self, topic, partition, *values):
        seq = self.seq.get((topic, partition), 0)
        b = RecordBatchBuilder(producer_id=self.pid, producer_epoch=self.epoch, base_sequence=seq,
                               is_transactional=True)
        for v in values:
            b.append(None, None, v)
        res = self.broker.produce(topic, partition, b.build())
        if res.error_code == 0:
            self.seq[(topic, partition)] = seq + len(values)
        return res

    def end(self, commit: bool):
        return self.broker.end_txn(self.tid, self.pid, self.epoch, commit)


def committed_values(broker: Broker, topic: str, partition: int) -> list[bytes]:
    """What a read_committed consumer reads from the partition, as Kafka's consumer
    does: below the LSO, without control batches and without the records of the
    aborted transactions the fetch names."""
    res = broker.fetch(topic, partition, 0, 1 << 20, isolation_level=READ_COMMITTED)
    res.raise_for_error()
    aborted = sorted(res.aborted_transactions or [], key=lambda a: a[1])
    dropping: set[int] = set()
    out = []
    if res.records is None:
        return out
    for b in _core.iter_batches(res.records.records):
        while aborted and aborted[0][1] <= b.base_offset:
            dropping.add(aborted.pop(0)[0])
        if b.is_control:
            dropping.discard(b.producer_id)
            continue
        if b.is_transactional and b.producer_id in dropping:
            continue
        out.extend(r.value for r in b)
    return out


def state(broker: Broker, tid: str) -> str:
    return broker.describe_transactions([tid])[0].state


# ---------------------------------------------------------------------- the log format

def test_partition_of_a_transactional_id_is_kafkas_abs_hash_mod_partitions():
    for tid in ["my-txn", "tx-1", "zombie", "\u00e9t\u00e9", "a" * 40]:
        h = 0
        units = [int.from_bytes(tid.encode("utf-16-be")[i:i + 2], "big") for i in range(0, 2 * len(tid), 2)]
        for u in units:
            h = (h * 31 + u) % 2**32
        signed = h - 2**32 if h >= 2**31 else h
        assert java_string_hash(tid) == signed
        assert partition_for_transactional_id(tid, 50) == abs(signed) % 50
    # Integer.MIN_VALUE: Kafka's Utils.abs maps it to 0 ("polygenelubricants" hashes to it).
    assert java_string_hash("polygenelubricants") == -2**31
    assert partition_for_transactional_id("polygenelubricants", 50) == 0


def test_transaction_log_records_are_kafkas_bytes():
    key = encode_key("tx")
    assert key == b"\x00\x00\x00\x02tx"
    v = TransactionLogValue(producer_id=5, producer_epoch=2, transaction_timeout_ms=60000,
                            state=TransactionState.ONGOING, partitions={"a": [1, 0]},
                            last_update_timestamp_ms=10, start_timestamp_ms=9)
    raw = encode_value(v)
    # version 0: pid, epoch, timeout, status 1, one topic "a" with [0, 1], timestamps
    assert raw == bytes.fromhex("0000" "0000000000000005" "0002" "0000ea60" "01" "00000001" "0001" "61"
                                "00000002" "00000000" "00000001" "000000000000000a" "0000000000000009")
    back = decode_value(raw)
    assert (back.producer_id, back.producer_epoch, back.state, back.partitions) == (5, 2, TransactionState.ONGOING,
                                                                                 {"a": [0, 1]})
    empty = TransactionLogValue(7, 0, 1000, TransactionState.EMPTY, previous_producer_id=3,
                                client_transaction_version=2)
    for version in (0, 1):
        got = decode_value(encode_value(empty, version))
        assert got.state is TransactionState.EMPTY and got.partitions == {}
    assert decode_value(encode_value(empty, 1)).previous_producer_id == 3
    assert decode_key(key) == "tx"
    with pytest.raises(CorruptRecordError):
        decode_value(raw[:-3])
    with pytest.raises(InvalidRequestError):
        encode_value(TransactionLogValue(1, 0, 1, TransactionState.PREPARE_EPOCH_FENCE))


def test_every_state_change_is_a_record_in_the_ids_partition(broker):
    p = Txn(broker, "tx-log")
    p.add(("t", 0))
    p.produce("t", 0, b"x")
    assert p.end(True) == NONE
    part = partition_for_transactional_id("tx-log", 4)
    res = broker.fetch(TRANSACTION_STATE_TOPIC, part, 0)
    states = []
    for b in _core.iter_batches(res.records.records):
        for r in b:
            assert decode_key(r.key) == "tx-log"
            states.append(decode_value(r.value).state.state_name)
    assert states == ["Empty", "Ongoing", "PrepareCommit", "CompleteCommit"]
    assert broker.topic_config(TRANSACTION_STATE_TOPIC)["cleanup.policy"] == ["compact"]


# ---------------------------------------------------------------------- the state machine

def test_commit_makes_records_of_every_partition_visible_at_once(broker):
    p = Txn(broker, "tx-a")
    assert (p.pid, p.epoch) == (p.pid, 0) and state(broker, "tx-a") == "Empty"
    assert p.add(("t", 0), ("t", 1), ("u", 0)) == {("t", 0): 0, ("t", 1): 0, ("u", 0): 0}
    assert state(broker, "tx-a") == "Ongoing"
    for tp in [("t", 0), ("t", 1), ("u", 0)]:
        assert p.produce(*tp, b"a", b"b").error_code == 0
    assert broker.last_stable_offset("t", 0) == 0
    assert committed_values(broker, "t", 0) == []
    assert p.end(True) == NONE
    assert state(broker, "tx-a") == "CompleteCommit"
    for tp in [("t", 0), ("t", 1), ("u", 0)]:
        assert committed_values(broker, *tp) == [b"a", b"b"]
        assert broker.last_stable_offset(*tp) == broker.high_watermark(*tp) == 3   # 2 records + marker
    # A retried EndTxn of the same outcome succeeds; the other outcome does not.
    assert p.end(True) == NONE
    assert p.end(False) == INVALID_TXN_STATE


def test_abort_hides_the_records_and_the_next_transaction_goes_on(broker):
    p = Txn(broker, "tx-b")
    p.add(("t", 0))
    p.produce("t", 0, b"gone")
    assert p.end(False) == NONE
    assert state(broker, "tx-b") == "CompleteAbort"
    p.add(("t", 0))
    p.produce("t", 0, b"kept")
    assert p.end(True) == NONE
    assert committed_values(broker, "t", 0) == [b"kept"]


def test_produce_to_a_partition_not_in_the_transaction_is_refused(broker):
    p = Txn(broker, "tx-c")
    assert p.produce("t", 0, b"x").error_code == INVALID_TXN_STATE
    p.add(("t", 1))
    assert p.produce("t", 0, b"x").error_code == INVALID_TXN_STATE
    assert p.produce("t", 1, b"x").error_code == 0
    assert broker.add_partitions_to_txn("tx-c", p.pid, p.epoch, [("t", 1), ("t", 0)], verify_only=True) == {
        ("t", 1): NONE, ("t", 0): INVALID_TXN_STATE}


def test_add_partitions_errors(broker):
    p = Txn(broker, "tx-d")
    res = p.add(("t", 0), ("nope", 0), ("t", 7))
    assert res == {("t", 0): OPERATION_NOT_ATTEMPTED, ("nope", 0): UNKNOWN_TOPIC_OR_PARTITION,
                   ("t", 7): UNKNOWN_TOPIC_OR_PARTITION}
    assert state(broker, "tx-d") == "Empty"
    assert broker.add_partitions_to_txn("unknown", p.pid, p.epoch, [("t", 0)]) == {("t", 0): INVALID_PRODUCER_ID_MAPPING}
    assert broker.add_partitions_to_txn("tx-d", p.pid + 1, p.epoch, [("t", 0)]) == {
        ("t", 0): INVALID_PRODUCER_ID_MAPPING}
    assert broker.end_txn("tx-d", p.pid, p.epoch, True) == INVALID_TXN_STATE    # nothing open
    assert broker.init_producer_id("tx-d", 900_001).error_code == INVALID_TRANSACTION_TIMEOUT
    assert broker.init_producer_id("tx-d", 0).error_code == INVALID_TRANSACTION_TIMEOUT
    assert broker.init_producer_id("", 1000).error_code == InvalidRequestError.error_code


def test_init_producer_id_bumps_the_epoch_and_keeps_the_id(broker):
    p = Txn(broker, "tx-e")
    first = (p.pid, p.epoch)
    p.init()
    assert (p.pid, p.epoch) == (first[0], first[1] + 1)
    # KIP-360: the producer names its id and epoch; a retry of that bump gets the same answer.
    res = broker.init_producer_id("tx-e", 60000, producer_id=p.pid, producer_epoch=p.epoch)
    assert (res.error_code, res.producer_epoch) == (0, p.epoch + 1)
    again = broker.init_producer_id("tx-e", 60000, producer_id=p.pid, producer_epoch=p.epoch)
    assert (again.error_code, again.producer_epoch) == (0, p.epoch + 1)
    assert broker.init_producer_id("tx-e", 60000, producer_id=p.pid, producer_epoch=0).error_code == PRODUCER_FENCED


def test_an_exhausted_epoch_moves_to_a_new_producer_id(broker, tmp_path, clock):
    p = Txn(broker, "tx-f")
    meta = broker.transactions._txns["tx-f"]
    broker.transactions._put(type(meta)(**{**meta.__dict__, "producer_epoch": 32766}))
    old = p.pid
    p.init()
    assert p.pid != old and p.epoch == 0
    assert broker.transactions.metadata("tx-f").previous_producer_id == old


def test_a_zombie_is_fenced_and_its_open_transaction_aborted(broker):
    zombie = Txn(broker, "tx-z")
    zombie.add(("t", 0))
    assert zombie.produce("t", 0, b"zombie-1").error_code == 0
    fresh = Txn(broker, "tx-z")
    assert fresh.pid == zombie.pid and fresh.epoch >= zombie.epoch + 1
    # The zombie's transaction was aborted under a fencing epoch; its later calls fail.
    assert zombie.produce("t", 0, b"zombie-2").error_code == INVALID_PRODUCER_EPOCH
    assert zombie.add(("t", 1)) == {("t", 1): PRODUCER_FENCED}
    assert zombie.end(True) == PRODUCER_FENCED
    assert broker.txn_offset_commit("tx-z", "g", zombie.pid, zombie.epoch, {"t": {0: 1}}) == {"t": {0: PRODUCER_FENCED}}
    fresh.add(("t", 0))
    assert fresh.produce("t", 0, b"fresh").error_code == 0
    assert fresh.end(True) == NONE
    assert committed_values(broker, "t", 0) == [b"fresh"]
    assert broker.last_stable_offset("t", 0) == broker.high_watermark("t", 0)


def test_a_transaction_open_past_its_timeout_is_aborted_by_the_tick(broker, clock):
    p = Txn(broker, "tx-t", timeout_ms=5000)
    p.add(("t", 0))
    p.produce("t", 0, b"late")
    clock.t += 4000
    broker.tick()
    assert state(broker, "tx-t") == "Ongoing"
    assert broker.last_stable_offset("t", 0) == 0
    clock.t += 11_000            # past the timeout and the 10 s check interval
    broker.tick()
    assert state(broker, "tx-t") == "CompleteAbort"
    assert broker.last_stable_offset("t", 0) == broker.high_watermark("t", 0)
    assert committed_values(broker, "t", 0) == []
    # The producer was fenced by the abort's epoch bump.
    assert p.end(True) == PRODUCER_FENCED
    assert p.produce("t", 0, b"more").error_code == INVALID_PRODUCER_EPOCH


def test_idle_transactional_ids_expire(tmp_path, clock):
    b = open_broker(tmp_path / "d", clock, transactional_id_expiration_ms=60_000)
    try:
        b.create_topic("t", 1)
        p = Txn(b, "tx-x")
        q = Txn(b, "tx-y")
        q.add(("t", 0))
        clock.t += 3_600_001
        b.tick()
        assert [t.transactional_id for t in b.list_transactions().transactions] == ["tx-y"]
        assert b.end_txn("tx-x", p.pid, p.epoch, True) == INVALID_PRODUCER_ID_MAPPING
    finally:
        b.close()
    b = open_broker(tmp_path / "d", clock)
    try:
        assert [t.transactional_id for t in b.list_transactions().transactions] == ["tx-y"]
    finally:
        b.close()


def test_describe_and_list(broker, clock):
    p = Txn(broker, "tx-l1")
    Txn(broker, "tx-l2")
    p.add(("t", 1), ("t", 0))
    d = broker.describe_transactions(["tx-l1", "nobody"])
    assert (d[0].state, d[0].topics, d[0].producer_id, d[0].timeout_ms) == ("Ongoing", {"t": [0, 1]}, p.pid, 60000)
    assert d[0].start_time_ms == clock.t
    assert d[1].error_code == TRANSACTIONAL_ID_NOT_FOUND
    res = broker.list_transactions(["Ongoing", "Bogus"])
    assert [t.transactional_id for t in res.transactions] == ["tx-l1"] and res.unknown_state_filters == ["Bogus"]
    assert {t.transactional_id for t in broker.list_transactions().transactions} == {"tx-l1", "tx-l2"}
    assert [t.transactional_id for t in broker.list_transactions(producer_id_filters=[p.pid]).transactions] == ["tx-l1"]
    clock.t += 1000
    assert [t.transactional_id for t in broker.list_transactions(duration_filter_ms=1000).transactions] == ["tx-l1"]
    assert broker.list_transactions(duration_filter_ms=1001).transactions == []


# ---------------------------------------------------------------------- offsets in transactions

def test_txn_offsets_become_visible_only_when_the_transaction_commits(broker):
    p = Txn(broker, "tx-o")
    assert broker.txn_offset_commit("tx-o", "g", p.pid, p.epoch, {"t": {0: 5}}) == {"t": {0: INVALID_TXN_STATE}}
    assert broker.add_offsets_to_txn("tx-o", p.pid, p.epoch, "g") == NONE
    assert broker.describe_transactions(["tx-o"])[0].topics == {CONSUMER_OFFSETS_TOPIC: [partition_for_group("g", 4)]}
    assert broker.txn_offset_commit("tx-o", "g", p.pid, p.epoch,
                                    {"t": {0: OffsetAndMetadata(5, "m")}, "nope": {0: 1}}) == {
        "t": {0: NONE}, "nope": {0: UNKNOWN_TOPIC_OR_PARTITION}}
    assert broker.fetch_offsets("g", {"t": [0]}).topics["t"][0].offset == -1
    assert broker.fetch_offsets("g", {"t": [0]}, require_stable=True).topics["t"][0].error_code == UNSTABLE_OFFSET_COMMIT
    assert p.end(True) == NONE
    got = broker.fetch_offsets("g", {"t": [0]}, require_stable=True).topics["t"][0]
    assert (got.offset, got.metadata, got.error_code) == (5, "m", NONE)


def test_aborted_txn_offsets_are_dropped_and_a_later_plain_commit_wins(broker):
    p = Txn(broker, "tx-o2")
    broker.add_offsets_to_txn("tx-o2", p.pid, p.epoch, "g2")
    broker.txn_offset_commit("tx-o2", "g2", p.pid, p.epoch, {"t": {0: 9}})
    assert p.end(False) == NONE
    assert broker.fetch_offsets("g2", {"t": [0]}).topics["t"][0].offset == -1
    broker.add_offsets_to_txn("tx-o2", p.pid, p.epoch, "g2")
    broker.txn_offset_commit("tx-o2", "g2", p.pid, p.epoch, {"t": {0: 10, 1: 10}})
    assert broker.commit_offsets("g2", {"t": {0: 3}}) == {"t": {0: NONE}}
    assert p.end(True) == NONE
    offsets = broker.fetch_offsets("g2", {"t": [0, 1]}).topics["t"]
    assert (offsets[0].offset, offsets[1].offset) == (3, 10)


def test_restart_replays_txn_offsets_with_their_markers(tmp_path, clock):
    b = open_broker(tmp_path / "d", clock)
    b.create_topic("t", 2)
    done = Txn(b, "tx-r1")
    b.add_offsets_to_txn("tx-r1", done.pid, done.epoch, "g")
    b.txn_offset_commit("tx-r1", "g", done.pid, done.epoch, {"t": {0: 4}})
    assert done.end(True) == NONE
    gone = Txn(b, "tx-r2", timeout_ms=1000)
    b.add_offsets_to_txn("tx-r2", gone.pid, gone.epoch, "g")
    b.txn_offset_commit("tx-r2", "g", gone.pid, gone.epoch, {"t": {1: 8}})
    b.close()                             # tx-r2 is left open
    b = open_broker(tmp_path / "d", clock)
    try:
        offsets = b.fetch_offsets("g", {"t": [0, 1]}, require_stable=True).topics["t"]
        assert offsets[0].offset == 4
        assert offsets[1].error_code == UNSTABLE_OFFSET_COMMIT
        clock.t += 20_000
        b.tick()                          # tx-r2 times out: aborted, its offset dropped
        assert state(b, "tx-r2") == "CompleteAbort"
        offsets = b.fetch_offsets("g", {"t": [0, 1]}, require_stable=True).topics["t"]
        assert (offsets[0].offset, offsets[1].offset, offsets[1].error_code) == (4, -1, NONE)
    finally:
        b.close()


# ---------------------------------------------------------------------- crash recovery

@pytest.mark.parametrize("commit", [True, False])
def test_a_transaction_left_in_prepare_is_completed_on_open(tmp_path, clock, monkeypatch, commit):
    """A crash after PrepareX is durable but before its markers: the markers of this
    broker fail (a storage error), the broker closes, and the next open finishes it."""
    b = open_broker(tmp_path / "d", clock)
    b.create_topic("t", 2)
    p = Txn(b, "tx-p")
    p.add(("t", 0), ("t", 1))
    b.add_offsets_to_txn("tx-p", p.pid, p.epoch, "g")
    p.produce("t", 0, b"r0")
    p.produce("t", 1, b"r1")
    b.txn_offset_commit("tx-p", "g", p.pid, p.epoch, {"t": {0: 1}})

    def broken(markers):
        raise KafkaStorageError("disk gone")

    monkeypatch.setattr(b, "write_txn_markers", broken)
    assert p.end(commit) == CONCURRENT_TRANSACTIONS
    assert state(b, "tx-p") == ("PrepareCommit" if commit else "PrepareAbort")
    assert b.last_stable_offset("t", 0) == 0
    b.close()
    b = open_broker(tmp_path / "d", clock)
    try:
        assert state(b, "tx-p") == ("CompleteCommit" if commit else "CompleteAbort")
        for part in (0, 1):
            assert b.last_stable_offset("t", part) == b.high_watermark("t", part)
            assert committed_values(b, "t", part) == ([b"r%d" % part] if commit else [])
        assert b.fetch_offsets("g", {"t": [0]}).topics["t"][0].offset == (1 if commit else -1)
        p.broker = b
        assert p.end(commit) == NONE      # the client's retry
    finally:
        b.close()


def test_a_failed_marker_write_is_retried_by_the_tick(broker, clock, monkeypatch):
    p = Txn(broker, "tx-q")
    p.add(("t", 0))
    p.produce("t", 0, b"v")
    real = broker.write_txn_markers
    monkeypatch.setattr(broker, "write_txn_markers", lambda markers: (_ for _ in ()).throw(KafkaStorageError("x")))
    assert p.end(True) == CONCURRENT_TRANSACTIONS
    assert p.add(("t", 1)) == {("t", 1): CONCURRENT_TRANSACTIONS}
    monkeypatch.setattr(broker, "write_txn_markers", real)
    clock.t += 10_001
    broker.tick()
    assert state(broker, "tx-q") == "CompleteCommit"
    assert committed_values(broker, "t", 0) == [b"v"]


def test_a_clustered_coordinator_serves_only_the_partitions_it_loaded(broker):
    """Unload everything (a clustered broker starts so), load one partition: its ids are
    served (COORDINATOR_LOAD_IN_PROGRESS while it loads), the others' NOT_COORDINATOR;
    unloading it drops its ids and a later load brings them back from the log."""
    from pylog.broker.txn_log import partition_for_transactional_id
    from pylog.errors import CoordinatorLoadInProgressError, NotCoordinatorError

    txn = Txn(broker, "a")
    assert txn.add(("t", 0)) == {("t", 0): 0}
    n = broker.num_partitions(TRANSACTION_STATE_TOPIC)
    mine = partition_for_transactional_id("a", n)
    other = next(t for t in (f"x{i}" for i in range(200)) if partition_for_transactional_id(t, n) != mine)
    coordinator = broker.transactions
    assert coordinator.unload_all() == 1
    assert broker.init_producer_id(other).error_code == NotCoordinatorError.error_code
    coordinator.begin_load(mine)
    assert txn.end(True) == CoordinatorLoadInProgressError.error_code
    assert broker.load_txn_partition(mine) == 1
    assert coordinator.metadata("a").state is TransactionState.ONGOING
    assert broker.init_producer_id(other).error_code == NotCoordinatorError.error_code
    assert coordinator.unload(mine) == 1
    assert txn.end(True) == NotCoordinatorError.error_code
    broker.load_txn_partition(mine)
    assert txn.end(True) == 0
