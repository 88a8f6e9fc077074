"""The transactional producer's state machine (Kafka's TransactionManager, KIP-98/360/447).

A :class:`~pylog.client.producer.Producer` made with ``transactional_id`` holds one
:class:`TransactionManager`.  The application drives it (``init_transactions``,
``begin_transaction``, ``send_offsets_to_transaction``, ``commit_transaction``,
``abort_transaction``); the producer's sender asks it before sending
(:meth:`TransactionManager.may_send`, :meth:`TransactionManager.add_partitions`) and
tells it about batches that fail for good (:meth:`TransactionManager.batch_failed`).

States, as Kafka's: UNINITIALIZED -> (init_transactions) READY -> (begin) IN_TRANSACTION
-> (commit) COMMITTING -> READY, or -> (abort) ABORTING -> READY.  An error of the data
path (a batch that fails for good, an AddPartitionsToTxn refused) moves IN_TRANSACTION or
COMMITTING to ABORTABLE_ERROR: nothing more is sent, records not yet sent fail, commit
raises the error, abort ends the transaction.  A fenced producer (PRODUCER_FENCED, or
INVALID_PRODUCER_EPOCH from the transaction coordinator: a newer producer of the same
transactional id called init_transactions) moves to FATAL_ERROR: every call raises
:class:`~pylog.errors.ProducerFencedError`; close the producer.

Protocol
--------
- ``init_transactions``: InitProducerId with the transactional id and
  ``transaction_timeout_ms`` (the coordinator fences older producers of the id and
  aborts their open transaction).
- A partition is added to the transaction (AddPartitionsToTxn) by the sender before its
  first batch of the transaction is sent; the batches carry the transactional attribute
  and the Produce requests the transactional id.  Over the network the sender does not
  wait for the answer: the partition's batches stay queued, and the network I/O thread
  that brings the answer sends them (one thread hand-over per transaction instead of
  three, which is what a 100 ms transaction loses to a busy application thread).
- ``send_offsets_to_transaction``: AddOffsetsToTxn, then TxnOffsetCommit to the group's
  coordinator with the consumer's generation, member id and instance id (KIP-447).
- ``commit_transaction`` flushes first, then EndTxn(commit); ``abort_transaction`` fails
  the records not yet sent (:class:`~pylog.errors.TransactionAbortedError`), waits for the
  requests out, then EndTxn(abort), then bumps the producer epoch (InitProducerId with the
  id and epoch, KIP-360) so that sequence numbers start afresh after whatever the aborted
  transaction left unsent.  A transaction to which nothing was added ends without EndTxn.
- CONCURRENT_TRANSACTIONS and the coordinator errors are retried by the transport for up
  to its request timeout.

Threads: the application calls are serialized by a lock (one transaction at a time); the
sender calls :meth:`may_send` / :meth:`add_partitions` / :meth:`batch_failed` from its
thread.  State changes are single assignments read without the lock.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from pylog.broker.core import OffsetAndMetadata, TopicPartition
from pylog.broker.group import CommitOffset
from pylog.errors import (IllegalStateError, InvalidConfigError, PylogError, ProducerFencedError,
                          TransactionAbortedError, error_for_code)

if TYPE_CHECKING:
    from pylog.client.producer import Producer

__all__ = ["TransactionManager", "UNINITIALIZED", "READY", "IN_TRANSACTION", "COMMITTING", "ABORTING",
           "ABORTABLE_ERROR", "FATAL_ERROR"]

_log = logging.getLogger("pylog.client.transactions")

UNINITIALIZED = "UNINITIALIZED"
READY = "READY"
IN_TRANSACTION = "IN_TRANSACTION"
COMMITTING = "COMMITTING_TRANSACTION"
ABORTING = "ABORTING_TRANSACTION"
ABORTABLE_ERROR = "ABORTABLE_ERROR"
FATAL_ERROR = "FATAL_ERROR"

_INVALID_PRODUCER_EPOCH = 47
_INVALID_TXN_STATE = 48
_INVALID_PRODUCER_ID_MAPPING = 49
_TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
_UNKNOWN_PRODUCER_ID = 59
_PRODUCER_FENCED = 90
#: Answers of the transaction coordinator that end the producer (Kafka's fatal errors).
_FATAL = frozenset({_INVALID_PRODUCER_EPOCH, _INVALID_TXN_STATE, _TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    _PRODUCER_FENCED})
_FENCED = frozenset({_INVALID_PRODUCER_EPOCH, _PRODUCER_FENCED})


class TransactionManager:
    """One transactional producer's transactions (see the module docstring)."""

    def __init__(self, producer: Producer, transport: Any, transactional_id: str,
                 transaction_timeout_ms: int) -> None:
        # (transaction_timeout_ms is checked by the producer with its other settings.)
        if not isinstance(transactional_id, str) or not transactional_id:
            raise InvalidConfigError(f"transactional_id must be a non-empty str, got {transactional_id!r}")
        self._producer = producer
        self._transport = transport
        self.transactional_id = transactional_id
        self.transaction_timeout_ms = transaction_timeout_ms
        self._state = UNINITIALIZED
        self.error: PylogError | None = None
        self._lock = threading.Lock()
        self._partitions: set[tuple[str, int]] = set()   # added to the current transaction
        self._started = False                             # something added: EndTxn is due
        # AddPartitionsToTxn requests out (add_partitions_async): EndTxn waits for their
        # answers; an answer of an earlier transaction (``_generation``) adds nothing.
        self._adds = threading.Condition(threading.Lock())
        self._adds_out = 0
        self._generation = 0
        add_async = getattr(transport, "add_partitions_to_txn_async", None)
        #: Whether AddPartitionsToTxn can be sent without waiting (a network transport).
        self.adds_async = add_async is not None
        self._add_async = add_async

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        # The producer's core accepts records only IN_TRANSACTION; in any other state its
        # send paths call check_send(), which raises the reason.  (So the per-record send
        # pays one flag test in C, not a Python call.)
        self._state = state
        self._producer._set_accepting(state is IN_TRANSACTION)

    # ------------------------------------------------------------------ sender side

    def may_send(self) -> bool:
        """Whether batches may go now (in a transaction, or flushing it for a commit)."""
        return self.state is IN_TRANSACTION or self.state is COMMITTING

    def undrained_error(self) -> PylogError:
        """What the records not sent when the transaction cannot go on fail with."""
        if self.error is not None:
            return self.error
        return TransactionAbortedError("the transaction was aborted before the record was sent")

    def added(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._partitions

    def add_partitions(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """AddPartitionsToTxn for ``partitions``, waiting (sender thread): the ones added
        join the transaction; returns each partition's code.  A fatal or abortable answer
        moves the state (the sender then fails what waits); a retriable one leaves it to
        a retry."""
        p = self._producer
        res = self._transport.add_partitions_to_txn(self.transactional_id, p.producer_id, p.producer_epoch,
                                                    list(partitions))
        self._added(res, self._generation)
        return res

    def add_partitions_async(self, partitions: Iterable[tuple[str, int]],
                             on_done: Callable[[dict[tuple[str, int], int]], object]) -> None:
        """AddPartitionsToTxn without waiting (a transport with ``adds_async``; the
        sender's thread or the network I/O thread): the answer is taken as
        :meth:`add_partitions` takes it, then ``on_done(codes)`` runs on the thread that
        brought it (the network I/O thread)."""
        p = self._producer
        generation = self._generation
        with self._adds:
            self._adds_out += 1

        def answered(res: dict[tuple[str, int], int]) -> None:
            try:
                self._added(res, generation)
            finally:
                with self._adds:
                    self._adds_out -= 1
                    self._adds.notify_all()
            on_done(res)

        wanted = list(partitions)
        try:
            self._add_async(self.transactional_id, p.producer_id, p.producer_epoch, wanted, answered)
        except PylogError as exc:       # not sent (the transport is closed): answered at once
            answered({tp: exc.error_code for tp in wanted})

    def _added(self, res: Mapping[tuple[str, int], int], generation: int) -> None:
        if generation != self._generation:
            return      # the transaction it was for has ended
        for tp, code in res.items():
            if not code:
                self._partitions.add(tp)
                self._started = True
        for tp, code in res.items():
            if code and not error_for_code(code).retriable:
                self._coordinator_error(code, f"AddPartitionsToTxn of {tp[0]}-{tp[1]}")
                break

    def batch_failed(self, exc: PylogError) -> None:
        """A batch of the transaction failed for good (sender thread)."""
        if exc.error_code == _PRODUCER_FENCED:
            self._fatal(ProducerFencedError(f"transactional id {self.transactional_id!r}: {exc}"))
        elif exc.error_code == _INVALID_PRODUCER_EPOCH:
            # The leader knows a newer epoch: the coordinator aborted this transaction
            # (it outlived transaction_timeout_ms) or a newer producer took the id.
            self._abortable(type(exc)(
                f"{exc}: transactional id {self.transactional_id!r} has a newer epoch (the transaction outlived "
                f"transaction_timeout_ms={self.transaction_timeout_ms} and was aborted, or a newer producer "
                f"holds the id); abort_transaction() tells which"))
        else:
            self._abortable(exc)

    # ------------------------------------------------------------------ application side

    def init_transactions(self) -> None:
        with self._lock:
            self._check_not_fatal()
            if self.state is not UNINITIALIZED:
                raise IllegalStateError(f"init_transactions() was called already (state {self.state})")
            self._init_producer_id(-1, -1)
            self.state = READY

    def begin_transaction(self) -> None:
        with self._lock:
            self._check_not_fatal()
            if self.state is not READY:
                raise IllegalStateError(f"cannot begin a transaction in state {self.state}"
                                        + (": call init_transactions() first" if self.state is UNINITIALIZED else ""))
            self.state = IN_TRANSACTION

    def send_offsets_to_transaction(self, offsets: Mapping[Any, Any], group: Any) -> None:
        """AddOffsetsToTxn, then TxnOffsetCommit of ``offsets`` (TopicPartition ->
        OffsetAndMetadata or int: the next offset to consume) for ``group`` (a group id,
        or a consumer's ``group_metadata()``)."""
        if isinstance(group, str):
            group_id, generation_id, member_id, instance_id = group, -1, "", None
        else:
            group_id = group.group_id
            generation_id, member_id, instance_id = group.generation_id, group.member_id, group.group_instance_id
        by_topic: dict[str, dict[int, CommitOffset]] = {}
        for tp, v in offsets.items():
            topic, partition = (tp.topic, tp.partition) if isinstance(tp, TopicPartition) else tp
            if isinstance(v, OffsetAndMetadata):
                v = CommitOffset(v.offset, v.metadata or "", v.leader_epoch)
            elif not isinstance(v, CommitOffset):
                v = CommitOffset(v)
            by_topic.setdefault(topic, {})[partition] = v
        with self._lock:
            self._check_state(IN_TRANSACTION, "send offsets to a transaction")
            p = self._producer
            code = self._transport.add_offsets_to_txn(self.transactional_id, p.producer_id, p.producer_epoch,
                                                      group_id)
            if code:
                self._coordinator_error(code, f"AddOffsetsToTxn of group {group_id!r}")
                raise self.error or error_for_code(code)
            self._started = True
            res = self._transport.txn_offset_commit(self.transactional_id, group_id, p.producer_id,
                                                    p.producer_epoch, by_topic, member_id=member_id or None,
                                                    generation_id=generation_id, group_instance_id=instance_id)
            for topic, parts in res.items():
                for partition, code in parts.items():
                    if code:
                        exc = error_for_code(code, f"TxnOffsetCommit of {topic}-{partition} for group "
                                                   f"{group_id!r}: {error_for_code(code).kafka_name}")
                        if code in _FENCED:
                            self._fatal(ProducerFencedError(str(exc)))
                            raise self.error or exc
                        if not exc.retriable:
                            self._abortable(exc)
                        raise exc

    def commit_transaction(self, timeout: float | None) -> None:
        with self._lock:
            self._check_not_fatal()
            if self.state is ABORTABLE_ERROR:
                assert self.error is not None
                raise self.error
            if self.state is not COMMITTING:
                self._check_state(IN_TRANSACTION, "commit a transaction")
                self.state = COMMITTING
            try:
                self._producer.flush(timeout)
            except PylogError:
                if self.state is COMMITTING:
                    self.state = IN_TRANSACTION      # not sent yet: commit again, or abort
                raise
            if self.state is not COMMITTING:         # a batch failed meanwhile
                self._check_not_fatal()
                assert self.error is not None
                raise self.error
            self._end(commit=True)
            self._completed()

    def abort_transaction(self, timeout: float | None) -> None:
        with self._lock:
            self._check_not_fatal()
            if self.state not in (IN_TRANSACTION, ABORTABLE_ERROR, ABORTING):
                raise IllegalStateError(f"cannot abort a transaction in state {self.state}")
            self.state = ABORTING
            self._producer.flush(timeout)           # the sender fails what was not sent
            self._end(commit=False)
            # What the transaction left unsent may leave gaps in the partitions' sequence
            # numbers: a new epoch starts them afresh (KIP-360).
            p = self._producer
            self._init_producer_id(p.producer_id, p.producer_epoch)
            self._completed()

    # ------------------------------------------------------------------ inside

    def _end(self, *, commit: bool) -> None:
        # An AddPartitionsToTxn still out (its batches failed by an abort before it was
        # answered) is answered before EndTxn: a partition it adds is then ended too.
        # (Its request has the transport's request timeout; the coordinator aborts the
        # transaction by itself after transaction_timeout_ms.)
        with self._adds:
            self._adds.wait_for(lambda: not self._adds_out, self.transaction_timeout_ms / 1000)
        if not self._started:
            return
        p = self._producer
        code = self._transport.end_txn(self.transactional_id, p.producer_id, p.producer_epoch, commit)
        if code:
            what = "EndTxn(commit)" if commit else "EndTxn(abort)"
            if code in _FATAL:
                self._coordinator_error(code, what)
                raise self.error or error_for_code(code)
            exc = error_for_code(code, f"{what} of transactional id {self.transactional_id!r}: "
                                       f"{error_for_code(code).kafka_name}")
            if code in (_UNKNOWN_PRODUCER_ID, _INVALID_PRODUCER_ID_MAPPING):
                self._abortable(exc)
            raise exc

    def _completed(self) -> None:
        self._generation += 1
        self.state = READY
        self.error = None
        self._partitions.clear()
        self._started = False

    def _init_producer_id(self, producer_id: int, producer_epoch: int) -> None:
        res = self._transport.init_producer_id(transactional_id=self.transactional_id,
                                               transaction_timeout_ms=self.transaction_timeout_ms,
                                               producer_id=producer_id, producer_epoch=producer_epoch)
        if res.error_code:
            if res.error_code in _FENCED:
                self._fatal(ProducerFencedError(f"transactional id {self.transactional_id!r} is used by a newer "
                                                f"producer: {error_for_code(res.error_code).kafka_name}"))
                raise self.error  # type: ignore[misc]
            res.raise_for_error()
        self._producer._set_producer_id(res.producer_id, res.producer_epoch)

    def _coordinator_error(self, code: int, what: str) -> None:
        name = error_for_code(code).kafka_name
        if code in _FENCED:
            self._fatal(ProducerFencedError(f"{what}: transactional id {self.transactional_id!r} is used by a "
                                            f"newer producer ({name})"))
        elif code in _FATAL:
            self._fatal(error_for_code(code, f"{what}: {name}"))
        else:
            self._abortable(error_for_code(code, f"{what}: {name}"))

    def _abortable(self, exc: PylogError) -> None:
        if self.state in (IN_TRANSACTION, COMMITTING, ABORTABLE_ERROR):
            if self.state is not ABORTABLE_ERROR:
                _log.info("transactional id %r: abortable error: %s", self.transactional_id, exc)
                self.error = exc
            self.state = ABORTABLE_ERROR

    def _fatal(self, exc: PylogError) -> None:
        if self.state is not FATAL_ERROR:
            _log.error("transactional id %r: fatal error: %s", self.transactional_id, exc)
            self.error = exc
        self.state = FATAL_ERROR

    def _check_not_fatal(self) -> None:
        if self.state is FATAL_ERROR:
            assert self.error is not None
            raise self.error

    def _check_state(self, wanted: str, what: str) -> None:
        self._check_not_fatal()
        if self.state is ABORTABLE_ERROR:
            assert self.error is not None
            raise self.error
        if self.state is not wanted:
            raise IllegalStateError(f"cannot {what} in state {self.state}"
                                    + (": call begin_transaction() first" if self.state is READY else ""))

    def check_send(self) -> None:
        """Called by the producer's send paths while it refuses records (any state but
        IN_TRANSACTION): raises why."""
        if self.state is IN_TRANSACTION:
            return      # (a transaction began between the core's flag test and here)
        self._check_not_fatal()
        if self.state is ABORTABLE_ERROR:
            assert self.error is not None
            raise self.error
        raise IllegalStateError(f"cannot send in state {self.state}: records of a transactional producer "
                                f"go inside begin_transaction() ... commit_transaction()")
