"""The transaction coordinator (KIP-98, KIP-360, KIP-447, KIP-890 part 1), as Kafka's.

A transactional producer names itself with a ``transactional.id``.  The coordinator of
that id (the broker leading partition :func:`~pylog.broker.txn_log.partition_for_transactional_id`
of ``__transaction_state``: on a single node this broker, in a cluster the partition's
leader, which serves only the ids of the partitions it leads, :meth:`TransactionCoordinator.load_partition`,
:meth:`TransactionCoordinator.unload`) keeps its state, one
:class:`TransactionMetadata` per id, and drives it through Kafka's state machine::

    Empty ──AddPartitions/AddOffsets──► Ongoing ──EndTxn(commit)──► PrepareCommit ──markers──► CompleteCommit
      ▲                                   │  └──EndTxn(abort), timeout, fencing──► PrepareAbort ──markers──► CompleteAbort
      └──────── InitProducerId (epoch bump) ◄──────────── CompleteCommit / CompleteAbort / Empty
    (PrepareEpochFence: the transient step of a fencing abort; Dead: an expired id)

- **InitProducerId** with a transactional id gives the id's producer id at the next
  epoch (a new producer id, epoch 0, for a new id or an exhausted epoch, 32766 and up).
  A producer that still had a transaction open (a crashed instance: a zombie) has it
  aborted first, under a bumped epoch, so its later writes are fenced
  (PRODUCER_FENCED at the coordinator, INVALID_PRODUCER_EPOCH at the partitions).
  KIP-360: a request naming the producer id and epoch it had is accepted when they are
  the current ones (or the ones just before a bump it did not hear about); others are
  fenced.  Kafka answers CONCURRENT_TRANSACTIONS while it aborts the old transaction
  and lets the client retry; here the abort completes within the call, so the answer
  is the new epoch at once.
- **AddPartitionsToTxn** / **AddOffsetsToTxn** (the group's ``__consumer_offsets``
  partition) move the transaction to Ongoing; ``verify_only`` (v4+) only answers
  whether the partitions are in the ongoing transaction.  :meth:`TransactionCoordinator.verify`
  is the same check for the produce path (KIP-890 part 1): a transactional batch is
  appended only to a partition added to its producer's ongoing transaction.
- **EndTxn** writes PrepareCommit/PrepareAbort to the log, then the COMMIT/ABORT markers
  to every partition of the transaction (``write_markers``), then
  CompleteCommit/CompleteAbort.
- **Timeouts**: an Ongoing transaction older than its ``transaction.timeout.ms`` is
  aborted by :meth:`TransactionCoordinator.tick` under a bumped epoch.  Timeouts above
  ``transaction.max.timeout.ms`` get INVALID_TRANSACTION_TIMEOUT.
- **Expiry**: an id idle (Empty or Complete) for ``transactional.id.expiration.ms``
  is removed (a tombstone in the log).

On disk
-------
``__transaction_state-<n>/`` (compacted, created on first use with Kafka's defaults:
50 partitions, 100 MiB segments): one record per state change, in Kafka's
``TransactionLogKey`` / ``TransactionLogValue`` bytes (:mod:`pylog.broker.txn_log`), one
batch per change, so Kafka's tools read them.

Crash behaviour
---------------
Every state change is durable in the log before it takes effect or is answered.  On
open, the log is replayed (:meth:`TransactionCoordinator.load`): a transaction found in
PrepareCommit or PrepareAbort has its markers written again (writing a marker twice
is harmless: the second finds no open transaction) and is completed; an Ongoing one is
aborted when its timeout passes, as if nothing had happened.  A failed marker write
leaves the transaction in its Prepare state; :meth:`TransactionCoordinator.tick` retries
it, and requests for the id get CONCURRENT_TRANSACTIONS meanwhile.

For crash tests only, the environment variable ``PYLOG_TEST_TXN_CRASH`` makes the process
SIGKILL itself at one step of ending a transaction: ``after-prepare`` (PrepareCommit or
PrepareAbort durable, no marker written), ``mid-markers`` (the marker of the first of
several partitions written, the others not) or ``after-markers`` (markers written, the
Complete state not); or, in the middle of the state append itself, ``torn-prepare`` (the
first half of the PrepareCommit/PrepareAbort batch in the ``__transaction_state``
segment: recovery cuts it, and the transaction is Ongoing again, aborted at its timeout)
and ``torn-complete`` (the same for CompleteCommit/CompleteAbort: the Prepare state is
found and its markers written again).  Nothing sets it outside tests.

Thread safety
-------------
Every public method takes the coordinator's lock and holds it for the whole state
change, marker writes included.  The partitions' locks are taken inside it (log and
marker appends), never the other way round: :meth:`TransactionCoordinator.verify`, which
the produce path calls under a partition's lock, takes no lock (it reads immutable
snapshots).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Callable, Iterable, Mapping, Protocol, Sequence

from pylog._value import FrozenValue, Value, frozen_dataclass
from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC, partition_for_group
from pylog.broker.txn_log import (TRANSACTION_STATE_TOPIC, TransactionLogValue, TransactionState, decode_value,
                                  partition_for_transactional_id, txn_record, txn_tombstone)
from pylog.errors import (ConcurrentTransactionsError, CoordinatorLoadInProgressError, InvalidConfigError,
                          InvalidProducerIdMappingError, NotCoordinatorError,
                          InvalidRequestError, InvalidTransactionTimeoutError, InvalidTxnStateError,
                          OperationNotAttemptedError, ProducerFencedError, PylogError,
                          TransactionalIdNotFoundError, UnknownTopicOrPartitionError, error_for_code)

__all__ = [
    "TransactionCoordinatorConfig",
    "TransactionCoordinator",
    "TransactionMetadata",
    "TransactionDescription",
    "ListedTransaction",
    "ListTransactionsResult",
    "TxnLogIO",
    "TxnMarker",
]

_log = logging.getLogger("pylog.broker.txn")

EMPTY = TransactionState.EMPTY
ONGOING = TransactionState.ONGOING
PREPARE_COMMIT = TransactionState.PREPARE_COMMIT
PREPARE_ABORT = TransactionState.PREPARE_ABORT
COMPLETE_COMMIT = TransactionState.COMPLETE_COMMIT
COMPLETE_ABORT = TransactionState.COMPLETE_ABORT
DEAD = TransactionState.DEAD
PREPARE_EPOCH_FENCE = TransactionState.PREPARE_EPOCH_FENCE

_MAX_EPOCH = 32767
#: Kafka bumps to a new producer id from this epoch on (``Short.MaxValue - 1``), keeping
#: the last epoch free for fencing.
_EXHAUSTED_EPOCH = _MAX_EPOCH - 1
_E_INVALID_TXN_STATE = InvalidTxnStateError.error_code
_E_PRODUCER_EPOCH = 47
_E_UNKNOWN_PARTITION = UnknownTopicOrPartitionError.error_code
_E_NOT_ATTEMPTED = OperationNotAttemptedError.error_code

#: One marker to write: (producer_id, producer_epoch, coordinator_epoch, commit, partitions).
TxnMarker = tuple[int, int, int, bool, list[tuple[str, int]]]


@frozen_dataclass
class TransactionCoordinatorConfig:
    """Transaction coordinator settings (Kafka's broker configs in snake_case, Kafka's
    defaults).

    Attributes
    ----------
    transaction_state_log_num_partitions : int
        Partitions of ``__transaction_state`` when it is created.
    transaction_state_log_segment_bytes : int
    transaction_max_timeout_ms : int
        The largest ``transaction.timeout.ms`` a producer may ask for.
    transactional_id_expiration_ms : int
        An id without a transaction for this long is removed.
    transaction_abort_timed_out_transaction_cleanup_interval_ms : int
        How often timed-out transactions are looked for.
    transaction_remove_expired_transaction_cleanup_interval_ms : int
        How often expired ids are looked for.
    """

    transaction_state_log_num_partitions: int = 50
    transaction_state_log_segment_bytes: int = 100 * 1024 * 1024
    transaction_max_timeout_ms: int = 900_000
    transactional_id_expiration_ms: int = 604_800_000
    transaction_abort_timed_out_transaction_cleanup_interval_ms: int = 10_000
    transaction_remove_expired_transaction_cleanup_interval_ms: int = 3_600_000

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise InvalidConfigError(f"{name} must be a positive int, got {v!r}")


class TxnLogIO(Protocol):
    """What the coordinator needs from its broker (:class:`pylog.broker.core.Broker`
    implements it; tests may supply their own).  Called with the coordinator's lock
    held; must not call back into the coordinator."""

    def txn_log_partitions(self, create: bool) -> int:
        """Partitions of ``__transaction_state`` (creating it when ``create``; 0 when it
        does not exist and ``create`` is false)."""

    def append_txn_log(self, partition: int, records: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Append one batch to a ``__transaction_state`` partition, durably as the log
        defines it; raise PylogError if not."""

    def coordinator_epoch(self, partition: int) -> int:
        """The leader epoch of that ``__transaction_state`` partition."""

    def allocate_producer_id(self) -> int:
        """A producer id never handed out before."""

    def partition_exists(self, topic: str, partition: int) -> bool: ...

    def write_markers(self, markers: list[TxnMarker]) -> Mapping[tuple[str, int], int]:
        """Write COMMIT/ABORT control batches; an error code per partition that failed
        (none: all written).  UNKNOWN_TOPIC_OR_PARTITION (a deleted topic) counts as done."""


class TransactionMetadata(Value):
    """The coordinator's state of one transactional id (Kafka's TransactionMetadata).
    ``partitions`` is replaced, never changed in place, so the lock-free
    :meth:`TransactionCoordinator.verify` always reads a whole set."""

    _fields = ("transactional_id", "producer_id", "producer_epoch", "timeout_ms", "state", "partitions",
               "start_timestamp_ms", "last_update_timestamp_ms", "previous_producer_id", "last_producer_epoch",
               "coordinator_epoch")
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TransactionState
    partitions: frozenset
    start_timestamp_ms: int
    last_update_timestamp_ms: int
    previous_producer_id: int
    last_producer_epoch: int
    coordinator_epoch: int

    def __init__(self, transactional_id: str, producer_id: int, producer_epoch: int, timeout_ms: int,
                 state: TransactionState = EMPTY, partitions: frozenset = frozenset(), start_timestamp_ms: int = -1,
                 last_update_timestamp_ms: int = -1, previous_producer_id: int = -1, last_producer_epoch: int = -1,
                 coordinator_epoch: int = 0) -> None:
        self.transactional_id = transactional_id
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.timeout_ms = timeout_ms
        self.state = state
        self.partitions = partitions
        self.start_timestamp_ms = start_timestamp_ms
        self.last_update_timestamp_ms = last_update_timestamp_ms
        self.previous_producer_id = previous_producer_id
        self.last_producer_epoch = last_producer_epoch
        self.coordinator_epoch = coordinator_epoch

    def to_value(self) -> TransactionLogValue:
        parts: dict[str, list[int]] = {}
        for t, p in self.partitions:
            parts.setdefault(t, []).append(p)
        return TransactionLogValue(
            producer_id=self.producer_id, producer_epoch=self.producer_epoch,
            transaction_timeout_ms=self.timeout_ms, state=self.state, partitions=parts,
            last_update_timestamp_ms=self.last_update_timestamp_ms,
            start_timestamp_ms=self.start_timestamp_ms)


class TransactionDescription(Value):
    """DescribeTransactions entry (``error_code`` TRANSACTIONAL_ID_NOT_FOUND for an
    unknown id)."""

    _fields = ("transactional_id", "error_code", "state", "timeout_ms", "start_time_ms", "producer_id",
               "producer_epoch", "topics")
    transactional_id: str
    error_code: int
    state: str
    timeout_ms: int
    start_time_ms: int
    producer_id: int
    producer_epoch: int
    topics: dict[str, list[int]]

    def __init__(self, transactional_id: str, error_code: int = 0, state: str = "", timeout_ms: int = 0,
                 start_time_ms: int = -1, producer_id: int = -1, producer_epoch: int = -1,
                 topics: dict[str, list[int]] | None = None) -> None:
        self.transactional_id = transactional_id
        self.error_code = error_code
        self.state = state
        self.timeout_ms = timeout_ms
        self.start_time_ms = start_time_ms
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.topics = {} if topics is None else topics


class ListedTransaction(FrozenValue):
    __slots__ = _fields = ("transactional_id", "producer_id", "state")
    transactional_id: str
    producer_id: int
    state: str

    def __init__(self, transactional_id: str, producer_id: int, state: str) -> None:
        set_ = object.__setattr__
        set_(self, "transactional_id", transactional_id)
        set_(self, "producer_id", producer_id)
        set_(self, "state", state)


class ListTransactionsResult(Value):
    """ListTransactions: the transactions that pass the filters, and the state filters
    that name no state (Kafka reports them, and lists nothing for them)."""

    _fields = ("transactions", "unknown_state_filters", "error_code")
    transactions: list[ListedTransaction]
    unknown_state_filters: list[str]
    error_code: int

    def __init__(self, transactions: list[ListedTransaction], unknown_state_filters: list[str] | None = None,
                 error_code: int = 0) -> None:
        self.transactions = transactions
        self.unknown_state_filters = [] if unknown_state_filters is None else unknown_state_filters
        self.error_code = error_code


#: The torn-write crash points of :class:`BrokerTxnIO` and the states whose record they tear.
_TORN_POINTS = {"torn-prepare": (PREPARE_COMMIT, PREPARE_ABORT), "torn-complete": (COMPLETE_COMMIT, COMPLETE_ABORT)}


def _crash_point(name: str) -> None:
    """SIGKILL this process at ``name`` when ``PYLOG_TEST_TXN_CRASH`` says so (crash tests)."""
    if os.environ.get("PYLOG_TEST_TXN_CRASH") == name:
        _log.warning("PYLOG_TEST_TXN_CRASH=%s: killing the process", name)
        os.kill(os.getpid(), signal.SIGKILL)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class TransactionCoordinator:
    """Kafka's transaction coordinator over one broker (see the module docstring).

    Parameters
    ----------
    io : TxnLogIO
        The log, the markers and the producer ids.
    config : TransactionCoordinatorConfig, optional
    clock : callable returning int, optional
        Milliseconds (default: wall clock).
    """

    def __init__(self, io: TxnLogIO, config: TransactionCoordinatorConfig | None = None, *,
                 clock: Callable[[], int] = _wall_ms) -> None:
        self.io = io
        self.config = config or TransactionCoordinatorConfig()
        self._clock = clock
        self._lock = threading.RLock()
        self._txns: dict[str, TransactionMetadata] = {}
        # producer id -> metadata, read without the lock by verify().
        self._by_pid: dict[int, TransactionMetadata] = {}
        self._num_partitions = 0
        #: ``__transaction_state`` partitions served (None: all, a single node) and being
        #: loaded (a clustered broker's: :meth:`begin_load`, :meth:`load_partition`).
        self._owned: set[int] | None = None
        self._loading: set[int] = set()
        now = clock()
        self._next_timeout_check = now + self.config.transaction_abort_timed_out_transaction_cleanup_interval_ms
        self._next_expiry_check = now + self.config.transaction_remove_expired_transaction_cleanup_interval_ms

    # ---------------------------------------------------------------- loading

    def load(self, states: Mapping[int, Mapping[str, TransactionLogValue]]) -> int:
        """Take the state replayed from ``__transaction_state`` (partition -> id ->
        latest value), then finish every transaction found in a Prepare state (markers,
        then Complete).  Returns the number of ids loaded."""
        with self._lock:
            self._num_partitions = self.io.txn_log_partitions(False)
            for partition, values in states.items():
                self._take(partition, values)
            self._complete_prepared(list(self._txns.values()))
            return len(self._txns)

    def load_partition(self, partition: int, values: Mapping[str, TransactionLogValue]) -> int:
        """:meth:`load` of one partition (its ids' latest values): a clustered broker
        that became its leader serves its ids from now on.  Returns the number loaded."""
        with self._lock:
            self._num_partitions = self.io.txn_log_partitions(False)
            if self._owned is not None:
                self._owned.add(partition)
                self._loading.discard(partition)
            taken = self._take(partition, values)
            self._complete_prepared(taken)
            return len(taken)

    def begin_load(self, partition: int) -> None:
        """This broker leads ``partition`` now and reads it: requests for its ids get
        COORDINATOR_LOAD_IN_PROGRESS until :meth:`load_partition`."""
        with self._lock:
            if self._owned is None:
                self._owned = set()
            self._loading.add(partition)

    def unload(self, partition: int) -> int:
        """Stop serving the ids of ``partition`` (another broker leads it): their
        requests get NOT_COORDINATOR.  Returns the number of ids dropped."""
        with self._lock:
            if self._owned is None:
                self._owned = set(range(self._num_partitions))
            self._owned.discard(partition)
            self._loading.discard(partition)
            if not self._num_partitions:
                self._num_partitions = self.io.txn_log_partitions(False)
            if not self._num_partitions:
                return 0
            gone = [t for t in self._txns.values()
                    if partition_for_transactional_id(t.transactional_id, self._num_partitions) == partition]
            for t in gone:
                self._drop(t)
            return len(gone)

    def unload_all(self) -> int:
        """Serve no id until :meth:`load_partition` (a clustered broker starts so)."""
        with self._lock:
            gone = len(self._txns)
            self._owned = set()
            self._loading.clear()
            self._txns.clear()
            self._by_pid.clear()
            return gone

    def _take(self, partition: int, values: Mapping[str, TransactionLogValue]) -> list[TransactionMetadata]:
        epoch = self.io.coordinator_epoch(partition)
        taken = []
        for tid, v in values.items():
            if v.state in (DEAD, PREPARE_EPOCH_FENCE):
                continue
            txn = TransactionMetadata(
                tid, v.producer_id, v.producer_epoch, v.transaction_timeout_ms, v.state,
                frozenset((t, p) for t, ps in v.partitions.items() for p in ps),
                v.start_timestamp_ms, v.last_update_timestamp_ms, v.previous_producer_id,
                coordinator_epoch=epoch)
            self._put(txn)
            taken.append(txn)
        return taken

    def _complete_prepared(self, txns: Iterable[TransactionMetadata]) -> None:
        for txn in txns:
            if txn.state in (PREPARE_COMMIT, PREPARE_ABORT):
                _log.info("transactional id %s: completing the %s found in the log", txn.transactional_id,
                          txn.state.state_name)
                self._complete(txn)

    def _check_coordinator(self, transactional_id: str) -> None:
        """Raises NotCoordinatorError / CoordinatorLoadInProgressError for an id whose
        partition this broker does not serve (yet)."""
        if self._owned is None:
            return
        partition = partition_for_transactional_id(transactional_id, self._partitions())
        if partition in self._owned:
            return
        if partition in self._loading:
            raise CoordinatorLoadInProgressError(
                f"{TRANSACTION_STATE_TOPIC}-{partition} of transactional id {transactional_id!r} is loading")
        raise NotCoordinatorError(f"this broker does not coordinate transactional id {transactional_id!r} "
                                  f"({TRANSACTION_STATE_TOPIC}-{partition} is led elsewhere)")

    def _put(self, txn: TransactionMetadata) -> None:
        old = self._txns.get(txn.transactional_id)
        if old is not None and self._by_pid.get(old.producer_id) is old:
            del self._by_pid[old.producer_id]
        self._txns[txn.transactional_id] = txn
        self._by_pid[txn.producer_id] = txn

    def _drop(self, txn: TransactionMetadata) -> None:
        self._txns.pop(txn.transactional_id, None)
        if self._by_pid.get(txn.producer_id) is txn:
            del self._by_pid[txn.producer_id]

    # ---------------------------------------------------------------- helpers

    def partition_for(self, transactional_id: str) -> int:
        """The ``__transaction_state`` partition of ``transactional_id`` (creating the
        topic on first use, as Kafka's FindCoordinator does).

        Raises
        ------
        InvalidRequestError
            ``transactional_id`` is not a non-empty str.
        """
        if not isinstance(transactional_id, str) or not transactional_id:
            raise InvalidRequestError("a transactional id must be a non-empty str")
        with self._lock:
            return partition_for_transactional_id(transactional_id, self._partitions())

    def _partitions(self) -> int:
        if not self._num_partitions:
            self._num_partitions = self.io.txn_log_partitions(True)
        return self._num_partitions

    def _write(self, txn: TransactionMetadata, new: TransactionMetadata) -> None:
        """Make ``new`` durable in the log, then the id's state (``txn`` may be None for a
        new id).  Raises PylogError with the state unchanged."""
        partition = partition_for_transactional_id(new.transactional_id, self._partitions())
        self.io.append_txn_log(partition, [txn_record(new.transactional_id, new.to_value())])
        new.coordinator_epoch = self.io.coordinator_epoch(partition)
        self._put(new)

    def _transition(self, txn: TransactionMetadata, **changes) -> TransactionMetadata:
        new = TransactionMetadata(**{**txn.__dict__, **changes})
        self._write(txn, new)
        return new

    def _lookup(self, transactional_id, producer_id: int, producer_epoch: int) -> TransactionMetadata:
        """The id's metadata, checked against the producer id and epoch of a request.

        Raises
        ------
        InvalidRequestError, InvalidProducerIdMappingError, ProducerFencedError
        """
        if not isinstance(transactional_id, str) or not transactional_id:
            raise InvalidRequestError("a transactional id must be a non-empty str")
        self._check_coordinator(transactional_id)
        txn = self._txns.get(transactional_id)
        if txn is None or txn.state is DEAD:
            raise InvalidProducerIdMappingError(
                f"transactional id {transactional_id!r} has no producer id here: call InitProducerId first")
        if txn.producer_id != producer_id:
            raise InvalidProducerIdMappingError(
                f"transactional id {transactional_id!r} holds producer id {txn.producer_id}, not {producer_id}")
        if txn.producer_epoch != producer_epoch:
            raise ProducerFencedError(
                f"transactional id {transactional_id!r}: producer epoch {producer_epoch} is not the current "
                f"epoch {txn.producer_epoch}; a newer producer instance with this transactional id fenced it")
        return txn

    # ---------------------------------------------------------------- InitProducerId

    def init_producer_id(self, transactional_id: str, transaction_timeout_ms: int,
                         producer_id: int = -1, producer_epoch: int = -1) -> tuple[int, int]:
        """InitProducerId with a transactional id: ``(producer_id, producer_epoch)``.

        Raises
        ------
        InvalidRequestError
            An empty transactional id.
        InvalidTransactionTimeoutError
            ``transaction_timeout_ms`` is not in 1..``transaction_max_timeout_ms``.
        ProducerFencedError
            KIP-360: the producer id and epoch given are not this id's.
        ConcurrentTransactionsError
            The previous transaction's markers are still being written (retry).
        """
        if not isinstance(transactional_id, str) or not transactional_id:
            raise InvalidRequestError("a transactional id must be a non-empty str")
        if isinstance(transaction_timeout_ms, bool) or not isinstance(transaction_timeout_ms, int) \
                or not 0 < transaction_timeout_ms <= self.config.transaction_max_timeout_ms:
            raise InvalidTransactionTimeoutError(
                f"transaction.timeout.ms={transaction_timeout_ms!r} must be in 1.."
                f"{self.config.transaction_max_timeout_ms} (transaction.max.timeout.ms)")
        with self._lock:
            now = self._clock()
            self._partitions()
            self._check_coordinator(transactional_id)
            txn = self._txns.get(transactional_id)
            if txn is None or txn.state is DEAD:
                if producer_id != -1:
                    raise ProducerFencedError(
                        f"transactional id {transactional_id!r} has no producer {producer_id} epoch {producer_epoch}")
                new = TransactionMetadata(transactional_id, self.io.allocate_producer_id(), 0,
                                          transaction_timeout_ms, EMPTY, frozenset(), -1, now)
                self._write(None, new)
                return new.producer_id, new.producer_epoch
            if producer_id != -1:
                if producer_id == txn.producer_id and producer_epoch == txn.last_producer_epoch \
                        and txn.state is EMPTY:
                    # A retry of the bump that produced the current epoch.
                    return txn.producer_id, txn.producer_epoch
                if producer_id == txn.previous_producer_id and txn.state is EMPTY and txn.producer_epoch == 0:
                    return txn.producer_id, txn.producer_epoch   # retry across an exhausted epoch
                if producer_id != txn.producer_id or producer_epoch != txn.producer_epoch:
                    raise ProducerFencedError(
                        f"transactional id {transactional_id!r} is held by producer {txn.producer_id} epoch "
                        f"{txn.producer_epoch}, not {producer_id} epoch {producer_epoch}")
            if txn.state in (PREPARE_COMMIT, PREPARE_ABORT):
                self._complete(txn)
                txn = self._txns[transactional_id]
                if txn.state in (PREPARE_COMMIT, PREPARE_ABORT):
                    raise ConcurrentTransactionsError(
                        f"transactional id {transactional_id!r}: the previous transaction is still completing")
            if txn.state is ONGOING:
                _log.info("transactional id %s: a new producer instance aborts the open transaction of "
                          "producer %d epoch %d", transactional_id, txn.producer_id, txn.producer_epoch)
                txn = self._fence_and_abort(txn, now)
                if txn.state is not COMPLETE_ABORT:
                    raise ConcurrentTransactionsError(
                        f"transactional id {transactional_id!r}: the open transaction is still being aborted")
            if txn.producer_epoch >= _EXHAUSTED_EPOCH:
                new = self._transition(txn, producer_id=self.io.allocate_producer_id(), producer_epoch=0,
                                       previous_producer_id=txn.producer_id, last_producer_epoch=-1,
                                       timeout_ms=transaction_timeout_ms, state=EMPTY,
                                       partitions=frozenset(), start_timestamp_ms=-1,
                                       last_update_timestamp_ms=now)
            else:
                new = self._transition(txn, producer_epoch=txn.producer_epoch + 1,
                                       last_producer_epoch=txn.producer_epoch,
                                       timeout_ms=transaction_timeout_ms, state=EMPTY,
                                       partitions=frozenset(), start_timestamp_ms=-1,
                                       last_update_timestamp_ms=now)
            return new.producer_id, new.producer_epoch

    # ---------------------------------------------------------------- AddPartitions

    def add_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                       partitions: Iterable[tuple[str, int]], *, verify_only: bool = False
                       ) -> dict[tuple[str, int], int]:
        """AddPartitionsToTxn (and AddOffsetsToTxn's partition): ``(topic, partition)``
        -> error code.  Partitions that do not exist get UNKNOWN_TOPIC_OR_PARTITION and
        the others OPERATION_NOT_ATTEMPTED (nothing is added).  ``verify_only`` (v4+)
        adds nothing: NONE for a partition in the ongoing transaction, INVALID_TXN_STATE
        for one that is not.  A request-level error is the code of every partition."""
        wanted = list(dict.fromkeys((t, p) for t, p in partitions))
        with self._lock:
            try:
                txn = self._lookup(transactional_id, producer_id, producer_epoch)
                if verify_only:
                    ongoing = txn.state is ONGOING
                    return {tp: 0 if ongoing and tp in txn.partitions else _E_INVALID_TXN_STATE for tp in wanted}
                missing = [tp for tp in wanted if not (isinstance(tp[0], str) and isinstance(tp[1], int)
                                                       and self.io.partition_exists(*tp))]
                if missing:
                    return {tp: _E_UNKNOWN_PARTITION if tp in missing else _E_NOT_ATTEMPTED for tp in wanted}
                self._add(txn, wanted)
            except PylogError as exc:
                return {tp: exc.error_code for tp in wanted}
            return {tp: 0 for tp in wanted}

    def _add(self, txn: TransactionMetadata, wanted: list[tuple[str, int]]) -> None:
        if txn.state in (PREPARE_COMMIT, PREPARE_ABORT):
            self._complete(txn)
            raise ConcurrentTransactionsError(
                f"transactional id {txn.transactional_id!r}: the previous transaction is still completing")
        if txn.state in (DEAD, PREPARE_EPOCH_FENCE):
            raise InvalidTxnStateError(f"transactional id {txn.transactional_id!r} is {txn.state.state_name}")
        if txn.state is ONGOING and txn.partitions.issuperset(wanted):
            return
        now = self._clock()
        self._transition(txn, state=ONGOING, partitions=txn.partitions.union(wanted),
                         start_timestamp_ms=txn.start_timestamp_ms if txn.state is ONGOING else now,
                         last_update_timestamp_ms=now)

    def add_offsets(self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str,
                    offsets_partitions: int) -> int:
        """AddOffsetsToTxn: adds the group's ``__consumer_offsets`` partition; an error code."""
        if not isinstance(group_id, str) or not group_id:
            return 24   # INVALID_GROUP_ID
        tp = (CONSUMER_OFFSETS_TOPIC, partition_for_group(group_id, offsets_partitions))
        return self.add_partitions(transactional_id, producer_id, producer_epoch, [tp])[tp]

    def verify(self, topic: str, partition: int, producer_id: int, producer_epoch: int,
               base_sequence: int = -1) -> int:
        """Whether a transactional batch may be appended (KIP-890 part 1): NONE when the
        partition is in its producer's ongoing transaction, INVALID_PRODUCER_EPOCH for an
        epoch that is not the current one, INVALID_TXN_STATE otherwise.  Takes no lock
        (called under a partition's lock by the produce path)."""
        txn = self._by_pid.get(producer_id)
        if txn is None:
            return _E_INVALID_TXN_STATE
        if producer_epoch != txn.producer_epoch:
            return _E_PRODUCER_EPOCH
        if txn.state is not ONGOING or (topic, partition) not in txn.partitions:
            return _E_INVALID_TXN_STATE
        return 0

    # ---------------------------------------------------------------- EndTxn

    def end_txn(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool) -> int:
        """EndTxn: commit or abort the ongoing transaction; an error code.  Returns once
        the markers are written and the Complete state is durable.  Retried EndTxn of a
        completed transaction with the same outcome succeeds, as in Kafka."""
        with self._lock:
            try:
                txn = self._lookup(transactional_id, producer_id, producer_epoch)
                want_prepare, want_complete = (PREPARE_COMMIT, COMPLETE_COMMIT) if commit else \
                    (PREPARE_ABORT, COMPLETE_ABORT)
                if txn.state is ONGOING:
                    txn = self._transition(txn, state=want_prepare, last_update_timestamp_ms=self._clock())
                    txn = self._complete(txn)
                    if txn.state is not want_complete:
                        raise ConcurrentTransactionsError(
                            f"transactional id {transactional_id!r}: markers could not all be written yet; "
                            "they are retried")
                    return 0
                if txn.state is want_complete:
                    return 0
                if txn.state is want_prepare:
                    txn = self._complete(txn)
                    if txn.state is want_complete:
                        return 0
                    raise ConcurrentTransactionsError(
                        f"transactional id {transactional_id!r}: the transaction is still completing")
                raise InvalidTxnStateError(
                    f"transactional id {transactional_id!r} is {txn.state.state_name}: cannot "
                    f"{'commit' if commit else 'abort'}")
            except PylogError as exc:
                return exc.error_code

    def _fence_and_abort(self, txn: TransactionMetadata, now: int) -> TransactionMetadata:
        """Abort ``txn``'s ongoing transaction under a bumped epoch (Kafka's
        PrepareEpochFence), fencing the producer that opened it."""
        epoch = txn.producer_epoch + 1 if txn.producer_epoch < _MAX_EPOCH else txn.producer_epoch
        txn = self._transition(txn, producer_epoch=epoch, last_producer_epoch=-1, state=PREPARE_ABORT,
                               last_update_timestamp_ms=now)
        return self._complete(txn)

    def _complete(self, txn: TransactionMetadata) -> TransactionMetadata:
        """Write the markers of a Prepare state, then its Complete state.  Returns the
        metadata after it (still Prepare if a marker could not be written)."""
        commit = txn.state is PREPARE_COMMIT
        _crash_point("after-prepare")
        if len(txn.partitions) > 1 and os.environ.get("PYLOG_TEST_TXN_CRASH") == "mid-markers":
            # (Crash tests: the first partition's marker written, the others not.)
            self.io.write_markers([(txn.producer_id, txn.producer_epoch, txn.coordinator_epoch, commit,
                                    sorted(txn.partitions)[:1])])
            _crash_point("mid-markers")
        if txn.partitions:
            try:
                failed = self.io.write_markers([(txn.producer_id, txn.producer_epoch, txn.coordinator_epoch,
                                                 commit, sorted(txn.partitions))])
            except PylogError as exc:
                _log.warning("transactional id %s: writing %s markers failed (%s); retried", txn.transactional_id,
                             "COMMIT" if commit else "ABORT", exc)
                return txn
            retry = {}
            for tp, code in dict(failed or {}).items():
                if code == _E_UNKNOWN_PARTITION:
                    continue        # a deleted topic: nothing left to end there
                if error_for_code(code).retriable:
                    retry[tp] = code
                else:
                    _log.error("transactional id %s: the %s marker of producer %d epoch %d for %s-%d was "
                               "refused (error %d); the partition is left as it is", txn.transactional_id,
                               "COMMIT" if commit else "ABORT", txn.producer_id, txn.producer_epoch,
                               tp[0], tp[1], code)
            failed = retry
            if failed:
                _log.warning("transactional id %s: %s markers not written to %s; retried", txn.transactional_id,
                             "COMMIT" if commit else "ABORT", failed)
                return txn
        _crash_point("after-markers")
        try:
            return self._transition(txn, state=COMPLETE_COMMIT if commit else COMPLETE_ABORT,
                                    partitions=frozenset(), last_update_timestamp_ms=self._clock())
        except PylogError as exc:
            _log.warning("transactional id %s: writing its completion failed (%s); retried",
                         txn.transactional_id, exc)
            return txn

    # ---------------------------------------------------------------- time

    def tick(self, now: int | None = None) -> int:
        """Abort timed-out transactions, retry unfinished completions and expire idle ids
        when due; returns when the next check is due (ms)."""
        with self._lock:
            now = self._clock() if now is None else now
            if now >= self._next_timeout_check:
                self._next_timeout_check = now + self.config.transaction_abort_timed_out_transaction_cleanup_interval_ms
                for txn in list(self._txns.values()):
                    if txn.state in (PREPARE_COMMIT, PREPARE_ABORT):
                        self._complete(txn)
                    elif txn.state is ONGOING and txn.start_timestamp_ms + txn.timeout_ms < now:
                        _log.info("transactional id %s: aborting the transaction of producer %d epoch %d, open "
                                  "longer than its timeout (%d ms)", txn.transactional_id, txn.producer_id,
                                  txn.producer_epoch, txn.timeout_ms)
                        try:
                            self._fence_and_abort(txn, now)
                        except PylogError as exc:
                            _log.warning("transactional id %s: aborting it failed (%s); retried",
                                         txn.transactional_id, exc)
            if now >= self._next_expiry_check:
                self._next_expiry_check = now + self.config.transaction_remove_expired_transaction_cleanup_interval_ms
                self._expire(now)
            return min(self._next_timeout_check, self._next_expiry_check)

    def _expire(self, now: int) -> None:
        limit = self.config.transactional_id_expiration_ms
        for txn in list(self._txns.values()):
            if txn.state in (EMPTY, COMPLETE_COMMIT, COMPLETE_ABORT) and txn.last_update_timestamp_ms + limit <= now:
                partition = partition_for_transactional_id(txn.transactional_id, self._partitions())
                try:
                    self.io.append_txn_log(partition, [txn_tombstone(txn.transactional_id)])
                except PylogError as exc:
                    _log.warning("transactional id %s: writing its expiry failed (%s); retried",
                                 txn.transactional_id, exc)
                    continue
                self._drop(txn)
                _log.info("transactional id %s expired (idle since %d)", txn.transactional_id,
                          txn.last_update_timestamp_ms)

    # ---------------------------------------------------------------- admin

    def describe(self, transactional_ids: Iterable[str]) -> list[TransactionDescription]:
        """DescribeTransactions, one entry per id asked (in order)."""
        out = []
        with self._lock:
            for tid in transactional_ids:
                txn = self._txns.get(tid) if isinstance(tid, str) else None
                if txn is None:
                    out.append(TransactionDescription(tid, TransactionalIdNotFoundError.error_code))
                    continue
                topics: dict[str, list[int]] = {}
                for t, p in sorted(txn.partitions):
                    topics.setdefault(t, []).append(p)
                out.append(TransactionDescription(tid, 0, txn.state.state_name, txn.timeout_ms,
                                                  txn.start_timestamp_ms, txn.producer_id, txn.producer_epoch,
                                                  topics))
        return out

    def list(self, state_filters: Iterable[str] = (), producer_id_filters: Iterable[int] = (), *,
             duration_filter_ms: int = -1) -> ListTransactionsResult:
        """ListTransactions: every id whose state is among ``state_filters`` (Kafka's
        state names; empty: any) and whose producer id is among ``producer_id_filters``
        (empty: any); with ``duration_filter_ms`` >= 0, only transactions that started
        at least that long ago."""
        states = set()
        unknown = []
        for name in state_filters:
            s = TransactionState.from_name(name)
            if s is None:
                unknown.append(name)
            else:
                states.add(s)
        pids = set(producer_id_filters)
        any_state = not states and not unknown
        with self._lock:
            now = self._clock()
            listed = [ListedTransaction(t.transactional_id, t.producer_id, t.state.state_name)
                      for t in sorted(self._txns.values(), key=lambda t: t.transactional_id)
                      if (any_state or t.state in states) and (not pids or t.producer_id in pids)
                      and (duration_filter_ms < 0 or 0 <= t.start_timestamp_ms <= now - duration_filter_ms)]
        return ListTransactionsResult(listed, unknown)

    def metadata(self, transactional_id: str) -> TransactionMetadata | None:
        """The id's current metadata (a snapshot), or None."""
        with self._lock:
            txn = self._txns.get(transactional_id)
            return None if txn is None else TransactionMetadata(**txn.__dict__)


class BrokerTxnIO:
    """:class:`TxnLogIO` over a :class:`pylog.broker.core.Broker`: ``__transaction_state``
    is one of its internal topics (created on first use), markers go through
    ``Broker.write_txn_markers`` and the group coordinator hears of the markers written
    to ``__consumer_offsets``."""

    def __init__(self, broker) -> None:
        self._broker = broker

    def txn_log_partitions(self, create: bool) -> int:
        b = self._broker
        topic = b._topics.get(TRANSACTION_STATE_TOPIC)
        if topic is None:
            if not create:
                return 0
            cfg = b.config.txn
            b._create_topic(TRANSACTION_STATE_TOPIC, cfg.transaction_state_log_num_partitions,
                            {"cleanup.policy": "compact",
                             "segment.bytes": str(cfg.transaction_state_log_segment_bytes)}, internal=True)
            topic = b._topics[TRANSACTION_STATE_TOPIC]
            _log.info("created %s with %d partitions", TRANSACTION_STATE_TOPIC, len(topic.partitions))
        return len(topic.partitions)

    def append_txn_log(self, partition: int, records: Sequence[tuple[bytes, bytes | None]]) -> None:
        from pylog import _core

        builder = _core.RecordBatchBuilder()
        builder.append_many([v for _, v in records], keys=[k for k, _ in records])
        batch = builder.build()
        point = os.environ.get("PYLOG_TEST_TXN_CRASH")
        if point in _TORN_POINTS:
            self._maybe_tear(point, partition, records, batch)
        self._broker._append_internal(TRANSACTION_STATE_TOPIC, partition, batch).raise_for_error()

    def _maybe_tear(self, point: str, partition: int, records, batch: bytes) -> None:
        """Crash tests (``torn-prepare``, ``torn-complete``): when this append is the state
        the point names, write the first half of its batch (with the base offset the append
        would give it) after the partition's last batch, as a crash in the middle of the
        write leaves it, and SIGKILL the process."""
        states = _TORN_POINTS[point]
        if not any(v is not None and decode_value(v).state in states for _, v in records):
            return
        log = self._broker._partition(TRANSACTION_STATE_TOPIC, partition).log
        with log.lock:
            seg = log.active_segment
            torn = bytearray(batch[:len(batch) // 2])
            torn[0:8] = log.log_end_offset.to_bytes(8, "big")
            fd = os.open(seg.path, os.O_WRONLY)
            try:
                os.pwrite(fd, bytes(torn), seg.size)
            finally:
                os.close(fd)
            _log.warning("PYLOG_TEST_TXN_CRASH=%s: %d of the %d bytes of %s-%d's batch at offset %d written",
                         point, len(torn), len(batch), TRANSACTION_STATE_TOPIC, partition, log.log_end_offset)
            _crash_point(point)

    def coordinator_epoch(self, partition: int) -> int:
        topic = self._broker._topics.get(TRANSACTION_STATE_TOPIC)
        return 0 if topic is None else topic.leader_epoch

    def allocate_producer_id(self) -> int:
        return self._broker._allocate_producer_id()

    def partition_exists(self, topic: str, partition: int) -> bool:
        t = self._broker._topics.get(topic)
        return t is not None and 0 <= partition < len(t.partitions)

    def write_markers(self, markers: list[TxnMarker]) -> Mapping[tuple[str, int], int]:
        return self._broker.write_txn_markers_and_complete(markers)
