"""KIP-890 part 1 on a clustered broker: a partition's leader asks the transaction
coordinator of the producer's transactional id, wherever it lives, before it appends a
transactional batch that starts a transaction on that partition (Kafka's
``transaction.partition.verification.enable``, on by default since 3.6).

- **When**: a Produce carries a transactional id and, for some partition, a
  transactional batch of a producer that has no transaction open on that partition
  (its producer state has no current transaction).  Batches of a transaction already
  open there go as before.
- **Whom**: the leader of the id's ``__transaction_state`` partition, from this broker's
  metadata (COORDINATOR_NOT_AVAILABLE when the topic or a leader is missing).  The
  request is AddPartitionsToTxn v4 with ``verify_only``, sent even when the coordinator
  is this broker, as Kafka's broker does.
- **Batching** (:class:`AddPartitionsToTxnManager`, Kafka's): one request out per
  coordinator broker; what arrives meanwhile is gathered, one entry per transactional
  id, and goes in the next request.  A newer epoch of the same id fences the entry that
  waits (INVALID_PRODUCER_EPOCH to its requests); an older one is answered so at once; the
  same epoch joins the entry (Kafka answers the earlier NETWORK_EXCEPTION; joining
  saves the client a retry).
- **Answers** (Kafka's ``ReplicaManager``): a partition the coordinator does not have in
  the ongoing transaction gets INVALID_TXN_STATE; PRODUCER_FENCED becomes
  INVALID_PRODUCER_EPOCH; CONCURRENT_TRANSACTIONS, COORDINATOR_LOAD_IN_PROGRESS,
  COORDINATOR_NOT_AVAILABLE and NOT_COORDINATOR become NOT_ENOUGH_REPLICAS (retriable
  for every producer); a request that failed on the network NETWORK_EXCEPTION; a
  coordinator that does not speak v4 is not asked (the append goes on, as in Kafka).
- **The race with markers** (Kafka's ``VerificationGuard``): when verification starts the
  leader puts a :class:`VerificationGuard` for the producer in the partition's producer
  state; a marker of that producer on the partition (the transaction ended meanwhile), a
  newer epoch, or the append that opens the transaction removes it.  The append, under
  the partition's lock, takes a transactional batch that opens a transaction only with a
  guard of its epoch that the coordinator confirmed (:func:`txn_verifier`), so a
  transaction that ended between the answer and the append is not reopened by a batch no
  marker would close.

- **TxnOffsetCommit** (Kafka's group coordinator, verification of transactional offset
  commits): the group coordinator's broker asks the same way, through the same manager,
  whether the group's ``__consumer_offsets`` partition (added by AddOffsetsToTxn) is in
  the ongoing transaction (:meth:`TxnVerification.start_offset_commit`).  The answers
  take the group coordinator's forms (:data:`OFFSET_COMMIT_ERRORS`): what the producer
  retries after a coordinator lookup becomes COORDINATOR_NOT_AVAILABLE.  Unlike a
  produce, no guard holds the offsets partition between the answer and the write: a
  transaction that ends in that gap leaves the offsets pending until the producer's
  next marker there.

The produce handler never blocks on any of this: :meth:`TxnVerification.start` returns
an asyncio future of the refused partitions, completed from the network thread.

Thread safety: :class:`AddPartitionsToTxnManager` has one lock over its per-broker
queues; callbacks run on the network client's thread without it.  Guards are set on the
loop thread and removed under the partition's lock; a guard is replaced, never changed
but for its ``verified`` flag, so a reader sees either the old or the new one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC
from pylog.broker.txn_log import TRANSACTION_STATE_TOPIC, partition_for_transactional_id
from pylog.errors import PylogError, UnsupportedVersionError

__all__ = ["AddPartitionsToTxnManager", "TxnVerification", "VerificationGuard", "txn_verifier",
           "PRODUCE_ERRORS", "OFFSET_COMMIT_ERRORS"]

_log = logging.getLogger("pylog.cluster.txn_verification")

NETWORK_EXCEPTION = 13
NOT_ENOUGH_REPLICAS = 19
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
CONCURRENT_TRANSACTIONS = 51
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
CLUSTER_AUTHORIZATION_FAILED = 31
PRODUCER_FENCED = 90
#: The coordinator's answers a produce gets in another form (Kafka's ReplicaManager and
#: AddPartitionsToTxnManager): the producer retries NOT_ENOUGH_REPLICAS.
PRODUCE_ERRORS = {PRODUCER_FENCED: INVALID_PRODUCER_EPOCH, CONCURRENT_TRANSACTIONS: NOT_ENOUGH_REPLICAS,
                  COORDINATOR_LOAD_IN_PROGRESS: NOT_ENOUGH_REPLICAS, COORDINATOR_NOT_AVAILABLE: NOT_ENOUGH_REPLICAS,
                  NOT_COORDINATOR: NOT_ENOUGH_REPLICAS, CLUSTER_AUTHORIZATION_FAILED: INVALID_TXN_STATE}
#: The verification's produce errors as a TxnOffsetCommit answers them (Kafka's group
#: coordinator: NOT_ENOUGH_REPLICAS -> COORDINATOR_NOT_AVAILABLE); a failed request too, as
#: the transactional producer retries that one with a coordinator lookup.
OFFSET_COMMIT_ERRORS = {NOT_ENOUGH_REPLICAS: COORDINATOR_NOT_AVAILABLE, NETWORK_EXCEPTION: COORDINATOR_NOT_AVAILABLE}
#: AddPartitionsToTxn with verify_only came with v4.
VERIFY_VERSION = 4
_ATTR_TRANSACTIONAL = 0x10
_ATTR_CONTROL = 0x20

TopicPartition = tuple[str, int]
#: (topic, partition) -> error code of the partitions refused (empty: all verified).
Callback = Callable[[dict[TopicPartition, int]], object]


class VerificationGuard:
    """Kafka's VerificationGuard: the leader asked the coordinator whether the producer's
    transaction holds this partition; ``verified`` once it said yes."""

    __slots__ = ("producer_epoch", "verified")

    def __init__(self, producer_epoch: int) -> None:
        self.producer_epoch = producer_epoch
        self.verified = False


def txn_verifier(broker: Any) -> Callable[[str, int, int, int, int], int]:
    """The broker core's ``txn_verifier`` on a clustered broker (called before and under
    the partition's lock): a transactional batch may be appended when its producer has a
    transaction open on the partition (its epoch is checked by the producer state), or a
    confirmed guard of its epoch is there; else INVALID_TXN_STATE."""
    def verify(topic: str, partition: int, producer_id: int, producer_epoch: int, base_sequence: int = -1) -> int:
        psm = broker._partition(topic, partition).producers
        entry = psm.producers.get(producer_id)
        if entry is not None and entry.current_txn_first_offset >= 0:
            return 0
        guard = psm.verification_guards.get(producer_id)
        if guard is not None and guard.verified and guard.producer_epoch == producer_epoch:
            return 0
        return INVALID_TXN_STATE
    return verify


@dataclass
class _Pending:
    """One transactional id's partitions waiting for a request to its coordinator."""

    producer_id: int
    producer_epoch: int
    partitions: dict[str, set[int]] = field(default_factory=dict)
    callbacks: list[Callback] = field(default_factory=list)

    def all_partitions(self) -> list[TopicPartition]:
        return [(t, p) for t, ps in self.partitions.items() for p in sorted(ps)]


class AddPartitionsToTxnManager:
    """Kafka's AddPartitionsToTxnManager: verify_only requests to transaction
    coordinators, one out per broker, the rest gathered per transactional id.

    Parameters
    ----------
    coordinator_of : callable
        ``transactional_id -> (error_code, broker_id)``: the id's coordinator, or the
        error that says there is none now.
    send : callable
        ``(broker_id, body) -> concurrent.futures.Future`` of the decoded
        AddPartitionsToTxn v4 response (failing with PylogError), sent without waiting.
    """

    def __init__(self, coordinator_of: Callable[[str], tuple[int, int]],
                 send: Callable[[int, Any], concurrent.futures.Future]) -> None:
        self._coordinator_of = coordinator_of
        self._send = send
        self._lock = threading.Lock()
        self._waiting: dict[int, dict[str, _Pending]] = {}
        self._inflight: set[int] = set()

    def verify(self, transactional_id: str, producer_id: int, producer_epoch: int,
               partitions: Iterable[TopicPartition], callback: Callback) -> None:
        """Ask the id's coordinator whether ``partitions`` are in the producer's ongoing
        transaction; ``callback`` gets the refused ones with their produce error codes
        (on the network thread, or here when there is no coordinator to ask)."""
        partitions = list(partitions)
        code, broker_id = self._coordinator_of(transactional_id)
        if code:
            callback({tp: PRODUCE_ERRORS.get(code, code) for tp in partitions})
            return
        fenced: list[tuple[Callback, list[TopicPartition]]] = []
        with self._lock:
            waiting = self._waiting.setdefault(broker_id, {})
            entry = waiting.get(transactional_id)
            if entry is not None and (entry.producer_id, entry.producer_epoch) != (producer_id, producer_epoch):
                if entry.producer_id == producer_id and entry.producer_epoch > producer_epoch:
                    entry = None                                # the incoming one is the zombie
                    fenced.append((callback, partitions))
                else:
                    fenced.extend((cb, entry.all_partitions()) for cb in entry.callbacks)
                    entry = waiting[transactional_id] = _Pending(producer_id, producer_epoch)
            elif entry is None:
                entry = waiting[transactional_id] = _Pending(producer_id, producer_epoch)
            if entry is not None:
                for t, p in partitions:
                    entry.partitions.setdefault(t, set()).add(p)
                entry.callbacks.append(callback)
        for cb, tps in fenced:
            cb({tp: INVALID_PRODUCER_EPOCH for tp in tps})
        self._maybe_send(broker_id)

    def _maybe_send(self, broker_id: int) -> None:
        with self._lock:
            if broker_id in self._inflight or not self._waiting.get(broker_id):
                return
            batch = self._waiting.pop(broker_id)
            self._inflight.add(broker_id)
        try:
            fut = self._send(broker_id, _request(batch))
        except PylogError as exc:
            fut = concurrent.futures.Future()
            fut.set_exception(exc)
        fut.add_done_callback(lambda f: self._answered(broker_id, batch, f))

    def _answered(self, broker_id: int, batch: dict[str, _Pending], fut: concurrent.futures.Future) -> None:
        with self._lock:
            self._inflight.discard(broker_id)
        try:
            resp = fut.result()
        except UnsupportedVersionError:
            # A coordinator without verify_only: append unverified, as Kafka does.
            _log.warning("broker %d does not take AddPartitionsToTxn v%d: transactional produces are not "
                         "verified with it", broker_id, VERIFY_VERSION)
            results = {tid: {} for tid in batch}
        except (PylogError, OSError, concurrent.futures.CancelledError) as exc:
            _log.info("AddPartitionsToTxn (verify only) to broker %d failed: %s", broker_id, exc)
            results = {tid: {tp: NETWORK_EXCEPTION for tp in e.all_partitions()} for tid, e in batch.items()}
        else:
            results = _results(resp, batch)
        for tid, entry in batch.items():
            refused = results.get(tid)
            if refused is None:     # (an id the answer left out)
                refused = {tp: INVALID_TXN_STATE for tp in entry.all_partitions()}
            for cb in entry.callbacks:
                try:
                    cb(refused)
                except Exception:  # noqa: BLE001 - one callback's failure is its own
                    _log.exception("a transaction verification callback raised")
        self._maybe_send(broker_id)


def _request(batch: dict[str, _Pending]) -> Any:
    from pylog.protocol import messages as m
    R: Any = m.AddPartitionsToTxnRequest
    return R(transactions=[R.AddPartitionsToTxnTransaction(
        transactional_id=tid, producer_id=e.producer_id, producer_epoch=e.producer_epoch, verify_only=True,
        topics=[R.AddPartitionsToTxnTopic(name=t, partitions=sorted(ps)) for t, ps in e.partitions.items()])
        for tid, e in batch.items()])


def _results(resp: Any, batch: dict[str, _Pending]) -> dict[str, dict[TopicPartition, int]]:
    """transactional id -> its refused partitions with their produce error codes."""
    if resp.error_code:
        code = PRODUCE_ERRORS.get(resp.error_code, resp.error_code)
        return {tid: {tp: code for tp in e.all_partitions()} for tid, e in batch.items()}
    out: dict[str, dict[TopicPartition, int]] = {}
    for r in resp.results_by_transaction:
        refused = out.setdefault(r.transactional_id, {})
        for t in r.topic_results:
            for p in t.results_by_partition:
                if p.partition_error_code:
                    refused[(t.name, p.partition_index)] = PRODUCE_ERRORS.get(p.partition_error_code,
                                                                              p.partition_error_code)
    return out


class TxnVerification:
    """The produce handler's side (loop thread): which partitions of a Produce need the
    coordinator's word, their guards, and an asyncio future of the refused ones."""

    def __init__(self, broker: Any, metadata: Any, manager: AddPartitionsToTxnManager,
                 loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.broker = broker
        self.metadata = metadata
        self.manager = manager
        self._loop = loop

    @classmethod
    def for_node(cls, node: Any, txn_io: Any) -> "TxnVerification":
        """The verification of a :class:`~pylog.cluster.node.ClusterNode`: coordinators
        from its metadata, requests through ``txn_io.send_request`` (the clients the
        transaction coordinator's markers use)."""
        from pylog.protocol.apis import ApiKey

        def send(broker_id: int, body: Any) -> concurrent.futures.Future:
            return txn_io.send_request(broker_id, ApiKey.ADD_PARTITIONS_TO_TXN, body, version=VERIFY_VERSION)

        manager = AddPartitionsToTxnManager(cls.coordinator_of(node.metadata), send)
        return cls(node.broker, node.metadata, manager, lambda: node.loop)

    @staticmethod
    def coordinator_of(metadata: Any) -> Callable[[str], tuple[int, int]]:
        """``coordinator_of`` for :class:`AddPartitionsToTxnManager` over a metadata cache."""
        def find(transactional_id: str) -> tuple[int, int]:
            n = len(metadata.partitions_of(TRANSACTION_STATE_TOPIC))
            if not n:
                return COORDINATOR_NOT_AVAILABLE, -1     # no transaction began anywhere yet
            leader = metadata.leader(TRANSACTION_STATE_TOPIC, partition_for_transactional_id(transactional_id, n))
            return (COORDINATOR_NOT_AVAILABLE, -1) if leader is None else (0, leader.broker_id)
        return find

    def start(self, req: Any) -> "asyncio.Future | None":
        """For a Produce request: None when no partition needs verifying (the usual
        case, decided from the first batch header of each partition), else a future of
        ``{(topic, partition): error code}`` of the refused ones."""
        tid = getattr(req, "transactional_id", None)
        if not tid:
            return None
        wanted: list[TopicPartition] = []
        producer = None
        for t in req.topic_data:
            for p in t.partition_data:
                first = _first_transactional(p.records)
                if first is None:
                    continue
                pid, epoch = first
                try:
                    psm = self.broker._partition(t.name, p.index).producers
                except PylogError:
                    continue                    # the produce answers the partition's error
                entry = psm.producers.get(pid)
                if entry is not None and entry.current_txn_first_offset >= 0 and entry.producer_epoch == epoch:
                    continue                    # its transaction is open here already
                guard = psm.verification_guards.get(pid)
                if guard is None or guard.producer_epoch != epoch:
                    psm.verification_guards[pid] = VerificationGuard(epoch)
                wanted.append((t.name, p.index))
                producer = (pid, epoch)
        if not wanted:
            return None
        assert producer is not None
        loop = self._loop()
        fut: asyncio.Future = loop.create_future()
        guards = {tp: self.broker._partition(*tp).producers.verification_guards.get(producer[0]) for tp in wanted}

        def answered(refused: dict[TopicPartition, int]) -> None:
            for tp, guard in guards.items():
                if tp not in refused and guard is not None:
                    guard.verified = True       # (a marker since has removed it: the append refuses)
            loop.call_soon_threadsafe(_set, fut, refused)

        self.manager.verify(tid, producer[0], producer[1], wanted, answered)
        return fut

    def start_offset_commit(self, transactional_id: str, producer_id: int, producer_epoch: int,
                            offsets_partition: int) -> asyncio.Future:
        """For a TxnOffsetCommit on the group's coordinator: a future of the error code
        the commit is answered with (0: the group's ``__consumer_offsets`` partition
        ``offsets_partition`` is in the producer's ongoing transaction)."""
        loop = self._loop()
        fut: asyncio.Future = loop.create_future()
        tp = (CONSUMER_OFFSETS_TOPIC, offsets_partition)

        def answered(refused: dict[TopicPartition, int]) -> None:
            code = refused.get(tp, 0)
            loop.call_soon_threadsafe(_set, fut, OFFSET_COMMIT_ERRORS.get(code, code))

        self.manager.verify(transactional_id, producer_id, producer_epoch, [tp], answered)
        return fut


def _set(fut: asyncio.Future, result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def _first_transactional(records: Any) -> tuple[int, int] | None:
    """(producer id, epoch) of the first batch of ``records`` when it is a transactional
    data batch (v2 header: attributes at 21, producer id at 43, epoch at 51); else None."""
    if records is None or len(records) < 61:
        return None
    view = memoryview(records)
    if view[16] != 2:
        return None
    attrs = int.from_bytes(view[21:23], "big")
    if not attrs & _ATTR_TRANSACTIONAL or attrs & _ATTR_CONTROL:
        return None
    return int.from_bytes(view[43:51], "big", signed=True), int.from_bytes(view[51:53], "big", signed=True)
